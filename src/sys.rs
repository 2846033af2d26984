//! Every libc call of the crate: futex wait/wake and the shared-memory file
//! calls. The rest of the crate speaks in safe types.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;
use std::time::Duration;

use crate::sync::AtomicU32;

/// Sleeps while `word` holds `expected`, at most `timeout` (relative, on the
/// monotonic clock, as FUTEX_WAIT measures it). Returns on a wake, a signal,
/// a timeout, or at once if the word already differs; the caller re-checks
/// its condition in every case.
///
/// The futex is not private: the word lives in a segment mapped by several
/// processes, and a shared futex is keyed by the page, not the address space.
#[cfg(not(loom))]
pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| libc::timespec {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    });
    let ts_ptr = ts
        .as_ref()
        .map_or(std::ptr::null(), |t| t as *const libc::timespec);
    // SAFETY: `word` is a live, aligned u32 for the duration of the call
    // (AtomicU32 has u32's layout); the kernel only reads it. `ts_ptr` is null
    // or points at `ts`, which outlives the call. Errors (EAGAIN, EINTR,
    // ETIMEDOUT) all mean "re-check", so the result is deliberately unused.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Wakes up to `n` processes sleeping in [`futex_wait`] on `word`; returns
/// how many it woke.
#[cfg(not(loom))]
pub(crate) fn futex_wake(word: &AtomicU32, n: i32) -> usize {
    // SAFETY: as in `futex_wait`; FUTEX_WAKE does not dereference the word.
    let woken = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    usize::try_from(woken).unwrap_or(0)
}

/// The POSIX shared-memory object name for a validated mulproc name.
pub(crate) fn shm_name(os_name: &str) -> CString {
    // Validated names hold no NUL byte, so this cannot fail; map it to an
    // impossible name rather than panic if that ever changes.
    CString::new(format!("/{os_name}")).unwrap_or_default()
}

