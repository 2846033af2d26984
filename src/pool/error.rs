//! The pool's errors: why a task has no value ([`TaskError`]), why the
//! pool cannot go on ([`PoolError`]), and a task's result ([`Completed`]).

use std::sync::Arc;
use std::time::Duration;

#[cfg(doc)]
use super::{Builder, Pool};
use crate::process::SpawnError;
use crate::{BackendError, RecvTimeoutError, TryRecvError, TrySendError};

/// A task's id: unique in its pool, in submission order.
pub type TaskId = u64;

/// Why a task has no value.
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TaskError {
    /// The handler returned an error; its `Display` text.
    #[error("task failed: {message}")]
    Failed {
        /// The error's message.
        message: String,
    },
    /// The handler panicked; the panic's message.
    #[error("task panicked: {message}")]
    Panicked {
        /// The panic message.
        message: String,
    },
    /// The task was running each time its worker died, `attempts` times:
    /// given up (see [`Builder::max_attempts`]).
    #[error("task killed its worker {attempts} times (last: {last_exit}); given up")]
    Killed {
        /// Deaths while running it.
        attempts: u32,
        /// How the last worker ended.
        last_exit: String,
    },
    /// The worker could not decode the input (a different build of the
    /// program?).
    #[error("the worker could not decode the task input: {message}")]
    BadInput {
        /// What went wrong.
        message: String,
    },
    /// The result could not be encoded in the worker or decoded in the
    /// parent.
    #[error("the task's result could not be encoded or decoded: {message}")]
    BadOutput {
        /// What went wrong.
        message: String,
    },
    /// The encoded input or result is larger than the channel allows
    /// ([`Builder::max_task_bytes`], [`Builder::max_result_bytes`]).
    #[error("{what} of {len} bytes is larger than the {max} bytes allowed")]
    TooLarge {
        /// `"input"` or `"result"`.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The pool itself failed (the iteration of a `map` ends after this).
    #[error("the pool failed: {0}")]
    Pool(Arc<PoolError>),
}

/// A task's result, with its id.
#[derive(Clone, Debug)]
pub struct Completed<T> {
    /// The id [`Pool::submit`] returned.
    pub id: TaskId,
    /// The handler's value, or why there is none.
    pub result: Result<T, TaskError>,
}

/// The pool could not go on (or start).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// A setting is out of range.
    #[error("invalid pool configuration: {0}")]
    Config(String),
    /// The backend could not create or open a channel.
    #[error("pool channel: {0}")]
    Backend(#[source] BackendError),
    /// The status board could not be created.
    #[error("pool status board: {0}")]
    Board(#[source] std::io::Error),
    /// A worker process could not be started.
    #[error("cannot start a pool worker: {0}")]
    Spawn(#[source] SpawnError),
    /// Waiting for a worker process failed.
    #[error("cannot wait for a pool worker: {0}")]
    Wait(#[source] std::io::Error),
    /// Workers keep exiting before they open their channels: the program
    /// cannot run as a worker (it exits or fails before reaching `start`?).
    #[error("pool workers exit before they are ready (last: {status}); does the program reach Builder::start?")]
    WorkersCannotStart {
        /// How the last one ended.
        status: String,
    },
    /// Not every worker was ready in time.
    #[error("only {ready} of {workers} pool workers were ready within {waited:?}")]
    StartTimeout {
        /// Ready in time.
        ready: usize,
        /// Started.
        workers: usize,
        /// How long the pool waited.
        waited: Duration,
    },
    /// Sending a task failed for another reason than a full channel.
    #[error("sending a task: {0}")]
    Send(#[source] TrySendError<()>),
    /// Receiving a result failed.
    #[error("receiving a result: {0}")]
    Recv(#[source] RecvTimeoutError),
    /// Receiving a result without waiting failed.
    #[error("receiving a result: {0}")]
    TryRecv(#[source] TryRecvError),
    /// An input could not be encoded, or is too large ([`TaskError`] says
    /// which); the task was not submitted.
    #[error("task not submitted: {0}")]
    Task(#[source] TaskError),
    /// More tasks were given up as poison than the pool can list (4096).
    #[error("more than 4096 tasks were given up as poison")]
    TooManyPoisoned,
    /// This process is a worker of another pool.
    #[error("this process is a worker of pool {worker_of:?}, not of pool {this:?}")]
    WorkerOfAnotherPool {
        /// The pool whose worker this is.
        worker_of: String,
        /// The pool whose start was reached.
        this: String,
    },
}
