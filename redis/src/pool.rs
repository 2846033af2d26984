//! [`RedisBackend`]: a [`mulproc::pool`] over Redis Streams, with local
//! workers, and (for a pool with a name) workers on other machines.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant};

use mulproc::pool::{Backend, ChannelSpec, Purpose, RemoteBackend};
use mulproc::BackendError;
use redis::{Client, RedisError, Value};

use crate::conn::{as_bytes, as_int, Conn, OpError, Script};
use crate::error::{RedisQueueError, RedisSetupError};
use crate::{RedisConfig, RedisGuard, RedisOptions, RedisQueue};

/// Default lease of a named pool's parent.
const DEFAULT_LEASE: Duration = Duration::from_secs(5);
/// Longest pool name: its channel names (`pool.<name>.<run>.results`)
/// must stay within a queue name's 200 bytes.
const MAX_POOL_NAME: usize = 100;

/// Carries a [`mulproc::pool::Pool`]'s tasks and results through a Redis
/// server.
///
/// - [`RedisBackend::new`]: each pool's channels are [`RedisQueue`]s under
///   fresh names (`pool-<unique>`), known only to the parent and its
///   local workers (`Builder::workers`).
/// - [`RedisBackend::pool`]: the pool has a name, and workers on any
///   machine join it with [`Builder::serve`](mulproc::pool::Builder::serve)
///   (the same URL and pool name); see [`pool`](RedisBackend::pool).
///
/// A backend is configuration: the parent and its workers build the same
/// value from the same code, and each connects on its own.
///
/// ```no_run
/// use mulproc::pool::Pool;
/// use mulproc_redis::RedisBackend;
///
/// fn main() -> Result<(), Box<dyn std::error::Error>> {
///     let backend = RedisBackend::new("redis://127.0.0.1:6379/")?;
///     let mut pool = Pool::builder().workers(4).backend(backend).start(|x: u64| x * x)?;
///     let squares: Vec<u64> = pool.map(0..100u64).map(|r| r.unwrap()).collect();
///     assert_eq!(squares[12], 144);
///     pool.shutdown()?;
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct RedisBackend {
    url: String,
    claim_after: Duration,
    options: RedisOptions,
    lease: Duration,
    named: Option<Arc<Named>>,
}

impl fmt::Debug for RedisBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisBackend")
            .field("url", &redact(&self.url))
            .field("claim_after", &self.claim_after)
            .field("lease", &self.lease)
            .field("pool", &self.named.as_ref().map(|n| &n.pool))
            .finish_non_exhaustive()
    }
}

/// The URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_owned(),
    }
}

/// A named pool's state in one process.
struct Named {
    pool: String,
    run_key: String,
    alive_key: String,
    /// For `find_run` and `count_attempt` (workers) and the claim
    /// (parent): one connection, reconnected when lost.
    conn: Mutex<Conn>,
    /// The run this process is the parent of, if any.
    parent: Mutex<ParentRun>,
}

#[derive(Default)]
struct ParentRun {
    id: Option<String>,
    created: [bool; 2],
    published: Arc<AtomicBool>,
    lease: Option<(mpsc::Sender<()>, thread::JoinHandle<()>)>,
    ended: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn channel_name(pool: &str, run: &str, purpose: Purpose) -> String {
    let what = match purpose {
        Purpose::Tasks => "tasks",
        Purpose::Results => "results",
    };
    format!("pool.{pool}.{run}.{what}")
}

fn attempts_key(pool: &str, run: &str) -> String {
    format!("mulproc:pool:{{{pool}}}:attempts:{run}")
}

fn op_error(e: OpError) -> BackendError {
    match e {
        OpError::NotSent(e) => BackendError::new(RedisQueueError::Connection(e)),
        OpError::Lost(e) => BackendError::new(RedisQueueError::Connection(e)),
        OpError::Server(e) => BackendError::new(RedisQueueError::Server(e)),
    }
}

impl RedisBackend {
    /// A backend on the server at `url` (`redis://[:password@]host[:port][/db]`),
    /// with a claim time of 10 s (a dead worker's tasks go to others that
    /// long after its last heartbeat). Checks the URL's form only; the
    /// server is first reached when the pool starts.
    pub fn new(url: &str) -> Result<RedisBackend, RedisSetupError> {
        Client::open(url).map_err(|source| RedisSetupError::InvalidUrl { source })?;
        Ok(RedisBackend {
            url: url.to_owned(),
            claim_after: RedisConfig::new(1, 1).claim_after,
            options: RedisOptions::default(),
            lease: DEFAULT_LEASE,
            named: None,
        })
    }

