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
    #[inline]
    pub(crate) fn claim(&self, d: Direction<'_>) -> Claimed {
        match self.claim_many(d, 1) {
            Ok((t, _)) => Claimed::Slot(t),
            Err(c) => c,
        }
    }

    /// Claims up to `max` (at least 1) consecutive send tickets: the first
    /// and how many. Reads `head` only if the cached copy leaves fewer than
    /// `max` free, and then once.
    #[inline]
    pub(crate) fn claim_many(&self, d: Direction<'_>, max: u64) -> Result<(u64, u64), Claimed> {
        let t = self.next.get();
        let cap = d.capacity();
        let max = max.clamp(1, cap);
        let mut free = cap.saturating_sub(t.wrapping_sub(self.cached_head.get()));
        if free < max {
            // Acquire: pairs with the receiver's Release store of `head`.
            let head = d.seg.head(d.dir).load(Ordering::Acquire);
            if head > t || t - head > cap {
                return Err(Claimed::Corrupt);
            }
            self.cached_head.set(head);
            free = cap - (t - head);
            if free == 0 {
                return Err(Claimed::Unavailable);
            }
        }
        Ok((t, free.min(max)))
    }

    /// Writes and publishes the message of claimed ticket `t`, and wakes
    /// the receiver. `data.len()` must be at most max payload.
    #[inline]
    pub(crate) fn publish(&self, d: Direction<'_>, t: u64, header: &Header, data: &[u8]) {
        self.write(d, t, header, data);
        self.publish_run(d, t, 1);
    }

    /// Writes the header and payload of claimed ticket `t`, unpublished.
    /// `data.len()` must be at most max payload.
    #[inline]
    pub(crate) fn write(&self, d: Direction<'_>, t: u64, header: &Header, data: &[u8]) {
        debug_assert!(t.wrapping_sub(self.next.get()) < d.capacity());
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
    }

    /// Publishes the `n` written tickets from `first` (the next ones to
    /// send), last first, and wakes the receiver once. The receiver stops
    /// at the first unpublished ticket, so it sees the run together, in
    /// order, and while the run is written polls only its first line.
    #[inline]
    pub(crate) fn publish_run(&self, d: Direction<'_>, first: u64, n: u64) {
        debug_assert!(first == self.next.get() && n >= 1);
        for t in (first..first + n).rev() {
            // SYNC POINT. Release: pairs with the receiver's Acquire load
            // of `seq`; header and payload are visible to it.
            d.seg
                .slot(d.dir, d.index(t))
                .seq
                .store(t + 1, Ordering::Release);
        }
        d.seg.tail(d.dir).store(first + n, Ordering::Relaxed);
        self.next.set(first + n);
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

    /// Takes up to `max` (at most [`HOLD_WINDOW`]) published messages in
    /// order from `head`, handing each to `f` in place, and frees them
    /// together: one store of `head` and one wake of the sender for the
    /// run. Only while this side holds nothing (`None` otherwise: the
    /// caller goes message by message). A message longer than `max_len`
    /// ends the run: it is freed with the rest and reported, after `f` saw
    /// the ones before it.
    ///
    /// Each message counts as taken while `f` looks at it, so a receive
    /// that `f` itself makes on this end passes it by (and ends the run).
    pub(crate) fn take_run(
        &self,
        d: Direction<'_>,
        max_len: u32,
        max: usize,
        mut f: impl FnMut(&Header, &[u8]),
    ) -> Option<Result<usize, CorruptError>> {
        if self.taken.get() != 0 {
            return None;
        }
        let head = self.head.get();
        let max = (max as u64).min(HOLD_WINDOW).min(d.capacity());
        let mut n = 0u64;
        let mut bad = None;
        while n < max {
            let t = head + n;
            let idx = d.index(t);
            let slot: &PipeSlotHeader = d.seg.slot(d.dir, idx);
            // SYNC POINT. Acquire: pairs with the sender's Release store.
            if slot.seq.load(Ordering::Acquire) != t + 1 {
                break;
            }
            let (header, len) = slot.header.read();
            // Taken: bits 0..=n (a receive inside `f` passes them by).
            let mine = u64::MAX >> (63 - n);
            self.taken.set(mine);
            n += 1;
            if len > max_len {
                bad = Some(CorruptKind::Length { len, max: max_len }.into());
                break;
            }
            // SAFETY: ticket `t` is published and taken by us, and we are
            // its direction's only receiver: the sender does not rewrite
            // the slot before `head` passes it, which happens only once we
            // free it below, after `f`; `len <= max_payload` keeps the
            // bytes inside the slot's payload area.
            let data = unsafe {
                std::slice::from_raw_parts(
                    d.seg.slot_ptr(d.dir, idx).add(PIPE_SLOT_HEADER_SIZE),
                    len as usize,
                )
            };
            f(&header, data);
            if self.taken.get() != mine || self.freed.get() != 0 {
                break; // `f` received on this end: go on message by message
            }
        }
        if n > 0 {
            // Free our run, with whatever `f` freed past it.
            let freed = self.freed.get() | (u64::MAX >> (64 - n));
            let k = freed.trailing_ones();
            let shift = |m: u64| m.checked_shr(k).unwrap_or(0);
            self.freed.set(shift(freed));
            self.taken.set(shift(self.taken.get()));
            let head = head + u64::from(k);
            self.head.set(head);
            // SYNC POINT. Release: pairs with the sender's Acquire load of
            // `head`; our reads of the run are done before it reuses them.
            d.seg.head(d.dir).store(head, Ordering::Release);
            d.seg.not_full(d.dir).notify(Wake::One);
        }
        Some(match bad {
            Some(e) => Err(e),
            None => Ok(n as usize),
        })
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
