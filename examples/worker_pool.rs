//! The main job: a pool of worker processes on `mulproc::pool`, every
//! result checked.
//!
//! The parent maps `--tasks` tasks over `--workers` worker processes (this
//! same program, started again by the pool). Each task is `--size` bytes:
//! the task id (u64, little-endian) followed by bytes derived from it. A
//! worker answers with the id and a 32-bit checksum of the payload; the
//! parent checks that results come back in order, one per task, each with
//! the checksum it computed when it made the task. Then it shuts the pool
//! down gracefully (the poison pill, every worker reaped).
//!
//! ```text
//! cargo run --release --example worker_pool
//! cargo run --release --example worker_pool -- --workers 8 --tasks 5000000 --size 256
//! ```
//!
//! Flags: `--workers W` (default 4), `--tasks T` (default 6,000,000),
//! `--size BYTES` (at least 16, default 64), `--window N` (most tasks in
//! flight, default 4096).
//!
//! On a terminal a progress bar (indicatif) shows on stderr. The summary
//! gives the pool's counters; the last line is `tasks_per_sec=<rate>`:
//! tasks answered and checked per second, from the first task sent to the
//! last result checked.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::error::Error;
use std::process::ExitCode;
use std::rc::Rc;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mulproc::pool::Pool;

type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

const USAGE: &str = "usage: worker_pool [--workers W] [--tasks T] [--size BYTES] [--window N]";

struct Opts {
    workers: usize,
    tasks: u64,
    size: usize,
    window: usize,
}

fn parse_opts() -> Result<Opts> {
    let mut o = Opts {
        workers: 4,
        tasks: 6_000_000,
        size: 64,
        window: 4096,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) => (f, Some(v.to_owned())),
            None => (arg.as_str(), None),
        };
        let mut number = || -> Result<u64> {
            let v = match inline.clone() {
                Some(v) => v,
                None => it.next().ok_or(format!("{flag} needs a value"))?.clone(),
            };
            v.replace('_', "")
                .parse()
                .map_err(|e| format!("{flag} {v:?}: {e}").into())
        };
        match flag {
            "--workers" => o.workers = number()?.try_into()?,
            "--tasks" => o.tasks = number()?,
            "--size" => o.size = number()?.try_into()?,
            "--window" => o.window = number()?.try_into()?,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            _ => return Err(format!("unknown argument {arg:?}\n{USAGE}").into()),
        }
    }
    if o.workers == 0 || o.tasks == 0 || o.window == 0 {
        return Err("--workers, --tasks and --window must be at least 1".into());
    }
    if o.size < 16 {
        return Err(format!("--size must be at least 16, got {}", o.size).into());
    }
    Ok(o)
}

// ------------------------------------------------------------ the work ---

/// A checksum of the payload (FNV-1a style, a 64-bit word at a time, the
/// last word zero-padded) folded to 32 bits, plus the id.
fn checksum(id: u64, payload: &[u8]) -> u32 {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    let mix = |h: u64, w: u64| (h ^ w).wrapping_mul(PRIME).rotate_left(29);
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    let mut words = payload.chunks_exact(8);
    for w in &mut words {
        h = mix(h, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(w));
    }
    ((h >> 32) as u32 ^ h as u32).wrapping_add(id as u32)
}

/// Task `id`'s payload: the id, then bytes derived from it (a splitmix64
/// stream seeded with the id).
fn make_task(id: u64, size: usize) -> Vec<u8> {
    let mut buf = vec![0u8; size];
    let (head, rest) = buf.split_at_mut(8);
    head.copy_from_slice(&id.to_le_bytes());
    let mut state = id ^ 0x6D75_6C70_726F_6321;
    for chunk in rest.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
    buf
}

/// The worker's handler: the id and the checksum, 12 bytes.
fn work(task: Vec<u8>) -> Vec<u8> {
    let id = u64::from_le_bytes(task[..8].try_into().expect("tasks are at least 16 bytes"));
    let mut out = Vec::with_capacity(12);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&checksum(id, &task).to_le_bytes());
    out
}

