//! Real multi-process tests: children are new processes of this test binary
//! (see `common`), playing the roles dispatched in `child_entry` below.

mod common;

use std::time::{Duration, Instant};

use common::*;
use mulproc::{
    Header, Message, Queue, QueueConfig, RecvTimeoutError, Request, SendRetry, TryRecvError,
    TrySendError,
};

/// Request code of the zero-copy tests' messages.
const ZC_REQUEST: Request = Request::new(100);
/// Max payload of the stream tests' queues.
const STREAM_MAX_PAYLOAD: u32 = 64;
/// Generous child timeouts: the machine is shared and noisy.
const LONG: Duration = Duration::from_secs(120);
const SHORT: Duration = Duration::from_secs(20);

fn open(name: &str) -> Queue {
    let mut q = Queue::open(name).unwrap_or_else(|e| panic!("open {name}: {e}"));
    q.set_send_retry(patient());
    q
}

// ------------------------------------------------------------ payloads ---

/// Stream payload: producer id, producer pid, sequence number, then
/// `seq % 29` pattern bytes (so lengths vary and torn copies show).
fn stream_payload(id: u32, pid: u32, seq: u64, buf: &mut Vec<u8>) {
    buf.clear();
    buf.extend_from_slice(&id.to_le_bytes());
    buf.extend_from_slice(&pid.to_le_bytes());
    buf.extend_from_slice(&seq.to_le_bytes());
    for j in 0..(seq % 29) as u8 {
        buf.push((seq as u8) ^ j ^ (id as u8).wrapping_mul(31));
    }
}

/// Checks a stream payload against its header; returns (producer id, seq).
fn check_stream_payload(sender: u32, data: &[u8]) -> Result<(u32, u64), String> {
    if data.len() < 16 {
        return Err(format!("short payload of {} bytes", data.len()));
    }
    let id = u32::from_le_bytes(data[0..4].try_into().unwrap());
    let pid = u32::from_le_bytes(data[4..8].try_into().unwrap());
    let seq = u64::from_le_bytes(data[8..16].try_into().unwrap());
    if pid != sender {
        return Err(format!("sender {sender} but payload says pid {pid}"));
    }
    let mut want = Vec::new();
    stream_payload(id, pid, seq, &mut want);
    if want != data {
        return Err(format!("payload of producer {id} seq {seq} damaged"));
    }
    Ok((id, seq))
}

/// Per-producer tallies a consumer reports: enough to check exactly-once
/// across consumers without shipping every sequence number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Tally {
    count: u64,
    sum: u64,
    xor: u64,
    sumsq: u64,
}

impl Tally {
    fn add(&mut self, seq: u64) {
        self.count += 1;
        self.sum = self.sum.wrapping_add(seq);
        self.xor ^= seq;
        self.sumsq = self.sumsq.wrapping_add(seq.wrapping_mul(seq));
    }
    fn merge(&mut self, o: Tally) {
        self.count += o.count;
        self.sum = self.sum.wrapping_add(o.sum);
        self.xor ^= o.xor;
        self.sumsq = self.sumsq.wrapping_add(o.sumsq);
    }
    fn of_range(n: u64) -> Tally {
        let mut t = Tally::default();
        (0..n).for_each(|s| t.add(s));
        t
    }
    fn encode(&self) -> String {
        format!("{},{},{},{}", self.count, self.sum, self.xor, self.sumsq)
    }
    fn decode(s: &str) -> Tally {
        let v: Vec<u64> = s.split(',').map(|x| x.parse().unwrap()).collect();
        Tally {
            count: v[0],
            sum: v[1],
            xor: v[2],
            sumsq: v[3],
        }
    }
}

// --------------------------------------------------------------- roles ---

#[test]
fn child_entry() {
    common::child_entry(|role| match role {
        "producer" => role_producer(),
        "consumer" => role_consumer(),
        "recv_one" => role_recv_one(),
        "recv_forever" => role_recv_forever(),
        "blocked_sender" => role_blocked_sender(),
        "fill_until_full" => role_fill_until_full(),
        "reserve_producer" => role_reserve_producer(),
        "ref_consumer" => role_ref_consumer(),
        "echo" => role_echo(),
        "header_sender" => role_header_sender(),
        "opener" => role_opener(),
        other => panic!("unknown role {other:?}"),
    });
}

