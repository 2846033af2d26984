//! Workers that join a named pool from outside (`Builder::serve`), as a
//! process on another machine would: started by the test with nothing but
//! the server's URL and the pool's name, not by the pool (which does not
//! know their pids, and whose parent here has no local worker at all).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mulproc::pool::{Pool, TaskError};
use mulproc_redis::{RedisBackend, RedisOptions};

const URL: &str = "MULPROC_REDIS_REMOTE_URL";
const POOL: &str = "MULPROC_REDIS_REMOTE_POOL";
/// Runs to serve before exiting.
const RUNS: &str = "MULPROC_REDIS_REMOTE_RUNS";
/// Milliseconds each task takes.
const DELAY: &str = "MULPROC_REDIS_REMOTE_DELAY_MS";
/// The input whose task aborts the worker process.
const POISON: &str = "MULPROC_REDIS_REMOTE_POISON";
/// Set: the worker prints `running <x>` as each task starts.
const SAY: &str = "MULPROC_REDIS_REMOTE_SAY";

const CLAIM: Duration = Duration::from_millis(600);

fn backend(url: &str, pool: &str) -> RedisBackend {
    RedisBackend::new(url)
        .expect("url")
        .claim_after(CLAIM)
        .lease(Duration::from_millis(1000))
        .options(RedisOptions::default().poll(Duration::from_millis(20)))
        .pool(pool)
        .expect("pool name")
}

fn handler(delay: Duration, poison: Option<u64>) -> impl FnMut(u64) -> u64 {
    let say = std::env::var_os(SAY).is_some();
    move |x: u64| {
        if say {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "running {x}");
            let _ = out.flush();
        }
        if poison == Some(x) {
            std::process::abort();
        }
        if !delay.is_zero() {
            std::thread::sleep(delay);
        }
        x * x + 1
    }
}

/// Not a test: the body of the remote worker processes the other tests
/// start. Serves `RUNS` runs of the pool, then prints what it did and
/// exits.
#[test]
#[ignore = "helper process, started by other tests"]
fn remote_worker_process() {
    let (Ok(url), Ok(pool)) = (std::env::var(URL), std::env::var(POOL)) else {
        return;
    };
    let num = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<u64>().ok());
    let runs = num(RUNS).unwrap_or(1);
    let delay = Duration::from_millis(num(DELAY).unwrap_or(0));
    let builder = Pool::builder()
        .worker_batch(8)
        .max_attempts(1)
        .backend(backend(&url, &pool));
    let mut h = handler(delay, num(POISON));
    let (mut tasks, mut redelivered, mut given_up) = (0, 0, 0);
    for run in 0..runs {
        println!("waiting for run {run}");
        let served = builder.serve(&mut h).expect("serve");
        tasks += served.tasks;
        redelivered += served.redelivered;
        given_up += served.given_up;
    }
    println!("served tasks={tasks} redelivered={redelivered} given_up={given_up}");
}

/// Not a test: a pool's parent in a process of its own, with no local
/// worker, that submits tasks, takes every result, says so, and then
/// waits to be killed (it never shuts the pool down).
#[test]
#[ignore = "helper process, started by other tests"]
fn parent_process() {
    let (Ok(url), Ok(pool)) = (std::env::var(URL), std::env::var(POOL)) else {
        return;
    };
    let mut pool = Pool::builder()
        .workers(0)
        .worker_batch(8)
        .max_attempts(1)
        .backend(backend(&url, &pool))
        .start(handler(Duration::ZERO, None))
        .expect("parent: start");
    let n = pool.map(0..100u64).filter(Result::is_ok).count();
    println!("parent answered={n}");
    std::thread::sleep(Duration::from_secs(60));
}

