//! Helpers shared by the fuzz targets in `fuzz_targets/` and by the seed
//! generator in `examples/gen_seeds.rs`: unique segment names that are
//! always removed, a byte reader over the fuzz input, the segment layout as
//! far as the public API reveals it, and "patches" that scribble on a live
//! segment file the way a misbehaving process could.
//!
//! The layout is taken from `src/layout.rs` (layout version 1), but only the
//! sizes are trusted, and those are derived from
//! [`QueueConfig::segment_size`]; field offsets are used as *hints* for
//! where to write. Every write is clamped into the file, so if the layout
//! changes the targets still run, only less deep.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, Once};
use std::time::Duration;

use mulproc::{Header, Message, Pipe, Queue, QueueConfig, RecvTimeoutError, Request, TryRecvError};

// ------------------------------------------------------------------ input ---

/// Reads the fuzz input front to back; past its end every read gives zeros,
/// so any input is a complete description.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Input<'a> {
    pub fn new(data: &'a [u8]) -> Self {
        Input { data, pos: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.pos >= self.data.len()
    }

    pub fn u8(&mut self) -> u8 {
        let b = self.data.get(self.pos).copied().unwrap_or(0);
        self.pos = self.pos.saturating_add(1);
        b
    }

    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes([self.u8(), self.u8()])
    }

    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes([self.u8(), self.u8(), self.u8(), self.u8()])
    }

    pub fn u64(&mut self) -> u64 {
        (self.u32() as u64) | (self.u32() as u64) << 32
    }

    /// Up to `n` bytes (fewer at the end of the input).
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        let end = start.saturating_add(n).min(self.data.len());
        self.pos = self.pos.saturating_add(n);
        &self.data[start..end]
    }

    /// Everything not read yet.
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.pos.min(self.data.len());
        self.pos = self.data.len();
        &self.data[start..]
    }
}

// ------------------------------------------------------- segment files ---

/// Where mulproc keeps the segment of queue `name`.
pub fn shm_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/mulproc.{name}"))
}

static COUNTER: AtomicU64 = AtomicU64::new(0);
/// Files of segments in use by this process, removed by the panic hook
/// before libFuzzer aborts the process (a `Drop` would never run).
static LIVE: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
const NAME_PREFIX: &str = "fuzz-";

/// A segment name unique to this process and call, whose file is removed
/// when the value is dropped (and by the panic hook on a crash).
#[derive(Debug)]
pub struct Shm {
    name: String,
    path: PathBuf,
}

impl Shm {
    pub fn new(tag: &str) -> Shm {
        setup_once();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}{}-{n}-{tag}", std::process::id());
        let path = shm_path(&name);
        let _ = std::fs::remove_file(&path); // a leftover of a reused pid
        if let Ok(mut live) = LIVE.lock() {
            live.push(path.clone());
        }
        Shm { name, path }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Creates the file (mode 0600, as mulproc does) holding `bytes`.
    pub fn create_with(&self, bytes: &[u8]) -> io::Result<()> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&self.path)?;
        f.write_all_at(bytes, 0)
    }

    /// Opens the existing file for reading and writing.
    pub fn open(&self) -> io::Result<File> {
        OpenOptions::new().read(true).write(true).open(&self.path)
    }
}

impl Drop for Shm {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Ok(mut live) = LIVE.lock() {
            live.retain(|p| p != &self.path);
        }
    }
}

/// Once per process: removes segments left by fuzz processes that died
/// (a timeout or an out-of-memory kill skips every clean-up), and chains a
/// panic hook that removes this process's segments before libFuzzer's own
/// hook aborts.
fn setup_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        remove_stale_segments();
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if let Ok(live) = LIVE.try_lock() {
                for p in live.iter() {
                    let _ = std::fs::remove_file(p);
                }
            }
            previous(info);
        }));
    });
}

