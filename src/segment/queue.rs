//! The view of a queue's segment: its header's words, control block,
//! slot headers and payloads.

use std::ops::{Deref, DerefMut};
use std::ptr::addr_of;
use std::time::Duration;

use super::{Created, Segment, Sharing, Stale};
use crate::error::SetupError;
use crate::layout::{
    ChannelKind, ControlBlock, Geometry, HandleEntry, SlotHeader, HEADER_SIZE, MAX_HANDLES,
    QUEUE_HEADER_SIZE,
};
use crate::sync::{AtomicU32, AtomicU64};
use crate::wait::EventCount;

/// A segment of kind [`ChannelKind::Queue`] (made only by the constructors
/// below, which check the kind): the queue's accessors.
#[derive(Debug)]
pub(crate) struct QueueSegment(Segment);

impl QueueSegment {
    /// Creates a queue segment (see `Segment::create`); a stale one being
    /// reused is handed to `repair` while nobody else can open it.
    pub(crate) fn create(
        name: &str,
        geo: Geometry,
        sharing: Sharing,
        stale: Stale,
        repair: impl FnOnce(&QueueSegment),
    ) -> Result<QueueSegment, SetupError> {
        debug_assert_eq!(geo.kind, ChannelKind::Queue);
        match Segment::create(name, geo, sharing, stale)? {
            Created::New(seg) => Ok(QueueSegment(seg)),
            Created::Stale(seg) => {
                let seg = QueueSegment(seg);
                repair(&seg);
                seg.0.share_users()?;
                Ok(seg)
            }
        }
    }

    /// Opens the queue segment named `name` (a pipe's is `WrongKind`).
    pub(crate) fn open(name: &str) -> Result<QueueSegment, SetupError> {
        Segment::open(name, ChannelKind::Queue).map(QueueSegment)
    }

    /// Takes the queue's control lock (see `control.rs`).
    pub(crate) fn lock_control(
        &self,
        timeout: Duration,
    ) -> Result<crate::control::ControlGuard<'_>, crate::control::LockError> {
        self.control()
            .lock
            .lock(&self.0.fd, &self.0.control_local, timeout)
    }

    /// A queue's control block.
    pub(crate) fn control(&self) -> &ControlBlock {
        // SAFETY: a queue's mapping holds QUEUE_HEADER_SIZE bytes at least
        // (checked by `validate`), the control block at HEADER_SIZE, 64
        // aligned; its fields are atomics and a pthread mutex, which accept
        // any bits (the mutex's calls report what they cannot use).
        unsafe { &*self.0.map.as_ptr().add(HEADER_SIZE).cast::<ControlBlock>() }
    }

    /// Handle entry `i` (< MAX_HANDLES) of a queue.
    pub(crate) fn handle_entry(&self, i: usize) -> &HandleEntry {
        &self.control().handles[i % MAX_HANDLES].0
    }
    /// Set once a selective receiver has passed over a published message
    /// (see `QueueInit::passed_over`).
    pub(crate) fn passed_over(&self) -> &AtomicU32 {
        // SAFETY: as in `Segment::init_word`.
        unsafe { &*addr_of!((*self.0.header_ptr()).init.0.passed_over) }
    }

    /// The enqueue position.
    pub(crate) fn tail(&self) -> &AtomicU64 {
        // SAFETY: as in `Segment::init_word`.
        unsafe { &*addr_of!((*self.0.header_ptr()).tail.0) }
    }

    /// The dequeue position.
    pub(crate) fn head(&self) -> &AtomicU64 {
        // SAFETY: as in `Segment::init_word`.
        unsafe { &*addr_of!((*self.0.header_ptr()).head.0) }
    }

    /// Receivers' event count.
    pub(crate) fn not_empty(&self) -> &EventCount {
        // SAFETY: as in `Segment::init_word`; EventCount is two atomics.
        unsafe { &*addr_of!((*self.0.header_ptr()).not_empty.0) }
    }

    /// Senders' event count.
    pub(crate) fn not_full(&self) -> &EventCount {
        // SAFETY: as in `Segment::init_word`.
        unsafe { &*addr_of!((*self.0.header_ptr()).not_full.0) }
    }

    /// Selective receivers' event count.
    pub(crate) fn selective(&self) -> &EventCount {
        // SAFETY: as in `Segment::init_word`.
        unsafe { &*addr_of!((*self.0.header_ptr()).selective.0) }
    }

    /// Tasks marked done (join/task_done).
    pub(crate) fn done_count(&self) -> &AtomicU64 {
        // SAFETY: as in `Segment::init_word`.
        unsafe { &*addr_of!((*self.0.header_ptr()).join.0.done_count) }
    }

    /// Joiners' event count.
    pub(crate) fn joined(&self) -> &EventCount {
        // SAFETY: as in `Segment::init_word`.
        unsafe { &*addr_of!((*self.0.header_ptr()).join.0.joined) }
    }

    /// The slot headers.
    pub(crate) fn slots(&self) -> &[SlotHeader] {
        slots_of(&self.0)
    }

    /// Start of slot `index`'s payload area (`stride` bytes, 64-aligned).
    /// `index` must be below the capacity.
    #[inline]
    pub(crate) fn payload_ptr(&self, index: usize) -> *mut u8 {
        debug_assert!(index < self.0.geo.capacity as usize);
        let off = self.0.geo.data_offset as usize + index * self.0.geo.stride as usize;
        // SAFETY: `off + stride <= total_size <= mapping length` for every
        // index below the capacity (layout formula, validated).
        unsafe { self.0.map.as_ptr().add(off) }
    }
}

impl Deref for QueueSegment {
    type Target = Segment;
    fn deref(&self) -> &Segment {
        &self.0
    }
}

impl DerefMut for QueueSegment {
    fn deref_mut(&mut self) -> &mut Segment {
        &mut self.0
    }
}

/// The slot headers.
pub(super) fn slots_of(seg: &Segment) -> &[SlotHeader] {
    // SAFETY: `validate` (or `create`) checked that the mapping holds
    // HEADER_SIZE + capacity slot headers; SlotHeader is all atomics and
    // padding, valid for any bits, 64-aligned at this page-aligned
    // mapping's offset HEADER_SIZE.
    unsafe {
        std::slice::from_raw_parts(
            seg.map.as_ptr().add(QUEUE_HEADER_SIZE).cast::<SlotHeader>(),
            seg.geo.capacity as usize,
        )
    }
}
