//! Pipes (pymulproc's `PipeCommunication`) across real processes: the
//! parent creates and holds the parent end, a child process of this test
//! binary (see `common`) opens the child end.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mulproc::{
    ChannelKind, Header, Message, Pipe, PipeConfig, PipeEnd, Queue, QueueConfig, RecvTimeoutError,
    Request, SendRetry, SetupError, TryRecvError,
};

/// Generous timeouts: the machine is shared and noisy.
const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);
const PING_MAX_PAYLOAD: u32 = 64;

fn open(name: &str) -> Pipe {
    let mut p = Pipe::open(name).unwrap_or_else(|e| panic!("open pipe {name}: {e}"));
    p.set_send_retry(patient());
    p
}

/// Payload of message `seq` (8..=max bytes): the sequence number, then
/// pattern bytes so lengths vary and torn copies show.
fn seq_payload(seq: u64, max: u32) -> Vec<u8> {
    let extra = (seq % (max as u64 - 7)) as u8;
    let mut v = seq.to_le_bytes().to_vec();
    v.extend((0..extra).map(|j| (seq as u8).wrapping_mul(13) ^ j));
    v
}

/// The sequence number of a payload made by [`seq_payload`], if intact.
fn check_seq_payload(data: &[u8], max: u32) -> Result<u64, String> {
    let seq = u64::from_le_bytes(
        data.get(..8)
            .ok_or_else(|| format!("short payload of {} bytes", data.len()))?
            .try_into()
            .unwrap(),
    );
    if data != seq_payload(seq, max) {
        return Err(format!("payload of seq {seq} damaged"));
    }
    Ok(seq)
}

/// What the echo child answers: the bytes reversed, xored with 0xA5.
fn echo_of(data: &[u8]) -> Vec<u8> {
    data.iter().rev().map(|b| b ^ 0xA5).collect()
}

// --------------------------------------------------------------- roles ---

#[test]
fn child_entry() {
    common::child_entry(|role| match role {
        "echo" => role_echo(),
        "duplex_stream" => role_duplex_stream(),
        "wait_one" => role_wait_one(),
        "fill" => role_fill(),
        "holder" => role_holder(),
        "try_open" => role_try_open(),
        "take_then_stop" => role_take_then_stop(),
        other => panic!("unknown role {other:?}"),
    });
}

/// Echo server: answers every message with `echo_of` its payload, until
/// DIE. Receives with `recv_timeout`, `recv_into` and `recv_ref` in turn.
fn role_echo() -> i32 {
    let mut p = open(&arg("PIPE"));
    let parent: u32 = arg_parse("PARENT");
    let mut buf = Vec::new();
    let mut n = 0u64;
    ready();
    loop {
        let (h, data) = recv_in_turn(&mut p, n, &mut buf, LONG, Release::Finish);
        assert_eq!(h.sender, parent);
        if h.request == Request::DIE {
            break;
        }
        assert_eq!(h.request, Request::DO);
        p.send(Message::new(Request::FINISHED, echo_of(&data)))
            .expect("send echo");
        n += 1;
    }
    report("echoed", n);
    0
}

/// Streams COUNT messages to the parent while receiving COUNT from it, at
/// once, with non-blocking calls only; checks the parent's sequence.
fn role_duplex_stream() -> i32 {
    let p = open(&arg("PIPE"));
    let count: u64 = arg_parse("COUNT");
    let parent: u32 = arg_parse("PARENT");
    let deadline = Instant::now() + LONG;
    let mut bad = 0u64;
    let mut first_problem = String::from("-");
    let check = |at: u64, sender: Option<u32>, seq: Result<u64, String>| match seq {
        Ok(seq) if seq == at && sender == Some(parent) => {}
        Ok(seq) => {
            bad += 1;
            if first_problem == "-" {
                first_problem = format!("seq {seq} from {sender:?} at {at}");
            }
        }
        Err(e) => {
            bad += 1;
            if first_problem == "-" {
                first_problem = e;
            }
        }
    };
    let received = duplex_stream(&p, count, deadline, check, |_| {});
    report("received", received);
    report("bad", bad);
    report("first_problem", first_problem);
    0
}

