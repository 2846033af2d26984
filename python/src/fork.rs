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

/// A handle as one Python object uses it in the current process: opened
/// (or taken) in fork generation `born`; one inherited across a fork is
/// leaked, never dropped (see the module docs), and the object reopens.
pub struct Binding<T> {
    handle: Option<T>,
    born: Generation,
    closed: bool,
}

impl<T: Clone> Binding<T> {
    /// A binding of `handle` (None: opened on first use), in this
    /// generation.
    pub fn new(handle: Option<T>) -> Binding<T> {
        Binding {
            handle,
            born: generation(),
            closed: false,
        }
    }

    /// This process's handle: `closed()` if closed, the handle it holds,
    /// or one made by `open` (on first use, or after a fork).
    pub fn get<E>(
        &mut self,
        closed: impl FnOnce() -> E,
        open: impl FnOnce() -> Result<T, E>,
    ) -> Result<T, E> {
        if self.closed {
            return Err(closed());
        }
        self.forget_inherited();
        if let Some(h) = &self.handle {
            return Ok(h.clone());
        }
        let h = open()?;
        self.handle = Some(h.clone());
        Ok(h)
    }

    /// Lets go of the handle (leaked if inherited); later use is an error.
    pub fn close(&mut self) {
        self.closed = true;
        self.forget_inherited();
        self.handle = None;
    }

    /// Whether [`close`](Self::close) was called.
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// After a fork: leaks the inherited handle and starts a new generation.
    fn forget_inherited(&mut self) {
        let now = generation();
        if self.born != now {
            if let Some(inherited) = self.handle.take() {
                leak(inherited);
            }
            self.born = now;
        }
    }
}

impl<T> Drop for Binding<T> {
    fn drop(&mut self) {
        if self.born != generation() {
            if let Some(inherited) = self.handle.take() {
                leak(inherited);
            }
        }
    }
}
