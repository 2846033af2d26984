//! The lock-free MPMC ring: Vyukov's bounded queue with a sequence word per
//! slot (as crossbeam's `ArrayQueue`), over memory that other processes
//! share and may corrupt.
//!
//! This module decides only who owns which slot when; copying messages in and
//! out is the queue's business. See [`SlotHeader::seq`] for the encoding.
//!
//! # Orderings
//!
//! - A producer claims ticket `t` by CAS on `tail` (Relaxed: the slot's
//!   `seq`, not `tail`, carries the data), fills the slot, and publishes with
//!   a CAS on `seq` `t -> t+1` (Release). A consumer's Acquire load of
//!   `seq == t+1` pairs with it, so the message is visible.
//! - A consumer claims by CAS on `head`, reads, and releases with a CAS on
//!   `seq` `t+1 -> t+capacity` (Release). The next producer's Acquire load
//!   of `seq` pairs with it, so the read is finished before the overwrite.
//!
//! # Trusting nothing
//!
//! A segment can be scribbled on by any process that maps it. Every loop
//! here is bounded: a state that no honest run produces (a sequence word
//! ahead of its position while the position has not moved) is reported as
//! corruption instead of being retried forever.

use crate::layout::SlotHeader;
use crate::sync::{spin_hint, AtomicU64, Ordering};

/// Upper bound on CAS retries of one claim. Honest contention fails a CAS
/// a handful of times; this many means the positions are being rewritten
/// under us.
const MAX_CLAIM_RETRIES: u32 = 1 << 20;

/// Why a claim did not happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ClaimError {
    /// No free slot (send) or no published message (receive).
    Unavailable,
    /// The positions or sequence words are in a state no honest process
    /// produces.
    Corrupt,
}

/// A commit or release found the slot's sequence word changed under it:
/// a recoverer reclaimed the slot (or the segment was scribbled on).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Fenced;

/// A view of one ring: its positions and slot headers.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Ring<'a> {
    head: &'a AtomicU64,
    tail: &'a AtomicU64,
    slots: &'a [SlotHeader],
    /// `capacity - 1`; capacity is a power of two ≥ 2.
    mask: u64,
}

impl<'a> Ring<'a> {
    /// A ring over `slots` (length a power of two ≥ 2, every slot's `seq`
    /// initialised to its index, `head == tail == 0` at creation).
    pub(crate) fn new(head: &'a AtomicU64, tail: &'a AtomicU64, slots: &'a [SlotHeader]) -> Self {
        debug_assert!(slots.len() >= 2 && slots.len().is_power_of_two());
        Ring {
            head,
            tail,
            slots,
            mask: slots.len() as u64 - 1,
        }
    }

    fn capacity(&self) -> u64 {
        self.mask + 1
    }

    /// The header of the slot that ticket `t` maps to.
    #[inline]
    pub(crate) fn slot(&self, t: u64) -> &'a SlotHeader {
        // In bounds: the mask keeps the index below `slots.len()`.
        &self.slots[(t & self.mask) as usize]
    }

    /// Claims the next free slot for writing; returns its ticket.
    #[inline]
    pub(crate) fn try_claim_send(&self) -> Result<u64, ClaimError> {
        let mut pos = self.tail.load(Ordering::Relaxed);
        for _ in 0..MAX_CLAIM_RETRIES {
            // Acquire: pairs with the consumer's Release in `release`, so the
            // previous lap's read is complete before we overwrite the slot.
            let seq = self.slot(pos).seq.load(Ordering::Acquire);
            if seq == pos {
                match self.tail.compare_exchange_weak(
                    pos,
                    pos.wrapping_add(1),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok(pos),
                    Err(now) => pos = now,
                }
            } else if seq.wrapping_add(self.capacity()) == pos.wrapping_add(1) {
                // seq == pos + 1 - capacity: the slot still holds the message
                // of ticket `pos - capacity`: full.
                return Err(ClaimError::Unavailable);
            } else {
                let now = self.tail.load(Ordering::Relaxed);
                if now == pos {
                    // The slot is neither ours nor one lap behind, yet no
                    // producer has moved past `pos`: the consumer of
                    // `pos - capacity` still holds it (full), or the words are
                    // corrupt.
                    return if seq < pos {
                        Err(ClaimError::Unavailable)
                    } else {
                        Err(ClaimError::Corrupt)
                    };
                }
                pos = now;
                spin_hint();
            }
        }
        Err(ClaimError::Corrupt)
    }

    /// Publishes the slot of ticket `t` (claimed by `try_claim_send`).
    #[inline]
    pub(crate) fn publish(&self, t: u64) -> Result<(), Fenced> {
        // SYNC POINT. Release: pairs with the Acquire load in
        // `try_claim_recv`; the header and payload written before this are
        // visible to the consumer of `t`.
        self.slot(t)
            .seq
            .compare_exchange(t, t.wrapping_add(1), Ordering::Release, Ordering::Relaxed)
            .map(drop)
            .map_err(|_| Fenced)
    }

    /// Claims the next published message for reading; returns its ticket.
    #[inline]
    pub(crate) fn try_claim_recv(&self) -> Result<u64, ClaimError> {
        let mut pos = self.head.load(Ordering::Relaxed);
        for _ in 0..MAX_CLAIM_RETRIES {
            // SYNC POINT. Acquire: pairs with the Release in `publish`.
            let seq = self.slot(pos).seq.load(Ordering::Acquire);
            let want = pos.wrapping_add(1);
            if seq == want {
                match self.head.compare_exchange_weak(
                    pos,
                    want,
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => return Ok(pos),
                    Err(now) => pos = now,
                }
            } else if seq == pos {
                // Not yet published for this lap: empty, or a producer is
                // still writing it.
                return Err(ClaimError::Unavailable);
            } else {
                let now = self.head.load(Ordering::Relaxed);
                if now == pos {
                    return if seq < pos {
                        // The previous lap's consumer has not released yet:
                        // nothing published for `pos`.
                        Err(ClaimError::Unavailable)
                    } else {
                        Err(ClaimError::Corrupt)
                    };
                }
                pos = now;
                spin_hint();
            }
        }
        Err(ClaimError::Corrupt)
    }

    /// Releases the slot of ticket `t` (claimed by `try_claim_recv`) for the
    /// producer of the next lap.
    #[inline]
    pub(crate) fn release(&self, t: u64) -> Result<(), Fenced> {
        // SYNC POINT. Release: pairs with the Acquire load in
        // `try_claim_send`; our reads of the slot happen before its reuse.
        self.slot(t)
            .seq
            .compare_exchange(
                t.wrapping_add(1),
                t.wrapping_add(self.capacity()),
                Ordering::Release,
                Ordering::Relaxed,
            )
            .map(drop)
            .map_err(|_| Fenced)
    }

    /// Messages claimed by producers and not yet claimed by consumers
    /// (including ones still being written), clamped to `0..=capacity`.
    pub(crate) fn len(&self) -> u64 {
        // head first: tail read afterwards is at least as new, and
        // head <= tail in every honest state.
        let head = self.head.load(Ordering::Acquire);
        let tail = self.tail.load(Ordering::Acquire);
        tail.saturating_sub(head).min(self.capacity())
    }

    /// True if a receive would find the ring empty right now.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
