//! Ports of the scenarios in pymulproc's README (its PIPE example, its 1:N
//! QUEUE example, and the full-duplex stress test with a poison pill), run
//! with real child processes of this test binary (see `common`).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::*;
use mulproc::{
    Message, Pipe, PipeConfig, Queue, QueueConfig, RecvTimeoutError, Request, SendRetry,
    TryRecvError,
};

/// pymulproc's `REQ_TEST_CHILD`, as a user request code.
const REQ_TEST_CHILD: Request = Request::new(Request::FIRST_USER_CODE + 1);
/// Generous timeouts: the machine is shared and noisy.
const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);
/// Stress rounds per variant.
const ROUNDS: u64 = 10;
/// Max payload of the stress channels (data lengths are random in 0..=this).
const STRESS_MAX_PAYLOAD: u32 = 512;

/// A `send` that waits up to a minute for space.
fn patient() -> SendRetry {
    SendRetry {
        tries: 1200,
        wait: Duration::from_millis(50),
    }
}

// ---------------------------------------------------------------- PRNG ---

/// xorshift64*: small, deterministic, good enough for test sizes.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        // Never zero; mix the seed a little.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform-ish in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo + 1)
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Base seed of the stress rounds: `MULPROC_STRESS_SEED` if set (to replay
/// a failure), else the clock. Printed by every round.
fn base_seed() -> u64 {
    std::env::var("MULPROC_STRESS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(1, |d| d.as_nanos() as u64)
        })
}

/// What a child answers to a DO carrying `data`: the bytes reversed and
/// xored with 0x5A (same length, so it always fits).
fn answer_of(data: &[u8]) -> Vec<u8> {
    data.iter().rev().map(|b| b ^ 0x5A).collect()
}

// --------------------------------------------------------------- roles ---

#[test]
fn child_entry() {
    common::child_entry(|role| match role {
        "pipe_request" => role_pipe_request(),
        "queue_value" => role_queue_value(),
        "queue_worker" => role_queue_worker(),
        "pipe_worker" => role_pipe_worker(),
        other => panic!("unknown role {other:?}"),
    });
}

/// README PIPE example: the child sends REQ_TEST_CHILD to the parent and
/// exits.
fn role_pipe_request() -> i32 {
    let p = Pipe::open(&arg("PIPE")).expect("open pipe");
    p.send(Message::signal(REQ_TEST_CHILD)).expect("send");
    0
}

/// README 1:N QUEUE example: the child sends REQ_FINISHED with VALUE.
fn role_queue_value() -> i32 {
    let mut q = Queue::open(&arg("QUEUE")).expect("open queue");
    q.set_send_retry(patient());
    let v: u32 = arg_parse("VALUE");
    q.send(Message::pod(Request::FINISHED, &v)).expect("send");
    0
}

/// Stress worker over the shared queue: `recv_for_me` until DIE; answers
/// each DO with FINISHED addressed to the parent; `task_done` for every
/// message it receives.
fn role_queue_worker() -> i32 {
    let mut q = Queue::open(&arg("QUEUE")).expect("open queue");
    q.set_send_retry(patient());
    let parent: u32 = arg_parse("PARENT");
    let me = std::process::id();
    let mut handled = 0u64;
    loop {
        let m = q.recv_for_me_timeout(LONG).expect("recv_for_me");
        q.task_done().expect("task_done");
        assert_eq!(m.recipient, Some(me), "got a message not addressed to me");
        assert_eq!(m.sender, Some(parent), "got a message not from the parent");
        match m.request {
            Request::DO => {
                q.send(Message::new(Request::FINISHED, answer_of(&m.data)).to(parent))
                    .expect("send answer");
                handled += 1;
            }
            Request::DIE => break,
            other => panic!("unexpected request {other:?}"),
        }
    }
    report("handled", handled);
    0
}

/// Stress worker over its own pipe: the same protocol with `recv_timeout`.
fn role_pipe_worker() -> i32 {
    let mut p = Pipe::open(&arg("PIPE")).expect("open pipe");
    p.set_send_retry(patient());
    let parent: u32 = arg_parse("PARENT");
    let mut handled = 0u64;
    loop {
        let m = p.recv_timeout(LONG).expect("recv_timeout");
        assert_eq!(m.sender, Some(parent), "got a message not from the parent");
        match m.request {
            Request::DO => {
                p.send(Message::new(Request::FINISHED, answer_of(&m.data)).to(parent))
                    .expect("send answer");
                handled += 1;
            }
            Request::DIE => break,
            other => panic!("unexpected request {other:?}"),
        }
    }
    report("handled", handled);
    0
}

