//! The interface every channel implements: [`Queue`](crate::Queue),
//! [`Pipe`](crate::Pipe), and backends outside this crate (a network
//! broker, say), so that a worker pool or a user's own code is written once
//! for all of them.
//!
//! A backend implements four things: [`Channel::send_with`] (send, waiting
//! as a [`Wait`] says), [`Channel::recv_with`] (receive the oldest message a
//! [`Filter`] accepts, holding it as a [`Received`] guard until dropped),
//! and the two queries [`Channel::max_payload`] and [`Channel::pid`].
//! Every named form is built on those, in crossbeam-channel's scheme:
//!
//! | family | no wait | as long as it takes | `Duration` | `Instant` |
//! | --- | --- | --- | --- | --- |
//! | send | `try_send` | `send` (bounded by [`SendRetry`]) | `send_timeout` | `send_deadline` |
//! | receive | `try_recv` | `recv` | `recv_timeout` | `recv_deadline` |
//! | in place | `try_recv_ref` | `recv_ref` | `recv_ref_timeout` | `recv_ref_deadline` |
//! | into a buffer | `try_recv_into` | `recv_into` | `recv_into_timeout` | `recv_into_deadline` |
//! | predicate | `try_recv_where` | `recv_where` | `recv_where_timeout` | `recv_where_deadline` |
//! | addressed to me | `try_recv_for_me` | `recv_for_me` | `recv_for_me_timeout` | `recv_for_me_deadline` |
//! | from a sender | `try_recv_from` | `recv_from` | `recv_from_timeout` | `recv_from_deadline` |
//! | serde values | `try_recv_value` | `recv_value` | `recv_value_timeout` | `recv_value_deadline` |
//!
//! and likewise `try_send_value` … `send_value_deadline` (feature `serde`),
//! and [`Joinable`]'s `join`, `join_timeout`, `join_deadline`.
//!
//! What is particular to shared memory (zero-copy reservations, slot
//! counts, recovery statistics) stays on [`Queue`](crate::Queue) and
//! [`Pipe`](crate::Pipe) themselves: a network backend has none of it.
//!
//! `Queue` and `Pipe` also have every form as an inherent method, so code
//! for one of them needs no import of this trait; generic code writes
//! `C: Channel`:
//!
//! ```
//! use std::time::Duration;
//! use mulproc::{Channel, Message, Pipe, PipeConfig, Queue, QueueConfig, Request};
//!
//! /// Answers every task with its payload reversed, until a DIE.
//! fn serve<C: Channel>(tasks: &C, results: &C) -> Result<u32, Box<dyn std::error::Error>> {
//!     let mut served = 0;
//!     loop {
//!         let task = tasks.recv_timeout(Duration::from_secs(5))?;
//!         if task.request == Request::DIE {
//!             return Ok(served);
//!         }
//!         let mut data = task.data;
//!         data.reverse();
//!         results.send(Message::new(Request::FINISHED, data))?;
//!         served += 1;
//!     }
//! }
//!
//! // Over a queue (one queue both ways here, for brevity) ...
//! let q = Queue::create_unique(QueueConfig::new(8, 64))?;
//! q.send(Message::new(Request::DO, b"abc".as_slice()))?;
//! q.send(Message::signal(Request::DIE))?;
//! let done = Queue::create_unique(QueueConfig::new(8, 64))?;
//! assert_eq!(serve(&q, &done)?, 1);
//! assert_eq!(done.try_recv()?.data, b"cba");
//!
//! // ... or over the two ends of a pipe.
//! let parent = Pipe::create_unique(PipeConfig::new(8, 64))?;
//! let child = Pipe::open(parent.name())?;
//! parent.send(Message::new(Request::DO, b"xy".as_slice()))?;
//! parent.send(Message::signal(Request::DIE))?;
//! assert_eq!(serve(&child, &child)?, 1);
//! assert_eq!(parent.try_recv()?.data, b"yx");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::time::{Duration, Instant};

use crate::error::{
    JoinTimeoutError, RecvError, RecvTimeoutError, SendError, TaskDoneError, TryRecvError,
    TrySendError,
};
use crate::message::{Header, Message};

mod inherent;
pub(crate) use inherent::inherent_forms;

/// How long an operation may wait, on the monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// Not at all: the `try_` forms.
    Never,
    /// Until this instant.
    Until(Instant),
    /// As long as it takes.
    Forever,
}

