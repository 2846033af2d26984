//! Pipes: a duplex channel between two processes (pymulproc's
//! `PipeCommunication`), built on two single-producer single-consumer rings.
//!
//! # Protocol of one direction
//!
//! One sender and one receiver, each keeping its position in local memory.
//! A slot's header sits right before its payload, so a small message and its
//! "published" mark share a cache line and the receiver polls that line
//! alone.
//!
//! - sender of ticket `t`: if its cached `head` says full, reload `head`
//!   (Acquire, pairs with the receiver's Release store of `head`: the
//!   receiver's reads of the slot are done before we overwrite it); write the
//!   header and payload; store `seq = t + 1` (Release: SYNC POINT, pairs with
//!   the receiver's Acquire load); store `tail = t + 1` (Relaxed, for `len`).
//! - receiver of ticket `t`: load `seq` (Acquire); `seq == t + 1` means the
//!   message is there; read it; store `head = t + 1` (Release).
//!
//! No compare-and-swap and no shared write by both sides: each line has one
//! writer. Blocking uses the same event counts as queues, one pair per
//! direction.
//!
//! Only one process may hold each end: the parent end belongs to the
//! creator, the child end to the process that opened it (recorded in the
//! segment; an end whose holder has died may be taken over).

use std::cell::Cell;
use std::fmt;
use std::time::Duration;

use crate::error::{
    CorruptError, CorruptKind, RecvError, RecvTimeoutError, SendError, SetupError, TryRecvError,
    TrySendError,
};
use crate::guard::{RecvGuard, Source};
use crate::layout::{ChannelKind, Geometry, PipeSlotHeader, PIPE_SLOT_HEADER_SIZE};
use crate::message::{decode_recipient, encode_recipient, Header, Message, Request};
use crate::queue::{claim_with_retry, copy_out, Claimed, QueueConfig, SendRetry};
use crate::segment::Segment;
use crate::sync::Ordering;
use crate::sys::ofd;
use crate::wait::Wake;

