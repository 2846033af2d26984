//! Scribbling over a live queue. Another process can write anything into
//! the segment: here one does, with random bytes over the header, the slot
//! headers and the head/tail positions, while producer and consumer
//! processes use the queue through every send and receive call. The library
//! must answer with typed errors (`Corrupt`, `Full`, `Empty`, `Fenced`, ...)
//! or skip what it cannot trust: no panic, no access outside the segment
//! (a crash fails the child), no receive longer than max payload, no call
//! that outlives its timeout by more than [`MAX_OVERRUN`], no hang.
//!
//! Each scenario runs five children of this test binary (see `common`):
//! two producers, two consumers and a scribbler. They open the queue, say
//! they are ready, and wait for a "go" file holding the start time `t0`
//! (wall clock, shared by all processes). Then three phases: `pre` (no
//! scribbling; every message must arrive intact), `scr` (the scribbler
//! writes) and `post` (the scribbler has stopped; the queue may stay
//! broken). A worker files each call under the phase it ran in: `pre` only
//! if it *ended* before scribbling could start, `post` only if it started
//! after scribbling ended.
//!
//! - `random_scribbles_over_busy_queue`: try_send, send with a short
//!   `SendRetry`, try_send_batch, try_reserve + commit (or drop);
//!   try_recv, recv_timeout, try_recv_ref, try_recv_into, try_recv_where,
//!   try_recv_batch, recv_where, join_timeout.
//! - `random_scribbles_under_blocked_callers`: consumers block in
//!   `recv_timeout` (and the other timed receives) for 500 ms at a time,
//!   producers block in `send` (5 × 100 ms).
//!
//! The seed is printed; `MULPROC_SCRIBBLE_SEED=<n>` reruns with it (the
//! interleaving with the workers still differs from run to run).

mod common;

use std::cell::Cell;
use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;
use mulproc::{
    CorruptError, CorruptKind, Filter, Header, Message, Queue, QueueConfig, RecvTimeoutError,
    Request, SendRetry, TryRecvError, TrySendError, Wait,
};

/// Queue shape: small, so that laps wrap often and the ring fills.
const CAP: u32 = 16;
const MAXP: u32 = 48;
/// Request code of every message the producers send.
const REQ: Request = Request::new(0x5C21);
/// Longest a call may outlive its own bound (timeout, retries) before the
/// test fails.
const MAX_OVERRUN: Duration = Duration::from_secs(2);
/// A call this much past its bound is a hang: the child's watchdog reports
/// it and exits.
const HANG: Duration = Duration::from_secs(6);
/// Hard deadline for all children of a scenario, from the start.
const CHILD_DEADLINE: Duration = Duration::from_secs(20);
/// The scribbler starts this long after the `pre` phase ends.
const SCRIBBLE_GAP_MS: u64 = 50;
/// Upper bound on the calls one worker makes.
const MAX_OPS: u64 = 20_000_000;

// White-box offsets (the crate's hidden `__layout` export), used only to
// aim the scribbler. If the layout moves, the scribbles still land inside
// the segment and the test still holds; it just hits these words less
// often. The slot header array is found from the file size (it and the
// payloads end the segment).
const TAIL_AT: usize = mulproc::__layout::TAIL_AT as usize;
const HEAD_AT: usize = mulproc::__layout::HEAD_AT as usize;
/// Lines 4..8: event counts (epoch, waiters) and join counters.
const EVENTS_AT: usize = mulproc::__layout::EVENTS_AT as usize;
const HEADER: usize = mulproc::__layout::HEADER_SIZE as usize;
const SLOT: usize = mulproc::__layout::SLOT_HEADER_SIZE as usize;
const ALIGN: usize = mulproc::__layout::PAYLOAD_ALIGN as usize;
/// Bytes of payload area per slot: max payload rounded up.
const STRIDE: usize = (MAXP as usize).div_ceil(ALIGN) * ALIGN;
const SLOT_LEN_AT: usize = mulproc::__layout::SLOT_LEN_AT as usize;
/// The ring's flag bits in a sequence word.
const HELD: u64 = mulproc::__layout::HELD;
const TAKEN: u64 = mulproc::__layout::TAKEN;

#[test]
fn child_entry() {
    common::child_entry(|role| match role {
        "producer" => producer(),
        "consumer" => consumer(),
        "scribbler" => scribbler(),
        other => {
            eprintln!("unknown role {other:?}");
            2
        }
    });
}

// ------------------------------------------------------------ helpers ---

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn sleep_until_ms(t: u64) {
    let now = now_ms();
    if t > now {
        std::thread::sleep(Duration::from_millis(t - now));
    }
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// xorshift64.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(splitmix(seed) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    /// Uniform-ish in `0..n` (`n > 0`).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Payload byte `i` of a message of `len` bytes.
fn pattern_byte(len: usize, i: usize) -> u8 {
    (len as u8).wrapping_mul(13) ^ (i as u8).wrapping_mul(7) ^ 0x5A
}

fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| pattern_byte(len, i)).collect()
}

fn intact(request: Request, data: &[u8]) -> bool {
    request == REQ
        && data
            .iter()
            .enumerate()
            .all(|(i, b)| *b == pattern_byte(data.len(), i))
}

/// Removes a file on drop.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// When things happen, all in wall-clock milliseconds shared by every
/// process.
#[derive(Clone, Copy, Debug)]
struct Schedule {
    t0: u64,
    pre_ms: u64,
    scribble_ms: u64,
    post_ms: u64,
}

impl Schedule {
    fn scribble_from(&self) -> u64 {
        self.t0 + self.pre_ms
    }

    fn scribble_until(&self) -> u64 {
        self.scribble_from() + self.scribble_ms
    }

