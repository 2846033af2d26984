//! Pipes: a duplex channel between two processes (pymulproc's
//! `PipeCommunication`), built on two single-producer single-consumer rings.
//!
//! Each direction is a single-producer single-consumer ring (`spsc`: its
//! protocol, and how a receiver holds several messages). Blocking uses the
//! same event counts as queues, one pair per direction.
//!
//! Only one process may hold each end: the parent end belongs to the
//! creator, the child end to the process that opened it (recorded in the
//! segment; an end whose holder has died may be taken over).
//!
//! # Disconnected
//!
//! Each end's owner word holds its holder's pid while it is open and
//! [`CLOSED`] once its handle was dropped; the holder's process also holds
//! the end's byte lock, which the kernel drops when it dies. An end whose
//! peer's word says closed, or whose peer's lock is free though the word
//! names a pid, is disconnected: receives return what is still waiting,
//! then `Disconnected`; sends return `Disconnected` with the message. A
//! closing end wakes the peer's waits; a dead one is noticed by a wait's
//! re-check (at most every 200 ms) or by a send that finds the pipe full.
//! An end never yet opened (0) is not a disconnection: the peer may still
//! come.

use std::cell::Cell;
use std::fmt;
use std::time::{Duration, Instant};

mod config;

pub use config::PipeConfig;

use crate::channel::{inherent_forms, Channel, Filter, SendRetry, Wait};
use crate::error::{
    CorruptError, CorruptKind, RecvTimeoutError, SetupError, TryRecvError, TrySendError,
};
use crate::guard::{RecvGuard, Release};
use crate::layout::Geometry;
use crate::message::{Header, Message};
use crate::segment::PipeSegment;
use crate::spsc::{Direction, Receiver, Sender};
use crate::sync::Ordering;
use crate::sys::ofd;
use crate::wait::Wake;
use crate::wait::{claim_waiting, Claimed};

/// Which end of a pipe a handle is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PipeEnd {
    /// The creating end: sends on direction 0, receives on direction 1.
    Parent,
    /// The opening end: sends on direction 1, receives on direction 0.
    Child,
}

impl PipeEnd {
    fn index(self) -> usize {
        match self {
            PipeEnd::Parent => 0,
            PipeEnd::Child => 1,
        }
    }
}

/// One end of a duplex pipe between two processes.
///
/// The parent [`create`](Pipe::create)s it and holds the parent end; one
/// other process [`open`](Pipe::open)s it and holds the child end. Each end
/// sends to the other and receives from the other. A `Pipe` is `Send` but
/// not `Sync`: one thread at a time uses an end, which is what lets a
/// direction run without any compare-and-swap.
///
/// A receiver publishes its position once per burst (the slots it freed
/// say so in their own words meanwhile), so a `try_send` that finds no
/// room right after a send that found some, a sender at its receiver's
/// heels, spins up to a few microseconds (256 `pause`s) for the next
/// position before it looks at the slot and answers
/// [`Full`](crate::TrySendError::Full): it then gets runs of free slots
/// instead of one at a time over the line the receiver is freeing. It
/// never answers `Full` while a slot is free.
///
/// ```
/// use mulproc::{Message, Pipe, PipeConfig, Request};
/// # let name = format!("doc-pipe-{}", std::process::id());
/// let parent = Pipe::create(&name, PipeConfig::new(16, 64))?;
/// let child = Pipe::open(&name)?; // normally in the child process
/// child.try_send(Message::new(Request::FINISHED, b"done".as_slice()))?;
/// let m = parent.recv()?;
/// assert_eq!(m.request, Request::FINISHED);
/// assert_eq!(m.data, b"done");
/// parent.try_send(Message::signal(Request::DIE))?;
/// assert_eq!(child.recv()?.request, Request::DIE);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Pipe {
    seg: PipeSegment,
    geo: Geometry,
    pid: u32,
    end: PipeEnd,
    retry: SendRetry,
    /// The direction this end sends on, into `seg`'s mapping (alive as
    /// long as `self`; handed out only borrowed from `self`).
    send_d: Direction<'static>,
    /// The direction this end receives on, likewise.
    recv_d: Direction<'static>,
    /// This end's side of its sending direction.
    tx: Sender,
    /// This end's side of its receiving direction.
    rx: Receiver,
    /// Coarse time (ms) at which the peer's lock may next be probed.
    next_probe_ms: Cell<u64>,
    /// Empty or full polls since the clock was last looked at.
    polls: Cell<u32>,
}