/// `recv_timeout(200 ms)` on an empty pipe (must time out), then ready,
/// then one blocking `recv`.
fn role_wait_one() -> i32 {
    let p = open(&arg("PIPE"));
    let t = Instant::now();
    let r = p.recv_timeout(Duration::from_millis(200));
    report("timeout_result", format!("{:?}", r.map(|m| m.data)));
    report("timeout_ms", t.elapsed().as_millis());
    ready();
    let t = Instant::now();
    let m = p.recv().expect("recv");
    report("got", String::from_utf8_lossy(&m.data));
    report("waited_ms", t.elapsed().as_millis());
    0
}

/// Fills its sending direction with `try_send`; then `send` with 3 tries of
/// 50 ms must fail with `Full` and give the message back; then, ready, a
/// `send` with one try of 60 s waits for the parent to receive.
fn role_fill() -> i32 {
    let mut p = open(&arg("PIPE"));
    let mut filled = 0u32;
    loop {
        match p.try_send(Message::new(Request::DO, filled.to_le_bytes().as_slice())) {
            Ok(()) => filled += 1,
            Err(e) if e.is_full() => {
                assert_eq!(
                    e.into_inner().data,
                    filled.to_le_bytes(),
                    "Full gave back another"
                );
                break;
            }
            Err(e) => panic!("try_send: {e:?}"),
        }
        assert!(filled < 10_000, "pipe never full");
    }
    report("filled", filled);
    p.set_send_retry(SendRetry {
        tries: 3,
        wait: Duration::from_millis(50),
    });
    let t = Instant::now();
    let err = p
        .send(Message::new(Request::new(99), vec![7u8, 8, 9]).to(5))
        .expect_err("send on a full pipe succeeded");
    report("full_ms", t.elapsed().as_millis());
    report("is_full", err.is_full());
    let back = err.into_inner();
    report(
        "given_back",
        back.request == Request::new(99) && back.recipient == Some(5) && back.data == [7, 8, 9],
    );
    p.set_send_retry(SendRetry {
        tries: 1,
        wait: Duration::from_secs(60),
    });
    ready();
    let t = Instant::now();
    p.send(Message::new(Request::DO, b"late".as_slice()))
        .expect("blocked send");
    report("waited_ms", t.elapsed().as_millis());
    0
}

/// Holds the child end until killed.
fn role_holder() -> i32 {
    let p = open(&arg("PIPE"));
    report("peer", p.peer_pid().unwrap_or(0));
    ready();
    std::thread::sleep(Duration::from_secs(600));
    3
}

/// Tries to take the child end once; reports the outcome; if it got it,
/// says hello to the parent.
fn role_try_open() -> i32 {
    match Pipe::open(&arg("PIPE")) {
        Ok(p) => {
            assert_eq!(p.end(), PipeEnd::Child);
            p.send(Message::new(Request::DO, b"hello".as_slice()))
                .expect("send hello");
            report("result", "ok");
        }
        Err(SetupError::EndTaken { pid, .. }) => report("result", format!("end_taken:{pid}")),
        Err(e) => report("result", format!("other:{e:?}").replace('=', ":")),
    }
    0
}

/// Receives `TAKE` messages with `try_recv` (each freed at once); then, if
/// `HOLD` is 1, takes the next two in place and lets go of the second
/// only; reports what it got, ready, and stops receiving until killed.
fn role_take_then_stop() -> i32 {
    let p = open(&arg("PIPE"));
    let take: usize = arg_parse("TAKE");
    let mut got = Vec::new();
    for _ in 0..take {
        let m = p.recv_timeout(SHORT).expect("receive");
        got.push(m.data[0].to_string());
    }
    let mut held = None;
    if arg_parse::<u32>("HOLD") == 1 {
        let first = p.recv_ref_timeout(SHORT).expect("receive in place");
        let second = p.recv_ref_timeout(SHORT).expect("receive in place");
        got.push(format!("held{}", first.data()[0]));
        got.push(format!("freed{}", second.data()[0]));
        drop(second);
        held = Some(first);
    }
    report("got", got.join(","));
    ready();
    std::thread::sleep(Duration::from_secs(600));
    drop(held);
    3
}