/// Removes `/dev/shm/mulproc.fuzz-<pid>-*` of processes that no longer exist.
pub fn remove_stale_segments() {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return;
    };
    let prefix = format!("mulproc.{NAME_PREFIX}");
    for entry in dir.flatten() {
        let file = entry.file_name();
        let Some(rest) = file.to_str().and_then(|f| f.strip_prefix(&prefix)) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

// ----------------------------------------------------------------- layout ---

/// Segment sizes as the public API and real segments reveal them. From
/// `src/layout.rs` (layout version 1): a queue is `HEADER_SIZE + capacity ×
/// (SLOT_HEADER_SIZE + round_up(max_payload, 64))`, a pipe `HEADER_SIZE +
/// 2 × capacity × round_up(32 + max_payload, 64)`. Derived once per process
/// from `QueueConfig::segment_size` and from the files of real segments, so
/// a change of layout moves the targets along.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Offset of a queue's first slot header (512 in layout version 1).
    pub header: u64,
    /// Bytes per queue slot header (64).
    pub slot_header: u64,
    /// Offset of a pipe's first slot (512 in layout version 1).
    pub pipe_header: u64,
    /// The layout version real segments carry (bytes 8..12).
    pub version: u32,
    /// The first 64 bytes (`LayoutInfo`) of a real queue of capacity 2 and
    /// max payload 0, and of a real pipe of the same.
    pub queue_info: [u8; 64],
    pub pipe_info: [u8; 64],
}

impl Shape {
    pub fn detect() -> Shape {
        static SHAPE: std::sync::OnceLock<Shape> = std::sync::OnceLock::new();
        *SHAPE.get_or_init(|| {
            let size = |c, p| QueueConfig::new(c, p).segment_size().unwrap_or(0);
            let slot_header = size(4, 0).saturating_sub(size(2, 0)) / 2;
            let header = size(2, 0).saturating_sub(2 * slot_header);
            // A real segment's length and first line.
            let real = |pipe: bool, cap: u32| -> Option<(u64, [u8; 64])> {
                let shm = Shm::new("shape");
                let config = QueueConfig::new(cap, 0);
                let _keep: Box<dyn std::any::Any> = if pipe {
                    let mut p = Pipe::create(shm.name(), config).ok()?;
                    p.set_remove_on_drop(false);
                    Box::new(p)
                } else {
                    let mut q = Queue::create(shm.name(), config).ok()?;
                    q.set_remove_on_drop(false);
                    Box::new(q)
                };
                let f = shm.open().ok()?;
                let mut info = [0u8; 64];
                f.read_exact_at(&mut info, 0).ok()?;
                Some((f.metadata().ok()?.len(), info))
            };
            let queue_info = real(false, 2).map_or([0; 64], |r| r.1);
            let version =
                u32::from_le_bytes([queue_info[8], queue_info[9], queue_info[10], queue_info[11]]);
            // A pipe's file: header + 2 × capacity × stride.
            let (pipe_header, pipe_info) = match (real(true, 2), real(true, 4)) {
                (Some((l2, info)), Some((l4, _))) => {
                    let stride = l4.saturating_sub(l2) / 4;
                    (l2.saturating_sub(4 * stride), info)
                }
                _ => (header, [0; 64]),
            };
            Shape {
                header,
                slot_header,
                pipe_header,
                version,
                queue_info,
                pipe_info,
            }
        })
    }

    /// Offset of queue slot `i`'s header.
    pub fn slot(&self, i: u64) -> u64 {
        self.header + i * self.slot_header
    }
}

