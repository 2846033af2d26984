//! [`RedisQueue`]: the channel interface over a Redis stream and its
//! consumer group.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use mulproc::{
    BackendError, Channel, Filter, Header, JoinTimeoutError, Joinable, Message, Received,
    RecvError, RecvTimeoutError, Request, SendRetry, TaskDoneError, TryRecvError, TrySendError,
    Wait,
};
use redis::{Client, RedisError, Value};

use crate::conn::{
    as_bytes, as_int, has_code, is_connection_error, script_cmd, Conn, OpError, Script,
};
use crate::error::{RedisQueueError, RedisSetupError};

/// The consumer group of every stream.
const GROUP: &str = "g";
/// The idle time given to an entry handed back: far past any claim time,
/// so that the next reclaim by anyone takes it.
const HANDED_BACK_IDLE_MS: u64 = 100_000_000_000;
/// Largest payload Redis stores in one string.
const REDIS_MAX_STRING: usize = 512 << 20;
/// Every how many heartbeats (quarter claim times) a handle removes dead
/// consumers.
const PRUNE_EVERY_BEATS: u64 = 8;
/// Claim times of silence after which a consumer holding nothing is
/// removed from the group.
const PRUNE_AFTER_CLAIMS: u32 = 4;
/// Entries read per stream by a selective receive.
const SCAN_COUNT: usize = 16;

/// The shape of a queue, fixed at creation and shared by every handle.
///
/// ```
/// use std::time::Duration;
/// use mulproc_redis::RedisConfig;
/// let c = RedisConfig::new(1024, 256).claim_after(Duration::from_secs(5));
/// assert_eq!((c.capacity, c.max_payload), (1024, 256));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisConfig {
    /// Most messages the queue holds that are sent and not yet
    /// acknowledged (waiting, or received and held); a send beyond it is
    /// refused with [`TrySendError::Full`].
    pub capacity: u64,
    /// Largest payload in bytes.
    pub max_payload: usize,
    /// How long a message may sit held by a consumer that no longer
    /// heartbeats before other consumers take it over and deliver it again
    /// (default 10 s). Live handles heartbeat the messages they hold every
    /// quarter of this.
    pub claim_after: Duration,
}

impl RedisConfig {
    /// A queue of `capacity` messages of at most `max_payload` bytes, with
    /// a claim time of 10 s.
    pub fn new(capacity: u64, max_payload: usize) -> RedisConfig {
        RedisConfig {
            capacity,
            max_payload,
            claim_after: Duration::from_secs(10),
        }
    }

    /// Sets [`claim_after`](RedisConfig::claim_after).
    pub fn claim_after(mut self, d: Duration) -> RedisConfig {
        self.claim_after = d;
        self
    }
}

/// How one handle talks to the server; each process chooses its own.
///
/// ```
/// use std::time::Duration;
/// use mulproc_redis::RedisOptions;
/// let o = RedisOptions::default().id(7).reconnect_for(Duration::from_secs(30));
/// assert_eq!(o.id, Some(7));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RedisOptions {
    /// The id this handle stamps on its messages as their sender, and
    /// receives messages addressed to ([`Channel::pid`]); `None`, the
    /// default, is the process id. Process ids repeat across machines:
    /// give each process an id of its own when messages are addressed
    /// across machines.
    pub id: Option<u32>,
    /// Longest wait for a TCP connection (default 2 s).
    pub connect_timeout: Duration,
    /// Longest wait for a reply beyond what the command itself waits
    /// (default 5 s); a slower reply counts as a lost connection.
    pub io_timeout: Duration,
    /// How long an operation keeps reconnecting, with backoff, after the
    /// connection was lost (default 10 s); then it fails with
    /// [`RedisQueueError::Connection`].
    pub reconnect_for: Duration,
    /// Longest single `XREADGROUP … BLOCK` of a waiting receive (default
    /// 100 ms). A new message wakes it at once; between blocks it looks
    /// for messages handed back by other receivers or left by dead
    /// consumers, so those wait at most this long for a waiting receiver.
    pub poll: Duration,
    /// How [`Channel::send`] waits for room.
    pub send_retry: SendRetry,
}

impl Default for RedisOptions {
    fn default() -> Self {
        RedisOptions {
            id: None,
            connect_timeout: Duration::from_secs(2),
            io_timeout: Duration::from_secs(5),
            reconnect_for: Duration::from_secs(10),
            poll: Duration::from_millis(100),
            send_retry: SendRetry::default(),
        }
    }
}

impl RedisOptions {
    /// Sets [`id`](RedisOptions::id).
    pub fn id(mut self, id: u32) -> RedisOptions {
        self.id = Some(id);
        self
    }

    /// Sets [`reconnect_for`](RedisOptions::reconnect_for).
    pub fn reconnect_for(mut self, d: Duration) -> RedisOptions {
        self.reconnect_for = d;
        self
    }

    /// Sets [`connect_timeout`](RedisOptions::connect_timeout).
    pub fn connect_timeout(mut self, d: Duration) -> RedisOptions {
        self.connect_timeout = d;
        self
    }

    /// Sets [`io_timeout`](RedisOptions::io_timeout).
    pub fn io_timeout(mut self, d: Duration) -> RedisOptions {
        self.io_timeout = d;
        self
    }

    /// Sets [`poll`](RedisOptions::poll).
    pub fn poll(mut self, d: Duration) -> RedisOptions {
        self.poll = d;
        self
    }

    /// Sets [`send_retry`](RedisOptions::send_retry).
    pub fn send_retry(mut self, r: SendRetry) -> RedisOptions {
        self.send_retry = r;
        self
    }
}

/// Which of a handle's two streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Which {
    /// The handle's mailbox: messages addressed to its id.
    Mailbox,
    /// Messages for anyone.
    Shared,
}

/// The keys of one queue.
#[derive(Debug, Clone)]
struct Keys {
    name: String,
    meta: String,
    shared: String,
    mailbox: String,
}

fn key_prefix(name: &str) -> String {
    format!("mulproc:{{{name}}}:")
}

fn mailbox_key(name: &str, id: u32) -> String {
    format!("{}to:{id}", key_prefix(name))
}

impl Keys {
    fn new(name: &str, id: u32) -> Keys {
        let p = key_prefix(name);
        Keys {
            name: name.to_owned(),
            meta: format!("{p}meta"),
            shared: format!("{p}s"),
            mailbox: mailbox_key(name, id),
        }
    }

    fn of(&self, w: Which) -> &str {
        match w {
            Which::Mailbox => &self.mailbox,
            Which::Shared => &self.shared,
        }
    }
}

/// An entry id, `ms-seq`, compared as numbers.
fn id_order(id: &str) -> (u64, u64) {
    let (a, b) = id.split_once('-').unwrap_or((id, "0"));
    (a.parse().unwrap_or(u64::MAX), b.parse().unwrap_or(u64::MAX))
}

