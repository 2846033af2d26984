//! The shape of a queue segment, and the checks that decide whether a mapped
//! segment can be trusted.
//!
//! ```text
//! offset 0                 SegmentHeader (HEADER_SIZE bytes, repr(C))
//!                            line 0  LayoutInfo: magic, version, sizes (Pod, written once)
//!                            line 1  init word (INIT_DONE, written last, Release), passed-over flag
//!                            line 2  tail: enqueue position (u64)
//!                            line 3  head: dequeue position (u64)
//!                            line 4  not_empty event count (receivers sleep here)
//!                            line 5  not_full event count (senders sleep here)
//!                            line 6  join counters
//!                            line 7  selective event count (predicate receivers sleep here)
//! HEADER_SIZE              ControlBlock (CONTROL_SIZE bytes; queues only)
//!                            line 8  robust control lock
//!                            line 9  repair record
//!                            line 10 recovery counters
//!                            lines 11.. one HandleEntry per handle (MAX_HANDLES)
//! QUEUE_HEADER_SIZE        capacity × SlotHeader (64 bytes each)
//! data_offset              capacity × stride bytes of payload, slot i at i × stride
//! ```
//!
//! Size of a queue segment (`QUEUE_HEADER_SIZE` = 512 + 259 × 64 = 17,088):
//! `QUEUE_HEADER_SIZE + capacity × (SLOT_HEADER_SIZE + round_up(max_payload, 64))`.
//!
//! Everything here is read from memory other processes can write. The
//! immutable part ([`LayoutInfo`]) is copied out once, checked field by field
//! against what the layout formula derives, and only the checked copy is used
//! afterwards.

use bytemuck::{Pod, Zeroable};
use memoffset::offset_of;

use crate::error::{ConfigError, CorruptKind};
use crate::message::StoredHeader;
use crate::sync::{AtomicU32, AtomicU64};
use crate::wait::EventCount;

/// "MULPROC\0" as a little-endian u64.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"MULPROC\0");
/// Bumped on every change to the segment's shape or protocol.
pub(crate) const LAYOUT_VERSION: u32 = 3;
/// Value of the init word once the creator has finished initialising.
pub(crate) const INIT_DONE: u32 = 0x1A17_D04E;
/// Cache line size assumed for padding.
pub(crate) const CACHE_LINE: usize = 64;
/// Size of the segment header.
pub(crate) const HEADER_SIZE: usize = 8 * CACHE_LINE;
/// Size of one slot header.
pub(crate) const SLOT_HEADER_SIZE: usize = 64;
/// Most handles (`Queue` values in any process) open on one queue at once.
pub const MAX_HANDLES: usize = 256;
/// Size of a queue's control block (crash recovery), right after the
/// segment header: the control lock, the repair record, the recovery
/// counters, then one line per handle.
pub(crate) const CONTROL_SIZE: usize = (3 + MAX_HANDLES) * CACHE_LINE;
/// Where a queue's slot headers start.
pub(crate) const QUEUE_HEADER_SIZE: usize = HEADER_SIZE + CONTROL_SIZE;
/// Payload slots are rounded up to this, so every payload starts 64-aligned
/// and two slots never share a cache line.
pub(crate) const PAYLOAD_ALIGN: usize = 64;

/// Smallest capacity: the sequence protocol needs two slots to tell "full"
/// from "empty" (with one, "published for lap n" equals "free for lap n+1").
pub const MIN_CAPACITY: u32 = 2;
/// Largest capacity (2^24 messages).
pub const MAX_CAPACITY: u32 = 1 << 24;
/// Largest max payload (64 MiB).
pub const MAX_PAYLOAD_LIMIT: u32 = 64 << 20;
/// Largest segment (64 GiB).
pub const MAX_SEGMENT_SIZE: u64 = 64 << 30;