/// Pins: a sender seeing slots its receiver freed as full (a receiver
/// that publishes its position only once per burst, then stops): the
/// child receives 5 of a full ring's 64 messages and stops; the parent's
/// `try_send` must then find exactly those 5 slots, and no more.
#[test]
fn sender_gets_every_slot_a_stopped_receiver_freed() {
    let shm = ShmGuard::new("pipe-freed");
    let p = Pipe::create(shm.name(), PipeConfig::new(64, 8)).unwrap();
    let msg = |i: u8| Message::new(Request::DO, vec![i]);
    for i in 0..64u8 {
        p.try_send(msg(i)).unwrap();
    }
    assert!(p.try_send(msg(0)).unwrap_err().is_full());
    let mut child = ChildProc::spawn(
        "take_then_stop",
        &[
            ("PIPE", shm.name().to_owned()),
            ("TAKE", "5".into()),
            ("HOLD", "0".into()),
        ],
    );
    child.wait_ready(SHORT);
    for i in 0..5u8 {
        p.try_send(msg(100 + i))
            .unwrap_or_else(|e| panic!("slot {i} the receiver freed seen full: {e}"));
    }
    assert!(p.try_send(msg(0)).unwrap_err().is_full());
    let f = child.kill();
    assert_eq!(f.get::<String>("got"), "0,1,2,3,4");
}

/// Pins: a new holder of a receiving end reading again messages its
/// predecessor received and let go of (one that was killed before it
/// published its position, which it does once per burst), or losing the
/// one it held. The child receives 0-4, holds 5, lets go of 6 and is
/// SIGKILLed; inspection then shows 5 and 7-19 waiting, and the next
/// holder receives exactly those, in order.
#[test]
fn new_receiver_skips_what_a_killed_one_freed() {
    let shm = ShmGuard::new("pipe-successor");
    let p = Pipe::create(shm.name(), PipeConfig::new(64, 8)).unwrap();
    for i in 0..20u8 {
        p.try_send(Message::new(Request::DO, vec![i])).unwrap();
    }
    let mut child = ChildProc::spawn(
        "take_then_stop",
        &[
            ("PIPE", shm.name().to_owned()),
            ("TAKE", "5".into()),
            ("HOLD", "1".into()),
        ],
    );
    child.wait_ready(SHORT);
    let f = child.kill();
    assert_eq!(f.get::<String>("got"), "0,1,2,3,4,held5,freed6");
    let expected: Vec<u8> = std::iter::once(5).chain(7..20).collect();

    let snap = mulproc::inspect::snapshot(shm.name()).unwrap();
    let dir = snap.pipe().expect("a pipe").directions[0];
    assert_eq!((dir.head, dir.tail, dir.waiting), (5, 20, 14), "{dir:?}");
    let peek = mulproc::inspect::peek(shm.name(), 64, 8).unwrap();
    let peeked: Vec<u8> = peek.messages.iter().map(|m| m.data[0]).collect();
    assert_eq!(peeked, expected);

    let next = open(shm.name());
    let mut got = Vec::new();
    while let Ok(m) = next.try_recv() {
        got.push(m.data[0]);
    }
    assert_eq!(got, expected);
    // Every slot is free again for the sender.
    for i in 0..64u8 {
        p.try_send(Message::new(Request::DO, vec![i]))
            .unwrap_or_else(|e| panic!("message {i}: {e}"));
    }
}

// ------------------------------------------- receiving and streaming ---

/// How [`recv_in_turn`] lets go of a `recv_ref` guard.
#[derive(Clone, Copy, Debug)]
enum Release {
    /// `finish()`, which must succeed.
    Finish,
    /// Dropping the guard.
    Drop,
}

