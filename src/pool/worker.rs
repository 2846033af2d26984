//! The worker side: what [`Builder::start`](super::Builder::start) runs in
//! a worker process, and never returns from.
//!
//! Loop: take a batch of tasks, holding each as a guard (up to the batch
//! size, only what is waiting, the first one blocking); announce their ids
//! on the board; run each (announcing the running one), catching panics;
//! send the results as one batch; only then drop the guards. A worker
//! killed anywhere before that drop leaves its tasks to be redelivered.
//! A `DIE` (the poison pill) ends the batch and the loop.
//!
//! A watchdog thread checks every 50 ms that the parent is alive; once it
//! is not, it removes the pool's names (the parent cannot any more) and
//! exits the process.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::backend::Backend;
use super::board::{Board, MAX_HELD};
use super::wire::{Codec, Wire};
use super::{status, Config, SLOT_VAR};
use crate::process;
use crate::{Channel, Message, Received, RecvTimeoutError, Request, TryRecvError, Wait};

type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long a blocking receive or send waits between liveness checks.
const LIVENESS: Duration = Duration::from_millis(100);
/// How often the watchdog looks at the parent.
const WATCHDOG: Duration = Duration::from_millis(50);
/// A batch aims at about this much work, so that a slow task is never
/// taken in a batch that makes other workers idle.
const BATCH_BUDGET: Duration = Duration::from_micros(50);

/// Runs the worker loop of the pool this process was started for, then
/// exits: 0 after the poison pill, 1 on an error (reported on stderr).
pub(crate) fn run<B, C, In, Out, E, F>(backend: Arc<B>, cfg: &Config, handler: F) -> !
where
    B: Backend,
    C: Codec,
    In: Wire<C>,
    Out: Wire<C>,
    E: std::fmt::Display,
    F: FnMut(In) -> Result<Out, E>,
{
    let code = match serve::<B, C, In, Out, E, F>(backend, cfg, handler) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("mulproc pool worker {}: {e}", std::process::id());
            1
        }
    };
    std::process::exit(code)
}

/// The names a worker was given.
struct Given {
    slot: usize,
    parent: u32,
    tasks: String,
    results: String,
    board: String,
}

impl Given {
    fn from_env() -> Result<Given, Error> {
        let slot = std::env::var(SLOT_VAR)
            .map_err(|_| format!("{SLOT_VAR} is not set"))?
            .parse()
            .map_err(|e| format!("{SLOT_VAR}: {e}"))?;
        Ok(Given {
            slot,
            parent: process::parent_pid().ok_or("no parent pid in the environment")?,
            tasks: process::channel_name("tasks")?,
            results: process::channel_name("results")?,
            board: process::channel_name("board")?,
        })
    }
}

fn parent_alive(parent: u32) -> bool {
    std::os::unix::process::parent_id() == parent
}

fn watchdog<B: Backend>(backend: Arc<B>, given: &Given) {
    let (parent, tasks, results, board) = (
        given.parent,
        given.tasks.clone(),
        given.results.clone(),
        given.board.clone(),
    );
    let spawned = std::thread::Builder::new()
        .name("mulproc-pool-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(WATCHDOG);
            if !parent_alive(parent) {
                // A parent killed cannot remove its names: every worker
                // does (a name already gone is not an error).
                let _ = backend.remove(&tasks);
                let _ = backend.remove(&results);
                Board::remove(&board);
                std::process::exit(2);
            }
        });
    if spawned.is_err() {
        // Without a watchdog the receive and send loops still notice the
        // parent's death within LIVENESS, between tasks.
        eprintln!("mulproc pool worker: could not start the watchdog thread");
    }
}

fn panic_message(p: &(dyn Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-string payload".to_owned()
    }
}

/// Appends `msg` to `out`, cut (at a character boundary) to `room` bytes.
fn push_text(out: &mut Vec<u8>, msg: &str, room: usize) {
    let mut end = msg.len().min(room);
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    out.extend_from_slice(&msg.as_bytes()[..end]);
}