/// A stream entry delivered to this handle.
struct Entry {
    which: Which,
    /// Taken over from another consumer (`XAUTOCLAIM`): delivered before.
    redelivered: bool,
    id: String,
    header: Header,
    data: Vec<u8>,
}

/// What a read brought: messages, and entries of the wrong shape.
#[derive(Default)]
struct Batch {
    entries: Vec<Entry>,
    malformed: Vec<(Which, String, &'static str)>,
}

/// Ids this handle holds, per stream, heartbeated by its thread.
type Held = Arc<Mutex<HashMap<Which, HashSet<String>>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding the lock leaves nothing half done that the
    // next user could trip on: every critical section is a map update or
    // a whole command on the connection (which is dropped on error).
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn backend(e: RedisQueueError) -> BackendError {
    BackendError::new(e)
}

/// The backend error for a failed operation; `may_have_happened` marks a
/// write whose outcome is unknown after a lost connection.
fn op_backend(name: &str, e: OpError, may_have_happened: bool) -> BackendError {
    match e {
        OpError::NotSent(e) => backend(RedisQueueError::Connection(e)),
        OpError::Lost(e) if may_have_happened => {
            BackendError::outcome_unknown(RedisQueueError::Connection(e))
        }
        OpError::Lost(e) => backend(RedisQueueError::Connection(e)),
        OpError::Server(e) if has_code(&e, "NOQUEUE") || has_code(&e, "NOGROUP") => {
            backend(RedisQueueError::QueueGone {
                name: name.to_owned(),
            })
        }
        OpError::Server(e) => backend(RedisQueueError::Server(e)),
    }
}

/// A queue in a Redis server: a stream with a consumer group, shared by
/// any number of processes on any number of machines. See the [crate
/// docs](crate) for what it promises.
///
/// Each handle has one connection, used by one operation at a time (share
/// a handle between threads and they take turns; open a handle per thread
/// for parallel blocking receives), and a heartbeat thread with a
/// connection of its own that keeps the messages it holds from being
/// reclaimed.
pub struct RedisQueue {
    keys: Keys,
    config: RedisConfig,
    opts: RedisOptions,
    id: u32,
    consumer: String,
    conn: Mutex<Conn>,
    /// Sequence number of this handle's next non-idempotent operation.
    seq: AtomicU64,
    /// Messages received through this handle not yet marked done.
    outstanding: AtomicU64,
    held: Held,
    /// Where the next `XAUTOCLAIM` of each stream (mailbox, shared) starts.
    cursors: Mutex<[String; 2]>,
    /// When this handle last looked for reclaimable entries.
    last_claim: Mutex<Instant>,
    /// Set when this handle handed entries back since it last looked for
    /// reclaimable ones: its next receive looks, so that they come before
    /// newer entries.
    handed_back: AtomicBool,
    heartbeat: Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>,
}

impl fmt::Debug for RedisQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisQueue")
            .field("name", &self.keys.name)
            .field("id", &self.id)
            .field("consumer", &self.consumer)
            .field("config", &self.config)
            .finish()
    }
}

/// A host-unique consumer name: host, process, a counter, a random word.
fn consumer_name() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "host".to_owned());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{host}:{}:{n}:{nanos:08x}", std::process::id())
}

fn check_name(name: &str) -> Result<(), RedisSetupError> {
    let ok = !name.is_empty()
        && name.len() <= 200
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(RedisSetupError::InvalidName {
            name: name.to_owned(),
        })
    }
}

/// Connects once for setup, classifying what went wrong.
fn setup_conn(
    url: &str,
    name: &str,
    opts: &RedisOptions,
) -> Result<(Conn, String), RedisSetupError> {
    let client = Client::open(url).map_err(|source| RedisSetupError::InvalidUrl { source })?;
    let server = client.get_connection_info().addr().to_string();
    let mut conn = Conn::new(client, opts.connect_timeout, opts.io_timeout);
    match conn.connect() {
        Ok(_) => Ok((conn, server)),
        Err(source) => Err(classify_connect(server, name, source)),
    }
}

fn classify_connect(server: String, name: &str, source: RedisError) -> RedisSetupError {
    let auth = source.kind() == redis::ErrorKind::AuthenticationFailed
        || matches!(source.code(), Some("NOAUTH" | "WRONGPASS" | "NOPERM"));
    if auth {
        RedisSetupError::Authentication { server, source }
    } else if is_connection_error(&source) {
        RedisSetupError::Unreachable { server, source }
    } else if matches!(
        source.kind(),
        redis::ErrorKind::Parse | redis::ErrorKind::UnexpectedReturnType
    ) {
        RedisSetupError::NotRedis { server, source }
    } else {
        RedisSetupError::Server {
            name: name.to_owned(),
            source,
        }
    }
}

impl RedisQueue {
    /// Creates the queue `name` on the server at `url` (`redis://[:password@]host[:port][/db]`)
    /// with room for `capacity` messages of up to `max_payload` bytes, and
    /// opens a handle on it.
    ///
    /// Fails with [`RedisSetupError::AlreadyExists`] if it exists, and
    /// [`RedisSetupError::WrongShape`] if its keys hold something else.
    pub fn create(
        url: &str,
        name: &str,
        capacity: u64,
        max_payload: usize,
    ) -> Result<RedisQueue, RedisSetupError> {
        Self::create_with(
            url,
            name,
            RedisConfig::new(capacity, max_payload),
            RedisOptions::default(),
        )
    }

    /// [`create`](RedisQueue::create) with every setting.
    pub fn create_with(
        url: &str,
        name: &str,
        config: RedisConfig,
        opts: RedisOptions,
    ) -> Result<RedisQueue, RedisSetupError> {
        check_name(name)?;
        if config.capacity == 0 {
            return Err(RedisSetupError::InvalidConfig {
                what: "capacity is 0",
            });
        }
        if config.max_payload == 0 || config.max_payload > REDIS_MAX_STRING {
            return Err(RedisSetupError::InvalidConfig {
                what: "max payload must be 1 byte to 512 MiB",
            });
        }
        let claim_ms = config.claim_after.as_millis();
        if !(4..=u64::MAX as u128 / 4).contains(&claim_ms) {
            return Err(RedisSetupError::InvalidConfig {
                what: "claim_after must be at least 4 ms",
            });
        }
        let (mut conn, _) = setup_conn(url, name, &opts)?;
        let keys = Keys::new(name, 0);
        let server_err = |source| RedisSetupError::Server {
            name: name.to_owned(),
            source,
        };
        let reply: String = {
            let mut c = conn.script_cmd(Script::Create, &[&keys.meta, &keys.shared]);
            c.arg(config.capacity)
                .arg(config.max_payload)
                .arg(claim_ms as u64);
            let con = conn.connect().map_err(server_err)?;
            c.query(con).map_err(server_err)?
        };
        if reply == "exists:hash" {
            return Err(RedisSetupError::AlreadyExists {
                name: name.to_owned(),
            });
        }
        if let Some(t) = reply.strip_prefix("exists:") {
            return Err(RedisSetupError::WrongShape {
                key: keys.meta,
                found: format!("a {t}, not a hash"),
            });
        }
        if let Some(t) = reply.strip_prefix("shape:") {
            return Err(RedisSetupError::WrongShape {
                key: keys.shared,
                found: format!("a {t} without mulproc metadata"),
            });
        }
        Self::finish_open(conn, name, opts)
    }

