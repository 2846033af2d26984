//! CPU used by a receiver blocked on an idle queue.
//!
//! The parent creates a queue, starts a child of this program (a new
//! process, never `fork`) that blocks in `recv` on it, waits `--secs`
//! seconds without sending anything, and reads the child's CPU time from
//! /proc (`schedstat`, in nanoseconds; `stat` ticks where that is missing)
//! over that window. Then it sends the child `DIE` and waits for it.
//!
//! ```text
//! cargo run --release -p mulproc-bench-tools --bin idle_recv              # 10 s
//! cargo run --release -p mulproc-bench-tools --bin idle_recv -- --secs 3
//! ```
//!
//! The last line of output is `cpu_percent=<child CPU time / wall time ×
//! 100>`; the line before also gives the child's voluntary context switches
//! per second (how often it woke up).
//!
//! Cleanup: the creating handles remove the names when dropped, and the
//! parent removes them as soon as the child has opened them; dropping the
//! child handle kills it, and the child dies with the parent.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use mulproc::process;
use mulproc::{Message, Queue, QueueConfig, Request};
use mulproc_bench_tools::{proc_cpu_ns, spawn, Result, READY};

const ROLE: &str = "idle-receiver";

/// CPU used by a receiver blocked on an idle queue.
#[derive(Parser, Debug)]
#[command(name = "idle_recv")]
struct Args {
    /// How long the receiver is watched, in seconds.
    #[arg(long, default_value_t = 10.0)]
    secs: f64,
}

fn child() -> Result<()> {
    let idle = process::open_queue("idle")?;
    let ready = process::open_queue("ready")?;
    ready.send(Message::signal(READY))?;
    loop {
        if idle.recv()?.request == Request::DIE {
            return Ok(());
        }
    }
}

/// Voluntary context switches of process `pid`.
fn voluntary_switches(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

fn parent(a: &Args) -> Result<String> {
    if !(a.secs > 0.0 && a.secs.is_finite()) {
        return Err(format!(
            "--secs must be a positive number of seconds, got {}",
            a.secs
        )
        .into());
    }
    let idle = Queue::create_unique(QueueConfig::new(8, 64))?;
    let ready = Queue::create_unique(QueueConfig::new(8, 64))?;
    let mut child = spawn(ROLE, &[("idle", idle.name()), ("ready", ready.name())], &[])?;
    let m = ready.recv_timeout(Duration::from_secs(10))?;
    if m.request != READY {
        return Err(format!("expected READY, got {m:?}").into());
    }
    Queue::remove(idle.name())?;
    Queue::remove(ready.name())?;
    // Past its spin and yield phases (tens of µs): asleep in the kernel.
    std::thread::sleep(Duration::from_millis(100));

    let pid = child.pid();
    let (cpu0, sw0, t0) = (proc_cpu_ns(pid)?, voluntary_switches(pid), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(a.secs));
    let (cpu1, sw1, wall) = (proc_cpu_ns(pid)?, voluntary_switches(pid), t0.elapsed());

    idle.send(Message::signal(Request::DIE))?;
    match child.wait_timeout(Duration::from_secs(5))? {
        Some(s) if s.success() => {}
        Some(s) => return Err(format!("the receiver failed ({s})").into()),
        None => return Err("the receiver did not exit after DIE".into()),
    }
    let cpu = cpu1.saturating_sub(cpu0) as f64 / 1e9;
    let percent = 100.0 * cpu / wall.as_secs_f64();
    println!(
        "idle_recv: receiver blocked in recv for {:.2} s used {:.3} ms of CPU \
         ({percent:.4} % of a core), {:.1} wake-ups/s",
        wall.as_secs_f64(),
        cpu * 1e3,
        sw1.saturating_sub(sw0) as f64 / wall.as_secs_f64()
    );
    Ok(format!("cpu_percent={percent:.4}"))
}

fn main() -> ExitCode {
    mulproc_bench_tools::main("idle_recv", &[(ROLE, child)], || parent(&Args::parse()))
}
