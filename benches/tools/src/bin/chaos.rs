//! Chaos: producers and consumers SIGKILLed and restarted at random while
//! messages flow through one small queue, then a check of every promise the
//! queue makes about crashes. The chaos itself, and what it checks, is
//! `mulproc_bench_tools::chaos` (`src/chaos.rs`, which `tests/chaos.rs`
//! runs for 5 s in CI); this is its command line.
//!
//! ```text
//! cargo run --release -p mulproc-bench-tools --bin chaos
//! cargo run --release -p mulproc-bench-tools --bin chaos -- --secs 300 --kill-every-ms 50 --capacity 8
//! ```
//!
//! Output: a few human lines, any `VIOLATION: ...` lines with details, then
//! `key=value` lines (the counts), the last being `violations=N`. The exit
//! code is 0 only if there is no violation.

use std::process::ExitCode;

use clap::Parser;
use mulproc::process;
use mulproc_bench_tools::chaos::{self, Launcher, Opts};
use mulproc_bench_tools::count;

/// Producers and consumers SIGKILLed and restarted at random while
/// messages flow through one small queue, then every crash promise checked.
#[derive(Parser, Debug)]
#[command(name = "chaos")]
struct Args {
    /// How long the kills go on, in seconds (fractions allowed).
    #[arg(long, default_value_t = 30.0)]
    secs: f64,
    /// One random SIGKILL and restart every MS milliseconds (0: no kills).
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = count)]
    kill_every_ms: u64,
    /// Producer processes (at most 32).
    #[arg(long, value_name = "P", default_value_t = 3, value_parser = count)]
    producers: u64,
    /// Consumer processes.
    #[arg(long, value_name = "C", default_value_t = 3, value_parser = count)]
    consumers: u64,
    /// Queue slots, a power of two.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = count)]
    capacity: u64,
    /// Message size in bytes, at least 24.
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = count)]
    payload: u64,
    /// Every handle's unblock timeout, in ms.
    #[arg(long, value_name = "MS", default_value_t = 200, value_parser = count)]
    unblock_ms: u64,
    /// Producers send every other message in place (try_reserve, fill,
    /// work US µs holding the claim, commit), the others with send
    /// (0: all with send).
    #[arg(long, value_name = "US", default_value_t = 100, value_parser = count)]
    fill_us: u64,
    /// Consumers work US µs on each message in place, after recording it
    /// and before releasing it.
    #[arg(long, value_name = "US", default_value_t = 50, value_parser = count)]
    hold_us: u64,
    /// Seed of the choice of victims (default: from the clock; printed).
    #[arg(long, value_parser = count)]
    seed: Option<u64>,
    /// Keep the per-process logs (path printed) instead of removing them;
    /// MULPROC_CHAOS_KEEP=1 does the same.
    #[arg(long)]
    keep: bool,
}

fn main() -> ExitCode {
    if let Some(role) = process::role() {
        return ExitCode::from(u8::try_from(chaos::child_main(&role)).unwrap_or(1));
    }
    let a = Args::parse();
    let opts = match (
        usize::try_from(a.producers),
        usize::try_from(a.consumers),
        u32::try_from(a.capacity),
        usize::try_from(a.payload),
    ) {
        (Ok(producers), Ok(consumers), Ok(capacity), Ok(payload)) => Opts {
            secs: a.secs,
            kill_every_ms: a.kill_every_ms,
            producers,
            consumers,
            capacity,
            payload,
            unblock_ms: a.unblock_ms,
            fill_us: a.fill_us,
            hold_us: a.hold_us,
            seed: a.seed,
            keep: a.keep,
        },
        _ => {
            eprintln!("chaos: error: a count is too large");
            return ExitCode::FAILURE;
        }
    };
    match chaos::run(&opts, &Launcher::default()) {
        Ok(r) => {
            println!("{r}");
            if r.violations.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            }
        }
        Err(e) => {
            eprintln!("chaos: error: {e}");
            ExitCode::FAILURE
        }
    }
}
