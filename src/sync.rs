//! The one place atomics come from.
//!
//! Under `cfg(loom)` the ring and the wait protocol run over loom's model
//! types, so the code the model checker explores is the code that runs over
//! shared memory. Nothing else in the crate names `core::sync::atomic`.

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
