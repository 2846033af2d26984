//! Failures on a real server: a consumer SIGKILLed holding messages, bad
//! input (unreachable server, wrong password, keys of another shape), a
//! server that stops answering, and a server killed and restarted with
//! AOF on.

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mulproc::{
    Channel, Joinable, Message, Received, RecvTimeoutError, Request, TryRecvError, TrySendError,
};
use mulproc_redis::{RedisConfig, RedisOptions, RedisQueue, RedisQueueError, RedisSetupError};

const CLAIM: Duration = Duration::from_millis(600);

fn opts() -> RedisOptions {
    RedisOptions::default().poll(Duration::from_millis(20))
}

fn create(server: &common::Server, name: &str, cap: u64) -> RedisQueue {
    RedisQueue::create_with(
        &server.url(),
        name,
        RedisConfig::new(cap, 64).claim_after(CLAIM),
        opts(),
    )
    .expect("create")
}

fn queue_error(e: &mulproc::BackendError) -> &RedisQueueError {
    e.source_error()
        .downcast_ref::<RedisQueueError>()
        .expect("a RedisQueueError inside")
}

// ------------------------------------------------ a consumer that dies ---

const CHILD_URL: &str = "MULPROC_REDIS_TEST_URL";
const CHILD_NAME: &str = "MULPROC_REDIS_TEST_NAME";
const CHILD_MARK: &str = "MULPROC_REDIS_TEST_MARK";

/// Not a test: the body of the consumer process that
/// `a_consumer_killed_holding_messages_has_them_delivered_again` starts
/// (and kills). It receives two messages, holds them, says so through a
/// marker file, and sleeps.
#[test]
#[ignore = "helper process, started by another test"]
fn child_holds_two_messages() {
    let (Ok(url), Ok(name), Ok(mark)) = (
        std::env::var(CHILD_URL),
        std::env::var(CHILD_NAME),
        std::env::var(CHILD_MARK),
    ) else {
        return;
    };
    let q = RedisQueue::open_with(&url, &name, opts()).expect("child: open");
    let a = q
        .recv_ref_timeout(Duration::from_secs(10))
        .expect("child: first");
    let b = q
        .recv_ref_timeout(Duration::from_secs(10))
        .expect("child: second");
    std::fs::write(&mark, format!("{} {}", a.data()[0], b.data()[0])).expect("child: mark");
    std::thread::sleep(Duration::from_secs(60));
    drop((a, b));
}

