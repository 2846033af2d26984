//! A pipe's structures: its header (the same first two lines as a
//! queue's), per-direction positions and event counts, the slot header.

use super::{CachePadded, LayoutInfo};
use crate::message::StoredHeader;
use crate::sync::{AtomicU32, AtomicU64};
use crate::wait::EventCount;

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
    /// Oldest ticket not yet freed, as the receiver (its only writer) last
    /// stored it: once per burst, so it may lag the slots' freed marks
    /// (see `spsc`); read by the sender when its cached copy says "full".
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
pub struct PipeSlotHeader {
    /// For ticket `t` of this slot: `t` (0 on the first lap) free, `t +
    /// 1` published (Release, by the sender), `t + capacity` freed
    /// (Release, by the receiver: free for the next lap). The table is in
    /// `spsc`'s docs.
    pub seq: AtomicU64,
    /// The message header (see [`StoredHeader`]).
    pub header: StoredHeader,
    /// Reserved (0).
    pub flags: AtomicU32,
    /// Padding to the 32 bytes of the format (0).
    pub _pad: u32,
}

impl PipeSlotHeader {
    /// A slot as the zeroed file leaves it (heap models).
    #[cfg(loom)]
    #[allow(clippy::new_without_default)] // as `SlotHeader::new`: models only
    pub fn new() -> PipeSlotHeader {
        PipeSlotHeader {
            seq: AtomicU64::new(0),
            header: StoredHeader::new(),
            flags: AtomicU32::new(0),
            _pad: 0,
        }
    }
}
