//! A named pool served by its own local workers and a remote worker at
//! once: the local workers work as they do in an unnamed pool (a killed
//! one is replaced and its tasks sent again), the remote one joins in, and
//! `shutdown`'s poison pills reach the local workers even when the remote
//! worker takes one first (it puts it back). The local workers are this
//! test binary again, running just this test; the remote worker is the
//! same binary running the ignored helper, started by the test with only
//! the URL and the pool's name.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mulproc::pool::{self, Pool};
use mulproc_redis::{RedisBackend, RedisOptions};

const URL_VAR: &str = "MULPROC_REDIS_TEST_MIXED_URL";
const POOL_VAR: &str = "MULPROC_REDIS_TEST_MIXED_POOL";

fn backend(url: &str, pool: &str) -> RedisBackend {
    RedisBackend::new(url)
        .expect("url")
        .claim_after(Duration::from_millis(800))
        .options(RedisOptions::default().poll(Duration::from_millis(20)))
        .pool(pool)
        .expect("pool name")
}

fn work(x: u64) -> u64 {
    std::thread::sleep(Duration::from_millis(1));
    x * 3 + 1
}

fn builder(url: &str, pool: &str) -> pool::Builder<pool::PodCodec, RedisBackend> {
    let name = "local_and_remote_workers_share_a_named_pool";
    Pool::builder()
        .name(name)
        .workers(2)
        .worker_batch(4)
        .worker_args([name, "--exact", "--nocapture", "--test-threads=1"])
        .quiet_workers(true)
        .backend(backend(url, pool))
}

/// Not a test: the remote worker of the test below.
#[test]
#[ignore = "helper process, started by another test"]
fn mixed_remote_worker() {
    let (Ok(url), Ok(pool)) = (std::env::var(URL_VAR), std::env::var(POOL_VAR)) else {
        return;
    };
    let served = builder(&url, &pool).serve(work).expect("serve");
    println!("remote served={}", served.tasks);
}

fn sigkill(pid: u32) -> bool {
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) == 0 }
}

#[test]
fn local_and_remote_workers_share_a_named_pool() {
    let server = if pool::is_worker() {
        None
    } else {
        let s = common::Server::start();
        // Set before any worker exists, in a binary whose only running
        // test this is: nothing else reads the environment meanwhile.
        std::env::set_var(URL_VAR, s.url());
        std::env::set_var(POOL_VAR, common::unique("mixed"));
        Some(s)
    };
    let url = std::env::var(URL_VAR).expect("the parent sets the URL");
    let pool_name = std::env::var(POOL_VAR).expect("the parent sets the pool");
    // In a local worker this runs the handler loop and never returns.
    let mut pool = builder(&url, &pool_name)
        .start(work)
        .expect("start the pool");
    let mut remote = common::Reaper(vec![Command::new(
        std::env::current_exe().expect("test binary"),
    )
    .args([
        "mixed_remote_worker",
        "--exact",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .expect("start the remote worker")]);
    let victim = pool.worker_pids()[0];
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        sigkill(victim)
    });
    let out: Vec<u64> = pool
        .map(0..1500u64)
        .map(|r| r.expect("every task answered"))
        .collect();
    assert!(
        killer.join().unwrap(),
        "the local worker was alive to be killed"
    );
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, i as u64 * 3 + 1, "result {i}");
    }
    let t = Instant::now();
    let stats = pool.shutdown().expect("shutdown");
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "the local workers got their pills: {:?}",
        t.elapsed()
    );
    assert_eq!(stats.succeeded, 1500);
    assert!(stats.restarted >= 1, "{stats:?}");
    // The remote worker returned at the run's end and said how much it did.
    let child = &mut remote.0[0];
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the remote worker did not return"
        );
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
    let mut text = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut text)
        .expect("its output");
    let served: u64 = text
        .split("remote served=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no count in {text:?}"));
    assert!(served > 0, "the remote worker took part");
    let server = server.expect("the parent has the server");
    let n: i64 = redis::cmd("DBSIZE").query(&mut server.client()).unwrap();
    assert_eq!(n, 0, "keys left behind");
}