    fn end(&self) -> u64 {
        self.scribble_until() + self.post_ms
    }

    /// The phase of a call that ran from `start` to `end` (ms).
    fn phase(&self, start: u64, end: u64) -> &'static str {
        if end < self.scribble_from() {
            "pre"
        } else if start > self.scribble_until() {
            "post"
        } else {
            "scr"
        }
    }
}

/// The child side of the schedule: role arguments, then the go file.
fn wait_for_go() -> Schedule {
    let go = PathBuf::from(arg("GO"));
    let started = Instant::now();
    let t0 = loop {
        if let Ok(s) = std::fs::read_to_string(&go) {
            if let Ok(t0) = s.trim().parse::<u64>() {
                break t0;
            }
        }
        if started.elapsed() > Duration::from_secs(15) {
            println!("no go file {} after 15 s", go.display());
            std::process::exit(4);
        }
        std::thread::sleep(Duration::from_millis(1));
    };
    Schedule {
        t0,
        pre_ms: arg_parse("PRE_MS"),
        scribble_ms: arg_parse("SCRIBBLE_MS"),
        post_ms: arg_parse("POST_MS"),
    }
}

// ----------------------------------------------------------- watchdog ---

/// Notices a call that does not come back: prints what it was and exits
/// the child with code 3 (the parent's hard deadline is the backstop).
struct Watchdog {
    /// 1 + index into the op names; 0 when no call is running.
    op: AtomicU32,
    since_ms: AtomicU64,
    bound_ms: AtomicU64,
}

impl Watchdog {
    fn start(role: String, names: &'static [&'static str]) -> Arc<Watchdog> {
        let w = Arc::new(Watchdog {
            op: AtomicU32::new(0),
            since_ms: AtomicU64::new(0),
            bound_ms: AtomicU64::new(0),
        });
        let w2 = Arc::clone(&w);
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(100));
            let op = w2.op.load(Ordering::Acquire);
            if op == 0 {
                continue;
            }
            let since = w2.since_ms.load(Ordering::Relaxed);
            let bound = w2.bound_ms.load(Ordering::Relaxed);
            let ran = now_ms().saturating_sub(since);
            if ran > bound + HANG.as_millis() as u64 {
                let mut out = std::io::stdout().lock();
                let _ = writeln!(
                    out,
                    "HANG: {role} pid {}: {} has run for {ran} ms (bound {bound} ms)",
                    std::process::id(),
                    names[op as usize - 1],
                );
                let _ = out.flush();
                std::process::exit(3);
            }
        });
        w
    }

    fn begin(&self, op: usize, bound: Duration) {
        self.since_ms.store(now_ms(), Ordering::Relaxed);
        self.bound_ms
            .store(bound.as_millis() as u64, Ordering::Relaxed);
        self.op.store(op as u32 + 1, Ordering::Release);
    }

    fn end(&self) {
        self.op.store(0, Ordering::Release);
    }
}

// -------------------------------------------------------------- tally ---

fn corrupt_name(e: &CorruptError) -> &'static str {
    match e.kind {
        CorruptKind::Positions => "corrupt_positions",
        CorruptKind::Length { .. } => "corrupt_length",
        CorruptKind::SlotStolen => "corrupt_slot_stolen",
        CorruptKind::LayoutFields => "corrupt_layout_fields",
        CorruptKind::Truncated { .. } => "corrupt_truncated",
        _ => "UNEXPECTED_corrupt_kind",
    }
}

fn send_name<T>(e: &TrySendError<T>) -> &'static str {
    match e {
        TrySendError::Full(..) => "full",
        TrySendError::TooLarge { .. } => "too_large",
        TrySendError::Corrupt(_, c) => corrupt_name(c),
        TrySendError::Fenced(..) => "fenced",
        _ => "UNEXPECTED_send_error",
    }
}

fn try_recv_name(e: &TryRecvError) -> &'static str {
    match e {
        TryRecvError::Empty => "empty",
        TryRecvError::Corrupt(c) => corrupt_name(c),
        _ => "UNEXPECTED_try_recv_error",
    }
}

fn recv_timeout_name(e: &RecvTimeoutError) -> &'static str {
    match e {
        RecvTimeoutError::Timeout => "timeout",
        RecvTimeoutError::Corrupt(c) => corrupt_name(c),
        _ => "UNEXPECTED_recv_timeout_error",
    }
}

/// A received message, judged once the call's phase is known.
struct Seen {
    len: usize,
    intact: bool,
}

impl Seen {
    /// A message with `request` and payload `data`.
    fn of(request: Request, data: &[u8]) -> Seen {
        Seen {
            len: data.len(),
            intact: intact(request, data),
        }
    }
}

/// Outcomes of one call: (op name, outcome name).
type Outcomes = Vec<(&'static str, &'static str)>;

/// Files the outcome of receive call `op`: on `Ok`, the message it got in
/// `seen` and "ok"; on `Err`, the error's name from `err_name`.
fn file_recv<E>(
    op: &'static str,
    r: Result<Seen, E>,
    err_name: fn(&E) -> &'static str,
    seen: &mut Vec<Seen>,
    outs: &mut Outcomes,
) {
    match r {
        Ok(s) => {
            seen.push(s);
            outs.push((op, "ok"));
        }
        Err(e) => outs.push((op, err_name(&e))),
    }
}

/// What one worker saw.
struct Tally {
    names: &'static [&'static str],
    counts: BTreeMap<String, u64>,
    max_overrun: Duration,
    max_overrun_what: String,
    received: u64,
    /// Calls that took 1 ms or more (asleep, or waiting), by phase.
    slow: BTreeMap<&'static str, u64>,
    bad_len: u64,
    not_intact_pre: u64,
    printed: u32,
}