/// Owner word of an end whose handle was dropped.
const CLOSED: u32 = u32::MAX;

/// How often, at most, a pipe end probes its peer's lock while it finds
/// the pipe empty or full.
const PROBE_EVERY_MS: u64 = 10;

impl fmt::Debug for Pipe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pipe")
            .field("name", &self.seg.name())
            .field("end", &self.end)
            .field("capacity", &self.geo.capacity)
            .field("max_payload", &self.geo.max_payload)
            .finish()
    }
}

impl Pipe {
    /// Creates a pipe under a new name no other channel has (see
    /// [`unique_name`](crate::unique_name)) and returns its parent end.
    pub fn create_unique(config: impl Into<PipeConfig>) -> Result<Pipe, SetupError> {
        let config = config.into();
        crate::segment::with_unique_name(|name| Pipe::create(name, config))
    }

    /// Creates a pipe named `name` and returns its parent end.
    pub fn create(name: &str, config: impl Into<PipeConfig>) -> Result<Pipe, SetupError> {
        let config = config.into();
        let geo = config.geometry()?;
        let seg = PipeSegment::create(name, geo, config.sharing, config.stale)?;
        take_end(&seg, PipeEnd::Parent)?;
        Pipe::from_segment(seg, PipeEnd::Parent)
    }

    /// Opens the pipe named `name` and takes its child end. Fails with
    /// [`SetupError::EndTaken`] while another live handle holds it (in
    /// this process or another).
    pub fn open(name: &str) -> Result<Pipe, SetupError> {
        let seg = PipeSegment::open(name)?;
        take_end(&seg, PipeEnd::Child)?;
        Pipe::from_segment(seg, PipeEnd::Child)
    }

    fn from_segment(seg: PipeSegment, end: PipeEnd) -> Result<Pipe, SetupError> {
        let send_dir = end.index();
        let recv_dir = 1 - send_dir;
        // Positions only ever grow by one per message: one at 2^62 or
        // beyond was written by no honest process (and would overflow).
        let corrupt = || SetupError::Corrupt {
            name: seg.name().to_owned(),
            source: CorruptKind::Positions.into(),
        };
        let position = |p: &crate::sync::AtomicU64| {
            // Acquire: pairs with the other side's Release stores.
            let v = p.load(Ordering::Acquire);
            (v < POSITION_LIMIT).then_some(v)
        };
        let sent_head = position(seg.head(send_dir)).ok_or_else(corrupt)?;
        let sent = position(seg.tail(send_dir)).ok_or_else(corrupt)?;
        let recv_head = position(seg.head(recv_dir)).ok_or_else(corrupt)?;
        // A previous holder of this end may have died anywhere: the
        // sending side continues after whatever it published, the
        // receiving side after whatever it freed (see `spsc`).
        let tx = Sender::resume(Direction::of(&seg, send_dir), sent, sent_head);
        let rx = Receiver::resume(Direction::of(&seg, recv_dir), recv_head).map_err(|source| {
            SetupError::Corrupt {
                name: seg.name().to_owned(),
                source,
            }
        })?;
        // SAFETY: the pipe keeps `seg`, so its mapping, for as long as it
        // keeps these, and lends them out only borrowed from itself.
        let (send_d, recv_d) = unsafe {
            (
                Direction::detached(&seg, send_dir),
                Direction::detached(&seg, recv_dir),
            )
        };
        Ok(Pipe {
            geo: seg.geometry(),
            seg,
            send_d,
            recv_d,
            pid: std::process::id(),
            end,
            retry: SendRetry::default(),
            tx,
            rx,
            next_probe_ms: Cell::new(0),
            polls: Cell::new(0),
        })
    }

    /// Removes the name `name` from the system.
    pub fn remove(name: &str) -> Result<(), SetupError> {
        crate::segment::Segment::remove(name)
    }