    /// Opens the existing queue `name` on the server at `url`.
    pub fn open(url: &str, name: &str) -> Result<RedisQueue, RedisSetupError> {
        Self::open_with(url, name, RedisOptions::default())
    }

    /// [`open`](RedisQueue::open) with handle options.
    pub fn open_with(
        url: &str,
        name: &str,
        opts: RedisOptions,
    ) -> Result<RedisQueue, RedisSetupError> {
        check_name(name)?;
        let (conn, _) = setup_conn(url, name, &opts)?;
        Self::finish_open(conn, name, opts)
    }

    /// Deletes the queue `name` and every message in it from the server
    /// at `url`; handles still open on it fail with
    /// [`RedisQueueError::QueueGone`] from then on. Returns whether there
    /// was one.
    pub fn destroy(url: &str, name: &str) -> Result<bool, RedisSetupError> {
        check_name(name)?;
        let (mut conn, _) = setup_conn(url, name, &RedisOptions::default())?;
        let server_err = |source| RedisSetupError::Server {
            name: name.to_owned(),
            source,
        };
        let con = conn.connect().map_err(server_err)?;
        // SCAN, not KEYS: it does not stop the server on a large keyspace.
        let pattern = format!(
            "{}to:*",
            key_prefix(name).replace('{', "\\{").replace('}', "\\}")
        );
        let mut doomed: Vec<String> = Vec::new();
        let mut cursor = 0u64;
        loop {
            let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("MATCH")
                .arg(&pattern)
                .arg("COUNT")
                .arg(1000)
                .query(con)
                .map_err(server_err)?;
            doomed.extend(batch);
            if next == 0 {
                break;
            }
            cursor = next;
        }
        let keys = Keys::new(name, 0);
        doomed.push(keys.meta.clone());
        doomed.push(keys.shared.clone());
        let n: i64 = redis::cmd("DEL")
            .arg(&doomed)
            .query(con)
            .map_err(server_err)?;
        Ok(n > 0)
    }