/// Sends COUNT stream messages as producer ID; MODE 0 uses `send`, MODE 1 a
/// `try_send` loop.
fn role_producer() -> i32 {
    let q = open(&arg("QUEUE"));
    let id: u32 = arg_parse("ID");
    let count: u64 = arg_parse("COUNT");
    let mode: u32 = arg_parse("MODE");
    let pid = std::process::id();
    let mut buf = Vec::new();
    for seq in 0..count {
        stream_payload(id, pid, seq, &mut buf);
        let mut m = Message::new(Request::DO, buf.as_slice());
        if mode == 0 {
            q.send(m)
                .unwrap_or_else(|e| panic!("producer {id}: send {seq}: {e:?}"));
        } else {
            loop {
                match q.try_send(m) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) => {
                        m = back;
                        std::thread::yield_now();
                    }
                    Err(e) => panic!("producer {id}: try_send {seq}: {e:?}"),
                }
            }
        }
    }
    report("sent", count);
    0
}

/// Receives stream messages until DIE; reports a tally per producer, whether
/// every producer's messages came in order, and damaged payloads. MODE
/// picks the receive call: 0 `recv`, 1 `recv_into`, 2 `recv_ref`.
fn role_consumer() -> i32 {
    let q = open(&arg("QUEUE"));
    let producers: usize = arg_parse("PRODUCERS");
    let mode: u32 = arg_parse("MODE");
    let mut tallies = vec![Tally::default(); producers];
    let mut last: Vec<Option<u64>> = vec![None; producers];
    let mut out_of_order = 0u64;
    let mut bad = 0u64;
    let mut first_problem = String::from("-");
    let mut buf = Vec::new();
    let note = |msg: String, first: &mut String| {
        if first == "-" {
            *first = msg.replace('=', ":");
        }
    };
    loop {
        let (request, sender, result) = match mode {
            0 => {
                let m = q.recv().expect("recv");
                let r = check_stream_payload(m.sender.unwrap_or(0), &m.data);
                (m.request, m.sender.unwrap_or(0), r)
            }
            1 => {
                let h = q.recv_into(&mut buf).expect("recv_into");
                (h.request, h.sender, check_stream_payload(h.sender, &buf))
            }
            _ => {
                let g = q.recv_ref().expect("recv_ref");
                let h = *g.header();
                let r = check_stream_payload(h.sender, g.data());
                g.finish().expect("finish");
                (h.request, h.sender, r)
            }
        };
        if request == Request::DIE {
            break;
        }
        if request != Request::DO {
            bad += 1;
            note(
                format!("request {request:?} from {sender}"),
                &mut first_problem,
            );
            continue;
        }
        match result {
            Ok((id, seq)) if (id as usize) < producers => {
                let id = id as usize;
                if last[id].is_some_and(|l| seq <= l) {
                    out_of_order += 1;
                    note(
                        format!("producer {id}: seq {seq} after {:?}", last[id]),
                        &mut first_problem,
                    );
                }
                last[id] = Some(seq);
                tallies[id].add(seq);
            }
            Ok((id, _)) => {
                bad += 1;
                note(format!("unknown producer {id}"), &mut first_problem);
            }
            Err(e) => {
                bad += 1;
                note(e, &mut first_problem);
            }
        }
    }
    for (id, t) in tallies.iter().enumerate() {
        report(&format!("p{id}"), t.encode());
    }
    report("out_of_order", out_of_order);
    report("bad", bad);
    report("first_problem", first_problem);
    0
}

/// Ready, then one blocking `recv`, which must carry EXPECT.
fn role_recv_one() -> i32 {
    let q = open(&arg("QUEUE"));
    let expect = arg("EXPECT");
    ready();
    let m = q.recv().expect("recv");
    assert_eq!(m.request, Request::DO);
    assert_eq!(m.data, expect.as_bytes(), "wrong message");
    report("got", String::from_utf8_lossy(&m.data));
    0
}

/// Ready, then blocks in `recv` until killed. Receiving anything is a
/// failure (exit 3): the parent never sends while this child lives.
fn role_recv_forever() -> i32 {
    let q = open(&arg("QUEUE"));
    ready();
    let m = q.recv();
    println!("recv_forever received {m:?}");
    3
}

/// Opens a full queue, is ready, then `send`s one message with one try of
/// up to 60 s: returns only once another process frees a slot.
fn role_blocked_sender() -> i32 {
    let mut q = open(&arg("QUEUE"));
    q.set_send_retry(SendRetry {
        tries: 1,
        wait: Duration::from_secs(60),
    });
    ready();
    let t = Instant::now();
    q.send(Message::new(Request::DO, arg("DATA").as_bytes()))
        .expect("blocked send");
    report("waited_ms", t.elapsed().as_millis());
    0
}

