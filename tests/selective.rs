//! Receive with a predicate (pymulproc's `receive(func)`): a rejected
//! message is not lost and does not stop others from receiving past it; a
//! blocked selective receiver wakes for a matching message and keeps
//! sleeping (without burning CPU) on the others. Children are real
//! processes of this test binary (see `common`).

mod common;

use std::time::{Duration, Instant};

use common::*;
use mulproc::{
    Filter, Header, Message, Queue, QueueConfig, RecvTimeoutError, Request, SendRetry,
    TryRecvError, Wait,
};

/// Generous timeouts: the machine is shared and noisy.
const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(30);
/// A pid that never receives: init.
const NOBODY: u32 = 1;
/// Request codes the selective waiters look for.
const WANTED: Request = Request::new(100);
const WANTED_A: Request = Request::new(200);
const WANTED_B: Request = Request::new(201);
/// Offset of the selective receivers' sleeper count (from the crate's
/// hidden layout export). White-box, only a soft readiness hint (see
/// `common::wait_for_sleepers`).
const SELECTIVE_WAITERS: u64 = mulproc::__layout::SELECTIVE_WAITERS;

fn patient() -> SendRetry {
    SendRetry {
        tries: 1200,
        wait: Duration::from_millis(50),
    }
}

fn open(name: &str) -> Queue {
    let mut q = Queue::open(name).unwrap_or_else(|e| panic!("open {name}: {e}"));
    q.set_send_retry(patient());
    q
}

/// Payload of addressed message `seq`: the sequence number, then a few
/// pattern bytes so lengths vary and torn copies show.
fn seq_payload(seq: u64) -> Vec<u8> {
    let mut v = seq.to_le_bytes().to_vec();
    v.extend((0..(seq % 7) as u8).map(|j| (seq as u8) ^ j));
    v
}

/// User + system CPU time of process `pid`, in clock ticks, from
/// `/proc/<pid>/stat` (fields 14 and 15; counted after the `)` that ends
/// the command name).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .unwrap_or_else(|e| panic!("read /proc/{pid}/stat: {e}"));
    let rest = &stat[stat.rfind(')').expect("stat format") + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state): utime is field 14, stime field 15.
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

// --------------------------------------------------------------- roles ---

#[test]
fn child_entry() {
    common::child_entry(|role| match role {
        "for_me" => role_for_me(),
        "wait_for_code" => role_wait_for_code(),
        other => panic!("unknown role {other:?}"),
    });
}

/// Receives COUNT messages with `recv_for_me`; each must be addressed to
/// it, come from PARENT, and carry the next sequence number.
fn role_for_me() -> i32 {
    let q = open(&arg("QUEUE"));
    let count: u64 = arg_parse("COUNT");
    let parent: u32 = arg_parse("PARENT");
    let me = std::process::id();
    ready();
    for seq in 0..count {
        let m = q
            .recv_for_me_timeout(LONG)
            .unwrap_or_else(|e| panic!("recv_for_me {seq}: {e}"));
        assert_eq!(m.recipient, Some(me), "message {seq} not addressed to me");
        assert_eq!(m.sender, Some(parent));
        assert_eq!(m.request, Request::DO);
        assert_eq!(
            m.data,
            seq_payload(seq),
            "message {seq} out of order or damaged"
        );
    }
    report("received", count);
    0
}

/// Ready, then one `recv_where` for request CODE with a timeout of
/// TIMEOUT_MS; reports what it got.
fn role_wait_for_code() -> i32 {
    let q = open(&arg("QUEUE"));
    let code: u32 = arg_parse("CODE");
    let timeout = Duration::from_millis(arg_parse("TIMEOUT_MS"));
    ready();
    let t = Instant::now();
    match q.recv_where_timeout(|h, _| h.request.code() == code, timeout) {
        Ok(m) => {
            report("code", m.request.code());
            report("data", String::from_utf8_lossy(&m.data));
            report("waited_ms", t.elapsed().as_millis());
            0
        }
        Err(e) => {
            report("error", e);
            4
        }
    }
}

