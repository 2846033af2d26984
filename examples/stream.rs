//! Throughput: one producer process streams messages to one consumer
//! process through one mulproc queue.
//!
//! The parent is the consumer: it creates the queue and starts a second
//! copy of this program (a new process, never `fork`) as the producer.
//! Every message carries its sequence number in its first and last 8 bytes;
//! the consumer checks each one, in order, and the count.
//!
//! ```text
//! cargo run --release --example stream                       # 64-byte messages, copying send / try_recv
//! cargo run --release --example stream -- --zero-copy        # try_reserve + commit / try_recv_ref
//! cargo run --release --example stream -- --size 65536
//! ```
//!
//! Flags:
//!
//! * `--messages N`: how many (default 2,000,000 up to 1 KiB, fewer for
//!   larger messages, about a second's worth).
//! * `--size BYTES`: payload size (default 64).
//! * `--capacity C`: queue slots, a power of two (default 1024).
//! * `--zero-copy`: the producer fills reserved slots in place
//!   (`try_reserve` + `commit`) and the consumer reads in place
//!   (`try_recv_ref` / `recv_ref`), instead of copying `send` / `recv`.
//! * `--blocking`: the consumer waits in `recv` (asleep when the queue is
//!   empty) and the copying producer in `send` (asleep when it is full),
//!   instead of spinning on `try_recv` / `try_send`. (There is no blocking
//!   reserve, so a zero-copy producer always spins.)
//! * `--touch`: the producer writes every payload byte and the consumer
//!   checks every byte, as an application that makes and reads its data
//!   would. Without it each side touches only the 16 bytes of sequence
//!   number, so `--zero-copy` moves no payload at all.
//!
//! What is measured: in the consumer, from receiving message 1 to receiving
//! message N; the rate is `(N - 1) / that time`, messages delivered (received
//! and checked) per second. The producer's own rate, from its first send to
//! its last, is printed too. The last line of output is
//! `msgs_per_sec=<rate>`.
//!
//! Cleanup: the creating handle removes the queue name when dropped (on
//! errors and panics too), and the parent removes it as soon as the producer
//! has opened it, so nothing is left in `/dev/shm` even if a process is
//! killed during the run. The producer exits when its parent dies.

use std::error::Error;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mulproc::{Message, Queue, QueueConfig, RecvTimeoutError, Request, TryRecvError};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// First argument that makes this program the producer.
const CHILD_ROLE: &str = "--stream-producer";
/// Producer → consumer, before the data: the queue is open.
const READY: Request = Request::new(Request::FIRST_USER_CODE);
/// How long a blocking call waits before checking that the other process
/// is still alive.
const LIVENESS_TIMEOUT: Duration = Duration::from_millis(100);
/// Empty polls between liveness checks in a spin loop.
const SPINS_PER_CHECK: u32 = 1 << 16;

const USAGE: &str = "usage: stream [--messages N] [--size BYTES] [--capacity C] [--zero-copy] \
                     [--blocking] [--touch]";

#[derive(Clone, Debug)]
struct Opts {
    messages: Option<u64>,
    size: usize,
    capacity: u32,
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
}

