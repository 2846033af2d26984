//! Criterion suite over the same scenarios as the `peer` binary.
//!
//! Each benchmark opens its session (child processes or threads) once, on
//! first use, and reuses it for every batch criterion asks for
//! (`iter_custom`): the children are told how many messages to handle over
//! their control pipe. Groups:
//! - `pingpong_one_way`: time per iteration = one-way latency (RTT / 2);
//!   busy-poll, blocking, and blocking with 200 us idle before each send;
//! - `stream_1to1` / `stream_4to1`: time per message (throughput shown);
//! - `stream_batch_1to1`: cloudtoid's `try_send_batch`, 64 messages a call;
//! - `pool`: time per task through a procspawn pool of 4 workers;
//! - `memcpy`: one 64 KiB copy per iteration (bytes/s shown).
//!
//! Run: `cargo bench -p mulproc-peers` (add a filter, e.g. `-- ipmpsc`).

use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use mulproc_peers::peers::procspawn::PoolSession;
use mulproc_peers::peers::{self, Session};
use mulproc_peers::scenario::{PingPongSession, StreamSession};
use mulproc_peers::{Config, Scenario, System};

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
}

fn open_pingpong(cfg: &Config) -> Box<dyn PingPongSession> {
    match peers::open(cfg) {
        Ok(Session::PingPong(s)) => s,
        Ok(other) => panic!(
            "{}: expected a ping-pong session, got {other:?}",
            cfg.label()
        ),
        Err(e) => panic!("{}: cannot start the peers: {e}", cfg.label()),
    }
}

fn open_stream(cfg: &Config) -> Box<dyn StreamSession> {
    match peers::open(cfg) {
        Ok(Session::Stream(s)) => s,
        Ok(other) => panic!("{}: expected a stream session, got {other:?}", cfg.label()),
        Err(e) => panic!("{}: cannot start the peers: {e}", cfg.label()),
    }
}

fn pingpong(c: &mut Criterion) {
    let mut group = c.benchmark_group("pingpong_one_way");
    let spin = [
        System::Raw,
        System::Futex,
        System::ArrayQueue,
        System::Iceoryx2,
        System::Ipmpsc,
        System::Cloudtoid,
        System::Uds,
    ];
    let block = [
        System::Futex,
        System::Iceoryx2,
        System::Ipmpsc,
        System::Cloudtoid,
        System::Uds,
    ];
    let cases = spin
        .iter()
        .map(|&s| (s, false, 0))
        .chain(block.iter().map(|&s| (s, true, 0)))
        .chain(block.iter().map(|&s| (s, true, 200)));
    for (system, blocking, idle_us) in cases {
        let mut cfg = Config::new(system, Scenario::PingPong);
        cfg.block = blocking;
        cfg.idle_us = idle_us;
        let mut session = None;
        group.bench_function(cfg.label(), |b| {
            let s = session.get_or_insert_with(|| open_pingpong(&cfg));
            b.iter_custom(|iters| {
                let (rtt, _) = s.run(iters, None, None).expect("ping-pong batch failed");
                rtt / 2
            })
        });
    }
    group.finish();
}

fn stream_group(
    c: &mut Criterion,
    name: &str,
    producers: usize,
    batch: usize,
    systems: &[System],
    sizes: &[usize],
) {
    let mut group = c.benchmark_group(name);
    for &size in sizes {
        group.throughput(Throughput::Elements(1));
        for &system in systems {
            let mut cfg = Config::new(system, Scenario::Stream);
            cfg.size = size;
            cfg.producers = producers;
            cfg.batch = batch;
            let mut session = None;
            group.bench_function(BenchmarkId::new(system.name(), format!("{size}B")), |b| {
                let s = session.get_or_insert_with(|| open_stream(&cfg));
                b.iter_custom(|iters| {
                    let (dt, n) = s.run(iters).expect("stream batch failed");
                    // `run` rounds to a multiple of the producer count.
                    dt.mul_f64(iters as f64 / n as f64)
                })
            });
        }
    }
    group.finish();
}

const STREAM_SYSTEMS: [System; 5] = [
    System::ArrayQueue,
    System::Iceoryx2,
    System::Ipmpsc,
    System::Cloudtoid,
    System::Uds,
];

fn stream_1to1(c: &mut Criterion) {
    stream_group(
        c,
        "stream_1to1",
        1,
        1,
        &STREAM_SYSTEMS,
        &[8, 64, 1024, 65536],
    );
}

fn stream_4to1(c: &mut Criterion) {
    stream_group(c, "stream_4to1", 4, 1, &STREAM_SYSTEMS, &[64]);
}

fn stream_batch_1to1(c: &mut Criterion) {
    stream_group(
        c,
        "stream_batch_1to1",
        1,
        Config::DEFAULT_BATCH,
        &[System::Cloudtoid],
        &[64],
    );
}

fn open_pool(cfg: &Config) -> Box<dyn PoolSession> {
    match peers::open(cfg) {
        Ok(Session::Pool(p)) => p,
        Ok(other) => panic!("{}: expected a pool session, got {other:?}", cfg.label()),
        Err(e) => panic!("{}: cannot start the pool: {e}", cfg.label()),
    }
}

fn pool(c: &mut Criterion) {
    let mut group = c.benchmark_group("pool");
    group.throughput(Throughput::Elements(1));
    let cfg = Config::new(System::Procspawn, Scenario::Pool);
    let mut session = None;
    group.bench_function(cfg.label(), |b| {
        let p = session.get_or_insert_with(|| open_pool(&cfg));
        b.iter_custom(|iters| p.run(iters).expect("pool batch failed").0)
    });
    group.finish();
}

fn memcpy(c: &mut Criterion) {
    let mut group = c.benchmark_group("memcpy");
    let size = 65536;
    group.throughput(Throughput::Bytes(size as u64));
    let mut m = peers::memcpy::Memcpy::new(size, 0);
    group.bench_function("64KiB_page_aligned", |b| {
        b.iter_custom(|iters| m.run(iters))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = pingpong, stream_1to1, stream_4to1, stream_batch_1to1, pool, memcpy
}

fn main() {
    // A procspawn pool worker (a re-executed copy) runs its calls and exits.
    mulproc_peers::peers::procspawn::init();
    // A re-executed copy of this binary is a peer child: run that role only.
    if let Some(code) = mulproc_peers::child::run_if_child() {
        std::process::exit(code);
    }
    mulproc_peers::common::install_exit_guards(None)
        .expect("cannot install the signal guard that cleans up /dev/shm files");
    benches();
    Criterion::default().configure_from_args().final_summary();
}