impl Wait {
    /// Until `timeout` from now (forever if that is past what the clock
    /// can tell).
    pub fn timeout(timeout: Duration) -> Wait {
        Instant::now()
            .checked_add(timeout)
            .map_or(Wait::Forever, Wait::Until)
    }

    /// The deadline: `None` for [`Forever`](Wait::Forever), now for
    /// [`Never`](Wait::Never).
    pub fn deadline(self) -> Option<Instant> {
        match self {
            Wait::Never => Some(Instant::now()),
            Wait::Until(d) => Some(d),
            Wait::Forever => None,
        }
    }

    /// Time left: `None` for [`Forever`](Wait::Forever), zero once passed.
    pub fn remaining(self) -> Option<Duration> {
        match self {
            Wait::Never => Some(Duration::ZERO),
            Wait::Until(d) => Some(d.saturating_duration_since(Instant::now())),
            Wait::Forever => None,
        }
    }

    /// True if no time is left.
    pub fn is_over(self) -> bool {
        self.remaining() == Some(Duration::ZERO)
    }

    /// The earlier of the two.
    pub fn min(self, other: Wait) -> Wait {
        match (self, other) {
            (Wait::Never, _) | (_, Wait::Never) => Wait::Never,
            (Wait::Forever, w) | (w, Wait::Forever) => w,
            (Wait::Until(a), Wait::Until(b)) => Wait::Until(a.min(b)),
        }
    }
}

/// How [`send`](Channel::send) waits for room on a full channel: up to
/// `tries` × `wait` in all (woken as soon as a receiver frees a slot), then
/// [`Full`](TrySendError::Full) with the message. The default, 10 × 100 ms,
/// is pymulproc's (`loops` × `timeout`).
///
/// ```
/// use std::time::Duration;
/// use mulproc::SendRetry;
/// let r = SendRetry::default();
/// assert_eq!((r.tries, r.wait), (10, Duration::from_millis(100)));
/// assert_eq!(r.total(), Duration::from_secs(1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendRetry {
    /// How many waits for a free slot before giving up (0: fail at once).
    pub tries: u32,
    /// Longest wait per try.
    pub wait: Duration,
}

impl Default for SendRetry {
    fn default() -> Self {
        SendRetry {
            tries: 10,
            wait: Duration::from_millis(100),
        }
    }
}

impl SendRetry {
    /// The longest a [`send`](Channel::send) waits in all.
    pub fn total(&self) -> Duration {
        self.wait.saturating_mul(self.tries)
    }

    /// The [`Wait`] a send starting now has.
    pub fn budget(&self) -> Wait {
        if self.tries == 0 || self.wait.is_zero() {
            Wait::Never
        } else {
            Wait::timeout(self.total())
        }
    }
}

/// Which message a receive takes: the oldest that passes.
///
/// A message the filter rejects stays where it is, receivable by everyone
/// else, and does not stop the receive from taking a later one (no
/// head-of-line blocking). A filter may be called on a message another
/// receiver takes a moment later: make it a cheap, pure test.
pub enum Filter<'f> {
    /// Any message.
    Any,
    /// A message whose header passes (the payload is not looked at).
    Header(&'f mut dyn FnMut(&Header) -> bool),
    /// A message whose header and payload pass.
    Message(&'f mut dyn FnMut(&Header, &[u8]) -> bool),
}

impl std::fmt::Debug for Filter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Filter::Any => "Filter::Any",
            Filter::Header(_) => "Filter::Header(..)",
            Filter::Message(_) => "Filter::Message(..)",
        })
    }
}

/// A message received and still held by its receiver: nobody else can
/// receive it, and if the receiver dies holding it, it is offered again
/// (at least once). Dropping the guard ends the hold; [`finish`](Self::finish)
/// does too, and reports what went wrong, if anything.
pub trait Received: std::fmt::Debug {
    /// The message header.
    fn header(&self) -> &Header;

    /// The payload.
    fn data(&self) -> &[u8];

    /// Ends the hold, reporting a failure to end it (a slot taken over
    /// while it was held; a broker that did not acknowledge).
    fn finish(self) -> Result<(), RecvError>
    where
        Self: Sized;

    /// Copies the message out and ends the hold.
    fn into_message(self) -> Message
    where
        Self: Sized,
    {
        let h = *self.header();
        let m = Message {
            request: h.request,
            sender: Some(h.sender),
            recipient: h.recipient,
            data: crate::copy::to_vec(self.data()),
        };
        drop(self);
        m
    }

