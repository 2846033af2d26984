//! The copying send: claim (waiting with the shared backoff), fill, sign,
//! publish; a full ring's move of a passed-over message.

use super::*;

/// The run of free slots a blocking send waits for while it spins, and a
/// batch send before it claims (a quarter of the ring at most); also the
/// longest run a batch receive holds before it frees it.
pub(super) const SEND_RUN: u64 = 32;

impl Queue {
    /// The run of free slots worth waiting for before claiming `want`:
    /// `min(want, SEND_RUN, capacity / 4)`, at least 1.
    #[inline]
    pub(super) fn send_run(&self, want: u64) -> u64 {
        want.min(SEND_RUN)
            .min(u64::from(self.geo.capacity) / 4)
            .max(1)
    }

    #[inline]
    pub(super) fn claim_send(&self, waiting: bool) -> Claimed {
        match self.claim_send_many(1) {
            Ok((t, _)) => Claimed::Slot(t),
            Err(ClaimError::Unavailable) => {
                if self.poll_recovery(waiting) {
                    if let Ok((t, _)) = self.claim_send_many(1) {
                        return Claimed::Slot(t);
                    }
                }
                Claimed::Unavailable
            }
            Err(ClaimError::Corrupt) => Claimed::Corrupt,
        }
    }

    /// Signs the claim on ticket `t` with our owner word: from here on
    /// recovery knows whose it is without looking at the announcement
    /// (see `recovery`).
    #[inline]
    pub(super) fn sign_claim(&self, t: u64) {
        self.ring()
            .slot(t)
            .owner
            .store(owner_word(self.id, Role::Send, t), Ordering::Relaxed);
    }

    /// After a fenced publish or abandon of ticket `t`: we write into its
    /// slot no more, so a quarantine set for our sake can end.
    pub(super) fn lift_own_quarantine(&self, t: u64) {
        let ring = self.ring();
        let slot = ring.slot(t);
        let me = owner_word(self.id, Role::Send, t);
        if ring.lift_quarantine(t, || slot.owner.load(Ordering::Relaxed) == me) {
            recovery::note_lifted(&self.seg);
            self.seg.not_full().notify(Wake::All);
        }
    }

    /// Claims up to `max` consecutive slots. On a ring that is full because
    /// receivers passed over its oldest message, moves that message forward
    /// over the slots read behind it first (see [`Ring::begin_move`]), so a
    /// message nobody takes cannot block the queue.
    pub(super) fn claim_send_many(&self, max: u64) -> Result<(u64, u64), ClaimError> {
        let ring = self.ring();
        let entry = self.entry();
        let on = |e: ClaimEvent| match e {
            // Stored on our own line, before each claiming CAS (which
            // releases them): who is about to hold these tickets.
            ClaimEvent::Announce { from, to } => {
                entry.sending_from.store(from, Ordering::Relaxed);
                entry.sending_to.store(to, Ordering::Relaxed);
            }
            // A ticket passed by on a withheld slot: no message, done.
            ClaimEvent::Skipped => self.mark_done(),
        };
        for _ in 0..self.geo.capacity {
            match ring.try_claim_send_many(max, on) {
                Err(ClaimError::Unavailable) => {
                    entry.sending_to.store(0, Ordering::Relaxed);
                    // Relaxed: a hint. A rejection we miss here was made
                    // by a receiver still scanning; the next full poll (or
                    // the next sender's) sees it.
                    if self.seg.passed_over().load(Ordering::Relaxed) == 0 {
                        return Err(ClaimError::Unavailable);
                    }
                    let Some((from, to)) = ring.begin_move() else {
                        return Err(ClaimError::Unavailable);
                    };
                    for t in [from, to] {
                        ring.slot(t)
                            .owner
                            .store(owner_word(self.id, Role::Move, t), Ordering::Relaxed);
                    }
                    self.copy_slot(from, to);
                    ring.finish_move(from, to);
                    self.notify_receivers();
                }
                // Not signed yet: the announcement names us until the
                // caller signs (`fill`, `try_reserve`).
                Ok((first, n)) => {
                    return Ok((first, n));
                }
                r => {
                    entry.sending_to.store(0, Ordering::Relaxed);
                    return r;
                }
            }
        }
        Err(ClaimError::Unavailable)
    }

