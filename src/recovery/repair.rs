//! The repairs, each under the control lock and recorded in the journal:
//! fence a stuck claim, lift orphaned quarantines, offer a dead receiver's
//! message again, undo a dead mover's target, pass a stuck skip ticket,
//! free a slot a receiver died freeing.

use super::journal::Repair;
use super::*;
use crate::fault;

impl Recovery<'_> {
    /// Fences the unpublished claim on `t`. With `dead` (holder known
    /// dead), the slot is released at once; otherwise it stays withheld if
    /// the holder turns out to be alive.
    pub(super) fn fence(&self, t: u64, dead: bool) {
        self.record(Repair::Fence, t);
        let before = self.ring.slot(t).owner.load(Ordering::Relaxed);
        if self.ring.fence_claim(t).is_err() {
            self.clear_record();
            return; // published or given up meanwhile
        }
        fault::point("in-repair");
        // Withheld unless its holder is known dead: a live one may still
        // write into the slot, and lifts the quarantine itself when its
        // publish fails.
        let keep = !dead && self.sender(t) != Holder::Dead;
        let stats = self.stats();
        stats.skipped_claims.fetch_add(1, Ordering::Relaxed);
        // The ticket carries no message; its holder, if alive, will not
        // count it (its publish or abandon fails).
        ticket_done(self.seg);
        if keep {
            // Not signed yet: leave the fenced ticket in the owner word for
            // the lift pass (the holder's signature, if it comes, replaces
            // it, and names who will lift).
            let slot = self.ring.slot(t);
            if named(before, &[Role::Send], t).is_none() {
                let _ = slot.owner.compare_exchange(
                    before,
                    FENCED_MARK | (t & 0xFFFF_FFFF),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            stats.fenced_live.fetch_add(1, Ordering::Relaxed);
            stats.withheld.fetch_add(1, Ordering::Relaxed);
        } else {
            self.ring.lift_quarantine(t, || true);
        }
        self.clear_record();
    }

    /// Lifts the quarantine of every withheld slot whose holder is gone
    /// (caller holds the control lock).
    pub(super) fn lift_orphaned_quarantines(&self) {
        for i in 0..self.ring_capacity() {
            let slot = &self.seg.slots()[i as usize];
            if slot.seq.load(Ordering::Acquire) & QUARANTINED == 0 {
                continue;
            }
            // The owner word of a withheld slot is its fenced holder's, or
            // the fenced ticket if it had not signed (nobody claims the
            // slot while it is withheld).
            let word = slot.owner.load(Ordering::Relaxed);
            let alive = if word >> 32 == FENCED_MARK >> 32 {
                self.announced(word as u32) == Holder::Alive
            } else {
                parse(word).is_some_and(|(e, g, role, _)| {
                    role == Role::Send as u64 && self.entry_alive(e, g)
                })
            };
            if !alive && self.ring.lift_quarantine(i, || true) {
                note_lifted(self.seg);
            }
        }
    }

    pub(super) fn redeliver(&self, t: u64, holder_entry: Option<usize>) -> bool {
        self.record(Repair::Redeliver, t);
        let ok = self.ring.redeliver(t).is_ok();
        if ok {
            if let Some(i) = holder_entry {
                let _ = self.seg.handle_entry(i).outstanding.fetch_update(
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                    |n| n.checked_sub(1),
                );
            }
            self.stats().redelivered.fetch_add(1, Ordering::Relaxed);
        }
        self.clear_record();
        ok
    }

    pub(super) fn undo_move(&self, to: u64) -> bool {
        self.record(Repair::UndoMove, to);
        let ok = self.ring.undo_move_target(to).is_ok();
        if ok {
            self.stats().undone_moves.fetch_add(1, Ordering::Relaxed);
        }
        self.clear_record();
        ok
    }

    pub(super) fn pass_skip(&self, t: u64) -> bool {
        self.record(Repair::Skip, t);
        let ok = self.ring.fence_skip(t).is_ok();
        if ok {
            ticket_done(self.seg);
        }
        self.clear_record();
        ok
    }

    /// Frees the slot of ticket `t`, held behind `head` by a receiver that
    /// died, with the rest of its run held there (caller holds the control
    /// lock). A CAS per slot: nothing to hand over.
    pub(super) fn finish_release(&self, t: u64) -> bool {
        let word = |u: u64| self.ring.slot(u).owner.load(Ordering::Relaxed);
        let holder = named(word(t), &[Role::Recv], t);
        let same = |u: u64| holder.is_some() && named(word(u), &[Role::Recv], u) == holder;
        let freed = self.ring.finish_release(t, same);
        let ok = freed.is_ok();
        if let Ok(n) = freed {
            self.stats()
                .finished_releases
                .fetch_add(n, Ordering::Relaxed);
            self.seg.not_full().notify(Wake::All);
        }
        ok
    }
}