/// `shm_open(O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC, mode)`, then an explicit
/// `fchmod` so the process umask cannot narrow (or the caller widen) `mode`.
pub(crate) fn shm_create(name: &CString, mode: libc::mode_t) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string.
    let fd = unsafe {
        libc::shm_open(
            name.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_RDWR | libc::O_CLOEXEC,
            mode as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by shm_open and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: `fd` is open.
    if unsafe { libc::fchmod(fd.as_raw_fd(), mode) } != 0 {
        let e = io::Error::last_os_error();
        // The name is ours (O_EXCL): do not leave it behind half-made.
        let _ = shm_unlink(name);
        return Err(e);
    }
    Ok(fd)
}

/// `shm_open(O_RDWR | O_CLOEXEC)` of an existing object.
pub(crate) fn shm_open_existing(name: &CString) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string.
    let fd = unsafe { libc::shm_open(name.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by shm_open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `shm_open(O_RDONLY | O_CLOEXEC)` of an existing object: for the
/// read-only inspection (`inspect.rs`), which maps it with
/// [`ReadMapping`] and probes its liveness locks with `F_OFD_GETLK`
/// (which needs no write access).
pub(crate) fn shm_open_read_only(name: &CString) -> io::Result<OwnedFd> {
    // SAFETY: `name` is a valid NUL-terminated string.
    let fd = unsafe { libc::shm_open(name.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by shm_open and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `shm_unlink`.
pub(crate) fn shm_unlink(name: &CString) -> io::Result<()> {
    // SAFETY: `name` is a valid NUL-terminated string.
    if unsafe { libc::shm_unlink(name.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Owner, permission bits and size of an open file.
#[derive(Debug, Clone, Copy)]
pub(crate) struct FileStat {
    pub dev: u64,
    pub ino: u64,
    pub uid: u32,
    pub mode: u32,
    pub size: u64,
}

/// `fstat` on the descriptor itself, so the checks apply to the very object
/// that is mapped (no window between a path lookup and the open).
pub(crate) fn fstat(fd: &OwnedFd) -> io::Result<FileStat> {
    // SAFETY: all-zero is a valid `struct stat` (plain integers).
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open and `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd.as_raw_fd(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(FileStat {
        dev: st.st_dev,
        ino: st.st_ino,
        uid: st.st_uid,
        mode: st.st_mode & 0o7777,
        size: u64::try_from(st.st_size).unwrap_or(0),
    })
}

/// `ftruncate` to `len` bytes.
pub(crate) fn ftruncate(fd: &OwnedFd, len: u64) -> io::Result<()> {
    let len = libc::off_t::try_from(len).map_err(|_| io::Error::from_raw_os_error(libc::EFBIG))?;
    // SAFETY: `fd` is open.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The effective user id of this process.
pub(crate) fn euid() -> u32 {
    // SAFETY: geteuid cannot fail and touches no memory.
    unsafe { libc::geteuid() }
}

/// A shared, read-write mapping of a whole file, unmapped on drop.
#[derive(Debug)]
pub(crate) struct Mapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain memory; which threads touch which bytes is
// governed by the atomics of the ring protocol, not by the mapping itself.
unsafe impl Send for Mapping {}
// SAFETY: as above; `Mapping` hands out only raw pointers.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Maps `len` bytes of `fd` shared and read-write.
    pub(crate) fn map(fd: &OwnedFd, len: usize) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a fresh mapping chosen by the kernel; it aliases no Rust
        // object. The descriptor may be closed afterwards (the mapping stays).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(Mapping { ptr, len })
    }

    /// Start of the mapping (page aligned).
    pub(crate) fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value owns, and every
        // reference into it borrows the owning queue, which is being dropped.
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert_eq!(rc, 0, "munmap of our own mapping failed");
    }
}

/// A shared, read-only mapping of a file, unmapped on drop: the pages
/// are mapped `PROT_READ`, so nothing done through it can change the
/// segment (a stray write faults instead).
#[derive(Debug)]
pub(crate) struct ReadMapping {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: as for `Mapping`: plain memory, only read through raw pointers.
unsafe impl Send for ReadMapping {}
// SAFETY: as above.
unsafe impl Sync for ReadMapping {}

impl ReadMapping {
    /// Maps the first `len` bytes of `fd` (open for reading) shared and
    /// read-only.
    pub(crate) fn map(fd: &OwnedFd, len: usize) -> io::Result<ReadMapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a fresh mapping chosen by the kernel; it aliases no Rust
        // object, and PROT_READ lets nothing write through it.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(io::Error::last_os_error)?;
        Ok(ReadMapping { ptr, len })
    }

    /// Start of the mapping (page aligned). Only ever read through it.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

impl Drop for ReadMapping {
    fn drop(&mut self) {
        // SAFETY: `ptr`/`len` describe a mapping this value owns; every
        // borrow of it is tied to this value's lifetime.
        let rc = unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
        debug_assert_eq!(rc, 0, "munmap of our own mapping failed");
    }
}

/// `membarrier(2)` commands (linux/membarrier.h).
const MEMBARRIER_CMD_GLOBAL_EXPEDITED: libc::c_int = 1 << 1;
const MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED: libc::c_int = 1 << 2;

/// Registers this process for `MEMBARRIER_CMD_GLOBAL_EXPEDITED`, so that
/// another process's [`membarrier_global`] makes this process's running
/// threads execute a full memory barrier. Returns false if the kernel (or a
/// seccomp filter) refuses.
pub(crate) fn membarrier_register() -> bool {
    // SAFETY: membarrier takes no pointers; an unsupported command fails
    // with an error code.
    unsafe {
        libc::syscall(
            libc::SYS_membarrier,
            MEMBARRIER_CMD_REGISTER_GLOBAL_EXPEDITED,
            0,
            0,
        ) == 0
    }
}

/// A full memory barrier on every running thread of every registered
/// process (IPIs to the CPUs that run them). False if refused.
pub(crate) fn membarrier_global() -> bool {
    // SAFETY: as in `membarrier_register`.
    unsafe { libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_GLOBAL_EXPEDITED, 0, 0) == 0 }
}

/// Open-file-description locks (`F_OFD_SETLK`/`F_OFD_GETLK`) on single bytes
/// of a segment's file, used as kernel-kept liveness marks: the kernel drops
/// them when the last descriptor of the open file description closes, that
/// is when the process that opened it exits, however it exits. Unlike a pid
/// they cannot be reused by an unrelated process, and unlike POSIX record
/// locks they belong to the descriptor, not the process, so two handles of
/// one process are two holders. The bytes lie far beyond the end of the
/// segment (locks need no data there).
pub(crate) mod ofd {
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
}
