//! Throughput: producer processes stream messages to one consumer process
//! through one mulproc queue (or, one to one, through a pipe).
//!
//! The parent is the consumer: it creates the queue and starts copies of
//! this program (new processes, never `fork`) as the producers. Every
//! message carries its sequence number (counted per producer) in its first
//! and last 8 bytes; the consumer tells the producers apart by the sender
//! pid in each message and checks that each producer's messages come in
//! order, and the counts.
//!
//! ```text
//! cargo run --release --example stream                       # 64-byte messages, copying send / try_recv
//! cargo run --release --example stream -- --zero-copy        # try_reserve + commit / try_recv_ref
//! cargo run --release --example stream -- --size 65536
//! cargo run --release --example stream -- --producers 4 --blocking   # 4 → 1, all blocking
//! cargo run --release --example stream -- --pipe             # 1 → 1 over a pipe
//! ```
//!
//! Flags:
//!
//! * `--messages N`: how many in all (default 2,000,000 up to 1 KiB, fewer
//!   for larger messages, about a second's worth).
//! * `--size BYTES`: payload size (default 64).
//! * `--capacity C`: queue slots (per direction for a pipe), a power of two
//!   (default: 1024, fewer for messages over 4 KiB so that the payload
//!   area stays about 4 MiB; a ring larger than the last-level cache makes
//!   every message a trip to DRAM: 64 KiB messages here, 1024 slots
//!   (64 MiB): 0.12 M msg/s; 64 slots (4 MiB): 0.55 M msg/s).
//! * `--producers P`: P producer processes share the N messages (each sends
//!   N / P, the first N mod P one more) into the one queue (default 1).
//! * `--pipe`: one `Pipe` instead of the queue (the consumer holds the
//!   parent end, the producer the child end); one producer only. A pipe
//!   has no reserve, so with `--zero-copy` the producer copies and only the
//!   consumer reads in place.
//! * `--zero-copy`: the producers fill reserved slots in place
//!   (`try_reserve` + `commit`) and the consumer reads in place
//!   (`try_recv_ref` / `recv_ref`), instead of copying `send` / `recv`.
//! * `--blocking`: the consumer waits in `recv` (asleep when the queue is
//!   empty) and copying producers in `send` (asleep when it is full),
//!   instead of spinning on `try_recv` / `try_send`. (There is no blocking
//!   reserve, so a zero-copy producer always spins.)
//! * `--touch`: the producers write every payload byte and the consumer
//!   checks every byte, as an application that makes and reads its data
//!   would. Without it each side touches only the 16 bytes of sequence
//!   number, so `--zero-copy` moves no payload at all.
//!
//! The producers open the channel, report ready and wait for the consumer's
//! go (on a small second queue, or the pipe's other direction), so they
//! all start together. What is measured: in the consumer, from receiving
//! data message 1 to receiving data message N (of all producers); the rate
//! is `(N - 1) / that time`, messages delivered (received and checked) per
//! second. The producers' own rate, from their first send to their last, is
//! printed too. The last line of output is `msgs_per_sec=<rate>`.
//!
//! Cleanup: the creating handles remove the names when dropped (on errors
//! and panics too), and the parent removes them as soon as every producer
//! has opened them, so nothing is left in `/dev/shm` even if a process is
//! killed during the run. The producers exit when their parent dies, and
//! the parent kills them if it fails.

use std::error::Error;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mulproc::{
    Header, Message, Pipe, Queue, QueueConfig, RecvGuard, RecvTimeoutError, Request, TryRecvError,
    TrySendError,
};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// First argument that makes this program a producer.
const CHILD_ROLE: &str = "--stream-producer";
/// Producer → consumer, before the data: the channel is open.
const READY: Request = Request::new(Request::FIRST_USER_CODE);
/// Consumer → producers, once all are ready: start sending.
const GO: Request = Request::new(Request::FIRST_USER_CODE + 1);
/// How long a blocking call waits before checking that the other process
/// is still alive.
const LIVENESS_TIMEOUT: Duration = Duration::from_millis(100);
/// Empty polls between liveness checks in a spin loop.
const SPINS_PER_CHECK: u32 = 1 << 16;
/// How long the producers may take to start and open the channel.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);

