//! The worker pool written by hand, kept as the reference that mulproc's
//! pool API is measured against (a copy of what `examples/worker_pool.rs`
//! was before that API; the two should print the same figures for the same
//! flags).
//!
//! A worker pool: the parent process hands out tasks, W worker processes
//! answer them, the parent checks every answer: the main job mulproc is made
//! for, in pymulproc's style (`REQ_DO` out, `REQ_FINISHED` back addressed to
//! the parent, `REQ_DIE` as the poison pill).
//!
//! The parent creates two queues, `tasks` (parent → workers) and `results`
//! (workers → parent), and starts W workers as new processes of this same
//! program with [`mulproc::process::Child`] (role `worker`, never `fork`);
//! each worker opens both queues by key with [`process::open_queue`]. Every
//! task is a payload of `--size` bytes: the task id (u64, little-endian)
//! followed by bytes derived from the id. A worker answers with a
//! `FINISHED` message addressed to the parent carrying the id and a 32-bit
//! checksum of the payload folded with the id (a plain-data struct, sent
//! with `Message::pod`). The parent checks each checksum against the one it
//! computed when it sent the task and that every id is answered exactly
//! once, waits on the task queue with `join` (JoinableQueue meaning: the
//! workers call `task_done`), then stops the workers with one `DIE` each
//! (the poison pill) and waits for them to exit 0.
//!
//! ```text
//! cargo run --release -p mulproc-bench-tools --bin pool_by_hand
//! cargo run --release -p mulproc-bench-tools --bin pool_by_hand -- --workers 8 --tasks 5000000
//! ```
//!
//! Flags:
//!
//! * `--workers W`: worker processes (default 4).
//! * `--tasks T`: tasks (default 6,000,000: one to three seconds on a busy
//!   2-core machine).
//! * `--size BYTES`: task payload size, at least 16 (default 64).
//! * `--capacity C`: slots per queue, a power of two (default 4096).
//! * `--window N`: most tasks in flight, sent and not yet answered
//!   (default and maximum: the capacity).
//! * `--batch N`: most tasks the parent sends with one `try_send_batch`
//!   (default 256; 1 sends them one by one).
//!
//! While it runs on a terminal, a progress bar is drawn on stderr (at most
//! ten times a second); otherwise nothing is printed until the end. The last
//! line of output is `tasks_per_sec=<rate>`: tasks answered and verified per
//! second, from the first task sent to the last result checked. The line
//! before it gives the CPU time spent per task by the parent and by the
//! workers, which varies less than the rate on a shared machine. The
//! workers' time is `RUSAGE_CHILDREN` once they have been reaped, minus
//! its value when the parent started: `cargo run` waits for the compiler
//! and then execs the program, so without the baseline the figure held
//! the build's CPU time (a first run printed 10,441 ns per task).
//!
//! # How the hot loop is built
//!
//! * Two queues, so that everything on `tasks` is for any worker and
//!   everything on `results` is for the parent: every receive takes the
//!   head of its queue. One shared queue also works, pymulproc style, with
//!   workers taking `recv_for_me` (messages addressed to them or to anyone)
//!   and the parent its own results; but every receiver then scans past the
//!   other side's messages and every send wakes the selective sleepers, so
//!   it costs more.
//! * The parent never blocks while it can make progress: it tops the task
//!   queue up until `--window` tasks are in flight, then takes the results
//!   that are there (in place, `try_recv_ref`), at most 256 before it tops
//!   the task queue up again, so that the workers find work waiting. Since
//!   in flight ≤ window ≤ capacity, neither queue can ever be full for a
//!   worker. Only when it can neither send nor receive does the parent wait
//!   in `recv_ref_timeout` (spin, yield, then sleep), which on an
//!   oversubscribed machine gives the CPU to the workers.
//! * The parent sends tasks in batches (`try_send_batch`): one claim of
//!   the queue and one wake-up per batch instead of per task. This matters
//!   most with more workers than cores: idle workers go to sleep, and a
//!   send that finds a sleeper pays a `FUTEX_WAKE` system call. Sent one by
//!   one (`--batch 1`), a sleeping worker costs one such call per task sent
//!   until it has been scheduled again, which on a busy machine made the
//!   parent spend about half its time in the kernel and halved the rate
//!   with 4 workers on 2 cores.
//! * Workers take tasks one at a time (so that each takes exactly one
//!   poison pill), with `try_recv_ref` and, only when there is
//!   none, a wait in `recv_ref_timeout` (never a `try_recv` spin): a worker
//!   with nothing to do yields and then sleeps, leaving the cores to the
//!   parent and the busy workers. The timeout (100 ms) only serves to check
//!   that the parent is still alive.
//!
//! Cleanup: the creating handles remove the queue names when dropped (on
//! error paths too), and the parent removes both names as soon as every
//! worker has opened them, so nothing is left in `/dev/shm` even if a
//! process is killed later. Dropping a child handle kills that child, so an
//! error in the parent leaves no workers behind. The parent checks about
//! ten times a second that no worker has died (its task would never be
//! answered), and the workers die with the parent.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use bytemuck::{Pod, Zeroable};
use clap::Parser;
use mulproc::process::{self, ChildProcess};
use mulproc::{Message, Queue, QueueConfig, RecvGuard, RecvTimeoutError, Request, TryRecvError};
use mulproc_bench_tools::{count, cpu_time, spawn, Children, Result, Who};

