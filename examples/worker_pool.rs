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
//! Tasks of 16, 32, 64, ..., 1024 or 4096 bytes travel as `[u8; N]`, a
//! `bytemuck::Pod` type whose bytes are copied as they are (nothing
//! allocated or encoded per task); other sizes as `Vec<u8>`
//! (`Builder::bytes`). Results are a small `Pod` struct (or its bytes).
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

use bytemuck::{Pod, Zeroable};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use mulproc::pool::{Builder, BytesCodec, Codec, PodCodec, Pool, Wire};

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

/// Writes task `id`'s payload into `buf`: the id, then bytes derived from
/// it (a splitmix64 stream seeded with the id).
fn fill_task(id: u64, buf: &mut [u8]) {
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
}

/// A worker's answer as plain data: the task id and its checksum.
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct Answer {
    id: u64,
    checksum: u32,
    _pad: u32,
}

/// How a task travels: as a `[u8; N]` for the usual sizes (`Pod`, its
/// bytes copied as they are, nothing allocated), as a `Vec<u8>` for any
/// other (`BytesCodec`). Both sides pick the same from `--size`.
trait Task<C: Codec>: Wire<C> + 'static {
    /// What the worker answers.
    type Answer: Wire<C>;
    fn make(id: u64, size: usize) -> Self;
    fn bytes(&self) -> &[u8];
    fn answer(a: Answer) -> Self::Answer;
    fn read(a: &Self::Answer) -> Option<Answer>;
}

impl<const N: usize> Task<PodCodec> for [u8; N]
where
    [u8; N]: Pod,
{
    type Answer = Answer;
    fn make(id: u64, _: usize) -> Self {
        let mut t = [0u8; N];
        fill_task(id, &mut t);
        t
    }
    fn bytes(&self) -> &[u8] {
        self
    }
    fn answer(a: Answer) -> Answer {
        a
    }
    fn read(a: &Answer) -> Option<Answer> {
        Some(*a)
    }
}

impl Task<BytesCodec> for Vec<u8> {
    type Answer = Vec<u8>;
    fn make(id: u64, size: usize) -> Self {
        let mut t = vec![0u8; size];
        fill_task(id, &mut t);
        t
    }
    fn bytes(&self) -> &[u8] {
        self
    }
    fn answer(a: Answer) -> Vec<u8> {
        bytemuck::bytes_of(&a).to_vec()
    }
    fn read(a: &Vec<u8>) -> Option<Answer> {
        bytemuck::try_pod_read_unaligned(a).ok()
    }
}

/// The worker's handler: the task's id and checksum.
fn work<C: Codec, T: Task<C>>(task: T) -> T::Answer {
    let data = task.bytes();
    let id = u64::from_le_bytes(data[..8].try_into().expect("tasks are at least 16 bytes"));
    T::answer(Answer {
        id,
        checksum: checksum(id, data),
        _pad: 0,
    })
}

// -------------------------------------------------------------- parent ---

/// CPU time (user + system) used by this process (`RUSAGE_SELF`) or by its
/// children that have been waited for (`RUSAGE_CHILDREN`).
fn cpu_time(who: libc::c_int) -> std::time::Duration {
    // SAFETY: `rusage` is plain data, for which all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage`; on failure it stays zero.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| {
        std::time::Duration::from_secs(t.tv_sec.max(0) as u64)
            + std::time::Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Runs the job with tasks of type `T` (see [`Task`]).
fn run(o: &Opts) -> Result<String> {
    let b = Pool::builder()
        .name("worker_pool")
        .workers(o.workers)
        .window(o.window);
    match o.size {
        16 => job::<_, [u8; 16]>(o, b.pod()),
        32 => job::<_, [u8; 32]>(o, b.pod()),
        64 => job::<_, [u8; 64]>(o, b.pod()),
        128 => job::<_, [u8; 128]>(o, b.pod()),
        256 => job::<_, [u8; 256]>(o, b.pod()),
        512 => job::<_, [u8; 512]>(o, b.pod()),
        1024 => job::<_, [u8; 1024]>(o, b.pod()),
        4096 => job::<_, [u8; 4096]>(o, b.pod()),
        size => job::<_, Vec<u8>>(o, b.bytes().max_task_bytes(size)),
    }
}

fn job<C: Codec, T: Task<C>>(o: &Opts, builder: Builder<C>) -> Result<String> {
    // Under `cargo run`, this process took over cargo's, whose children
    // (the build) count here already.
    let children_cpu0 = cpu_time(libc::RUSAGE_CHILDREN);
    // In a worker this runs the handler loop and never returns.
    let mut pool = builder.start(work::<C, T>)?;

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
            let task = T::make(id, size);
            expected.borrow_mut().push_back(checksum(id, task.bytes()));
            task
        })
    };
    let parent_cpu0 = cpu_time(libc::RUSAGE_SELF);
    let start = Instant::now();
    let mut done = 0u64;
    let counters = pool.counters();
    for r in pool.map(inputs) {
        let r = r.map_err(|e| format!("task {done}: {e}"))?;
        let want = expected
            .borrow_mut()
            .pop_front()
            .ok_or("a result with no task")?;
        let Answer {
            id, checksum: sum, ..
        } = T::read(&r).ok_or_else(|| format!("task {done}: a result of the wrong size"))?;
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
    let parent_cpu = cpu_time(libc::RUSAGE_SELF).saturating_sub(parent_cpu0);
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
    // Every worker has been reaped: their whole lives, start-up included.
    let per_task = |d: std::time::Duration| d.as_secs_f64() * 1e9 / n as f64;
    println!(
        "CPU time per task: parent {:.0} ns (busy {:.0}% of the run), workers {:.0} ns in all",
        per_task(parent_cpu),
        100.0 * parent_cpu.as_secs_f64() / secs,
        per_task(cpu_time(libc::RUSAGE_CHILDREN).saturating_sub(children_cpu0)),
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
