//! `send_value` straight into a reserved slot (feature `serde`).

use serde::Serialize;

use super::*;
use crate::typed::{encoded_len, EncodeError, ValueSendError};

impl Queue {
    /// [`Channel::send_value_with`](crate::Channel::send_value_with) for a
    /// queue: if a slot is free at once, the value is encoded straight into
    /// it (no allocation, no copy). An encoding that turns out larger than
    /// [`max_payload`](Queue::max_payload) is then refused with
    /// [`ValueSendError::TooLarge`] (giving its exact length) and nothing
    /// is delivered; the reserved slot is given up (marked read, so
    /// receivers pass it, and counted done for `join`). Checking the size
    /// first would cost a second encoding on every send; use
    /// [`encoded_len`] yourself where values near the limit are common.
    ///
    /// On a full queue the value is encoded into a buffer and sent waiting
    /// as `wait` says; a value too large is then refused before any slot
    /// is taken.
    ///
    /// ```
    /// use mulproc::{Queue, QueueConfig, Request, ValueSendError};
    /// # let name = format!("doc-try-send-value-{}", std::process::id());
    /// let q = Queue::create(&name, QueueConfig::new(4, 16))?;
    /// q.try_send_value(Request::DO, Some(1234), &("job", 7u64))?;
    /// let big = q.try_send_value(Request::DO, None, &[0u8; 100][..]);
    /// assert_eq!(big, Err(ValueSendError::TooLarge { len: 101, max: 16 }));
    ///
    /// let (header, job): (_, (String, u64)) = q.recv_value()?;
    /// assert_eq!(header.recipient, Some(1234));
    /// assert_eq!(job, ("job".to_string(), 7));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub(crate) fn send_value_now<T: Serialize + ?Sized>(
        &self,
        request: Request,
        recipient: Option<u32>,
        value: &T,
        wait: Wait,
    ) -> Result<(), ValueSendError> {
        match self.try_reserve() {
            Ok(mut slot) => match postcard::to_slice(value, slot.payload_mut()) {
                Ok(bytes) => {
                    let len = bytes.len();
                    slot.commit(request, recipient, len)
                        .map_err(ValueSendError::from_send)
                }
                Err(postcard::Error::SerializeBufferFull) => {
                    drop(slot); // given up: marked read, counted done
                    Err(ValueSendError::TooLarge {
                        len: encoded_len(value)?,
                        max: self.max_payload(),
                    })
                }
                Err(e) => Err(EncodeError::from_postcard(e).into()),
            },
            Err(TrySendError::Full(())) if wait != Wait::Never => {
                let mut msg = Message::with_value(request, value)?;
                msg.recipient = recipient;
                self.send_with(msg, wait).map_err(ValueSendError::from_send)
            }
            Err(e) => Err(ValueSendError::from_send(e)),
        }
    }
}
