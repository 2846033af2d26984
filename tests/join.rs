//! `task_done`/`join` with Python's JoinableQueue meaning (pymulproc's
//! `queue_join`), across real processes (see `common`).

mod common;

use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use common::*;
use mulproc::{JoinTimeoutError, Message, Queue, QueueConfig, Request, TaskDoneError};

/// Generous timeouts: the machine is shared and noisy.
const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);
const TASKS: u64 = 100;
/// How long the worker sleeps between receiving everything and marking it
/// done.
const WORK_MS: u64 = 200;

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on the
/// machine (what `Instant` uses, but printable).
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// `join()` bounded by `timeout`, so a broken join fails the test instead of
/// hanging it: runs on a thread; returns when join returned, or `None`.
fn join_bounded(q: &Arc<Queue>, timeout: Duration) -> Option<u64> {
    let (tx, rx) = mpsc::channel();
    let q = Arc::clone(q);
    std::thread::spawn(move || {
        q.join();
        let _ = tx.send(monotonic_ns());
    });
    rx.recv_timeout(timeout).ok()
}

fn outstanding(r: Result<(), JoinTimeoutError>) -> u64 {
    r.expect_err("join_timeout returned Ok with work outstanding")
        .outstanding()
}

// --------------------------------------------------------------- roles ---

#[test]
fn child_entry() {
    common::child_entry(|role| match role {
        "slow_worker" => role_slow_worker(),
        "over_counter" => role_over_counter(),
        other => panic!("unknown role {other:?}"),
    });
}

/// Receives TASKS tasks, is ready, waits for "go" on CTL, works WORK_MS,
/// then marks every task done. Reports the monotonic time just before its
/// last `task_done`, and what one extra `task_done` said.
fn role_slow_worker() -> i32 {
    let q = Queue::open(&arg("QUEUE")).expect("open queue");
    let ctl = Queue::open(&arg("CTL")).expect("open ctl");
    for i in 0..TASKS {
        let m = q.recv_timeout(SHORT).expect("task");
        assert_eq!(m.read_pod::<u64>().unwrap(), i);
    }
    ready();
    let go = ctl.recv_timeout(LONG).expect("go");
    assert_eq!(go.request, Request::DO);
    std::thread::sleep(Duration::from_millis(WORK_MS));
    for _ in 0..TASKS - 1 {
        q.task_done().expect("task_done");
    }
    report("before_last_done_ns", monotonic_ns());
    q.task_done().expect("last task_done");
    report("extra", format!("{:?}", q.task_done()));
    0
}

/// Receives one message and calls `task_done` three times; reports how
/// many calls succeeded.
fn role_over_counter() -> i32 {
    let q = Queue::open(&arg("QUEUE")).expect("open queue");
    let before = q.task_done();
    assert_eq!(before, Err(TaskDoneError::TooManyCalls));
    q.recv_timeout(SHORT).expect("recv");
    let ok = (0..3).filter(|_| q.task_done().is_ok()).count();
    report("ok", ok);
    0
}

// --------------------------------------------------------------- tests ---

/// Pins: `join` returning while messages are received but not yet marked
/// done (an empty queue is not a joined one), or never returning after the
/// last `task_done` in another process. A worker process receives 100
/// tasks, sleeps 200 ms after the parent's "go", then marks them done; the
/// parent's `join` started at "go" must take ≥ 150 ms and return after the
/// worker's last `task_done` began (one monotonic clock for both).
#[test]
fn join_waits_for_task_done_in_another_process() {
    let shm = ShmGuard::new("join-worker");
    let ctl_shm = ShmGuard::new("join-ctl");
    let q = Arc::new(Queue::create(shm.name(), QueueConfig::new(128, 16)).unwrap());
    let ctl = Queue::create(ctl_shm.name(), QueueConfig::new(4, 8)).unwrap();
    for i in 0..TASKS {
        q.try_send(Message::pod(Request::DO, &i)).unwrap();
    }
    // Nothing received yet.
    assert_eq!(
        outstanding(q.join_timeout(Duration::from_millis(50))),
        TASKS
    );
    let mut child = ChildProc::spawn(
        "slow_worker",
        &[
            ("QUEUE", shm.name().to_owned()),
            ("CTL", ctl_shm.name().to_owned()),
        ],
    );
    child.wait_ready(SHORT);
    // Everything received, nothing done: empty, but not joined.
    assert!(q.is_empty());
    let t = Instant::now();
    assert_eq!(
        outstanding(q.join_timeout(Duration::from_millis(50))),
        TASKS
    );
    assert!(
        t.elapsed() >= Duration::from_millis(45),
        "join_timeout returned early"
    );

    let t = Instant::now();
    ctl.send(Message::signal(Request::DO)).unwrap();
    let joined_ns = join_bounded(&q, LONG).expect("join never returned");
    let elapsed = t.elapsed();
    let f = child.wait_success(SHORT);
    eprintln!("join returned {elapsed:?} after go");
    assert!(
        elapsed >= Duration::from_millis(150),
        "join returned {elapsed:?} after go; the worker sleeps {WORK_MS} ms before task_done"
    );
    let last = f.get::<u64>("before_last_done_ns");
    assert!(
        joined_ns > last,
        "join returned {} ns before the worker's last task_done",
        last - joined_ns
    );
    assert_eq!(f.get::<String>("extra"), "Err(TooManyCalls)");
    q.join_timeout(Duration::ZERO).expect("still joined");
}