/// Receives one message on `p` (waiting at most `timeout`) with the
/// receive call for `round`: `recv_timeout`, `recv_into` and `recv_ref` in
/// turn, the last one letting go of its guard as `release` says. Returns
/// the header and payload; panics naming the round and the call if the
/// receive fails.
fn recv_in_turn(
    p: &mut Pipe,
    round: u64,
    buf: &mut Vec<u8>,
    timeout: Duration,
    release: Release,
) -> (Header, Vec<u8>) {
    let fail = |call: &str, e: RecvTimeoutError| -> ! { panic!("round {round}: {call}: {e}") };
    match round % 3 {
        0 => {
            let m = p
                .recv_timeout(timeout)
                .unwrap_or_else(|e| fail("recv_timeout", e));
            (m.header(), m.data)
        }
        1 => {
            let h = p
                .recv_into_timeout(buf, timeout)
                .unwrap_or_else(|e| fail("recv_into", e));
            (h, buf.clone())
        }
        _ => {
            let g = p
                .recv_ref_timeout(timeout)
                .unwrap_or_else(|e| fail("recv_ref", e));
            let r = (*g.header(), g.data().to_vec());
            match release {
                Release::Finish => g
                    .finish()
                    .unwrap_or_else(|e| panic!("round {round}: finish: {e}")),
                Release::Drop => drop(g),
            }
            r
        }
    }
}

/// Streams `count` [`seq_payload`] messages out of `p` while taking
/// messages in, both at once and with non-blocking calls only, until
/// `count` have gone each way. Each received message goes to `check` with
/// the sequence number it should carry, its sender and what
/// [`check_seq_payload`] makes of it. When there is nothing to do it
/// asserts that `deadline` has not passed, calls `on_idle` with the count
/// received so far, and yields (or, after a while, sleeps briefly in
/// `recv_timeout`). Returns how many messages came in.
fn duplex_stream(
    p: &Pipe,
    count: u64,
    deadline: Instant,
    mut check: impl FnMut(u64, Option<u32>, Result<u64, String>),
    mut on_idle: impl FnMut(u64),
) -> u64 {
    let max = p.max_payload() as u32;
    let (mut sent, mut received) = (0u64, 0u64);
    let mut pending: Option<Message> = None;
    let mut idle = 0u32;
    while sent < count || received < count {
        let mut progress = false;
        if sent < count {
            match p.try_send(Message::new(Request::DO, seq_payload(sent, max))) {
                Ok(()) => {
                    sent += 1;
                    progress = true;
                }
                Err(e) if e.is_full() => {}
                Err(e) => panic!("try_send {sent}: {e:?}"),
            }
        }
        loop {
            let m = match pending.take().map_or_else(|| p.try_recv(), Ok) {
                Ok(m) => m,
                // The other end finished and closed: nothing more comes.
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                Err(e) => panic!("try_recv: {e}"),
            };
            progress = true;
            check(received, m.sender, check_seq_payload(&m.data, max));
            received += 1;
        }
        if !progress {
            assert!(
                Instant::now() < deadline,
                "stalled: sent {sent} received {received}"
            );
            on_idle(received);
            // Nothing to do: yield a little, then sleep until the other
            // end sends (bounded: it may be our own full direction that
            // waits), and look again.
            idle += 1;
            if idle < 64 {
                std::thread::yield_now();
            } else {
                pending = p.recv_timeout(Duration::from_millis(2)).ok();
            }
        } else {
            idle = 0;
        }
    }
    received
}

// --------------------------------------------------------------- tests ---

/// Runs a `try_open` child on pipe `name` to its successful end; returns
/// the outcome it reported and its pid.
fn try_open_in_child(name: &str) -> (String, u32) {
    let mut child = ChildProc::spawn("try_open", &[("PIPE", name.to_owned())]);
    let f = child.wait_success(SHORT);
    (f.get("result"), child.pid())
}