/// The role the workers are started in.
const WORKER_ROLE: &str = "worker";
/// Worker → parent, once: both queues are open.
const READY: Request = Request::new(Request::FIRST_USER_CODE);
/// How long a blocking receive waits before checking that the other side
/// is still alive.
const LIVENESS_TIMEOUT: Duration = Duration::from_millis(100);
/// How long the workers may take to start and open the queues.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the parent waits with no result at all before giving up.
const STALL_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a worker may take to exit after its poison pill.
const EXIT_TIMEOUT: Duration = Duration::from_secs(5);
/// Most results the parent takes before topping the task queue up again.
const DRAIN_BATCH: usize = 256;
/// Progress bar redraws at most this often.
const REDRAW: Duration = Duration::from_millis(100);

/// A worker's answer: the task id and its checksum. Sent as plain bytes
/// (`Message::pod`) and read back in place (`RecvGuard::read_pod`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Pod, Zeroable)]
struct TaskResult {
    id: u64,
    checksum: u32,
    _pad: u32,
}

/// A worker pool written by hand: the parent hands out tasks, W worker
/// processes answer them, the parent checks every answer.
#[derive(Parser, Clone, Debug)]
#[command(name = "pool_by_hand")]
struct Opts {
    /// Worker processes.
    #[arg(long, value_name = "W", default_value_t = 4, value_parser = count)]
    workers: u64,
    /// Tasks.
    #[arg(long, value_name = "T", default_value_t = 6_000_000, value_parser = count)]
    tasks: u64,
    /// Task payload size in bytes, at least 16.
    #[arg(long, value_name = "BYTES", default_value_t = 64, value_parser = count)]
    size: u64,
    /// Slots per queue, a power of two.
    #[arg(long, value_name = "C", default_value_t = 4096, value_parser = count)]
    capacity: u64,
    /// Most tasks in flight, sent and not yet answered (default and
    /// maximum: the capacity).
    #[arg(long, value_name = "N", value_parser = count)]
    window: Option<u64>,
    /// Most tasks the parent sends with one try_send_batch (1: one by one).
    #[arg(long, value_name = "N", default_value_t = 256, value_parser = count)]
    batch: u64,
}

impl Opts {
    fn validate(&mut self) -> Result<()> {
        if self.workers == 0 || self.tasks == 0 {
            return Err("--workers and --tasks must be at least 1".into());
        }
        if self.size < 16 {
            return Err(format!("--size must be at least 16, got {}", self.size).into());
        }
        if self.window == Some(0) || self.batch == 0 {
            return Err("--window and --batch must be at least 1".into());
        }
        // A batch never exceeds a queue's worth.
        self.batch = self.batch.min(self.capacity);
        Ok(())
    }
}

// ------------------------------------------------------------ the work ---

/// The result of task `id` with payload `payload`: a checksum of the
/// payload (FNV-1a style, a 64-bit word at a time, the last word
/// zero-padded) folded to 32 bits, plus the id. A word at a time costs
/// ~10 ns for 64 bytes, where a byte-wise CRC-32 costs ~100 ns and would
/// be most of the work in both processes.
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

// -------------------------------------------------------------- worker ---

/// Fails once the parent that started us is gone (we are re-parented).
fn check_parent(parent: u32) -> Result<()> {
    if std::os::unix::process::parent_id() == parent {
        Ok(())
    } else {
        Err(format!("the parent process {parent} is gone").into())
    }
}

