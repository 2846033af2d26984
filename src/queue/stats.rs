//! What crash recovery did: the counters in the segment, summed over every
//! process.

use super::*;

/// What crash recovery did on a queue since it was created, summed over
/// every process; see [`Queue::recovery_stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryStats {
    /// Claims of producers that died (or stalled past the unblock timeout)
    /// before publishing: their slots were skipped, nothing delivered.
    pub skipped_claims: u64,
    /// Of those, claims whose producer was still alive (stopped or too
    /// slow): its publish failed with `Fenced`.
    pub fenced_live: u64,
    /// Messages held in place by receivers that died, offered again.
    pub redelivered: u64,
    /// Tasks received by handles that died or were dropped before
    /// `task_done`, counted done so that `join` returns.
    pub abandoned_tasks: u64,
    /// Moves (of a sender compacting a full ring) undone after it died.
    pub undone_moves: u64,
    /// Repairs finished by another process after the recoverer died in
    /// the middle of one.
    pub handovers: u64,
    /// Slots freed on behalf of receivers that died in the middle of
    /// freeing them (the message had been read: nothing is offered again).
    pub finished_releases: u64,
}

impl Queue {
    /// What crash recovery has done on this queue, over all processes.
    pub fn recovery_stats(&self) -> RecoveryStats {
        let c = &self.seg.control().stats.0;
        let get = |a: &crate::sync::AtomicU64| a.load(Ordering::Relaxed);
        RecoveryStats {
            skipped_claims: get(&c.skipped_claims),
            fenced_live: get(&c.fenced_live),
            redelivered: get(&c.redelivered),
            abandoned_tasks: get(&c.abandoned_tasks),
            undone_moves: get(&c.undone_moves),
            finished_releases: get(&c.finished_releases),
            handovers: get(&c.handovers),
        }
    }
}
