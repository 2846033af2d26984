//! A `mulproc::pool` over Redis (`RedisBackend`) on a real server, with a
//! worker SIGKILLed mid-run. The workers are this test binary again,
//! running just this test, where `start` runs the handler loop; they find
//! the parent's server through an environment variable it sets.

mod common;

use std::time::Duration;

use mulproc::pool::{self, Pool};
use mulproc_redis::{RedisBackend, RedisOptions};

const URL_VAR: &str = "MULPROC_REDIS_TEST_POOL_URL";

fn sigkill(pid: u32) -> bool {
    // SAFETY: kill(2) has no memory effects.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) == 0 }
}

#[test]
fn pool_map_over_redis_survives_a_killed_worker() {
    // The parent starts the server; a worker (the same test, run again by
    // the pool) finds it in the environment the parent passed on.
    let server = if pool::is_worker() {
        None
    } else {
        let s = common::Server::start();
        // Set before any worker exists, in a binary whose only test this
        // is: nothing else reads the environment meanwhile.
        std::env::set_var(URL_VAR, s.url());
        Some(s)
    };
    let url = std::env::var(URL_VAR).expect("the parent sets the URL");
    let backend = RedisBackend::new(&url)
        .expect("url")
        .claim_after(Duration::from_millis(800))
        .options(RedisOptions::default().poll(Duration::from_millis(20)));
    let name = "pool_map_over_redis_survives_a_killed_worker";
    let mut pool = Pool::builder()
        .name(name)
        .workers(3)
        .worker_batch(1)
        .worker_args([name, "--exact", "--nocapture", "--test-threads=1"])
        .quiet_workers(true)
        .backend(backend)
        .start(|x: u64| {
            std::thread::sleep(Duration::from_millis(3));
            x * x + 1
        })
        .expect("start the pool");
    let victim = pool.worker_pids()[0];
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        sigkill(victim)
    });
    let out: Vec<u64> = pool
        .map(0..600u64)
        .map(|r| r.expect("every task answered"))
        .collect();
    assert!(killer.join().unwrap(), "the worker was alive to be killed");
    assert_eq!(out.len(), 600);
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, (i as u64) * (i as u64) + 1, "result {i}");
    }
    assert!(!pool.worker_pids().contains(&victim));
    let stats = pool.shutdown().expect("shutdown");
    assert_eq!(stats.succeeded, 600);
    assert!(stats.restarted >= 1, "{stats:?}");
    // Nothing left on the server: both channels removed, with their
    // workers' recipient streams.
    let server = server.expect("the parent has the server");
    let n: i64 = redis::cmd("DBSIZE").query(&mut server.client()).unwrap();
    assert_eq!(n, 0, "keys left behind");
}
