//! The lock-free MPMC ring: Vyukov's bounded queue with a sequence word per
//! slot (as crossbeam's `ArrayQueue`), extended so a receiver can take a
//! message that is not at the head (selective receive) without ever moving
//! another message, over memory that other processes share and may corrupt.
//!
//! This module decides only who owns which slot when; copying messages in and
//! out is the queue's business.
//!
//! # States of a slot's sequence word
//!
//! For ticket `t` (the slot is `t % capacity`), with two flag bits at the top
//! of the word (positions never reach 2^62):
//!
//! | word                | state                                                    |
//! |---------------------|----------------------------------------------------------|
//! | `t`                 | FREE: the producer of `t` may claim and fill it          |
//! | `t + 1`             | PUBLISHED: any receiver may take it                      |
//! | `(t + 1) \| HELD`   | HELD: one receiver owns it and is reading it             |
//! | `(t + 1) \| TAKEN`  | TAKEN: read; waiting for `head` to pass `t`              |
//! | `(t + 1) \| TAKEN \| HELD` | MOVING: a read slot being refilled by a move      |
//! | `t + capacity`      | FREE for ticket `t + capacity` (the next lap)            |
//! | `t \| QUARANTINED`  | SKIP: the slot is withheld; ticket `t` is passed by      |
//! | `(t + 1) \| TAKEN \| QUARANTINED` | passed (or fenced), still withheld         |
//!
//! QUARANTINED marks a slot whose claim a recoverer fenced while the
//! claimant may still be alive (stopped, or too slow): it may yet write
//! into the slot, so the slot leaves circulation until the claimant's
//! failed publish (or a recoverer that finds it dead) lifts the flag.
//! Meanwhile the flag travels with the slot's word from lap to lap, and a
//! producer whose ticket lands on it takes the ticket and marks it passed
//! (`skip`): a withheld slot costs one slot, never the ring.
//!
//! Transitions, each by exactly one party, and each a compare-and-swap
//! except the receiver's release of its slot at `head` (a checked store:
//! nobody else writes a slot a live receiver holds):
//!
//! - producer: `tail` CAS `t -> t+1` claims ticket `t` (only when the slot
//!   reads FREE(t)); fills the slot; publish CAS FREE(t) -> PUBLISHED.
//! - receiver: CAS PUBLISHED -> HELD claims the message, whatever its
//!   distance from `head`. Reading done: if `head == t` it sets
//!   `head = t+1` and releases HELD -> FREE(t+capacity); otherwise it marks
//!   HELD -> TAKEN. Either way it then *advances* if `head` is its to move.
//! - receiver, a run (`try_claim_head`, `try_claim_next`, `release_run`):
//!   CAS PUBLISHED -> HELD of the slot at `head`, then of each next slot
//!   while it reads PUBLISHED; reading done, one CAS of `head`
//!   `h -> h+n` past the whole run, then each slot HELD ->
//!   FREE(t+capacity) by a checked store, then it advances.
//! - advance: while the slot at `head` is TAKEN, CAS `head` `h -> h+1`
//!   and release TAKEN(h) -> FREE(h+capacity).
//! - recovery (`recovery` decides when): fence FREE(t) -> TAKEN |
//!   QUARANTINED of a stuck claim (the claimant's publish then fails);
//!   pass a stuck SKIP; HELD -> PUBLISHED for a dead receiver's message;
//!   HELD -> FREE(t+capacity) behind `head` for a receiver that died
//!   between moving `head` and freeing its slot; MOVING -> TAKEN for a
//!   dead mover's target; lift QUARANTINED.
//! - move (a sender finding the ring full because receivers took messages
//!   out of order): for the oldest waiting message `from` with a run of
//!   TAKEN slots behind it ending at `to`, claim `to` (TAKEN -> MOVING),
//!   hold `from` (PUBLISHED -> HELD), copy the message, publish it at `to`
//!   (MOVING -> PUBLISHED(to)), mark `from` TAKEN and advance. Without this,
//!   a message nobody takes would keep every slot behind it from being
//!   reused.
//!
//! Invariants:
//!
//! 1. `head <= tail`; `head` moves only past slots that are released or
//!    about to be by the mover.
//! 2. While the slot of `head` is HELD, only its holder moves `head`
//!    (an advancer needs TAKEN at `head`), so the holder's CAS of `head`
//!    `t -> t+1` cannot fail. Nor can the CAS `h -> h+n` of a receiver
//!    that holds every slot of `h..h+n`: it moves `head` past slots only
//!    it will free. A PUBLISHED slot is never behind `head` (`head` passes
//!    a slot only when it is HELD by the mover or TAKEN), so a receiver
//!    that read `head == h` and then claimed the slot of `h` from
//!    PUBLISHED(h) holds the slot at `head`: `head` was `h` and cannot
//!    move on without it.
//! 3. PUBLISHED(t) occurs once in the slot's history except when recovery
//!    returns a dead receiver's HELD(t) to it, and receivers never write a
//!    slot: so a CAS from PUBLISHED(t) that succeeds proves the slot holds
//!    the very message that was read as PUBLISHED(t).
//! 4. Receivers scan from `head` towards `tail` and stop at the first slot
//!    not yet published (FREE(t): being written, or not sent yet) or being
//!    refilled by a move: a receiver therefore takes one producer's
//!    messages in the order they were sent.
//! 5. Every write of `head` is an RMW, and a receiver that marks a slot
//!    TAKEN then reads `head` with an RMW. Of the two, the mark and the move
//!    of `head` onto that slot, the later one in `head`'s modification order
//!    synchronizes with the earlier, so its author sees the other's write
//!    and does the advancing: a TAKEN slot is never stranded at `head`.
//!    (Plain loads would allow the store-buffering outcome where each sees
//!    the other's old value; the loom model finds it.)
//! 6. A TAKEN slot changes only when `head` passes it, or when a move
//!    refills it (TAKEN -> MOVING -> PUBLISHED) while it is behind an
//!    unread message, never at `head`. A move can bring it to `head`
//!    later, so an advancer confirms TAKEN with an RMW, which reads the
//!    newest value, before it moves `head` past the slot: a stale TAKEN
//!    would skip a published message (the loom model finds that too).
//! 7. A receiver that dies between its move of `head` and the frees
//!    leaves slots HELD behind `head`, each named by its owner word: one
//!    for a single release, up to the run for `release_run`. Recovery
//!    frees them (`finish_release` takes the whole run of the dead
//!    holder's, so the run costs one detection, not one per slot); their
//!    messages were read and are not offered again.
//! 8. QUARANTINED is set only by a fence (under the control lock) and
//!    cleared only by the fenced claimant, or by a recoverer that found it
//!    dead; no claim is made on a withheld slot (a skip takes the ticket,
//!    not the slot), so its owner word keeps naming the claimant. Every
//!    clearing is a Release RMW and every taker of the slot afterwards
//!    reads it with Acquire (the claim load, `skip`'s failed CAS): the
//!    claimant's last writes happen before the slot's next use.
//!
//! # Orderings
//!
//! - publish (Release) pairs with the receiver's Acquire load/CAS of the
//!   sequence word: the message is visible to the receiver.
//! - release to FREE(t+capacity) (Release) pairs with the producer's Acquire
//!   load of the sequence word: the read is finished before the overwrite.
//! - HELD -> TAKEN (Release) pairs with the advancer's Acquire load before
//!   it releases the slot on the holder's behalf (the holder's reads happen
//!   before the next producer's writes, transitively).
//! - `head` and `tail` are Relaxed hints for where to look; every decision
//!   is confirmed on a sequence word. Except: the claiming CAS of `tail`
//!   is Release, pairing with recovery's Acquire load (`sent_acquire`), so
//!   the claimant's announcement is visible with the claim.
//!
//! # Trusting nothing
//!
//! Every loop is bounded. A state that no honest run produces (a sequence
//! word ahead of its position while the position has not moved, `tail - head`
//! above the capacity) is reported as corruption.