/// `try_send`s DATA until the queue is full; reports how many went in.
fn role_fill_until_full() -> i32 {
    let q = open(&arg("QUEUE"));
    let data = arg("DATA");
    let mut sent = 0u32;
    loop {
        match q.try_send(Message::new(Request::DO, data.as_bytes())) {
            Ok(()) => sent += 1,
            Err(TrySendError::Full(m)) => {
                assert_eq!(m.data, data.as_bytes(), "Full gave back another message");
                break;
            }
            Err(e) => panic!("try_send: {e:?}"),
        }
        assert!(sent < 1000, "queue never full");
    }
    report("sent", sent);
    0
}

/// Payload of zero-copy message `i`: `i` then `i % 13` pattern bytes.
fn zc_payload(i: u64, out: &mut [u8]) -> usize {
    out[..8].copy_from_slice(&i.to_le_bytes());
    let extra = (i % 13) as usize;
    for j in 0..extra {
        out[8 + j] = (i as u8).wrapping_add(j as u8 * 7);
    }
    8 + extra
}

/// Message `i` of the zero-copy tests is abandoned (reserved, never
/// committed) when this says so.
fn zc_abandoned(i: u64) -> bool {
    i % 5 == 3
}

/// Writes zero-copy messages `0..count` in place: reserves a slot for each
/// (yielding while the queue is full, after calling `while_full`), fills it
/// with [`zc_payload`] and commits it, except the [`zc_abandoned`] ones,
/// which are dropped uncommitted.
fn reserve_zc_messages(q: &Queue, count: u64, mut while_full: impl FnMut()) {
    for i in 0..count {
        let mut slot = loop {
            match q.try_reserve() {
                Ok(s) => break s,
                Err(TrySendError::Full(())) => {
                    while_full();
                    std::thread::yield_now();
                }
                Err(e) => panic!("try_reserve {i}: {e:?}"),
            }
        };
        let len = zc_payload(i, slot.payload_mut());
        if zc_abandoned(i) {
            drop(slot);
        } else {
            slot.commit(ZC_REQUEST, None, len)
                .unwrap_or_else(|e| panic!("commit {i}: {e:?}"));
        }
    }
}

/// Checks a zero-copy message received in place: request [`ZC_REQUEST`]
/// (an abandoned reservation is never delivered), sent by `sender`, and
/// carrying the payload of the first committed message from `*next` on;
/// then moves `*next` past that message.
fn check_zc_message(h: &Header, data: &[u8], sender: u32, next: &mut u64) {
    assert_eq!(
        h.request, ZC_REQUEST,
        "abandoned reservation or stranger delivered"
    );
    assert_eq!(h.sender, sender);
    while zc_abandoned(*next) {
        *next += 1;
    }
    let mut want = [0u8; 32];
    let len = zc_payload(*next, &mut want);
    assert_eq!(data, &want[..len], "message {next}");
    *next += 1;
}

/// Fills COUNT reservations in place; commits all but the abandoned ones
/// (dropped uncommitted: given up, never delivered), then sends DIE.
fn role_reserve_producer() -> i32 {
    let q = open(&arg("QUEUE"));
    let count: u64 = arg_parse("COUNT");
    reserve_zc_messages(&q, count, || {});
    q.send(Message::signal(Request::DIE)).expect("send DIE");
    0
}

/// Receives in place with `recv_ref` until DIE, checking each payload in
/// shared memory; reports what it saw.
fn role_ref_consumer() -> i32 {
    let q = open(&arg("QUEUE"));
    let parent: u32 = arg_parse("PARENT");
    let mut expect = 0u64;
    let mut received = 0u64;
    loop {
        let g = q.recv_ref().expect("recv_ref");
        let h = *g.header();
        if h.request == Request::DIE {
            break;
        }
        check_zc_message(&h, g.data(), parent, &mut expect);
        g.finish().expect("finish");
        received += 1;
    }
    report("received", received);
    report("next", expect);
    0
}

/// Echo server: receives from QUEUE, answers on REPLY with the payload's u64
/// plus one, until DIE.
fn role_echo() -> i32 {
    let q = open(&arg("QUEUE"));
    let reply = open(&arg("REPLY"));
    let mut n = 0u64;
    ready();
    loop {
        let m = q.recv().expect("recv");
        if m.request == Request::DIE {
            break;
        }
        let v: u64 = m.read_pod().expect("u64 payload");
        reply
            .send(Message::pod(Request::FINISHED, &(v + 1)))
            .expect("reply");
        n += 1;
    }
    report("echoed", n);
    0
}

/// Sends a few messages with explicit header fields.
fn role_header_sender() -> i32 {
    let q = open(&arg("QUEUE"));
    let to: u32 = arg_parse("TO");
    q.send(Message::new(Request::new(77), b"plain".as_slice()))
        .unwrap();
    q.send(Message::new(Request::FINISHED, b"addressed".as_slice()).to(to))
        .unwrap();
    q.send(Message::new(Request::new(u32::MAX), vec![0xAB; 3]).from_pid(4242))
        .unwrap();
    q.send(Message::signal(Request::DIE)).unwrap();
    0
}

