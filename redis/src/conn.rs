//! One connection to the server, reconnected with backoff when lost, with
//! the scripts loaded.

use std::sync::OnceLock;
use std::thread;
use std::time::{Duration, Instant};

use redis::{Client, Connection, RedisError, Value};

use crate::scripts;

/// The scripts, by SHA1 once loaded on the current connection's server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Script {
    Create,
    Send,
    SendSame,
    Ack,
    Touch,
    TaskDone,
    Retire,
    Prune,
    PoolClaim,
    PoolPublish,
    PoolRenew,
    PoolFind,
    PoolEnd,
}

impl Script {
    const ALL: [Script; 13] = [
        Script::Create,
        Script::Send,
        Script::SendSame,
        Script::Ack,
        Script::Touch,
        Script::TaskDone,
        Script::Retire,
        Script::Prune,
        Script::PoolClaim,
        Script::PoolPublish,
        Script::PoolRenew,
        Script::PoolFind,
        Script::PoolEnd,
    ];

    fn source(self) -> &'static str {
        match self {
            Script::Create => scripts::CREATE,
            Script::Send => scripts::SEND,
            Script::SendSame => scripts::SEND_SAME,
            Script::Ack => scripts::ACK,
            Script::Touch => scripts::TOUCH,
            Script::TaskDone => scripts::TASK_DONE,
            Script::Retire => scripts::RETIRE,
            Script::Prune => scripts::PRUNE,
            Script::PoolClaim => scripts::POOL_CLAIM,
            Script::PoolPublish => scripts::POOL_PUBLISH,
            Script::PoolRenew => scripts::POOL_RENEW,
            Script::PoolFind => scripts::POOL_FIND,
            Script::PoolEnd => scripts::POOL_END,
        }
    }
}

/// An `EVALSHA` of `script` with `keys`; arguments follow. The hash is
/// the script's SHA1, the same on every server; [`Conn::connect`] loads
/// the scripts, and [`Conn::run`] loads them again on `NOSCRIPT`.
pub(crate) fn script_cmd(script: Script, keys: &[&str]) -> redis::Cmd {
    static HASHES: OnceLock<Vec<String>> = OnceLock::new();
    let hashes = HASHES.get_or_init(|| {
        Script::ALL
            .iter()
            .map(|s| redis::Script::new(s.source()).get_hash().to_owned())
            .collect()
    });
    let idx = Script::ALL
        .iter()
        .position(|s| *s == script)
        .expect("every script is in ALL");
    let mut c = redis::cmd("EVALSHA");
    c.arg(&hashes[idx]).arg(keys.len()).arg(keys);
    c
}

/// How a failed operation failed.
#[derive(Debug)]
pub(crate) enum OpError {
    /// No connection could be made in the time allowed: the command was
    /// never written.
    NotSent(RedisError),
    /// The connection broke after the command may have been written, and
    /// no retry got through in the time allowed.
    Lost(RedisError),
    /// The server answered with an error.
    Server(RedisError),
}

/// True if the server answered `code`, to a command or to any command of
/// a pipeline.
pub(crate) fn has_code(e: &RedisError, code: &str) -> bool {
    e.code() == Some(code)
        || e.clone()
            .into_server_errors()
            .is_some_and(|errs| errs.iter().any(|(_, s)| s.code() == code))
}

/// True for errors after which the connection cannot be used any more.
pub(crate) fn is_connection_error(e: &RedisError) -> bool {
    e.is_io_error() || e.is_connection_dropped() || e.is_connection_refusal() || e.is_timeout()
}

/// A connection that comes back after it is lost.
pub(crate) struct Conn {
    client: Client,
    con: Option<Connection>,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field(
                "server",
                &self.client.get_connection_info().addr().to_string(),
            )
            .field("connected", &self.con.is_some())
            .finish()
    }
}

impl Conn {
    pub(crate) fn new(client: Client, connect_timeout: Duration, io_timeout: Duration) -> Conn {
        Conn {
            client,
            con: None,
            connect_timeout,
            io_timeout,
        }
    }

    /// Connects now if not connected (one attempt), loading the scripts.
    pub(crate) fn connect(&mut self) -> Result<&mut Connection, RedisError> {
        if self.con.is_none() {
            let mut con = self
                .client
                .get_connection_with_timeout(self.connect_timeout)?;
            con.set_read_timeout(Some(self.io_timeout))?;
            con.set_write_timeout(Some(self.io_timeout))?;
            for s in Script::ALL {
                let _: String = redis::cmd("SCRIPT")
                    .arg("LOAD")
                    .arg(s.source())
                    .query(&mut con)?;
            }
            self.con = Some(con);
        }
        Ok(self.con.as_mut().expect("connected just above"))
    }

    /// Forgets the connection (after an error that broke it).
    pub(crate) fn drop_connection(&mut self) {
        self.con = None;
    }

    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    pub(crate) fn io_timeout(&self) -> Duration {
        self.io_timeout
    }

    /// An `EVALSHA` of `script` with `keys`; arguments follow.
    pub(crate) fn script_cmd(&self, script: Script, keys: &[&str]) -> redis::Cmd {
        script_cmd(script, keys)
    }

    /// Runs `op` on the connection, reconnecting with backoff (10 ms
    /// doubling to 1 s) while `until` has not passed. `op` is retried
    /// after a lost connection only if it is safe to run twice (every
    /// caller's op is: reads, or writes made idempotent by a sequence
    /// number).
    pub(crate) fn run<T>(
        &mut self,
        until: Instant,
        mut op: impl FnMut(&mut Conn) -> Result<T, RedisError>,
    ) -> Result<T, OpError> {
        let mut backoff = Duration::from_millis(10);
        let mut written = false;
        let mut reloaded = false;
        loop {
            let err = match self.connect() {
                Err(e) => e,
                Ok(_) => match op(self) {
                    Ok(v) => return Ok(v),
                    Err(e) if has_code(&e, "NOSCRIPT") && !reloaded => {
                        // The server lost its script cache (restarted, or
                        // SCRIPT FLUSH): nothing ran. Load them again.
                        reloaded = true;
                        self.drop_connection();
                        continue;
                    }
                    Err(e) if has_code(&e, "LOADING") => e,
                    Err(e) if is_connection_error(&e) => {
                        written = true;
                        self.drop_connection();
                        e
                    }
                    Err(e) => return Err(OpError::Server(e)),
                },
            };
            if !is_connection_error(&err) && !has_code(&err, "LOADING") {
                // Refused for good (a wrong password, say).
                return Err(OpError::Server(err));
            }
            let now = Instant::now();
            if now >= until {
                return Err(if written {
                    OpError::Lost(err)
                } else {
                    OpError::NotSent(err)
                });
            }
            thread::sleep(backoff.min(until - now));
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }
}

/// A script reply as an integer.
pub(crate) fn as_int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(i) => Some(*i),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        Value::SimpleString(s) => s.parse().ok(),
        _ => None,
    }
}

/// A reply as bytes.
pub(crate) fn as_bytes(v: &Value) -> Option<&[u8]> {
    match v {
        Value::BulkString(b) => Some(b),
        Value::SimpleString(s) => Some(s.as_bytes()),
        _ => None,
    }
}
