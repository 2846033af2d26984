//! serde values as payloads (feature `serde`): "any data works", as in
//! pymulproc, encoded compactly with postcard.
//!
//! Any `Serialize` value goes out with [`Queue::try_send_value`] or
//! [`Queue::send_value`] and comes back as any `DeserializeOwned` type
//! with [`Queue::recv_value`], [`RecvGuard::value`] or [`Message::value`].
//! The encoding is postcard's (varint integers, length-prefixed strings
//! and sequences, no field names): small, but not self-describing, so both
//! ends must agree on the type.
//!
//! Decoding never trusts the payload: garbage, truncated or over-long
//! payloads give a [`DecodeError`], never a panic, and a shared-memory
//! payload is copied into private memory before it is decoded, so a
//! process scribbling on the slot meanwhile can make the decode fail or
//! return a wrong value, but never an invalid `String`.
//!
//! A worker that receives typed tasks and a poison pill looks at the header
//! first, then decodes in place:
//!
//! ```
//! use std::time::Duration;
//! use mulproc::{Queue, QueueConfig, Request};
//! # let name = format!("doc-typed-worker-{}", std::process::id());
//! let tasks = Queue::create(&name, QueueConfig::new(8, 64))?;
//! tasks.send_value(Request::DO, None, &(3u32, "resize"))?;
//! tasks.send_value(Request::DIE, None, &())?;
//!
//! let mut done = Vec::new();
//! loop {
//!     let guard = tasks.recv_ref_timeout(Duration::from_secs(1))?;
//!     if guard.header().request == Request::DIE {
//!         break;
//!     }
//!     let (n, what): (u32, String) = guard.value()?;
//!     done.push(format!("{what} {n}"));
//! }
//! assert_eq!(done, ["resize 3"]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::cell::RefCell;

use crate::error::{BackendError, CorruptError, RecvError, RecvTimeoutError, TrySendError};
use crate::message::{Header, Message, Request};

// --------------------------------------------------------------- errors ---

/// A value could not be encoded (apart from being too large, which is
/// [`ValueSendError::TooLarge`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// A sequence or map did not tell its length up front (a hand-written
    /// `Serialize` calling `serialize_seq(None)`); postcard needs it.
    #[error("a sequence or map of unknown length cannot be encoded")]
    LengthUnknown,
    /// The value's `Serialize` implementation reported an error.
    #[error("the value's Serialize implementation reported an error")]
    Rejected,
    /// The value needs a serde feature that postcard does not support.
    #[error("the value uses a serde feature the encoding does not support")]
    Unsupported,
}

impl EncodeError {
    pub(crate) fn from_postcard(e: postcard::Error) -> EncodeError {
        match e {
            postcard::Error::SerializeSeqLengthUnknown => EncodeError::LengthUnknown,
            postcard::Error::WontImplement | postcard::Error::NotYetImplemented => {
                EncodeError::Unsupported
            }
            _ => EncodeError::Rejected,
        }
    }
}

/// A payload is not an encoding of the requested type.
///
/// ```
/// use mulproc::{Message, Request};
/// # use mulproc::DecodeError;
/// let m = Message::new(Request::DO, vec![2_u8]); // no bool is 2
/// assert_eq!(m.value::<bool>(), Err(DecodeError::BadEncoding));
/// let m = Message::new(Request::DO, vec![0xFF_u8; 3]); // a u32 cut short
/// assert_eq!(m.value::<u32>(), Err(DecodeError::UnexpectedEnd));
/// let m = Message::new(Request::DO, vec![7_u8, 0]); // a u32, and one byte more
/// assert_eq!(m.value::<u32>(), Err(DecodeError::TrailingBytes(1)));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The payload ends before the value does.
    #[error("the payload ends before the value does")]
    UnexpectedEnd,
    /// The payload holds a whole value and this many bytes more.
    #[error("{0} bytes are left over after the value")]
    TrailingBytes(usize),
    /// Bytes no encoding of the type contains: a bad integer, bool, char,
    /// UTF-8 string, option or enum tag.
    #[error("the payload is not a valid encoding of the requested type")]
    BadEncoding,
    /// The type's `Deserialize` implementation refused the contents (for
    /// example an unknown enum variant or a failed validation).
    #[error("the type's Deserialize implementation refused the payload")]
    Rejected,
    /// The type needs a serde feature that postcard does not support (for
    /// example `deserialize_any`, used by untagged enums).
    #[error("the type uses a serde feature the encoding does not support")]
    Unsupported,
}

impl DecodeError {
    fn from_postcard(e: postcard::Error) -> DecodeError {
        use postcard::Error as E;
        match e {
            E::DeserializeUnexpectedEnd => DecodeError::UnexpectedEnd,
            E::SerdeDeCustom => DecodeError::Rejected,
            E::WontImplement | E::NotYetImplemented => DecodeError::Unsupported,
            _ => DecodeError::BadEncoding,
        }
    }
}

/// A `send_value` form failed. The value was only borrowed, so the caller
/// still has it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValueSendError {
    /// No free slot (right now, or within the time allowed).
    #[error("the channel is full")]
    Full,
    /// Nobody can receive it any more: the other end of a pipe is gone.
    #[error("the receiving end is gone")]
    Disconnected,
    /// The encoded value is larger than the queue's max payload. Nothing
    /// was delivered.
    #[error("the encoded value of {len} bytes exceeds the max payload of {max}")]
    TooLarge {
        /// Length of the encoded value.
        len: usize,
        /// The queue's max payload.
        max: usize,
    },
    /// The value could not be encoded; nothing was delivered.
    #[error("cannot encode the value: {0}")]
    Encode(#[from] EncodeError),
    /// The segment is corrupt; nothing was sent.
    #[error(transparent)]
    Corrupt(CorruptError),
    /// The slot was reclaimed by a recoverer while this process held it; the
    /// value was not delivered.
    #[error("the slot was reclaimed while this process held it; the value was not delivered")]
    Fenced,
    /// The backend failed.
    #[error(transparent)]
    Backend(BackendError),
}

