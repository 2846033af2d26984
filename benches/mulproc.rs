//! Criterion benchmarks of mulproc across real processes.
//!
//! Every benchmark runs its peers in other processes: this binary starts
//! new copies of itself (`std::env::current_exe()`, through
//! [`mulproc::process::Child`], never `fork`), and a copy started with a
//! `MULPROC_ROLE` of `mulproc-bench-*` plays that role instead of running
//! criterion. The children of one benchmark are started once and serve every
//! sample: the parent tells them through the channels themselves how much to
//! do.
//!
//! | group | what one iteration is | the peer processes |
//! | --- | --- | --- |
//! | `pingpong/{queue,pipe}-{spin,block}` | one one-way trip of a 64-byte message (half a round trip) | one echo child |
//! | `pingpong/{queue,pipe}-block-idle200us` | the same, each side idle 200 µs (spinning on the clock, not timed) before it sends, so every receiver is asleep: the wake-up cost | one echo child |
//! | `stream_copy/N`, `stream_zero_copy/N` | one N-byte message delivered to the consumer (the parent) and checked | one producer |
//! | `contended_blocking/PtoC` | one 64-byte message delivered, P producers and C consumers all in blocking `send`/`recv` | P + C children |
//!
//! Spin modes use `try_send`/`try_recv_ref` in a loop that yields the CPU
//! after 256 empty polls (a peer descheduled on the same core then runs at
//! once instead of after our 4 ms time slice); blocking modes `send` and
//! `recv_ref`/`recv_into` (with a timeout only to notice a dead child). The
//! copying stream copies the payload in (`try_send` of a borrowed buffer) and
//! out (`try_recv_into` one reused `Vec`, no allocation per message); the zero-copy
//! stream fills reserved slots (`try_reserve` + `commit`, writing only the
//! 8-byte sequence number) and reads in place (`try_recv_ref`). A stream
//! batch is timed from the parent's "go" to its receipt of the last message;
//! a contended batch from the first "go" to the last consumer's
//! acknowledgement of an end marker queued behind every message of the
//! batch.
//!
//! ```text
//! cargo bench --bench mulproc                 # everything, about 2-3 minutes
//! cargo bench --bench mulproc -- pingpong     # one group
//! ```
//!
//! One-shot mode, for `benches/compare.py`: with `MULPROC_BENCH_ONESHOT=1`
//! the binary runs one scenario for about a second and prints the figure as
//! its last line, like the examples (`one_way_ns=` median, `msgs_per_sec=`):
//!
//! ```text
//! MULPROC_BENCH_ONESHOT=1 target/release/deps/mulproc-HASH pingpong --pipe [--block] [--idle-us 200]
//! MULPROC_BENCH_ONESHOT=1 target/release/deps/mulproc-HASH stream --size 64 [--zero-copy]
//! MULPROC_BENCH_ONESHOT=1 target/release/deps/mulproc-HASH contended --producers 4 --consumers 1
//! ```
//!
//! Cleanup: names are unique (pid, time, counter); the parent removes them
//! as soon as the children have opened them and its creating handles remove
//! them on every other path (errors, panics). Children are killed when their
//! session is dropped, and die with the parent (`Child::die_with_parent`).

use std::error::Error;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{BenchmarkId, Criterion, Throughput};
use mulproc::process::{self, Child, ChildProcess};
use mulproc::{
    Channel, Header, Message, Pipe, Queue, QueueConfig, Received, RecvTimeoutError, Request,
    TryRecvError,
};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Prefix of the roles children of this binary play.
const ROLE_PREFIX: &str = "mulproc-bench-";
/// Set (to anything) to run one scenario once instead of criterion.
const ONESHOT_VAR: &str = "MULPROC_BENCH_ONESHOT";

/// Child → parent: the channels are open.
const READY: Request = Request::new(Request::FIRST_USER_CODE);
/// Parent → producer: send the number of messages in the payload.
const GO: Request = Request::new(Request::FIRST_USER_CODE + 1);
/// End of a contended batch, queued behind its messages.
const MARK: Request = Request::new(Request::FIRST_USER_CODE + 2);
/// Child → parent: done (a producer's share sent, or a MARK taken).
const ACK: Request = Request::new(Request::FIRST_USER_CODE + 3);

/// A blocked parent checks that its children live this often.
const LIVENESS: Duration = Duration::from_millis(500);
/// Empty polls between liveness checks in a spin loop.
const SPINS_PER_CHECK: u32 = 1 << 20;
/// Empty polls (tens of ns each) before a spin loop yields the CPU once.
const SPINS_PER_YIELD: u32 = 256;
/// Children must be ready within this.
const START_TIMEOUT: Duration = Duration::from_secs(20);

