//! What the pool has done so far: [`Stats`] and the live [`Counters`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[cfg(doc)]
use super::{Pool, TaskError};

/// What the pool has done so far; see [`Pool::stats`] and [`Counters`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Tasks submitted.
    pub submitted: u64,
    /// Tasks answered with a value.
    pub succeeded: u64,
    /// Tasks answered with a [`TaskError`].
    pub failed: u64,
    /// Tasks that a dead worker held unanswered, and so were handed to
    /// another worker.
    pub retried: u64,
    /// Workers replaced after dying.
    pub restarted: u64,
    /// Results dropped because their task had been answered already.
    pub duplicates: u64,
}

impl Stats {
    /// Tasks answered, with a value or an error.
    pub fn done(&self) -> u64 {
        self.succeeded + self.failed
    }
}

#[derive(Debug, Default)]
pub(super) struct CounterCells {
    pub(super) submitted: AtomicU64,
    pub(super) succeeded: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) retried: AtomicU64,
    pub(super) restarted: AtomicU64,
    pub(super) duplicates: AtomicU64,
}

/// The pool's counters, readable from any thread at any time (a progress
/// bar's thread, say) while the pool works; cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Counters(pub(super) Arc<CounterCells>);

impl Counters {
    /// The counters now (each read on its own: a snapshot while the pool
    /// works may be a few tasks apart between fields).
    pub fn get(&self) -> Stats {
        let c = &self.0;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            submitted: get(&c.submitted),
            succeeded: get(&c.succeeded),
            failed: get(&c.failed),
            retried: get(&c.retried),
            restarted: get(&c.restarted),
            duplicates: get(&c.duplicates),
        }
    }

    pub(super) fn add(cell: &AtomicU64, n: u64) {
        // Only the pool's thread writes: a load and a store, no locked op.
        cell.store(cell.load(Ordering::Relaxed) + n, Ordering::Relaxed);
    }
}
