//! A pool of worker processes: tasks in, results out, workers that die are
//! replaced and their tasks retried.
//!
//! ```
//! use mulproc::pool::Pool;
//!
//! fn main() -> Result<(), mulproc::pool::PoolError> {
//!     // In a worker process this call runs the handler loop and never
//!     // returns; in the parent it starts the workers and returns the pool.
//!     let mut pool = Pool::builder().workers(2).start(|x: u64| x * x)?;
//!     let squares: Vec<u64> = pool.map(0..1000u64).map(|r| r.unwrap()).collect();
//!     assert_eq!(squares[12], 144);
//!
//!     // Or one by one, results as they come, each with its task's id.
//!     let id = pool.submit(7)?;
//!     let done = pool.next_result()?.expect("one task pending");
//!     assert_eq!((done.id, done.result.unwrap()), (id, 49));
//!
//!     let stats = pool.shutdown()?; // finish, poison pill, reap, clean up
//!     assert_eq!(stats.succeeded, 1001);
//!     Ok(())
//! }
//! ```
//!
//! # How it is used
//!
//! - **One call, in both roles.** The workers are new processes of the
//!   current executable ([`crate::process::Child`], never `fork`), so they
//!   run `main` again. [`Builder::start`] sees it is in a worker (from the
//!   environment the pool set), runs the handler loop there and exits the
//!   process; in the parent it returns the [`Pool`]. Call it early in
//!   `main`, before work a worker should not repeat, with the same builder
//!   settings on every run (the code is the same, so it is). Nothing else
//!   is needed: no roles, queue names or environment variables in user
//!   code. A program with several pools gives each a
//!   [`name`](Builder::name); a worker of pool `a` that reaches the start
//!   of pool `b` gets [`PoolError::WorkerOfAnotherPool`] there.
//! - **Or workers of another program**: [`Builder::worker_command`] starts
//!   `program args` as the workers instead (the Python binding's are
//!   `python -c "import mulproc._pool_worker ..."`); that program calls
//!   [`serve_worker`] with a handler of the pool's types, which finds the
//!   pool from the environment the pool set.
//! - **Typed values.** Inputs and outputs are `bytemuck::Pod` values sent
//!   as their bytes ([`PodCodec`], the default: nothing encoded), byte
//!   strings of any length ([`Builder::bytes`]), or any serde type with
//!   feature `serde` ([`Builder::serde`], postcard). Both
//!   sides are the same binary, so both agree on every type's layout.
//! - **Submitting**: [`Pool::submit`] returns the task's [`TaskId`]; take
//!   results as they come with [`Pool::next_result`] or [`Pool::results`]
//!   (each a [`Completed`] with its id). [`Pool::map`] yields results in
//!   input order and [`Pool::map_unordered`] as they come, both streaming:
//!   they take inputs from the iterator only as the window allows.
//! - **Back-pressure**: at most [`window`](Builder::window) tasks are in
//!   flight (submitted and not yet answered); `submit` waits for room. A
//!   `map` also keeps at most `window` results waiting for their turn, so
//!   its memory does not grow with the number of tasks. Results of
//!   `submit` wait in the pool until taken.
//! - **Batching**: the parent sends tasks in batches (one claim, one
//!   wake-up per batch); a worker takes up to
//!   [`worker_batch`](Builder::worker_batch) waiting tasks at once while
//!   tasks are short (about 50 µs of work per batch: long tasks are taken
//!   one at a time, so no worker hoards work others could do) and sends
//!   their results as one batch.
//!
//! # Failures
//!
//! - A handler that returns an error ([`Builder::start_fallible`]) or
//!   panics gives that task [`TaskError::Failed`] / [`TaskError::Panicked`]
//!   with the message; the worker goes on. (The panic hook still runs in
//!   the worker and prints the panic on its stderr; set your own hook
//!   before `start` to change that.)
//! - A worker process that dies (SIGKILL, abort, out of memory, a panic
//!   under `panic = "abort"`) is replaced. A task counts as held by its
//!   worker until the worker has sent its result, not until it copied the
//!   task out: the worker keeps the task's message held in the channel
//!   (a message whose holder dies is delivered again, to another worker)
//!   until it has copied it and announced its id on the pool's board, a
//!   small shared file; from then on the parent answers for it, and sends
//!   again the tasks a dead worker announced and did not answer. (Holding
//!   the message while the handler runs would do as well, but every
//!   receiver of the ring scans from the oldest slot still held.)
//!   **Execution is at least once; results reach the caller exactly once
//!   per task**: the parent keeps the ids in flight and drops any later
//!   result for an id already answered (a worker killed between sending
//!   its results and clearing its announcement, or between announcing and
//!   letting go of the messages, makes such a duplicate;
//!   [`Stats::duplicates`] counts them). A handler with side effects
//!   outside the pool must tolerate running twice. The parent keeps each
//!   task's message until it is answered (window × task size bytes).
//! - A task that was running when its worker died [`max_attempts`](Builder::max_attempts)
//!   times (default 3) is given up: its result is
//!   [`TaskError::Killed`], and workers skip its remaining copies. Deaths
//!   are charged to the task the worker was running (announced on a small
//!   shared board); a worker killed from outside mid-task charges that task
//!   too.
//! - The parent's death (even SIGKILL) makes every worker remove the pool's
//!   shared-memory names and exit within about 50 ms (a watchdog thread
//!   in each worker).
//! - Every wait of the pool wakes at least every 100 ms to check that its
//!   workers live (and replace those that died) or, in a worker, that the
//!   parent lives. A handler that never returns is not detected: its task
//!   simply stays in flight.
//!
//! # Shutdown
//!
//! [`Pool::shutdown`] finishes every task submitted, sends each worker the
//! poison pill and reaps it (killing one that does not exit in 5 s);
//! [`Pool::kill`] kills the workers at once. Dropping the pool (also while
//! unwinding from a panic) kills and reaps every worker and removes the
//! pool's names: no process and no segment is left behind.
//!
//! # Over another channel
//!
//! The pool speaks to its channels through the [`Channel`] and
//! [`Joinable`](crate::Joinable) traits only; where they come from is a
//! [`Backend`] ([`ShmBackend`], shared-memory queues, by default;
//! [`Builder::backend`] for another, such as a Redis Streams backend in a
//! crate of its own).

pub mod backend;
mod board;
mod wire;
mod worker;

pub use backend::{Backend, ChannelSpec, Purpose, ShmBackend};
#[cfg(feature = "serde")]
pub use wire::SerdeCodec;
pub use wire::{BytesCodec, Codec, PodCodec, Wire, WireError};