impl ValueSendError {
    /// True for [`ValueSendError::Full`].
    pub fn is_full(&self) -> bool {
        matches!(self, ValueSendError::Full)
    }

    /// True for [`ValueSendError::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, ValueSendError::Disconnected)
    }

    pub(crate) fn from_send<T>(e: TrySendError<T>) -> ValueSendError {
        match e {
            TrySendError::Full(..) => ValueSendError::Full,
            TrySendError::Disconnected(..) => ValueSendError::Disconnected,
            TrySendError::TooLarge { len, max, .. } => ValueSendError::TooLarge { len, max },
            TrySendError::Corrupt(_, c) => ValueSendError::Corrupt(c),
            TrySendError::Fenced(..) => ValueSendError::Fenced,
            TrySendError::Backend(_, b) => ValueSendError::Backend(b),
        }
    }
}

/// A `recv_value` form failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvValueError {
    /// No message arrived before the deadline (at once, for
    /// `try_recv_value`).
    #[error("timed out waiting for a message")]
    Timeout,
    /// No message, and none can come: the other end of a pipe is gone.
    #[error("the channel is empty and its sending end is gone")]
    Disconnected,
    /// The backend failed.
    #[error(transparent)]
    Backend(BackendError),
    /// The segment is corrupt.
    #[error(transparent)]
    Corrupt(#[from] CorruptError),
    /// A message arrived but its payload is not an encoding of the type.
    /// The message was received (and counts towards
    /// [`task_done`](crate::Queue::task_done)); its header says who sent it.
    #[error("message {header:?} could not be decoded: {source}")]
    Decode {
        /// The header of the message.
        header: Header,
        /// Why it could not be decoded.
        source: DecodeError,
    },
}

impl RecvValueError {
    /// True for [`RecvValueError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvValueError::Timeout)
    }

    /// True for [`RecvValueError::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, RecvValueError::Disconnected)
    }
}

impl From<RecvTimeoutError> for RecvValueError {
    fn from(e: RecvTimeoutError) -> Self {
        match e {
            RecvTimeoutError::Timeout => RecvValueError::Timeout,
            RecvTimeoutError::Disconnected => RecvValueError::Disconnected,
            RecvTimeoutError::Corrupt(c) => RecvValueError::Corrupt(c),
            RecvTimeoutError::Backend(b) => RecvValueError::Backend(b),
        }
    }
}

impl From<RecvError> for RecvValueError {
    fn from(e: RecvError) -> Self {
        RecvTimeoutError::from(e).into()
    }
}

// ------------------------------------------------------------- encoding ---

/// The length of `value`'s encoding: what it needs of a queue's max
/// payload. Encodes it without storing the bytes.
///
/// ```
/// assert_eq!(mulproc::encoded_len(&(1u8, "abc"))?, 5); // 1, then length 3 and "abc"
/// assert_eq!(mulproc::encoded_len(&300u32)?, 2); // a varint
/// # Ok::<(), mulproc::EncodeError>(())
/// ```
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> Result<usize, EncodeError> {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .map_err(EncodeError::from_postcard)
}

/// Decodes exactly one `T` from `bytes` (private memory).
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(DecodeError::from_postcard)?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingBytes(rest.len()))
    }
}

/// Largest scratch buffer kept between decodes, per thread.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    /// Private copy of a shared payload, reused to avoid an allocation per
    /// receive.
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Decodes one `T` from bytes another process may write: copies them into
/// private memory first (one `memcpy`), so a string validated as UTF-8 is
/// the string stored.
pub(crate) fn decode_shared<T: DeserializeOwned>(shared: &[u8]) -> Result<T, DecodeError> {
    let with_scratch = SCRATCH.try_with(|cell| {
        let mut buf = cell.try_borrow_mut().ok()?;
        buf.clear();
        crate::copy::extend(&mut buf, shared);
        let r = decode(&buf);
        if buf.capacity() > SCRATCH_KEEP {
            *buf = Vec::new();
        }
        Some(r)
    });
    match with_scratch {
        Ok(Some(r)) => r,
        // Re-entered, or the thread is exiting: a one-off private copy.
        _ => {
            let private = shared.to_owned();
            decode(&private)
        }
    }
}

impl Message<Vec<u8>> {
    /// A message for anyone, from this process, carrying `value` encoded.
    /// For channels without a `send_value` of their own, or to address it
    /// with [`to`](Message::to) first.
    ///
    /// ```
    /// use mulproc::{Message, Request};
    /// let m = Message::with_value(Request::DO, &vec![1u16, 2, 3])?.to(42);
    /// assert_eq!(m.recipient, Some(42));
    /// assert_eq!(m.value::<Vec<u16>>()?, [1, 2, 3]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn with_value<T: Serialize + ?Sized>(
        request: Request,
        value: &T,
    ) -> Result<Message<Vec<u8>>, EncodeError> {
        let data = postcard::to_allocvec(value).map_err(EncodeError::from_postcard)?;
        Ok(Message::new(request, data))
    }
}

impl<D: AsRef<[u8]>> Message<D> {
    /// Decodes the payload as exactly one `T`.
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use mulproc::{Message, Request};
    /// let prices = BTreeMap::from([("apple".to_string(), 3u32), ("pear".to_string(), 5)]);
    /// let m = Message::with_value(Request::DO, &prices)?;
    /// assert_eq!(m.value::<BTreeMap<String, u32>>()?, prices);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn value<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        decode(self.data.as_ref())
    }
}
