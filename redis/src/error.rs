//! Errors of the Redis backend.

use redis::RedisError;

/// Creating or opening a [`RedisQueue`](crate::RedisQueue) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisSetupError {
    /// The URL is not a Redis URL the client understands.
    #[error("invalid Redis URL: {source}")]
    InvalidUrl {
        /// What the client said.
        source: RedisError,
    },
    /// The queue name is empty, longer than 200 bytes, or has a byte
    /// outside `[A-Za-z0-9._-]`.
    #[error("invalid queue name {name:?}: use 1 to 200 bytes of [A-Za-z0-9._-]")]
    InvalidName {
        /// The name given.
        name: String,
    },
    /// Capacity 0, or a max payload of 0 or above 512 MiB (Redis' limit
    /// for one string).
    #[error("invalid queue configuration: {what}")]
    InvalidConfig {
        /// What is wrong.
        what: &'static str,
    },
    /// No server answered at the address in time (not running, wrong
    /// host or port, a firewall).
    #[error("Redis server at {server} unreachable: {source}")]
    Unreachable {
        /// The server's address (without the password).
        server: String,
        /// The connection error.
        source: RedisError,
    },
    /// The server refused the credentials (a wrong password or user
    /// name), or wants some and none were given.
    #[error("Redis server at {server} refused the credentials: {source}")]
    Authentication {
        /// The server's address (without the password).
        server: String,
        /// The server's answer.
        source: RedisError,
    },
    /// Something answered at the address, but not in the Redis protocol
    /// (an HTTP server, a proxy, the wrong port).
    #[error("the server at {server} does not speak the Redis protocol: {source}")]
    NotRedis {
        /// The server's address (without the password).
        server: String,
        /// What the client could not parse.
        source: RedisError,
    },
    /// `open`: no queue of that name on the server.
    #[error("no queue named {name:?} on the Redis server")]
    NotFound {
        /// The name given.
        name: String,
    },
    /// Another parent runs the named pool now (it holds the pool's lease;
    /// see [`RedisBackend::pool`](crate::RedisBackend::pool)).
    #[error("pool {pool:?} is already run by a live parent on this Redis server (run {run})")]
    PoolRunning {
        /// The pool's name.
        pool: String,
        /// The run that holds it.
        run: String,
    },
    /// `create`: a queue of that name exists.
    #[error("a queue named {name:?} already exists on the Redis server")]
    AlreadyExists {
        /// The name given.
        name: String,
    },
    /// A key the queue needs holds something that is not a queue of this
    /// library: another type, a stream without our metadata or consumer
    /// group, metadata of another version.
    #[error("key {key:?} is not part of a mulproc queue: {found}")]
    WrongShape {
        /// The key.
        key: String,
        /// What was found there.
        found: String,
    },
    /// Any other error of the server.
    #[error("Redis server error for queue {name:?}: {source}")]
    Server {
        /// The name given.
        name: String,
        /// The server's answer.
        source: RedisError,
    },
}

/// Why an operation of a [`RedisQueue`](crate::RedisQueue) failed, as the
/// cause inside a [`mulproc::BackendError`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisQueueError {
    /// The connection to the server was lost and could not be made again
    /// within the reconnect time.
    #[error("lost the connection to the Redis server and could not reconnect: {0}")]
    Connection(RedisError),
    /// The server answered with an error.
    #[error("Redis server error: {0}")]
    Server(RedisError),
    /// The queue's keys are gone from the server (deleted, or the server
    /// restarted without persistence).
    #[error("the queue {name:?} no longer exists on the Redis server")]
    QueueGone {
        /// The queue's name.
        name: String,
    },
    /// A stream entry that this library did not write (fields missing or
    /// out of range). It was acknowledged, so that it blocks nobody.
    #[error("stream {stream:?} entry {id} is not a mulproc message: {why}")]
    Malformed {
        /// The stream key.
        stream: String,
        /// The entry id.
        id: String,
        /// What was wrong.
        why: &'static str,
    },
    /// The message was reclaimed by another consumer while this one held
    /// it (this process was paused past the claim time, or its heartbeat
    /// could not reach the server); the other consumer has it now.
    #[error("the message was reclaimed by another consumer while held; it is delivered again")]
    Reclaimed,
}
