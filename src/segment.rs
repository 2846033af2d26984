//! Named shared-memory segments: create, open-and-verify, remove.
//!
//! Plain `shm_open`/`mmap` through [`crate::sys`] rather than the
//! `shared_memory` crate: the checks `open` must make (owner and mode of the
//! very object mapped, via `fstat` on its descriptor), the group-shared mode
//! option, and removing a name only if it still names our segment all need
//! the descriptor, which `shared_memory` does not expose.

use std::ffi::CString;
use std::io;
use std::ptr::{self, addr_of};
use std::time::{Duration, Instant};

use crate::error::{CorruptError, CorruptKind, NameProblem, PermissionProblem, SetupError};
use crate::layout::{
    self, ChannelKind, Geometry, LayoutError, LayoutInfo, PipeHeader, PipeSlotHeader,
    SegmentHeader, SlotHeader, HEADER_SIZE, INIT_DONE, LAYOUT_VERSION, MAX_SEGMENT_SIZE,
};
use crate::layout::{ControlBlock, HandleEntry, MAX_HANDLES, QUEUE_HEADER_SIZE};
use crate::sync::{AtomicU32, AtomicU64, Ordering};
use crate::sys::{self, ofd, Mapping};
use crate::wait::EventCount;
use std::os::fd::{AsRawFd, OwnedFd};

/// Longest queue name, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// Prefix of every segment's file name in `/dev/shm`.
pub(crate) const OS_PREFIX: &str = "mulproc.";
/// How long `open` waits for a creator that is still initialising.
const INIT_WAIT: Duration = Duration::from_millis(200);

/// Checks a queue name and returns the shared-memory object name for it.
pub(crate) fn os_name(name: &str) -> Result<CString, SetupError> {
    let bad = |problem| SetupError::InvalidName {
        name: name.to_owned(),
        problem,
    };
    if name.is_empty() {
        return Err(bad(NameProblem::Empty));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad(NameProblem::TooLong));
    }
    if name.contains('/') {
        return Err(bad(NameProblem::Slash));
    }
    if name.starts_with('.') {
        return Err(bad(NameProblem::LeadingDot));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    {
        return Err(bad(NameProblem::BadCharacter));
    }
    Ok(sys::shm_name(&format!("{OS_PREFIX}{name}")))
}

/// Who may open a segment besides its owner.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Sharing {
    /// Only the creating user (mode 0600). The default.
    #[default]
    Owner,
    /// Also the owner's group (mode 0660). Never other users.
    Group,
}

/// What [`Queue::create`](crate::Queue::create) does when the name exists
/// but its segment is stale: every process that used it has exited (killed,
/// crashed, or ended without removing it), or its creation crashed half-way.
/// A segment some live process still has open is never stale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Stale {
    /// Fail with [`SetupError::Stale`]. The default.
    #[default]
    Fail,
    /// Remove it and create a new, empty one.
    Recreate,
    /// Keep it and the messages in it: repair what its dead users left
    /// (claims never published are skipped, messages held by dead
    /// receivers offered again, their unfinished tasks counted abandoned)
    /// and carry on. Fails with [`SetupError::StaleShapeMismatch`] if its
    /// capacity or payload size differ from the ones asked for; a segment
    /// whose creation crashed half-way is recreated.
    Reuse,
}

impl Sharing {
    fn mode(self) -> libc::mode_t {
        match self {
            Sharing::Owner => 0o600,
            Sharing::Group => 0o660,
        }
    }
}

/// A mapped, verified segment.
#[derive(Debug)]
pub(crate) struct Segment {
    map: Mapping,
    /// Kept open for the liveness locks (`sys::ofd`), which the kernel
    /// drops when the last descriptor of this open file description closes.
    fd: OwnedFd,
    /// Orders this handle's threads on the control lock (the kernel lock
    /// is per open file description, shared by our threads).
    control_local: std::sync::Mutex<()>,
    geo: Geometry,
    name: String,
    os_name: CString,
    /// Identity of the object we mapped, to remove the name only if it still
    /// names this object.
    dev_ino: (u64, u64),
    remove_on_drop: bool,
}

