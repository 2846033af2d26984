//! `task_done` and `join` (Python's `JoinableQueue`).

use super::*;

impl Queue {
    /// Marks one message received by this handle as processed (Python's
    /// `JoinableQueue.task_done`); see [`Joinable::task_done`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use mulproc::{Message, Queue, QueueConfig, Request};
    /// # let name = format!("doc-join-{}", std::process::id());
    /// let q = Queue::create(&name, QueueConfig::new(8, 64))?;
    /// q.try_send(Message::signal(Request::DO))?;
    /// assert!(q.join_timeout(Duration::from_millis(10)).is_err()); // not received yet
    /// let _task = q.try_recv()?;
    /// q.task_done()?;
    /// q.join_timeout(Duration::from_millis(10))?;
    /// assert!(q.task_done().is_err()); // one more than received
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn task_done(&self) -> Result<(), TaskDoneError> {
        <Self as Joinable>::task_done(self)
    }

    /// Waits until every message sent to the queue has been received and
    /// marked done with [`task_done`](Queue::task_done) (Python's
    /// `JoinableQueue.join`), as long as it takes.
    pub fn join(&self) {
        <Self as Joinable>::join(self)
    }

    /// [`join`](Queue::join), waiting at most `timeout`; the error tells how
    /// many messages were still not done.
    pub fn join_timeout(&self, timeout: Duration) -> Result<(), JoinTimeoutError> {
        <Self as Joinable>::join_timeout(self, timeout)
    }

    /// [`join`](Queue::join), waiting until `deadline`.
    pub fn join_deadline(&self, deadline: Instant) -> Result<(), JoinTimeoutError> {
        <Self as Joinable>::join_deadline(self, deadline)
    }

    pub(super) fn task_done_now(&self) -> Result<(), TaskDoneError> {
        self.entry()
            .outstanding
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .map_err(|_| TaskDoneError::TooManyCalls)?;
        self.mark_done();
        Ok(())
    }

    /// Counts one message as done towards `join`.
    pub(super) fn mark_done(&self) {
        // Release: pairs with the Acquire load in `joined`; the work done
        // before `task_done` happens before `join` returns.
        // Wrapping: the count is in shared memory and may hold anything.
        let done = self
            .seg
            .done_count()
            .fetch_add(1, Ordering::Release)
            .wrapping_add(1);
        // `tail` is the senders' busiest line: read it only if a joiner may
        // be asleep.
        self.seg
            .joined()
            .notify_if(Wake::All, || done >= self.ring().sent());
    }

    pub(super) fn is_joined(&self) -> bool {
        // Acquire: pairs with the Release in `mark_done`.
        let done = self.seg.done_count().load(Ordering::Acquire);
        if done >= self.ring().sent() {
            return true;
        }
        // Not yet: a handle that died holding tasks would keep it so
        // forever. Look for dead handles now and then (a probe per handle).
        let now = crate::sys::coarse_ms();
        if now >= self.join_check_ms.load(StdOrdering::Relaxed) {
            self.join_check_ms.store(now + 50, StdOrdering::Relaxed);
            self.poll_recovery(true);
            if self.recovery().settle_dead_handles() > 0 {
                let done = self.seg.done_count().load(Ordering::Acquire);
                return done >= self.ring().sent();
            }
        }
        false
    }

    pub(super) fn join_now(&self, wait: Wait) -> Result<(), JoinTimeoutError> {
        self.seg
            .joined()
            .wait_until(wait.deadline(), || self.is_joined().then_some(()))
            .ok_or_else(|| JoinTimeoutError::Timeout {
                outstanding: self
                    .ring()
                    .sent()
                    .saturating_sub(self.seg.done_count().load(Ordering::Relaxed)),
            })
    }
}
