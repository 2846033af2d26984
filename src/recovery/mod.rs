//! Crash recovery: who holds which claim, how a stuck claim is found, and
//! what is done about it (after Aeron's publication unblock).
//!
//! # Holders
//!
//! Every queue handle registers in the segment's handle table (entry `i`)
//! and holds, for its whole life, an exclusive open-file-description lock
//! on byte `ofd::HANDLES + i` of the segment's file. The kernel drops that
//! lock when the process dies, however it dies, so "is the holder alive?"
//! is a lock probe, immune to pid reuse. An entry's generation, bumped by
//! each new owner, is part of every owner word, so a claim left by a dead
//! predecessor is never taken for the new owner's.
//!
//! Each claimant writes the slot's owner word: entry, generation, role
//! (sender, receiver, mover) and ticket; receivers, movers and reserving
//! senders right after the claim, copying senders after the payload, just
//! before the publish (the announcement covers them meanwhile: a copying
//! sender makes no other claim before it publishes). Before the claim, on
//! its own line of the handle table, it *announces* it: a
//! sender the tickets it is about to claim (`sending_from..sending_to`,
//! released by its CAS of `tail`), a receiver the ticket (`claiming`,
//! released by its claiming CAS). A claim whose owner word does not name it
//! yet is attributed to the live handles whose announcement covers it (a
//! handle that lost the race for it counts until its next attempt: when in
//! doubt, a holder is alive). That costs a sender two stores to a line
//! only it writes, and no load.
//!
//! # Stuck claims and what recovery does
//!
//! | stuck slot                    | holder dead                  | holder alive              |
//! |-------------------------------|------------------------------|---------------------------|
//! | claimed, not published        | skipped (fenced, then freed) | after the unblock timeout: fenced and withheld until the holder gives up or dies |
//! | held by a receiver            | offered again (at least once)| left alone: a live receiver may hold a message as long as it likes |
//! | held behind `head` (read, being freed) | freed              | left alone (it is freeing it) |
//! | refilled by a move            | move undone                  | left alone                |
//! | skip ticket of a withheld slot| passed                       | passed                    |
//!
//! "Withheld" (`QUARANTINED`, see `ring`): a live holder that was
//! fenced may still be writing into its slot, so the slot leaves
//! circulation (its tickets are passed by) until that holder's publish or
//! abandon fails and it lifts the quarantine itself, or it dies and a
//! recoverer does. A fenced claim that was not signed yet gets the fenced
//! ticket in its owner word (`FENCED_MARK`), so the lift pass can still
//! ask who announced it; the holder's signature, if it comes, replaces
//! the mark.
//!
//! Recovery actions run under the segment's robust control lock, one at a
//! time, each recorded in the repair record before its first step. A
//! recoverer that dies mid-repair leaves the lock "owner died": the next
//! locker finishes the recorded repair and sweeps the whole ring, which
//! restores every invariant (each step is a compare-and-swap that can be
//! re-tried, each state it can leave is one the sweep repairs).
//!
//! A handle that dies (or is dropped) with messages received and not
//! marked done has them counted done, as abandoned, so `join` returns; a
//! handle that dies holding a message in place has it offered again first.

mod detector;
mod journal;
pub(crate) use journal::Repair;
mod liveness;
mod owner;
mod repair;
mod sweep;

use std::time::Duration;

use crate::layout::HANDLE_IN_USE;
use crate::ring::{Ring, HELD, QUARANTINED, TAKEN};
use crate::segment::QueueSegment;
use crate::sync::Ordering;
use crate::wait::Wake;

pub(crate) use detector::Watchdog;
pub(crate) use liveness::{register, unregister};
use owner::named;
pub(crate) use owner::{owner_word, HandleId, Role};
pub(crate) use owner::{parse, FENCED_MARK, GEN_MASK};

/// Default unblock timeout: how long a claim of a live (or unknown) holder
/// may stay unpublished before it is fenced.
pub(crate) const DEFAULT_UNBLOCK_TIMEOUT: Duration = Duration::from_millis(500);
/// How long a claim must look stuck before its holder's liveness is
/// checked (a live sender normally publishes within microseconds).
const DEAD_GRACE: Duration = Duration::from_millis(10);
/// Least time between two scans by one handle.
const CHECK_EVERY_MS: u64 = 5;
/// Least time between two passes over withheld slots by one handle (a pass
/// reads every slot's word; it runs only while some slot is withheld).
const LIFT_EVERY_MS: u64 = 20;
/// Longest wait for the control lock; a recoverer that cannot get it tries
/// again at its next scan.
const LOCK_WAIT: Duration = Duration::from_millis(100);
/// Most slots one scan looks at.
const SCAN_LIMIT: u64 = 4096;