#[test]
fn a_consumer_killed_holding_messages_has_them_delivered_again() {
    let server = common::Server::start();
    let name = common::unique("kill");
    let q = create(&server, &name, 16);
    for i in 0..3u8 {
        q.send(Message::new(Request::DO, vec![i])).expect("send");
    }
    let mark: PathBuf = server.dir.join("child-holds");
    let child = Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "--exact",
            "child_holds_two_messages",
            "--include-ignored",
            "--nocapture",
        ])
        .env(CHILD_URL, server.url())
        .env(CHILD_NAME, &name)
        .env(CHILD_MARK, &mark)
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn the consumer");
    let mut reaper = common::Reaper(vec![child]);
    let child = &mut reaper.0[0];
    let t = Instant::now();
    while !mark.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the consumer never got its messages"
        );
        if let Ok(Some(st)) = child.try_wait() {
            panic!("the consumer exited early: {st}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(std::fs::read_to_string(&mark).unwrap(), "0 1");
    // The third is ours; the two held by a live consumer are not, even
    // long past the claim time: its heartbeat keeps them.
    let m = q.recv_timeout(Duration::from_secs(2)).expect("the third");
    assert_eq!(m.data, [2]);
    let r = q.recv_timeout(CLAIM * 3);
    assert!(r.is_err_and(|e| e.is_timeout()), "a live holder was robbed");
    assert_eq!(q.len().unwrap(), 2, "held messages still count");

    let child_pid = child.id();
    child.kill().expect("SIGKILL the consumer");
    child.wait().expect("reap");
    let t = Instant::now();
    let a = q.recv_timeout(CLAIM * 10).expect("first reclaimed");
    let b = q.recv_timeout(CLAIM * 10).expect("second reclaimed");
    let took = t.elapsed();
    assert_eq!((a.data[0], b.data[0]), (0, 1), "delivered again, in order");
    assert!(
        took >= CLAIM / 2,
        "reclaimed before the claim time: {took:?}"
    );
    assert!(q.try_recv().is_err(), "each delivered again once");
    assert_eq!(q.len().unwrap(), 0);
    // The dead consumer, holding nothing now, is removed from the group
    // after a few claim times of silence.
    let mut c = server.client();
    let t = Instant::now();
    let mut first = true;
    loop {
        let cs: Vec<redis::Value> = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(format!("mulproc:{{{name}}}:s"))
            .arg("g")
            .query(&mut c)
            .unwrap();
        let names: Vec<String> = cs
            .iter()
            .filter_map(|c| {
                let redis::Value::Array(f) = c else {
                    return None;
                };
                let i = f
                    .iter()
                    .position(|v| matches!(v, redis::Value::BulkString(b) if b == b"name"))?;
                match f.get(i + 1)? {
                    redis::Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
                    _ => None,
                }
            })
            .collect();
        let child_there = names.iter().any(|n| n.contains(&format!(":{child_pid}:")));
        if first {
            // Right after the reclaim it is still there (silent for less
            // than the prune time).
            assert!(child_there, "the dead consumer is among {names:?}");
            first = false;
        }
        if !child_there {
            break;
        }
        assert!(t.elapsed() < CLAIM * 20, "the dead consumer is still there");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_dead_consumer_behind_a_long_pending_list_is_reclaimed() {
    let server = common::Server::start();
    let name = common::unique("long");
    let q = create(&server, &name, 256);
    let holder = RedisQueue::open_with(&server.url(), &name, opts()).expect("open");
    for i in 0..101u8 {
        q.send(Message::new(Request::DO, vec![i])).expect("send");
    }
    // A live consumer holds the first hundred (heartbeated) ...
    let held: Vec<_> = (0..100)
        .map(|_| holder.try_recv_ref().expect("held"))
        .collect();
    // ... and a consumer that never heartbeats (it died) the last one.
    let mut c = server.client();
    let v: redis::Value = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg("g")
        .arg("dead-consumer")
        .arg("COUNT")
        .arg(1)
        .arg("STREAMS")
        .arg(format!("mulproc:{{{name}}}:s"))
        .arg(">")
        .query(&mut c)
        .unwrap();
    assert_ne!(v, redis::Value::Nil);
    let m = q.recv_timeout(CLAIM * 10).expect("the dead one's message");
    assert_eq!(m.data, [100]);
    assert!(q.try_recv().is_err(), "the live holder keeps its hundred");
    drop(held);
    assert_eq!(q.len().unwrap(), 0);
}

#[test]
fn a_live_holder_paused_past_the_claim_time_is_told_on_finish() {
    let server = common::Server::start();
    let name = common::unique("pause");
    let holder = create(&server, &name, 16);
    let other = RedisQueue::open_with(&server.url(), &name, opts()).expect("open");
    holder
        .send(Message::new(Request::DO, b"x".as_slice()))
        .expect("send");
    let g = holder
        .recv_ref_timeout(Duration::from_secs(2))
        .expect("held");
    // Stop the holder's heartbeat the hard way: make its messages look
    // idle for an hour, as if it had been paused that long.
    let mut c = server.client();
    let _: redis::Value = redis::cmd("XCLAIM")
        .arg(format!("mulproc:{{{name}}}:s"))
        .arg("g")
        .arg(holder.consumer())
        .arg(0)
        .arg(g.entry_id())
        .arg("IDLE")
        .arg(3_600_000)
        .arg("JUSTID")
        .query(&mut c)
        .expect("XCLAIM");
    let m = other
        .recv_ref_timeout(Duration::from_secs(2))
        .expect("reclaimed by the other");
    assert_eq!(m.data(), b"x");
    match g.finish() {
        Err(mulproc::RecvError::Backend(e)) => {
            assert!(matches!(queue_error(&e), RedisQueueError::Reclaimed), "{e}")
        }
        other => panic!("{other:?}"),
    }
    m.finish().expect("the new holder acknowledges");
    assert_eq!(holder.len().unwrap(), 0);
}

// ------------------------------------------------------------ bad input ---

#[test]
fn an_unreachable_server_is_a_clear_error_in_time() {
    let port = common::free_port();
    let t = Instant::now();
    let r = RedisQueue::open(&format!("redis://127.0.0.1:{port}/"), "q");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    match r {
        Err(e @ RedisSetupError::Unreachable { .. }) => {
            assert!(e.to_string().contains(&port.to_string()), "{e}")
        }
        other => panic!("{other:?}"),
    }
    // Something that answers, but not in Redis' protocol.
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = l.local_addr().unwrap().port();
    let http = std::thread::spawn(move || {
        use std::io::{Read, Write};
        if let Ok((mut s, _)) = l.accept() {
            let mut buf = [0u8; 256];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
        }
    });
    let t = Instant::now();
    let r = RedisQueue::open(&format!("redis://127.0.0.1:{port}/"), "q");
    assert!(t.elapsed() < Duration::from_secs(3), "{:?}", t.elapsed());
    assert!(matches!(r, Err(RedisSetupError::NotRedis { .. })), "{r:?}");
    http.join().unwrap();
}

#[test]
fn a_wrong_password_is_a_clear_error() {
    let server = common::Server::start_with_password("s3cret");
    let name = common::unique("auth");
    let bad = format!("redis://:wrong@127.0.0.1:{}/", server.port);
    let none = format!("redis://127.0.0.1:{}/", server.port);
    for url in [&bad, &none] {
        match RedisQueue::create(url, &name, 8, 8) {
            Err(e @ RedisSetupError::Authentication { .. }) => {
                assert!(
                    !e.to_string().contains("wrong"),
                    "password in the message: {e}"
                )
            }
            other => panic!("{url}: {other:?}"),
        }
    }
    let q = RedisQueue::create(&server.url(), &name, 8, 8).expect("the right password");
    q.try_send(Message::new(Request::DO, b"ok".as_slice()))
        .expect("send");
}

#[test]
fn keys_of_another_shape_are_refused() {
    let server = common::Server::start();
    let mut c = server.client();
    // A stream of someone else's under our stream key, no metadata.
    let a = common::unique("shape");
    let _: String = redis::cmd("XADD")
        .arg(format!("mulproc:{{{a}}}:s"))
        .arg("*")
        .arg("foo")
        .arg("bar")
        .query(&mut c)
        .unwrap();
    for r in [
        RedisQueue::create(&server.url(), &a, 8, 8).map(drop),
        RedisQueue::open(&server.url(), &a).map(drop),
    ] {
        match r {
            Err(e @ RedisSetupError::WrongShape { .. }) => {
                assert!(e.to_string().contains("stream"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }
    // A string where the metadata hash goes.
    let b = common::unique("shape");
    let _: () = redis::cmd("SET")
        .arg(format!("mulproc:{{{b}}}:meta"))
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert!(matches!(
        RedisQueue::create(&server.url(), &b, 8, 8),
        Err(RedisSetupError::WrongShape { .. })
    ));
    assert!(matches!(
        RedisQueue::open(&server.url(), &b),
        Err(RedisSetupError::WrongShape { .. })
    ));
    // A hash without our magic next to a stream.
    let d = common::unique("shape");
    let _: () = redis::cmd("HSET")
        .arg(format!("mulproc:{{{d}}}:meta"))
        .arg("capacity")
        .arg("8")
        .query(&mut c)
        .unwrap();
    let _: () = redis::cmd("XGROUP")
        .arg("CREATE")
        .arg(format!("mulproc:{{{d}}}:s"))
        .arg("g")
        .arg("0")
        .arg("MKSTREAM")
        .query(&mut c)
        .unwrap();
    assert!(matches!(
        RedisQueue::open(&server.url(), &d),
        Err(RedisSetupError::WrongShape { .. })
    ));

    // A real queue whose stream gets a foreign entry: reported once, then
    // out of the way; the message behind it is delivered.
    let e = common::unique("shape");
    let q = create(&server, &e, 8);
    let _: String = redis::cmd("XADD")
        .arg(format!("mulproc:{{{e}}}:s"))
        .arg("*")
        .arg("foo")
        .arg("bar")
        .query(&mut c)
        .unwrap();
    q.try_send(Message::new(Request::DO, b"after".as_slice()))
        .expect("send");
    let t = Instant::now();
    match q.recv_timeout(Duration::from_secs(2)) {
        Err(RecvTimeoutError::Backend(e)) => {
            assert!(
                matches!(queue_error(&e), RedisQueueError::Malformed { .. }),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    let m = q
        .recv_timeout(Duration::from_secs(2))
        .expect("the real message");
    assert_eq!(m.data, b"after");
    assert!(t.elapsed() < Duration::from_secs(2));
    let pending: (i64, redis::Value, redis::Value, redis::Value) = redis::cmd("XPENDING")
        .arg(format!("mulproc:{{{e}}}:s"))
        .arg("g")
        .query(&mut c)
        .unwrap();
    assert_eq!(
        pending.0, 0,
        "the foreign entry is acknowledged: it blocks nobody"
    );

    // A mailbox key holding a string: opening as that id is refused, and
    // sending to it is an error, not a hang.
    let _: () = redis::cmd("SET")
        .arg(format!("mulproc:{{{e}}}:to:4242"))
        .arg("x")
        .query(&mut c)
        .unwrap();
    assert!(matches!(
        RedisQueue::open_with(&server.url(), &e, opts().id(4242)),
        Err(RedisSetupError::WrongShape { .. })
    ));
    match q.try_send(Message::new(Request::DO, b"x".as_slice()).to(4242)) {
        Err(TrySendError::Backend(_, e)) => {
            assert!(e.to_string().contains("WRONGTYPE"), "{e}");
            assert!(!e.is_outcome_unknown());
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(q.len().unwrap(), 0, "nothing half sent");
}

// ------------------------------------------ a server that stops answering ---

#[test]
fn a_send_whose_reply_never_comes_is_outcome_unknown() {
    let server = common::Server::start();
    let name = common::unique("unknown");
    let q = RedisQueue::create_with(
        &server.url(),
        &name,
        RedisConfig::new(8, 64).claim_after(CLAIM),
        opts()
            .io_timeout(Duration::from_millis(200))
            .reconnect_for(Duration::from_millis(600)),
    )
    .expect("create");
    let mut c = server.client();
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(3000)
        .arg("WRITE")
        .query(&mut c)
        .unwrap();
    let t = Instant::now();
    match q.try_send(Message::new(Request::DO, b"maybe".as_slice())) {
        Err(TrySendError::Backend(m, e)) => {
            assert!(e.is_outcome_unknown(), "{e}");
            assert_eq!(m.data, b"maybe", "message given back");
        }
        other => panic!("reported {other:?}"),
    }
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    let _: () = redis::cmd("CLIENT").arg("UNPAUSE").query(&mut c).unwrap();
}

#[test]
fn a_dead_server_fails_operations_within_the_reconnect_time() {
    let mut server = common::Server::start();
    let name = common::unique("dead");
    let q = RedisQueue::create_with(
        &server.url(),
        &name,
        RedisConfig::new(8, 64).claim_after(CLAIM),
        opts().reconnect_for(Duration::from_millis(500)),
    )
    .expect("create");
    server.kill();
    let t = Instant::now();
    let r = q.try_send(Message::new(Request::DO, b"x".as_slice()));
    assert!(matches!(r, Err(TrySendError::Backend(..))), "{r:?}");
    let r = q.try_recv();
    match r {
        Err(TryRecvError::Backend(e)) => {
            assert!(
                matches!(queue_error(&e), RedisQueueError::Connection(_)),
                "{e}"
            )
        }
        other => panic!("{other:?}"),
    }
    let r = q.recv_timeout(Duration::from_millis(100));
    assert!(matches!(r, Err(RecvTimeoutError::Backend(_))), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(4), "{:?}", t.elapsed());
}

// --------------------------------------------------- a server restart ---

#[test]
fn a_server_restart_with_aof_always_loses_nothing() {
    let mut server = common::Server::start_aof_always();
    let name = common::unique("restart");
    let tx = create(&server, &name, 64);
    let rx = RedisQueue::open_with(&server.url(), &name, opts()).expect("open");
    let other_name = common::unique("restart-b");
    let waiting = create(&server, &other_name, 8);
    for i in 0..5u8 {
        tx.send(Message::new(Request::DO, vec![i])).expect("send");
    }
    let held = rx.recv_ref_timeout(Duration::from_secs(2)).expect("m0");
    assert_eq!(held.data(), [0]);
    let m1 = rx.recv_timeout(Duration::from_secs(2)).expect("m1");
    assert_eq!(m1.data, [1]);

    std::thread::scope(|s| {
        // A receiver blocked across the outage.
        let blocked = s.spawn(|| waiting.recv_timeout(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(200));
        server.restart();
        let tx2 = RedisQueue::open(&server.url(), &other_name).expect("reopen after restart");
        tx2.send(Message::new(Request::DO, b"after".as_slice()))
            .expect("send after restart");
        let m = blocked
            .join()
            .unwrap()
            .expect("the blocked receiver goes on");
        assert_eq!(m.data, b"after");
    });

    // What was done before the crash is kept: the held message is still
    // ours to acknowledge, m1's acknowledgement stands, m2..m4 wait.
    held.finish().expect("ack after the restart");
    tx.send(Message::new(Request::DO, vec![5]))
        .expect("send after the restart");
    let mut got = Vec::new();
    while let Ok(m) = rx.recv_timeout(Duration::from_millis(300)) {
        got.push(m.data[0]);
    }
    assert_eq!(
        got,
        vec![2, 3, 4, 5],
        "nothing lost, nothing delivered twice"
    );
    assert_eq!(rx.len().unwrap(), 0);
    tx.join_timeout(Duration::from_secs(1))
        .expect_err("six sent, none marked done");
}

#[test]
fn a_server_restart_without_persistence_loses_the_queue_and_says_so() {
    let mut server = common::Server::start();
    let name = common::unique("volatile");
    let q = create(&server, &name, 8);
    q.send(Message::new(Request::DO, b"gone".as_slice()))
        .expect("send");
    let held = q.recv_ref_timeout(Duration::from_secs(2)).expect("held");
    q.send(Message::new(Request::DO, b"gone too".as_slice()))
        .expect("send");
    server.restart();
    let gone =
        |e: &mulproc::BackendError| matches!(queue_error(e), RedisQueueError::QueueGone { .. });
    match q.try_send(Message::new(Request::DO, b"x".as_slice())) {
        Err(TrySendError::Backend(_, e)) => assert!(gone(&e), "{e}"),
        other => panic!("{other:?}"),
    }
    match q.recv_timeout(Duration::from_millis(500)) {
        Err(RecvTimeoutError::Backend(e)) => assert!(gone(&e), "{e}"),
        other => panic!("{other:?}"),
    }
    match held.finish() {
        Err(mulproc::RecvError::Backend(e)) => assert!(gone(&e), "{e}"),
        other => panic!("{other:?}"),
    }
    assert!(q.len().is_err_and(|e| gone(&e)));
    let n: i64 = redis::cmd("DBSIZE").query(&mut server.client()).unwrap();
    assert_eq!(n, 0, "no key made again for a queue that is gone");
    // The name is free for a new queue.
    create(&server, &name, 8);
}

#[test]
fn a_flushed_script_cache_is_loaded_again() {
    let server = common::Server::start();
    let q = create(&server, &common::unique("flush"), 8);
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut server.client())
        .unwrap();
    q.try_send(Message::new(Request::DO, b"a".as_slice()))
        .expect("send after SCRIPT FLUSH");
    let g = q.try_recv_ref().expect("receive");
    let _: () = redis::cmd("SCRIPT")
        .arg("FLUSH")
        .query(&mut server.client())
        .unwrap();
    g.finish().expect("ack after SCRIPT FLUSH");
    assert_eq!(q.len().unwrap(), 0);
}

// ------------------------------------------------------------- memory ---

#[test]
fn acknowledged_entries_are_trimmed_from_the_stream() {
    let server = common::Server::start();
    let name = common::unique("trim");
    let q = create(&server, &name, 4096);
    let batch: Vec<Message<&[u8]>> = (0..100)
        .map(|_| Message::new(Request::DO, b"x".as_slice()))
        .collect();
    for _ in 0..20 {
        assert_eq!(q.try_send_batch(&batch).expect("room"), 100);
    }
    let mut n = 0;
    while n < 2000 {
        let got = q.try_recv_batch(64, |_, _| {}).expect("a batch");
        assert!(got > 0, "{n} received, then nothing");
        n += got;
    }
    // One held at the end keeps its node; the rest is gone.
    q.try_send(Message::new(Request::DO, b"last".as_slice()))
        .expect("room");
    let g = q.try_recv_ref().expect("the last");
    let len: i64 = redis::cmd("XLEN")
        .arg(format!("mulproc:{{{name}}}:s"))
        .query(&mut server.client())
        .unwrap();
    assert!(len <= 200, "{len} entries left of 2001, 2000 acknowledged");
    drop(g);
    assert_eq!(q.len().unwrap(), 0);
}
