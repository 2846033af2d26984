//! Where a pool's tasks and results travel: the [`Backend`] trait, and
//! [`ShmBackend`], the shared-memory queues of this crate (the default).
//!
//! A pool needs two channels: *tasks* (the parent sends, every worker
//! receives) and *results* (every worker sends, the parent receives). The
//! parent creates both with [`Backend::create`] and hands their
//! [`name`](Backend::name)s to its workers, which open them with
//! [`Backend::open`]. The worker processes run the same executable and so
//! build the same backend value (the same `Pool::builder()` code runs in
//! both): a backend is configuration (a URL, a prefix), not a connection.
//!
//! What the pool relies on, which a backend must provide:
//!
//! - [`Channel`] and [`Joinable`] meaning, as documented there;
//! - **held until finished**: a message received as a guard
//!   ([`Channel::recv_with`], [`Channel::try_recv_ref`]) whose receiver dies
//!   before dropping the guard is offered again to another receiver (at
//!   least once). Workers hold a task's guard until its result has been
//!   sent, so a worker killed mid-task never loses it. Redis Streams give
//!   this with `XREADGROUP` + `XACK` on drop + `XAUTOCLAIM` of the pending
//!   entries of consumers that stopped heartbeating;
//! - messages of one sender arrive in the order they were sent;
//! - [`Backend::remove`] of a name that is already gone succeeds: every
//!   worker of a pool whose parent died calls it, since a killed parent
//!   cannot clean up after itself.
//!
//! Implementing it for another broker, in another crate:
//!
//! ```
//! use mulproc::pool::{Backend, ChannelSpec, ShmBackend};
//! use mulproc::{BackendError, Queue};
//!
//! /// Shared memory, with a log line per channel created.
//! #[derive(Clone, Debug, Default)]
//! struct Logged(ShmBackend);
//!
//! impl Backend for Logged {
//!     type Channel = Queue;
//!     fn create(&self, spec: &ChannelSpec) -> Result<Queue, BackendError> {
//!         let q = self.0.create(spec)?;
//!         eprintln!("pool channel {:?}: {}", spec.purpose, q.name());
//!         Ok(q)
//!     }
//!     fn name(&self, channel: &Queue) -> String {
//!         self.0.name(channel)
//!     }
//!     fn open(&self, name: &str) -> Result<Queue, BackendError> {
//!         self.0.open(name)
//!     }
//!     fn remove(&self, name: &str) -> Result<(), BackendError> {
//!         self.0.remove(name)
//!     }
//! }
//! # let b = Logged::default();
//! # let spec = ChannelSpec { purpose: mulproc::pool::Purpose::Tasks, capacity: 8, max_payload: 64 };
//! # let q = b.create(&spec)?;
//! # assert_eq!(b.open(&b.name(&q))?.max_payload(), 64);
//! # Ok::<(), BackendError>(())
//! ```

use crate::{
    BackendError, Channel, Joinable, Queue, QueueConfig, Received, SetupError, TryRecvError,
};

/// What a pool channel is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Parent → workers: one message per task.
    Tasks,
    /// Workers → parent: one message per result.
    Results,
}

/// The shape of a channel the pool asks a [`Backend`] to create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChannelSpec {
    /// Which of the pool's two channels this is.
    pub purpose: Purpose,
    /// Messages the channel must hold at once (a power of two, at least
    /// the pool's window plus what its workers hold). A backend without a
    /// bound may ignore it.
    pub capacity: u32,
    /// Largest payload in bytes the pool will send on it.
    pub max_payload: u32,
}

/// Creates and opens a pool's channels; see the [module docs](self) for
/// what a backend must guarantee.
pub trait Backend: Send + Sync + 'static {
    /// A channel handle (parent's or worker's).
    type Channel: Channel + Joinable;

    /// Creates a new channel under a name no other channel has, owned by
    /// the calling process (the pool's parent).
    fn create(&self, spec: &ChannelSpec) -> Result<Self::Channel, BackendError>;

    /// The name of a channel made by [`create`](Backend::create), as
    /// [`open`](Backend::open) takes it in a worker.
    fn name(&self, channel: &Self::Channel) -> String;

    /// Opens a channel made by [`create`](Backend::create) in another
    /// process.
    fn open(&self, name: &str) -> Result<Self::Channel, BackendError>;

    /// Removes a channel's name (and what it holds), so that nothing is
    /// left behind. Succeeds if the name is already gone. Handles still
    /// open may go on working or fail; the pool calls it only when every
    /// process is done with the channel, or its parent is dead.
    fn remove(&self, name: &str) -> Result<(), BackendError>;

    /// True if workers on other machines can join the pools this backend
    /// carries ([`RemoteBackend`], [`Builder::serve`](super::Builder::serve)):
    /// such a pool may then run with no local worker at all
    /// ([`Builder::workers`](super::Builder::workers)`(0)`). Default: false.
    fn remote(&self) -> bool {
        false
    }
}

