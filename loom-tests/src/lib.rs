//! loom model checks of mulproc's ring, its pipe's single-producer
//! single-consumer protocol (`spsc`) and its wait/notify protocol.
//!
//! The tests live in `tests/` and compile only with `RUSTFLAGS="--cfg loom"`:
//!
//! ```text
//! RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=2 \
//!     cargo test --release -p mulproc-loom-tests
//! ```
//!
//! They run the crate's own `Ring`, `spsc::{Sender, Receiver}` and
//! `EventCount` (the same source that runs over shared memory) over heap
//! memory, with loom's atomics swapped in by the crate's private `sync`
//! shim.