/// Pins: lost, duplicated, reordered or torn messages in either direction
/// of a pipe between two processes, over 10,000 round trips with varying
/// payload lengths (each end receiving with every receive call in turn).
#[test]
fn ping_pong_10000_round_trips() {
    const ROUNDS: u64 = 10_000;
    let shm = ShmGuard::new("pipe-ping");
    let mut p = Pipe::create(shm.name(), PipeConfig::new(8, PING_MAX_PAYLOAD)).unwrap();
    p.set_send_retry(patient());
    assert_eq!(p.end(), PipeEnd::Parent);
    let mut child = ChildProc::spawn(
        "echo",
        &[
            ("PIPE", shm.name().to_owned()),
            ("PARENT", std::process::id().to_string()),
        ],
    );
    child.wait_ready(SHORT);
    let cpid = child.pid();
    assert_eq!(p.peer_pid(), Some(cpid));
    let t = Instant::now();
    let mut buf = Vec::new();
    for i in 0..ROUNDS {
        let data = seq_payload(i, PING_MAX_PAYLOAD);
        p.send(Message::new(Request::DO, data.as_slice()))
            .unwrap_or_else(|e| panic!("send {i}: {e:?}"));
        let (h, got) = recv_in_turn(&mut p, i, &mut buf, SHORT, Release::Drop);
        assert_eq!(h.request, Request::FINISHED, "round {i}");
        assert_eq!(h.sender, cpid, "round {i}");
        assert_eq!(got, echo_of(&data), "round {i}: wrong or damaged echo");
    }
    p.send(Message::signal(Request::DIE)).unwrap();
    let f = child.wait_success(SHORT);
    assert_eq!(f.get::<u64>("echoed"), ROUNDS);
    eprintln!("{ROUNDS} round trips: {:?}", t.elapsed());
    // The child has closed its end: nothing more can come.
    assert_eq!(p.try_recv().unwrap_err(), TryRecvError::Disconnected);
}

/// Pins: sequence arithmetic of a direction over many laps of the smallest
/// ring, with both directions streaming at once (full and empty alternate
/// constantly on each side).
#[test]
fn wrap_around_capacity_2_both_directions_at_once() {
    const COUNT: u64 = 10_000;
    let shm = ShmGuard::new("pipe-wrap2");
    let p = Pipe::create(shm.name(), PipeConfig::new(2, 24)).unwrap();
    let mut child = ChildProc::spawn(
        "duplex_stream",
        &[
            ("PIPE", shm.name().to_owned()),
            ("COUNT", COUNT.to_string()),
            ("PARENT", std::process::id().to_string()),
        ],
    );
    let cpid = child.pid();
    let t = Instant::now();
    duplex_stream(
        &p,
        COUNT,
        t + LONG,
        |at, sender, seq| {
            let seq = seq.unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(seq, at, "child's messages out of order");
            assert_eq!(sender, Some(cpid));
        },
        |received| assert!(child.is_running() || received == COUNT, "child died"),
    );
    let f = child.wait_success(LONG);
    assert_eq!(f.get::<u64>("received"), COUNT);
    assert_eq!(
        f.get::<u64>("bad"),
        0,
        "child got bad messages: {}",
        f.get::<String>("first_problem")
    );
    eprintln!("2 × {COUNT} messages over capacity 2: {:?}", t.elapsed());
}