    /// Decodes the payload as exactly one `T` (feature `serde`), leaving
    /// the message held.
    #[cfg(feature = "serde")]
    fn value<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::DecodeError> {
        crate::typed::decode_shared(self.data())
    }
}

/// Runs a receive without a deadline: a timeout (a backend that wakes now
/// and then) is waited on again.
fn forever<T>(mut f: impl FnMut() -> Result<T, RecvTimeoutError>) -> Result<T, RecvError> {
    loop {
        match f() {
            Ok(v) => return Ok(v),
            Err(e) => {
                if let Some(e) = e.into_untimed() {
                    return Err(e);
                }
            }
        }
    }
}

/// Copies a held message into `buf` (cleared first) and ends the hold.
fn copy_out<G: Received>(guard: G, buf: &mut Vec<u8>) -> Result<Header, RecvError> {
    buf.clear();
    crate::copy::extend(buf, guard.data());
    let header = *guard.header();
    guard.finish()?;
    Ok(header)
}

/// The interface of every channel; see the [module docs](self) for the
/// naming scheme and an example.
///
/// Sends give the message back on failure; receives say
/// [`Empty`](TryRecvError::Empty) / [`Timeout`](RecvTimeoutError::Timeout)
/// when nothing came and [`Disconnected`](RecvError::Disconnected) when
/// nothing can come any more (a pipe whose other end is gone; a queue never
/// says it: it is a mailbox by name, and a new process may open it at any
/// time).
pub trait Channel {
    /// A received message still held; see [`Received`].
    type Guard<'a>: Received
    where
        Self: 'a;

    /// Largest payload in bytes.
    fn max_payload(&self) -> usize;

    /// The id this handle stamps on its messages as their sender (its
    /// process id for shared memory), and that
    /// [`recv_for_me`](Channel::recv_for_me) looks for as recipient.
    fn pid(&self) -> u32;

    /// How [`send`](Channel::send) waits for room.
    fn send_retry(&self) -> SendRetry {
        SendRetry::default()
    }

    /// Sends `msg`, waiting for room as `wait` says; [`TrySendError::Full`]
    /// gives it back when there was none in time. A payload over
    /// [`max_payload`](Channel::max_payload) is refused before anything is
    /// written.
    fn send_with<D: AsRef<[u8]>>(
        &self,
        msg: Message<D>,
        wait: Wait,
    ) -> Result<(), TrySendError<Message<D>>>;

    /// Receives the oldest message `filter` accepts, waiting as `wait`
    /// says, and holds it; [`RecvTimeoutError::Timeout`] when none came in
    /// time (at once, for [`Wait::Never`]).
    fn recv_with(
        &self,
        filter: Filter<'_>,
        wait: Wait,
    ) -> Result<Self::Guard<'_>, RecvTimeoutError>;

    // ------------------------------------------------------------ send ---

    /// Sends `msg` if there is room right now; otherwise gives it back.
    #[inline]
    fn try_send<D: AsRef<[u8]>>(&self, msg: Message<D>) -> Result<(), TrySendError<Message<D>>> {
        self.send_with(msg, Wait::Never)
    }

    /// Sends `msg`, waiting for room as the channel's [`SendRetry`] says
    /// (by default up to 10 × 100 ms), then gives it back with
    /// [`TrySendError::Full`].
    ///
    /// A send that finds room reads no clock: the retry budget (a
    /// deadline) starts at the first look that finds none. (Made before
    /// the look, it cost every blocking send a clock read: 11 % of a
    /// 4 → 1 blocking stream's producer samples.)
    #[inline]
    fn send<D: AsRef<[u8]>>(&self, msg: Message<D>) -> Result<(), SendError<Message<D>>> {
        match self.send_with(msg, Wait::Never) {
            Err(TrySendError::Full(msg)) => self.send_with(msg, self.send_retry().budget()),
            r => r,
        }
    }

    /// Sends `msg`, waiting up to `timeout` for room.
    #[inline]
    fn send_timeout<D: AsRef<[u8]>>(
        &self,
        msg: Message<D>,
        timeout: Duration,
    ) -> Result<(), SendError<Message<D>>> {
        self.send_with(msg, Wait::timeout(timeout))
    }