fn serve<B, C, In, Out, E, F>(backend: Arc<B>, cfg: &Config, mut handler: F) -> Result<(), Error>
where
    B: Backend,
    C: Codec,
    In: Wire<C>,
    Out: Wire<C>,
    E: std::fmt::Display,
    F: FnMut(In) -> Result<Out, E>,
{
    let given = Given::from_env()?;
    let board = Board::open(&given.board)?;
    if given.slot >= board.slots() {
        return Err(format!("slot {} out of {}", given.slot, board.slots()).into());
    }
    watchdog(Arc::clone(&backend), &given);
    let tasks = backend.open(&given.tasks)?;
    let results = backend.open(&given.results)?;
    let slot = given.slot;
    board.set_ready(slot, std::process::id());

    let max_batch = cfg.worker_batch.clamp(1, MAX_HELD);
    let max_result = cfg.max_result;
    let mut batch = 1usize;
    let mut guards = Vec::with_capacity(max_batch);
    let mut ids = Vec::with_capacity(max_batch);
    let mut out: Vec<u8> = Vec::new();
    let mut spans: Vec<(usize, usize)> = Vec::with_capacity(max_batch);
    loop {
        // The first task: at once if one waits, else asleep (the timeout
        // only serves to check on the parent).
        let first = loop {
            match tasks.try_recv_ref() {
                Ok(g) => break g,
                Err(TryRecvError::Empty) => match tasks.recv_ref_timeout(LIVENESS) {
                    Ok(g) => break g,
                    Err(RecvTimeoutError::Timeout) if parent_alive(given.parent) => {}
                    Err(RecvTimeoutError::Timeout) => return Err("the parent died".into()),
                    Err(e) => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            }
        };
        let mut die = first.header().request == Request::DIE;
        guards.push(first);
        while !die && guards.len() < batch {
            match tasks.try_recv_ref() {
                Ok(g) => {
                    die = g.header().request == Request::DIE;
                    guards.push(g);
                }
                Err(TryRecvError::Empty) => break,
                Err(e) => return Err(e.into()),
            }
        }
        ids.clear();
        ids.extend(
            guards
                .iter()
                .filter_map(|g| task_id(g.header().request, g.data())),
        );
        board.set_held(slot, &ids);

        let started = Instant::now();
        out.clear();
        spans.clear();
        for g in &guards {
            let data = g.data();
            let Some(id) = task_id(g.header().request, data) else {
                continue; // the pill, or nothing of ours
            };
            if board.is_poisoned(id) {
                continue; // given up by the parent: finished unrun
            }
            let start = out.len();
            out.extend_from_slice(&id.to_le_bytes());
            out.push(status::OK);
            board.set_running(slot, Some(id));
            let outcome = match In::decode(&data[8..]) {
                Err(e) => Err((status::BAD_INPUT, e.to_string())),
                Ok(input) => match catch_unwind(AssertUnwindSafe(|| handler(input))) {
                    Ok(Ok(v)) => match v.encode(&mut out) {
                        Ok(()) if out.len() - start <= max_result => Ok(()),
                        Ok(()) => {
                            let len = out.len() - start - super::RESULT_HEADER;
                            Err((status::TOO_LARGE, len.to_string()))
                        }
                        Err(e) => Err((status::BAD_OUTPUT, e.to_string())),
                    },
                    Ok(Err(e)) => Err((status::FAILED, e.to_string())),
                    Err(p) => Err((status::PANICKED, panic_message(&*p))),
                },
            };
            board.set_running(slot, None);
            if let Err((code, msg)) = outcome {
                out.truncate(start + super::RESULT_HEADER);
                out[start + 8] = code;
                push_text(&mut out, &msg, max_result - super::RESULT_HEADER);
            }
            spans.push((start, out.len()));
        }
        // Grow the batch while tasks are cheap; shrink it to the budget
        // when they are not.
        if !spans.is_empty() {
            let per_task = started.elapsed() / spans.len() as u32;
            batch = if per_task * (2 * batch as u32) <= BATCH_BUDGET {
                (batch * 2).min(max_batch)
            } else {
                (BATCH_BUDGET.as_nanos() / per_task.as_nanos().max(1)).clamp(1, max_batch as u128)
                    as usize
            };
        }
        send_results(&results, &out, &spans, given.parent)?;
        board.set_held(slot, &[]);
        // Only now are the tasks finished: dropping the guards frees them.
        guards.clear();
        if die {
            return Ok(());
        }
    }
}

/// The id of a task message, `None` for anything else (the pill).
#[inline]
fn task_id(request: Request, data: &[u8]) -> Option<u64> {
    if request != Request::DO || data.len() < 8 {
        return None;
    }
    Some(u64::from_le_bytes(data[..8].try_into().ok()?))
}

/// Sends every result, a batch at a time, waiting for room (asleep) while
/// the channel is full and checking on the parent between waits.
fn send_results<Ch: Channel>(
    results: &Ch,
    out: &[u8],
    spans: &[(usize, usize)],
    parent: u32,
) -> Result<(), Error> {
    let msgs: Vec<Message<&[u8]>> = spans
        .iter()
        .map(|&(a, b)| Message::new(Request::FINISHED, &out[a..b]))
        .collect();
    let mut i = 0;
    while i < msgs.len() {
        match results.try_send_batch(&msgs[i..]) {
            Ok(k) if k > 0 => {
                i += k;
                continue;
            }
            Ok(_) => {}
            Err(e) if e.is_full() => {}
            Err(e) => return Err(e.to_string().into()),
        }
        match results.send_with(msgs[i].clone(), Wait::timeout(LIVENESS)) {
            Ok(()) => i += 1,
            Err(e) if e.is_full() => {
                if !parent_alive(parent) {
                    return Err("the parent died".into());
                }
            }
            Err(e) => return Err(e.to_string().into()),
        }
    }
    Ok(())
}