impl Tally {
    fn new(names: &'static [&'static str]) -> Tally {
        Tally {
            names,
            counts: BTreeMap::new(),
            max_overrun: Duration::ZERO,
            max_overrun_what: "-".into(),
            received: 0,
            slow: BTreeMap::new(),
            bad_len: 0,
            not_intact_pre: 0,
            printed: 0,
        }
    }

    fn add(&mut self, phase: &str, op: &str, outcome: &str) {
        *self
            .counts
            .entry(format!("{phase}.{op}.{outcome}"))
            .or_default() += 1;
        if outcome.starts_with("UNEXPECTED") && self.printed < 20 {
            self.printed += 1;
            println!("UNEXPECTED outcome in phase {phase}: {op} -> {outcome}");
        }
    }

    fn timing(&mut self, op: usize, phase: &'static str, took: Duration, bound: Duration) {
        if took >= Duration::from_millis(1) {
            *self.slow.entry(phase).or_default() += 1;
        }
        let over = took.saturating_sub(bound);
        if over > self.max_overrun {
            self.max_overrun = over;
            self.max_overrun_what = format!(
                "{}@{phase}(took {} ms, bound {} ms)",
                self.names[op],
                took.as_millis(),
                bound.as_millis()
            );
        }
    }

    fn judge(&mut self, phase: &str, op: usize, seen: &mut Vec<Seen>) {
        for s in seen.drain(..) {
            self.received += 1;
            if s.len > MAXP as usize {
                self.bad_len += 1;
                if self.printed < 20 {
                    self.printed += 1;
                    println!(
                        "BAD LENGTH: {} received {} bytes (max payload {MAXP})",
                        self.names[op], s.len
                    );
                }
            }
            if phase == "pre" && !s.intact {
                self.not_intact_pre += 1;
                if self.printed < 20 {
                    self.printed += 1;
                    println!(
                        "NOT INTACT before scribbling: {} received {} bytes",
                        self.names[op], s.len
                    );
                }
            }
        }
    }

    fn report(&self) {
        for (k, v) in &self.counts {
            report(&format!("count.{k}"), v);
        }
        report("max_overrun_ms", self.max_overrun.as_millis());
        report("max_overrun_op", &self.max_overrun_what);
        report("received", self.received);
        for phase in ["pre", "scr", "post"] {
            report(
                &format!("slow_calls.{phase}"),
                self.slow.get(phase).copied().unwrap_or(0),
            );
        }
        report("bad_len", self.bad_len);
        report("not_intact_pre", self.not_intact_pre);
    }
}

/// Runs calls until the schedule ends: `pick` chooses one (and may pause
/// first, untimed), `call` makes it, pushes its outcomes and the messages
/// it received, and returns the call's own time bound (its timeout or
/// retries; zero for a `try_` call).
fn work(
    role: &str,
    names: &'static [&'static str],
    mut pick: impl FnMut(&mut Rng) -> usize,
    mut call: impl FnMut(usize, &mut Rng, &mut Vec<Seen>, &mut Outcomes) -> Duration,
) -> i32 {
    let seed: u64 = arg_parse("SEED");
    println!("{role} pid {} seed {seed}", std::process::id());
    ready();
    let sched = wait_for_go();
    let mut rng = Rng::new(seed);
    let mut tally = Tally::new(names);
    let dog = Watchdog::start(role.to_owned(), names);
    let mut seen = Vec::new();
    let mut outs = Vec::new();
    sleep_until_ms(sched.t0);
    let mut ops = 0u64;
    while ops < MAX_OPS && now_ms() < sched.end() {
        ops += 1;
        let op = pick(&mut rng);
        let start_ms = now_ms();
        let t = Instant::now();
        // The bound is known only after the call for some calls; the
        // watchdog uses a generous one.
        dog.begin(op, Duration::from_millis(600));
        let bound = call(op, &mut rng, &mut seen, &mut outs);
        let took = t.elapsed();
        dog.end();
        let phase = sched.phase(start_ms, now_ms());
        for (name, outcome) in outs.drain(..) {
            tally.add(phase, name, outcome);
        }
        tally.timing(op, phase, took, bound);
        tally.judge(phase, op, &mut seen);
    }
    report("ops", ops);
    tally.report();
    0
}

// ----------------------------------------------------------- producer ---

const PRODUCER_OPS: &[&str] = &[
    "try_send",
    "send",
    "try_send_batch",
    "reserve_commit",
    "reserve_drop",
];

