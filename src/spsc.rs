//! One direction of a pipe: a single-producer single-consumer ring over a
//! pipe segment's slots, each side keeping its position in local memory.
//! The pipe (`pipe`) owns one [`Sender`] and one [`Receiver`], of its two
//! directions, and adds ends, blocking and disconnection around them.
//!
//! # Protocol
//!
//! A slot's header sits right before its payload, so a small message and
//! its sequence word share a cache line. The sequence word `seq` of the
//! slot of ticket `t` (index `t mod capacity`) says, for that ticket:
//!
//! | `seq`             | ticket `t`                                   |
//! |-------------------|----------------------------------------------|
//! | `t`, or 0 if `t < capacity` | free: the sender may write it      |
//! | `t + 1 - capacity`| not free: ticket `t - capacity` is still there |
//! | `t + 1`           | published: the receiver may read it          |
//! | `t + capacity`    | freed (received and let go): free for `t + capacity` |
//!
//! Every word only grows (capacity is at least 2, so "freed" and
//! "published" differ). A ticket is freed iff it is below the stored
//! `head` or its word is at least `t + capacity`.
//!
//! - sender of ticket `t`: free if `t` is below its `limit` (tickets it
//!   already knows are free); else it loads `head` (Acquire, pairs with
//!   the receiver's Release store) and moves `limit` to `head + capacity`;
//!   else it loads the slot's own `seq` (Acquire, pairs with the
//!   receiver's Release store of the freed mark: the receiver's reads of
//!   the slot are done before we overwrite it). Then it writes header and
//!   payload, stores `seq = t + 1` (Release: SYNC POINT, pairs with the
//!   receiver's Acquire load) and `tail = t + 1` (Relaxed, for `len` and
//!   inspection).
//! - receiver of ticket `t`: loads `seq` (Acquire); `t + 1` means the
//!   message is there; reads it; frees it by storing `seq = t + capacity`
//!   (Release). `head` (the oldest ticket not freed) is kept locally and
//!   **published lazily**: stored (Release) once it is
//!   [`publish_every`] tickets past the last stored value, whenever a
//!   look finds nothing more to take (so before any sleep), and when the
//!   end is dropped. A batch receive (`take_run`) frees its whole run
//!   with one store of `head` past it instead of a mark per slot.
//!
//! No compare-and-swap and no shared write by both sides: each word has
//! one writer at a time (a slot's word passes from sender to receiver on
//! publishing and back on freeing).
//!
//! ## Why the freed mark and a lazy `head`
//!
//! With `head` stored after every message, a sender that keeps the ring
//! full reloads `head` on every send, and the line bounces between the two
//! cores once per message (11-12 M msg/s). Published only once per burst,
//! `head` alone would let a sender see freed slots as full, forever if the
//! receiver then stopped, and let a receiver that died leave freed
//! messages to its successor. The freed mark keeps both exact: the sender
//! looks at the one slot it is about to write (a line it needs anyway)
//! only when `head` says full, and a new holder of the receiving end
//! starts after every message its predecessor freed.
//!
//! ## Chasing
//!
//! A sender faster than its receiver, spinning on `try_send`, would take
//! each slot the moment its freed mark appears, polling the very line the
//! receiver is storing into. Measured (two processes, 64-byte messages,
//! the receiver copying each out): 11-13 M msg/s, against 20-22 M for a
//! sender that waits for `head`. So a claim that finds no room right after
//! one that found some waits at most [`CHASE_PAUSE`] spins for the
//! receiver's next store of `head` (which comes every [`publish_every`]
//! messages while it receives, and frees a run of slots at once), then
//! looks at the slot's word as always. A claim never says full while the
//! word of the slot it would write said free at its last look; it only
//! takes up to a few microseconds longer to say full to a sender that just
//! filled the ring.
//!
//! # Holding several messages
//!
//! A receiver may hold up to [`HOLD_WINDOW`] messages at once (guards, or
//! messages a selective receive passed over), and free them in any order:
//! it marks each one freed as it goes, keeps which tickets past `head` it
//! has taken and which it has freed, and moves `head` over the freed
//! prefix only. The sender writes tickets in order and never one whose
//! slot is not marked free, so a held slot stays as it was published.
//!
//! # A new holder of an end
//!
//! - Receiving end: its predecessor published `head` lazily, but marked
//!   every message it freed: the new holder starts at the published
//!   `head`, passes every ticket marked freed to the first that is not
//!   (`head`), and counts the ones marked freed in the window past it as
//!   taken and freed, so it never reads a freed message again; what its
//!   predecessor held unfreed is read again.
//! - Sending end: its predecessor may have died between publishing and
//!   storing `tail`, or half-way through a batch published last first.
//!   The new holder continues after every ticket published or freed, and
//!   marks free again (unpublishes) the tickets published past the first
//!   gap, which the receiver never read (it stops at the gap), before it
//!   rewrites them.