    /// Gives the pool the name `name` (1 to 100 bytes of
    /// `[A-Za-z0-9._-]`), so that workers on other machines can join it:
    /// a process that runs `Builder::serve` with a backend of the same
    /// URL and pool name finds the pool's current run and works for it.
    ///
    /// - **One parent at a time**: the parent holds a lease on the name
    ///   (a key with a time to live, renewed by a thread every fifth of
    ///   [`lease`](RedisBackend::lease)); a second parent of the same pool
    ///   on the same server fails to start with
    ///   [`RedisSetupError::PoolRunning`] while the first lives.
    /// - **Runs**: each parent's run has channels of its own
    ///   (`pool.<name>.<run>.tasks`, `….results`), published under the
    ///   pool's name once both exist, removed at shutdown (or drop). A
    ///   parent that dies (even SIGKILL) stops renewing its lease: once it
    ///   runs out, the next worker or parent that looks removes what the
    ///   run left, and workers go on to the next run.
    /// - **Workers**: local ones (`Builder::workers`, 0 allowed) and any
    ///   number of remote ones.
    /// - A backend value (with its clones) is the parent of one run at a
    ///   time: start one pool with it, and the next once that one is shut
    ///   down or dropped.
    pub fn pool(mut self, name: &str) -> Result<RedisBackend, RedisSetupError> {
        let ok = !name.is_empty()
            && name.len() <= MAX_POOL_NAME
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
        if !ok {
            return Err(RedisSetupError::InvalidName {
                name: name.to_owned(),
            });
        }
        let client = Client::open(self.url.as_str())
            .map_err(|source| RedisSetupError::InvalidUrl { source })?;
        self.named = Some(Arc::new(Named {
            pool: name.to_owned(),
            run_key: format!("mulproc:pool:{{{name}}}:run"),
            alive_key: format!("mulproc:pool:{{{name}}}:alive"),
            conn: Mutex::new(Conn::new(
                client,
                self.options.connect_timeout,
                self.options.io_timeout,
            )),
            parent: Mutex::default(),
        }));
        Ok(self)
    }

    /// The pool's name, if it has one ([`pool`](RedisBackend::pool)).
    pub fn pool_name(&self) -> Option<&str> {
        self.named.as_ref().map(|n| n.pool.as_str())
    }

    /// The server's URL, as given.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Sets the claim time of the channels it creates (see
    /// [`RedisConfig::claim_after`]).
    pub fn claim_after(mut self, d: Duration) -> RedisBackend {
        self.claim_after = d;
        self
    }

    /// Sets how long a named pool's parent may go unheard before its run
    /// counts as dead (default 5 s; at least 50 ms). Only the parent's
    /// setting matters. A parent paused (or cut off from the server) for
    /// longer loses its run: its channels may be removed under it, and
    /// its calls then fail with [`RedisQueueError::QueueGone`].
    pub fn lease(mut self, d: Duration) -> RedisBackend {
        self.lease = d.max(Duration::from_millis(50));
        self
    }

