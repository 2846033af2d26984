//! The named queue, by concern: this file the handle's lifecycle (create,
//! open, close, drop), its settings and queries and the channel
//! interface; `config` the configuration; `send` the copying send (claim,
//! fill, sign, publish, the move of a passed-over message); `recv` the
//! receive family's claim and wait; `batch` batches and the zero-copy
//! reservation; `join` task_done and join; `stats` recovery's counters.

mod batch;
mod config;
mod join;
mod recv;
mod send;
mod stats;
#[cfg(feature = "serde")]
mod value;

pub use batch::SendSlot;
pub use config::QueueConfig;
pub use stats::RecoveryStats;

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering as StdOrdering};
use std::time::{Duration, Instant};

use crate::channel::{inherent_forms, Channel, Filter, Joinable, SendRetry, Wait};
use crate::error::{
    ConfigError, CorruptError, CorruptKind, JoinTimeoutError, RecvTimeoutError, SetupError,
    TaskDoneError, TryRecvError, TrySendError,
};
use crate::fault;
use crate::guard::{RecvGuard, Release};
use crate::layout::{ChannelKind, Geometry};
use crate::message::{Header, Message, Request};
use crate::recovery::{self, owner_word, HandleId, Recovery, Role, Watchdog};
use crate::ring::{ClaimError, ClaimEvent, Ring};
use crate::segment::{QueueSegment, Segment, Sharing, Stale};
use crate::sync::Ordering;
use crate::wait::{claim_waiting, Claimed, EventCount, Wake};

/// A named queue in shared memory, usable by any number of processes at
/// once for sending and receiving.
///
/// One process [`create`](Queue::create)s it; others [`open`](Queue::open)
/// it by name. The creating handle removes the name when dropped (processes
/// that have it open keep working) unless
/// [`set_remove_on_drop(false)`](Queue::set_remove_on_drop).
///
/// A `Queue` is `Send + Sync`: threads of one process may share a handle.
///
/// ```
/// use mulproc::{Message, Queue, QueueConfig, Request};
/// # let name = format!("doc-queue-{}", std::process::id());
/// let q = Queue::create(&name, QueueConfig::new(8, 64))?;
/// q.try_send(Message::new(Request::DO, b"hello".as_slice()))?;
/// assert_eq!(q.len(), 1);
///
/// let other = Queue::open(&name)?; // normally in another process
/// let m = other.recv()?;
/// assert_eq!(m.request, Request::DO);
/// assert_eq!(m.data, b"hello");
/// assert_eq!(m.sender, Some(std::process::id()));
/// assert!(q.is_empty());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Queue {
    seg: QueueSegment,
    geo: Geometry,
    pid: u32,
    retry: SendRetry,
    /// This handle's entry in the segment's handle table.
    id: HandleId,
    /// This handle's unblock timeout (`set_unblock_timeout`).
    unblock: Duration,
    watchdog: Watchdog,
    /// Coarse time of the last check for dead handles by a joiner.
    join_check_ms: AtomicU64,
    /// Whether this handle's last look for a message found none; see
    /// `PREFETCH_AHEAD`.
    found_empty: AtomicBool,
}

impl fmt::Debug for Queue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.seg.name())
            .field("capacity", &self.geo.capacity)
            .field("max_payload", &self.geo.max_payload)
            .field("len", &self.len())
            .finish()
    }
}

impl Queue {
    /// Creates a queue named `name`. Fails with
    /// [`SetupError::AlreadyExists`] if the name is taken (by anyone).
    ///
    /// If the name exists but every process that used it has exited, the
    /// configuration's [`on_stale`](QueueConfig::on_stale) decides.
    pub fn create(name: &str, config: QueueConfig) -> Result<Queue, SetupError> {
        let geo = config.geometry()?;
        let seg = QueueSegment::create(
            name,
            geo,
            config.sharing,
            config.stale,
            recovery::repair_stale,
        )?;
        Queue::from_segment(seg)
    }

    /// Creates a queue under a new name no other queue has (see
    /// [`unique_name`](crate::unique_name)); [`name`](Queue::name) tells it,
    /// for the processes that are to open it.
    ///
    /// ```
    /// use mulproc::{Queue, QueueConfig};
    /// let q = Queue::create_unique(QueueConfig::new(8, 64))?;
    /// let other = Queue::open(q.name())?;
    /// assert_eq!(other.capacity(), 8);
    /// # Ok::<(), mulproc::SetupError>(())
    /// ```
    pub fn create_unique(config: QueueConfig) -> Result<Queue, SetupError> {
        crate::segment::with_unique_name(|name| Queue::create(name, config))
    }

    /// Opens the queue named `name`, after checking that the segment is
    /// ours to trust (owner, mode, magic, version, layout, size, init).
    pub fn open(name: &str) -> Result<Queue, SetupError> {
        Queue::from_segment(QueueSegment::open(name)?)
    }

    /// Removes the name `name` from the system. Processes that have the
    /// queue open keep using it; new `open`s fail with `NotFound`.
    pub fn remove(name: &str) -> Result<(), SetupError> {
        Segment::remove(name)
    }

    fn from_segment(seg: QueueSegment) -> Result<Queue, SetupError> {
        let id = recovery::register(&seg)?;
        Ok(Queue {
            geo: seg.geometry(),
            seg,
            pid: std::process::id(),
            retry: SendRetry::default(),
            id,
            unblock: recovery::DEFAULT_UNBLOCK_TIMEOUT,
            watchdog: Watchdog::default(),
            join_check_ms: AtomicU64::new(0),
            found_empty: AtomicBool::new(true),
        })
    }

