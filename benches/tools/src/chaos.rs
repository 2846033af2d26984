//! Chaos: producers and consumers SIGKILLed and restarted at random while
//! messages flow through one small queue, then a check of every promise
//! the queue makes about crashes (issue 5, fault 9).
//!
//! The parent creates a queue (`--capacity` slots, 64 by default, so the
//! ring wraps round hundreds of times a second) and starts `--producers`
//! producer and `--consumers` consumer processes of this same program with
//! [`mulproc::process::Child`]. Every `--kill-every-ms` it SIGKILLs one of
//! them at random, reaps it and starts a new incarnation in its place.
//! After `--secs` it stops the kills, stops the producers, lets the
//! consumers drain the queue, stops them, and checks:
//!
//! * **nothing lost**: every message whose `send` returned `Ok` (and whose
//!   producer lived long enough to write that down) was received;
//! * **nothing invented**: no message was received that was never sent,
//!   or whose `send` failed (`Full`, `Fenced`), or whose bytes differ
//!   from what its producer wrote;
//! * **duplicates only from dead receivers**: a message received twice was
//!   first received by a consumer incarnation that was SIGKILLed holding
//!   it (its last record), and there are no more duplicates than consumer
//!   kills;
//! * **no hang**: no producer or consumer spent longer than the unblock
//!   timeout plus one second in one call, or between two successful
//!   operations while messages were there to take; and the whole system
//!   never went that long without a send or without a receive (while
//!   messages waited), as seen by the parent;
//! * **clean end**: the queue drains to empty, every process stopped on
//!   request exits 0, no process died unless killed.
//!
//! ```text
//! cargo run --release -p mulproc-bench-tools --bin chaos
//! cargo run --release -p mulproc-bench-tools --bin chaos -- --secs 300 --kill-every-ms 50 --capacity 8
//! ```
//!
//! This module is the whole chaos; the `chaos` binary of this crate parses
//! the flags below and runs it, and `tests/chaos.rs` includes this file
//! (`#[path]`) and runs it for 5 seconds. So it uses nothing but std,
//! `libc` and `mulproc`.
//!
//! Flags:
//!
//! * `--secs S`: how long the kills go on (default 30; fractions allowed).
//! * `--kill-every-ms MS`: one random SIGKILL and restart every MS
//!   milliseconds (default 200; 0: no kills).
//! * `--producers P`, `--consumers C`: processes of each kind (default 3
//!   and 3; P at most 32).
//! * `--capacity N`: queue slots, a power of two (default 64).
//! * `--payload BYTES`: message size, at least 24 (default 64).
//! * `--unblock-ms MS`: every handle's unblock timeout (default 200).
//! * `--fill-us US`: producers send every other message in place
//!   (`try_reserve`, fill, work US µs holding the claim, `commit`) and the
//!   others with `send` (default 100; 0: all with `send`).
//! * `--hold-us US`: consumers work US µs on each message in place, after
//!   recording it and before releasing it (default 50).
//! * `--seed N`: seed of the choice of victims (default: from the clock;
//!   printed).
//! * `--keep`: keep the per-process logs (printed path) instead of
//!   removing them; the environment variable `MULPROC_CHAOS_KEEP=1` does
//!   the same.
//!
//! Output: a few human lines, any `VIOLATION: ...` lines with details,
//! then `key=value` lines (the counts), the last being `violations=N`.
//! The exit code is 0 only if there is no violation. `tests/chaos.rs`
//! runs the same code for 5 seconds as a CI test.
//!
//! # How the claims are checked, not assumed
//!
//! Each incarnation of each process has its own log: a file under a fresh
//! directory in [`std::env::temp_dir`], mapped shared (`MAP_SHARED`), so
//! whatever a process stored there before it was SIGKILLed is in the page
//! cache for the parent to read. A message carries its producer index,
//! the producer's incarnation and a sequence number, and payload bytes
//! derived from the three, which the consumer re-derives and compares.
//!
//! * A producer sends sequence numbers 1, 2, 3, ... one at a time. After
//!   each `send` (or `commit`) it stores the number as *done* in its log (and, if the
//!   send failed, first appends it to its failure list), before it sends
//!   the next. So every number up to *done* that is not in the failure
//!   list was sent with `Ok`; *done + 1* may have been sent with `Ok` just
//!   before a SIGKILL and is allowed to be received or not; anything
//!   beyond was never sent.
//! * A consumer takes a message in place (`recv_ref_timeout`), checks it,
//!   appends its identity to its log, and only then releases the slot
//!   (`RecvGuard::finish`). A message is thus either recorded by the
//!   consumer that released it, or still in the queue, or held by a
//!   consumer that died, which the queue offers again: a lost consumer
//!   record cannot fake a lost message. A consumer killed after recording
//!   and before releasing produces the one legal duplicate, and that
//!   message is then its last record.
//! * Every process stores in its log the longest call and the longest gap
//!   between successes (a consumer's gap restarts when it finds the queue
//!   empty), and when it entered its current call and last succeeded, so
//!   the parent also sees the stall a killed process was in when it died.
//!
//! Why the work in place (`--fill-us`, `--hold-us`): without it, the
//! windows in which a kill leaves something to recover (a claim not yet
//! published, a message held) last nanoseconds, and 150 kills in 30 s
//! recovered nothing at all (`skipped_claims=0 redelivered=0`): the checks
//! passed without testing recovery. With the defaults, about a third of
//! the kills leave a claim to skip or a message to offer again.
//! `--fill-us 0 --hold-us 0` is the plain variant, ~0.5 M messages/s.
//!
//! Blocking calls all have timeouts (`recv_ref_timeout` 250 ms; `send`
//! with 4 tries of 100 ms, and a reservation polled as long at most), children die with the parent
//! (`Child::die_with_parent`) and stop when told through their log; the parent
//! has a deadline on every phase and kills every child when dropped. The
//! queue name and the log directory are removed on every path out of the
//! parent (unless `--keep`).

use std::collections::{HashMap, HashSet};
use std::error::Error;
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mulproc::process::{self, Child, ChildProcess};
use mulproc::{Message, Queue, QueueConfig, RecvTimeoutError, Request, SendRetry, TrySendError};

/// Errors of the harness itself (not violations of the queue's promises).
pub type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Role of the producer processes.
pub const PRODUCER_ROLE: &str = "chaos-producer";
/// Role of the consumer processes.
pub const CONSUMER_ROLE: &str = "chaos-consumer";
/// Keep the logs when set (as `--keep`).
pub const KEEP_VAR: &str = "MULPROC_CHAOS_KEEP";

/// The queue's channel key for `mulproc::process`.
const QUEUE_KEY: &str = "chaos";
const ENV_LOG: &str = "MULPROC_CHAOS_LOG";
const ENV_INDEX: &str = "MULPROC_CHAOS_INDEX";
const ENV_INCARNATION: &str = "MULPROC_CHAOS_INCARNATION";
const ENV_UNBLOCK_MS: &str = "MULPROC_CHAOS_UNBLOCK_MS";
const ENV_FILL_US: &str = "MULPROC_CHAOS_FILL_US";
const ENV_HOLD_US: &str = "MULPROC_CHAOS_HOLD_US";

