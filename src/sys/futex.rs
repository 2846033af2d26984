//! `futex(2)`: the sleep and wake under the event counts (`wait`).

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