// ------------------------------------------------------------- plumbing ---

/// A segment name no other run uses.
fn unique_name(what: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("bench-{}-{nanos}-{n}-{what}", std::process::id())
}

/// How a receiver waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// `try_*` in a loop.
    Spin,
    /// `send` / `recv`: spin briefly, yield, sleep in the kernel.
    Block,
}

impl Wait {
    fn name(self) -> &'static str {
        match self {
            Wait::Spin => "spin",
            Wait::Block => "block",
        }
    }
}

/// The children of a session, killed (and reaped) on drop.
struct Watch(Vec<ChildProcess>);

impl Watch {
    /// Panics if a child has exited: a benchmark cannot go on without it.
    fn check(&mut self) {
        for c in &mut self.0 {
            if let Ok(Some(status)) = c.try_wait() {
                panic!(
                    "benchmark child {} ({}) exited: {status}",
                    c.pid(),
                    c.role()
                );
            }
        }
    }

    /// Lets the children exit on their own (after being told to), then
    /// kills any that has not within a second.
    fn finish(&mut self) {
        for c in &mut self.0 {
            let _ = c.wait_timeout(Duration::from_secs(1));
        }
        self.0.clear();
    }
}

/// One empty poll of a spin loop: a CPU relax hint, and every
/// `SPINS_PER_YIELD` polls a `sched_yield`, so that a peer descheduled on
/// our core gets to run instead of waiting out our time slice (4 ms here):
/// on a busy 2-core machine a pure spin measures the scheduler, not the
/// queue. With both processes on their own cores it never yields. Every
/// so often, checks the children.
#[inline]
fn pause(spins: &mut u32, watch: &mut Watch) {
    *spins = spins.wrapping_add(1);
    if *spins % SPINS_PER_CHECK == 0 {
        watch.check();
    }
    if *spins % SPINS_PER_YIELD == 0 {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

fn spawn(role: &str, channels: &[(&str, &str)], args: &[String]) -> ChildProcess {
    let mut child = Child::role(format!("{ROLE_PREFIX}{role}"))
        .die_with_parent(true)
        .inherit_args(false)
        .args(args)
        .stdin(std::process::Stdio::null());
    for (key, name) in channels {
        child = child.channel(*key, *name);
    }
    child.spawn().expect("cannot start a benchmark child")
}

/// Send one message, or receive one and look at it in place, on any
/// [`Channel`] (queue or pipe), as a benchmark's [`Wait`] says.
trait Chan {
    /// `Ok(false)`: full.
    fn send_bytes(&self, wait: Wait, request: Request, data: &[u8]) -> bool;
    /// `None`: nothing within the wait (`Spin`: now; `Block`: `LIVENESS`).
    fn recv_one<R>(&self, wait: Wait, f: impl FnOnce(&Header, &[u8]) -> R) -> Option<R>;

    /// Sends, retrying while full.
    fn put(&self, wait: Wait, request: Request, data: &[u8], watch: &mut Watch) {
        let mut spins = 0;
        while !self.send_bytes(wait, request, data) {
            pause(&mut spins, watch);
        }
    }

    /// Receives one message, as long as it takes.
    fn take<R>(&self, wait: Wait, watch: &mut Watch, mut f: impl FnMut(&Header, &[u8]) -> R) -> R {
        let mut spins = 0;
        loop {
            if let Some(r) = self.recv_one(wait, &mut f) {
                return r;
            }
            match wait {
                Wait::Spin => pause(&mut spins, watch),
                Wait::Block => watch.check(),
            }
        }
    }
}

impl<C: Channel> Chan for C {
    #[inline]
    fn send_bytes(&self, wait: Wait, request: Request, data: &[u8]) -> bool {
        let msg = Message::new(request, data);
        let r = match wait {
            Wait::Spin => self.try_send(msg),
            Wait::Block => self.send(msg),
        };
        match r {
            Ok(()) => true,
            Err(e) if e.is_full() => false,
            Err(e) => panic!("send: {e}"),
        }
    }

    #[inline]
    fn recv_one<R>(&self, wait: Wait, f: impl FnOnce(&Header, &[u8]) -> R) -> Option<R> {
        let g = match wait {
            Wait::Spin => match self.try_recv_ref() {
                Ok(g) => g,
                Err(TryRecvError::Empty) => return None,
                Err(e) => panic!("try_recv_ref: {e}"),
            },
            Wait::Block => match self.recv_ref_timeout(LIVENESS) {
                Ok(g) => g,
                Err(RecvTimeoutError::Timeout) => return None,
                Err(e) => panic!("recv_ref_timeout: {e}"),
            },
        };
        let r = f(g.header(), g.data());
        g.finish().expect("release a received slot");
        Some(r)
    }
}

/// Waits for `n` READY messages on `ch` (then the children have opened
/// everything).
fn wait_ready(ch: &impl Chan, n: usize, watch: &mut Watch) {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut got = 0;
    while got < n {
        match ch.recv_one(Wait::Block, |h, _| h.request) {
            Some(r) if r == READY => got += 1,
            Some(r) => panic!("expected READY, got {r:?}"),
            None => {
                watch.check();
                assert!(
                    Instant::now() < deadline,
                    "benchmark children not ready in time"
                );
            }
        }
    }
}

fn seq_of(data: &[u8]) -> u64 {
    let mut s = [0u8; 8];
    let n = data.len().min(8);
    s[..n].copy_from_slice(&data[..n]);
    u64::from_le_bytes(s)
}

fn put_seq(buf: &mut [u8], seq: u64) {
    let n = buf.len().min(8);
    buf[..n].copy_from_slice(&seq.to_le_bytes()[..n]);
}

/// The sequence number as it fits in a message of `size` bytes.
fn seq_mask(size: usize) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (8 * size)) - 1
    }
}

fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

// ------------------------------------------------------------ ping-pong ---

/// Which channel a ping-pong runs over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Queue,
    Pipe,
}

// One value per benchmark, built once and never moved in the timed loop.
#[allow(clippy::large_enum_variant)]
enum PpChan {
    /// Two queues: ping (parent → child) and pong (child → parent).
    Queue {
        ping: Queue,
        pong: Queue,
    },
    Pipe(Pipe),
}

/// A parent and one echo child bouncing one message.
struct PingPong {
    chan: PpChan,
    wait: Wait,
    idle: Duration,
    buf: Vec<u8>,
    seq: u64,
    watch: Watch,
}

impl PingPong {
    fn new(kind: Kind, wait: Wait, idle: Duration, size: usize) -> PingPong {
        // Sequence number, and the child's idle time in the echo.
        let size = size.max(16);
        let cfg = QueueConfig::new(64, size as u32);
        let args = [
            match kind {
                Kind::Queue => "queue",
                Kind::Pipe => "pipe",
            }
            .to_owned(),
            wait.name().to_owned(),
            idle.as_nanos().to_string(),
        ];
        let (chan, mut watch) = match kind {
            Kind::Queue => {
                let (pn, qn) = (unique_name("ping"), unique_name("pong"));
                let ping = Queue::create(&pn, cfg).expect("create ping queue");
                let pong = Queue::create(&qn, cfg).expect("create pong queue");
                let mut watch = Watch(vec![spawn("echo", &[("ping", &pn), ("pong", &qn)], &args)]);
                wait_ready(&pong, 1, &mut watch);
                let _ = Queue::remove(&pn);
                let _ = Queue::remove(&qn);
                (PpChan::Queue { ping, pong }, watch)
            }
            Kind::Pipe => {
                let name = unique_name("pipe");
                let pipe = Pipe::create(&name, cfg).expect("create pipe");
                let mut watch = Watch(vec![spawn("echo", &[("pipe", &name)], &args)]);
                wait_ready(&pipe, 1, &mut watch);
                let _ = Pipe::remove(&name);
                (PpChan::Pipe(pipe), watch)
            }
        };
        watch.check();
        PingPong {
            chan,
            wait,
            idle,
            buf: vec![0u8; size],
            seq: 0,
            watch,
        }
    }

    /// One round trip; returns how long the child idled before echoing
    /// (ns, written by the child into bytes 8..16 of the echo; 0 when not
    /// idling).
    #[inline]
    fn round_trip(&mut self) -> u64 {
        self.seq += 1;
        let seq = self.seq;
        put_seq(&mut self.buf, seq);
        let (wait, watch) = (self.wait, &mut self.watch);
        let idled = !self.idle.is_zero();
        let check = |_: &Header, d: &[u8]| {
            let child_idle = if idled { seq_of(&d[8..]) } else { 0 };
            (seq_of(d) == seq, child_idle)
        };
        let (ok, child_idle) = match &self.chan {
            PpChan::Queue { ping, pong } => trip(ping, pong, wait, &self.buf, watch, check),
            PpChan::Pipe(p) => trip(p, p, wait, &self.buf, watch, check),
        };
        assert!(ok, "round trip {seq}: the echo is not the message sent");
        child_idle
    }