/// Opens QUEUE over and over for DURATION_MS, counting the outcomes.
fn role_opener() -> i32 {
    let name = arg("QUEUE");
    let end = Instant::now() + Duration::from_millis(arg_parse("DURATION_MS"));
    let (mut ok, mut not_found, mut other) = (0u64, 0u64, 0u64);
    let mut kinds = std::collections::BTreeSet::new();
    ready();
    while Instant::now() < end {
        match Queue::open(&name) {
            Ok(_) => ok += 1,
            Err(mulproc::SetupError::NotFound { .. }) => not_found += 1,
            Err(e) => {
                other += 1;
                kinds.insert(format!("{e:?}").replace(&name, "..").replace('=', ":"));
            }
        }
    }
    report("ok", ok);
    report("not_found", not_found);
    report("other", other);
    report(
        "other_kinds",
        kinds.into_iter().collect::<Vec<_>>().join(" | "),
    );
    0
}

// ------------------------------------------------------ parent helpers ---

/// Spawns `role` with `args` and lets it fall asleep in a blocking call on
/// queue `name`: waits for its ready line, sleeps 300 ms, then waits (at
/// most [`SHORT`]) for the sleeper count at `offset` to rise above its
/// value before the spawn. Returns the child and whether that rise was seen
/// (a soft hint only, see [`wait_for_sleepers`]).
fn spawn_sleeper(
    name: &str,
    offset: u64,
    role: &str,
    args: &[(&str, String)],
) -> (ChildProc, bool) {
    let base = read_u32(name, offset).unwrap_or(0);
    let mut child = ChildProc::spawn(role, args);
    child.wait_ready(SHORT);
    std::thread::sleep(Duration::from_millis(300));
    let asleep = wait_for_sleepers(name, offset, base + 1, SHORT);
    (child, asleep)
}

/// Runs a `fill_until_full` child on queue `name` with payload `data` to
/// its successful end; returns how many messages it got in.
fn fill_in_child(name: &str, data: &str) -> u32 {
    ChildProc::spawn(
        "fill_until_full",
        &[("QUEUE", name.to_owned()), ("DATA", data.to_owned())],
    )
    .wait_success(SHORT)
    .get("sent")
}

// ------------------------------------------------------------ harness ---

/// Pins: the harness itself: a failing child is reported as failed (not
/// passed), a child over its time limit is killed and reaped (no hang, no
/// zombie), and a child's results reach the parent.
#[test]
fn harness_reports_failure_timeout_and_results() {
    let f = ChildProc::spawn("no_such_role", &[])
        .wait(SHORT)
        .expect("exits");
    assert!(!f.status.success(), "a panicking role passed");
    assert!(f.stderr.contains("unknown role"), "{}", f.describe());

    let shm = ShmGuard::new("harness");
    let _q = Queue::create(shm.name(), QueueConfig::new(2, 8)).unwrap();
    let mut c = ChildProc::spawn("recv_forever", &[("QUEUE", shm.name().to_owned())]);
    c.wait_ready(SHORT);
    let pid = c.pid();
    let e = c.wait(Duration::from_millis(300)).unwrap_err();
    assert!(e.contains("still running"), "{e}");
    assert!(!c.is_running());
    // Reaped: the pid no longer names a process (or a zombie) of ours.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(
        stat.is_empty() || !stat.contains(&format!("({}", "processes")),
        "child {pid} left behind: {stat}"
    );

    assert_eq!(fill_in_child(shm.name(), "x"), 2);
}

// ------------------------------------------------------- stream tests ---