/// The immutable description of a segment, written by the creator before the
/// init word and never changed afterwards.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Pod, Zeroable)]
pub(crate) struct LayoutInfo {
    pub magic: u64,
    pub version: u32,
    pub header_size: u32,
    pub capacity: u32,
    pub max_payload: u32,
    pub slot_header_size: u32,
    pub stride: u32,
    pub data_offset: u64,
    pub total_size: u64,
    pub creator_pid: u32,
    pub creator_uid: u32,
    /// [`ChannelKind`] as a number.
    pub kind: u32,
    pub _reserved: u32,
}

/// A value on a cache line of its own, so positions written by producers and
/// by consumers never share a line.
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct CachePadded<T>(pub T);

/// Counters behind `join`/`task_done` (JoinableQueue semantics).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct JoinCounters {
    /// Messages marked done by `task_done`, plus tickets that carried no
    /// message for the user (abandoned reservations, corrupt messages
    /// skipped). A queue is joined when `done_count == tail`: every claimed
    /// ticket was received and marked done. Keeping join off the send path costs
    /// senders nothing: `tail` already counts what was sent.
    pub done_count: AtomicU64,
    /// Joiners sleep here; notified (all) by `task_done` when it makes
    /// `done_count` reach `tail`.
    pub joined: EventCount,
}

/// Line 1 of a queue.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct QueueInit {
    /// `INIT_DONE` once initialisation is complete. Written last with
    /// Release by the creator; read with Acquire by `open` (pairs with it).
    pub init: AtomicU32,
    /// Non-zero once a selective receiver has passed over a published
    /// message. Until then no message can wait behind read slots, so a
    /// full ring is simply full and senders skip looking for a message to
    /// move (a scan of every slot, see `Ring::begin_move`). Only ever set.
    pub passed_over: AtomicU32,
}

/// The segment header.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SegmentHeader {
    pub info: CachePadded<LayoutInfo>,
    /// The init word, and a flag written at most once afterwards: both
    /// read far more often than written.
    pub init: CachePadded<QueueInit>,
    /// Enqueue position: the next ticket a producer claims. Only grows.
    pub tail: CachePadded<AtomicU64>,
    /// Dequeue position: the next ticket a consumer claims. Only grows;
    /// `head <= tail` always.
    pub head: CachePadded<AtomicU64>,
    /// Receivers sleep here; bumped after a publish when one sleeps.
    pub not_empty: CachePadded<EventCount>,
    /// Senders sleep here; bumped after a release when one sleeps.
    pub not_full: CachePadded<EventCount>,
    pub join: CachePadded<JoinCounters>,
    /// Selective receivers (with a predicate) sleep here; every publish
    /// wakes all of them, since any one may be the message's taker.
    pub selective: CachePadded<EventCount>,
}

/// A queue's crash-recovery state, right after its [`SegmentHeader`]
/// (`CONTROL_SIZE` bytes). The data path never touches it, except each
/// handle's own `outstanding` count.
#[cfg(not(loom))]
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ControlBlock {
    /// Serialises recovery (fencing stuck claims, re-publishing a dead
    /// receiver's message, settling a dead handle's tasks) and the reset of
    /// a stale segment. Robust: a holder that dies hands the lock, and the
    /// unfinished repair, to the next locker.
    pub lock: crate::control::ControlLock,
    /// The repair in progress, written under the lock before the repair's
    /// first step and cleared after its last, so a locker that finds the
    /// previous holder dead can finish it.
    pub repair: CachePadded<RepairRecord>,
    /// What recovery did, since the segment was created.
    pub stats: CachePadded<RecoveryCounters>,
    /// One line per handle slot; see [`HandleEntry`].
    pub handles: [CachePadded<HandleEntry>; MAX_HANDLES],
}

/// The repair a recoverer is in the middle of (see `recovery.rs`).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RepairRecord {
    /// 0 = none; otherwise a `RepairKind` number.
    pub kind: AtomicU32,
    pub _pad: u32,
    /// Ticket of the slot being repaired.
    pub ticket: AtomicU64,
}

