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

mod geometry;
#[cfg(not(loom))]
pub mod offsets;
mod pipe;
mod queue;

use bytemuck::{Pod, Zeroable};

pub use crate::kind::ChannelKind;
#[cfg(not(loom))]
use memoffset::offset_of;

#[cfg(not(loom))]
use crate::message::StoredHeader;

pub(crate) use geometry::{validate, Geometry, LayoutError};
pub(crate) use pipe::PipeHeader;
pub use pipe::PipeSlotHeader;
#[cfg(not(loom))]
pub(crate) use queue::ControlBlock;
pub use queue::SlotHeader;
pub(crate) use queue::{HandleEntry, RecoveryCounters, SegmentHeader, HANDLE_FREE, HANDLE_IN_USE};

/// "MULPROC\0" as a little-endian u64.
pub(crate) const MAGIC: u64 = u64::from_le_bytes(*b"MULPROC\0");
/// Bumped on every change to the segment's shape or protocol.
pub(crate) const LAYOUT_VERSION: u32 = 4;
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

/// The segment shape of each kind (the enum itself is in `kind`, which
/// the errors name without depending on the layout).
impl ChannelKind {
    pub(crate) fn from_u32(v: u32) -> Option<ChannelKind> {
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
