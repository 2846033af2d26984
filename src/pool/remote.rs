//! The worker side of a pool joined from another machine:
//! [`Builder::serve`](super::Builder::serve).
//!
//! A local worker is a child of the parent: it finds its channels and its
//! slot on the board in its environment, and watches the parent's pid. A
//! remote worker has none of these. It finds the pool's current run
//! through the backend ([`RemoteBackend::find_run`]), opens its two
//! channels, and serves it:
//!
//! - **held until finished**: it holds every task's guard until the
//!   task's result has been sent (there is no board on which the parent
//!   could take over a task); a worker that dies holding guards has those
//!   tasks delivered again by the channel (Redis: `XAUTOCLAIM` once the
//!   dead consumer's entries are idle past the claim time);
//! - **results once**: a task run twice (its first worker died after
//!   sending the result, before letting go) answers twice; the parent
//!   keeps the first and drops the second, by task id;
//! - **poison**: a redelivered task runs in a batch of its own, after the
//!   results of the tasks before it were sent and let go, and each such
//!   start is counted by the backend ([`RemoteBackend::count_attempt`]);
//!   the start that finds `max_attempts` earlier ones does not run the
//!   task and answers [`TaskError::Killed`](super::TaskError::Killed);
//! - **life**: it waits for a run to appear; it serves it until the run
//!   ends (the parent removed the channels at shutdown or drop, or it died
//!   and its lease ran out) and then returns; a poison pill (sent by
//!   `shutdown` for the local workers, after every task is answered) is
//!   put back for them, and the worker stops taking tasks and waits for
//!   the run's end. Every wait is asleep in the channel or in `sleep`,
//!   never longer than [`CHECK`] without looking at the run.

use std::time::{Duration, Instant};

use super::backend::RemoteBackend;
use super::builder::Config;
use super::wire::{Codec, Wire};
use super::worker::{begin_result, end_result, push_status, run_one, send_results, task_id};
use super::{pack, status, PoolError, RESULT_HEADER, TASK_HEADER};
use crate::{
    BackendError, Channel, Message, Received, RecvTimeoutError, Request, TryRecvError, TrySendError,
};

/// How often a waiting worker looks for a run, and a serving one checks
/// that its run goes on.
const CHECK: Duration = Duration::from_millis(250);
/// Longest blocking receive between checks.
const LIVENESS: Duration = Duration::from_millis(100);
/// A batch aims at about this much work (as for local workers).
const BATCH_BUDGET: Duration = Duration::from_micros(50);

/// What one [`Builder::serve`](super::Builder::serve) did, returned when
/// the run it served ended.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Served {
    /// Tasks whose result this worker sent (including failed and
    /// panicked ones).
    pub tasks: u64,
    /// Redelivered tasks it answered [`TaskError::Killed`](super::TaskError::Killed)
    /// without running them.
    pub given_up: u64,
    /// Tasks it found had been delivered before (to a worker that died).
    pub redelivered: u64,
}

/// Why the serving of a run stopped.
enum Stop {
    /// The run ended (channels gone, or no longer the pool's run).
    Ended,
    Error(PoolError),
}

impl From<PoolError> for Stop {
    fn from(e: PoolError) -> Stop {
        Stop::Error(e)
    }
}

/// Waits for the pool's run, serves it until it ends, and returns what it
/// did. Errors: the backend's (unreachable server, wrong credentials, a
/// channel of another shape), never a run that ends.
pub(crate) fn serve<B, C, In, Out, E, F>(
    backend: &B,
    cfg: &Config,
    max_attempts: u32,
    mut handler: F,
) -> Result<Served, PoolError>
where
    B: RemoteBackend,
    C: Codec,
    In: Wire<C>,
    Out: Wire<C>,
    E: std::fmt::Display,
    F: FnMut(In) -> Result<Out, E>,
{
    let mut served = Served::default();
    loop {
        let run = loop {
            match backend.find_run().map_err(PoolError::Backend)? {
                Some(run) => break run,
                None => std::thread::sleep(CHECK),
            }
        };
        let opened = backend
            .open(&run[0])
            .and_then(|t| Ok((t, backend.open(&run[1])?)));
        let (tasks, results) = match opened {
            Ok(c) => c,
            // Its parent is removing it (or has not made both channels
            // yet): look again.
            Err(e) if backend.is_gone(&e) => {
                std::thread::sleep(CHECK);
                continue;
            }
            Err(e) => return Err(PoolError::Backend(e)),
        };
        let mut w = Serving {
            backend,
            run: &run,
            tasks: &tasks,
            results: &results,
            max_result: cfg.max_result,
            max_batch: cfg.worker_batch.max(1),
            max_attempts,
            next_check: Instant::now() + CHECK,
            busy: Duration::ZERO,
            out: Vec::new(),
            spans: Vec::new(),
            served: &mut served,
        };
        return match w.serve::<C, In, Out, E, F>(&mut handler) {
            Stop::Ended => Ok(served),
            Stop::Error(e) => Err(e),
        };
    }
}