// --------------------------------------------------------------- tests ---

/// Pins: a message rejected by a predicate being lost, moved, or blocking
/// the receive of the messages behind it; selective receive breaking the
/// order of the accepted messages or of the ones left behind.
#[test]
fn rejected_messages_stay_for_their_addressee_in_order() {
    const A: u32 = 1_000_001;
    const B: u32 = 1_000_002;
    let shm = ShmGuard::new("sel-in-process");
    let q = Queue::create(shm.name(), QueueConfig::new(8, 16)).unwrap();
    for (to, data) in [(A, "A1"), (B, "B1"), (A, "A2"), (B, "B2")] {
        q.try_send(Message::new(Request::DO, data.as_bytes()).to(to))
            .unwrap();
    }
    let for_b = |h: &mulproc::Header, _: &[u8]| h.recipient == Some(B);
    assert_eq!(q.try_recv_where(for_b).unwrap().data, b"B1");
    assert_eq!(q.try_recv_where(for_b).unwrap().data, b"B2");
    assert_eq!(q.try_recv_where(for_b).unwrap_err(), TryRecvError::Empty);
    // A's messages are untouched, still first in line, in order.
    let m = q.try_recv().unwrap();
    assert_eq!(
        (m.recipient, m.data.as_slice()),
        (Some(A), b"A1".as_slice())
    );
    let m = q.try_recv().unwrap();
    assert_eq!(
        (m.recipient, m.data.as_slice()),
        (Some(A), b"A2".as_slice())
    );
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
    assert!(q.is_empty());

    // The same with the blocking and header-only forms, and a predicate
    // that looks at the payload.
    for (to, data) in [(A, "A3"), (B, "B3"), (A, "A4"), (B, "B4")] {
        q.try_send(Message::new(Request::DO, data.as_bytes()).to(to))
            .unwrap();
    }
    let g = q
        .recv_with(
            Filter::Header(&mut |h: &Header| h.recipient == Some(B)),
            Wait::timeout(SHORT),
        )
        .unwrap();
    assert_eq!(g.data(), b"B3");
    drop(g);
    let m = q.recv_where_timeout(|_, d| d == b"B4", SHORT).unwrap();
    assert_eq!(m.recipient, Some(B));
    assert_eq!(
        q.recv_where_timeout(|_, d| d == b"B5", Duration::from_millis(50))
            .unwrap_err(),
        RecvTimeoutError::Timeout
    );
    assert_eq!(q.try_recv().unwrap().data, b"A3");
    assert_eq!(q.try_recv().unwrap().data, b"A4");
    assert!(q.is_empty());
}

/// Pins: head-of-line blocking across processes: two children each take
/// their own messages with `recv_for_me` from one stream of interleaved
/// addressed messages, concurrently, while a message for a pid that never
/// receives sits at the head the whole time. Each must get exactly its own,
/// in order; the stuck message must still be there at the end.
///
/// The ring is far smaller than the stream: whenever it fills behind the
/// stuck message, a sender moves that message to the back (see
/// `selective_take_frees_no_slot_while_head_waits`), so the stream flows.
#[test]
fn two_processes_take_their_own_past_a_stuck_head() {
    const PER_CHILD: u64 = 10_000;
    let shm = ShmGuard::new("sel-two-children");
    let mut q = Queue::create(shm.name(), QueueConfig::new(64, 16)).unwrap();
    q.set_send_retry(patient());
    q.try_send(Message::new(Request::DO, b"stuck".as_slice()).to(NOBODY))
        .unwrap();
    let args = |count: u64| {
        vec![
            ("QUEUE", shm.name().to_owned()),
            ("COUNT", count.to_string()),
            ("PARENT", std::process::id().to_string()),
        ]
    };
    let mut a = ChildProc::spawn("for_me", &args(PER_CHILD));
    let mut b = ChildProc::spawn("for_me", &args(PER_CHILD));
    a.wait_ready(SHORT);
    b.wait_ready(SHORT);
    let (pa, pb) = (a.pid(), b.pid());
    let t = Instant::now();
    for seq in 0..PER_CHILD {
        // Interleaved, with an irregular pattern so neither child's
        // messages sit at fixed distances.
        let first_a = seq % 3 != 1;
        let (x, y) = if first_a { (pa, pb) } else { (pb, pa) };
        for to in [x, y] {
            q.send(Message::new(Request::DO, seq_payload(seq)).to(to))
                .unwrap_or_else(|e| panic!("send {seq} to {to}: {e:?}"));
        }
    }
    let fa = a.wait_success(LONG);
    let fb = b.wait_success(LONG);
    assert_eq!(fa.get::<u64>("received"), PER_CHILD);
    assert_eq!(fb.get::<u64>("received"), PER_CHILD);
    eprintln!(
        "2 × {PER_CHILD} addressed messages past a stuck head: {:?}",
        t.elapsed()
    );
    // The stuck message is still there (moved to the back as the ring
    // filled), and it is all that is left.
    let m = q.try_recv().expect("the stuck message is still there");
    assert_eq!(
        (m.recipient, m.data.as_slice()),
        (Some(NOBODY), b"stuck".as_slice())
    );
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
    assert!(q.is_empty());
}