    /// `n` round trips; returns their total time (without the idle
    /// pauses), and with `samples` records each round trip in ns.
    ///
    /// With an idle time, both sides idle before they send (the child
    /// measures its pause and reports it in the echo; it is subtracted), so
    /// each one-way trip is the wake-up of a receiver asleep in the kernel,
    /// as in the futex floor, whose receivers always sleep at once.
    fn run(&mut self, n: u64, mut samples: Option<&mut Vec<u64>>) -> Duration {
        if self.idle.is_zero() && samples.is_none() {
            let t0 = Instant::now();
            for _ in 0..n {
                self.round_trip();
            }
            return t0.elapsed();
        }
        let mut total = Duration::ZERO;
        for _ in 0..n {
            if !self.idle.is_zero() {
                spin_for(self.idle);
            }
            let t0 = Instant::now();
            let child_idle = Duration::from_nanos(self.round_trip());
            let dt = t0.elapsed().saturating_sub(child_idle);
            total += dt;
            if let Some(s) = samples.as_deref_mut() {
                s.push(dt.as_nanos() as u64);
            }
        }
        total
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        let (wait, watch) = (self.wait, &mut self.watch);
        if !std::thread::panicking() {
            match &self.chan {
                PpChan::Queue { ping, .. } => ping.put(wait, Request::DIE, &[], watch),
                PpChan::Pipe(p) => p.put(wait, Request::DIE, &[], watch),
            }
            watch.finish();
        }
    }
}

/// Sends `buf` on `tx` and takes the echo from `rx` (the two queues, or
/// one pipe end twice).
#[inline]
fn trip<C: Chan, R>(
    tx: &C,
    rx: &C,
    wait: Wait,
    buf: &[u8],
    watch: &mut Watch,
    check: impl FnMut(&Header, &[u8]) -> R,
) -> R {
    tx.put(wait, Request::DO, buf, watch);
    rx.take(wait, watch, check)
}

/// With an idle time: copies the message, idles (spinning on the clock, so
/// the parent falls asleep in its receive), and writes the pause in ns into
/// bytes 8..16 for the parent to subtract.
fn idle_echo(buf: &mut Vec<u8>, d: &[u8], idle: Duration) {
    let t0 = Instant::now();
    buf.clear();
    buf.extend_from_slice(d);
    spin_for(idle);
    let paused = t0.elapsed().as_nanos() as u64;
    buf[8..16].copy_from_slice(&paused.to_le_bytes());
}

fn echo_child(args: &[String]) -> Result<()> {
    let [kind, wait, idle_ns] = args else {
        return Err("echo: expected KIND WAIT IDLE_NS".into());
    };
    let wait = if wait == "spin" {
        Wait::Spin
    } else {
        Wait::Block
    };
    let idle = Duration::from_nanos(idle_ns.parse()?);
    match kind.as_str() {
        "queue" => echo(
            &process::open_queue("ping")?,
            &process::open_queue("pong")?,
            wait,
            idle,
        ),
        "pipe" => {
            let pipe = process::open_pipe("pipe")?;
            echo(&pipe, &pipe, wait, idle)
        }
        other => Err(format!("echo: unknown kind {other:?}").into()),
    }
}

/// The echo child's loop: READY, then every message back from where it was
/// received (or, with an idle time, copied and stamped with the pause),
/// until DIE.
fn echo<C: Chan>(rx: &C, tx: &C, wait: Wait, idle: Duration) -> Result<()> {
    let (mut none, mut none2) = (Watch(Vec::new()), Watch(Vec::new()));
    let mut buf = Vec::new();
    tx.put(wait, READY, &[], &mut none);
    loop {
        let go_on = rx.take(wait, &mut none, |h, d| {
            if h.request == Request::DIE {
                return false;
            }
            if idle.is_zero() {
                // Echo straight from the received slot.
                tx.put(wait, h.request, d, &mut none2);
            } else {
                idle_echo(&mut buf, d, idle);
                tx.put(wait, h.request, &buf, &mut none2);
            }
            true
        });
        if !go_on {
            return Ok(());
        }
    }
}

// --------------------------------------------------------------- stream ---

/// How stream payloads move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Copying {
    /// `try_send` of a buffer; the consumer copies into a reused `Vec`.
    Copy,
    /// `try_reserve` + `commit`; the consumer reads in place.
    ZeroCopy,
    /// `try_send_batch` of up to `BATCH` buffers (one claim of the tail);
    /// the consumer takes up to `BATCH` with `try_recv_batch`, in place.
    Batch,
}