fn os_err(name: &str, op: &'static str, e: io::Error) -> SetupError {
    match e.raw_os_error() {
        Some(libc::ENOENT) => SetupError::NotFound {
            name: name.to_owned(),
        },
        Some(libc::EEXIST) => SetupError::AlreadyExists {
            name: name.to_owned(),
        },
        Some(libc::EACCES) | Some(libc::EPERM) => SetupError::PermissionDenied {
            name: name.to_owned(),
            reason: PermissionProblem::Os,
        },
        _ => SetupError::Os {
            name: name.to_owned(),
            op,
            source: e,
        },
    }
}

impl Segment {
    /// Creates a new segment, initialises it and marks it complete. The
    /// name is removed again if any step fails. If the name exists and its
    /// segment is stale (every process that used it is gone), `stale`
    /// decides: fail with [`SetupError::Stale`], recreate, or reuse.
    pub(crate) fn create(
        name: &str,
        geo: Geometry,
        sharing: Sharing,
        stale: Stale,
    ) -> Result<Segment, SetupError> {
        let os_name = os_name(name)?;
        crate::wait::barriers::register();
        for _ in 0..3 {
            match sys::shm_create(&os_name, sharing.mode()) {
                Ok(fd) => return Segment::create_on(name, &os_name, fd, geo),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) => return Err(os_err(name, "shm_open", e)),
            }
            let exists = || SetupError::AlreadyExists {
                name: name.to_owned(),
            };
            let fd = match sys::shm_open_existing(&os_name) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => continue, // removed meanwhile
                Err(_) => return Err(exists()),
            };
            // Only our own, private segments can be judged stale; anything
            // else under the name is somebody else's.
            let st = sys::fstat(&fd).map_err(|e| os_err(name, "fstat", e))?;
            if st.uid != sys::euid() || st.mode & 0o007 != 0 || !is_stale(&fd)? {
                return Err(exists());
            }
            // Stale. Fence out anyone who turns up from now on.
            if !ofd::try_lock(&fd, ofd::USERS, ofd::Kind::Exclusive)
                .map_err(|e| os_err(name, "fcntl(F_OFD_SETLK)", e))?
            {
                return Err(exists());
            }
            let init_done = file_init_done(&fd, &st);
            match stale {
                Stale::Fail => {
                    return Err(SetupError::Stale {
                        name: name.to_owned(),
                    })
                }
                Stale::Reuse if init_done => {
                    let seg = Segment::reuse(name, &os_name, fd, st, geo)?;
                    if geo.kind == ChannelKind::Queue {
                        crate::recovery::repair_stale(&seg);
                    }
                    seg.share_users()?;
                    return Ok(seg);
                }
                // Recreate (and Reuse of a segment whose creation crashed
                // half-way: there is nothing in it to keep).
                _ => {
                    if sys::shm_unlink(&os_name).is_err() {
                        return Err(exists());
                    }
                }
            }
        }
        Err(SetupError::AlreadyExists {
            name: name.to_owned(),
        })
    }

    /// Sizes, maps and initialises a segment just created on `fd`, holding
    /// the users lock exclusively until the init word is written.
    fn create_on(
        name: &str,
        os_name: &CString,
        fd: OwnedFd,
        geo: Geometry,
    ) -> Result<Segment, SetupError> {
        // From here on, undo the name on failure.
        let undo = |e: SetupError| {
            let _ = sys::shm_unlink(os_name);
            e
        };
        // Someone judging our fresh file stale between shm_open and this
        // lock holds it now and will replace the file: leave it to them.
        match ofd::try_lock(&fd, ofd::USERS, ofd::Kind::Exclusive) {
            Ok(true) => {}
            Ok(false) => {
                return Err(SetupError::AlreadyExists {
                    name: name.to_owned(),
                })
            }
            Err(e) => return Err(undo(os_err(name, "fcntl(F_OFD_SETLK)", e))),
        }
        let st = sys::fstat(&fd).map_err(|e| undo(os_err(name, "fstat", e)))?;
        sys::ftruncate(&fd, geo.total_size).map_err(|e| undo(os_err(name, "ftruncate", e)))?;
        let map = Mapping::map(&fd, geo.total_size as usize)
            .map_err(|e| undo(os_err(name, "mmap", e)))?;
        let seg = Segment {
            map,
            fd,
            control_local: std::sync::Mutex::new(()),
            geo,
            name: name.to_owned(),
            os_name: os_name.clone(),
            dev_ino: (st.dev, st.ino),
            remove_on_drop: true,
        };
        seg.initialise();
        seg.share_users().map_err(undo)?;
        Ok(seg)
    }

    /// Takes over a stale segment (every user gone; we hold the users lock
    /// exclusively): verifies it as `open` does and that it has the shape
    /// asked for. The caller repairs it before use.
    fn reuse(
        name: &str,
        os_name: &CString,
        fd: OwnedFd,
        st: sys::FileStat,
        geo: Geometry,
    ) -> Result<Segment, SetupError> {
        let (map, found) = verify(name, &fd, st, geo.kind)?;
        if found != geo {
            return Err(SetupError::StaleShapeMismatch {
                name: name.to_owned(),
            });
        }
        Ok(Segment {
            map,
            fd,
            control_local: std::sync::Mutex::new(()),
            geo,
            name: name.to_owned(),
            os_name: os_name.clone(),
            dev_ino: (st.dev, st.ino),
            remove_on_drop: true,
        })
    }

    /// Turns our exclusive hold of the users lock into a shared one (after
    /// initialising or repairing): others may open the segment now.
    pub(crate) fn share_users(&self) -> Result<(), SetupError> {
        match ofd::try_lock(&self.fd, ofd::USERS, ofd::Kind::Shared) {
            Ok(true) => Ok(()),
            Ok(false) => Err(SetupError::Busy {
                name: self.name.clone(),
            }),
            Err(e) => Err(os_err(&self.name, "fcntl(F_OFD_SETLK)", e)),
        }
    }

    /// Writes the layout and the initial slot sequence numbers, then the
    /// init word. The file is zero-filled by `ftruncate`, so
    /// every atomic not written here starts at 0.
    fn initialise(&self) {
        let info = self.geo.info(std::process::id(), sys::euid());
        let hdr = self.header_ptr();
        // SAFETY: `hdr` points at the start of our mapping, which is at least
        // HEADER_SIZE bytes and page aligned. No other process trusts the
        // info before it sees INIT_DONE below, so this plain write races
        // with no reader that uses it.
        unsafe { ptr::write_volatile(addr_of!((*hdr).info.0).cast_mut(), info) };
        if self.geo.kind == ChannelKind::Queue {
            for (i, slot) in self.slots().iter().enumerate() {
                slot.seq.store(i as u64, Ordering::Relaxed);
            }
        } // A pipe's slots start all-zero: "not published" for every lap.
          // SYNC POINT. Release: pairs with the Acquire load in `open`; the
          // info and slot sequence words above are visible to every opener.
        self.init_word().store(INIT_DONE, Ordering::Release);
    }

    /// Opens an existing segment and checks, before trusting anything in
    /// it: owner and mode, size, magic, version, init complete, and every
    /// layout field against the layout formula. Holds the users lock
    /// (shared) for as long as the segment is open.
    pub(crate) fn open(name: &str, kind: ChannelKind) -> Result<Segment, SetupError> {
        let os_name = os_name(name)?;
        crate::wait::barriers::register();
        let fd = sys::shm_open_existing(&os_name).map_err(|e| os_err(name, "shm_open", e))?;
        let st = sys::fstat(&fd).map_err(|e| os_err(name, "fstat", e))?;
        let (map, geo) = verify(name, &fd, st, kind)?;
        // A creator holds the users lock exclusively until just after its
        // init word; so does a process repairing a stale segment.
        let started = Instant::now();
        loop {
            match ofd::try_lock(&fd, ofd::USERS, ofd::Kind::Shared) {
                Ok(true) => break,
                Ok(false) if started.elapsed() < INIT_WAIT => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Ok(false) => {
                    return Err(SetupError::Busy {
                        name: name.to_owned(),
                    })
                }
                Err(e) => return Err(os_err(name, "fcntl(F_OFD_SETLK)", e)),
            }
        }
        Ok(Segment {
            map,
            fd,
            control_local: std::sync::Mutex::new(()),
            geo,
            name: name.to_owned(),
            os_name,
            dev_ino: (st.dev, st.ino),
            remove_on_drop: false,
        })
    }

    /// Removes `name` (the processes that have it mapped keep using it).
    pub(crate) fn remove(name: &str) -> Result<(), SetupError> {
        let os_name = os_name(name)?;
        sys::shm_unlink(&os_name).map_err(|e| os_err(name, "shm_unlink", e))
    }

    /// Removes our name now, if it still names this segment.
    fn unlink_if_ours(&self) -> Result<(), SetupError> {
        let fd = match sys::shm_open_existing(&self.os_name) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(()),
            Err(e) => return Err(os_err(&self.name, "shm_open", e)),
        };
        let st = sys::fstat(&fd).map_err(|e| os_err(&self.name, "fstat", e))?;
        if (st.dev, st.ino) != self.dev_ino {
            return Ok(()); // someone removed ours and made a new one: not ours to remove
        }
        match sys::shm_unlink(&self.os_name) {
            Err(e) if e.raw_os_error() != Some(libc::ENOENT) => {
                Err(os_err(&self.name, "shm_unlink", e))
            }
            _ => Ok(()),
        }
    }

    /// Removes the name now (if it still names this segment) and not again
    /// on drop.
    pub(crate) fn unlink(&mut self) -> Result<(), SetupError> {
        self.remove_on_drop = false;
        self.unlink_if_ours()
    }

    pub(crate) fn set_remove_on_drop(&mut self, remove: bool) {
        self.remove_on_drop = remove;
    }

    pub(crate) fn remove_on_drop(&self) -> bool {
        self.remove_on_drop
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn geometry(&self) -> Geometry {
        self.geo
    }

    /// Takes the queue's control lock (see `control.rs`).
    pub(crate) fn lock_control(
        &self,
        timeout: Duration,
    ) -> Result<crate::control::ControlGuard<'_>, crate::control::LockError> {
        self.control()
            .lock
            .lock(&self.fd, &self.control_local, timeout)
    }

    /// The descriptor the liveness locks are taken on.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
    }

    /// A queue's control block.
    pub(crate) fn control(&self) -> &ControlBlock {
        debug_assert_eq!(self.geo.kind, ChannelKind::Queue);
        // SAFETY: a queue's mapping holds QUEUE_HEADER_SIZE bytes at least
        // (checked by `validate`), the control block at HEADER_SIZE, 64
        // aligned; its fields are atomics and a pthread mutex, which accept
        // any bits (the mutex's calls report what they cannot use).
        unsafe { &*self.map.as_ptr().add(HEADER_SIZE).cast::<ControlBlock>() }
    }

    /// Handle entry `i` (< MAX_HANDLES) of a queue.
    pub(crate) fn handle_entry(&self, i: usize) -> &HandleEntry {
        &self.control().handles[i % MAX_HANDLES].0
    }

    fn header_ptr(&self) -> *const SegmentHeader {
        self.map.as_ptr().cast()
    }

    fn init_word(&self) -> &AtomicU32 {
        // SAFETY: the mapping holds a whole SegmentHeader (checked at
        // create/open); the field is an atomic, valid for any bits, and
        // lives as long as `self.map`.
        unsafe { &*addr_of!((*self.header_ptr()).init.0.init) }
    }

    /// Set once a selective receiver has passed over a published message
    /// (see `QueueInit::passed_over`).
    pub(crate) fn passed_over(&self) -> &AtomicU32 {
        // SAFETY: as in `init_word`.
        unsafe { &*addr_of!((*self.header_ptr()).init.0.passed_over) }
    }

    /// The enqueue position.
    pub(crate) fn tail(&self) -> &AtomicU64 {
        // SAFETY: as in `init_word`.
        unsafe { &*addr_of!((*self.header_ptr()).tail.0) }
    }

    /// The dequeue position.
    pub(crate) fn head(&self) -> &AtomicU64 {
        // SAFETY: as in `init_word`.
        unsafe { &*addr_of!((*self.header_ptr()).head.0) }
    }

    /// Receivers' event count.
    pub(crate) fn not_empty(&self) -> &EventCount {
        // SAFETY: as in `init_word`; EventCount is two atomics.
        unsafe { &*addr_of!((*self.header_ptr()).not_empty.0) }
    }

    /// Senders' event count.
    pub(crate) fn not_full(&self) -> &EventCount {
        // SAFETY: as in `init_word`.
        unsafe { &*addr_of!((*self.header_ptr()).not_full.0) }
    }

    /// Selective receivers' event count.
    pub(crate) fn selective(&self) -> &EventCount {
        // SAFETY: as in `init_word`.
        unsafe { &*addr_of!((*self.header_ptr()).selective.0) }
    }

    /// Tasks marked done (join/task_done).
    pub(crate) fn done_count(&self) -> &AtomicU64 {
        // SAFETY: as in `init_word`.
        unsafe { &*addr_of!((*self.header_ptr()).join.0.done_count) }
    }

    /// Joiners' event count.
    pub(crate) fn joined(&self) -> &EventCount {
        // SAFETY: as in `init_word`.
        unsafe { &*addr_of!((*self.header_ptr()).join.0.joined) }
    }

    /// The slot headers.
    pub(crate) fn slots(&self) -> &[SlotHeader] {
        // SAFETY: `validate` (or `create`) checked that the mapping holds
        // HEADER_SIZE + capacity slot headers; SlotHeader is all atomics and
        // padding, valid for any bits, 64-aligned at this page-aligned
        // mapping's offset HEADER_SIZE.
        unsafe {
            std::slice::from_raw_parts(
                self.map
                    .as_ptr()
                    .add(QUEUE_HEADER_SIZE)
                    .cast::<SlotHeader>(),
                self.geo.capacity as usize,
            )
        }
    }

    /// Start of slot `index`'s payload area (`stride` bytes, 64-aligned).
    /// `index` must be below the capacity.
    #[inline]
    pub(crate) fn payload_ptr(&self, index: usize) -> *mut u8 {
        debug_assert!(index < self.geo.capacity as usize);
        let off = self.geo.data_offset as usize + index * self.geo.stride as usize;
        // SAFETY: `off + stride <= total_size <= mapping length` for every
        // index below the capacity (layout formula, validated).
        unsafe { self.map.as_ptr().add(off) }
    }
}