/// Whether a claim's holder lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    Alive,
    Dead,
    /// The claim names nobody yet.
    Unknown,
}

/// Notes that a withheld slot went back into circulation.
pub(crate) fn note_lifted(seg: &QueueSegment) {
    let _ =
        seg.control()
            .stats
            .0
            .withheld
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

/// Repairs a stale queue segment before reuse (the caller holds the users
/// lock exclusively: every holder of every claim is dead).
pub(crate) fn repair_stale(seg: &QueueSegment) {
    repair_in_use(seg);
}

/// Repairs what dead processes left on a queue that live ones may be
/// using (the operator's `mulproc gc`, through `inspect::repair`; and a
/// stale one): takes the control lock and runs the sweep a handover runs,
/// which leaves every claim of a live holder alone. False if the lock
/// stayed held.
pub(crate) fn repair_in_use(seg: &QueueSegment) -> bool {
    let rec = Recovery::new(seg, None, DEFAULT_UNBLOCK_TIMEOUT);
    match rec.lock() {
        Some(_guard) => {
            rec.sweep();
            true
        }
        None => false,
    }
}

/// Counts a ticket that carries no message (a fenced claim, a passed skip
/// ticket) done for `join`, and wakes joiners.
pub(super) fn ticket_done(seg: &QueueSegment) {
    // Release: pairs with the Acquire load in the queue's `is_joined`, as
    // `mark_done`'s does.
    seg.done_count().fetch_add(1, Ordering::Release);
    seg.joined().notify(Wake::All);
}

/// Counts `n` tasks done without `task_done`, and wakes joiners.
pub(super) fn abandon_tasks(seg: &QueueSegment, n: u64) {
    // Release on done_count, as in `ticket_done`.
    seg.control()
        .stats
        .0
        .abandoned_tasks
        .fetch_add(n, Ordering::Relaxed);
    seg.done_count().fetch_add(n, Ordering::Release);
    seg.joined().notify(Wake::All);
}

/// One handle's view for recovery.
pub(crate) struct Recovery<'a> {
    seg: &'a QueueSegment,
    ring: Ring<'a>,
    /// The handle doing the recovering (its own claims are alive).
    me: Option<HandleId>,
    unblock: Duration,
}

impl<'a> Recovery<'a> {
    pub(crate) fn new(seg: &'a QueueSegment, me: Option<HandleId>, unblock: Duration) -> Self {
        Recovery {
            seg,
            ring: Ring::new(seg.head(), seg.tail(), seg.slots()),
            me,
            unblock,
        }
    }

    /// Takes the control lock; if its previous holder died in the middle
    /// of a repair, finishes that repair and sweeps the ring first.
    pub(super) fn lock(&self) -> Option<crate::control::ControlGuard<'a>> {
        let guard = self.seg.lock_control(LOCK_WAIT).ok()?;
        if guard.previous_owner_died() {
            let stats = &self.seg.control().stats.0;
            stats.handovers.fetch_add(1, Ordering::Relaxed);
            self.finish_recorded_repair();
            self.sweep();
        }
        Some(guard)
    }

    pub(super) fn stats(&self) -> &'a crate::layout::RecoveryCounters {
        &self.seg.control().stats.0
    }

    /// The tickets from `head` to `tail`, at most `limit` of them; empty
    /// if the positions are not ones an honest run produces (flag bits
    /// set, `tail` behind `head`): recovery never acts on those.
    pub(super) fn window(&self, limit: u64) -> (u64, u64) {
        // Acquire: the announcements of the claims counted are visible.
        let (head, tail) = (self.ring.head(), self.ring.sent_acquire());
        if (head | tail) & (HELD | TAKEN | QUARANTINED) != 0 || tail < head {
            return (head, head);
        }
        (head, tail.min(head + limit))
    }

    pub(super) fn ring_capacity(&self) -> u64 {
        self.seg.geometry().capacity as u64
    }
}
