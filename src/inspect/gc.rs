//! The two calls of the inspection API that change segments: [`repair`]
//! (the library's own crash recovery, on demand) and [`gc`] (repair, or
//! remove what is stale).

use super::{snapshot, Claim, HandleInfo, InspectError, Problem, Snapshot};
use crate::layout::ChannelKind;
use crate::queue::RecoveryStats;
use crate::segment::{self, QueueSegment};
use crate::sys::{self, ofd};

/// What [`repair`] did.
#[derive(Clone, Debug)]
pub struct RepairReport {
    /// Handles that were dead before the repair.
    pub dead_handles: Vec<HandleInfo>,
    /// Claims whose holders were dead before the repair.
    pub dead_claims: Vec<Claim>,
    /// Recovery counters before the repair.
    pub before: RecoveryStats,
    /// Recovery counters after it: the difference is what this repair
    /// (and any other process's recovery meanwhile) did.
    pub after: RecoveryStats,
    /// Dead handles left after the repair (0 unless one died meanwhile).
    pub dead_handles_after: usize,
    /// Claims of dead holders left after the repair.
    pub dead_claims_after: usize,
}

impl RepairReport {
    /// `after - before`, counter by counter.
    pub fn delta(&self) -> RecoveryStats {
        let (a, b) = (&self.after, &self.before);
        RecoveryStats {
            skipped_claims: a.skipped_claims.saturating_sub(b.skipped_claims),
            fenced_live: a.fenced_live.saturating_sub(b.fenced_live),
            redelivered: a.redelivered.saturating_sub(b.redelivered),
            abandoned_tasks: a.abandoned_tasks.saturating_sub(b.abandoned_tasks),
            undone_moves: a.undone_moves.saturating_sub(b.undone_moves),
            handovers: a.handovers.saturating_sub(b.handovers),
            finished_releases: a.finished_releases.saturating_sub(b.finished_releases),
        }
    }
}

/// Repairs what dead processes left in queue `name`, as the library itself
/// does: opens it as `Queue::open` would (the same checks: ours, not open
/// to others, a queue of this layout version), takes the control lock and
/// runs the sweep that a process taking over an interrupted repair runs.
/// The sweep settles every dead handle as a joiner does (messages it held
/// in place offered again, a slot it was freeing freed, its unfinished
/// tasks counted abandoned so `join` returns), gives up unpublished claims
/// of dead senders, undoes dead movers' moves and lifts quarantines whose
/// holder is gone. Claims of live holders are left alone.
///
/// The handle used registers in no handle table: it only holds the
/// segment open while it works.
pub fn repair(name: &str) -> Result<RepairReport, InspectError> {
    let before = snapshot(name)?;
    let Some(q) = before.queue() else {
        return Err(unreadable_as_queue(name, &before));
    };
    let seg = QueueSegment::open(name)?;
    if !crate::recovery::repair_in_use(&seg) {
        return Err(InspectError::Setup(crate::SetupError::Busy {
            name: name.to_owned(),
        }));
    }
    drop(seg);
    let after = snapshot(name)?;
    let (dead_handles_after, dead_claims_after, after_stats) = match after.queue() {
        Some(a) => (
            a.dead_handles().count(),
            a.dead_claims().count(),
            a.recovery,
        ),
        None => return Err(unreadable_as_queue(name, &after)),
    };
    Ok(RepairReport {
        dead_handles: q.dead_handles().copied().collect(),
        dead_claims: q.dead_claims().copied().collect(),
        before: q.recovery,
        after: after_stats,
        dead_handles_after,
        dead_claims_after,
    })
}

fn unreadable_as_queue(name: &str, snap: &Snapshot) -> InspectError {
    match &snap.contents {
        Err(problem) => InspectError::Unreadable {
            name: name.to_owned(),
            problem: *problem,
        },
        Ok(_) => InspectError::Setup(crate::SetupError::WrongKind {
            name: name.to_owned(),
            found: snap.kind().unwrap_or(ChannelKind::Pipe),
            expected: ChannelKind::Queue,
        }),
    }
}

/// How [`gc`] works.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct GcOptions {
    /// Only say what would be done.
    pub dry_run: bool,
    /// Leave stale segments in place (an application that starts again
    /// with `Stale::Reuse` repairs them and keeps their messages).
    pub keep_stale: bool,
}

impl GcOptions {
    /// Only say what would be done.
    pub fn dry_run(mut self, yes: bool) -> GcOptions {
        self.dry_run = yes;
        self
    }

    /// Leave stale segments in place.
    pub fn keep_stale(mut self, yes: bool) -> GcOptions {
        self.keep_stale = yes;
        self
    }
}

/// What [`gc`] did (or, in a dry run, would do) to one segment.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum GcAction {
    /// Nothing was left to repair or remove.
    Nothing,
    /// A queue in use, with what dead processes left: repaired.
    Repair {
        /// Dead handles found.
        dead_handles: Vec<HandleInfo>,
        /// Claims of dead holders found.
        dead_claims: Vec<Claim>,
        /// What the repair did (`None` in a dry run).
        report: Option<RepairReport>,
    },
    /// Stale (nobody alive has it open): removed.
    RemoveStale {
        /// Queue or pipe, if its layout could be read.
        kind: Option<ChannelKind>,
        /// Messages it still held, lost with it.
        waiting: u64,
        /// Why its contents could not be read, if they could not.
        problem: Option<Problem>,
    },
    /// Left alone.
    Keep(KeepReason),
}