/// Runs `producers` producer processes of `per_producer` messages each into
/// a queue of `capacity` slots and `consumers` consumer processes, stops
/// the consumers with one DIE each, and checks exactly-once delivery and
/// per-producer order from the consumers' reports.
fn run_stream(tag: &str, producers: u32, consumers: u32, per_producer: u64, capacity: u32) {
    let started = Instant::now();
    let shm = ShmGuard::new(tag);
    let mut q =
        Queue::create(shm.name(), QueueConfig::new(capacity, STREAM_MAX_PAYLOAD)).expect("create");
    q.set_send_retry(patient());
    let name = shm.name().to_owned();
    let mut cons: Vec<ChildProc> = (0..consumers)
        .map(|i| {
            ChildProc::spawn(
                "consumer",
                &[
                    ("QUEUE", name.clone()),
                    ("PRODUCERS", producers.to_string()),
                    ("MODE", (i % 3).to_string()),
                ],
            )
        })
        .collect();
    let mut prods: Vec<ChildProc> = (0..producers)
        .map(|id| {
            ChildProc::spawn(
                "producer",
                &[
                    ("QUEUE", name.clone()),
                    ("ID", id.to_string()),
                    ("COUNT", per_producer.to_string()),
                    ("MODE", (id % 2).to_string()),
                ],
            )
        })
        .collect();
    for f in wait_all(&mut prods, LONG) {
        assert_eq!(f.get::<u64>("sent"), per_producer);
    }
    for _ in 0..consumers {
        q.send(Message::signal(Request::DIE)).expect("send DIE");
    }
    let reports = wait_all(&mut cons, LONG);
    let mut total = vec![Tally::default(); producers as usize];
    for (i, f) in reports.iter().enumerate() {
        assert_eq!(
            f.get::<u64>("out_of_order"),
            0,
            "consumer {i} saw a producer's messages out of order: {}",
            f.get::<String>("first_problem")
        );
        assert_eq!(
            f.get::<u64>("bad"),
            0,
            "consumer {i} got bad messages: {}",
            f.get::<String>("first_problem")
        );
        for (id, t) in total.iter_mut().enumerate() {
            t.merge(Tally::decode(&f.get::<String>(&format!("p{id}"))));
        }
    }
    let want = Tally::of_range(per_producer);
    for (id, t) in total.iter().enumerate() {
        assert_eq!(*t, want, "producer {id}: not every message exactly once");
    }
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
    assert!(q.is_empty());
    eprintln!(
        "{tag}: {producers}->{consumers}, {} messages, capacity {capacity}: {:?}",
        per_producer * producers as u64,
        started.elapsed()
    );
}

/// Pins: lost, duplicated, reordered or torn messages between one producer
/// process and one consumer process.
#[test]
fn stream_1_producer_1_consumer() {
    run_stream("s1to1", 1, 1, 100_000, 1024);
}

/// Pins: producers racing for slots (tail CAS) lose or duplicate messages,
/// or break one producer's order.
#[test]
fn stream_4_producers_1_consumer() {
    run_stream("s4to1", 4, 1, 25_000, 64);
}

/// Pins: consumers racing for messages (head CAS) deliver one message twice
/// or skip one; a consumer sees one producer's messages out of order.
#[test]
fn stream_1_producer_4_consumers() {
    run_stream("s1to4", 1, 4, 100_000, 16);
}

/// Pins: full MPMC contention on a small ring (both CASes, full and empty
/// at once).
#[test]
fn stream_3_producers_3_consumers() {
    run_stream("s3to3", 3, 3, 34_000, 8);
}

/// Pins: sequence-number arithmetic across many laps of the smallest ring
/// (every message wraps; full and empty alternate constantly).
#[test]
fn wrap_around_capacity_2() {
    run_stream("wrap2", 1, 1, 50_000, 2);
}

/// Pins: the same on the smallest ring with two processes on each side.
#[test]
fn wrap_around_capacity_2_two_by_two() {
    run_stream("wrap2x2", 2, 2, 10_000, 2);
}

/// Pins: header fields (request code, default sender pid, recipient,
/// `from_pid`) survive the trip between processes.
#[test]
fn headers_cross_processes() {
    let shm = ShmGuard::new("headers");
    let q = Queue::create(shm.name(), QueueConfig::new(8, 16)).unwrap();
    let mut child = ChildProc::spawn(
        "header_sender",
        &[("QUEUE", shm.name().to_owned()), ("TO", "31337".into())],
    );
    child.wait_success(SHORT);
    let cpid = child.pid();
    let m = q.recv_timeout(SHORT).unwrap();
    assert_eq!(
        (m.request, m.sender, m.recipient, m.data.as_slice()),
        (Request::new(77), Some(cpid), None, b"plain".as_slice())
    );
    let m = q.recv_timeout(SHORT).unwrap();
    assert_eq!(
        (m.request, m.sender, m.recipient, m.data.as_slice()),
        (
            Request::FINISHED,
            Some(cpid),
            Some(31337),
            b"addressed".as_slice()
        )
    );
    assert!(m.header().is_for(31337) && !m.header().is_for(cpid));
    let m = q.recv_timeout(SHORT).unwrap();
    assert_eq!(
        (m.request, m.sender, m.data.as_slice()),
        (Request::new(u32::MAX), Some(4242), [0xABu8; 3].as_slice())
    );
    let m = q.recv_timeout(SHORT).unwrap();
    assert_eq!((m.request, m.data.len()), (Request::DIE, 0));
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
}

// ---------------------------------------------------------- zero-copy ---

