//! Round-trip latency between two processes over two mulproc queues, or
//! over one mulproc pipe.
//!
//! The parent creates a `ping` queue (parent → child) and a `pong` queue
//! (child → parent), or with `--pipe` one pipe (it holds the parent end, the
//! child opens the child end), starts a second copy of this program as the
//! child (a new process, never `fork`), and bounces one message back and
//! forth. The child echoes every message unchanged, from where it received
//! it; the parent times each round trip with `Instant`.
//!
//! ```text
//! cargo run --release -p mulproc-bench-tools --bin pingpong                              # both sides busy-poll
//! cargo run --release -p mulproc-bench-tools --bin pingpong -- --pipe                    # ... over one pipe
//! cargo run --release -p mulproc-bench-tools --bin pingpong -- --blocking                # both sides wait in recv
//! cargo run --release -p mulproc-bench-tools --bin pingpong -- --blocking --idle-us 200  # ... and are asleep when a message comes
//! ```
//!
//! `--idle-us N`: both sides busy-wait N µs on the clock before they send
//! (the parent before each ping, the child before each echo), so that a
//! blocking receiver on either side has gone to sleep when the message
//! comes. The timed round trip then starts before the parent's pause and
//! so holds both pauses, and the one-way figure is `(median round trip −
//! 2 × idle) / 2`: with `--blocking`, the wake-up plus transfer cost of a
//! receiver that was asleep.
//!
//! `--zero-copy`: receive in place (`try_recv_ref`/`recv_ref`) and, on
//! queues, send by filling a reserved slot (`try_reserve` + `commit`). A
//! pipe has no reserve: with `--pipe` only the receive is in place.
//!
//! The last line of output is `one_way_ns=<(median round trip − 2 × idle) / 2>`
//! (with no idle, median round trip / 2).
//!
//! Cleanup: the creating handles remove the names when dropped (on errors
//! and panics too), and the parent removes them as soon as the child has
//! opened them, so nothing is left in `/dev/shm` even if a process is
//! killed during the run. The child dies with its parent.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use mulproc::process;
use mulproc::{Channel, Pipe, Queue, QueueConfig, Request};
use mulproc_bench_tools::{
    count, cpu_time, fmt_ns, median, percentile, recv, recv_setup, send, spawn, spin_for, Children,
    Mode, ParentWatch, Result, Take, Watch, Who, READY,
};

/// The child's role.
const ROLE: &str = "pingpong-echo";
/// Slots per queue or pipe direction (only one message is ever in flight).
const CAPACITY: u32 = 64;

/// Round-trip latency between two processes over two queues or one pipe.
#[derive(Parser, Debug, Clone)]
#[command(name = "pingpong")]
struct Opts {
    /// Payload size in bytes.
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = count)]
    size: u64,
    /// Timed round trips (default 100000, or 20000 with --blocking).
    #[arg(long, value_name = "N", value_parser = count)]
    iters: Option<u64>,
    /// Untimed round trips first (default: iters / 10).
    #[arg(long, value_name = "N", value_parser = count)]
    warmup: Option<u64>,
    /// Wait in recv (and send) instead of spinning on try_recv (and try_send).
    #[arg(long)]
    blocking: bool,
    /// Both sides busy-wait N µs on the clock before they send.
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = count)]
    idle_us: u64,
    /// Receive in place; on queues, also send by filling a reserved slot.
    #[arg(long)]
    zero_copy: bool,
    /// One pipe (parent end / child end) instead of the two queues.
    #[arg(long)]
    pipe: bool,
}

impl Opts {
    fn mode(&self) -> Mode {
        Mode::blocking(self.blocking)
    }

    fn take(&self) -> Take {
        if self.zero_copy {
            Take::InPlace
        } else {
            Take::Owned
        }
    }
}

/// The sending side of the channel: a queue can fill a reserved slot in
/// place (`--zero-copy`); everything else is the harness's send.
trait Tx: Channel + Sized {
    fn put(&self, o: &Opts, w: &mut impl Watch, request: Request, data: &[u8]) -> Result<()> {
        send(self, o.mode(), w, request, data)
    }
}

impl Tx for Pipe {}

impl Tx for Queue {
    fn put(&self, o: &Opts, w: &mut impl Watch, request: Request, data: &[u8]) -> Result<()> {
        if !o.zero_copy {
            return send(self, o.mode(), w, request, data);
        }
        // There is no blocking reserve: spin until a slot is free (in a
        // ping-pong one always is).
        let mut spins = 0u32;
        loop {
            match self.try_reserve() {
                Ok(mut slot) => {
                    slot.payload_mut()[..data.len()].copy_from_slice(data);
                    return Ok(slot.commit(request, None, data.len())?);
                }
                Err(e) if e.is_full() => mulproc_bench_tools::poll_pause(&mut spins, w)?,
                Err(e) => return Err(e.to_string().into()),
            }
        }
    }
}

fn child() -> Result<()> {
    let o = Opts::parse();
    if o.pipe {
        let p = process::open_pipe("pipe")?;
        echo(&o, &p, &p)
    } else {
        echo(
            &o,
            &process::open_queue("ping")?,
            &process::open_queue("pong")?,
        )
    }
}

