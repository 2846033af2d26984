//! Configuring and starting a pool: [`Builder`].

use std::ffi::OsString;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::backend::RemoteBackend;
use super::remote::{self, Served};
#[cfg(feature = "serde")]
use super::SerdeCodec;
use super::{board, worker};
#[cfg(doc)]
use super::{serve_worker, TaskError};
use super::{Backend, BytesCodec, Codec, PodCodec, Pool, PoolError, ShmBackend, Wire};
use super::{MIN_MESSAGE_ROOM, RESULT_HEADER, ROLE_PREFIX, TASK_HEADER};
use crate::process;

/// Settings the worker side needs too.
#[derive(Clone, Debug)]
pub(crate) struct Config {
    pub(crate) worker_batch: usize,
    pub(crate) max_result: usize,
}

/// Configures and starts a [`Pool`]: `Pool::builder().workers(4).start(f)`.
pub struct Builder<C: Codec = PodCodec, B: Backend = ShmBackend> {
    pub(super) name: String,
    pub(super) workers: usize,
    pub(super) window: usize,
    pub(super) max_attempts: u32,
    worker_batch: usize,
    max_task: Option<usize>,
    max_result: Option<usize>,
    pub(super) args: Option<Vec<OsString>>,
    pub(super) program: Option<PathBuf>,
    pub(super) quiet: bool,
    pub(super) start_timeout: Duration,
    pub(super) backend: Arc<B>,
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

    /// Most tasks a worker takes at once (default 64, 1 to 64): the
    /// parent packs up to this many into one message while tasks are
    /// short, fewer as they get longer (about 20 µs of work to a pack),
    /// and one at a time when they are slow.
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
        let least = if self.backend.remote() { 0 } else { 1 };
        if self.workers < least || self.workers > board::MAX_SLOTS {
            return bad(format!(
                "workers must be {least} to {}, not {}",
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

impl<C: Codec, B: RemoteBackend> Builder<C, B> {
    /// Joins the pool from any machine as a remote worker, and returns
    /// once the run it served has ended: the process is not a child of
    /// the pool's parent, and finds the pool through the backend (for
    /// Redis, `RedisBackend::new(url)?.pool(name)`: the same URL and pool
    /// name as the parent's). Call it with the same builder settings as
    /// the parent (codec, [`worker_batch`](Builder::worker_batch),
    /// [`max_result_bytes`](Builder::max_result_bytes),
    /// [`max_attempts`](Builder::max_attempts)) and a handler of the same
    /// types; [`workers`](Builder::workers) does not matter here.
    ///
    /// - It waits (asleep, looking every 250 ms) until a parent runs the
    ///   pool, then takes tasks from it like a local worker, holding each
    ///   task in the channel until its result is sent: if this process or
    ///   its machine dies, the backend delivers its tasks again to another
    ///   worker (at least once), and the parent keeps one result per task.
    /// - A task that was delivered again runs on its own, and each such
    ///   start is counted in the backend: the start after `max_attempts`
    ///   of them answers [`TaskError::Killed`] instead of running it (the
    ///   death of the first worker, which may have held it in a batch
    ///   without running it, is not counted).
    /// - It returns [`Served`] when the run ends: the parent shut down or
    ///   was dropped (its channels are removed), or it died and its lease
    ///   ran out (the backend then removes what it left). Call `serve`
    ///   again (in a loop) to serve the pool's next run.
    ///
    /// Errors are the backend's (server unreachable, credentials refused,
    /// keys of another shape) or [`PoolError::Config`] for settings out of
    /// range; never the end of a run.
    pub fn serve<In, Out, F>(&self, mut handler: F) -> Result<Served, PoolError>
    where
        In: Wire<C>,
        Out: Wire<C>,
        F: FnMut(In) -> Out,
    {
        self.serve_fallible(move |x| Ok::<Out, std::convert::Infallible>(handler(x)))
    }

    /// [`serve`](Builder::serve) with a handler that can fail: an `Err`
    /// gives its task [`TaskError::Failed`] with the error's message.
    pub fn serve_fallible<In, Out, E, F>(&self, handler: F) -> Result<Served, PoolError>
    where
        In: Wire<C>,
        Out: Wire<C>,
        E: fmt::Display,
        F: FnMut(In) -> Result<Out, E>,
    {
        if !self.backend.remote() {
            return Err(PoolError::Config(
                "this backend does not carry pools that remote workers can join \
                 (for Redis: RedisBackend::pool(name))"
                    .into(),
            ));
        }
        let cfg = self.config::<In, Out>()?;
        remote::serve::<B, C, In, Out, E, F>(&self.backend, &cfg.shared, self.max_attempts, handler)
    }
}

pub(super) struct FullConfig {
    pub(super) shared: Config,
    pub(super) max_task: usize,
    pub(super) capacity: u32,
}
