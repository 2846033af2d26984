//! The view of a pipe's segment: its ends, and per direction the
//! positions, event counts and slots.

use std::ops::{Deref, DerefMut};
use std::ptr::addr_of;

use super::{Created, Segment, Sharing, Stale};
use crate::error::SetupError;
use crate::layout::{ChannelKind, Geometry, PipeHeader};
use crate::sync::{AtomicU32, AtomicU64};
use crate::wait::EventCount;

/// A segment of kind [`ChannelKind::Pipe`] (made only by the constructors
/// below, which check the kind): the pipe's accessors.
#[derive(Debug)]
pub(crate) struct PipeSegment(Segment);

impl PipeSegment {
    /// Creates a pipe segment (see `Segment::create`). A stale pipe needs
    /// no repair: an end whose holder died is free.
    pub(crate) fn create(
        name: &str,
        geo: Geometry,
        sharing: Sharing,
        stale: Stale,
    ) -> Result<PipeSegment, SetupError> {
        debug_assert_eq!(geo.kind, ChannelKind::Pipe);
        match Segment::create(name, geo, sharing, stale)? {
            Created::New(seg) => Ok(PipeSegment(seg)),
            Created::Stale(seg) => {
                seg.share_users()?;
                Ok(PipeSegment(seg))
            }
        }
    }

    /// Opens the pipe segment named `name` (a queue's is `WrongKind`).
    pub(crate) fn open(name: &str) -> Result<PipeSegment, SetupError> {
        Segment::open(name, ChannelKind::Pipe).map(PipeSegment)
    }
}

/// Pipe accessors: valid only on a segment of kind `Pipe` (checked by
/// `open`/`create`); `dir` is 0 (parent to child) or 1 (child to parent).
impl PipeSegment {
    fn pipe_header(&self) -> *const PipeHeader {
        self.0.map.as_ptr().cast()
    }

    /// The pid holding end `end` (0: parent, 1: child), 0 if none.
    pub(crate) fn end_owner(&self, end: usize) -> &AtomicU32 {
        // SAFETY: as in `Segment::init_word`; `end & 1` keeps the index in bounds.
        unsafe { &*addr_of!((*self.pipe_header()).init.0.ends[end & 1]) }
    }

    /// Direction `dir`'s producer position.
    pub(crate) fn tail(&self, dir: usize) -> &AtomicU64 {
        // SAFETY: as in `Segment::init_word`; `dir & 1` keeps the index in bounds.
        unsafe { &*addr_of!((*self.pipe_header()).dirs[dir & 1].tail.0) }
    }

    /// Direction `dir`'s consumer position.
    pub(crate) fn head(&self, dir: usize) -> &AtomicU64 {
        // SAFETY: as in `tail`.
        unsafe { &*addr_of!((*self.pipe_header()).dirs[dir & 1].head.0) }
    }

    /// Direction `dir`'s receiver event count.
    pub(crate) fn not_empty(&self, dir: usize) -> &EventCount {
        // SAFETY: as in `tail`.
        unsafe { &*addr_of!((*self.pipe_header()).events[dir & 1].0.not_empty) }
    }

    /// Direction `dir`'s sender event count.
    pub(crate) fn not_full(&self, dir: usize) -> &EventCount {
        // SAFETY: as in `tail`.
        unsafe { &*addr_of!((*self.pipe_header()).events[dir & 1].0.not_full) }
    }

    /// Start of direction `dir`'s slot `index` (header, then payload);
    /// `index` must be below the capacity.
    #[inline]
    pub(crate) fn slot_ptr(&self, dir: usize, index: usize) -> *mut u8 {
        debug_assert!(index < self.0.geo.capacity as usize);
        let cap = self.0.geo.capacity as usize;
        let off = self.0.geo.data_offset as usize
            + ((dir & 1) * cap + index) * self.0.geo.stride as usize;
        // SAFETY: `off + stride <= HEADER_SIZE + 2 × capacity × stride =
        // total_size <= mapping length` (layout formula, validated).
        unsafe { self.0.map.as_ptr().add(off) }
    }

    /// Direction `dir`'s slot `index` header (tests; the pipe goes through
    /// `spsc::Direction`).
    #[cfg(test)]
    pub(crate) fn slot(&self, dir: usize, index: usize) -> &crate::layout::PipeSlotHeader {
        // SAFETY: the slot starts 64-aligned (stride and data offset are
        // multiples of 64 in a page-aligned mapping) with at least 32 bytes
        // of header; PipeSlotHeader is all atomics, valid for any bits.
        unsafe {
            &*self
                .slot_ptr(dir, index)
                .cast::<crate::layout::PipeSlotHeader>()
        }
    }
}

impl Deref for PipeSegment {
    type Target = Segment;
    fn deref(&self) -> &Segment {
        &self.0
    }
}

impl DerefMut for PipeSegment {
    fn deref_mut(&mut self) -> &mut Segment {
        &mut self.0
    }
}