struct Serving<'a, B: RemoteBackend> {
    backend: &'a B,
    run: &'a [String; 2],
    tasks: &'a B::Channel,
    results: &'a B::Channel,
    max_result: usize,
    max_batch: usize,
    max_attempts: u32,
    next_check: Instant,
    /// Time spent in the handler in this batch (what sizes the next).
    busy: Duration,
    out: Vec<u8>,
    spans: Vec<(usize, usize)>,
    served: &'a mut Served,
}

type Guard<'a, B> = <<B as super::Backend>::Channel as Channel>::Guard<'a>;

impl<'a, B: RemoteBackend> Serving<'a, B> {
    /// True while the run we serve is the pool's run.
    fn run_goes_on(&self) -> Result<bool, PoolError> {
        let now = self.backend.find_run().map_err(PoolError::Backend)?;
        Ok(now.as_ref() == Some(self.run))
    }

    /// What a channel error means: the run's end, or an error.
    fn ended_or(&self, e: BackendError, wrap: impl FnOnce(BackendError) -> PoolError) -> Stop {
        if self.backend.is_gone(&e) {
            return Stop::Ended;
        }
        match self.run_goes_on() {
            Ok(false) => Stop::Ended,
            Ok(true) => Stop::Error(wrap(e)),
            Err(e2) => Stop::Error(e2),
        }
    }

    fn check_now(&mut self) -> Result<(), Stop> {
        if Instant::now() >= self.next_check {
            self.next_check = Instant::now() + CHECK;
            if !self.run_goes_on()? {
                return Err(Stop::Ended);
            }
        }
        Ok(())
    }

    fn serve<C, In, Out, E, F>(&mut self, handler: &mut F) -> Stop
    where
        C: Codec,
        In: Wire<C>,
        Out: Wire<C>,
        E: std::fmt::Display,
        F: FnMut(In) -> Result<Out, E>,
    {
        let mut batch = 1usize;
        loop {
            if let Err(stop) = self.check_now() {
                return stop;
            }
            let tasks = self.tasks;
            let first = match tasks.recv_ref_timeout(LIVENESS) {
                Ok(g) => g,
                Err(RecvTimeoutError::Timeout) => continue,
                Err(RecvTimeoutError::Backend(e)) => {
                    return self.ended_or(e, |e| PoolError::Recv(RecvTimeoutError::Backend(e)))
                }
                Err(e) => return Stop::Error(PoolError::Recv(e)),
            };
            // Messages the parent packed carry a batch already; take more
            // only while it sends tasks one by one (they are slow, or the
            // parent has not seen them run yet).
            let packed = pack::Items::new(first.data()).nth(1).is_some();
            let mut held: Vec<Guard<'_, B>> = vec![first];
            if batch > 1 && !packed {
                match self.backend.take_more(tasks, batch - 1, &mut held) {
                    Ok(()) => {}
                    Err(TryRecvError::Backend(e)) => {
                        return self.ended_or(e, |e| PoolError::TryRecv(TryRecvError::Backend(e)))
                    }
                    Err(e) => return Stop::Error(PoolError::TryRecv(e)),
                }
            }
            self.busy = Duration::ZERO;
            let ran = self.served.tasks;
            match self.run_batch::<C, In, Out, E, F>(handler, held) {
                Ok(true) => {}
                Ok(false) => return self.wait_for_end(),
                Err(stop) => return stop,
            }
            // Grow the batch while tasks are cheap; shrink it to the
            // budget when they are not.
            let n = (self.served.tasks - ran).max(1) as u32;
            let per_task = self.busy / n;
            batch = if per_task * (2 * batch as u32) <= BATCH_BUDGET {
                (batch * 2).min(self.max_batch)
            } else {
                (BATCH_BUDGET.as_nanos() / per_task.as_nanos().max(1))
                    .clamp(1, self.max_batch as u128) as usize
            };
        }
    }

