//! Read-only inspection of mulproc segments, for operators and their tools
//! (the `mulproc` command line is built on it).
//!
//! - [`list`]: every mulproc segment on the machine (`/dev/shm/mulproc.*`),
//!   each read as far as the caller's permissions allow.
//! - [`snapshot`]: one segment's layout, positions, handles with their
//!   liveness, claims in flight and who holds them, join counts, recovery
//!   counters.
//! - [`peek`]: copies of the next waiting messages, never a claim.
//! - [`repair`] and [`gc`]: the only calls here that change a segment. They
//!   run the library's own crash recovery (the sweep a process runs when it
//!   takes over a repair, which settles dead handles as a joiner does) and
//!   remove stale segments, as `Queue::create` would judge them.
//!
//! ```
//! use mulproc::{inspect, Message, Queue, QueueConfig, Request};
//! # let name = format!("doc-inspect-{}", std::process::id());
//! let q = Queue::create(&name, QueueConfig::new(8, 64))?;
//! q.try_send(Message::new(Request::DO, b"job 1".as_slice()))?;
//!
//! let snap = inspect::snapshot(&name)?;
//! let state = snap.queue().expect("a healthy queue");
//! assert_eq!(state.depth(), 1);
//! assert_eq!(state.live_handles().count(), 1); // `q`
//! assert!(snap.in_use && !snap.is_stale());
//!
//! let peeked = inspect::peek(&name, 10, 64)?;
//! assert_eq!(peeked.messages[0].data, b"job 1");
//! assert_eq!(q.len(), 1); // peeking took nothing
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Reading changes nothing
//!
//! [`snapshot`], [`list`] and [`peek`] open the segment read-only
//! (`O_RDONLY`) and map it `PROT_READ`, so no write can happen through
//! them. They register no handle and take no lock: whether a handle, a
//! pipe end or a user is alive is asked of the kernel with `F_OFD_GETLK`
//! on the byte whose open-file-description lock it holds (see `sys::ofd`),
//! which tests for a lock without taking one. Every load is a Relaxed
//! atomic load (allowed on read-only memory) followed, where order matters,
//! by an Acquire fence.
//!
//! # Trusting nothing
//!
//! A segment is written by other processes, and may have been written by a
//! hostile or broken one. Everything is checked as `Queue::open` checks it
//! (magic, layout version, init word, every layout field against the
//! layout formula, the file's size), every field is read once into a
//! local, every index is bounds-checked, every loop is bounded. What no
//! honest run produces is reported ([`Problem`], [`Anomaly`]), never acted
//! on, and never a panic. Segments of other users are read as far as the
//! file's permissions let the caller read them.
//!
//! # A moment's picture
//!
//! A segment in use keeps changing while it is read: a snapshot is taken
//! over a few microseconds, and its fields may not all belong to one
//! instant (a message counted as waiting may be received before the
//! payload bytes are copied by [`peek`], which then drops it). States that
//! a concurrent honest change explains are not reported as anomalies.
//!
//! Limit: a process with write access that truncates the file while it is
//! mapped makes the next read of the lost pages raise `SIGBUS` here, as in
//! every process that maps the segment.

use std::fmt;
use std::io;
use std::time::SystemTime;

use crate::error::{CorruptKind, NameProblem, SetupError};
use crate::layout::ChannelKind;
use crate::queue::RecoveryStats;

mod gc;
mod peek;
mod read;

pub use gc::{gc, repair, GcAction, GcOptions, GcOutcome, KeepReason, RepairReport};
pub use peek::{peek, Peek, PeekedMessage};

/// Where POSIX shared-memory objects live on Linux.
pub const SHM_DIR: &str = "/dev/shm";
/// Prefix of a mulproc segment's file name in [`SHM_DIR`].
pub const FILE_PREFIX: &str = crate::segment::OS_PREFIX;

