//! Liveness: the handle table. Registering and unregistering a handle,
//! and the probes that say whether the holder of a claim lives (its
//! liveness lock, which the kernel drops when its process dies), from its
//! owner word or, for a claim not signed yet, from the announcements.

use super::*;
use crate::error::SetupError;
use crate::layout::{HANDLE_FREE, MAX_HANDLES};
use crate::sys::ofd;

/// Registers a new handle on `seg`: takes a free entry (settling a dead
/// predecessor's first) and its liveness lock.
///
/// # Reusing a dead holder's entry
///
/// The liveness lock of a dead holder's entry is free the moment it dies,
/// and a claim it had not signed yet (a sender killed in its copy, a
/// receiver killed between its claiming CAS and its owner word) is known
/// only by the entry's announcement (`sending_from..sending_to`,
/// `claiming`). Once a new holder took the lock, that announcement would
/// name a live handle: the dead claim would pass for the newcomer's (a
/// stall of the whole unblock timeout, counted as `fenced_live`, its slot
/// withheld while the newcomer lives). So, in this order:
///
/// 1. take the entry's liveness lock (from here on nobody else reuses it;
///    our own probe does not see our lock, so to `settle` the previous
///    holder is what it is: dead);
/// 2. under the control lock, `settle` the entry while it still shows the
///    dead holder's state and announcements: its unsigned claims are
///    fenced (sender) or offered again (receiver) as a dead holder's, then
///    its signed ones, its tasks, and the entry is marked free;
/// 3. reset the announcements with the other fields, and only then
///    publish `HANDLE_IN_USE` (Release): a recoverer that reads the new
///    state (Acquire) reads the cleared announcements with it.
///
/// A claim that a live handle's announcement also covers at step 2 (one
/// that lost the race for it and has not tried again yet) is not fenced
/// then: after step 3 it names nobody, and the detector treats it as any
/// claim whose holder cannot be found (it waits out the unblock timeout).
///
/// A recoverer racing with steps 1-2 may read the dead state and our lock
/// and take a dead claim for a live one for that moment: it then waits
/// (never recovers on a guess), and step 2 settles the claim (each repair
/// is a CAS: one of us makes it). An entry whose control lock cannot be
/// had (another recoverer kept it the whole `LOCK_WAIT`) is left to the
/// others' detectors, which see it dead, and the next entry is tried;
/// only if no entry is left is one settled without the lock, as best we
/// can (each step a CAS or a swap, so nothing is counted twice).
pub(crate) fn register(seg: &QueueSegment) -> Result<HandleId, SetupError> {
    let mut skipped = false;
    for unlocked_ok in [false, true] {
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
                // A predecessor died without settling: do it now.
                let rec = Recovery::new(seg, None, DEFAULT_UNBLOCK_TIMEOUT);
                let guard = rec.lock();
                if guard.is_none() && !unlocked_ok {
                    skipped = true;
                    let _ = ofd::unlock(seg.fd(), byte);
                    continue;
                }
                rec.settle(i);
            }
            let generation = entry.generation.load(Ordering::Relaxed).wrapping_add(1);
            entry.generation.store(generation, Ordering::Relaxed);
            entry.pid.store(std::process::id(), Ordering::Relaxed);
            entry.outstanding.store(0, Ordering::Relaxed);
            entry.claiming.store(u64::MAX, Ordering::Relaxed);
            entry.sending_to.store(0, Ordering::Relaxed);
            entry.sending_from.store(0, Ordering::Relaxed);
            // Release: the fields above are visible with the state.
            entry.state.store(HANDLE_IN_USE, Ordering::Release);
            return Ok(HandleId {
                index: i as u16,
                generation,
            });
        }
        if !skipped {
            break;
        }
    }
    Err(SetupError::TooManyHandles {
        name: seg.name().to_owned(),
        max: MAX_HANDLES,
    })
}

/// Unregisters `id` (a handle being dropped): what it received and did not
/// mark done is counted done (abandoned), so `join` does not wait for it.
pub(crate) fn unregister(seg: &QueueSegment, id: HandleId) {
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

impl Recovery<'_> {
    /// Is the handle in entry `index`, generation `generation` (low bits),
    /// alive?
    pub(super) fn entry_alive(&self, index: usize, generation: u32) -> bool {
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
    pub(super) fn lock_held(&self, index: usize) -> bool {
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
    pub(super) fn holder(&self, t: u64, roles: &[Role]) -> Holder {
        let word = self.ring.slot(t).owner.load(Ordering::Relaxed);
        match named(word, roles, t) {
            Some((i, g)) if self.entry_alive(i, g) => Holder::Alive,
            Some(_) => Holder::Dead,
            None => Holder::Unknown,
        }
    }

    /// For a held slot whose owner word names nobody: the handles that
    /// announced they were claiming `t`. Alive if any of them lives.
    pub(super) fn claimants(&self, t: u64) -> Holder {
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

    /// The holder of the unpublished claim on `t`: the handle its owner
    /// word names, or else the handles whose announcement covers it.
    pub(super) fn sender(&self, t: u64) -> Holder {
        match self.holder(t, &[Role::Send]) {
            Holder::Unknown => self.announced(t as u32),
            h => h,
        }
    }

    /// The holder of the message held at `t` (by a receiver, or a mover's
    /// source): the handle its owner word names, or else the handles that
    /// announced they were claiming it.
    pub(super) fn receiver(&self, t: u64) -> Holder {
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
    pub(super) fn announced(&self, t_low: u32) -> Holder {
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

    /// The entry whose handle received (role Recv) the message held at `t`.
    pub(super) fn receiver_entry(&self, t: u64) -> Option<usize> {
        let word = self.ring.slot(t).owner.load(Ordering::Relaxed);
        named(word, &[Role::Recv], t).map(|(i, _)| i)
    }
}