/// Pipe accessors: valid only on a segment of kind `Pipe` (checked by
/// `open`/`create`); `dir` is 0 (parent to child) or 1 (child to parent).
impl Segment {
    fn pipe_header(&self) -> *const PipeHeader {
        debug_assert_eq!(self.geo.kind, ChannelKind::Pipe);
        self.map.as_ptr().cast()
    }

    /// The pid holding end `end` (0: parent, 1: child), 0 if none.
    pub(crate) fn pipe_end_owner(&self, end: usize) -> &AtomicU32 {
        // SAFETY: as in `init_word`; `end & 1` keeps the index in bounds.
        unsafe { &*addr_of!((*self.pipe_header()).init.0.ends[end & 1]) }
    }

    /// Direction `dir`'s producer position.
    pub(crate) fn pipe_tail(&self, dir: usize) -> &AtomicU64 {
        // SAFETY: as in `init_word`; `dir & 1` keeps the index in bounds.
        unsafe { &*addr_of!((*self.pipe_header()).dirs[dir & 1].tail.0) }
    }

    /// Direction `dir`'s consumer position.
    pub(crate) fn pipe_head(&self, dir: usize) -> &AtomicU64 {
        // SAFETY: as in `pipe_tail`.
        unsafe { &*addr_of!((*self.pipe_header()).dirs[dir & 1].head.0) }
    }