    /// Sends `msg`, waiting until `deadline` for room.
    #[inline]
    fn send_deadline<D: AsRef<[u8]>>(
        &self,
        msg: Message<D>,
        deadline: Instant,
    ) -> Result<(), SendError<Message<D>>> {
        self.send_with(msg, Wait::Until(deadline))
    }

    /// Sends as many of `msgs` as there is room for right now, in order;
    /// returns how many were sent (the first `n`). If a payload is too
    /// large, nothing is sent. Backends override it to send the batch in
    /// one go.
    fn try_send_batch<D: AsRef<[u8]>>(
        &self,
        msgs: &[Message<D>],
    ) -> Result<usize, TrySendError<()>> {
        batch_fits(msgs, self.max_payload())?;
        for (i, m) in msgs.iter().enumerate() {
            let borrowed = Message {
                request: m.request,
                sender: m.sender,
                recipient: m.recipient,
                data: m.data.as_ref(),
            };
            match self.try_send(borrowed) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) if i > 0 => return Ok(i),
                Err(e) => return Err(e.map(|_| ())),
            }
        }
        Ok(msgs.len())
    }

    // --------------------------------------------------------- receive ---

    /// Receives up to `max` messages that are waiting right now, in order,
    /// handing each to `f` in place; returns how many (0 when none waits:
    /// not an error). Every hold has ended when it returns: a queue or a
    /// pipe frees a run of messages together after `f` has seen its last
    /// (runs of up to 32 on a queue), so a receiver that dies inside the
    /// call has the run it held offered again, as any message it held.
    fn try_recv_batch<F>(&self, max: usize, f: F) -> Result<usize, TryRecvError>
    where
        F: FnMut(&Header, &[u8]),
    {
        recv_each(self, max, f)
    }

    /// Receives the next message if there is one.
    #[inline]
    fn try_recv(&self) -> Result<Message, TryRecvError> {
        self.try_recv_ref().map(Received::into_message)
    }

    /// Receives the next message, waiting as long as it takes.
    #[inline]
    fn recv(&self) -> Result<Message, RecvError> {
        self.recv_ref().map(Received::into_message)
    }

    /// Receives the next message, waiting at most `timeout`.
    #[inline]
    fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        self.recv_ref_timeout(timeout).map(Received::into_message)
    }

    /// Receives the next message, waiting until `deadline`.
    #[inline]
    fn recv_deadline(&self, deadline: Instant) -> Result<Message, RecvTimeoutError> {
        self.recv_ref_deadline(deadline).map(Received::into_message)
    }

    /// Receives the next message if there is one, and holds it in place.
    #[inline]
    fn try_recv_ref(&self) -> Result<Self::Guard<'_>, TryRecvError> {
        self.recv_with(Filter::Any, Wait::Never)
            .map_err(RecvTimeoutError::into_try)
    }

    /// Receives the next message in place, waiting as long as it takes.
    #[inline]
    fn recv_ref(&self) -> Result<Self::Guard<'_>, RecvError> {
        forever(|| self.recv_with(Filter::Any, Wait::Forever))
    }

    /// Receives the next message in place, waiting at most `timeout`.
    #[inline]
    fn recv_ref_timeout(&self, timeout: Duration) -> Result<Self::Guard<'_>, RecvTimeoutError> {
        self.recv_with(Filter::Any, Wait::timeout(timeout))
    }

    /// Receives the next message in place, waiting until `deadline`.
    #[inline]
    fn recv_ref_deadline(&self, deadline: Instant) -> Result<Self::Guard<'_>, RecvTimeoutError> {
        self.recv_with(Filter::Any, Wait::Until(deadline))
    }

    /// Receives the next message into `buf` (cleared first) if there is
    /// one, returning its header. Allocates nothing once `buf` has grown to
    /// the largest payload.
    #[inline]
    fn try_recv_into(&self, buf: &mut Vec<u8>) -> Result<Header, TryRecvError> {
        copy_out(self.try_recv_ref()?, buf).map_err(Into::into)
    }

    /// [`try_recv_into`](Channel::try_recv_into), waiting as long as it
    /// takes.
    #[inline]
    fn recv_into(&self, buf: &mut Vec<u8>) -> Result<Header, RecvError> {
        copy_out(self.recv_ref()?, buf)
    }

    /// [`try_recv_into`](Channel::try_recv_into), waiting at most `timeout`.
    #[inline]
    fn recv_into_timeout(
        &self,
        buf: &mut Vec<u8>,
        timeout: Duration,
    ) -> Result<Header, RecvTimeoutError> {
        Ok(copy_out(self.recv_ref_timeout(timeout)?, buf)?)
    }

    /// [`try_recv_into`](Channel::try_recv_into), waiting until `deadline`.
    #[inline]
    fn recv_into_deadline(
        &self,
        buf: &mut Vec<u8>,
        deadline: Instant,
    ) -> Result<Header, RecvTimeoutError> {
        Ok(copy_out(self.recv_ref_deadline(deadline)?, buf)?)
    }

    /// Receives the oldest message that `pred` accepts (on header and
    /// payload), if there is one, without disturbing the others; see
    /// [`Filter`].
    fn try_recv_where<F>(&self, mut pred: F) -> Result<Message, TryRecvError>
    where
        F: FnMut(&Header, &[u8]) -> bool,
    {
        self.recv_with(Filter::Message(&mut pred), Wait::Never)
            .map(Received::into_message)
            .map_err(RecvTimeoutError::into_try)
    }

    /// [`try_recv_where`](Channel::try_recv_where), waiting as long as it
    /// takes for an acceptable message.
    fn recv_where<F>(&self, mut pred: F) -> Result<Message, RecvError>
    where
        F: FnMut(&Header, &[u8]) -> bool,
    {
        forever(|| self.recv_with(Filter::Message(&mut pred), Wait::Forever))
            .map(Received::into_message)
    }

    /// [`try_recv_where`](Channel::try_recv_where), waiting at most
    /// `timeout`.
    fn recv_where_timeout<F>(&self, pred: F, timeout: Duration) -> Result<Message, RecvTimeoutError>
    where
        F: FnMut(&Header, &[u8]) -> bool,
    {
        self.recv_where_deadline_or(pred, Wait::timeout(timeout))
    }

    /// [`try_recv_where`](Channel::try_recv_where), waiting until
    /// `deadline`.
    fn recv_where_deadline<F>(
        &self,
        pred: F,
        deadline: Instant,
    ) -> Result<Message, RecvTimeoutError>
    where
        F: FnMut(&Header, &[u8]) -> bool,
    {
        self.recv_where_deadline_or(pred, Wait::Until(deadline))
    }

    #[doc(hidden)]
    fn recv_where_deadline_or<F>(
        &self,
        mut pred: F,
        wait: Wait,
    ) -> Result<Message, RecvTimeoutError>
    where
        F: FnMut(&Header, &[u8]) -> bool,
    {
        self.recv_with(Filter::Message(&mut pred), wait)
            .map(Received::into_message)
    }

    /// Receives the oldest message addressed to this handle's
    /// [`pid`](Channel::pid) or to anyone (no recipient), if there is one.
    fn try_recv_for_me(&self) -> Result<Message, TryRecvError> {
        self.recv_for_me_with(Wait::Never)
            .map_err(RecvTimeoutError::into_try)
    }

    /// [`try_recv_for_me`](Channel::try_recv_for_me), waiting as long as it
    /// takes.
    fn recv_for_me(&self) -> Result<Message, RecvError> {
        forever(|| self.recv_for_me_with(Wait::Forever))
    }

    /// [`try_recv_for_me`](Channel::try_recv_for_me), waiting at most
    /// `timeout`.
    fn recv_for_me_timeout(&self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        self.recv_for_me_with(Wait::timeout(timeout))
    }

    /// [`try_recv_for_me`](Channel::try_recv_for_me), waiting until
    /// `deadline`.
    fn recv_for_me_deadline(&self, deadline: Instant) -> Result<Message, RecvTimeoutError> {
        self.recv_for_me_with(Wait::Until(deadline))
    }

    #[doc(hidden)]
    fn recv_for_me_with(&self, wait: Wait) -> Result<Message, RecvTimeoutError> {
        let me = self.pid();
        let mut mine = |h: &Header| h.is_for(me);
        self.recv_with(Filter::Header(&mut mine), wait)
            .map(Received::into_message)
    }

    /// Receives the oldest message sent by `sender`, if there is one.
    fn try_recv_from(&self, sender: u32) -> Result<Message, TryRecvError> {
        self.recv_from_with(sender, Wait::Never)
            .map_err(RecvTimeoutError::into_try)
    }

    /// [`try_recv_from`](Channel::try_recv_from), waiting as long as it
    /// takes.
    fn recv_from(&self, sender: u32) -> Result<Message, RecvError> {
        forever(|| self.recv_from_with(sender, Wait::Forever))
    }

    /// [`try_recv_from`](Channel::try_recv_from), waiting at most
    /// `timeout`.
    fn recv_from_timeout(
        &self,
        sender: u32,
        timeout: Duration,
    ) -> Result<Message, RecvTimeoutError> {
        self.recv_from_with(sender, Wait::timeout(timeout))
    }

    /// [`try_recv_from`](Channel::try_recv_from), waiting until `deadline`.
    fn recv_from_deadline(
        &self,
        sender: u32,
        deadline: Instant,
    ) -> Result<Message, RecvTimeoutError> {
        self.recv_from_with(sender, Wait::Until(deadline))
    }

    #[doc(hidden)]
    fn recv_from_with(&self, sender: u32, wait: Wait) -> Result<Message, RecvTimeoutError> {
        let mut from = |h: &Header| h.sender == sender;
        self.recv_with(Filter::Header(&mut from), wait)
            .map(Received::into_message)
    }

    // ---------------------------------------------------- serde values ---

    /// Sends `value`, encoded (feature `serde`; postcard, see
    /// [`encoded_len`](crate::encoded_len)), waiting for room as `wait`
    /// says. The value is only borrowed: on failure the caller still has
    /// it. Shared-memory channels encode straight into the slot.
    #[cfg(feature = "serde")]
    fn send_value_with<T: serde::Serialize + ?Sized>(
        &self,
        request: crate::Request,
        recipient: Option<u32>,
        value: &T,
        wait: Wait,
    ) -> Result<(), crate::ValueSendError> {
        let mut msg = Message::with_value(request, value)?;
        msg.recipient = recipient;
        self.send_with(msg, wait)
            .map_err(crate::ValueSendError::from_send)
    }

    /// Sends `value`, encoded, if there is room right now.
    #[cfg(feature = "serde")]
    fn try_send_value<T: serde::Serialize + ?Sized>(
        &self,
        request: crate::Request,
        recipient: Option<u32>,
        value: &T,
    ) -> Result<(), crate::ValueSendError> {
        self.send_value_with(request, recipient, value, Wait::Never)
    }

    /// Sends `value`, encoded, waiting for room as the channel's
    /// [`SendRetry`] says.
    #[cfg(feature = "serde")]
    fn send_value<T: serde::Serialize + ?Sized>(
        &self,
        request: crate::Request,
        recipient: Option<u32>,
        value: &T,
    ) -> Result<(), crate::ValueSendError> {
        self.send_value_with(request, recipient, value, self.send_retry().budget())
    }

    /// Sends `value`, encoded, waiting up to `timeout` for room.
    #[cfg(feature = "serde")]
    fn send_value_timeout<T: serde::Serialize + ?Sized>(
        &self,
        request: crate::Request,
        recipient: Option<u32>,
        value: &T,
        timeout: Duration,
    ) -> Result<(), crate::ValueSendError> {
        self.send_value_with(request, recipient, value, Wait::timeout(timeout))
    }

    /// Sends `value`, encoded, waiting until `deadline` for room.
    #[cfg(feature = "serde")]
    fn send_value_deadline<T: serde::Serialize + ?Sized>(
        &self,
        request: crate::Request,
        recipient: Option<u32>,
        value: &T,
        deadline: Instant,
    ) -> Result<(), crate::ValueSendError> {
        self.send_value_with(request, recipient, value, Wait::Until(deadline))
    }

    /// Receives the next message as `wait` says and decodes its payload as
    /// exactly one `T` (feature `serde`), returning the header with it. The
    /// message is consumed even when it does not decode
    /// ([`RecvValueError::Decode`](crate::RecvValueError::Decode) carries
    /// its header). To look at the header first, take a guard and call
    /// [`Received::value`].
    #[cfg(feature = "serde")]
    fn recv_value_with<T: serde::de::DeserializeOwned>(
        &self,
        wait: Wait,
    ) -> Result<(Header, T), crate::RecvValueError> {
        let guard = self.recv_with(Filter::Any, wait)?;
        let header = *guard.header();
        let decoded = guard.value::<T>();
        // A slot taken over while we held it may have been torn: report
        // that rather than what we decoded.
        guard.finish()?;
        match decoded {
            Ok(value) => Ok((header, value)),
            Err(source) => Err(crate::RecvValueError::Decode { header, source }),
        }
    }

    /// Receives and decodes the next message if there is one;
    /// [`RecvValueError::Timeout`](crate::RecvValueError::Timeout) if not.
    #[cfg(feature = "serde")]
    fn try_recv_value<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<(Header, T), crate::RecvValueError> {
        self.recv_value_with(Wait::Never)
    }

    /// Receives and decodes the next message, waiting as long as it takes.
    #[cfg(feature = "serde")]
    fn recv_value<T: serde::de::DeserializeOwned>(
        &self,
    ) -> Result<(Header, T), crate::RecvValueError> {
        loop {
            match self.recv_value_with(Wait::Forever) {
                Err(crate::RecvValueError::Timeout) => {}
                other => return other,
            }
        }
    }

    /// Receives and decodes the next message, waiting at most `timeout`.
    #[cfg(feature = "serde")]
    fn recv_value_timeout<T: serde::de::DeserializeOwned>(
        &self,
        timeout: Duration,
    ) -> Result<(Header, T), crate::RecvValueError> {
        self.recv_value_with(Wait::timeout(timeout))
    }

    /// Receives and decodes the next message, waiting until `deadline`.
    #[cfg(feature = "serde")]
    fn recv_value_deadline<T: serde::de::DeserializeOwned>(
        &self,
        deadline: Instant,
    ) -> Result<(Header, T), crate::RecvValueError> {
        self.recv_value_with(Wait::Until(deadline))
    }
}