/// Messages per batch in `Copying::Batch`.
const BATCH: usize = 64;

/// One producer child streaming to the parent.
struct Stream {
    data: Queue,
    ctl: Queue,
    mode: Copying,
    size: usize,
    /// Next sequence number expected (the producer counts the same way).
    next: u64,
    rx: Vec<u8>,
    watch: Watch,
}

/// Slots of a stream's queue: a payload area of about 4 MiB (1024 slots at
/// most). A ring larger than the last-level cache makes every message a
/// trip to DRAM (64 KiB messages: 1024 slots, 0.12 M msg/s; 64 slots,
/// 0.55 M msg/s, measured with the stream example).
fn stream_capacity(size: usize) -> u32 {
    let stride = size.max(1).next_multiple_of(64);
    let slots = ((4 << 20) / stride).clamp(4, 1024) as u32;
    1 << slots.ilog2()
}

impl Stream {
    fn new(mode: Copying, size: usize) -> Stream {
        let (dn, cn) = (unique_name("data"), unique_name("ctl"));
        let data = Queue::create(&dn, QueueConfig::new(stream_capacity(size), size as u32))
            .expect("create data queue");
        let ctl = Queue::create(&cn, QueueConfig::new(4, 8)).expect("create ctl queue");
        let mode_arg = match mode {
            Copying::Copy => "copy",
            Copying::ZeroCopy => "zero-copy",
            Copying::Batch => "batch",
        };
        let mut watch = Watch(vec![spawn(
            "producer",
            &[("data", &dn), ("ctl", &cn)],
            &[mode_arg.to_owned(), size.to_string()],
        )]);
        wait_ready(&data, 1, &mut watch);
        let _ = Queue::remove(&dn);
        let _ = Queue::remove(&cn);
        Stream {
            data,
            ctl,
            mode,
            size,
            next: 0,
            rx: Vec::with_capacity(size),
            watch,
        }
    }

    /// Has the producer send `n` messages, receives and checks them all;
    /// returns the time from "go" to the last one received.
    fn run(&mut self, n: u64) -> Duration {
        let mask = seq_mask(self.size);
        let t0 = Instant::now();
        self.ctl
            .put(Wait::Block, GO, &n.to_le_bytes(), &mut self.watch);
        if self.mode == Copying::Batch {
            let end = self.next + n;
            let mut spins = 0;
            while self.next < end {
                let (size, next) = (self.size, &mut self.next);
                let got = self
                    .data
                    .try_recv_batch(BATCH, |_, d| {
                        assert!(
                            d.len() == size && seq_of(d) == *next & mask,
                            "stream message {} is not the one sent",
                            *next
                        );
                        *next += 1;
                    })
                    .expect("try_recv_batch");
                if got == 0 {
                    pause(&mut spins, &mut self.watch);
                }
            }
            return t0.elapsed();
        }
        for _ in 0..n {
            let mut spins = 0;
            let want = self.next & mask;
            let ok = loop {
                let got = match self.mode {
                    // The library's copying receive, into a reused buffer.
                    Copying::Copy => self
                        .data
                        .try_recv_into(&mut self.rx)
                        .map(|_| self.rx.len() == self.size && seq_of(&self.rx) == want),
                    Copying::ZeroCopy | Copying::Batch => self.data.try_recv_ref().map(|g| {
                        let d = g.data();
                        d.len() == self.size && seq_of(d) == want
                    }),
                };
                match got {
                    Ok(ok) => break ok,
                    Err(TryRecvError::Empty) => pause(&mut spins, &mut self.watch),
                    Err(e) => panic!("receive: {e}"),
                }
            };
            assert!(ok, "stream message {} is not the one sent", self.next);
            self.next += 1;
        }
        t0.elapsed()
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.ctl
                .put(Wait::Block, Request::DIE, &[], &mut self.watch);
            self.watch.finish();
        }
    }
}

