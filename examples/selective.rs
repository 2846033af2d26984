//! Selective receive: several workers on one queue, each taking only the
//! messages addressed to it, and a parent that picks results by sender or
//! by content rather than in arrival order.
//!
//! ```text
//! cargo run --example selective
//! ```
//!
//! * The parent sends every task on one `tasks` queue, addressed to one
//!   worker's pid (`Message::to`). Each worker receives with
//!   `recv_for_me`: messages addressed to its pid (or to anyone), never
//!   another's. The poison pills are addressed too (`stop_workers`).
//! * The workers answer on one `results` queue, interleaved as they run.
//!   The parent takes them worker by worker: with a predicate on the
//!   header (`recv_where_timeout(|h, _| h.sender == pid, ..)`), on the
//!   payload (`|_, data| data.starts_with(..)`), and with `recv_from`.
//!   A message the predicate passes over stays where it is for a later
//!   receive, and does not block the ones behind it.

use std::error::Error;
use std::time::Duration;

use mulproc::process::{self, Child};
use mulproc::{Message, Queue, QueueConfig, Request};

const WORKERS: usize = 3;
const TASKS_EACH: usize = 4;
const PATIENCE: Duration = Duration::from_secs(10);

fn main() -> Result<(), Box<dyn Error>> {
    if process::role().as_deref() == Some("worker") {
        return worker();
    }
    let tasks = Queue::create_unique(QueueConfig::new(64, 64))?;
    let results = Queue::create_unique(QueueConfig::new(64, 64))?;
    let mut workers = Vec::new();
    for _ in 0..WORKERS {
        let w = Child::role("worker")
            .queue("tasks", &tasks)
            .queue("results", &results)
            .die_with_parent(true)
            .spawn()?;
        workers.push(w);
    }
    let pids: Vec<u32> = workers.iter().map(|w| w.pid()).collect();

    // Task `t` of worker `k` is "w{k}-t{t}", addressed to that worker.
    let task = |k: usize, t: usize| format!("w{k}-t{t}");
    for t in 0..TASKS_EACH {
        for (k, &pid) in pids.iter().enumerate() {
            tasks.send(Message::new(Request::DO, task(k, t).into_bytes()).to(pid))?;
        }
    }
    // One pill each, addressed: it queues up behind that worker's tasks.
    process::stop_workers(&tasks, pids.iter().copied())?;

    // The answer to a task is the task's text followed by " done".
    let check = |m: Message, k: usize, t: usize| {
        let text = String::from_utf8_lossy(&m.data).into_owned();
        println!("parent: from worker {k} (pid {}): {text}", pids[k]);
        assert_eq!(text, format!("{} done", task(k, t)));
        assert_eq!(
            m.sender,
            Some(pids[k]),
            "answered by the worker it was sent to"
        );
    };
    // The last worker's answers first, picked by their header's sender ...
    let last = WORKERS - 1;
    for t in 0..TASKS_EACH {
        let m = results.recv_where_timeout(|h, _| h.sender == pids[last], PATIENCE)?;
        check(m, last, t);
    }
    // ... then the first worker's, picked by their payload ...
    for t in 0..TASKS_EACH {
        let m = results.recv_where_timeout(|_, data| data.starts_with(b"w0-"), PATIENCE)?;
        check(m, 0, t);
    }
    // ... then the others, with the shorthand for a sender.
    for (k, &pid) in pids.iter().enumerate().take(last).skip(1) {
        for t in 0..TASKS_EACH {
            check(results.recv_from_timeout(pid, PATIENCE)?, k, t);
        }
    }

    for w in &mut workers {
        assert!(w.wait()?.success(), "worker {} failed", w.pid());
    }
    assert!(tasks.is_empty() && results.is_empty());
    println!(
        "parent: {} answers, each from the worker it was addressed to",
        WORKERS * TASKS_EACH
    );
    Ok(())
}

fn worker() -> Result<(), Box<dyn Error>> {
    let me = std::process::id();
    let tasks = process::open_queue("tasks")?;
    let results = process::open_queue("results")?;
    loop {
        // Only messages addressed to this process (or to anyone).
        let m = tasks.recv_for_me_timeout(PATIENCE)?;
        assert_eq!(m.recipient, Some(me));
        if m.request == Request::DIE {
            return Ok(());
        }
        let mut answer = m.data;
        answer.extend_from_slice(b" done");
        results.send(Message::new(Request::FINISHED, answer))?;
    }
}
