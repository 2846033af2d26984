//! [`RedisBackend`]: a [`mulproc::pool`] over Redis Streams.

use std::time::Duration;

use mulproc::pool::{Backend, ChannelSpec};
use mulproc::BackendError;

use crate::{RedisConfig, RedisOptions, RedisQueue, RedisSetupError};

/// Carries a [`mulproc::pool::Pool`]'s tasks and results through a Redis
/// server: each channel a [`RedisQueue`] named `pool-<unique>`.
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
#[derive(Clone, Debug)]
pub struct RedisBackend {
    url: String,
    claim_after: Duration,
    options: RedisOptions,
}

impl RedisBackend {
    /// A backend on the server at `url` (`redis://[:password@]host[:port][/db]`),
    /// with a claim time of 10 s (a dead worker's tasks go to others that
    /// long after its last heartbeat). Checks the URL's form only; the
    /// server is first reached when the pool starts.
    pub fn new(url: &str) -> Result<RedisBackend, RedisSetupError> {
        redis::Client::open(url).map_err(|source| RedisSetupError::InvalidUrl { source })?;
        Ok(RedisBackend {
            url: url.to_owned(),
            claim_after: RedisConfig::new(1, 1).claim_after,
            options: RedisOptions::default(),
        })
    }

    /// Sets the claim time of the channels it creates (see
    /// [`RedisConfig::claim_after`]).
    pub fn claim_after(mut self, d: Duration) -> RedisBackend {
        self.claim_after = d;
        self
    }

    /// Sets the options of every handle it opens. Leave
    /// [`RedisOptions::id`] unset: each process must have its own.
    pub fn options(mut self, options: RedisOptions) -> RedisBackend {
        self.options = options;
        self
    }
}

impl Backend for RedisBackend {
    type Channel = RedisQueue;

    fn create(&self, spec: &ChannelSpec) -> Result<RedisQueue, BackendError> {
        let config = RedisConfig::new(u64::from(spec.capacity), spec.max_payload as usize)
            .claim_after(self.claim_after);
        loop {
            let name = format!("pool-{}", mulproc::unique_name());
            match RedisQueue::create_with(&self.url, &name, config, self.options) {
                Err(RedisSetupError::AlreadyExists { .. }) => continue,
                r => return r.map_err(BackendError::new),
            }
        }
    }

    fn name(&self, channel: &RedisQueue) -> String {
        channel.name().to_owned()
    }

    fn open(&self, name: &str) -> Result<RedisQueue, BackendError> {
        RedisQueue::open_with(&self.url, name, self.options).map_err(BackendError::new)
    }

    fn remove(&self, name: &str) -> Result<(), BackendError> {
        RedisQueue::destroy(&self.url, name)
            .map(drop)
            .map_err(BackendError::new)
    }
}