/// For a failure message: each child's state, with the output of those
/// that have exited.
fn children_state(children: &mut [ChildProc]) -> String {
    let mut out = String::new();
    for (i, c) in children.iter_mut().enumerate() {
        if c.is_running() {
            out += &format!("child {i} (pid {}): running\n", c.pid());
        } else {
            let f = c.wait(Duration::ZERO).expect("exited");
            out += &format!("child {i} (pid {}): {}\n", c.pid(), f.describe());
        }
    }
    out
}

// ---------------------------------------------------------- scenarios ---

/// README "PIPE communication example". Pins: a message sent on a pipe by a
/// child that has since exited is lost, or arrives with the wrong request
/// code or sender pid (the child's pid must be filled in as sender).
#[test]
fn pipe_child_sends_request_to_parent() {
    let shm = ShmGuard::new("scen-pipe");
    let parent = Pipe::create(shm.name(), PipeConfig::new(4, 64)).expect("create pipe");
    let mut child = ChildProc::spawn("pipe_request", &[("PIPE", shm.name().to_owned())]);
    // As in the README: join the child first, then receive.
    child.wait_success(SHORT);
    let cpid = child.pid();
    let m = parent.try_recv().expect("message from the exited child");
    assert_eq!(m.request, REQ_TEST_CHILD);
    assert_eq!(m.sender, Some(cpid));
    assert_eq!(m.recipient, None);
    assert!(m.data.is_empty());
    // The child has exited, closing its end: nothing more can come.
    assert_eq!(parent.try_recv().unwrap_err(), TryRecvError::Disconnected);
}