/// Pins: a lost wake-up on a pipe (a child asleep in `recv` must wake on a
/// single send ~300 ms later) and `recv_timeout` returning early, late or
/// with a message when nothing was sent (in the child and in the parent).
#[test]
fn blocking_recv_wakes_on_one_send_and_recv_timeout_times_out() {
    let shm = ShmGuard::new("pipe-wake");
    let p = Pipe::create(shm.name(), PipeConfig::new(4, 16)).unwrap();
    let mut child = ChildProc::spawn("wait_one", &[("PIPE", shm.name().to_owned())]);
    child.wait_ready(SHORT);
    // Parent side: nothing sent to us.
    let t = Instant::now();
    assert_eq!(
        p.recv_timeout(Duration::from_millis(200)).unwrap_err(),
        RecvTimeoutError::Timeout
    );
    let el = t.elapsed();
    assert!(
        el >= Duration::from_millis(190) && el < Duration::from_secs(10),
        "{el:?}"
    );
    let mut buf = Vec::new();
    assert_eq!(
        p.recv_into_timeout(&mut buf, Duration::ZERO).unwrap_err(),
        RecvTimeoutError::Timeout
    );
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.is_running(), "recv returned with nothing sent");
    p.send(Message::new(Request::DO, b"wake up".as_slice()))
        .unwrap();
    let f = child.wait_success(SHORT);
    assert_eq!(f.get::<String>("timeout_result"), "Err(Timeout)");
    let ms = f.get::<u64>("timeout_ms");
    assert!(
        (190..10_000).contains(&ms),
        "child's recv_timeout took {ms} ms"
    );
    assert_eq!(f.get::<String>("got"), "wake up");
    eprintln!("child slept {} ms in recv", f.get::<u64>("waited_ms"));
}

/// Pins: `send` on a full pipe direction giving up too early, never, or
/// losing the message (3 tries of 50 ms: `Full` after ≥ 150 ms with the
/// message given back, nothing written), and a sender asleep on a full
/// direction not woken when the other end receives.
#[test]
fn send_on_full_direction_gives_message_back_then_wakes_when_received() {
    let shm = ShmGuard::new("pipe-full");
    let p = Pipe::create(shm.name(), PipeConfig::new(4, 16)).unwrap();
    let mut child = ChildProc::spawn("fill", &[("PIPE", shm.name().to_owned())]);
    child.wait_ready(SHORT);
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.is_running(), "send on a full pipe returned");
    assert_eq!(p.len(), 4);
    // Receive one: the blocked sender gets the freed slot.
    assert_eq!(p.try_recv().unwrap().data, 0u32.to_le_bytes());
    let f = child.wait_success(SHORT);
    assert_eq!(f.get::<u32>("filled"), 4);
    let full_ms = f.get::<u64>("full_ms");
    assert!((145..10_000).contains(&full_ms), "Full after {full_ms} ms");
    assert_eq!(f.get::<String>("is_full"), "true");
    assert_eq!(f.get::<String>("given_back"), "true");
    eprintln!("blocked sender waited {} ms", f.get::<u64>("waited_ms"));
    // The refused message was not written; the late one was, last.
    for i in 1..4u32 {
        assert_eq!(p.try_recv().unwrap().data, i.to_le_bytes());
    }
    assert_eq!(p.try_recv().unwrap().data, b"late");
    // The child has exited, closing its end: drained, then Disconnected.
    assert_eq!(p.try_recv().unwrap_err(), TryRecvError::Disconnected);

    // The parent's direction too, in process (with a live child end: a
    // closed one makes sends Disconnected): full after capacity.
    let mut p = p;
    let _peer = Pipe::open(p.name()).unwrap();
    p.set_send_retry(SendRetry {
        tries: 2,
        wait: Duration::from_millis(20),
    });
    for i in 0..4u8 {
        p.try_send(Message::new(Request::DO, vec![i])).unwrap();
    }
    let back = p.send(Message::new(Request::DIE, vec![9u8])).unwrap_err();
    assert!(back.is_full());
    assert_eq!(back.into_inner().data, [9]);
}

