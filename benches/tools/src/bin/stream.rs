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
//! cargo run --release -p mulproc-bench-tools --bin stream                       # 64-byte messages, copying send / try_recv
//! cargo run --release -p mulproc-bench-tools --bin stream -- --zero-copy        # try_reserve + commit / try_recv_ref
//! cargo run --release -p mulproc-bench-tools --bin stream -- --size 65536
//! cargo run --release -p mulproc-bench-tools --bin stream -- --producers 4 --blocking   # 4 → 1, all blocking
//! cargo run --release -p mulproc-bench-tools --bin stream -- --pipe             # 1 → 1 over a pipe
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
//! killed during the run. The producers die with their parent, and the
//! parent kills them if it fails.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use mulproc::process;
use mulproc::{Channel, Header, Message, Pipe, Queue, QueueConfig, Request, TryRecvError};
use mulproc_bench_tools::{
    count, recv, recv_setup, send, spawn, Children, Mode, ParentWatch, Result, Take, Watch, GO,
    READY,
};

/// The producers' role.
const ROLE: &str = "stream-producer";
/// The environment variable that gives a producer its share of the messages.
const SHARE_VAR: &str = "MULPROC_STREAM_SHARE";
/// Payload bytes of the default ring (see `--capacity`).
const DEFAULT_RING_BYTES: usize = 4 << 20;

/// Throughput: producer processes stream messages to one consumer process
/// through one queue (or, one to one, through a pipe).
#[derive(Parser, Debug, Clone)]
#[command(name = "stream")]
struct Opts {
    /// How many messages in all (default 2,000,000 up to 1 KiB, fewer for
    /// larger messages, about a second's worth).
    #[arg(long, value_name = "N", value_parser = count)]
    messages: Option<u64>,
    /// Payload size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = count)]
    size: u64,
    /// Queue slots (per direction for a pipe), a power of two (default:
    /// 1024, fewer for messages over 4 KiB, so the payload area stays about
    /// 4 MiB).
    #[arg(long, value_name = "C", value_parser = count)]
    capacity: Option<u64>,
    /// Producer processes sharing the messages into the one queue.
    #[arg(long, value_name = "P", default_value_t = 1, value_parser = count)]
    producers: u64,
    /// One pipe instead of the queue (one producer only).
    #[arg(long)]
    pipe: bool,
    /// Producers fill reserved slots in place (try_reserve + commit), the
    /// consumer reads in place (try_recv_ref / recv_ref).
    #[arg(long)]
    zero_copy: bool,
    /// The consumer waits in recv and copying producers in send, instead of
    /// spinning on try_recv / try_send.
    #[arg(long)]
    blocking: bool,
    /// Producers write every payload byte and the consumer checks every
    /// byte (otherwise only the 16 bytes of sequence number).
    #[arg(long)]
    touch: bool,
    /// The natural batch loop: producers hand over N messages per
    /// `try_send_batch` call (retrying the unsent rest when it says Full),
    /// the consumer takes up to N per `try_recv_batch`, both spinning.
    #[arg(long, value_name = "N", value_parser = count)]
    batch: Option<u64>,
}

impl Opts {
    fn mode(&self) -> Mode {
        Mode::blocking(self.blocking)
    }

    fn size(&self) -> usize {
        self.size as usize
    }

    /// About a second's worth on a 2-core machine.
    fn messages(&self) -> u64 {
        self.messages
            .unwrap_or_else(|| (2_000_000 * 1024 / self.size.max(1)).clamp(50_000, 2_000_000))
    }

    /// Slots: as given, or a ring of about `DEFAULT_RING_BYTES` of
    /// payload (1024 slots at most, 4 at least).
    fn capacity(&self) -> Result<u32> {
        if let Some(c) = self.capacity {
            return Ok(c.try_into()?);
        }
        let stride = self.size().max(1).next_multiple_of(64);
        let slots = (DEFAULT_RING_BYTES / stride).clamp(4, 1024) as u32;
        Ok(1 << slots.ilog2())
    }

