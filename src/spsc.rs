//! One direction of a pipe: a single-producer single-consumer ring over a
//! pipe segment's slots, each side keeping its position in local memory.
//! The pipe (`pipe`) owns one [`Sender`] and one [`Receiver`], of its two
//! directions, and adds ends, blocking and disconnection around them.
//!
//! # Protocol
//!
//! A slot's header sits right before its payload, so a small message and its
//! "published" mark share a cache line and the receiver polls that line
//! alone.
//!
//! - sender of ticket `t`: if its cached `head` says full, reload `head`
//!   (Acquire, pairs with the receiver's Release store of `head`: the
//!   receiver's reads of the slot are done before we overwrite it); write the
//!   header and payload; store `seq = t + 1` (Release: SYNC POINT, pairs with
//!   the receiver's Acquire load); store `tail = t + 1` (Relaxed, for `len`).
//! - receiver of ticket `t`: load `seq` (Acquire); `seq == t + 1` means the
//!   message is there; read it; store `head = t + 1` (Release).
//!
//! No compare-and-swap and no shared write by both sides: each line has one
//! writer.
//!
//! # Holding several messages
//!
//! A receiver may hold up to [`HOLD_WINDOW`] messages at once (guards, or
//! messages a selective receive passed over), and free them in any order:
//! it keeps which tickets past `head` it has taken and which it has freed,
//! and moves `head` over the freed prefix only. The sender never writes a
//! ticket at or past `head`, so a held slot stays as it was published.

use std::cell::Cell;

use crate::error::{CorruptError, CorruptKind};
use crate::layout::{PipeSlotHeader, PIPE_SLOT_HEADER_SIZE};
use crate::message::Header;
use crate::segment::PipeSegment;
use crate::sync::Ordering;
use crate::wait::{Claimed, Wake};

/// How many messages one pipe end may hold at once (see the module docs).
pub const HOLD_WINDOW: u64 = 64;

/// One direction (`dir`, 0 or 1) of the pipe on `seg`.
#[derive(Clone, Copy)]
pub(crate) struct Direction<'a> {
    pub(crate) seg: &'a PipeSegment,
    pub(crate) dir: usize,
}

impl Direction<'_> {
    #[inline]
    fn capacity(&self) -> u64 {
        u64::from(self.seg.geometry().capacity)
    }

    #[inline]
    fn index(&self, t: u64) -> usize {
        (t & (self.capacity() - 1)) as usize
    }
}

/// The sending side's local state of its direction.
#[derive(Debug)]
pub(crate) struct Sender {
    /// Next ticket to send (the direction's tail).
    next: Cell<u64>,
    /// Last `head` of the direction seen; refreshed when it says the ring
    /// is full.
    cached_head: Cell<u64>,
}

impl Sender {
    /// A sender that sends `next` next, having seen `head`.
    pub(crate) fn new(next: u64, head: u64) -> Sender {
        Sender {
            next: Cell::new(next),
            cached_head: Cell::new(head),
        }
    }

    /// Claims the next send ticket if the direction has room.
    pub(crate) fn claim(&self, d: Direction<'_>) -> Claimed {
        let t = self.next.get();
        let cap = d.capacity();
        if t.wrapping_sub(self.cached_head.get()) >= cap {
            // Acquire: pairs with the receiver's Release store of `head`.
            let head = d.seg.head(d.dir).load(Ordering::Acquire);
            if head > t || t - head > cap {
                return Claimed::Corrupt;
            }
            self.cached_head.set(head);
            if t - head >= cap {
                return Claimed::Unavailable;
            }
        }
        Claimed::Slot(t)
    }

    /// Writes and publishes the message of claimed ticket `t`, and wakes
    /// the receiver. `data.len()` must be at most max payload.
    pub(crate) fn publish(&self, d: Direction<'_>, t: u64, header: &Header, data: &[u8]) {
        let idx = d.index(t);
        let slot = d.seg.slot(d.dir, idx);
        slot.header.write(header, data.len() as u32);
        // SAFETY: ticket `t` is ours (the receiver is at most `capacity`
        // behind, checked in `claim`), so nobody reads this payload until
        // we publish; `data.len() <= max_payload`, and the payload area is
        // `stride - 32 >= max_payload` bytes inside the mapping.
        unsafe {
            crate::copy::copy_bytes(
                data.as_ptr(),
                d.seg.slot_ptr(d.dir, idx).add(PIPE_SLOT_HEADER_SIZE),
                data.len(),
            );
        }
        // SYNC POINT. Release: pairs with the receiver's Acquire load of
        // `seq`; header and payload are visible to it.
        slot.seq.store(t + 1, Ordering::Release);
        d.seg.tail(d.dir).store(t + 1, Ordering::Relaxed);
        self.next.set(t + 1);
        d.seg.not_empty(d.dir).notify(Wake::One);
    }
}