    /// Whether dropping this handle removes the name (true for the parent
    /// end by default).
    pub fn set_remove_on_drop(&mut self, remove: bool) {
        self.seg.set_remove_on_drop(remove);
    }

    /// Closes this end: the peer's receives return what is waiting, then
    /// `Disconnected`, and its sends `Disconnected`. Removes the name
    /// first if this handle would on drop, reporting a failure to.
    pub fn close(mut self) -> Result<(), SetupError> {
        if self.seg.remove_on_drop() {
            self.seg.unlink()
        } else {
            Ok(())
        }
    }

    /// Sets how [`send`](Pipe::send) retries on a full direction.
    pub fn set_send_retry(&mut self, retry: SendRetry) {
        self.retry = retry;
    }

    /// Which end this is.
    pub fn end(&self) -> PipeEnd {
        self.end
    }

    /// The pipe's name.
    pub fn name(&self) -> &str {
        self.seg.name()
    }

    /// Slots per direction.
    pub fn capacity(&self) -> usize {
        self.geo.capacity as usize
    }

    /// Largest payload in bytes.
    pub fn max_payload(&self) -> usize {
        self.geo.max_payload as usize
    }

    /// This process's pid, the default sender of its messages.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// Pid of the process holding the other end, if one has taken it and
    /// not closed it (it may have died since: see
    /// [`is_disconnected`](Pipe::is_disconnected)).
    pub fn peer_pid(&self) -> Option<u32> {
        let pid = self.peer_word().load(Ordering::Relaxed);
        (pid != 0 && pid != CLOSED).then_some(pid)
    }

    /// True if the other end was taken and is gone now: closed, or its
    /// process died (probed with the kernel's lock; a system call).
    pub fn is_disconnected(&self) -> bool {
        match self.peer_word().load(Ordering::Acquire) {
            0 => false,
            CLOSED => true,
            _ => !matches!(
                ofd::held_by_other(self.seg.fd(), self.peer_lock_byte(), ofd::Kind::Exclusive),
                Ok(true) | Err(_)
            ),
        }
    }

    fn peer_word(&self) -> &crate::sync::AtomicU32 {
        self.seg.end_owner(1 - self.end.index())
    }

    fn peer_lock_byte(&self) -> i64 {
        ofd::PIPE_ENDS + (1 - self.end.index()) as i64
    }

    /// Whether the peer is gone, for a caller that just found the pipe
    /// empty or full: the owner word on every call (one load of a line
    /// nobody writes while both ends live), the kernel's lock at most
    /// every [`PROBE_EVERY_MS`]; `waiting` callers (past their first
    /// spins, or woken from a sleep) look at the clock every time, polling
    /// loops every 16th call.
    fn peer_gone(&self, waiting: bool) -> bool {
        // Acquire: pairs with the Release of the peer's closing store, so
        // what it published before closing is visible to our re-check.
        match self.peer_word().load(Ordering::Acquire) {
            0 => return false,
            CLOSED => return true,
            _ => {}
        }
        let n = self.polls.get().wrapping_add(1);
        self.polls.set(n);
        if !waiting && n % 16 != 0 {
            return false;
        }
        let now = crate::sys::coarse_ms();
        if now < self.next_probe_ms.get() {
            return false;
        }
        self.next_probe_ms.set(now + PROBE_EVERY_MS);
        self.is_disconnected()
    }

    fn send_dir(&self) -> usize {
        self.end.index()
    }

    fn recv_dir(&self) -> usize {
        1 - self.end.index()
    }

