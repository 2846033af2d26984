//! Sleeping and waking across processes: an event count on a futex word.
//!
//! Not `pthread_cond_t`: a waiter SIGKILLed inside `pthread_cond_wait` leaves
//! glibc's condvar in a state where the next broadcast blocks forever (see
//! the project's evidence). Here a waiter keeps no state a notifier depends
//! on (see the protocol below).
//!
//! # Protocol
//!
//! The futex word `epoch` holds a counter (bits 1..) and an ARMED flag
//! (bit 0): "a waiter may be asleep". A notifier that finds the word armed
//! disarms it (bumping the counter) and wakes; the word stays disarmed, and
//! further notifies cost no system call, until a waiter arms it again. So a
//! burst of sends to a sleeping receiver costs one `FUTEX_WAKE`, not one per
//! send.
//!
//! ```text
//! waiter                                   notifier
//! ------                                   --------
//! if check() { done }                      make the condition true (Release)
//! waiters += 1                             fence(SeqCst)                  (F2)
//! e = epoch.fetch_or(ARMED) | ARMED        loop {
//! fence(SeqCst)                    (F1)        v = epoch; if !(v & ARMED) { break }
//! if check() { waiters -= 1; done }            if !CAS(epoch, v, (v + 2) & !ARMED) { continue }
//! futex_wait(epoch, e)                         n = futex_wake(one or all)
//! waiters -= 1; loop                           if one && n == 1 && waiters > 1 { epoch.fetch_or(ARMED) }
//!                                              break
//!                                          }
//! ```
//!
//! No lost wake-up: F1 and F2 order the store-buffering pattern (waiter:
//! arm `epoch`, read the condition; notifier: write the condition, read
//! `epoch`). Either the waiter's second `check` sees the condition, or the
//! notifier sees ARMED and changes the word before it wakes: a
//! `futex_wait(epoch, e)` that starts later sees another value and returns
//! at once, and one already asleep is woken. A failed CAS means another
//! notifier (or a re-arm) changed the word; the notifier looks again.
//!
//! With several sleepers and a wake of one, the notifier re-arms the word
//! when the kernel woke someone and `waiters` is not zero, so the next
//! notify wakes the next sleeper, or finds nobody asleep and leaves the word
//! disarmed: a sleep costs at most two `FUTEX_WAKE`s. (`waiters` may count
//! the waiter just woken, or one that was killed: that costs a spare wake,
//! never a missed one.)
//!
//! A waiter keeps no state a notifier waits on: if it is killed, the only
//! trace is `waiters` one too high.
//!
//! # Asymmetric fences
//!
//! F2 runs on every send and receive, F1 only when a waiter is about to
//! sleep (already a ~20 µs affair). So F2 is a compiler fence only, and F1 is
//! a full fence plus `membarrier(MEMBARRIER_CMD_GLOBAL_EXPEDITED)`, which
//! makes every running thread of every registered process execute a full
//! barrier (and a thread not running passed one at its context switch):
//! whatever a notifier had written before its F2, the barrier orders before
//! its later load of `epoch`, as a real F2 would. Every process registers
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

/// Bit 0 of `epoch`: a waiter may be asleep, not yet woken.
const ARMED: u32 = 1;

/// An event count in shared memory.
#[repr(C)]
#[derive(Debug)]
pub struct EventCount {
    /// The futex word: `ARMED` (bit 0) while a waiter may sleep unwoken;
    /// bits 1.. count wakes (wrapping), so every wake changes the word.
    epoch: AtomicU32,
    /// Processes between "registered" and "done sleeping" (too high by the
    /// waiters killed while registered, or woken and not yet gone). Decides
    /// whether a wake of one re-arms the word for the next sleeper.
    waiters: AtomicU32,
    /// Heap-model stand-in for the kernel's futex queue.
    #[cfg(loom)]
    model: FutexModel,
}

/// Byte offset of [`EventCount`]'s sleeper count, for the tests' hidden
/// layout export (`crate::__layout`).
#[cfg(not(loom))]
pub(crate) const WAITERS_OFFSET: usize = memoffset::offset_of!(EventCount, waiters);

/// How many sleepers a notify wakes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wake {
    /// One sleeper: one new message or one free slot.
    One,
    /// Every sleeper: a change each of them must look at.
    All,
}

impl EventCount {
    /// A fresh event count (heap models and unit tests; in a segment it
    /// starts as the zeroed file's bytes).
    #[cfg(loom)]
    pub fn new() -> EventCount {
        EventCount {
            epoch: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
            model: FutexModel::default(),
        }
    }