/// A consumer's wait for a message; bounds its calls.
const RECV_TIMEOUT: Duration = Duration::from_millis(250);
/// A producer's wait for space; bounds its calls (4 × 100 ms).
const SEND_RETRY: SendRetry = SendRetry {
    tries: 4,
    wait: Duration::from_millis(100),
};
/// The hang bound is the unblock timeout plus this.
const HANG_MARGIN: Duration = Duration::from_secs(1);
/// Deadlines of the parent's phases.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(20);
const STOP_TIMEOUT: Duration = Duration::from_secs(5);
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the parent samples progress and looks for dead children.
const SAMPLE_EVERY: Duration = Duration::from_millis(2);
/// Smallest payload: magic, producer, incarnation, length, sequence.
const MIN_PAYLOAD: usize = 24;
const MAGIC: u32 = u32::from_le_bytes(*b"CHAO");

// ------------------------------------------------------------ the logs ---

// A log is a file of u64 words: a header, then records. Every word is
// written with atomic stores by one process (the header's STOP and SPAWN
// words by the parent, the rest by the child) and read by the parent.
const W_STATE: usize = 0;
const W_PID: usize = 1;
/// Producer: highest sequence number whose outcome is recorded ("done").
/// Consumer: number of records.
const W_COUNT: usize = 2;
const W_MAX_CALL_US: usize = 3;
const W_MAX_GAP_US: usize = 4;
/// Monotonic µs of the last success (or, for a consumer, the last time it
/// found the queue empty).
const W_PROGRESS_US: usize = 5;
/// Monotonic µs at which the current blocking call began; 0 outside one.
const W_CALL_START_US: usize = 6;
/// Set by the parent: stop at the next turn of the loop.
const W_STOP: usize = 7;
/// Producer: failure records appended.
const W_FAILS: usize = 8;
/// Producer: sends that returned `Ok`.
const W_OK: usize = 9;
const W_READY_US: usize = 10;
/// Producer: `Full`; consumer: receive timeouts.
const W_FULL_OR_TIMEOUTS: usize = 11;
/// Producer: `Fenced`; consumer: `finish` reporting the slot taken over.
const W_FENCED_OR_STOLEN: usize = 12;
/// Other errors of send or receive.
const W_ERRORS: usize = 13;
/// Consumer: messages whose bytes were not what their producer wrote.
const W_CORRUPT: usize = 14;
/// Written by the parent: monotonic µs of the spawn.
const W_SPAWN_US: usize = 15;
const HEADER_WORDS: usize = 16;

const STATE_SPAWNED: u64 = 0;
const STATE_RUNNING: u64 = 1;
const STATE_EXITED: u64 = 2;
/// A consumer whose log filled up exits 0 in this state and is restarted.
const STATE_LOG_FULL: u64 = 3;

/// Record slots per log: failure records of a producer (rare), receive
/// records of a consumer (one per message; the file is sparse).
const PRODUCER_RECORDS: usize = 1 << 20;
const CONSUMER_RECORDS: usize = 1 << 27;

/// Failure kinds in the top bits of a producer's failure record.
const FAIL_FULL: u64 = 1;
const FAIL_FENCED: u64 = 2;
const FAIL_OTHER: u64 = 3;
const FAIL_SHIFT: u32 = 60;

/// A consumer record, and a message's identity: producer (6 bits),
/// incarnation (22 bits), sequence number (36 bits, from 1: never 0).
const INC_BITS: u32 = 22;
const SEQ_BITS: u32 = 36;
const SEQ_MASK: u64 = (1 << SEQ_BITS) - 1;
const MAX_PRODUCERS: usize = 32;

fn pack(p: u32, inc: u32, seq: u64) -> u64 {
    u64::from(p) << (INC_BITS + SEQ_BITS) | u64::from(inc) << SEQ_BITS | seq
}

fn unpack(r: u64) -> (usize, usize, u64) {
    (
        (r >> (INC_BITS + SEQ_BITS)) as usize,
        ((r >> SEQ_BITS) & ((1 << INC_BITS) - 1)) as usize,
        r & SEQ_MASK,
    )
}

/// A log file mapped shared.
struct LogMap {
    base: NonNull<AtomicU64>,
    words: usize,
}

impl LogMap {
    /// Creates the log at `path` (which must not exist) with room for
    /// `records` records.
    fn create(path: &Path, records: usize) -> io::Result<LogMap> {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)?;
        let words = HEADER_WORDS + records;
        f.set_len((words * 8) as u64)?;
        LogMap::map(&f, words)
    }

    fn open(path: &Path) -> io::Result<LogMap> {
        let f = OpenOptions::new().read(true).write(true).open(path)?;
        let len = usize::try_from(f.metadata()?.len()).map_err(io::Error::other)?;
        if len < HEADER_WORDS * 8 || len % 8 != 0 {
            return Err(io::Error::other(format!("log {path:?}: bad size {len}")));
        }
        LogMap::map(&f, len / 8)
    }

    fn map(f: &File, words: usize) -> io::Result<LogMap> {
        // SAFETY: a fresh shared mapping of `words * 8` bytes of an open
        // file of at least that size; no existing memory is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                words * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base =
            NonNull::new(p.cast::<AtomicU64>()).ok_or_else(|| io::Error::other("null map"))?;
        Ok(LogMap { base, words })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words, "log word {i} out of {}", self.words);
        // SAFETY: `i` is inside the mapping, which is page-aligned (so the
        // word is 8-aligned) and lives as long as `self`; every process
        // accesses these words only atomically.
        unsafe { &*self.base.as_ptr().add(i) }
    }

    fn get(&self, w: usize) -> u64 {
        self.word(w).load(Ordering::Acquire)
    }

    fn set(&self, w: usize, v: u64) {
        self.word(w).store(v, Ordering::Release);
    }

    fn add(&self, w: usize, n: u64) {
        self.word(w).fetch_add(n, Ordering::Relaxed);
    }

    fn raise(&self, w: usize, v: u64) {
        self.word(w).fetch_max(v, Ordering::Relaxed);
    }

    fn capacity(&self) -> usize {
        self.words - HEADER_WORDS
    }

    fn record(&self, k: usize) -> &AtomicU64 {
        self.word(HEADER_WORDS + k)
    }

    /// The records written so far: nonzero words from the first on (a
    /// record is one word, so a SIGKILL cannot tear it).
    fn records(&self) -> impl Iterator<Item = u64> + '_ {
        (0..self.capacity())
            .map(|k| self.record(k).load(Ordering::Acquire))
            .take_while(|&r| r != 0)
    }
}

impl Drop for LogMap {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `map`, which no
        // reference outlives (they borrow `self`).
        unsafe {
            libc::munmap(self.base.as_ptr().cast(), self.words * 8);
        }
    }
}

/// CLOCK_MONOTONIC in µs: the same clock in every process.
fn mono_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill in.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000 + ts.tv_nsec as u64 / 1_000
}

fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Writes message (p, inc, seq)'s payload into `buf`: magic, producer,
/// incarnation, length, sequence number, then bytes derived from them.
fn fill_payload(buf: &mut [u8], p: u32, inc: u32, seq: u64) {
    buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    buf[4..8].copy_from_slice(&p.to_le_bytes());
    buf[8..12].copy_from_slice(&inc.to_le_bytes());
    let len = buf.len() as u32;
    buf[12..16].copy_from_slice(&len.to_le_bytes());
    buf[16..24].copy_from_slice(&seq.to_le_bytes());
    let mut s = pack(p, inc, seq) ^ 0x6368_616F_735F_6D70;
    for chunk in buf[24..].chunks_mut(8) {
        let w = splitmix(&mut s).to_le_bytes();
        chunk.copy_from_slice(&w[..chunk.len()]);
    }
}

/// The identity of a received payload, if it is exactly what its producer
/// wrote.
fn decode(data: &[u8], scratch: &mut Vec<u8>) -> Option<u64> {
    if data.len() < MIN_PAYLOAD {
        return None;
    }
    let u32_at = |i: usize| u32::from_le_bytes(data[i..i + 4].try_into().expect("4 bytes"));
    let (p, inc) = (u32_at(4), u32_at(8));
    let seq = u64::from_le_bytes(data[16..24].try_into().expect("8 bytes"));
    if p as usize >= MAX_PRODUCERS || inc >= 1 << INC_BITS || seq == 0 || seq > SEQ_MASK {
        return None;
    }
    scratch.clear();
    scratch.resize(data.len(), 0);
    fill_payload(scratch, p, inc, seq);
    (scratch.as_slice() == data).then(|| pack(p, inc, seq))
}

fn hex(data: &[u8]) -> String {
    data.iter().take(48).map(|b| format!("{b:02x}")).collect()
}

// ------------------------------------------------------------ children ---

/// Runs a child role (producer or consumer); returns its exit code.
pub fn child_main(role: &str) -> i32 {
    let kind = match role {
        PRODUCER_ROLE => Kind::Producer,
        CONSUMER_ROLE => Kind::Consumer,
        other => {
            eprintln!("chaos: unknown role {other:?}");
            return 2;
        }
    };
    match child(kind) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("chaos {role} (pid {}): error: {e}", std::process::id());
            1
        }
    }
}

fn env_parse<T: std::str::FromStr>(var: &str) -> Result<T>
where
    T::Err: fmt::Display,
{
    let v = std::env::var(var).map_err(|e| format!("{var}: {e}"))?;
    v.parse().map_err(|e| format!("{var}={v:?}: {e}").into())
}

/// True while the parent that started us is alive (we are not adopted).
fn parent_alive() -> bool {
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    process::parent_pid() == Some(ppid as u32)
}

fn child(kind: Kind) -> Result<i32> {
    // Started with `die_with_parent`: killed with the parent, and never
    // started after its death; this only covers a launcher that did not.
    if !parent_alive() {
        return Ok(4);
    }
    let path: PathBuf = env_parse::<String>(ENV_LOG)?.into();
    let log = LogMap::open(&path).map_err(|e| format!("open log {path:?}: {e}"))?;
    let index: u32 = env_parse(ENV_INDEX)?;
    let inc: u32 = env_parse(ENV_INCARNATION)?;
    let mut q = process::open_queue(QUEUE_KEY)?;
    q.set_unblock_timeout(Duration::from_millis(env_parse(ENV_UNBLOCK_MS)?));
    q.set_send_retry(SEND_RETRY);
    let now = mono_us();
    log.set(W_PID, u64::from(std::process::id()));
    log.set(W_PROGRESS_US, now);
    log.set(W_READY_US, now);
    log.set(W_STATE, STATE_RUNNING);
    let code = match kind {
        Kind::Producer => produce(&q, &log, index, inc, env_parse(ENV_FILL_US)?),
        Kind::Consumer => consume(&q, &log, env_parse(ENV_HOLD_US)?),
    };
    if log.get(W_STATE) == STATE_RUNNING {
        log.set(W_STATE, STATE_EXITED);
    }
    Ok(code)
}

/// Works (spins) for `us` microseconds.
fn work(us: u64) {
    if us > 0 {
        let until = mono_us() + us;
        while mono_us() < until {
            std::hint::spin_loop();
        }
    }
}