    /// Sets the options of every handle it opens. Leave
    /// [`RedisOptions::id`] unset: each process must have its own.
    pub fn options(mut self, options: RedisOptions) -> RedisBackend {
        self.options = options;
        if let Some(n) = &self.named {
            let mut c = lock(&n.conn);
            *c = Conn::new(
                c.client().clone(),
                options.connect_timeout,
                options.io_timeout,
            );
        }
        self
    }

    fn named_op<T>(
        &self,
        n: &Named,
        op: impl FnMut(&mut Conn) -> Result<T, RedisError>,
    ) -> Result<T, BackendError> {
        let until = Instant::now() + self.options.reconnect_for;
        lock(&n.conn).run(until, op).map_err(op_error)
    }

    /// Removes the queues (and attempt counts) of `run`, and unpublishes
    /// it where it is still published.
    fn reap(&self, n: &Named, run: &str) -> Result<(), BackendError> {
        // Unpublished first: a worker that finds its channels gone then
        // finds the run gone too.
        let keys = [
            n.run_key.as_str(),
            n.alive_key.as_str(),
            &attempts_key(&n.pool, run),
        ];
        self.named_op(n, |c| {
            let mut cmd = c.script_cmd(Script::PoolEnd, &keys);
            cmd.arg(run);
            let con = c.connect()?;
            cmd.query::<i64>(con)
        })?;
        for p in [Purpose::Tasks, Purpose::Results] {
            RedisQueue::destroy(&self.url, &channel_name(&n.pool, run, p))
                .map_err(BackendError::new)?;
        }
        Ok(())
    }

    /// The parent's first create of a run: takes the pool's name (or says
    /// who holds it), reaps a dead run, starts the lease.
    fn claim(&self, n: &Named, st: &mut ParentRun) -> Result<String, BackendError> {
        if let Some(id) = &st.id {
            return Ok(id.clone());
        }
        let run = mulproc::unique_name();
        let lease_ms = self.lease.as_millis() as u64;
        let keys = [n.run_key.as_str(), n.alive_key.as_str()];
        let reply: Vec<String> = self.named_op(n, |c| {
            let mut cmd = c.script_cmd(Script::PoolClaim, &keys);
            cmd.arg(&run).arg(lease_ms);
            let con = c.connect()?;
            cmd.query(con)
        })?;
        match reply.first().map(String::as_str) {
            Some("busy") => {
                return Err(BackendError::new(RedisSetupError::PoolRunning {
                    pool: n.pool.clone(),
                    run: reply.get(1).cloned().unwrap_or_default(),
                }))
            }
            Some("stale") => {
                if let Some(old) = reply.get(1) {
                    self.reap(n, old)?;
                }
            }
            _ => {}
        }
        st.published = Arc::new(AtomicBool::new(false));
        st.lease = Some(start_lease(
            n.conn_client(),
            self.options,
            [n.run_key.clone(), n.alive_key.clone()],
            run.clone(),
            self.lease,
            Arc::clone(&st.published),
        )?);
        st.id = Some(run.clone());
        Ok(run)
    }

    /// Ends a run that failed to start: stops its lease, removes what it
    /// made (best effort).
    fn abandon(&self, n: &Named, mut st: MutexGuard<'_, ParentRun>, run: &str) {
        st.ended = true;
        if let Some((tx, h)) = st.lease.take() {
            drop(tx);
            let _ = h.join();
        }
        drop(st);
        let _ = self.reap(n, run);
    }

