//! The coarse monotonic clock the stall detectors read.

/// CLOCK_MONOTONIC_COARSE in milliseconds: a few nanoseconds to read, a
/// few milliseconds of resolution, which is all a stall detector needs.
pub(crate) fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill in.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}