/// The child: says READY, echoes every message from where it was received
/// until DIE, then reports its CPU time and wall time over the run.
fn echo<C: Tx>(o: &Opts, rx: &C, tx: &C) -> Result<()> {
    // One watch for the receive, one for the echo sent from inside it.
    let (mut w, mut echo_w) = (ParentWatch::new()?, ParentWatch::new()?);
    let idle = Duration::from_micros(o.idle_us);
    tx.put(o, &mut w, READY, &[])?;
    let (cpu0, t0) = (cpu_time(Who::This), Instant::now());
    let mut buf = Vec::new();
    loop {
        let request = recv(rx, o.mode(), o.take(), &mut w, &mut buf, |h, data| {
            if h.request != Request::DIE {
                if !idle.is_zero() {
                    spin_for(idle);
                }
                tx.put(o, &mut echo_w, h.request, data)?;
            }
            Ok::<_, Box<dyn std::error::Error>>(h.request)
        })??;
        if request == Request::DIE {
            break;
        }
    }
    let mut stats = [0u8; 16];
    stats[..8].copy_from_slice(&((cpu_time(Who::This) - cpu0).as_nanos() as u64).to_le_bytes());
    stats[8..].copy_from_slice(&(t0.elapsed().as_nanos() as u64).to_le_bytes());
    tx.put(o, &mut w, Request::FINISHED, &stats)
}

fn parent(o: &Opts) -> Result<String> {
    if o.iters == Some(0) {
        return Err("--iters must be at least 1".into());
    }
    // Room for the child's 16-byte report at the end.
    let cfg = QueueConfig::new(CAPACITY, o.size.max(16).try_into()?);
    // The creating handles remove the names when dropped, on every path.
    if o.pipe {
        let p = Pipe::create_unique(cfg)?;
        let child = spawn(ROLE, &[("pipe", p.name())], &[])?;
        measure(o, &p, &p, child, || Pipe::remove(p.name()))
    } else {
        let (ping, pong) = (Queue::create_unique(cfg)?, Queue::create_unique(cfg)?);
        let child = spawn(ROLE, &[("ping", ping.name()), ("pong", pong.name())], &[])?;
        measure(o, &ping, &pong, child, || {
            Queue::remove(ping.name())?;
            Queue::remove(pong.name())
        })
    }
}

/// The parent's side: waits for READY, removes the names (`unname`), runs
/// the warm-up and the timed round trips, stops the child and prints the
/// figures.
fn measure<C: Tx>(
    o: &Opts,
    tx: &C,
    rx: &C,
    child: mulproc::process::ChildProcess,
    unname: impl FnOnce() -> std::result::Result<(), mulproc::SetupError>,
) -> Result<String> {
    let iters = o.iters.unwrap_or(if o.blocking { 20_000 } else { 100_000 });
    let warmup = o.warmup.unwrap_or(iters / 10);
    let idle = Duration::from_micros(o.idle_us);
    let mut peer = Children::new();
    peer.push(child);

    let m = recv_setup(rx, &mut peer, "READY from the child")?;
    if m.request != READY {
        return Err(format!("expected READY, got {m:?}").into());
    }
    // Both processes have the channel mapped; the names are no longer
    // needed, and removing them now means nothing is left behind even if
    // this process is killed.
    unname()?;

    let size = o.size as usize;
    let mut buf = vec![0u8; size];
    let mut scratch = Vec::new();
    let seq_len = size.min(8);
    let mut rtt = Vec::with_capacity(iters as usize);
    let (mut cpu0, mut t0) = (cpu_time(Who::This), Instant::now());
    let mut warmup_time = Duration::ZERO;
    let mut slowest_warmup = (0, 0);
    for i in 0..warmup + iters {
        if i == warmup {
            warmup_time = t0.elapsed();
            (cpu0, t0) = (cpu_time(Who::This), Instant::now());
        }
        buf[..seq_len].copy_from_slice(&i.to_le_bytes()[..seq_len]);
        // With an idle time the round trip is timed from before our pause,
        // so it holds both sides' pauses (ours, then the child's before its
        // echo); the one-way figure takes both out.
        let start = Instant::now();
        if !idle.is_zero() {
            spin_for(idle);
        }
        tx.put(o, &mut peer, Request::DO, &buf)?;
        let ok = recv(
            rx,
            o.mode(),
            o.take(),
            &mut peer,
            &mut scratch,
            |h, data| {
                h.request == Request::DO
                    && data.len() == buf.len()
                    && data[..seq_len] == buf[..seq_len]
            },
        )?;
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
    let (cpu, wall) = (cpu_time(Who::This) - cpu0, t0.elapsed());

    tx.put(o, &mut peer, Request::DIE, &[])?;
    let (child_cpu, child_wall) = recv(
        rx,
        o.mode(),
        Take::InPlace,
        &mut peer,
        &mut scratch,
        |h, data| {
            if h.request != Request::FINISHED || data.len() != 16 {
                return Err("expected the child's FINISHED report");
            }
            let word = |i: usize| u64::from_le_bytes(data[i..i + 8].try_into().expect("8 bytes"));
            Ok((word(0), word(8)))
        },
    )??;
    peer.wait_all(Duration::from_secs(5))?;

    rtt.sort_unstable();
    let median = median(&rtt);
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
        "pingpong: {size}-byte messages over {channel}, {mode}, idle {} µs on each side before \
         it sends, {iters} timed round trips after {warmup} warm-up",
        o.idle_us
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
        fmt_ns(rtt[rtt.len() - 1] as f64),
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
        "CPU use during the run: parent {:.0}% of {:.2} s, child {:.0}% of {:.2} s",
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
    mulproc_bench_tools::main("pingpong", &[(ROLE, child)], || parent(&Opts::parse()))
}