    /// The direction this end sends on.
    #[inline]
    fn sending(&self) -> Direction<'_> {
        self.send_d
    }

    /// The direction this end receives on.
    #[inline]
    fn receiving(&self) -> Direction<'_> {
        self.recv_d
    }

    /// Messages waiting for this end to receive, and those it holds (a
    /// snapshot).
    pub fn len(&self) -> usize {
        let dir = self.recv_dir();
        let tail = self.seg.tail(dir).load(Ordering::Relaxed);
        let head = self.rx.head();
        tail.saturating_sub(head).min(self.geo.capacity as u64) as usize
    }

    /// True if no message is waiting for this end (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// [`Channel::send_with`] for a pipe end.
    #[inline]
    fn send_msg<D: AsRef<[u8]>>(
        &self,
        msg: Message<D>,
        wait: Wait,
    ) -> Result<(), TrySendError<Message<D>>> {
        let len = msg.data.as_ref().len();
        if len > self.max_payload() {
            let max = self.max_payload();
            return Err(TrySendError::TooLarge { msg, len, max });
        }
        // Relaxed: a closing peer wrote it once; a late look costs at most
        // one message sent into a pipe nobody reads.
        if self.peer_word().load(Ordering::Relaxed) == CLOSED {
            return Err(TrySendError::Disconnected(msg));
        }
        let claim = |waiting: bool| match self.tx.claim(self.sending()) {
            Claimed::Unavailable if self.peer_gone(waiting) => Claimed::Gone,
            c => c,
        };
        let claimed = if wait == Wait::Never {
            claim(false)
        } else {
            // The receiver frees slots with plain stores, which a look
            // of ours does not stall: no need to wait for a run.
            claim_waiting(
                self.seg.not_full(self.send_dir()),
                wait,
                || true,
                || claim(true),
            )
        };
        match claimed {
            Claimed::Slot(t) => {
                let header = msg.header_or(self.pid);
                self.tx
                    .publish(self.sending(), t, &header, msg.data.as_ref());
                Ok(())
            }
            Claimed::Unavailable => Err(TrySendError::Full(msg)),
            Claimed::Gone => Err(TrySendError::Disconnected(msg)),
            Claimed::Corrupt => Err(TrySendError::Corrupt(msg, CorruptKind::Positions.into())),
        }
    }

    /// [`Channel::try_send_batch`] for a pipe end: as many of `msgs` as
    /// there is room for, with one look at the receiver's position (none
    /// if the last look left room enough), published together (last
    /// first: the receiver sees the run at once, in order), with one store
    /// of the position and one wake-up.
    fn send_batch_now<D: AsRef<[u8]>>(
        &self,
        msgs: &[Message<D>],
    ) -> Result<usize, TrySendError<()>> {
        crate::channel::batch_fits(msgs, self.max_payload())?;
        if msgs.is_empty() {
            return Ok(0);
        }
        // Relaxed, as in `send_msg`.
        if self.peer_word().load(Ordering::Relaxed) == CLOSED {
            return Err(TrySendError::Disconnected(()));
        }
        let d = self.sending();
        let (first, n) = match self.tx.claim_many(d, msgs.len() as u64) {
            Ok(claim) => claim,
            Err(Claimed::Unavailable) if self.peer_gone(false) => {
                return Err(TrySendError::Disconnected(()))
            }
            Err(Claimed::Corrupt) => {
                return Err(TrySendError::Corrupt((), CorruptKind::Positions.into()))
            }
            Err(_) => return Err(TrySendError::Full(())),
        };
        for (i, m) in msgs.iter().take(n as usize).enumerate() {
            self.tx
                .write(d, first + i as u64, &m.header_or(self.pid), m.data.as_ref());
        }
        self.tx.publish_run(d, first, n);
        Ok(n as usize)
    }

    /// [`Channel::try_recv_batch`] for a pipe end: in place, in order, and
    /// freed together (one store of the position, one wake-up) while this
    /// end holds no guard; message by message otherwise. Nothing waiting
    /// is `Ok(0)`; nothing waiting from a peer that is gone,
    /// `Disconnected`.
    fn recv_batch_now<F>(&self, max: usize, mut f: F) -> Result<usize, TryRecvError>
    where
        F: FnMut(&Header, &[u8]),
    {
        if max == 0 {
            return Ok(0);
        }
        let d = self.receiving();
        let mut n = 0;
        while n < max {
            let want = (max - n).min(crate::spsc::HOLD_WINDOW as usize);
            let got = match self.rx.take_run(d, self.geo.max_payload, want, &mut f) {
                Some(r) => r?,
                None => {
                    // `f` took a guard on this end: go on past it.
                    let rest = self.recv_batch_held(max - n, &mut f);
                    return match rest {
                        Ok(k) => Ok(n + k),
                        Err(_) if n > 0 => Ok(n),
                        Err(e) => Err(e),
                    };
                }
            };
            n += got;
            if got < want {
                break;
            }
        }
        if n == 0 && self.peer_gone(false) {
            // What the peer published before it went is visible now (the
            // Acquire in `peer_gone`): look once more.
            return match self.rx.take_run(d, self.geo.max_payload, max, &mut f) {
                Some(Ok(0)) => Err(TryRecvError::Disconnected),
                Some(r) => Ok(r?),
                None => self.recv_batch_held(max, f),
            };
        }
        Ok(n)
    }

    /// [`recv_batch_now`](Self::recv_batch_now) while this end holds
    /// guards: message by message, past the held ones.
    fn recv_batch_held<F>(&self, max: usize, f: F) -> Result<usize, TryRecvError>
    where
        F: FnMut(&Header, &[u8]),
    {
        crate::channel::recv_each(self, max, f)
    }

    /// Takes the oldest published message `want` accepts among the first
    /// [`HOLD_WINDOW`](crate::HOLD_WINDOW) past `head` that this end has not taken yet (see
    /// `spsc::Receiver::claim`).
    fn claim_recv(&self, want: &mut Filter<'_>) -> Result<Option<RecvGuard<'_>>, CorruptError> {
        let accept = |header: &Header, data: *const u8, len: usize| match want {
            Filter::Any => true,
            Filter::Header(f) => f(header),
            Filter::Message(f) => {
                // SAFETY: as for the guard below: the published, untaken
                // slot is ours to read; `len <= max_payload`.
                let bytes = unsafe { std::slice::from_raw_parts(data, len) };
                f(header, bytes)
            }
        };
        let taken = self
            .rx
            .claim(self.receiving(), self.geo.max_payload, accept)?;
        // SAFETY: we are the only receiver of this direction and the sender
        // does not rewrite the slot of the ticket before we store `head`
        // past it (in `release`, only once it is freed); `len <=
        // max_payload` keeps the bytes inside the slot's payload area.
        Ok(taken.map(|m| unsafe { RecvGuard::new(self, m.ticket, m.header, m.data, m.len) }))
    }

    /// Frees ticket `t`, one this end took (see `spsc::Receiver::release`).
    pub(crate) fn release(&self, t: u64) -> Result<(), CorruptError> {
        self.rx.release(self.receiving(), t)
    }

    /// [`Channel::recv_with`] for a pipe end: what is waiting first, then
    /// (past a disconnection) `Disconnected`.
    #[inline]
    fn recv_guard(
        &self,
        mut want: Filter<'_>,
        wait: Wait,
    ) -> Result<RecvGuard<'_>, RecvTimeoutError> {
        // A message already waiting: taken without the wait's machinery.
        if let Some(g) = self.claim_recv(&mut want)? {
            return Ok(g);
        }
        if wait == Wait::Never {
            return match self.gone_and_drained(&mut want, false)? {
                Some(g) => Ok(g),
                None => Err(RecvTimeoutError::Timeout),
            };
        }
        self.recv_waiting(&mut want, Instant::now(), wait.deadline())
    }

    /// [`Channel::recv_ref_timeout`] for a pipe end: the first look reads
    /// no clock (see the queue's `recv_guard_for`).
    #[inline]
    fn recv_guard_for(&self, timeout: Duration) -> Result<RecvGuard<'_>, RecvTimeoutError> {
        let mut want = Filter::Any;
        if let Some(g) = self.claim_recv(&mut want)? {
            return Ok(g);
        }
        let start = Instant::now();
        self.recv_waiting(&mut want, start, start.checked_add(timeout))
    }

    /// After an empty look: `Err(Disconnected)` if the peer is gone and
    /// nothing acceptable arrived before it went, a message that did, or
    /// `Ok(None)`: the peer lives, go on waiting.
    fn gone_and_drained(
        &self,
        want: &mut Filter<'_>,
        waiting: bool,
    ) -> Result<Option<RecvGuard<'_>>, RecvTimeoutError> {
        if !self.peer_gone(waiting) {
            return Ok(None);
        }
        // What the peer published before it closed is visible now (the
        // Acquire in `peer_gone`); look once more.
        match self.claim_recv(want)? {
            Some(g) => Ok(Some(g)),
            None => Err(RecvTimeoutError::Disconnected),
        }
    }

    fn recv_waiting(
        &self,
        want: &mut Filter<'_>,
        start: Instant,
        deadline: Option<Instant>,
    ) -> Result<RecvGuard<'_>, RecvTimeoutError> {
        let events = self.seg.not_empty(self.recv_dir());
        let mut checks = 0u32;
        let check = || {
            checks = checks.saturating_add(1);
            match self.claim_recv(want) {
                Ok(Some(g)) => Some(Ok(g)),
                Ok(None) => self.gone_and_drained(want, checks > 64).transpose(),
                Err(e) => Some(Err(e.into())),
            }
        };
        match events.wait_spinning(start, deadline, check) {
            Some((r, _)) => r,
            None => Err(RecvTimeoutError::Timeout),
        }
    }
}

