//! How a pipe is made.

use crate::error::ConfigError;
use crate::layout::{ChannelKind, Geometry};
use crate::segment::{Sharing, Stale};

/// How a pipe is made: capacity per direction, largest payload, who may
/// open it (the same fields and builder methods as
/// [`QueueConfig`](crate::QueueConfig)).
///
/// ```
/// use mulproc::PipeConfig;
/// let cfg = PipeConfig::new(16, 32);
/// assert_eq!((cfg.capacity, cfg.max_payload), (16, 32));
/// // A 512-byte header, then per direction 16 slots of one cache line
/// // (a 32-byte slot header and the payload).
/// assert_eq!(cfg.segment_size().unwrap(), 512 + 2 * 16 * 64);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PipeConfig {
    /// Number of slots per direction: a power of two, at least 2.
    pub capacity: u32,
    /// Largest payload in bytes.
    pub max_payload: u32,
    /// Who besides the creating user may open the pipe.
    pub sharing: Sharing,
    /// What `create` does if the name exists but its segment is stale.
    pub stale: Stale,
}

impl PipeConfig {
    /// `capacity` slots per direction of up to `max_payload` bytes,
    /// owner-only access.
    pub fn new(capacity: u32, max_payload: u32) -> PipeConfig {
        PipeConfig {
            capacity,
            max_payload,
            sharing: Sharing::Owner,
            stale: Stale::Fail,
        }
    }

    /// What [`Pipe::create`](crate::Pipe::create) does if the name exists but every process
    /// that used it has exited: fail (the default), recreate it, or reuse
    /// it with the messages it holds. See [`Stale`].
    pub fn on_stale(mut self, stale: Stale) -> PipeConfig {
        self.stale = stale;
        self
    }

    /// Lets the owner's group open the pipe too (mode 0660).
    pub fn share_with_group(mut self) -> PipeConfig {
        self.sharing = Sharing::Group;
        self
    }

    /// Size in bytes of the segment this configuration makes:
    /// `512 + 2 × capacity × round_up(32 + max_payload, 64)`: a 512-byte
    /// header, then for each direction per slot a 32-byte header right
    /// before its payload.
    pub fn segment_size(&self) -> Result<u64, ConfigError> {
        Ok(self.geometry()?.total_size)
    }

    pub(super) fn geometry(&self) -> Result<Geometry, ConfigError> {
        Geometry::checked(ChannelKind::Pipe, self.capacity, self.max_payload)
    }
}

/// A queue's configuration makes the pipe of the same fields (what
/// [`Pipe::create`](crate::Pipe::create) took before pipes had their own configuration).
impl From<crate::QueueConfig> for PipeConfig {
    fn from(q: crate::QueueConfig) -> PipeConfig {
        PipeConfig {
            capacity: q.capacity,
            max_payload: q.max_payload,
            sharing: q.sharing,
            stale: q.stale,
        }
    }
}
