//! The channel-interface tests that apply to both backends, each written
//! once as a generic fn over `C: Channel + Joinable` and run against a
//! shared-memory `Queue` and a `RedisQueue` on a real server.

mod common;

use std::time::{Duration, Instant};

use mulproc::{
    Channel, Joinable, Message, Queue, QueueConfig, Received, RecvTimeoutError, Request, SendRetry,
    TaskDoneError, TryRecvError, TrySendError,
};
use mulproc_redis::{RedisConfig, RedisOptions, RedisQueue};

const CAP: u32 = 4;
const MAX: usize = 64;

fn shm_pair() -> (Queue, Queue) {
    let cfg = QueueConfig::new(CAP, MAX as u32);
    let a = Queue::create_unique(cfg).expect("create shm queue");
    let b = Queue::open(a.name()).expect("open shm queue");
    (a, b)
}

fn redis_pair(server: &common::Server) -> (RedisQueue, RedisQueue) {
    let name = common::unique("chan");
    let opts = RedisOptions::default().poll(Duration::from_millis(20));
    let cfg = RedisConfig::new(CAP as u64, MAX).claim_after(Duration::from_secs(2));
    let a = RedisQueue::create_with(&server.url(), &name, cfg, opts).expect("create redis queue");
    let b = RedisQueue::open_with(&server.url(), &name, opts).expect("open redis queue");
    (a, b)
}

/// Runs `f` against both backends.
macro_rules! both {
    ($f:ident) => {{
        let (a, b) = shm_pair();
        $f(&a, &b);
        let server = common::Server::start();
        let (a, b) = redis_pair(&server);
        $f(&a, &b);
    }};
}

fn msg(i: u8) -> Message<Vec<u8>> {
    Message::new(Request::DO, vec![i; 3])
}

fn order_and_empty<C: Channel>(tx: &C, rx: &C) {
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
    for i in 0..3 {
        tx.try_send(msg(i)).expect("room");
    }
    for i in 0..3 {
        let m = rx.recv_timeout(Duration::from_secs(5)).expect("a message");
        assert_eq!(m.data, vec![i; 3], "FIFO order");
        assert_eq!(m.request, Request::DO);
        assert_eq!(m.sender, Some(tx.pid()), "sender filled in");
        assert_eq!(m.recipient, None);
    }
    assert!(matches!(rx.try_recv(), Err(TryRecvError::Empty)));
}

#[test]
fn fifo_and_empty() {
    both!(order_and_empty);
}

fn timeout_bounds<C: Channel>(_tx: &C, rx: &C) {
    let d = Duration::from_millis(300);
    let t = Instant::now();
    let r = rx.recv_timeout(d);
    let took = t.elapsed();
    assert!(matches!(r, Err(RecvTimeoutError::Timeout)), "{r:?}");
    assert!(took >= d, "returned before the deadline: {took:?}");
    assert!(
        took < d + Duration::from_millis(200),
        "blocked past the deadline: {took:?}"
    );
    let t = Instant::now();
    assert!(rx.recv_deadline(t + Duration::from_millis(50)).is_err());
    assert!(t.elapsed() < Duration::from_millis(250));
}

#[test]
fn receive_timeouts_keep_the_deadline() {
    both!(timeout_bounds);
}

fn wakes_on_send<C: Channel + Sync>(tx: &C, rx: &C) {
    std::thread::scope(|s| {
        let h = s.spawn(|| {
            let t = Instant::now();
            let m = rx.recv_timeout(Duration::from_secs(10)).expect("woken");
            (m, t.elapsed())
        });
        std::thread::sleep(Duration::from_millis(150));
        tx.send(msg(9)).expect("send");
        let (m, took) = h.join().expect("receiver");
        assert_eq!(m.data, vec![9; 3]);
        assert!(took < Duration::from_secs(3), "{took:?}");
    });
}

#[test]
fn blocked_receive_wakes_on_send() {
    both!(wakes_on_send);
}

