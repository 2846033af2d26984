//! The worker side: what [`Builder::start`](super::Builder::start) runs in
//! a worker process, and never returns from.
//!
//! Loop: take one message, a pack of tasks (see [`pack`](super::pack)),
//! holding it as a guard (waiting asleep for one); copy the tasks out and
//! announce their ids on the board; only then drop the guard; run each
//! (announcing the running one), catching panics; send the results,
//! packed; clear the announcement. A worker killed while it holds the
//! guard has its tasks redelivered by the channel; one killed after, by
//! the parent, which reads the announcement and sends those tasks again.
//! Either way a task is held until its result is sent. A `DIE` (the
//! poison pill) ends the loop.
//!
//! One pack a round, never more: the parent sizes packs so that each
//! carries a short while of work and the waiting ones spread over every
//! worker; a worker taking several would sit on work the others could do.
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
use super::pack;
use super::wire::{Codec, Wire};
use super::{status, Config, SLOT_VAR};
use crate::process;
use crate::{
    Channel, Message, Received, RecvTimeoutError, Request, TryRecvError, TrySendError, Wait,
};

pub(super) type Error = Box<dyn std::error::Error + Send + Sync>;

/// How long a blocking receive or send waits between liveness checks.
const LIVENESS: Duration = Duration::from_millis(100);
/// How often the watchdog looks at the parent.
const WATCHDOG: Duration = Duration::from_millis(50);

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

/// What a worker whose parent died does: removes the pool's names (a
/// killed parent cannot; a name already gone is not an error) and exits.
fn orphaned<B: Backend>(backend: &B, given: &Given) -> ! {
    let _ = backend.remove(&given.tasks);
    let _ = backend.remove(&given.results);
    Board::remove(&given.board);
    std::process::exit(2)
}

fn watchdog<B: Backend>(backend: Arc<B>, given: Arc<Given>) {
    let spawned = std::thread::Builder::new()
        .name("mulproc-pool-watchdog".into())
        .spawn(move || loop {
            std::thread::sleep(WATCHDOG);
            if !parent_alive(given.parent) {
                orphaned(&*backend, &given);
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
    let given = Arc::new(Given::from_env()?);
    let board = Board::open(&given.board)?;
    if given.slot >= board.slots() {
        return Err(format!("slot {} out of {}", given.slot, board.slots()).into());
    }
    watchdog(Arc::clone(&backend), Arc::clone(&given));
    let tasks = backend.open(&given.tasks)?;
    let results = backend.open(&given.results)?;
    let slot = given.slot;
    board.set_ready(slot, std::process::id());

    // The parent packs at most this many tasks to a message.
    let max_batch = cfg.worker_batch.clamp(1, MAX_HELD);
    let max_result = cfg.max_result;
    let mut input: Vec<u8> = Vec::new();
    let mut inspans: Vec<(u64, [u8; 4], usize, usize)> = Vec::with_capacity(max_batch);
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
                    Err(RecvTimeoutError::Timeout) => orphaned(&*backend, &given),
                    Err(e) => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            }
        };
        // Copy the tasks out, announcing each on the board before its
        // slot goes back to the ring: from then on the parent answers for
        // it if we die (it sends it again). Slots are not held while tasks
        // run, because a receiver scans from the oldest slot still held.
        let mut taken = Taken {
            board: &board,
            slot,
            input: &mut input,
            spans: &mut inspans,
            die: false,
        };
        taken.clear();
        taken.take(first.header(), first.data());
        drop(first);
        let die = taken.die;

        out.clear();
        spans.clear();
        for &(id, rec, a, b) in &inspans {
            let data = &input[a..b];
            if board.is_poisoned(id) {
                continue; // given up by the parent: finished unrun
            }
            board.set_running(slot, Some(id));
            let span =
                run_one::<C, In, Out, E, F>(&mut handler, id, rec, data, &mut out, max_result);
            board.set_running(slot, None);
            spans.push(span);
        }
        if !send_results(&results, &out, &spans, || parent_alive(given.parent))? {
            orphaned(&*backend, &given);
        }
        // Only now are the tasks finished.
        board.set_held(slot, &[]);
        if die {
            return Ok(());
        }
    }
}

/// The tasks of a batch, copied out of their slots.
struct Taken<'a> {
    board: &'a Board,
    slot: usize,
    input: &'a mut Vec<u8>,
    /// Id, the parent's record, and input bytes of each task.
    spans: &'a mut Vec<(u64, [u8; 4], usize, usize)>,
    /// A poison pill came: the last batch.
    die: bool,
}

impl Taken<'_> {
    fn clear(&mut self) {
        self.input.clear();
        self.spans.clear();
    }

    /// Copies one message out and announces it, before its slot is freed.
    #[inline]
    fn take(&mut self, header: &crate::Header, data: &[u8]) {
        if self.die {
            // Nothing is sent after the pills but copies of tasks already
            // answered: dropped.
            return;
        }
        if header.request == Request::DIE {
            self.die = true;
            return;
        }
        if header.request != Request::DO {
            return; // not ours
        }
        let mut items = pack::Items::new(data);
        for item in items.by_ref() {
            let Some((id, rec)) = task_id(item) else {
                continue; // not a task
            };
            if self.spans.len() >= MAX_HELD {
                return; // never: the parent packs at most MAX_HELD
            }
            self.board.push_held(self.slot, self.spans.len(), id);
            let a = self.input.len();
            self.input.extend_from_slice(&item[super::TASK_HEADER..]);
            self.spans.push((id, rec, a, self.input.len()));
        }
        if items.malformed() {
            // Only a scribbled message has one; what came before is kept.
            eprintln!(
                "mulproc pool worker {}: a malformed task message of {} bytes, its rest skipped",
                std::process::id(),
                data.len()
            );
        }
    }
}

