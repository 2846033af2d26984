//! A queue's structures: the segment header, the control block of crash
//! recovery (lock, repair record, counters, handle table), the slot header.

use super::CachePadded;
use super::LayoutInfo;
#[cfg(not(loom))]
use super::MAX_HANDLES;
use crate::message::StoredHeader;
use crate::sync::{AtomicU32, AtomicU64};
use crate::wait::EventCount;

/// Counters behind `join`/`task_done` (JoinableQueue semantics).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct JoinCounters {
    /// Messages marked done by `task_done`, plus tickets that carried no
    /// message for the user (abandoned reservations, corrupt messages
    /// skipped). A queue is joined when `done_count == tail`: every claimed
    /// ticket was received and marked done. Keeping join off the send path costs
    /// senders nothing: `tail` already counts what was sent.
    pub done_count: AtomicU64,
    /// Joiners sleep here; notified (all) by `task_done` when it makes
    /// `done_count` reach `tail`.
    pub joined: EventCount,
}

/// Line 1 of a queue.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct QueueInit {
    /// `INIT_DONE` once initialisation is complete. Written last with
    /// Release by the creator; read with Acquire by `open` (pairs with it).
    pub init: AtomicU32,
    /// Non-zero once a selective receiver has passed over a published
    /// message. Until then no message can wait behind read slots, so a
    /// full ring is simply full and senders skip looking for a message to
    /// move (a scan of every slot, see `Ring::begin_move`). Only ever set.
    pub passed_over: AtomicU32,
}

/// The segment header.
#[repr(C)]
#[derive(Debug)]
pub(crate) struct SegmentHeader {
    pub info: CachePadded<LayoutInfo>,
    /// The init word, and a flag written at most once afterwards: both
    /// read far more often than written.
    pub init: CachePadded<QueueInit>,
    /// Enqueue position: the next ticket a producer claims. Only grows.
    pub tail: CachePadded<AtomicU64>,
    /// Dequeue position: the next ticket a consumer claims. Only grows;
    /// `head <= tail` always.
    pub head: CachePadded<AtomicU64>,
    /// Receivers sleep here; bumped after a publish when one sleeps.
    pub not_empty: CachePadded<EventCount>,
    /// Senders sleep here; bumped after a release when one sleeps.
    pub not_full: CachePadded<EventCount>,
    pub join: CachePadded<JoinCounters>,
    /// Selective receivers (with a predicate) sleep here; every publish
    /// wakes all of them, since any one may be the message's taker.
    pub selective: CachePadded<EventCount>,
}

/// A queue's crash-recovery state, right after its [`SegmentHeader`]
/// (`CONTROL_SIZE` bytes). The data path never touches it, except each
/// handle's own `outstanding` count.
#[cfg(not(loom))]
#[repr(C)]
#[derive(Debug)]
pub(crate) struct ControlBlock {
    /// Serialises recovery (fencing stuck claims, re-publishing a dead
    /// receiver's message, settling a dead handle's tasks) and the reset of
    /// a stale segment. Robust: a holder that dies hands the lock, and the
    /// unfinished repair, to the next locker.
    pub lock: crate::control::ControlLock,
    /// The repair in progress, written under the lock before the repair's
    /// first step and cleared after its last, so a locker that finds the
    /// previous holder dead can finish it.
    pub repair: CachePadded<RepairRecord>,
    /// What recovery did, since the segment was created.
    pub stats: CachePadded<RecoveryCounters>,
    /// One line per handle slot; see [`HandleEntry`].
    pub handles: [CachePadded<HandleEntry>; MAX_HANDLES],
}

/// The repair a recoverer is in the middle of (see `recovery`).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RepairRecord {
    /// 0 = none; otherwise a `RepairKind` number.
    pub kind: AtomicU32,
    pub _pad: u32,
    /// Ticket of the slot being repaired.
    pub ticket: AtomicU64,
}