/// Pins: a payload written in place in one process (`try_reserve` +
/// `commit`) arrives intact in another; a reservation dropped without
/// commit is skipped by the receiver (never delivered, never blocks).
#[test]
fn zero_copy_reserve_in_child_receive_in_parent() {
    const COUNT: u64 = 5_000;
    let shm = ShmGuard::new("zc-child-reserves");
    let q = Queue::create(shm.name(), QueueConfig::new(16, 32)).unwrap();
    let mut child = ChildProc::spawn(
        "reserve_producer",
        &[
            ("QUEUE", shm.name().to_owned()),
            ("COUNT", COUNT.to_string()),
        ],
    );
    let cpid = child.pid();
    let mut received = 0u64;
    let mut expect = 0u64;
    loop {
        let g = q.recv_ref_timeout(SHORT).expect("recv_ref_timeout");
        let h = *g.header();
        if h.request == Request::DIE {
            break;
        }
        check_zc_message(&h, g.data(), cpid, &mut expect);
        assert_eq!(h.recipient, None);
        drop(g);
        received += 1;
    }
    child.wait_success(SHORT);
    let committed = (0..COUNT).filter(|&i| !zc_abandoned(i)).count() as u64;
    assert_eq!(received, committed);
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
}

/// Pins: the same in the other direction, the child reading in place with
/// `recv_ref` guards.
#[test]
fn zero_copy_reserve_in_parent_recv_ref_in_child() {
    const COUNT: u64 = 5_000;
    let shm = ShmGuard::new("zc-parent-reserves");
    let mut q = Queue::create(shm.name(), QueueConfig::new(8, 32)).unwrap();
    q.set_send_retry(patient());
    let mut child = ChildProc::spawn(
        "ref_consumer",
        &[
            ("QUEUE", shm.name().to_owned()),
            ("PARENT", std::process::id().to_string()),
        ],
    );
    let deadline = Instant::now() + LONG;
    reserve_zc_messages(&q, COUNT, || {
        assert!(Instant::now() < deadline, "queue stayed full");
        assert!(child.is_running(), "consumer died");
    });
    q.send(Message::signal(Request::DIE)).unwrap();
    let f = child.wait_success(LONG);
    let committed = (0..COUNT).filter(|&i| !zc_abandoned(i)).count() as u64;
    assert_eq!(f.get::<u64>("received"), committed);
    assert_eq!(f.get::<u64>("next"), COUNT);
}

/// Pins: a slot held through a `RecvGuard` is not reused by a sender in
/// another process (its payload stays intact) until the guard is dropped.
#[test]
fn recv_guard_holds_its_slot_against_other_processes() {
    let shm = ShmGuard::new("guard-holds");
    let q = Queue::create(shm.name(), QueueConfig::new(2, 16)).unwrap();
    q.try_send(Message::new(Request::DO, b"AAAA".as_slice()))
        .unwrap();
    let g = q.try_recv_ref().unwrap();
    assert_eq!(g.data(), b"AAAA");
    // Tickets: 0 = A (held), 1 free, 2 maps to A's slot: full after one.
    assert_eq!(
        fill_in_child(shm.name(), "BBBB"),
        1,
        "a held slot was reused"
    );
    assert_eq!(g.data(), b"AAAA", "held payload overwritten");
    drop(g);
    assert_eq!(fill_in_child(shm.name(), "CCCC"), 1);
    assert_eq!(q.try_recv().unwrap().data, b"BBBB");
    assert_eq!(q.try_recv().unwrap().data, b"CCCC");
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
}

// ----------------------------------------------------------- blocking ---

/// Pins: a lost wake-up: a receiver asleep in `recv` in another process is
/// woken by a single send.
#[test]
fn sleeping_receiver_in_other_process_wakes_on_one_send() {
    let shm = ShmGuard::new("wake-recv");
    let q = Queue::create(shm.name(), QueueConfig::new(4, 16)).unwrap();
    let (mut child, asleep) = spawn_sleeper(
        shm.name(),
        NOT_EMPTY_WAITERS,
        "recv_one",
        &[
            ("QUEUE", shm.name().to_owned()),
            ("EXPECT", "wake up".into()),
        ],
    );
    assert!(child.is_running(), "receiver returned without a message");
    let t = Instant::now();
    q.send(Message::new(Request::DO, b"wake up".as_slice()))
        .unwrap();
    let f = child.wait_success(SHORT);
    assert_eq!(f.get::<String>("got"), "wake up");
    eprintln!(
        "receiver asleep (sleeper count seen): {asleep}; send to child exit: {:?}",
        t.elapsed()
    );
    assert!(q.is_empty());
}