    fn finish_open(
        mut conn: Conn,
        name: &str,
        opts: RedisOptions,
    ) -> Result<RedisQueue, RedisSetupError> {
        let id = opts.id.unwrap_or_else(std::process::id);
        let keys = Keys::new(name, id);
        let server_err = |source| RedisSetupError::Server {
            name: name.to_owned(),
            source,
        };
        let wrong = |key: &str, found: String| RedisSetupError::WrongShape {
            key: key.to_owned(),
            found,
        };
        let con = conn.connect().map_err(server_err)?;
        let (meta_type, shared_type): (String, String) = redis::pipe()
            .cmd("TYPE")
            .arg(&keys.meta)
            .cmd("TYPE")
            .arg(&keys.shared)
            .query(con)
            .map_err(server_err)?;
        match (meta_type.as_str(), shared_type.as_str()) {
            ("none", "none") => {
                return Err(RedisSetupError::NotFound {
                    name: name.to_owned(),
                })
            }
            ("none", t) => {
                return Err(wrong(
                    &keys.shared,
                    format!("a {t} without mulproc metadata"),
                ))
            }
            ("hash", "stream") => {}
            ("hash", t) => return Err(wrong(&keys.shared, format!("a {t}, not a stream"))),
            (t, _) => return Err(wrong(&keys.meta, format!("a {t}, not a hash"))),
        }
        let meta: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(&keys.meta)
            .query(con)
            .map_err(server_err)?;
        if meta.get("magic").map(String::as_str) != Some("mulproc-redis") {
            return Err(wrong(&keys.meta, "a hash without the mulproc magic".into()));
        }
        if meta.get("version").map(String::as_str) != Some("1") {
            return Err(wrong(
                &keys.meta,
                format!(
                    "layout version {:?}, this library speaks 1",
                    meta.get("version")
                ),
            ));
        }
        let field = |f: &str| -> Result<u64, RedisSetupError> {
            meta.get(f)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| wrong(&keys.meta, format!("field {f:?} missing or not a number")))
        };
        let config = RedisConfig {
            capacity: field("capacity")?,
            max_payload: usize::try_from(field("max_payload")?)
                .map_err(|_| wrong(&keys.meta, "max_payload out of range".into()))?,
            claim_after: Duration::from_millis(field("claim_ms")?.max(4)),
        };
        // The shared stream must have our group.
        let groups: Value = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&keys.shared)
            .query(con)
            .map_err(server_err)?;
        if !has_group(&groups) {
            return Err(wrong(
                &keys.shared,
                format!("a stream without the consumer group {GROUP:?}"),
            ));
        }
        ensure_group(con, &keys.mailbox).map_err(|e| {
            if e.code() == Some("WRONGTYPE") {
                wrong(&keys.mailbox, "not a stream".into())
            } else {
                server_err(e)
            }
        })?;

        let held: Held = Arc::default();
        let consumer = consumer_name();
        let heartbeat = {
            let (tx, rx) = mpsc::channel();
            let hb = Heartbeat {
                conn: Conn::new(conn.client().clone(), opts.connect_timeout, opts.io_timeout),
                keys: keys.clone(),
                consumer: consumer.clone(),
                held: Arc::clone(&held),
                every: config.claim_after / 4,
            };
            let handle = thread::Builder::new()
                .name("mulproc-redis-heartbeat".into())
                .spawn(move || hb.run(rx))
                .map_err(|e| RedisSetupError::Server {
                    name: name.to_owned(),
                    source: RedisError::from(e),
                })?;
            Some((tx, handle))
        };
        Ok(RedisQueue {
            keys,
            config,
            opts,
            id,
            consumer,
            conn: Mutex::new(conn),
            seq: AtomicU64::new(1),
            outstanding: AtomicU64::new(0),
            held,
            cursors: Mutex::new(["0-0".to_owned(), "0-0".to_owned()]),
            last_claim: Mutex::new(Instant::now()),
            handed_back: AtomicBool::new(false),
            heartbeat,
        })
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.keys.name
    }

    /// The queue's shape.
    pub fn config(&self) -> RedisConfig {
        self.config
    }

    /// This handle's consumer name in the consumer groups (host, pid and a
    /// random part), as `XINFO CONSUMERS` shows it.
    pub fn consumer(&self) -> &str {
        &self.consumer
    }

    /// Messages sent and not yet acknowledged (waiting, or held by a
    /// receiver): what the capacity bounds. Racy: other processes change
    /// it at any moment.
    /// [`RedisQueueError::QueueGone`] if the queue is no longer on the
    /// server.
    pub fn len(&self) -> Result<u64, BackendError> {
        match self.query_meta("live")? {
            Some(n) => Ok(n),
            None => Err(backend(RedisQueueError::QueueGone {
                name: self.keys.name.clone(),
            })),
        }
    }

    /// True if [`len`](RedisQueue::len) is 0.
    pub fn is_empty(&self) -> Result<bool, BackendError> {
        Ok(self.len()? == 0)
    }

    fn query_meta(&self, field: &str) -> Result<Option<u64>, BackendError> {
        let until = Instant::now() + self.opts.reconnect_for;
        let meta = self.keys.meta.clone();
        lock(&self.conn)
            .run(until, |c| {
                let con = c.connect()?;
                redis::cmd("HGET").arg(&meta).arg(field).query(con)
            })
            .map_err(|e| op_backend(&self.keys.name, e, false))
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `msgs` in order, as many as fit right now; the count.
    fn send_now(&self, msgs: &[(Header, &[u8])]) -> Result<usize, BackendError> {
        if msgs.is_empty() {
            return Ok(0);
        }
        let (h0, _) = msgs[0];
        if msgs.len() > 1 && msgs.iter().all(|(h, _)| *h == h0) {
            return self.send_same(h0, msgs);
        }
        // The stream of each message: 2 (KEYS[2], the shared one) or a
        // recipient's, numbered in order of first use.
        let mut keys: Vec<String> = vec![self.keys.meta.clone(), self.keys.shared.clone()];
        let mut index: HashMap<u32, usize> = HashMap::new();
        let targets: Vec<usize> = msgs
            .iter()
            .map(|(h, _)| match h.recipient {
                None => 2,
                Some(r) => *index.entry(r).or_insert_with(|| {
                    keys.push(mailbox_key(&self.keys.name, r));
                    keys.len()
                }),
            })
            .collect();
        let key_refs: Vec<&str> = keys.iter().map(String::as_str).collect();
        let mut cmd = script_cmd(Script::Send, &key_refs);
        cmd.arg(&self.consumer).arg(self.next_seq());
        for ((h, d), k) in msgs.iter().zip(targets) {
            cmd.arg(k)
                .arg(h.request.code())
                .arg(h.sender)
                .arg(h.recipient.unwrap_or(0))
                .arg(*d);
        }
        let until = Instant::now() + self.opts.reconnect_for;
        let n: i64 = lock(&self.conn)
            .run(until, |c| {
                let con = c.connect()?;
                cmd.query(con)
            })
            .map_err(|e| op_backend(&self.keys.name, e, true))?;
        Ok(usize::try_from(n).unwrap_or(0).min(msgs.len()))
    }

    /// [`send_now`](RedisQueue::send_now) of messages that share one
    /// header (so one stream): one argument per message.
    fn send_same(&self, h: Header, msgs: &[(Header, &[u8])]) -> Result<usize, BackendError> {
        let mailbox;
        let stream = match h.recipient {
            None => self.keys.shared.as_str(),
            Some(r) => {
                mailbox = mailbox_key(&self.keys.name, r);
                mailbox.as_str()
            }
        };
        let mut cmd = script_cmd(Script::SendSame, &[&self.keys.meta, stream]);
        cmd.arg(&self.consumer)
            .arg(self.next_seq())
            .arg(h.request.code())
            .arg(h.sender)
            .arg(h.recipient.unwrap_or(0));
        for (_, d) in msgs {
            cmd.arg(*d);
        }
        let until = Instant::now() + self.opts.reconnect_for;
        let n: i64 = lock(&self.conn)
            .run(until, |c| {
                let con = c.connect()?;
                cmd.query(con)
            })
            .map_err(|e| op_backend(&self.keys.name, e, true))?;
        Ok(usize::try_from(n).unwrap_or(0).min(msgs.len()))
    }

    /// Waits for new entries (`>`) of both streams until `deadline`
    /// (`BLOCK` of the time left, in whole milliseconds, never `BLOCK 0`,
    /// which is forever; a read retried after a lost connection blocks
    /// only for what is left).
    fn read_new(&self, count: usize, deadline: Instant) -> Result<Batch, BackendError> {
        let until = deadline + self.opts.reconnect_for;
        let v: Value = lock(&self.conn)
            .run(until, |c| {
                let left = deadline.saturating_duration_since(Instant::now());
                let ms = left.as_millis() as u64;
                if ms == 0 {
                    return Ok(Value::Nil);
                }
                let io = c.io_timeout();
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(count.max(1))
                    .arg("BLOCK")
                    .arg(ms)
                    .arg("STREAMS")
                    .arg(&self.keys.mailbox)
                    .arg(&self.keys.shared)
                    .arg(">")
                    .arg(">");
                let con = c.connect()?;
                con.set_read_timeout(Some(left + io))?;
                let r = cmd.query(con);
                if !r.as_ref().is_err_and(is_connection_error) {
                    con.set_read_timeout(Some(io))?;
                }
                match r {
                    Err(e) if has_code(&e, "NOGROUP") => {
                        self.regroup(con)?;
                        Ok(Value::Nil)
                    }
                    r => r,
                }
            })
            .map_err(|e| op_backend(&self.keys.name, e, false))?;
        Ok(self.parse_read(&v))
    }

    /// One look at both streams, in one round trip: entries idle past
    /// the claim time (held by dead consumers, or handed back by others'
    /// selective receives; oldest first, a few more than `skipped` of
    /// them, if `claim`) and up to `count` new entries per stream.
    fn look(&self, count: usize, skipped: usize, claim: bool) -> Result<Batch, BackendError> {
        let min_idle = self.config.claim_after.as_millis() as u64;
        // XAUTOCLAIM looks at ten pending entries per entry it may claim:
        // claim at least 8 (80 looked at), and go on from where the last
        // look stopped, so that a long pending list is gone through in
        // turn and none of it is left behind.
        let claim_count = (skipped + 8).min(1000);
        let cursors = lock(&self.cursors).clone();
        if claim {
            self.handed_back.store(false, Ordering::Relaxed);
            *lock(&self.last_claim) = Instant::now();
        }
        let until = Instant::now() + self.opts.reconnect_for;
        let replies: Vec<Value> = lock(&self.conn)
            .run(until, |c| {
                let mut p = redis::pipe();
                let claims = if claim { 2 } else { 0 };
                for (key, cursor) in [&self.keys.mailbox, &self.keys.shared]
                    .into_iter()
                    .zip(&cursors)
                    .take(claims)
                {
                    p.cmd("XAUTOCLAIM")
                        .arg(key)
                        .arg(GROUP)
                        .arg(&self.consumer)
                        .arg(min_idle)
                        .arg(cursor)
                        .arg("COUNT")
                        .arg(claim_count);
                }
                p.cmd("XREADGROUP")
                    .arg("GROUP")
                    .arg(GROUP)
                    .arg(&self.consumer)
                    .arg("COUNT")
                    .arg(count.max(1))
                    .arg("STREAMS")
                    .arg(&self.keys.mailbox)
                    .arg(&self.keys.shared)
                    .arg(">")
                    .arg(">");
                let con = c.connect()?;
                match p.query(con) {
                    Err(e) if has_code(&e, "NOGROUP") => {
                        self.regroup(con)?;
                        Ok(Vec::new())
                    }
                    r => r,
                }
            })
            .map_err(|e| op_backend(&self.keys.name, e, false))?;
        let mut out = Batch::default();
        let claims = if claim { 2 } else { 0 };
        for (i, (which, v)) in [Which::Mailbox, Which::Shared]
            .into_iter()
            .zip(&replies)
            .take(claims)
            .enumerate()
        {
            if let Value::Array(parts) = v {
                if let Some(next) = parts.first().and_then(as_bytes) {
                    lock(&self.cursors)[i] = String::from_utf8_lossy(next).into_owned();
                }
                if let Some(Value::Array(entries)) = parts.get(1) {
                    for e in entries {
                        self.parse_entry(which, e, true, &mut out);
                    }
                }
            }
        }
        if let Some(v) = replies.get(claims) {
            let more = self.parse_read(v);
            out.entries.extend(more.entries);
            out.malformed.extend(more.malformed);
        }
        Ok(out)
    }

    /// After `NOGROUP`: if the queue is gone (destroyed, or the server
    /// restarted without persistence), says so without making any key
    /// again; otherwise (a group destroyed by hand) makes the groups again.
    fn regroup(&self, con: &mut redis::Connection) -> Result<(), RedisError> {
        let t: String = redis::cmd("TYPE").arg(&self.keys.meta).query(con)?;
        if t != "hash" {
            return Err(redis::make_extension_error(
                "NOQUEUE".into(),
                Some(format!("no mulproc queue at {}", self.keys.meta)),
            ));
        }
        ensure_group(con, &self.keys.mailbox)?;
        ensure_group(con, &self.keys.shared)
    }

    fn parse_read(&self, v: &Value) -> Batch {
        let mut out = Batch::default();
        let streams: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            Value::Map(m) => {
                // RESP3: a map of key → entries.
                for (k, entries) in m {
                    let which = self.which_of(k);
                    if let (Some(which), Value::Array(es)) = (which, entries) {
                        for e in es {
                            self.parse_entry(which, e, false, &mut out);
                        }
                    }
                }
                return out;
            }
            _ => return out,
        };
        for s in streams {
            let Value::Array(pair) = s else { continue };
            let (Some(k), Some(Value::Array(es))) = (pair.first(), pair.get(1)) else {
                continue;
            };
            let Some(which) = self.which_of(k) else {
                continue;
            };
            for e in es {
                self.parse_entry(which, e, false, &mut out);
            }
        }
        out
    }

    fn which_of(&self, k: &Value) -> Option<Which> {
        let k = as_bytes(k)?;
        if k == self.keys.mailbox.as_bytes() {
            Some(Which::Mailbox)
        } else if k == self.keys.shared.as_bytes() {
            Some(Which::Shared)
        } else {
            None
        }
    }

    /// Parses one `[id, [field, value, ...]]` entry into `out`, holding it.
    fn parse_entry(&self, which: Which, e: &Value, redelivered: bool, out: &mut Batch) {
        let Value::Array(pair) = e else { return };
        let Some(id) = pair.first().and_then(as_bytes) else {
            return;
        };
        let id = String::from_utf8_lossy(id).into_owned();
        // Delivered to us now: hold it (heartbeated) until acknowledged or
        // handed back.
        lock(&self.held)
            .entry(which)
            .or_default()
            .insert(id.clone());
        let fields: Vec<&Value> = match pair.get(1) {
            Some(Value::Array(f)) => f.iter().collect(),
            Some(Value::Map(m)) => m.iter().flat_map(|(k, v)| [k, v]).collect(),
            // A deleted entry still pending: nothing to deliver.
            _ => {
                out.malformed.push((which, id, "the entry was deleted"));
                return;
            }
        };
        let mut r = None;
        let mut s = None;
        let mut t = None;
        let mut d = None;
        for kv in fields.chunks(2) {
            let (Some(k), Some(v)) = (kv.first().and_then(|k| as_bytes(k)), kv.get(1)) else {
                continue;
            };
            match k {
                b"r" => r = as_int(v),
                b"s" => s = as_int(v),
                b"t" => t = as_int(v),
                b"d" => d = as_bytes(v).map(<[u8]>::to_vec),
                _ => {}
            }
        }
        let (Some(r), Some(s), Some(t), Some(d)) = (r, s, t, d) else {
            out.malformed
                .push((which, id, "fields r, s, t, d missing or not numbers"));
            return;
        };
        let (Ok(r), Ok(s), Ok(t)) = (u32::try_from(r), u32::try_from(s), u32::try_from(t)) else {
            out.malformed
                .push((which, id, "a header field out of range"));
            return;
        };
        if d.len() > self.config.max_payload {
            out.malformed
                .push((which, id, "payload longer than the max payload"));
            return;
        }
        out.entries.push(Entry {
            which,
            redelivered,
            id,
            header: Header {
                request: Request::new(r),
                sender: s,
                recipient: (t != 0).then_some(t),
            },
            data: d,
        });
    }

    /// Runs a script over `ids` of one stream; its integer replies.
    fn per_stream(
        &self,
        script: Script,
        which: Which,
        ids: &[&str],
        extra: &[String],
    ) -> Result<Value, BackendError> {
        let until = Instant::now() + self.opts.reconnect_for;
        let keys: Vec<&str> = match script {
            Script::Ack => vec![&self.keys.meta, self.keys.of(which)],
            _ => vec![self.keys.of(which)],
        };
        lock(&self.conn)
            .run(until, |c| {
                let mut cmd = c.script_cmd(script, &keys);
                cmd.arg(&self.consumer);
                for a in extra {
                    cmd.arg(a);
                }
                cmd.arg(ids);
                let con = c.connect()?;
                cmd.query(con)
            })
            .map_err(|e| op_backend(&self.keys.name, e, false))
    }

    /// Acknowledges entries of one stream; errors if another consumer
    /// holds one of them now.
    fn ack(&self, which: Which, ids: &[&str]) -> Result<(), BackendError> {
        {
            let mut held = lock(&self.held);
            if let Some(set) = held.get_mut(&which) {
                for id in ids {
                    set.remove(*id);
                }
            }
        }
        let v = self.per_stream(Script::Ack, which, ids, &[])?;
        let stolen = match &v {
            Value::Array(a) => a.get(1).and_then(as_int).unwrap_or(0),
            _ => 0,
        };
        if stolen > 0 {
            return Err(backend(RedisQueueError::Reclaimed));
        }
        Ok(())
    }

    /// Acknowledges entries that are not messages, so they block nobody.
    fn drop_malformed(&self, bad: &[(Which, String, &'static str)]) -> Result<(), BackendError> {
        for (which, id, _) in bad {
            lock(&self.held).entry(*which).or_default().remove(id);
            let until = Instant::now() + self.opts.reconnect_for;
            let key = self.keys.of(*which).to_owned();
            lock(&self.conn)
                .run(until, |c| {
                    let con = c.connect()?;
                    redis::cmd("XACK")
                        .arg(&key)
                        .arg(GROUP)
                        .arg(id)
                        .query::<i64>(con)
                })
                .map_err(|e| op_backend(&self.keys.name, e, false))?;
        }
        Ok(())
    }

    /// Hands entries back to the group: anyone's next reclaim takes them.
    fn hand_back(&self, entries: &[Entry]) {
        for which in [Which::Mailbox, Which::Shared] {
            let ids: Vec<&str> = entries
                .iter()
                .filter(|e| e.which == which)
                .map(|e| e.id.as_str())
                .collect();
            if ids.is_empty() {
                continue;
            }
            {
                let mut held = lock(&self.held);
                if let Some(set) = held.get_mut(&which) {
                    for id in &ids {
                        set.remove(*id);
                    }
                }
            }
            self.handed_back.store(true, Ordering::Relaxed);
            // A failure leaves them held by us without heartbeat: they are
            // reclaimed after the claim time all the same.
            let _ = self.per_stream(
                Script::Touch,
                which,
                &ids,
                &[HANDED_BACK_IDLE_MS.to_string()],
            );
        }
    }

    /// The oldest entry of `batch` that `filter` accepts; the rest are
    /// handed back, and those rejected added to `skip`.
    fn choose(
        &self,
        mut batch: Batch,
        filter: &mut Filter<'_>,
        skip: &mut HashSet<String>,
    ) -> Result<Option<Entry>, BackendError> {
        if !batch.malformed.is_empty() {
            let bad = std::mem::take(&mut batch.malformed);
            self.drop_malformed(&bad)?;
            self.hand_back(&batch.entries);
            let (which, id, why) = bad.into_iter().next().expect("not empty");
            return Err(backend(RedisQueueError::Malformed {
                stream: self.keys.of(which).to_owned(),
                id,
                why,
            }));
        }
        batch.entries.sort_by_key(|e| id_order(&e.id));
        let mut chosen = None;
        let mut rest = Vec::new();
        for e in batch.entries {
            if chosen.is_some() || skip.contains(&e.id) {
                rest.push(e);
                continue;
            }
            let ok = match filter {
                Filter::Any => true,
                Filter::Header(f) => f(&e.header),
                Filter::Message(f) => f(&e.header, &e.data),
            };
            if ok {
                chosen = Some(e);
            } else {
                skip.insert(e.id.clone());
                rest.push(e);
            }
        }
        self.hand_back(&rest);
        Ok(chosen)
    }

    /// True if the next look should also reclaim: this handle handed
    /// entries back, or a poll interval passed since it last looked.
    fn claim_due(&self) -> bool {
        self.handed_back.load(Ordering::Relaxed)
            || lock(&self.last_claim).elapsed() >= self.opts.poll
    }

    fn recv_entry(&self, mut filter: Filter<'_>, wait: Wait) -> Result<Entry, RecvTimeoutError> {
        let count = match filter {
            Filter::Any => 1,
            _ => SCAN_COUNT,
        };
        let mut skip = HashSet::new();
        let mut blocked: Option<Batch> = None;
        let mut claim = self.claim_due();
        loop {
            let b = match blocked.take() {
                Some(b) => b,
                None => self
                    .look(count, skip.len(), claim)
                    .map_err(RecvTimeoutError::Backend)?,
            };
            let looked_for_claims = claim;
            let fresh = b.entries.iter().any(|e| !skip.contains(&e.id)) || !b.malformed.is_empty();
            if let Some(e) = self
                .choose(b, &mut filter, &mut skip)
                .map_err(RecvTimeoutError::Backend)?
            {
                return Ok(e);
            }
            if fresh {
                // Everything was rejected: look on before waiting.
                claim = self.claim_due();
                continue;
            }
            if !looked_for_claims {
                // Nothing new: look for reclaimable entries before waiting.
                claim = true;
                continue;
            }
            let block = match wait.remaining() {
                None => self.opts.poll,
                Some(r) => r.min(self.opts.poll),
            };
            if block < Duration::from_millis(1) {
                // BLOCK counts whole milliseconds (and 0 is forever):
                // sleep out the last fraction and look once more.
                if block.is_zero() {
                    return Err(RecvTimeoutError::Timeout);
                }
                thread::sleep(block);
                claim = false;
                continue;
            }
            // Wait for new entries; entries handed back meanwhile are
            // found by the next look, at most `poll` later.
            let b = self
                .read_new(count, Instant::now() + block)
                .map_err(RecvTimeoutError::Backend)?;
            if !b.entries.is_empty() || !b.malformed.is_empty() {
                blocked = Some(b);
            }
            claim = self.claim_due();
        }
    }

    /// Receives up to `max` messages that wait now (one pipelined look,
    /// as [`try_recv_batch`](Channel::try_recv_batch)), holding each as a
    /// guard; an empty vector if none waits.
    pub fn try_recv_held(&self, max: usize) -> Result<Vec<RedisGuard<'_>>, TryRecvError> {
        let entries = self.take_waiting(max)?;
        Ok(entries.into_iter().map(|e| self.guard(e)).collect())
    }

    /// Up to `max` messages that wait now, oldest first, taken with one
    /// pipelined look (what it read past `max` handed back); none when
    /// none waits or a malformed entry was read (reported, the rest
    /// handed back).
    fn take_waiting(&self, max: usize) -> Result<Vec<Entry>, TryRecvError> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let mut b = self
            .look(max, 0, self.claim_due())
            .map_err(TryRecvError::Backend)?;
        if !b.malformed.is_empty() {
            let mut filter = Filter::Any;
            let mut skip = HashSet::new();
            // Reports the first malformed entry, handing the rest back.
            self.choose(b, &mut filter, &mut skip)
                .map_err(TryRecvError::Backend)?;
            return Ok(Vec::new());
        }
        b.entries.sort_by_key(|e| id_order(&e.id));
        let rest = b.entries.split_off(b.entries.len().min(max));
        self.hand_back(&rest);
        Ok(b.entries)
    }

    /// Ends the hold of `guards` together: one acknowledgement per stream
    /// instead of one per guard. [`RedisQueueError::Reclaimed`] if another
    /// consumer took any of them over meanwhile (those are delivered
    /// again there); the others are acknowledged all the same.
    pub fn finish_all<'q>(
        &'q self,
        guards: impl IntoIterator<Item = RedisGuard<'q>>,
    ) -> Result<(), BackendError> {
        let mut ids: [Vec<String>; 2] = [Vec::new(), Vec::new()];
        for mut g in guards {
            if g.done {
                continue;
            }
            g.done = true;
            let i = match g.entry.which {
                Which::Mailbox => 0,
                Which::Shared => 1,
            };
            ids[i].push(std::mem::take(&mut g.entry.id));
        }
        let mut first_err = None;
        for (which, mut ids) in [Which::Mailbox, Which::Shared].into_iter().zip(ids) {
            if ids.is_empty() {
                continue;
            }
            ids.sort_by_key(|id| id_order(id));
            let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
            if let Err(e) = self.ack(which, &refs) {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    fn guard(&self, entry: Entry) -> RedisGuard<'_> {
        self.outstanding.fetch_add(1, Ordering::Relaxed);
        RedisGuard {
            queue: self,
            entry,
            done: false,
        }
    }
}

fn has_group(groups: &Value) -> bool {
    let Value::Array(gs) = groups else {
        return false;
    };
    gs.iter().any(|g| {
        let fields: Vec<&Value> = match g {
            Value::Array(f) => f.iter().collect(),
            Value::Map(m) => m.iter().flat_map(|(k, v)| [k, v]).collect(),
            _ => return false,
        };
        fields.chunks(2).any(|kv| {
            kv.first().and_then(|k| as_bytes(k)) == Some(b"name".as_slice())
                && kv.get(1).and_then(|v| as_bytes(v)) == Some(GROUP.as_bytes())
        })
    })
}

/// Creates the group on `key` (and the stream) if missing. Id 0: a group
/// made after messages arrived still delivers them.
fn ensure_group(con: &mut redis::Connection, key: &str) -> Result<(), RedisError> {
    match redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(key)
        .arg(GROUP)
        .arg("0")
        .arg("MKSTREAM")
        .query::<()>(con)
    {
        Err(e) if e.code() == Some("BUSYGROUP") => Ok(()),
        r => r,
    }
}

/// The thread that keeps a handle's held messages from being reclaimed.
struct Heartbeat {
    conn: Conn,
    keys: Keys,
    consumer: String,
    held: Held,
    every: Duration,
}

impl Heartbeat {
    fn run(mut self, stop: mpsc::Receiver<()>) {
        let mut beat = 0u64;
        loop {
            match stop.recv_timeout(self.every) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            beat += 1;
            if beat.is_multiple_of(PRUNE_EVERY_BEATS) {
                self.prune();
            }
            let snapshot: Vec<(Which, Vec<String>)> = lock(&self.held)
                .iter()
                .filter(|(_, ids)| !ids.is_empty())
                .map(|(w, ids)| (*w, ids.iter().cloned().collect()))
                .collect();
            for (which, ids) in snapshot {
                let key = self.keys.of(which).to_owned();
                let until = Instant::now() + self.every;
                let consumer = self.consumer.clone();
                // A failure is retried at the next beat; a long outage
                // lets other consumers reclaim what we hold, and our
                // acknowledgement then reports it.
                let _ = self.conn.run(until, |c| {
                    let mut cmd = c.script_cmd(Script::Touch, &[&key]);
                    cmd.arg(&consumer).arg(0).arg(&ids);
                    let con = c.connect()?;
                    cmd.query::<i64>(con)
                });
            }
        }
    }
}

impl Heartbeat {
    /// Removes consumers silent for [`PRUNE_AFTER_CLAIMS`] claim times
    /// that hold nothing: dead processes, once their messages were
    /// reclaimed (best effort; the next round tries again).
    fn prune(&mut self) {
        let idle_ms = (self.every * 4 * PRUNE_AFTER_CLAIMS).as_millis() as u64;
        for key in [self.keys.shared.clone(), self.keys.mailbox.clone()] {
            let until = Instant::now() + self.every;
            let _ = self.conn.run(until, |c| {
                let mut cmd = c.script_cmd(Script::Prune, &[&key]);
                cmd.arg(idle_ms);
                let con = c.connect()?;
                cmd.query::<i64>(con)
            });
        }
    }
}

impl Drop for RedisQueue {
    fn drop(&mut self) {
        if let Some((tx, handle)) = self.heartbeat.take() {
            drop(tx);
            let _ = handle.join();
        }
        // Leave the groups if we hold nothing (best effort: a consumer left
        // behind only shows in XINFO CONSUMERS).
        let keys = [
            self.keys.meta.as_str(),
            self.keys.shared.as_str(),
            self.keys.mailbox.as_str(),
        ];
        let mut conn = lock(&self.conn);
        let until = Instant::now() + Duration::from_millis(500);
        let _ = conn.run(until, |c| {
            let mut cmd = c.script_cmd(Script::Retire, &keys);
            cmd.arg(&self.consumer);
            let con = c.connect()?;
            cmd.query::<i64>(con)
        });
    }
}

/// A message received from a [`RedisQueue`] and held: in this consumer's
/// pending list, heartbeated, until [`finish`](Received::finish) or drop
/// acknowledges it (`XACK`; acknowledged entries are trimmed from the stream). If the process dies
/// first, another consumer reclaims it after the claim time and it is
/// delivered again.
pub struct RedisGuard<'q> {
    queue: &'q RedisQueue,
    entry: Entry,
    done: bool,
}

