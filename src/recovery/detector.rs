//! The stall detector: rate-limited scans from the paths that find the
//! queue empty or full, which decide when a stuck slot gets which repair.

use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::sync::Mutex;
use std::time::Instant;

use super::*;

impl Recovery<'_> {
    /// Looks at the slots that can stall the queue and deals with those
    /// stuck long enough. Returns true if it changed anything.
    /// `lift_due`: time to look at withheld slots (a pass over the whole
    /// ring) if there are any.
    pub(crate) fn scan(&self, seen: &mut Vec<Seen>, lift_due: bool) -> bool {
        let now = Instant::now();
        let control = self.seg.control();
        // A repair record with nobody at work on it: its recoverer died.
        // Taking the lock hands the repair over (see `lock`). Withheld
        // slots: their holders may have died since (checked now and then).
        if control.repair.0.kind.load(Ordering::Relaxed) != 0
            || control.stats.0.withheld.load(Ordering::Relaxed) > 0 && lift_due
        {
            if let Some(_guard) = self.lock() {
                self.lift_orphaned_quarantines();
            }
        }
        let (head, end) = self.window(self.ring_capacity().min(SCAN_LIMIT));
        let mut found: Vec<(u64, u64)> = Vec::new();
        {
            for t in head..end {
                let v = self.ring.seq(t);
                if v == t + 1 || v & !QUARANTINED == (t + 1) | TAKEN {
                    continue; // published, or read: nothing stuck here
                }
                if v == (t + 1) | HELD {
                    if found.len() < 4 {
                        found.push((t, v));
                    }
                    continue;
                }
                if v == t || v == t | QUARANTINED || v == (t + 1) | HELD | TAKEN {
                    found.push((t, v)); // receivers stop here
                }
                break;
            }
        }
        // A full ring whose next slot is held behind `head`: a receiver
        // died between moving `head` and freeing its slot.
        let tail = self.ring.sent_acquire();
        if let Some(b) = tail.checked_sub(self.ring_capacity()) {
            if b < head && self.ring.seq(b) == (b + 1) | HELD {
                found.push((b, (b + 1) | HELD));
            }
        }
        // Keep the first sighting of what is still there.
        seen.retain(|s| found.contains(&(s.t, s.seq)));
        for &(t, v) in &found {
            if !seen.iter().any(|s| s.t == t && s.seq == v) {
                seen.push(Seen {
                    t,
                    seq: v,
                    since: now,
                });
            }
        }
        let mut changed = false;
        for s in seen.iter() {
            let age = now.saturating_duration_since(s.since);
            if age >= DEAD_GRACE {
                changed |= self.resolve(s.t, s.seq, age);
            }
        }
        if changed {
            seen.clear();
        }
        changed
    }

    /// Deals with slot `t`, stuck in state `v` for `age`.
    pub(super) fn resolve(&self, t: u64, v: u64, age: Duration) -> bool {
        let timed_out = age >= self.unblock;
        if v == t {
            let holder = self.sender(t);
            if holder != Holder::Dead && !timed_out {
                return false;
            }
            let Some(_guard) = self.lock() else {
                return false;
            };
            if self.ring.seq(t) != t {
                return true; // resolved meanwhile
            }
            self.fence(t, holder == Holder::Dead);
            return true;
        }
        if v == t | QUARANTINED {
            let Some(_guard) = self.lock() else {
                return false;
            };
            return self.pass_skip(t);
        }
        // HELD: a receiver's (or a mover's source); MOVING: a mover's target.
        let holder = if v & TAKEN == 0 {
            self.receiver(t)
        } else {
            self.holder(t, &[Role::Move])
        };
        if holder == Holder::Alive || holder == Holder::Unknown && !timed_out {
            return false;
        }
        let Some(_guard) = self.lock() else {
            return false;
        };
        if self.ring.seq(t) != v {
            return true;
        }
        if v & TAKEN != 0 {
            self.undo_move(t)
        } else {
            let entry = self.receiver_entry(t);
            // Behind `head`, the message was read: free the slot.
            let ok = if t < self.ring.head() {
                self.finish_release(t)
            } else {
                self.redeliver(t, entry)
            };
            if let Some(i) = entry {
                self.settle(i);
            }
            ok
        }
    }
}

/// A slot seen stuck, and since when.
#[derive(Debug)]
pub(crate) struct Seen {
    t: u64,
    seq: u64,
    since: Instant,
}

/// A handle's stall detector: rate-limited scans from the paths that find
/// the queue empty or full.
#[derive(Debug, Default)]
pub(crate) struct Watchdog {
    /// Calls from polling loops, to look at the clock on every 16th.
    calls: std::sync::atomic::AtomicU32,
    /// Coarse milliseconds before which no scan starts.
    next_ms: StdAtomicU64,
    /// Coarse milliseconds before which no scan looks at withheld slots.
    lift_ms: StdAtomicU64,
    seen: Mutex<Vec<Seen>>,
}

impl Watchdog {
    /// Scans if the last scan was long enough ago. Returns true if
    /// recovery changed something (worth trying the operation again).
    #[inline]
    pub(crate) fn poll(
        &self,
        waiting: bool,
        scan: impl FnOnce(&mut Vec<Seen>, bool) -> bool,
    ) -> bool {
        if !waiting {
            // A caller's polling loop: a plain count (a lost update between
            // threads only shifts the sample) before the clock.
            let n = self.calls.load(StdOrdering::Relaxed).wrapping_add(1);
            self.calls.store(n, StdOrdering::Relaxed);
            if n % 16 != 0 {
                return false;
            }
        }
        let now_ms = crate::sys::coarse_ms();
        if now_ms < self.next_ms.load(StdOrdering::Relaxed) {
            return false;
        }
        self.poll_slow(now_ms, scan)
    }

    #[cold]
    fn poll_slow(&self, now_ms: u64, scan: impl FnOnce(&mut Vec<Seen>, bool) -> bool) -> bool {
        self.next_ms
            .store(now_ms + CHECK_EVERY_MS, StdOrdering::Relaxed);
        let Ok(mut seen) = self.seen.try_lock() else {
            return false;
        };
        let lift_due = now_ms >= self.lift_ms.load(StdOrdering::Relaxed);
        if lift_due {
            self.lift_ms
                .store(now_ms + LIFT_EVERY_MS, StdOrdering::Relaxed);
        }
        scan(&mut seen, lift_due)
    }
}
