//! The worker pool (`mulproc::pool`) with real worker processes: each test
//! starts workers that are this test binary again, running just that test
//! (`worker_args`), where `Builder::start` runs the handler loop instead of
//! returning.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mulproc::pool::{Builder, Pool, TaskError};

/// A pool builder whose workers run only the test `name`.
fn builder(name: &str) -> Builder {
    Pool::builder()
        .name(name)
        .worker_args([name, "--exact", "--nocapture", "--test-threads=1"])
        .quiet_workers(true)
}

/// Names of `pid`'s segments and boards left in /dev/shm.
fn leftovers(pid: u32) -> Vec<String> {
    let prefix = format!("mulproc.u-{pid}-");
    std::fs::read_dir("/dev/shm")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default()
}

/// True if `pid` is a process that has not exited (zombies count as
/// exited).
fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(s) => {
            // The state follows the parenthesised command name.
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            !matches!(state, Some("Z" | "X") | None)
        }
        Err(_) => false,
    }
}

/// Pids of this process's children that are workers of pool `name`.
fn workers_of(name: &str) -> Vec<u32> {
    let me = std::process::id();
    let role = format!("MULPROC_ROLE=mulproc-pool:{name}");
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            if env.split(|&b| b == 0).any(|v| v == role.as_bytes()) && alive(pid) {
                out.push(pid);
            }
        }
    }
    out
}

fn sigkill(pid: u32) -> bool {
    // SAFETY: kill has no memory effects.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) == 0 }
}

/// VmRSS of this process, in KiB.
fn rss_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/self/status")
}