/// Counters of what recovery did (all only grow).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RecoveryCounters {
    /// Claims of dead or stuck producers given up (their slots skipped).
    pub skipped_claims: AtomicU64,
    /// Messages held by dead receivers and offered again.
    pub redelivered: AtomicU64,
    /// Of `skipped_claims`, those whose holder was alive (stopped or too
    /// slow) when fenced.
    pub fenced_live: AtomicU64,
    /// Recoveries finished by a locker after the previous holder of the
    /// control lock died in the middle of one.
    pub handovers: AtomicU64,
    /// Tasks received by handles that died before `task_done`, counted
    /// done so `join` returns.
    pub abandoned_tasks: AtomicU64,
    /// Moves of a dead sender (selective-receive compaction) undone.
    pub undone_moves: AtomicU64,
    /// Slots withheld right now (fenced live holders not yet gone).
    pub withheld: AtomicU64,
    /// Slots freed for receivers that died between moving `head` past
    /// them and freeing them.
    pub finished_releases: AtomicU64,
}

/// One handle's registration. A handle owns entry `i` while it holds the
/// exclusive OFD lock on byte `ofd::HANDLES + i` of the segment's file; the
/// kernel drops that lock when the process dies, which is how others learn
/// of the death (pid reuse cannot fool it).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct HandleEntry {
    /// `HANDLE_FREE` or `HANDLE_IN_USE`.
    pub state: AtomicU32,
    /// Bumped by each new owner of the entry; owner words carry its low
    /// bits, so a claim of a dead predecessor is never taken for the new
    /// owner's.
    pub generation: AtomicU32,
    /// Pid of the owner (informational).
    pub pid: AtomicU32,
    pub _pad: u32,
    /// Messages this handle received and has not marked done (`join`).
    pub outstanding: AtomicU64,
    /// The ticket this handle is about to claim as a receiver, stored
    /// before the claiming CAS: tells a recoverer who holds a slot whose
    /// owner word the holder had no time to write.
    pub claiming: AtomicU64,
    /// The tickets `sending_from..sending_to` this handle is about to claim
    /// as a sender, stored before the claiming CAS of `tail` (which
    /// releases them): tells a recoverer who holds a claim whose owner word
    /// the holder had no time to write. `sending_to` is cleared when a
    /// claim attempt fails.
    pub sending_from: AtomicU64,
    pub sending_to: AtomicU64,
}

/// [`HandleEntry::state`]: nobody owns the entry.
pub(crate) const HANDLE_FREE: u32 = 0;
/// [`HandleEntry::state`]: a handle owns (or owned, until settled) it.
pub(crate) const HANDLE_IN_USE: u32 = 1;

/// A pipe's header: the same first two lines as a queue's (so `open` reads
/// info and init word alike), then per-direction positions and event
/// counts. Direction 0 carries parent-to-child messages, 1 the replies.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct PipeHeader {
    pub info: CachePadded<LayoutInfo>,
    pub init: CachePadded<PipeInit>,
    pub dirs: [PipeDirection; 2],
    pub events: [CachePadded<PipeEvents>; 2],
}

/// Line 1 of a pipe: the init word, and which process holds each end.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct PipeInit {
    pub init: AtomicU32,
    /// Pid holding the parent end (0) and the child end (1); 0 if none.
    pub ends: [AtomicU32; 2],
}

/// One direction's positions, each written by one side only.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct PipeDirection {
    /// Messages published so far; written by the sender only (for `len`).
    pub tail: CachePadded<AtomicU64>,
    /// Messages received and released so far; written by the receiver
    /// only, read by the sender when its cached copy says "full".
    pub head: CachePadded<AtomicU64>,
}

/// One direction's sleepers: its one receiver and its one sender.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct PipeEvents {
    pub not_empty: EventCount,
    pub not_full: EventCount,
}

/// A pipe slot's header, right before its payload.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct PipeSlotHeader {
    /// `t + 1` once the message of ticket `t` is published (Release);
    /// anything else means "not yet" for the receiver of `t`. The slot's
    /// previous lap left `t + 1 - capacity` here (0 before the first).
    pub seq: AtomicU64,
    /// The message header (see [`StoredHeader`]).
    pub header: StoredHeader,
    /// Reserved (0).
    pub flags: AtomicU32,
    pub _pad: u32,
}