/// Pins: `recv_timeout` returning early, or never, with nothing to
/// receive (bounds: ≥ 190 ms, generous < 5 s).
#[test]
fn recv_timeout_times_out() {
    let shm = ShmGuard::new("recv-timeout");
    let q = Queue::create(shm.name(), QueueConfig::new(4, 16)).unwrap();
    for _ in 0..2 {
        let t = Instant::now();
        let r = q.recv_timeout(Duration::from_millis(200));
        let el = t.elapsed();
        assert_eq!(r.unwrap_err(), RecvTimeoutError::Timeout);
        assert!(el >= Duration::from_millis(190), "returned after {el:?}");
        assert!(el < Duration::from_secs(5), "returned after {el:?}");
    }
    let mut buf = vec![1, 2, 3];
    let t = Instant::now();
    let r = q.recv_into_timeout(&mut buf, Duration::from_millis(200));
    assert_eq!(r.unwrap_err(), RecvTimeoutError::Timeout);
    assert!(t.elapsed() >= Duration::from_millis(190));
    // A zero timeout on an empty queue is a plain poll.
    assert_eq!(
        q.recv_timeout(Duration::ZERO).unwrap_err(),
        RecvTimeoutError::Timeout
    );
}

/// Pins: `send` on a full queue giving up too early, not at all, or losing
/// the message: with 3 tries of 50 ms it returns `Full` with the message
/// after ≥ 150 ms, and nothing was written.
#[test]
fn send_on_full_queue_gives_message_back_after_its_tries() {
    let shm = ShmGuard::new("send-full");
    let mut q = Queue::create(shm.name(), QueueConfig::new(2, 16)).unwrap();
    q.set_send_retry(SendRetry {
        tries: 3,
        wait: Duration::from_millis(50),
    });
    q.send(Message::new(Request::DO, b"one".as_slice()))
        .unwrap();
    q.send(Message::new(Request::DO, b"two".as_slice()))
        .unwrap();
    let t = Instant::now();
    let err = q
        .send(Message::new(Request::new(99), vec![7u8, 8, 9]).to(5))
        .unwrap_err();
    let el = t.elapsed();
    assert!(err.is_full(), "{err:?}");
    assert!(el >= Duration::from_millis(145), "gave up after {el:?}");
    assert!(el < Duration::from_secs(5), "gave up after {el:?}");
    let back = err.into_inner();
    assert_eq!(back.data, [7, 8, 9]);
    assert_eq!((back.request, back.recipient), (Request::new(99), Some(5)));
    assert_eq!(q.len(), 2);
    // tries: 0 fails at once.
    q.set_send_retry(SendRetry {
        tries: 0,
        wait: Duration::from_secs(10),
    });
    let t = Instant::now();
    assert!(q.send(Message::signal(Request::DO)).unwrap_err().is_full());
    assert!(t.elapsed() < Duration::from_secs(5));
    assert_eq!(q.try_recv().unwrap().data, b"one");
    assert_eq!(q.try_recv().unwrap().data, b"two");
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
}

/// Pins: a sender asleep in `send` on a full queue in another process is
/// never woken by a receive here (or its message is lost).
#[test]
fn blocked_sender_in_other_process_wakes_when_a_slot_frees() {
    let shm = ShmGuard::new("wake-send");
    let q = Queue::create(shm.name(), QueueConfig::new(4, 16)).unwrap();
    for i in 0..4u8 {
        q.try_send(Message::new(Request::DO, vec![i])).unwrap();
    }
    let (mut child, asleep) = spawn_sleeper(
        shm.name(),
        NOT_FULL_WAITERS,
        "blocked_sender",
        &[("QUEUE", shm.name().to_owned()), ("DATA", "late".into())],
    );
    assert!(child.is_running(), "send on a full queue returned");
    assert_eq!(q.len(), 4);
    assert_eq!(q.try_recv().unwrap().data, [0]);
    let t = Instant::now();
    let f = child.wait_success(SHORT);
    eprintln!(
        "sender asleep (sleeper count seen): {asleep}; recv to child exit: {:?}, child waited {} ms",
        t.elapsed(),
        f.get::<u64>("waited_ms")
    );
    for i in 1..4u8 {
        assert_eq!(q.try_recv().unwrap().data, [i]);
    }
    assert_eq!(q.try_recv().unwrap().data, b"late");
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
}