/// Field offsets of layout version 1: hints only (see the module doc).
pub mod hint {
    /// `LayoutInfo` fields (line 0) as (offset, width).
    pub const INFO_FIELDS: [(u64, usize); 13] = [
        (0, 8),  // magic
        (8, 4),  // version
        (12, 4), // header_size
        (16, 4), // capacity
        (20, 4), // max_payload
        (24, 4), // slot_header_size
        (28, 4), // stride
        (32, 8), // data_offset
        (40, 8), // total_size
        (48, 4), // creator_pid
        (52, 4), // creator_uid
        (56, 4), // kind (1 queue, 2 pipe)
        (60, 4), // reserved
    ];
    pub const INIT: u64 = 64;
    pub const INIT_DONE: u32 = 0x1A17_D04E;
    pub const MAGIC: u64 = u64::from_le_bytes(*b"MULPROC\0");
    pub const VERSION: u32 = 1;
    /// Queue header words (offset, width): tail, head, not_empty (epoch,
    /// waiters), not_full, done_count, joined, selective.
    pub const QUEUE_WORDS: [(u64, usize); 10] = [
        (128, 8),
        (192, 8),
        (256, 4),
        (260, 4),
        (320, 4),
        (324, 4),
        (384, 8),
        (392, 4),
        (448, 4),
        (452, 4),
    ];
    pub const QUEUE_TAIL: u64 = 128;
    pub const QUEUE_HEAD: u64 = 192;
    /// Queue slot header fields (offset in the slot header, width): seq,
    /// owner, request, sender, recipient, len, flags.
    pub const SLOT_FIELDS: [(u64, usize); 7] =
        [(0, 8), (8, 8), (16, 4), (20, 4), (24, 4), (28, 4), (32, 4)];
    /// Pipe header words: init line (ends of parent, child), then per
    /// direction tail and head, then event counts.
    pub const PIPE_WORDS: [(u64, usize); 10] = [
        (68, 4),
        (72, 4),
        (128, 8),
        (192, 8),
        (256, 8),
        (320, 8),
        (384, 4),
        (392, 4),
        (448, 4),
        (456, 4),
    ];
    /// Pipe slot header fields: seq, request, sender, recipient, len, flags.
    pub const PIPE_SLOT_FIELDS: [(u64, usize); 6] =
        [(0, 8), (8, 4), (12, 4), (16, 4), (20, 4), (24, 4)];
    /// The two flag bits of a queue sequence word (src/ring.rs).
    pub const HELD: u64 = 1 << 63;
    pub const TAKEN: u64 = 1 << 62;
}

// ---------------------------------------------------------------- patches ---

/// A segment file being scribbled on, with what a patch needs to aim.
#[derive(Debug)]
pub struct Target<'f> {
    pub file: &'f File,
    /// Kind of segment, for the field hints.
    pub pipe: bool,
    pub shape: Shape,
    pub capacity: u64,
    /// Bytes from a slot's start to the next (pipe slots: header and
    /// payload together).
    pub slot_stride: u64,
    /// Offset of the first slot header.
    pub first_slot: u64,
    /// May patches change the file's length? (Never below `min_len`.)
    pub resize: bool,
    pub min_len: u64,
    /// Set once a patch changed the file's length: a handle mapped before
    /// may now reach past the end of the file (SIGBUS, as with any shared
    /// mapping whose file another process truncates), so it must not be
    /// used any more.
    pub resized: std::cell::Cell<bool>,
}

/// Values that sit on boundaries of the checks in mulproc.
const INTERESTING: [u64; 20] = [
    0,
    1,
    2,
    63,
    64,
    512,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    0x1_0000_0000,
    (1 << 62) - 1,
    1 << 62,
    (1 << 62) + 1,
    1 << 63,
    (1 << 63) + 1,
    (1 << 63) | (1 << 62),
    i64::MAX as u64,
    u64::MAX - 1,
    u64::MAX,
    hint::MAGIC,
    hint::INIT_DONE as u64,
];