    /// Runs the tasks of `held` in order, sending results and letting go
    /// of guards group by group: a redelivered task runs alone. False if a
    /// poison pill came (put back for the local workers).
    fn run_batch<C, In, Out, E, F>(
        &mut self,
        handler: &mut F,
        held: Vec<Guard<'_, B>>,
    ) -> Result<bool, Stop>
    where
        C: Codec,
        In: Wire<C>,
        Out: Wire<C>,
        E: std::fmt::Display,
        F: FnMut(In) -> Result<Out, E>,
    {
        self.out.clear();
        self.spans.clear();
        let mut group: Vec<Guard<'_, B>> = Vec::new();
        let mut more = true;
        for g in held {
            if g.header().request == Request::DIE {
                // For a local worker: put it back (every one taken), then
                // stop taking tasks (every task was answered before the
                // pills went out). A failure to put it back: the run is
                // ending anyway, and `shutdown` sends pills again every
                // 100 ms while local workers live.
                let _ = self.tasks.try_send(Message::signal(Request::DIE));
                drop(g);
                more = false;
                continue;
            }
            if !more {
                // After a pill: nothing but copies of answered tasks; let
                // them go as read.
                drop(g);
                continue;
            }
            if g.header().request != Request::DO {
                continue; // not ours: dropped, i.e. let go as read
            }
            if !self.backend.redelivered(&g) {
                for item in pack::Items::new(g.data()) {
                    if let Some((id, rec)) = task_id(item) {
                        self.run_task::<C, In, Out, E, F>(handler, id, rec, &item[TASK_HEADER..]);
                    }
                }
                group.push(g);
                continue;
            }
            // Redelivered: what ran before it is answered first, and its
            // tasks one by one, each answered before the next starts, so
            // that if one kills us, only it is charged (one answered
            // already is answered again next time, and that second
            // answer dropped by the parent).
            self.served.redelivered += 1;
            self.flush(&mut group)?;
            let data = g.data().to_vec();
            for item in pack::Items::new(&data) {
                let Some((id, rec)) = task_id(item) else {
                    continue;
                };
                let attempts = self
                    .backend
                    .count_attempt(self.run, id)
                    .map_err(|e| self.ended_or(e, PoolError::Backend))?;
                if attempts > self.max_attempts {
                    let (start, body) = begin_result(&mut self.out, id, rec);
                    debug_assert_eq!(self.out.len(), body + RESULT_HEADER);
                    let text = (attempts - 1).to_string();
                    push_status(&mut self.out, body, status::KILLED, &text, self.max_result);
                    let span = end_result(&mut self.out, start, body);
                    self.spans.push(span);
                    self.served.given_up += 1;
                } else {
                    self.run_task::<C, In, Out, E, F>(handler, id, rec, &item[TASK_HEADER..]);
                }
                self.send_now()?;
            }
            group.push(g);
            self.flush(&mut group)?;
        }
        self.flush(&mut group)?;
        Ok(more)
    }

    /// Runs one task, its result added to those gathered.
    fn run_task<C, In, Out, E, F>(&mut self, handler: &mut F, id: u64, rec: [u8; 4], data: &[u8])
    where
        C: Codec,
        In: Wire<C>,
        Out: Wire<C>,
        E: std::fmt::Display,
        F: FnMut(In) -> Result<Out, E>,
    {
        let t = Instant::now();
        let span =
            run_one::<C, In, Out, E, F>(handler, id, rec, data, &mut self.out, self.max_result);
        self.busy += t.elapsed();
        self.spans.push(span);
        self.served.tasks += 1;
    }

    /// Sends the results gathered and then lets go of their tasks.
    fn flush(&mut self, group: &mut Vec<Guard<'_, B>>) -> Result<(), Stop> {
        self.send_now()?;
        // Only now are the tasks finished: let go of them (acknowledged).
        // One taken over by another worker meanwhile (we were slower than
        // the claim time) runs again there; the parent keeps one result.
        self.backend.finish_all(std::mem::take(group));
        Ok(())
    }

    /// Sends the results gathered.
    fn send_now(&mut self) -> Result<(), Stop> {
        if !self.spans.is_empty() {
            let backend = self.backend;
            let run = self.run;
            // While waiting for room: is the run still there?
            let sent = send_results(self.results, &self.out, &self.spans, || {
                backend.find_run().ok().flatten().as_ref() == Some(run)
            });
            match sent {
                Ok(true) => {}
                Ok(false) => return Err(Stop::Ended),
                Err(TrySendError::Backend((), e)) => {
                    return Err(self.ended_or(e, |e| PoolError::Send(TrySendError::Backend((), e))))
                }
                Err(e) => return Err(Stop::Error(PoolError::Send(e))),
            }
        }
        self.out.clear();
        self.spans.clear();
        Ok(())
    }

    /// After a poison pill: the run is shutting down; wait (asleep) until
    /// it has ended.
    fn wait_for_end(&mut self) -> Stop {
        loop {
            match self.run_goes_on() {
                Ok(true) => std::thread::sleep(CHECK),
                Ok(false) => return Stop::Ended,
                Err(e) => return Stop::Error(e),
            }
        }
    }
}
