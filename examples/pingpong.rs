//! Round-trip latency between two processes over two mulproc queues, or
//! over one mulproc pipe.
//!
//! The parent creates a `ping` queue (parent → child) and a `pong` queue
//! (child → parent), or with `--pipe` one pipe (it holds the parent end, the
//! child opens the child end), starts a second copy of this program as the
//! child (a new process, never `fork`), and bounces one message back and
//! forth. The child echoes every message unchanged; the parent times each
//! round trip with `Instant`.
//!
//! ```text
//! cargo run --release --example pingpong                              # both sides busy-poll
//! cargo run --release --example pingpong -- --pipe                    # ... over one pipe
//! cargo run --release --example pingpong -- --blocking                # both sides wait in recv
//! cargo run --release --example pingpong -- --blocking --idle-us 200  # ... and are asleep when a message comes
//! ```
//!
//! Flags:
//!
//! * `--size BYTES`: payload size (default 64).
//! * `--iters N`: timed round trips (default 100000, or 20000 with `--blocking`).
//! * `--warmup N`: untimed round trips first (default: iters / 10).
//! * `--blocking`: wait in `recv` (and `send`) instead of spinning on
//!   `try_recv` (and `try_send`).
//! * `--pipe`: one `Pipe` (parent end / child end) instead of the two
//!   queues, in every mode.
//! * `--idle-us N`: both sides busy-wait N µs on the clock before they send
//!   (the parent before each ping, the child before each echo), so that a
//!   blocking receiver on either side has gone to sleep when the message
//!   comes (default 0). The timed round trip then starts before the
//!   parent's pause and so holds both pauses, and the one-way figure is
//!   `(median round trip − 2 × idle) / 2`: with `--blocking`, the wake-up
//!   plus transfer cost of a receiver that was asleep.
//! * `--zero-copy`: receive in place (`try_recv_ref`/`recv_ref`) and, on
//!   queues, send by filling a reserved slot (`try_reserve` + `commit`). A
//!   pipe has no reserve: with `--pipe` only the receive is in place, and
//!   the child copies each message out before it echoes it (an end holds
//!   one message at a time).
//!
//! The last line of output is `one_way_ns=<(median round trip − 2 × idle) / 2>`
//! (with no idle, median round trip / 2).
//!
//! Cleanup: the creating handles remove the names when dropped (on errors
//! and panics too), and the parent removes them as soon as the child has
//! opened them, so nothing is left in `/dev/shm` even if a process is
//! killed during the run. The child exits when its parent dies.

use std::error::Error;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mulproc::{Message, Pipe, Queue, QueueConfig, RecvTimeoutError, Request, TryRecvError};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// First argument that makes this program the child.
const CHILD_ROLE: &str = "--pingpong-child";
/// Slots per queue or pipe direction (only one message is ever in flight).
const CAPACITY: u32 = 64;
/// Child → parent: the channel is open.
const READY: Request = Request::new(Request::FIRST_USER_CODE);
/// How long a blocking receive waits before checking that the other
/// process is still alive.
const LIVENESS_TIMEOUT: Duration = Duration::from_millis(100);
/// Empty polls between liveness checks in a spin loop.
const SPINS_PER_CHECK: u32 = 1 << 16;

const USAGE: &str = "usage: pingpong [--size BYTES] [--iters N] [--warmup N] [--blocking] \
                     [--idle-us N] [--zero-copy] [--pipe]";

#[derive(Clone, Debug)]
struct Opts {
    size: usize,
    iters: Option<u64>,
    warmup: Option<u64>,
    blocking: bool,
    idle_us: u64,
    zero_copy: bool,
    pipe: bool,
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        size: 64,
        iters: None,
        warmup: None,
        blocking: false,
        idle_us: 0,
        zero_copy: false,
        pipe: false,
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
            v.parse().map_err(|e| format!("{flag} {v:?}: {e}").into())
        };
        match flag {
            "--size" => o.size = number()? as usize,
            "--iters" => o.iters = Some(number()?),
            "--warmup" => o.warmup = Some(number()?),
            "--idle-us" => o.idle_us = number()?,
            "--blocking" => o.blocking = true,
            "--zero-copy" => o.zero_copy = true,
            "--pipe" => o.pipe = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}").into()),
        }
    }
    if o.iters == Some(0) {
        return Err("--iters must be at least 1".into());
    }
    Ok(o)
}

/// The other process, watched so that neither side waits forever for a
/// process that is gone.
enum Peer {
    /// We are the parent: our child (killed if still running when dropped).
    Child(Child),
    /// We are the child: the pid of the parent that started us.
    Parent(u32),
}