    /// Direction `dir`'s receiver event count.
    pub(crate) fn pipe_not_empty(&self, dir: usize) -> &EventCount {
        // SAFETY: as in `pipe_tail`.
        unsafe { &*addr_of!((*self.pipe_header()).events[dir & 1].0.not_empty) }
    }

    /// Direction `dir`'s sender event count.
    pub(crate) fn pipe_not_full(&self, dir: usize) -> &EventCount {
        // SAFETY: as in `pipe_tail`.
        unsafe { &*addr_of!((*self.pipe_header()).events[dir & 1].0.not_full) }
    }

    /// Start of direction `dir`'s slot `index` (header, then payload);
    /// `index` must be below the capacity.
    #[inline]
    pub(crate) fn pipe_slot_ptr(&self, dir: usize, index: usize) -> *mut u8 {
        debug_assert!(index < self.geo.capacity as usize);
        let cap = self.geo.capacity as usize;
        let off =
            self.geo.data_offset as usize + ((dir & 1) * cap + index) * self.geo.stride as usize;
        // SAFETY: `off + stride <= HEADER_SIZE + 2 × capacity × stride =
        // total_size <= mapping length` (layout formula, validated).
        unsafe { self.map.as_ptr().add(off) }
    }

    /// Direction `dir`'s slot `index` header.
    #[inline]
    pub(crate) fn pipe_slot(&self, dir: usize, index: usize) -> &PipeSlotHeader {
        // SAFETY: the slot starts 64-aligned (stride and data offset are
        // multiples of 64 in a page-aligned mapping) with at least 32 bytes
        // of header; PipeSlotHeader is all atomics, valid for any bits.
        unsafe { &*self.pipe_slot_ptr(dir, index).cast::<PipeSlotHeader>() }
    }
}

