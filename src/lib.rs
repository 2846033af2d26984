//! # mulproc
//!
//! Message passing between processes on one machine through a named
//! shared-memory segment: a fixed-slot, lock-free MPMC ring with blocking
//! receive, made for high-throughput worker pools. The interface follows the
//! Python library pymulproc: messages of request, sender pid, optional
//! recipient pid and data; a `send` that retries a bounded number of times;
//! non-blocking and blocking receive.
//!
//! ```
//! use mulproc::{Message, Queue, QueueConfig, Request};
//! # let name = format!("doc-crate-{}", std::process::id());
//! // In the parent:
//! let jobs = Queue::create(&name, QueueConfig::new(1024, 256))?;
//! jobs.send(Message::new(Request::DO, b"work item".as_slice()))?;
//!
//! // In a worker (any process that knows the name):
//! let jobs = Queue::open(&name)?;
//! let task = jobs.recv()?;
//! assert_eq!(task.request, Request::DO);
//! assert_eq!(task.data, b"work item");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Layout of the crate
//!
//! From the system upwards, each module using only those above it (no
//! import cycles):
//!
//! - `sync` (the loom shim), `fault` (crash-test hooks), `sys` (every
//!   system call, one file per family), `kind`, `error`, `message`
//!   (messages and the slot-header encoding queue and pipe share), `copy`;
//! - `wait` (event counts on a futex word; the send backoff), `control`
//!   (the robust lock of recovery), `layout` (the segment format, its
//!   geometry and checks), `segment` (create, open, verify; a typed view
//!   per kind);
//! - `ring` (the MPMC algorithm, its repair mechanisms and compaction),
//!   `recovery` (owner words, liveness, journal, repairs, sweep, detector);
//! - `channel` (the interface), `guard`, `queue` (the Queue API by
//!   concern), `pipe`, `typed` (serde values), `process`.
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]
#![deny(unsafe_op_in_unsafe_fn)]
// The loom build compiles only the ring and the wait protocol for the model
// checks; the shared-memory plumbing around them is unused there.
#![cfg_attr(loom, allow(dead_code, unused_imports))]

#[cfg(not(loom))]
pub mod channel;
mod error;
mod fault;
mod kind;
mod layout;
mod message;
mod ring;
mod sync;
mod sys;
mod wait;

#[cfg(not(loom))]
mod control;
#[cfg(not(loom))]
mod copy;
#[cfg(not(loom))]
mod guard;
#[cfg(not(loom))]
pub mod inspect;
#[cfg(not(loom))]
mod pipe;
#[cfg(not(loom))]
pub mod pool;
#[cfg(not(loom))]
pub mod process;
#[cfg(not(loom))]
mod queue;
#[cfg(not(loom))]
mod recovery;
#[cfg(not(loom))]
mod segment;
mod spsc;
#[cfg(all(feature = "serde", not(loom)))]
mod typed;

#[cfg(not(loom))]
pub use channel::{Channel, Filter, Joinable, Received, SendRetry, Wait};
pub use error::{
    BackendError, ConfigError, CorruptError, CorruptKind, JoinTimeoutError, NameProblem,
    PermissionProblem, RecvError, RecvTimeoutError, SendError, SendTimeoutError, SetupError,
    TaskDoneError, TryRecvError, TrySendError,
};
#[cfg(not(loom))]
pub use guard::RecvGuard;
pub use layout::{
    ChannelKind, MAX_CAPACITY, MAX_HANDLES, MAX_PAYLOAD_LIMIT, MAX_SEGMENT_SIZE, MIN_CAPACITY,
};
pub use message::{Header, Message, Request};
#[cfg(not(loom))]
pub use pipe::{Pipe, PipeConfig, PipeEnd};
#[cfg(not(loom))]
pub use queue::{Queue, QueueConfig, RecoveryStats, SendSlot};
#[cfg(not(loom))]
pub use segment::{unique_name, Sharing, Stale, MAX_NAME_LEN};
#[cfg(not(loom))]
pub use spsc::HOLD_WINDOW;
#[cfg(all(feature = "serde", not(loom)))]
pub use typed::{encoded_len, DecodeError, EncodeError, RecvValueError, ValueSendError};

/// Offsets and values of the segment format, for the crate's integration
/// tests that forge and damage segments. Not part of the API.
#[cfg(not(loom))]
#[doc(hidden)]
pub mod __layout {
    pub use crate::layout::offsets::*;
    /// A queue slot's sequence-word flags (see the ring's state table).
    pub use crate::ring::{HELD, QUARANTINED, TAKEN};
}

/// The ring, the pipe's single-producer single-consumer protocol and the
/// wait protocol over heap memory, for the loom model checks in
/// `loom-tests/`. Not part of the API.
#[cfg(loom)]
#[doc(hidden)]
pub mod __loom {
    pub use crate::layout::{PipeSlotHeader, SlotHeader};
    pub use crate::ring::{ClaimError, ClaimEvent, Fenced, Ring};
    pub use crate::spsc::{
        publish_every, Direction, Receiver, Sender, Taken, HOLD_WINDOW as PIPE_HOLD_WINDOW,
    };
    pub use crate::wait::{Claimed, EventCount, Wake};
}