/// Sends `msg`, waiting (asleep) while the queue is full and checking
/// between waits that the parent is still there.
fn send_checked(q: &Queue, parent: u32, msg: Message<&[u8]>) -> Result<()> {
    let mut msg = match q.try_send(msg) {
        Ok(()) => return Ok(()),
        Err(e) if e.is_full() => e.into_inner(),
        Err(e) => return Err(e.to_string().into()),
    };
    loop {
        match q.send(msg) {
            Ok(()) => return Ok(()),
            Err(e) if e.is_full() => {
                check_parent(parent)?;
                msg = e.into_inner();
            }
            Err(e) => return Err(e.to_string().into()),
        }
    }
}

fn worker() -> Result<()> {
    let parent = process::parent_pid().ok_or("no parent pid in the environment")?;
    let tasks = process::open_queue("tasks")?;
    let results = process::open_queue("results")?;
    send_checked(&results, parent, Message::signal(READY).to(parent))?;
    loop {
        // The next task, in place: at once if one is waiting (no clock
        // read), else a blocking wait (spin, yield, sleep in the kernel).
        let task = match tasks.try_recv_ref() {
            Ok(task) => task,
            Err(TryRecvError::Empty) => match tasks.recv_ref_timeout(LIVENESS_TIMEOUT) {
                Ok(task) => task,
                Err(RecvTimeoutError::Timeout) => {
                    check_parent(parent)?;
                    continue;
                }
                Err(e) => return Err(e.into()),
            },
            Err(e) => return Err(e.into()),
        };
        let request = task.header().request;
        if request == Request::DIE {
            task.finish()?;
            tasks.task_done()?;
            return Ok(());
        }
        let data = task.data();
        if request != Request::DO || data.len() < 8 {
            return Err(
                format!("unexpected task {:?}, {} bytes", task.header(), data.len()).into(),
            );
        }
        let id = u64::from_le_bytes(data[..8].try_into()?);
        let reply = TaskResult {
            id,
            checksum: checksum(id, data),
            _pad: 0,
        };
        // Free the task's slot before answering.
        task.finish()?;
        send_checked(
            &results,
            parent,
            Message::pod(Request::FINISHED, &reply).to(parent),
        )?;
        tasks.task_done()?;
    }
}

// -------------------------------------------------------------- parent ---

/// Fails if any worker has exited (they exit only after a poison pill).
fn check_workers(workers: &mut [ChildProcess]) -> Result<()> {
    for w in workers {
        if let Some(status) = w.try_wait()? {
            return Err(format!("worker {} exited early ({status})", w.pid()).into());
        }
    }
    Ok(())
}

/// The progress bar on stderr, when stderr is a terminal.
struct Progress {
    total: u64,
    start: Instant,
    /// When, and at how many tasks done, the bar was last drawn.
    last: (Instant, u64),
}

impl Progress {
    fn new(total: u64, start: Instant) -> Option<Progress> {
        std::io::stderr().is_terminal().then_some(Progress {
            total,
            start,
            last: (start, 0),
        })
    }

    /// Redraws the bar if the last drawing is old enough, with the rate
    /// since then.
    fn tick(&mut self, now: Instant, done: u64) {
        let (then, done_then) = self.last;
        if now - then >= REDRAW {
            let rate = (done - done_then) as f64 / (now - then).as_secs_f64();
            self.draw(done, rate, "");
            self.last = (now, done);
        }
    }

    /// The last drawing, with the average rate, and a new line.
    fn finish(&self, done: u64) {
        let rate = done as f64 / self.start.elapsed().as_secs_f64();
        self.draw(done, rate, "\n");
    }

    fn draw(&self, done: u64, rate: f64, end: &str) {
        const WIDTH: u64 = 30;
        let filled = (done * WIDTH / self.total) as usize;
        let mut err = std::io::stderr().lock();
        // `\x1b[K` clears the rest of the line. A terminal that went away
        // is no reason to stop the work.
        let _ = write!(
            err,
            "\r[{}{}] {done}/{} {:3}%  {:.2} M tasks/s\x1b[K{end}",
            "#".repeat(filled),
            ".".repeat(WIDTH as usize - filled),
            self.total,
            done * 100 / self.total,
            rate / 1e6,
        );
        let _ = err.flush();
    }
}

