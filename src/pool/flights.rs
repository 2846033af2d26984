//! The tasks in flight, in reused records.

use std::collections::VecDeque;

use super::{Codec, TaskError, Wire, TASK_HEADER};

/// A task in flight, in its record of [`Flights`].
pub(super) struct Record {
    pub(super) id: u64,
    /// 0: submitted with `submit`; otherwise the generation of the map it
    /// belongs to.
    tag: u32,
    /// Deaths of workers running it.
    pub(super) deaths: u32,
    pub(super) live: bool,
    /// The task message (header and input), kept to send again if a
    /// worker dies after taking it. Reused by the record's next task.
    pub(super) message: Vec<u8>,
}

/// The tasks in flight, in reused records. A task's message names its
/// record and its result names it back, so that a result finds its task
/// without a lookup, and nothing is allocated per task once the window
/// has been filled once. A record is freed when its task is answered; a
/// result naming a freed or reused record (another id) is a duplicate.
#[derive(Default)]
pub(super) struct Flights {
    pub(super) recs: Vec<Record>,
    free: Vec<u32>,
    live: usize,
    /// Records to send, with the id they were queued for (skipped if that
    /// task was answered meanwhile).
    pub(super) outbox: VecDeque<(u32, u64)>,
}

impl Flights {
    pub(super) fn len(&self) -> usize {
        self.live
    }

    pub(super) fn unsent(&self) -> usize {
        self.outbox.len()
    }

    /// Takes a record for task `id` and writes its message; queued to send.
    pub(super) fn put<In: Wire<C>, C: Codec>(
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
    pub(super) fn get_mut(&mut self, idx: u32, id: u64) -> Option<&mut Record> {
        self.recs
            .get_mut(idx as usize)
            .filter(|r| r.live && r.id == id)
    }

    /// Frees the record of task `id` (record `idx`); its tag, or `None`
    /// if that task is not in flight (a duplicate result).
    pub(super) fn finish(&mut self, idx: u32, id: u64) -> Option<u32> {
        let r = self.get_mut(idx, id)?;
        r.live = false;
        let tag = r.tag;
        self.live -= 1;
        self.free.push(idx);
        Some(tag)
    }

    /// The record of task `id`, by search (after a worker's death only).
    pub(super) fn find(&self, id: u64) -> Option<u32> {
        self.recs
            .iter()
            .position(|r| r.live && r.id == id)
            .map(|i| i as u32)
    }

    /// Queues record `idx`'s task to be sent again.
    pub(super) fn resend(&mut self, idx: u32) {
        let id = self.recs[idx as usize].id;
        self.outbox.push_back((idx, id));
    }
}