/// Some work per task that takes a little while: a few hundred rounds of
/// a mixing function.
fn mix(x: u64, rounds: u32) -> u64 {
    let mut h = x ^ 0x9E37_79B9_7F4A_7C15;
    for _ in 0..rounds {
        h = (h ^ (h >> 31)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    }
    h
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
    assert_eq!(
        (stats.submitted, stats.succeeded, stats.failed),
        (10_000, 10_000, 0)
    );
}

/// The million tasks: every result once, in order. Debug build:
/// about 1-3 s here.
#[test]
fn map_a_million_in_order() {
    const N: u64 = 1_000_000;
    let mut pool = builder("map_a_million_in_order")
        .workers(2)
        .start(|x: [u64; 2]| x[0] ^ x[1])
        .unwrap();
    let start = Instant::now();
    let mut next = 0u64;
    for r in pool.map((0..N).map(|i| [i, i.rotate_left(17)])) {
        let r = r.unwrap_or_else(|e| panic!("result {next}: {e:?}"));
        assert_eq!(r, next ^ next.rotate_left(17), "result {next}");
        next += 1;
    }
    assert_eq!(next, N);
    let stats = pool.shutdown().unwrap();
    assert_eq!(
        (stats.submitted, stats.succeeded, stats.duplicates),
        (N, N, 0)
    );
    eprintln!("1,000,000 tasks through map in {:?}", start.elapsed());
}

#[test]
fn unordered_and_submitted_results_come_once_each() {
    let mut pool = builder("unordered_and_submitted_results_come_once_each")
        .workers(2)
        .window(64)
        .start(|x: u32| x * 2)
        .unwrap();
    let mut seen = vec![false; 5000];
    for (i, r) in pool.map_unordered(0..5000u32) {
        assert_eq!(r.unwrap(), i as u32 * 2);
        assert!(!std::mem::replace(&mut seen[i], true), "index {i} twice");
    }
    assert!(seen.iter().all(|&s| s));

    // submit + join + results: ids tie results to tasks.
    let ids: Vec<u64> = (0..300u32)
        .map(|x| pool.submit(x + 1000).unwrap())
        .collect();
    pool.join().unwrap();
    assert_eq!(pool.in_flight(), 0);
    let mut by_id = std::collections::HashMap::new();
    for c in pool.results() {
        let c = c.unwrap();
        assert!(by_id.insert(c.id, c.result.unwrap()).is_none());
    }
    assert_eq!(by_id.len(), 300);
    for (k, id) in ids.iter().enumerate() {
        assert_eq!(by_id[id], (k as u32 + 1000) * 2);
    }
    assert!(pool.next_result().unwrap().is_none());
    let stats = pool.stats();
    assert_eq!(stats.submitted, 5300);
    assert_eq!(stats.done(), 5300);
    pool.shutdown().unwrap();
}

#[test]
fn panics_become_that_tasks_error() {
    // Quiet: the workers would print every panic.
    std::panic::set_hook(Box::new(|_| {}));
    let mut pool = builder("panics_become_that_tasks_error")
        .workers(2)
        .start(|x: u64| {
            if x % 100 == 7 {
                panic!("no sevens here: {x}");
            }
            x + 1
        })
        .unwrap();
    let _ = std::panic::take_hook();
    let pids: HashSet<u32> = pool.worker_pids().into_iter().collect();
    let mut panicked = 0;
    for (i, r) in pool.map(0..20_000u64).enumerate() {
        if i % 100 == 7 {
            match r {
                Err(TaskError::Panicked { message }) => {
                    assert_eq!(message, format!("no sevens here: {i}"));
                    panicked += 1;
                }
                other => panic!("task {i}: {other:?}"),
            }
        } else {
            assert_eq!(r.unwrap(), i as u64 + 1);
        }
    }
    assert_eq!(panicked, 200);
    pool.check_workers().unwrap();
    let after: HashSet<u32> = pool.worker_pids().into_iter().collect();
    assert_eq!(pids, after, "the same workers: none was lost");
    let stats = pool.shutdown().unwrap();
    assert_eq!((stats.failed, stats.restarted), (200, 0));
}

#[test]
fn a_poison_task_is_given_up_after_max_attempts() {
    let mut pool = builder("a_poison_task_is_given_up_after_max_attempts")
        .workers(2)
        .max_attempts(3)
        .start(|x: u64| {
            if x == 777 {
                std::process::abort();
            }
            x * 3
        })
        .unwrap();
    let start = Instant::now();
    for (i, r) in pool.map(0..3000u64).enumerate() {
        if i == 777 {
            match r {
                Err(TaskError::Killed { attempts: 3, .. }) => {}
                other => panic!("task 777: {other:?}"),
            }
        } else {
            assert_eq!(r.unwrap(), i as u64 * 3, "task {i}");
        }
    }
    let stats = pool.stats();
    assert_eq!(stats.failed, 1);
    assert_eq!(stats.restarted, 3, "{stats:?}");
    assert!(stats.retried >= 2, "{stats:?}");
    assert_eq!(pool.worker_pids().len(), 2);
    eprintln!("poison map: {:?}, {stats:?}", start.elapsed());
    pool.shutdown().unwrap();
}

/// Workers SIGKILLed from outside, again and again, during a long map:
/// every result arrives once, the pool ends with its W workers, and the
/// counters say what happened.
#[test]
fn workers_killed_mid_task_lose_nothing() {
    const NAME: &str = "workers_killed_mid_task_lose_nothing";
    const N: u64 = 40_000;
    const W: usize = 3;
    let mut pool = builder(NAME)
        .workers(W)
        .max_attempts(50)
        .start(|x: u64| mix(x, 2000))
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let killed = Arc::new(Mutex::new(HashSet::new()));
    let killer = {
        let (stop, killed) = (Arc::clone(&stop), Arc::clone(&killed));
        std::thread::spawn(move || {
            let mut round = 0usize;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(40));
                let pids = workers_of(NAME);
                if pids.is_empty() {
                    continue;
                }
                let pid = pids[round % pids.len()];
                round += 1;
                if sigkill(pid) {
                    killed.lock().unwrap().insert(pid);
                }
            }
        })
    };
    let mut next = 0u64;
    for r in pool.map(0..N) {
        assert_eq!(r.unwrap(), mix(next, 2000), "task {next}");
        next += 1;
    }
    stop.store(true, Ordering::Relaxed);
    killer.join().unwrap();
    assert_eq!(next, N);
    let killed = killed.lock().unwrap().len() as u64;
    assert!(killed >= 5, "only {killed} kills: the map was too short");
    // Back to W workers, every one alive.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        pool.check_workers().unwrap();
        let s = pool.stats();
        if s.restarted == killed {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted {} of {killed} killed",
            s.restarted
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let pids = pool.worker_pids();
    assert_eq!(pids.len(), W);
    assert!(pids.iter().all(|&p| alive(p)));
    let stats = pool.stats();
    assert_eq!((stats.succeeded, stats.failed), (N, 0));
    assert!(stats.retried >= 1, "{stats:?}");
    eprintln!("killed {killed} workers: {stats:?}");
    pool.shutdown().unwrap();
}