impl Channel for Pipe {
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
}

inherent_forms!(Pipe);

impl Release for Pipe {
    #[inline]
    fn release(&self, ticket: u64) -> Result<(), CorruptError> {
        Pipe::release(self, ticket)
    }
}

/// Positions at or above this are corrupt (see `Pipe::from_segment`).
const POSITION_LIMIT: u64 = 1 << 62;

/// Takes `end` of the pipe on `seg`: an exclusive lock on the end's byte of
/// the segment's file, which the kernel drops when the holder's process
/// dies (so a dead holder's end is free at once, and a reused pid cannot
/// keep it), then the holder's pid, for [`Pipe::peer_pid`].
fn take_end(seg: &PipeSegment, end: PipeEnd) -> Result<(), SetupError> {
    let byte = ofd::PIPE_ENDS + end.index() as i64;
    let owner = seg.end_owner(end.index());
    match ofd::try_lock(seg.fd(), byte, ofd::Kind::Exclusive) {
        Ok(true) => {
            owner.store(std::process::id(), Ordering::Release);
            Ok(())
        }
        Ok(false) => Err(SetupError::EndTaken {
            name: seg.name().to_owned(),
            pid: owner.load(Ordering::Relaxed),
        }),
        Err(e) => Err(SetupError::Os {
            name: seg.name().to_owned(),
            op: "fcntl(F_OFD_SETLK)",
            source: e,
        }),
    }
}