fn producer() -> i32 {
    let name = arg("NAME");
    let blocking = arg("MODE") == "blocking";
    let mut q = Queue::open(&name).unwrap_or_else(|e| panic!("open {name}: {e}"));
    let retry = if blocking {
        SendRetry {
            tries: 5,
            wait: Duration::from_millis(100),
        }
    } else {
        SendRetry {
            tries: 2,
            wait: Duration::from_millis(5),
        }
    };
    q.set_send_retry(retry);
    let send_bound = retry.wait * retry.tries;
    let patterns: Vec<Vec<u8>> = (0..=MAXP as usize).map(pattern).collect();
    let msg = |rng: &mut Rng| {
        let len = rng.below(MAXP as u64 + 1) as usize;
        let m = Message::new(REQ, patterns[len].as_slice());
        if rng.chance(20) {
            m.to(1 + rng.below(4) as u32)
        } else {
            m
        }
    };
    let role = if blocking {
        "blocking producer"
    } else {
        "producer"
    };
    // Blocking mode sends in bursts with pauses between (paced here,
    // outside the timed call): the ring fills in a burst, so senders wait
    // in `send`, and empties in a pause, so receivers sleep.
    let mut burst_left = 0u64;
    work(
        role,
        PRODUCER_OPS,
        |rng| {
            if blocking {
                if burst_left == 0 {
                    std::thread::sleep(Duration::from_millis(rng.below(30)));
                    burst_left = 1 + rng.below(48);
                }
                burst_left -= 1;
                return 1;
            }
            match rng.below(100) {
                0..30 => 0,
                30..55 => 1,
                55..75 => 2,
                75..95 => 3,
                _ => 4,
            }
        },
        |op, rng, _seen, outs| {
            let name = PRODUCER_OPS[op];
            match op {
                0 => {
                    let r = q.try_send(msg(rng));
                    outs.push((name, r.as_ref().map_or_else(send_name, |_| "ok")));
                    Duration::ZERO
                }
                1 => {
                    let r = q.send(msg(rng));
                    outs.push((name, r.as_ref().map_or_else(send_name, |_| "ok")));
                    send_bound
                }
                2 => {
                    let n = 1 + rng.below(6) as usize;
                    let msgs: Vec<_> = (0..n).map(|_| msg(rng)).collect();
                    let r = q.try_send_batch(&msgs);
                    let outcome = match &r {
                        Ok(k) if *k > n => "UNEXPECTED_batch_count",
                        Ok(0) => "UNEXPECTED_batch_zero",
                        Ok(_) => "ok",
                        Err(e) => send_name(e),
                    };
                    outs.push((name, outcome));
                    Duration::ZERO
                }
                _ => {
                    let commit = op == 3;
                    match q.try_reserve() {
                        Ok(mut slot) => {
                            outs.push(("reserve", "ok"));
                            let len = rng.below(MAXP as u64 + 1) as usize;
                            let p = slot.payload_mut();
                            if p.len() != MAXP as usize {
                                outs.push(("reserve", "UNEXPECTED_payload_mut_len"));
                            } else {
                                p[..len].copy_from_slice(&patterns[len]);
                            }
                            if commit {
                                let r = slot.commit(REQ, None, len);
                                outs.push(("commit", r.as_ref().map_or_else(send_name, |_| "ok")));
                            } else {
                                drop(slot);
                                outs.push((name, "dropped"));
                            }
                        }
                        Err(e) => outs.push(("reserve", send_name(&e))),
                    }
                    Duration::ZERO
                }
            }
        },
    )
}

// ----------------------------------------------------------- consumer ---

const CONSUMER_OPS: &[&str] = &[
    "try_recv",
    "recv_timeout",
    "try_recv_ref",
    "try_recv_into",
    "try_recv_where",
    "try_recv_batch",
    "recv_where",
    "join_timeout",
    "recv_into",
    "recv_with_header_filter",
    "recv_for_me",
];

fn consumer() -> i32 {
    let name = arg("NAME");
    let blocking = arg("MODE") == "blocking";
    let index: u32 = arg_parse("INDEX");
    let q = Queue::open(&name).unwrap_or_else(|e| panic!("open {name}: {e}"));
    let mut buf = Vec::with_capacity(MAXP as usize);
    let long = Duration::from_millis(500);
    let mut turn = 0usize;
    let role = if blocking {
        "blocking consumer"
    } else {
        "consumer"
    };
    work(
        role,
        CONSUMER_OPS,
        |rng| {
            if blocking {
                // A slowish receiver (paced outside the timed call), so
                // that a burst fills the ring.
                if rng.chance(20) {
                    std::thread::sleep(Duration::from_millis(1));
                }
                if index == 0 {
                    return 1;
                }
                turn += 1;
                return [1, 6, 8, 9, 10][turn % 5];
            }
            match rng.below(100) {
                0..20 => 0,
                20..35 => 1,
                35..50 => 2,
                50..65 => 3,
                65..80 => 4,
                80..94 => 5,
                94..98 => 6,
                _ => 7,
            }
        },
        |op, rng, seen, outs| {
            let name = CONSUMER_OPS[op];
            let timeout = if blocking {
                long
            } else {
                Duration::from_millis(1 + rng.below(20))
            };
            // Lengths a predicate was shown that exceed max payload.
            let bad_peek = Cell::new(0u64);
            let which = rng.below(3);
            let mut pred = |h: &mulproc::Header, d: &[u8]| {
                if d.len() > MAXP as usize {
                    bad_peek.set(bad_peek.get() + 1);
                }
                match which {
                    0 => true,
                    1 => h.recipient.is_none(),
                    _ => d.len() % 2 == 0,
                }
            };
            let bound = match op {
                0 => {
                    let r = q.try_recv().map(|m| Seen::of(m.request, &m.data));
                    file_recv(name, r, try_recv_name, seen, outs);
                    Duration::ZERO
                }
                1 => {
                    let r = q
                        .recv_timeout(timeout)
                        .map(|m| Seen::of(m.request, &m.data));
                    file_recv(name, r, recv_timeout_name, seen, outs);
                    timeout
                }
                2 => {
                    match q.try_recv_ref() {
                        Ok(g) => {
                            let d = g.data();
                            // Touch every byte, in place.
                            let sum = d.iter().fold(0u8, |a, b| a.wrapping_add(*b));
                            std::hint::black_box(sum);
                            seen.push(Seen::of(g.header().request, d));
                            outs.push((name, "ok"));
                            if rng.chance(50) {
                                let r = g.finish();
                                outs.push((
                                    "ref_finish",
                                    r.as_ref().map_or_else(corrupt_name, |_| "ok"),
                                ));
                            } else {
                                drop(g);
                            }
                        }
                        Err(e) => outs.push((name, try_recv_name(&e))),
                    }
                    Duration::ZERO
                }
                3 => {
                    let r = q.try_recv_into(&mut buf).map(|h| Seen::of(h.request, &buf));
                    file_recv(name, r, try_recv_name, seen, outs);
                    Duration::ZERO
                }
                4 => {
                    let r = q
                        .try_recv_where(&mut pred)
                        .map(|m| Seen::of(m.request, &m.data));
                    file_recv(name, r, try_recv_name, seen, outs);
                    Duration::ZERO
                }
                5 => {
                    let max = 1 + rng.below(8) as usize;
                    let mut handed = 0usize;
                    let r = q.try_recv_batch(max, |h, d| {
                        handed += 1;
                        seen.push(Seen::of(h.request, d));
                    });
                    let outcome = match &r {
                        Ok(n) if *n != handed || *n > max => "UNEXPECTED_batch_count",
                        Ok(0) => "empty",
                        Ok(_) => "ok",
                        Err(e) => try_recv_name(e),
                    };
                    outs.push((name, outcome));
                    Duration::ZERO
                }
                6 => {
                    let r = q
                        .recv_where_timeout(&mut pred, timeout)
                        .map(|m| Seen::of(m.request, &m.data));
                    file_recv(name, r, recv_timeout_name, seen, outs);
                    timeout
                }
                7 => {
                    if q.len() > q.capacity() {
                        outs.push(("len", "UNEXPECTED_len_over_capacity"));
                    }
                    let _ = q.is_empty();
                    let t = Duration::from_millis(1);
                    let outcome = match q.join_timeout(t) {
                        Ok(()) => "ok",
                        Err(_) => "timeout",
                    };
                    outs.push((name, outcome));
                    t
                }
                8 => {
                    let r = q
                        .recv_into_timeout(&mut buf, timeout)
                        .map(|h| Seen::of(h.request, &buf));
                    file_recv(name, r, recv_timeout_name, seen, outs);
                    timeout
                }
                9 => {
                    let r = q
                        .recv_with(
                            Filter::Header(&mut |h: &Header| h.recipient.is_none()),
                            Wait::timeout(timeout),
                        )
                        .map(|g| Seen::of(g.header().request, g.data()));
                    file_recv(name, r, recv_timeout_name, seen, outs);
                    timeout
                }
                _ => {
                    let r = q
                        .recv_for_me_timeout(timeout)
                        .map(|m| Seen::of(m.request, &m.data));
                    file_recv(name, r, recv_timeout_name, seen, outs);
                    timeout
                }
            };
            if bad_peek.get() > 0 {
                for _ in 0..bad_peek.get() {
                    seen.push(Seen {
                        len: MAXP as usize + 1,
                        intact: false,
                    });
                }
            }
            bound
        },
    )
}