use std::collections::VecDeque;
use std::ffi::OsString;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::process::{self, Child, ChildProcess, SpawnError};
use crate::{
    BackendError, Channel, Filter, Message, Received, RecvTimeoutError, Request, TryRecvError,
    TrySendError, Wait,
};
use board::Board;

/// Environment variable carrying a worker's slot number.
pub(crate) const SLOT_VAR: &str = "MULPROC_POOL_SLOT";
/// Environment variables carrying the worker-side settings, for a worker
/// started with [`Builder::worker_command`] and running [`serve_worker`].
const BATCH_VAR: &str = "MULPROC_POOL_WORKER_BATCH";
const MAX_RESULT_VAR: &str = "MULPROC_POOL_MAX_RESULT";
/// Role prefix of pool workers; the pool's name follows.
const ROLE_PREFIX: &str = "mulproc-pool:";
/// A task message: task id (8 bytes), the parent's record of it (4), then
/// the input.
pub(crate) const TASK_HEADER: usize = 12;
/// A result message: task id (8 bytes), record (4), status (1), then the
/// payload.
pub(crate) const RESULT_HEADER: usize = 13;
/// Room for an error message in a result, at least.
const MIN_MESSAGE_ROOM: usize = 243;
/// How long a blocking wait of the parent goes before it checks workers.
const LIVENESS: Duration = Duration::from_millis(100);
/// How often the parent looks for dead workers while busy.
const CHECK_EVERY: Duration = Duration::from_millis(10);
/// Most tasks per batch the parent sends, results per drain.
const SEND_BATCH: usize = 256;
const RECV_BATCH: usize = 256;
/// A worker exiting this many times in a row before it opened its
/// channels fails the pool (the executable cannot run as a worker).
const STARTUP_FAILURES: u32 = 3;
/// The same for workers killed by a signal before they were ready: more
/// are allowed, since a kill from outside is no fault of the program.
const STARTUP_KILLS: u32 = 20;
/// How long a worker may take to exit after its poison pill.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);

/// Result status codes (byte 8 of a result message).
pub(crate) mod status {
    pub(crate) const OK: u8 = 0;
    pub(crate) const FAILED: u8 = 1;
    pub(crate) const PANICKED: u8 = 2;
    pub(crate) const BAD_INPUT: u8 = 3;
    pub(crate) const BAD_OUTPUT: u8 = 4;
    pub(crate) const TOO_LARGE: u8 = 5;
}

/// The worker side of a pool whose workers are another program
/// ([`Builder::worker_command`]): runs the handler loop of the pool this
/// process was started for (found from its environment, over
/// shared memory) and exits the process, with status 0 after the poison
/// pill, 1 on an error. `C`, `In` and `Out` must be the pool's.
///
/// Returns [`PoolError::Config`] only if this process is not a pool worker
/// (or its environment is incomplete).
pub fn serve_worker<C, In, Out, E, F>(handler: F) -> PoolError
where
    C: Codec,
    In: Wire<C>,
    Out: Wire<C>,
    E: fmt::Display,
    F: FnMut(In) -> Result<Out, E>,
{
    if !is_worker() {
        return PoolError::Config("this process was not started as a pool worker".into());
    }
    let var = |key: &str| -> Result<usize, PoolError> {
        std::env::var(key)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| PoolError::Config(format!("{key} is not set to a number")))
    };
    let cfg = match (var(BATCH_VAR), var(MAX_RESULT_VAR)) {
        (Ok(worker_batch), Ok(max_result)) => Config {
            worker_batch,
            max_result,
        },
        (Err(e), _) | (_, Err(e)) => return e,
    };
    worker::run::<ShmBackend, C, In, Out, E, F>(Arc::new(ShmBackend), &cfg, handler)
}

/// True in a process started as a pool worker (by any pool).
///
/// ```
/// assert!(!mulproc::pool::is_worker());
/// ```
pub fn is_worker() -> bool {
    process::role().is_some_and(|r| r.starts_with(ROLE_PREFIX))
}

// ---------------------------------------------------------------- types ---

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

/// What the pool has done so far; see [`Pool::stats`] and [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Tasks submitted.
    pub submitted: u64,
    /// Tasks answered with a value.
    pub succeeded: u64,
    /// Tasks answered with a [`TaskError`].
    pub failed: u64,
    /// Tasks that a dead worker held unanswered, and so were handed to
    /// another worker.
    pub retried: u64,
    /// Workers replaced after dying.
    pub restarted: u64,
    /// Results dropped because their task had been answered already.
    pub duplicates: u64,
}

impl Stats {
    /// Tasks answered, with a value or an error.
    pub fn done(&self) -> u64 {
        self.succeeded + self.failed
    }
}

#[derive(Debug, Default)]
struct CounterCells {
    submitted: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    retried: AtomicU64,
    restarted: AtomicU64,
    duplicates: AtomicU64,
}

/// The pool's counters, readable from any thread at any time (a progress
/// bar's thread, say) while the pool works; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Counters(Arc<CounterCells>);

impl Counters {
    /// The counters now (each read on its own: a snapshot while the pool
    /// works may be a few tasks apart between fields).
    pub fn get(&self) -> Stats {
        let c = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            submitted: get(&c.submitted),
            succeeded: get(&c.succeeded),
            failed: get(&c.failed),
            retried: get(&c.retried),
            restarted: get(&c.restarted),
            duplicates: get(&c.duplicates),
        }
    }

    fn add(cell: &AtomicU64, n: u64) {
        // Only the pool's thread writes: a load and a store, no locked op.
        cell.store(cell.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}

// -------------------------------------------------------------- builder ---

/// Settings the worker side needs too.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) worker_batch: usize,
    pub(crate) max_result: usize,
}

/// Configures and starts a [`Pool`]: `Pool::builder().workers(4).start(f)`.
pub struct Builder<C: Codec = PodCodec, B: Backend = ShmBackend> {
    name: String,
    workers: usize,
    window: usize,
    max_attempts: u32,
    worker_batch: usize,
    max_task: Option<usize>,
    max_result: Option<usize>,
    args: Option<Vec<OsString>>,
    program: Option<PathBuf>,
    quiet: bool,
    start_timeout: Duration,
    backend: Arc<B>,
    codec: PhantomData<C>,
}

impl<C: Codec, B: Backend> fmt::Debug for Builder<C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("name", &self.name)
            .field("workers", &self.workers)
            .field("window", &self.window)
            .field("max_attempts", &self.max_attempts)
            .field("worker_batch", &self.worker_batch)
            .finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            name: "default".into(),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            window: 4096,
            max_attempts: 3,
            worker_batch: 64,
            max_task: None,
            max_result: None,
            args: None,
            program: None,
            quiet: false,
            start_timeout: Duration::from_secs(30),
            backend: Arc::new(ShmBackend),
            codec: PhantomData,
        }
    }
}

