//! Open-file-description locks (`F_OFD_SETLK`/`F_OFD_GETLK`) on single bytes
//! of a segment's file, used as kernel-kept liveness marks: the kernel drops
//! them when the last descriptor of the open file description closes, that
//! is when the process that opened it exits, however it exits. Unlike a pid
//! they cannot be reused by an unrelated process, and unlike POSIX record
//! locks they belong to the descriptor, not the process, so two handles of
//! one process are two holders. The bytes lie far beyond the end of the
//! segment (locks need no data there).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

/// Where the lock bytes start: beyond any segment (64 GiB at most).
pub(crate) const LOCK_BASE: i64 = 1 << 40;
/// Held shared by every open handle, exclusively by a creator until its
/// segment is initialised: "somebody alive uses this segment".
pub(crate) const USERS: i64 = LOCK_BASE;
/// The control lock (`control.rs`): held exclusively by its holder.
pub(crate) const CONTROL: i64 = LOCK_BASE + 1;
/// A pipe's ends: the holder of end `e` holds `PIPE_ENDS + e`.
pub(crate) const PIPE_ENDS: i64 = LOCK_BASE + 2;
/// First per-handle byte; handle `i` holds `HANDLES + i` exclusively.
pub(crate) const HANDLES: i64 = LOCK_BASE + 16;

/// Kind of lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    Shared,
    Exclusive,
}

fn flock_for(kind: libc::c_int, byte: i64) -> libc::flock {
    // SAFETY: `flock` is a plain C struct; all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = kind as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = byte;
    fl.l_len = 1;
    fl.l_pid = 0; // required for OFD locks
    fl
}

fn kind_of(kind: Kind) -> libc::c_int {
    match kind {
        Kind::Shared => libc::F_RDLCK,
        Kind::Exclusive => libc::F_WRLCK,
    }
}

/// Takes (or converts to) a lock on `byte` without waiting; `Ok(false)`
/// if another open file description holds a conflicting one.
pub(crate) fn try_lock(fd: &OwnedFd, byte: i64, kind: Kind) -> io::Result<bool> {
    let fl = flock_for(kind_of(kind), byte);
    // SAFETY: `fd` is open; `fl` is a valid flock the call only reads.
    let rc = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) };
    if rc == 0 {
        return Ok(true);
    }
    match io::Error::last_os_error() {
        e if matches!(e.raw_os_error(), Some(libc::EAGAIN | libc::EACCES)) => Ok(false),
        e => Err(e),
    }
}

/// Drops our lock on `byte` (if any).
pub(crate) fn unlock(fd: &OwnedFd, byte: i64) -> io::Result<()> {
    let fl = flock_for(libc::F_UNLCK, byte);
    // SAFETY: as in `try_lock`.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_SETLK, &fl) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// True if an open file description other than `fd`'s holds a lock on
/// `byte` that conflicts with `kind`.
pub(crate) fn held_by_other(fd: &OwnedFd, byte: i64, kind: Kind) -> io::Result<bool> {
    let mut fl = flock_for(kind_of(kind), byte);
    // SAFETY: `fd` is open; `fl` is a valid flock the call fills in.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_OFD_GETLK, &mut fl) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(fl.l_type != libc::F_UNLCK as libc::c_short)
}
