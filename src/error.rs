//! Errors, one enum per operation. Sending errors give the message back.

use std::fmt;
use std::io;
use std::sync::Arc;

/// What was found wrong in a segment that another process can write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CorruptKind {
    /// Layout fields contradict each other or the layout formula.
    LayoutFields,
    /// The file is smaller than its header says.
    Truncated {
        /// Size the header calls for.
        expected: u64,
        /// Size of the file.
        found: u64,
    },
    /// A message length larger than the queue's max payload.
    Length {
        /// The length found in the slot header.
        len: u32,
        /// The queue's max payload.
        max: u32,
    },
    /// Positions or sequence words in a state no honest process produces.
    Positions,
    /// A slot's sequence word changed while this process held the slot.
    SlotStolen,
}

impl fmt::Display for CorruptKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CorruptKind::LayoutFields => f.write_str("layout fields are inconsistent"),
            CorruptKind::Truncated { expected, found } => write!(
                f,
                "segment is truncated: {found} bytes, layout needs {expected}"
            ),
            CorruptKind::Length { len, max } => {
                write!(f, "message length {len} exceeds max payload {max}")
            }
            CorruptKind::Positions => f.write_str("queue positions are inconsistent"),
            CorruptKind::SlotStolen => f.write_str("a held slot was changed by another process"),
        }
    }
}

/// A segment's contents cannot be trusted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("corrupt segment: {kind}")]
pub struct CorruptError {
    /// What was wrong.
    pub kind: CorruptKind,
}

impl From<CorruptKind> for CorruptError {
    fn from(kind: CorruptKind) -> Self {
        CorruptError { kind }
    }
}

/// Why a queue configuration was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Capacity below [`MIN_CAPACITY`](crate::MIN_CAPACITY).
    #[error("capacity {0} is below the minimum of 2")]
    CapacityTooSmall(u32),
    /// Capacity not a power of two.
    #[error("capacity {0} is not a power of two")]
    CapacityNotPowerOfTwo(u32),
    /// Capacity above [`MAX_CAPACITY`](crate::MAX_CAPACITY).
    #[error("capacity {0} is above the maximum of 2^24")]
    CapacityTooLarge(u32),
    /// Max payload above [`MAX_PAYLOAD_LIMIT`](crate::MAX_PAYLOAD_LIMIT).
    #[error("max payload {0} is above the limit of 64 MiB")]
    PayloadTooLarge(u32),
    /// The segment would exceed [`MAX_SEGMENT_SIZE`](crate::MAX_SEGMENT_SIZE).
    #[error("capacity × max payload makes a segment above 64 GiB")]
    SegmentTooLarge,
}

/// Why a name was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameProblem {
    /// The empty string.
    Empty,
    /// Longer than [`MAX_NAME_LEN`](crate::MAX_NAME_LEN) bytes.
    TooLong,
    /// Contains `/`.
    Slash,
    /// Contains a byte outside `[A-Za-z0-9._-]`.
    BadCharacter,
    /// Starts with `.`.
    LeadingDot,
}

impl fmt::Display for NameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameProblem::Empty => "it is empty",
            NameProblem::TooLong => "it is longer than 200 bytes",
            NameProblem::Slash => "it contains '/'",
            NameProblem::BadCharacter => "it contains a character outside [A-Za-z0-9._-]",
            NameProblem::LeadingDot => "it starts with '.'",
        })
    }
}

