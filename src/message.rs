//! Messages: pymulproc's `[request, sender_pid, recipient_pid, data]`.

use std::fmt;

use crate::sync::{AtomicU32, Ordering};

/// What a message asks of its receiver: pymulproc's `request` field.
///
/// Codes `0..16` are reserved for mulproc; [`Request::DO`],
/// [`Request::FINISHED`] and [`Request::DIE`] are the built-in ones. Any
/// other `u32` is free for the application.
///
/// ```
/// use mulproc::Request;
/// const RESIZE: Request = Request::new(100);
/// assert!(!RESIZE.is_reserved());
/// assert!(Request::DIE.is_reserved());
/// assert_eq!(Request::DO.code(), 1);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Request(u32);

impl Request {
    /// Do a task (pymulproc's `REQ_DO`).
    pub const DO: Request = Request(1);
    /// A task is done (pymulproc's `REQ_FINISHED`).
    pub const FINISHED: Request = Request(2);
    /// Stop as soon as possible: the poison pill (pymulproc's `REQ_DIE`).
    pub const DIE: Request = Request(3);
    /// First code not reserved for mulproc.
    pub const FIRST_USER_CODE: u32 = 16;

    /// A request with any code.
    pub const fn new(code: u32) -> Request {
        Request(code)
    }

    /// The numeric code.
    pub const fn code(self) -> u32 {
        self.0
    }

    /// True for codes reserved for mulproc (`< 16`).
    pub const fn is_reserved(self) -> bool {
        self.0 < Self::FIRST_USER_CODE
    }
}

impl fmt::Debug for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Request::DO => f.write_str("DO"),
            Request::FINISHED => f.write_str("FINISHED"),
            Request::DIE => f.write_str("DIE"),
            Request(c) => write!(f, "Request({c})"),
        }
    }
}

/// The fixed-size part of a received message.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Header {
    /// The request code.
    pub request: Request,
    /// Pid of the sender (the sending process's own pid unless it gave
    /// another).
    pub sender: u32,
    /// Pid the message is addressed to; `None` means anyone.
    pub recipient: Option<u32>,
}

impl Header {
    /// True if the message is addressed to `pid` or to anyone.
    pub fn is_for(&self, pid: u32) -> bool {
        self.recipient.is_none_or(|r| r == pid)
    }
}

/// A message: request, sender, optional recipient, and a payload.
///
/// `D` is the payload: `Vec<u8>` for an owned message (what receives return),
/// `&[u8]` to send borrowed bytes without allocating. Sending gives the
/// message back on failure, so nothing is lost.
///
/// ```
/// use mulproc::{Message, Request};
/// let m = Message::new(Request::DO, b"resize 42".as_slice()).to(1234);
/// assert_eq!(m.recipient, Some(1234));
/// assert_eq!(m.sender, None); // filled in with our own pid when sent
/// assert_eq!(m.data, b"resize 42");
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Message<D = Vec<u8>> {
    /// The request code.
    pub request: Request,
    /// Sender pid; `None` when sending means "my own pid". Always `Some` in
    /// a received message.
    pub sender: Option<u32>,
    /// Recipient pid; `None` means anyone.
    pub recipient: Option<u32>,
    /// The payload.
    pub data: D,
}

impl<D: AsRef<[u8]>> Message<D> {
    /// A message for anyone, from this process.
    pub fn new(request: Request, data: D) -> Message<D> {
        Message {
            request,
            sender: None,
            recipient: None,
            data,
        }
    }

    /// Addresses the message to `pid`.
    pub fn to(mut self, pid: u32) -> Message<D> {
        self.recipient = Some(pid);
        self
    }

    /// Sends the message on behalf of `pid` instead of this process.
    pub fn from_pid(mut self, pid: u32) -> Message<D> {
        self.sender = Some(pid);
        self
    }

    /// The header this message carries, with `own_pid` as the default sender.
    pub(crate) fn header_or(&self, own_pid: u32) -> Header {
        Header {
            request: self.request,
            sender: self.sender.unwrap_or(own_pid),
            recipient: self.recipient,
        }
    }
}

impl Message<&'static [u8]> {
    /// A message with no payload, e.g. `Message::signal(Request::DIE)`.
    pub fn signal(request: Request) -> Message<&'static [u8]> {
        Message::new(request, &[])
    }
}

impl Message<Vec<u8>> {
    /// The header of a received message.
    pub fn header(&self) -> Header {
        Header {
            request: self.request,
            sender: self.sender.unwrap_or(0),
            recipient: self.recipient,
        }
    }
}

impl<D: AsRef<[u8]>> fmt::Debug for Message<D> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Message")
            .field("request", &self.request)
            .field("sender", &self.sender)
            .field("recipient", &self.recipient)
            .field("len", &self.data.as_ref().len())
            .finish()
    }
}

/// Recipient as stored in a slot: 0 means anyone (pid 0 is never a process
/// that can receive).
pub(crate) fn encode_recipient(r: Option<u32>) -> u32 {
    r.unwrap_or(0)
}

/// Inverse of [`encode_recipient`].
pub(crate) fn decode_recipient(r: u32) -> Option<u32> {
    (r != 0).then_some(r)
}