/// Pins: `join_timeout` not timing out (or returning early) with nothing
/// done, and over-counted `task_done` being accepted or counted: an extra
/// call is `TooManyCalls` and credits nothing (a later message must still
/// be waited for). `task_done` counts per handle: a handle that received
/// nothing cannot mark another handle's message done.
#[test]
fn join_timeout_and_over_counting_task_done() {
    let shm = ShmGuard::new("join-count");
    let q = Arc::new(Queue::create(shm.name(), QueueConfig::new(8, 16)).unwrap());
    // A fresh queue is joined.
    q.join_timeout(Duration::ZERO)
        .expect("empty queue is joined");
    assert!(join_bounded(&q, SHORT).is_some(), "join on an empty queue");

    for i in 0..3u64 {
        q.try_send(Message::pod(Request::DO, &i)).unwrap();
    }
    let t = Instant::now();
    assert_eq!(outstanding(q.join_timeout(Duration::from_millis(100))), 3);
    let el = t.elapsed();
    assert!(el >= Duration::from_millis(95), "timed out after {el:?}");
    assert!(el < Duration::from_secs(10), "timed out after {el:?}");

    // Over-counting before anything was received.
    assert_eq!(q.task_done(), Err(TaskDoneError::TooManyCalls));
    assert_eq!(outstanding(q.join_timeout(Duration::ZERO)), 3);
    let _ = q.try_recv().unwrap();
    q.task_done().unwrap();
    assert_eq!(q.task_done(), Err(TaskDoneError::TooManyCalls));
    assert_eq!(outstanding(q.join_timeout(Duration::ZERO)), 2);

    // Another handle: its own count.
    let other = Queue::open(shm.name()).unwrap();
    assert_eq!(other.task_done(), Err(TaskDoneError::TooManyCalls));
    let _ = other.try_recv().unwrap();
    let _ = other.try_recv().unwrap();
    assert_eq!(outstanding(q.join_timeout(Duration::ZERO)), 2);
    other.task_done().unwrap();
    other.task_done().unwrap();
    assert_eq!(other.task_done(), Err(TaskDoneError::TooManyCalls));
    q.join_timeout(Duration::from_secs(1)).expect("all done");
    assert!(join_bounded(&q, SHORT).is_some(), "join after all done");

    // The refused calls credited nothing: a new message is outstanding.
    q.try_send(Message::signal(Request::DO)).unwrap();
    assert_eq!(outstanding(q.join_timeout(Duration::from_millis(50))), 1);
    let _ = q.recv_timeout(SHORT).unwrap();
    assert_eq!(outstanding(q.join_timeout(Duration::ZERO)), 1);
    q.task_done().unwrap();
    q.join_timeout(Duration::ZERO).expect("joined again");
}

/// Pins: over-counting in another process crediting messages it never
/// received: a child receives one of two messages and calls `task_done`
/// three times; only one call succeeds and one message stays outstanding.
#[test]
fn over_counting_in_another_process_changes_nothing() {
    let shm = ShmGuard::new("join-other");
    let q = Queue::create(shm.name(), QueueConfig::new(8, 16)).unwrap();
    q.try_send(Message::signal(Request::DO)).unwrap();
    q.try_send(Message::signal(Request::DO)).unwrap();
    let f =
        ChildProc::spawn("over_counter", &[("QUEUE", shm.name().to_owned())]).wait_success(SHORT);
    assert_eq!(f.get::<usize>("ok"), 1);
    assert_eq!(outstanding(q.join_timeout(Duration::from_millis(50))), 1);
    let _ = q.try_recv().unwrap();
    q.task_done().unwrap();
    q.join_timeout(Duration::from_secs(1)).expect("joined");
    assert!(q.is_empty());
}

/// Pins: `join` waiting for a message that was never sent. A reservation
/// dropped without commit (`try_reserve` then drop) was published as a
/// tombstone; it counted as outstanding for `join` (and in `len`) until some
/// receiver happened to skip over it, so with no receiver left (workers
/// gone) `join` never returns although every real message was done.
///
/// Reproduction: send one, receive it, `task_done`; `drop(try_reserve())`;
/// `join_timeout(100 ms)` gives `Err(JoinTimeoutError { outstanding: 1 })`
/// and `len()` is 1; one `try_recv` (which returns `Empty`) makes it `Ok`.
#[test]
fn dropped_reservation_is_not_outstanding_for_join() {
    let shm = ShmGuard::new("join-tombstone");
    let q = Queue::create(shm.name(), QueueConfig::new(8, 16)).unwrap();
    q.try_send(Message::signal(Request::DO)).unwrap();
    let _ = q.try_recv().unwrap();
    q.task_done().unwrap();
    drop(q.try_reserve().unwrap());
    assert_eq!(
        q.join_timeout(Duration::from_millis(100)),
        Ok(()),
        "join waits for a message nobody sent (len() = {})",
        q.len()
    );
}