/// Channels with `JoinableQueue` meaning: every message received is later
/// marked done, and a joiner waits until every message sent has been.
pub trait Joinable: Channel {
    /// Marks one message received by this handle as processed (Python's
    /// `JoinableQueue.task_done`). Calling it more times than this handle
    /// has received messages is an error and changes nothing.
    fn task_done(&self) -> Result<(), TaskDoneError>;

    /// Waits, as `wait` says, until every message sent has been received
    /// and marked done.
    fn join_with(&self, wait: Wait) -> Result<(), JoinTimeoutError>;

    /// Waits until every message sent has been received and marked done
    /// (Python's `JoinableQueue.join`), as long as it takes.
    fn join(&self) {
        while let Err(JoinTimeoutError::Timeout { .. }) = self.join_with(Wait::Forever) {}
    }

    /// [`join`](Joinable::join), waiting at most `timeout`; the error tells
    /// how many messages were still not done.
    fn join_timeout(&self, timeout: Duration) -> Result<(), JoinTimeoutError> {
        self.join_with(Wait::timeout(timeout))
    }

    /// [`join`](Joinable::join), waiting until `deadline`.
    fn join_deadline(&self, deadline: Instant) -> Result<(), JoinTimeoutError> {
        self.join_with(Wait::Until(deadline))
    }
}

