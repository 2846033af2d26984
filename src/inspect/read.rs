//! Opening a segment read-only, checking it, and reading its state.
//!
//! Every load here is Relaxed (atomic loads are allowed on read-only
//! memory; read-modify-writes are not), followed by an Acquire fence where
//! what comes after must not be older than what was just read.

use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::ptr::{self, addr_of};

use super::{
    Anomaly, Claim, ClaimKind, Contents, ControlLockState, FileInfo, HandleInfo, HandleStatus,
    Holder, InspectError, Layout, PipeDirectionState, PipeEndInfo, PipeState, Problem,
    QueueSleepers, QueueState, RepairInProgress, RepairKind, SlotCounts, Snapshot, SCAN_LIMIT,
};
use crate::error::{CorruptKind, SetupError};
use crate::layout::{
    self, ChannelKind, ControlBlock, Geometry, HandleEntry, LayoutError, LayoutInfo, PipeHeader,
    PipeSlotHeader, SegmentHeader, SlotHeader, HANDLE_FREE, HANDLE_IN_USE, HEADER_SIZE, INIT_DONE,
    LAYOUT_VERSION, MAX_HANDLES, MAX_SEGMENT_SIZE, PIPE_SLOT_HEADER_SIZE, QUEUE_HEADER_SIZE,
};
use crate::queue::RecoveryStats;
use crate::recovery::{self, Repair, Role, FENCED_MARK, GEN_MASK};
use crate::ring::{HELD, QUARANTINED, TAKEN};
use crate::spsc::SlotState;
use crate::sync::{fence, AtomicU32, AtomicU64, Ordering};
use crate::sys::{self, ofd, ReadMapping};

/// Pipe positions at or above this are corrupt (as in `pipe.rs`: they grow
/// by one per message).
const PIPE_POSITION_LIMIT: u64 = 1 << 62;
/// Attempts at reading `head`, `tail`, `head` with `head` unchanged.
const STABLE_READS: usize = 8;

fn ld32(a: &AtomicU32) -> u32 {
    a.load(Ordering::Relaxed)
}