fn producer_child(args: &[String]) -> Result<()> {
    let [mode, size] = args else {
        return Err("producer: expected MODE SIZE".into());
    };
    let size: usize = size.parse()?;
    let zero_copy = mode == "zero-copy";
    let data = process::open_queue("data")?;
    let ctl = process::open_queue("ctl")?;
    let mut none = Watch(Vec::new());
    data.put(Wait::Block, READY, &[], &mut none);
    let mut buf = vec![0u8; size];
    let mut bufs = vec![vec![0u8; size]; BATCH];
    let mut seq = 0u64;
    loop {
        let (request, n) = ctl.take(Wait::Block, &mut none, |h, d| (h.request, seq_of(d)));
        if request != GO {
            return Ok(());
        }
        if mode == "batch" {
            let end = seq + n;
            let mut spins = 0;
            while seq < end {
                let k = ((end - seq) as usize).min(BATCH);
                for (i, b) in bufs.iter_mut().take(k).enumerate() {
                    put_seq(b, seq + i as u64);
                }
                let msgs: Vec<Message<&[u8]>> = bufs[..k]
                    .iter()
                    .map(|b| Message::new(Request::DO, b.as_slice()))
                    .collect();
                match data.try_send_batch(&msgs) {
                    Ok(sent) => seq += sent as u64,
                    Err(e) if e.is_full() => pause(&mut spins, &mut none),
                    Err(e) => return Err(e.to_string().into()),
                }
            }
            continue;
        }
        for _ in 0..n {
            if zero_copy {
                let mut spins = 0;
                let mut slot = loop {
                    match data.try_reserve() {
                        Ok(slot) => break slot,
                        Err(e) if e.is_full() => pause(&mut spins, &mut none),
                        Err(e) => return Err(e.to_string().into()),
                    }
                };
                put_seq(&mut slot.payload_mut()[..size], seq);
                slot.commit(Request::DO, None, size)
                    .map_err(|e| e.to_string())?;
            } else {
                put_seq(&mut buf, seq);
                data.put(Wait::Spin, Request::DO, &buf, &mut none);
            }
            seq += 1;
        }
    }
}

// ----------------------------------------------------------- contended ---

/// P producer children and C consumer children on one queue, all blocking;
/// the parent only coordinates (and sleeps meanwhile).
struct Contended {
    data: Queue,
    ctl: Queue,
    ack: Queue,
    producers: usize,
    consumers: usize,
    watch: Watch,
}

impl Contended {
    fn new(producers: usize, consumers: usize) -> Contended {
        let (dn, cn, an) = (unique_name("data"), unique_name("ctl"), unique_name("ack"));
        let data = Queue::create(&dn, QueueConfig::new(1024, 64)).expect("create data queue");
        let ctl = Queue::create(&cn, QueueConfig::new(64, 8)).expect("create ctl queue");
        let ack = Queue::create(&an, QueueConfig::new(64, 8)).expect("create ack queue");
        let mut watch = Watch(Vec::new());
        for _ in 0..producers {
            watch.0.push(spawn(
                "cproducer",
                &[("data", &dn), ("ctl", &cn), ("ack", &an)],
                &[],
            ));
        }
        for _ in 0..consumers {
            watch
                .0
                .push(spawn("cconsumer", &[("data", &dn), ("ack", &an)], &[]));
        }
        wait_ready(&ack, producers + consumers, &mut watch);
        for n in [&dn, &cn, &an] {
            let _ = Queue::remove(n);
        }
        Contended {
            data,
            ctl,
            ack,
            producers,
            consumers,
            watch,
        }
    }

    fn wait_acks(&mut self, n: usize) {
        for _ in 0..n {
            let r = self
                .ack
                .take(Wait::Block, &mut self.watch, |h, _| h.request);
            assert_eq!(r, ACK, "expected an ACK");
        }
    }

    /// `n` messages from the producers to the consumers; returns the time
    /// from the first "go" to the last consumer's acknowledgement.
    fn run(&mut self, n: u64) -> Duration {
        let p = self.producers as u64;
        let t0 = Instant::now();
        for i in 0..p {
            let share = n / p + u64::from(i < n % p);
            self.ctl
                .put(Wait::Block, GO, &share.to_le_bytes(), &mut self.watch);
        }
        self.wait_acks(self.producers);
        // FIFO: each consumer takes a MARK only after every message of the
        // batch has been claimed, and acknowledges it once done with its
        // last one.
        for _ in 0..self.consumers {
            self.data.put(Wait::Block, MARK, &[], &mut self.watch);
        }
        self.wait_acks(self.consumers);
        t0.elapsed()
    }
}

impl Drop for Contended {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            for _ in 0..self.producers {
                self.ctl
                    .put(Wait::Block, Request::DIE, &[], &mut self.watch);
            }
            for _ in 0..self.consumers {
                self.data
                    .put(Wait::Block, Request::DIE, &[], &mut self.watch);
            }
            self.watch.finish();
        }
    }
}