// ---------------------------------------------------------- scribbler ---

/// The segment, mapped shared, with bounds-checked writes.
struct Map {
    base: *mut u8,
    size: usize,
}

impl Map {
    fn open(name: &str) -> Map {
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .open(shm_path(name))
            .unwrap_or_else(|e| panic!("open segment file of {name}: {e}"));
        // SAFETY: `stat` is plain data, all zeroes is a valid value.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: a valid descriptor and a valid out pointer.
        let rc = unsafe { libc::fstat(f.as_raw_fd(), &mut st) };
        assert_eq!(rc, 0, "fstat: {}", std::io::Error::last_os_error());
        let size = st.st_size as usize;
        assert!(size > 0, "empty segment file");
        // SAFETY: maps `size` bytes of a file that is `size` bytes long;
        // the result is checked before use. The mapping outlives the
        // descriptor (closed at the end of this function), as mmap allows.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        assert!(
            base != libc::MAP_FAILED,
            "mmap: {}",
            std::io::Error::last_os_error()
        );
        Map {
            base: base.cast(),
            size,
        }
    }

    fn word64(&self, off: usize) -> Option<&AtomicU64> {
        if off % 8 != 0 || off + 8 > self.size {
            return None;
        }
        // SAFETY: in bounds (checked above) and 8-aligned (the mapping is
        // page-aligned); other processes access these bytes only through
        // atomics, so an atomic view is sound. Lives no longer than `self`.
        Some(unsafe { AtomicU64::from_ptr(self.base.add(off).cast()) })
    }

    fn word32(&self, off: usize) -> Option<&AtomicU32> {
        if off % 4 != 0 || off + 4 > self.size {
            return None;
        }
        // SAFETY: as in `word64`, 4-aligned.
        Some(unsafe { AtomicU32::from_ptr(self.base.add(off).cast()) })
    }

    fn get64(&self, off: usize) -> u64 {
        self.word64(off).map_or(0, |w| w.load(Ordering::Relaxed))
    }

    fn put64(&self, off: usize, v: u64) {
        if let Some(w) = self.word64(off) {
            w.store(v, Ordering::Relaxed);
        }
    }

    fn put_bytes(&self, off: usize, bytes: &[u8]) {
        for (i, b) in bytes.iter().enumerate() {
            let at = off + i;
            if at < self.size {
                // SAFETY: `at < size`: inside the mapping.
                unsafe { std::ptr::write_volatile(self.base.add(at), *b) };
            }
        }
    }

    /// Writes 1 to 8 random bytes from `off` on (those inside the mapping).
    fn scribble_bytes(&self, off: usize, rng: &mut Rng) {
        let n = 1 + rng.below(8) as usize;
        let bytes: Vec<u8> = (0..n).map(|_| rng.next() as u8).collect();
        self.put_bytes(off, &bytes);
    }

    /// Replaces the 32-bit word at `off` (if aligned and inside the
    /// mapping) with a [`u32_value`] for it.
    fn scribble_u32(&self, off: usize, rng: &mut Rng) {
        if let Some(w) = self.word32(off) {
            w.store(u32_value(rng, w.load(Ordering::Relaxed)), Ordering::Relaxed);
        }
    }
}