use std::cell::Cell;
use std::marker::PhantomData;

use crate::error::{CorruptError, CorruptKind};
use crate::layout::PipeSlotHeader;
use crate::message::Header;
#[cfg(not(loom))]
use crate::segment::PipeSegment;
use crate::sync::{AtomicU64, Ordering};
use crate::wait::{Claimed, EventCount, Wake};

/// How many messages one pipe end may hold at once (see the module docs).
pub const HOLD_WINDOW: u64 = 64;

/// Spins (`pause` instructions, 24-30 ns each here) a claim waits at most
/// for the receiver to store `head` when it finds no room right after a
/// claim that found some (see "Chasing" in the module docs): 6-8 µs here,
/// ended by the store, which comes every [`publish_every`] messages.
/// Under loom each spin is a step of every explored run, so a few stand
/// for them (the wait ends on the same store either way).
#[cfg(not(loom))]
const CHASE_PAUSE: u32 = 256;
#[cfg(loom)]
const CHASE_PAUSE: u32 = 2;

/// How far the receiver's local `head` may run ahead of the published one
/// before it is stored: a quarter of the ring, at most 32.
#[inline]
pub fn publish_every(capacity: u64) -> u64 {
    (capacity / 4).clamp(1, 32)
}

/// What a slot's sequence word `v` says about ticket `t` (module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Free: the sender may write `t`.
    Free,
    /// The previous lap's ticket is still there (published or held).
    Occupied,
    /// Published, not yet freed.
    Published,
    /// Freed (and maybe written again for a later lap).
    Freed,
    /// No honest run leaves this word here for `t`.
    Impossible,
}

impl SlotState {
    /// The state of ticket `t` whose slot's word is `v`, in a ring of
    /// `capacity` slots.
    #[inline]
    pub(crate) fn of(v: u64, t: u64, capacity: u64) -> SlotState {
        if v == t || (v == 0 && t < capacity) {
            SlotState::Free
        } else if v == t.wrapping_add(1) {
            SlotState::Published
        } else if v >= t.saturating_add(capacity) {
            SlotState::Freed
        } else if t >= capacity && v == t + 1 - capacity {
            SlotState::Occupied
        } else {
            SlotState::Impossible
        }
    }
}

/// The word that says "free" for ticket `t` (what the previous lap's freed
/// mark left, or the zeroed file's 0 on the first lap).
#[inline]
fn free_word(t: u64, capacity: u64) -> u64 {
    if t < capacity {
        0
    } else {
        t
    }
}

/// Where a slot's payload starts: right after its header (32 bytes in a
/// segment; under loom, the model types' size, with no payload bytes).
const PAYLOAD_OFFSET: usize = std::mem::size_of::<PipeSlotHeader>();