    /// What producer `i` sends: N / P, the first N mod P one more.
    fn share(&self, i: u64) -> u64 {
        let (n, p) = (self.messages(), self.producers);
        n / p + u64::from(i < n % p)
    }

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
        if self.batch.is_some() && (self.zero_copy || self.blocking) {
            return Err(
                "--batch is its own loop (try_send_batch / try_recv_batch, spinning): \
                        drop --zero-copy and --blocking"
                    .into(),
            );
        }
        if self.batch == Some(0) {
            return Err("--batch must be at least 1".into());
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

/// The producer's send of message `seq`: a queue can fill a reserved slot
/// in place (`--zero-copy`); otherwise the payload is made in `buf` and
/// copied in with the harness's send (a pipe has no reserve).
trait Tx: Channel + Sized {
    fn put_seq(&self, o: &Opts, w: &mut impl Watch, seq: u64, buf: &mut [u8]) -> Result<()> {
        fill(buf, seq, o.touch);
        send(self, o.mode(), w, Request::DO, buf)
    }
}

impl Tx for Pipe {}

impl Tx for Queue {
    #[inline]
    fn put_seq(&self, o: &Opts, w: &mut impl Watch, seq: u64, buf: &mut [u8]) -> Result<()> {
        if !o.zero_copy {
            fill(buf, seq, o.touch);
            return send(self, o.mode(), w, Request::DO, buf);
        }
        // There is no blocking reserve: spin while the queue is full.
        let mut spins = 0u32;
        let mut slot = loop {
            match self.try_reserve() {
                Ok(slot) => break slot,
                Err(e) if e.is_full() => mulproc_bench_tools::poll_pause(&mut spins, w)?,
                Err(e) => return Err(e.to_string().into()),
            }
        };
        fill(&mut slot.payload_mut()[..buf.len()], seq, o.touch);
        Ok(slot.commit(Request::DO, None, buf.len())?)
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

fn producer() -> Result<()> {
    let o = Opts::parse();
    let n: u64 = std::env::var(SHARE_VAR)?.parse()?;
    if o.pipe {
        let p = process::open_pipe("data")?;
        produce(&o, n, &p, &p)
    } else {
        // Open the go queue before saying READY: once every producer is
        // ready the consumer removes its name.
        let (data, go) = (process::open_queue("data")?, process::open_queue("go")?);
        produce(&o, n, &data, &go)
    }
}

/// A producer: READY, wait for the go (which comes once every producer is
/// ready), send `n` messages, then report how many in how many ns.
fn produce<C: Tx>(o: &Opts, n: u64, tx: &C, go_from: &C) -> Result<()> {
    let mut w = ParentWatch::new()?;
    send(tx, o.mode(), &mut w, READY, &[])?;
    let go = recv_setup(go_from, &mut w, "go from the consumer")?;
    if go.request != GO {
        return Err(format!("expected GO, got {go:?}").into());
    }
    let start = Instant::now();
    if let Some(b) = o.batch {
        send_batches(o, tx, &mut w, n, b as usize)?;
    } else {
        let mut buf = vec![0u8; o.size()];
        for seq in 0..n {
            tx.put_seq(o, &mut w, seq, &mut buf)?;
        }
    }
    let elapsed = start.elapsed();
    let mut report = [0u8; 16];
    report[..8].copy_from_slice(&n.to_le_bytes());
    report[8..].copy_from_slice(&(elapsed.as_nanos() as u64).to_le_bytes());
    send(tx, o.mode(), &mut w, Request::FINISHED, &report)
}

/// The producer's natural batch loop: `b` messages filled, handed to
/// `try_send_batch` until all went (the rest retried on `Full`).
fn send_batches<C: Channel>(o: &Opts, tx: &C, w: &mut impl Watch, n: u64, b: usize) -> Result<()> {
    let mut bufs = vec![vec![0u8; o.size()]; b];
    let mut seq = 0u64;
    let mut spins = 0u32;
    while seq < n {
        let k = b.min((n - seq) as usize);
        for (i, buf) in bufs[..k].iter_mut().enumerate() {
            fill(buf, seq + i as u64, o.touch);
        }
        let msgs: Vec<Message<&[u8]>> = bufs[..k]
            .iter()
            .map(|d| Message::new(Request::DO, d.as_slice()))
            .collect();
        let mut sent = 0;
        while sent < k {
            match tx.try_send_batch(&msgs[sent..]) {
                Ok(m) => sent += m,
                Err(e) if e.is_full() => mulproc_bench_tools::poll_pause(&mut spins, w)?,
                Err(e) => return Err(e.to_string().into()),
            }
        }
        seq += k as u64;
    }
    Ok(())
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

/// What was wrong with a message, for the error.
fn describe(got: Got, shares: &[u64]) -> String {
    match got {
        Got::UnknownSender(pid) => format!("a message from an unknown sender, pid {pid}"),
        Got::TooMany(i) => format!("producer {i} sent more than its {}", shares[i]),
        Got::Wrong(i, seq) => format!("message {seq} of producer {i} is not the one sent"),
        Got::Unexpected(i, r) => format!("producer {i}: unexpected {r:?}"),
        Got::Data | Got::Report => "no error".to_owned(),
    }
}

fn parent(o: &Opts) -> Result<String> {
    o.validate()?;
    let np = o.producers as usize;
    // Room for the producers' 16-byte reports at the end.
    let cfg = QueueConfig::new(o.capacity()?, o.size.max(16).try_into()?);
    let mut peer = Children::new();
    let start_producers = |peer: &mut Children, channels: &[(&str, &str)]| -> Result<()> {
        for i in 0..o.producers {
            peer.push(spawn(
                ROLE,
                channels,
                &[(SHARE_VAR, o.share(i).to_string())],
            )?);
        }
        Ok(())
    };
    // The creating handles remove the names when dropped, on every path;
    // `peer`, declared after them, is dropped (producers killed) first.
    if o.pipe {
        let p = Pipe::create_unique(cfg)?;
        start_producers(&mut peer, &[("data", p.name())])?;
        let channel = format!("one pipe, capacity {} per direction", o.capacity()?);
        consume(o, &p, &mut peer, &channel, || {
            Pipe::remove(p.name())?;
            p.try_send(Message::signal(GO)).map_err(|e| e.to_string())?;
            Ok(())
        })
    } else {
        let data = Queue::create_unique(cfg)?;
        let go_cap = (np as u32).next_power_of_two().max(2);
        let go = Queue::create_unique(QueueConfig::new(go_cap, 16))?;
        start_producers(&mut peer, &[("data", data.name()), ("go", go.name())])?;
        let channel = format!(
            "one queue, capacity {} ({:.1} MiB segment)",
            o.capacity()?,
            cfg.segment_size()? as f64 / (1024.0 * 1024.0)
        );
        consume(o, &data, &mut peer, &channel, || {
            Queue::remove(data.name())?;
            Queue::remove(go.name())?;
            for _ in 0..np {
                go.try_send(Message::signal(GO))
                    .map_err(|e| e.to_string())?;
            }
            Ok(())
        })
    }
}

/// The consumer: every producer's READY, then `go` (which removes the
/// names and starts the producers), then every message received and
/// checked, and the figures.
fn consume<C: Channel>(
    o: &Opts,
    rx: &C,
    peer: &mut Children,
    channel: &str,
    go: impl FnOnce() -> Result<()>,
) -> Result<String> {
    let n = o.messages();
    let np = o.producers as usize;
    let size = o.size();
    let take = if o.zero_copy {
        Take::InPlace
    } else {
        Take::Into
    };
    let pids = peer.pids();
    // Every producer reports ready (nothing else comes before the go).
    let mut ready = vec![false; np];
    for _ in 0..np {
        let m = recv_setup(rx, peer, "READY from every producer")?;
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
    go()?;

    // Per producer: next sequence number, and its report.
    let shares: Vec<u64> = (0..o.producers).map(|i| o.share(i)).collect();
    let mut next = vec![0u64; np];
    let mut reports: Vec<Option<(u64, u64)>> = vec![None; np];
    let (mut received, mut reported) = (0u64, 0usize);
    let (mut first, mut last) = (None, None);
    let mut buf = Vec::with_capacity(size.max(64));
    let mut classify = |h: &Header, data: &[u8]| {
        let Some(i) = pids.iter().position(|&p| p == h.sender) else {
            return Got::UnknownSender(h.sender);
        };
        if h.request == Request::DO {
            let seq = next[i];
            if seq >= shares[i] || reports[i].is_some() {
                return Got::TooMany(i);
            }
            if !check(data, seq, size, o.touch) {
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
    };
    let mut batch_spins = 0u32;
    while received < n || reported < np {
        if let Some(b) = o.batch {
            // The natural batch receive: whatever is waiting, up to b, in
            // place; the first thing wrong in the batch is reported.
            let mut tally = (0u64, 0usize, None);
            let k = rx.try_recv_batch(b as usize, |h, data| match classify(h, data) {
                Got::Data => tally.0 += 1,
                Got::Report => tally.1 += 1,
                bad => {
                    tally.2.get_or_insert(bad);
                }
            })?;
            if let Some(bad) = tally.2 {
                return Err(describe(bad, &shares).into());
            }
            if received == 0 && tally.0 > 0 {
                first = Some(Instant::now());
            }
            received += tally.0;
            reported += tally.1;
            if received == n && last.is_none() {
                last = Some(Instant::now());
            }
            if k == 0 {
                mulproc_bench_tools::poll_pause(&mut batch_spins, peer)?;
            }
            continue;
        }
        let got = recv(rx, o.mode(), take, peer, &mut buf, &mut classify)?;
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
            bad => return Err(describe(bad, &shares).into()),
        }
    }
    let elapsed = match (first, last) {
        (Some(f), Some(l)) => l - f,
        _ => Duration::ZERO,
    };
    peer.wait_all(Duration::from_secs(5))?;
    // Nothing may follow the reports (a pipe whose producer has exited
    // says so with `Disconnected`).
    match rx.try_recv() {
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
    mulproc_bench_tools::main("stream", &[(ROLE, producer)], || parent(&Opts::parse()))
}