impl Drop for Map {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `open` mapped; nothing borrows it now.
        unsafe { libc::munmap(self.base.cast(), self.size) };
    }
}

/// A value for a 64-bit position or sequence word now holding `cur`, with
/// `near` a plausible value for it (the other position, a ticket of the
/// slot's lap).
fn word_value(rng: &mut Rng, cur: u64, near: u64) -> u64 {
    let cap = CAP as u64;
    match rng.below(12) {
        0..3 => cur
            .wrapping_add(rng.below(4 * cap + 1))
            .wrapping_sub(2 * cap),
        3 | 4 => near.wrapping_add(rng.below(2 * cap + 1)).wrapping_sub(cap),
        5 => rng.next(),
        6 | 7 => {
            let k = rng.below(2 * cap);
            [
                0,
                u64::MAX,
                u64::MAX - k,
                HELD,
                TAKEN,
                HELD | TAKEN,
                TAKEN - 1,
                TAKEN - 1 - k,
                HELD - 1 - k,
                cur.wrapping_add(1) | HELD,
            ][rng.below(10) as usize]
        }
        8 => cur | HELD,
        9 => cur | TAKEN,
        10 => cur ^ (1 << rng.below(64)),
        _ => cur.wrapping_add(if rng.chance(50) { 1 } else { cap }),
    }
}

fn u32_value(rng: &mut Rng, cur: u32) -> u32 {
    match rng.below(8) {
        0 => rng.next() as u32,
        1 => MAXP + 1 + rng.below(4) as u32,
        2 => MAXP,
        3 => u32::MAX - rng.below(4) as u32,
        4 => 0,
        5 => cur ^ 1,
        6 => cur.wrapping_add(rng.below(9) as u32).wrapping_sub(4),
        _ => cur ^ (1 << rng.below(32)),
    }
}

const TARGETS: &[&str] = &[
    "positions",
    "slot_seq",
    "slot_len",
    "slot_bytes",
    "header_bytes",
    "events",
    "anywhere",
];

/// Puts the ring back in a working state at a fresh lap beyond both
/// positions: every slot free for its ticket, `head == tail`. Done while
/// producers and consumers hold slots, it is one more scribble (their
/// publishes and releases find the words changed), but it lets the queue
/// work again, so that later scribbles hit a live ring rather than one
/// already refused as corrupt.
fn reset_ring(map: &Map, slots_at: usize, slots: usize) {
    let cap = CAP as u64;
    let high = map.get64(HEAD_AT).max(map.get64(TAIL_AT)) & !(HELD | TAKEN);
    let base = if high > 1 << 40 {
        0
    } else {
        (high / cap + 1) * cap
    };
    for i in 0..slots {
        map.put64(slots_at + i * SLOT, base + i as u64);
    }
    map.put64(HEAD_AT, base);
    map.put64(TAIL_AT, base);
}

fn scribbler() -> i32 {
    let name = arg("NAME");
    let seed: u64 = arg_parse("SEED");
    let map = Map::open(&name);
    println!(
        "scribbler pid {} seed {seed} segment {} bytes",
        std::process::id(),
        map.size
    );
    ready();
    let sched = wait_for_go();
    let mut rng = Rng::new(seed);
    let mut writes = [0u64; 7];
    let cap = CAP as usize;
    // The slot headers and payloads end the segment (`capacity × (64 +
    // stride)` bytes); whatever the header grows to, they start here.
    let slots_at = map
        .size
        .checked_sub(cap * (SLOT + STRIDE))
        .filter(|&at| at >= HEADER)
        .unwrap_or(HEADER);
    let slots = cap.min(map.size.saturating_sub(slots_at) / SLOT).max(1);
    println!("slot headers at {slots_at}");
    sleep_until_ms(sched.scribble_from() + SCRIBBLE_GAP_MS);
    let (mut episodes, mut resets, mut restores) = (0u64, 0u64, 0u64);
    // Words to put back after a short while: a transient glitch, and a
    // stale value by the time it is written back.
    let mut undo: Vec<(usize, u64)> = Vec::new();
    while now_ms() < sched.scribble_until() {
        episodes += 1;
        if rng.chance(8) {
            resets += 1;
            reset_ring(&map, slots_at, slots);
        } else {
            for _ in 0..1 + rng.below(4) {
                let target = match rng.below(100) {
                    0..20 => 0,
                    20..42 => 1,
                    42..52 => 2,
                    52..60 => 3,
                    60..80 => 4,
                    80..90 => 5,
                    _ => 6,
                };
                writes[target] += 1;
                match target {
                    0 | 1 => {
                        let (at, near) = if target == 0 {
                            let (at, other) = if rng.chance(50) {
                                (TAIL_AT, HEAD_AT)
                            } else {
                                (HEAD_AT, TAIL_AT)
                            };
                            (at, map.get64(other))
                        } else {
                            let i = rng.below(slots as u64) as usize;
                            let lap = map.get64(TAIL_AT) & !(CAP as u64 - 1);
                            (slots_at + i * SLOT, lap.wrapping_add(i as u64))
                        };
                        let old = map.get64(at);
                        if rng.chance(40) {
                            undo.push((at, old));
                        }
                        map.put64(at, word_value(&mut rng, old, near));
                    }
                    2 => {
                        let i = rng.below(slots as u64) as usize;
                        map.scribble_u32(slots_at + i * SLOT + SLOT_LEN_AT, &mut rng);
                    }
                    3 => {
                        let i = rng.below(slots as u64) as usize;
                        let at = slots_at + i * SLOT + rng.below(SLOT as u64) as usize;
                        map.scribble_bytes(at, &mut rng);
                    }
                    4 => {
                        let at = rng.below(HEADER.min(map.size) as u64) as usize;
                        map.scribble_bytes(at, &mut rng);
                    }
                    5 => {
                        let words = ((HEADER - EVENTS_AT) / 4) as u64;
                        let at = EVENTS_AT + 4 * rng.below(words) as usize;
                        map.scribble_u32(at, &mut rng);
                    }
                    _ => {
                        let at = rng.below(map.size as u64) as usize;
                        map.scribble_bytes(at, &mut rng);
                    }
                }
            }
        }
        // Let the workers run into it.
        std::thread::sleep(Duration::from_micros(rng.below(1000)));
        for (at, old) in undo.drain(..).rev() {
            restores += 1;
            map.put64(at, old);
        }
        // Mostly short pauses, sometimes a quiet spell.
        let pause = if rng.chance(5) {
            2000 + rng.below(8000)
        } else {
            rng.below(500)
        };
        std::thread::sleep(Duration::from_micros(pause));
    }
    report("episodes", episodes);
    report("resets", resets);
    report("restores", restores);
    report("writes", writes.iter().sum::<u64>());
    for (t, n) in TARGETS.iter().zip(writes) {
        report(&format!("writes.{t}"), n);
    }
    0
}