fn cproducer_child() -> Result<()> {
    let data = process::open_queue("data")?;
    let ctl = process::open_queue("ctl")?;
    let ack = process::open_queue("ack")?;
    let mut none = Watch(Vec::new());
    ack.put(Wait::Block, READY, &[], &mut none);
    let mut buf = [0u8; 64];
    let mut seq = 0u64;
    loop {
        let (request, n) = ctl.take(Wait::Block, &mut none, |h, d| (h.request, seq_of(d)));
        if request != GO {
            return Ok(());
        }
        for _ in 0..n {
            put_seq(&mut buf, seq);
            data.put(Wait::Block, Request::DO, &buf, &mut none);
            seq += 1;
        }
        ack.put(Wait::Block, ACK, &[], &mut none);
    }
}

fn cconsumer_child() -> Result<()> {
    let data = process::open_queue("data")?;
    let ack = process::open_queue("ack")?;
    let mut none = Watch(Vec::new());
    ack.put(Wait::Block, READY, &[], &mut none);
    let mut buf = Vec::with_capacity(64);
    loop {
        let h = data.recv_into(&mut buf)?;
        match h.request {
            Request::DO => {}
            MARK => ack.put(Wait::Block, ACK, &[], &mut none),
            _ => return Ok(()),
        }
    }
}

// ---------------------------------------------------------------- child ---

/// Runs this process's role if it is a benchmark child.
fn child_main(role: &str) -> i32 {
    // Started with `die_with_parent` (see `spawn`): killed if the parent
    // dies, and never started after its death.
    let args: Vec<String> = std::env::args().skip(1).collect();
    let r = match role {
        "echo" => echo_child(&args),
        "producer" => producer_child(&args),
        "cproducer" => cproducer_child(),
        "cconsumer" => cconsumer_child(),
        other => Err(format!("unknown role {other:?}").into()),
    };
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mulproc bench child {role}: {e}");
            1
        }
    }
}

// ------------------------------------------------------------- criterion ---

fn bench_pingpong(c: &mut Criterion) {
    let mut g = c.benchmark_group("pingpong");
    let idle = Duration::from_micros(200);
    for (kind, kname) in [(Kind::Queue, "queue"), (Kind::Pipe, "pipe")] {
        for (wait, idle) in [
            (Wait::Spin, Duration::ZERO),
            (Wait::Block, Duration::ZERO),
            (Wait::Block, idle),
        ] {
            let id = if idle.is_zero() {
                format!("{kname}-{}", wait.name())
            } else {
                format!("{kname}-{}-idle{}us", wait.name(), idle.as_micros())
            };
            let mut session: Option<PingPong> = None;
            g.bench_function(id, |b| {
                let s = session.get_or_insert_with(|| PingPong::new(kind, wait, idle, 64));
                // One iteration = one one-way trip = half a round trip.
                b.iter_custom(|n| s.run(n, None) / 2);
            });
            drop(session);
        }
    }
    g.finish();
}

fn bench_stream(c: &mut Criterion) {
    for (mode, gname) in [
        (Copying::Copy, "stream_copy"),
        (Copying::ZeroCopy, "stream_zero_copy"),
        (Copying::Batch, "stream_batch"),
    ] {
        let mut g = c.benchmark_group(gname);
        g.throughput(Throughput::Elements(1));
        for size in [8usize, 64, 1024, 65536] {
            let mut session: Option<Stream> = None;
            g.bench_with_input(BenchmarkId::from_parameter(size), &size, |b, &size| {
                let s = session.get_or_insert_with(|| Stream::new(mode, size));
                b.iter_custom(|n| s.run(n));
            });
            drop(session);
        }
        g.finish();
    }
}

fn bench_contended(c: &mut Criterion) {
    let mut g = c.benchmark_group("contended_blocking");
    g.throughput(Throughput::Elements(1));
    for (p, cons) in [(4usize, 1usize), (1, 4), (2, 2)] {
        let mut session: Option<Contended> = None;
        g.bench_function(format!("{p}to{cons}"), |b| {
            let s = session.get_or_insert_with(|| Contended::new(p, cons));
            b.iter_custom(|n| s.run(n));
        });
        drop(session);
    }
    g.finish();
}

// ------------------------------------------------------------- one-shot ---

/// Runs `batch(n)` (which reports the time of `n` iterations) in growing
/// batches for `warm` to calibrate, then in ~0.1 s batches for `measure`;
/// returns (iterations, time) of the measured part.
fn timed(
    mut batch: impl FnMut(u64) -> Duration,
    warm: Duration,
    measure: Duration,
) -> (u64, Duration) {
    let (mut n, mut spent, mut done) = (1u64, Duration::ZERO, 0u64);
    let start = Instant::now();
    while start.elapsed() < warm {
        spent += batch(n);
        done += n;
        n = (n * 2).min(1 << 24);
    }
    let per = spent.as_secs_f64() / done.max(1) as f64;
    let size = ((0.1 / per.max(1e-9)) as u64).clamp(1, 1 << 26);
    let (mut total_n, mut total_t) = (0u64, Duration::ZERO);
    let start = Instant::now();
    while start.elapsed() < measure {
        total_t += batch(size);
        total_n += size;
    }
    (total_n, total_t)
}

