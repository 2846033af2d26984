//! Waiting across processes: the event counts that blocking receives,
//! sends and joins sleep on (`event`), and the backoff a blocking send
//! runs before it sleeps, shared by queues and pipes (`backoff`).

#[cfg(not(loom))]
mod backoff;
mod event;

#[cfg(not(loom))]
pub(crate) use backoff::claim_waiting;
#[cfg(not(loom))]
pub(crate) use event::barriers;
#[cfg(not(loom))]
pub(crate) use event::WAITERS_OFFSET;
pub use event::{EventCount, Wake};

/// The outcome of a claim, for the shared error mapping (here rather than
/// with the backoff so that the pipe's `spsc`, which returns it, also
/// builds under loom).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimed {
    /// Ticket claimed.
    Slot(u64),
    /// No room now.
    Unavailable,
    /// Nobody can receive any more (a pipe's peer is gone).
    Gone,
    /// The shared positions say no honest run left them so.
    Corrupt,
}