const USAGE: &str = "usage: stream [--messages N] [--size BYTES] [--capacity C] \
                     [--producers P] [--pipe] [--zero-copy] [--blocking] [--touch]";

/// Payload bytes of the default ring (see `--capacity`).
const DEFAULT_RING_BYTES: usize = 4 << 20;

#[derive(Clone, Debug)]
struct Opts {
    messages: Option<u64>,
    size: usize,
    capacity: Option<u32>,
    producers: u64,
    pipe: bool,
    zero_copy: bool,
    blocking: bool,
    touch: bool,
}

impl Opts {
    /// About a second's worth on a 2-core machine.
    fn messages(&self) -> u64 {
        self.messages.unwrap_or_else(|| {
            (2_000_000 * 1024 / self.size.max(1) as u64).clamp(50_000, 2_000_000)
        })
    }

    /// Slots: as given, or a ring of about `DEFAULT_RING_BYTES` of
    /// payload (1024 slots at most, 4 at least).
    fn capacity(&self) -> u32 {
        self.capacity.unwrap_or_else(|| {
            let stride = self.size.max(1).next_multiple_of(64);
            let slots = (DEFAULT_RING_BYTES / stride).clamp(4, 1024) as u32;
            1 << slots.ilog2()
        })
    }

    /// What producer `i` sends: N / P, the first N mod P one more.
    fn share(&self, i: u64) -> u64 {
        let (n, p) = (self.messages(), self.producers);
        n / p + u64::from(i < n % p)
    }

    /// The consumer's checks of the options (a producer gets its share as
    /// `--messages`, which may be 1).
    fn validate(&self) -> Result<()> {
        if self.producers == 0 {
            return Err("--producers must be at least 1".into());
        }
        if self.pipe && self.producers > 1 {
            return Err(format!(
                "--pipe connects one producer to one consumer; --producers {} needs the \
                 queue (drop --pipe)",
                self.producers
            )
            .into());
        }
        if self.messages() < 2 {
            return Err("--messages must be at least 2".into());
        }
        if self.messages() < self.producers {
            return Err(format!(
                "--messages {} is fewer than --producers {}: every producer sends at least one",
                self.messages(),
                self.producers
            )
            .into());
        }
        Ok(())
    }
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        messages: None,
        size: 64,
        capacity: None,
        producers: 1,
        pipe: false,
        zero_copy: false,
        blocking: false,
        touch: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v)),
            None => (arg.as_str(), None),
        };
        let mut number = || -> Result<u64> {
            let v = match inline {
                Some(v) => v,
                None => it.next().ok_or(format!("{flag} needs a value"))?,
            };
            // Allow 2_000_000 and 2,000,000.
            v.replace(['_', ','], "")
                .parse()
                .map_err(|e| format!("{flag} {v:?}: {e}").into())
        };
        match flag {
            "--messages" => o.messages = Some(number()?),
            "--size" => o.size = number()?.try_into()?,
            "--capacity" => o.capacity = Some(number()?.try_into()?),
            "--producers" => o.producers = number()?,
            "--pipe" => o.pipe = true,
            "--zero-copy" => o.zero_copy = true,
            "--blocking" => o.blocking = true,
            "--touch" => o.touch = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}").into()),
        }
    }
    Ok(o)
}

/// The other processes, watched so that no side waits forever for a
/// process that is gone.
enum Peer {
    /// We are the consumer: our producers (killed if still running when
    /// dropped), and whether the last check found them all exited.
    Producers {
        children: Vec<Child>,
        all_gone: bool,
    },
    /// We are a producer: the pid of the parent that started us.
    Parent(u32),
}

