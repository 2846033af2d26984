//! Compaction: a sender that finds the ring full because receivers took
//! messages out of order moves the oldest waiting message forward over the
//! read slots behind it, so a message nobody takes cannot block the ring.

use super::*;

impl Ring<'_> {
    /// Starts to unblock a ring that is full because receivers took
    /// messages out of order (a selective receive passed over older ones):
    /// the slots they read cannot be reused until `head` passes them, and
    /// `head` waits at the oldest unread message.
    ///
    /// Finds the oldest waiting message `from` with a run of read (TAKEN)
    /// slots right behind it ending at `to`, holds it (PUBLISHED -> HELD)
    /// and claims `to` (TAKEN -> MOVING). The caller copies the message from
    /// `from`'s slot to `to`'s and calls [`finish_move`](Self::finish_move).
    /// Each move carries a read slot one message closer to `head`; once the
    /// oldest message has moved, `head` frees the slots behind it.
    ///
    /// Order is kept: every ticket between `from` and `to` was already
    /// read, so the message keeps its place among the messages waiting.
    pub fn begin_move(&self) -> Option<(u64, u64)> {
        let cap = self.capacity();
        let h = self.head.load(Ordering::Relaxed);
        // `tail <= head + capacity`, so equality is exact: full.
        if h & FLAGS != 0 || self.tail.load(Ordering::Relaxed) != h + cap {
            return None;
        }
        let end = h + cap;
        let mut from = h;
        while from + 1 < end {
            // Acquire: pairs with the publish; we copy what it wrote.
            if self.slot(from).seq.load(Ordering::Acquire) != from + 1 {
                from += 1;
                continue;
            }
            // The run of read slots behind it. None of them can be freed
            // meanwhile: `head` cannot pass the unread message at `from`.
            let mut to = from;
            while to + 1 < end && self.slot(to + 1).seq.load(Ordering::Acquire) == (to + 2) | TAKEN
            {
                to += 1;
            }
            if to == from {
                from += 1;
                continue;
            }
            let (source, target) = (self.slot(from), self.slot(to));
            let taken = (to + 1) | TAKEN;
            if target
                .seq
                .compare_exchange(taken, taken | HELD, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return None; // another move took it
            }
            if source
                .seq
                .compare_exchange(
                    from + 1,
                    (from + 1) | HELD,
                    Ordering::Acquire,
                    Ordering::Relaxed,
                )
                .is_err()
            {
                // A receiver took it after all: give the target back as it
                // was. `head` may have reached it meanwhile (the receiver's
                // release advances over the run).
                let _ = self.mark_taken(to, taken | HELD);
                return None;
            }
            return Some((from, to));
        }
        None
    }

    /// Ends a move begun by [`begin_move`](Self::begin_move), after the
    /// message was copied from `from`'s slot to `to`'s: publishes it at
    /// `to`, marks `from` read, and advances `head` if it waited there.
    pub fn finish_move(&self, from: u64, to: u64) {
        // SYNC POINT. Release: pairs with the receivers' Acquire load, as a
        // publish does.
        let _ = self.slot(to).seq.compare_exchange(
            (to + 1) | TAKEN | HELD,
            to + 1,
            Ordering::Release,
            Ordering::Relaxed,
        );
        let _ = self.mark_taken(from, (from + 1) | HELD);
    }
}
