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
//! "Withheld" (`QUARANTINED`, see `ring.rs`): a live holder that was
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

use std::sync::atomic::{AtomicU64 as StdAtomicU64, Ordering as StdOrdering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::SetupError;
use crate::layout::{HandleEntry, HANDLE_FREE, HANDLE_IN_USE, MAX_HANDLES};
use crate::ring::{Ring, HELD, QUARANTINED, TAKEN};
use crate::segment::Segment;
use crate::sync::Ordering;
use crate::sys::ofd;
use crate::wait::Wake;

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
/// Owner word of a withheld slot whose claimant had not signed when it
/// was fenced: names no handle (entry 0), carries the fenced ticket's low
/// 32 bits.
pub(crate) const FENCED_MARK: u64 = 1 << 47;
/// Owner-word generation bits.
const GEN_BITS: u32 = 14;
pub(crate) const GEN_MASK: u32 = (1 << GEN_BITS) - 1;

/// What a claimant is doing with a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// Producer: claimed, writing, not yet published.
    Send = 1,
    /// Receiver: holds a published message.
    Recv = 2,
    /// A sender moving a message over read slots (both slots).
    Move = 3,
}

/// A registered handle: its entry and the generation it owns it under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HandleId {
    pub index: u16,
    pub generation: u32,
}

/// The owner word of a claim: `(entry + 1) << 48 | role << 46 |
/// (generation mod 2^14) << 32 | ticket mod 2^32`. Zero names nobody.
#[inline]
pub(crate) fn owner_word(id: HandleId, role: Role, t: u64) -> u64 {
    (u64::from(id.index) + 1) << 48
        | (role as u64) << 46
        | u64::from(id.generation & GEN_MASK) << 32
        | (t & 0xFFFF_FFFF)
}

/// What an owner word says: entry, generation (low bits), role, ticket (low
/// 32 bits); `None` if it names no entry.
pub(crate) fn parse(word: u64) -> Option<(usize, u32, u64, u32)> {
    let entry = (word >> 48) as usize;
    if entry == 0 || entry > MAX_HANDLES {
        return None;
    }
    let generation = ((word >> 32) as u32) & GEN_MASK;
    Some((entry - 1, generation, (word >> 46) & 3, word as u32))
}

/// The handle an owner word names, if it names a claim of one of `roles`
/// on `t`.
fn named(word: u64, roles: &[Role], t: u64) -> Option<(usize, u32)> {
    let (entry, generation, role, t_low) = parse(word)?;
    (t_low == t as u32 && roles.iter().any(|r| *r as u64 == role)).then_some((entry, generation))
}

/// Whether a claim's holder lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Holder {
    Alive,
    Dead,
    /// The claim names nobody yet.
    Unknown,
}

/// What a recoverer is in the middle of (the repair record's `kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Repair {
    /// Fencing an unpublished claim.
    Fence = 1,
    /// Offering again a dead receiver's message.
    Redeliver = 2,
    /// Undoing a dead mover's target.
    UndoMove = 3,
    /// Passing a dead skip ticket.
    Skip = 4,
}

/// Process-local test hooks (feature `fault-injection`): die at a chosen
/// point, to test what others do about it.
#[cfg(feature = "fault-injection")]
pub(crate) mod fault {
    /// Dies (SIGKILL) if `MULPROC_FAULT` is `point`; stops itself
    /// (SIGSTOP, until someone sends SIGCONT) if it is `stop:<point>`.
    pub(crate) fn point(point: &str) {
        let Ok(v) = std::env::var("MULPROC_FAULT") else {
            return;
        };
        let signal = if v == point {
            libc::SIGKILL
        } else if v.strip_prefix("stop:") == Some(point) {
            libc::SIGSTOP
        } else {
            return;
        };
        // SAFETY: raising a signal on ourselves touches no memory.
        unsafe {
            libc::raise(signal);
        }
    }
}
#[cfg(not(feature = "fault-injection"))]
pub(crate) mod fault {
    #[inline(always)]
    pub(crate) fn point(_: &str) {}
}