    /// A fresh event count (unit tests).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn new() -> EventCount {
        EventCount {
            epoch: AtomicU32::new(0),
            waiters: AtomicU32::new(0),
        }
    }

    /// Processes registered as sleeping here (a snapshot, for the
    /// inspection API; too high by waiters killed while asleep).
    #[cfg(not(loom))]
    pub(crate) fn sleepers(&self) -> u32 {
        self.waiters.load(Ordering::Relaxed)
    }

    /// Wakes sleepers, if any, after the caller made its condition true
    /// (with a Release store or RMW).
    #[inline]
    pub fn notify(&self, wake: Wake) {
        // SYNC POINT (F2): pairs with F1 in `wait_until`.
        light_fence();
        self.notify_fenced(wake);
    }

    /// [`notify`](Self::notify), but only if `cond` holds, and `cond` is
    /// evaluated only when someone may be asleep: for a wake condition that
    /// costs a read of a busy line (as `join`'s `done >= sent`).
    #[inline]
    pub(crate) fn notify_if(&self, wake: Wake, cond: impl FnOnce() -> bool) {
        // SYNC POINT (F2): pairs with F1 in `wait_until`.
        light_fence();
        let v = self.epoch.load(Ordering::Relaxed);
        if v & ARMED != 0 && cond() {
            self.wake_slow(v, wake);
        }
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
        let v = self.epoch.load(Ordering::Relaxed);
        if v & ARMED != 0 {
            self.wake_slow(v, wake);
        }
    }

    #[cold]
    fn wake_slow(&self, mut v: u32, wake: Wake) {
        // Each failed CAS is another notifier's progress (or a re-arm); a
        // bound keeps a scribbled-on word from spinning us forever.
        for _ in 0..64 {
            if v & ARMED == 0 {
                return;
            }
            // AcqRel, pairs with the waiter's arming RMW (AcqRel): if that
            // RMW comes later it reads our value and sees our condition; if
            // earlier, we read its value and see its `waiters` increment.
            match self.epoch.compare_exchange(
                v,
                (v & !ARMED).wrapping_add(2),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    let n = match wake {
                        Wake::One => 1,
                        Wake::All => i32::MAX,
                    };
                    let woken = self.futex_wake(n);
                    if wake == Wake::One && woken == 1 && self.waiters.load(Ordering::Relaxed) > 0 {
                        // Others may still sleep (`waiters` may also count
                        // the one just woken, if it has not left yet): the
                        // next notify wakes one, or finds none and leaves
                        // the word disarmed.
                        self.epoch.fetch_or(ARMED, Ordering::Relaxed);
                    }
                    return;
                }
                Err(now) => v = now,
            }
        }
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
            // AcqRel: pairs with the disarming CAS in `wake_slow`.
            let e = self.epoch.fetch_or(ARMED, Ordering::AcqRel) | ARMED;
            // SYNC POINT (F1): pairs with F2 in `notify`.
            heavy_fence();
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
    fn futex_wake(&self, n: i32) -> usize {
        crate::sys::futex_wake(&self.epoch, n)
    }

    #[cfg(loom)]
    fn futex_wait(&self, expected: u32, _timeout: Option<Duration>) {
        self.model.wait(&self.epoch, expected);
    }

    #[cfg(loom)]
    fn futex_wake(&self, n: i32) -> usize {
        self.model.wake(n)
    }
}

/// How long a blocking wait spins before it yields, catching a message
/// already on its way: waking a sleeper costs ~20 µs on a typical machine,
/// and a reply that arrives within the spin never pays it. Short, because
/// when the peer shares our core, spinning only delays it (measured:
/// blocking ping-pong on one core took 7.5 µs one-way with a 5 µs spin,
/// 3.9 µs with 1 µs; on two cores ~210 ns either way).
#[cfg(not(loom))]
const SPIN: Duration = Duration::from_micros(1);
/// How long it then yields the CPU between checks before sleeping; on an
/// oversubscribed machine this lets the peer run instead of us spinning.
#[cfg(not(loom))]
const YIELD: Duration = Duration::from_micros(50);

#[cfg(not(loom))]
impl EventCount {
    /// [`wait_until`](Self::wait_until) until `deadline` (`None`: forever),
    /// after a bounded spin and a bounded stretch of yields. Also says
    /// whether it went to sleep. For a caller whose own look has just found
    /// nothing (taking what is already there costs it no clock read and no
    /// closure): the first check comes after a pause.
    ///
    /// `start` is when the caller began to wait (its clock read, reused
    /// here: a timed receive reads the clock once, and only once it must
    /// wait).
    pub(crate) fn wait_spinning<T>(
        &self,
        start: Instant,
        deadline: Option<Instant>,
        mut check: impl FnMut() -> Option<T>,
    ) -> Option<(T, bool)> {
        let mut i = 0u32;
        loop {
            i = i.wrapping_add(1);
            if i % 32 != 0 {
                crate::sync::spin_hint();
            } else {
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
            if let Some(v) = check() {
                return Some((v, false));
            }
        }
        self.wait_until(deadline, check).map(|v| (v, true))
    }
}

/// A futex, modelled for loom: the value check and the enqueue happen under
/// one lock, as the kernel does them under its hash-bucket lock, so a wake
/// between a waiter's check and its sleep cannot be lost. A lost wake-up in
/// the protocol above shows up in the model as a deadlock. A wake of one
/// wakes one sleeper, as the kernel does, so the re-arming that hands a
/// wake on to the next sleeper is checked too.
#[cfg(loom)]
#[derive(Debug, Default)]
struct FutexModel {
    state: loom::sync::Mutex<ModelQueue>,
    cond: loom::sync::Condvar,
}

/// Sleepers in the modelled futex queue, and wakes handed out to them.
#[cfg(loom)]
#[derive(Debug, Default)]
struct ModelQueue {
    asleep: usize,
    wakes: usize,
}

#[cfg(loom)]
impl FutexModel {
    fn wait(&self, word: &AtomicU32, expected: u32) {
        let mut q = self.state.lock().unwrap();
        if word.load(Ordering::Relaxed) != expected {
            return;
        }
        q.asleep += 1;
        while q.wakes == 0 {
            q = self.cond.wait(q).unwrap();
        }
        q.wakes -= 1;
        q.asleep -= 1;
    }

    /// Wakes up to `n` sleepers; returns how many, as FUTEX_WAKE does.
    fn wake(&self, n: i32) -> usize {
        let mut q = self.state.lock().unwrap();
        let k = (q.asleep - q.wakes).min(n as usize);
        q.wakes += k;
        drop(q);
        if k > 0 {
            self.cond.notify_all();
        }
        k
    }
}