/// A [`Backend`] whose pools workers on other machines can find and join
/// ([`Builder::serve`](super::Builder::serve)): the pool has a name known
/// to both sides (in the backend's configuration), and each run of it (one
/// parent, from its start to its shutdown or death) has channels of its
/// own, which a worker finds with [`find_run`](RemoteBackend::find_run).
///
/// What a remote worker relies on, besides what [`Backend`] promises:
///
/// - **held until finished**, across machines: a worker that dies (or
///   whose machine does) holding a task's guard has the task delivered
///   again to another receiver, flagged by
///   [`redelivered`](RemoteBackend::redelivered);
/// - **a run ends visibly**: once its parent has removed its channels, or
///   died (a backend may find that out with a lease), `find_run` no
///   longer returns it.
pub trait RemoteBackend: Backend {
    /// The channels (tasks, results) of the pool's run going on now, as
    /// [`Backend::open`] takes them; `None` if no parent runs the pool now.
    /// A backend may remove here what a dead parent left behind.
    fn find_run(&self) -> Result<Option<[String; 2]>, BackendError>;

    /// True if the message `guard` holds was delivered before, to a
    /// receiver that died (or gave it up) before finishing it.
    fn redelivered(&self, guard: &<Self::Channel as Channel>::Guard<'_>) -> bool;

    /// Counts one more start of a redelivered task of `run` (by its pool
    /// id); returns the count so far, this one included. Shared by every
    /// worker of the run, so that a task that kills every worker that runs
    /// it is found out and given up ([`Builder::max_attempts`](super::Builder::max_attempts)).
    fn count_attempt(&self, run: &[String; 2], task: u64) -> Result<u32, BackendError>;

    /// True if `error`, from a channel of a run, says that the channel is
    /// gone (the run ended and its channels were removed).
    fn is_gone(&self, error: &BackendError) -> bool;

    /// Receives up to `max` more messages that wait now, holding each,
    /// into `into`. The default takes them one [`try_recv_ref`](Channel::try_recv_ref)
    /// at a time; a broker may take them in one round trip.
    fn take_more<'c>(
        &self,
        channel: &'c Self::Channel,
        max: usize,
        into: &mut Vec<<Self::Channel as Channel>::Guard<'c>>,
    ) -> Result<(), TryRecvError> {
        for _ in 0..max {
            match channel.try_recv_ref() {
                Ok(g) => into.push(g),
                Err(TryRecvError::Empty) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Ends the hold of every guard of `guards` (their tasks are
    /// finished). The default finishes them one at a time; a broker may
    /// acknowledge them together. An error to end a hold (another
    /// receiver took the message over meanwhile) is not reported: the
    /// task then runs again there, and the parent keeps one result.
    fn finish_all<'c>(&self, guards: Vec<<Self::Channel as Channel>::Guard<'c>>)
    where
        Self::Channel: 'c,
    {
        for g in guards {
            let _ = g.finish();
        }
    }
}

/// The default backend: a shared-memory [`Queue`] per channel, named by
/// [`Queue::create_unique`], removed from `/dev/shm` by the parent at
/// shutdown (and by the workers if the parent dies).
#[derive(Clone, Copy, Debug, Default)]
pub struct ShmBackend;

impl Backend for ShmBackend {
    type Channel = Queue;

    fn create(&self, spec: &ChannelSpec) -> Result<Queue, BackendError> {
        Queue::create_unique(QueueConfig::new(spec.capacity, spec.max_payload))
            .map_err(BackendError::new)
    }

    fn name(&self, channel: &Queue) -> String {
        channel.name().to_owned()
    }

    fn open(&self, name: &str) -> Result<Queue, BackendError> {
        Queue::open(name).map_err(BackendError::new)
    }

    fn remove(&self, name: &str) -> Result<(), BackendError> {
        match Queue::remove(name) {
            Ok(()) | Err(SetupError::NotFound { .. }) => Ok(()),
            Err(e) => Err(BackendError::new(e)),
        }
    }
}