/// The checks `open` makes before trusting a segment, on an open
/// descriptor: owner and mode, size, magic, version, init complete (waiting
/// for it a little), every layout field, and the kind.
fn verify(
    name: &str,
    fd: &OwnedFd,
    mut st: sys::FileStat,
    kind: ChannelKind,
) -> Result<(Mapping, Geometry), SetupError> {
    let me = sys::euid();
    if st.uid != me {
        return Err(SetupError::PermissionDenied {
            name: name.to_owned(),
            reason: PermissionProblem::OtherOwner { owner: st.uid, me },
        });
    }
    if st.mode & 0o007 != 0 {
        return Err(SetupError::PermissionDenied {
            name: name.to_owned(),
            reason: PermissionProblem::OpenToOthers { mode: st.mode },
        });
    }
    let creator_alive = || ofd::held_by_other(fd, ofd::USERS, ofd::Kind::Shared).unwrap_or(true);
    // A creator sizes the file right after creating it: a file smaller
    // than a header may be one caught in between.
    let started = Instant::now();
    while st.size < HEADER_SIZE as u64 && started.elapsed() < INIT_WAIT {
        std::thread::sleep(Duration::from_millis(1));
        st = sys::fstat(fd).map_err(|e| os_err(name, "fstat", e))?;
    }
    let corrupt = |kind| SetupError::Corrupt {
        name: name.to_owned(),
        source: CorruptError { kind },
    };
    if st.size == 0 {
        return Err(SetupError::InitIncomplete {
            name: name.to_owned(),
            creator_pid: 0,
            creator_alive: creator_alive(),
        });
    }
    if st.size < HEADER_SIZE as u64 {
        return Err(corrupt(CorruptKind::Truncated {
            expected: HEADER_SIZE as u64,
            found: st.size,
        }));
    }
    let map_len = st.size.min(MAX_SEGMENT_SIZE) as usize;
    let map = Mapping::map(fd, map_len).map_err(|e| os_err(name, "mmap", e))?;
    let hdr = map.as_ptr().cast::<SegmentHeader>();
    // SAFETY: the mapping holds at least HEADER_SIZE bytes, enough for a
    // SegmentHeader, and is page aligned; AtomicU32 accepts any bits.
    let init = unsafe { &(*addr_of!((*hdr).init.0.init)) };
    let read_info = || {
        // SAFETY: as above; LayoutInfo is Pod, so any bytes are a valid
        // value, and the volatile copy never creates a reference to
        // memory another process may be writing.
        unsafe { ptr::read_volatile(addr_of!((*hdr).info.0)) }
    };
    // Acquire: pairs with the Release store in `initialise`.
    while init.load(Ordering::Acquire) != INIT_DONE {
        if started.elapsed() >= INIT_WAIT {
            let info: LayoutInfo = read_info();
            if info.magic != layout::MAGIC && info.magic != 0 {
                return Err(SetupError::NotAQueue {
                    name: name.to_owned(),
                });
            }
            return Err(SetupError::InitIncomplete {
                name: name.to_owned(),
                creator_pid: info.creator_pid,
                creator_alive: creator_alive(),
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let info = read_info();
    let geo = layout::validate(&info, map.len() as u64).map_err(|e| match e {
        LayoutError::BadMagic => SetupError::NotAQueue {
            name: name.to_owned(),
        },
        LayoutError::Version(found) => SetupError::IncompatibleVersion {
            name: name.to_owned(),
            found,
            expected: LAYOUT_VERSION,
        },
        LayoutError::Corrupt(kind) => corrupt(kind),
    })?;
    if geo.kind != kind {
        return Err(SetupError::WrongKind {
            name: name.to_owned(),
            found: geo.kind,
            expected: kind,
        });
    }
    Ok((map, geo))
}

/// True if nobody alive uses the segment on `fd`: no process holds the
/// users lock, and none takes it within the time a creator needs to get
/// from `shm_open` to taking it. A segment of another layout version (whose
/// users may not take the lock) is never judged stale.
pub(crate) fn is_stale(fd: &OwnedFd) -> Result<bool, SetupError> {
    let started = Instant::now();
    loop {
        if ofd::held_by_other(fd, ofd::USERS, ofd::Kind::Exclusive).unwrap_or(true) {
            return Ok(false);
        }
        let st = match sys::fstat(fd) {
            Ok(st) => st,
            Err(_) => return Ok(false),
        };
        if file_init_done(fd, &st) {
            return Ok(true);
        }
        if started.elapsed() >= INIT_WAIT {
            // Never initialised, and nobody has held it for this long: the
            // creator died half-way.
            return Ok(file_head(fd, &st).is_none_or(|(v, _)| v == LAYOUT_VERSION));
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

/// What the file's first two lines say, read with `pread` (no mapping):
/// its layout version and whether its init word says initialisation
/// completed. `None` if it is too short or not a mulproc segment.
fn file_head(fd: &OwnedFd, st: &sys::FileStat) -> Option<(u32, bool)> {
    if st.size < (2 * layout::CACHE_LINE) as u64 {
        return None;
    }
    let mut head = [0u8; 2 * layout::CACHE_LINE];
    // SAFETY: `fd` is open; `head` is writable for its whole length.
    let n = unsafe { libc::pread(fd.as_raw_fd(), head.as_mut_ptr().cast(), head.len(), 0) };
    if n != head.len() as isize {
        return None;
    }
    let info: LayoutInfo = bytemuck::pod_read_unaligned(&head[..std::mem::size_of::<LayoutInfo>()]);
    let init = bytemuck::pod_read_unaligned::<u32>(&head[layout::CACHE_LINE..][..4]);
    (info.magic == layout::MAGIC).then_some((info.version, init == INIT_DONE))
}

/// True if the file is a segment of this layout version whose
/// initialisation completed.
fn file_init_done(fd: &OwnedFd, st: &sys::FileStat) -> bool {
    file_head(fd, st) == Some((LAYOUT_VERSION, true))
}

impl Drop for Segment {
    fn drop(&mut self) {
        if self.remove_on_drop {
            // A failure here leaves a name behind for `Queue::remove`; there
            // is no caller to report it to. `Queue::close` reports it.
            let _ = self.unlink_if_ours();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(name: &str) -> Option<NameProblem> {
        match os_name(name) {
            Ok(_) => None,
            Err(SetupError::InvalidName { problem, .. }) => Some(problem),
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn names_are_validated() {
        assert_eq!(problem("jobs"), None);
        assert_eq!(problem("a.b-c_D9"), None);
        assert_eq!(problem(""), Some(NameProblem::Empty));
        assert_eq!(problem("a/b"), Some(NameProblem::Slash));
        assert_eq!(problem("/jobs"), Some(NameProblem::Slash));
        assert_eq!(problem(".hidden"), Some(NameProblem::LeadingDot));
        assert_eq!(problem("sp ace"), Some(NameProblem::BadCharacter));
        assert_eq!(problem("nul\0"), Some(NameProblem::BadCharacter));
        assert_eq!(problem("é"), Some(NameProblem::BadCharacter));
        assert_eq!(problem(&"x".repeat(MAX_NAME_LEN)), None);
        assert_eq!(
            problem(&"x".repeat(MAX_NAME_LEN + 1)),
            Some(NameProblem::TooLong)
        );
    }

    #[test]
    fn os_name_is_prefixed() {
        assert_eq!(os_name("jobs").unwrap().to_str().unwrap(), "/mulproc.jobs");
    }
}