/// Creating or opening a queue failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SetupError {
    /// The name is not valid.
    #[error("invalid queue name {name:?}: {problem}")]
    InvalidName {
        /// The name given.
        name: String,
        /// What is wrong with it.
        problem: NameProblem,
    },
    /// The configuration is not valid.
    #[error("invalid queue configuration: {0}")]
    InvalidConfig(#[from] ConfigError),
    /// `open`: no segment of that name.
    #[error("no queue named {name:?}")]
    NotFound {
        /// The name given.
        name: String,
    },
    /// `create`: a segment of that name exists.
    #[error("a queue named {name:?} already exists")]
    AlreadyExists {
        /// The name given.
        name: String,
    },
    /// The segment belongs to another user, is open to other users, or the
    /// OS refused access.
    #[error("permission denied for queue {name:?}: {reason}")]
    PermissionDenied {
        /// The name given.
        name: String,
        /// Why.
        reason: PermissionProblem,
    },
    /// Not a mulproc segment (wrong magic).
    #[error("{name:?} is not a mulproc queue")]
    NotAQueue {
        /// The name given.
        name: String,
    },
    /// A mulproc segment of the other kind (a pipe opened as a queue, or the
    /// other way round).
    #[error("{name:?} is a {found:?}, not a {expected:?}")]
    WrongKind {
        /// The name given.
        name: String,
        /// What the segment is.
        found: crate::kind::ChannelKind,
        /// What was asked for.
        expected: crate::kind::ChannelKind,
    },
    /// The end of a pipe is held by another live process.
    #[error("pipe {name:?}: this end is held by process {pid}")]
    EndTaken {
        /// The name given.
        name: String,
        /// The process holding it.
        pid: u32,
    },
    /// A mulproc segment of another layout version.
    #[error("queue {name:?} has layout version {found}, this library speaks {expected}")]
    IncompatibleVersion {
        /// The name given.
        name: String,
        /// Version in the segment.
        found: u32,
        /// Version of this library.
        expected: u32,
    },
    /// The creator has not finished initialising the segment (it may have
    /// died half-way).
    #[error("queue {name:?} was never fully initialised (creator pid {creator_pid}, {})",
        if *creator_alive { "still at work" } else { "dead: create it again to replace it" })]
    InitIncomplete {
        /// The name given.
        name: String,
        /// Pid recorded by the creator, 0 if it got no further than that.
        creator_pid: u32,
        /// Whether a live process still holds the segment (its creator,
        /// still initialising). If not, the creation crashed half-way, and
        /// [`Queue::create`](crate::Queue::create) with
        /// [`Stale::Recreate`](crate::Stale::Recreate) replaces it.
        creator_alive: bool,
    },
    /// `create`: a segment of that name exists, but every process that
    /// used it has exited (or its creation crashed half-way). Choose what
    /// to do about it with [`QueueConfig::on_stale`](crate::QueueConfig::on_stale).
    #[error("queue {name:?} exists but nobody uses it any more (stale)")]
    Stale {
        /// The name given.
        name: String,
    },
    /// `create` with [`Stale::Reuse`](crate::Stale::Reuse): the stale
    /// segment has another capacity, payload size or kind than asked for.
    #[error("stale queue {name:?} has another shape than asked for; not reused")]
    StaleShapeMismatch {
        /// The name given.
        name: String,
    },
    /// The queue already has [`MAX_HANDLES`](crate::MAX_HANDLES) open
    /// handles (in all processes together).
    #[error("queue {name:?} already has {max} open handles")]
    TooManyHandles {
        /// The name given.
        name: String,
        /// The limit.
        max: usize,
    },
    /// The segment is being created, or repaired after every user died, by
    /// another process right now; try again.
    #[error("queue {name:?} is busy being created or repaired")]
    Busy {
        /// The name given.
        name: String,
    },
    /// The segment's contents cannot be trusted.
    #[error("queue {name:?}: {source}")]
    Corrupt {
        /// The name given.
        name: String,
        /// What was wrong.
        source: CorruptError,
    },
    /// Any other OS error, with the call that failed.
    #[error("queue {name:?}: {op} failed: {source}")]
    Os {
        /// The name given.
        name: String,
        /// The system call.
        op: &'static str,
        /// The OS error.
        source: io::Error,
    },
}

/// Why access to a segment was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PermissionProblem {
    /// The OS refused (`EACCES`/`EPERM`).
    Os,
    /// Owned by another user.
    OtherOwner {
        /// Owner of the segment.
        owner: u32,
        /// Our effective uid.
        me: u32,
    },
    /// Readable or writable by users outside the owner's group.
    OpenToOthers {
        /// The segment's permission bits.
        mode: u32,
    },
}

impl fmt::Display for PermissionProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PermissionProblem::Os => f.write_str("the operating system refused access"),
            PermissionProblem::OtherOwner { owner, me } => {
                write!(f, "owned by uid {owner}, not by us (uid {me})")
            }
            PermissionProblem::OpenToOthers { mode } => {
                write!(f, "mode {mode:04o} gives access to other users")
            }
        }
    }
}

/// An error of a channel backend that is not shared memory (a network
/// broker, say): the connection, the server's answer. Carries its cause;
/// two values are equal only if they are the same error.
#[derive(Clone)]
pub struct BackendError {
    source: Arc<dyn std::error::Error + Send + Sync>,
    outcome_unknown: bool,
}

impl BackendError {
    /// An error that leaves nothing half done: the operation did not
    /// happen.
    pub fn new(source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> BackendError {
        BackendError {
            source: Arc::from(source.into()),
            outcome_unknown: false,
        }
    }

    /// An error after which the operation may or may not have taken
    /// effect: a send whose acknowledgement was lost. Never reported as
    /// success.
    pub fn outcome_unknown(
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> BackendError {
        BackendError {
            outcome_unknown: true,
            ..BackendError::new(source)
        }
    }

    /// True if the operation may have taken effect despite the error.
    pub fn is_outcome_unknown(&self) -> bool {
        self.outcome_unknown
    }

    /// The underlying error.
    pub fn source_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &*self.source
    }
}

impl fmt::Debug for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BackendError")
            .field("source", &self.source)
            .field("outcome_unknown", &self.outcome_unknown)
            .finish()
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.outcome_unknown {
            write!(
                f,
                "{} (the operation may or may not have taken effect)",
                self.source
            )
        } else {
            fmt::Display::fmt(&self.source, f)
        }
    }
}

