//! Named shared-memory segments: create, open-and-verify, remove; a
//! typed view per kind ([`QueueSegment`], [`PipeSegment`]) over the common
//! mapping, so that a pipe's accessors cannot be called on a queue's
//! segment, nor the other way round.
//!
//! Plain `shm_open`/`mmap` through [`crate::sys`] rather than the
//! `shared_memory` crate: the checks `open` must make (owner and mode of the
//! very object mapped, via `fstat` on its descriptor), the group-shared mode
//! option, and removing a name only if it still names our segment all need
//! the descriptor, which `shared_memory` does not expose.
//!
//! This module calls no recovery: what a stale segment needs before reuse
//! is its caller's decision ([`QueueSegment::create`] takes it).

mod name;
mod pipe;
mod queue;
mod verify;

use std::ffi::CString;
use std::io;
use std::os::fd::OwnedFd;
use std::ptr::{self, addr_of};
use std::time::{Duration, Instant};

use crate::error::{PermissionProblem, SetupError};
use crate::layout::{ChannelKind, Geometry, SegmentHeader, INIT_DONE};
use crate::sync::{AtomicU32, Ordering};
use crate::sys::{self, ofd, Mapping};

pub(crate) use name::with_unique_name;
pub(crate) use name::{os_name, OS_PREFIX};
pub use name::{unique_name, MAX_NAME_LEN};
pub(crate) use pipe::PipeSegment;
pub(crate) use queue::QueueSegment;
pub(crate) use verify::is_stale;
use verify::{file_init_done, verify};

/// How long `open` waits for a creator (or a repairer of a stale segment)
/// to let others in, and a staleness check for a creator to take its lock.
const INIT_WAIT: Duration = Duration::from_millis(200);

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

/// What [`Segment::create`] made.
enum Created {
    /// A new segment, initialised, open to others.
    New(Segment),
    /// A stale segment taken over, verified to have the shape asked for,
    /// still held alone (the users lock exclusively) until the caller has
    /// repaired it and calls `share_users`.
    Stale(Segment),
}

impl Segment {
    /// Creates a new segment, initialises it and marks it complete. The
    /// name is removed again if any step fails. If the name exists and its
    /// segment is stale (every process that used it is gone), `stale`
    /// decides: fail with [`SetupError::Stale`], recreate, or reuse. A
    /// reused segment comes back as [`Created::Stale`], still ours alone
    /// (the users lock held exclusively): the caller repairs what a stale
    /// segment of its kind needs, then lets others in (`share_users`).
    fn create(
        name: &str,
        geo: Geometry,
        sharing: Sharing,
        stale: Stale,
    ) -> Result<Created, SetupError> {
        let os_name = os_name(name)?;
        crate::wait::barriers::register();
        for _ in 0..3 {
            match sys::shm_create(&os_name, sharing.mode()) {
                Ok(fd) => return Segment::create_on(name, &os_name, fd, geo).map(Created::New),
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
                    return Segment::reuse(name, &os_name, fd, st, geo).map(Created::Stale);
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
    fn share_users(&self) -> Result<(), SetupError> {
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
            for (i, slot) in queue::slots_of(self).iter().enumerate() {
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
    fn open(name: &str, kind: ChannelKind) -> Result<Segment, SetupError> {
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
    /// The descriptor the liveness locks are taken on.
    pub(crate) fn fd(&self) -> &OwnedFd {
        &self.fd
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