/// One slot's header.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct SlotHeader {
    /// The slot's sequence word. For ticket `t` of this slot
    /// (`t % capacity == index`):
    /// - `seq == t`: free; the producer holding ticket `t` may fill it;
    /// - `seq == t + 1`: published; the consumer of ticket `t` may read it;
    /// - `seq == t + capacity`: read and released; free for ticket
    ///   `t + capacity`.
    ///
    /// Producers publish with a compare-and-swap `t -> t + 1` and consumers
    /// release with `t + 1 -> t + capacity`, so a holder that was fenced by a
    /// recoverer learns it instead of overwriting.
    pub(crate) seq: AtomicU64,
    /// Who holds the slot's current claim (see `recovery::Owner`): handle
    /// entry, its generation, the role (sender, receiver, mover) and the
    /// ticket. Written Relaxed right after each claim; recovery reads it to
    /// decide whether the holder is alive.
    pub(crate) owner: AtomicU64,
    /// The message header (see [`StoredHeader`]), written by the producer
    /// before the publishing CAS (Release) and read by the consumer after
    /// its Acquire load of `seq`.
    pub(crate) header: StoredHeader,
    /// Reserved (0), for crash recovery.
    pub(crate) flags: AtomicU32,
    _pad: [u32; 7],
}

impl SlotHeader {
    /// A slot in its initial state for index `seq` (heap models and tests).
    #[cfg(loom)]
    pub fn new(seq: u64) -> SlotHeader {
        SlotHeader {
            seq: AtomicU64::new(seq),
            owner: AtomicU64::new(0),
            header: StoredHeader::new(),
            flags: AtomicU32::new(0),
            _pad: [0; 7],
        }
    }
}

// Compile-time shape checks (real atomics only; loom's types are bigger).
#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<LayoutInfo>() == 64);
    assert!(std::mem::size_of::<SlotHeader>() == SLOT_HEADER_SIZE);
    assert!(std::mem::align_of::<SlotHeader>() == CACHE_LINE);
    assert!(std::mem::size_of::<SegmentHeader>() <= HEADER_SIZE);
    assert!(std::mem::align_of::<SegmentHeader>() <= CACHE_LINE);
    assert!(HEADER_SIZE % CACHE_LINE == 0);
    assert!(std::mem::size_of::<ControlBlock>() == CONTROL_SIZE);
    assert!(std::mem::align_of::<ControlBlock>() == CACHE_LINE);
};

/// Field offsets are part of the cross-process format: a change here is a
/// layout version bump. Checked at compile time.
#[cfg(not(loom))]
const _: () = {
    assert!(std::mem::size_of::<PipeHeader>() == HEADER_SIZE);
    assert!(std::mem::size_of::<PipeSlotHeader>() == PIPE_SLOT_HEADER_SIZE);
    assert!(offset_of!(PipeHeader, init) == offset_of!(SegmentHeader, init));
    assert!(offset_of!(PipeHeader, dirs) == 2 * CACHE_LINE);
    assert!(offset_of!(PipeHeader, events) == 6 * CACHE_LINE);
    assert!(offset_of!(SegmentHeader, info) == 0);
    assert!(offset_of!(SegmentHeader, init) == CACHE_LINE);
    assert!(offset_of!(SegmentHeader, tail) == 2 * CACHE_LINE);
    assert!(offset_of!(SegmentHeader, head) == 3 * CACHE_LINE);
    assert!(offset_of!(SegmentHeader, not_empty) == 4 * CACHE_LINE);
    assert!(offset_of!(SegmentHeader, not_full) == 5 * CACHE_LINE);
    assert!(offset_of!(SegmentHeader, join) == 6 * CACHE_LINE);
    assert!(offset_of!(SegmentHeader, selective) == 7 * CACHE_LINE);
    assert!(offset_of!(SlotHeader, seq) == 0);
    assert!(offset_of!(SlotHeader, owner) == 8);
    assert!(offset_of!(SlotHeader, header) == 16);
    assert!(offset_of!(PipeSlotHeader, header) == 8);
    assert!(std::mem::size_of::<StoredHeader>() == 16);
    assert!(offset_of!(StoredHeader, request) == 0);
    assert!(offset_of!(StoredHeader, sender) == 4);
    assert!(offset_of!(StoredHeader, recipient) == 8);
    assert!(offset_of!(StoredHeader, len) == 12);
    assert!(offset_of!(SlotHeader, flags) == 32);
    assert!(offset_of!(LayoutInfo, version) == 8);
    assert!(offset_of!(LayoutInfo, capacity) == 16);
    assert!(offset_of!(LayoutInfo, total_size) == 40);
    assert!(offset_of!(LayoutInfo, kind) == 56);
};