impl std::error::Error for BackendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.source)
    }
}

impl PartialEq for BackendError {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.source, &other.source)
    }
}

impl Eq for BackendError {}

/// A send failed; the message is given back ([`into_inner`](Self::into_inner)).
///
/// Returned by every send form: `try_send` (no room right now), `send`
/// (no room within the channel's [`SendRetry`](crate::SendRetry)),
/// `send_timeout` and `send_deadline` (no room in time): all say
/// [`Full`](TrySendError::Full) when they ran out of room or time.
#[derive(PartialEq, Eq, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum TrySendError<T> {
    /// No free slot (right now, or within the time allowed).
    #[error("the channel is full")]
    Full(T),
    /// Nobody can receive it any more: the other end of a pipe died or
    /// was closed. Nothing was written.
    #[error("the receiving end is gone")]
    Disconnected(T),
    /// The payload is larger than the channel's max payload. Nothing was
    /// written.
    #[error("payload of {len} bytes exceeds the max payload of {max}")]
    TooLarge {
        /// The message.
        msg: T,
        /// Its payload length.
        len: usize,
        /// The channel's max payload.
        max: usize,
    },
    /// The segment is corrupt; nothing was sent.
    #[error("{1}")]
    Corrupt(T, CorruptError),
    /// The slot was reclaimed by a recoverer while this process held it (it
    /// was paused past the unblock timeout); the message was not delivered.
    #[error("the slot was reclaimed while this process held it; the message was not delivered")]
    Fenced(T),
    /// The backend failed (see [`BackendError::is_outcome_unknown`]: if
    /// set, the message may have been delivered all the same).
    #[error("{1}")]
    Backend(T, BackendError),
}

impl<T> TrySendError<T> {
    /// The message that was not sent.
    pub fn into_inner(self) -> T {
        match self {
            TrySendError::Full(m)
            | TrySendError::Disconnected(m)
            | TrySendError::TooLarge { msg: m, .. }
            | TrySendError::Corrupt(m, _)
            | TrySendError::Fenced(m)
            | TrySendError::Backend(m, _) => m,
        }
    }

    /// True for [`TrySendError::Full`]: no room, right now or in time.
    pub fn is_full(&self) -> bool {
        matches!(self, TrySendError::Full(..))
    }

    /// True for [`TrySendError::Full`] from a send that waited: it ran out
    /// of time (the same variant as [`is_full`](Self::is_full)).
    pub fn is_timeout(&self) -> bool {
        self.is_full()
    }

    /// True for [`TrySendError::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, TrySendError::Disconnected(..))
    }

    /// True for [`TrySendError::TooLarge`].
    pub fn is_too_large(&self) -> bool {
        matches!(self, TrySendError::TooLarge { .. })
    }

    /// The same error with the message replaced by `f(message)`.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> TrySendError<U> {
        match self {
            TrySendError::Full(m) => TrySendError::Full(f(m)),
            TrySendError::Disconnected(m) => TrySendError::Disconnected(f(m)),
            TrySendError::TooLarge { msg, len, max } => TrySendError::TooLarge {
                msg: f(msg),
                len,
                max,
            },
            TrySendError::Corrupt(m, e) => TrySendError::Corrupt(f(m), e),
            TrySendError::Fenced(m) => TrySendError::Fenced(f(m)),
            TrySendError::Backend(m, e) => TrySendError::Backend(f(m), e),
        }
    }
}

impl<T> fmt::Debug for TrySendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TrySendError::Full(..) => f.write_str("Full(..)"),
            TrySendError::Disconnected(..) => f.write_str("Disconnected(..)"),
            TrySendError::TooLarge { len, max, .. } => {
                write!(f, "TooLarge {{ len: {len}, max: {max}, .. }}")
            }
            TrySendError::Corrupt(_, e) => write!(f, "Corrupt(.., {e:?})"),
            TrySendError::Fenced(..) => f.write_str("Fenced(..)"),
            TrySendError::Backend(_, e) => write!(f, "Backend(.., {e:?})"),
        }
    }
}

/// A send that waited failed; the same type as [`TrySendError`].
pub type SendError<T> = TrySendError<T>;

/// A send with a timeout or deadline failed; the same type as
/// [`TrySendError`] ([`Full`](TrySendError::Full) when time ran out).
pub type SendTimeoutError<T> = TrySendError<T>;

