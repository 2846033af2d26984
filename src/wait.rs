//! Sleeping and waking across processes: an event count on a futex word.
//!
//! Not `pthread_cond_t`: a waiter SIGKILLed inside `pthread_cond_wait` leaves
//! glibc's condvar in a state where the next broadcast blocks forever (see
//! the project's evidence). Here a waiter keeps no state a notifier depends
//! on; a killed waiter leaves `waiters` one too high, which costs a spare
//! `FUTEX_WAKE` call per notify and nothing else.
//!
//! # Protocol
//!
//! ```text
//! waiter                                   notifier
//! ------                                   --------
//! if check() { done }                      make the condition true (Release)
//! waiters += 1                             fence(SeqCst)                  (F2)
//! fence(SeqCst)                    (F1)    if waiters > 0 {
//! e = epoch (Acquire)                          epoch += 1 (Release)
//! if check() { waiters -= 1; done }            futex_wake(epoch)
//! futex_wait(epoch, e)                     }
//! waiters -= 1; loop
//! ```
//!
//! No lost wake-up: F1 and F2 order the store-buffering pattern
//! (waiter: write `waiters`, read condition; notifier: write condition, read
//! `waiters`). Either the waiter's second `check` sees the condition, or the
//! notifier sees `waiters > 0` and bumps `epoch`. In the second case the
//! bump is either visible to the waiter's `epoch` load (then, by the
//! Release/Acquire pair on `epoch`, so is the condition, and `check`
//! succeeds) or it comes later, and `futex_wait(epoch, e)` either sees the
//! changed word and returns at once or is asleep when the wake arrives.
//!
//! # Asymmetric fences
//!
//! F2 runs on every send and receive, F1 only when a waiter is about to
//! sleep (already a ~20 µs affair). So F2 is a compiler fence only, and F1 is
//! a full fence plus `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which
//! makes every running thread of every registered process execute a full
//! barrier (and a thread not running passed one at its context switch):
//! whatever a notifier had written before its F2, the barrier orders before
//! its later load of `waiters`, as a real F2 would. Every process registers
//! when it creates or opens a channel; one that cannot (an old kernel, a
//! seccomp filter) uses a full fence for F2, and a waiter whose membarrier
//! call fails sleeps at most `DEGRADED_SLEEP` at a time, so the worst a
//! missed wake-up can cost it is that long.
//!
//! The loom model checks the protocol with full fences on both sides.
//!
//! A notifier thus pays a compiler fence and one load when nobody sleeps:
//! no barrier instruction, no system call, no write to a shared line.

use std::time::{Duration, Instant};

use crate::sync::{fence, AtomicU32, Ordering};

/// A sleeping waiter re-checks at least this often, even without a wake-up.
/// This bounds the stall when a process that was woken to take a message is
/// killed before taking it (the wake is then spent on a dead process).
#[cfg(not(loom))]
const MAX_SLEEP: Duration = Duration::from_millis(200);

/// The longest sleep of a waiter whose membarrier call failed: without it,
/// a notifier using only a compiler fence could miss it.
#[cfg(not(loom))]
const DEGRADED_SLEEP: Duration = Duration::from_millis(1);

/// F2: free when this process is registered for membarrier, a full fence
/// otherwise.
#[inline]
fn light_fence() {
    #[cfg(not(loom))]
    {
        if barriers::registered() {
            std::sync::atomic::compiler_fence(Ordering::SeqCst);
        } else {
            fence(Ordering::SeqCst);
        }
    }
    #[cfg(loom)]
    fence(Ordering::SeqCst);
}

/// F1: a full fence here and, through membarrier, in every registered
/// process.
#[inline]
fn heavy_fence() {
    fence(Ordering::SeqCst);
    #[cfg(not(loom))]
    barriers::global();
}

/// This process's membarrier state.
#[cfg(not(loom))]
pub(crate) mod barriers {
    use std::sync::atomic::{AtomicU8, Ordering};

    const UNKNOWN: u8 = 0;
    const REGISTERED: u8 = 1;
    const UNAVAILABLE: u8 = 2;

    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);
    static DEGRADED: AtomicU8 = AtomicU8::new(0);

    /// Registers the process (once); called before a channel is used.
    pub(crate) fn register() {
        if STATE.load(Ordering::Acquire) == UNKNOWN {
            let s = if crate::sys::membarrier_register() {
                REGISTERED
            } else {
                UNAVAILABLE
            };
            STATE.store(s, Ordering::Release);
        }
    }

    /// True once registration succeeded.
    #[inline]
    pub(crate) fn registered() -> bool {
        STATE.load(Ordering::Relaxed) == REGISTERED
    }

    /// Issues the global barrier; remembers a refusal.
    pub(crate) fn global() {
        if !crate::sys::membarrier_global() {
            DEGRADED.store(1, Ordering::Relaxed);
        }
    }

    /// True if a global barrier was ever refused.
    pub(crate) fn degraded() -> bool {
        DEGRADED.load(Ordering::Relaxed) != 0
    }
}

/// An event count in shared memory.
#[repr(C)]
#[derive(Debug)]
pub struct EventCount {
    /// Bumped (wrapping) by a notifier that saw a sleeper; the futex word.
    epoch: AtomicU32,
    /// Processes between "registered" and "done sleeping". May be too high
    /// by the number of waiters killed while registered; never too low while
    /// a live waiter sleeps.
    waiters: AtomicU32,
    /// Heap-model stand-in for the kernel's futex queue.
    #[cfg(loom)]
    model: FutexModel,
}

/// How many sleepers a notify wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// One sleeper: one new message or one free slot.
    One,
    /// Every sleeper: a change each of them must look at.
    All,
}

