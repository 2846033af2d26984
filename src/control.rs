//! The control lock: a robust lock between processes for the rare control
//! paths of a queue (crash-recovery repairs, the reset of a stale segment).
//! Never on the data path.
//!
//! # What it must do
//!
//! Survive its holder being SIGKILLed in the middle of a repair: the next
//! locker gets the lock, learns that the previous holder died holding it
//! ([`ControlGuard::previous_owner_died`]), and finishes the repair. And,
//! as everything else in a segment other processes can write, never let
//! those bytes make this process read or write outside the segment, panic,
//! or wait without bound.
//!
//! # How
//!
//! The lock itself is kernel state: an exclusive open-file-description
//! lock (`sys::ofd`) on one byte of the segment's file, which the kernel
//! drops when the holder's process dies, however it dies. The segment holds
//! only a word, `held`, that the holder sets after taking the kernel lock
//! and clears before dropping it. A locker that finds `held` set was handed
//! the lock by a death. A scribbled `held` can only fake a death (the
//! repair that follows must be, and is, harmless when nothing was in
//! progress) or hide one (the repair record, which recovery checks on its
//! own, still shows the unfinished work).
//!
//! OFD locks belong to an open file description, which the threads of a
//! process share: a process-local mutex (one per segment handle) orders
//! the threads of one handle, the kernel lock orders handles and processes.
//!
//! # Why not a pthread robust mutex (nor `raw_sync`)
//!
//! `raw_sync`'s mutex is not robust: a holder that dies leaves it locked
//! forever. glibc's robust mutexes are, but keep the list of a thread's held
//! robust mutexes *inside the mutexes*, in the shared bytes, and unlock by
//! writing through the list pointers read back from them: a process that
//! rewrites those bytes while we hold the lock picks where our unlock
//! writes in our own address space, and scribbled kind bits make glibc
//! abort the locker on an internal assertion. The kernel-held lock keeps no
//! pointer in shared memory at all.

use std::sync::{Mutex, MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use crate::sync::{AtomicU32, Ordering};
use crate::sys::ofd;

/// What `held` holds while a holder is inside.
const HELD: u32 = 0x4845_4C44; // "HELD"

/// The control lock's word in shared memory (one cache line).
#[repr(C, align(64))]
#[derive(Debug)]
pub(crate) struct ControlLock {
    /// `HELD` from just after the kernel lock is taken until just before it
    /// is dropped; anything else when nobody is inside.
    held: AtomicU32,
    _pad: [u32; 15],
}

#[cfg(not(loom))]
const _: () = assert!(std::mem::size_of::<ControlLock>() == 64);

/// Why the lock was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LockError {
    /// Another holder kept it for the whole timeout.
    #[error("the control lock stayed held")]
    Timeout,
    /// The kernel refused the lock call.
    #[error("the control lock: {0}")]
    Os(#[from] std::io::Error),
}

/// The holder's side of a [`ControlLock`]; released on drop.
pub(crate) struct ControlGuard<'a> {
    lock: &'a ControlLock,
    fd: &'a std::os::fd::OwnedFd,
    died: bool,
    _local: MutexGuard<'a, ()>,
}

impl std::fmt::Debug for ControlGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlGuard")
            .field("previous_owner_died", &self.died)
            .finish()
    }
}

impl ControlLock {
    /// Takes the lock, waiting at most `timeout`. `fd` is the handle's
    /// descriptor of the segment, `local` its process-local mutex.
    pub(crate) fn lock<'a>(
        &'a self,
        fd: &'a std::os::fd::OwnedFd,
        local: &'a Mutex<()>,
        timeout: Duration,
    ) -> Result<ControlGuard<'a>, LockError> {
        let start = Instant::now();
        let wait = || {
            if start.elapsed() >= timeout {
                return Err(LockError::Timeout);
            }
            std::thread::sleep(Duration::from_millis(1));
            Ok(())
        };
        let local = loop {
            match local.try_lock() {
                Ok(g) => break g,
                // A thread that panicked holding it left nothing half-done
                // here: the shared state is repaired by the protocol.
                Err(TryLockError::Poisoned(p)) => break p.into_inner(),
                Err(TryLockError::WouldBlock) => wait()?,
            }
        };
        while !ofd::try_lock(fd, ofd::CONTROL, ofd::Kind::Exclusive)? {
            wait()?;
        }
        // AcqRel: what the previous holder wrote under the lock is visible
        // (the kernel lock orders us after it too), and our `HELD` is
        // visible to whoever comes after.
        let died = self.held.swap(HELD, Ordering::AcqRel) == HELD;
        Ok(ControlGuard {
            lock: self,
            fd,
            died,
            _local: local,
        })
    }
}