/// One direction of a pipe, as plain references: its `head` and `tail`,
/// its two event counts, and its slots (`capacity` of them, `stride`
/// bytes apart, each a [`PipeSlotHeader`] then its payload). Built over a
/// segment by [`Direction::of`], or over heap memory (loom models) by
/// `Direction::new`.
#[derive(Clone, Copy, Debug)]
pub struct Direction<'a> {
    head: &'a AtomicU64,
    tail: &'a AtomicU64,
    not_empty: &'a EventCount,
    not_full: &'a EventCount,
    /// Start of slot 0, valid for `capacity * stride` bytes for `'a`.
    slots: *mut u8,
    stride: u32,
    /// A power of two, at least 2.
    capacity: u32,
    _slots: PhantomData<&'a PipeSlotHeader>,
}

// SAFETY: a `Direction` is a view of memory that both ends (in any
// threads or processes) access at once by design, through atomics and the
// protocol's ownership of slots, exactly as a shared `&PipeSegment` (which
// it replaces) is; the raw slot pointer is what makes it neither by
// default.
unsafe impl Send for Direction<'_> {}
// SAFETY: as above.
unsafe impl Sync for Direction<'_> {}

impl<'a> Direction<'a> {
    /// Direction `dir` (0 or 1) of the pipe on `seg`.
    #[cfg(not(loom))]
    #[inline]
    pub(crate) fn of(seg: &'a PipeSegment, dir: usize) -> Direction<'a> {
        let geo = seg.geometry();
        Direction {
            head: seg.head(dir),
            tail: seg.tail(dir),
            not_empty: seg.not_empty(dir),
            not_full: seg.not_full(dir),
            slots: seg.slot_ptr(dir, 0),
            stride: geo.stride,
            capacity: geo.capacity,
            _slots: PhantomData,
        }
    }

    /// [`Direction::of`], not tied to the borrow of `seg`: for the pipe
    /// handle that owns the segment to keep, so it builds it once instead
    /// of on every call.
    ///
    /// # Safety
    ///
    /// The direction must not be used after `seg`'s mapping is unmapped
    /// (it points into the mapping, not into `seg`, so moving `seg` is
    /// fine).
    #[cfg(not(loom))]
    #[inline]
    pub(crate) unsafe fn detached(seg: &PipeSegment, dir: usize) -> Direction<'static> {
        let d = Direction::of(seg, dir);
        // SAFETY: only the lifetime changes; the caller keeps the mapping
        // every reference and pointer of `d` points into alive.
        unsafe { std::mem::transmute::<Direction<'_>, Direction<'static>>(d) }
    }

    /// A direction over heap memory: `slots.len()` (a power of two, at
    /// least 2) slots with no payload bytes, for the loom models.
    #[cfg(loom)]
    pub fn new(
        head: &'a AtomicU64,
        tail: &'a AtomicU64,
        slots: &'a [PipeSlotHeader],
        not_empty: &'a EventCount,
        not_full: &'a EventCount,
    ) -> Direction<'a> {
        assert!(slots.len() >= 2 && slots.len().is_power_of_two());
        Direction {
            head,
            tail,
            not_empty,
            not_full,
            // Only ever read through (the headers are atomics).
            slots: slots.as_ptr().cast_mut().cast(),
            stride: PAYLOAD_OFFSET as u32,
            capacity: slots.len() as u32,
            _slots: PhantomData,
        }
    }

    #[inline]
    fn capacity(&self) -> u64 {
        u64::from(self.capacity)
    }

    #[inline]
    fn index(&self, t: u64) -> usize {
        (t & (self.capacity() - 1)) as usize
    }

    /// Start of slot `idx` (below the capacity): header, then payload.
    #[inline]
    fn slot_ptr(&self, idx: usize) -> *mut u8 {
        debug_assert!(idx < self.capacity as usize);
        self.slots.wrapping_add(idx * self.stride as usize)
    }

    /// Start of slot `idx`'s payload area.
    #[inline]
    fn payload(&self, idx: usize) -> *mut u8 {
        self.slot_ptr(idx).wrapping_add(PAYLOAD_OFFSET)
    }

    /// The header of the slot of ticket `t`.
    #[inline]
    fn slot(&self, t: u64) -> &'a PipeSlotHeader {
        // SAFETY: `index(t) < capacity`, so the slot lies inside the
        // `capacity * stride` bytes valid for `'a` (`of`: the segment's
        // validated layout; `new`: the slice, `stride` its element size);
        // it starts aligned for `PipeSlotHeader` (segment slots are
        // 64-aligned; slice elements are aligned), which is all atomics,
        // valid for any bits.
        unsafe { &*self.slot_ptr(self.index(t)).cast::<PipeSlotHeader>() }
    }

    /// The state of ticket `t` (Acquire: pairs with the Release store of
    /// whichever side wrote the word last).
    #[inline]
    fn state(&self, t: u64) -> SlotState {
        SlotState::of(self.slot(t).seq.load(Ordering::Acquire), t, self.capacity())
    }
}