/// Why [`gc`] left a segment alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeepReason {
    /// Another user's: only its owner's processes judge or repair it.
    NotOurs {
        /// The owner's uid.
        owner: u32,
    },
    /// Open to other users (mode bits for others): not trusted, as
    /// `Queue::open` refuses it.
    OpenToOthers {
        /// The mode found.
        mode: u32,
    },
    /// Stale, kept as asked ([`GcOptions::keep_stale`]).
    StaleKept,
    /// Stale when looked at, in use again when it was to be removed.
    NoLongerStale,
    /// Corrupt and in use: nothing in it can be trusted to repair; its
    /// users report it.
    CorruptInUse,
    /// Of another layout version: this library neither repairs nor judges
    /// it.
    OtherVersion,
}

/// The result of [`gc`] on one segment.
#[derive(Clone, Debug)]
pub struct GcOutcome {
    /// What was (or would be) done.
    pub action: GcAction,
    /// False in a dry run: nothing was changed.
    pub done: bool,
}

/// Repairs segment `name` if dead processes left something in it, or
/// removes it if it is stale, as `Queue::create` would judge it (ours, not
/// open to others, and nobody alive holds it open); with
/// [`GcOptions::dry_run`], only says so.
///
/// Removal fences out newcomers first (an exclusive hold of the users lock,
/// as `create` takes before replacing a stale segment), then checks that
/// the name still names the same file.
pub fn gc(name: &str, options: GcOptions) -> Result<GcOutcome, InspectError> {
    let snap = snapshot(name)?;
    let keep = |r| {
        Ok(GcOutcome {
            action: GcAction::Keep(r),
            done: false,
        })
    };
    if matches!(snap.contents, Err(Problem::IncompatibleVersion { .. })) {
        return keep(KeepReason::OtherVersion);
    }
    if snap.file.uid != sys::euid() {
        return keep(KeepReason::NotOurs {
            owner: snap.file.uid,
        });
    }
    if snap.file.mode & 0o007 != 0 {
        return keep(KeepReason::OpenToOthers {
            mode: snap.file.mode,
        });
    }
    if snap.is_stale() {
        if options.keep_stale {
            return keep(KeepReason::StaleKept);
        }
        let action = GcAction::RemoveStale {
            kind: snap.kind(),
            waiting: waiting(&snap),
            problem: snap.contents.as_ref().err().copied(),
        };
        if options.dry_run {
            return Ok(GcOutcome {
                action,
                done: false,
            });
        }
        return if remove_if_stale(name)? {
            Ok(GcOutcome { action, done: true })
        } else {
            keep(KeepReason::NoLongerStale)
        };
    }
    if snap.is_corrupt() {
        return keep(KeepReason::CorruptInUse);
    }
    match snap.queue() {
        Some(q) if q.needs_repair() => {
            let (dead_handles, dead_claims) = (
                q.dead_handles().copied().collect(),
                q.dead_claims().copied().collect(),
            );
            let report = if options.dry_run {
                None
            } else {
                Some(repair(name)?)
            };
            Ok(GcOutcome {
                action: GcAction::Repair {
                    dead_handles,
                    dead_claims,
                    report,
                },
                done: !options.dry_run,
            })
        }
        _ => Ok(GcOutcome {
            action: GcAction::Nothing,
            done: false,
        }),
    }
}

/// Messages a segment holds (0 if it could not be read).
fn waiting(snap: &Snapshot) -> u64 {
    if let Some(q) = snap.queue() {
        return q.depth();
    }
    snap.pipe()
        .map_or(0, |p| p.directions.iter().map(|d| d.depth()).sum())
}

/// Removes `name` if it is stale by the library's own judgement (the one
/// `Queue::create` makes); false if it is not (any more).
fn remove_if_stale(name: &str) -> Result<bool, InspectError> {
    let os_name = segment::os_name(name)?;
    let os = |op, e| InspectError::os(name, op, e);
    let fd = sys::shm_open_existing(&os_name).map_err(|e| os("shm_open", e))?;
    let st = sys::fstat(&fd).map_err(|e| os("fstat", e))?;
    if st.uid != sys::euid() || st.mode & 0o007 != 0 || !segment::is_stale(&fd)? {
        return Ok(false);
    }
    // Fence out anyone who turns up from now on: `open` waits for this lock
    // (a creator's) and gives up with `Busy`; `create` finds the name taken.
    if !ofd::try_lock(&fd, ofd::USERS, ofd::Kind::Exclusive)
        .map_err(|e| os("fcntl(F_OFD_SETLK)", e))?
    {
        return Ok(false);
    }
    // The name may have been replaced since it was opened (by a `create`
    // with `Stale::Recreate`): remove it only if it is still this file.
    let again = match sys::shm_open_read_only(&os_name) {
        Ok(fd) => fd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(false),
        Err(e) => return Err(os("shm_open", e)),
    };
    let now = sys::fstat(&again).map_err(|e| os("fstat", e))?;
    if (now.dev, now.ino) != (st.dev, st.ino) {
        return Ok(false);
    }
    match sys::shm_unlink(&os_name) {
        Ok(()) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(os("shm_unlink", e)),
    }
}