impl Peer {
    fn check(&mut self) -> Result<()> {
        match self {
            Peer::Child(c) => match c.try_wait()? {
                None => Ok(()),
                Some(status) => Err(format!("the child exited early ({status})").into()),
            },
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

    /// Waits up to `timeout` for the child to exit successfully.
    fn wait_child(&mut self, timeout: Duration) -> Result<()> {
        let Peer::Child(c) = self else { return Ok(()) };
        let deadline = Instant::now() + timeout;
        loop {
            match c.try_wait()? {
                Some(s) if s.success() => return Ok(()),
                Some(s) => return Err(format!("the child failed ({s})").into()),
                None if Instant::now() >= deadline => {
                    return Err("the child did not exit after DIE".into())
                }
                None => std::thread::sleep(Duration::from_millis(1)),
            }
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Peer::Child(c) = self {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
                let _ = c.wait();
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

/// The channel between the two processes, as one side sees it.
// One value per run, built once and never moved in the timed loop.
#[allow(clippy::large_enum_variant)]
enum Link {
    /// Two queues: `tx` carries this side's messages, `rx` the other's.
    Queues { tx: Queue, rx: Queue },
    /// One end of a pipe.
    Pipe(Pipe),
}

impl Link {
    /// Sends `data` with `request`, the way the options say.
    fn send(&self, o: &Opts, peer: &mut Peer, request: Request, data: &[u8]) -> Result<()> {
        match self {
            Link::Queues { tx, .. } => send_queue(tx, o, peer, request, data),
            Link::Pipe(p) => send_pipe(p, o, peer, request, data),
        }
    }

    /// Receives one message the way the options say and hands its request
    /// and payload to `f` (in zero-copy mode, in place: the slot is freed
    /// after `f` returns).
    fn recv_with<R>(
        &mut self,
        o: &Opts,
        peer: &mut Peer,
        f: impl FnOnce(Request, &[u8], &mut Peer) -> Result<R>,
    ) -> Result<R> {
        match self {
            Link::Queues { rx, .. } => recv_queue_with(rx, o, peer, f),
            Link::Pipe(p) => recv_pipe_with(p, o, peer, f),
        }
    }

    /// Waits up to `timeout` for a message, for the set-up handshake.
    fn recv_timeout(&self, timeout: Duration) -> Result<Message, RecvTimeoutError> {
        match self {
            Link::Queues { rx, .. } => rx.recv_timeout(timeout),
            Link::Pipe(p) => p.recv_timeout(timeout),
        }
    }
}

/// Sends `data` with `request` on a queue, the way the options say.
fn send_queue(q: &Queue, o: &Opts, peer: &mut Peer, request: Request, data: &[u8]) -> Result<()> {
    let mut spins = 0u32;
    if o.zero_copy {
        // There is no blocking reserve: spin until a slot is free (in a
        // ping-pong one always is).
        loop {
            match q.try_reserve() {
                Ok(mut slot) => {
                    slot.payload_mut()[..data.len()].copy_from_slice(data);
                    return slot
                        .commit(request, None, data.len())
                        .map_err(|e| e.to_string().into());
                }
                Err(e) if e.is_full() => poll_pause(&mut spins, peer)?,
                Err(e) => return Err(e.to_string().into()),
            }
        }
    }
    let mut msg = Message::new(request, data);
    loop {
        // `send` sleeps while the queue is full (up to its retry limit).
        let r = if o.blocking {
            q.send(msg)
        } else {
            q.try_send(msg)
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

/// Sends `data` with `request` on a pipe: always a copy (a pipe has no
/// reserve), `send` with `--blocking`, else spinning on `try_send`.
fn send_pipe(p: &Pipe, o: &Opts, peer: &mut Peer, request: Request, data: &[u8]) -> Result<()> {
    let mut spins = 0u32;
    let mut msg = Message::new(request, data);
    loop {
        // `send` sleeps while the direction is full (up to its retry limit).
        let r = if o.blocking {
            p.send(msg)
        } else {
            p.try_send(msg)
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

/// Receives one message from a queue the way the options say and hands its
/// request and payload to `f`. In zero-copy mode the slot is freed after
/// `f` returns.
fn recv_queue_with<R>(
    q: &Queue,
    o: &Opts,
    peer: &mut Peer,
    f: impl FnOnce(Request, &[u8], &mut Peer) -> Result<R>,
) -> Result<R> {
    let mut spins = 0u32;
    loop {
        if o.zero_copy {
            let got = if o.blocking {
                match q.recv_ref_timeout(LIVENESS_TIMEOUT) {
                    Ok(g) => Some(g),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(e) => return Err(e.into()),
                }
            } else {
                match q.try_recv_ref() {
                    Ok(g) => Some(g),
                    Err(TryRecvError::Empty) => None,
                    Err(e) => return Err(e.into()),
                }
            };
            if let Some(g) = got {
                return f(g.header().request, g.data(), peer);
            }
        } else {
            // `recv_timeout` is `recv` with a deadline (the same spin, yield,
            // sleep path); the timeout only serves the liveness check.
            let got = if o.blocking {
                match q.recv_timeout(LIVENESS_TIMEOUT) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(e) => return Err(e.into()),
                }
            } else {
                match q.try_recv() {
                    Ok(m) => Some(m),
                    Err(TryRecvError::Empty) => None,
                    Err(e) => return Err(e.into()),
                }
            };
            if let Some(m) = got {
                return f(m.request, &m.data, peer);
            }
        }
        if o.blocking {
            peer.check()?;
        } else {
            poll_pause(&mut spins, peer)?;
        }
    }
}

/// [`recv_queue_with`] on a pipe end. In zero-copy mode the message is
/// read in place and freed after `f` returns; the end is borrowed
/// meanwhile, so `f` cannot send on it.
fn recv_pipe_with<R>(
    p: &mut Pipe,
    o: &Opts,
    peer: &mut Peer,
    f: impl FnOnce(Request, &[u8], &mut Peer) -> Result<R>,
) -> Result<R> {
    let mut spins = 0u32;
    loop {
        if o.zero_copy {
            let got = if o.blocking {
                match p.recv_ref_timeout(LIVENESS_TIMEOUT) {
                    Ok(g) => Some(g),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(e) => return Err(e.into()),
                }
            } else {
                match p.try_recv_ref() {
                    Ok(g) => Some(g),
                    Err(TryRecvError::Empty) => None,
                    Err(e) => return Err(e.into()),
                }
            };
            if let Some(g) = got {
                return f(g.header().request, g.data(), peer);
            }
        } else {
            let got = if o.blocking {
                match p.recv_timeout(LIVENESS_TIMEOUT) {
                    Ok(m) => Some(m),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(e) => return Err(e.into()),
                }
            } else {
                match p.try_recv() {
                    Ok(m) => Some(m),
                    Err(TryRecvError::Empty) => None,
                    Err(e) => return Err(e.into()),
                }
            };
            if let Some(m) = got {
                return f(m.request, &m.data, peer);
            }
        }
        if o.blocking {
            peer.check()?;
        } else {
            poll_pause(&mut spins, peer)?;
        }
    }
}

/// CPU time (user + system) this process has used, from /proc (10 ms
/// resolution).
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name: state is the 1st, utime the 12th,
    // stime the 13th, in clock ticks of 1/100 s.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// The names of the channel made from the parent's base name: the two
/// queues, or the pipe.
fn ping_name(base: &str) -> String {
    format!("{base}-ping")
}
fn pong_name(base: &str) -> String {
    format!("{base}-pong")
}
fn pipe_name(base: &str) -> String {
    format!("{base}-pipe")
}

fn child(args: &[String]) -> Result<()> {
    let [base, ppid, flags @ ..] = args else {
        return Err("child: missing arguments".into());
    };
    let o = parse_opts(flags)?;
    let idle = Duration::from_micros(o.idle_us);
    let mut peer = Peer::Parent(ppid.parse()?);
    peer.check()?;
    let mut link = if o.pipe {
        Link::Pipe(Pipe::open(&pipe_name(base))?)
    } else {
        Link::Queues {
            rx: Queue::open(&ping_name(base))?,
            tx: Queue::open(&pong_name(base))?,
        }
    };
    link.send(&o, &mut peer, READY, &[])?;
    let (cpu0, t0) = (cpu_time(), Instant::now());
    // Echo until DIE, idling first if asked to.
    let mut buf = Vec::new();
    loop {
        let request = match &mut link {
            Link::Queues { tx, rx } => {
                // Echo straight from the received message (in place with
                // `--zero-copy`).
                recv_queue_with(rx, &o, &mut peer, |request, data, peer| {
                    if request != Request::DIE {
                        if !idle.is_zero() {
                            spin_for(idle);
                        }
                        send_queue(tx, &o, peer, request, data)?;
                    }
                    Ok(request)
                })?
            }
            Link::Pipe(p) => {
                // An end holds one message at a time: copy it out, free it,
                // then echo.
                let request = recv_pipe_with(p, &o, &mut peer, |request, data, _| {
                    buf.clear();
                    buf.extend_from_slice(data);
                    Ok(request)
                })?;
                if request != Request::DIE {
                    if !idle.is_zero() {
                        spin_for(idle);
                    }
                    send_pipe(p, &o, &mut peer, request, &buf)?;
                }
                request
            }
        };
        if request == Request::DIE {
            break;
        }
    }
    // Report our CPU use over the run: CPU ns, wall ns.
    let mut stats = [0u8; 16];
    stats[..8].copy_from_slice(&((cpu_time() - cpu0).as_nanos() as u64).to_le_bytes());
    stats[8..].copy_from_slice(&(t0.elapsed().as_nanos() as u64).to_le_bytes());
    link.send(&o, &mut peer, Request::FINISHED, &stats)
}

fn fmt_ns(ns: f64) -> String {
    if ns < 10_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 10_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.1} ms", ns / 1e6)
    }
}

/// Nearest-rank percentile of sorted samples.
fn percentile(sorted: &[u64], p: f64) -> u64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn parent(o: &Opts) -> Result<String> {
    let iters = o.iters.unwrap_or(if o.blocking { 20_000 } else { 100_000 });
    let warmup = o.warmup.unwrap_or(iters / 10);
    let idle = Duration::from_micros(o.idle_us);

    // Unique names per run: pid and time.
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let base = format!("pingpong-{}-{nanos}", std::process::id());
    // Room for the child's 16-byte report at the end.
    let cfg = QueueConfig::new(CAPACITY, o.size.max(16).try_into()?);
    // The creating handles remove the names when dropped, on every path.
    let mut link = if o.pipe {
        Link::Pipe(Pipe::create(&pipe_name(&base), cfg)?)
    } else {
        Link::Queues {
            tx: Queue::create(&ping_name(&base), cfg)?,
            rx: Queue::create(&pong_name(&base), cfg)?,
        }
    };

    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(CHILD_ROLE)
        .arg(&base)
        .arg(std::process::id().to_string())
        .args(["--idle-us", &o.idle_us.to_string()])
        .stdin(Stdio::null());
    for (set, flag) in [
        (o.blocking, "--blocking"),
        (o.zero_copy, "--zero-copy"),
        (o.pipe, "--pipe"),
    ] {
        if set {
            cmd.arg(flag);
        }
    }
    // Declared after the channel, so dropped (child killed) before it.
    let mut peer = Peer::Child(cmd.spawn()?);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match link.recv_timeout(LIVENESS_TIMEOUT) {
            Ok(m) if m.request == READY => break,
            Ok(m) => return Err(format!("expected READY, got {m:?}").into()),
            Err(RecvTimeoutError::Timeout) => {
                peer.check()?;
                if Instant::now() >= deadline {
                    return Err("the child did not open the channel within 10 s".into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Both processes have the channel mapped; the names are no longer
    // needed, and removing them now means nothing is left behind even if
    // this process is killed.
    if o.pipe {
        Pipe::remove(&pipe_name(&base))?;
    } else {
        Queue::remove(&ping_name(&base))?;
        Queue::remove(&pong_name(&base))?;
    }

    let mut buf = vec![0u8; o.size];
    let seq_len = o.size.min(8);
    let mut rtt = Vec::with_capacity(iters as usize);
    let (mut cpu0, mut t0) = (cpu_time(), Instant::now());
    let mut warmup_time = Duration::ZERO;
    let mut slowest_warmup = (0, 0);
    for i in 0..warmup + iters {
        if i == warmup {
            warmup_time = t0.elapsed();
            (cpu0, t0) = (cpu_time(), Instant::now());
        }
        buf[..seq_len].copy_from_slice(&i.to_le_bytes()[..seq_len]);
        // With an idle time the round trip is timed from before our pause,
        // so it holds both sides' pauses (ours, then the child's before its
        // echo); the one-way figure takes both out.
        let start = Instant::now();
        if !idle.is_zero() {
            spin_for(idle);
        }
        link.send(o, &mut peer, Request::DO, &buf)?;
        let ok = link.recv_with(o, &mut peer, |request, data, _| {
            Ok(request == Request::DO
                && data.len() == buf.len()
                && data[..seq_len] == buf[..seq_len])
        })?;
        let end = Instant::now();
        if !ok {
            return Err(format!("round trip {i}: the reply is not the message sent").into());
        }
        let ns = (end - start).as_nanos() as u64;
        if i >= warmup {
            rtt.push(ns);
        } else if ns > slowest_warmup.1 {
            slowest_warmup = (i, ns);
        }
    }
    let (cpu, wall) = (cpu_time() - cpu0, t0.elapsed());

    link.send(o, &mut peer, Request::DIE, &[])?;
    let (child_cpu, child_wall) = link.recv_with(o, &mut peer, |request, data, _| {
        if request != Request::FINISHED || data.len() != 16 {
            return Err("expected the child's FINISHED report".into());
        }
        let word = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
        Ok((word(0), word(8)))
    })?;
    peer.wait_child(Duration::from_secs(5))?;

    rtt.sort_unstable();
    let median = if rtt.len() % 2 == 1 {
        rtt[rtt.len() / 2] as f64
    } else {
        (rtt[rtt.len() / 2 - 1] + rtt[rtt.len() / 2]) as f64 / 2.0
    };
    let mean = rtt.iter().sum::<u64>() as f64 / rtt.len() as f64;
    // Both pauses are in every timed round trip.
    let idles = 2.0 * idle.as_nanos() as f64;
    let one_way = (median - idles) / 2.0;
    let channel = if o.pipe { "one pipe" } else { "two queues" };
    let mode = match (o.blocking, o.zero_copy, o.pipe) {
        (false, false, _) => "busy-poll (try_send / try_recv)",
        (true, false, _) => "blocking (send / recv)",
        (false, true, false) => "busy-poll, zero-copy (try_reserve / try_recv_ref)",
        (true, true, false) => "blocking receive, zero-copy (try_reserve / recv_ref)",
        (false, true, true) => "busy-poll, zero-copy receive (try_send / try_recv_ref)",
        (true, true, true) => "blocking, zero-copy receive (send / recv_ref)",
    };
    println!(
        "pingpong: {}-byte messages over {channel}, {mode}, idle {} µs on each side before \
         it sends, {iters} timed round trips after {warmup} warm-up",
        o.size, o.idle_us
    );
    println!(
        "warm-up: {warmup} round trips in {:.3} s (slowest: #{} {})",
        warmup_time.as_secs_f64(),
        slowest_warmup.0,
        fmt_ns(slowest_warmup.1 as f64)
    );
    println!(
        "round trip{}: min {}, median {}, p99 {}, p99.9 {}, max {}",
        if idle.is_zero() {
            String::new()
        } else {
            format!(" (each holds both sides' {} µs pauses)", o.idle_us)
        },
        fmt_ns(rtt[0] as f64),
        fmt_ns(median),
        fmt_ns(percentile(&rtt, 99.0) as f64),
        fmt_ns(percentile(&rtt, 99.9) as f64),
        fmt_ns(*rtt.last().unwrap() as f64),
    );
    if idle.is_zero() {
        println!(
            "mean round trip {}, mean one-way {}; one-way (median / 2) {}",
            fmt_ns(mean),
            fmt_ns(mean / 2.0),
            fmt_ns(one_way)
        );
    } else {
        println!(
            "one-way = (round trip - 2 × {} µs idle) / 2: median {}, mean {}, min {}, p99 {}",
            o.idle_us,
            fmt_ns(one_way),
            fmt_ns((mean - idles) / 2.0),
            fmt_ns((rtt[0] as f64 - idles) / 2.0),
            fmt_ns((percentile(&rtt, 99.0) as f64 - idles) / 2.0),
        );
    }
    println!(
        "CPU use during the run: parent {:.0}% of {:.2} s, child {:.0}% of {:.2} s (10 ms resolution)",
        100.0 * cpu.as_secs_f64() / wall.as_secs_f64(),
        wall.as_secs_f64(),
        100.0 * child_cpu as f64 / child_wall.max(1) as f64,
        child_wall as f64 / 1e9,
    );
    if !idle.is_zero() {
        if o.blocking {
            println!(
                "note: each side idles {} µs before it sends, so the other side's receiver has \
                 gone to sleep when the message comes: the one-way figure is the wake-up + \
                 transfer cost of a receiver that was asleep (pauses include clock-read overshoot)",
                o.idle_us
            );
        } else {
            println!(
                "note: busy-polling receivers never sleep, so the one-way figure is the transfer \
                 cost after a pause, not a wake-up"
            );
        }
    }
    Ok(format!("one_way_ns={one_way:.1}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some(CHILD_ROLE) {
        return match child(&args[1..]) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pingpong (child {}): error: {e}", std::process::id());
                ExitCode::FAILURE
            }
        };
    }
    match parse_opts(&args).and_then(|o| parent(&o)) {
        Ok(last_line) => {
            println!("{last_line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pingpong: error: {e}");
            ExitCode::FAILURE
        }
    }
}