/// A message the receiver took: ticket, header, and its payload in place.
pub(crate) struct Taken {
    pub(crate) ticket: u64,
    pub(crate) header: Header,
    /// `len` bytes inside the slot's payload area (`len <= max_payload`).
    pub(crate) data: *const u8,
    pub(crate) len: usize,
}

/// The receiving side's local state of its direction.
#[derive(Debug)]
pub(crate) struct Receiver {
    /// Oldest ticket not yet freed: the direction's `head`, as this side
    /// (its only writer) last stored it.
    head: Cell<u64>,
    /// Bit `i`: ticket `head + i` has been taken (held or freed).
    taken: Cell<u64>,
    /// Bit `i`: ticket `head + i` has been freed. Only ever a subset of
    /// `taken`, never with bit 0 set (`head` moves over it at once).
    freed: Cell<u64>,
}

impl Receiver {
    /// A receiver whose oldest ticket not yet freed is `head`.
    pub(crate) fn new(head: u64) -> Receiver {
        Receiver {
            head: Cell::new(head),
            taken: Cell::new(0),
            freed: Cell::new(0),
        }
    }

    /// The oldest ticket not yet freed.
    #[inline]
    pub(crate) fn head(&self) -> u64 {
        self.head.get()
    }

    /// Takes the oldest published message `accept` accepts among the first
    /// [`HOLD_WINDOW`] past `head` not taken yet. `accept` sees the header
    /// and the payload in place (`len <= max` bytes at the pointer). A
    /// message longer than `max` is freed and reported, so the pipe goes on.
    pub(crate) fn claim(
        &self,
        d: Direction<'_>,
        max: u32,
        mut accept: impl FnMut(&Header, *const u8, usize) -> bool,
    ) -> Result<Option<Taken>, CorruptError> {
        let head = self.head.get();
        let taken = self.taken.get();
        let window = HOLD_WINDOW.min(d.capacity());
        let mut i = u64::from(taken.trailing_ones());
        while i < window {
            if taken & (1 << i) != 0 {
                i += 1;
                continue;
            }
            let t = head + i;
            let idx = d.index(t);
            let slot: &PipeSlotHeader = d.seg.slot(d.dir, idx);
            // SYNC POINT. Acquire: pairs with the sender's Release store.
            // The sender publishes in ticket order: nothing past the first
            // unpublished ticket is published either.
            if slot.seq.load(Ordering::Acquire) != t + 1 {
                return Ok(None);
            }
            let (header, len) = slot.header.read();
            if len > max {
                // Free it, so the pipe goes on, and report it.
                self.taken.set(taken | 1 << i);
                let _ = self.release(d, t);
                return Err(CorruptKind::Length { len, max }.into());
            }
            let data = d
                .seg
                .slot_ptr(d.dir, idx)
                .wrapping_add(PIPE_SLOT_HEADER_SIZE);
            if accept(&header, data, len as usize) {
                self.taken.set(taken | 1 << i);
                return Ok(Some(Taken {
                    ticket: t,
                    header,
                    data,
                    len: len as usize,
                }));
            }
            i += 1;
        }
        Ok(None)
    }

    /// Frees ticket `t`, one this side took; moves `head` over the freed
    /// prefix and wakes the sender if it moved.
    pub(crate) fn release(&self, d: Direction<'_>, t: u64) -> Result<(), CorruptError> {
        let head = self.head.get();
        let i = t.wrapping_sub(head);
        debug_assert!(i < HOLD_WINDOW && self.taken.get() & (1 << i) != 0);
        if i >= HOLD_WINDOW {
            return Err(CorruptKind::Positions.into());
        }
        let freed = self.freed.get() | 1 << i;
        let n = freed.trailing_ones();
        let shift = |m: u64| m.checked_shr(n).unwrap_or(0);
        self.freed.set(shift(freed));
        if n == 0 {
            return Ok(());
        }
        self.taken.set(shift(self.taken.get()));
        let head = head + u64::from(n);
        self.head.set(head);
        // SYNC POINT. Release: pairs with the sender's Acquire load of
        // `head`; our reads of the slots are done before it reuses them.
        d.seg.head(d.dir).store(head, Ordering::Release);
        d.seg.not_full(d.dir).notify(Wake::One);
        Ok(())
    }
}
