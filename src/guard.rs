//! The receive guard shared by queues and pipes: a message read in place.

use std::fmt;

use crate::error::CorruptError;
use crate::message::{Header, Message};

/// What a guard's slot is released through: the channel handle that
/// claimed it (a queue or a pipe end). The guard knows nothing else of it.
pub(crate) trait Release {
    /// Ends this handle's claim on `ticket`; an error if another process
    /// took the slot over meanwhile.
    fn release(&self, ticket: u64) -> Result<(), CorruptError>;
}

/// A received message still in its slot; the slot is freed when the guard
/// is dropped, or by [`finish`](RecvGuard::finish), which also reports a
/// slot taken over by another process while it was held.
pub struct RecvGuard<'q> {
    src: &'q dyn Release,
    ticket: u64,
    header: Header,
    data: *const u8,
    /// Checked against max payload before the guard was made.
    len: usize,
    released: bool,
}

impl fmt::Debug for RecvGuard<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecvGuard")
            .field("header", &self.header)
            .field("len", &self.len)
            .finish()
    }
}

impl<'q> RecvGuard<'q> {
    /// A guard over the claimed slot of `ticket`.
    ///
    /// # Safety
    ///
    /// - `src` holds the claim on `ticket` until the guard releases it, so
    ///   no honest process writes the slot meanwhile;
    /// - `data .. data + len` lies inside that slot's payload area, in a
    ///   mapping that lives as long as `src` (`'q`).
    pub(crate) unsafe fn new(
        src: &'q dyn Release,
        ticket: u64,
        header: Header,
        data: *const u8,
        len: usize,
    ) -> RecvGuard<'q> {
        RecvGuard {
            src,
            ticket,
            header,
            data,
            len,
            released: false,
        }
    }

    /// The message header.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The payload, in place in shared memory.
    ///
    /// No honest process writes a slot while you hold it; a misbehaving one
    /// could change these bytes under you, never their length.
    pub fn data(&self) -> &[u8] {
        // SAFETY: guaranteed by the caller of `new`: the bytes are inside
        // the held slot for as long as the guard (and so this borrow) lives.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }

    /// Reads the payload as a `bytemuck::Pod` value of exactly its size.
    ///
    /// ```
    /// use mulproc::{Message, Queue, QueueConfig, Request};
    /// # let name = format!("doc-pod-{}", std::process::id());
    /// let q = Queue::create(&name, QueueConfig::new(4, 64))?;
    /// q.try_send(Message::pod(Request::DO, &[1.5f64, 2.5]))?;
    /// let v: [f64; 2] = q.try_recv_ref()?.read_pod()?;
    /// assert_eq!(v, [1.5, 2.5]);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn read_pod<T: bytemuck::AnyBitPattern>(&self) -> Result<T, bytemuck::PodCastError> {
        bytemuck::try_pod_read_unaligned(self.data())
    }

    /// Copies the message out and frees the slot.
    pub fn into_message(self) -> Message {
        let m = Message {
            request: self.header.request,
            sender: Some(self.header.sender),
            recipient: self.header.recipient,
            data: crate::copy::to_vec(self.data()),
        };
        drop(self);
        m
    }

    /// Frees the slot, reporting whether another process took it over
    /// while we held it.
    pub fn finish(mut self) -> Result<(), CorruptError> {
        self.released = true;
        self.release()
    }

    /// Gives up the guard without releasing: the caller takes over the
    /// claim on the returned ticket.
    pub(crate) fn into_ticket(mut self) -> u64 {
        self.released = true;
        self.ticket
    }

    fn release(&self) -> Result<(), CorruptError> {
        self.src.release(self.ticket)
    }
}

impl crate::channel::Received for RecvGuard<'_> {
    #[inline]
    fn header(&self) -> &Header {
        RecvGuard::header(self)
    }

    #[inline]
    fn data(&self) -> &[u8] {
        RecvGuard::data(self)
    }

    #[inline]
    fn finish(self) -> Result<(), crate::RecvError> {
        RecvGuard::finish(self).map_err(Into::into)
    }

    #[inline]
    fn into_message(self) -> Message {
        RecvGuard::into_message(self)
    }
}

impl Drop for RecvGuard<'_> {
    fn drop(&mut self) {
        if !self.released {
            // Use `finish` to see this result; a drop has nowhere to report.
            let _ = self.release();
        }
    }
}

#[cfg(feature = "serde")]
impl RecvGuard<'_> {
    /// Decodes the payload as exactly one `T`, leaving the message in its
    /// slot (it is freed when the guard goes). The payload is copied out of
    /// shared memory before decoding (into a reused per-thread buffer).
    ///
    /// ```
    /// use mulproc::{Queue, QueueConfig, Request};
    /// # let name = format!("doc-guard-value-{}", std::process::id());
    /// let q = Queue::create(&name, QueueConfig::new(4, 64))?;
    /// q.try_send_value(Request::DO, None, &Some("x".to_string()))?;
    /// let guard = q.try_recv_ref()?;
    /// assert_eq!(guard.value::<Option<String>>()?, Some("x".to_string()));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn value<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::typed::DecodeError> {
        crate::typed::decode_shared(self.data())
    }
}