/// Long tasks after many short ones are spread over the workers: the
/// parent packs short tasks together, never long ones (a worker would sit
/// on a pack of them while the others idle).
#[test]
fn long_tasks_after_short_ones_are_spread_over_the_workers() {
    const W: usize = 4;
    const LONG: u64 = 40;
    let mut pool = builder("long_tasks_after_short_ones_are_spread_over_the_workers")
        .workers(W)
        .start(|x: u64| {
            if x >= 1 << 32 {
                std::thread::sleep(Duration::from_millis(20));
            }
            u64::from(std::process::id())
        })
        .unwrap();
    // Short ones first, until the parent packs them.
    assert_eq!(pool.map(0..50_000u64).filter(|r| r.is_ok()).count(), 50_000);
    let mut per_worker = std::collections::HashMap::new();
    for r in pool.map((0..LONG).map(|i| (1 << 32) + i)) {
        *per_worker.entry(r.unwrap()).or_insert(0u64) += 1;
    }
    let most = per_worker.values().copied().max().unwrap();
    assert!(
        per_worker.len() == W && most <= LONG / 2,
        "{LONG} long tasks over {W} workers ran {per_worker:?}"
    );
    pool.shutdown().unwrap();
}

/// Memory stays flat however many tasks go through a window of 4096: 10
/// million submitted one by one (each result taken as it comes), then a
/// million through `map` (in order, its reorder buffer bounded by the
/// window). The figure after the first tenth and at the end are compared.
/// Run in a process of its own, so that other tests do not move its RSS.
/// A debug build submits a million (a minute for ten); `.ci/test` runs it
/// in release too, with the full ten million.
#[test]
fn back_pressure_keeps_memory_flat() {
    const NAME: &str = "back_pressure_keeps_memory_flat";
    const N: u64 = if cfg!(debug_assertions) {
        1_000_000
    } else {
        10_000_000
    };
    const MAPPED: u64 = 1_000_000;
    if std::env::var_os("POOL_TEST_ALONE").is_none() && !mulproc::pool::is_worker() {
        let status = Command::new(std::env::current_exe().unwrap())
            .args([NAME, "--exact", "--nocapture", "--test-threads=1"])
            .env("POOL_TEST_ALONE", "1")
            .stdin(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "the test in its own process: {status}");
        return;
    }
    let mut pool = builder(NAME)
        .workers(2)
        .window(4096)
        .start(|x: u64| x.wrapping_mul(3))
        .unwrap();
    let mut seen = vec![0u64; N.div_ceil(64) as usize];
    // Its pages are mapped now, not as the test goes.
    seen.iter_mut().for_each(|w| *w = std::hint::black_box(0));
    let mut take = |c: mulproc::pool::Completed<u64>| {
        let i = c.id;
        assert_eq!(c.result.unwrap(), i.wrapping_mul(3), "task {i}");
        assert_eq!(seen[i as usize / 64] & (1 << (i % 64)), 0, "task {i} twice");
        seen[i as usize / 64] |= 1 << (i % 64);
    };
    let mut at_tenth = 0;
    for i in 0..N {
        assert_eq!(pool.submit(i).unwrap(), i);
        while let Some(c) = pool.try_next_result().unwrap() {
            take(c);
        }
        if i == N / 10 {
            at_tenth = rss_kib();
        }
    }
    while let Some(c) = pool.next_result().unwrap() {
        take(c);
    }
    let answered: u64 = seen.iter().map(|w| u64::from(w.count_ones())).sum();
    assert_eq!(answered, N, "every task answered once");
    let mut next = 0;
    for r in pool.map(0..MAPPED) {
        assert_eq!(r.unwrap(), next * 3);
        next += 1;
    }
    assert_eq!(next, MAPPED);
    let at_end = rss_kib();
    eprintln!(
        "RSS after {} tasks: {at_tenth} KiB, after {}: {at_end} KiB",
        N / 10,
        N + MAPPED
    );
    assert!(
        at_end <= at_tenth + 1024,
        "RSS grew from {at_tenth} to {at_end} KiB"
    );
    let stats = pool.shutdown().unwrap();
    assert_eq!(stats.succeeded, N + MAPPED);
}

