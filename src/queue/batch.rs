//! Batches (one claim for many messages) and the zero-copy reservation.

use super::*;

/// The most messages a batch receive holds before it frees their slots
/// (`recv_batch_now`): the run of free slots a batch send waits for
/// (`SEND_RUN`), so that each release lets a waiting sender go.
const RUN_MAX: u64 = super::send::SEND_RUN;

/// How far ahead of the message it reads a batch receive fetches slot
/// lines for its next claims (see `PREFETCH_AHEAD`): within a run the
/// messages are known to be waiting.
const RUN_PREFETCH: u64 = 4;

/// A run of slots held by a batch receive, released on drop if it was not
/// released before (a panic in the caller's `f`).
struct HeldRun<'q> {
    queue: &'q Queue,
    first: u64,
    /// Slots held; 0 once released.
    len: u64,
}

impl HeldRun<'_> {
    fn release(&mut self) -> Result<(), crate::ring::Fenced> {
        let len = std::mem::take(&mut self.len);
        if len == 0 {
            return Ok(());
        }
        self.queue.ring().release_run(self.first, len)
    }
}

impl Drop for HeldRun<'_> {
    fn drop(&mut self) {
        // Reclaimed under us: nothing to report to while unwinding.
        let _ = self.release();
    }
}

impl Queue {
    /// [`Channel::try_send_batch`]: claims the slots with one
    /// compare-and-swap; receivers are woken once for the batch, and see
    /// its messages together: the first is published last.
    ///
    /// On a ring that has some room, but less than a run of
    /// `min(msgs.len(), 32, capacity / 4)` free slots, it sends nothing and
    /// says [`Full`](TrySendError::Full): a receiver draining a full ring
    /// frees one slot at a time, and a sender claiming each as it frees
    /// moves in lockstep with it, one cache line apart, every message a
    /// transfer of that line both ways; waiting for a run, it claims the
    /// run with one compare-and-swap. A loop that retries on `Full` (or a
    /// blocking [`send`](Queue::send) of the rest) so moves messages in
    /// runs. With no room at all, the claim runs as usual (it may compact
    /// a ring blocked by a message nobody takes).
    ///
    /// ```
    /// use mulproc::{Message, Queue, QueueConfig, Request};
    /// # let name = format!("doc-batch-{}", std::process::id());
    /// let q = Queue::create(&name, QueueConfig::new(4, 8))?;
    /// let msgs: Vec<_> = (0u8..6).map(|i| Message::new(Request::DO, vec![i])).collect();
    /// assert_eq!(q.try_send_batch(&msgs)?, 4); // four slots
    /// let mut got = Vec::new();
    /// q.try_recv_batch(10, |_, data| got.push(data[0]))?;
    /// assert_eq!(got, [0, 1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub(super) fn send_batch_now<D: AsRef<[u8]>>(
        &self,
        msgs: &[Message<D>],
    ) -> Result<usize, TrySendError<()>> {
        crate::channel::batch_fits(msgs, self.max_payload())?;
        if msgs.is_empty() {
            return Ok(0);
        }
        // Some room but not a run: wait for the run (see above). Both looks
        // are hints on slot lines; the claim confirms.
        let run = self.send_run(msgs.len() as u64);
        let ring = self.ring();
        if run > 1 && ring.free_ahead(1) && !ring.free_ahead(run) {
            self.poll_recovery(false);
            return Err(TrySendError::Full(()));
        }
        let (first, n) = match self.claim_send_many(msgs.len() as u64) {
            Ok(claim) => claim,
            Err(ClaimError::Unavailable) => return Err(TrySendError::Full(())),
            Err(ClaimError::Corrupt) => {
                return Err(TrySendError::Corrupt((), CorruptKind::Positions.into()))
            }
        };
        // Filled in order, then published last first. Receivers stop at
        // the first slot not yet published (`ring`, invariant 4), so none
        // of the batch is taken before its first message, and order is
        // kept; meanwhile a receiver waiting for the batch polls only the
        // first slot's line. Published first to last, every publish found
        // its line just read by that poll and waited to take it back
        // (measured: 26 M msg/s; this way 43 M msg/s).
        for (i, m) in msgs.iter().take(n as usize).enumerate() {
            self.fill(first + i as u64, &m.header_or(self.pid), m.data.as_ref());
        }
        let mut fenced = false;
        for t in (first..first + n).rev() {
            fenced |= self.publish(t).is_err();
        }
        self.notify_receivers();
        if fenced {
            return Err(TrySendError::Fenced(()));
        }
        Ok(n as usize)
    }

    /// [`Channel::try_recv_batch`]: in place (no copy, no allocation),
    /// waking senders once for the batch. On an error, `f` has already
    /// seen the messages received before it.
    ///
    /// Messages waiting at the head of the queue are taken in runs of up
    /// to `RUN_MAX`: each claimed as a single receive claims it (announced,
    /// signed, counted for `join`), handed to `f`, and the run's slots are
    /// freed together after the last, with one move of the queue's head
    /// (see `Ring::release_run`). Where the head is not a message to take
    /// (another receiver holds it, or it was read out of order), one
    /// message is taken as `try_recv` takes it, and the next run starts
    /// from there. A receiver that dies in the middle of a run has the
    /// run's messages, read or not, offered again (at least once, as any
    /// message held by a receiver that dies); one that dies while freeing
    /// the run has it freed for it.
    pub(super) fn recv_batch_now<F>(&self, max: usize, mut f: F) -> Result<usize, TryRecvError>
    where
        F: FnMut(&Header, &[u8]),
    {
        let mut n = 0;
        let mut stolen = false;
        let result = loop {
            if n == max {
                break Ok(n);
            }
            match self.recv_run((max - n) as u64, &mut f, &mut n, &mut stolen) {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => break Err(e.into()),
            }
            // No run at the head: one message wherever it waits.
            match self.claim_recv(&mut Filter::Any, false) {
                Ok(Some(g)) => {
                    f(g.header(), g.data());
                    // Released here, without a wake-up each: senders
                    // waiting for space are woken once for the batch.
                    stolen |= self.ring().release(g.into_ticket()).is_err();
                    n += 1;
                }
                Ok(None) => break Ok(n),
                Err(e) => break Err(e.into()),
            }
        };
        if n > 0 {
            self.seg.not_full().notify(Wake::All);
        }
        if stolen {
            return Err(CorruptError::from(CorruptKind::SlotStolen).into());
        }
        result
    }

    /// Takes a run of up to `max` messages from the head of the queue
    /// into `f` (see [`recv_batch_now`](Self::recv_batch_now)), counting
    /// them into `got`; false if the message at the head was not there to
    /// take. `stolen`: a slot of the run was reclaimed under us.
    fn recv_run<F>(
        &self,
        max: u64,
        f: &mut F,
        got: &mut usize,
        stolen: &mut bool,
    ) -> Result<bool, CorruptError>
    where
        F: FnMut(&Header, &[u8]),
    {
        let ring = self.ring();
        let entry = self.entry();
        // Announced before each claiming CAS (which releases it), as in
        // `claim_recv`: if we die before the owner word, recovery knows.
        let announce = |t: u64| entry.claiming.store(t, Ordering::Relaxed);
        let Some(first) = ring.try_claim_head(announce) else {
            return Ok(false);
        };
        let max = max.clamp(1, RUN_MAX.min(u64::from(self.geo.capacity)));
        // Released on every way out, a panic of `f` included.
        let mut run = HeldRun {
            queue: self,
            first,
            len: 1,
        };
        // The next slots' lines, for the claims that will write them: they
        // travel while we read this one (see `PREFETCH_AHEAD`). Not when
        // the last look found the queue empty: the next slots may be the
        // ones a sender is writing, and the run may be this one message.
        let waited = self.found_empty.load(StdOrdering::Relaxed);
        if waited {
            self.found_empty.store(false, StdOrdering::Relaxed);
        } else {
            for k in 1..=RUN_PREFETCH.min(max - 1) {
                crate::sync::prefetch_write(ring.slot(first + k));
            }
        }
        let limit = self.geo.max_payload;
        let mut t = first;
        let bad = loop {
            let slot = ring.slot(t);
            // As in `claim_recv`: a receiver dying here leaves its claim
            // named only by its announcement.
            fault::point("in-claim");
            slot.owner
                .store(owner_word(self.id, Role::Recv, t), Ordering::Relaxed);
            if (t > first || !waited) && t + RUN_PREFETCH < first + max {
                crate::sync::prefetch_write(ring.slot(t + RUN_PREFETCH));
            }
            // Read once into locals; only the checked copy is used.
            let (header, len) = slot.header.read();
            if len > limit {
                break Some(len);
            }
            // Counted in shared memory right after the owner word, as in
            // `claim_recv` (recovery's accounting for a dead receiver
            // relies on the two going together).
            entry.outstanding.fetch_add(1, Ordering::Relaxed);
            // SAFETY: we hold ticket `t` until `run` is released, so no
            // honest process writes its slot meanwhile; `len <=
            // max_payload`, so the bytes lie inside the slot's payload area,
            // in the mapping `self` keeps alive; the slice is dropped
            // before the run is released.
            let data = unsafe {
                std::slice::from_raw_parts(self.seg.payload_ptr(self.slot_index(t)), len as usize)
            };
            f(&header, data);
            *got += 1;
            if run.len == max || !ring.try_claim_next(t + 1, announce) {
                break None;
            }
            t += 1;
            run.len += 1;
        };
        *stolen |= run.release().is_err();
        if let Some(len) = bad {
            // Not a message we can deliver: released with the run (so the
            // queue goes on), never counted outstanding, counted done for
            // `join`, and reported.
            self.mark_done();
            return Err(CorruptKind::Length { len, max: limit }.into());
        }
        Ok(true)
    }

    /// Reserves a slot to fill in place (zero-copy send) if one is free.
    ///
    /// Write up to [`max_payload`](Queue::max_payload) bytes into
    /// [`SendSlot::payload_mut`], then [`SendSlot::commit`]. A reservation
    /// dropped without commit is given up: marked read at once (receivers
    /// pass it, `join` counts it done), so it never blocks the queue.
    ///
    /// ```
    /// use mulproc::{Queue, QueueConfig, Request};
    /// # let name = format!("doc-reserve-{}", std::process::id());
    /// let q = Queue::create(&name, QueueConfig::new(4, 64))?;
    /// let mut slot = q.try_reserve()?;
    /// slot.payload_mut()[..4].copy_from_slice(&7u32.to_le_bytes());
    /// slot.commit(Request::DO, None, 4)?;
    /// let got = q.try_recv_ref()?;
    /// assert_eq!(got.data(), 7u32.to_le_bytes());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn try_reserve(&self) -> Result<SendSlot<'_>, TrySendError<()>> {
        match self.claim_send(false) {
            Claimed::Slot(ticket) => {
                // Signed at once: the slot may be held for long, and our
                // next claim replaces the announcement.
                self.sign_claim(ticket);
                Ok(SendSlot {
                    queue: self,
                    ticket,
                    done: false,
                })
            }
            Claimed::Unavailable => Err(TrySendError::Full(())),
            Claimed::Gone => Err(TrySendError::Disconnected(())),
            Claimed::Corrupt => Err(TrySendError::Corrupt((), CorruptKind::Positions.into())),
        }
    }
}