impl<C: Codec, B: Backend> Builder<C, B> {
    fn recode<C2: Codec, B2: Backend>(self, backend: Arc<B2>) -> Builder<C2, B2> {
        Builder {
            name: self.name,
            workers: self.workers,
            window: self.window,
            max_attempts: self.max_attempts,
            worker_batch: self.worker_batch,
            max_task: self.max_task,
            max_result: self.max_result,
            args: self.args,
            program: self.program,
            quiet: self.quiet,
            start_timeout: self.start_timeout,
            backend,
            codec: PhantomData,
        }
    }

    /// The pool's name (default `"default"`): tells a program's pools
    /// apart in their workers.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Worker processes (default: the number of CPUs; 1 to 128).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }

    /// Most tasks in flight, submitted and not yet answered (default
    /// 4096, at least 1).
    pub fn window(mut self, n: usize) -> Self {
        self.window = n;
        self
    }

    /// Deaths of a worker running a task after which the task is given up
    /// with [`TaskError::Killed`] (default 3, at least 1).
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Most tasks a worker takes at once (default 64, 1 to 64). A worker
    /// takes only what is waiting, and fewer when tasks are slow.
    pub fn worker_batch(mut self, n: usize) -> Self {
        self.worker_batch = n;
        self
    }

    /// Largest encoded input in bytes (default: the type's size for
    /// [`PodCodec`], 1024 for [`SerdeCodec`]).
    pub fn max_task_bytes(mut self, n: usize) -> Self {
        self.max_task = Some(n);
        self
    }

    /// Largest encoded result in bytes (default as for
    /// [`max_task_bytes`](Builder::max_task_bytes); error messages are cut
    /// to fit, with at least 247 bytes of room).
    pub fn max_result_bytes(mut self, n: usize) -> Self {
        self.max_result = Some(n);
        self
    }

    /// The workers' arguments (default: this process's own, so that the
    /// program's argument parsing before `start` works the same). Tests
    /// pass the test's name here, so that a worker of a test binary runs
    /// just that test (`["--exact", "my_test", "--nocapture"]`).
    pub fn worker_args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Runs `program` with `args` as the workers instead of the current
    /// executable with its arguments: for a worker that is another program
    /// (the Python binding's workers are `python -c "import ..."`). That
    /// program must call [`serve_worker`] with a handler of the pool's
    /// codec and types; it finds the pool from its environment.
    pub fn worker_command<P, I, S>(mut self, program: P, args: I) -> Self
    where
        P: Into<PathBuf>,
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.program = Some(program.into());
        self.args = Some(args.into_iter().map(Into::into).collect());
        self
    }

    /// Sends the workers' standard output to `/dev/null` (default: they
    /// share the parent's). Standard error is always shared.
    pub fn quiet_workers(mut self, quiet: bool) -> Self {
        self.quiet = quiet;
        self
    }

    /// How long `start` waits for every worker to be ready (default 30 s).
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Values as serde types, encoded with postcard (feature `serde`).
    #[cfg(feature = "serde")]
    pub fn serde(self) -> Builder<SerdeCodec, B> {
        let b = Arc::clone(&self.backend);
        self.recode(b)
    }

    /// Values as byte strings (`Vec<u8>`), sent as they are: payloads
    /// whose size is known only at run time (default limit 1024 bytes,
    /// [`max_task_bytes`](Builder::max_task_bytes)).
    pub fn bytes(self) -> Builder<BytesCodec, B> {
        let b = Arc::clone(&self.backend);
        self.recode(b)
    }

    /// Values as `bytemuck::Pod` types, sent as their bytes (the default).
    pub fn pod(self) -> Builder<PodCodec, B> {
        let b = Arc::clone(&self.backend);
        self.recode(b)
    }

    /// Tasks and results over `backend` instead of shared memory.
    pub fn backend<B2: Backend>(self, backend: B2) -> Builder<C, B2> {
        self.recode(Arc::new(backend))
    }

    /// Starts the pool with `handler` as the task function.
    ///
    /// In a worker process of this pool, runs the handler loop and exits
    /// the process (never returns). In any other process, starts the
    /// workers, waits until each is ready, and returns the pool.
    pub fn start<In, Out, F>(self, mut handler: F) -> Result<Pool<In, Out, C, B>, PoolError>
    where
        In: Wire<C>,
        Out: Wire<C>,
        F: FnMut(In) -> Out,
    {
        self.start_fallible(move |x| Ok::<Out, std::convert::Infallible>(handler(x)))
    }

    /// [`start`](Builder::start) with a handler that can fail: an `Err`
    /// gives its task [`TaskError::Failed`] with the error's message.
    pub fn start_fallible<In, Out, E, F>(self, handler: F) -> Result<Pool<In, Out, C, B>, PoolError>
    where
        In: Wire<C>,
        Out: Wire<C>,
        E: fmt::Display,
        F: FnMut(In) -> Result<Out, E>,
    {
        let cfg = self.config::<In, Out>()?;
        if let Some(role) = process::role() {
            if let Some(pool) = role.strip_prefix(ROLE_PREFIX) {
                if pool == self.name {
                    worker::run::<B, C, In, Out, E, F>(self.backend, &cfg.shared, handler);
                }
                return Err(PoolError::WorkerOfAnotherPool {
                    worker_of: pool.to_owned(),
                    this: self.name,
                });
            }
        }
        drop(handler);
        Pool::launch(self, cfg)
    }

    fn config<In: Wire<C>, Out: Wire<C>>(&self) -> Result<FullConfig, PoolError> {
        let bad = |m: String| Err(PoolError::Config(m));
        if self.workers == 0 || self.workers > board::MAX_SLOTS {
            return bad(format!(
                "workers must be 1 to {}, not {}",
                board::MAX_SLOTS,
                self.workers
            ));
        }
        if self.window == 0 || self.window > 1 << 20 {
            return bad(format!("window must be 1 to 2^20, not {}", self.window));
        }
        if self.max_attempts == 0 {
            return bad("max_attempts must be at least 1".into());
        }
        if self.worker_batch == 0 || self.worker_batch > board::MAX_HELD {
            return bad(format!(
                "worker_batch must be 1 to {}, not {}",
                board::MAX_HELD,
                self.worker_batch
            ));
        }
        let task = self.max_task.or(In::fixed_len()).unwrap_or(C::DEFAULT_MAX);
        let result = self
            .max_result
            .or(Out::fixed_len())
            .unwrap_or(C::DEFAULT_MAX);
        let max_task = TASK_HEADER + task;
        let max_result = RESULT_HEADER + result.max(MIN_MESSAGE_ROOM);
        if max_task > crate::MAX_PAYLOAD_LIMIT as usize / 2
            || max_result > crate::MAX_PAYLOAD_LIMIT as usize / 2
        {
            return bad("max_task_bytes / max_result_bytes too large".into());
        }
        let capacity = (self.window + self.workers * self.worker_batch)
            .next_power_of_two()
            .max(16) as u32;
        Ok(FullConfig {
            shared: Config {
                worker_batch: self.worker_batch,
                max_result,
            },
            max_task,
            capacity,
        })
    }
}