/// Why a segment could not be read at all.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum InspectError {
    /// The name is not one mulproc accepts.
    #[error("invalid segment name {name:?}: {problem}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// No segment of that name.
    #[error("no mulproc segment named {name:?}")]
    NotFound {
        /// The name given.
        name: String,
    },
    /// The file's permissions do not let the caller read it.
    #[error("permission denied reading segment {name:?}")]
    PermissionDenied {
        /// The name given.
        name: String,
    },
    /// The segment is not a readable mulproc segment of this layout
    /// version (for [`peek`], which needs one).
    #[error("segment {name:?}: {problem}")]
    Unreadable {
        /// The name given.
        name: String,
        /// What was found.
        problem: Problem,
    },
    /// Opening the segment for [`repair`] failed (the checks of
    /// `Queue::open`: owner, mode, layout, ...).
    #[error(transparent)]
    Setup(#[from] SetupError),
    /// A system call failed.
    #[error("segment {name:?}: {op} failed: {source}")]
    Os {
        /// The name given.
        name: String,
        /// The call.
        op: &'static str,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
}

impl InspectError {
    pub(crate) fn os(name: &str, op: &'static str, e: io::Error) -> InspectError {
        match e.raw_os_error() {
            Some(libc::ENOENT) => InspectError::NotFound {
                name: name.to_owned(),
            },
            Some(libc::EACCES | libc::EPERM) => InspectError::PermissionDenied {
                name: name.to_owned(),
            },
            _ => InspectError::Os {
                name: name.to_owned(),
                op,
                source: e,
            },
        }
    }
}

/// What is wrong with a segment's contents, as found before its state is
/// read (the checks `Queue::open` makes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// Not a mulproc segment: the magic number is wrong.
    NotMulproc,
    /// A mulproc segment of another layout version.
    IncompatibleVersion {
        /// Version in the segment.
        found: u32,
        /// Version this library reads.
        expected: u32,
    },
    /// The creator never finished initialising it.
    InitIncomplete {
        /// Pid the creator recorded (0 if it got no further).
        creator_pid: u32,
        /// A live process still holds it (its creator, still at work).
        creator_alive: bool,
    },
    /// Layout fields that contradict each other or the file.
    Corrupt(CorruptKind),
}

impl Problem {
    /// True for what no honest writer leaves (bad magic, inconsistent
    /// layout); false for another version or an unfinished creation.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Problem::NotMulproc | Problem::Corrupt(_))
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotMulproc => f.write_str("not a mulproc segment (bad magic)"),
            Problem::IncompatibleVersion { found, expected } => write!(
                f,
                "layout version {found}, this library reads version {expected}"
            ),
            Problem::InitIncomplete {
                creator_pid,
                creator_alive: true,
            } => write!(f, "being initialised by pid {creator_pid}"),
            Problem::InitIncomplete {
                creator_pid,
                creator_alive: false,
            } => write!(
                f,
                "never fully initialised (creator pid {creator_pid} is gone)"
            ),
            Problem::Corrupt(kind) => write!(f, "corrupt: {kind}"),
        }
    }
}

/// A state found in a segment's moving parts that no honest run produces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Anomaly {
    /// A queue's positions: `head` after `tail`, more than a ring apart, or
    /// with flag bits set.
    Positions {
        /// Dequeue position.
        head: u64,
        /// Enqueue position.
        tail: u64,
    },
    /// A slot's sequence word is not one its ticket can have.
    SlotState {
        /// The ticket (position) looked at.
        ticket: u64,
        /// The word found.
        seq: u64,
    },
    /// A waiting message longer than the max payload.
    Length {
        /// The message's ticket.
        ticket: u64,
        /// Its length field.
        len: u32,
        /// The segment's max payload.
        max: u32,
    },
    /// A handle entry whose state word is neither free nor in use.
    HandleState {
        /// The entry.
        index: usize,
        /// The word found.
        state: u32,
    },
    /// A pipe direction's positions.
    PipePositions {
        /// 0: parent to child, 1: child to parent.
        direction: usize,
        /// Receiver's position.
        head: u64,
        /// Sender's position.
        tail: u64,
    },
}

impl fmt::Display for Anomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Anomaly::Positions { head, tail } => {
                write!(f, "impossible positions: head {head}, tail {tail}")
            }
            Anomaly::SlotState { ticket, seq } => write!(
                f,
                "slot of ticket {ticket} has sequence word {seq:#x}, impossible for it"
            ),
            Anomaly::Length { ticket, len, max } => write!(
                f,
                "message of ticket {ticket} has length {len}, above max payload {max}"
            ),
            Anomaly::HandleState { index, state } => {
                write!(f, "handle entry {index} has state word {state:#x}")
            }
            Anomaly::PipePositions {
                direction,
                head,
                tail,
            } => write!(
                f,
                "pipe direction {direction}: impossible positions head {head}, tail {tail}"
            ),
        }
    }
}

/// The file behind a segment.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileInfo {
    /// Owner's user id.
    pub uid: u32,
    /// Group id.
    pub gid: u32,
    /// Permission bits (`0o600`, `0o660`, ...).
    pub mode: u32,
    /// Size in bytes.
    pub size: u64,
    /// When the file was created (its birth time where the file system
    /// records it, as tmpfs does; else its last modification, which the
    /// first write to each page of a mapping moves).
    pub created: Option<SystemTime>,
}

