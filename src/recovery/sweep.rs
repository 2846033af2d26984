//! Settling dead handles and sweeping the whole ring: what runs when a
//! handle's death is known (a new holder of its entry, a joiner, a
//! recoverer that took over a dead recoverer's lock, a stale segment's
//! reuse).

use super::*;
use crate::layout::{HandleEntry, HANDLE_FREE, MAX_HANDLES};

impl Recovery<'_> {
    /// Settles dead entry `i` (caller holds the control lock): offers again
    /// the messages it holds, counts what it received and never marked done
    /// as abandoned, frees the entry.
    pub(super) fn settle(&self, i: usize) {
        let entry: &HandleEntry = self.seg.handle_entry(i);
        if entry.state.load(Ordering::Acquire) != HANDLE_IN_USE || self.lock_held(i) {
            return;
        }
        let gen = entry.generation.load(Ordering::Relaxed) & GEN_MASK;
        // First the claims only its announcements name, while the entry
        // still reads as theirs (in use, lock not held): see `register`.
        self.settle_unsigned(i);
        // Killed between moving `head` past its slot and freeing it (see
        // `Ring::release`), it left the slot held behind `head`: that can
        // only be its last claim, which it announced.
        let last = entry.claiming.load(Ordering::Relaxed);
        if last < self.ring.head() && self.ring.seq(last) == (last + 1) | HELD {
            let word = self.ring.slot(last).owner.load(Ordering::Relaxed);
            if named(word, &[Role::Recv], last) == Some((i, gen)) {
                self.finish_release(last);
            }
        }
        let (head, end) = self.window(self.ring_capacity());
        for t in head..end {
            if self.ring.seq(t) != (t + 1) | HELD {
                continue;
            }
            let word = self.ring.slot(t).owner.load(Ordering::Relaxed);
            if named(word, &[Role::Recv, Role::Move], t) == Some((i, gen)) {
                let recv = named(word, &[Role::Recv], t).is_some();
                self.redeliver(t, recv.then_some(i));
            }
        }
        let n = entry.outstanding.swap(0, Ordering::AcqRel);
        if n > 0 {
            abandon_tasks(self.seg, n);
        }
        entry.state.store(HANDLE_FREE, Ordering::Release);
    }

    /// The claims of dead entry `i` that no owner word names yet, only its
    /// announcements (caller holds the control lock; the entry still reads
    /// in use): an unpublished ticket in its `sending_from..sending_to`
    /// that only dead handles announced is fenced and freed (a dead
    /// producer's, as the detector would after `DEAD_GRACE`); a message
    /// held at its `claiming` that no owner word names and only dead
    /// handles announced is offered again (it never counted it
    /// outstanding: it dies before that, after its owner word). A live
    /// handle whose announcement covers the same ticket (it may have won
    /// the race for it) keeps it: never recover on a guess.
    pub(super) fn settle_unsigned(&self, i: usize) {
        let entry = self.seg.handle_entry(i);
        let (head, end) = self.window(self.ring_capacity());
        let (from, to) = (
            entry.sending_from.load(Ordering::Relaxed),
            entry.sending_to.load(Ordering::Relaxed),
        );
        if to != 0 && from < to && to - from <= self.ring_capacity() {
            for t in from.max(head)..to.min(end) {
                if self.ring.seq(t) == t && self.sender(t) == Holder::Dead {
                    self.fence(t, true);
                }
            }
        }
        let c = entry.claiming.load(Ordering::Relaxed);
        if (head..end).contains(&c)
            && self.ring.seq(c) == (c + 1) | HELD
            && self.holder(c, &[Role::Recv, Role::Move]) == Holder::Unknown
            && self.claimants(c) == Holder::Dead
        {
            self.redeliver(c, None);
        }
    }

    /// Settles every entry whose handle died. Returns how many.
    pub(crate) fn settle_dead_handles(&self) -> usize {
        let dead: Vec<usize> = (0..MAX_HANDLES)
            .filter(|&i| {
                self.seg.handle_entry(i).state.load(Ordering::Acquire) == HANDLE_IN_USE
                    && !self.lock_held(i)
            })
            .collect();
        if dead.is_empty() {
            return 0;
        }
        let Some(_guard) = self.lock() else {
            return 0;
        };
        for &i in &dead {
            self.settle(i);
        }
        dead.len()
    }

    /// Repairs everything a dead holder (or a dead recoverer) can have
    /// left, over the whole ring (caller holds the control lock).
    pub(crate) fn sweep(&self) {
        let (head, end) = self.window(self.ring_capacity());
        for t in head..end {
            let v = self.ring.seq(t);
            if v == t {
                match self.sender(t) {
                    Holder::Alive => {}
                    h => self.fence(t, h == Holder::Dead),
                }
            } else if v == t | QUARANTINED {
                self.pass_skip(t);
            } else if v == (t + 1) | HELD {
                if self.receiver(t) != Holder::Alive {
                    self.redeliver(t, self.receiver_entry(t));
                }
            } else if v == (t + 1) | HELD | TAKEN && self.holder(t, &[Role::Move]) != Holder::Alive
            {
                self.undo_move(t);
            }
        }
        // Withheld slots, whatever lap they are at: lift the ones whose
        // holder is gone.
        self.lift_orphaned_quarantines();
        for i in 0..MAX_HANDLES {
            self.settle(i);
        }
    }
}
