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
//! - **Packing**: short tasks travel several to a message, and so do their
//!   results: a message's claim, publication and wake-up are shared by
//!   all it carries, and on the task channel, which every worker receives
//!   from, fewer claims step over each other. The parent packs as many
//!   tasks as make about 20 µs of work (judged from the rate answers come
//!   at; at most [`worker_batch`](Builder::worker_batch)), never more than
//!   spreads what waits over every worker, and long tasks one to a
//!   message; a worker takes one message at a time, so no worker sits on
//!   work another could do.
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
mod builder;
mod channels;
mod error;
mod flights;
mod iter;
mod pack;
mod remote;
mod state;
mod stats;
mod wire;
mod worker;

pub use backend::{Backend, ChannelSpec, Purpose, RemoteBackend, ShmBackend};
pub use remote::Served;
#[cfg(feature = "serde")]
pub use wire::SerdeCodec;
pub use wire::{BytesCodec, Codec, PodCodec, Wire, WireError};

pub use builder::Builder;
pub use error::{Completed, PoolError, TaskError, TaskId};
pub use iter::{Map, MapUnordered, Results};
pub use stats::{Counters, Stats};

use std::collections::VecDeque;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::process::{self, ChildProcess};
use crate::{Channel, Filter, Message, Received, RecvTimeoutError, Request, Wait};
use board::Board;
use builder::{Config, FullConfig};
use channels::{Channels, WorkerSlot};
use flights::Flights;
use state::{Sink, State};

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
/// A result: task id (8 bytes), record (4), status (1), the handler's run
/// time in nanoseconds (4, saturated; the parent sizes packs from it), then
/// the payload.
pub(crate) const RESULT_HEADER: usize = 17;
/// Room for an error message in a result, at least.
const MIN_MESSAGE_ROOM: usize = 243;
/// How long a blocking wait of the parent goes before it checks workers.
const LIVENESS: Duration = Duration::from_millis(100);
/// How often the parent looks for dead workers while busy.
const CHECK_EVERY: Duration = Duration::from_millis(10);
/// Tasks the parent gathers before it sends (while workers are busy).
const SEND_BATCH: usize = 256;
/// Most packs the parent sends at once, and takes at once.
const SEND_PACKS: usize = 64;
const RECV_BATCH: usize = 64;
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
    /// Given up by a remote worker: the payload is the deaths counted.
    pub(crate) const KILLED: u8 = 6;
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
            .create(&spec(
                Purpose::Tasks,
                pack::channel_payload(pack::TASK_PACK_BYTES, cfg.max_task),
            ))
            .map_err(PoolError::Backend)?;
        let results = backend
            .create(&spec(
                Purpose::Results,
                pack::channel_payload(pack::RESULT_PACK_BYTES, cfg.shared.max_result),
            ))
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
                run_time: pack::RunTime::default(),
                max_pack: cfg.shared.worker_batch,
                pack_buf: Vec::new(),
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
                self.st.on_results(g.data());
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