impl fmt::Debug for RedisGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisGuard")
            .field("id", &self.entry.id)
            .field("header", &self.entry.header)
            .field("len", &self.entry.data.len())
            .finish()
    }
}

impl<'q> RedisGuard<'q> {
    /// The queue it holds a message of.
    pub(crate) fn queue(&self) -> &'q RedisQueue {
        self.queue
    }

    /// The stream entry id (`<ms>-<seq>`).
    pub fn entry_id(&self) -> &str {
        &self.entry.id
    }

    /// True if this message was taken over from another consumer that
    /// held it and stopped heartbeating (it died, or was paused past the
    /// claim time), or that handed it back after a selective receive
    /// passed it over: it was delivered before.
    pub fn redelivered(&self) -> bool {
        self.entry.redelivered
    }

    fn ack(&mut self) -> Result<(), BackendError> {
        self.done = true;
        self.queue.ack(self.entry.which, &[self.entry.id.as_str()])
    }
}

impl Received for RedisGuard<'_> {
    fn header(&self) -> &Header {
        &self.entry.header
    }

    fn data(&self) -> &[u8] {
        &self.entry.data
    }

    /// Acknowledges the message; [`RedisQueueError::Reclaimed`] if another
    /// consumer took it over meanwhile (it is delivered again there).
    fn finish(mut self) -> Result<(), RecvError> {
        self.ack().map_err(RecvError::Backend)
    }

    fn into_message(mut self) -> Message {
        let _ = self.ack();
        Message {
            request: self.entry.header.request,
            sender: Some(self.entry.header.sender),
            recipient: self.entry.header.recipient,
            data: std::mem::take(&mut self.entry.data),
        }
    }
}

