//! `peer`: runs one peer scenario and prints its figure as the last stdout
//! line (`one_way_ns=`, `msgs_per_sec=`, `bytes_per_sec=` or
//! `tasks_per_sec=`).
//!
//! ```text
//! peer --system ipmpsc --scenario pingpong [--iters N] [--size B]
//!      [--block] [--idle-us N] [--producers P] [--batch N] [--workers W]
//!      [--warmup N] [--timeout-s S] [--dst-offset N]
//! ```

use std::process::ExitCode;
use std::time::Instant;

use mulproc_peers::common::{
    cleanup_registered, install_exit_guards, measure, print_result, Summary,
};
use mulproc_peers::peers::{self, Session};
use mulproc_peers::{Config, Result};

const USAGE: &str = "\
usage: peer --system SYSTEM [--scenario SCENARIO] [options]

systems:   iceoryx2 ipmpsc cloudtoid uds arrayqueue raw futex memcpy procspawn
scenarios: pingpong        ping-pong, busy-poll receive    -> one_way_ns (median RTT / 2)
           pingpong-block  ping-pong, blocking receive     -> one_way_ns
           stream          1 producer -> 1 consumer        -> msgs_per_sec
           stream-batch    stream, batch sends of 64       -> msgs_per_sec (cloudtoid)
           mpsc            4 producers -> 1 consumer       -> msgs_per_sec
           memcpy          (with --system memcpy)          -> bytes_per_sec
           pool            (with --system procspawn) tasks -> tasks_per_sec
options:
  --size B        message (pool: task payload) size in bytes (default 64;
                  memcpy 65536; min 8)
  --iters N       measured round trips / messages / copies / tasks, in one
                  batch (default: batches of ~0.1 s until 1 s has passed)
  --warmup N      unmeasured iterations first (default 5000 round trips,
                  20000 messages, 1000 copies, 1000 tasks; fewer with
                  --idle-us)
  --block         blocking receive (same as the -block scenario)
  --idle-us N     ping-pong: sender busy-waits N us before each send
  --producers P   stream: number of producer processes (threads: arrayqueue)
  --batch N       stream: messages per batch send (cloudtoid; default 1,
                  64 with stream-batch)
  --workers W     pool: worker processes (default 4); --size is the payload
  --dst-offset N  memcpy: destination N bytes past a page boundary (default 0)
  --timeout-s S   give up (and clean up) after S seconds (default 60)";

fn main() -> ExitCode {
    // First: a procspawn pool worker runs its calls here and exits.
    mulproc_peers::peers::procspawn::init();
    if let Some(code) = mulproc_peers::child::run_if_child() {
        return ExitCode::from(code as u8);
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let cfg = match Config::from_args(args) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("peer: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    install_exit_guards(Some(cfg.timeout)).expect("peer: cannot install the signal/timeout guard");
    match run(&cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("peer: {}: {e}", cfg.label());
            cleanup_registered();
            ExitCode::FAILURE
        }
    }
}

fn run(cfg: &Config) -> Result<()> {
    let warmup = cfg.warmup().max(1);
    let label = cfg.label();
    let session = peers::open(cfg)?;
    // The warm-up batch also sizes the measured batches. Each arm drops the
    // session (children exit, names are unlinked) before printing, so the
    // result line is the last on stdout.
    match session {
        Session::PingPong(mut s) => {
            s.run(warmup, None, Some(Instant::now() + Config::WARMUP_MAX))?;
            // One batch, ended by the deadline unless --iters is given.
            let (n, deadline) = match cfg.iters {
                Some(n) => (n.max(1), None),
                None => (u64::MAX, Some(Instant::now() + Config::TARGET_TIME)),
            };
            let mut rtts = Vec::new();
            s.run(n, Some(&mut rtts), deadline)?;
            drop(s);
            let sum = Summary::of(&mut rtts).ok_or("no samples")?;
            println!(
                "# {label}: {} round trips; RTT ns min {} p10 {} median {} p90 {} p99 {} mean {:.0}",
                sum.n, sum.min, sum.p10, sum.median, sum.p90, sum.p99, sum.mean
            );
            print_result("one_way_ns", sum.median as f64 / 2.0);
        }
        Session::Stream(mut s) => {
            let (spent, n) = s.run(warmup)?;
            let (dt, n) = measure(cfg, spent / n as u32, |n| s.run(n))?;
            drop(s);
            let rate = n as f64 / dt.as_secs_f64();
            println!(
                "# {label}: {n} messages in {:.3} s = {:.1} MB/s",
                dt.as_secs_f64(),
                rate * cfg.size as f64 / 1e6
            );
            print_result("msgs_per_sec", rate);
        }
        Session::Memcpy(mut m) => {
            let spent = m.run(warmup);
            let (dt, n) = measure(cfg, spent / warmup as u32, |n| Ok((m.run(n), n)))?;
            let bytes = n as f64 * m.size() as f64;
            println!(
                "# {label}: {n} copies of {} B in {:.3} s",
                m.size(),
                dt.as_secs_f64()
            );
            print_result("bytes_per_sec", bytes / dt.as_secs_f64());
        }
        Session::Pool(mut p) => {
            let (spent, n) = p.run(warmup)?;
            let (dt, n) = measure(cfg, spent / n as u32, |n| p.run(n))?;
            drop(p);
            println!("# {label}: {n} tasks checked in {:.3} s", dt.as_secs_f64());
            print_result("tasks_per_sec", n as f64 / dt.as_secs_f64());
        }
    }
    Ok(())
}