impl Peer {
    /// Called when a wait found nothing: fails if a producer failed, or if
    /// all had already exited at the previous check (they send everything
    /// before they exit successfully, so a wait that still finds nothing
    /// after that will never end).
    fn check(&mut self) -> Result<()> {
        match self {
            Peer::Producers { children, all_gone } => {
                let mut running = 0;
                for (i, c) in children.iter_mut().enumerate() {
                    match c.try_wait()? {
                        None => running += 1,
                        Some(s) if s.success() => {}
                        Some(s) => {
                            return Err(format!("producer {i} (pid {}) failed ({s})", c.id()).into())
                        }
                    }
                }
                if running > 0 {
                    *all_gone = false;
                    Ok(())
                } else if *all_gone {
                    Err("every producer has exited, yet messages are missing".into())
                } else {
                    *all_gone = true;
                    Ok(())
                }
            }
            Peer::Parent(pid) => {
                // Once the parent dies we are re-parented, so the id changes.
                if std::os::unix::process::parent_id() == *pid {
                    Ok(())
                } else {
                    Err("the parent process is gone".into())
                }
            }
        }
    }

    /// The producers' pids, in the order they were started.
    fn pids(&self) -> Vec<u32> {
        match self {
            Peer::Producers { children, .. } => children.iter().map(Child::id).collect(),
            Peer::Parent(_) => Vec::new(),
        }
    }

    /// Waits up to `timeout` for every producer to exit successfully.
    fn wait_children(&mut self, timeout: Duration) -> Result<()> {
        let Peer::Producers { children, .. } = self else {
            return Ok(());
        };
        let deadline = Instant::now() + timeout;
        for (i, c) in children.iter_mut().enumerate() {
            loop {
                match c.try_wait()? {
                    Some(s) if s.success() => break,
                    Some(s) => {
                        return Err(format!("producer {i} (pid {}) failed ({s})", c.id()).into())
                    }
                    None if Instant::now() >= deadline => {
                        return Err(format!("producer {i} (pid {}) did not exit", c.id()).into())
                    }
                    None => std::thread::sleep(Duration::from_millis(1)),
                }
            }
        }
        Ok(())
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Peer::Producers { children, .. } = self {
            for c in children.iter_mut() {
                if let Ok(None) = c.try_wait() {
                    let _ = c.kill();
                    let _ = c.wait();
                }
            }
        }
    }
}

/// One empty poll in a spin loop; every so often, checks the peer.
#[inline]
fn poll_pause(spins: &mut u32, peer: &mut Peer) -> Result<()> {
    *spins = spins.wrapping_add(1);
    if *spins % SPINS_PER_CHECK == 0 {
        peer.check()?;
    }
    std::hint::spin_loop();
    Ok(())
}

/// A channel handle, shared: a queue, or this side's end of the pipe.
#[derive(Clone, Copy)]
enum Chan<'a> {
    Queue(&'a Queue),
    Pipe(&'a Pipe),
}

/// Where the consumer receives: the queue, or its end of the pipe
/// (borrowed mutably for in-place receives).
enum Rx<'a> {
    Queue(&'a Queue),
    Pipe(&'a mut Pipe),
}

impl Rx<'_> {
    fn chan(&self) -> Chan<'_> {
        match self {
            Rx::Queue(q) => Chan::Queue(q),
            Rx::Pipe(p) => Chan::Pipe(p),
        }
    }
}

/// Copying send: `send` (sleeps while full) with `--blocking`, else spins
/// on `try_send`.
fn send(tx: Chan<'_>, o: &Opts, peer: &mut Peer, request: Request, data: &[u8]) -> Result<()> {
    let mut spins = 0u32;
    let mut msg = Message::new(request, data);
    loop {
        let r: Result<(), TrySendError<_>> = match (tx, o.blocking) {
            (Chan::Queue(q), true) => q.send(msg),
            (Chan::Queue(q), false) => q.try_send(msg),
            (Chan::Pipe(p), true) => p.send(msg),
            (Chan::Pipe(p), false) => p.try_send(msg),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(e) if e.is_full() => {
                msg = e.into_inner();
                if o.blocking {
                    peer.check()?;
                } else {
                    poll_pause(&mut spins, peer)?;
                }
            }
            Err(e) => return Err(e.to_string().into()),
        }
    }
}