mod compact;
mod repair;

use crate::layout::SlotHeader;
use crate::sync::{spin_hint, AtomicU64, Ordering};

/// A receiver owns the slot and is reading it.
pub const HELD: u64 = 1 << 63;
/// The slot was read out of order; `head` has not passed it yet.
pub const TAKEN: u64 = 1 << 62;
/// The slot is withheld from use: a recoverer fenced the claim of a
/// producer that is still alive, which may yet write into it.
pub const QUARANTINED: u64 = 1 << 61;
const FLAGS: u64 = HELD | TAKEN | QUARANTINED;
const TAKEN_Q: u64 = TAKEN | QUARANTINED;
const MOVING: u64 = TAKEN | HELD;

/// Upper bound on retries of one claim. Honest contention fails a CAS a
/// handful of times; this many means the words are being rewritten under us.
const MAX_RETRIES: u32 = 1 << 16;

/// Why a claim did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimError {
    /// No free slot (send) or no acceptable published message (receive).
    Unavailable,
    /// The positions or sequence words are in a state no honest process
    /// produces.
    Corrupt,
}

/// What `Ring::try_claim_send_many` tells its caller along the way.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClaimEvent {
    /// About to try claiming tickets `from..to`.
    Announce {
        /// First ticket.
        from: u64,
        /// One past the last.
        to: u64,
    },
    /// Took a ticket of a withheld slot and passed it by.
    Skipped,
}

