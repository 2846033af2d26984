//! Fork detection and process liveness.
//!
//! A child of `fork()` inherits every handle of its parent: the mapping,
//! the descriptor, and with the descriptor the parent's open-file-
//! description locks (its handle entries and pipe ends). Using such a
//! handle would act as the parent; dropping it would deregister the
//! parent's entry and unlock the parent's locks. So each handle records
//! the fork generation it was opened in, reopens itself by name when the
//! generation has changed, and leaks ([`leak`]) what it inherited.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Once;

/// Bumped in every child right after `fork()` (a `pthread_atfork` child
/// handler): a handle opened at another value was inherited.
static GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    // Only the forking thread exists here; nothing else reads this yet.
    GENERATION.fetch_add(1, Ordering::Relaxed);
}

/// Registers the fork handler (once per process image).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `after_fork_in_child` is async-signal-safe (one atomic
        // add) and lives as long as the process (a static function of
        // this module, which is never unloaded: CPython does not unload
        // extension modules).
        let rc = unsafe { libc::pthread_atfork(None, None, Some(after_fork_in_child)) };
        // pthread_atfork fails only with ENOMEM; without the handler a
        // fork would go unnoticed, so fall back to the pid check below.
        if rc != 0 {
            PID_CHECK.store(true, Ordering::Relaxed);
        }
    });
}

/// Whether `generation` must also compare pids (the handler could not be
/// registered).
static PID_CHECK: AtomicBool = AtomicBool::new(false);

/// Identity of the current process image: changes in a forked child.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generation {
    count: u64,
    pid: u32,
}

/// The current generation.
#[inline]
pub fn generation() -> Generation {
    let count = GENERATION.load(Ordering::Relaxed);
    let pid = if PID_CHECK.load(Ordering::Relaxed) {
        std::process::id()
    } else {
        0
    };
    Generation { count, pid }
}

/// Forgets a value inherited across a fork without running its drop.
/// The memory stays allocated in the child (a few hundred bytes per
/// handle); the child's own mapping of the segment stays in place, so any
/// memoryview the child inherited into it stays readable.
pub fn leak<T>(value: T) {
    std::mem::forget(value);
}