fn parse_opts(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        messages: None,
        size: 64,
        capacity: 1024,
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
            "--capacity" => o.capacity = number()?.try_into()?,
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
    if o.messages() < 2 {
        return Err("--messages must be at least 2".into());
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
                Some(status) => Err(format!("the producer exited early ({status})").into()),
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
                Some(s) => return Err(format!("the producer failed ({s})").into()),
                None if Instant::now() >= deadline => {
                    return Err("the producer did not exit".into())
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

/// Copying send: `send` (sleeps while full) with `--blocking`, else spins
/// on `try_send`.
fn send(q: &Queue, o: &Opts, peer: &mut Peer, request: Request, data: &[u8]) -> Result<()> {
    let mut spins = 0u32;
    let mut msg = Message::new(request, data);
    loop {
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

/// Receives one message the way the options say and hands its request and
/// payload to `f`. In zero-copy mode the slot is freed after `f` returns.
fn recv_with<R>(
    q: &Queue,
    o: &Opts,
    peer: &mut Peer,
    f: impl FnOnce(Request, &[u8]) -> R,
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
                return Ok(f(g.header().request, g.data()));
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
                return Ok(f(m.request, &m.data));
            }
        }
        if o.blocking {
            peer.check()?;
        } else {
            poll_pause(&mut spins, peer)?;
        }
    }
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
    let s = seq.to_le_bytes();
    if data[..head] != s[..head] || data[tail..] != s[..size - tail] {
        return false;
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
    let [name, ppid, flags @ ..] = args else {
        return Err("producer: missing arguments".into());
    };
    let o = parse_opts(flags)?;
    let n = o.messages();
    let mut peer = Peer::Parent(ppid.parse()?);
    peer.check()?;
    let q = Queue::open(name)?;
    send(&q, &o, &mut peer, READY, &[])?;

    let start = Instant::now();
    if o.zero_copy {
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
    } else {
        let mut buf = vec![0u8; o.size];
        for seq in 0..n {
            fill(&mut buf, seq, o.touch);
            send(&q, &o, &mut peer, Request::DO, &buf)?;
        }
    }
    let elapsed = start.elapsed();

    // Report: how many sent, in how many ns.
    let mut report = [0u8; 16];
    report[..8].copy_from_slice(&n.to_le_bytes());
    report[8..].copy_from_slice(&(elapsed.as_nanos() as u64).to_le_bytes());
    send(&q, &o, &mut peer, Request::FINISHED, &report)
}

fn consumer(o: &Opts) -> Result<String> {
    let n = o.messages();
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let name = format!("stream-{}-{nanos}", std::process::id());
    // Room for the producer's 16-byte report at the end.
    let cfg = QueueConfig::new(o.capacity, o.size.max(16).try_into()?);
    // The creating handle removes the name when dropped, on every path.
    let q = Queue::create(&name, cfg)?;

    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg(CHILD_ROLE)
        .arg(&name)
        .arg(std::process::id().to_string())
        .args(["--messages", &n.to_string(), "--size", &o.size.to_string()])
        .stdin(Stdio::null());
    for (set, flag) in [
        (o.zero_copy, "--zero-copy"),
        (o.blocking, "--blocking"),
        (o.touch, "--touch"),
    ] {
        if set {
            cmd.arg(flag);
        }
    }
    // Declared after the queue, so dropped (child killed) before it.
    let mut peer = Peer::Child(cmd.spawn()?);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match q.recv_timeout(LIVENESS_TIMEOUT) {
            Ok(m) if m.request == READY => break,
            Ok(m) => return Err(format!("expected READY, got {m:?}").into()),
            Err(RecvTimeoutError::Timeout) => {
                peer.check()?;
                if Instant::now() >= deadline {
                    return Err("the producer did not open the queue within 10 s".into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Both processes have the queue mapped; removing the name now means
    // nothing is left behind even if this process is killed.
    Queue::remove(&name)?;

    let mut first = None;
    for seq in 0..n {
        let ok = recv_with(&q, o, &mut peer, |request, data| {
            request == Request::DO && check(data, seq, o.size, o.touch)
        })?;
        if seq == 0 {
            first = Some(Instant::now());
        }
        if !ok {
            return Err(format!("message {seq} is not the one sent").into());
        }
    }
    let elapsed = first.map_or(Duration::ZERO, |t| t.elapsed());

    let (sent, producer_ns) = recv_with(&q, o, &mut peer, |request, data| {
        if request != Request::FINISHED || data.len() != 16 {
            return Err("expected the producer's FINISHED report");
        }
        let word = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().unwrap());
        Ok((word(0), word(8)))
    })??;
    peer.wait_child(Duration::from_secs(5))?;
    match q.try_recv() {
        Err(TryRecvError::Empty) => {}
        Ok(m) => return Err(format!("a message after the producer's report: {m:?}").into()),
        Err(e) => return Err(e.into()),
    }
    if sent != n {
        return Err(format!("the producer sent {sent} messages, {n} were received").into());
    }

    let rate = (n - 1) as f64 / elapsed.as_secs_f64();
    let producer_rate = n as f64 / (producer_ns as f64 / 1e9);
    let mode = match (o.zero_copy, o.blocking) {
        (false, false) => "copying, spinning (try_send / try_recv)",
        (false, true) => "copying, blocking (send / recv)",
        (true, false) => "zero-copy, spinning (try_reserve + commit / try_recv_ref)",
        (true, true) => "zero-copy, blocking receive (try_reserve + commit / recv_ref)",
    };
    println!(
        "stream: {n} messages of {} bytes, {mode}{}, capacity {} ({:.1} MiB segment)",
        o.size,
        if o.touch {
            ", every byte written and checked"
        } else {
            ""
        },
        o.capacity,
        cfg.segment_size()? as f64 / (1024.0 * 1024.0)
    );
    println!(
        "consumer: received and checked {n} in {:.3} s: {:.3} M msg/s, {:.0} MiB/s of payload",
        elapsed.as_secs_f64(),
        rate / 1e6,
        rate * o.size as f64 / (1024.0 * 1024.0)
    );
    println!(
        "producer: sent {sent} in {:.3} s: {:.3} M msg/s",
        producer_ns as f64 / 1e9,
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