/// A segment's immutable description, as its creator wrote it (checked).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Queue or pipe.
    pub kind: ChannelKind,
    /// Layout version.
    pub version: u32,
    /// Slots (per direction, for a pipe).
    pub capacity: u32,
    /// Largest payload in bytes.
    pub max_payload: u32,
    /// Bytes from one slot's payload to the next.
    pub stride: u32,
    /// Where the payloads start.
    pub data_offset: u64,
    /// Size the layout needs.
    pub total_size: u64,
    /// Pid of the creating process.
    pub creator_pid: u32,
    /// Uid of the creating process.
    pub creator_uid: u32,
}

/// One segment, as read at one moment.
#[derive(Clone, Debug)]
pub struct Snapshot {
    /// The mulproc name (the file name without its `mulproc.` prefix).
    pub name: String,
    /// The file.
    pub file: FileInfo,
    /// Some live process has the segment open (it holds the segment's
    /// users lock; asked of the kernel, never guessed from a pid).
    pub in_use: bool,
    /// What it holds, or why that could not be read.
    pub contents: Result<Contents, Problem>,
}

/// What a readable segment holds.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub enum Contents {
    /// A queue.
    Queue(QueueState),
    /// A pipe.
    Pipe(PipeState),
}

impl Snapshot {
    /// Queue or pipe, if the layout could be read.
    pub fn kind(&self) -> Option<ChannelKind> {
        self.layout().map(|l| l.kind)
    }

    /// The checked layout, if the contents could be read.
    pub fn layout(&self) -> Option<&Layout> {
        match &self.contents {
            Ok(Contents::Queue(q)) => Some(&q.layout),
            Ok(Contents::Pipe(p)) => Some(&p.layout),
            Err(_) => None,
        }
    }

    /// The queue's state, if this is a readable queue.
    pub fn queue(&self) -> Option<&QueueState> {
        match &self.contents {
            Ok(Contents::Queue(q)) => Some(q),
            _ => None,
        }
    }

    /// The pipe's state, if this is a readable pipe.
    pub fn pipe(&self) -> Option<&PipeState> {
        match &self.contents {
            Ok(Contents::Pipe(p)) => Some(p),
            _ => None,
        }
    }

    /// Stale: nobody alive has it open (every process that used it exited,
    /// or its creation crashed half-way). `Queue::create` would fail with
    /// [`SetupError::Stale`] on it, or replace or reuse it as told. A
    /// segment of another layout version is never judged stale: its users
    /// may not take the lock this judgement rests on.
    pub fn is_stale(&self) -> bool {
        !self.in_use && !matches!(self.contents, Err(Problem::IncompatibleVersion { .. }))
    }

    /// States no honest run produces, found while reading.
    pub fn anomalies(&self) -> &[Anomaly] {
        match &self.contents {
            Ok(Contents::Queue(q)) => &q.anomalies,
            Ok(Contents::Pipe(p)) => &p.anomalies,
            Err(_) => &[],
        }
    }

    /// True if the segment is corrupt: bad magic, inconsistent layout, or
    /// an [`Anomaly`] in its moving parts.
    pub fn is_corrupt(&self) -> bool {
        match &self.contents {
            Err(p) => p.is_corruption(),
            Ok(_) => !self.anomalies().is_empty(),
        }
    }
}

/// How many of the tickets between `head` and `tail` are in which state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SlotCounts {
    /// Published, waiting for a receiver.
    pub waiting: u64,
    /// Held by a receiver (being read, or held in place by a `RecvGuard`).
    pub held: u64,
    /// Claimed by a sender, not yet published (being written, or reserved).
    pub writing: u64,
    /// Read out of order by a selective receive, waiting for `head`.
    pub taken: u64,
    /// Being refilled by a sender moving an old message forward.
    pub moving: u64,
    /// Tickets of withheld slots, passed by.
    pub skipped: u64,
    /// Received and freed since the positions were read (the queue moved on
    /// while it was looked at).
    pub moved_on: u64,
}