struct FullConfig {
    shared: Config,
    max_task: usize,
    capacity: u32,
}

// ---------------------------------------------------------------- pool ---

/// A started pool of worker processes; see the [module docs](self).
///
/// `In` is the handler's input type, `Out` its output, `C` the codec
/// ([`PodCodec`] or [`SerdeCodec`]), `B` the [`Backend`].
pub struct Pool<In, Out, C: Codec = PodCodec, B: Backend = ShmBackend> {
    ch: Channels<B>,
    st: State<Out, C>,
    types: PhantomData<fn(In)>,
}

impl<In, Out, C: Codec, B: Backend> fmt::Debug for Pool<In, Out, C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("name", &self.ch.name)
            .field("workers", &self.ch.workers.len())
            .field("in_flight", &self.st.flights.len())
            .field("stats", &self.st.counters.get())
            .finish_non_exhaustive()
    }
}

/// The parent's side of the processes and channels.
struct Channels<B: Backend> {
    name: String,
    backend: Arc<B>,
    tasks: B::Channel,
    results: B::Channel,
    names: [String; 2],
    board: Board,
    board_name: String,
    workers: Vec<WorkerSlot>,
    args: Option<Vec<OsString>>,
    program: Option<PathBuf>,
    shared: Config,
    quiet: bool,
    /// Pills sent: workers that exit now are not replaced.
    closing: bool,
    max_attempts: u32,
    torn_down: bool,
}

struct WorkerSlot {
    child: Option<ChildProcess>,
    /// Exits and kills in a row of workers of this slot before ready.
    startup_failures: u32,
    startup_kills: u32,
}

/// A task in flight, in its record of [`Flights`].
struct Record {
    id: u64,
    /// 0: submitted with `submit`; otherwise the generation of the map it
    /// belongs to.
    tag: u32,
    /// Deaths of workers running it.
    deaths: u32,
    live: bool,
    /// The task message (header and input), kept to send again if a
    /// worker dies after taking it. Reused by the record's next task.
    message: Vec<u8>,
}

/// The tasks in flight, in reused records. A task's message names its
/// record and its result names it back, so that a result finds its task
/// without a lookup, and nothing is allocated per task once the window
/// has been filled once. A record is freed when its task is answered; a
/// result naming a freed or reused record (another id) is a duplicate.
#[derive(Default)]
struct Flights {
    recs: Vec<Record>,
    free: Vec<u32>,
    live: usize,
    /// Records to send, with the id they were queued for (skipped if that
    /// task was answered meanwhile).
    outbox: VecDeque<(u32, u64)>,
}

impl Flights {
    fn len(&self) -> usize {
        self.live
    }

    fn unsent(&self) -> usize {
        self.outbox.len()
    }

    /// Takes a record for task `id` and writes its message; queued to send.
    fn put<In: Wire<C>, C: Codec>(
        &mut self,
        id: u64,
        tag: u32,
        input: &In,
        max: usize,
    ) -> Result<(), TaskError> {
        let idx = match self.free.pop() {
            Some(i) => i,
            None => {
                self.recs.push(Record {
                    id: 0,
                    tag: 0,
                    deaths: 0,
                    live: false,
                    message: Vec::new(),
                });
                (self.recs.len() - 1) as u32
            }
        };
        let r = &mut self.recs[idx as usize];
        r.message.clear();
        r.message.extend_from_slice(&id.to_le_bytes());
        r.message.extend_from_slice(&idx.to_le_bytes());
        let failed = match input.encode(&mut r.message) {
            Err(e) => Some(TaskError::BadInput {
                message: e.to_string(),
            }),
            Ok(()) if r.message.len() > max => Some(TaskError::TooLarge {
                what: "input",
                len: r.message.len() - TASK_HEADER,
                max: max - TASK_HEADER,
            }),
            Ok(()) => None,
        };
        if let Some(e) = failed {
            self.free.push(idx);
            return Err(e);
        }
        (r.id, r.tag, r.deaths, r.live) = (id, tag, 0, true);
        self.live += 1;
        self.outbox.push_back((idx, id));
        Ok(())
    }

    /// The record `idx` if it holds task `id` in flight.
    fn get_mut(&mut self, idx: u32, id: u64) -> Option<&mut Record> {
        self.recs
            .get_mut(idx as usize)
            .filter(|r| r.live && r.id == id)
    }

    /// Frees the record of task `id` (record `idx`); its tag, or `None`
    /// if that task is not in flight (a duplicate result).
    fn finish(&mut self, idx: u32, id: u64) -> Option<u32> {
        let r = self.get_mut(idx, id)?;
        r.live = false;
        let tag = r.tag;
        self.live -= 1;
        self.free.push(idx);
        Some(tag)
    }

    /// The record of task `id`, by search (after a worker's death only).
    fn find(&self, id: u64) -> Option<u32> {
        self.recs
            .iter()
            .position(|r| r.live && r.id == id)
            .map(|i| i as u32)
    }

    /// Queues record `idx`'s task to be sent again.
    fn resend(&mut self, idx: u32) {
        let id = self.recs[idx as usize].id;
        self.outbox.push_back((idx, id));
    }
}

/// Where the results of the running map go.
enum Sink<Out> {
    None,
    Ordered {
        tag: u32,
        base: u64,
        slots: VecDeque<Option<Result<Out, TaskError>>>,
    },
    Unordered {
        tag: u32,
        base: u64,
        done: VecDeque<(usize, Result<Out, TaskError>)>,
    },
}

/// The parent's bookkeeping.
struct State<Out, C: Codec> {
    flights: Flights,
    ready: VecDeque<Completed<Out>>,
    /// Tasks of `submit` whose result is not in `ready` yet.
    pending_submits: usize,
    sink: Sink<Out>,
    next_tag: u32,
    next_id: u64,
    window: usize,
    max_task: usize,
    max_result: usize,
    workers: usize,
    counters: Counters,
    ticks: u32,
    next_check: Instant,
    codec: PhantomData<C>,
}

impl<Out: Wire<C>, C: Codec> State<Out, C> {
    /// How much room the window must have before it is topped up: tasks
    /// then go out in batches, and a sleeping worker is woken once per
    /// batch, not once per task.
    fn chunk(&self) -> usize {
        (self.window / 4).clamp(1, SEND_BATCH)
    }