/// A receive that may time out: `None` on the timeout.
fn timed<T>(r: Result<T, RecvTimeoutError>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(RecvTimeoutError::Timeout) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A receive that may find nothing: `None` when empty.
fn polled<T>(r: Result<T, TryRecvError>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(TryRecvError::Empty) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Receives one message the way the options say and hands its header and
/// payload to `f`. In zero-copy mode the message is read in place and its
/// slot freed after `f` returns.
fn recv_with<R>(
    rx: &mut Rx<'_>,
    o: &Opts,
    peer: &mut Peer,
    buf: &mut Vec<u8>,
    f: impl FnOnce(&Header, &[u8]) -> R,
) -> Result<R> {
    let mut spins = 0u32;
    loop {
        if o.zero_copy {
            let got: Option<RecvGuard<'_>> = match (&mut *rx, o.blocking) {
                (Rx::Queue(q), true) => timed(q.recv_ref_timeout(LIVENESS_TIMEOUT))?,
                (Rx::Queue(q), false) => polled(q.try_recv_ref())?,
                (Rx::Pipe(p), true) => timed(p.recv_ref_timeout(LIVENESS_TIMEOUT))?,
                (Rx::Pipe(p), false) => polled(p.try_recv_ref())?,
            };
            if let Some(g) = got {
                return Ok(f(g.header(), g.data()));
            }
        } else {
            // `recv_timeout` is `recv` with a deadline (the same spin, yield,
            // sleep path); the timeout only serves the liveness check.
            // Copied into one reused buffer: no allocation per message.
            let buf = &mut *buf;
            let got = match (&*rx, o.blocking) {
                (Rx::Queue(q), true) => timed(q.recv_into_timeout(buf, LIVENESS_TIMEOUT))?,
                (Rx::Queue(q), false) => polled(q.try_recv_into(buf))?,
                (Rx::Pipe(p), true) => timed(p.recv_into_timeout(buf, LIVENESS_TIMEOUT))?,
                (Rx::Pipe(p), false) => polled(p.try_recv_into(buf))?,
            };
            if let Some(h) = got {
                return Ok(f(&h, buf));
            }
        }
        if o.blocking {
            peer.check()?;
        } else {
            poll_pause(&mut spins, peer)?;
        }
    }
}

/// Waits (at most [`SETUP_TIMEOUT`]) for a message, for the set-up
/// handshake.
fn recv_setup(rx: Chan<'_>, peer: &mut Peer, what: &str) -> Result<Message> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        let got = match rx {
            Chan::Queue(q) => q.recv_timeout(LIVENESS_TIMEOUT),
            Chan::Pipe(p) => p.recv_timeout(LIVENESS_TIMEOUT),
        };
        match got {
            Ok(m) => return Ok(m),
            Err(RecvTimeoutError::Timeout) => {
                peer.check()?;
                if Instant::now() >= deadline {
                    return Err(format!("no {what} within {SETUP_TIMEOUT:?}").into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// The names of the channel made from the consumer's base name: the data
/// queue and the go queue, or the pipe.
fn data_name(base: &str) -> String {
    format!("{base}-data")
}
fn go_name(base: &str) -> String {
    format!("{base}-go")
}
fn pipe_name(base: &str) -> String {
    format!("{base}-pipe")
}

/// Where the trailing copy of the sequence number starts (messages under
/// 16 bytes carry only the leading one, as much of it as fits).
fn tail_start(size: usize) -> usize {
    if size >= 16 {
        size - 8
    } else {
        size
    }
}

/// Writes message `seq`: its number first and last, and with `touch` every
/// byte between set to `seq as u8`.
fn fill(buf: &mut [u8], seq: u64, touch: bool) {
    let size = buf.len();
    if size >= 16 && !touch {
        // The usual case, without a variable-length copy (a memcpy call).
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        buf[size - 8..].copy_from_slice(&seq.to_le_bytes());
        return;
    }
    let (head, tail) = (size.min(8), tail_start(size));
    let s = seq.to_le_bytes();
    buf[..head].copy_from_slice(&s[..head]);
    if touch && tail > head {
        buf[head..tail].fill(seq as u8);
    }
    if tail < size {
        buf[tail..].copy_from_slice(&s);
    }
}

/// Checks that `data` is message `seq` as [`fill`] wrote it.
fn check(data: &[u8], seq: u64, size: usize, touch: bool) -> bool {
    if data.len() != size {
        return false;
    }
    let (head, tail) = (size.min(8), tail_start(size));
    if size >= 16 {
        // The usual case as two word compares: slice compares of a
        // variable length are memcmp calls, 14-23 % of the consumer's
        // time in perf.
        let word = |at: usize| u64::from_le_bytes(data[at..at + 8].try_into().unwrap());
        if word(0) != seq || word(size - 8) != seq {
            return false;
        }
    } else {
        let s = seq.to_le_bytes();
        if data[..head] != s[..head] || data[tail..] != s[..size - tail] {
            return false;
        }
    }
    // OR of XORs rather than `all`: no early exit, so it vectorises.
    !touch
        || tail <= head
        || data[head..tail]
            .iter()
            .fold(0, |acc, &b| acc | (b ^ seq as u8))
            == 0
}

fn producer(args: &[String]) -> Result<()> {
    let [base, ppid, flags @ ..] = args else {
        return Err("producer: missing arguments".into());
    };
    // `--messages` is this producer's share.
    let o = parse_opts(flags)?;
    let n = o.messages();
    let mut peer = Peer::Parent(ppid.parse()?);
    peer.check()?;
    let (queue, pipe, go_queue);
    let tx = if o.pipe {
        pipe = Pipe::open(&pipe_name(base))?;
        Chan::Pipe(&pipe)
    } else {
        queue = Queue::open(&data_name(base))?;
        Chan::Queue(&queue)
    };
    // Open the go queue before saying READY: once every producer is ready
    // the consumer removes its name.
    let go_from = if o.pipe {
        tx
    } else {
        go_queue = Queue::open(&go_name(base))?;
        Chan::Queue(&go_queue)
    };
    send(tx, &o, &mut peer, READY, &[])?;
    // Wait for the go, which comes once every producer is ready: over the
    // pipe's other direction, or on the go queue.
    let go = recv_setup(go_from, &mut peer, "go from the consumer")?;
    if go.request != GO {
        return Err(format!("expected GO, got {go:?}").into());
    }

    let start = Instant::now();
    match tx {
        Chan::Queue(q) if o.zero_copy => {
            for seq in 0..n {
                let mut spins = 0u32;
                let mut slot = loop {
                    match q.try_reserve() {
                        Ok(slot) => break slot,
                        Err(e) if e.is_full() => poll_pause(&mut spins, &mut peer)?,
                        Err(e) => return Err(e.to_string().into()),
                    }
                };
                fill(&mut slot.payload_mut()[..o.size], seq, o.touch);
                slot.commit(Request::DO, None, o.size)
                    .map_err(|e| e.to_string())?;
            }
        }
        _ => {
            // Copying send (a pipe has no reserve, so it always copies).
            let mut buf = vec![0u8; o.size];
            for seq in 0..n {
                fill(&mut buf, seq, o.touch);
                send(tx, &o, &mut peer, Request::DO, &buf)?;
            }
        }
    }
    let elapsed = start.elapsed();

    // Report: how many sent, in how many ns.
    let mut report = [0u8; 16];
    report[..8].copy_from_slice(&n.to_le_bytes());
    report[8..].copy_from_slice(&(elapsed.as_nanos() as u64).to_le_bytes());
    send(tx, &o, &mut peer, Request::FINISHED, &report)
}

/// What one received message was, or what was wrong with it (described
/// outside the receive, so the hot path carries no strings).
#[derive(Clone, Copy)]
enum Got {
    Data,
    Report,
    UnknownSender(u32),
    TooMany(usize),
    Wrong(usize, u64),
    Unexpected(usize, Request),
}

fn consumer(o: &Opts) -> Result<String> {
    o.validate()?;
    let n = o.messages();
    let np = o.producers as usize;
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let base = format!("stream-{}-{nanos}", std::process::id());
    // Room for the producers' 16-byte reports at the end.
    let cfg = QueueConfig::new(o.capacity(), o.size.max(16).try_into()?);
    // The creating handles remove the names when dropped, on every path.
    let (queue, mut pipe, go_queue);
    let mut rx = if o.pipe {
        pipe = Pipe::create(&pipe_name(&base), cfg)?;
        go_queue = None;
        Rx::Pipe(&mut pipe)
    } else {
        queue = Queue::create(&data_name(&base), cfg)?;
        let go_cap = (np as u32).next_power_of_two().max(2);
        go_queue = Some(Queue::create(
            &go_name(&base),
            QueueConfig::new(go_cap, 16),
        )?);
        Rx::Queue(&queue)
    };

    // Declared after the channel, so dropped (producers killed) before it.
    let mut peer = Peer::Producers {
        children: Vec::with_capacity(np),
        all_gone: false,
    };
    for i in 0..o.producers {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.arg(CHILD_ROLE)
            .arg(&base)
            .arg(std::process::id().to_string())
            .args(["--messages", &o.share(i).to_string()])
            .args(["--size", &o.size.to_string()])
            .stdin(Stdio::null());
        for (set, flag) in [
            (o.pipe, "--pipe"),
            (o.zero_copy, "--zero-copy"),
            (o.blocking, "--blocking"),
            (o.touch, "--touch"),
        ] {
            if set {
                cmd.arg(flag);
            }
        }
        let child = cmd.spawn()?;
        if let Peer::Producers { children, .. } = &mut peer {
            children.push(child);
        }
    }
    let pids = peer.pids();

    // Every producer reports ready (nothing else comes before the go).
    let mut ready = vec![false; np];
    for _ in 0..np {
        let m = recv_setup(rx.chan(), &mut peer, "READY from every producer")?;
        let i = m
            .sender
            .and_then(|s| pids.iter().position(|&p| p == s))
            .ok_or_else(|| format!("a message from an unknown sender: {m:?}"))?;
        if m.request != READY || ready[i] {
            return Err(format!("expected READY from producer {i}, got {m:?}").into());
        }
        ready[i] = true;
    }
    // Every producer has the channel mapped; removing the names now means
    // nothing is left behind even if this process is killed.
    if o.pipe {
        Pipe::remove(&pipe_name(&base))?;
        if let Chan::Pipe(p) = rx.chan() {
            p.try_send(Message::signal(GO)).map_err(|e| e.to_string())?;
        }
    } else {
        Queue::remove(&data_name(&base))?;
        Queue::remove(&go_name(&base))?;
        if let Some(go) = &go_queue {
            for _ in 0..np {
                go.try_send(Message::signal(GO))
                    .map_err(|e| e.to_string())?;
            }
        }
    }

    // Per producer: next sequence number, and its report.
    let shares: Vec<u64> = (0..o.producers).map(|i| o.share(i)).collect();
    let mut next = vec![0u64; np];
    let mut reports: Vec<Option<(u64, u64)>> = vec![None; np];
    let (mut received, mut reported) = (0u64, 0usize);
    let (mut first, mut last) = (None, None);
    let mut buf = Vec::with_capacity(o.size.max(64));
    while received < n || reported < np {
        let got = recv_with(&mut rx, o, &mut peer, &mut buf, |h, data| {
            let Some(i) = pids.iter().position(|&p| p == h.sender) else {
                return Got::UnknownSender(h.sender);
            };
            if h.request == Request::DO {
                let seq = next[i];
                if seq >= shares[i] || reports[i].is_some() {
                    return Got::TooMany(i);
                }
                if !check(data, seq, o.size, o.touch) {
                    return Got::Wrong(i, seq);
                }
                next[i] = seq + 1;
                Got::Data
            } else if h.request == Request::FINISHED && data.len() == 16 && reports[i].is_none() {
                let word = |k: usize| u64::from_le_bytes(data[k..k + 8].try_into().unwrap());
                reports[i] = Some((word(0), word(8)));
                Got::Report
            } else {
                Got::Unexpected(i, h.request)
            }
        })?;
        match got {
            Got::Data => {
                received += 1;
                if received == 1 {
                    first = Some(Instant::now());
                }
                if received == n {
                    last = Some(Instant::now());
                }
            }
            Got::Report => reported += 1,
            Got::UnknownSender(pid) => {
                return Err(format!("a message from an unknown sender, pid {pid}").into())
            }
            Got::TooMany(i) => {
                return Err(format!("producer {i} sent more than its {}", shares[i]).into())
            }
            Got::Wrong(i, seq) => {
                return Err(format!("message {seq} of producer {i} is not the one sent").into())
            }
            Got::Unexpected(i, r) => return Err(format!("producer {i}: unexpected {r:?}").into()),
        }
    }
    let elapsed = match (first, last) {
        (Some(f), Some(l)) => l - f,
        _ => Duration::ZERO,
    };
    peer.wait_children(Duration::from_secs(5))?;
    let leftover = match rx.chan() {
        Chan::Queue(q) => q.try_recv(),
        Chan::Pipe(p) => p.try_recv(),
    };
    match leftover {
        // A pipe's producer has closed its end by now: Disconnected.
        Err(TryRecvError::Empty | TryRecvError::Disconnected) => {}
        Ok(m) => return Err(format!("a message after the producers' reports: {m:?}").into()),
        Err(e) => return Err(e.into()),
    }
    let mut slowest_ns = 0;
    for (i, r) in reports.iter().enumerate() {
        let (sent, ns) = r.ok_or("a producer's report is missing")?;
        if sent != shares[i] || next[i] != shares[i] {
            return Err(format!(
                "producer {i} sent {sent} messages, {} were received, {} expected",
                next[i], shares[i]
            )
            .into());
        }
        slowest_ns = slowest_ns.max(ns);
    }

    let rate = (n - 1) as f64 / elapsed.as_secs_f64();
    let producer_rate = n as f64 / (slowest_ns as f64 / 1e9);
    let mode = match (o.zero_copy, o.blocking, o.pipe) {
        (false, false, _) => "copying, spinning (try_send / try_recv)",
        (false, true, _) => "copying, blocking (send / recv)",
        (true, false, false) => "zero-copy, spinning (try_reserve + commit / try_recv_ref)",
        (true, true, false) => "zero-copy, blocking receive (try_reserve + commit / recv_ref)",
        (true, false, true) => "copying send, in-place receive, spinning (try_send / try_recv_ref)",
        (true, true, true) => "copying send, in-place receive, blocking (send / recv_ref)",
    };
    let channel = if o.pipe {
        format!("one pipe, capacity {} per direction", o.capacity())
    } else {
        format!(
            "one queue, capacity {} ({:.1} MiB segment)",
            o.capacity(),
            cfg.segment_size()? as f64 / (1024.0 * 1024.0)
        )
    };
    println!(
        "stream: {n} messages of {} bytes, {} → 1 consumer over {channel}, {mode}{}",
        o.size,
        if np == 1 {
            "1 producer".to_owned()
        } else {
            format!("{np} producers ({} to {} each)", shares[np - 1], shares[0])
        },
        if o.touch {
            ", every byte written and checked"
        } else {
            ""
        },
    );
    println!(
        "consumer: received and checked {n} in {:.3} s: {:.3} M msg/s, {:.0} MiB/s of payload",
        elapsed.as_secs_f64(),
        rate / 1e6,
        rate * o.size as f64 / (1024.0 * 1024.0)
    );
    println!(
        "{}: sent {n} in {:.3} s{}: {:.3} M msg/s",
        if np == 1 { "producer" } else { "producers" },
        slowest_ns as f64 / 1e9,
        if np == 1 { "" } else { " (the slowest's time)" },
        producer_rate / 1e6
    );
    Ok(format!("msgs_per_sec={rate:.0}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(CHILD_ROLE) {
        return match producer(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("stream (producer {}): error: {e}", std::process::id());
                ExitCode::FAILURE
            }
        };
    }
    match parse_opts(&args).and_then(|o| consumer(&o)) {
        Ok(last_line) => {
            println!("{last_line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("stream: error: {e}");
            ExitCode::FAILURE
        }
    }
}