/// Sends `buf` in place: reserves a slot (waiting for one as `send`
/// would, by polling), fills it, works `fill_us` µs holding the claim,
/// commits.
fn send_in_place(q: &Queue, buf: &[u8], fill_us: u64) -> Result<(), TrySendError<()>> {
    let budget = SEND_RETRY.wait * SEND_RETRY.tries;
    let start = Instant::now();
    let mut nap = Duration::from_micros(20);
    loop {
        match q.try_reserve() {
            Ok(mut slot) => {
                slot.payload_mut()[..buf.len()].copy_from_slice(buf);
                work(fill_us);
                return slot.commit(Request::DO, None, buf.len());
            }
            Err(e) if e.is_full() && start.elapsed() < budget => {
                std::thread::sleep(nap);
                nap = (nap * 2).min(Duration::from_millis(2));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A failed send's kind, and what it said.
fn failure<T>(e: &TrySendError<T>) -> (u64, String) {
    let kind = match e {
        TrySendError::Full(_) => FAIL_FULL,
        TrySendError::Fenced(_) => FAIL_FENCED,
        _ => FAIL_OTHER,
    };
    (kind, e.to_string())
}

fn produce(q: &Queue, log: &LogMap, p: u32, inc: u32, fill_us: u64) -> i32 {
    let mut buf = vec![0u8; q.max_payload()];
    let mut last_ok = log.get(W_READY_US);
    let mut failures = 0;
    for seq in 1..=SEQ_MASK {
        if log.get(W_STOP) != 0 || (seq % 1024 == 0 && !parent_alive()) {
            break;
        }
        fill_payload(&mut buf, p, inc, seq);
        let t0 = mono_us();
        log.set(W_CALL_START_US, t0);
        let r = if fill_us > 0 && seq % 2 == 1 {
            send_in_place(q, &buf, fill_us).map_err(|e| failure(&e))
        } else {
            q.send(Message::new(Request::DO, buf.as_slice()))
                .map_err(|e| failure(&e))
        };
        let t1 = mono_us();
        log.set(W_CALL_START_US, 0);
        log.raise(W_MAX_CALL_US, t1.saturating_sub(t0));
        match r {
            Ok(()) => {
                // The record: every number up to `done` not in the
                // failure list was sent with Ok. Stored before the next
                // send can publish anything.
                log.set(W_COUNT, seq);
                fence(Ordering::SeqCst);
                log.add(W_OK, 1);
                log.raise(W_MAX_GAP_US, t1.saturating_sub(last_ok));
                last_ok = t1;
                log.set(W_PROGRESS_US, t1);
            }
            Err((kind, what)) => {
                match kind {
                    FAIL_FULL => log.add(W_FULL_OR_TIMEOUTS, 1),
                    FAIL_FENCED => log.add(W_FENCED_OR_STOLEN, 1),
                    _ => {
                        log.add(W_ERRORS, 1);
                        eprintln!("chaos producer {p}.{inc}: send {seq}: {what}");
                    }
                }
                if failures == log.capacity() {
                    eprintln!("chaos producer {p}.{inc}: failure log full");
                    return 5;
                }
                log.record(failures)
                    .store(seq | kind << FAIL_SHIFT, Ordering::Release);
                failures += 1;
                log.set(W_FAILS, failures as u64);
                log.set(W_COUNT, seq);
                fence(Ordering::SeqCst);
            }
        }
    }
    0
}

fn consume(q: &Queue, log: &LogMap, hold_us: u64) -> i32 {
    let mut scratch = Vec::new();
    let mut count = 0;
    let mut last_ok = log.get(W_READY_US);
    for turn in 1u64.. {
        if log.get(W_STOP) != 0 || (turn % 1024 == 0 && !parent_alive()) {
            break;
        }
        if count == log.capacity() {
            log.set(W_STATE, STATE_LOG_FULL);
            break;
        }
        let t0 = mono_us();
        log.set(W_CALL_START_US, t0);
        let r = q.recv_ref_timeout(RECV_TIMEOUT);
        let t1 = mono_us();
        log.set(W_CALL_START_US, 0);
        log.raise(W_MAX_CALL_US, t1.saturating_sub(t0));
        match r {
            Ok(g) => {
                let id =
                    decode(g.data(), &mut scratch).filter(|_| g.header().request == Request::DO);
                match id {
                    Some(id) => {
                        // Recorded before the slot is released: if we die
                        // from here on, the message is ours on record, and
                        // if we die before releasing it, it is also
                        // offered again (the one legal duplicate).
                        log.record(count).store(id, Ordering::Release);
                        fence(Ordering::SeqCst);
                        count += 1;
                        log.set(W_COUNT, count as u64);
                    }
                    None => {
                        log.add(W_CORRUPT, 1);
                        eprintln!(
                            "chaos consumer (pid {}): bad message {:?}, {} bytes: {}",
                            std::process::id(),
                            g.header(),
                            g.data().len(),
                            hex(g.data())
                        );
                    }
                }
                // Work on the message in place, holding its slot.
                work(hold_us);
                if let Err(e) = g.finish() {
                    log.add(W_FENCED_OR_STOLEN, 1);
                    eprintln!("chaos consumer (pid {}): finish: {e}", std::process::id());
                }
                let _ = q.task_done();
                log.raise(W_MAX_GAP_US, t1.saturating_sub(last_ok));
                last_ok = t1;
                log.set(W_PROGRESS_US, t1);
            }
            Err(RecvTimeoutError::Timeout) => {
                log.add(W_FULL_OR_TIMEOUTS, 1);
                if q.is_empty() {
                    // Nothing to take: not a stall.
                    last_ok = mono_us();
                    log.set(W_PROGRESS_US, last_ok);
                }
            }
            Err(e) => {
                log.add(W_ERRORS, 1);
                eprintln!("chaos consumer (pid {}): recv: {e}", std::process::id());
            }
        }
    }
    0
}

// -------------------------------------------------------------- parent ---

/// What to run.
#[derive(Clone, Debug)]
pub struct Opts {
    /// How long the kills go on.
    pub secs: f64,
    /// One kill every this many ms (0: none).
    pub kill_every_ms: u64,
    /// Producer processes.
    pub producers: usize,
    /// Consumer processes.
    pub consumers: usize,
    /// Queue slots.
    pub capacity: u32,
    /// Message size.
    pub payload: usize,
    /// Unblock timeout of every handle.
    pub unblock_ms: u64,
    /// Producers: every other message is sent in place, working this
    /// many µs between the claim and the commit (0: all with `send`).
    pub fill_us: u64,
    /// Consumers: work this many µs on each message in place, after
    /// recording it and before releasing it.
    pub hold_us: u64,
    /// Seed of the choice of victims.
    pub seed: Option<u64>,
    /// Keep the logs.
    pub keep: bool,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            secs: 30.0,
            kill_every_ms: 200,
            producers: 3,
            consumers: 3,
            capacity: 64,
            payload: 64,
            unblock_ms: 200,
            fill_us: 100,
            hold_us: 50,
            seed: None,
            keep: false,
        }
    }
}

/// How children are started: this executable, with `args`, and the role
/// also in the environment variable `role_var` if given (the test
/// harness's re-execution of a test binary).
#[derive(Clone, Debug, Default)]
pub struct Launcher {
    /// Arguments of every child.
    pub args: Vec<String>,
    /// An extra environment variable that carries the role.
    pub role_var: Option<String>,
}

/// The outcome: counts and violations.
#[derive(Debug, Default)]
pub struct Report {
    /// `key=value` pairs, in order.
    pub values: Vec<(String, String)>,
    /// Broken promises (empty if all held).
    pub violations: Vec<String>,
    /// Lines that explain the violations (examples, recent events).
    pub details: Vec<String>,
    /// A human summary.
    pub summary: Vec<String>,
}

impl Report {
    fn value(&mut self, k: &str, v: impl fmt::Display) {
        self.values.push((k.to_owned(), v.to_string()));
    }

    /// A value by key.
    pub fn get(&self, k: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for l in &self.summary {
            writeln!(f, "{l}")?;
        }
        for v in &self.violations {
            writeln!(f, "VIOLATION: {v}")?;
        }
        for d in &self.details {
            writeln!(f, "  {d}")?;
        }
        for (k, v) in &self.values {
            writeln!(f, "{k}={v}")?;
        }
        write!(f, "violations={}", self.violations.len())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Producer,
    Consumer,
}

impl Kind {
    fn role(self) -> &'static str {
        match self {
            Kind::Producer => PRODUCER_ROLE,
            Kind::Consumer => CONSUMER_ROLE,
        }
    }

    fn letter(self) -> char {
        match self {
            Kind::Producer => 'p',
            Kind::Consumer => 'c',
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Start,
    Chaos,
    StopProducers,
    Drain,
    StopConsumers,
}

/// How an incarnation ended.
#[derive(Clone, Debug, PartialEq, Eq)]
enum End {
    Running,
    /// SIGKILLed by the parent.
    Killed,
    /// Exited 0 when asked to stop (or with a full log).
    Stopped,
    /// Anything else.
    Died(String),
}

/// One life of one producer or consumer.
struct Incarnation {
    kind: Kind,
    index: usize,
    inc: u32,
    pid: u32,
    log: LogMap,
    end: End,
    /// The call / gap it was in when killed.
    open_call_us: u64,
    open_gap_us: u64,
    hung_noted: bool,
}

impl Incarnation {
    fn name(&self) -> String {
        format!("{}{}.{}", self.kind.letter(), self.index, self.inc)
    }
}

struct Live {
    id: usize,
    child: ChildProcess,
}

struct Chaos<'a> {
    /// Dropped first: kills and reaps every child still running.
    live: Vec<Option<Live>>,
    o: &'a Opts,
    launcher: &'a Launcher,
    q: &'a Queue,
    dir: &'a Path,
    incs: Vec<Incarnation>,
    next_inc: Vec<u32>,
    rng: u64,
    t0: Instant,
    bound_us: u64,
    kills: [u64; 2],
    log_full_restarts: u64,
    /// Sends and receives of incarnations no longer running.
    dead_sent: u64,
    dead_recv: u64,
    /// Global progress: last totals seen and since when.
    last_sent: u64,
    last_recv: u64,
    send_mark: u64,
    recv_mark: u64,
    max_send_stall_us: u64,
    max_recv_stall_us: u64,
    max_startup_us: u64,
    violations: Vec<String>,
    events: Vec<String>,
}

impl<'a> Chaos<'a> {
    fn slots(&self) -> usize {
        self.o.producers + self.o.consumers
    }

    fn slot_kind(&self, slot: usize) -> (Kind, usize) {
        if slot < self.o.producers {
            (Kind::Producer, slot)
        } else {
            (Kind::Consumer, slot - self.o.producers)
        }
    }

    fn event(&mut self, what: String) {
        let t = self.t0.elapsed().as_secs_f64();
        self.events.push(format!("t={t:.3}s {what}"));
    }

    fn violation(&mut self, what: String) {
        self.event(format!("VIOLATION {what}"));
        self.violations.push(what);
    }

    fn spawn(&mut self, slot: usize) -> Result<()> {
        let (kind, index) = self.slot_kind(slot);
        let inc = self.next_inc[slot];
        if inc >= 1 << INC_BITS {
            return Err("too many incarnations".into());
        }
        self.next_inc[slot] += 1;
        let path = self.dir.join(format!("{}{index}.{inc}", kind.letter()));
        let records = match kind {
            Kind::Producer => PRODUCER_RECORDS,
            Kind::Consumer => CONSUMER_RECORDS,
        };
        let log = LogMap::create(&path, records)?;
        log.set(W_SPAWN_US, mono_us());
        let mut c = Child::role(kind.role())
            .die_with_parent(true)
            .queue(QUEUE_KEY, self.q)
            .inherit_args(false)
            .args(&self.launcher.args)
            .env(ENV_LOG, &path)
            .env(ENV_INDEX, index.to_string())
            .env(ENV_INCARNATION, inc.to_string())
            .env(ENV_UNBLOCK_MS, self.o.unblock_ms.to_string())
            .env(ENV_FILL_US, self.o.fill_us.to_string())
            .env(ENV_HOLD_US, self.o.hold_us.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        if let Some(var) = &self.launcher.role_var {
            c = c.env(var, kind.role());
        }
        let child = c.spawn()?;
        let id = self.incs.len();
        self.incs.push(Incarnation {
            kind,
            index,
            inc,
            pid: child.pid(),
            log,
            end: End::Running,
            open_call_us: 0,
            open_gap_us: 0,
            hung_noted: false,
        });
        self.live[slot] = Some(Live { id, child });
        Ok(())
    }

    /// Books the end of incarnation `id` (its process reaped at `now`).
    fn finish(&mut self, id: usize, end: End, now: u64) {
        let inc = &mut self.incs[id];
        let log = &inc.log;
        if log.get(W_STATE) == STATE_RUNNING {
            let call = log.get(W_CALL_START_US);
            if call != 0 {
                inc.open_call_us = now.saturating_sub(call);
            }
            inc.open_gap_us = now.saturating_sub(log.get(W_PROGRESS_US));
        }
        let ready = log.get(W_READY_US);
        if ready != 0 {
            self.max_startup_us = self
                .max_startup_us
                .max(ready.saturating_sub(log.get(W_SPAWN_US)));
        }
        match inc.kind {
            Kind::Producer => self.dead_sent += log.get(W_OK),
            Kind::Consumer => self.dead_recv += log.get(W_COUNT),
        }
        inc.end = end;
    }

    fn kill_restart(&mut self, slot: usize) -> Result<()> {
        let Some(mut l) = self.live[slot].take() else {
            return self.spawn(slot);
        };
        let state = self.incs[l.id].log.get(W_STATE);
        l.child.kill()?;
        let status = l.child.wait()?;
        let now = mono_us();
        let name = self.incs[l.id].name();
        if status.signal() == Some(libc::SIGKILL) {
            self.finish(l.id, End::Killed, now);
            let kind = self.incs[l.id].kind;
            self.kills[kind as usize] += 1;
            let what = match state {
                STATE_SPAWNED => "starting",
                STATE_RUNNING if self.incs[l.id].open_call_us > 0 => "in a call",
                STATE_RUNNING => "running",
                _ => "exiting",
            };
            self.event(format!("killed {name} (pid {}) {what}", l.child.pid()));
        } else {
            self.died(l.id, status, now);
        }
        self.spawn(slot)
    }

    fn died(&mut self, id: usize, status: ExitStatus, now: u64) {
        let name = self.incs[id].name();
        let state = self.incs[id].log.get(W_STATE);
        if status.success() && state == STATE_LOG_FULL {
            self.finish(id, End::Stopped, now);
            self.log_full_restarts += 1;
            self.event(format!("{name} exited with a full log"));
        } else {
            self.finish(id, End::Died(status.to_string()), now);
            self.violation(format!(
                "{name} (pid {}) died on its own: {status} (state {state})",
                self.incs[id].pid
            ));
        }
    }

    /// Reaps children that exited; in phases where `kind` must keep
    /// running, starts new incarnations. Exits of children asked to stop
    /// are checked.
    fn reap(&mut self, phase: Phase) -> Result<()> {
        for slot in 0..self.slots() {
            let Some(l) = self.live[slot].as_mut() else {
                continue;
            };
            let Some(status) = l.child.try_wait()? else {
                continue;
            };
            let id = l.id;
            self.live[slot] = None;
            let now = mono_us();
            let (kind, _) = self.slot_kind(slot);
            let asked = self.incs[id].log.get(W_STOP) != 0;
            if asked {
                let state = self.incs[id].log.get(W_STATE);
                if status.success() && state == STATE_EXITED {
                    self.finish(id, End::Stopped, now);
                } else {
                    self.finish(id, End::Died(status.to_string()), now);
                    let name = self.incs[id].name();
                    self.violation(format!(
                        "{name} asked to stop ended with {status} (state {state})"
                    ));
                }
                continue;
            }
            self.died(id, status, now);
            let keep = match kind {
                Kind::Producer => matches!(phase, Phase::Start | Phase::Chaos),
                Kind::Consumer => phase != Phase::StopConsumers,
            };
            if keep {
                self.spawn(slot)?;
            }
        }
        Ok(())
    }

    /// Samples progress: global stalls, calls running too long, exits.
    fn sample(&mut self, phase: Phase) -> Result<()> {
        self.reap(phase)?;
        let now = mono_us();
        let (mut sent, mut recv) = (self.dead_sent, self.dead_recv);
        let mut hung = Vec::new();
        for l in self.live.iter().flatten() {
            let inc = &mut self.incs[l.id];
            match inc.kind {
                Kind::Producer => sent += inc.log.get(W_OK),
                Kind::Consumer => recv += inc.log.get(W_COUNT),
            }
            let call = inc.log.get(W_CALL_START_US);
            if call != 0 && now.saturating_sub(call) > self.bound_us && !inc.hung_noted {
                inc.hung_noted = true;
                hung.push(format!(
                    "{} (pid {}) in one call for over {} ms",
                    inc.name(),
                    inc.pid,
                    self.bound_us / 1000
                ));
            }
        }
        for h in hung {
            self.violation(h);
        }
        if recv != self.last_recv || self.q.is_empty() {
            self.last_recv = recv;
            self.recv_mark = now;
        } else {
            self.max_recv_stall_us = self.max_recv_stall_us.max(now - self.recv_mark);
        }
        if sent != self.last_sent || phase != Phase::Chaos {
            self.last_sent = sent;
            self.send_mark = now;
        } else {
            self.max_send_stall_us = self.max_send_stall_us.max(now - self.send_mark);
        }
        Ok(())
    }

    fn running(&self, kind: Kind) -> usize {
        self.live
            .iter()
            .flatten()
            .filter(|l| self.incs[l.id].kind == kind)
            .count()
    }

    fn start(&mut self) -> Result<()> {
        for slot in 0..self.slots() {
            self.spawn(slot)?;
        }
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            self.reap(Phase::Start)?;
            let all = self
                .live
                .iter()
                .flatten()
                .all(|l| self.incs[l.id].log.get(W_STATE) == STATE_RUNNING);
            if all && self.live.iter().all(Option::is_some) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("children not running within {STARTUP_TIMEOUT:?}").into());
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    }

    fn reset_marks(&mut self) {
        let now = mono_us();
        self.send_mark = now;
        self.recv_mark = now;
    }

    fn chaos(&mut self) -> Result<()> {
        let start = Instant::now();
        let end = start + Duration::from_secs_f64(self.o.secs);
        let every = Duration::from_millis(self.o.kill_every_ms);
        let mut next_kill = start + every;
        self.reset_marks();
        self.event("chaos starts".into());
        loop {
            let now = Instant::now();
            if now >= end {
                break;
            }
            std::thread::sleep(SAMPLE_EVERY.min(end - now));
            self.sample(Phase::Chaos)?;
            if !every.is_zero() && Instant::now() >= next_kill {
                let victim = (splitmix(&mut self.rng) % self.slots() as u64) as usize;
                self.kill_restart(victim)?;
                next_kill = (next_kill + every).max(Instant::now());
            }
        }
        Ok(())
    }

    /// Asks every running child of `kind` to stop and waits for them.
    fn stop(&mut self, kind: Kind, phase: Phase) -> Result<()> {
        self.event(format!("stopping {kind:?}s"));
        for l in self.live.iter().flatten() {
            if self.incs[l.id].kind == kind {
                self.incs[l.id].log.set(W_STOP, 1);
            }
        }
        let deadline = Instant::now() + STOP_TIMEOUT;
        while self.running(kind) > 0 {
            if Instant::now() >= deadline {
                for slot in 0..self.slots() {
                    let Some(l) = self.live[slot].as_ref() else {
                        continue;
                    };
                    if self.incs[l.id].kind != kind {
                        continue;
                    }
                    let mut l = self.live[slot].take().expect("checked");
                    let name = self.incs[l.id].name();
                    let call = self.incs[l.id].log.get(W_CALL_START_US);
                    let in_call = if call == 0 {
                        "not in a call".to_owned()
                    } else {
                        format!("in a call for {} ms", (mono_us() - call) / 1000)
                    };
                    self.violation(format!(
                        "{name} (pid {}) did not stop within {STOP_TIMEOUT:?} ({in_call}); killed",
                        l.child.pid()
                    ));
                    l.child.kill()?;
                    l.child.wait()?;
                    self.finish(l.id, End::Died("hung at stop".into()), mono_us());
                }
                break;
            }
            std::thread::sleep(SAMPLE_EVERY);
            self.sample(phase)?;
        }
        Ok(())
    }

    /// Waits until the queue is empty (the consumers took everything).
    fn drain(&mut self) -> Result<Duration> {
        let start = Instant::now();
        self.event("draining".into());
        loop {
            self.sample(Phase::Drain)?;
            if self.q.is_empty() {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= DRAIN_TIMEOUT {
                let len = self.q.len();
                self.violation(format!(
                    "the queue did not drain within {DRAIN_TIMEOUT:?}: len() = {len}"
                ));
                return Ok(start.elapsed());
            }
            std::thread::sleep(SAMPLE_EVERY);
        }
    }

    /// Takes what is left in the queue (nothing, if the drain worked).
    fn leftovers(&mut self) -> Vec<u64> {
        let mut scratch = Vec::new();
        let mut out = Vec::new();
        while let Ok(m) = self.q.try_recv() {
            match decode(&m.data, &mut scratch) {
                Some(id) => out.push(id),
                None => self.violation(format!("bad message left in the queue: {}", hex(&m.data))),
            }
        }
        if !out.is_empty() {
            self.violation(format!(
                "{} messages still in the queue after the consumers stopped",
                out.len()
            ));
        }
        out
    }
}

/// One producer incarnation as the checker sees it.
struct Sent {
    done: u64,
    /// Sequence number -> failure kind.
    failures: HashMap<u64, u64>,
    /// Killed (or died): `done + 1` may have been sent with Ok unrecorded.
    loose: bool,
    /// Receive count per sequence number, 0..=done+1.
    counts: Vec<u8>,
}

/// Checks every record against every other; fills `r`.
fn check(c: &mut Chaos<'_>, leftovers: &[u64], r: &mut Report) {
    let mut sent: Vec<Vec<Sent>> = (0..c.o.producers).map(|_| Vec::new()).collect();
    let (mut failed_full, mut failed_fenced, mut failed_other) = (0u64, 0u64, 0u64);
    for inc in c.incs.iter().filter(|i| i.kind == Kind::Producer) {
        let done = inc.log.get(W_COUNT);
        let mut failures = HashMap::new();
        for rec in inc.log.records() {
            let kind = rec >> FAIL_SHIFT;
            match kind {
                FAIL_FULL => failed_full += 1,
                FAIL_FENCED => failed_fenced += 1,
                _ => failed_other += 1,
            }
            failures.insert(rec & SEQ_MASK, kind);
        }
        debug_assert_eq!(sent[inc.index].len(), inc.inc as usize);
        sent[inc.index].push(Sent {
            done,
            failures,
            loose: inc.end != End::Stopped,
            counts: vec![0; done as usize + 2],
        });
    }

    // Receivers: every consumer incarnation, then the parent's leftovers.
    let consumers: Vec<usize> = (0..c.incs.len())
        .filter(|&i| c.incs[i].kind == Kind::Consumer)
        .collect();
    let source_records = |s: usize| -> Box<dyn Iterator<Item = u64> + '_> {
        match consumers.get(s) {
            Some(&i) => Box::new(c.incs[i].log.records()),
            None => Box::new(leftovers.iter().copied()),
        }
    };
    let source_name = |s: usize| match consumers.get(s) {
        Some(&i) => c.incs[i].name(),
        None => "parent".to_owned(),
    };
    let sources = consumers.len() + 1;

    let (mut receives, mut phantom, mut failed_delivered) = (0u64, 0u64, 0u64);
    let mut examples: Vec<String> = Vec::new();
    for s in 0..sources {
        for rec in source_records(s) {
            receives += 1;
            let (p, i, seq) = unpack(rec);
            let Some(x) = sent.get_mut(p).and_then(|v| v.get_mut(i)) else {
                phantom += 1;
                if examples.len() < 20 {
                    examples.push(format!(
                        "{} received p{p}.{i} #{seq}: no such producer incarnation",
                        source_name(s)
                    ));
                }
                continue;
            };
            if seq > x.done + u64::from(x.loose) {
                phantom += 1;
                if examples.len() < 20 {
                    examples.push(format!(
                        "{} received p{p}.{i} #{seq}, never sent (its producer recorded up to #{}, {})",
                        source_name(s),
                        x.done,
                        if x.loose { "killed" } else { "stopped" }
                    ));
                }
            } else if let Some(kind) = x.failures.get(&seq) {
                failed_delivered += 1;
                if examples.len() < 20 {
                    examples.push(format!(
                        "{} received p{p}.{i} #{seq}, whose send failed (kind {kind})",
                        source_name(s)
                    ));
                }
            } else {
                let n = &mut x.counts[seq as usize];
                *n = n.saturating_add(1);
            }
        }
    }

    let (mut sent_ok, mut received, mut duplicates, mut lost, mut unrecorded) = (0, 0, 0, 0, 0);
    let mut dup_ids: HashSet<u64> = HashSet::new();
    let mut lost_ids: Vec<u64> = Vec::new();
    for (p, incs) in sent.iter().enumerate() {
        for (i, x) in incs.iter().enumerate() {
            let top = x.done + u64::from(x.loose);
            for seq in 1..=top {
                if x.failures.contains_key(&seq) {
                    continue;
                }
                let n = u64::from(x.counts[seq as usize]);
                let recorded = seq <= x.done;
                if recorded {
                    sent_ok += 1;
                } else if n > 0 {
                    unrecorded += 1;
                }
                if n == 0 && recorded {
                    lost += 1;
                    if lost_ids.len() < 20 {
                        lost_ids.push(pack(p as u32, i as u32, seq));
                    }
                }
                if n > 0 {
                    received += 1;
                }
                if n > 1 {
                    duplicates += n - 1;
                    dup_ids.insert(pack(p as u32, i as u32, seq));
                }
            }
        }
    }

    // Who received the duplicated messages; and, for lost ones, who
    // received their neighbours.
    let mut receivers: HashMap<u64, Vec<usize>> = HashMap::new();
    let mut near: HashMap<u64, Vec<String>> = HashMap::new();
    let lost_set: HashSet<(usize, usize)> = lost_ids
        .iter()
        .map(|&id| {
            let (p, i, _) = unpack(id);
            (p, i)
        })
        .collect();
    let mut last: Vec<Option<u64>> = vec![None; sources];
    for (s, l) in last.iter_mut().enumerate() {
        for rec in source_records(s) {
            *l = Some(rec);
            if dup_ids.contains(&rec) {
                receivers.entry(rec).or_default().push(s);
            }
            let (p, i, seq) = unpack(rec);
            if lost_set.contains(&(p, i)) {
                for &id in &lost_ids {
                    let (lp, li, lseq) = unpack(id);
                    if (lp, li) == (p, i) && seq.abs_diff(lseq) <= 3 {
                        near.entry(id)
                            .or_default()
                            .push(format!("#{seq} by {}", source_name(s)));
                    }
                }
            }
        }
    }
    let killed = |s: usize| {
        consumers
            .get(s)
            .is_some_and(|&i| c.incs[i].end == End::Killed)
    };
    let mut unexplained = 0;
    for (&id, rs) in &receivers {
        let blamed: HashSet<usize> = rs
            .iter()
            .copied()
            .filter(|&s| killed(s) && last[s] == Some(id))
            .collect();
        let excess = (rs.len() - 1).saturating_sub(blamed.len());
        if excess > 0 {
            unexplained += excess;
            if examples.len() < 40 {
                let (p, i, seq) = unpack(id);
                let mut who: Vec<String> = rs
                    .iter()
                    .take(8)
                    .map(|&s| {
                        format!(
                            "{}{}{}",
                            source_name(s),
                            if killed(s) {
                                " (killed"
                            } else {
                                " (not killed"
                            },
                            if last[s] == Some(id) {
                                ", its last record)"
                            } else {
                                ", not its last record)"
                            }
                        )
                    })
                    .collect();
                if rs.len() > who.len() {
                    who.push(format!("and {} more", rs.len() - who.len()));
                }
                examples.push(format!(
                    "p{p}.{i} #{seq} received {} times, by {}",
                    rs.len(),
                    who.join(", ")
                ));
            }
        }
    }
    for &id in &lost_ids {
        let (p, i, seq) = unpack(id);
        let x = &sent[p][i];
        let inc = c
            .incs
            .iter()
            .find(|v| v.kind == Kind::Producer && v.index == p && v.inc as usize == i)
            .expect("known incarnation");
        let mut n = near.remove(&id).unwrap_or_default();
        n.sort();
        examples.push(format!(
            "lost: p{p}.{i} #{seq} (pid {}, recorded up to #{}, {:?}); neighbours: {}",
            inc.pid,
            x.done,
            inc.end,
            n.join(", ")
        ));
    }

    // Per-process figures, including the stall a killed one was in.
    let (mut max_call, mut max_gap) = ((0u64, String::new()), (0u64, String::new()));
    let (mut corrupt, mut stolen, mut errors) = (0, 0, 0);
    for inc in &c.incs {
        let call = inc.log.get(W_MAX_CALL_US).max(inc.open_call_us);
        let gap = inc.log.get(W_MAX_GAP_US).max(inc.open_gap_us);
        if call > max_call.0 {
            max_call = (call, inc.name());
        }
        if gap > max_gap.0 {
            max_gap = (gap, inc.name());
        }
        errors += inc.log.get(W_ERRORS);
        if inc.kind == Kind::Consumer {
            corrupt += inc.log.get(W_CORRUPT);
            stolen += inc.log.get(W_FENCED_OR_STOLEN);
        }
    }

    let consumer_kills = c.kills[Kind::Consumer as usize];
    let bound = c.bound_us;
    let mut v = Vec::new();
    if lost > 0 {
        v.push(format!("{lost} messages sent with Ok were never received"));
    }
    if phantom > 0 {
        v.push(format!("{phantom} receives of messages never sent"));
    }
    if failed_delivered > 0 {
        v.push(format!(
            "{failed_delivered} receives of messages whose send failed"
        ));
    }
    if corrupt > 0 {
        v.push(format!("{corrupt} messages received with wrong bytes"));
    }
    if stolen > 0 {
        v.push(format!(
            "{stolen} held messages taken over from a live consumer"
        ));
    }
    if errors > 0 || failed_other > 0 {
        v.push(format!(
            "{errors} send/receive errors besides Full and Fenced"
        ));
    }
    if unexplained > 0 {
        v.push(format!(
            "{unexplained} duplicates not explained by a consumer killed holding the message"
        ));
    }
    if duplicates > consumer_kills {
        v.push(format!(
            "{duplicates} duplicates, more than the {consumer_kills} consumer kills"
        ));
    }
    for (what, us, who) in [
        ("longest call", max_call.0, max_call.1.as_str()),
        (
            "longest gap between successes",
            max_gap.0,
            max_gap.1.as_str(),
        ),
        ("longest time without a receive", c.max_recv_stall_us, "all"),
        ("longest time without a send", c.max_send_stall_us, "all"),
    ] {
        if us >= bound {
            v.push(format!(
                "{what} {} ms ({who}) reaches the bound of {} ms",
                us / 1000,
                bound / 1000
            ));
        }
    }
    if sent_ok == 0 || received == 0 {
        v.push("nothing was sent or received".to_owned());
    }
    if c.o.kill_every_ms > 0 && c.kills.iter().sum::<u64>() == 0 {
        v.push("no process was killed".to_owned());
    }
    c.violations.extend(v);

    let stats = c.q.recovery_stats();
    let ms = |us: u64| format!("{:.1}", us as f64 / 1000.0);
    r.value("sent_ok", sent_ok);
    r.value("send_failed_full", failed_full);
    r.value("send_failed_fenced", failed_fenced);
    r.value("received", received);
    r.value("receives", receives);
    r.value("duplicates", duplicates);
    r.value("unexplained_duplicates", unexplained);
    r.value("lost", lost);
    r.value("unrecorded_ok_received", unrecorded);
    r.value("phantom", phantom + failed_delivered);
    r.value("corrupt", corrupt);
    r.value("stolen", stolen);
    r.value("errors", errors);
    r.value("left_in_queue", leftovers.len());
    r.value("kills", c.kills.iter().sum::<u64>());
    r.value("producer_kills", c.kills[Kind::Producer as usize]);
    r.value("consumer_kills", consumer_kills);
    r.value("incarnations", c.incs.len());
    r.value("log_full_restarts", c.log_full_restarts);
    r.value("skipped_claims", stats.skipped_claims);
    r.value("fenced_live", stats.fenced_live);
    r.value("redelivered", stats.redelivered);
    r.value("abandoned_tasks", stats.abandoned_tasks);
    r.value("undone_moves", stats.undone_moves);
    r.value("handovers", stats.handovers);
    r.value("max_call_ms", ms(max_call.0));
    r.value("max_call_by", max_call.1);
    r.value("max_gap_ms", ms(max_gap.0));
    r.value("max_gap_by", max_gap.1);
    r.value("max_recv_stall_ms", ms(c.max_recv_stall_us));
    r.value("max_send_stall_ms", ms(c.max_send_stall_us));
    r.value("stall_bound_ms", ms(bound));
    r.value("max_startup_ms", ms(c.max_startup_us));
    r.details.extend(examples);
}

/// Removes a directory on drop (unless kept).
struct TempDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("chaos: logs kept in {}", self.path.display());
        } else if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("chaos: could not remove {}: {e}", self.path.display());
        }
    }
}