    /// Sets this handle's unblock timeout (default 500 ms): a message slot
    /// claimed by a live producer and not published for this long, while
    /// this handle waits, is given up (fenced) so the queue goes on; the
    /// producer's late send fails with `Fenced` and writes nothing others
    /// can see. Claims of producers known dead are given up after about
    /// 10 ms whatever this says.
    pub fn set_unblock_timeout(&mut self, timeout: Duration) {
        self.unblock = timeout;
    }

    pub(super) fn recovery(&self) -> Recovery<'_> {
        Recovery::new(&self.seg, Some(self.id), self.unblock)
    }

    /// Runs the stall detector if it is due (a few ms since its last run);
    /// true if it repaired something, so the caller should look again.
    /// `waiting`: called from a wait (after a sleep or a yield) rather than
    /// from a caller's own polling loop, which only every 16th call looks
    /// at the clock.
    #[inline]
    pub(super) fn poll_recovery(&self, waiting: bool) -> bool {
        self.watchdog.poll(waiting, |seen, lift_due| {
            let changed = self.recovery().scan(seen, lift_due);
            if changed {
                self.notify_receivers();
                self.seg.not_full().notify(Wake::All);
            }
            changed
        })
    }

    /// This handle's entry in the handle table.
    #[inline]
    pub(super) fn entry(&self) -> &crate::layout::HandleEntry {
        self.seg.handle_entry(self.id.index as usize)
    }

    /// Whether dropping this handle removes the name (true for the
    /// creating handle by default, false for opened ones).
    pub fn set_remove_on_drop(&mut self, remove: bool) {
        self.seg.set_remove_on_drop(remove);
    }

    /// Closes the handle, removing the name first if this handle would on
    /// drop, and reporting a failure to remove it.
    pub fn close(mut self) -> Result<(), SetupError> {
        if self.seg.remove_on_drop() {
            self.seg.unlink()
        } else {
            Ok(())
        }
    }

    /// Sets how [`send`](Queue::send) retries on a full queue.
    pub fn set_send_retry(&mut self, retry: SendRetry) {
        self.retry = retry;
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// Number of slots.
    pub fn capacity(&self) -> usize {
        self.geo.capacity as usize
    }

    /// Largest payload in bytes.
    pub fn max_payload(&self) -> usize {
        self.geo.max_payload as usize
    }

    /// Slots in use right now: messages waiting, being written or being
    /// read, plus messages a selective receive took out of order while an
    /// older message still waits ahead of them (their slots free up when
    /// that one goes). With other processes at work this is a snapshot:
    /// the queue may hold more or fewer by the time you look at it.
    pub fn len(&self) -> usize {
        self.ring().len() as usize
    }

    /// True if the queue held no message at the moment of the call (see
    /// [`len`](Queue::len)).
    pub fn is_empty(&self) -> bool {
        self.ring().is_empty()
    }

    /// This process's pid, the default sender of its messages.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    #[inline]
    pub(super) fn ring(&self) -> Ring<'_> {
        Ring::new(self.seg.head(), self.seg.tail(), self.seg.slots())
    }

    pub(super) fn slot_index(&self, t: u64) -> usize {
        (t & (self.geo.capacity as u64 - 1)) as usize
    }
}

impl Channel for Queue {
    type Guard<'a> = RecvGuard<'a>;

    #[inline]
    fn max_payload(&self) -> usize {
        self.geo.max_payload as usize
    }

    #[inline]
    fn pid(&self) -> u32 {
        self.pid
    }

    fn send_retry(&self) -> SendRetry {
        self.retry
    }

    #[inline]
    fn send_with<D: AsRef<[u8]>>(
        &self,
        msg: Message<D>,
        wait: Wait,
    ) -> Result<(), TrySendError<Message<D>>> {
        self.send_msg(msg, wait)
    }

    #[inline]
    fn recv_with(&self, filter: Filter<'_>, wait: Wait) -> Result<RecvGuard<'_>, RecvTimeoutError> {
        self.recv_guard(filter, wait)
    }

    #[inline]
    fn recv_ref_timeout(&self, timeout: Duration) -> Result<RecvGuard<'_>, RecvTimeoutError> {
        self.recv_guard_for(timeout)
    }

    fn try_send_batch<D: AsRef<[u8]>>(
        &self,
        msgs: &[Message<D>],
    ) -> Result<usize, TrySendError<()>> {
        self.send_batch_now(msgs)
    }

    fn try_recv_batch<F>(&self, max: usize, f: F) -> Result<usize, TryRecvError>
    where
        F: FnMut(&Header, &[u8]),
    {
        self.recv_batch_now(max, f)
    }

    #[cfg(feature = "serde")]
    fn send_value_with<T: serde::Serialize + ?Sized>(
        &self,
        request: Request,
        recipient: Option<u32>,
        value: &T,
        wait: Wait,
    ) -> Result<(), crate::ValueSendError> {
        self.send_value_now(request, recipient, value, wait)
    }
}

impl Joinable for Queue {
    fn task_done(&self) -> Result<(), TaskDoneError> {
        self.task_done_now()
    }

    fn join_with(&self, wait: Wait) -> Result<(), JoinTimeoutError> {
        self.join_now(wait)
    }
}

inherent_forms!(Queue);

impl Release for Queue {
    #[inline]
    fn release(&self, ticket: u64) -> Result<(), CorruptError> {
        Queue::release(self, ticket)
    }
}

impl Drop for Queue {
    fn drop(&mut self) {
        // What this handle received and did not mark done will never be:
        // count it done (abandoned) so `join` does not wait for it.
        recovery::unregister(&self.seg, self.id);
    }
}
