//! The backoff a blocking send runs between finding no room and going to
//! sleep, shared by the queue and the pipe: growing spins, then yields,
//! then a sleep on the direction's `not_full` event count.

use std::time::{Duration, Instant};

use super::{Claimed, EventCount};
use crate::channel::Wait;

/// How a blocking send waits for space before it sleeps: looks `2^k`
/// spin hints apart, `k` growing to this (about 1.5 µs apart here)...
const BACKOFF_MAX_SHIFT: u32 = 6;
/// ... then yields between looks, up to this long in all.
const BACKOFF_FOR: Duration = Duration::from_micros(50);
/// One pause of the backoff before a send sleeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Pause {
    /// Spin this many CPU relax hints, then look again.
    Spin(u32),
    /// Yield the CPU, then look again.
    Yield,
    /// The backoff is over: sleep.
    Done,
}

/// The backoff's schedule: `2^k` spin hints for `k` in
/// `0..BACKOFF_MAX_SHIFT`, then yields until `BACKOFF_FOR` (or the wait's
/// own remaining time, if shorter) has passed since the first look.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Backoff {
    shift: u32,
    limit: Duration,
}

impl Backoff {
    /// The schedule for a send that waits as `wait` says.
    pub(crate) fn new(wait: Wait) -> Backoff {
        Backoff {
            shift: 0,
            limit: wait.remaining().map_or(BACKOFF_FOR, |r| r.min(BACKOFF_FOR)),
        }
    }

    /// The next pause; `elapsed` (time since the first look) is asked for
    /// only once the spins are over.
    #[inline]
    pub(crate) fn next(&mut self, elapsed: impl FnOnce() -> Duration) -> Pause {
        if self.shift < BACKOFF_MAX_SHIFT {
            let n = 1u32 << self.shift;
            self.shift += 1;
            Pause::Spin(n)
        } else if elapsed() < self.limit {
            Pause::Yield
        } else {
            Pause::Done
        }
    }
}