    /// Encodes a task and queues it to be sent; its id.
    fn enqueue<In: Wire<C>>(&mut self, input: &In, tag: u32) -> Result<u64, TaskError> {
        let id = self.next_id;
        self.flights.put(id, tag, input, self.max_task)?;
        self.next_id += 1;
        Counters::add(&self.counters.0.submitted, 1);
        Ok(id)
    }

    /// A result message arrived.
    fn on_result(&mut self, data: &[u8]) {
        if data.len() < RESULT_HEADER {
            return; // not ours
        }
        let id = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let idx = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
        let Some(tag) = self.flights.finish(idx, id) else {
            Counters::add(&self.counters.0.duplicates, 1);
            return;
        };
        let text = || String::from_utf8_lossy(&data[RESULT_HEADER..]).into_owned();
        let result = match data[12] {
            status::OK => Out::decode(&data[RESULT_HEADER..]).map_err(|e| TaskError::BadOutput {
                message: e.to_string(),
            }),
            status::FAILED => Err(TaskError::Failed { message: text() }),
            status::PANICKED => Err(TaskError::Panicked { message: text() }),
            status::BAD_INPUT => Err(TaskError::BadInput { message: text() }),
            status::TOO_LARGE => Err(TaskError::TooLarge {
                what: "result",
                len: text().parse().unwrap_or(0),
                max: self.max_result - RESULT_HEADER,
            }),
            _ => Err(TaskError::BadOutput { message: text() }),
        };
        self.deliver(id, tag, result);
    }

    fn deliver(&mut self, id: u64, tag: u32, result: Result<Out, TaskError>) {
        let cell = if result.is_ok() {
            &self.counters.0.succeeded
        } else {
            &self.counters.0.failed
        };
        Counters::add(cell, 1);
        if tag == 0 {
            self.pending_submits -= 1;
            self.ready.push_back(Completed { id, result });
            return;
        }
        match &mut self.sink {
            Sink::Ordered {
                tag: t,
                base,
                slots,
            } if *t == tag => {
                if let Some(s) = id
                    .checked_sub(*base)
                    .and_then(|i| usize::try_from(i).ok())
                    .and_then(|i| slots.get_mut(i))
                {
                    *s = Some(result);
                }
            }
            Sink::Unordered { tag: t, base, done } if *t == tag => {
                done.push_back((id.saturating_sub(*base) as usize, result));
            }
            _ => {} // a map dropped before its end: nobody wants it
        }
    }
}

impl Pool<(), ()> {
    /// A builder with the defaults: shared memory, `Pod` values, one
    /// worker per CPU, a window of 4096, 3 attempts. The pool's types come
    /// from the handler given to [`Builder::start`].
    pub fn builder() -> Builder {
        Builder::default()
    }
}