/// How a skip ticket went (`Ring::skip`).
enum Skip {
    /// We marked it passed.
    Passed,
    /// The quarantine ended first: the slot is FREE for the ticket, and
    /// the claim an ordinary one.
    Ours,
    /// A recoverer found the skip stuck and passed it for us.
    PassedForUs,
}

/// A commit or release found the slot's sequence word changed under it:
/// a recoverer reclaimed the slot (or the segment was scribbled on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fenced;

/// A view of one ring: its positions and slot headers.
#[derive(Clone, Copy, Debug)]
pub struct Ring<'a> {
    head: &'a AtomicU64,
    tail: &'a AtomicU64,
    slots: &'a [SlotHeader],
    /// `capacity - 1`; capacity is a power of two ≥ 2.
    mask: u64,
}

impl<'a> Ring<'a> {
    /// A ring over `slots` (length a power of two ≥ 2, every slot's `seq`
    /// initialised to its index, `head == tail == 0` at creation).
    pub fn new(head: &'a AtomicU64, tail: &'a AtomicU64, slots: &'a [SlotHeader]) -> Self {
        debug_assert!(slots.len() >= 2 && slots.len().is_power_of_two());
        Ring {
            head,
            tail,
            slots,
            mask: slots.len() as u64 - 1,
        }
    }