/// README "simple 1:N QUEUE communication example". Pins: lost or
/// duplicated messages from several children, `is_empty` lying after all
/// were received, and `join` not returning once every message was marked
/// done (JoinableQueue meaning).
#[test]
fn children_send_values_to_parent_over_one_queue() {
    const CHILDREN: usize = 5;
    const VALUE: u32 = 3;
    let shm = ShmGuard::new("scen-1toN");
    let q = Queue::create(shm.name(), QueueConfig::new(16, 64)).expect("create");
    let mut children: Vec<ChildProc> = (0..CHILDREN)
        .map(|_| {
            ChildProc::spawn(
                "queue_value",
                &[
                    ("QUEUE", shm.name().to_owned()),
                    ("VALUE", VALUE.to_string()),
                ],
            )
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.pid()).collect();
    // Wait for the processes to finish.
    wait_all(&mut children, LONG);
    let mut sum = 0u32;
    let mut senders = Vec::new();
    while !q.is_empty() {
        let m = q.try_recv().expect("try_recv while not empty");
        assert_eq!(m.request, Request::FINISHED);
        sum += m.read_pod::<u32>().expect("u32 payload");
        senders.push(m.sender.expect("sender"));
        q.task_done().expect("task_done");
    }
    assert_eq!(sum, VALUE * CHILDREN as u32);
    senders.sort_unstable();
    let mut want = pids.clone();
    want.sort_unstable();
    assert_eq!(senders, want, "each child's message exactly once");
    assert!(q.is_empty());
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
    q.join_timeout(Duration::from_secs(1))
        .expect("join after every message was marked done");
}

/// Most DOs a child gets in one stress round (random in 1..=this).
const MAX_TASKS_PER_CHILD: u64 = 40;
/// Most DOs the parent has in flight on the shared queue (unanswered).
const QUEUE_WINDOW: usize = 16;

/// The stress round's work: DOs as (child index, data), interleaved
/// across children at random, each child's in its own order.
fn stress_plan(rng: &mut Rng, n: usize) -> Vec<(usize, Vec<u8>)> {
    let mut left: Vec<u64> = (0..n).map(|_| rng.range(1, MAX_TASKS_PER_CHILD)).collect();
    let mut plan = Vec::new();
    while left.iter().any(|&k| k > 0) {
        let c = rng.range(0, n as u64 - 1) as usize;
        if left[c] == 0 {
            continue;
        }
        left[c] -= 1;
        let len = rng.range(0, STRESS_MAX_PAYLOAD as u64) as usize;
        plan.push((c, rng.bytes(len)));
    }
    plan
}

/// One round of the full-duplex stress test over ONE shared queue.
fn queue_stress_round(seed: u64) {
    let mut rng = Rng::new(seed);
    let n = rng.range(1, 10) as usize;
    let shm = ShmGuard::new("scen-duplex-q");
    // A small ring on purpose: a worker descheduled between taking a DO
    // and sending its answer, while its next DO sits at the head, fills
    // the ring behind that DO with answers taken out of order. This once
    // deadlocked the round (seen with capacity 64); now the blocked sender
    // moves the passed-over DO to the back (`selective.rs`,
    // `selective_take_frees_no_slot_while_head_waits`).
    let mut q = Queue::create(shm.name(), QueueConfig::new(32, STRESS_MAX_PAYLOAD)).unwrap();
    q.set_send_retry(patient());
    let me = std::process::id();
    let mut children: Vec<ChildProc> = (0..n)
        .map(|_| {
            ChildProc::spawn(
                "queue_worker",
                &[("QUEUE", shm.name().to_owned()), ("PARENT", me.to_string())],
            )
        })
        .collect();
    let pids: Vec<u32> = children.iter().map(|c| c.pid()).collect();
    let index_of: HashMap<u32, usize> = pids.iter().enumerate().map(|(i, &p)| (p, i)).collect();
    let ctx = |what: &str| format!("seed {seed}, {n} children: {what}");

    let plan = stress_plan(&mut rng, n);
    let total = plan.len();
    // Expected answers per child, in the order its DOs are sent.
    let mut expected: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n];
    for (c, data) in &plan {
        expected[*c].push(answer_of(data));
    }
    let mut answered = vec![0usize; n];
    let mut got = 0usize;
    // Checks one answer: addressed to us, from a child, the answer to that
    // child's next request.
    let mut check = |m: Message, got: &mut usize| {
        q.task_done().unwrap();
        assert_eq!(m.request, Request::FINISHED, "{}", ctx("request"));
        assert_eq!(m.recipient, Some(me), "{}", ctx("recipient"));
        let sender = m.sender.unwrap();
        let c = *index_of
            .get(&sender)
            .unwrap_or_else(|| panic!("{}", ctx(&format!("answer from stranger {sender}"))));
        let k = answered[c];
        assert!(
            k < expected[c].len(),
            "{}",
            ctx("a child answered too often")
        );
        assert_eq!(
            m.data,
            expected[c][k],
            "{}",
            ctx(&format!(
                "child {c} answer {k}: not the answer to its own request"
            ))
        );
        answered[c] += 1;
        *got += 1;
    };
    let mut next = 0usize;
    while got < total {
        let in_flight = next - got;
        if next < total && in_flight < QUEUE_WINDOW {
            let (c, data) = &plan[next];
            match q.try_send(Message::new(Request::DO, data.as_slice()).to(pids[*c])) {
                Ok(()) => {
                    next += 1;
                    // Take whatever answers are already there.
                    while let Ok(m) = q.try_recv_where(|h, _| h.recipient == Some(me)) {
                        check(m, &mut got);
                    }
                    continue;
                }
                Err(e) if e.is_full() => {}
                Err(e) => panic!("{}", ctx(&format!("try_send DO: {e:?}"))),
            }
        }
        // Window full or queue full: wait for one answer.
        match q.recv_where_timeout(|h, _| h.recipient == Some(me), LONG) {
            Ok(m) => check(m, &mut got),
            Err(e) => {
                let len = q.len();
                panic!(
                    "{}\n{}",
                    ctx(&format!(
                        "answer {got} of {total} ({next} DOs sent): {e}; queue len {len}"
                    )),
                    children_state(&mut children)
                )
            }
        }
    }
    // Nobody else answered (and nothing extra is waiting for us).
    assert_eq!(
        q.try_recv_where(|h, _| h.recipient == Some(me))
            .unwrap_err(),
        TryRecvError::Empty,
        "{}",
        ctx("extra answer")
    );
    // Poison pill, addressed to each child.
    for &pid in &pids {
        q.send(Message::signal(Request::DIE).to(pid)).unwrap();
    }
    for (c, f) in wait_all(&mut children, LONG).iter().enumerate() {
        assert_eq!(
            f.get::<usize>("handled"),
            expected[c].len(),
            "{}",
            ctx("handled count")
        );
    }
    assert!(q.is_empty(), "{}", ctx("queue not empty at the end"));
    q.join_timeout(SHORT)
        .unwrap_or_else(|e| panic!("{}", ctx(&format!("join: {e}"))));
    eprintln!("queue round seed {seed}: {n} children, {total} tasks: ok");
}

/// pymulproc's `test_parent_full_duplex_communication_with_children_stress_test`
/// over one shared queue. Pins: a child taking another child's request or
/// the parent's answers (selective receive by recipient), lost or
/// duplicated messages in both directions at once, a poison pill that does
/// not stop a child, and `join` not returning when everyone called
/// `task_done` for what it received.
#[test]
fn full_duplex_stress_over_one_queue() {
    let base = base_seed();
    eprintln!("full_duplex_stress_over_one_queue: base seed {base} (MULPROC_STRESS_SEED)");
    let t = Instant::now();
    for round in 0..ROUNDS {
        queue_stress_round(base.wrapping_add(round));
    }
    eprintln!("{ROUNDS} rounds in {:?}", t.elapsed());
}