impl<In, Out, C, B> Pool<In, Out, C, B>
where
    In: Wire<C>,
    Out: Wire<C>,
    C: Codec,
    B: Backend,
{
    fn launch(b: Builder<C, B>, cfg: FullConfig) -> Result<Self, PoolError> {
        let spec = |purpose, max_payload: usize| ChannelSpec {
            purpose,
            capacity: cfg.capacity,
            max_payload: max_payload as u32,
        };
        let backend = b.backend;
        let tasks = backend
            .create(&spec(Purpose::Tasks, cfg.max_task))
            .map_err(PoolError::Backend)?;
        let results = backend
            .create(&spec(Purpose::Results, cfg.shared.max_result))
            .map_err(PoolError::Backend)?;
        let names = [backend.name(&tasks), backend.name(&results)];
        let (board, board_name) = Board::create(b.workers).map_err(PoolError::Board)?;
        let mut ch = Channels {
            name: b.name,
            backend,
            tasks,
            results,
            names,
            board,
            board_name,
            workers: Vec::with_capacity(b.workers),
            args: b.args,
            program: b.program,
            shared: cfg.shared.clone(),
            quiet: b.quiet,
            closing: false,
            max_attempts: b.max_attempts,
            torn_down: false,
        };
        for slot in 0..b.workers {
            let child = ch.spawn(slot).map_err(PoolError::Spawn)?;
            ch.workers.push(WorkerSlot {
                child: Some(child),
                startup_failures: 0,
                startup_kills: 0,
            });
        }
        ch.wait_ready(b.start_timeout)?;
        Ok(Pool {
            ch,
            st: State {
                flights: Flights::default(),
                ready: VecDeque::new(),
                pending_submits: 0,
                sink: Sink::None,
                next_tag: 1,
                next_id: 0,
                window: b.window,
                max_task: cfg.max_task,
                max_result: cfg.shared.max_result,
                workers: b.workers,
                counters: Counters::default(),
                ticks: 0,
                next_check: Instant::now(),
                codec: PhantomData,
            },
            types: PhantomData,
        })
    }

    // ----------------------------------------------------------- submit ---

    /// Submits a task; returns its id. Waits (taking results meanwhile)
    /// while [`window`](Builder::window) tasks are in flight. While the
    /// workers are busy, tasks are gathered into batches of 64 before they
    /// go out; any call that waits or takes results sends what is gathered.
    pub fn submit(&mut self, input: In) -> Result<TaskId, PoolError> {
        if self.st.flights.len() >= self.st.window {
            // Full: wait until a chunk is free, so that tasks go out in
            // batches rather than one per result.
            while self.st.flights.len() > self.st.window - self.st.chunk() {
                self.pump(true)?;
            }
        }
        let id = self.st.enqueue(&input, 0).map_err(PoolError::Task)?;
        self.st.pending_submits += 1;
        // Send now if workers may be idle; otherwise gather a batch.
        if self.st.flights.unsent() >= SEND_BATCH / 4
            || self.st.flights.len() <= 2 * self.st.workers
        {
            self.pump(false)?;
        }
        Ok(id)
    }

    /// The next result of a [`submit`](Pool::submit)ted task, in the order
    /// they finish, waiting for one; `None` once every submitted task's
    /// result has been taken.
    pub fn next_result(&mut self) -> Result<Option<Completed<Out>>, PoolError> {
        loop {
            if let Some(c) = self.st.ready.pop_front() {
                return Ok(Some(c));
            }
            if self.st.pending_submits == 0 {
                return Ok(None);
            }
            self.pump(true)?;
        }
    }

    /// [`next_result`](Pool::next_result) waiting at most `timeout`:
    /// `None` if no result came in that time or none is pending (see
    /// [`pending_results`](Pool::pending_results)). For a caller that must
    /// do something else now and then while it waits (the Python binding
    /// checks for signals every 50 ms).
    pub fn next_result_timeout(
        &mut self,
        timeout: Duration,
    ) -> Result<Option<Completed<Out>>, PoolError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(c) = self.st.ready.pop_front() {
                return Ok(Some(c));
            }
            if self.st.pending_submits == 0 {
                return Ok(None);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.pump(false)?;
                return Ok(self.st.ready.pop_front());
            }
            self.pump_for(left)?;
        }
    }

    /// Results of submitted tasks not taken yet (answered or in flight).
    pub fn pending_results(&self) -> usize {
        self.st.pending_submits + self.st.ready.len()
    }

    /// The most tasks in flight at once ([`Builder::window`]).
    pub fn window(&self) -> usize {
        self.st.window
    }

    /// The next result of a submitted task if one is there now.
    pub fn try_next_result(&mut self) -> Result<Option<Completed<Out>>, PoolError> {
        if self.st.ready.is_empty() && self.st.pending_submits > 0 {
            self.pump(false)?;
        }
        Ok(self.st.ready.pop_front())
    }

    /// An iterator over the results of the submitted tasks, as they
    /// finish, until every one has been taken.
    pub fn results(&mut self) -> Results<'_, In, Out, C, B> {
        Results { pool: self }
    }

    /// Runs the handler on every input and yields the results **in input
    /// order**, streaming: inputs are taken from `inputs` only while fewer
    /// than [`window`](Builder::window) tasks are in flight or waiting for
    /// their turn. After a [`TaskError::Pool`] the iteration ends.
    pub fn map<I>(&mut self, inputs: I) -> Map<'_, In, Out, C, B, I::IntoIter>
    where
        I: IntoIterator<Item = In>,
    {
        let tag = self.new_tag();
        self.st.sink = Sink::Ordered {
            tag,
            base: self.st.next_id,
            slots: VecDeque::new(),
        };
        Map {
            pool: self,
            inputs: inputs.into_iter(),
            tag,
            more: true,
            filling: false,
            failed: false,
        }
    }

    /// Like [`map`](Pool::map), but yields `(index, result)` as results
    /// come, `index` being the input's position.
    pub fn map_unordered<I>(&mut self, inputs: I) -> MapUnordered<'_, In, Out, C, B, I::IntoIter>
    where
        I: IntoIterator<Item = In>,
    {
        let tag = self.new_tag();
        self.st.sink = Sink::Unordered {
            tag,
            base: self.st.next_id,
            done: VecDeque::new(),
        };
        MapUnordered {
            pool: self,
            inputs: inputs.into_iter(),
            tag,
            more: true,
            filling: false,
            failed: false,
            in_flight: 0,
            index: 0,
        }
    }

    fn new_tag(&mut self) -> u32 {
        let t = self.st.next_tag;
        self.st.next_tag = self.st.next_tag.wrapping_add(1).max(1);
        t
    }

    /// Waits until every task submitted so far has finished (JoinableQueue
    /// meaning: answered, its result kept for [`next_result`](Pool::next_result)).
    pub fn join(&mut self) -> Result<(), PoolError> {
        while self.st.flights.len() > 0 {
            self.pump(true)?;
        }
        Ok(())
    }

    // ------------------------------------------------------ observation ---

    /// The counters now.
    pub fn stats(&self) -> Stats {
        self.st.counters.get()
    }

    /// A handle to the counters for another thread.
    pub fn counters(&self) -> Counters {
        self.st.counters.clone()
    }

    /// Tasks in flight: submitted and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.st.flights.len()
    }

    /// The pids of the worker processes running now (a replacement
    /// appears once started).
    pub fn worker_pids(&self) -> Vec<u32> {
        self.ch
            .workers
            .iter()
            .filter_map(|w| w.child.as_ref().map(ChildProcess::pid))
            .collect()
    }

    /// Looks for workers that died, now, and replaces them (the pool
    /// otherwise does it from its own calls).
    pub fn check_workers(&mut self) -> Result<(), PoolError> {
        self.ch.check_workers(&mut self.st)
    }

    // -------------------------------------------------------- shutdown ---

    /// Graceful shutdown: finishes every task submitted (results not taken
    /// are dropped), sends each worker the poison pill, reaps them (killing
    /// one that does not exit within 5 s) and removes the pool's names.
    /// Returns the final counters.
    pub fn shutdown(mut self) -> Result<Stats, PoolError> {
        self.join()?;
        self.ch.closing = true;
        // One pill per worker still there, again every 100 ms: a worker
        // that takes a batch with two pills in it swallows the second.
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let mut last_pills: Option<Instant> = None;
        loop {
            let mut alive = 0;
            for w in &mut self.ch.workers {
                if let Some(c) = w.child.as_mut() {
                    match c.try_wait().map_err(PoolError::Wait)? {
                        Some(_) => w.child = None,
                        None => alive += 1,
                    }
                }
            }
            let now = Instant::now();
            if alive == 0 || now >= deadline {
                break; // teardown kills any left
            }
            if last_pills.is_none_or(|t| now - t >= LIVENESS) {
                for _ in 0..alive {
                    match self.ch.tasks.try_send(Message::signal(Request::DIE)) {
                        Ok(()) => {}
                        Err(e) if e.is_full() => break,
                        Err(e) => return Err(PoolError::Send(e.map(|_| ()))),
                    }
                }
                last_pills = Some(now);
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        self.ch.teardown();
        Ok(self.st.counters.get())
    }

    /// Immediate shutdown: kills every worker (tasks in flight are lost),
    /// reaps them and removes the pool's names. Dropping the pool does the
    /// same.
    pub fn kill(mut self) -> Stats {
        self.ch.teardown();
        self.st.counters.get()
    }

    // ----------------------------------------------------------- engine ---

    /// Sends what waits in the outbox, takes the results that are there,
    /// and now and then checks the workers. With `block`, and nothing
    /// moved, waits up to [`LIVENESS`] for a result. True if anything moved.
    fn pump(&mut self, block: bool) -> Result<bool, PoolError> {
        self.pump_for(if block { LIVENESS } else { Duration::ZERO })
    }

    /// [`pump`](Pool::pump) waiting up to `wait` (at most [`LIVENESS`]).
    fn pump_for(&mut self, wait: Duration) -> Result<bool, PoolError> {
        let block = !wait.is_zero();
        let mut moved = self.ch.flush(&mut self.st)?;
        moved |= self.ch.drain(&mut self.st, RECV_BATCH)? > 0;
        self.st.ticks = self.st.ticks.wrapping_add(1);
        if !moved || self.st.ticks % 64 == 0 {
            let now = Instant::now();
            if now >= self.st.next_check {
                self.st.next_check = now + CHECK_EVERY;
                self.ch.check_workers(&mut self.st)?;
            }
        }
        if moved || !block {
            return Ok(moved);
        }
        let got = match self
            .ch
            .results
            .recv_with(Filter::Any, Wait::timeout(wait.min(LIVENESS)))
        {
            Ok(g) => {
                self.st.on_result(g.data());
                true
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(e) => return Err(PoolError::Recv(e)),
        };
        if !got {
            self.ch.check_workers(&mut self.st)?;
        }
        Ok(got)
    }
}

impl<B: Backend> Channels<B> {
    fn spawn(&self, slot: usize) -> Result<ChildProcess, SpawnError> {
        self.board.reset_slot(slot);
        let mut c = Child::role(format!("{ROLE_PREFIX}{}", self.name))
            .channel("tasks", &self.names[0])
            .channel("results", &self.names[1])
            .channel("board", &self.board_name)
            .env(SLOT_VAR, slot.to_string())
            .env(BATCH_VAR, self.shared.worker_batch.to_string())
            .env(MAX_RESULT_VAR, self.shared.max_result.to_string())
            .stdin(Stdio::null());
        if let Some(args) = &self.args {
            c = c.inherit_args(false).args(args);
        }
        if let Some(program) = &self.program {
            c = c.program(program);
        }
        if self.quiet {
            c = c.stdout(Stdio::null());
        }
        c.spawn()
    }

    fn wait_ready(&mut self, timeout: Duration) -> Result<(), PoolError> {
        let start = Instant::now();
        loop {
            let mut ready = 0;
            for (slot, w) in self.workers.iter_mut().enumerate() {
                if self.board.ready(slot).is_some() {
                    ready += 1;
                    continue;
                }
                if let Some(c) = w.child.as_mut() {
                    if let Some(status) = c.try_wait().map_err(PoolError::Wait)? {
                        return Err(PoolError::WorkersCannotStart {
                            status: status.to_string(),
                        });
                    }
                }
            }
            if ready == self.workers.len() {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(PoolError::StartTimeout {
                    ready,
                    workers: self.workers.len(),
                    waited: timeout,
                });
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Sends the outbox's tasks, a batch at a time, as long as the channel
    /// takes them. True if any went.
    fn flush<Out: Wire<C>, C: Codec>(&self, st: &mut State<Out, C>) -> Result<bool, PoolError> {
        let fl = &mut st.flights;
        let mut moved = false;
        // Outbox positions of the messages in `msgs`.
        let mut at: Vec<usize> = Vec::new();
        while !fl.outbox.is_empty() {
            at.clear();
            let mut msgs: Vec<Message<&[u8]>> = Vec::with_capacity(SEND_BATCH.min(fl.outbox.len()));
            for (pos, &(idx, id)) in fl.outbox.iter().enumerate() {
                if msgs.len() == SEND_BATCH {
                    break;
                }
                let r = &fl.recs[idx as usize];
                if r.live && r.id == id {
                    msgs.push(Message::new(Request::DO, r.message.as_slice()));
                    at.push(pos);
                }
            }
            if msgs.is_empty() {
                fl.outbox.clear(); // every one answered meanwhile
                break;
            }
            let k = match self.tasks.try_send_batch(&msgs) {
                Ok(k) => k,
                Err(e) if e.is_full() => 0,
                Err(e) => return Err(PoolError::Send(e)),
            };
            if k == 0 {
                break;
            }
            // The first k went, and the answered ones before them.
            fl.outbox.drain(..=at[k - 1]);
            moved = true;
        }
        Ok(moved)
    }

    /// Takes up to `max` results that are there; how many.
    fn drain<Out: Wire<C>, C: Codec>(
        &self,
        st: &mut State<Out, C>,
        max: usize,
    ) -> Result<usize, PoolError> {
        let mut n = 0;
        while n < max {
            let k = match self
                .results
                .try_recv_batch(RECV_BATCH.min(max - n), |_, d| st.on_result(d))
            {
                Ok(k) => k,
                Err(TryRecvError::Empty) => 0,
                Err(e) => return Err(PoolError::TryRecv(e)),
            };
            n += k;
            if k < RECV_BATCH.min(max - n + k) {
                break;
            }
        }
        Ok(n)
    }

    /// Reaps the workers that died, settles the tasks they held, and
    /// starts replacements.
    fn check_workers<Out: Wire<C>, C: Codec>(
        &mut self,
        st: &mut State<Out, C>,
    ) -> Result<(), PoolError> {
        for slot in 0..self.workers.len() {
            let status = match self.workers[slot].child.as_mut() {
                Some(c) => match c.try_wait().map_err(PoolError::Wait)? {
                    Some(status) => status,
                    None => continue,
                },
                None if self.closing => continue,
                None => {
                    // A replacement that could not be started: try again.
                    let child = self.spawn(slot).map_err(PoolError::Spawn)?;
                    self.workers[slot].child = Some(child);
                    continue;
                }
            };
            self.workers[slot].child = None;
            if self.closing {
                continue;
            }
            self.on_death(st, slot, status)?;
        }
        Ok(())
    }

    fn on_death<Out: Wire<C>, C: Codec>(
        &mut self,
        st: &mut State<Out, C>,
        slot: usize,
        status: ExitStatus,
    ) -> Result<(), PoolError> {
        // Every result the dead worker sent is in the channel by now: take
        // them first, so that what it announced is compared with them.
        self.drain(st, usize::MAX)?;
        let was_ready = self.board.ready(slot).is_some();
        let (running, held) = self.board.last_words(slot);
        if let Some((id, idx)) = running.and_then(|id| Some((id, st.flights.find(id)?))) {
            let f = st.flights.get_mut(idx, id).expect("found in flight");
            f.deaths += 1;
            if f.deaths >= self.max_attempts {
                let deaths = f.deaths;
                let tag = st.flights.finish(idx, id).expect("in flight");
                {
                    // Before any copy of it can run again.
                    if !self.board.poison(id) {
                        return Err(PoolError::TooManyPoisoned);
                    }
                    let err = TaskError::Killed {
                        attempts: deaths,
                        last_exit: status.to_string(),
                    };
                    st.deliver(id, tag, Err(err));
                }
            }
        }
        // The tasks it had taken and not answered: send them again. (If it
        // died before letting go of them in the channel, the channel
        // offers them again too; the second result is dropped.)
        let mut retried = 0;
        for id in held {
            if let Some(idx) = st.flights.find(id) {
                st.flights.resend(idx);
                retried += 1;
            }
        }
        Counters::add(&st.counters.0.retried, retried);
        let w = &mut self.workers[slot];
        if was_ready {
            (w.startup_failures, w.startup_kills) = (0, 0);
        } else {
            if status.code().is_some() {
                w.startup_failures += 1;
            } else {
                w.startup_kills += 1;
            }
            if w.startup_failures >= STARTUP_FAILURES || w.startup_kills >= STARTUP_KILLS {
                return Err(PoolError::WorkersCannotStart {
                    status: status.to_string(),
                });
            }
        }
        Counters::add(&st.counters.0.restarted, 1);
        let child = self.spawn(slot).map_err(PoolError::Spawn)?;
        self.workers[slot].child = Some(child);
        Ok(())
    }

    /// Kills and reaps every worker still there and removes the names.
    fn teardown(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        for w in &mut self.workers {
            if let Some(mut c) = w.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for name in &self.names {
            let _ = self.backend.remove(name);
        }
        // The board's file goes with the board (dropped with the pool).
    }
}

impl<B: Backend> Drop for Channels<B> {
    fn drop(&mut self) {
        self.teardown();
    }
}

// ------------------------------------------------------------ iterators ---

/// Results of submitted tasks as they finish; see [`Pool::results`].
pub struct Results<'p, In, Out, C: Codec, B: Backend> {
    pool: &'p mut Pool<In, Out, C, B>,
}

impl<In, Out, C: Codec, B: Backend> fmt::Debug for Results<'_, In, Out, C, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Results { .. }")
    }
}

impl<In: Wire<C>, Out: Wire<C>, C: Codec, B: Backend> Iterator for Results<'_, In, Out, C, B> {
    type Item = Result<Completed<Out>, PoolError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.pool.next_result().transpose()
    }
}

/// The iterator of [`Pool::map`]: results in input order.
pub struct Map<'p, In, Out, C: Codec, B: Backend, I> {
    pool: &'p mut Pool<In, Out, C, B>,
    inputs: I,
    tag: u32,
    more: bool,
    /// Topping the window up (from a chunk free to full).
    filling: bool,
    failed: bool,
}