    #[inline]
    fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// The header of the slot that ticket `t` maps to.
    #[inline]
    pub fn slot(&self, t: u64) -> &'a SlotHeader {
        // In bounds: the mask keeps the index below `slots.len()`.
        &self.slots[(t & self.mask) as usize]
    }

    /// Claims the next free slot for writing; returns its ticket. (The
    /// queue always goes through `try_claim_send_many`; the models use this.)
    #[cfg(loom)]
    pub fn try_claim_send(&self) -> Result<u64, ClaimError> {
        self.try_claim_send_many(1, |_| {}).map(|(t, _)| t)
    }

    /// Claims up to `max` consecutive free slots with one CAS of `tail`;
    /// returns the first ticket and how many were claimed (at least 1).
    ///
    /// `on(ClaimEvent::Announce { from, to })` is called before each CAS
    /// attempt with the tickets it would claim; the CAS releases what it
    /// stored (a recoverer that reads `tail` with Acquire sees it).
    /// Recovery uses it to know who holds a claim not yet signed.
    /// `on(ClaimEvent::Skipped)` is called for each ticket taken and passed
    /// by on a withheld slot (it carries no message: `join` must count it
    /// done), also when the claim then fails.
    #[inline]
    pub fn try_claim_send_many(
        &self,
        max: u64,
        mut on: impl FnMut(ClaimEvent),
    ) -> Result<(u64, u64), ClaimError> {
        let max = max.clamp(1, self.capacity());
        let mut pos = self.tail.load(Ordering::Relaxed);
        // Withheld slots passed by: a lap of them means every slot is
        // withheld, which is "full", not corruption.
        let mut skipped = 0;
        for _ in 0..MAX_RETRIES {
            if pos & FLAGS != 0 {
                return Err(ClaimError::Corrupt);
            }
            // Acquire: pairs with the Release of the previous lap's release,
            // so that lap's read is complete before we overwrite the slot.
            let seq = self.slot(pos).seq.load(Ordering::Acquire);
            if seq == pos {
                // The following slots may still hold the previous lap (their
                // releases can lag): count the ones free for this lap. None
                // of them can be claimed by another producer before our CAS,
                // which succeeds only while `tail` is still `pos`.
                let mut n = 1;
                while n < max && self.slot(pos + n).seq.load(Ordering::Acquire) == pos + n {
                    n += 1;
                }
                on(ClaimEvent::Announce {
                    from: pos,
                    to: pos + n,
                });
                // Release: the announcement happens before the claim, for
                // a recoverer that sees the claim through `sent_acquire`.
                match self.tail.compare_exchange_weak(
                    pos,
                    pos + n,
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok((pos, n)),
                    Err(now) => pos = now,
                }
            } else if seq == pos | QUARANTINED {
                // Ticket `pos` maps to a withheld slot: take the ticket and
                // pass it by, so the quarantine costs one slot, not the ring.
                match self.tail.compare_exchange_weak(
                    pos,
                    pos + 1,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        match self.skip(pos) {
                            Skip::Ours => return Ok((pos, 1)),
                            Skip::Passed => on(ClaimEvent::Skipped),
                            // The recoverer counted it.
                            Skip::PassedForUs => {}
                        }
                        pos += 1;
                        skipped += 1;
                        if skipped >= self.capacity() {
                            return Err(ClaimError::Unavailable);
                        }
                    }
                    Err(now) => pos = now,
                }
            } else if seq & !FLAGS < pos {
                // The previous lap's message is still in the slot: full.
                return Err(ClaimError::Unavailable);
            } else {
                // Another producer took `pos`; look again from the new tail.
                let now = self.tail.load(Ordering::Relaxed);
                if now == pos {
                    return Err(ClaimError::Corrupt);
                }
                pos = now;
                spin_hint();
            }
        }
        Err(ClaimError::Corrupt)
    }

    /// Whether the `k`-th slot from `tail` (`k` in `1..=capacity`) is free
    /// for its lap: a hint that a receiver draining in order has freed a
    /// run of `k` slots. Reads no line a receiver is working on unless the
    /// run is there.
    #[inline]
    pub fn free_ahead(&self, k: u64) -> bool {
        // Wrapping: `tail` may hold anything (a corrupt value only makes
        // the hint wrong; the claim reports it).
        let t = self
            .tail
            .load(Ordering::Relaxed)
            .wrapping_add(k.clamp(1, self.capacity()) - 1);
        // Relaxed: a hint; the claim that follows confirms with Acquire.
        self.slot(t).seq.load(Ordering::Relaxed) == t
    }

    /// Publishes the slot of ticket `t` (claimed by `try_claim_send_many`).
    #[inline]
    pub fn publish(&self, t: u64) -> Result<(), Fenced> {
        // SYNC POINT. Release: pairs with the receivers' Acquire load/CAS of
        // `seq`; the header and payload written before are visible to them.
        self.slot(t)
            .seq
            .compare_exchange(t, t + 1, Ordering::Release, Ordering::Relaxed)
            .map(drop)
            .map_err(|_| Fenced)
    }

    /// Claims the oldest published message that `accept` accepts, scanning
    /// from `head` and stopping at the first message still being written.
    ///
    /// `accept(t)` may look at the slot of `t` (header, payload) before the
    /// claim; what it saw is confirmed afterwards: a rejection is re-examined
    /// if the slot changed meanwhile, an acceptance is claimed only if the
    /// slot is still the message that was looked at (invariant 3).
    #[inline]
    pub fn try_claim_recv(&self, mut accept: impl FnMut(u64) -> bool) -> Result<u64, ClaimError> {
        // Restarts and re-examinations; plain scanning steps are bounded
        // by one lap per pass.
        let mut budget = MAX_RETRIES;
        'restart: loop {
            let head = self.head.load(Ordering::Relaxed);
            if head & FLAGS != 0 {
                return Err(ClaimError::Corrupt);
            }
            // Not bounded by `tail`: reading it would pull the producers'
            // busiest line to every receiver on every message. A slot still
            // FREE for its lap ends the scan (empty, or being written), and
            // one lap is the most there can be.
            let mut t = head;
            while t < head + self.capacity() {
                let slot = self.slot(t);
                // SYNC POINT. Acquire: pairs with the Release in `publish`.
                let seq = slot.seq.load(Ordering::Acquire);
                let published = t + 1;
                if seq == published {
                    if !accept(t) {
                        if slot.seq.load(Ordering::Acquire) == seq {
                            t += 1;
                        } else {
                            budget = budget.checked_sub(1).ok_or(ClaimError::Corrupt)?;
                        }
                        continue;
                    }
                    // Acquire: pairs with `publish`, as the load above.
                    // Release: a recoverer that sees HELD (Acquire) also
                    // sees the caller's claim intent, stored before.
                    match slot.seq.compare_exchange(
                        seq,
                        seq | HELD,
                        Ordering::AcqRel,
                        Ordering::Relaxed,
                    ) {
                        Ok(_) => return Ok(t),
                        Err(_) => {
                            // Taken meanwhile: look at `t` again.
                            budget = budget.checked_sub(1).ok_or(ClaimError::Corrupt)?;
                            continue;
                        }
                    }
                }
                match (seq & !FLAGS, seq & FLAGS) {
                    // Another receiver's.
                    (s, HELD) if s == published => t += 1,
                    // Being filled by a move: the message in transit is
                    // older than anything behind it, so stop here, as at a
                    // slot still being written (invariant 4).
                    (s, MOVING) if s == published => return Err(ClaimError::Unavailable),
                    (s, TAKEN) | (s, TAKEN_Q) if s == published => {
                        if t == head {
                            self.advance_from(t);
                            budget = budget.checked_sub(1).ok_or(ClaimError::Corrupt)?;
                            continue 'restart;
                        }
                        t += 1;
                    }
                    // Not published for this lap: nothing sent yet, or a
                    // producer still writing it. Stop here, so that one
                    // producer's messages are taken in the order sent.
                    // (A skip ticket of a withheld slot, likewise: claimed
                    // or not, nothing is there.)
                    (s, 0) | (s, QUARANTINED) if s == t => return Err(ClaimError::Unavailable),
                    // An older lap not yet released (a stale view): nothing
                    // for us here yet.
                    (s, _) if s < t => return Err(ClaimError::Unavailable),
                    // Released already: `head` moved on; look again.
                    (s, _) if s >= t + self.capacity() => {
                        budget = budget.checked_sub(1).ok_or(ClaimError::Corrupt)?;
                        continue 'restart;
                    }
                    _ => return Err(ClaimError::Corrupt),
                }
            }
            return Err(ClaimError::Unavailable);
        }
    }

    /// Claims the message at `head` if it is published, as the first of a
    /// run: the caller then holds the slot at `head`, so `head` is its alone
    /// to move (invariant 2); it claims more of the run with
    /// [`try_claim_next`](Self::try_claim_next) and ends it with
    /// [`release_run`](Self::release_run).
    ///
    /// `announce(t)` is called before the claiming CAS (which releases what
    /// it stored, as in `try_claim_recv`). `None` if the slot at `head` is
    /// anything but published (nothing sent, being written, held by
    /// another receiver, read out of order, being moved) or another
    /// receiver won it: [`try_claim_recv`](Self::try_claim_recv) deals with
    /// each of those.
    #[inline]
    pub fn try_claim_head(&self, announce: impl FnOnce(u64)) -> Option<u64> {
        let h = self.head.load(Ordering::Relaxed);
        if h & FLAGS != 0 {
            return None; // `try_claim_recv` reports it
        }
        self.try_claim_next(h, announce).then_some(h)
    }

    /// Claims the message of ticket `t` if it is published (PUBLISHED ->
    /// HELD): the next of a run begun by
    /// [`try_claim_head`](Self::try_claim_head) at `t - 1`'s run. False if
    /// the slot is anything else or another receiver won it; the run ends
    /// there. `announce` as in `try_claim_head`.
    #[inline]
    pub fn try_claim_next(&self, t: u64, announce: impl FnOnce(u64)) -> bool {
        let slot = self.slot(t);
        // SYNC POINT. Acquire: pairs with the Release in `publish`.
        if slot.seq.load(Ordering::Acquire) != t + 1 {
            return false;
        }
        announce(t);
        // Acquire: pairs with `publish`, as the load. Release: a recoverer
        // that sees HELD (Acquire) also sees the announcement.
        slot.seq
            .compare_exchange(t + 1, (t + 1) | HELD, Ordering::AcqRel, Ordering::Relaxed)
            .is_ok()
    }

    /// Ends a run `first..first + n` (`n` in `1..=capacity`), every slot of
    /// it claimed since [`try_claim_head`](Self::try_claim_head) returned
    /// `first`: moves `head` past the run with one CAS, then frees each
    /// slot for the next lap, then advances. Err if a slot was not held
    /// any more (a recoverer took it back, or the segment was scribbled
    /// on); `head` stops short of it, and the slots after it that are
    /// still ours are released one by one, as out of order.
    #[inline]
    pub fn release_run(&self, first: u64, n: u64) -> Result<(), Fenced> {
        debug_assert!((1..=self.capacity()).contains(&n));
        // Only past slots still ours (lines we hold: the loads are cheap).
        // A slot taken back (a receiver frozen past the unblock timeout
        // before it signed, see `recovery`) may be a message again, which
        // `head` must not pass.
        let held = (first..first + n)
            .take_while(|&t| self.slot(t).seq.load(Ordering::Relaxed) == (t + 1) | HELD)
            .count() as u64;
        if held < n {
            // Reported as Fenced whatever the releases below say.
            if held > 0 {
                let _ = self.release_run(first, held);
            }
            for t in first + held + 1..first + n {
                if self.slot(t).seq.load(Ordering::Relaxed) == (t + 1) | HELD {
                    let _ = self.release(t);
                }
            }
            return Err(Fenced);
        }
        // Invariant 2: we hold the slot at `head` and the run behind it, so
        // this CAS fails only on a corrupt segment. AcqRel, invariant 5, as
        // in `release`: `advance_from` below sees a mark on `first + n`.
        if self
            .head
            .compare_exchange(first, first + n, Ordering::AcqRel, Ordering::Relaxed)
            .is_err()
        {
            // Not ours to move after all: the general release, slot by
            // slot, does what the state allows.
            let mut r = Ok(());
            for t in first..first + n {
                if self.release(t).is_err() {
                    r = Err(Fenced);
                }
            }
            return r;
        }
        // A receiver that dies here leaves its run held behind `head`;
        // recovery frees it (`finish_release`, invariant 7).
        #[cfg(not(loom))]
        crate::fault::point("in-release");
        let mut r = Ok(());
        for t in first..first + n {
            let slot = self.slot(t);
            // A checked store, as in `release`: nobody else writes a slot a
            // live receiver holds.
            if slot.seq.load(Ordering::Relaxed) == (t + 1) | HELD {
                // SYNC POINT. Release: pairs with the producer's Acquire
                // load in `try_claim_send_many`; our reads happen before
                // its writes.
                slot.seq.store(t + self.capacity(), Ordering::Release);
            } else {
                r = Err(Fenced);
            }
        }
        self.advance_from(first + n);
        r
    }

    /// Ends the claim on `t` (held by `try_claim_recv`): the slot becomes
    /// free for the next lap once `head` passes it.
    #[inline]
    pub fn release(&self, t: u64) -> Result<(), Fenced> {
        let slot = self.slot(t);
        let held = (t + 1) | HELD;
        if self.head.load(Ordering::Relaxed) == t {
            // Invariant 2: while our slot at `head` is HELD, only we move
            // `head`, so this CAS fails only on a corrupt segment. AcqRel,
            // invariant 5: pairs with the head RMW of a receiver that marked
            // the next slot TAKEN, so `advance_from` below sees that mark.
            let moved = self
                .head
                .compare_exchange(t, t + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok();
            // A receiver that dies here leaves its slot held behind `head`;
            // recovery frees it (`finish_release`).
            #[cfg(not(loom))]
            crate::fault::point("in-release");
            // A store, not a compare-and-swap: nobody else writes a slot a
            // live receiver holds (recovery re-offers only a dead holder's),
            // so the load suffices to report a segment scribbled on, and a
            // store does not stall on a line a full sender is polling.
            let r = if slot.seq.load(Ordering::Relaxed) == held {
                // SYNC POINT. Release: pairs with the producer's Acquire
                // load in `try_claim_send`; our reads happen before its
                // writes.
                slot.seq.store(t + self.capacity(), Ordering::Release);
                Ok(())
            } else {
                Err(Fenced)
            };
            if moved {
                self.advance_from(t + 1);
            }
            r
        } else {
            self.mark_taken(t, held)
        }
    }

    /// Marks the slot of `t` TAKEN (from `from`, which we hold), then
    /// advances `head` if it waits at `t`.
    fn mark_taken(&self, t: u64, from: u64) -> Result<(), Fenced> {
        // Release: pairs with the Acquire load in `advance_from`, so the
        // advancer's release of the slot is ordered after our use of it.
        let r = self.slot(t).seq.compare_exchange(
            from,
            (t + 1) | TAKEN,
            Ordering::Release,
            Ordering::Relaxed,
        );
        self.advance_if_head(t);
        r.map(drop).map_err(|_| Fenced)
    }

    /// After a slot was marked passable (TAKEN): advances `head` if it
    /// waits at `t`.
    fn advance_if_head(&self, t: u64) {
        // Invariant 5: an RMW reads the newest `head`. Either it is already
        // `t` and advancing is ours to do, or whoever moves `head` to `t`
        // does so by an RMW ordered after this one and then sees the mark.
        if self.head.fetch_add(0, Ordering::AcqRel) == t {
            self.advance_from(t);
        }
    }

    /// Passes by ticket `pos`, just claimed on a withheld slot: marks it
    /// read (still withheld) so receivers and `head` pass it.
    fn skip(&self, pos: u64) -> Skip {
        // Release, as any mark that `head` may act on. Acquire on failure:
        // if the quarantine just ended, the holder's last writes to the
        // slot (before its Release lift) happen before ours (the loom
        // model of the quarantine finds the race without it).
        match self.slot(pos).seq.compare_exchange(
            pos | QUARANTINED,
            (pos + 1) | TAKEN_Q,
            Ordering::Release,
            Ordering::Acquire,
        ) {
            Ok(_) => {
                self.advance_if_head(pos);
                Skip::Passed
            }
            Err(now) if now == pos => Skip::Ours,
            Err(_) => Skip::PassedForUs,
        }
    }

    /// The sequence word of `t`'s slot, for recovery's decisions.
    pub fn seq(&self, t: u64) -> u64 {
        // Acquire: what the word's last writer wrote before is visible
        // (a receiver's claim intent, a producer's owner word).
        self.slot(t).seq.load(Ordering::Acquire)
    }

    /// `head`, for recovery's scan.
    pub fn head(&self) -> u64 {
        self.head.load(Ordering::Relaxed)
    }

    /// The enqueue position, read with Acquire: the announcements of the
    /// claims it counts are visible (see `try_claim_send_many`).
    pub fn sent_acquire(&self) -> u64 {
        self.tail.load(Ordering::Acquire)
    }

    /// Gives up the claim on ticket `t` (claimed by `try_claim_send_many`,
    /// never published): the slot is marked TAKEN, so receivers pass it and
    /// `head` frees it as if it had been read.
    pub fn abandon(&self, t: u64) -> Result<(), Fenced> {
        self.mark_taken(t, t)
    }

    /// Moves `head` from `h` past slots read out of order, releasing each.
    /// The caller has just seen `head == h` through an RMW (or a CAS that
    /// set it); a failed CAS here means another process moved `head` and
    /// carries on from there.
    fn advance_from(&self, mut h: u64) {
        for _ in 0..self.capacity().min(u64::from(MAX_RETRIES)) {
            let slot = self.slot(h);
            // Acquire: pairs with the holder's Release in `release`.
            let taken = slot.seq.load(Ordering::Acquire);
            if taken & !QUARANTINED != (h + 1) | TAKEN {
                return;
            }
            // Invariant 6: confirm on the newest value (an RMW reads it); a
            // stale TAKEN could be a slot a move has since refilled.
            if slot
                .seq
                .compare_exchange(taken, taken, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                return;
            }
            // AcqRel, invariant 5 (as in `release`).
            if self
                .head
                .compare_exchange(h, h + 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_err()
            {
                return;
            }
            // SYNC POINT. Release: pairs with the producer's Acquire load in
            // `try_claim_send`. Only the winner of the `head` CAS releases;
            // the one change that can come between is a quarantine ending
            // (the flag cleared), so retry once with the new value. A
            // withheld slot stays withheld for the next lap.
            let mut cur = taken;
            for _ in 0..4 {
                match slot.seq.compare_exchange(
                    cur,
                    (h + self.capacity()) | (cur & QUARANTINED),
                    Ordering::Release,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => break,
                    Err(now) if now & !QUARANTINED == (h + 1) | TAKEN => cur = now,
                    Err(_) => break,
                }
            }
            h += 1;
        }
    }

    /// Messages claimed by producers and not yet passed by `head`
    /// (including ones being written or read), clamped to `0..=capacity`.
    pub fn len(&self) -> u64 {
        // head first: the tail read afterwards is at least as new, and
        // head <= tail in every honest state.
        let head = self.head.load(Ordering::Relaxed);
        let tail = self.tail.load(Ordering::Relaxed);
        tail.saturating_sub(head).min(self.capacity())
    }

    /// True if `len() == 0`.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The enqueue position: tickets handed out to producers so far.
    pub fn sent(&self) -> u64 {
        self.tail.load(Ordering::Relaxed)
    }
}
