//! Competing consumers in separate processes on a real server: every
//! message reaches exactly one of them (nobody dies here), and messages
//! addressed to one process reach that one.

mod common;

use std::collections::HashSet;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use mulproc::{Channel, Message, Request};
use mulproc_redis::{RedisOptions, RedisQueue};

const URL: &str = "MULPROC_REDIS_TEST_URL";
const NAME: &str = "MULPROC_REDIS_TEST_NAME";
const OUT: &str = "MULPROC_REDIS_TEST_OUT";

/// Not a test: the body of the consumer processes that
/// `competing_consumer_processes_get_each_message_once` starts. Receives
/// until a DIE addressed to it, then writes what it got (one number a
/// line; addressed messages as `to-me <n>`).
#[test]
#[ignore = "helper process, started by another test"]
fn child_consumes_until_told() {
    let (Ok(url), Ok(name), Ok(out)) =
        (std::env::var(URL), std::env::var(NAME), std::env::var(OUT))
    else {
        return;
    };
    let q = RedisQueue::open_with(
        &url,
        &name,
        RedisOptions::default().poll(Duration::from_millis(20)),
    )
    .expect("child: open");
    std::fs::write(PathBuf::from(&out).with_extension("ready"), b"").expect("child: ready");
    let mut got = String::new();
    loop {
        let m = q
            .recv_timeout(Duration::from_secs(30))
            .expect("child: a message");
        if m.request == Request::DIE {
            assert_eq!(m.recipient, Some(std::process::id()), "a DIE for another");
            break;
        }
        let n = u32::from_le_bytes(m.data[..4].try_into().unwrap());
        match m.recipient {
            Some(r) => {
                assert_eq!(r, std::process::id(), "took a message for {r}");
                got.push_str(&format!("to-me {n}\n"));
            }
            None => got.push_str(&format!("{n}\n")),
        }
    }
    std::fs::write(out, got).expect("child: write");
}

#[test]
fn competing_consumer_processes_get_each_message_once() {
    let server = common::Server::start();
    let name = common::unique("compete");
    let q = RedisQueue::create(&server.url(), &name, 1024, 16).expect("create");
    let mut children = Vec::new();
    let mut reaper = common::Reaper::default();
    for i in 0..3 {
        let out: PathBuf = server.dir.join(format!("consumer-{i}"));
        let child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "child_consumes_until_told",
                "--include-ignored",
                "--nocapture",
            ])
            .env(URL, server.url())
            .env(NAME, &name)
            .env(OUT, &out)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn a consumer");
        children.push((child.id(), out));
        reaper.0.push(child);
    }
    // Every consumer connected before the work starts, so that they
    // share it.
    let t = Instant::now();
    while !children
        .iter()
        .all(|(_, out)| out.with_extension("ready").exists())
    {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "consumers did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    const N: u32 = 600;
    let batch: Vec<Message<Vec<u8>>> = (0..N)
        .map(|n| Message::new(Request::DO, n.to_le_bytes().to_vec()))
        .collect();
    for chunk in batch.chunks(100) {
        let mut sent = 0;
        while sent < chunk.len() {
            sent += q.try_send_batch(&chunk[sent..]).expect("room");
        }
    }
    // Two addressed to each consumer.
    for (pid, _) in &children {
        for k in 0..2u32 {
            q.send(Message::new(Request::DO, (N + k).to_le_bytes().to_vec()).to(*pid))
                .expect("send addressed");
        }
    }
    let t = Instant::now();
    while q.len().unwrap() > 0 {
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "{} left",
            q.len().unwrap()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    for (c, _) in &children {
        q.send(Message::signal(Request::DIE).to(*c)).expect("DIE");
    }
    let mut all = HashSet::new();
    let mut busy = 0;
    for ((_, out), c) in children.iter().zip(&mut reaper.0) {
        assert!(c.wait().unwrap().success(), "a consumer failed");
        let text = std::fs::read_to_string(out).expect("the consumer's list");
        let mut mine = 0;
        let mut to_me = 0;
        for line in text.lines() {
            if let Some(n) = line.strip_prefix("to-me ") {
                to_me += 1;
                assert!(n.parse::<u32>().unwrap() >= N);
            } else {
                assert!(
                    all.insert(line.parse::<u32>().unwrap()),
                    "{line} received twice"
                );
                mine += 1;
            }
        }
        assert_eq!(to_me, 2, "each gets the two addressed to it");
        if mine > 0 {
            busy += 1;
        }
    }
    assert_eq!(all.len(), N as usize, "every message received");
    assert!(busy >= 2, "the work was shared ({busy} consumers busy)");
}