/// A message's header as a slot stores it, in queue and pipe slots alike:
/// written by the slot's claimant before its publish (a Release on the
/// slot's sequence word) and read by a receiver after its Acquire of that
/// word. Atomics (Relaxed), so that a misbehaving peer writing them at the
/// same time is a wrong value, never undefined behaviour; each is read
/// once, and the length is checked against max payload by every reader.
#[repr(C)]
#[derive(Debug)]
pub struct StoredHeader {
    pub(crate) request: AtomicU32,
    pub(crate) sender: AtomicU32,
    /// 0 = for anyone (see [`encode_recipient`]).
    pub(crate) recipient: AtomicU32,
    /// Payload length in bytes.
    pub(crate) len: AtomicU32,
}

impl StoredHeader {
    /// All zero (heap models).
    #[cfg(loom)]
    pub(crate) fn new() -> StoredHeader {
        StoredHeader {
            request: AtomicU32::new(0),
            sender: AtomicU32::new(0),
            recipient: AtomicU32::new(0),
            len: AtomicU32::new(0),
        }
    }

    /// The header and the payload length, each word read once.
    #[inline]
    pub(crate) fn read(&self) -> (Header, u32) {
        let header = Header {
            request: Request::new(self.request.load(Ordering::Relaxed)),
            sender: self.sender.load(Ordering::Relaxed),
            recipient: decode_recipient(self.recipient.load(Ordering::Relaxed)),
        };
        (header, self.len.load(Ordering::Relaxed))
    }

    /// Stores header `h` and payload length `len`.
    #[inline]
    pub(crate) fn write(&self, h: &Header, len: u32) {
        self.request.store(h.request.code(), Ordering::Relaxed);
        self.sender.store(h.sender, Ordering::Relaxed);
        self.recipient
            .store(encode_recipient(h.recipient), Ordering::Relaxed);
        self.len.store(len, Ordering::Relaxed);
    }

    /// Copies `src`'s words as they are (a move: an impossible length is
    /// kept for the receiver to report).
    #[inline]
    pub(crate) fn copy_from(&self, src: &StoredHeader) {
        for (a, b) in [
            (&src.request, &self.request),
            (&src.sender, &self.sender),
            (&src.recipient, &self.recipient),
            (&src.len, &self.len),
        ] {
            b.store(a.load(Ordering::Relaxed), Ordering::Relaxed);
        }
    }
}

impl<'a> Message<&'a [u8]> {
    /// A message carrying the bytes of a `bytemuck::Pod` value, without
    /// copying it first. Read it back with
    /// [`RecvGuard::read_pod`](crate::RecvGuard::read_pod) or
    /// [`Message::read_pod`].
    pub fn pod<T: bytemuck::NoUninit>(request: Request, value: &'a T) -> Message<&'a [u8]> {
        Message::new(request, bytemuck::bytes_of(value))
    }
}

impl<D: AsRef<[u8]>> Message<D> {
    /// Reads the payload as a `bytemuck::Pod` value of exactly its size.
    pub fn read_pod<T: bytemuck::AnyBitPattern>(&self) -> Result<T, bytemuck::PodCastError> {
        bytemuck::try_pod_read_unaligned(self.data.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recipient_encoding_round_trips() {
        for r in [None, Some(1), Some(4_194_304), Some(u32::MAX)] {
            assert_eq!(decode_recipient(encode_recipient(r)), r);
        }
    }

    #[test]
    fn header_defaults_sender_to_own_pid() {
        let m = Message::new(Request::FINISHED, vec![1u8]).to(7);
        let h = m.header_or(42);
        assert_eq!(h.sender, 42);
        assert_eq!(h.recipient, Some(7));
        assert!(h.is_for(7));
        assert!(!h.is_for(8));
        let h = Message::signal(Request::DIE).from_pid(9).header_or(42);
        assert_eq!(h.sender, 9);
        assert!(h.is_for(12345));
    }

    #[test]
    fn stored_header_round_trips() {
        let stored = StoredHeader {
            request: AtomicU32::new(0),
            sender: AtomicU32::new(0),
            recipient: AtomicU32::new(0),
            len: AtomicU32::new(0),
        };
        for (h, len) in [
            (
                Header {
                    request: Request::DO,
                    sender: 1,
                    recipient: None,
                },
                0,
            ),
            (
                Header {
                    request: Request::new(u32::MAX),
                    sender: u32::MAX,
                    recipient: Some(7),
                },
                64,
            ),
            (
                Header {
                    request: Request::DIE,
                    sender: 42,
                    recipient: Some(u32::MAX),
                },
                u32::MAX,
            ),
        ] {
            stored.write(&h, len);
            assert_eq!(stored.read(), (h, len));
            let copy = StoredHeader {
                request: AtomicU32::new(9),
                sender: AtomicU32::new(9),
                recipient: AtomicU32::new(9),
                len: AtomicU32::new(9),
            };
            copy.copy_from(&stored);
            assert_eq!(copy.read(), (h, len));
        }
        // "For anyone" is stored as 0, and 0 reads back as anyone.
        stored.write(
            &Header {
                request: Request::DO,
                sender: 1,
                recipient: None,
            },
            0,
        );
        assert_eq!(stored.recipient.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn request_codes() {
        assert_eq!(format!("{:?}", Request::DIE), "DIE");
        assert_eq!(format!("{:?}", Request::new(77)), "Request(77)");
        assert!(Request::new(15).is_reserved());
        assert!(!Request::new(16).is_reserved());
    }
}