/// Claims a slot, waiting for space as `wait` says: first polling with
/// growing pauses and then yields (about 50 µs), then asleep on
/// `not_full`, woken when a receiver frees a slot, until the deadline.
///
/// Until it sleeps it waits for `room()`, a run of free slots, rather than
/// for one: on a full ring the slot a sender would claim next is the one
/// the receiver is reading, and every look at it takes that line from the
/// receiver; sender and receiver then move in lockstep, one line apart,
/// and each message costs both a transfer of it. `room()` looks at a slot
/// a run ahead instead, which the receiver reaches only after draining
/// the run, which the sender then fills in one go. (Measured, blocking
/// 64-byte stream: 5.6-6.5 M msg/s polling the next slot, 9 M waiting for
/// a run.)
pub(crate) fn claim_waiting(
    not_full: &EventCount,
    wait: Wait,
    mut room: impl FnMut() -> bool,
    mut claim: impl FnMut() -> Claimed,
) -> Claimed {
    let mut claimed = claim();
    if !matches!(claimed, Claimed::Unavailable) || wait == Wait::Never {
        return claimed;
    }
    let deadline = wait.deadline();
    let mut backoff = Backoff::new(wait);
    let start = Instant::now();
    loop {
        match backoff.next(|| start.elapsed()) {
            Pause::Spin(n) => {
                for _ in 0..n {
                    crate::sync::spin_hint();
                }
            }
            Pause::Yield => std::thread::yield_now(),
            Pause::Done => break,
        }
        if !room() {
            continue;
        }
        claimed = claim();
        if !matches!(claimed, Claimed::Unavailable) {
            return claimed;
        }
    }
    not_full
        .wait_until(deadline, || match claim() {
            Claimed::Unavailable => None,
            other => Some(other),
        })
        .unwrap_or(Claimed::Unavailable)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_spins_doubling_then_yields_then_sleeps() {
        let mut b = Backoff::new(Wait::Forever);
        let spins: Vec<Pause> = (0..BACKOFF_MAX_SHIFT)
            .map(|_| b.next(|| panic!("no clock during the spins")))
            .collect();
        assert_eq!(
            spins,
            [1, 2, 4, 8, 16, 32].map(Pause::Spin),
            "2^k hints for k below BACKOFF_MAX_SHIFT"
        );
        assert_eq!(b.next(|| Duration::ZERO), Pause::Yield);
        assert_eq!(
            b.next(|| BACKOFF_FOR - Duration::from_nanos(1)),
            Pause::Yield
        );
        assert_eq!(b.next(|| BACKOFF_FOR), Pause::Done);
    }

    #[test]
    fn backoff_never_outlasts_the_wait() {
        let deadline = Instant::now() + Duration::from_micros(5);
        let mut b = Backoff::new(Wait::Until(deadline));
        for _ in 0..BACKOFF_MAX_SHIFT {
            b.next(Duration::default);
        }
        assert_eq!(b.next(|| Duration::from_micros(5)), Pause::Done);
        // A deadline already past: no yields at all.
        let mut b = Backoff::new(Wait::Until(Instant::now()));
        for _ in 0..BACKOFF_MAX_SHIFT {
            b.next(Duration::default);
        }
        assert_eq!(b.next(|| Duration::ZERO), Pause::Done);
    }

    #[test]
    fn wait_deadlines_and_remaining_time() {
        let before = Instant::now();
        let never = Wait::Never;
        assert!(never.deadline().is_some_and(|d| d >= before));
        assert_eq!(never.remaining(), Some(Duration::ZERO));
        assert!(never.is_over());
        assert_eq!(Wait::Forever.deadline(), None);
        assert_eq!(Wait::Forever.remaining(), None);
        assert!(!Wait::Forever.is_over());
        let past = Wait::Until(before);
        assert_eq!(past.remaining(), Some(Duration::ZERO));
        assert!(past.is_over());
        let soon = Wait::timeout(Duration::from_secs(60));
        assert!(soon
            .remaining()
            .is_some_and(|r| r > Duration::from_secs(59)));
        assert!(!soon.is_over());
        // Past what the clock can tell: forever, not a panic.
        assert_eq!(Wait::timeout(Duration::MAX), Wait::Forever);
    }

    #[test]
    fn send_retry_budget() {
        use crate::channel::SendRetry;
        let none = |tries, wait| SendRetry { tries, wait }.budget();
        // No tries, or tries of no time: fail at once.
        assert_eq!(none(0, Duration::from_secs(1)), Wait::Never);
        assert_eq!(none(5, Duration::ZERO), Wait::Never);
        // tries × wait from now.
        let before = Instant::now();
        let w = none(4, Duration::from_millis(250));
        let after = Instant::now();
        match w {
            Wait::Until(d) => assert!(
                d >= before + Duration::from_secs(1) && d <= after + Duration::from_secs(1),
                "{d:?}"
            ),
            other => panic!("expected a deadline, got {other:?}"),
        }
        assert_eq!(SendRetry::default().total(), Duration::from_secs(1));
        // A product past the clock's range saturates to forever.
        assert_eq!(none(u32::MAX, Duration::MAX), Wait::Forever);
    }

    #[test]
    fn claim_waiting_returns_at_once_unless_unavailable() {
        let ev = EventCount::new();
        let mut claims = 0;
        let r = claim_waiting(
            &ev,
            Wait::Forever,
            || true,
            || {
                claims += 1;
                Claimed::Slot(7)
            },
        );
        assert!(matches!(r, Claimed::Slot(7)) && claims == 1);
        let mut claims = 0;
        let r = claim_waiting(
            &ev,
            Wait::Never,
            || true,
            || {
                claims += 1;
                Claimed::Unavailable
            },
        );
        assert!(matches!(r, Claimed::Unavailable) && claims == 1);
        // Unavailable until the third look: found during the backoff.
        let mut claims = 0;
        let r = claim_waiting(
            &ev,
            Wait::Forever,
            || true,
            || {
                claims += 1;
                if claims < 3 {
                    Claimed::Unavailable
                } else {
                    Claimed::Gone
                }
            },
        );
        assert!(matches!(r, Claimed::Gone) && claims == 3);
    }
}