// ------------------------------------------------------------- parent ---

struct Scenario {
    tag: &'static str,
    /// "mixed" or "blocking".
    mode: &'static str,
    pre_ms: u64,
    scribble_ms: u64,
    post_ms: u64,
}

fn base_seed() -> u64 {
    if let Ok(s) = std::env::var("MULPROC_SCRIBBLE_SEED") {
        return s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("MULPROC_SCRIBBLE_SEED={s:?} is not a u64"));
    }
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    splitmix(nanos ^ (u64::from(std::process::id()) << 32))
}

/// One child's counts, condensed for the log: `phase op: outcome=n ...`.
fn summary(f: &Finished) -> Vec<String> {
    let mut by_op: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut other = Vec::new();
    let mut keys: Vec<_> = f.results.iter().collect();
    keys.sort();
    for (k, v) in keys {
        match k.strip_prefix("count.") {
            Some(rest) => {
                let (phase_op, outcome) = rest.rsplit_once('.').unwrap_or((rest, "?"));
                by_op
                    .entry(phase_op.replacen('.', " ", 1))
                    .or_default()
                    .push(format!("{outcome}={v}"));
            }
            None => other.push(format!("{k}={v}")),
        }
    }
    let mut lines: Vec<String> = f
        .stdout
        .iter()
        .filter(|l| !l.contains(RESULT_PREFIX) && !l.trim().is_empty())
        .cloned()
        .collect();
    // pre, scr, post in that order.
    for phase in ["pre", "scr", "post"] {
        for (k, v) in &by_op {
            if k.starts_with(phase) && k.as_bytes().get(phase.len()) == Some(&b' ') {
                lines.push(format!("{k}: {}", v.join(" ")));
            }
        }
    }
    lines.push(other.join(" "));
    lines
}

fn count(f: &Finished, pred: impl Fn(&str, &str, &str) -> bool) -> u64 {
    f.results
        .iter()
        .filter_map(|(k, v)| {
            let rest = k.strip_prefix("count.")?;
            let (phase, rest) = rest.split_once('.')?;
            let (op, outcome) = rest.rsplit_once('.')?;
            pred(phase, op, outcome).then(|| v.parse::<u64>().unwrap_or(0))
        })
        .sum()
}