/// What a segment holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChannelKind {
    /// A [`Queue`](crate::Queue): one MPMC ring.
    Queue = 1,
    /// A [`Pipe`](crate::Pipe): two SPSC rings, one per direction.
    Pipe = 2,
}

impl ChannelKind {
    fn from_u32(v: u32) -> Option<ChannelKind> {
        match v {
            1 => Some(ChannelKind::Queue),
            2 => Some(ChannelKind::Pipe),
            _ => None,
        }
    }

    /// Bytes before the first slot: the segment header, and for a queue
    /// its control block.
    pub(crate) fn header_size(self) -> usize {
        match self {
            ChannelKind::Queue => QUEUE_HEADER_SIZE,
            ChannelKind::Pipe => HEADER_SIZE,
        }
    }

    /// Bytes of per-slot header for this kind.
    pub(crate) fn slot_header_size(self) -> usize {
        match self {
            ChannelKind::Queue => SLOT_HEADER_SIZE,
            ChannelKind::Pipe => PIPE_SLOT_HEADER_SIZE,
        }
    }
}

/// Size of a pipe slot's header, which sits right before its payload.
pub(crate) const PIPE_SLOT_HEADER_SIZE: usize = 32;

/// Sizes derived from a (capacity, max payload) pair.
///
/// Queue: `HEADER_SIZE + capacity × (64 + round_up(max_payload, 64))`, slot
/// headers in one array, payloads in another.
/// Pipe: `HEADER_SIZE + 2 × capacity × round_up(32 + max_payload, 64)`:
/// each direction's slots hold their 32-byte header right before the
/// payload, so a small message is one cache line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Geometry {
    pub kind: ChannelKind,
    pub capacity: u32,
    pub max_payload: u32,
    pub stride: u32,
    pub data_offset: u64,
    pub total_size: u64,
}

/// Why a (capacity, max payload) pair cannot make a queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum GeometryError {
    CapacityNotPowerOfTwo,
    CapacityTooSmall,
    CapacityTooLarge,
    PayloadTooLarge,
    SegmentTooLarge,
}

impl Geometry {
    /// Computes and checks a queue's layout for `capacity` slots of up to
    /// `max_payload` bytes.
    #[cfg(test)]
    pub(crate) fn new(capacity: u32, max_payload: u32) -> Result<Geometry, GeometryError> {
        Geometry::of(ChannelKind::Queue, capacity, max_payload)
    }

    /// Computes and checks the layout of a segment of `kind`.
    pub(crate) fn of(
        kind: ChannelKind,
        capacity: u32,
        max_payload: u32,
    ) -> Result<Geometry, GeometryError> {
        if capacity < MIN_CAPACITY {
            return Err(GeometryError::CapacityTooSmall);
        }
        if !capacity.is_power_of_two() {
            return Err(GeometryError::CapacityNotPowerOfTwo);
        }
        if capacity > MAX_CAPACITY {
            return Err(GeometryError::CapacityTooLarge);
        }
        if max_payload > MAX_PAYLOAD_LIMIT {
            return Err(GeometryError::PayloadTooLarge);
        }
        let cap = capacity as u64;
        let (stride, data_offset, total_size) = match kind {
            ChannelKind::Queue => {
                let stride = round_up(max_payload as u64, PAYLOAD_ALIGN as u64);
                let data_offset = QUEUE_HEADER_SIZE as u64 + cap * SLOT_HEADER_SIZE as u64;
                (stride, data_offset, data_offset + cap * stride)
            }
            ChannelKind::Pipe => {
                let stride = round_up(
                    PIPE_SLOT_HEADER_SIZE as u64 + max_payload as u64,
                    PAYLOAD_ALIGN as u64,
                );
                let data_offset = HEADER_SIZE as u64;
                (stride, data_offset, data_offset + 2 * cap * stride)
            }
        };
        if total_size > MAX_SEGMENT_SIZE {
            return Err(GeometryError::SegmentTooLarge);
        }
        Ok(Geometry {
            kind,
            capacity,
            max_payload,
            // stride <= MAX_PAYLOAD_LIMIT rounded up, fits in u32.
            stride: stride as u32,
            data_offset,
            total_size,
        })
    }