/// Copies a message's bytes into its slot (`copy::copy_bytes`; under loom,
/// where the models carry payloads in their own cells, a plain copy).
///
/// # Safety
///
/// As [`std::ptr::copy_nonoverlapping`].
#[inline]
unsafe fn copy_payload(src: *const u8, dst: *mut u8, n: usize) {
    // SAFETY: the caller's contract.
    #[cfg(not(loom))]
    unsafe {
        crate::copy::copy_bytes(src, dst, n)
    };
    // SAFETY: the caller's contract.
    #[cfg(loom)]
    unsafe {
        std::ptr::copy_nonoverlapping(src, dst, n)
    };
}

/// The sending side's local state of its direction.
#[derive(Debug)]
pub struct Sender {
    /// Next ticket to send (the direction's tail).
    next: Cell<u64>,
    /// Tickets below this are known free (at least `next`).
    limit: Cell<u64>,
    /// The last slow claim found room: if this one finds none, the
    /// receiver is freeing slots right ahead of us.
    chasing: Cell<bool>,
}

impl Sender {
    /// The sending side of a direction whose previous holder (if any) may
    /// have died at any point: it continues after every ticket published
    /// or freed from `max(tail, head)` on, and unpublishes the tickets its
    /// predecessor published past the first gap (module docs).
    pub fn resume(d: Direction<'_>, tail: u64, head: u64) -> Sender {
        let cap = d.capacity();
        let mut next = tail.max(head);
        for _ in 0..cap {
            match d.state(next) {
                SlotState::Published | SlotState::Freed => next += 1,
                _ => break,
            }
        }
        // A batch is published last first (`publish_run`): a holder that
        // died publishing one may have left published tickets past the
        // first unpublished one, which the receiver has not read (it stops
        // at the gap) and which we are about to rewrite. Mark them free
        // again first, so the receiver never reads one while we write it:
        // these stores come before our first publish (Release), after
        // which the receiver looks past the gap.
        for t in next + 1..next + cap {
            let slot = d.slot(t);
            if slot.seq.load(Ordering::Relaxed) == t + 1 {
                slot.seq.store(free_word(t, cap), Ordering::Relaxed);
            }
        }
        Sender {
            next: Cell::new(next),
            limit: Cell::new(next.max(head + cap).min(next + cap)),
            chasing: Cell::new(false),
        }
    }

    /// Claims the next send ticket if the direction has room.
    #[inline]
    pub fn claim(&self, d: Direction<'_>) -> Claimed {
        match self.claim_many(d, 1) {
            Ok((t, _)) => Claimed::Slot(t),
            Err(c) => c,
        }
    }

    /// Claims up to `max` (at least 1) consecutive send tickets: the first
    /// and how many. Looks at `head` only if `limit` leaves fewer than
    /// `max`, and at the slots' own words only if `head` does too.
    #[inline]
    pub fn claim_many(&self, d: Direction<'_>, max: u64) -> Result<(u64, u64), Claimed> {
        let t = self.next.get();
        let max = max.clamp(1, d.capacity());
        let free = self.limit.get() - t;
        if free >= max {
            return Ok((t, max));
        }
        self.claim_slow(d, t, max)
    }