impl Drop for RedisGuard<'_> {
    fn drop(&mut self) {
        if !self.done {
            // A failed acknowledgement leaves the message pending and no
            // longer heartbeated: it is delivered again (at least once).
            let _ = self.ack();
        }
    }
}

impl Channel for RedisQueue {
    type Guard<'a> = RedisGuard<'a>;

    fn max_payload(&self) -> usize {
        self.config.max_payload
    }

    fn pid(&self) -> u32 {
        self.id
    }

    fn send_retry(&self) -> SendRetry {
        self.opts.send_retry
    }

    fn send_with<D: AsRef<[u8]>>(
        &self,
        msg: Message<D>,
        wait: Wait,
    ) -> Result<(), TrySendError<Message<D>>> {
        let len = msg.data.as_ref().len();
        let max = self.config.max_payload;
        if len > max {
            return Err(TrySendError::TooLarge { msg, len, max });
        }
        let header = Header {
            request: msg.request,
            sender: msg.sender.unwrap_or(self.id),
            recipient: msg.recipient,
        };
        let mut backoff = Duration::from_millis(1);
        loop {
            match self.send_now(&[(header, msg.data.as_ref())]) {
                Ok(1) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(TrySendError::Backend(msg, e)),
            }
            // Full: nothing wakes a sender; look again with backoff.
            match wait.remaining() {
                Some(r) if r.is_zero() => return Err(TrySendError::Full(msg)),
                Some(r) => thread::sleep(backoff.min(r)),
                None => thread::sleep(backoff),
            }
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }

    fn recv_with(
        &self,
        filter: Filter<'_>,
        wait: Wait,
    ) -> Result<RedisGuard<'_>, RecvTimeoutError> {
        self.recv_entry(filter, wait).map(|e| self.guard(e))
    }