/// A pipe is configured like a queue: capacity (per direction) and max
/// payload.
pub type PipeConfig = QueueConfig;

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
    seg: Segment,
    geo: Geometry,
    pid: u32,
    end: PipeEnd,
    retry: SendRetry,
    /// Next ticket this end sends (its own direction's tail).
    next_send: Cell<u64>,
    /// Last `head` of the sending direction seen; refreshed when it says
    /// the ring is full.
    cached_head: Cell<u64>,
    /// Next ticket this end receives.
    next_recv: Cell<u64>,
}

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
    /// Creates a pipe named `name` and returns its parent end.
    pub fn create(name: &str, config: PipeConfig) -> Result<Pipe, SetupError> {
        let geo = config.geometry_of(ChannelKind::Pipe)?;
        let seg = Segment::create(name, geo, config.sharing, config.stale)?;
        take_end(&seg, PipeEnd::Parent)?;
        Pipe::from_segment(seg, PipeEnd::Parent)
    }

    /// Opens the pipe named `name` and takes its child end. Fails with
    /// [`SetupError::EndTaken`] while another live handle holds it (in
    /// this process or another).
    pub fn open(name: &str) -> Result<Pipe, SetupError> {
        let seg = Segment::open(name, ChannelKind::Pipe)?;
        take_end(&seg, PipeEnd::Child)?;
        Pipe::from_segment(seg, PipeEnd::Child)
    }

    fn from_segment(seg: Segment, end: PipeEnd) -> Result<Pipe, SetupError> {
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
        let cached_head = position(seg.pipe_head(send_dir)).ok_or_else(corrupt)?;
        let sent = position(seg.pipe_tail(send_dir)).ok_or_else(corrupt)?;
        let next_recv = position(seg.pipe_head(recv_dir)).ok_or_else(corrupt)?;
        // A previous holder of this end may have died between publishing a
        // message and storing `tail`: continue after whatever it published
        // (and after whatever the receiver already took), never over it.
        let cap = u64::from(seg.geometry().capacity);
        let mut next_send = sent.max(cached_head);
        for _ in 0..cap {
            let idx = (next_send & (cap - 1)) as usize;
            if seg.pipe_slot(send_dir, idx).seq.load(Ordering::Acquire) != next_send + 1 {
                break;
            }
            next_send += 1;
        }
        Ok(Pipe {
            geo: seg.geometry(),
            seg,
            pid: std::process::id(),
            end,
            retry: SendRetry::default(),
            next_send: Cell::new(next_send),
            cached_head: Cell::new(cached_head),
            next_recv: Cell::new(next_recv),
        })
    }

    /// Removes the name `name` from the system.
    pub fn remove(name: &str) -> Result<(), SetupError> {
        Segment::remove(name)
    }

    /// Whether dropping this handle removes the name (true for the parent
    /// end by default).
    pub fn set_remove_on_drop(&mut self, remove: bool) {
        self.seg.set_remove_on_drop(remove);
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

    /// Pid of the process holding the other end, if any has taken it.
    pub fn peer_pid(&self) -> Option<u32> {
        let other = 1 - self.end.index();
        let pid = self.seg.pipe_end_owner(other).load(Ordering::Relaxed);
        (pid != 0).then_some(pid)
    }

    fn send_dir(&self) -> usize {
        self.end.index()
    }

    fn recv_dir(&self) -> usize {
        1 - self.end.index()
    }

    fn index(&self, t: u64) -> usize {
        (t & (self.geo.capacity as u64 - 1)) as usize
    }

    /// Messages waiting for this end to receive (a snapshot).
    pub fn len(&self) -> usize {
        let dir = self.recv_dir();
        let tail = self.seg.pipe_tail(dir).load(Ordering::Relaxed);
        let head = self.next_recv.get();
        tail.saturating_sub(head).min(self.geo.capacity as u64) as usize
    }

    /// True if no message is waiting for this end (a snapshot).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Claims the next send ticket if the direction has room.
    fn claim_send(&self) -> Claimed {
        let t = self.next_send.get();
        let cap = self.geo.capacity as u64;
        if t.wrapping_sub(self.cached_head.get()) >= cap {
            // Acquire: pairs with the receiver's Release store of `head`.
            let head = self.seg.pipe_head(self.send_dir()).load(Ordering::Acquire);
            if head > t || t - head > cap {
                return Claimed::Corrupt;
            }
            self.cached_head.set(head);
            if t - head >= cap {
                return Claimed::Unavailable;
            }
        }
        Claimed::Slot(t)
    }

    fn publish(&self, t: u64, header: &Header, data: &[u8]) {
        let dir = self.send_dir();
        let idx = self.index(t);
        let slot = self.seg.pipe_slot(dir, idx);
        slot.request.store(header.request.code(), Ordering::Relaxed);
        slot.sender.store(header.sender, Ordering::Relaxed);
        slot.recipient
            .store(encode_recipient(header.recipient), Ordering::Relaxed);
        slot.len.store(data.len() as u32, Ordering::Relaxed);
        // SAFETY: ticket `t` is ours (the receiver is at most `capacity`
        // behind, checked in `claim_send`), so nobody reads this payload
        // until we publish; `data.len() <= max_payload`, and the payload
        // area is `stride - 32 >= max_payload` bytes inside the mapping.
        unsafe {
            crate::copy::copy_bytes(
                data.as_ptr(),
                self.seg.pipe_slot_ptr(dir, idx).add(PIPE_SLOT_HEADER_SIZE),
                data.len(),
            );
        }
        // SYNC POINT. Release: pairs with the receiver's Acquire load of
        // `seq`; header and payload are visible to it.
        slot.seq.store(t + 1, Ordering::Release);
        self.seg.pipe_tail(dir).store(t + 1, Ordering::Relaxed);
        self.next_send.set(t + 1);
        self.seg.pipe_not_empty(dir).notify(Wake::One);
    }

    /// Sends `msg` if the direction has room right now; otherwise gives it
    /// back. A payload over max payload is refused before anything is
    /// written.
    pub fn try_send<D: AsRef<[u8]>>(
        &self,
        msg: Message<D>,
    ) -> Result<(), TrySendError<Message<D>>> {
        self.send_claimed(msg, |p| p.claim_send())
    }

    /// Sends `msg`, waiting for room as the pipe's [`SendRetry`] says
    /// (asleep, woken when the other end receives), then gives it back
    /// with [`TrySendError::Full`].
    pub fn send<D: AsRef<[u8]>>(&self, msg: Message<D>) -> Result<(), SendError<Message<D>>> {
        let not_full = self.seg.pipe_not_full(self.send_dir());
        self.send_claimed(msg, |p| {
            // The receiver frees slots with plain stores, which a look
            // of ours does not stall: no need to wait for a run.
            claim_with_retry(not_full, p.retry, || true, || p.claim_send())
        })
    }

    fn send_claimed<D: AsRef<[u8]>>(
        &self,
        msg: Message<D>,
        claim: impl FnOnce(&Pipe) -> Claimed,
    ) -> Result<(), TrySendError<Message<D>>> {
        let len = msg.data.as_ref().len();
        if len > self.max_payload() {
            return Err(TrySendError::TooLarge(msg, len, self.geo.max_payload));
        }
        match claim(self) {
            Claimed::Slot(t) => {
                self.publish(t, &msg.header_or(self.pid), msg.data.as_ref());
                Ok(())
            }
            Claimed::Unavailable => Err(TrySendError::Full(msg)),
            Claimed::Corrupt => Err(TrySendError::Corrupt(msg, CorruptKind::Positions.into())),
        }
    }

    /// Claims the next incoming message, if published. A message with an
    /// impossible length is released and reported, so the pipe goes on.
    fn claim_recv(&self) -> Result<Option<RecvGuard<'_>>, CorruptError> {
        let dir = self.recv_dir();
        let max = self.geo.max_payload;
        let t = self.next_recv.get();
        let idx = self.index(t);
        let slot: &PipeSlotHeader = self.seg.pipe_slot(dir, idx);
        // SYNC POINT. Acquire: pairs with the sender's Release store.
        if slot.seq.load(Ordering::Acquire) != t + 1 {
            return Ok(None);
        }
        let header = Header {
            request: Request::new(slot.request.load(Ordering::Relaxed)),
            sender: slot.sender.load(Ordering::Relaxed),
            recipient: decode_recipient(slot.recipient.load(Ordering::Relaxed)),
        };
        let len = slot.len.load(Ordering::Relaxed);
        if len > max {
            // Release it, so the pipe goes on, and report it.
            let _ = self.release(t);
            return Err(CorruptKind::Length { len, max }.into());
        }
        // SAFETY: we are the only receiver of this direction and the
        // sender does not rewrite slot `t` before we store `head > t`
        // (in `release`); `len <= max_payload` keeps the bytes inside
        // the slot's payload area.
        Ok(Some(unsafe {
            RecvGuard::new(
                Source::Pipe(self),
                t,
                header,
                self.seg.pipe_slot_ptr(dir, idx).add(PIPE_SLOT_HEADER_SIZE),
                len as usize,
            )
        }))
    }

    /// Frees ticket `t` (the oldest held) for the sender.
    pub(crate) fn release(&self, t: u64) -> Result<(), CorruptError> {
        let dir = self.recv_dir();
        self.next_recv.set(t + 1);
        // SYNC POINT. Release: pairs with the sender's Acquire load of
        // `head`; our reads of the slot are done before it reuses it.
        self.seg.pipe_head(dir).store(t + 1, Ordering::Release);
        self.seg.pipe_not_full(dir).notify(Wake::One);
        Ok(())
    }

    /// Waits up to `timeout` (`None`: forever) for the next message;
    /// `Ok(None)` only on a timeout.
    fn recv_within(
        &self,
        timeout: Option<Duration>,
    ) -> Result<Option<RecvGuard<'_>>, CorruptError> {
        // A message already waiting: taken without the wait's machinery.
        if let Some(g) = self.claim_recv()? {
            return Ok(Some(g));
        }
        let events = self.seg.pipe_not_empty(self.recv_dir());
        match events.wait_spinning(timeout, || self.claim_recv().transpose()) {
            Some((r, _)) => r.map(Some),
            None => Ok(None),
        }
    }

    /// Receives the next message if there is one.
    pub fn try_recv(&self) -> Result<Message, TryRecvError> {
        Ok(self
            .claim_recv()?
            .ok_or(TryRecvError::Empty)?
            .into_message())
    }

    /// Receives the next message, waiting as long as it takes (asleep in
    /// the kernel, woken by the other end's send).
    pub fn recv(&self) -> Result<Message, RecvError> {
        loop {
            if let Some(g) = self.recv_within(None)? {
                return Ok(g.into_message());
            }
        }
    }

    /// Receives the next message, waiting at most `timeout`.
    pub fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        Ok(self.recv_ref_within(Some(timeout))?.into_message())
    }

    fn recv_ref_within(
        &self,
        timeout: Option<Duration>,
    ) -> Result<RecvGuard<'_>, RecvTimeoutError> {
        loop {
            match self.recv_within(timeout)? {
                Some(g) => return Ok(g),
                None if timeout.is_some() => return Err(RecvTimeoutError::Timeout),
                None => {}
            }
        }
    }

    /// Receives the next message into `buf` (cleared first), returning its
    /// header; waits at most `timeout` (`None`: forever). Allocates nothing
    /// once `buf` has grown to the largest payload.
    pub fn recv_into(
        &self,
        buf: &mut Vec<u8>,
        timeout: Option<Duration>,
    ) -> Result<Header, RecvTimeoutError> {
        Ok(copy_out(self.recv_ref_within(timeout)?, buf)?)
    }

    /// Receives the next message into `buf` (cleared first) if there is
    /// one, returning its header. Allocates nothing once `buf` has grown to
    /// the largest payload.
    pub fn try_recv_into(&self, buf: &mut Vec<u8>) -> Result<Header, TryRecvError> {
        let g = self.claim_recv()?.ok_or(TryRecvError::Empty)?;
        Ok(copy_out(g, buf)?)
    }

    /// Receives the next message in place, if there is one. The guard
    /// borrows the end mutably: one message is held at a time.
    pub fn try_recv_ref(&mut self) -> Result<RecvGuard<'_>, TryRecvError> {
        self.claim_recv()?.ok_or(TryRecvError::Empty)
    }

    /// Receives in place, waiting at most `timeout` (`None`: forever).
    pub fn recv_ref(
        &mut self,
        timeout: Option<Duration>,
    ) -> Result<RecvGuard<'_>, RecvTimeoutError> {
        self.recv_ref_within(timeout)
    }
}

/// Positions at or above this are corrupt (see `Pipe::from_segment`).
const POSITION_LIMIT: u64 = 1 << 62;

/// Takes `end` of the pipe on `seg`: an exclusive lock on the end's byte of
/// the segment's file, which the kernel drops when the holder's process
/// dies (so a dead holder's end is free at once, and a reused pid cannot
/// keep it), then the holder's pid, for [`Pipe::peer_pid`].
fn take_end(seg: &Segment, end: PipeEnd) -> Result<(), SetupError> {
    let byte = ofd::PIPE_ENDS + end.index() as i64;
    let owner = seg.pipe_end_owner(end.index());
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
        // Give the end back (the lock goes with the descriptor anyway).
        let _ = self.seg.pipe_end_owner(self.end.index()).compare_exchange(
            self.pid,
            0,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
        let _ = ofd::unlock(self.seg.fd(), ofd::PIPE_ENDS + self.end.index() as i64);
    }
}
