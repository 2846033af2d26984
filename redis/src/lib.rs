//! # mulproc-redis
//!
//! mulproc's channel interface ([`mulproc::Channel`], [`mulproc::Joinable`])
//! over Redis Streams, so that a program written for a shared-memory
//! [`mulproc::Queue`] runs its workers on many machines by pointing them at
//! one Redis server.
//!
//! ```no_run
//! use std::time::Duration;
//! use mulproc::{Channel, Message, Request};
//! use mulproc_redis::RedisQueue;
//!
//! // On one machine:
//! let jobs = RedisQueue::create("redis://10.0.0.5:6379/", "jobs", 10_000, 4096)?;
//! jobs.send(Message::new(Request::DO, b"work item".as_slice()))?;
//!
//! // On any machine:
//! let jobs = RedisQueue::open("redis://10.0.0.5:6379/", "jobs")?;
//! let task = jobs.recv_timeout(Duration::from_secs(5))?;
//! assert_eq!(task.data, b"work item");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## A pool whose workers run anywhere
//!
//! [`RedisBackend`] carries a [`mulproc::pool::Pool`]. With a name
//! ([`RedisBackend::pool`]), workers on any machine join the pool with
//! [`Builder::serve`](mulproc::pool::Builder::serve) (same URL, same pool
//! name, same builder settings), and the parent may have no local worker
//! at all; [`AnyBackend`] picks shared memory or Redis from a URL
//! (`shm`, `redis://host:port/db`, `redis://host:port/db/pool`).
//!
//! ```no_run
//! use mulproc::pool::Pool;
//! use mulproc_redis::RedisBackend;
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let backend = RedisBackend::new("redis://10.0.0.5:6379/0")?.pool("jobs")?;
//! let builder = Pool::builder().workers(0).backend(backend);
//! if std::env::args().any(|a| a == "--serve") {
//!     loop {
//!         builder.serve(|x: u64| x * x)?; // one run of the pool, then the next
//!     }
//! }
//! let mut pool = builder.start(|x: u64| x * x)?;
//! let total: u64 = pool.map(0..100u64).map(|r| r.unwrap()).sum();
//! # let _ = total;
//! pool.shutdown()?;
//! # Ok(())
//! # }
//! ```
//!
//! A remote worker holds each task (pending in the stream, heartbeated)
//! until its result is sent, so a worker or machine that dies has its
//! tasks taken over by others after the claim time; the parent keeps one
//! result per task. A redelivered task runs alone and its starts are
//! counted in Redis, so a task that keeps killing workers is given up
//! ([`TaskError::Killed`](mulproc::pool::TaskError::Killed)). The parent
//! holds a lease on the pool's name; when it ends (shutdown, or death and
//! the lease running out) `serve` returns, and the dead run's keys are
//! removed by whoever looks next.
//!
//! ## How it maps onto Redis
//!
//! It needs Redis 6.2 or later (`XAUTOCLAIM`, `XTRIM MINID`); 7.0 is
//! tested.
//!
//! A queue is a stream with a consumer group (`mulproc:{name}:s`, group
//! `g`), a stream per recipient id for addressed messages
//! (`mulproc:{name}:to:<id>`), and a metadata hash (`mulproc:{name}:meta`)
//! with the shape and the counters. Every handle is a consumer of its own.
//!
//! - **send** is a Lua script that checks the capacity and `XADD`s in one
//!   atomic step: a queue holding `capacity` messages not yet acknowledged
//!   refuses with [`TrySendError::Full`](mulproc::TrySendError::Full), so
//!   the retry-limited `send` keeps its meaning. A batch
//!   ([`try_send_batch`](mulproc::Channel::try_send_batch)) is one script
//!   call.
//! - **receive** is one pipelined round trip: `XAUTOCLAIM` of entries idle
//!   past the claim time (see below) and `XREADGROUP` of new ones, on the
//!   handle's own recipient stream and the shared one; it takes the oldest
//!   entry and hands back the others. A receive that waits then blocks in
//!   `XREADGROUP … BLOCK`, never past its deadline, in slices of
//!   [`RedisOptions::poll`].
//! - **the guard** ([`RedisGuard`]): the message stays in this consumer's
//!   pending list until the guard's `finish` or drop acknowledges it
//!   (`XACK`; acknowledged entries are trimmed from the stream's old end). Until then a heartbeat thread
//!   refreshes its idle time every quarter of
//!   [`RedisConfig::claim_after`].
//! - **death of a consumer**: its held messages stop being heartbeated;
//!   once idle past `claim_after`, the next receive of any live consumer
//!   takes them over (`XAUTOCLAIM`, which goes through a long pending list
//!   a part per receive) and they are delivered again: at least once, as
//!   in shared memory, and before newer messages. Consumers that hold
//!   nothing and have been silent for four claim times are removed from
//!   the group (so `XINFO CONSUMERS` does not grow with every process
//!   that died).
//! - **`task_done` / `join`**: counters in the metadata hash; `join`
//!   returns once every message sent has been marked done.
//!
//! ## Selective receives
//!
//! A message addressed to id `P` (`Message::to(P)`) goes to `P`'s own
//! stream and is received only by handles whose [`pid`](mulproc::Channel::pid)
//! is `P` (by default the process id; [`RedisOptions::id`] sets another,
//! which processes on several machines should do, since process ids
//! repeat). So [`recv_for_me`](mulproc::Channel::recv_for_me) never waits
//! behind other processes' messages, and a plain `recv` takes messages for
//! anyone and for this handle, never those addressed to someone else
//! (unlike shared memory, where a plain `recv` takes any message).
//!
//! Other filters ([`recv_from`](mulproc::Channel::recv_from),
//! [`recv_where`](mulproc::Channel::recv_where)) read ahead up to 16
//! entries per stream, take the oldest that passes, and hand the others
//! back at once (their idle time is set past the claim time), where any
//! consumer's next reclaim picks them up: a rejected message is delayed
//! by up to [`RedisOptions::poll`] for the others, never lost, and its
//! delivery count grows.
//!
//! ## Failures
//!
//! - A lost connection is made again with backoff (10 ms doubling to 1 s)
//!   for up to [`RedisOptions::reconnect_for`]. Sends and `task_done`
//!   carry a per-handle sequence number that the server remembers, so a
//!   retry after a lost reply does not add the message twice; a send
//!   whose retries all failed after it may have reached the server is
//!   reported as
//!   [`TrySendError::Backend`](mulproc::TrySendError::Backend) with
//!   [`BackendError::is_outcome_unknown`](mulproc::BackendError::is_outcome_unknown)
//!   set, never as success.
//! - A process paused past the claim time loses its held messages to
//!   others; its `finish` then says [`RedisQueueError::Reclaimed`].
//! - Entries of another shape in the stream are acknowledged and reported
//!   once as [`RedisQueueError::Malformed`].
//!
//! ## When Redis itself restarts
//!
//! Redis keeps what its persistence kept. Every step of the queue is one
//! script or command, so a restart never leaves a half-done step (a
//! message added but not counted, say).
//!
//! - With AOF and `appendfsync always`: nothing that a call reported as
//!   done is lost. Messages sent, acknowledgements, the pending lists
//!   (who holds what) and the counters all come back; handles reconnect
//!   and go on; held messages are acknowledged as usual (or reclaimed
//!   if their holder died meanwhile).
//! - With AOF and `appendfsync everysec` (Redis' default when AOF is on):
//!   up to about one second of writes before the crash is lost: sends
//!   reported as done may vanish, acknowledged messages may come back
//!   and be delivered again, and `join` may wait for messages that are
//!   gone (it counts them as sent).
//! - Without AOF (RDB snapshots only, or none): everything since the last
//!   snapshot is lost, or the whole queue, whose handles then fail with
//!   [`RedisQueueError::QueueGone`].
//!
//! A server process that is killed is not the same as a machine that
//! loses power: with `everysec`, Redis normally writes the AOF before it
//! replies and fsyncs it every second, so a killed server whose machine
//! stays up usually loses nothing; but while an fsync is slow, Redis may
//! hold back that write for up to two seconds, and those writes are lost
//! with the process. Only `always` makes a promise; the tests check it
//! (`a_server_restart_with_aof_always_loses_nothing`).
#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

mod any;
mod conn;
mod error;
mod pool;
mod queue;
mod scripts;

pub use any::{backend_from_url, AnyBackend, AnyChannel, AnyGuard};
pub use error::{RedisQueueError, RedisSetupError};
pub use pool::RedisBackend;
pub use queue::{RedisConfig, RedisGuard, RedisOptions, RedisQueue};
