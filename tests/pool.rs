//! The worker pool (`mulproc::pool`) with real worker processes: each test
//! starts workers that are this test binary again, running just that test
//! (`worker_args`), where `start` runs the handler loop.

use std::time::{Duration, Instant};

use mulproc::pool::{Builder, Pool, TaskError};

/// A pool builder whose workers run only the test `name`.
fn builder(name: &str) -> Builder {
    Pool::builder()
        .name(name)
        .worker_args([name, "--exact", "--nocapture", "--test-threads=1"])
        .quiet_workers(true)
}

/// Names of this process's segments and boards left in /dev/shm.
fn leftovers(pid: u32) -> Vec<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&format!("mulproc.u-{pid}-")))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn map_small_in_order() {
    let mut pool = builder("map_small_in_order")
        .workers(3)
        .start(|x: u64| x.wrapping_mul(x) + 1)
        .unwrap();
    let out: Vec<u64> = pool.map(0..10_000u64).map(|r| r.unwrap()).collect();
    assert_eq!(out.len(), 10_000);
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, (i as u64) * (i as u64) + 1);
    }
    let stats = pool.shutdown().unwrap();
    assert_eq!(stats.succeeded, 10_000);
    assert_eq!(stats.submitted, 10_000);
    assert!(leftovers(std::process::id()).is_empty());
}