fn oneshot(args: &[String]) -> Result<String> {
    let mut it = args.iter();
    let scenario = it.next().ok_or("one-shot: which scenario?")?.clone();
    let (mut kind, mut wait, mut idle_us, mut size) = (Kind::Queue, Wait::Spin, 0u64, 64usize);
    let (mut mode, mut producers, mut consumers, mut secs) = (Copying::Copy, 1, 1, 1.0f64);
    while let Some(a) = it.next() {
        let mut val = || it.next().ok_or(format!("{a} needs a value"));
        match a.as_str() {
            "--pipe" => kind = Kind::Pipe,
            "--block" | "--blocking" => wait = Wait::Block,
            "--zero-copy" => mode = Copying::ZeroCopy,
            "--batch" => mode = Copying::Batch,
            "--idle-us" => idle_us = val()?.parse()?,
            "--size" => size = val()?.parse()?,
            "--producers" => producers = val()?.parse()?,
            "--consumers" => consumers = val()?.parse()?,
            "--secs" => secs = val()?.parse()?,
            _ => return Err(format!("one-shot: unknown argument {a:?}").into()),
        }
    }
    let measure = Duration::from_secs_f64(secs);
    let warm = Duration::from_millis(300);
    match scenario.as_str() {
        "pingpong" => {
            let idle = Duration::from_micros(idle_us);
            let mut s = PingPong::new(kind, wait, idle, size);
            let mut rtts = Vec::new();
            let t0 = Instant::now();
            while t0.elapsed() < warm {
                s.run(100, None);
            }
            let t0 = Instant::now();
            while t0.elapsed() < measure {
                s.run(100, Some(&mut rtts));
            }
            drop(s);
            rtts.sort_unstable();
            let median = rtts[rtts.len() / 2] as f64;
            println!(
                "# pingpong {kind:?} {} idle {idle_us} us, {size} B: {} round trips, RTT median {median} ns, p99 {} ns",
                wait.name(),
                rtts.len(),
                rtts[rtts.len() * 99 / 100]
            );
            Ok(format!("one_way_ns={:.1}", median / 2.0))
        }
        "stream" => {
            let mut s = Stream::new(mode, size);
            let (n, t) = timed(|n| s.run(n), warm, measure);
            // 64 KiB copies run 10x slower on this machine when the
            // destination is 8-24 bytes ahead of the source modulo 64.
            let rx_align = s.rx.as_ptr() as usize % 64;
            drop(s);
            let rate = n as f64 / t.as_secs_f64();
            println!(
                "# stream {mode:?} {size} B: {n} messages in {:.3} s, {:.1} MB/s \
                 (receive buffer at {rx_align} mod 64)",
                t.as_secs_f64(),
                rate * size as f64 / 1e6
            );
            Ok(format!("msgs_per_sec={rate:.0}"))
        }
        "contended" => {
            let mut s = Contended::new(producers, consumers);
            let (n, t) = timed(|n| s.run(n), warm, measure);
            drop(s);
            let rate = n as f64 / t.as_secs_f64();
            println!(
                "# contended blocking {producers} -> {consumers}: {n} messages in {:.3} s",
                t.as_secs_f64()
            );
            Ok(format!("msgs_per_sec={rate:.0}"))
        }
        other => Err(format!("one-shot: unknown scenario {other:?}").into()),
    }
}

fn main() {
    // A child of a benchmark: play the role, never look at criterion's args.
    if let Some(role) = process::role() {
        if let Some(role) = role.strip_prefix(ROLE_PREFIX) {
            std::process::exit(child_main(role));
        }
    }
    if std::env::var_os(ONESHOT_VAR).is_some() {
        let args: Vec<String> = std::env::args().skip(1).collect();
        match oneshot(&args) {
            Ok(line) => println!("{line}"),
            Err(e) => {
                eprintln!("mulproc bench one-shot: {e}");
                std::process::exit(1);
            }
        }
        return;
    }
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .configure_from_args();
    bench_pingpong(&mut c);
    bench_stream(&mut c);
    bench_contended(&mut c);
    c.final_summary();
}
