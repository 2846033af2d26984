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
//! A notifier pays one fence and one load when nobody sleeps: no system call
//! and no write to a shared line.

use std::time::{Duration, Instant};

use crate::sync::{fence, AtomicU32, Ordering};

/// A sleeping waiter re-checks at least this often, even without a wake-up.
/// This bounds the stall when a process that was woken to take a message is
/// killed before taking it (the wake is then spent on a dead process).
#[cfg(not(loom))]
const MAX_SLEEP: Duration = Duration::from_millis(200);

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
        fence(Ordering::SeqCst);
        self.notify_fenced(wake);
    }

    /// [`notify`](Self::notify) on two event counts for the price of one
    /// fence.
    #[inline]
    pub fn notify_two(a: (&EventCount, Wake), b: (&EventCount, Wake)) {
        // SYNC POINT (F2): pairs with F1 in `wait_until`, for both counts.
        fence(Ordering::SeqCst);
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
            fence(Ordering::SeqCst);
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
        let t = timeout.map_or(MAX_SLEEP, |t| t.min(MAX_SLEEP));
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