fn capacity<C: Channel>(tx: &C, rx: &C) {
    for i in 0..CAP as u8 {
        tx.try_send(msg(i)).expect("room");
    }
    let r = tx.try_send(msg(99));
    assert!(matches!(r, Err(TrySendError::Full(_))), "{r:?}");
    assert_eq!(
        r.unwrap_err().into_inner().data,
        vec![99; 3],
        "message given back"
    );
    let t = Instant::now();
    let r = tx.send_timeout(msg(98), Duration::from_millis(200));
    assert!(r.as_ref().is_err_and(|e| e.is_full()), "{r:?}");
    assert!(t.elapsed() >= Duration::from_millis(200));
    // A message held by a receiver still counts; acknowledged, it frees room.
    let g = rx.try_recv_ref().expect("a message");
    assert!(tx.try_send(msg(97)).unwrap_err().is_full());
    g.finish().expect("ack");
    tx.try_send(msg(96)).expect("room after the ack");
    // A payload too large is refused before anything is written.
    let big = Message::new(Request::DO, vec![0u8; MAX + 1]);
    match rx.try_send(big) {
        Err(TrySendError::TooLarge { len, max, .. }) => assert_eq!((len, max), (MAX + 1, MAX)),
        other => panic!("{other:?}"),
    }
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, CAP);
}

#[test]
fn capacity_full_and_too_large() {
    both!(capacity);
}

fn send_waits_for_room<C: Channel + Sync>(tx: &C, rx: &C) {
    for i in 0..CAP as u8 {
        tx.try_send(msg(i)).expect("room");
    }
    std::thread::scope(|s| {
        s.spawn(|| {
            std::thread::sleep(Duration::from_millis(100));
            rx.try_recv().expect("a message");
        });
        tx.send_timeout(msg(50), Duration::from_secs(5))
            .expect("room freed by the receiver");
    });
    let mut n = 0;
    while rx.try_recv().is_ok() {
        n += 1;
    }
    assert_eq!(n, CAP);
}

#[test]
fn send_waits_for_room_freed_by_a_receive() {
    both!(send_waits_for_room);
}

fn addressed<C: Channel>(tx: &C, rx: &C) {
    let me = rx.pid();
    let other = me.wrapping_add(12345);
    tx.try_send(Message::new(Request::DO, b"other".as_slice()).to(other))
        .expect("room");
    tx.try_send(Message::new(Request::DO, b"mine".as_slice()).to(me))
        .expect("room");
    tx.try_send(Message::new(Request::DO, b"anyone".as_slice()))
        .expect("room");
    let m = rx.try_recv_for_me().expect("mine");
    assert_eq!(m.data, b"mine");
    assert_eq!(m.recipient, Some(me));
    let m = rx
        .recv_for_me_timeout(Duration::from_secs(2))
        .expect("for anyone");
    assert_eq!(m.data, b"anyone");
    let r = rx.recv_for_me_timeout(Duration::from_millis(100));
    assert!(
        r.is_err_and(|e| e.is_timeout()),
        "the other's message is not mine"
    );
}

#[test]
fn recv_for_me_skips_messages_for_others() {
    both!(addressed);
}

fn from_sender<C: Channel>(tx: &C, rx: &C) {
    for (i, s) in [(1u8, 101u32), (2, 102), (3, 101), (4, 102)] {
        tx.try_send(Message::new(Request::DO, vec![i]).from_pid(s))
            .expect("room");
    }
    let m = rx
        .recv_from_timeout(102, Duration::from_secs(2))
        .expect("from 102");
    assert_eq!((m.data[0], m.sender), (2, Some(102)));
    let m = rx
        .recv_where_timeout(|_, d| d == [4], Duration::from_secs(2))
        .expect("payload 4");
    assert_eq!(m.sender, Some(102));
    // The messages passed over are still there, in order, before one
    // sent later.
    tx.try_send(Message::new(Request::DO, vec![5]).from_pid(101))
        .expect("room");
    let got: Vec<u8> = (0..3)
        .map(|_| {
            rx.recv_timeout(Duration::from_secs(2))
                .expect("one left")
                .data[0]
        })
        .collect();
    assert_eq!(got, vec![1, 3, 5]);
    assert!(rx.try_recv_from(101).is_err());
}

#[test]
fn selective_receives_leave_the_rest() {
    both!(from_sender);
}

