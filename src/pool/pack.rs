//! Packs: several tasks (or results) in one channel message.
//!
//! Every message on a pool's channels is a pack: one or more items, each
//! its length (`u32`, little-endian) and that many bytes. A task item is
//! the task's id, the parent's record of it and its input
//! ([`TASK_HEADER`](super::TASK_HEADER) + input); a result item is the id,
//! the record, a status byte, the handler's run time and the output
//! ([`RESULT_HEADER`](super::RESULT_HEADER) + output).
//!
//! Why: a message costs a claim, a publication and, now and then, a
//! wake-up, on both sides, and on a queue with several receivers (the
//! workers) each claim also steps over the slots the others hold or have
//! just read. Short tasks packed a dozen to a message share all of that;
//! the parent packs only as many as keeps a pack's work short (see
//! [`pack_size`], from the run times the workers report with each result),
//! so that no worker takes more than its share of long tasks.

use std::time::Duration;

/// Bytes of an item's length prefix.
pub(crate) const LEN: usize = 4;
/// A pack of tasks fills at most this many bytes, unless one task alone
/// is bigger (it then travels alone).
pub(crate) const TASK_PACK_BYTES: usize = 1024;
/// The same for results.
pub(crate) const RESULT_PACK_BYTES: usize = 1024;
/// Most tasks in one pack (the board announces as many per worker).
pub(crate) const MAX_PACK: usize = super::board::MAX_HELD;
/// About how much work a pack may carry: tasks are packed only while a
/// pack of them runs in about this long.
const PACK_BUDGET: Duration = Duration::from_micros(20);

/// The payload size a channel needs for packs of at most `room` bytes and
/// items of at most `max_item` bytes.
pub(crate) fn channel_payload(room: usize, max_item: usize) -> usize {
    room.max(LEN + max_item)
}

/// Appends `item` to `buf`.
#[inline]
pub(crate) fn push(buf: &mut Vec<u8>, item: &[u8]) {
    buf.extend_from_slice(&(item.len() as u32).to_le_bytes());
    buf.extend_from_slice(item);
}

/// The items of a pack, in order. A malformed rest (a length past the
/// end: only a scribbled message has one) ends the iteration and sets
/// [`malformed`](Items::malformed).
pub(crate) struct Items<'a> {
    rest: &'a [u8],
    malformed: bool,
}

impl<'a> Items<'a> {
    pub(crate) fn new(pack: &'a [u8]) -> Items<'a> {
        Items {
            rest: pack,
            malformed: false,
        }
    }

    /// True once the iteration stopped at bytes that are not an item.
    pub(crate) fn malformed(&self) -> bool {
        self.malformed
    }
}

impl<'a> Iterator for Items<'a> {
    type Item = &'a [u8];

    #[inline]
    fn next(&mut self) -> Option<&'a [u8]> {
        if self.rest.is_empty() {
            return None;
        }
        let Some((len, body)) = self.rest.split_first_chunk::<LEN>() else {
            self.malformed = true;
            self.rest = &[];
            return None;
        };
        let len = u32::from_le_bytes(*len) as usize;
        if len > body.len() {
            self.malformed = true;
            self.rest = &[];
            return None;
        }
        let (item, rest) = body.split_at(len);
        self.rest = rest;
        Some(item)
    }
}

/// How many tasks the parent packs together when a task runs for about
/// `task_ns` nanoseconds: packs carry about [`PACK_BUDGET`] of work, 1 to
/// [`MAX_PACK`] tasks.
pub(crate) fn pack_size(task_ns: u64) -> usize {
    (PACK_BUDGET.as_nanos() as u64 / task_ns.max(1)).clamp(1, MAX_PACK as u64) as usize
}

/// The run time the parent goes by: an average over the last few dozen
/// results, each weighing 1/16, starting from [`PACK_BUDGET`] (one task to
/// a pack until the first results say otherwise).
#[derive(Clone, Copy, Debug)]
pub(crate) struct RunTime {
    /// 16 × the average, in nanoseconds.
    sum16: u64,
}

impl Default for RunTime {
    fn default() -> RunTime {
        RunTime {
            sum16: 16 * PACK_BUDGET.as_nanos() as u64,
        }
    }
}

impl RunTime {
    /// One more result's run time.
    #[inline]
    pub(crate) fn add(&mut self, ns: u32) {
        self.sum16 = self.sum16 - self.sum16 / 16 + u64::from(ns);
    }

    /// The average now, in nanoseconds.
    pub(crate) fn get(&self) -> u64 {
        self.sum16 / 16
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_round_trip_in_order() {
        let mut buf = Vec::new();
        push(&mut buf, b"one");
        push(&mut buf, b"");
        push(&mut buf, b"three");
        let mut items = Items::new(&buf);
        assert_eq!(
            items.by_ref().collect::<Vec<_>>(),
            [&b"one"[..], b"", b"three"]
        );
        assert!(!items.malformed());
    }

    #[test]
    fn a_length_past_the_end_stops_the_items() {
        let mut buf = Vec::new();
        push(&mut buf, b"ok");
        buf.extend_from_slice(&100u32.to_le_bytes());
        buf.extend_from_slice(b"short");
        let mut items = Items::new(&buf);
        assert_eq!(items.next(), Some(&b"ok"[..]));
        assert_eq!(items.next(), None);
        assert!(items.malformed());
        // A torn length prefix too.
        let mut items = Items::new(&[1, 0]);
        assert_eq!(items.next(), None);
        assert!(items.malformed());
    }

    #[test]
    fn pack_size_follows_the_time_a_task_takes() {
        assert_eq!(pack_size(50), MAX_PACK);
        assert_eq!(pack_size(2_000), 10);
        assert_eq!(pack_size(4_000_000), 1);
        assert_eq!(pack_size(0), MAX_PACK);
    }

    #[test]
    fn run_time_moves_to_what_the_results_say() {
        let mut t = RunTime::default();
        assert_eq!(pack_size(t.get()), 1, "one to a pack at first");
        for _ in 0..200 {
            t.add(100);
        }
        assert!(t.get() < 200, "{}", t.get());
        // Tasks turning slow: a few results are enough to stop packing.
        for _ in 0..40 {
            t.add(1_000_000);
        }
        assert_eq!(pack_size(t.get()), 1);
    }
}