/// Counters of what recovery did (all only grow).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct RecoveryCounters {
    /// Claims of dead or stuck producers given up (their slots skipped).
    pub skipped_claims: AtomicU64,
    /// Messages held by dead receivers and offered again.
    pub redelivered: AtomicU64,
    /// Of `skipped_claims`, those whose holder was alive (stopped or too
    /// slow) when fenced.
    pub fenced_live: AtomicU64,
    /// Recoveries finished by a locker after the previous holder of the
    /// control lock died in the middle of one.
    pub handovers: AtomicU64,
    /// Tasks received by handles that died before `task_done`, counted
    /// done so `join` returns.
    pub abandoned_tasks: AtomicU64,
    /// Moves of a dead sender (selective-receive compaction) undone.
    pub undone_moves: AtomicU64,
    /// Slots withheld right now (fenced live holders not yet gone).
    pub withheld: AtomicU64,
    /// Slots freed for receivers that died between moving `head` past
    /// them and freeing them.
    pub finished_releases: AtomicU64,
}

/// One handle's registration. A handle owns entry `i` while it holds the
/// exclusive OFD lock on byte `ofd::HANDLES + i` of the segment's file; the
/// kernel drops that lock when the process dies, which is how others learn
/// of the death (pid reuse cannot fool it).
#[repr(C)]
#[derive(Debug)]
pub(crate) struct HandleEntry {
    /// `HANDLE_FREE` or `HANDLE_IN_USE`.
    pub state: AtomicU32,
    /// Bumped by each new owner of the entry; owner words carry its low
    /// bits, so a claim of a dead predecessor is never taken for the new
    /// owner's.
    pub generation: AtomicU32,
    /// Pid of the owner (informational).
    pub pid: AtomicU32,
    pub _pad: u32,
    /// Messages this handle received and has not marked done (`join`).
    pub outstanding: AtomicU64,
    /// The ticket this handle is about to claim as a receiver, stored
    /// before the claiming CAS: tells a recoverer who holds a slot whose
    /// owner word the holder had no time to write.
    pub claiming: AtomicU64,
    /// The tickets `sending_from..sending_to` this handle is about to claim
    /// as a sender, stored before the claiming CAS of `tail` (which
    /// releases them): tells a recoverer who holds a claim whose owner word
    /// the holder had no time to write. `sending_to` is cleared when a
    /// claim attempt fails.
    pub sending_from: AtomicU64,
    pub sending_to: AtomicU64,
}

/// [`HandleEntry::state`]: nobody owns the entry.
pub(crate) const HANDLE_FREE: u32 = 0;
/// [`HandleEntry::state`]: a handle owns (or owned, until settled) it.
pub(crate) const HANDLE_IN_USE: u32 = 1;

/// One slot's header.
#[repr(C, align(64))]
#[derive(Debug)]
pub struct SlotHeader {
    /// The slot's sequence word. For ticket `t` of this slot
    /// (`t % capacity == index`):
    /// - `seq == t`: free; the producer holding ticket `t` may fill it;
    /// - `seq == t + 1`: published; the consumer of ticket `t` may read it;
    /// - `seq == t + capacity`: read and released; free for ticket
    ///   `t + capacity`.
    ///
    /// Producers publish with a compare-and-swap `t -> t + 1` and consumers
    /// release with `t + 1 -> t + capacity`, so a holder that was fenced by a
    /// recoverer learns it instead of overwriting.
    pub(crate) seq: AtomicU64,
    /// Who holds the slot's current claim (see `recovery::owner_word`): handle
    /// entry, its generation, the role (sender, receiver, mover) and the
    /// ticket. Written Relaxed right after each claim; recovery reads it to
    /// decide whether the holder is alive.
    pub(crate) owner: AtomicU64,
    /// The message header (see [`StoredHeader`]), written by the producer
    /// before the publishing CAS (Release) and read by the consumer after
    /// its Acquire load of `seq`.
    pub(crate) header: StoredHeader,
    /// Reserved (0), for crash recovery.
    pub(crate) flags: AtomicU32,
    _pad: [u32; 7],
}

impl SlotHeader {
    /// A slot in its initial state for index `seq` (heap models and tests).
    #[cfg(loom)]
    pub fn new(seq: u64) -> SlotHeader {
        SlotHeader {
            seq: AtomicU64::new(seq),
            owner: AtomicU64::new(0),
            header: StoredHeader::new(),
            flags: AtomicU32::new(0),
            _pad: [0; 7],
        }
    }
}