fn guard_and_into<C: Channel>(tx: &C, rx: &C) {
    tx.try_send(Message::new(Request::new(77), b"held".as_slice()).to(rx.pid()))
        .expect("room");
    tx.try_send(Message::new(Request::DIE, b"buf".as_slice()))
        .expect("room");
    let g = rx.recv_ref_timeout(Duration::from_secs(2)).expect("held");
    assert_eq!(g.header().request, Request::new(77));
    assert_eq!(g.header().recipient, Some(rx.pid()));
    assert_eq!(g.data(), b"held");
    // Held: nobody else gets it meanwhile.
    let mut buf = Vec::new();
    let h = rx
        .recv_into_timeout(&mut buf, Duration::from_secs(2))
        .expect("next");
    assert_eq!(
        (h.request, buf.as_slice()),
        (Request::DIE, b"buf".as_slice())
    );
    g.finish().expect("ack");
    assert!(rx.try_recv().is_err());
}

#[test]
fn guards_and_buffers() {
    both!(guard_and_into);
}

fn join_meaning<C: Joinable>(tx: &C, rx: &C) {
    tx.join_timeout(Duration::from_millis(50))
        .expect("nothing sent");
    tx.try_send(msg(1)).expect("room");
    tx.try_send(msg(2)).expect("room");
    let e = tx.join_timeout(Duration::from_millis(100)).unwrap_err();
    assert_eq!(e.outstanding(), 2);
    rx.try_recv().expect("one");
    rx.task_done().expect("one done");
    let e = tx.join_timeout(Duration::from_millis(50)).unwrap_err();
    assert_eq!(e.outstanding(), 1);
    rx.try_recv().expect("two");
    rx.task_done().expect("two done");
    tx.join_timeout(Duration::from_secs(2)).expect("all done");
    assert!(matches!(rx.task_done(), Err(TaskDoneError::TooManyCalls)));
}

#[test]
fn task_done_and_join() {
    both!(join_meaning);
}

fn batches<C: Channel>(tx: &C, rx: &C) {
    let msgs: Vec<Message<Vec<u8>>> = (0..6).map(msg).collect();
    let n = tx.try_send_batch(&msgs).expect("a batch");
    assert_eq!(n, CAP as usize, "as many as fit, in order");
    let mut got = Vec::new();
    let n = rx
        .try_recv_batch(10, |h, d| {
            assert_eq!(h.request, Request::DO);
            got.push(d[0]);
        })
        .expect("a batch");
    assert_eq!(n, CAP as usize);
    assert_eq!(got, vec![0, 1, 2, 3]);
    assert_eq!(rx.try_recv_batch(10, |_, _| {}).expect("empty"), 0);
}

#[test]
fn batch_send_and_receive() {
    both!(batches);
}

fn no_retry<C: Channel>(tx: &C, _rx: &C) {
    assert_eq!(tx.send_retry(), SendRetry::default());
}

#[test]
fn default_send_retry_is_pymulproc_s() {
    both!(no_retry);
}

#[test]
fn redis_queue_setup_errors() {
    let server = common::Server::start();
    let name = common::unique("setup");
    let q = RedisQueue::create(&server.url(), &name, 8, 16).expect("create");
    assert!(matches!(
        RedisQueue::create(&server.url(), &name, 8, 16),
        Err(mulproc_redis::RedisSetupError::AlreadyExists { .. })
    ));
    assert!(matches!(
        RedisQueue::open(&server.url(), "no-such-queue"),
        Err(mulproc_redis::RedisSetupError::NotFound { .. })
    ));
    assert!(matches!(
        RedisQueue::open(&server.url(), "bad/name"),
        Err(mulproc_redis::RedisSetupError::InvalidName { .. })
    ));
    assert!(matches!(
        RedisQueue::create(&server.url(), &common::unique("cap"), 0, 16),
        Err(mulproc_redis::RedisSetupError::InvalidConfig { .. })
    ));
    assert!(matches!(
        RedisQueue::open("http://localhost/", &name),
        Err(mulproc_redis::RedisSetupError::InvalidUrl { .. })
    ));
    let other = RedisQueue::open(&server.url(), &name).expect("open");
    assert_eq!(other.config(), q.config());
    assert!(RedisQueue::destroy(&server.url(), &name).expect("destroy"));
    let r = q.try_send(msg(1));
    match r {
        Err(TrySendError::Backend(_, e)) => {
            assert!(!e.is_outcome_unknown());
            assert!(e.to_string().contains("no longer exists"), "{e}");
        }
        other => panic!("{other:?}"),
    }
}
