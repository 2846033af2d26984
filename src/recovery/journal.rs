//! The repair journal: the record a recoverer writes before the first
//! step of a repair, and the completion of a dead recoverer's recorded
//! repair by the next holder of the control lock.

use super::*;

/// What a recoverer is in the middle of (the repair record's `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Repair {
    /// Fencing an unpublished claim.
    Fence = 1,
    /// Offering again a dead receiver's message.
    Redeliver = 2,
    /// Undoing a dead mover's target.
    UndoMove = 3,
    /// Passing a dead skip ticket.
    Skip = 4,
}

impl Recovery<'_> {
    pub(super) fn record(&self, kind: Repair, t: u64) {
        let r = &self.seg.control().repair.0;
        r.ticket.store(t, Ordering::Relaxed);
        r.kind.store(kind as u32, Ordering::Release);
    }

    pub(super) fn clear_record(&self) {
        self.seg.control().repair.0.kind.store(0, Ordering::Release);
    }

    /// Completes the repair a dead recoverer recorded.
    pub(super) fn finish_recorded_repair(&self) {
        let r = &self.seg.control().repair.0;
        let t = r.ticket.load(Ordering::Relaxed);
        let kind = r.kind.load(Ordering::Acquire);
        let stats = self.stats();
        // Each step is a CAS that fails if the dead recoverer already made
        // it; a counter is bumped when the step is ours (a recoverer that
        // died between its step and its count leaves that count out).
        if kind == Repair::Fence as u32 {
            // Fenced now, or by the dead recoverer: then the slot is still
            // withheld, whatever lap it is at, as only a sweep (the one
            // that follows) lifts that. Either way the claim was skipped.
            if self.ring.fence_claim(t).is_ok() || self.ring.seq(t) & QUARANTINED != 0 {
                stats.skipped_claims.fetch_add(1, Ordering::Relaxed);
                ticket_done(self.seg);
            }
        } else if kind == Repair::Redeliver as u32 {
            if self.ring.redeliver(t).is_ok() {
                stats.redelivered.fetch_add(1, Ordering::Relaxed);
            }
        } else if kind == Repair::UndoMove as u32 {
            if self.ring.undo_move_target(t).is_ok() {
                stats.undone_moves.fetch_add(1, Ordering::Relaxed);
            }
        } else if kind == Repair::Skip as u32 && self.ring.fence_skip(t).is_ok() {
            ticket_done(self.seg);
        }
        self.clear_record();
    }
}