/// A `try_recv` form found nothing or failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TryRecvError {
    /// No message right now.
    #[error("the channel is empty")]
    Empty,
    /// No message, and none can come: the other end of a pipe died or
    /// was closed (a queue never says this).
    #[error("the channel is empty and its sending end is gone")]
    Disconnected,
    /// The segment is corrupt.
    #[error(transparent)]
    Corrupt(#[from] CorruptError),
    /// The backend failed.
    #[error(transparent)]
    Backend(BackendError),
}

/// A receive with a timeout or deadline failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvTimeoutError {
    /// No message arrived before the deadline.
    #[error("timed out waiting for a message")]
    Timeout,
    /// No message, and none can come: the other end of a pipe died or
    /// was closed (a queue never says this).
    #[error("the channel is empty and its sending end is gone")]
    Disconnected,
    /// The segment is corrupt.
    #[error(transparent)]
    Corrupt(#[from] CorruptError),
    /// The backend failed.
    #[error(transparent)]
    Backend(BackendError),
}

/// A blocking receive without a timeout failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RecvError {
    /// No message, and none can come: the other end of a pipe died or
    /// was closed (a queue never says this).
    #[error("the channel is empty and its sending end is gone")]
    Disconnected,
    /// The segment is corrupt.
    #[error(transparent)]
    Corrupt(#[from] CorruptError),
    /// The backend failed.
    #[error(transparent)]
    Backend(BackendError),
}

impl TryRecvError {
    /// True for [`TryRecvError::Empty`].
    pub fn is_empty(&self) -> bool {
        matches!(self, TryRecvError::Empty)
    }

    /// True for [`TryRecvError::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, TryRecvError::Disconnected)
    }
}

impl RecvTimeoutError {
    /// True for [`RecvTimeoutError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, RecvTimeoutError::Timeout)
    }

    /// True for [`RecvTimeoutError::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, RecvTimeoutError::Disconnected)
    }
}

impl RecvError {
    /// True for [`RecvError::Disconnected`].
    pub fn is_disconnected(&self) -> bool {
        matches!(self, RecvError::Disconnected)
    }
}

impl From<RecvError> for RecvTimeoutError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Disconnected => RecvTimeoutError::Disconnected,
            RecvError::Corrupt(c) => RecvTimeoutError::Corrupt(c),
            RecvError::Backend(b) => RecvTimeoutError::Backend(b),
        }
    }
}

impl From<RecvError> for TryRecvError {
    fn from(e: RecvError) -> Self {
        match e {
            RecvError::Disconnected => TryRecvError::Disconnected,
            RecvError::Corrupt(c) => TryRecvError::Corrupt(c),
            RecvError::Backend(b) => TryRecvError::Backend(b),
        }
    }
}

impl RecvTimeoutError {
    /// As a `try_` form reports it: a timeout is [`TryRecvError::Empty`].
    pub fn into_try(self) -> TryRecvError {
        match self {
            RecvTimeoutError::Timeout => TryRecvError::Empty,
            RecvTimeoutError::Disconnected => TryRecvError::Disconnected,
            RecvTimeoutError::Corrupt(c) => TryRecvError::Corrupt(c),
            RecvTimeoutError::Backend(b) => TryRecvError::Backend(b),
        }
    }

    /// As a form without a deadline reports it; `None` for a timeout
    /// (which such a form never has: it waits on).
    pub fn into_untimed(self) -> Option<RecvError> {
        match self {
            RecvTimeoutError::Timeout => None,
            RecvTimeoutError::Disconnected => Some(RecvError::Disconnected),
            RecvTimeoutError::Corrupt(c) => Some(RecvError::Corrupt(c)),
            RecvTimeoutError::Backend(b) => Some(RecvError::Backend(b)),
        }
    }
}

/// [`task_done`](crate::Queue::task_done) was called more times than the
/// handle received messages.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TaskDoneError {
    /// More `task_done` calls than messages received through this handle.
    #[error("task_done called more times than messages were received")]
    TooManyCalls,
    /// The backend failed.
    #[error(transparent)]
    Backend(BackendError),
}

/// A `join` with a timeout or deadline failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JoinTimeoutError {
    /// Time ran out with `outstanding` messages sent and not yet marked done.
    #[error("join timed out with {outstanding} messages not yet marked done")]
    Timeout {
        /// Messages sent and not yet marked done when the wait ended.
        outstanding: u64,
    },
    /// The backend failed.
    #[error(transparent)]
    Backend(BackendError),
}

impl JoinTimeoutError {
    /// True for [`JoinTimeoutError::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, JoinTimeoutError::Timeout { .. })
    }

    /// Messages not yet marked done when the wait ended (0 for a backend
    /// failure).
    pub fn outstanding(&self) -> u64 {
        match self {
            JoinTimeoutError::Timeout { outstanding } => *outstanding,
            JoinTimeoutError::Backend(_) => 0,
        }
    }
}
