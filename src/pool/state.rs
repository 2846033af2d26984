//! The parent's bookkeeping: tasks in flight, results waiting, the
//! running map's sink.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::Instant;

use super::flights::Flights;
use super::{pack, status, Codec, Completed, Counters, TaskError, Wire, RESULT_HEADER, SEND_BATCH};

/// Where the results of the running map go.
pub(super) enum Sink<Out> {
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
pub(super) struct State<Out, C: Codec> {
    pub(super) flights: Flights,
    pub(super) ready: VecDeque<Completed<Out>>,
    /// Tasks of `submit` whose result is not in `ready` yet.
    pub(super) pending_submits: usize,
    pub(super) sink: Sink<Out>,
    pub(super) next_tag: u32,
    pub(super) next_id: u64,
    pub(super) window: usize,
    pub(super) max_task: usize,
    pub(super) max_result: usize,
    pub(super) workers: usize,
    pub(super) counters: Counters,
    pub(super) ticks: u32,
    pub(super) next_check: Instant,
    /// The handlers' run time, from the results (see [`pack::pack_size`]).
    pub(super) run_time: pack::RunTime,
    /// [`Builder::worker_batch`](super::Builder::worker_batch).
    pub(super) max_pack: usize,
    /// The buffer packs of tasks are made in, reused.
    pub(super) pack_buf: Vec<u8>,
    pub(super) codec: PhantomData<C>,
}

impl<Out: Wire<C>, C: Codec> State<Out, C> {
    /// How much room the window must have before it is topped up: tasks
    /// then go out in batches, and a sleeping worker is woken once per
    /// batch, not once per task.
    pub(super) fn chunk(&self) -> usize {
        (self.window / 4).clamp(1, SEND_BATCH)
    }

    /// Tasks to pack into one message now: as many as keeps a pack's work
    /// short, and no more than spreads what waits over every worker.
    pub(super) fn tasks_per_pack(&self) -> usize {
        pack::pack_size(self.run_time.get())
            .min(self.max_pack)
            .min(self.flights.unsent().div_ceil(self.workers.max(1)))
            .max(1)
    }

    /// Encodes a task and queues it to be sent; its id.
    pub(super) fn enqueue<In: Wire<C>>(&mut self, input: &In, tag: u32) -> Result<u64, TaskError> {
        let id = self.next_id;
        self.flights.put(id, tag, input, self.max_task)?;
        self.next_id += 1;
        Counters::add(&self.counters.0.submitted, 1);
        Ok(id)
    }

    /// A message of results arrived (a pack, see [`pack`]); how many it
    /// held.
    pub(super) fn on_results(&mut self, pack: &[u8]) -> usize {
        let mut n = 0;
        for item in pack::Items::new(pack) {
            self.on_result(item);
            n += 1;
        }
        n
    }

    /// A result arrived.
    fn on_result(&mut self, data: &[u8]) {
        if data.len() < RESULT_HEADER {
            return; // not ours
        }
        let id = u64::from_le_bytes(data[..8].try_into().expect("8 bytes"));
        let idx = u32::from_le_bytes(data[8..12].try_into().expect("4 bytes"));
        self.run_time.add(u32::from_le_bytes(
            data[13..17].try_into().expect("4 bytes"),
        ));
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
            status::KILLED => Err(TaskError::Killed {
                attempts: text().parse().unwrap_or(0),
                last_exit: "a remote worker running it was lost".into(),
            }),
            _ => Err(TaskError::BadOutput { message: text() }),
        };
        self.deliver(id, tag, result);
    }

    pub(super) fn deliver(&mut self, id: u64, tag: u32, result: Result<Out, TaskError>) {
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