/// `Ok` if every payload of `msgs` fits in `max` bytes; otherwise the
/// first one too large, as [`TrySendError::TooLarge`] (a batch send
/// checks before it sends anything).
pub(crate) fn batch_fits<D: AsRef<[u8]>>(
    msgs: &[Message<D>],
    max: usize,
) -> Result<(), TrySendError<()>> {
    match msgs
        .iter()
        .map(|m| m.data.as_ref().len())
        .find(|&len| len > max)
    {
        Some(len) => Err(TrySendError::TooLarge { msg: (), len, max }),
        None => Ok(()),
    }
}

/// [`Channel::try_recv_batch`] one message at a time: up to `max` that are
/// waiting, each handed to `f` and then finished; an error only if it
/// comes before the first. The trait's default, and what a channel with a
/// faster batch of its own falls back to when it cannot take one.
pub(crate) fn recv_each<C, F>(ch: &C, max: usize, mut f: F) -> Result<usize, TryRecvError>
where
    C: Channel + ?Sized,
    F: FnMut(&Header, &[u8]),
{
    let mut n = 0;
    while n < max {
        match ch.recv_with(Filter::Any, Wait::Never) {
            Ok(g) => {
                f(g.header(), g.data());
                n += 1;
                g.finish()?;
            }
            Err(RecvTimeoutError::Timeout) => break,
            Err(e) if n == 0 => return Err(e.into_try()),
            Err(_) => break,
        }
    }
    Ok(n)
}