fn run_scenario(sc: Scenario) {
    let seed = base_seed();
    let shm = ShmGuard::new(sc.tag);
    let go_path = std::env::temp_dir().join(format!("mulproc-{}.go", shm.name()));
    let _go = RemoveOnDrop(go_path.clone());
    let q = Queue::create(shm.name(), QueueConfig::new(CAP, MAXP)).expect("create");
    eprintln!(
        "scribble[{}]: seed {seed} (rerun with MULPROC_SCRIBBLE_SEED={seed}), queue {}",
        sc.tag,
        shm.name()
    );

    let roles = [
        ("producer", 0u32),
        ("producer", 1),
        ("consumer", 0),
        ("consumer", 1),
        ("scribbler", 0),
    ];
    let mut children: Vec<(String, ChildProc)> = roles
        .iter()
        .enumerate()
        .map(|(i, (role, index))| {
            let args = [
                ("NAME", shm.name().to_owned()),
                ("GO", go_path.display().to_string()),
                ("SEED", splitmix(seed ^ (i as u64 + 1)).to_string()),
                ("MODE", sc.mode.to_owned()),
                ("INDEX", index.to_string()),
                ("PRE_MS", sc.pre_ms.to_string()),
                ("SCRIBBLE_MS", sc.scribble_ms.to_string()),
                ("POST_MS", sc.post_ms.to_string()),
            ];
            (format!("{role}#{index}"), ChildProc::spawn(role, &args))
        })
        .collect();
    for (_, c) in &mut children {
        c.wait_ready(Duration::from_secs(10));
    }
    // Start everyone at once, a moment from now.
    let t0 = now_ms() + 50;
    let tmp = go_path.with_extension("tmp");
    std::fs::write(&tmp, t0.to_string()).expect("write go file");
    std::fs::rename(&tmp, &go_path).expect("rename go file");
    let started = Instant::now();

    // Every child within the hard deadline; one that has not finished by
    // then is killed and reported.
    let deadline = started + CHILD_DEADLINE;
    let mut finished = Vec::new();
    let mut failures = Vec::new();
    for (label, c) in &mut children {
        let pid = c.pid();
        match c.wait(deadline.saturating_duration_since(Instant::now())) {
            Ok(f) => {
                if !f.status.success() {
                    failures.push(format!("{label} (pid {pid}) failed\n{}", f.describe()));
                }
                finished.push((label.clone(), pid, f));
            }
            Err(e) => failures.push(format!("{label}: {e}")),
        }
    }
    eprintln!(
        "scribble[{}]: children done after {:.2} s",
        sc.tag,
        started.elapsed().as_secs_f64()
    );
    for (label, pid, f) in &finished {
        eprintln!("--- scribble[{}] {label} pid {pid}: {}", sc.tag, f.status);
        for l in summary(f) {
            eprintln!("    {l}");
        }
    }
    assert!(
        failures.is_empty(),
        "scribble[{}] (seed {seed}): {} child(ren) crashed, failed or hung:\n{}",
        sc.tag,
        failures.len(),
        failures.join("\n\n")
    );

    let workers: Vec<_> = finished
        .iter()
        .filter(|(l, _, _)| !l.starts_with("scribbler"))
        .collect();
    let producers: Vec<_> = workers
        .iter()
        .filter(|(l, _, _)| l.starts_with("producer"))
        .collect();
    let consumers: Vec<_> = workers
        .iter()
        .filter(|(l, _, _)| l.starts_with("consumer"))
        .collect();
    let ctx = format!("scribble[{}] (seed {seed})", sc.tag);

    // The queue worked before anyone scribbled.
    let sent_pre: u64 = producers
        .iter()
        .map(|(_, _, f)| count(f, |p, op, o| p == "pre" && op != "reserve" && o == "ok"))
        .sum();
    let received_pre: u64 = consumers
        .iter()
        .map(|(_, _, f)| {
            count(f, |p, op, o| {
                p == "pre" && op != "join_timeout" && op != "ref_finish" && o == "ok"
            })
        })
        .sum();
    assert!(sent_pre > 0, "{ctx}: no send succeeded before scribbling");
    assert!(
        received_pre > 0,
        "{ctx}: no receive succeeded before scribbling"
    );

    for (label, _, f) in &workers {
        // Only documented variants (a wildcard arm in the child files
        // anything else as UNEXPECTED).
        let unexpected: Vec<_> = f
            .results
            .keys()
            .filter(|k| k.contains("UNEXPECTED"))
            .collect();
        assert!(
            unexpected.is_empty(),
            "{ctx}: {label} saw outcomes outside the documented error variants: {unexpected:?}"
        );
        // Every payload fits: TooLarge would be a wrong answer here.
        let too_large = count(f, |_, _, o| o == "too_large");
        assert_eq!(
            too_large, 0,
            "{ctx}: {label} got TooLarge for payloads that fit"
        );
        let bad_len: u64 = f.get("bad_len");
        assert_eq!(
            bad_len, 0,
            "{ctx}: {label} received messages longer than max payload {MAXP}"
        );
        let not_intact: u64 = f.get("not_intact_pre");
        assert_eq!(
            not_intact, 0,
            "{ctx}: {label} received damaged messages before any scribbling"
        );
        let over: u64 = f.get("max_overrun_ms");
        let what: String = f.get("max_overrun_op");
        assert!(
            over <= MAX_OVERRUN.as_millis() as u64,
            "{ctx}: {label}: a call outlived its bound by {over} ms: {what}"
        );
    }
    if sc.mode == "blocking" {
        // The receivers did sleep in their timed receives while the
        // segment was being scribbled on.
        let slow: u64 = consumers
            .iter()
            .map(|(_, _, f)| f.get::<u64>("slow_calls.scr"))
            .sum();
        assert!(
            slow > 0,
            "{ctx}: no receive waited while the segment was scribbled on"
        );
    }
    let (_, _, scr) = finished
        .iter()
        .find(|(l, _, _)| l.starts_with("scribbler"))
        .expect("scribbler result");
    let writes: u64 = scr.get("writes");
    assert!(writes > 0, "{ctx}: the scribbler wrote nothing");

    // Whatever is in the segment now, opening it again gives a queue or a
    // typed error, and using it does not panic.
    match Queue::open(shm.name()) {
        Ok(q2) => {
            let _ = q2.try_recv();
            let _ = q2.try_send(Message::signal(REQ));
            let _ = q2.recv_timeout(Duration::from_millis(1));
            eprintln!("scribble[{}]: reopened the scribbled segment", sc.tag);
        }
        Err(e) => eprintln!("scribble[{}]: reopen refused: {e}", sc.tag),
    }
    let t = Instant::now();
    let _ = q.try_recv();
    let _ = q.try_send(Message::signal(REQ));
    assert!(t.elapsed() < MAX_OVERRUN, "{ctx}: parent's calls were slow");
    drop(q);
}

/// Two producers (every send call) and two consumers (every non-blocking
/// and short timed receive) on a queue whose header, slot headers and
/// positions a fifth process scribbles on for 2 s.
#[test]
fn random_scribbles_over_busy_queue() {
    run_scenario(Scenario {
        tag: "scribble-busy",
        mode: "mixed",
        pre_ms: 400,
        scribble_ms: 2000,
        post_ms: 400,
    });
}

/// Consumers asleep in `recv_timeout` (and the other timed receives) with
/// 500 ms timeouts, producers in `send` with 5 × 100 ms retries, while the
/// segment is scribbled on: every call returns within its bound plus
/// [`MAX_OVERRUN`].
#[test]
fn random_scribbles_under_blocked_callers() {
    run_scenario(Scenario {
        tag: "scribble-blocked",
        mode: "blocking",
        pre_ms: 300,
        scribble_ms: 1500,
        post_ms: 500,
    });
}
