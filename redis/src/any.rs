//! [`AnyBackend`]: a pool backend chosen at run time, from a command-line
//! argument (`--backend shm` or `--backend redis://host:port/db/pool`), so
//! that one program runs its pool over either without being written twice.

use std::time::Duration;

use mulproc::pool::{Backend, ChannelSpec, RemoteBackend, ShmBackend};
use mulproc::{
    BackendError, Channel, Filter, Header, JoinTimeoutError, Joinable, Message, Queue, Received,
    RecvError, RecvGuard, RecvTimeoutError, SendRetry, TaskDoneError, TryRecvError, TrySendError,
    Wait,
};

use crate::{RedisBackend, RedisGuard, RedisQueue, RedisSetupError};

/// A [`mulproc::pool::Backend`] that is shared memory or a Redis server,
/// as a URL says ([`AnyBackend::from_url`]).
///
/// ```
/// use mulproc::pool::Pool;
/// use mulproc_redis::AnyBackend;
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // From `--backend`: "shm", or "redis://10.0.0.5:6379/0/jobs".
/// let backend = AnyBackend::from_url("shm")?;
/// let mut pool = Pool::builder().workers(2).backend(backend).start(|x: u64| x + 1)?;
/// # drop(pool.map(0..3u64).count());
/// # pool.shutdown()?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone, Debug)]
pub enum AnyBackend {
    /// Shared memory ([`ShmBackend`]).
    Shm(ShmBackend),
    /// A Redis server ([`RedisBackend`]).
    Redis(RedisBackend),
}

/// The same as [`AnyBackend::from_url`].
pub fn backend_from_url(url: &str) -> Result<AnyBackend, RedisSetupError> {
    AnyBackend::from_url(url)
}

impl AnyBackend {
    /// The backend a URL names:
    ///
    /// - `shm` (or the empty string): shared memory, workers on this
    ///   machine;
    /// - `redis://[:password@]host[:port][/db]`: a Redis server, the
    ///   pool's own workers only ([`RedisBackend::new`]);
    /// - `redis://[:password@]host[:port]/db/pool` (or `…/pool` with
    ///   db 0, if `pool` is not a number): a named pool on it
    ///   ([`RedisBackend::pool`]), which workers on other machines join
    ///   with `Builder::serve` and the same URL.
    ///
    /// A query string (`?protocol=resp3`) stays with the server's URL.
    /// Checks the form only; nothing is reached yet.
    pub fn from_url(url: &str) -> Result<AnyBackend, RedisSetupError> {
        if url.is_empty() || url == "shm" {
            return Ok(AnyBackend::Shm(ShmBackend));
        }
        let (server, pool) = split_pool(url);
        let b = RedisBackend::new(&server)?;
        Ok(AnyBackend::Redis(match pool {
            Some(p) => b.pool(&p)?,
            None => b,
        }))
    }

    /// Sets the claim time of a Redis backend ([`RedisBackend::claim_after`]);
    /// nothing for shared memory.
    pub fn claim_after(self, d: Duration) -> AnyBackend {
        match self {
            AnyBackend::Redis(r) => AnyBackend::Redis(r.claim_after(d)),
            s => s,
        }
    }

    /// True for a named Redis pool, which remote workers can join.
    pub fn is_remote(&self) -> bool {
        self.remote()
    }
}

/// Splits `redis://auth@host:port/db/pool?query` into the server's URL
/// (`redis://auth@host:port/db?query`) and the pool's name.
fn split_pool(url: &str) -> (String, Option<String>) {
    let (body, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let with_query = |s: &str| match query {
        Some(q) => format!("{s}?{q}"),
        None => s.to_owned(),
    };
    let Some(scheme_end) = body.find("://").map(|i| i + 3) else {
        return (url.to_owned(), None);
    };
    // The path starts at the first '/' after the authority (whose
    // password may hold an '@': the authority ends at the last one).
    let auth_end = body[scheme_end..]
        .rfind('@')
        .map_or(scheme_end, |i| scheme_end + i + 1);
    let Some(path_at) = body[auth_end..].find('/').map(|i| auth_end + i) else {
        return (url.to_owned(), None);
    };
    let base = &body[..path_at];
    let segs: Vec<&str> = body[path_at + 1..]
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    let is_db = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    match segs.as_slice() {
        [db, pool] if is_db(db) => (
            with_query(&format!("{base}/{db}")),
            Some((*pool).to_owned()),
        ),
        [pool] if !is_db(pool) => (with_query(&format!("{base}/")), Some((*pool).to_owned())),
        _ => (url.to_owned(), None),
    }
}

/// A channel of an [`AnyBackend`].
// A pool holds two of them: their size does not matter, and boxing either
// would add a pointer chase to every call.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub enum AnyChannel {
    /// A shared-memory queue.
    Shm(Queue),
    /// A Redis queue.
    Redis(RedisQueue),
}