    fn create_queue(&self, name: &str, spec: &ChannelSpec) -> Result<RedisQueue, RedisSetupError> {
        let config = RedisConfig::new(u64::from(spec.capacity), spec.max_payload as usize)
            .claim_after(self.claim_after);
        RedisQueue::create_with(&self.url, name, config, self.options)
    }
}

impl Named {
    fn conn_client(&self) -> Client {
        lock(&self.conn).client().clone()
    }
}

/// Starts the thread that renews a parent's lease every fifth of it,
/// until told to stop (or the pool is no longer this run's).
fn start_lease(
    client: Client,
    options: RedisOptions,
    keys: [String; 2],
    run: String,
    lease: Duration,
    published: Arc<AtomicBool>,
) -> Result<(mpsc::Sender<()>, thread::JoinHandle<()>), BackendError> {
    let (tx, rx) = mpsc::channel::<()>();
    let every = lease / 5;
    let lease_ms = lease.as_millis() as u64;
    let handle = thread::Builder::new()
        .name("mulproc-redis-lease".into())
        .spawn(move || {
            let mut conn = Conn::new(client, options.connect_timeout, options.io_timeout);
            loop {
                match rx.recv_timeout(every) {
                    Err(mpsc::RecvTimeoutError::Timeout) => {}
                    _ => return,
                }
                // Acquire: pairs with the Release store once the run is
                // published, so a renewal that says so follows it.
                let flag = if published.load(Ordering::Acquire) {
                    "1"
                } else {
                    "0"
                };
                let r = conn.run(Instant::now() + every, |c| {
                    let mut cmd = c.script_cmd(Script::PoolRenew, &[&keys[0], &keys[1]]);
                    cmd.arg(&run).arg(lease_ms).arg(flag);
                    let con = c.connect()?;
                    cmd.query::<i64>(con)
                });
                if let Ok(0) = r {
                    // Taken by another parent, or reaped: our channels are
                    // (or will be) gone, and our calls say so.
                    return;
                }
            }
        })
        .map_err(|e| BackendError::new(RedisQueueError::Connection(RedisError::from(e))))?;
    Ok((tx, handle))
}

impl Backend for RedisBackend {
    type Channel = RedisQueue;

    fn create(&self, spec: &ChannelSpec) -> Result<RedisQueue, BackendError> {
        let Some(n) = &self.named else {
            loop {
                let name = format!("pool-{}", mulproc::unique_name());
                match self.create_queue(&name, spec) {
                    Err(RedisSetupError::AlreadyExists { .. }) => continue,
                    r => return r.map_err(BackendError::new),
                }
            }
        };
        let mut st = lock(&n.parent);
        if st.ended {
            // A backend value serves one run of a named pool.
            *st = ParentRun::default();
        }
        let run = self.claim(n, &mut st)?;
        let idx = match spec.purpose {
            Purpose::Tasks => 0,
            Purpose::Results => 1,
        };
        let q = match self.create_queue(&channel_name(&n.pool, &run, spec.purpose), spec) {
            Ok(q) => q,
            Err(e) => {
                // The pool fails to start: give the name back at once and
                // remove the run's other channel, if made.
                self.abandon(n, st, &run);
                return Err(BackendError::new(e));
            }
        };
        st.created[idx] = true;
        if st.created == [true, true] {
            let keys = [n.run_key.as_str(), n.alive_key.as_str()];
            let ok: i64 = self.named_op(n, |c| {
                let mut cmd = c.script_cmd(Script::PoolPublish, &keys);
                cmd.arg(&run);
                let con = c.connect()?;
                cmd.query(con)
            })?;
            if ok != 1 {
                self.abandon(n, st, &run);
                return Err(BackendError::new(RedisQueueError::QueueGone {
                    name: format!("pool {:?} (its lease ran out while starting)", n.pool),
                }));
            }
            // Release: pairs with the lease thread's Acquire load; its
            // renewals say "published" only after the publish above.
            st.published.store(true, Ordering::Release);
        }
        Ok(q)
    }

    fn name(&self, channel: &RedisQueue) -> String {
        channel.name().to_owned()
    }

    fn open(&self, name: &str) -> Result<RedisQueue, BackendError> {
        RedisQueue::open_with(&self.url, name, self.options).map_err(BackendError::new)
    }

