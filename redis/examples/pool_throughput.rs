//! Throughput of a `mulproc::pool` over a backend given by URL: `N` tasks
//! of `SIZE` bytes through `WORKERS` workers, every result checked.
//!
//! ```text
//! cargo run --release -p mulproc-redis --example pool_throughput -- redis://127.0.0.1:6379/ 100000 4 64
//! cargo run --release -p mulproc-redis --example pool_throughput -- redis://127.0.0.1:6379/0/bench 100000 4 64 --remote
//! cargo run --release -p mulproc-redis --example pool_throughput -- shm 100000 4 64
//! ```
//!
//! - local workers (the default): the pool's own worker processes, as
//!   `Pool::builder().workers(WORKERS)` starts them;
//! - `--remote` (the URL must name a pool, `redis://…/db/pool`): the pool
//!   has no local worker; `WORKERS` processes of this program started
//!   beside it with `serve URL SIZE` join it as remote workers would from
//!   another machine (`Builder::serve`), and exit when the run ends.
//!
//! The handler returns the task's first 8 bytes plus its length, which the
//! parent checks. The clock runs from the first task sent to the last
//! result taken; the last line is `tasks_per_sec=…`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mulproc::pool::{Builder, BytesCodec, Pool};
use mulproc_redis::AnyBackend;

type Error = Box<dyn std::error::Error>;

fn builder(
    url: &str,
    size: usize,
    workers: usize,
) -> Result<Builder<BytesCodec, AnyBackend>, Error> {
    Ok(Pool::builder()
        .name("pool_throughput")
        .workers(workers)
        .bytes()
        .max_task_bytes(size)
        .max_result_bytes(8)
        .backend(AnyBackend::from_url(url)?))
}

fn work(task: Vec<u8>) -> Vec<u8> {
    let mut head = [0u8; 8];
    let n = task.len().min(8);
    head[..n].copy_from_slice(&task[..n]);
    (u64::from_le_bytes(head) + task.len() as u64)
        .to_le_bytes()
        .to_vec()
}

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("serve") {
        let (url, size) = (&args[1], args[2].parse()?);
        let served = builder(url, size, 0)?.serve(work)?;
        eprintln!(
            "pool_throughput: a remote worker served {} tasks",
            served.tasks
        );
        return Ok(());
    }
    let url = args.first().map_or("shm", String::as_str);
    let n: u64 = args.get(1).map_or(Ok(100_000), |s| s.parse())?;
    let workers: usize = args.get(2).map_or(Ok(4), |s| s.parse())?;
    let size: usize = args.get(3).map_or(Ok(64), |s| s.parse())?;
    let remote = args.iter().any(|a| a == "--remote");
    if size < 8 {
        return Err("SIZE must be at least 8".into());
    }

    let mut serving = Vec::new();
    if remote {
        let exe = std::env::current_exe()?;
        for _ in 0..workers {
            serving.push(
                Command::new(&exe)
                    .args(["serve", url, &size.to_string()])
                    .stdin(Stdio::null())
                    .spawn()?,
            );
        }
    }
    let local = if remote { 0 } else { workers };
    // In a local worker this runs the handler loop and never returns.
    let mut pool = builder(url, size, local)?.start(work)?;
    if remote {
        // Let the remote workers find the run before the clock starts.
        std::thread::sleep(Duration::from_millis(500));
    }
    let inputs = (0..n).map(|i| {
        let mut t = vec![0u8; size];
        t[..8].copy_from_slice(&i.to_le_bytes());
        t
    });
    let t = Instant::now();
    let mut i = 0u64;
    for r in pool.map(inputs) {
        let r = r.map_err(|e| format!("task {i}: {e}"))?;
        let v = u64::from_le_bytes(
            r.as_slice()
                .try_into()
                .map_err(|_| "a result of the wrong size")?,
        );
        if v != i + size as u64 {
            return Err(format!("task {i}: wrong result {v}").into());
        }
        i += 1;
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let stats = pool.shutdown()?;
    if stats.succeeded != n || i != n {
        return Err(format!("{i} results, {} succeeded, for {n} tasks", stats.succeeded).into());
    }
    for mut c in serving {
        // They return once the run has ended (shutdown removed it).
        let deadline = Instant::now() + Duration::from_secs(10);
        while c.try_wait()?.is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if c.try_wait()?.is_none() {
            c.kill()?;
            c.wait()?;
            return Err("a remote worker did not return at the run's end".into());
        }
    }
    println!(
        "pool over {url}: {workers} {} workers, {n} tasks of {size} bytes",
        if remote { "remote" } else { "local" }
    );
    println!("tasks_per_sec={rate:.0}");
    Ok(())
}