    /// Sends the whole batch in one script call (one round trip, atomic:
    /// the first `n` that fit are added together).
    fn try_send_batch<D: AsRef<[u8]>>(
        &self,
        msgs: &[Message<D>],
    ) -> Result<usize, TrySendError<()>> {
        let max = self.config.max_payload;
        if let Some(m) = msgs.iter().find(|m| m.data.as_ref().len() > max) {
            let len = m.data.as_ref().len();
            return Err(TrySendError::TooLarge { msg: (), len, max });
        }
        let v: Vec<(Header, &[u8])> = msgs
            .iter()
            .map(|m| {
                (
                    Header {
                        request: m.request,
                        sender: m.sender.unwrap_or(self.id),
                        recipient: m.recipient,
                    },
                    m.data.as_ref(),
                )
            })
            .collect();
        match self.send_now(&v) {
            Ok(0) if !msgs.is_empty() => Err(TrySendError::Full(())),
            Ok(n) => Ok(n),
            Err(e) => Err(TrySendError::Backend((), e)),
        }
    }

    /// Reads up to `max` waiting messages in one `XREADGROUP` and
    /// acknowledges them in one script call per stream.
    fn try_recv_batch<F>(&self, max: usize, mut f: F) -> Result<usize, TryRecvError>
    where
        F: FnMut(&Header, &[u8]),
    {
        let entries = self.take_waiting(max)?;
        for e in &entries {
            f(&e.header, &e.data);
        }
        let n = entries.len();
        self.outstanding.fetch_add(n as u64, Ordering::Relaxed);
        for which in [Which::Mailbox, Which::Shared] {
            let ids: Vec<&str> = entries
                .iter()
                .filter(|e| e.which == which)
                .map(|e| e.id.as_str())
                .collect();
            if !ids.is_empty() {
                self.ack(which, &ids).map_err(TryRecvError::Backend)?;
            }
        }
        Ok(n)
    }
}