impl EventCount {
    /// A fresh event count (heap models).
    #[cfg(loom)]
    pub fn new() -> EventCount {
        EventCount {
            epoch: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            model: FutexModel::default(),
        }
    }

    /// Wakes sleepers, if any, after the caller made its condition true
    /// (with a Release store or RMW).
    #[inline]
    pub fn notify(&self, wake: Wake) {
        // SYNC POINT (F2): pairs with F1 in `wait_until`.
        light_fence();
        self.notify_fenced(wake);
    }

    /// [`notify`](Self::notify) on two event counts for the price of one
    /// fence.
    #[inline]
    pub fn notify_two(a: (&EventCount, Wake), b: (&EventCount, Wake)) {
        // SYNC POINT (F2): pairs with F1 in `wait_until`, for both counts.
        light_fence();
        a.0.notify_fenced(a.1);
        b.0.notify_fenced(b.1);
    }

    #[inline]
    fn notify_fenced(&self, wake: Wake) {
        if self.waiters.load(Ordering::Relaxed) != 0 {
            self.wake_slow(wake);
        }
    }

    #[cold]
    fn wake_slow(&self, wake: Wake) {
        // Release: pairs with the Acquire load of `epoch` in `wait_until`.
        self.epoch.fetch_add(1, Ordering::Release);
        let n = match wake {
            Wake::One => 1,
            Wake::All => i32::MAX,
        };
        self.futex_wake(n);
    }

    /// Returns the first `Some` that `check` gives, sleeping between checks
    /// until notified; `None` once `deadline` has passed.
    ///
    /// `check` must be cheap and must look at state that notifiers change
    /// before calling [`notify`](Self::notify).
    pub fn wait_until<T>(
        &self,
        deadline: Option<Instant>,
        mut check: impl FnMut() -> Option<T>,
    ) -> Option<T> {
        loop {
            if let Some(v) = check() {
                return Some(v);
            }
            let timeout = match deadline {
                None => None,
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    Some(d - now)
                }
            };
            self.waiters.fetch_add(1, Ordering::Relaxed);
            // SYNC POINT (F1): pairs with F2 in `notify`.
            heavy_fence();
            // Acquire: pairs with the Release bump in `wake_slow`.
            let e = self.epoch.load(Ordering::Acquire);
            if let Some(v) = check() {
                self.waiters.fetch_sub(1, Ordering::Relaxed);
                return Some(v);
            }
            self.futex_wait(e, timeout);
            self.waiters.fetch_sub(1, Ordering::Relaxed);
        }
    }

    #[cfg(not(loom))]
    fn futex_wait(&self, expected: u32, timeout: Option<Duration>) {
        let cap = if barriers::degraded() {
            DEGRADED_SLEEP
        } else {
            MAX_SLEEP
        };
        let t = timeout.map_or(cap, |t| t.min(cap));
        crate::sys::futex_wait(&self.epoch, expected, Some(t));
    }

    #[cfg(not(loom))]
    fn futex_wake(&self, n: i32) {
        crate::sys::futex_wake(&self.epoch, n);
    }

    #[cfg(loom)]
    fn futex_wait(&self, expected: u32, _timeout: Option<Duration>) {
        self.model.wait(&self.epoch, expected);
    }

    #[cfg(loom)]
    fn futex_wake(&self, _n: i32) {
        self.model.wake_all();
    }
}

/// How long a blocking wait spins before it yields, catching a message
/// already on its way: waking a sleeper costs ~20 µs on a typical machine,
/// and a reply that arrives within the spin never pays it.
#[cfg(not(loom))]
const SPIN: Duration = Duration::from_micros(5);
/// How long it then yields the CPU between checks before sleeping; on an
/// oversubscribed machine this lets the peer run instead of us spinning.
#[cfg(not(loom))]
const YIELD: Duration = Duration::from_micros(50);

#[cfg(not(loom))]
impl EventCount {
    /// [`wait_until`](Self::wait_until), after a bounded spin and a bounded
    /// stretch of yields. Also says whether it went to sleep.
    pub(crate) fn wait_spinning<T>(
        &self,
        deadline: Option<Instant>,
        mut check: impl FnMut() -> Option<T>,
    ) -> Option<(T, bool)> {
        if let Some(v) = check() {
            return Some((v, false));
        }
        let start = Instant::now();
        let mut i = 0u32;
        loop {
            if let Some(v) = check() {
                return Some((v, false));
            }
            i = i.wrapping_add(1);
            if i % 32 != 0 {
                crate::sync::spin_hint();
                continue;
            }
            let now = Instant::now();
            if deadline.is_some_and(|d| now >= d) {
                return None;
            }
            let waited = now - start;
            if waited >= YIELD {
                break;
            }
            if waited >= SPIN {
                std::thread::yield_now();
            }
        }
        self.wait_until(deadline, check).map(|v| (v, true))
    }
}

/// A futex, modelled for loom: the value check and the enqueue happen under
/// one lock, as the kernel does them under its hash-bucket lock, so a wake
/// between a waiter's check and its sleep cannot be lost. A lost wake-up in
/// the protocol above shows up in the model as a deadlock. Waking all is a
/// sound over-approximation of waking one here: the model checks that every
/// notify reaches the sleepers, the real code's choice of how many is a
/// throughput matter.
#[cfg(loom)]
#[derive(Debug, Default)]
struct FutexModel {
    lock: loom::sync::Mutex<()>,
    cond: loom::sync::Condvar,
}

#[cfg(loom)]
impl FutexModel {
    fn wait(&self, word: &AtomicU32, expected: u32) {
        let guard = self.lock.lock().unwrap();
        if word.load(Ordering::Relaxed) == expected {
            drop(self.cond.wait(guard).unwrap());
        }
    }

    fn wake_all(&self) {
        drop(self.lock.lock().unwrap());
        self.cond.notify_all();
    }
}