    /// Copies the message of ticket `from` into the slot of ticket `to`;
    /// both are held by a move.
    pub(super) fn copy_slot(&self, from: u64, to: u64) {
        let ring = self.ring();
        let (src, dst) = (ring.slot(from), ring.slot(to));
        let len = src.header.len.load(Ordering::Relaxed);
        dst.header.copy_from(&src.header);
        // An impossible length is copied as is (the receiver reports it);
        // only the bytes that exist are moved.
        let n = len.min(self.geo.max_payload) as usize;
        // SAFETY: the move holds both slots, so no honest process touches
        // either payload; `n <= max_payload <= stride`, and two different
        // tickets of one lap map to two different slots, so the areas do
        // not overlap.
        unsafe {
            crate::copy::copy_bytes(
                self.seg.payload_ptr(self.slot_index(from)),
                self.seg.payload_ptr(self.slot_index(to)),
                n,
            );
        }
    }

    /// Writes header and payload into the claimed slot of ticket `t`.
    /// `data.len()` must be at most max_payload.
    ///
    /// The payload first; the claim is signed and the header written just
    /// before the publish: the slot header's line is then written in one
    /// burst, leaving a receiver polling it (for this very message) the
    /// least time to take the line back before the publish.
    #[inline]
    pub(super) fn fill(&self, t: u64, header: &Header, data: &[u8]) {
        debug_assert!(data.len() <= self.max_payload());
        // SAFETY: we hold the claim on ticket `t`, so no honest process
        // touches this slot's payload until we publish; the area is
        // `stride >= max_payload >= data.len()` bytes inside the mapping,
        // and `data` is our own memory, so the two do not overlap.
        unsafe {
            crate::copy::copy_bytes(
                data.as_ptr(),
                self.seg.payload_ptr(self.slot_index(t)),
                data.len(),
            );
        }
        // A sender dying here leaves its claim named only by its
        // announcement (the crash tests' "in-copy").
        fault::point("in-copy");
        self.sign_claim(t);
        self.ring().slot(t).header.write(header, data.len() as u32);
    }

    /// Publishes the filled slot of ticket `t`, without waking anyone; if
    /// a recoverer fenced the claim, gives the slot up instead.
    #[inline]
    pub(super) fn publish(&self, t: u64) -> Result<(), ()> {
        fault::point("before-publish");
        self.ring()
            .publish(t)
            .map_err(|_| self.lift_own_quarantine(t))
    }

    /// [`fill`](Self::fill), then [`publish`](Self::publish).
    #[inline]
    pub(super) fn fill_and_publish_quiet(
        &self,
        t: u64,
        header: &Header,
        data: &[u8],
    ) -> Result<(), ()> {
        self.fill(t, header, data);
        self.publish(t)
    }

    /// [`fill_and_publish_quiet`](Self::fill_and_publish_quiet), then wakes
    /// receivers.
    #[inline]
    pub(super) fn fill_and_publish(&self, t: u64, header: &Header, data: &[u8]) -> Result<(), ()> {
        let r = self.fill_and_publish_quiet(t, header, data);
        self.notify_receivers();
        r
    }

    /// Sends `msg`, waiting for room as `wait` says ([`Channel::send_with`]).
    #[inline]
    pub(super) fn send_msg<D: AsRef<[u8]>>(
        &self,
        msg: Message<D>,
        wait: Wait,
    ) -> Result<(), TrySendError<Message<D>>> {
        let len = msg.data.as_ref().len();
        if len > self.max_payload() {
            let max = self.max_payload();
            return Err(TrySendError::TooLarge { msg, len, max });
        }
        let claimed = if wait == Wait::Never {
            self.claim_send(false)
        } else {
            let room = || self.ring().free_ahead(self.send_run(SEND_RUN));
            claim_waiting(self.seg.not_full(), wait, room, || self.claim_send(true))
        };
        match claimed {
            Claimed::Slot(t) => self.finish_send(t, msg),
            Claimed::Unavailable => Err(TrySendError::Full(msg)),
            Claimed::Gone => Err(TrySendError::Disconnected(msg)),
            Claimed::Corrupt => Err(TrySendError::Corrupt(msg, CorruptKind::Positions.into())),
        }
    }

    #[inline]
    pub(super) fn finish_send<D: AsRef<[u8]>>(
        &self,
        t: u64,
        msg: Message<D>,
    ) -> Result<(), TrySendError<Message<D>>> {
        let header = msg.header_or(self.pid);
        match self.fill_and_publish(t, &header, msg.data.as_ref()) {
            Ok(()) => Ok(()),
            Err(()) => Err(TrySendError::Fenced(msg)),
        }
    }
}
