//! Waiting across processes: the event counts that blocking receives,
//! sends and joins sleep on (`event`), and the backoff a blocking send
//! runs before it sleeps, shared by queues and pipes (`backoff`).

#[cfg(not(loom))]
mod backoff;
mod event;

#[cfg(not(loom))]
pub(crate) use backoff::{claim_waiting, Claimed};
#[cfg(not(loom))]
pub(crate) use event::barriers;
#[cfg(not(loom))]
pub(crate) use event::WAITERS_OFFSET;
pub use event::{EventCount, Wake};
