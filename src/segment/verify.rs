//! The checks a segment passes before anything in it is trusted, and the
//! test of whether a segment is stale.

use std::os::fd::{AsRawFd, OwnedFd};
use std::ptr::{self, addr_of};
use std::time::{Duration, Instant};

use super::{os_err, INIT_WAIT};
use crate::error::{CorruptError, CorruptKind, PermissionProblem, SetupError};
use crate::layout::{
    self, ChannelKind, Geometry, LayoutError, LayoutInfo, SegmentHeader, HEADER_SIZE, INIT_DONE,
    LAYOUT_VERSION, MAX_SEGMENT_SIZE,
};
use crate::sync::Ordering;
use crate::sys::{self, ofd, Mapping};

/// The checks `open` makes before trusting a segment, on an open
/// descriptor: owner and mode, size, magic, version, init complete (waiting
/// for it a little), every layout field, and the kind.
pub(super) fn verify(
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
pub(super) fn file_init_done(fd: &OwnedFd, st: &sys::FileStat) -> bool {
    file_head(fd, st) == Some((LAYOUT_VERSION, true))
}
