//! The receive family's claim (any message, or the first a filter
//! accepts), release, and wait.

use super::*;

/// How far ahead a receiver draining a backlog fetches slot headers for
/// writing. Its claim of a slot is a locked instruction on a line the
/// sender wrote, which waits for the line and lets nothing after it start
/// early: one cross-core transfer per message, in series. Fetched a couple
/// of messages ahead, the transfer overlaps the work in between (measured,
/// 64-byte stream: 1.25-1.5x). Only while messages are waiting: a receiver
/// that had to wait (ping-pong) would take the line from the sender about
/// to write it, and gains nothing.
const PREFETCH_AHEAD: u64 = 2;

impl Queue {
    /// Claims the oldest message `want` accepts. A message with an
    /// impossible length is released (so the queue goes on) and reported.
    pub(super) fn claim_recv(
        &self,
        want: &mut Filter<'_>,
        waiting: bool,
    ) -> Result<Option<RecvGuard<'_>>, CorruptError> {
        let ring = self.ring();
        let max = self.geo.max_payload;
        let mut scratch = Vec::new();
        let entry = self.entry();
        let accept = |t: u64| {
            // Announced before the claiming CAS (which releases it): if we
            // die before writing the owner word, recovery still knows.
            entry.claiming.store(t, Ordering::Relaxed);
            if let Filter::Any = want {
                return true; // no need to look before the claim
            }
            let (header, len) = ring.slot(t).header.read();
            if len > max {
                return true; // everyone helps clear these
            }
            let taken = match want {
                Filter::Any => true,
                Filter::Header(f) => f(&header),
                Filter::Message(f) => {
                    // A peek at a slot we do not hold: a producer may be
                    // rewriting it if it was taken meanwhile. The ring
                    // re-checks the slot after a rejection and claims
                    // only the very message looked at after an
                    // acceptance, so a torn peek is never acted on.
                    scratch.clear();
                    scratch.resize(len as usize, 0);
                    // SAFETY: `len <= max_payload <= stride`, so the
                    // source lies inside slot `t`'s payload area; the
                    // destination is our own buffer of `len` bytes.
                    unsafe {
                        crate::copy::copy_bytes(
                            self.seg.payload_ptr(self.slot_index(t)),
                            scratch.as_mut_ptr(),
                            len as usize,
                        );
                    }
                    f(&header, &scratch)
                }
            };
            if !taken {
                // From now on a message may wait behind read slots: full
                // senders must look for one to move. Set once; the load
                // keeps the line shared for everyone after that.
                let flag = self.seg.passed_over();
                if flag.load(Ordering::Relaxed) == 0 {
                    flag.store(1, Ordering::Relaxed);
                }
            }
            taken
        };
        let t = match ring.try_claim_recv(accept) {
            Ok(t) => t,
            Err(ClaimError::Unavailable) => {
                self.found_empty.store(true, StdOrdering::Relaxed);
                self.poll_recovery(waiting);
                return Ok(None);
            }
            Err(ClaimError::Corrupt) => return Err(CorruptKind::Positions.into()),
        };
        // Draining a backlog: start fetching the slot a few messages on,
        // for the claim that will write it (see `PREFETCH_AHEAD`).
        // (A hint kept per handle; threads sharing it only blur it.)
        if self.found_empty.load(StdOrdering::Relaxed) {
            self.found_empty.store(false, StdOrdering::Relaxed);
        } else {
            crate::sync::prefetch_write(ring.slot(t.wrapping_add(PREFETCH_AHEAD)));
        }
        let slot = ring.slot(t);
        // A receiver dying here leaves its claim named only by its
        // announcement (the crash tests' "in-claim").
        fault::point("in-claim");
        slot.owner
            .store(owner_word(self.id, Role::Recv, t), Ordering::Relaxed);
        // Read once into locals; only the checked copy is used.
        let (header, len) = slot.header.read();
        if len > max {
            // Not a message we can deliver: release it (so the queue
            // goes on), count it done for `join`, and report it. A
            // fenced release means a recoverer already did.
            let _ = self.release(t);
            self.mark_done();
            return Err(CorruptKind::Length { len, max }.into());
        }
        // Counted in shared memory, so that if we die before `task_done`
        // recovery can count it done for `join` (see `recovery`).
        entry.outstanding.fetch_add(1, Ordering::Relaxed);
        let data = self.seg.payload_ptr(self.slot_index(t));
        // SAFETY: we hold ticket `t`; `len <= max_payload`, so `data`
        // and `len` describe bytes inside the slot's payload area.
        Ok(Some(unsafe {
            RecvGuard::new(self, t, header, data, len as usize)
        }))
    }

    /// Ends the claim on ticket `t` and wakes a sender waiting for space.
    pub(crate) fn release(&self, t: u64) -> Result<(), CorruptError> {
        let r = self.ring().release(t);
        self.seg.not_full().notify(Wake::One);
        r.map_err(|_| CorruptKind::SlotStolen.into())
    }

    /// Wakes receivers after a publish: one plain receiver (one message
    /// feeds one), and every selective one (any of them may be its taker).
    #[inline]
    pub(super) fn notify_receivers(&self) {
        EventCount::notify_two(
            (self.seg.not_empty(), Wake::One),
            (self.seg.selective(), Wake::All),
        );
    }

    /// [`Channel::recv_with`]: a message already waiting is taken without
    /// the wait's machinery; otherwise spins briefly, then yields, then
    /// sleeps in the kernel until a sender in any process wakes it.
    #[inline]
    pub(super) fn recv_guard(
        &self,
        mut want: Filter<'_>,
        wait: Wait,
    ) -> Result<RecvGuard<'_>, RecvTimeoutError> {
        if let Some(g) = self.claim_recv(&mut want, false)? {
            return Ok(g);
        }
        if wait == Wait::Never {
            return Err(RecvTimeoutError::Timeout);
        }
        self.recv_waiting(&mut want, Instant::now(), wait.deadline())
    }

    /// [`Channel::recv_ref_timeout`] (which `recv_timeout` and
    /// `recv_into_timeout` go through): the first look reads no clock; the
    /// deadline is taken from the one clock read the wait makes. (Made
    /// through `Wait::timeout` before the look, a receive that found its
    /// message waiting paid a clock read for nothing: blocking ping-pong
    /// 1.11x slower, measured.)
    #[inline]
    pub(super) fn recv_guard_for(
        &self,
        timeout: Duration,
    ) -> Result<RecvGuard<'_>, RecvTimeoutError> {
        let mut want = Filter::Any;
        if let Some(g) = self.claim_recv(&mut want, false)? {
            return Ok(g);
        }
        let start = Instant::now();
        self.recv_waiting(&mut want, start, start.checked_add(timeout))
    }

    /// The waiting part of [`recv_guard`](Self::recv_guard), for a caller
    /// whose own look has just found nothing, and who began to wait at
    /// `start`.
    pub(super) fn recv_waiting(
        &self,
        want: &mut Filter<'_>,
        start: Instant,
        deadline: Option<Instant>,
    ) -> Result<RecvGuard<'_>, RecvTimeoutError> {
        let plain = matches!(want, Filter::Any);
        let events = if plain {
            self.seg.not_empty()
        } else {
            self.seg.selective()
        };
        // Past its first spins, a wait is slow enough to look at the clock
        // on every check.
        let mut checks = 0u32;
        let check = || {
            checks = checks.saturating_add(1);
            self.claim_recv(want, checks > 64).transpose()
        };
        match events.wait_spinning(start, deadline, check) {
            Some((Ok(g), slept)) => {
                // We slept; if more is waiting, pass a wake on. The wake
                // protocol already re-arms for further sleepers; this covers
                // a wake spent on a receiver that died before taking its
                // message, or on one that found the message already gone.
                if slept && plain && !self.is_empty() {
                    self.seg.not_empty().notify(Wake::One);
                }
                Ok(g)
            }
            Some((Err(e), _)) => Err(e.into()),
            None => Err(RecvTimeoutError::Timeout),
        }
    }
}
