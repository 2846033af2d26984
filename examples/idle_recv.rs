//! CPU used by a receiver blocked on an idle queue.
//!
//! The parent creates a queue, starts a child of this program (a new
//! process, never `fork`) that blocks in `recv` on it, waits `--secs`
//! seconds without sending anything, and reads the child's CPU time from
//! /proc (`schedstat`, in nanoseconds; `stat` ticks where that is missing)
//! over that window. Then it sends the child `DIE` and waits for it.
//!
//! ```text
//! cargo run --release --example idle_recv              # 10 s
//! cargo run --release --example idle_recv -- --secs 3
//! ```
//!
//! The last line of output is `cpu_percent=<child CPU time / wall time ×
//! 100>`; the line before also gives the child's voluntary context switches
//! per second (how often it woke up).
//!
//! Cleanup: the creating handles remove the names when dropped, and the
//! parent removes them as soon as the child has opened them; dropping the
//! child handle kills it, and the child dies with the parent
//! (`PR_SET_PDEATHSIG`).

use std::error::Error;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mulproc::process::{self, Child};
use mulproc::{Message, Queue, QueueConfig, Request};

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

const ROLE: &str = "idle-receiver";
const READY: Request = Request::new(Request::FIRST_USER_CODE);

fn child() -> Result<()> {
    // Die with the parent, even if it is killed.
    // SAFETY: prctl(PR_SET_PDEATHSIG) takes a signal number and touches no
    // memory of ours.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    }
    if process::parent_pid() != Some(std::os::unix::process::parent_id()) {
        return Err("the parent is gone".into());
    }
    let idle = process::open_queue("idle")?;
    let ready = process::open_queue("ready")?;
    ready.send(Message::signal(READY))?;
    loop {
        if idle.recv()?.request == Request::DIE {
            return Ok(());
        }
    }
}

/// Nanoseconds process `pid` has spent on a CPU.
fn cpu_ns(pid: u32) -> Result<u64> {
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/schedstat")) {
        if let Some(ns) = s.split_whitespace().next().and_then(|f| f.parse().ok()) {
            return Ok(ns);
        }
    }
    // utime and stime: fields 14 and 15, the 12th and 13th after the
    // command name, in clock ticks.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ticks * 1_000_000_000 / hz)
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

fn parent(secs: f64) -> Result<String> {
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let tag = format!("{}-{nanos}", std::process::id());
    let (idle_name, ready_name) = (format!("idle-{tag}"), format!("idle-{tag}-ready"));
    let idle = Queue::create(&idle_name, QueueConfig::new(8, 64))?;
    let ready = Queue::create(&ready_name, QueueConfig::new(8, 64))?;
    let mut child = Child::role(ROLE)
        .inherit_args(false)
        .queue("idle", &idle)
        .queue("ready", &ready)
        .spawn()?;
    let m = ready.recv_timeout(Duration::from_secs(10))?;
    if m.request != READY {
        return Err(format!("expected READY, got {m:?}").into());
    }
    Queue::remove(&idle_name)?;
    Queue::remove(&ready_name)?;
    // Past its spin and yield phases (tens of µs): asleep in the kernel.
    std::thread::sleep(Duration::from_millis(100));

    let pid = child.pid();
    let (cpu0, sw0, t0) = (cpu_ns(pid)?, voluntary_switches(pid), Instant::now());
    std::thread::sleep(Duration::from_secs_f64(secs));
    let (cpu1, sw1, wall) = (cpu_ns(pid)?, voluntary_switches(pid), t0.elapsed());

    idle.send(Message::signal(Request::DIE))?;
    match child.wait_timeout(Duration::from_secs(5))? {
        Some(s) if s.success() => {}
        Some(s) => return Err(format!("the receiver failed ({s})").into()),
        None => return Err("the receiver did not exit after DIE".into()),
    }
    let cpu = (cpu1 - cpu0) as f64 / 1e9;
    let percent = 100.0 * cpu / wall.as_secs_f64();
    println!(
        "idle_recv: receiver blocked in recv for {:.2} s used {:.3} ms of CPU ({percent:.4} % of a core), \
         {:.1} wake-ups/s",
        wall.as_secs_f64(),
        cpu * 1e3,
        (sw1 - sw0) as f64 / wall.as_secs_f64()
    );
    Ok(format!("cpu_percent={percent:.4}"))
}

fn parse_secs(args: &[String]) -> Result<f64> {
    match args {
        [] => Ok(10.0),
        [flag, v] if flag == "--secs" => Ok(v.parse()?),
        [a] if a.starts_with("--secs=") => Ok(a["--secs=".len()..].parse()?),
        _ => Err("usage: idle_recv [--secs S]".into()),
    }
}

fn main() -> ExitCode {
    if process::role().as_deref() == Some(ROLE) {
        return match child() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("idle_recv (receiver {}): error: {e}", std::process::id());
                ExitCode::FAILURE
            }
        };
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_secs(&args).and_then(parent) {
        Ok(line) => {
            println!("{line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("idle_recv: error: {e}");
            ExitCode::FAILURE
        }
    }
}