    fn remove(&self, name: &str) -> Result<(), BackendError> {
        if let Some(n) = &self.named {
            let mut st = lock(&n.parent);
            let ours = st.id.as_ref().is_some_and(|run| {
                [Purpose::Tasks, Purpose::Results]
                    .iter()
                    .any(|p| channel_name(&n.pool, run, *p) == name)
            });
            if ours && !st.ended {
                // The run's end: stop the lease, unpublish, remove both
                // channels (workers see the run gone, then its channels).
                st.ended = true;
                if let Some((tx, h)) = st.lease.take() {
                    drop(tx);
                    let _ = h.join();
                }
                let run = st.id.clone().expect("ours");
                drop(st);
                return self.reap(n, &run);
            }
        }
        RedisQueue::destroy(&self.url, name)
            .map(drop)
            .map_err(BackendError::new)
    }

    fn remote(&self) -> bool {
        self.named.is_some()
    }
}

impl RemoteBackend for RedisBackend {
    fn find_run(&self) -> Result<Option<[String; 2]>, BackendError> {
        let Some(n) = &self.named else {
            return Err(BackendError::new(RedisSetupError::InvalidConfig {
                what: "RedisBackend without a pool name (RedisBackend::pool) has no runs to find",
            }));
        };
        let keys = [n.run_key.as_str(), n.alive_key.as_str()];
        let reply: Value = self.named_op(n, |c| {
            let cmd = c.script_cmd(Script::PoolFind, &keys);
            let con = c.connect()?;
            cmd.query(con)
        })?;
        let Value::Array(parts) = reply else {
            return Ok(None);
        };
        let text = |i: usize| {
            parts
                .get(i)
                .and_then(as_bytes)
                .map(|b| String::from_utf8_lossy(b).into_owned())
        };
        match (text(0).as_deref(), text(1)) {
            (Some("live"), Some(run)) => Ok(Some([
                channel_name(&n.pool, &run, Purpose::Tasks),
                channel_name(&n.pool, &run, Purpose::Results),
            ])),
            (Some("dead"), Some(run)) => {
                // Its parent died: remove what it left, for the next run.
                self.reap(n, &run)?;
                Ok(None)
            }
            _ => Ok(None),
        }
    }

    fn redelivered(&self, guard: &RedisGuard<'_>) -> bool {
        guard.redelivered()
    }

    fn count_attempt(&self, run: &[String; 2], task: u64) -> Result<u32, BackendError> {
        let Some(n) = &self.named else {
            return Ok(1);
        };
        // The run's id is in its channel names: pool.<pool>.<run>.tasks.
        let id = run[0]
            .strip_prefix(&format!("pool.{}.", n.pool))
            .and_then(|r| r.strip_suffix(".tasks"))
            .unwrap_or(&run[0]);
        let key = attempts_key(&n.pool, id);
        let v: Value = self.named_op(n, |c| {
            let con = c.connect()?;
            redis::cmd("HINCRBY").arg(&key).arg(task).arg(1).query(con)
        })?;
        Ok(as_int(&v)
            .and_then(|v| u32::try_from(v).ok())
            .unwrap_or(u32::MAX))
    }

    fn take_more<'c>(
        &self,
        channel: &'c RedisQueue,
        max: usize,
        into: &mut Vec<RedisGuard<'c>>,
    ) -> Result<(), mulproc::TryRecvError> {
        into.extend(channel.try_recv_held(max)?);
        Ok(())
    }

    fn finish_all<'c>(&self, guards: Vec<RedisGuard<'c>>)
    where
        RedisQueue: 'c,
    {
        if let Some(q) = guards.first().map(RedisGuard::queue) {
            // An error: some were taken over meanwhile, and run again
            // there (the parent keeps one result); or the run is gone.
            let _ = q.finish_all(guards);
        }
    }

    fn is_gone(&self, error: &BackendError) -> bool {
        let e = error.source_error();
        matches!(
            e.downcast_ref::<RedisQueueError>(),
            Some(RedisQueueError::QueueGone { .. })
        ) || matches!(
            e.downcast_ref::<RedisSetupError>(),
            Some(RedisSetupError::NotFound { .. })
        )
    }
}