    /// [`Geometry::of`] for a configuration's pair, its errors as the
    /// [`ConfigError`] that names the offending value (the one conversion
    /// queues and pipes share).
    pub(crate) fn checked(
        kind: ChannelKind,
        capacity: u32,
        max_payload: u32,
    ) -> Result<Geometry, ConfigError> {
        Geometry::of(kind, capacity, max_payload).map_err(|e| match e {
            GeometryError::CapacityTooSmall => ConfigError::CapacityTooSmall(capacity),
            GeometryError::CapacityNotPowerOfTwo => ConfigError::CapacityNotPowerOfTwo(capacity),
            GeometryError::CapacityTooLarge => ConfigError::CapacityTooLarge(capacity),
            GeometryError::PayloadTooLarge => ConfigError::PayloadTooLarge(max_payload),
            GeometryError::SegmentTooLarge => ConfigError::SegmentTooLarge,
        })
    }

    /// The `LayoutInfo` a creator writes for this geometry.
    pub(crate) fn info(&self, creator_pid: u32, creator_uid: u32) -> LayoutInfo {
        LayoutInfo {
            magic: MAGIC,
            version: LAYOUT_VERSION,
            header_size: self.kind.header_size() as u32,
            capacity: self.capacity,
            max_payload: self.max_payload,
            slot_header_size: self.kind.slot_header_size() as u32,
            stride: self.stride,
            data_offset: self.data_offset,
            total_size: self.total_size,
            creator_pid,
            creator_uid,
            kind: self.kind as u32,
            _reserved: 0,
        }
    }
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// What `validate` found wrong with a header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum LayoutError {
    /// Not a mulproc segment at all.
    BadMagic,
    /// A mulproc segment of another layout version.
    Version(u32),
    /// Fields that contradict each other or the file.
    Corrupt(CorruptKind),
}