/// A queue's state at one moment.
#[derive(Clone, Debug)]
pub struct QueueState {
    /// The layout.
    pub layout: Layout,
    /// Dequeue position: tickets received and freed, in order.
    pub head: u64,
    /// Enqueue position: tickets handed out to senders so far.
    pub tail: u64,
    /// The tickets from `head` on, by state (at most [`SCAN_LIMIT`] looked at).
    pub slots: SlotCounts,
    /// Payload bytes of the waiting messages looked at.
    pub bytes_waiting: u64,
    /// Tickets looked at, from `head` (less than [`depth`](Self::depth)
    /// only past [`SCAN_LIMIT`]).
    pub scanned: u64,
    /// Tickets counted done for `join` (`task_done`, abandoned, skipped).
    pub done: u64,
    /// Every handle entry in use, or whose liveness lock is held.
    pub handles: Vec<HandleInfo>,
    /// Slots held by a sender, a receiver or a mover, or withheld, with
    /// who holds each.
    pub claims: Vec<Claim>,
    /// What crash recovery has done since the queue was created.
    pub recovery: RecoveryStats,
    /// Slots withheld now (fenced live senders not yet gone).
    pub withheld: u64,
    /// A repair a recoverer recorded and has not finished.
    pub repair: Option<RepairInProgress>,
    /// The control lock that serialises repairs.
    pub control_lock: ControlLockState,
    /// Processes asleep on the queue's event counts.
    pub sleepers: QueueSleepers,
    /// A selective receive has passed a message over (senders on a full
    /// ring look for a message to move).
    pub passed_over: bool,
    /// What no honest run produces.
    pub anomalies: Vec<Anomaly>,
}

/// Most tickets a snapshot or a peek looks at, from `head`.
pub const SCAN_LIMIT: u64 = 1 << 20;

impl QueueState {
    /// Slots in use (`tail - head`, at most the capacity): what
    /// `Queue::len` says.
    pub fn depth(&self) -> u64 {
        self.tail
            .saturating_sub(self.head)
            .min(u64::from(self.layout.capacity))
    }

    /// Tickets not yet counted done for `join` (`tail - done`): messages
    /// waiting, in flight, or received and not yet marked done.
    pub fn unfinished(&self) -> u64 {
        self.tail.saturating_sub(self.done)
    }

    /// Handles whose process is alive.
    pub fn live_handles(&self) -> impl Iterator<Item = &HandleInfo> {
        self.handles
            .iter()
            .filter(|h| h.status == HandleStatus::Live)
    }

    /// Handles whose process died without their entry being settled.
    pub fn dead_handles(&self) -> impl Iterator<Item = &HandleInfo> {
        self.handles
            .iter()
            .filter(|h| h.status == HandleStatus::Dead)
    }

    /// Claims whose holder is known dead.
    pub fn dead_claims(&self) -> impl Iterator<Item = &Claim> {
        self.claims
            .iter()
            .filter(|c| matches!(c.holder, Holder::Dead { .. }))
    }

    /// True if a dead process left something for recovery to repair: a
    /// dead handle, a claim of a dead holder, an unfinished repair, or a
    /// control lock whose holder died inside.
    pub fn needs_repair(&self) -> bool {
        self.dead_handles().next().is_some()
            || self.dead_claims().next().is_some()
            || self.repair.is_some()
            || self.control_lock.holder_died()
    }
}

/// Whether a handle's process lives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandleStatus {
    /// In use, and its process holds the entry's liveness lock.
    Live,
    /// In use, but nobody holds the lock: its process died and recovery
    /// has not settled the entry yet.
    Dead,
    /// The lock is held but the entry is not marked in use yet: a handle
    /// being registered.
    Registering,
}

/// One entry of a queue's handle table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HandleInfo {
    /// Entry index (0..256).
    pub index: usize,
    /// Live, dead or registering.
    pub status: HandleStatus,
    /// Bumped by each new owner of the entry.
    pub generation: u32,
    /// Pid of the owner (as it wrote it: informational, liveness is the
    /// lock).
    pub pid: u32,
    /// Messages it received and has not marked done.
    pub outstanding: u64,
    /// The ticket it last announced it was claiming as a receiver.
    pub claiming: Option<u64>,
    /// The tickets it last announced it was claiming as a sender.
    pub sending: Option<(u64, u64)>,
}

/// What a claimed slot is in the middle of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClaimKind {
    /// Claimed by a sender, not yet published.
    Writing,
    /// Held by a receiver.
    Held,
    /// A read slot being refilled by a sender's move.
    Moving,
    /// The ticket of a withheld slot, taken by a sender that has not
    /// marked it passed yet.
    Skip,
    /// Withheld: a fenced sender that may still be alive may write into it.
    Withheld,
}

/// Who holds a claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Holder {
    /// A live handle.
    Alive {
        /// Its entry.
        entry: usize,
        /// Its pid.
        pid: u32,
    },
    /// A handle whose process died.
    Dead {
        /// Its entry.
        entry: usize,
        /// The pid it had.
        pid: u32,
    },
    /// Nobody the segment names (a claim not signed and not announced, or
    /// withheld with its holder gone).
    Unknown,
}