#[cfg(feature = "serde")]
#[test]
fn serde_values_and_handler_errors() {
    let mut pool = builder("serde_values_and_handler_errors")
        .workers(2)
        .serde()
        .max_result_bytes(300)
        .start_fallible(|s: String| {
            if s.is_empty() {
                Err("empty input")
            } else {
                Ok((s.len(), s.to_uppercase()))
            }
        })
        .unwrap();
    let inputs = ["abc", "", "héllo", "x"].map(String::from);
    let out: Vec<_> = pool.map(inputs).collect();
    assert_eq!(out[0].as_ref().unwrap(), &(3, "ABC".to_string()));
    assert!(matches!(&out[1], Err(TaskError::Failed { message }) if message == "empty input"));
    assert_eq!(out[2].as_ref().unwrap(), &(6, "HÉLLO".to_string()));
    assert_eq!(out[3].as_ref().unwrap(), &(1, "X".to_string()));
    // A result over its limit is that task's error; the pool goes on.
    let big = pool.map(["q".repeat(400)]).next().unwrap();
    assert!(
        matches!(
            big,
            Err(TaskError::TooLarge {
                what: "result",
                max: 300,
                ..
            })
        ),
        "{big:?}"
    );
    // Too large for the default 1024 bytes: refused at submit, nothing sent.
    let e = pool.submit("y".repeat(5000)).unwrap_err();
    assert!(e.to_string().contains("larger than"), "{e}");
    pool.shutdown().unwrap();
}

#[test]
fn drop_on_panic_leaves_no_process_and_no_segment() {
    let pids = std::panic::catch_unwind(|| {
        let pool = builder("drop_on_panic_leaves_no_process_and_no_segment")
            .workers(2)
            .start(|x: u64| x)
            .unwrap();
        let pids = pool.worker_pids();
        // A panic that unwinds through the pool (without the hook's noise).
        std::panic::resume_unwind(Box::new(pids));
    })
    .unwrap_err()
    .downcast::<Vec<u32>>()
    .unwrap();
    assert_eq!(pids.len(), 2);
    for pid in pids.iter() {
        assert!(!alive(*pid), "worker {pid} still there");
    }
}

// ------------------------------------------------ the parent is killed ---

/// Run only as the child of `parent_killed_workers_leave_within_a_second`
/// (it sets the variable): a parent that prints its workers' pids, then
/// maps forever until it is killed.
#[test]
fn doomed_parent() {
    if std::env::var_os("POOL_TEST_DOOMED").is_none() {
        return;
    }
    let mut pool = builder("doomed_parent")
        .workers(3)
        .start(|x: u64| mix(x, 500))
        .unwrap();
    let pids = pool.worker_pids();
    println!(
        "pids {}",
        pids.iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(" ")
    );
    for r in pool.map(0..u64::MAX) {
        r.unwrap();
    }
}

