//! The one place atomics come from.
//!
//! Under `cfg(loom)` the ring, the pipe's `spsc` protocol and the wait
//! protocol run over loom's model types, so the code the model checker
//! explores is the code that runs over shared memory. Nothing else in the crate names `core::sync::atomic`.

#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

#[cfg(not(loom))]
pub(crate) use core::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};

/// A CPU relax hint inside a bounded spin; under loom a yield, so the model
/// lets the other threads make the progress the spinner waits for.
#[inline]
pub(crate) fn spin_hint() {
    #[cfg(loom)]
    loom::thread::yield_now();
    #[cfg(not(loom))]
    core::hint::spin_loop();
}

/// Asks the CPU to fetch the cache line at `p` for writing (x86-64
/// `prefetchw`; x86-64 CPUs that do not report the feature execute it as
/// a no-op; nothing on other architectures). A hint: it reads and writes
/// nothing and never faults.
#[inline(always)]
pub(crate) fn prefetch_write<T>(p: *const T) {
    #[cfg(all(target_arch = "x86_64", not(loom)))]
    // SAFETY: a prefetch changes no memory or register and never faults.
    unsafe {
        core::arch::asm!("prefetchw [{}]", in(reg) p, options(nostack, preserves_flags, readonly));
    }
    #[cfg(not(all(target_arch = "x86_64", not(loom))))]
    let _ = p;
}
