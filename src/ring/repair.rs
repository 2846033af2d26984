//! The repair mechanisms recovery runs on a ring (`recovery` decides when
//! and for whom): fence a stuck claim, pass a stuck skip ticket, lift a
//! quarantine, free a slot behind `head`, offer a dead receiver's message
//! again, undo a dead mover's target. Each is one compare-and-swap (or a
//! few, each re-triable), so a recoverer that dies half-way leaves a state
//! the sweep repairs.

use super::*;

impl Ring<'_> {
    /// Fences the unpublished claim on ticket `t`: FREE(t) becomes read and
    /// withheld, so receivers and `head` pass it while its producer, if it
    /// still lives, cannot have the slot reused under its late writes. The
    /// holder's own publish (or abandon) then fails. Err if the slot was
    /// not FREE(t) any more.
    pub fn fence_claim(&self, t: u64) -> Result<(), Fenced> {
        // AcqRel: the recoverer's later reads (the owner word) come after.
        self.slot(t)
            .seq
            .compare_exchange(t, (t + 1) | TAKEN_Q, Ordering::AcqRel, Ordering::Relaxed)
            .map_err(|_| Fenced)?;
        self.advance_if_head(t);
        Ok(())
    }

    /// Passes a skip ticket (of a withheld slot) whose producer died before
    /// marking it.
    pub fn fence_skip(&self, t: u64) -> Result<(), Fenced> {
        self.slot(t)
            .seq
            .compare_exchange(
                t | QUARANTINED,
                (t + 1) | TAKEN_Q,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .map_err(|_| Fenced)?;
        self.advance_if_head(t);
        Ok(())
    }

    /// Ends the quarantine of `t`'s slot, whatever lap its word is at, as
    /// long as `still_ours()` says the quarantine is the one meant (the
    /// owner word, unchanged while the slot is withheld, names its holder).
    /// Returns true if this call cleared the flag.
    pub fn lift_quarantine(&self, t: u64, mut still_ours: impl FnMut() -> bool) -> bool {
        let slot = self.slot(t);
        let mut cur = slot.seq.load(Ordering::Acquire);
        for _ in 0..MAX_RETRIES {
            if cur & QUARANTINED == 0 || !still_ours() {
                return false;
            }
            // Release: the late holder's writes to the slot happen before
            // whoever reuses it.
            match slot.seq.compare_exchange(
                cur,
                cur & !QUARANTINED,
                Ordering::Release,
                Ordering::Acquire,
            ) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    /// Frees the slot of ticket `t` for a receiver that died between
    /// moving `head` past it and freeing it (see `release`): HELD behind
    /// `head` -> FREE for the next lap. Its message was read; it is not
    /// offered again. With it, the slots around it that are held behind
    /// `head` too and `same_holder` says are the same receiver's (its
    /// owner words): a receiver ending a run (`release_run`) moves `head`
    /// past the whole run before it frees any of it (invariant 7).
    /// Returns how many slots it freed; Err if `t`'s was not held behind
    /// `head`.
    pub fn finish_release(
        &self,
        t: u64,
        mut same_holder: impl FnMut(u64) -> bool,
    ) -> Result<u64, Fenced> {
        let head = self.head.load(Ordering::Relaxed);
        if t >= head || (t | head) & FLAGS != 0 {
            return Err(Fenced);
        }
        self.free_behind_head(t)?;
        let mut freed = 1;
        // The rest of the run, both ways, within one lap of `t` and behind
        // `head` (a held slot at or past `head` is a message being read).
        let lap = self.capacity();
        let mut u = t;
        while u > 0 && t - u + 1 < lap {
            u -= 1;
            if self.seq(u) != (u + 1) | HELD || !same_holder(u) || self.free_behind_head(u).is_err()
            {
                break;
            }
            freed += 1;
        }
        let mut u = t + 1;
        while u < head && u - t < lap {
            if self.seq(u) != (u + 1) | HELD || !same_holder(u) || self.free_behind_head(u).is_err()
            {
                break;
            }
            freed += 1;
            u += 1;
        }
        Ok(freed)
    }

    /// HELD(t) -> FREE(t + capacity), for a slot behind `head`.
    fn free_behind_head(&self, t: u64) -> Result<(), Fenced> {
        // Release, as in `release`: pairs with the producer's Acquire load
        // in `try_claim_send_many`; the holder's reads (what it did of
        // them) come before the next producer's writes.
        self.slot(t)
            .seq
            .compare_exchange(
                (t + 1) | HELD,
                t + self.capacity(),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .map(drop)
            .map_err(|_| Fenced)
    }

    /// Offers again the message of ticket `t`, held by a receiver that died:
    /// HELD -> PUBLISHED. (Its bytes are unchanged: receivers only read.)
    pub fn redeliver(&self, t: u64) -> Result<(), Fenced> {
        self.slot(t)
            .seq
            .compare_exchange((t + 1) | HELD, t + 1, Ordering::Release, Ordering::Relaxed)
            .map(drop)
            .map_err(|_| Fenced)
    }

    /// Undoes the claim of a dead mover on the target `to` (MOVING ->
    /// TAKEN: the read slot it was, whatever was half-copied into it).
    pub fn undo_move_target(&self, to: u64) -> Result<(), Fenced> {
        self.slot(to)
            .seq
            .compare_exchange(
                (to + 1) | MOVING,
                (to + 1) | TAKEN,
                Ordering::Release,
                Ordering::Relaxed,
            )
            .map_err(|_| Fenced)?;
        self.advance_if_head(to);
        Ok(())
    }
}