#[test]
fn parent_killed_workers_leave_within_a_second() {
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .args([
            "doomed_parent",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("POOL_TEST_DOOMED", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let ppid = parent.id();
    let mut line = String::new();
    let mut out = BufReader::new(parent.stdout.take().unwrap());
    let pids: Vec<u32> = loop {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the parent ended early"
        );
        // libtest writes "test doomed_parent ... " before it.
        if let Some(at) = line.find("pids ") {
            break line[at + 5..]
                .split_whitespace()
                .map(|p| p.parse().unwrap())
                .collect();
        }
    };
    assert_eq!(pids.len(), 3);
    std::thread::sleep(Duration::from_millis(300)); // mid-map
    assert!(
        !leftovers(ppid).is_empty(),
        "the pool's segments exist while it runs"
    );
    sigkill(ppid);
    parent.wait().unwrap();
    let killed = Instant::now();
    while pids.iter().any(|&p| alive(p)) || !leftovers(ppid).is_empty() {
        assert!(
            killed.elapsed() < Duration::from_secs(1),
            "after 1 s: workers alive {:?}, segments left {:?}",
            pids.iter().filter(|&&p| alive(p)).collect::<Vec<_>>(),
            leftovers(ppid)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    eprintln!(
        "workers and segments gone {:?} after the parent's death",
        killed.elapsed()
    );
}

#[test]
fn workers_that_never_reach_start_fail_the_pool_with_a_reason() {
    // The workers run a test that does not exist: they exit at once.
    let e = Pool::builder()
        .name("never_started")
        .worker_args(["no_such_test", "--exact"])
        .quiet_workers(true)
        .workers(2)
        .start(|x: u64| x)
        .unwrap_err();
    assert!(
        matches!(e, mulproc::pool::PoolError::WorkersCannotStart { .. }),
        "{e}"
    );
    assert!(e.to_string().contains("Builder::start"), "{e}");
}

#[test]
fn bad_settings_are_refused_before_anything_starts() {
    for (b, what) in [
        (Pool::builder().workers(0), "workers"),
        (Pool::builder().window(0), "window"),
        (Pool::builder().max_attempts(0), "max_attempts"),
        (Pool::builder().worker_batch(65), "worker_batch"),
    ] {
        let e = b.start(|x: u64| x).unwrap_err();
        assert!(e.to_string().contains(what), "{what}: {e}");
    }
}

#[test]
fn kill_stops_at_once_and_leaves_no_process() {
    let mut pool = builder("kill_stops_at_once_and_leaves_no_process")
        .workers(2)
        .start(|x: u64| mix(x, 100_000))
        .unwrap();
    for x in 0..100 {
        pool.submit(x).unwrap();
    }
    let pids = pool.worker_pids();
    let started = Instant::now();
    let stats = pool.kill();
    assert!(started.elapsed() < Duration::from_secs(1));
    assert_eq!(stats.submitted, 100);
    assert!(pids.iter().all(|&p| !alive(p)));
}

/// The pool over a backend of the caller's own (here shared memory again,
/// counting what the pool asks of it): the path a Redis backend takes.
#[test]
fn a_pool_runs_over_any_backend() {
    use mulproc::pool::{Backend, ChannelSpec, Purpose, ShmBackend};
    use mulproc::{BackendError, Queue};
    use std::sync::atomic::AtomicUsize;

    static CREATED: AtomicUsize = AtomicUsize::new(0);
    static OPENED: AtomicUsize = AtomicUsize::new(0);
    static REMOVED: AtomicUsize = AtomicUsize::new(0);

    #[derive(Debug)]
    struct Counting;
    impl Backend for Counting {
        type Channel = Queue;
        fn create(&self, spec: &ChannelSpec) -> Result<Queue, BackendError> {
            assert!(matches!(spec.purpose, Purpose::Tasks | Purpose::Results));
            CREATED.fetch_add(1, Ordering::Relaxed);
            ShmBackend.create(spec)
        }
        fn name(&self, channel: &Queue) -> String {
            ShmBackend.name(channel)
        }
        fn open(&self, name: &str) -> Result<Queue, BackendError> {
            OPENED.fetch_add(1, Ordering::Relaxed);
            ShmBackend.open(name)
        }
        fn remove(&self, name: &str) -> Result<(), BackendError> {
            REMOVED.fetch_add(1, Ordering::Relaxed);
            ShmBackend.remove(name)
        }
    }

    let mut pool = builder("a_pool_runs_over_any_backend")
        .workers(2)
        .backend(Counting)
        .start(|x: u32| x ^ 0xFFFF)
        .unwrap();
    let out: Vec<u32> = pool.map(0..1000u32).map(|r| r.unwrap()).collect();
    assert!(out.iter().enumerate().all(|(i, &v)| v == i as u32 ^ 0xFFFF));
    pool.shutdown().unwrap();
    assert_eq!(CREATED.load(Ordering::Relaxed), 2, "tasks and results");
    assert_eq!(
        OPENED.load(Ordering::Relaxed),
        0,
        "opened in the workers, not here"
    );
    assert!(
        REMOVED.load(Ordering::Relaxed) >= 2,
        "both removed at shutdown"
    );
}

/// Workers that are another program (`worker_command`), serving with
/// `serve_worker`: here the test binary again, reaching `serve_worker`
/// before any builder; and `next_result_timeout`'s bounded waits.
#[test]
fn workers_of_another_program_serve_with_serve_worker() {
    use mulproc::pool::{serve_worker, BytesCodec, PoolError};
    const NAME: &str = "workers_of_another_program_serve_with_serve_worker";
    if mulproc::pool::is_worker() {
        let e = serve_worker::<BytesCodec, Vec<u8>, Vec<u8>, String, _>(|mut v: Vec<u8>| {
            if v == b"slow" {
                std::thread::sleep(Duration::from_millis(300));
            }
            if v == b"fail" {
                return Err("asked to fail".to_owned());
            }
            v.reverse();
            Ok(v)
        });
        panic!("serve_worker returned in a worker: {e}");
    }
    assert!(matches!(
        serve_worker::<BytesCodec, Vec<u8>, Vec<u8>, String, _>(|v: Vec<u8>| Ok(v)),
        PoolError::Config(_)
    ));
    let exe = std::env::current_exe().unwrap();
    let mut pool = Pool::builder()
        .bytes()
        .name(NAME)
        .workers(2)
        .worker_command(exe, [NAME, "--exact", "--nocapture", "--test-threads=1"])
        .quiet_workers(true)
        // Never run: the workers serve with serve_worker's handler.
        .start_fallible(|_: Vec<u8>| Err::<Vec<u8>, &str>("not this handler"))
        .unwrap();
    let out: Vec<Vec<u8>> = pool
        .map((0..100u8).map(|i| vec![i, 1, 2]))
        .map(|r| r.unwrap())
        .collect();
    assert!(out.iter().enumerate().all(|(i, v)| v == &[2, 1, i as u8]));
    let id = pool.submit(b"fail".to_vec()).unwrap();
    let c = pool
        .next_result_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap();
    assert_eq!(c.id, id);
    assert!(matches!(c.result, Err(TaskError::Failed { message }) if message == "asked to fail"));
    pool.submit(b"slow".to_vec()).unwrap();
    let t = Instant::now();
    assert!(pool
        .next_result_timeout(Duration::from_millis(50))
        .unwrap()
        .is_none());
    assert!(
        t.elapsed() < Duration::from_millis(250),
        "{:?}",
        t.elapsed()
    );
    assert_eq!(pool.pending_results(), 1);
    let c = pool
        .next_result_timeout(Duration::from_secs(30))
        .unwrap()
        .unwrap();
    assert_eq!(c.result.unwrap(), b"wols");
    assert_eq!(pool.pending_results(), 0);
    assert!(pool
        .next_result_timeout(Duration::from_secs(5))
        .unwrap()
        .is_none());
    pool.shutdown().unwrap();
}