/// Pins: two processes holding the child end at once (a second opener must
/// get `EndTaken` naming the holder while it lives, the parent too), and an
/// end never given back: after the holder is SIGKILLed (and reaped) or
/// exits normally, a new process opens it and talks to the parent.
#[test]
fn child_end_taken_while_held_and_free_after_holder_dies() {
    let shm = ShmGuard::new("pipe-end");
    let p = Pipe::create(shm.name(), PipeConfig::new(4, 16)).unwrap();
    assert_eq!(p.peer_pid(), None);
    let name = shm.name().to_owned();
    let mut holder = ChildProc::spawn("holder", &[("PIPE", name.clone())]);
    holder.wait_ready(SHORT);
    let hpid = holder.pid();
    assert_eq!(p.peer_pid(), Some(hpid));
    match Pipe::open(&name) {
        Err(SetupError::EndTaken { pid, .. }) => assert_eq!(pid, hpid),
        other => panic!("parent opening a held child end: {other:?}"),
    }
    let (result, _) = try_open_in_child(&name);
    assert_eq!(result, format!("end_taken:{hpid}"));

    // SIGKILL: the holder never gives the end back itself.
    let f = holder.kill();
    assert_eq!(f.get::<u32>("peer"), std::process::id());
    let (result, next_pid) = try_open_in_child(&name);
    assert_eq!(result, "ok", "end of a dead holder not taken over");
    let m = p.recv_timeout(SHORT).unwrap();
    assert_eq!(
        (m.data.as_slice(), m.sender),
        (b"hello".as_slice(), Some(next_pid))
    );

    // That one exited normally (dropping its end): free again.
    assert_eq!(p.peer_pid(), None, "end not given back on drop");
    let (result, again_pid) = try_open_in_child(&name);
    assert_eq!(result, "ok");
    let m = p.recv_timeout(SHORT).unwrap();
    assert_eq!(m.sender, Some(again_pid));
}

/// Pins: a holder that has died but is not reaped yet (a zombie: the
/// parent has not waited for it) still counting as alive, so the end of a
/// crashed child cannot be taken over by its replacement until the parent
/// happens to reap it. `sys::process_exists` uses `kill(pid, 0)`, which
/// succeeds for zombies.
///
/// Reproduction: a child opens the pipe and sleeps; the parent SIGKILLs it
/// with `libc::kill` without waiting for it; another child's `Pipe::open`
/// gets `EndTaken { pid: <the dead child> }`.
#[test]
fn child_end_free_when_holder_died_but_is_not_reaped() {
    let shm = ShmGuard::new("pipe-zombie");
    let _p = Pipe::create(shm.name(), PipeConfig::new(4, 16)).unwrap();
    let name = shm.name().to_owned();
    let mut holder = ChildProc::spawn("holder", &[("PIPE", name.clone())]);
    holder.wait_ready(SHORT);
    let hpid = holder.pid();
    // SAFETY: signalling our own child, which is not reaped yet (its pid
    // cannot have been reused).
    assert_eq!(unsafe { libc::kill(hpid as libc::pid_t, libc::SIGKILL) }, 0);
    // Wait until it is a zombie (state Z), without reaping it.
    let end = Instant::now() + SHORT;
    loop {
        let stat = std::fs::read_to_string(format!("/proc/{hpid}/stat")).unwrap_or_default();
        let state = stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .chars()
            .next();
        if state == Some('Z') {
            break;
        }
        assert!(Instant::now() < end, "holder never became a zombie: {stat}");
        std::thread::sleep(Duration::from_millis(5));
    }
    let (result, _) = try_open_in_child(&name);
    assert_eq!(
        result, "ok",
        "the end of a dead (zombie) holder was not taken over"
    );
    drop(holder); // reaps it
}