// -------------------------------------------------------------- parent ---

fn run(o: &Opts) -> Result<String> {
    // In a worker this runs the handler loop and never returns.
    let mut pool = Pool::builder()
        .name("worker_pool")
        .workers(o.workers)
        .window(o.window)
        .bytes()
        .max_task_bytes(o.size)
        .max_result_bytes(12)
        .start(work)?;

    let n = o.tasks;
    let bar = ProgressBar::with_draw_target(Some(n), ProgressDrawTarget::stderr_with_hz(10));
    bar.set_style(
        ProgressStyle::with_template(
            "[{bar:30}] {human_pos}/{human_len} {percent:>3}%  {per_sec}  eta {eta}  {msg}",
        )?
        .progress_chars("#>."),
    );
    // The checksum of each task, made with it, checked against its result.
    let expected = Rc::new(RefCell::new(VecDeque::new()));
    let inputs = {
        let expected = Rc::clone(&expected);
        let size = o.size;
        (0..n).map(move |id| {
            let task = make_task(id, size);
            expected.borrow_mut().push_back(checksum(id, &task));
            task
        })
    };
    let start = Instant::now();
    let mut done = 0u64;
    let counters = pool.counters();
    for r in pool.map(inputs) {
        let r = r.map_err(|e| format!("task {done}: {e}"))?;
        let want = expected
            .borrow_mut()
            .pop_front()
            .ok_or("a result with no task")?;
        if r.len() != 12 {
            return Err(format!("task {done}: a result of {} bytes", r.len()).into());
        }
        let id = u64::from_le_bytes(r[..8].try_into()?);
        let sum = u32::from_le_bytes(r[8..].try_into()?);
        if id != done || sum != want {
            return Err(format!(
                "result {done}: task {id} answered {sum:#010x}, expected task {done} {want:#010x}"
            )
            .into());
        }
        done += 1;
        if done % 4096 == 0 {
            bar.set_position(done);
            let s = counters.get();
            if s.restarted > 0 {
                bar.set_message(format!("{} workers restarted", s.restarted));
            }
        }
    }
    let elapsed = start.elapsed();
    bar.finish_and_clear();
    if done != n {
        return Err(format!("{done} results for {n} tasks").into());
    }

    let stop = Instant::now();
    let stats = pool.shutdown()?;
    let stop = stop.elapsed();
    let secs = elapsed.as_secs_f64();
    let rate = n as f64 / secs;
    println!(
        "worker pool (mulproc::pool): {} worker processes, {n} tasks of {} bytes, \
         at most {} in flight",
        o.workers, o.size, o.window
    );
    println!(
        "elapsed {secs:.3} s: {done} results checked (in order, one per task, checksums \
         match), {:.2} M tasks/s, {:.0} ns per task",
        rate / 1e6,
        1e9 / rate
    );
    println!(
        "counters: submitted {}, succeeded {}, failed {}, retried {}, workers restarted {}, \
         duplicates dropped {}",
        stats.submitted,
        stats.succeeded,
        stats.failed,
        stats.retried,
        stats.restarted,
        stats.duplicates
    );
    println!(
        "shutdown: poison pill to every worker, all reaped, names removed, in {:.1} ms",
        stop.as_secs_f64() * 1e3
    );
    if stats.succeeded != n || stats.failed != 0 {
        return Err("the counters do not match the results".into());
    }
    Ok(format!("tasks_per_sec={rate:.1}"))
}

fn main() -> ExitCode {
    // Workers run `main` again with the same arguments: parse them the
    // same way before the pool starts.
    match parse_opts().and_then(|o| run(&o)) {
        Ok(last_line) => {
            println!("{last_line}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("worker_pool: error: {e}");
            ExitCode::FAILURE
        }
    }
}