/// Checks a copied-out `LayoutInfo` against the layout formula and the size
/// of the file it came from, and returns the geometry to use.
pub(crate) fn validate(info: &LayoutInfo, file_size: u64) -> Result<Geometry, LayoutError> {
    if info.magic != MAGIC {
        return Err(LayoutError::BadMagic);
    }
    if info.version != LAYOUT_VERSION {
        return Err(LayoutError::Version(info.version));
    }
    let kind =
        ChannelKind::from_u32(info.kind).ok_or(LayoutError::Corrupt(CorruptKind::LayoutFields))?;
    if info.header_size as usize != kind.header_size()
        || info.slot_header_size as usize != kind.slot_header_size()
    {
        return Err(LayoutError::Corrupt(CorruptKind::LayoutFields));
    }
    let geo = Geometry::of(kind, info.capacity, info.max_payload)
        .map_err(|_| LayoutError::Corrupt(CorruptKind::LayoutFields))?;
    if geo.stride != info.stride
        || geo.data_offset != info.data_offset
        || geo.total_size != info.total_size
    {
        return Err(LayoutError::Corrupt(CorruptKind::LayoutFields));
    }
    if file_size < geo.total_size {
        return Err(LayoutError::Corrupt(CorruptKind::Truncated {
            expected: geo.total_size,
            found: file_size,
        }));
    }
    Ok(geo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_formula_matches_documentation() {
        let g = Geometry::new(8, 100).unwrap();
        assert_eq!(g.stride, 128);
        assert_eq!(
            g.total_size,
            (QUEUE_HEADER_SIZE + 8 * (SLOT_HEADER_SIZE + 128)) as u64
        );
        let g = Geometry::new(1024, 64).unwrap();
        assert_eq!(g.total_size, (QUEUE_HEADER_SIZE + 1024 * (64 + 64)) as u64);
        let g = Geometry::new(2, 0).unwrap();
        assert_eq!(g.stride, 0);
        assert_eq!(g.total_size, (QUEUE_HEADER_SIZE + 2 * 64) as u64);
    }

    #[test]
    fn pipe_size_formula() {
        let g = Geometry::of(ChannelKind::Pipe, 8, 64).unwrap();
        assert_eq!(g.stride, 128); // 32 + 64 rounded up to 64
        assert_eq!(g.total_size, (HEADER_SIZE + 2 * 8 * 128) as u64);
        let g = Geometry::of(ChannelKind::Pipe, 4, 32).unwrap();
        assert_eq!(g.stride, 64); // one cache line per message
        let info = g.info(1, 0);
        assert_eq!(validate(&info, g.total_size), Ok(g));
    }

    #[test]
    fn geometry_rejects_bad_capacity_and_payload() {
        assert_eq!(Geometry::new(0, 8), Err(GeometryError::CapacityTooSmall));
        assert_eq!(Geometry::new(1, 8), Err(GeometryError::CapacityTooSmall));
        assert_eq!(
            Geometry::new(3, 8),
            Err(GeometryError::CapacityNotPowerOfTwo)
        );
        assert_eq!(
            Geometry::new(1000, 8),
            Err(GeometryError::CapacityNotPowerOfTwo)
        );
        assert_eq!(
            Geometry::new(1 << 25, 8),
            Err(GeometryError::CapacityTooLarge)
        );
        assert_eq!(
            Geometry::new(2, MAX_PAYLOAD_LIMIT + 1),
            Err(GeometryError::PayloadTooLarge)
        );
        assert_eq!(
            Geometry::new(MAX_CAPACITY, MAX_PAYLOAD_LIMIT),
            Err(GeometryError::SegmentTooLarge)
        );
    }

    #[test]
    fn validate_accepts_what_create_writes() {
        let g = Geometry::new(16, 64).unwrap();
        let info = g.info(1, 0);
        assert_eq!(validate(&info, g.total_size), Ok(g));
        assert_eq!(validate(&info, g.total_size + 4096), Ok(g));
    }

    #[test]
    fn validate_rejects_each_kind_of_damage() {
        let g = Geometry::new(16, 64).unwrap();
        let good = g.info(1, 0);

        let mut i = good;
        i.magic ^= 1;
        assert_eq!(validate(&i, g.total_size), Err(LayoutError::BadMagic));

        let mut i = good;
        i.version = 99;
        assert_eq!(validate(&i, g.total_size), Err(LayoutError::Version(99)));

        for damage in [
            |i: &mut LayoutInfo| i.capacity = 12,
            |i: &mut LayoutInfo| i.capacity = 0,
            |i: &mut LayoutInfo| i.capacity = 32,
            |i: &mut LayoutInfo| i.stride = 8,
            |i: &mut LayoutInfo| i.max_payload = u32::MAX,
            |i: &mut LayoutInfo| i.data_offset += 64,
            |i: &mut LayoutInfo| i.total_size -= 1,
            |i: &mut LayoutInfo| i.header_size = 0,
            |i: &mut LayoutInfo| i.slot_header_size = 128,
            |i: &mut LayoutInfo| i.kind = 0,
            |i: &mut LayoutInfo| i.kind = 2, // a pipe's formula gives other sizes
        ] {
            let mut i = good;
            damage(&mut i);
            assert_eq!(
                validate(&i, g.total_size * 4),
                Err(LayoutError::Corrupt(CorruptKind::LayoutFields)),
                "{i:?}"
            );
        }

        assert_eq!(
            validate(&good, g.total_size - 1),
            Err(LayoutError::Corrupt(CorruptKind::Truncated {
                expected: g.total_size,
                found: g.total_size - 1
            }))
        );
    }
}