/// A message held by an [`AnyChannel`].
#[derive(Debug)]
pub enum AnyGuard<'a> {
    /// Held in a shared-memory queue.
    Shm(RecvGuard<'a>),
    /// Held in a Redis queue.
    Redis(RedisGuard<'a>),
}

impl Received for AnyGuard<'_> {
    fn header(&self) -> &Header {
        match self {
            AnyGuard::Shm(g) => g.header(),
            AnyGuard::Redis(g) => g.header(),
        }
    }

    fn data(&self) -> &[u8] {
        match self {
            AnyGuard::Shm(g) => g.data(),
            AnyGuard::Redis(g) => g.data(),
        }
    }

    fn finish(self) -> Result<(), RecvError> {
        match self {
            AnyGuard::Shm(g) => Received::finish(g),
            AnyGuard::Redis(g) => Received::finish(g),
        }
    }

    fn into_message(self) -> Message {
        match self {
            AnyGuard::Shm(g) => Received::into_message(g),
            AnyGuard::Redis(g) => Received::into_message(g),
        }
    }
}

impl Channel for AnyChannel {
    type Guard<'a> = AnyGuard<'a>;

    fn max_payload(&self) -> usize {
        match self {
            AnyChannel::Shm(q) => q.max_payload(),
            AnyChannel::Redis(q) => Channel::max_payload(q),
        }
    }

    fn pid(&self) -> u32 {
        match self {
            AnyChannel::Shm(q) => Channel::pid(q),
            AnyChannel::Redis(q) => Channel::pid(q),
        }
    }

    fn send_retry(&self) -> SendRetry {
        match self {
            AnyChannel::Shm(q) => Channel::send_retry(q),
            AnyChannel::Redis(q) => Channel::send_retry(q),
        }
    }

    fn send_with<D: AsRef<[u8]>>(
        &self,
        msg: Message<D>,
        wait: Wait,
    ) -> Result<(), TrySendError<Message<D>>> {
        match self {
            AnyChannel::Shm(q) => Channel::send_with(q, msg, wait),
            AnyChannel::Redis(q) => Channel::send_with(q, msg, wait),
        }
    }

    fn recv_with(&self, filter: Filter<'_>, wait: Wait) -> Result<AnyGuard<'_>, RecvTimeoutError> {
        match self {
            AnyChannel::Shm(q) => Channel::recv_with(q, filter, wait).map(AnyGuard::Shm),
            AnyChannel::Redis(q) => Channel::recv_with(q, filter, wait).map(AnyGuard::Redis),
        }
    }

    fn recv_ref_timeout(&self, timeout: Duration) -> Result<AnyGuard<'_>, RecvTimeoutError> {
        match self {
            AnyChannel::Shm(q) => Channel::recv_ref_timeout(q, timeout).map(AnyGuard::Shm),
            AnyChannel::Redis(q) => Channel::recv_ref_timeout(q, timeout).map(AnyGuard::Redis),
        }
    }

    fn try_send_batch<D: AsRef<[u8]>>(
        &self,
        msgs: &[Message<D>],
    ) -> Result<usize, TrySendError<()>> {
        match self {
            AnyChannel::Shm(q) => Channel::try_send_batch(q, msgs),
            AnyChannel::Redis(q) => Channel::try_send_batch(q, msgs),
        }
    }

    fn try_recv_batch<F>(&self, max: usize, f: F) -> Result<usize, TryRecvError>
    where
        F: FnMut(&Header, &[u8]),
    {
        match self {
            AnyChannel::Shm(q) => Channel::try_recv_batch(q, max, f),
            AnyChannel::Redis(q) => Channel::try_recv_batch(q, max, f),
        }
    }
}

impl Joinable for AnyChannel {
    fn task_done(&self) -> Result<(), TaskDoneError> {
        match self {
            AnyChannel::Shm(q) => Joinable::task_done(q),
            AnyChannel::Redis(q) => Joinable::task_done(q),
        }
    }

    fn join_with(&self, wait: Wait) -> Result<(), JoinTimeoutError> {
        match self {
            AnyChannel::Shm(q) => Joinable::join_with(q, wait),
            AnyChannel::Redis(q) => Joinable::join_with(q, wait),
        }
    }
}