/// A remote worker process, killed (and reaped) if the test fails.
struct Remote {
    child: Option<Child>,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Remote {
    fn start(url: &str, pool: &str, envs: &[(&str, String)]) -> Remote {
        Remote::start_as("remote_worker_process", url, pool, envs)
    }

    /// The test binary running just the helper `test`.
    fn start_as(test: &str, url: &str, pool: &str, envs: &[(&str, String)]) -> Remote {
        let mut c = Command::new(std::env::current_exe().expect("test binary"));
        c.args([
            test,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(URL, url)
        .env(POOL, pool)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
        for (k, v) in envs {
            c.env(k, v);
        }
        let mut child = c.spawn().expect("start a remote worker");
        let out = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Remote {
            child: Some(child),
            lines: rx,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Waits for a line of its output that holds `prefix`, and returns it
    /// from there (the test harness may print before it on the line).
    fn line(&self, prefix: &str, timeout: Duration) -> Option<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(prefix) => {
                    return l.find(prefix).map(|i| l[i..].to_owned());
                }
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Waits for it to exit; its status.
    fn wait(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let c = self.child.as_mut().expect("running");
        loop {
            if let Some(s) = c.try_wait().expect("try_wait") {
                self.child = None;
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits for its `served` line (its `serve` returned: `what` says
    /// when that should be) and for it to exit 0; the line's counts.
    fn served(&mut self, what: &str) -> (u64, u64, u64) {
        let line = self
            .line("served", Duration::from_secs(10))
            .unwrap_or_else(|| panic!("no `served` line: {what}"));
        let status = self.wait(Duration::from_secs(10)).expect("exits");
        assert!(status.success(), "{status}");
        counts(&line)
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Remote {
    fn drop(&mut self) {
        self.kill();
    }
}

/// `tasks=N redelivered=R given_up=G` of a worker's last line.
fn counts(line: &str) -> (u64, u64, u64) {
    let v: Vec<u64> = line
        .split_whitespace()
        .filter_map(|kv| kv.split_once('=').and_then(|(_, v)| v.parse().ok()))
        .collect();
    (v[0], v[1], v[2])
}

fn keys_left(server: &common::Server) -> i64 {
    redis::cmd("DBSIZE").query(&mut server.client()).unwrap()
}

#[test]
fn remote_workers_serve_a_pool_that_has_no_local_worker() {
    let server = common::Server::start();
    let pool_name = common::unique("remote-serve");
    // The workers start first: they wait for the pool to appear.
    let mut remotes: Vec<Remote> = (0..2)
        .map(|_| Remote::start(&server.url(), &pool_name, &[]))
        .collect();
    for r in &remotes {
        assert!(r
            .line("waiting for run 0", Duration::from_secs(20))
            .is_some());
    }
    let mut pool = Pool::builder()
        .workers(0)
        .worker_batch(8)
        .max_attempts(1)
        .backend(backend(&server.url(), &pool_name))
        .start(handler(Duration::ZERO, None))
        .expect("start the pool");
    assert!(pool.worker_pids().is_empty());
    let out: Vec<u64> = pool
        .map(0..2000u64)
        .map(|r| r.expect("every task answered"))
        .collect();
    assert_eq!(out.len(), 2000);
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, (i as u64) * (i as u64) + 1, "result {i}");
    }
    let stats = pool.shutdown().expect("shutdown");
    assert_eq!(stats.succeeded, 2000);
    assert_eq!(stats.failed, 0);
    // The run ended: each worker's serve returned, and it exited.
    let mut total = 0;
    for r in &mut remotes {
        let (tasks, redelivered, _) = r.served("the worker returns when the run ends");
        assert_eq!(redelivered, 0, "nobody died");
        total += tasks;
    }
    // Nobody died, so nothing ran twice.
    assert_eq!(total, 2000, "every task ran once");
    assert_eq!(stats.duplicates, 0);
    assert_eq!(keys_left(&server), 0, "keys left behind");
}

#[test]
fn a_remote_worker_killed_mid_task_has_its_tasks_reclaimed() {
    let server = common::Server::start();
    let pool_name = common::unique("remote-kill");
    let delay = [(DELAY, "5".to_owned()), (SAY, "1".to_owned())];
    let victim = Remote::start(&server.url(), &pool_name, &delay);
    let mut survivor = Remote::start(&server.url(), &pool_name, &delay);
    let mut pool = Pool::builder()
        .workers(0)
        .worker_batch(8)
        .max_attempts(1)
        .backend(backend(&server.url(), &pool_name))
        .start(handler(Duration::ZERO, None))
        .expect("start the pool");
    let pid = victim.pid();
    let killer = std::thread::spawn(move || {
        // Its 20th task has just started (it sleeps 5 ms in it): now.
        for _ in 0..20 {
            victim.line("running", Duration::from_secs(30));
        }
        // SAFETY: kill(2) has no memory effects.
        let killed = unsafe { libc::kill(pid as i32, libc::SIGKILL) == 0 };
        (killed, victim)
    });
    let out: Vec<u64> = pool
        .map(0..400u64)
        .map(|r| r.expect("every task answered"))
        .collect();
    let (killed, mut victim) = killer.join().unwrap();
    assert!(killed, "the victim was alive to be killed");
    assert!(victim.wait(Duration::from_secs(5)).is_some(), "killed");
    assert_eq!(out.len(), 400);
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, (i as u64) * (i as u64) + 1, "result {i}");
    }
    let stats = pool.shutdown().expect("shutdown");
    // Every result once to the caller (a second copy would be dropped).
    assert_eq!(stats.succeeded, 400);
    let (tasks, redelivered, given_up) = survivor.served("the survivor returns when the run ends");
    assert!(
        redelivered >= 1,
        "the task the victim held was taken over: {redelivered} redelivered"
    );
    assert_eq!(given_up, 0);
    assert!(tasks >= redelivered);
    assert_eq!(keys_left(&server), 0, "keys left behind");
}

#[test]
fn a_task_that_kills_its_remote_workers_is_given_up() {
    let server = common::Server::start();
    let pool_name = common::unique("remote-poison");
    let env = [(DELAY, "2".to_owned()), (POISON, "13".to_owned())];
    // max_attempts(1): the first worker dies holding it (not counted),
    // the second dies running it alone (counted), the third gives it up.
    let mut remotes: Vec<Remote> = (0..3)
        .map(|_| Remote::start(&server.url(), &pool_name, &env))
        .collect();
    let mut pool = Pool::builder()
        .workers(0)
        .worker_batch(8)
        .max_attempts(1)
        .backend(backend(&server.url(), &pool_name))
        .start(handler(Duration::ZERO, None))
        .expect("start the pool");
    let results: Vec<Result<u64, TaskError>> = pool.map(0..100u64).collect();
    for (i, r) in results.iter().enumerate() {
        match (i, r) {
            (13, Err(TaskError::Killed { attempts, .. })) => assert_eq!(*attempts, 1),
            (13, other) => panic!("task 13: {other:?}"),
            (i, Ok(v)) => assert_eq!(*v, (i as u64) * (i as u64) + 1),
            (i, Err(e)) => panic!("task {i}: {e}"),
        }
    }
    let stats = pool.shutdown().expect("shutdown");
    assert_eq!((stats.succeeded, stats.failed), (99, 1));
    // Two workers died of task 13 (SIGABRT); the third gave it up,
    // served the rest and returned when the run ended.
    let mut aborted = 0;
    let mut gave_up = 0;
    for r in &mut remotes {
        let status = r.wait(Duration::from_secs(10)).expect("every worker ends");
        if status.success() {
            let line = r
                .line("served", Duration::from_secs(1))
                .expect("its counts");
            gave_up += counts(&line).2;
        } else {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(status.signal(), Some(libc::SIGABRT), "{status}");
            aborted += 1;
        }
    }
    assert_eq!((aborted, gave_up), (2, 1));
    assert_eq!(keys_left(&server), 0, "keys left behind");
}

#[test]
fn a_remote_worker_serves_one_run_after_another() {
    let server = common::Server::start();
    let pool_name = common::unique("remote-runs");
    let mut remote = Remote::start(&server.url(), &pool_name, &[(RUNS, "2".to_owned())]);
    assert!(remote
        .line("waiting for run 0", Duration::from_secs(20))
        .is_some());
    // No pool yet: it waits (asleep), it does not exit.
    std::thread::sleep(Duration::from_millis(600));
    assert!(remote.alive(), "a worker waits for the pool to appear");
    for run in 0..2u64 {
        let mut pool = Pool::builder()
            .workers(0)
            .worker_batch(8)
            .max_attempts(1)
            .backend(backend(&server.url(), &pool_name))
            .start(handler(Duration::ZERO, None))
            .expect("start the pool");
        let sum: u64 = pool.map(0..300u64).map(|r| r.expect("answered")).sum();
        assert_eq!(sum, (0..300u64).map(|i| i * i + 1).sum::<u64>());
        // A second parent of the same pool is refused while this one runs.
        let second = Pool::builder()
            .workers(0)
            .backend(backend(&server.url(), &pool_name))
            .start(handler(Duration::ZERO, None));
        let err = second.expect_err("one parent at a time").to_string();
        assert!(err.contains("already run by a live parent"), "{err}");
        pool.shutdown().expect("shutdown");
        if run == 0 {
            assert!(remote
                .line("waiting for run 1", Duration::from_secs(10))
                .is_some());
            assert!(remote.alive(), "it waits for the next run");
        }
    }
    assert_eq!(remote.served("served both runs").0, 600);
    assert_eq!(keys_left(&server), 0, "keys left behind");
}

#[test]
fn a_remote_worker_returns_when_the_parent_dies_and_reaps_its_run() {
    let server = common::Server::start();
    let pool_name = common::unique("remote-orphan");
    let mut worker = Remote::start(&server.url(), &pool_name, &[]);
    let mut parent = Remote::start_as("parent_process", &server.url(), &pool_name, &[]);
    let line = parent
        .line("parent answered", Duration::from_secs(30))
        .expect("the parent got its results");
    assert_eq!(line, "parent answered=100");
    assert!(keys_left(&server) > 0, "the run's keys are there");
    let parent_pid = parent.pid();
    let killed = Instant::now();
    parent.kill(); // SIGKILL: no shutdown, its lease is left to run out
                   // Nothing of it on this machine either (its pool's board, with no
                   // slot, had no name to leave behind).
    let prefix = format!("mulproc.u-{parent_pid}-");
    let left: Vec<String> = std::fs::read_dir("/dev/shm")
        .expect("/dev/shm")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    assert!(left.is_empty(), "left in /dev/shm: {left:?}");
    let line = worker
        .line("served", Duration::from_secs(10))
        .expect("the worker returns once the parent's lease ran out");
    // The lease is 1 s; the worker looks every 250 ms.
    assert!(
        killed.elapsed() < Duration::from_secs(5),
        "{:?}",
        killed.elapsed()
    );
    assert_eq!(counts(&line).0, 100);
    assert!(worker
        .wait(Duration::from_secs(10))
        .expect("exits")
        .success());
    // It removed what the dead run left.
    assert_eq!(keys_left(&server), 0, "keys left behind");
}

#[test]
fn a_pool_with_a_remote_worker_rides_out_a_redis_restart_with_aof_always() {
    let server = common::Server::start_aof_always();
    let url = server.url();
    let pool_name = common::unique("remote-restart");
    let mut worker = Remote::start(&url, &pool_name, &[(DELAY, "2".to_owned())]);
    // The parent's lease (5 s) outlasts the restart (well under a second
    // here): the run goes on.
    let mut pool = Pool::builder()
        .workers(0)
        .worker_batch(8)
        .max_attempts(1)
        .backend(backend(&url, &pool_name).lease(Duration::from_secs(5)))
        .start(handler(Duration::ZERO, None))
        .expect("start the pool");
    let restarter = std::thread::spawn(move || {
        let mut server = server;
        std::thread::sleep(Duration::from_millis(300));
        server.restart(); // SIGKILL, then the same port and AOF
        server
    });
    let out: Vec<u64> = pool
        .map(0..500u64)
        .map(|r| r.expect("every task answered across the restart"))
        .collect();
    let server = restarter.join().expect("restarted");
    for (i, v) in out.iter().enumerate() {
        assert_eq!(*v, (i as u64) * (i as u64) + 1, "result {i}");
    }
    let stats = pool.shutdown().expect("shutdown");
    // Nothing lost: every task answered once to the caller. (A task whose
    // acknowledgement the restart interrupted may run twice; its second
    // result is dropped.)
    assert_eq!(stats.succeeded, 500);
    let (tasks, _, _) = worker.served("the worker returns when the run ends");
    assert!(tasks >= 500, "{tasks} tasks");
    assert_eq!(keys_left(&server), 0, "keys left behind");
}

/// CPU time of the calling thread.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

#[test]
fn a_parent_with_no_worker_waits_asleep_until_one_joins() {
    let server = common::Server::start();
    let pool_name = common::unique("remote-nobody");
    let mut pool = Pool::builder()
        .workers(0)
        .worker_batch(8)
        .max_attempts(1)
        .backend(backend(&server.url(), &pool_name))
        .start(handler(Duration::ZERO, None))
        .expect("start the pool");
    let ids: Vec<u64> = (0..10u64)
        .map(|x| pool.submit(x).expect("submit"))
        .collect();
    // Nobody serves: the wait for a result sleeps (blocking reads of
    // Redis), it does not spin.
    let (cpu0, t0) = (thread_cpu(), Instant::now());
    let got = pool
        .next_result_timeout(Duration::from_secs(1))
        .expect("a wait");
    let (cpu, waited) = (thread_cpu() - cpu0, t0.elapsed());
    assert!(got.is_none(), "no worker, no result");
    assert!(waited >= Duration::from_millis(950), "{waited:?}");
    assert!(
        cpu < Duration::from_millis(100),
        "{cpu:?} of CPU in a 1 s wait"
    );
    // The tasks waited in Redis: a worker that joins now answers them.
    let mut worker = Remote::start(&server.url(), &pool_name, &[]);
    let mut answered = Vec::new();
    while let Some(done) = pool.next_result().expect("a result") {
        assert_eq!(done.result.expect("ok"), done.id * done.id + 1);
        answered.push(done.id);
    }
    answered.sort_unstable();
    assert_eq!(answered, ids);
    pool.shutdown().expect("shutdown");
    assert_eq!(worker.served("returns").0, 10);
    assert_eq!(keys_left(&server), 0, "keys left behind");
}

#[test]
fn serve_refuses_clearly_what_it_cannot_join() {
    // No pool name: nothing to find.
    let unnamed = Pool::builder().backend(RedisBackend::new("redis://127.0.0.1:1/").expect("url"));
    let err = unnamed.serve(|x: u64| x).expect_err("no pool name");
    assert!(err.to_string().contains("RedisBackend::pool"), "{err}");
    // Shared memory has no remote workers.
    let shm = Pool::builder().backend(mulproc_redis::AnyBackend::from_url("shm").expect("shm"));
    assert!(shm.serve(|x: u64| x).is_err());
    // A pool name Redis keys cannot carry.
    let bad = RedisBackend::new("redis://127.0.0.1:1/")
        .expect("url")
        .pool("no spaces/or slashes");
    assert!(matches!(
        bad,
        Err(mulproc_redis::RedisSetupError::InvalidName { .. })
    ));
    // A server that is not there: an error once the reconnect time is out,
    // not a wait forever.
    let port = common::free_port();
    let gone = RedisBackend::new(&format!("redis://127.0.0.1:{port}/"))
        .expect("url")
        .options(
            RedisOptions::default()
                .reconnect_for(Duration::from_millis(300))
                .connect_timeout(Duration::from_millis(200)),
        )
        .pool("jobs")
        .expect("name");
    let t = Instant::now();
    let err = Pool::builder()
        .backend(gone)
        .serve(|x: u64| x)
        .expect_err("unreachable");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert!(
        err.to_string().contains("connection") || err.to_string().contains("reconnect"),
        "{err}"
    );
}
