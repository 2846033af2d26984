//! Peer benchmarks for mulproc.
//!
//! Every peer system implements the two small traits in [`transport`] (a
//! sending and a receiving end of a one-way channel); the scenarios
//! (ping-pong, stream, contended stream) are written once, generically, in
//! [`scenario`] (the process pool, procspawn's own, is in
//! [`peers::procspawn`]), and the process plumbing (re-exec of the current executable
//! as a child, the stdin/stdout control channel, clean-up) lives in
//! [`common`]. [`peers`] maps a [`Config`] to the right system.
//!
//! The same library backs the `peer` command-line binary and the criterion
//! benchmarks; both call [`child::run_if_child`] first thing in `main`, so
//! that a re-executed copy of either binary becomes the child process.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

pub mod child;
pub mod common;
pub mod config;
pub mod peers;
pub mod scenario;
pub mod shm;
pub mod transport;

pub use config::{Config, Scenario, System};

/// The error type of the library parts: any error, boxed, with its message.
pub type Error = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Result with the crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds an [`Error`] from a message.
pub fn err(msg: impl Into<String>) -> Error {
    msg.into().into()
}