impl Backend for AnyBackend {
    type Channel = AnyChannel;

    fn create(&self, spec: &ChannelSpec) -> Result<AnyChannel, BackendError> {
        match self {
            AnyBackend::Shm(b) => b.create(spec).map(AnyChannel::Shm),
            AnyBackend::Redis(b) => b.create(spec).map(AnyChannel::Redis),
        }
    }

    fn name(&self, channel: &AnyChannel) -> String {
        match channel {
            AnyChannel::Shm(q) => q.name().to_owned(),
            AnyChannel::Redis(q) => q.name().to_owned(),
        }
    }

    fn open(&self, name: &str) -> Result<AnyChannel, BackendError> {
        match self {
            AnyBackend::Shm(b) => b.open(name).map(AnyChannel::Shm),
            AnyBackend::Redis(b) => b.open(name).map(AnyChannel::Redis),
        }
    }

    fn remove(&self, name: &str) -> Result<(), BackendError> {
        match self {
            AnyBackend::Shm(b) => b.remove(name),
            AnyBackend::Redis(b) => b.remove(name),
        }
    }

    fn remote(&self) -> bool {
        match self {
            AnyBackend::Shm(_) => false,
            AnyBackend::Redis(b) => b.remote(),
        }
    }
}

impl RemoteBackend for AnyBackend {
    fn find_run(&self) -> Result<Option<[String; 2]>, BackendError> {
        match self {
            AnyBackend::Shm(_) => Err(BackendError::new(RedisSetupError::InvalidConfig {
                what: "a shared-memory pool has no remote workers (use a backend URL \
                       redis://host:port/db/pool)",
            })),
            AnyBackend::Redis(b) => b.find_run(),
        }
    }

    fn redelivered(&self, guard: &AnyGuard<'_>) -> bool {
        match guard {
            AnyGuard::Shm(_) => false,
            AnyGuard::Redis(g) => g.redelivered(),
        }
    }

    fn count_attempt(&self, run: &[String; 2], task: u64) -> Result<u32, BackendError> {
        match self {
            AnyBackend::Shm(_) => Ok(1),
            AnyBackend::Redis(b) => b.count_attempt(run, task),
        }
    }

    fn is_gone(&self, error: &BackendError) -> bool {
        match self {
            AnyBackend::Shm(_) => false,
            AnyBackend::Redis(b) => b.is_gone(error),
        }
    }

    fn take_more<'c>(
        &self,
        channel: &'c AnyChannel,
        max: usize,
        into: &mut Vec<AnyGuard<'c>>,
    ) -> Result<(), TryRecvError> {
        match channel {
            AnyChannel::Redis(q) => {
                into.extend(q.try_recv_held(max)?.into_iter().map(AnyGuard::Redis));
                Ok(())
            }
            AnyChannel::Shm(q) => {
                for _ in 0..max {
                    match q.try_recv_ref() {
                        Ok(g) => into.push(AnyGuard::Shm(g)),
                        Err(TryRecvError::Empty) => break,
                        Err(e) => return Err(e),
                    }
                }
                Ok(())
            }
        }
    }

    fn finish_all<'c>(&self, guards: Vec<AnyGuard<'c>>)
    where
        AnyChannel: 'c,
    {
        let mut redis = Vec::with_capacity(guards.len());
        for g in guards {
            match g {
                AnyGuard::Redis(g) => redis.push(g),
                AnyGuard::Shm(g) => drop(g),
            }
        }
        if let Some(q) = redis.first().map(RedisGuard::queue) {
            // Errors: taken over meanwhile (run again there), or gone.
            let _ = q.finish_all(redis);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::split_pool;

    #[test]
    fn urls_split_into_server_and_pool() {
        let cases = [
            ("redis://h:6379/0/jobs", "redis://h:6379/0", Some("jobs")),
            ("redis://h:6379/jobs", "redis://h:6379/", Some("jobs")),
            ("redis://h:6379/3", "redis://h:6379/3", None),
            ("redis://h:6379/", "redis://h:6379/", None),
            ("redis://h", "redis://h", None),
            (
                "redis://:p@ss@h:1/2/q?protocol=resp3",
                "redis://:p@ss@h:1/2?protocol=resp3",
                Some("q"),
            ),
            ("redis://h/1/2/3", "redis://h/1/2/3", None),
        ];
        for (url, server, pool) in cases {
            let (s, p) = split_pool(url);
            assert_eq!((s.as_str(), p.as_deref()), (server, pool), "{url}");
        }
    }
}