/// Pins: a pipe opened as a queue, or a queue as a pipe, being accepted
/// (and then misread or scribbled on): both give `SetupError::WrongKind`,
/// and both channels still work afterwards.
#[test]
fn opening_the_wrong_kind_is_refused() {
    let pipe_shm = ShmGuard::new("pipe-kind-p");
    let queue_shm = ShmGuard::new("pipe-kind-q");
    let p = Pipe::create(pipe_shm.name(), PipeConfig::new(4, 16)).unwrap();
    let q = Queue::create(queue_shm.name(), QueueConfig::new(4, 16)).unwrap();
    match Queue::open(pipe_shm.name()) {
        Err(SetupError::WrongKind {
            found, expected, ..
        }) => assert_eq!((found, expected), (ChannelKind::Pipe, ChannelKind::Queue)),
        other => panic!("pipe opened as a queue: {other:?}"),
    }
    match Pipe::open(queue_shm.name()) {
        Err(SetupError::WrongKind {
            found, expected, ..
        }) => assert_eq!((found, expected), (ChannelKind::Queue, ChannelKind::Pipe)),
        other => panic!("queue opened as a pipe: {other:?}"),
    }
    // The same from another process.
    let (r, _) = try_open_in_child(queue_shm.name());
    assert!(r.starts_with("other:WrongKind"), "{r}");
    // Both still work; the failed Queue::open took no pipe end.
    assert_eq!(p.peer_pid(), None);
    let child = Pipe::open(pipe_shm.name()).expect("child end still free");
    child
        .try_send(Message::new(Request::DO, b"p".as_slice()))
        .unwrap();
    assert_eq!(p.try_recv().unwrap().data, b"p");
    q.try_send(Message::new(Request::DO, b"q".as_slice()))
        .unwrap();
    assert_eq!(q.try_recv().unwrap().data, b"q");
}

/// Pins: two live handles on one pipe end. `Pipe::open` lets the process
/// that already holds the child end open it again (`holder == me` is
/// accepted), and the two handles each keep their own positions: a message
/// sent by one is overwritten by the other's (lost), every message to the
/// child end is delivered to both (duplicated), and dropping one marks the
/// end free while the other still uses it, so a second process can then
/// take it too.
///
/// Reproduction: `create`; `a = open`; `b = open` (Ok, expected
/// `EndTaken`); `a.try_send("from a")`, `b.try_send("from b")`: the parent
/// receives only "from b"; the parent's one message is received by both.
#[test]
fn second_open_of_a_held_end_in_the_same_process_is_refused() {
    let shm = ShmGuard::new("pipe-double");
    let p = Pipe::create(shm.name(), PipeConfig::new(4, 16)).unwrap();
    let a = Pipe::open(shm.name()).unwrap();
    match Pipe::open(shm.name()) {
        Err(SetupError::EndTaken { pid, .. }) => assert_eq!(pid, std::process::id()),
        Err(e) => panic!("second open: {e:?}"),
        Ok(b) => {
            a.try_send(Message::new(Request::DO, b"from a".as_slice()))
                .unwrap();
            b.try_send(Message::new(Request::DO, b"from b".as_slice()))
                .unwrap();
            let first = p.try_recv().map(|m| m.data);
            let second = p.try_recv().map(|m| m.data);
            panic!(
                "second open of a held end succeeded; the parent then received {:?} and {:?}",
                first.map(|d| String::from_utf8_lossy(&d).into_owned()),
                second.map(|d| String::from_utf8_lossy(&d).into_owned())
            );
        }
    }
}

/// Pins: a new holder of a pipe end overwriting a message its predecessor
/// published but had not yet counted in `tail` (a holder killed between the
/// two stores). Simulated by publishing, winding the shared `tail` of the
/// child-to-parent direction back, and dropping the end; the next holder
/// must send after that message, and the parent must get both.
#[test]
fn reopened_end_continues_after_what_was_published() {
    // `tail` of direction 1 (child to parent): header line 4.
    const DIR1_TAIL: u64 = mulproc::__layout::pipe_tail_at(1);
    let shm = ShmGuard::new("pipe-reopen");
    let parent = Pipe::create(shm.name(), PipeConfig::new(4, 16)).unwrap();
    {
        let first = Pipe::open(shm.name()).unwrap();
        first
            .try_send(Message::new(Request::DO, b"first".as_slice()))
            .unwrap();
    }
    patch_u64(shm.name(), DIR1_TAIL, 0);
    let second = Pipe::open(shm.name()).unwrap();
    second
        .try_send(Message::new(Request::DO, b"second".as_slice()))
        .unwrap();
    assert_eq!(parent.try_recv().unwrap().data, b"first");
    assert_eq!(parent.try_recv().unwrap().data, b"second");
}