/// Registers a new handle on `seg`: takes a free entry (settling a dead
/// predecessor's first) and its liveness lock.
pub(crate) fn register(seg: &Segment) -> Result<HandleId, SetupError> {
    for i in 0..MAX_HANDLES {
        let byte = ofd::HANDLES + i as i64;
        match ofd::try_lock(seg.fd(), byte, ofd::Kind::Exclusive) {
            Ok(true) => {}
            Ok(false) => continue,
            Err(e) => {
                return Err(SetupError::Os {
                    name: seg.name().to_owned(),
                    op: "fcntl(F_OFD_SETLK)",
                    source: e,
                })
            }
        }
        let entry = seg.handle_entry(i);
        if entry.state.load(Ordering::Acquire) != HANDLE_FREE {
            // A predecessor died without settling: do it now, under the
            // control lock if we can get it (settling is made of CASs and
            // swaps, so a racing settler cannot double-count even without).
            let rec = Recovery::new(seg, None, DEFAULT_UNBLOCK_TIMEOUT);
            let _guard = rec.lock();
            rec.settle(i);
        }
        let generation = entry.generation.load(Ordering::Relaxed).wrapping_add(1);
        entry.generation.store(generation, Ordering::Relaxed);
        entry.pid.store(std::process::id(), Ordering::Relaxed);
        entry.outstanding.store(0, Ordering::Relaxed);
        entry.claiming.store(u64::MAX, Ordering::Relaxed);
        // Release: the fields above are visible with the state.
        entry.state.store(HANDLE_IN_USE, Ordering::Release);
        return Ok(HandleId {
            index: i as u16,
            generation,
        });
    }
    Err(SetupError::TooManyHandles {
        name: seg.name().to_owned(),
        max: MAX_HANDLES,
    })
}

/// Unregisters `id` (a handle being dropped): what it received and did not
/// mark done is counted done (abandoned), so `join` does not wait for it.
pub(crate) fn unregister(seg: &Segment, id: HandleId) {
    let entry = seg.handle_entry(id.index as usize);
    if entry.generation.load(Ordering::Relaxed) != id.generation {
        return; // scribbled: not ours to touch any more
    }
    let n = entry.outstanding.swap(0, Ordering::AcqRel);
    if n > 0 {
        abandon_tasks(seg, n);
    }
    entry.state.store(HANDLE_FREE, Ordering::Release);
    let _ = ofd::unlock(seg.fd(), ofd::HANDLES + i64::from(id.index));
}

/// Notes that a withheld slot went back into circulation.
pub(crate) fn note_lifted(seg: &Segment) {
    let _ =
        seg.control()
            .stats
            .0
            .withheld
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1));
}

/// Repairs a stale queue segment before reuse (the caller holds the users
/// lock exclusively: every holder of every claim is dead).
pub(crate) fn repair_stale(seg: &Segment) {
    let rec = Recovery::new(seg, None, DEFAULT_UNBLOCK_TIMEOUT);
    if let Some(_guard) = rec.lock() {
        rec.sweep();
    }
}