/// Runs the chaos and the checks. `Err` is a failure of the harness; the
/// queue's broken promises are in [`Report::violations`].
pub fn run(o: &Opts, launcher: &Launcher) -> Result<Report> {
    if o.producers == 0 || o.consumers == 0 || o.producers > MAX_PRODUCERS {
        return Err(format!("need 1..={MAX_PRODUCERS} producers and at least 1 consumer").into());
    }
    if o.payload < MIN_PAYLOAD {
        return Err(format!("--payload must be at least {MIN_PAYLOAD}").into());
    }
    if !(o.secs >= 0.0 && o.secs.is_finite()) {
        return Err("--secs must be a number of seconds".into());
    }
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let seed = o.seed.unwrap_or(nanos as u64);
    let tag = format!("chaos-{}-{nanos}", std::process::id());
    let dir = TempDir {
        path: std::env::temp_dir().join(format!("mulproc-{tag}")),
        keep: o.keep || std::env::var_os(KEEP_VAR).is_some_and(|v| v != "0"),
    };
    std::fs::create_dir(&dir.path)?;
    // The creating handle removes the name when dropped, on every path.
    let mut q = Queue::create(
        &tag,
        QueueConfig::new(o.capacity, u32::try_from(o.payload)?),
    )?;
    q.set_unblock_timeout(Duration::from_millis(o.unblock_ms));
    let bound = Duration::from_millis(o.unblock_ms) + HANG_MARGIN;
    let mut c = Chaos {
        live: (0..o.producers + o.consumers).map(|_| None).collect(),
        o,
        launcher,
        q: &q,
        dir: &dir.path,
        incs: Vec::new(),
        next_inc: vec![0; o.producers + o.consumers],
        rng: seed,
        t0: Instant::now(),
        bound_us: bound.as_micros() as u64,
        kills: [0; 2],
        log_full_restarts: 0,
        dead_sent: 0,
        dead_recv: 0,
        last_sent: 0,
        last_recv: 0,
        send_mark: 0,
        recv_mark: 0,
        max_send_stall_us: 0,
        max_recv_stall_us: 0,
        max_startup_us: 0,
        violations: Vec::new(),
        events: Vec::new(),
    };
    c.start()?;
    let start = Instant::now();
    c.chaos()?;
    let chaos_time = start.elapsed();
    c.stop(Kind::Producer, Phase::StopProducers)?;
    let drain_time = c.drain()?;
    c.stop(Kind::Consumer, Phase::StopConsumers)?;
    let leftovers = c.leftovers();
    let mut r = Report::default();
    r.summary.push(format!(
        "chaos: {} producers, {} consumers, {:.1} s, one SIGKILL every {} ms, \
         queue of {} slots of {} bytes, unblock timeout {} ms",
        o.producers, o.consumers, o.secs, o.kill_every_ms, o.capacity, o.payload, o.unblock_ms
    ));
    r.value("seed", seed);
    r.value("secs", format!("{:.1}", chaos_time.as_secs_f64()));
    r.value("kill_every_ms", o.kill_every_ms);
    r.value("producers", o.producers);
    r.value("consumers", o.consumers);
    r.value("capacity", o.capacity);
    r.value("payload", o.payload);
    r.value("unblock_ms", o.unblock_ms);
    r.value("fill_us", o.fill_us);
    r.value("hold_us", o.hold_us);
    check(&mut c, &leftovers, &mut r);
    r.value("drain_ms", format!("{:.1}", drain_time.as_secs_f64() * 1e3));
    let sent_ok: f64 = r.get("sent_ok").and_then(|v| v.parse().ok()).unwrap_or(0.0);
    r.value(
        "msgs_per_sec",
        format!("{:.0}", sent_ok / chaos_time.as_secs_f64().max(1e-9)),
    );
    r.summary.push(format!(
        "{} kills, {} incarnations, {} messages sent with Ok; every record checked",
        c.kills.iter().sum::<u64>(),
        c.incs.len(),
        sent_ok
    ));
    if !c.violations.is_empty() {
        let from = c.events.len().saturating_sub(40);
        r.details.push("last events:".to_owned());
        r.details.extend(c.events[from..].iter().cloned());
    }
    if dir.keep {
        let _ = std::fs::write(dir.path.join("events.txt"), c.events.join("\n") + "\n");
    }
    r.violations = std::mem::take(&mut c.violations);
    Ok(r)
}