/// Pins: a waiter SIGKILLed inside `recv` leaving the wait protocol stuck
/// (the glibc condvar failure of the design notes): after each kill, a new
/// receiver asleep in `recv` is still woken by one send; after 20 kills a
/// few thousand round trips still work.
#[test]
fn waiter_killed_in_recv_does_not_stop_the_queue() {
    const CYCLES: usize = 20;
    let shm = ShmGuard::new("killed-waiter");
    let reply = ShmGuard::new("killed-waiter-reply");
    let mut q = Queue::create(shm.name(), QueueConfig::new(8, 16)).unwrap();
    q.set_send_retry(patient());
    let rq = Queue::create(reply.name(), QueueConfig::new(8, 16)).unwrap();
    let name = shm.name().to_owned();
    let mut wakes = Vec::new();
    let mut hints = 0;
    for cycle in 0..CYCLES {
        let base = read_u32(&name, NOT_EMPTY_WAITERS).unwrap_or(0);
        let mut victim = ChildProc::spawn("recv_forever", &[("QUEUE", name.clone())]);
        victim.wait_ready(SHORT);
        std::thread::sleep(Duration::from_millis(200));
        if wait_for_sleepers(&name, NOT_EMPTY_WAITERS, base + 1, Duration::from_secs(2)) {
            hints += 1;
        }
        assert!(victim.is_running(), "cycle {cycle}: victim left recv");
        let f = victim.kill();
        assert!(!f.status.success());

        let base = read_u32(&name, NOT_EMPTY_WAITERS).unwrap_or(0);
        let expect = format!("cycle {cycle}");
        let mut rx = ChildProc::spawn(
            "recv_one",
            &[("QUEUE", name.clone()), ("EXPECT", expect.clone())],
        );
        rx.wait_ready(SHORT);
        if !wait_for_sleepers(&name, NOT_EMPTY_WAITERS, base + 1, Duration::from_secs(2)) {
            std::thread::sleep(Duration::from_millis(300));
        }
        assert!(rx.is_running());
        let t = Instant::now();
        q.send(Message::new(Request::DO, expect.as_bytes()))
            .unwrap();
        // "Promptly": well within a couple of seconds, however noisy.
        rx.wait_success(Duration::from_secs(5));
        wakes.push(t.elapsed());
    }
    wakes.sort();
    eprintln!(
        "kill/wake cycles: {CYCLES}, sleeper hints seen {hints}; wake-to-exit min {:?} median {:?} max {:?}; receivers' sleeper count now {:?}",
        wakes[0],
        wakes[CYCLES / 2],
        wakes[CYCLES - 1],
        read_u32(&name, NOT_EMPTY_WAITERS)
    );
    assert!(q.is_empty());

    // Then a few thousand round trips with a child, on the same queue.
    let mut echo = ChildProc::spawn(
        "echo",
        &[("QUEUE", name.clone()), ("REPLY", reply.name().to_owned())],
    );
    echo.wait_ready(SHORT);
    const ROUNDS: u64 = 3_000;
    for i in 0..ROUNDS {
        q.send(Message::pod(Request::DO, &i)).unwrap();
        let m = rq
            .recv_timeout(SHORT)
            .unwrap_or_else(|e| panic!("round {i}: {e}"));
        assert_eq!(m.request, Request::FINISHED);
        assert_eq!(m.read_pod::<u64>().unwrap(), i + 1);
    }
    q.send(Message::signal(Request::DIE)).unwrap();
    let f = echo.wait_success(SHORT);
    assert_eq!(f.get::<u64>("echoed"), ROUNDS);
    assert!(q.is_empty() && rq.is_empty());
}

// ----------------------------------------------------- setup and crashes ---

/// Pins: `open` racing a `create` of the same name in another process
/// reports a healthy queue as corrupt. Expected: only `Ok` or `NotFound`
/// (`open` waits for a creator still initialising). Found: the opener can
/// map the object between the creator's `shm_open` and `ftruncate` and gets
/// `Corrupt(Truncated { expected: 512, found: 0 })` at once.
#[test]
fn open_racing_create_sees_only_ok_or_not_found() {
    let shm = ShmGuard::new("open-race");
    let mut child = ChildProc::spawn(
        "opener",
        &[
            ("QUEUE", shm.name().to_owned()),
            ("DURATION_MS", "1500".into()),
        ],
    );
    child.wait_ready(SHORT);
    let mut creates = 0u64;
    while child.is_running() {
        let q = Queue::create(shm.name(), QueueConfig::new(8, 64)).expect("create");
        drop(q);
        creates += 1;
    }
    let f = child.wait_success(SHORT);
    eprintln!(
        "{creates} creates; opener: ok {} not_found {} other {}",
        f.get::<u64>("ok"),
        f.get::<u64>("not_found"),
        f.get::<u64>("other")
    );
    assert_eq!(
        f.get::<u64>("other"),
        0,
        "open of a queue being created failed: {}",
        f.get::<String>("other_kinds")
    );
}