/// Pins: a message that nobody takes at the head of the ring stopping the
/// queue for everyone once `capacity - 1` later messages have gone through
/// it: messages taken out of order by a selective receive free no slot
/// while an older message waits, so a full queue stays full although
/// receivers have taken everything addressed to them. In a full-duplex
/// worker pool over one queue this deadlocks: a worker blocked in `send`
/// (queue full) never takes its next DO, which is the message at the head
/// (seen in `pymulproc_scenarios.rs`'s stress test with capacity 64).
/// pymulproc re-queues a rejected message at the back, so it never stalls.
///
/// Reproduction: capacity 4; send one message to pid 1 (nobody), then three
/// to ourselves and take them with `recv_for_me`; the queue then holds one
/// message, yet `try_send` fails with `Full` and `len()` says 4.
#[test]
fn selective_take_frees_no_slot_while_head_waits() {
    let shm = ShmGuard::new("sel-hol-capacity");
    let q = Queue::create(shm.name(), QueueConfig::new(4, 16)).unwrap();
    q.try_send(Message::new(Request::DO, b"stuck".as_slice()).to(NOBODY))
        .unwrap();
    for round in 0..100u32 {
        q.try_send(Message::new(Request::DO, round.to_le_bytes().as_slice()).to(q.pid()))
            .unwrap_or_else(|e| {
                panic!(
                    "round {round}: try_send: {e:?} with one message waiting (len() = {})",
                    q.len()
                )
            });
        let m = q.recv_for_me_timeout(SHORT).unwrap();
        assert_eq!(m.data, round.to_le_bytes());
    }
    assert_eq!(q.try_recv().unwrap().recipient, Some(NOBODY));
}

/// Pins: a lost wake-up for a selective receiver in another process (it
/// must wake on a matching message sent later), and spurious returns (it
/// must keep sleeping on non-matching messages, which stay in the queue,
/// in order).
#[test]
fn blocked_recv_where_wakes_only_for_a_match() {
    let shm = ShmGuard::new("sel-wake");
    let q = Queue::create(shm.name(), QueueConfig::new(16, 32)).unwrap();
    let mut child = ChildProc::spawn(
        "wait_for_code",
        &[
            ("QUEUE", shm.name().to_owned()),
            ("CODE", WANTED.code().to_string()),
            ("TIMEOUT_MS", "10000".into()),
        ],
    );
    child.wait_ready(SHORT);
    std::thread::sleep(Duration::from_millis(100));
    let asleep = wait_for_sleepers(shm.name(), SELECTIVE_WAITERS, 1, Duration::from_secs(2));
    eprintln!("selective waiter asleep (sleeper count seen): {asleep}");
    let others = [
        (Request::new(101), "no 1"),
        (Request::DO, "no 2"),
        (Request::new(99), "no 3"),
        (Request::FINISHED, "no 4"),
    ];
    for (req, data) in others {
        q.send(Message::new(req, data.as_bytes())).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        child.is_running(),
        "recv_where returned on a non-matching message:\n{}",
        child
            .wait(Duration::ZERO)
            .map(|f| f.describe())
            .unwrap_or_default()
    );
    q.send(Message::new(WANTED, b"the match".as_slice()))
        .unwrap();
    let f = child.wait_success(SHORT);
    assert_eq!(f.get::<u32>("code"), WANTED.code());
    assert_eq!(f.get::<String>("data"), "the match");
    // The non-matching ones are all still there, in order.
    for (req, data) in others {
        let m = q.try_recv().unwrap();
        assert_eq!((m.request, m.data.as_slice()), (req, data.as_bytes()));
    }
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
}