/// Repairs what dead processes left on a queue that live ones may be
/// using (the operator's `mulproc gc`, through `inspect::repair`): takes
/// the control lock and runs the sweep a handover runs, which leaves every
/// claim of a live holder alone. False if the lock stayed held.
pub(crate) fn repair_in_use(seg: &Segment) -> bool {
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
fn ticket_done(seg: &Segment) {
    // Release: pairs with the Acquire load in the queue's `is_joined`, as
    // `mark_done`'s does.
    seg.done_count().fetch_add(1, Ordering::Release);
    seg.joined().notify(Wake::All);
}

/// Counts `n` tasks done without `task_done`, and wakes joiners.
fn abandon_tasks(seg: &Segment, n: u64) {
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
    seg: &'a Segment,
    ring: Ring<'a>,
    /// The handle doing the recovering (its own claims are alive).
    me: Option<HandleId>,
    unblock: Duration,
}

impl<'a> Recovery<'a> {
    pub(crate) fn new(seg: &'a Segment, me: Option<HandleId>, unblock: Duration) -> Self {
        Recovery {
            seg,
            ring: Ring::new(seg.head(), seg.tail(), seg.slots()),
            me,
            unblock,
        }
    }

    /// Takes the control lock; if its previous holder died in the middle
    /// of a repair, finishes that repair and sweeps the ring first.
    fn lock(&self) -> Option<crate::control::ControlGuard<'a>> {
        let guard = self.seg.lock_control(LOCK_WAIT).ok()?;
        if guard.previous_owner_died() {
            let stats = &self.seg.control().stats.0;
            stats.handovers.fetch_add(1, Ordering::Relaxed);
            self.finish_recorded_repair();
            self.sweep();
        }
        Some(guard)
    }

    /// Is the handle in entry `index`, generation `generation` (low bits),
    /// alive?
    fn entry_alive(&self, index: usize, generation: u32) -> bool {
        if let Some(me) = self.me {
            if me.index as usize == index && me.generation & GEN_MASK == generation {
                return true; // our own lock is invisible to our own probe
            }
        }
        let entry = self.seg.handle_entry(index);
        if entry.state.load(Ordering::Acquire) != HANDLE_IN_USE
            || entry.generation.load(Ordering::Relaxed) & GEN_MASK != generation
        {
            return false;
        }
        self.lock_held(index)
    }

    /// True if some live handle holds entry `index`'s liveness lock (an
    /// error of the probe counts as alive: never recover on a guess).
    fn lock_held(&self, index: usize) -> bool {
        if self.me.is_some_and(|me| me.index as usize == index) {
            return true;
        }
        ofd::held_by_other(
            self.seg.fd(),
            ofd::HANDLES + index as i64,
            ofd::Kind::Exclusive,
        )
        .unwrap_or(true)
    }

    /// The holder of a claim of one of `roles` on `t`.
    fn holder(&self, t: u64, roles: &[Role]) -> Holder {
        let word = self.ring.slot(t).owner.load(Ordering::Relaxed);
        match named(word, roles, t) {
            Some((i, g)) if self.entry_alive(i, g) => Holder::Alive,
            Some(_) => Holder::Dead,
            None => Holder::Unknown,
        }
    }

    /// For a held slot whose owner word names nobody: the handles that
    /// announced they were claiming `t`. Alive if any of them lives.
    fn claimants(&self, t: u64) -> Holder {
        let mut found = false;
        for i in 0..MAX_HANDLES {
            // Not us: had we won this claim, our owner word would name it
            // (we sign before anything else), so we only lost the race.
            if self.me.is_some_and(|me| me.index as usize == i) {
                continue;
            }
            let e = self.seg.handle_entry(i);
            if e.state.load(Ordering::Acquire) == HANDLE_IN_USE
                && e.claiming.load(Ordering::Relaxed) == t
            {
                if self.lock_held(i) {
                    return Holder::Alive;
                }
                found = true;
            }
        }
        if found {
            Holder::Dead
        } else {
            Holder::Unknown
        }
    }

    fn record(&self, kind: Repair, t: u64) {
        let r = &self.seg.control().repair.0;
        r.ticket.store(t, Ordering::Relaxed);
        r.kind.store(kind as u32, Ordering::Release);
    }

    fn clear_record(&self) {
        self.seg.control().repair.0.kind.store(0, Ordering::Release);
    }

    /// Completes the repair a dead recoverer recorded.
    fn finish_recorded_repair(&self) {
        let r = &self.seg.control().repair.0;
        let t = r.ticket.load(Ordering::Relaxed);
        let kind = r.kind.load(Ordering::Acquire);
        let stats = self.stats();
        // Each step is a CAS that fails if the dead recoverer already made
        // it; a counter is bumped when the step is ours (a recoverer that
        // died between its step and its count leaves that count out).
        if kind == Repair::Fence as u32 {
            // Fenced now, or by the dead recoverer: then the slot is still
            // withheld, whatever lap it is at, as only a sweep (the one
            // that follows) lifts that. Either way the claim was skipped.
            if self.ring.fence_claim(t).is_ok() || self.ring.seq(t) & QUARANTINED != 0 {
                stats.skipped_claims.fetch_add(1, Ordering::Relaxed);
                ticket_done(self.seg);
            }
        } else if kind == Repair::Redeliver as u32 {
            if self.ring.redeliver(t).is_ok() {
                stats.redelivered.fetch_add(1, Ordering::Relaxed);
            }
        } else if kind == Repair::UndoMove as u32 {
            if self.ring.undo_move_target(t).is_ok() {
                stats.undone_moves.fetch_add(1, Ordering::Relaxed);
            }
        } else if kind == Repair::Skip as u32 && self.ring.fence_skip(t).is_ok() {
            ticket_done(self.seg);
        }
        self.clear_record();
    }

    fn stats(&self) -> &'a crate::layout::RecoveryCounters {
        &self.seg.control().stats.0
    }

    /// Fences the unpublished claim on `t`. With `dead` (holder known
    /// dead), the slot is released at once; otherwise it stays withheld if
    /// the holder turns out to be alive.
    fn fence(&self, t: u64, dead: bool) {
        self.record(Repair::Fence, t);
        let before = self.ring.slot(t).owner.load(Ordering::Relaxed);
        if self.ring.fence_claim(t).is_err() {
            self.clear_record();
            return; // published or given up meanwhile
        }
        fault::point("in-repair");
        // Withheld unless its holder is known dead: a live one may still
        // write into the slot, and lifts the quarantine itself when its
        // publish fails.
        let keep = !dead && self.sender(t) != Holder::Dead;
        let stats = self.stats();
        stats.skipped_claims.fetch_add(1, Ordering::Relaxed);
        // The ticket carries no message; its holder, if alive, will not
        // count it (its publish or abandon fails).
        ticket_done(self.seg);
        if keep {
            // Not signed yet: leave the fenced ticket in the owner word for
            // the lift pass (the holder's signature, if it comes, replaces
            // it, and names who will lift).
            let slot = self.ring.slot(t);
            if named(before, &[Role::Send], t).is_none() {
                let _ = slot.owner.compare_exchange(
                    before,
                    FENCED_MARK | (t & 0xFFFF_FFFF),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                );
            }
            stats.fenced_live.fetch_add(1, Ordering::Relaxed);
            stats.withheld.fetch_add(1, Ordering::Relaxed);
        } else {
            self.ring.lift_quarantine(t, || true);
        }
        self.clear_record();
    }

    /// The holder of the unpublished claim on `t`: the handle its owner
    /// word names, or else the handles whose announcement covers it.
    fn sender(&self, t: u64) -> Holder {
        match self.holder(t, &[Role::Send]) {
            Holder::Unknown => self.announced(t as u32),
            h => h,
        }
    }

    /// The holder of the message held at `t` (by a receiver, or a mover's
    /// source): the handle its owner word names, or else the handles that
    /// announced they were claiming it.
    fn receiver(&self, t: u64) -> Holder {
        match self.holder(t, &[Role::Recv, Role::Move]) {
            Holder::Unknown => self.claimants(t),
            h => h,
        }
    }

    /// For a claim not signed yet: alive if some live handle announced a
    /// range of tickets covering one whose low 32 bits are `t_low` (a
    /// handle that lost the race for it counts too, until its next claim:
    /// never recover on a guess), dead if only dead handles did, unknown if
    /// none did.
    fn announced(&self, t_low: u32) -> Holder {
        let mut found = false;
        for i in 0..MAX_HANDLES {
            let e = self.seg.handle_entry(i);
            if e.state.load(Ordering::Acquire) != HANDLE_IN_USE {
                continue;
            }
            let (from, to) = (
                e.sending_from.load(Ordering::Relaxed),
                e.sending_to.load(Ordering::Relaxed),
            );
            let n = to.wrapping_sub(from);
            if to == 0 || n > self.ring_capacity() || t_low.wrapping_sub(from as u32) as u64 >= n {
                continue;
            }
            if self.lock_held(i) {
                return Holder::Alive;
            }
            found = true;
        }
        if found {
            Holder::Dead
        } else {
            Holder::Unknown
        }
    }

    /// Lifts the quarantine of every withheld slot whose holder is gone
    /// (caller holds the control lock).
    fn lift_orphaned_quarantines(&self) {
        for i in 0..self.ring_capacity() {
            let slot = &self.seg.slots()[i as usize];
            if slot.seq.load(Ordering::Acquire) & QUARANTINED == 0 {
                continue;
            }
            // The owner word of a withheld slot is its fenced holder's, or
            // the fenced ticket if it had not signed (nobody claims the
            // slot while it is withheld).
            let word = slot.owner.load(Ordering::Relaxed);
            let alive = if word >> 32 == FENCED_MARK >> 32 {
                self.announced(word as u32) == Holder::Alive
            } else {
                parse(word).is_some_and(|(e, g, role, _)| {
                    role == Role::Send as u64 && self.entry_alive(e, g)
                })
            };
            if !alive && self.ring.lift_quarantine(i, || true) {
                note_lifted(self.seg);
            }
        }
    }

    fn redeliver(&self, t: u64, holder_entry: Option<usize>) -> bool {
        self.record(Repair::Redeliver, t);
        let ok = self.ring.redeliver(t).is_ok();
        if ok {
            if let Some(i) = holder_entry {
                let _ = self.seg.handle_entry(i).outstanding.fetch_update(
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                    |n| n.checked_sub(1),
                );
            }
            self.stats().redelivered.fetch_add(1, Ordering::Relaxed);
        }
        self.clear_record();
        ok
    }

    fn undo_move(&self, to: u64) -> bool {
        self.record(Repair::UndoMove, to);
        let ok = self.ring.undo_move_target(to).is_ok();
        if ok {
            self.stats().undone_moves.fetch_add(1, Ordering::Relaxed);
        }
        self.clear_record();
        ok
    }

    fn pass_skip(&self, t: u64) -> bool {
        self.record(Repair::Skip, t);
        let ok = self.ring.fence_skip(t).is_ok();
        if ok {
            ticket_done(self.seg);
        }
        self.clear_record();
        ok
    }

    /// The entry whose handle received (role Recv) the message held at `t`.
    fn receiver_entry(&self, t: u64) -> Option<usize> {
        let word = self.ring.slot(t).owner.load(Ordering::Relaxed);
        named(word, &[Role::Recv], t).map(|(i, _)| i)
    }

    /// Frees the slot of ticket `t`, held behind `head` by a receiver that
    /// died (caller holds the control lock). One CAS: nothing to hand over.
    fn finish_release(&self, t: u64) -> bool {
        let ok = self.ring.finish_release(t).is_ok();
        if ok {
            self.stats()
                .finished_releases
                .fetch_add(1, Ordering::Relaxed);
            self.seg.not_full().notify(Wake::All);
        }
        ok
    }

    /// Settles dead entry `i` (caller holds the control lock): offers again
    /// the messages it holds, counts what it received and never marked done
    /// as abandoned, frees the entry.
    fn settle(&self, i: usize) {
        let entry: &HandleEntry = self.seg.handle_entry(i);
        if entry.state.load(Ordering::Acquire) != HANDLE_IN_USE || self.lock_held(i) {
            return;
        }
        let gen = entry.generation.load(Ordering::Relaxed) & GEN_MASK;
        // Killed between moving `head` past its slot and freeing it (see
        // `Ring::release`), it left the slot held behind `head`: that can
        // only be its last claim, which it announced.
        let last = entry.claiming.load(Ordering::Relaxed);
        if last < self.ring.head() && self.ring.seq(last) == (last + 1) | HELD {
            let word = self.ring.slot(last).owner.load(Ordering::Relaxed);
            if named(word, &[Role::Recv], last) == Some((i, gen)) {
                self.finish_release(last);
            }
        }
        let (head, end) = self.window(self.ring_capacity());
        for t in head..end {
            if self.ring.seq(t) != (t + 1) | HELD {
                continue;
            }
            let word = self.ring.slot(t).owner.load(Ordering::Relaxed);
            if named(word, &[Role::Recv, Role::Move], t) == Some((i, gen)) {
                let recv = named(word, &[Role::Recv], t).is_some();
                self.redeliver(t, recv.then_some(i));
            }
        }
        let n = entry.outstanding.swap(0, Ordering::AcqRel);
        if n > 0 {
            abandon_tasks(self.seg, n);
        }
        entry.state.store(HANDLE_FREE, Ordering::Release);
    }

    /// The tickets from `head` to `tail`, at most `limit` of them; empty
    /// if the positions are not ones an honest run produces (flag bits
    /// set, `tail` behind `head`): recovery never acts on those.
    fn window(&self, limit: u64) -> (u64, u64) {
        // Acquire: the announcements of the claims counted are visible.
        let (head, tail) = (self.ring.head(), self.ring.sent_acquire());
        if (head | tail) & (HELD | TAKEN | QUARANTINED) != 0 || tail < head {
            return (head, head);
        }
        (head, tail.min(head + limit))
    }

    fn ring_capacity(&self) -> u64 {
        self.seg.geometry().capacity as u64
    }

    /// Settles every entry whose handle died. Returns how many.
    pub(crate) fn settle_dead_handles(&self) -> usize {
        let dead: Vec<usize> = (0..MAX_HANDLES)
            .filter(|&i| {
                self.seg.handle_entry(i).state.load(Ordering::Acquire) == HANDLE_IN_USE
                    && !self.lock_held(i)
            })
            .collect();
        if dead.is_empty() {
            return 0;
        }
        let Some(_guard) = self.lock() else {
            return 0;
        };
        for &i in &dead {
            self.settle(i);
        }
        dead.len()
    }

    /// Repairs everything a dead holder (or a dead recoverer) can have
    /// left, over the whole ring (caller holds the control lock).
    pub(crate) fn sweep(&self) {
        let (head, end) = self.window(self.ring_capacity());
        for t in head..end {
            let v = self.ring.seq(t);
            if v == t {
                match self.sender(t) {
                    Holder::Alive => {}
                    h => self.fence(t, h == Holder::Dead),
                }
            } else if v == t | QUARANTINED {
                self.pass_skip(t);
            } else if v == (t + 1) | HELD {
                if self.receiver(t) != Holder::Alive {
                    self.redeliver(t, self.receiver_entry(t));
                }
            } else if v == (t + 1) | HELD | TAKEN && self.holder(t, &[Role::Move]) != Holder::Alive
            {
                self.undo_move(t);
            }
        }
        // Withheld slots, whatever lap they are at: lift the ones whose
        // holder is gone.
        self.lift_orphaned_quarantines();
        for i in 0..MAX_HANDLES {
            self.settle(i);
        }
    }

    /// Looks at the slots that can stall the queue and deals with those
    /// stuck long enough. Returns true if it changed anything.
    /// `lift_due`: time to look at withheld slots (a pass over the whole
    /// ring) if there are any.
    pub(crate) fn scan(&self, seen: &mut Vec<Seen>, lift_due: bool) -> bool {
        let now = Instant::now();
        let control = self.seg.control();
        // A repair record with nobody at work on it: its recoverer died.
        // Taking the lock hands the repair over (see `lock`). Withheld
        // slots: their holders may have died since (checked now and then).
        if control.repair.0.kind.load(Ordering::Relaxed) != 0
            || control.stats.0.withheld.load(Ordering::Relaxed) > 0 && lift_due
        {
            if let Some(_guard) = self.lock() {
                self.lift_orphaned_quarantines();
            }
        }
        let (head, end) = self.window(self.ring_capacity().min(SCAN_LIMIT));
        let mut found: Vec<(u64, u64)> = Vec::new();
        {
            for t in head..end {
                let v = self.ring.seq(t);
                if v == t + 1 || v & !QUARANTINED == (t + 1) | TAKEN {
                    continue; // published, or read: nothing stuck here
                }
                if v == (t + 1) | HELD {
                    if found.len() < 4 {
                        found.push((t, v));
                    }
                    continue;
                }
                if v == t || v == t | QUARANTINED || v == (t + 1) | HELD | TAKEN {
                    found.push((t, v)); // receivers stop here
                }
                break;
            }
        }
        // A full ring whose next slot is held behind `head`: a receiver
        // died between moving `head` and freeing its slot.
        let tail = self.ring.sent_acquire();
        if let Some(b) = tail.checked_sub(self.ring_capacity()) {
            if b < head && self.ring.seq(b) == (b + 1) | HELD {
                found.push((b, (b + 1) | HELD));
            }
        }
        // Keep the first sighting of what is still there.
        seen.retain(|s| found.contains(&(s.t, s.seq)));
        for &(t, v) in &found {
            if !seen.iter().any(|s| s.t == t && s.seq == v) {
                seen.push(Seen {
                    t,
                    seq: v,
                    since: now,
                });
            }
        }
        let mut changed = false;
        for s in seen.iter() {
            let age = now.saturating_duration_since(s.since);
            if age >= DEAD_GRACE {
                changed |= self.resolve(s.t, s.seq, age);
            }
        }
        if changed {
            seen.clear();
        }
        changed
    }

    /// Deals with slot `t`, stuck in state `v` for `age`.
    fn resolve(&self, t: u64, v: u64, age: Duration) -> bool {
        let timed_out = age >= self.unblock;
        if v == t {
            let holder = self.sender(t);
            if holder != Holder::Dead && !timed_out {
                return false;
            }
            let Some(_guard) = self.lock() else {
                return false;
            };
            if self.ring.seq(t) != t {
                return true; // resolved meanwhile
            }
            self.fence(t, holder == Holder::Dead);
            return true;
        }
        if v == t | QUARANTINED {
            let Some(_guard) = self.lock() else {
                return false;
            };
            return self.pass_skip(t);
        }
        // HELD: a receiver's (or a mover's source); MOVING: a mover's target.
        let holder = if v & TAKEN == 0 {
            self.receiver(t)
        } else {
            self.holder(t, &[Role::Move])
        };
        if holder == Holder::Alive || holder == Holder::Unknown && !timed_out {
            return false;
        }
        let Some(_guard) = self.lock() else {
            return false;
        };
        if self.ring.seq(t) != v {
            return true;
        }
        if v & TAKEN != 0 {
            self.undo_move(t)
        } else {
            let entry = self.receiver_entry(t);
            // Behind `head`, the message was read: free the slot.
            let ok = if t < self.ring.head() {
                self.finish_release(t)
            } else {
                self.redeliver(t, entry)
            };
            if let Some(i) = entry {
                self.settle(i);
            }
            ok
        }
    }
}