    /// `claim_many` past `limit`: `head`, then (at the receiver's heels) a
    /// short wait for it to store `head` again, then the slots' own words.
    #[cold]
    fn claim_slow(&self, d: Direction<'_>, t: u64, max: u64) -> Result<(u64, u64), Claimed> {
        let cap = d.capacity();
        let load_head = || {
            // Acquire: pairs with the receiver's Release store of `head`.
            let head = d.head.load(Ordering::Acquire);
            if head > t {
                Err(Claimed::Corrupt)
            } else {
                Ok(head)
            }
        };
        let head = load_head()?;
        let mut limit = self.limit.get().max(head + cap);
        if limit == t && self.chasing.get() {
            // The last claim found room and this one none: the receiver is
            // draining the ring right ahead of us. Wait for its next store
            // of `head` (a run of slots, on a line it writes once per run)
            // rather than take its slots one by one (see "Chasing").
            for _ in 0..CHASE_PAUSE {
                crate::sync::spin_hint();
                if d.head.load(Ordering::Relaxed) != head {
                    break;
                }
            }
            limit = limit.max(load_head()? + cap);
        }
        if limit == t {
            // No room by `head`: the truth, ticket by ticket, in the slots'
            // own words (only now: the last may be the line the receiver
            // is freeing).
            while limit - t < max {
                match d.state(limit) {
                    SlotState::Free => limit += 1,
                    SlotState::Occupied => break,
                    _ => return Err(Claimed::Corrupt),
                }
            }
        }
        self.limit.set(limit);
        let found = limit > t;
        self.chasing.set(found);
        if found {
            Ok((t, (limit - t).min(max)))
        } else {
            Err(Claimed::Unavailable)
        }
    }

    /// Writes and publishes the message of claimed ticket `t`, and wakes
    /// the receiver. `data.len()` must be at most max payload.
    #[inline]
    pub fn publish(&self, d: Direction<'_>, t: u64, header: &Header, data: &[u8]) {
        self.write(d, t, header, data);
        self.publish_run(d, t, 1);
    }

    /// Writes the header and payload of claimed ticket `t`, unpublished.
    /// `data.len()` must be at most max payload.
    #[inline]
    pub fn write(&self, d: Direction<'_>, t: u64, header: &Header, data: &[u8]) {
        debug_assert!(t.wrapping_sub(self.next.get()) < d.capacity());
        let idx = d.index(t);
        d.slot(t).header.write(header, data.len() as u32);
        // SAFETY: ticket `t` is ours (its slot's word said free, or `head`
        // is past the ticket before it on the ring, checked in `claim`), so
        // nobody reads this payload until we publish; `data.len() <=
        // max_payload`, and the payload area is `stride - 32 >=
        // max_payload` bytes inside the mapping.
        unsafe { copy_payload(data.as_ptr(), d.payload(idx), data.len()) };
    }

    /// Publishes the `n` written tickets from `first` (the next ones to
    /// send), last first, and wakes the receiver once. The receiver stops
    /// at the first unpublished ticket, so it sees the run together, in
    /// order, and while the run is written polls only its first line.
    #[inline]
    pub fn publish_run(&self, d: Direction<'_>, first: u64, n: u64) {
        debug_assert!(first == self.next.get() && n >= 1);
        for t in (first..first + n).rev() {
            // SYNC POINT. Release: pairs with the receiver's Acquire load
            // of `seq`; header and payload are visible to it.
            d.slot(t).seq.store(t + 1, Ordering::Release);
        }
        d.tail.store(first + n, Ordering::Relaxed);
        self.next.set(first + n);
        d.not_empty.notify(Wake::One);
    }
}

/// A message the receiver took: ticket, header, and its payload in place.
#[derive(Debug)]
pub struct Taken {
    /// The message's ticket.
    pub ticket: u64,
    /// Its header.
    pub header: Header,
    /// `len` bytes inside the slot's payload area (`len <= max_payload`).
    pub data: *const u8,
    /// The payload's length.
    pub len: usize,
}

