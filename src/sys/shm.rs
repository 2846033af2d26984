//! POSIX shared memory: `shm_open`/`shm_unlink`, `fstat`, `ftruncate`,
//! `geteuid`, and the `mmap` of a whole segment.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

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
/// read-only inspection (`inspect/`), which maps it with
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
        Mapping::map_with(fd, len, libc::PROT_READ | libc::PROT_WRITE)
    }

    /// Maps `len` bytes of `fd` shared with protection `prot`.
    fn map_with(fd: &OwnedFd, len: usize, prot: libc::c_int) -> io::Result<Mapping> {
        if len == 0 {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: a fresh mapping chosen by the kernel; it aliases no Rust
        // object. The descriptor may be closed afterwards (the mapping stays).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                prot,
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
/// segment (a stray write faults instead), and it hands out only
/// `*const` pointers.
#[derive(Debug)]
pub(crate) struct ReadMapping(Mapping);

impl ReadMapping {
    /// Maps the first `len` bytes of `fd` (open for reading) shared and
    /// read-only.
    pub(crate) fn map(fd: &OwnedFd, len: usize) -> io::Result<ReadMapping> {
        Mapping::map_with(fd, len, libc::PROT_READ).map(ReadMapping)
    }

    /// Start of the mapping (page aligned). Only ever read through it.
    pub(crate) fn as_ptr(&self) -> *const u8 {
        self.0.as_ptr()
    }

    /// Length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}
