//! A shared mapping of a file in /dev/shm, seen through a `#[repr(C)]` type
//! made only of atomics.

use std::fs::OpenOptions;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::ptr::NonNull;

use crate::{err, Result};

/// Types that may live in memory shared between processes.
///
/// # Safety
/// The all-zero bit pattern must be a valid value, the type must be
/// `#[repr(C)]`, have no pointers, and allow mutation only through atomics
/// (so a `&T` may be shared with another process writing concurrently).
pub unsafe trait SharedPod: Sync {}

/// A `MAP_SHARED` mapping of a file, unmapped on drop. The file itself is
/// not unlinked here: see [`crate::common::PathGuard`].
#[derive(Debug)]
pub struct ShmMap {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; all access goes through
// `Shared<T: SharedPod>`, whose types are Sync and use atomics only.
unsafe impl Send for ShmMap {}
// SAFETY: as above.
unsafe impl Sync for ShmMap {}

impl ShmMap {
    /// Creates (exclusively) a zero-filled file of `len` bytes and maps it.
    pub fn create(path: &Path, len: usize) -> Result<Self> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        file.set_len(len as u64)?;
        Self::map(&file, len)
    }

    /// Maps an existing file of at least `len` bytes.
    pub fn open(path: &Path, len: usize) -> Result<Self> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        if (file.metadata()?.len() as usize) < len {
            return Err(err(format!(
                "{} is shorter than {len} bytes",
                path.display()
            )));
        }
        Self::map(&file, len)
    }

    fn map(file: &std::fs::File, len: usize) -> Result<Self> {
        // SAFETY: a fresh mapping chosen by the kernel (addr null) of a file
        // we hold open; the result is checked against MAP_FAILED.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or_else(|| err("mmap returned null"))?;
        Ok(ShmMap { ptr, len })
    }
}

/// A shared `T` in a mapped file; derefs to `&T`.
#[derive(Debug)]
pub struct Shared<T: SharedPod> {
    map: ShmMap,
    _type: PhantomData<T>,
}

impl<T: SharedPod> Shared<T> {
    /// Creates the file (zero-filled, so `T` starts all-zero) and maps it.
    pub fn create(path: &Path) -> Result<Self> {
        Self::check(ShmMap::create(path, std::mem::size_of::<T>())?)
    }

    /// Maps a file made by [`Shared::create`].
    pub fn open(path: &Path) -> Result<Self> {
        Self::check(ShmMap::open(path, std::mem::size_of::<T>())?)
    }

    fn check(map: ShmMap) -> Result<Self> {
        if map.len < std::mem::size_of::<T>() {
            return Err(err("mapping too small for the shared type"));
        }
        // mmap returns page-aligned memory, which covers any T we use.
        if map.ptr.as_ptr().align_offset(std::mem::align_of::<T>()) != 0 {
            return Err(err("mapping misaligned for the shared type"));
        }
        Ok(Shared {
            map,
            _type: PhantomData,
        })
    }
}

impl<T: SharedPod> Deref for Shared<T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: `check` verified size and alignment; the mapping lives as
        // long as `self` and holds either zeroes (from ftruncate) or values
        // written through `T`'s atomics, both valid `T`s by `SharedPod`.
        unsafe { &*self.map.ptr.as_ptr().cast::<T>() }
    }
}

impl Drop for ShmMap {
    fn drop(&mut self) {
        // SAFETY: ptr/len are exactly what mmap returned; references handed
        // out by `Shared::deref` borrow the owner and cannot outlive it.
        unsafe {
            libc::munmap(self.ptr.as_ptr().cast(), self.len);
        }
    }
}