/// Pins: livelock (busy re-scanning) of selective receivers whose
/// predicates reject everything present: two children wait for codes 200
/// and 201 while a message for nobody sits in the queue; over ~1 s they
/// must use next to no CPU (< 0.3 s each, generous), also after a few more
/// non-matching messages woke them; then each gets its own message.
#[test]
fn selective_waiters_do_not_burn_cpu() {
    let shm = ShmGuard::new("sel-livelock");
    let q = Queue::create(shm.name(), QueueConfig::new(16, 32)).unwrap();
    q.try_send(Message::new(Request::DO, b"for nobody".as_slice()).to(NOBODY))
        .unwrap();
    let spawn = |code: Request| {
        ChildProc::spawn(
            "wait_for_code",
            &[
                ("QUEUE", shm.name().to_owned()),
                ("CODE", code.code().to_string()),
                ("TIMEOUT_MS", "60000".into()),
            ],
        )
    };
    let mut a = spawn(WANTED_A);
    let mut b = spawn(WANTED_B);
    a.wait_ready(SHORT);
    b.wait_ready(SHORT);
    std::thread::sleep(Duration::from_millis(200));
    let asleep = wait_for_sleepers(shm.name(), SELECTIVE_WAITERS, 2, Duration::from_secs(2));
    eprintln!("selective waiters asleep (sleeper count seen): {asleep}");
    let limit = 3 * clock_ticks_per_second() / 10;
    let mut measure = |phase: &str, nudge: bool| {
        let before = [cpu_ticks(a.pid()), cpu_ticks(b.pid())];
        let t = Instant::now();
        if nudge {
            for i in 0..5u8 {
                q.send(Message::new(Request::new(202), vec![i]).to(NOBODY))
                    .unwrap();
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        std::thread::sleep(Duration::from_secs(1).saturating_sub(t.elapsed()));
        let after = [cpu_ticks(a.pid()), cpu_ticks(b.pid())];
        for (i, c) in [&mut a, &mut b].into_iter().enumerate() {
            assert!(c.is_running(), "{phase}: waiter {i} returned");
            let used = after[i] - before[i];
            eprintln!("{phase}: waiter {i} used {used} ticks in {:?}", t.elapsed());
            assert!(
                used < limit,
                "{phase}: waiter {i} used {used} clock ticks (limit {limit}) while nothing matched"
            );
        }
    };
    measure("quiet", false);
    measure("nudged", true);
    q.send(Message::new(WANTED_B, b"b".as_slice())).unwrap();
    q.send(Message::new(WANTED_A, b"a".as_slice())).unwrap();
    let fa = a.wait_success(SHORT);
    let fb = b.wait_success(SHORT);
    assert_eq!(
        (fa.get::<u32>("code"), fa.get::<String>("data")),
        (200, "a".into())
    );
    assert_eq!(
        (fb.get::<u32>("code"), fb.get::<String>("data")),
        (201, "b".into())
    );
    // Left: the message for nobody and the five nudges, in order.
    let m = q.try_recv().unwrap();
    assert_eq!(m.data, b"for nobody");
    for i in 0..5u8 {
        let m = q.try_recv().unwrap();
        assert_eq!((m.request, m.data), (Request::new(202), vec![i]));
    }
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
}