impl Joinable for RedisQueue {
    fn task_done(&self) -> Result<(), TaskDoneError> {
        self.outstanding
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .map_err(|_| TaskDoneError::TooManyCalls)?;
        let seq = self.next_seq().to_string();
        let until = Instant::now() + self.opts.reconnect_for;
        let meta = self.keys.meta.clone();
        let r = lock(&self.conn).run(until, |c| {
            let mut cmd = c.script_cmd(Script::TaskDone, &[&meta]);
            cmd.arg(&self.consumer).arg(&seq);
            let con = c.connect()?;
            cmd.query::<i64>(con)
        });
        match r {
            Ok(_) => Ok(()),
            Err(e) => {
                // Not counted (or unknown): give the call back, so that the
                // caller may retry it.
                self.outstanding.fetch_add(1, Ordering::Relaxed);
                Err(TaskDoneError::Backend(op_backend(&self.keys.name, e, true)))
            }
        }
    }

    fn join_with(&self, wait: Wait) -> Result<(), JoinTimeoutError> {
        let mut backoff = Duration::from_millis(1);
        loop {
            let until = Instant::now() + self.opts.reconnect_for;
            let meta = self.keys.meta.clone();
            let (sent, done): (Option<u64>, Option<u64>) = lock(&self.conn)
                .run(until, |c| {
                    let con = c.connect()?;
                    redis::cmd("HMGET")
                        .arg(&meta)
                        .arg("sent")
                        .arg("done")
                        .query(con)
                })
                .map_err(|e| JoinTimeoutError::Backend(op_backend(&self.keys.name, e, false)))?;
            let (Some(sent), Some(done)) = (sent, done) else {
                return Err(JoinTimeoutError::Backend(backend(
                    RedisQueueError::QueueGone {
                        name: self.keys.name.clone(),
                    },
                )));
            };
            if done >= sent {
                return Ok(());
            }
            match wait.remaining() {
                Some(r) if r.is_zero() => {
                    return Err(JoinTimeoutError::Timeout {
                        outstanding: sent - done,
                    })
                }
                Some(r) => thread::sleep(backoff.min(r)),
                None => thread::sleep(backoff),
            }
            backoff = (backoff * 2).min(Duration::from_millis(50));
        }
    }
}