/// The id and the parent's record of a task item (of a pack), `None` if
/// it is too short to be one.
#[inline]
pub(super) fn task_id(data: &[u8]) -> Option<(u64, [u8; 4])> {
    if data.len() < super::TASK_HEADER {
        return None;
    }
    Some((
        u64::from_le_bytes(data[..8].try_into().ok()?),
        data[8..12].try_into().ok()?,
    ))
}

/// Runs one task (catching a panic) and appends its result to `out`, as an
/// item of a pack (see [`begin_result`]): the encoded value or the error's
/// message (cut to fit `max_result`). Returns its span in `out`.
pub(super) fn run_one<C, In, Out, E, F>(
    handler: &mut F,
    id: u64,
    rec: [u8; 4],
    data: &[u8],
    out: &mut Vec<u8>,
    max_result: usize,
) -> (usize, usize)
where
    C: Codec,
    In: Wire<C>,
    Out: Wire<C>,
    E: std::fmt::Display,
    F: FnMut(In) -> Result<Out, E>,
{
    let (start, body) = begin_result(out, id, rec);
    let began = Instant::now();
    let outcome = match In::decode(data) {
        Err(e) => Err((status::BAD_INPUT, e.to_string())),
        Ok(input) => match catch_unwind(AssertUnwindSafe(|| handler(input))) {
            Ok(Ok(v)) => match v.encode(out) {
                Ok(()) if out.len() - body <= max_result => Ok(()),
                Ok(()) => {
                    let len = out.len() - body - super::RESULT_HEADER;
                    Err((status::TOO_LARGE, len.to_string()))
                }
                Err(e) => Err((status::BAD_OUTPUT, e.to_string())),
            },
            Ok(Err(e)) => Err((status::FAILED, e.to_string())),
            Err(p) => Err((status::PANICKED, panic_message(&*p))),
        },
    };
    let took = u32::try_from(began.elapsed().as_nanos()).unwrap_or(u32::MAX);
    out[body + 13..body + 17].copy_from_slice(&took.to_le_bytes());
    if let Err((code, msg)) = outcome {
        out.truncate(body + super::RESULT_HEADER);
        push_status(out, body, code, &msg, max_result);
    }
    end_result(out, start, body)
}

/// Starts a result item in `out`: room for its length, then the task's id
/// and record, the status OK and a zero run time. Returns where the item
/// starts and where its body (after the length) does.
pub(super) fn begin_result(out: &mut Vec<u8>, id: u64, rec: [u8; 4]) -> (usize, usize) {
    let start = out.len();
    out.extend_from_slice(&[0; pack::LEN]);
    let body = out.len();
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(&rec);
    out.push(status::OK);
    out.extend_from_slice(&0u32.to_le_bytes());
    (start, body)
}

/// Ends the result item begun at `start`: writes its length. Its span.
pub(super) fn end_result(out: &mut [u8], start: usize, body: usize) -> (usize, usize) {
    let len = (out.len() - body) as u32;
    out[start..body].copy_from_slice(&len.to_le_bytes());
    (start, out.len())
}

/// Sets the status of the result whose body starts at `body` (its header
/// written) to `code`, with `msg` as its text, cut to fit `max_result`.
pub(super) fn push_status(out: &mut Vec<u8>, body: usize, code: u8, msg: &str, max_result: usize) {
    out[body + 12] = code;
    push_text(out, msg, max_result - super::RESULT_HEADER);
}

/// Sends every result, packed (consecutive items of `out`, at most
/// [`pack::RESULT_PACK_BYTES`] to a message unless one alone is bigger), a
/// batch at a time, waiting for room (asleep) while the channel is full
/// and checking `alive` (the parent, the run) between waits; false if it
/// said no meanwhile.
pub(super) fn send_results<Ch: Channel>(
    results: &Ch,
    out: &[u8],
    spans: &[(usize, usize)],
    mut alive: impl FnMut() -> bool,
) -> Result<bool, TrySendError<()>> {
    let mut msgs: Vec<Message<&[u8]>> = Vec::new();
    let mut i = 0;
    while i < spans.len() {
        let a = spans[i].0;
        let mut b = spans[i].1;
        i += 1;
        while i < spans.len() && spans[i].1 - a <= pack::RESULT_PACK_BYTES {
            b = spans[i].1;
            i += 1;
        }
        msgs.push(Message::new(Request::FINISHED, &out[a..b]));
    }
    let mut i = 0;
    while i < msgs.len() {
        match results.try_send_batch(&msgs[i..]) {
            Ok(k) if k > 0 => {
                i += k;
                continue;
            }
            Ok(_) => {}
            Err(e) if e.is_full() => {}
            Err(e) => return Err(e),
        }
        match results.send_with(msgs[i].clone(), Wait::timeout(LIVENESS)) {
            Ok(()) => i += 1,
            Err(e) if e.is_full() => {
                if !alive() {
                    return Ok(false);
                }
            }
            Err(e) => return Err(e.map(|_| ())),
        }
    }
    Ok(true)
}
