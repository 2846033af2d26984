//! The main job: a pool of worker processes on `mulproc::pool`, every
//! result checked.
//!
//! Each task is `--size` bytes made from its id; a worker answers with the
//! id and a checksum of the bytes. The parent checks every answer against
//! the checksum it computes itself, and that each task is answered once.
//!
//! ```text
//! cargo run --release --example worker_pool
//! cargo run --release --example worker_pool -- --workers 8 --tasks 5000000 --size 256
//! ```
//!
//! Over Redis, with workers on other machines too (see the README's "More
//! than one machine"):
//!
//! ```text
//! cargo run --release --example worker_pool -- --backend redis://10.0.0.5:6379/0/jobs --workers 0
//! cargo run --release --example worker_pool -- --backend redis://10.0.0.5:6379/0/jobs --serve
//! ```
//!
//! The last line is `tasks_per_sec=<rate>`: tasks answered and checked
//! per second, from the first task sent to the last result checked.

use std::cell::RefCell;
use std::error::Error;
use std::time::Instant;

use bytemuck::{Pod, Zeroable};
use clap::Parser;
use indicatif::{ProgressBar, ProgressState, ProgressStyle};
use mulproc::pool::Pool;
use mulproc_redis::AnyBackend;

/// A pool of worker processes, every result checked.
#[derive(Parser)]
struct Args {
    /// Worker processes started here (0: only workers joining with --serve).
    #[arg(long, default_value_t = 4)]
    workers: u16,
    /// Tasks to run.
    #[arg(long, default_value_t = 6_000_000)]
    tasks: u64,
    /// Bytes per task.
    #[arg(long, default_value = "64",
          value_parser = ["16", "32", "64", "128", "256", "512", "1024", "4096"])]
    size: String,
    /// Where tasks travel: `shm` (shared memory) or a Redis URL,
    /// `redis://host:port/db[/pool]` (a pool name lets others --serve it).
    #[arg(long, default_value = "shm")]
    backend: String,
    /// Only serve the pool named in --backend, run after run, until killed.
    #[arg(long)]
    serve: bool,
}

/// A worker's answer: plain data, sent as its bytes.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Answer {
    id: u64,
    checksum: u32,
    _pad: u32,
}

/// Task `id`: its id, then bytes derived from it (splitmix64).
fn task<const N: usize>(id: u64) -> [u8; N] {
    let mut t = [0u8; N];
    let (head, rest) = t.split_at_mut(8);
    head.copy_from_slice(&id.to_le_bytes());
    let mut state = id;
    for chunk in rest.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let z = (state ^ (state >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        chunk.copy_from_slice(&(z ^ (z >> 31)).to_le_bytes()[..chunk.len()]);
    }
    t
}

/// The work: an FNV-style hash of the task's bytes, folded to 32 bits.
fn checksum(bytes: &[u8]) -> u32 {
    let h = bytes.chunks(8).fold(0xCBF2_9CE4_8422_2325, |h, w| {
        let mut word = [0u8; 8];
        word[..w.len()].copy_from_slice(w);
        (h ^ u64::from_le_bytes(word)).wrapping_mul(0x100_0000_01B3)
    });
    (h >> 32) as u32 ^ h as u32
}

/// The handler the workers run.
fn work<const N: usize>(t: [u8; N]) -> Answer {
    let id = u64::from_le_bytes(t[..8].try_into().expect("tasks are 16 bytes or more"));
    Answer {
        id,
        checksum: checksum(&t),
        _pad: 0,
    }
}

fn run<const N: usize>(args: &Args) -> Result<f64, Box<dyn Error>>
where
    [u8; N]: Pod,
{
    let builder = Pool::builder()
        .workers(args.workers.into())
        .backend(AnyBackend::from_url(&args.backend)?);
    if args.serve {
        loop {
            let served = builder.serve(work::<N>)?;
            eprintln!("served {} tasks; waiting for the next run", served.tasks);
        }
    }
    // In a worker process this runs the handler loop and never returns.
    let mut pool = builder.start(work::<N>)?;

    let style =
        ProgressStyle::with_template("[{bar:30}] {human_pos}/{human_len}  {rate}  eta {eta}")?
            .with_key("rate", |s: &ProgressState, w: &mut dyn std::fmt::Write| {
                let _ = write!(w, "{:.2} M tasks/s", s.per_sec() / 1e6);
            });
    let bar = ProgressBar::new(args.tasks).with_style(style);
    // The checksum of each task, computed as it is made.
    let expected = RefCell::new(Vec::with_capacity(args.tasks as usize));
    let tasks = (0..args.tasks).map(|id| {
        let t = task::<N>(id);
        expected.borrow_mut().push(checksum(&t));
        t
    });
    let mut seen = vec![0u64; args.tasks.div_ceil(64) as usize];
    let mut done = 0;
    let start = Instant::now();
    for (i, result) in pool.map_unordered(tasks) {
        let answer = result.map_err(|e| format!("task {i}: {e}"))?;
        let bit = 1 << (i % 64);
        if answer.id != i as u64 || answer.checksum != expected.borrow()[i] {
            return Err(format!("task {i}: a wrong answer").into());
        }
        if seen[i / 64] & bit != 0 {
            return Err(format!("task {i}: answered twice").into());
        }
        seen[i / 64] |= bit;
        done += 1;
        if done % 4096 == 0 {
            bar.set_position(done);
        }
    }
    let secs = start.elapsed().as_secs_f64();
    bar.finish_and_clear();
    if done != args.tasks {
        return Err("some tasks were never answered".into());
    }

    let s = pool.shutdown()?; // finish, poison pill to every worker, reap
    println!(
        "{} tasks of {} bytes on {} workers in {secs:.2} s, every answer checked",
        args.tasks, N, args.workers
    );
    println!(
        "counters: succeeded {}, failed {}, retried {}, workers restarted {}, duplicates dropped {}",
        s.succeeded, s.failed, s.retried, s.restarted, s.duplicates
    );
    Ok(args.tasks as f64 / secs)
}

fn main() -> Result<(), Box<dyn Error>> {
    // Workers run `main` again with the same arguments.
    let args = Args::parse();
    let rate = match args.size.as_str() {
        "16" => run::<16>(&args),
        "32" => run::<32>(&args),
        "64" => run::<64>(&args),
        "128" => run::<128>(&args),
        "256" => run::<256>(&args),
        "512" => run::<512>(&args),
        "1024" => run::<1024>(&args),
        _ => run::<4096>(&args),
    }?;
    println!("tasks_per_sec={rate:.1}");
    Ok(())
}