/// The receiving side's local state of its direction.
#[derive(Debug)]
pub struct Receiver {
    /// Oldest ticket not yet freed: the direction's `head`.
    head: Cell<u64>,
    /// `head` as this side (its only writer) last stored it.
    published: Cell<u64>,
    /// Bit `i`: ticket `head + i` has been taken (held or freed).
    taken: Cell<u64>,
    /// Bit `i`: ticket `head + i` has been freed. Only ever a subset of
    /// `taken`, never with bit 0 set (`head` moves over it at once).
    freed: Cell<u64>,
}

impl Receiver {
    /// The receiving side of a direction whose previous holder (if any)
    /// may have died at any point, `head` being the published position:
    /// it passes the tickets marked freed, and counts those marked freed
    /// in the window past the first that is not as taken and freed
    /// (module docs). `Err` if the words say no honest run left them.
    pub fn resume(d: Direction<'_>, head: u64) -> Result<Receiver, CorruptError> {
        let cap = d.capacity();
        // The published `head` is behind the true one by less than
        // `publish_every` plus what one free moves it by (`HOLD_WINDOW`):
        // a lap and a window bound the walk whatever the words say.
        let mut h = head;
        let mut steps = 0;
        while d.state(h) == SlotState::Freed {
            h += 1;
            steps += 1;
            if steps > cap + HOLD_WINDOW {
                return Err(CorruptKind::Positions.into());
            }
        }
        let mut freed = 0u64;
        for i in 1..HOLD_WINDOW.min(cap) {
            match d.state(h + i) {
                SlotState::Freed => freed |= 1 << i,
                SlotState::Published => {}
                _ => break,
            }
        }
        let rx = Receiver {
            head: Cell::new(h),
            published: Cell::new(head),
            taken: Cell::new(freed),
            freed: Cell::new(freed),
        };
        rx.publish(d);
        Ok(rx)
    }

    /// The oldest ticket not yet freed.
    #[inline]
    pub fn head(&self) -> u64 {
        self.head.get()
    }

    /// Stores `head` if it moved since it was last stored.
    #[inline]
    pub fn publish(&self, d: Direction<'_>) {
        let head = self.head.get();
        if head != self.published.get() {
            self.published.set(head);
            // SYNC POINT. Release: pairs with the sender's Acquire load of
            // `head`; our reads of the slots before it are done.
            d.head.store(head, Ordering::Release);
        }
    }

    /// Marks ticket `t` (taken by us) freed.
    #[inline]
    fn mark_freed(d: Direction<'_>, t: u64) {
        // SYNC POINT. Release: pairs with the sender's (and a successor
        // receiver's) Acquire load of the word; our reads of the slot are
        // done before it is reused.
        d.slot(t).seq.store(t + d.capacity(), Ordering::Release);
    }

    /// Moves `head` to `head`, publishing it if it ran
    /// [`publish_every`] past the stored one.
    #[inline]
    fn advance(&self, d: Direction<'_>, head: u64) {
        self.head.set(head);
        if head - self.published.get() >= publish_every(d.capacity()) {
            self.publish(d);
        }
    }

    /// Takes the oldest published message `accept` accepts among the first
    /// [`HOLD_WINDOW`] past `head` not taken yet. `accept` sees the header
    /// and the payload in place (`len <= max` bytes at the pointer). A
    /// message longer than `max` is freed and reported, so the pipe goes on.
    /// Finding none publishes `head`.
    pub fn claim(
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
            let slot: &PipeSlotHeader = d.slot(t);
            // SYNC POINT. Acquire: pairs with the sender's Release store.
            // The sender publishes in ticket order: nothing past the first
            // unpublished ticket is published either.
            if slot.seq.load(Ordering::Acquire) != t + 1 {
                break;
            }
            let (header, len) = slot.header.read();
            if len > max {
                // Free it, so the pipe goes on, and report it.
                self.taken.set(taken | 1 << i);
                let _ = self.release(d, t);
                return Err(CorruptKind::Length { len, max }.into());
            }
            let data = d.payload(idx);
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
        // Nothing more to take now: the sender may be waiting for room.
        self.publish(d);
        Ok(None)
    }