impl Drop for Pipe {
    fn drop(&mut self) {
        // What we freed is marked in the slots; the position too, for
        // `len`, inspection and the end's next holder.
        self.rx.publish(self.receiving());
        // Closed: the peer's receives drain, then say Disconnected. AcqRel:
        // the Release pairs with the Acquire in the peer's `peer_gone`, so
        // every message we published is visible to it once it sees this.
        let _ = self.seg.end_owner(self.end.index()).compare_exchange(
            self.pid,
            CLOSED,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        // Wake the peer's waits: for our messages, and for room we free.
        self.seg.not_empty(self.send_dir()).notify(Wake::All);
        self.seg.not_full(self.recv_dir()).notify(Wake::All);
        // Give the end back (the lock goes with the descriptor anyway).
        let _ = ofd::unlock(self.seg.fd(), ofd::PIPE_ENDS + self.end.index() as i64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Request;

    fn msgs(from: u32, n: u32) -> Vec<Message<Vec<u8>>> {
        (from..from + n)
            .map(|i| Message::new(Request::DO, i.to_le_bytes().to_vec()))
            .collect()
    }

    fn numbers(p: &Pipe, max: usize) -> Result<Vec<u32>, TryRecvError> {
        let mut got = Vec::new();
        p.try_recv_batch(max, |_, d| {
            got.push(u32::from_le_bytes(d.try_into().unwrap()))
        })?;
        Ok(got)
    }

    /// Pins: a batch send takes what fits (one look at `head`), a batch
    /// receive frees its run together, in order, across wrap-around.
    #[test]
    fn batches_fill_what_fits_and_wrap_in_order() {
        let parent = Pipe::create_unique(PipeConfig::new(4, 8)).unwrap();
        let child = Pipe::open(parent.name()).unwrap();
        let mut next = 0u32;
        let mut expect = 0u32;
        for round in 0..50 {
            let sent = child.try_send_batch(&msgs(next, 3)).unwrap();
            assert!((1..=3).contains(&sent), "round {round}: sent {sent}");
            next += sent as u32;
            let got = numbers(&parent, 2 + round % 3).unwrap();
            for g in got {
                assert_eq!(g, expect);
                expect += 1;
            }
        }
        // Full: a fourth of four slots goes, the rest is refused.
        while parent.try_recv().is_ok() {
            expect += 1;
        }
        assert_eq!(expect, next);
        assert_eq!(child.try_send_batch(&msgs(0, 6)).unwrap(), 4);
        assert!(child.try_send_batch(&msgs(0, 1)).unwrap_err().is_full());
        assert_eq!(numbers(&parent, 64).unwrap(), [0, 1, 2, 3]);
        assert_eq!(numbers(&parent, 64).unwrap(), Vec::<u32>::new());
        // Too large: nothing sent.
        let big = [Message::new(Request::DO, vec![0u8; 9])];
        assert!(matches!(
            child.try_send_batch(&big),
            Err(TrySendError::TooLarge { len: 9, max: 8, .. })
        ));
        assert!(parent.is_empty());
    }

    /// Pins: a receive made from inside a batch's closure on the same end
    /// neither gets the message the closure is looking at nor loses one.
    #[test]
    fn receive_inside_a_batch_closure_takes_each_message_once() {
        let parent = Pipe::create_unique(PipeConfig::new(8, 8)).unwrap();
        let child = Pipe::open(parent.name()).unwrap();
        assert_eq!(child.try_send_batch(&msgs(0, 8)).unwrap(), 8);
        let mut outer = Vec::new();
        let mut inner = Vec::new();
        let n = parent
            .try_recv_batch(8, |_, d| {
                outer.push(u32::from_le_bytes(d.try_into().unwrap()));
                if let Ok(m) = parent.try_recv() {
                    inner.push(u32::from_le_bytes(m.data.try_into().unwrap()));
                }
            })
            .unwrap();
        assert_eq!(n, outer.len());
        let mut all: Vec<u32> = outer.iter().chain(&inner).copied().collect();
        while let Ok(m) = parent.try_recv() {
            all.push(u32::from_le_bytes(m.data.try_into().unwrap()));
        }
        all.sort_unstable();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
        // Every slot is free again: the sender gets all eight.
        assert_eq!(child.try_send_batch(&msgs(8, 8)).unwrap(), 8);
    }

    /// Pins: with a guard held, a batch receive goes past it, and the held
    /// slot stays unusable for the sender until the guard is dropped.
    #[test]
    fn batch_receive_past_a_held_guard() {
        let parent = Pipe::create_unique(PipeConfig::new(4, 8)).unwrap();
        let child = Pipe::open(parent.name()).unwrap();
        assert_eq!(child.try_send_batch(&msgs(0, 4)).unwrap(), 4);
        let held = parent.try_recv_ref().unwrap();
        assert_eq!(held.data(), 0u32.to_le_bytes());
        assert_eq!(numbers(&parent, 64).unwrap(), [1, 2, 3]);
        assert!(child.try_send_batch(&msgs(4, 1)).unwrap_err().is_full());
        drop(held);
        assert_eq!(child.try_send_batch(&msgs(4, 6)).unwrap(), 4);
        assert_eq!(numbers(&parent, 64).unwrap(), [4, 5, 6, 7]);
    }

    /// Pins: a batch receive drains what a closed peer sent, then says
    /// `Disconnected`; a batch send to a closed peer says so too.
    #[test]
    fn batch_receive_drains_then_disconnected() {
        let parent = Pipe::create_unique(PipeConfig::new(4, 8)).unwrap();
        let child = Pipe::open(parent.name()).unwrap();
        assert_eq!(child.try_send_batch(&msgs(0, 2)).unwrap(), 2);
        drop(child);
        assert_eq!(numbers(&parent, 64).unwrap(), [0, 1]);
        assert_eq!(numbers(&parent, 64), Err(TryRecvError::Disconnected));
        assert!(matches!(
            parent.try_send_batch(&msgs(0, 1)),
            Err(TrySendError::Disconnected(()))
        ));
    }

    /// Pins: a sender seeing slots the receiver freed as full while the
    /// receiver's stored position lags (it stores it once per burst): in a
    /// full ring, every slot freed by one receive is found by the next
    /// `try_send`, over many laps, with guards held and let go of out of
    /// order too; and the position is stored when the end is dropped.
    #[test]
    fn every_freed_slot_is_found_at_once() {
        let parent = Pipe::create_unique(PipeConfig::new(64, 8)).unwrap();
        let child = Pipe::open(parent.name()).unwrap();
        let mut next = 0u32;
        let mut expect = 0u32;
        let send = |i: u32| child.try_send(Message::new(Request::DO, i.to_le_bytes().to_vec()));
        while send(next).is_ok() {
            next += 1;
        }
        assert_eq!(next, 64);
        let number = |m: &[u8]| u32::from_le_bytes(m.try_into().unwrap());
        for round in 0..500u32 {
            if round % 7 == 0 {
                // Two held, the second let go of first: room only once
                // both are.
                let a = parent.try_recv_ref().unwrap();
                let b = parent.try_recv_ref().unwrap();
                assert_eq!((number(a.data()), number(b.data())), (expect, expect + 1));
                drop(b);
                assert!(send(next).unwrap_err().is_full(), "round {round}");
                drop(a);
                expect += 2;
                for _ in 0..2 {
                    send(next).unwrap_or_else(|e| panic!("round {round}: {e}"));
                    next += 1;
                }
            } else {
                assert_eq!(number(&parent.try_recv().unwrap().data), expect);
                expect += 1;
                send(next).unwrap_or_else(|e| panic!("round {round}: {e}"));
                next += 1;
            }
            assert!(send(next).unwrap_err().is_full(), "round {round}");
        }
        let head = |p: &Pipe| p.seg.head(1).load(Ordering::Relaxed);
        assert!(head(&parent) <= u64::from(expect));
        assert!(u64::from(expect) - head(&parent) < crate::spsc::publish_every(64) + 2);
        let name = parent.name().to_owned();
        let mut parent = parent;
        parent.set_remove_on_drop(false);
        drop(parent);
        let seg = PipeSegment::open(&name).unwrap();
        assert_eq!(seg.head(1).load(Ordering::Relaxed), u64::from(expect));
        drop(child);
        Pipe::remove(&name).unwrap();
    }

    /// Pins: a sender end that stopped half-way through publishing a batch
    /// (last first: later tickets published, the first not) leaves no
    /// message for the receiver to read while the end's next holder
    /// rewrites those slots.
    #[test]
    fn next_holder_unpublishes_a_half_published_batch() {
        let parent = Pipe::create_unique(PipeConfig::new(4, 8)).unwrap();
        {
            let child = Pipe::open(parent.name()).unwrap();
            let d = child.sending();
            let Ok((first, n)) = child.tx.claim_many(d, 3) else {
                panic!("no room in an empty pipe")
            };
            assert_eq!((first, n), (0, 3));
            for (i, m) in msgs(100, 3).iter().enumerate() {
                child.tx.write(d, i as u64, &m.header_or(1), &m.data);
            }
            // Published last first, then "died" before ticket 0.
            for t in [2u64, 1] {
                child
                    .seg
                    .slot(1, t as usize)
                    .seq
                    .store(t + 1, Ordering::Release);
            }
        }
        assert!(parent.try_recv().is_err(), "nothing before the gap");
        let child = Pipe::open(parent.name()).unwrap();
        for t in 1..3 {
            assert_ne!(
                child.seg.slot(1, t).seq.load(Ordering::Relaxed),
                t as u64 + 1
            );
        }
        child
            .try_send(Message::new(Request::DO, 7u32.to_le_bytes().as_slice()))
            .unwrap();
        assert_eq!(numbers(&parent, 64).unwrap(), [7]);
        assert!(parent.try_recv().is_err());
    }
}