impl Target<'_> {
    pub fn len(&self) -> u64 {
        self.file.metadata().map(|m| m.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn read_u64(&self, at: u64) -> u64 {
        let mut b = [0u8; 8];
        let _ = self.file.read_exact_at(&mut b, at);
        u64::from_le_bytes(b)
    }

    /// Writes `bytes` at `at`, cut to the file (never extends it).
    pub fn write(&self, at: u64, bytes: &[u8]) {
        let len = self.len();
        if at >= len {
            return;
        }
        let n = bytes.len().min((len - at) as usize);
        let _ = self.file.write_all_at(&bytes[..n], at);
    }

    fn write_word(&self, at: u64, width: usize, v: u64) {
        self.write(at, &v.to_le_bytes()[..width]);
    }

    /// The ring's positions (tail, head) as they are now.
    fn positions(&self, dir: u64) -> (u64, u64) {
        if self.pipe {
            let base = 128 + 128 * (dir & 1);
            (self.read_u64(base), self.read_u64(base + 64))
        } else {
            (
                self.read_u64(hint::QUEUE_TAIL),
                self.read_u64(hint::QUEUE_HEAD),
            )
        }
    }

    /// A value for a word: raw, a boundary value, or one near the ring's
    /// positions or near slot `slot`'s current ticket (with the ring's flag
    /// bits), so that sequence words and positions reach the states the
    /// ring distinguishes.
    pub fn value(&self, input: &mut Input<'_>, slot: Option<(u64, u64)>) -> u64 {
        let mode = input.u8();
        let cap = self.capacity.max(1);
        let flags = |b: u8| match b & 3 {
            0 => 0,
            1 => hint::HELD,
            2 => hint::TAKEN,
            _ => hint::HELD | hint::TAKEN,
        };
        let delta = |b: u8| (b as i8) as i64 as u64;
        match mode % 6 {
            0 => input.u64(),
            1 => INTERESTING[input.u8() as usize % INTERESTING.len()],
            2 | 3 => {
                let (tail, head) = self.positions(slot.map_or(0, |s| s.0));
                let base = if mode % 6 == 2 { head } else { tail };
                let d = input.u8();
                base.wrapping_add(delta(d)) | flags(mode >> 6)
            }
            4 => input.u8() as u64,
            _ => {
                // Relative to the ticket slot `i` holds for the lap at head:
                // FREE t, PUBLISHED t+1, read t+capacity, and flag bits.
                let (dir, i) = slot.unwrap_or((0, 0));
                let (_, head) = self.positions(dir);
                let t = head.wrapping_add(i.wrapping_sub(head) & (cap - 1));
                let lap = ((input.u8() as i8) as i64 as u64).wrapping_mul(cap);
                let t = t.wrapping_add(lap);
                let v = match input.u8() % 6 {
                    0 => t,
                    1 => t.wrapping_add(1),
                    2 => t.wrapping_add(cap),
                    3 => t.wrapping_add(cap + 1),
                    4 => t.wrapping_sub(1),
                    _ => t.wrapping_add(delta(input.u8())),
                };
                v | flags(mode >> 6)
            }
        }
    }

    /// Applies one patch read from `input`.
    pub fn patch(&self, input: &mut Input<'_>) {
        let kind = input.u8();
        let len = self.len();
        let cap = self.capacity.max(1);
        match kind % 8 {
            // Raw bytes anywhere.
            0 => {
                let at = if len == 0 {
                    0
                } else {
                    input.u32() as u64 % len
                };
                let n = (input.u8() % 17) as usize;
                let bytes = input.bytes(n);
                self.write(at, bytes);
            }
            // A word at an aligned offset anywhere.
            1 => {
                let width = if kind & 0x80 != 0 { 8 } else { 4 };
                let at = if len == 0 {
                    0
                } else {
                    (input.u32() as u64 % len) & !(width as u64 - 1)
                };
                let v = self.value(input, None);
                self.write_word(at, width, v);
            }
            // A layout field or the init word.
            2 => {
                let i = input.u8() as usize % (hint::INFO_FIELDS.len() + 1);
                let (at, width) = hint::INFO_FIELDS.get(i).copied().unwrap_or((hint::INIT, 4));
                let v = self.value(input, None);
                self.write_word(at, width, v);
            }
            // A control word (positions, event counts, pipe ends).
            3 => {
                let words: &[(u64, usize)] = if self.pipe {
                    &hint::PIPE_WORDS
                } else {
                    &hint::QUEUE_WORDS
                };
                let (at, width) = words[input.u8() as usize % words.len()];
                let dir = if self.pipe {
                    (256..384).contains(&at) as u64
                } else {
                    0
                };
                let v = self.value(input, Some((dir, 0)));
                self.write_word(at, width, v);
            }
            // A slot header field (most often the sequence word).
            4..=6 => {
                let sel = input.u16();
                let dir = if self.pipe { (sel & 1) as u64 } else { 0 };
                let i = (sel >> 1) as u64 % cap;
                let slot_at = self.first_slot + (dir * cap + i) * self.slot_stride;
                let fields: &[(u64, usize)] = if self.pipe {
                    &hint::PIPE_SLOT_FIELDS
                } else {
                    &hint::SLOT_FIELDS
                };
                let f = if kind % 8 == 4 {
                    0 // the sequence word
                } else {
                    input.u8() as usize % fields.len()
                };
                let (off, width) = fields[f];
                let v = self.value(input, Some((dir, i)));
                self.write_word(slot_at + off, width, v);
            }
            // Change the file's length (truncate or extend), where allowed.
            _ => {
                if self.resize {
                    let d = (input.u16() as i16) as i64 * 8;
                    let new = (len as i64 + d).clamp(self.min_len as i64, 16 << 20) as u64;
                    if new != len && self.file.set_len(new).is_ok() {
                        self.resized.set(true);
                    }
                } else {
                    let at = self.first_slot + (input.u8() as u64 % cap) * self.slot_stride;
                    let v = self.value(input, Some((0, 0)));
                    self.write_word(at, 8, v);
                }
            }
        }
    }
}

// ------------------------------------------------------------- exercises ---

/// Payload of the `i`th test message: `len` bytes counting from `i`.
pub fn payload(i: u32, len: usize) -> Vec<u8> {
    (0..len).map(|k| (i as usize + k) as u8).collect()
}

/// Checks what a receive returned: never longer than max payload.
fn check_len(what: &str, len: usize, max: usize) {
    assert!(
        len <= max,
        "{what} returned {len} bytes, max payload is {max}"
    );
}

fn check_msg(what: &str, r: &Result<Message, TryRecvError>, max: usize) {
    if let Ok(m) = r {
        check_len(what, m.data.len(), max);
    }
}

/// A predicate for the selective receives, chosen by `sel`.
fn predicate(sel: u8, pid: u32) -> impl FnMut(&Header, &[u8]) -> bool {
    let mut calls = 0u32;
    move |h: &Header, d: &[u8]| {
        calls += 1;
        match sel % 6 {
            0 => true,
            1 => false,
            2 => h.recipient == Some(pid) || h.recipient.is_none(),
            3 => d.first() == Some(&(sel >> 3)),
            4 => calls > u32::from(sel >> 3) % 4, // pass over the first few
            _ => h.request.code().is_multiple_of(2),
        }
    }
}

/// Runs up to `max_ops` operations on `q`, chosen by `input` (a default
/// mix once it runs out), then receives until `Empty` or an error, bounded.
/// `patch` is called for the "scribble now" operation.
pub fn exercise_queue(
    q: &Queue,
    input: &mut Input<'_>,
    max_ops: usize,
    mut patch: impl FnMut(&mut Input<'_>),
) {
    let max = q.max_payload();
    let cap = q.capacity();
    let pid = q.pid();
    let mut buf = Vec::new();
    // A receive that reports corruption may first have retried its scan
    // 2^16 times (src/ring.rs, MAX_RETRIES): after a few, stop, to keep
    // the executions per second up.
    let mut corrupt = 0;
    let is_corrupt =
        |r: Result<(), TryRecvError>| matches!(r, Err(TryRecvError::Corrupt(_))) as u32;
    for step in 0..max_ops {
        if corrupt >= 4 {
            break;
        }
        let op = if input.is_empty() {
            step as u8
        } else {
            input.u8()
        };
        let arg = input.u8();
        match op % 16 {
            0 => {
                let r = q.try_recv();
                check_msg("try_recv", &r, max);
                corrupt += is_corrupt(r.map(drop));
            }
            1 => {
                let r = q.try_recv_ref();
                if let Err(e) = &r {
                    corrupt += is_corrupt(Err(*e));
                }
                if let Ok(g) = r {
                    check_len("try_recv_ref", g.data().len(), max);
                    match arg % 4 {
                        0 => drop(g.finish()),
                        1 => drop(g),
                        2 => check_len("into_message", g.into_message().data.len(), max),
                        _ => {
                            // Hold it while another receive runs.
                            let _ = g.read_pod::<u32>();
                            check_msg("try_recv (nested)", &q.try_recv(), max);
                            drop(g);
                        }
                    }
                }
            }
            2 => {
                let r = q.try_recv_into(&mut buf);
                if r.is_ok() {
                    check_len("try_recv_into", buf.len(), max);
                }
                corrupt += is_corrupt(r.map(drop));
            }
            3 => {
                let r = q.try_recv_batch(arg as usize % 9, |_, d| {
                    check_len("try_recv_batch", d.len(), max)
                });
                corrupt += is_corrupt(r.map(drop));
            }
            4 => {
                let r = q.try_recv_where(predicate(arg, pid));
                check_msg("try_recv_where", &r, max);
                corrupt += is_corrupt(r.map(drop));
            }
            5 | 6 => {
                let len = arg as usize % (max + 2);
                let m = Message::new(Request::new(u32::from(arg)), payload(step as u32, len));
                let m = if arg & 1 == 1 { m.to(pid) } else { m };
                let _ = q.try_send(m);
            }
            7 => {
                let n = arg as usize % 5;
                let msgs: Vec<_> = (0..n)
                    .map(|k| Message::new(Request::DO, payload(k as u32, k.min(max))))
                    .collect();
                let _ = q.try_send_batch(&msgs);
            }
            8 => {
                if let Ok(mut slot) = q.try_reserve() {
                    let area = slot.payload_mut();
                    check_len("payload_mut", area.len(), max);
                    area.iter_mut().for_each(|b| *b = arg);
                    if !arg.is_multiple_of(4) {
                        let len = usize::from(arg) % (max + 2);
                        let _ = slot.commit(Request::DO, None, len);
                    } // else: dropped, given up
                }
            }
            9 => {
                assert!(q.len() <= cap, "len {} over capacity {cap}", q.len());
                let _ = q.is_empty();
            }
            10 => {
                let _ = q.task_done();
                let _ = q.join_timeout(Duration::ZERO);
            }
            11 => {
                let r = q.recv_timeout(Duration::ZERO);
                if let Ok(m) = &r {
                    check_len("recv_timeout", m.data.len(), max);
                }
                corrupt += matches!(r, Err(RecvTimeoutError::Corrupt(_))) as u32;
            }
            12 => {
                let r = match arg % 3 {
                    0 => q.recv_for_me(Some(Duration::ZERO)),
                    1 => q.recv_from(pid, Some(Duration::ZERO)),
                    _ => q.recv_where(predicate(arg >> 2, pid), Some(Duration::ZERO)),
                };
                if let Ok(m) = &r {
                    check_len("recv_*_where", m.data.len(), max);
                }
                corrupt += matches!(r, Err(RecvTimeoutError::Corrupt(_))) as u32;
            }
            13 => patch(input),
            _ => {
                let mut v = Vec::with_capacity(4);
                let r = q.recv_into(&mut v, Some(Duration::ZERO));
                if let Ok(h) = &r {
                    check_len("recv_into", v.len(), max);
                    let _ = h.is_for(pid);
                }
                corrupt += matches!(r, Err(RecvTimeoutError::Corrupt(_))) as u32;
            }
        }
    }
    drain_queue(q);
}

/// Receives until `Empty` or an error, at most a few laps.
pub fn drain_queue(q: &Queue) {
    let max = q.max_payload();
    for _ in 0..(2 * q.capacity() + 4) {
        match q.try_recv() {
            Ok(m) => check_len("try_recv (drain)", m.data.len(), max),
            Err(_) => break,
        }
    }
    assert!(q.len() <= q.capacity());
}

/// Pipe counterpart of [`exercise_queue`].
pub fn exercise_pipe(p: &mut Pipe, input: &mut Input<'_>, max_ops: usize) {
    let max = p.max_payload();
    let cap = p.capacity();
    let mut buf = Vec::new();
    for step in 0..max_ops {
        let op = if input.is_empty() {
            step as u8
        } else {
            input.u8()
        };
        let arg = input.u8();
        match op % 7 {
            0 => check_msg("Pipe::try_recv", &p.try_recv(), max),
            1 => {
                if p.try_recv_into(&mut buf).is_ok() {
                    check_len("Pipe::try_recv_into", buf.len(), max);
                }
            }
            2 => {
                if let Ok(g) = p.try_recv_ref() {
                    check_len("Pipe::try_recv_ref", g.data().len(), max);
                    if arg & 1 == 0 {
                        let _ = g.finish();
                    }
                }
            }
            3 | 4 => {
                let len = arg as usize % (max + 2);
                let _ = p.try_send(Message::new(Request::DO, payload(step as u32, len)));
            }
            5 => {
                assert!(p.len() <= cap, "pipe len {} over capacity {cap}", p.len());
                let _ = (p.is_empty(), p.peer_pid(), p.end());
            }
            _ => {
                if let Ok(m) = p.recv_timeout(Duration::ZERO) {
                    check_len("Pipe::recv_timeout", m.data.len(), max);
                }
            }
        }
    }
    for _ in 0..(2 * cap + 4) {
        match p.try_recv() {
            Ok(m) => check_len("Pipe::try_recv (drain)", m.data.len(), max),
            Err(_) => break,
        }
    }
}

// ------------------------------------------------------------ slow paths ---

/// `MULPROC_FUZZ_SLOW=1` lets inputs reach the two paths where `open`
/// sleeps: a file shorter than the header and an init word that is not
/// `INIT_DONE` are waited on for up to 200 ms (a creator may still be
/// initialising). Off by default: each such input would cost 200-400 ms,
/// and tests/bad_input.rs covers both paths.
pub fn slow_paths() -> bool {
    static SLOW: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *SLOW
        .get_or_init(|| std::env::var("MULPROC_FUZZ_SLOW").is_ok_and(|v| !v.is_empty() && v != "0"))
}

/// Unless [`slow_paths`]: makes the file at least a header long and sets its
/// init word, so `open` goes straight to validating the layout.
pub fn fast_fixups(file: &File, shape: Shape) {
    if slow_paths() {
        return;
    }
    let min = shape.pipe_header.min(shape.header);
    if file.metadata().map(|m| m.len()).unwrap_or(0) < min {
        let _ = file.set_len(min);
    }
    let _ = file.write_all_at(&hint::INIT_DONE.to_le_bytes(), hint::INIT);
}

/// Unless [`slow_paths`]: the same for file bytes about to be written.
pub fn fast_fixups_bytes(bytes: &mut Vec<u8>, shape: Shape) {
    if slow_paths() {
        return;
    }
    let min = shape.pipe_header.min(shape.header) as usize;
    if bytes.len() < min.max(hint::INIT as usize + 4) {
        bytes.resize(min.max(hint::INIT as usize + 4), 0);
    }
    let at = hint::INIT as usize;
    bytes[at..at + 4].copy_from_slice(&hint::INIT_DONE.to_le_bytes());
}