/// A reserved slot to fill in place; see [`Queue::try_reserve`].
pub struct SendSlot<'q> {
    queue: &'q Queue,
    ticket: u64,
    done: bool,
}

impl fmt::Debug for SendSlot<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendSlot")
            .field("ticket", &self.ticket)
            .finish()
    }
}

impl SendSlot<'_> {
    /// The slot's payload area, [`max_payload`](Queue::max_payload) bytes.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let q = self.queue;
        // SAFETY: we hold the claim on `ticket`: until we publish, no honest
        // process reads or writes this payload area, which is `max_payload`
        // bytes inside the mapping. The borrow is tied to `&mut self`, and
        // `commit` consumes `self`, so the slice cannot outlive the claim.
        unsafe {
            std::slice::from_raw_parts_mut(
                q.seg.payload_ptr(q.slot_index(self.ticket)),
                q.max_payload(),
            )
        }
    }

    /// Publishes the first `len` bytes of the payload area as a message.
    /// A `len` over max payload is refused and the slot given up.
    pub fn commit(
        mut self,
        request: Request,
        recipient: Option<u32>,
        len: usize,
    ) -> Result<(), TrySendError<()>> {
        self.done = true;
        let q = self.queue;
        let max = q.geo.max_payload;
        let slot = q.ring().slot(self.ticket);
        if len > max as usize {
            self.abandon();
            return Err(TrySendError::TooLarge {
                msg: (),
                len,
                max: max as usize,
            });
        }
        let header = Header {
            request,
            sender: q.pid,
            recipient,
        };
        slot.header.write(&header, len as u32);
        let r = q.ring().publish(self.ticket);
        q.notify_receivers();
        r.map_err(|_| {
            q.lift_own_quarantine(self.ticket);
            TrySendError::Fenced(())
        })
    }

    /// Gives the slot up without a message: receivers pass it, `join`
    /// counts it done, and it frees up as if read.
    fn abandon(&self) {
        let q = self.queue;
        // Fenced: a recoverer already gave it up for us, and counted it
        // done.
        if q.ring().abandon(self.ticket).is_ok() {
            q.mark_done();
        } else {
            q.lift_own_quarantine(self.ticket);
        }
        q.seg.not_full().notify(Wake::One);
    }
}

impl Drop for SendSlot<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.abandon();
        }
    }
}