/// What the parent checks about one result; `Ok(id)` if it is right.
fn check_result(
    g: &RecvGuard<'_>,
    me: u32,
    sent: u64,
    expected: &[u32],
    seen: &[bool],
) -> Result<usize> {
    let h = g.header();
    if h.request != Request::FINISHED || h.recipient != Some(me) {
        return Err(format!("unexpected message on the result queue: {h:?}").into());
    }
    let r: TaskResult = g
        .read_pod()
        .map_err(|e| format!("result from worker {}: {e}", h.sender))?;
    if r.id >= sent {
        return Err(format!("result for task {} that was never sent", r.id).into());
    }
    let id = r.id as usize;
    if seen[id] {
        return Err(format!("task {id} answered twice").into());
    }
    if r.checksum != expected[id] {
        return Err(format!(
            "task {id}: worker {} answered {:#010x}, expected {:#010x}",
            h.sender, r.checksum, expected[id]
        )
        .into());
    }
    Ok(id)
}

fn parent(mut o: Opts) -> Result<String> {
    o.validate()?;
    // The children's CPU time so far: whatever ran in this process before
    // an exec (`cargo run` and its compiler), subtracted at the end.
    let children_cpu0 = cpu_time(Who::Children);
    let n = o.tasks;
    let len: usize = n.try_into()?;
    let size: usize = o.size.try_into()?;
    let n_workers: usize = o.workers.try_into()?;
    let capacity: u32 = o.capacity.try_into()?;
    let window = o.window.unwrap_or(u64::MAX).min(o.capacity);

    // The creating handles remove the names when dropped, on every path.
    let mut tasks = Queue::create_unique(QueueConfig::new(capacity, size.try_into()?))?;
    let mut results = Queue::create_unique(QueueConfig::new(
        capacity,
        std::mem::size_of::<TaskResult>() as u32,
    ))?;
    let me = results.pid();

    // Declared after the queues, so dropped (killed, on an error path)
    // before them.
    let mut children = Children::new();
    for _ in 0..n_workers {
        children.push(spawn(
            WORKER_ROLE,
            &[("tasks", tasks.name()), ("results", results.name())],
            &[],
        )?);
    }
    let workers = children.procs_mut();

    // Every worker says when it has both queues open.
    let deadline = Instant::now() + STARTUP_TIMEOUT;
    let mut ready = 0;
    while ready < n_workers {
        match results.recv_timeout(LIVENESS_TIMEOUT) {
            Ok(m) if m.request == READY => ready += 1,
            Ok(m) => return Err(format!("expected READY, got {m:?}").into()),
            Err(RecvTimeoutError::Timeout) => {
                check_workers(workers)?;
                if Instant::now() >= deadline {
                    return Err(format!(
                        "only {ready} of {n_workers} workers started within {STARTUP_TIMEOUT:?}"
                    )
                    .into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    // Everyone has both queues mapped: the names are no longer needed, and
    // removing them now leaves nothing behind even if we are killed.
    for q in [&mut tasks, &mut results] {
        q.set_remove_on_drop(false);
        Queue::remove(q.name())?;
    }

    // expected[id]: the checksum computed when task `id` was sent;
    // seen[id]: its result has arrived and was right.
    let mut expected = vec![0u32; len];
    let mut seen = vec![false; len];
    let (mut sent, mut done) = (0u64, 0u64);
    let (mut stalled, mut done_before) = (Duration::ZERO, 0u64);

    // Task payloads are made here, then copied into their slots.
    let mut scratch = vec![0u8; o.batch as usize * size];
    let parent_cpu0 = cpu_time(Who::This);
    let start = Instant::now();
    let mut progress = Progress::new(n, start);
    let (mut rounds, mut next_check) = (0u32, start + LIVENESS_TIMEOUT);
    while done < n {
        let mut moved = false;
        // Top the task queue up, a batch at a time: one claim and one
        // wake-up per batch.
        while sent < n && sent - done < window {
            let count = (window - (sent - done)).min(n - sent).min(o.batch) as usize;
            let payloads = scratch.chunks_mut(size).take(count);
            for (id, payload) in (sent..).zip(payloads) {
                fill_task(id, payload);
                expected[id as usize] = checksum(id, payload);
            }
            let batch: Vec<Message<&[u8]>> = scratch
                .chunks(size)
                .take(count)
                .map(|payload| Message::new(Request::DO, payload))
                .collect();
            // The first `k` went out; the others are made again next time.
            let k = match tasks.try_send_batch(&batch) {
                Ok(k) => k,
                Err(e) if e.is_full() => 0,
                Err(e) => return Err(e.into()),
            };
            if k == 0 {
                break;
            }
            sent += k as u64;
            moved = true;
        }
        // Take the results that are there, a batch at a time.
        for _ in 0..DRAIN_BATCH {
            match results.try_recv_ref() {
                Ok(g) => {
                    let id = check_result(&g, me, sent, &expected, &seen)?;
                    g.finish()?;
                    seen[id] = true;
                    done += 1;
                    moved = true;
                }
                Err(TryRecvError::Empty) => break,
                Err(e) => return Err(e.into()),
            }
        }
        if !moved {
            // Nothing to send and nothing to take: wait for a result.
            match results.recv_ref_timeout(LIVENESS_TIMEOUT) {
                Ok(g) => {
                    let id = check_result(&g, me, sent, &expected, &seen)?;
                    g.finish()?;
                    seen[id] = true;
                    done += 1;
                }
                Err(RecvTimeoutError::Timeout) => {
                    check_workers(workers)?;
                    if done == done_before {
                        stalled += LIVENESS_TIMEOUT;
                        if stalled >= STALL_TIMEOUT {
                            return Err(format!(
                                "no result for {STALL_TIMEOUT:?} ({done} of {n} done)"
                            )
                            .into());
                        }
                    } else {
                        (stalled, done_before) = (Duration::ZERO, done);
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        // Now and then: redraw the bar, and notice a worker that died
        // (its task would never be answered).
        rounds = rounds.wrapping_add(1);
        if rounds % 256 == 0 {
            let now = Instant::now();
            if now >= next_check {
                check_workers(workers)?;
                next_check = now + LIVENESS_TIMEOUT;
            }
            if let Some(p) = progress.as_mut() {
                p.tick(now, done);
            }
        }
    }
    let elapsed = start.elapsed();
    let parent_cpu = cpu_time(Who::This) - parent_cpu0;
    if let Some(p) = progress.as_mut() {
        p.finish(done);
    }
    if let Some(id) = seen.iter().position(|&s| !s) {
        return Err(format!("task {id} got no result").into());
    }

    // JoinableQueue meaning: every task sent has been marked done.
    let join_start = Instant::now();
    tasks.join_timeout(EXIT_TIMEOUT)?;
    let join_time = join_start.elapsed();

    // The poison pill, one per worker, behind any tasks still queued.
    process::stop_any_workers(&tasks, n_workers).map_err(|e| e.to_string())?;
    for w in workers.iter_mut() {
        match w.wait_timeout(EXIT_TIMEOUT)? {
            Some(status) if status.success() => {}
            Some(status) => return Err(format!("worker {} failed ({status})", w.pid()).into()),
            None => {
                return Err(format!(
                    "worker {} did not exit within {EXIT_TIMEOUT:?} of its poison pill",
                    w.pid()
                )
                .into())
            }
        }
    }
    if !tasks.is_empty() || !results.is_empty() {
        return Err(format!(
            "queues not empty at the end: {} tasks, {} results",
            tasks.len(),
            results.len()
        )
        .into());
    }

    // Every worker has been waited for: their whole lives, start-up
    // included, and nothing from before this run.
    let workers_cpu = cpu_time(Who::Children).saturating_sub(children_cpu0);
    let secs = elapsed.as_secs_f64();
    let rate = n as f64 / secs;
    let per_task = |d: Duration| d.as_secs_f64() * 1e9 / n as f64;
    println!(
        "worker pool: {} worker processes, {n} tasks of {size} bytes, \
         queues of {} slots, at most {window} tasks in flight, sent {} at a time",
        o.workers, o.capacity, o.batch
    );
    println!(
        "elapsed {secs:.3} s: {done} results verified (each task answered once, \
         checksums match), {:.2} M tasks/s, {:.0} ns per task",
        rate / 1e6,
        1e9 / rate
    );
    println!(
        "join: all tasks marked done ({:.1} µs after the last result); \
         {} workers stopped with the poison pill, all exited 0",
        join_time.as_secs_f64() * 1e6,
        o.workers
    );
    println!(
        "CPU time per task: parent {:.0} ns (busy {:.0}% of the run), workers {:.0} ns in all",
        per_task(parent_cpu),
        100.0 * parent_cpu.as_secs_f64() / secs,
        per_task(workers_cpu),
    );
    Ok(format!("tasks_per_sec={rate:.1}"))
}

fn worker_main() -> Result<()> {
    worker()
}

fn main() -> ExitCode {
    mulproc_bench_tools::main("pool_by_hand", &[(WORKER_ROLE, worker_main)], || {
        parent(Opts::parse())
    })
}