impl<In, Out, C: Codec, B: Backend, I> fmt::Debug for Map<'_, In, Out, C, B, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Map")
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl<In, Out, C, B, I> Iterator for Map<'_, In, Out, C, B, I>
where
    In: Wire<C>,
    Out: Wire<C>,
    C: Codec,
    B: Backend,
    I: Iterator<Item = In>,
{
    type Item = Result<Out, TaskError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let p = &mut *self.pool;
        loop {
            // Room in the window, counting results waiting for their turn.
            let room = |st: &State<Out, C>| {
                let waiting = match &st.sink {
                    Sink::Ordered { slots, .. } => slots.len(),
                    _ => 0,
                };
                st.window.saturating_sub(waiting.max(st.flights.len()))
            };
            // Top up once a chunk is free, then to the brim.
            self.filling |= self.more && room(&p.st) >= p.st.chunk();
            while self.filling {
                if room(&p.st) == 0 {
                    self.filling = false;
                    break;
                }
                let Some(input) = self.inputs.next() else {
                    self.more = false;
                    self.filling = false;
                    break;
                };
                let r = p.st.enqueue(&input, self.tag);
                let Sink::Ordered { slots, .. } = &mut p.st.sink else {
                    unreachable!("the map's sink")
                };
                match r {
                    Ok(_) => slots.push_back(None),
                    Err(e) => {
                        // Not sent: its place gets the error, under the id
                        // it would have had.
                        slots.push_back(Some(Err(e)));
                        p.st.next_id += 1;
                    }
                }
                if p.st.flights.unsent() >= SEND_BATCH {
                    break; // send these first
                }
            }
            let Sink::Ordered { slots, base, .. } = &mut p.st.sink else {
                unreachable!("the map's sink")
            };
            match slots.front_mut() {
                None if !self.more => return None,
                Some(s) if s.is_some() => {
                    let r = s.take();
                    slots.pop_front();
                    *base += 1;
                    return r;
                }
                _ => {}
            }
            // Send what was queued; wait only if nothing else can move.
            if let Err(e) = p.pump(!self.filling) {
                self.failed = true;
                return Some(Err(TaskError::Pool(Arc::new(e))));
            }
        }
    }
}

