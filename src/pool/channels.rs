//! The parent's side of the worker processes and their channels:
//! spawning, reaping and replacing workers, sending tasks, taking results.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::board::Board;
use super::builder::Config;
use super::state::State;
use super::{
    pack, BATCH_VAR, MAX_RESULT_VAR, RECV_BATCH, ROLE_PREFIX, SEND_PACKS, SLOT_VAR,
    STARTUP_FAILURES, STARTUP_KILLS,
};
use super::{Backend, Codec, Counters, PoolError, TaskError, Wire};
use crate::process::{Child, ChildProcess, SpawnError};
use crate::{Channel, Message, Request, TryRecvError};

/// The parent's side of the processes and channels.
pub(super) struct Channels<B: Backend> {
    pub(super) name: String,
    pub(super) backend: Arc<B>,
    pub(super) tasks: B::Channel,
    pub(super) results: B::Channel,
    pub(super) names: [String; 2],
    pub(super) board: Board,
    pub(super) board_name: String,
    pub(super) workers: Vec<WorkerSlot>,
    pub(super) args: Option<Vec<OsString>>,
    pub(super) program: Option<PathBuf>,
    pub(super) shared: Config,
    pub(super) quiet: bool,
    /// Pills sent: workers that exit now are not replaced.
    pub(super) closing: bool,
    pub(super) max_attempts: u32,
    pub(super) torn_down: bool,
}

pub(super) struct WorkerSlot {
    pub(super) child: Option<ChildProcess>,
    /// Exits and kills in a row of workers of this slot before ready.
    pub(super) startup_failures: u32,
    pub(super) startup_kills: u32,
}

impl<B: Backend> Channels<B> {
    pub(super) fn spawn(&self, slot: usize) -> Result<ChildProcess, SpawnError> {
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

    pub(super) fn wait_ready(&mut self, timeout: Duration) -> Result<(), PoolError> {
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

    /// Sends the outbox's tasks, packed (see [`pack`](super::pack)), a
    /// batch of packs at a time, as long as the channel takes them. True
    /// if any went.
    pub(super) fn flush<Out: Wire<C>, C: Codec>(
        &self,
        st: &mut State<Out, C>,
    ) -> Result<bool, PoolError> {
        let per_pack = st.tasks_per_pack();
        let mut buf = std::mem::take(&mut st.pack_buf);
        let fl = &mut st.flights;
        let mut moved = false;
        // Each pack's bytes in `buf`, and the outbox position of its last
        // task.
        let mut packs: Vec<(usize, usize, usize)> = Vec::new();
        while !fl.outbox.is_empty() {
            buf.clear();
            packs.clear();
            // The pack being filled: where it starts, its tasks, the
            // outbox position of its last.
            let mut cur: Option<(usize, usize, usize)> = None;
            for (pos, &(idx, id)) in fl.outbox.iter().enumerate() {
                let r = &fl.recs[idx as usize];
                if !(r.live && r.id == id) {
                    continue; // answered meanwhile
                }
                let item = r.message.as_slice();
                if let Some((start, n, last)) = cur {
                    let room = pack::TASK_PACK_BYTES.saturating_sub(buf.len() - start);
                    if n == per_pack || pack::LEN + item.len() > room {
                        packs.push((start, buf.len(), last));
                        cur = None;
                        if packs.len() == SEND_PACKS {
                            break;
                        }
                    }
                }
                let (start, n) = cur.map_or((buf.len(), 0), |(s, n, _)| (s, n));
                pack::push(&mut buf, item);
                cur = Some((start, n + 1, pos));
            }
            if let Some((start, _, last)) = cur {
                packs.push((start, buf.len(), last));
            }
            if packs.is_empty() {
                fl.outbox.clear(); // every one answered meanwhile
                break;
            }
            let msgs: Vec<Message<&[u8]>> = packs
                .iter()
                .map(|&(a, b, _)| Message::new(Request::DO, &buf[a..b]))
                .collect();
            let k = match self.tasks.try_send_batch(&msgs) {
                Ok(k) => k,
                Err(e) if e.is_full() => 0,
                Err(e) => {
                    st.pack_buf = buf;
                    return Err(PoolError::Send(e));
                }
            };
            if k == 0 {
                break;
            }
            // The first k went, and the answered ones among them.
            fl.outbox.drain(..=packs[k - 1].2);
            moved = true;
        }
        st.pack_buf = buf;
        Ok(moved)
    }

    /// Takes up to about `max` results that are there (whole packs);
    /// how many.
    pub(super) fn drain<Out: Wire<C>, C: Codec>(
        &self,
        st: &mut State<Out, C>,
        max: usize,
    ) -> Result<usize, PoolError> {
        let mut n = 0;
        while n < max {
            let mut got = 0;
            let k = match self
                .results
                .try_recv_batch(RECV_BATCH, |_, d| got += st.on_results(d))
            {
                Ok(k) => k,
                Err(TryRecvError::Empty) => 0,
                Err(e) => return Err(PoolError::TryRecv(e)),
            };
            n += got;
            if k < RECV_BATCH {
                break;
            }
        }
        Ok(n)
    }

    /// Reaps the workers that died, settles the tasks they held, and
    /// starts replacements.
    pub(super) fn check_workers<Out: Wire<C>, C: Codec>(
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
    pub(super) fn teardown(&mut self) {
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
