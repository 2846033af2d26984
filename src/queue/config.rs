//! How a queue is made.

use super::*;

/// How a queue is made: capacity, largest payload, who may open it.
///
/// ```
/// use mulproc::QueueConfig;
/// let cfg = QueueConfig::new(1024, 256);
/// assert_eq!(cfg.capacity, 1024);
/// assert_eq!(cfg.max_payload, 256);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueueConfig {
    /// Number of slots: a power of two, at least 2.
    pub capacity: u32,
    /// Largest payload in bytes.
    pub max_payload: u32,
    /// Who besides the creating user may open the queue.
    pub sharing: Sharing,
    /// What `create` does if the name exists but its segment is stale.
    pub stale: Stale,
}

impl QueueConfig {
    /// `capacity` slots of up to `max_payload` bytes, owner-only access.
    pub fn new(capacity: u32, max_payload: u32) -> QueueConfig {
        QueueConfig {
            capacity,
            max_payload,
            sharing: Sharing::Owner,
            stale: Stale::Fail,
        }
    }

    /// What [`Queue::create`] does if the name exists but every process
    /// that used it has exited: fail (the default), recreate it, or reuse
    /// it with the messages it holds. See [`Stale`].
    pub fn on_stale(mut self, stale: Stale) -> QueueConfig {
        self.stale = stale;
        self
    }

    /// Lets the owner's group open the queue too (mode 0660).
    pub fn share_with_group(mut self) -> QueueConfig {
        self.sharing = Sharing::Group;
        self
    }

    /// Size in bytes of the segment this configuration makes:
    /// `17,088 + capacity × (64 + max_payload rounded up to 64)`: a
    /// 512-byte header, a control block for crash recovery (16,576 bytes:
    /// one 64-byte line per possible handle, [`MAX_HANDLES`](crate::MAX_HANDLES)),
    /// then per slot a 64-byte header and the payload.
    ///
    /// ```
    /// use mulproc::QueueConfig;
    /// assert_eq!(QueueConfig::new(1024, 64).segment_size().unwrap(), 17_088 + 1024 * 128);
    /// ```
    pub fn segment_size(&self) -> Result<u64, ConfigError> {
        Ok(self.geometry()?.total_size)
    }

    pub(crate) fn geometry(&self) -> Result<Geometry, ConfigError> {
        Geometry::checked(ChannelKind::Queue, self.capacity, self.max_payload)
    }
}