/// One round of the stress test with one pipe per child.
fn pipe_stress_round(seed: u64) {
    /// DOs in flight per pipe: with capacity 4 neither direction fills.
    const PIPE_WINDOW: usize = 2;
    let mut rng = Rng::new(seed);
    let n = rng.range(1, 10) as usize;
    let me = std::process::id();
    let guards: Vec<ShmGuard> = (0..n).map(|_| ShmGuard::new("scen-duplex-p")).collect();
    let pipes: Vec<Pipe> = guards
        .iter()
        .map(|g| {
            let mut p = Pipe::create(g.name(), PipeConfig::new(4, STRESS_MAX_PAYLOAD)).unwrap();
            p.set_send_retry(patient());
            p
        })
        .collect();
    let mut children: Vec<ChildProc> = guards
        .iter()
        .map(|g| {
            ChildProc::spawn(
                "pipe_worker",
                &[("PIPE", g.name().to_owned()), ("PARENT", me.to_string())],
            )
        })
        .collect();
    let ctx = |what: &str| format!("seed {seed}, {n} children: {what}");
    let mut work: Vec<Vec<Vec<u8>>> = vec![Vec::new(); n];
    for (c, data) in stress_plan(&mut rng, n) {
        work[c].push(data);
    }
    let total: usize = work.iter().map(Vec::len).sum();
    let (mut sent, mut answered) = (vec![0usize; n], vec![0usize; n]);
    let mut got = 0usize;
    let deadline = Instant::now() + LONG;
    while got < total {
        let mut progress = false;
        for (c, p) in pipes.iter().enumerate() {
            while sent[c] < work[c].len() && sent[c] - answered[c] < PIPE_WINDOW {
                let data = work[c][sent[c]].as_slice();
                p.try_send(Message::new(Request::DO, data).to(children[c].pid()))
                    .unwrap_or_else(|e| panic!("{}", ctx(&format!("send DO to {c}: {e:?}"))));
                sent[c] += 1;
                progress = true;
            }
            loop {
                let m = match p.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Empty) => break,
                    Err(e) => panic!("{}", ctx(&format!("try_recv from {c}: {e}"))),
                };
                let k = answered[c];
                assert!(
                    k < sent[c],
                    "{}",
                    ctx(&format!("child {c} answered unasked"))
                );
                assert_eq!(m.request, Request::FINISHED, "{}", ctx("request"));
                assert_eq!(m.sender, Some(children[c].pid()), "{}", ctx("sender"));
                assert_eq!(m.recipient, Some(me), "{}", ctx("recipient"));
                assert_eq!(
                    m.data,
                    answer_of(&work[c][k]),
                    "{}",
                    ctx(&format!("child {c} answer {k}"))
                );
                answered[c] += 1;
                got += 1;
                progress = true;
            }
        }
        if !progress {
            assert!(
                Instant::now() < deadline,
                "{}",
                ctx("no answers for too long")
            );
            for (c, ch) in children.iter_mut().enumerate() {
                assert!(ch.is_running(), "{}", ctx(&format!("child {c} died")));
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    for (c, p) in pipes.iter().enumerate() {
        assert_eq!(p.peer_pid(), Some(children[c].pid()), "{}", ctx("peer pid"));
        p.send(Message::signal(Request::DIE).to(children[c].pid()))
            .unwrap();
    }
    for (c, f) in wait_all(&mut children, LONG).iter().enumerate() {
        assert_eq!(
            f.get::<usize>("handled"),
            work[c].len(),
            "{}",
            ctx("handled")
        );
    }
    for p in &pipes {
        assert_eq!(
            // Every child has exited, closing its end: drained, then
            // Disconnected (an extra message would come first).
            p.recv_timeout(Duration::ZERO).unwrap_err(),
            RecvTimeoutError::Disconnected,
            "{}",
            ctx("extra message on a pipe")
        );
    }
    eprintln!("pipe round seed {seed}: {n} children, {total} tasks: ok");
}

/// The same stress test over one `Pipe` per child. Pins: crossed or lost
/// messages between pipes, a child end that does not record its holder
/// (`peer_pid`), and the poison pill over a pipe.
#[test]
fn full_duplex_stress_over_one_pipe_per_child() {
    let base = base_seed();
    eprintln!("full_duplex_stress_over_one_pipe_per_child: base seed {base} (MULPROC_STRESS_SEED)");
    let t = Instant::now();
    for round in 0..ROUNDS {
        pipe_stress_round(base.wrapping_add(round));
    }
    eprintln!("{ROUNDS} rounds in {:?}", t.elapsed());
}