    /// Takes up to `max` (at most [`HOLD_WINDOW`]) published messages in
    /// order from `head`, handing each to `f` in place, and frees them
    /// together: one wake of the sender for the run. Only while this side
    /// holds nothing (`None` otherwise: the caller goes message by
    /// message). A message longer than `max_len` ends the run: it is freed
    /// with the rest and reported, after `f` saw the ones before it.
    ///
    /// Each message counts as taken while `f` looks at it, so a receive
    /// that `f` itself makes on this end passes it by (and ends the run).
    pub fn take_run(
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
            let slot: &PipeSlotHeader = d.slot(t);
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
            // the slot before we mark it freed, which happens only below,
            // after `f`; `len <= max_payload` keeps the bytes inside the
            // slot's payload area.
            let data = unsafe { std::slice::from_raw_parts(d.payload(idx), len as usize) };
            f(&header, data);
            if self.taken.get() != mine || self.freed.get() != 0 {
                break; // `f` received on this end: go on message by message
            }
        }
        if n > 0 {
            // Free our run, with whatever `f` freed past it (marked), by
            // one store of `head` past it: a run is freed as a whole, so
            // it needs no marks of its own.
            let freed = self.freed.get() | (u64::MAX >> (64 - n));
            let k = freed.trailing_ones();
            let shift = |m: u64| m.checked_shr(k).unwrap_or(0);
            self.freed.set(shift(freed));
            self.taken.set(shift(self.taken.get()));
            self.head.set(head + u64::from(k));
            self.publish(d);
            d.not_full.notify(Wake::One);
        } else {
            self.publish(d);
        }
        Some(match bad {
            Some(e) => Err(e),
            None => Ok(n as usize),
        })
    }

    /// Frees ticket `t`, one this side took: marks it freed, moves `head`
    /// over the freed prefix, and wakes the sender.
    pub fn release(&self, d: Direction<'_>, t: u64) -> Result<(), CorruptError> {
        let head = self.head.get();
        let i = t.wrapping_sub(head);
        debug_assert!(i < HOLD_WINDOW && self.taken.get() & (1 << i) != 0);
        if i >= HOLD_WINDOW {
            return Err(CorruptKind::Positions.into());
        }
        Self::mark_freed(d, t);
        let freed = self.freed.get() | 1 << i;
        let n = freed.trailing_ones();
        let shift = |m: u64| m.checked_shr(n).unwrap_or(0);
        self.freed.set(shift(freed));
        if n > 0 {
            self.taken.set(shift(self.taken.get()));
            self.advance(d, head + u64::from(n));
        }
        d.not_full.notify(Wake::One);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Pins the word table of the module docs, in a ring of 4: every
    /// state of ticket 6 (slot 2), and the first lap's zeroed words.
    #[test]
    fn slot_words_say_what_the_table_says() {
        let cap = 4;
        let of = |v| SlotState::of(v, 6, cap);
        assert_eq!(of(6), SlotState::Free); // ticket 2 freed
        assert_eq!(of(3), SlotState::Occupied); // ticket 2 published
        assert_eq!(of(7), SlotState::Published);
        assert_eq!(of(10), SlotState::Freed);
        assert_eq!(of(11), SlotState::Freed); // ticket 10 published since
        assert_eq!(of(0), SlotState::Impossible);
        assert_eq!(of(5), SlotState::Impossible);
        assert_eq!(SlotState::of(0, 2, cap), SlotState::Free);
        assert_eq!(SlotState::of(3, 2, cap), SlotState::Published);
        assert_eq!(SlotState::of(1, 2, cap), SlotState::Impossible);
        assert_eq!(free_word(2, cap), 0);
        assert_eq!(free_word(6, cap), 6);
        // Near the top of the range: no overflow.
        assert_eq!(SlotState::of(u64::MAX, u64::MAX, cap), SlotState::Free);
        assert_eq!(SlotState::of(0, u64::MAX, cap), SlotState::Published);
    }
}
