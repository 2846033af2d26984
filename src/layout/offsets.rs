//! Byte offsets and values of the segment format, for the crate's own
//! integration tests, which forge and damage segments on purpose
//! (re-exported hidden in `mulproc::__layout`; not part of the API, may
//! change with every layout version). Derived from the structures
//! themselves, so a test never carries a copied magic number.

use memoffset::offset_of;

use super::pipe::{PipeDirection, PipeInit};
use super::queue::{JoinCounters, QueueInit};
use super::{LayoutInfo, PipeHeader, SegmentHeader, SlotHeader};
use crate::message::StoredHeader;

/// The layout version this build reads and writes.
pub const VERSION: u32 = super::LAYOUT_VERSION;
/// The magic number at offset 0.
pub const MAGIC: u64 = super::MAGIC;
/// The init word's value once a segment is initialised.
pub const INIT_DONE: u32 = super::INIT_DONE;
/// A cache line (every header line is one).
pub const CACHE_LINE: u64 = super::CACHE_LINE as u64;

/// `LayoutInfo` fields, at the start of every segment.
pub const MAGIC_AT: u64 = offset_of!(LayoutInfo, magic) as u64;
#[allow(missing_docs)]
pub const VERSION_AT: u64 = offset_of!(LayoutInfo, version) as u64;
#[allow(missing_docs)]
pub const HEADER_SIZE_AT: u64 = offset_of!(LayoutInfo, header_size) as u64;
#[allow(missing_docs)]
pub const CAPACITY_AT: u64 = offset_of!(LayoutInfo, capacity) as u64;
#[allow(missing_docs)]
pub const MAX_PAYLOAD_AT: u64 = offset_of!(LayoutInfo, max_payload) as u64;
#[allow(missing_docs)]
pub const SLOT_HEADER_SIZE_AT: u64 = offset_of!(LayoutInfo, slot_header_size) as u64;
#[allow(missing_docs)]
pub const STRIDE_AT: u64 = offset_of!(LayoutInfo, stride) as u64;
#[allow(missing_docs)]
pub const DATA_OFFSET_AT: u64 = offset_of!(LayoutInfo, data_offset) as u64;
#[allow(missing_docs)]
pub const TOTAL_SIZE_AT: u64 = offset_of!(LayoutInfo, total_size) as u64;
#[allow(missing_docs)]
pub const CREATOR_PID_AT: u64 = offset_of!(LayoutInfo, creator_pid) as u64;
/// `ChannelKind` as a `u32`: 1 queue, 2 pipe.
pub const KIND_AT: u64 = offset_of!(LayoutInfo, kind) as u64;
/// The init word (queue and pipe alike).
pub const INIT_AT: u64 = (offset_of!(SegmentHeader, init) + offset_of!(QueueInit, init)) as u64;

/// A queue's enqueue position.
pub const TAIL_AT: u64 = offset_of!(SegmentHeader, tail) as u64;
/// A queue's dequeue position.
pub const HEAD_AT: u64 = offset_of!(SegmentHeader, head) as u64;
/// Start of a queue's event counts and join counters (lines 4 to 7).
pub const EVENTS_AT: u64 = offset_of!(SegmentHeader, not_empty) as u64;
/// A queue's count of messages marked done.
pub const DONE_COUNT_AT: u64 =
    (offset_of!(SegmentHeader, join) + offset_of!(JoinCounters, done_count)) as u64;
const WAITERS: usize = crate::wait::WAITERS_OFFSET;
/// Sleeper count of a queue's receivers (`not_empty.waiters`).
pub const NOT_EMPTY_WAITERS: u64 = (offset_of!(SegmentHeader, not_empty) + WAITERS) as u64;
/// Sleeper count of a queue's senders (`not_full.waiters`).
pub const NOT_FULL_WAITERS: u64 = (offset_of!(SegmentHeader, not_full) + WAITERS) as u64;
/// Sleeper count of a queue's selective receivers.
pub const SELECTIVE_WAITERS: u64 = (offset_of!(SegmentHeader, selective) + WAITERS) as u64;

/// Size of the segment header (a pipe's slots start here).
pub const HEADER_SIZE: u64 = super::HEADER_SIZE as u64;
/// Where a queue's slot headers start (after its control block).
pub const QUEUE_HEADER_SIZE: u64 = super::QUEUE_HEADER_SIZE as u64;
/// Size of a queue's slot header.
pub const SLOT_HEADER_SIZE: u64 = super::SLOT_HEADER_SIZE as u64;
/// A queue slot header's sequence word.
pub const SLOT_SEQ_AT: u64 = offset_of!(SlotHeader, seq) as u64;
/// A queue slot header's payload length.
pub const SLOT_LEN_AT: u64 =
    (offset_of!(SlotHeader, header) + offset_of!(StoredHeader, len)) as u64;
/// Payload areas are this multiple (and aligned to it).
pub const PAYLOAD_ALIGN: u64 = super::PAYLOAD_ALIGN as u64;

/// A pipe direction's enqueue position (`dir` 0 or 1).
pub const fn pipe_tail_at(dir: usize) -> u64 {
    (offset_of!(PipeHeader, dirs)
        + dir * std::mem::size_of::<PipeDirection>()
        + offset_of!(PipeDirection, tail)) as u64
}
/// A pipe direction's dequeue position (`dir` 0 or 1).
pub const fn pipe_head_at(dir: usize) -> u64 {
    (offset_of!(PipeHeader, dirs)
        + dir * std::mem::size_of::<PipeDirection>()
        + offset_of!(PipeDirection, head)) as u64
}
/// Which pid holds each pipe end (two `u32`s).
pub const PIPE_ENDS_AT: u64 = (offset_of!(PipeHeader, init) + offset_of!(PipeInit, ends)) as u64;