/// A slot in the middle of something, and who is doing it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Claim {
    /// The ticket.
    pub ticket: u64,
    /// Its slot index.
    pub slot: usize,
    /// What it is in the middle of.
    pub kind: ClaimKind,
    /// Who holds it.
    pub holder: Holder,
    /// The holder is named by the slot's owner word (signed), rather than
    /// by its announcement.
    pub signed: bool,
}

/// What a recorded, unfinished repair was doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RepairKind {
    /// Fencing an unpublished claim.
    Fence,
    /// Offering again a dead receiver's message.
    Redeliver,
    /// Undoing a dead mover's target.
    UndoMove,
    /// Passing a dead skip ticket.
    Skip,
    /// A number no version of the library writes.
    Other(u32),
}

/// A repair recorded in the segment and not cleared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairInProgress {
    /// What it does.
    pub kind: RepairKind,
    /// The ticket it works on.
    pub ticket: u64,
}

/// The control lock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ControlLockState {
    /// A live process holds it now.
    pub held: bool,
    /// The segment's word says a holder is inside.
    pub marked_held: bool,
}

impl ControlLockState {
    /// The word says held but nobody holds the kernel lock: the last holder
    /// died inside (the next locker finishes its repair).
    pub fn holder_died(&self) -> bool {
        self.marked_held && !self.held
    }
}

/// Processes asleep on a queue (counts may be too high by sleepers killed
/// while asleep).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueSleepers {
    /// Plain receivers waiting for a message.
    pub receivers: u32,
    /// Selective receivers waiting for a message they accept.
    pub selective: u32,
    /// Senders waiting for space.
    pub senders: u32,
    /// Joiners.
    pub joiners: u32,
}

/// A pipe's state at one moment.
#[derive(Clone, Debug)]
pub struct PipeState {
    /// The layout.
    pub layout: Layout,
    /// The parent end (0) and the child end (1).
    pub ends: [PipeEndInfo; 2],
    /// Direction 0 (parent to child) and 1 (child to parent).
    pub directions: [PipeDirectionState; 2],
    /// What no honest run produces.
    pub anomalies: Vec<Anomaly>,
}

/// One end of a pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PipeEndInfo {
    /// Pid recorded by its holder, if any.
    pub pid: Option<u32>,
    /// A live process holds the end.
    pub alive: bool,
}

/// One direction of a pipe.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PipeDirectionState {
    /// Messages received so far.
    pub head: u64,
    /// Messages sent so far.
    pub tail: u64,
    /// Messages published and not yet received (looked at one by one).
    pub waiting: u64,
    /// Their payload bytes.
    pub bytes_waiting: u64,
    /// The receiver is asleep waiting for a message.
    pub receiver_sleeping: u32,
    /// The sender is asleep waiting for room.
    pub sender_sleeping: u32,
}

impl PipeDirectionState {
    /// `tail - head`: messages sent and not yet received.
    pub fn depth(&self) -> u64 {
        self.tail.saturating_sub(self.head)
    }
}

/// One entry of [`list`].
#[derive(Debug)]
pub struct Listed {
    /// The mulproc name.
    pub name: String,
    /// The file, as the directory entry tells (readable even when the
    /// segment is not).
    pub file: Option<FileInfo>,
    /// The segment, or why it could not be read.
    pub snapshot: Result<Snapshot, InspectError>,
}

/// Every mulproc segment on the machine (`/dev/shm/mulproc.*`), sorted by
/// name, each read with [`snapshot`] as far as the caller may read it (an
/// unreadable one is listed with its error: `PermissionDenied` for another
/// user's private segment). Fails only if the directory cannot be read.
pub fn list() -> io::Result<Vec<Listed>> {
    let mut names: Vec<String> = std::fs::read_dir(SHM_DIR)?
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix(FILE_PREFIX))
                .map(str::to_owned)
        })
        .collect();
    names.sort();
    Ok(names
        .into_iter()
        .map(|name| {
            let file = std::fs::symlink_metadata(format!("{SHM_DIR}/{FILE_PREFIX}{name}"))
                .ok()
                .filter(|m| m.file_type().is_file())
                .map(|m| read::file_info(&m));
            let snapshot = snapshot(&name);
            Listed {
                name,
                file,
                snapshot,
            }
        })
        .collect())
}

/// Reads segment `name` without changing it: see the [module](self) docs.
pub fn snapshot(name: &str) -> Result<Snapshot, InspectError> {
    read::snapshot(name)
}