impl<In, Out, C: Codec, B: Backend, I> Drop for Map<'_, In, Out, C, B, I> {
    fn drop(&mut self) {
        // Results of this map still in flight are dropped when they come.
        self.pool.st.sink = Sink::None;
    }
}

/// The iterator of [`Pool::map_unordered`]: `(input index, result)` as
/// results come.
pub struct MapUnordered<'p, In, Out, C: Codec, B: Backend, I> {
    pool: &'p mut Pool<In, Out, C, B>,
    inputs: I,
    tag: u32,
    more: bool,
    /// Topping the window up (from a chunk free to full).
    filling: bool,
    failed: bool,
    /// Tasks of this map not yielded yet.
    in_flight: usize,
    index: usize,
}

impl<In, Out, C: Codec, B: Backend, I> fmt::Debug for MapUnordered<'_, In, Out, C, B, I> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MapUnordered")
            .field("tag", &self.tag)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

impl<In, Out, C, B, I> Iterator for MapUnordered<'_, In, Out, C, B, I>
where
    In: Wire<C>,
    Out: Wire<C>,
    C: Codec,
    B: Backend,
    I: Iterator<Item = In>,
{
    type Item = (usize, Result<Out, TaskError>);

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let p = &mut *self.pool;
        loop {
            let room = |st: &State<Out, C>, mine: usize| {
                st.window.saturating_sub(mine.max(st.flights.len()))
            };
            self.filling |= self.more && room(&p.st, self.in_flight) >= p.st.chunk();
            while self.filling {
                if room(&p.st, self.in_flight) == 0 {
                    self.filling = false;
                    break;
                }
                let Some(input) = self.inputs.next() else {
                    self.more = false;
                    self.filling = false;
                    break;
                };
                self.in_flight += 1;
                self.index += 1;
                if let Err(e) = p.st.enqueue(&input, self.tag) {
                    p.st.next_id += 1;
                    let Sink::Unordered { done, .. } = &mut p.st.sink else {
                        unreachable!("the map's sink")
                    };
                    done.push_back((self.index - 1, Err(e)));
                }
                if p.st.flights.unsent() >= SEND_BATCH {
                    break; // send these first
                }
            }
            let Sink::Unordered { done, .. } = &mut p.st.sink else {
                unreachable!("the map's sink")
            };
            if let Some(r) = done.pop_front() {
                self.in_flight -= 1;
                return Some(r);
            }
            if self.in_flight == 0 && !self.more {
                return None;
            }
            if let Err(e) = p.pump(!self.filling) {
                self.failed = true;
                return Some((usize::MAX, Err(TaskError::Pool(Arc::new(e)))));
            }
        }
    }
}

impl<In, Out, C: Codec, B: Backend, I> Drop for MapUnordered<'_, In, Out, C, B, I> {
    fn drop(&mut self) {
        self.pool.st.sink = Sink::None;
    }
}