/// A slot seen stuck, and since when.
#[derive(Debug)]
pub(crate) struct Seen {
    t: u64,
    seq: u64,
    since: Instant,
}

/// A handle's stall detector: rate-limited scans from the paths that find
/// the queue empty or full.
#[derive(Debug, Default)]
pub(crate) struct Watchdog {
    /// Calls from polling loops, to look at the clock on every 16th.
    calls: std::sync::atomic::AtomicU32,
    /// Coarse milliseconds before which no scan starts.
    next_ms: StdAtomicU64,
    /// Coarse milliseconds before which no scan looks at withheld slots.
    lift_ms: StdAtomicU64,
    seen: Mutex<Vec<Seen>>,
}

impl Watchdog {
    /// Scans if the last scan was long enough ago. Returns true if
    /// recovery changed something (worth trying the operation again).
    #[inline]
    pub(crate) fn poll(
        &self,
        waiting: bool,
        scan: impl FnOnce(&mut Vec<Seen>, bool) -> bool,
    ) -> bool {
        if !waiting {
            // A caller's polling loop: a plain count (a lost update between
            // threads only shifts the sample) before the clock.
            let n = self.calls.load(StdOrdering::Relaxed).wrapping_add(1);
            self.calls.store(n, StdOrdering::Relaxed);
            if n % 16 != 0 {
                return false;
            }
        }
        let now_ms = coarse_ms();
        if now_ms < self.next_ms.load(StdOrdering::Relaxed) {
            return false;
        }
        self.poll_slow(now_ms, scan)
    }

    #[cold]
    fn poll_slow(&self, now_ms: u64, scan: impl FnOnce(&mut Vec<Seen>, bool) -> bool) -> bool {
        self.next_ms
            .store(now_ms + CHECK_EVERY_MS, StdOrdering::Relaxed);
        let Ok(mut seen) = self.seen.try_lock() else {
            return false;
        };
        let lift_due = now_ms >= self.lift_ms.load(StdOrdering::Relaxed);
        if lift_due {
            self.lift_ms
                .store(now_ms + LIFT_EVERY_MS, StdOrdering::Relaxed);
        }
        scan(&mut seen, lift_due)
    }
}

/// CLOCK_MONOTONIC_COARSE in milliseconds: a few nanoseconds to read, a
/// few milliseconds of resolution, which is all a stall detector needs.
pub(crate) fn coarse_ms() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill in.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    (ts.tv_sec as u64) * 1000 + (ts.tv_nsec as u64) / 1_000_000
}
