//! Throughput of a RedisQueue: one producer, `W` worker processes, `N`
//! tasks of `S` bytes.
//!
//! ```text
//! cargo run --release -p mulproc-redis --example redis_throughput -- redis://127.0.0.1:6379/ 200000 4 64
//! ```
//!
//! Two phases, each on a fresh queue:
//! 1. *send*: the producer alone sends the `N` tasks in batches of 256
//!    (`try_send_batch`, one script call each);
//! 2. *end to end*: the producer sends `N` tasks while `W` workers
//!    (processes of this executable) take them in batches
//!    (`try_recv_batch`: one pipelined read, one acknowledgement per
//!    batch); the clock stops when every task has been received and
//!    acknowledged.
//!
//! The last line is `send_msgs_per_sec=… msgs_per_sec=…`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mulproc::{Channel, Message, Received, Request};
use mulproc_redis::{RedisConfig, RedisOptions, RedisQueue};

const BATCH: usize = 256;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("worker") {
        return worker(&args[2], &args[3]);
    }
    let url = args
        .get(1)
        .cloned()
        .unwrap_or_else(|| "redis://127.0.0.1:6379/".into());
    let n: usize = args.get(2).map_or(Ok(200_000), |s| s.parse())?;
    let workers: usize = args.get(3).map_or(Ok(4), |s| s.parse())?;
    let size: usize = args.get(4).map_or(Ok(64), |s| s.parse())?;
    let payload = vec![7u8; size];
    let batch: Vec<Message<&[u8]>> = (0..BATCH)
        .map(|_| Message::new(Request::DO, payload.as_slice()))
        .collect();
    let config = RedisConfig::new(n as u64 + 16, size.max(1));

    // 1. Send alone.
    let name = format!("bench-send-{}", std::process::id());
    let _ = RedisQueue::destroy(&url, &name);
    let q = RedisQueue::create_with(&url, &name, config, RedisOptions::default())?;
    let t = Instant::now();
    send_all(&q, &batch, n)?;
    let send_rate = n as f64 / t.elapsed().as_secs_f64();
    drop(q);
    RedisQueue::destroy(&url, &name)?;

    // 2. End to end, with workers.
    let name = format!("bench-e2e-{}", std::process::id());
    let _ = RedisQueue::destroy(&url, &name);
    // A bound the producer can run ahead by: 64 Ki tasks, or all of them.
    let bounded = RedisConfig {
        capacity: (n as u64).clamp(BATCH as u64 * 4, 65_536),
        ..config
    };
    let q = RedisQueue::create_with(&url, &name, bounded, RedisOptions::default())?;
    let exe = std::env::current_exe()?;
    let mut children = Vec::new();
    for _ in 0..workers {
        children.push(
            Command::new(&exe)
                .args(["worker", &url, &name])
                .stdout(Stdio::piped())
                .spawn()?,
        );
    }
    // Let the workers connect before the clock starts.
    std::thread::sleep(Duration::from_millis(300));
    let t = Instant::now();
    send_all(&q, &batch, n)?;
    while q.len()? > 0 {
        std::thread::sleep(Duration::from_micros(200));
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    for c in &children {
        q.send(Message::signal(Request::DIE).to(c.id()))?;
    }
    let mut total = 0usize;
    for c in children {
        let out = c.wait_with_output()?;
        total += String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse::<usize>()?;
    }
    drop(q);
    RedisQueue::destroy(&url, &name)?;
    assert_eq!(total, n, "every task received once");
    println!("send_msgs_per_sec={send_rate:.0} msgs_per_sec={rate:.0}");
    Ok(())
}

fn send_all(
    q: &RedisQueue,
    batch: &[Message<&[u8]>],
    n: usize,
) -> Result<(), Box<dyn std::error::Error>> {
    let mut sent = 0;
    while sent < n {
        let k = (n - sent).min(batch.len());
        match q.try_send_batch(&batch[..k]) {
            Ok(m) => sent += m,
            Err(e) if e.is_full() => std::thread::sleep(Duration::from_micros(200)),
            Err(e) => return Err(e.to_string().into()),
        }
    }
    Ok(())
}

fn worker(url: &str, name: &str) -> Result<(), Box<dyn std::error::Error>> {
    let q = RedisQueue::open(url, name)?;
    let mut count = 0usize;
    let mut die = false;
    loop {
        let got = q.try_recv_batch(BATCH, |h, d| {
            if h.request == Request::DIE {
                die = true;
            } else {
                assert!(!d.is_empty());
                count += 1;
            }
        })?;
        if die {
            break;
        }
        if got == 0 {
            match q.recv_ref_timeout(Duration::from_secs(1)) {
                Ok(g) => {
                    let stop = g.header().request == Request::DIE;
                    g.finish()?;
                    if stop {
                        break;
                    }
                    count += 1;
                }
                Err(e) if e.is_timeout() => {}
                Err(e) => return Err(e.into()),
            }
        }
    }
    println!("{count}");
    Ok(())
}