impl ControlLock {
    /// True if the word says a holder is inside (read only; for the
    /// inspection API): with nobody holding the kernel lock, the last
    /// holder died inside, and the next locker finishes its repair.
    pub(crate) fn marked_held(&self) -> bool {
        self.held.load(Ordering::Relaxed) == HELD
    }
}

impl ControlGuard<'_> {
    /// True if the previous holder died holding the lock: whatever it was
    /// repairing may be half done.
    pub(crate) fn previous_owner_died(&self) -> bool {
        self.died
    }
}

impl Drop for ControlGuard<'_> {
    fn drop(&mut self) {
        // Release: our repairs happen before the next holder's look.
        self.lock.held.store(0, Ordering::Release);
        // On failure the lock goes when the descriptor closes.
        let _ = ofd::unlock(self.fd, ofd::CONTROL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CString;

    /// Two descriptors of one fresh shm object: two open file
    /// descriptions, as two processes would have.
    fn two_fds(tag: &str) -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
        let name = CString::new(format!(
            "/mulproc.unit-control-{tag}-{}",
            std::process::id()
        ))
        .unwrap();
        let a = crate::sys::shm_create(&name, 0o600).unwrap();
        let b = crate::sys::shm_open_existing(&name).unwrap();
        crate::sys::shm_unlink(&name).unwrap();
        (a, b)
    }

    fn lock() -> ControlLock {
        ControlLock {
            held: AtomicU32::new(0),
            _pad: [0; 15],
        }
    }

    #[test]
    fn excludes_other_descriptions_and_times_out() {
        let (a, b) = two_fds("excl");
        let (la, lb) = (Mutex::new(()), Mutex::new(()));
        let l = lock();
        let g = l.lock(&a, &la, Duration::from_millis(10)).unwrap();
        assert!(!g.previous_owner_died());
        let t = Instant::now();
        assert!(matches!(
            l.lock(&b, &lb, Duration::from_millis(30)),
            Err(LockError::Timeout)
        ));
        assert!(t.elapsed() >= Duration::from_millis(30));
        drop(g);
        let g = l.lock(&b, &lb, Duration::from_millis(10)).unwrap();
        assert!(!g.previous_owner_died());
    }

    #[test]
    fn excludes_threads_of_one_handle() {
        let (a, _b) = two_fds("threads");
        let la = Mutex::new(());
        let l = lock();
        let _g = l.lock(&a, &la, Duration::from_millis(10)).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                assert!(matches!(
                    l.lock(&a, &la, Duration::from_millis(20)),
                    Err(LockError::Timeout)
                ));
            });
        });
    }

    #[test]
    fn a_holder_that_vanished_is_reported_once() {
        let (a, b) = two_fds("died");
        let (la, lb) = (Mutex::new(()), Mutex::new(()));
        let l = lock();
        let g = l.lock(&a, &la, Duration::from_millis(10)).unwrap();
        // As a death does: the guard's unlock never runs, the kernel drops
        // the lock with the description.
        std::mem::forget(g);
        drop(a);
        let g = l.lock(&b, &lb, Duration::from_millis(10)).unwrap();
        assert!(g.previous_owner_died());
        drop(g);
        let g = l.lock(&b, &lb, Duration::from_millis(10)).unwrap();
        assert!(!g.previous_owner_died());
    }

    #[test]
    fn scribbled_word_only_fakes_a_death() {
        let (a, _b) = two_fds("scribbled");
        let la = Mutex::new(());
        let l = lock();
        for v in [HELD, 0, 1, u32::MAX] {
            l.held.store(v, Ordering::Relaxed);
            let g = l.lock(&a, &la, Duration::from_millis(10)).unwrap();
            assert_eq!(g.previous_owner_died(), v == HELD);
        }
    }
}