fn ld64(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// The file's owner, mode, size and age.
pub(super) fn file_info(m: &std::fs::Metadata) -> FileInfo {
    FileInfo {
        uid: m.uid(),
        gid: m.gid(),
        mode: m.mode() & 0o7777,
        size: m.len(),
        created: m.created().or_else(|_| m.modified()).ok(),
    }
}

/// A segment opened read-only and mapped `PROT_READ`, its layout checked.
pub(super) struct View {
    fd: OwnedFd,
    map: ReadMapping,
    pub(super) geo: Geometry,
    pub(super) info: LayoutInfo,
}

/// A segment opened for reading: the file, whether anybody uses it, and
/// either a checked view or why its contents cannot be trusted.
pub(super) struct Opened {
    pub(super) file: FileInfo,
    pub(super) in_use: bool,
    pub(super) view: Result<View, Problem>,
}

/// Opens `name` read-only and checks it as `Segment::open` does (magic,
/// version, init word, layout fields against the formula and the size),
/// without the owner and mode checks: reading another user's segment is
/// fine where the permissions allow it.
pub(super) fn open(name: &str) -> Result<Opened, InspectError> {
    let os_name = crate::segment::os_name(name).map_err(|e| match e {
        SetupError::InvalidName { name, problem } => InspectError::InvalidName { name, problem },
        other => InspectError::Setup(other),
    })?;
    let fd =
        sys::shm_open_read_only(&os_name).map_err(|e| InspectError::os(name, "shm_open", e))?;
    let meta = fd
        .try_clone()
        .map(std::fs::File::from)
        .and_then(|f| f.metadata())
        .map_err(|e| InspectError::os(name, "fstat", e))?;
    let file = file_info(&meta);
    let in_use = probe(&fd, ofd::USERS);
    let view = check(name, fd, file.size, in_use)?;
    Ok(Opened { file, in_use, view })
}

/// True if some other open file description holds a lock on `byte` (an
/// error of the probe counts as held, as in recovery: never call a holder
/// dead on a guess).
fn probe(fd: &OwnedFd, byte: i64) -> bool {
    ofd::held_by_other(fd, byte, ofd::Kind::Exclusive).unwrap_or(true)
}

fn check(
    name: &str,
    fd: OwnedFd,
    size: u64,
    in_use: bool,
) -> Result<Result<View, Problem>, InspectError> {
    if size == 0 {
        return Ok(Err(Problem::InitIncomplete {
            creator_pid: 0,
            creator_alive: in_use,
        }));
    }
    if size < HEADER_SIZE as u64 {
        return Ok(Err(Problem::Corrupt(CorruptKind::Truncated {
            expected: HEADER_SIZE as u64,
            found: size,
        })));
    }
    let len = size.min(MAX_SEGMENT_SIZE) as usize;
    let map = ReadMapping::map(&fd, len).map_err(|e| InspectError::os(name, "mmap", e))?;
    let hdr = map.as_ptr().cast::<SegmentHeader>();
    // SAFETY: the mapping holds at least HEADER_SIZE bytes, enough for a
    // SegmentHeader, and is page aligned; an AtomicU32 accepts any bits,
    // and a Relaxed load is allowed on read-only memory.
    let init = ld32(unsafe { &*addr_of!((*hdr).init.0.init) });
    // Acquire: pairs with the creator's Release store of the init word;
    // the layout it wrote before is visible.
    fence(Ordering::Acquire);
    // SAFETY: as above; LayoutInfo is Pod, so any bytes are a valid value,
    // and the volatile copy forms no reference to memory others write.
    let info: LayoutInfo = unsafe { ptr::read_volatile(addr_of!((*hdr).info.0)) };
    if info.magic != layout::MAGIC {
        if info.magic == 0 && init != INIT_DONE {
            return Ok(Err(Problem::InitIncomplete {
                creator_pid: info.creator_pid,
                creator_alive: in_use,
            }));
        }
        return Ok(Err(Problem::NotMulproc));
    }
    if info.version != LAYOUT_VERSION {
        return Ok(Err(Problem::IncompatibleVersion {
            found: info.version,
            expected: LAYOUT_VERSION,
        }));
    }
    if init != INIT_DONE {
        return Ok(Err(Problem::InitIncomplete {
            creator_pid: info.creator_pid,
            creator_alive: in_use,
        }));
    }
    let geo = match layout::validate(&info, map.len() as u64) {
        Ok(geo) => geo,
        Err(LayoutError::BadMagic) => return Ok(Err(Problem::NotMulproc)),
        Err(LayoutError::Version(found)) => {
            return Ok(Err(Problem::IncompatibleVersion {
                found,
                expected: LAYOUT_VERSION,
            }))
        }
        Err(LayoutError::Corrupt(kind)) => return Ok(Err(Problem::Corrupt(kind))),
    };
    Ok(Ok(View { fd, map, geo, info }))
}

pub(super) fn snapshot(name: &str) -> Result<Snapshot, InspectError> {
    let opened = open(name)?;
    let contents = opened.view.map(|v| match v.geo.kind {
        ChannelKind::Queue => Contents::Queue(v.queue_state()),
        ChannelKind::Pipe => Contents::Pipe(v.pipe_state()),
    });
    Ok(Snapshot {
        name: name.to_owned(),
        file: opened.file,
        in_use: opened.in_use,
        contents,
    })
}

/// One handle entry, each field read once.
#[derive(Clone, Copy, Default)]
struct EntryRead {
    state: u32,
    generation: u32,
    pid: u32,
    outstanding: u64,
    claiming: u64,
    sending_from: u64,
    sending_to: u64,
    locked: bool,
}

impl EntryRead {
    fn in_use(&self) -> bool {
        self.state == HANDLE_IN_USE
    }

    fn alive(&self) -> bool {
        self.in_use() && self.locked
    }
}

impl View {
    fn layout(&self) -> Layout {
        Layout {
            kind: self.geo.kind,
            version: self.info.version,
            capacity: self.geo.capacity,
            max_payload: self.geo.max_payload,
            stride: self.geo.stride,
            data_offset: self.geo.data_offset,
            total_size: self.geo.total_size,
            creator_pid: self.info.creator_pid,
            creator_uid: self.info.creator_uid,
        }
    }

    fn header(&self) -> *const SegmentHeader {
        self.map.as_ptr().cast()
    }

    fn header_ref(&self) -> &SegmentHeader {
        // SAFETY: the mapping holds a whole header (checked in `check`),
        // page aligned. The fields read through it are atomics, valid for
        // any bits, and only loaded (allowed on read-only memory); the
        // layout copy is read with `read_volatile` in `check`, never here.
        unsafe { &*self.header() }
    }

    /// A queue's control block (`validate` checked the mapping holds it).
    fn control(&self) -> &ControlBlock {
        debug_assert_eq!(self.geo.kind, ChannelKind::Queue);
        // SAFETY: a validated queue's mapping holds QUEUE_HEADER_SIZE bytes
        // at least; the block at HEADER_SIZE is 64-aligned, made of atomics
        // (valid for any bits, only loaded) and padding never read.
        unsafe { &*self.map.as_ptr().add(HEADER_SIZE).cast::<ControlBlock>() }
    }

    /// A queue's slot headers.
    pub(super) fn slots(&self) -> &[SlotHeader] {
        // SAFETY: `validate` checked that the mapping holds the slot header
        // array (capacity × 64 bytes at QUEUE_HEADER_SIZE, 64-aligned);
        // SlotHeader is atomics and padding, valid for any bits.
        unsafe {
            std::slice::from_raw_parts(
                self.map
                    .as_ptr()
                    .add(QUEUE_HEADER_SIZE)
                    .cast::<SlotHeader>(),
                self.geo.capacity as usize,
            )
        }
    }

    /// The payload area of queue slot `index` (`max_payload` bytes).
    pub(super) fn queue_payload(&self, index: usize) -> *const u8 {
        let index = index % self.geo.capacity as usize;
        let off = self.geo.data_offset as usize + index * self.geo.stride as usize;
        // SAFETY: `off + stride <= total_size <= mapping length` for every
        // index below the capacity (layout formula, validated).
        unsafe { self.map.as_ptr().add(off) }
    }

    fn pipe_header(&self) -> &PipeHeader {
        debug_assert_eq!(self.geo.kind, ChannelKind::Pipe);
        // SAFETY: a pipe's mapping holds HEADER_SIZE bytes at least, and
        // PipeHeader is exactly that (checked at compile time in layout.rs),
        // page aligned; the fields read are atomics, only loaded (the
        // layout copy is never read through this reference).
        unsafe { &*self.map.as_ptr().cast::<PipeHeader>() }
    }

    /// Start of pipe direction `dir`'s slot `index` (header, then payload).
    pub(super) fn pipe_slot_ptr(&self, dir: usize, index: usize) -> *const u8 {
        let cap = self.geo.capacity as usize;
        let off = self.geo.data_offset as usize
            + ((dir & 1) * cap + index % cap) * self.geo.stride as usize;
        // SAFETY: `off + stride <= HEADER_SIZE + 2 × capacity × stride =
        // total_size <= mapping length` (layout formula, validated).
        unsafe { self.map.as_ptr().add(off) }
    }

    pub(super) fn pipe_slot(&self, dir: usize, index: usize) -> &PipeSlotHeader {
        // SAFETY: the slot starts 64-aligned (data offset and stride are
        // multiples of 64 in a page-aligned mapping) with a 32-byte header;
        // PipeSlotHeader is all atomics, valid for any bits.
        unsafe { &*self.pipe_slot_ptr(dir, index).cast::<PipeSlotHeader>() }
    }

    /// Payload of pipe direction `dir`'s slot `index`.
    pub(super) fn pipe_payload(&self, dir: usize, index: usize) -> *const u8 {
        // SAFETY: the payload follows the 32-byte header inside the slot's
        // `stride >= 32 + max_payload` bytes.
        unsafe { self.pipe_slot_ptr(dir, index).add(PIPE_SLOT_HEADER_SIZE) }
    }

    /// `head` and `tail`, read as head, tail, head until `head` did not move
    /// in between (so `tail` belongs to that `head`), at most a few times.
    /// The flag says whether the pair is such a stable one.
    pub(super) fn queue_positions(&self) -> (u64, u64, bool) {
        let h = self.header_ref();
        let mut head = ld64(&h.head.0);
        for _ in 0..STABLE_READS {
            let tail = ld64(&h.tail.0);
            let again = ld64(&h.head.0);
            if again == head {
                // Acquire: pairs with the claiming CAS of `tail` (Release),
                // so the slot words of the tickets it counts are no older
                // than the claims.
                fence(Ordering::Acquire);
                return (head, tail, true);
            }
            head = again;
        }
        let tail = ld64(&h.tail.0);
        fence(Ordering::Acquire);
        (head, tail, false)
    }

    /// The tickets from `head` worth looking at, and the anomaly if the
    /// positions are ones no honest run produces.
    pub(super) fn queue_window(&self) -> (u64, u64, Option<Anomaly>) {
        let cap = u64::from(self.geo.capacity);
        let (head, tail, stable) = self.queue_positions();
        let flags = HELD | TAKEN | QUARANTINED;
        // With a stable pair, `head <= tail <= head + capacity` holds in
        // every honest state (a slot is free for the next lap only after
        // `head` passed it).
        if (head | tail) & flags != 0 || tail < head || stable && tail - head > cap {
            return (head, tail, Some(Anomaly::Positions { head, tail }));
        }
        (head, tail, None)
    }

    fn read_entries(&self) -> Vec<EntryRead> {
        let control = self.control();
        (0..MAX_HANDLES)
            .map(|i| {
                let e: &HandleEntry = &control.handles[i].0;
                let state = ld32(&e.state);
                // Acquire: pairs with the Release store of `state` by its
                // registering handle; its fields are no older.
                fence(Ordering::Acquire);
                EntryRead {
                    state,
                    generation: ld32(&e.generation),
                    pid: ld32(&e.pid),
                    outstanding: ld64(&e.outstanding),
                    claiming: ld64(&e.claiming),
                    sending_from: ld64(&e.sending_from),
                    sending_to: ld64(&e.sending_to),
                    locked: probe(&self.fd, ofd::HANDLES + i as i64),
                }
            })
            .collect()
    }

    fn queue_state(&self) -> QueueState {
        let cap = u64::from(self.geo.capacity);
        let max = self.geo.max_payload;
        let mut anomalies = Vec::new();
        let entries = self.read_entries();
        let mut handles = Vec::new();
        for (index, e) in entries.iter().enumerate() {
            let status = match (e.state, e.locked) {
                (HANDLE_IN_USE, true) => HandleStatus::Live,
                (HANDLE_IN_USE, false) => HandleStatus::Dead,
                (HANDLE_FREE, true) => HandleStatus::Registering,
                (HANDLE_FREE, false) => continue,
                (state, locked) => {
                    anomalies.push(Anomaly::HandleState { index, state });
                    if !locked {
                        continue;
                    }
                    HandleStatus::Live
                }
            };
            handles.push(HandleInfo {
                index,
                status,
                generation: e.generation,
                pid: e.pid,
                outstanding: e.outstanding,
                claiming: (e.claiming != u64::MAX).then_some(e.claiming),
                sending: (e.sending_to != 0).then_some((e.sending_from, e.sending_to)),
            });
        }

        let (head, tail, bad) = self.queue_window();
        let scanned = if let Some(a) = bad {
            anomalies.push(a);
            0
        } else {
            // At most a ring (more only in a pair read while `head` kept
            // moving).
            (tail - head).min(cap).min(SCAN_LIMIT)
        };
        let slots = self.slots();
        let mut counts = SlotCounts::default();
        let mut bytes_waiting = 0u64;
        let mut claims = Vec::new();
        for t in head..head + scanned {
            let slot = &slots[(t & (cap - 1)) as usize];
            let seq = ld64(&slot.seq);
            // Acquire: what the word's writer wrote before it (owner word,
            // header fields) is no older than the word.
            fence(Ordering::Acquire);
            let owner = ld64(&slot.owner);
            let mut claim = |kind, (holder, signed)| {
                claims.push(Claim {
                    ticket: t,
                    slot: (t & (cap - 1)) as usize,
                    kind,
                    holder,
                    signed,
                })
            };
            if seq == t + 1 {
                counts.waiting += 1;
                let len = ld32(&slot.header.len);
                if len > max {
                    anomalies.push(Anomaly::Length {
                        ticket: t,
                        len,
                        max,
                    });
                } else {
                    bytes_waiting += u64::from(len);
                }
            } else if seq == (t + 1) | HELD {
                counts.held += 1;
                claim(
                    ClaimKind::Held,
                    holder_of(&entries, owner, &[Role::Recv, Role::Move], t, || {
                        claimants(&entries, t)
                    }),
                );
            } else if seq == t {
                counts.writing += 1;
                claim(
                    ClaimKind::Writing,
                    holder_of(&entries, owner, &[Role::Send], t, || {
                        announced(&entries, t as u32, cap)
                    }),
                );
            } else if seq == (t + 1) | TAKEN {
                counts.taken += 1;
            } else if seq == (t + 1) | TAKEN | QUARANTINED {
                counts.taken += 1;
                claim(ClaimKind::Withheld, withheld_holder(&entries, owner, cap));
            } else if seq == (t + 1) | TAKEN | HELD {
                counts.moving += 1;
                claim(
                    ClaimKind::Moving,
                    holder_of(&entries, owner, &[Role::Move], t, || {
                        (Holder::Unknown, false)
                    }),
                );
            } else if seq == t | QUARANTINED {
                counts.skipped += 1;
                // A skip takes the ticket, not the slot: nobody signs it.
                claim(ClaimKind::Skip, (Holder::Unknown, false));
            } else if seq & !(HELD | TAKEN | QUARANTINED) >= t + cap {
                counts.moved_on += 1;
            } else {
                anomalies.push(Anomaly::SlotState { ticket: t, seq });
            }
        }

        let control = self.control();
        let stats = &control.stats.0;
        let recovery = RecoveryStats {
            skipped_claims: ld64(&stats.skipped_claims),
            fenced_live: ld64(&stats.fenced_live),
            redelivered: ld64(&stats.redelivered),
            abandoned_tasks: ld64(&stats.abandoned_tasks),
            undone_moves: ld64(&stats.undone_moves),
            handovers: ld64(&stats.handovers),
            finished_releases: ld64(&stats.finished_releases),
        };
        let repair_kind = ld32(&control.repair.0.kind);
        let repair = (repair_kind != 0).then(|| RepairInProgress {
            kind: repair_kind_of(repair_kind),
            ticket: ld64(&control.repair.0.ticket),
        });
        let h = self.header_ref();
        QueueState {
            layout: self.layout(),
            head,
            tail,
            slots: counts,
            bytes_waiting,
            scanned,
            done: ld64(&h.join.0.done_count),
            handles,
            claims,
            recovery,
            withheld: ld64(&stats.withheld),
            repair,
            control_lock: ControlLockState {
                held: probe(&self.fd, ofd::CONTROL),
                marked_held: control.lock.marked_held(),
            },
            sleepers: QueueSleepers {
                receivers: h.not_empty.0.sleepers(),
                selective: h.selective.0.sleepers(),
                senders: h.not_full.0.sleepers(),
                joiners: h.join.0.joined.sleepers(),
            },
            passed_over: ld32(&h.init.0.passed_over) != 0,
            anomalies,
        }
    }

    fn pipe_state(&self) -> PipeState {
        let cap = u64::from(self.geo.capacity);
        let max = self.geo.max_payload;
        let ph = self.pipe_header();
        let mut anomalies = Vec::new();
        let ends = [0usize, 1].map(|e| {
            let pid = ld32(&ph.init.0.ends[e]);
            PipeEndInfo {
                pid: (pid != 0).then_some(pid),
                alive: probe(&self.fd, ofd::PIPE_ENDS + e as i64),
            }
        });
        let directions = [0usize, 1].map(|d| {
            let (published, tail) = self.pipe_positions(d);
            let head = self.pipe_exact_head(d, published);
            let mut state = PipeDirectionState {
                head,
                tail,
                receiver_sleeping: ph.events[d].0.not_empty.sleepers(),
                sender_sleeping: ph.events[d].0.not_full.sleepers(),
                ..PipeDirectionState::default()
            };
            // A holder of the sending end that died between publishing and
            // storing `tail` leaves `tail` behind what was published; a
            // stable pair never has `tail` more than a ring ahead.
            if head >= PIPE_POSITION_LIMIT
                || tail >= PIPE_POSITION_LIMIT
                || tail.saturating_sub(head) > cap
            {
                anomalies.push(Anomaly::PipePositions {
                    direction: d,
                    head,
                    tail,
                });
                return state;
            }
            // What the receiver would take next, in order: published
            // messages from `head` on (past any it holds freed ones too).
            for t in head..head + cap {
                let slot = self.pipe_slot(d, (t & (cap - 1)) as usize);
                match SlotState::of(ld64(&slot.seq), t, cap) {
                    SlotState::Published => {}
                    SlotState::Freed => continue,
                    _ => break,
                }
                fence(Ordering::Acquire);
                let len = ld32(&slot.header.len);
                if len > max {
                    anomalies.push(Anomaly::Length {
                        ticket: t,
                        len,
                        max,
                    });
                    break;
                }
                state.waiting += 1;
                state.bytes_waiting += u64::from(len);
            }
            state
        });
        PipeState {
            layout: self.layout(),
            ends,
            directions,
            anomalies,
        }
    }

    /// Direction `d`'s oldest ticket not freed: `published` (the `head`
    /// the receiver stored last, lazily) and past it every ticket whose
    /// slot is marked freed (see `spsc`), at most a lap and a window.
    pub(super) fn pipe_exact_head(&self, d: usize, published: u64) -> u64 {
        let cap = u64::from(self.geo.capacity);
        let mut head = published;
        if head >= PIPE_POSITION_LIMIT {
            return head;
        }
        for _ in 0..cap + crate::spsc::HOLD_WINDOW {
            let slot = self.pipe_slot(d, (head & (cap - 1)) as usize);
            if SlotState::of(ld64(&slot.seq), head, cap) != SlotState::Freed {
                break;
            }
            head += 1;
        }
        head
    }

    /// A pipe direction's `head` (as last published: see
    /// [`pipe_exact_head`](Self::pipe_exact_head)) and `tail` (each
    /// written by one side).
    pub(super) fn pipe_positions(&self, d: usize) -> (u64, u64) {
        let dir = &self.pipe_header().dirs[d & 1];
        let mut head = ld64(&dir.head.0);
        let mut tail = ld64(&dir.tail.0);
        for _ in 0..STABLE_READS {
            let again = ld64(&dir.head.0);
            if again == head {
                break;
            }
            head = again;
            tail = ld64(&dir.tail.0);
        }
        fence(Ordering::Acquire);
        (head, tail)
    }
}

/// The holder of a claim of one of `roles` on `t`, as `Recovery::holder`
/// decides it: the handle the owner word names (signed) or, if it names
/// none, what `unsigned()` finds from the announcements.
fn holder_of(
    entries: &[EntryRead],
    owner: u64,
    roles: &[Role],
    t: u64,
    unsigned: impl FnOnce() -> (Holder, bool),
) -> (Holder, bool) {
    match recovery::parse(owner) {
        Some((entry, generation, role, t_low))
            if roles.iter().any(|&r| r as u64 == role) && t_low == t as u32 =>
        {
            (named(entries, entry, generation), true)
        }
        _ => unsigned(),
    }
}

/// Entry `entry` of generation `generation` (low bits): alive only if it is
/// still in use by that generation and its lock is held.
fn named(entries: &[EntryRead], entry: usize, generation: u32) -> Holder {
    let Some(e) = entries.get(entry) else {
        return Holder::Unknown;
    };
    let pid = e.pid;
    if e.alive() && e.generation & GEN_MASK == generation {
        Holder::Alive { entry, pid }
    } else {
        Holder::Dead { entry, pid }
    }
}

/// For a held slot whose owner word names nobody: the handles that
/// announced they were claiming `t` (as `Recovery::claimants`).
fn claimants(entries: &[EntryRead], t: u64) -> (Holder, bool) {
    pick(entries, |e| e.claiming == t)
}

/// For a claim not signed yet: the handles whose announced send range
/// covers a ticket whose low 32 bits are `t_low` (as
/// `Recovery::announced`).
fn announced(entries: &[EntryRead], t_low: u32, cap: u64) -> (Holder, bool) {
    pick(entries, |e| {
        let n = e.sending_to.wrapping_sub(e.sending_from);
        e.sending_to != 0 && n <= cap && u64::from(t_low.wrapping_sub(e.sending_from as u32)) < n
    })
}

/// The first live in-use entry that `covers`, else the first dead one.
fn pick(entries: &[EntryRead], covers: impl Fn(&EntryRead) -> bool) -> (Holder, bool) {
    let mut dead = None;
    for (entry, e) in entries.iter().enumerate() {
        if !e.in_use() || !covers(e) {
            continue;
        }
        if e.locked {
            return (Holder::Alive { entry, pid: e.pid }, false);
        }
        dead.get_or_insert(Holder::Dead { entry, pid: e.pid });
    }
    (dead.unwrap_or(Holder::Unknown), false)
}

/// The holder of a withheld slot: its fenced sender, named by the owner
/// word, or announced if it had not signed (as the lift pass decides).
fn withheld_holder(entries: &[EntryRead], owner: u64, cap: u64) -> (Holder, bool) {
    if owner >> 32 == FENCED_MARK >> 32 {
        return announced(entries, owner as u32, cap);
    }
    match recovery::parse(owner) {
        Some((entry, generation, role, _)) if role == Role::Send as u64 => {
            (named(entries, entry, generation), true)
        }
        _ => (Holder::Unknown, false),
    }
}

fn repair_kind_of(k: u32) -> RepairKind {
    match k {
        k if k == Repair::Fence as u32 => RepairKind::Fence,
        k if k == Repair::Redeliver as u32 => RepairKind::Redeliver,
        k if k == Repair::UndoMove as u32 => RepairKind::UndoMove,
        k if k == Repair::Skip as u32 => RepairKind::Skip,
        k => RepairKind::Other(k),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repair_kinds_follow_the_recovery_record() {
        assert_eq!(repair_kind_of(Repair::Fence as u32), RepairKind::Fence);
        assert_eq!(
            repair_kind_of(Repair::Redeliver as u32),
            RepairKind::Redeliver
        );
        assert_eq!(
            repair_kind_of(Repair::UndoMove as u32),
            RepairKind::UndoMove
        );
        assert_eq!(repair_kind_of(Repair::Skip as u32), RepairKind::Skip);
        assert_eq!(repair_kind_of(77), RepairKind::Other(77));
    }

    fn entry(locked: bool) -> EntryRead {
        EntryRead {
            state: HANDLE_IN_USE,
            generation: 3,
            pid: 100,
            claiming: u64::MAX,
            locked,
            ..EntryRead::default()
        }
    }

    #[test]
    fn holders_are_decided_as_recovery_decides_them() {
        let mut entries = vec![EntryRead::default(); MAX_HANDLES];
        entries[2] = entry(false);
        entries[5] = entry(true);
        // Signed by entry 5 (alive) for ticket 9, as a receiver.
        let word = recovery::owner_word(
            recovery::HandleId {
                index: 5,
                generation: 3,
            },
            Role::Recv,
            9,
        );
        let none = || (Holder::Unknown, false);
        assert_eq!(
            holder_of(&entries, word, &[Role::Recv], 9, none),
            (Holder::Alive { entry: 5, pid: 100 }, true)
        );
        // The same word names no claim of ticket 10, nor a sender's.
        assert_eq!(
            holder_of(&entries, word, &[Role::Recv], 10, none).0,
            Holder::Unknown
        );
        assert_eq!(
            holder_of(&entries, word, &[Role::Send], 9, none).0,
            Holder::Unknown
        );
        // A later generation of the entry: the claim's holder is gone.
        entries[5].generation = 4;
        assert_eq!(
            holder_of(&entries, word, &[Role::Recv], 9, none).0,
            Holder::Dead { entry: 5, pid: 100 }
        );
        // Unsigned: the announcements decide, a live announcer first.
        entries[2].sending_from = 8;
        entries[2].sending_to = 12;
        assert_eq!(
            announced(&entries, 9, 16),
            (Holder::Dead { entry: 2, pid: 100 }, false)
        );
        entries[5].sending_from = 9;
        entries[5].sending_to = 10;
        assert_eq!(
            announced(&entries, 9, 16).0,
            Holder::Alive { entry: 5, pid: 100 }
        );
        assert_eq!(announced(&entries, 12, 16).0, Holder::Unknown);
        entries[2].claiming = 7;
        assert_eq!(
            claimants(&entries, 7).0,
            Holder::Dead { entry: 2, pid: 100 }
        );
    }
}
