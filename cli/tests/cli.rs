//! The `mulproc` command against real segments of real processes.
//!
//! Children are processes of this test binary in a role (the project's
//! harness, `tests/common`); the command is the built binary
//! (`CARGO_BIN_EXE_mulproc`). Every segment is named per run and removed by
//! a guard even when a test fails.
//!
//! /dev/shm is shared with whatever else runs on the machine, so the tests
//! look only at their own segments in `ls`, and run `gc` only with names.

#[path = "../../tests/common/mod.rs"]
mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{arg, arg_parse, ready, report, ChildProc, ShmGuard};
use mulproc::{Message, Pipe, PipeConfig, Queue, QueueConfig, Request};
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_mulproc");
const READY: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------- roles ---

#[test]
fn child_entry() {
    common::child_entry(run_role);
}

/// Stays alive (holding whatever the role holds) until killed; gives up
/// after a minute so a lost child cannot linger.
fn linger() -> i32 {
    std::thread::sleep(Duration::from_secs(60));
    3
}

fn run_role(role: &str) -> i32 {
    let name = arg("NAME");
    match role {
        // A live consumer that takes nothing: a handle, idle.
        "idle-consumer" => {
            let _q = Queue::open(&name).expect("open");
            ready();
            linger()
        }
        // Receives one message and holds it in place (a RecvGuard not
        // dropped) until killed.
        "holder" => {
            let q = Queue::open(&name).expect("open");
            let g = q.recv_ref_timeout(Duration::from_secs(10)).expect("recv");
            report("held", String::from_utf8_lossy(g.data()));
            ready();
            let code = linger();
            drop(g);
            code
        }
        // A whole application: creates the queue, sends, holds one
        // message, and is killed.
        "app" => {
            let n: usize = arg_parse("COUNT");
            let q = Queue::create(&name, QueueConfig::new(16, 64)).expect("create");
            for i in 0..n {
                q.try_send(Message::new(Request::DO, format!("task-{i}").into_bytes()))
                    .expect("send");
            }
            let g = q.try_recv_ref().expect("recv");
            ready();
            let code = linger();
            drop(g);
            code
        }
        // Steady traffic, sent and received, about 2,000 messages a second.
        "traffic" => {
            let q = Queue::open(&name).expect("open");
            ready();
            let end = Instant::now() + Duration::from_secs(60);
            while Instant::now() < end {
                for _ in 0..20 {
                    let _ = q.try_send(Message::new(Request::DO, b"tick".as_slice()));
                }
                for _ in 0..18 {
                    if let Ok(_m) = q.try_recv() {
                        let _ = q.task_done();
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            3
        }
        other => panic!("unknown role {other}"),
    }
}

// -------------------------------------------------------------- running ---

/// What a run of the command gave.
#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Out {
    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}):\n{}\n{}", self.stdout, self.stderr))
    }

    /// Asserts the run did not panic or crash: exit 0 or 1 (2 is usage).
    fn no_crash(&self) -> &Out {
        assert!(
            matches!(self.code, 0 | 1) && !self.stderr.contains("panicked"),
            "mulproc crashed: {self:?}"
        );
        self
    }
}

/// Runs `mulproc args…` with `stdin`, killing it if it takes over 30 s.
fn run_with(args: &[&str], stdin: &[u8]) -> Out {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mulproc");
    let mut input = child.stdin.take().expect("stdin");
    let data = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = input.write_all(&data);
    });
    let mut out = child.stdout.take().expect("stdout");
    let mut err = child.stderr.take().expect("stderr");
    let reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st;
        }
        if Instant::now() > end {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mulproc {args:?} ran over 30 s");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let _ = writer.join();
    Out {
        code: status.code().unwrap_or(-1),
        stdout: reader.join().unwrap_or_default(),
        stderr: err_reader.join().unwrap_or_default(),
    }
}

fn run(args: &[&str]) -> Out {
    run_with(args, b"")
}

/// Our entry of `ls --json`.
fn ls_entry(name: &str) -> Value {
    let out = run(&["ls", "--json"]);
    // Exit 1 may be another program's segment on this machine; never a crash.
    out.no_crash();
    let all = out.json();
    all.as_array()
        .expect("ls --json is an array")
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in ls:\n{}", out.stdout))
        .clone()
}

fn segment_bytes(name: &str) -> Vec<u8> {
    std::fs::read(common::shm_path(name)).expect("read segment file")
}

fn pids(v: &Value) -> Vec<u64> {
    let mut p: Vec<u64> = v
        .as_array()
        .expect("pid array")
        .iter()
        .map(|p| p.as_u64().expect("pid"))
        .collect();
    p.sort();
    p
}

// ---------------------------------------------------------------- tests ---

/// ls, inspect and peek show a queue with messages and a live consumer,
/// and a pipe, and the segments' bytes are the same afterwards.
#[test]
fn reading_shows_queue_and_pipe_and_changes_nothing() {
    let g = ShmGuard::new("cli-read");
    let gp = ShmGuard::new("cli-read-pipe");
    let q = Queue::create(g.name(), QueueConfig::new(16, 64)).unwrap();
    q.try_send(Message::new(Request::DO, b"job-0".as_slice()))
        .unwrap();
    q.try_send(Message::new(Request::new(100), b"job-1 \x00\xff".as_slice()).to(4242))
        .unwrap();
    q.try_send(Message::new(Request::DIE, b"".as_slice()))
        .unwrap();
    let pipe = Pipe::create(gp.name(), PipeConfig::new(4, 32)).unwrap();
    pipe.try_send(Message::new(Request::DO, b"to-child".as_slice()))
        .unwrap();
    let mut consumer = ChildProc::spawn("idle-consumer", &[("NAME", g.name().to_owned())]);
    consumer.wait_ready(READY);
    let me = u64::from(std::process::id());
    let before = segment_bytes(g.name());
    let pipe_before = segment_bytes(gp.name());

    let e = ls_entry(g.name());
    assert_eq!(e["kind"], "queue");
    assert_eq!(e["capacity"], 16);
    assert_eq!(e["max_payload"], 64);
    assert_eq!(e["waiting"], 3);
    assert_eq!(e["bytes_waiting"], 5 + 8);
    assert_eq!(e["unfinished"], 3);
    assert_eq!(pids(&e["live_pids"]), {
        let mut v = vec![me, u64::from(consumer.pid())];
        v.sort();
        v
    });
    assert_eq!(pids(&e["dead_pids"]), Vec::<u64>::new());
    assert_eq!(e["stale"], false);
    assert_eq!(e["in_use"], true);
    assert_eq!(e["state"], "ok");
    assert_eq!(e["file"]["mode"], "0600");
    let p = ls_entry(gp.name());
    assert_eq!(p["kind"], "pipe");
    assert_eq!(p["directions"][0]["waiting"], 1);
    assert_eq!(p["directions"][1]["waiting"], 0);
    assert_eq!(pids(&p["live_pids"]), vec![me]);

    // The table names both, with their states.
    let table = run(&["ls"]);
    table.no_crash();
    let line = |n: &str| {
        table
            .stdout
            .lines()
            .find(|l| l.starts_with(n))
            .unwrap_or_else(|| panic!("{n} not in\n{}", table.stdout))
            .to_owned()
    };
    assert!(line(g.name()).contains("queue") && line(g.name()).ends_with("ok"));
    assert!(line(gp.name()).contains("pipe"));

    let out = run(&["inspect", g.name(), "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let i = out.json();
    assert_eq!((i["head"].as_u64(), i["tail"].as_u64()), (Some(0), Some(3)));
    assert_eq!(i["slots"]["waiting"], 3);
    assert_eq!(i["layout"]["version"], 4);
    assert_eq!(i["layout"]["creator_pid"], me);
    let handles = i["handles"].as_array().unwrap();
    assert_eq!(handles.len(), 2);
    assert!(handles.iter().all(|h| h["status"] == "live"));
    assert_eq!(i["claims"].as_array().unwrap().len(), 0);
    assert_eq!(i["recovery"]["redelivered"], 0);
    let text = run(&["inspect", g.name()]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("depth 3 of 16"), "{}", text.stdout);
    assert!(text.stdout.contains(&format!("{}", consumer.pid())));

    let out = run(&["peek", g.name(), "-n", "2", "--json"]);
    assert_eq!(out.code, 0, "{out:?}");
    let pk = out.json();
    let msgs = pk["messages"].as_array().unwrap();
    assert_eq!(msgs.len(), 2);
    assert_eq!(msgs[0]["data_text"], "job-0");
    assert_eq!(msgs[0]["request_name"], "DO");
    assert_eq!(msgs[0]["sender"], me);
    assert_eq!(msgs[0]["recipient"], Value::Null);
    assert_eq!(msgs[1]["data_hex"], "6a6f622d312000ff");
    assert_eq!(msgs[1]["request"], 100);
    assert_eq!(msgs[1]["recipient"], 4242);
    let text = run(&["peek", g.name(), "-b", "3"]);
    assert_eq!(text.code, 0, "{text:?}");
    assert!(text.stdout.contains("6a 6f 62"), "{}", text.stdout);
    assert!(text.stdout.contains("DIE"), "{}", text.stdout);
    assert!(text.stdout.contains("(first 3 shown)"), "{}", text.stdout);
    let pp = run(&["peek", gp.name(), "--json"]).json();
    assert_eq!(pp["messages"][0]["data_text"], "to-child");
    assert_eq!(pp["messages"][0]["direction"], "parent_to_child");
    assert_eq!(run(&["inspect", gp.name()]).code, 0);

    assert!(
        segment_bytes(g.name()) == before,
        "reading changed the queue's segment"
    );
    assert!(
        segment_bytes(gp.name()) == pipe_before,
        "reading changed the pipe's segment"
    );
    // And the messages are all still there for the consumer.
    assert_eq!(q.len(), 3);
    assert_eq!(q.try_recv().unwrap().data, b"job-0");
    drop(consumer);
}

/// A consumer SIGKILLed holding a message in place: ls shows the dead
/// handle, gc repairs it, and the message is received after.
#[test]
fn gc_repairs_a_consumer_killed_holding_a_message() {
    let g = ShmGuard::new("cli-dead");
    let q = Queue::create(g.name(), QueueConfig::new(8, 64)).unwrap();
    q.try_send(Message::new(Request::DO, b"precious".as_slice()))
        .unwrap();
    let mut holder = ChildProc::spawn("holder", &[("NAME", g.name().to_owned())]);
    holder.wait_ready(READY);
    let dead_pid = u64::from(holder.pid());
    let f = holder.kill();
    assert_eq!(f.results.get("held").map(String::as_str), Some("precious"));

    let e = ls_entry(g.name());
    assert_eq!(pids(&e["dead_pids"]), vec![dead_pid]);
    assert_eq!(e["waiting"], 0); // held, not waiting
    assert!(
        e["state"].as_str().unwrap().contains("1 dead handle"),
        "{e}"
    );
    assert_eq!(e["problem"], true);
    let i = run(&["inspect", g.name(), "--json"]);
    assert_eq!(i.code, 1, "a dead handle is a problem found: {i:?}");
    let i = i.json();
    let claims = i["claims"].as_array().unwrap();
    assert_eq!(claims.len(), 1, "{i}");
    assert_eq!(claims[0]["state"], "held");
    assert_eq!(claims[0]["holder"]["pid"], dead_pid);
    assert_eq!(claims[0]["holder"]["alive"], false);

    let before = segment_bytes(g.name());
    let dry = run(&["gc", "--dry-run", g.name()]);
    assert_eq!(dry.code, 1, "{dry:?}");
    assert!(dry.stdout.contains("would repair 1 dead handle"), "{dry:?}");
    assert!(segment_bytes(g.name()) == before, "a dry run changed it");

    let gc = run(&["gc", g.name()]);
    assert_eq!(gc.code, 0, "{gc:?}");
    assert!(
        gc.stdout
            .contains(&format!("repaired 1 dead handle (pid {dead_pid})")),
        "{gc:?}"
    );
    assert!(gc.stdout.contains("1 message offered again"), "{gc:?}");
    assert_eq!(q.recovery_stats().redelivered, 1);

    let e = ls_entry(g.name());
    assert_eq!(pids(&e["dead_pids"]), Vec::<u64>::new());
    assert_eq!(e["state"], "ok");
    let got = run(&["recv", g.name(), "--timeout", "5s"]);
    assert_eq!(got.code, 0, "{got:?}");
    assert_eq!(got.stdout, "precious");
    assert!(q.is_empty());
    // Received and marked done by `recv`: the queue joins.
    let j = run(&["join", g.name(), "--timeout", "2s"]);
    assert_eq!(j.code, 0, "{j:?}");
}

/// Every process of an application killed: ls says stale, gc removes it.
#[test]
fn gc_removes_a_queue_whose_application_was_killed() {
    let g = ShmGuard::new("cli-stale");
    let mut app = ChildProc::spawn(
        "app",
        &[("NAME", g.name().to_owned()), ("COUNT", "4".to_owned())],
    );
    app.wait_ready(READY);
    app.kill();

    let e = ls_entry(g.name());
    assert_eq!(e["stale"], true, "{e}");
    assert_eq!(e["in_use"], false);
    assert_eq!(e["state"], "stale");
    assert_eq!(e["waiting"], 3);
    assert_eq!(pids(&e["dead_pids"]), vec![u64::from(app.pid())]);
    let table = run(&["ls"]);
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with(g.name()))
        .expect("listed")
        .to_owned();
    assert!(line.ends_with("stale"), "{line}");

    let dry = run(&["gc", "--dry-run", g.name()]);
    assert_eq!(dry.code, 1, "{dry:?}");
    assert!(
        dry.stdout
            .contains("would remove stale queue (4 messages would be lost)"),
        "{dry:?}"
    );
    assert!(g.path().exists());
    let kept = run(&["gc", "--keep-stale", g.name()]);
    assert_eq!(kept.code, 0, "{kept:?}");
    assert!(kept.stdout.contains("kept: stale"), "{kept:?}");
    assert!(g.path().exists());

    let gc = run(&["gc", g.name()]);
    assert_eq!(gc.code, 0, "{gc:?}");
    assert!(
        gc.stdout.contains("removed stale queue (4 messages lost)"),
        "{gc:?}"
    );
    assert!(!g.path().exists());
    let gone = run(&["inspect", g.name()]);
    assert_eq!(gone.code, 1);
    assert!(gone.stderr.contains("no mulproc segment"), "{gone:?}");
}

/// A small deterministic generator (xorshift64*), so a failure names its
/// seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// Random bytes over a live queue's header and slots: reported corrupt
/// (exit 1), and never a crash of the command.
#[test]
fn scribbled_segments_are_reported_corrupt_without_crashing() {
    // Bad magic: not a mulproc segment.
    let g = ShmGuard::new("cli-scribble-magic");
    let _q = Queue::create(g.name(), QueueConfig::new(8, 64)).unwrap();
    common::patch(g.name(), 0, &Rng(7).bytes(64));
    for cmd in ["inspect", "peek"] {
        let out = run(&[cmd, g.name()]);
        assert_eq!(out.code, 1, "{cmd}: {out:?}");
        out.no_crash();
    }
    let e = ls_entry(g.name());
    assert_eq!(e["corrupt"], true);
    assert!(e["state"].as_str().unwrap().starts_with("corrupt"), "{e}");

    // Positions and slot words that no honest run produces.
    let g = ShmGuard::new("cli-scribble-slots");
    let q = Queue::create(g.name(), QueueConfig::new(8, 64)).unwrap();
    for _ in 0..4 {
        q.try_send(Message::new(Request::DO, b"x".as_slice()))
            .unwrap();
    }
    let slots = 512 + 259 * 64;
    // head = 5, tail = 2: head after tail.
    common::patch_u64(g.name(), 3 * 64, 5);
    common::patch_u64(g.name(), 2 * 64, 2);
    let out = run(&["inspect", g.name(), "--json"]);
    assert_eq!(out.code, 1, "{out:?}");
    let v = out.json();
    assert_eq!(v["corrupt"], true);
    assert!(
        v["anomalies"][0]
            .as_str()
            .unwrap()
            .contains("impossible positions"),
        "{v}"
    );
    // Sane positions, a slot word from nowhere and a length beyond max.
    common::patch_u64(g.name(), 3 * 64, 0);
    common::patch_u64(g.name(), 2 * 64, 4);
    // Ticket 0's slot at 5: neither its lap (0, 1, flags) nor a later one (8+).
    common::patch_u64(g.name(), slots, 5);
    common::patch_u32(g.name(), slots + 64 + 28, 1 << 30);
    let v = run(&["inspect", g.name(), "--json"]).json();
    let anomalies: Vec<&str> = v["anomalies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert!(anomalies.iter().any(|a| a.contains("sequence word")), "{v}");
    assert!(anomalies.iter().any(|a| a.contains("length")), "{v}");
    let pk = run(&["peek", g.name(), "--json"]);
    assert_eq!(pk.code, 1, "{pk:?}");

    // Random bytes over random places of the header, the control block
    // and the slots, many times: every command answers 0 or 1, no panic.
    let size = std::fs::metadata(g.path()).unwrap().len();
    for seed in 1..=60u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for _ in 0..4 {
            let at = rng.next() % size;
            let n = 1 + (rng.next() % 256) as usize;
            let n = n.min((size - at) as usize);
            common::patch(g.name(), at, &rng.bytes(n));
        }
        for args in [
            vec!["inspect", g.name(), "--json"],
            vec!["peek", g.name(), "-n", "100"],
        ] {
            let out = run(&args);
            assert!(
                matches!(out.code, 0 | 1) && !out.stderr.contains("panicked"),
                "seed {seed}: {args:?}: {out:?}"
            );
        }
    }
    ls_entry(g.name());

    // A file of random bytes under a mulproc name, nobody holding it.
    let g = ShmGuard::new("cli-scribble-forged");
    common::forge_file(g.name(), &Rng(99).bytes(20_000));
    let out = run(&["inspect", g.name()]);
    assert_eq!(out.code, 1, "{out:?}");
    assert!(out.stdout.contains("not a mulproc segment"), "{out:?}");
    let e = ls_entry(g.name());
    assert_eq!(e["corrupt"], true);
    // Nobody holds it: gc judges it stale, as create would, and removes it.
    let gc = run(&["gc", g.name()]);
    assert_eq!(gc.code, 0, "{gc:?}");
    assert!(gc.stdout.contains("removed stale segment"), "{gc:?}");
    assert!(!g.path().exists());
}

/// send, recv, join and rm for scripts, and their exit statuses.
#[test]
fn send_recv_join_rm_and_exit_statuses() {
    let g = ShmGuard::new("cli-script");
    let q = Queue::create(g.name(), QueueConfig::new(4, 16)).unwrap();
    let sent = run(&["send", g.name(), "hello", "world", "--to", "77"]);
    assert_eq!(sent.code, 0, "{sent:?}");
    let m = q.try_recv().unwrap();
    assert_eq!(
        (m.data.as_slice(), m.recipient),
        (b"hello world".as_slice(), Some(77))
    );
    q.task_done().unwrap();

    let sent = run_with(&["send", g.name(), "--lines", "-r", "FINISHED"], b"a\nb\n");
    assert_eq!(sent.code, 0, "{sent:?}");
    let got = run(&["recv", g.name(), "--timeout", "2s", "--header"]);
    assert_eq!((got.code, got.stdout.as_str()), (0, "a"), "{got:?}");
    assert!(got.stderr.contains("request=FINISHED"), "{got:?}");
    // One left, not done: join times out, exit 1.
    let j = run(&["join", g.name(), "--timeout", "200ms"]);
    assert_eq!(j.code, 1, "{j:?}");
    assert!(j.stderr.contains("1 messages not yet marked done"), "{j:?}");
    assert_eq!(run(&["recv", g.name(), "--timeout", "2s"]).stdout, "b");
    assert_eq!(run(&["join", g.name(), "--timeout", "2s"]).code, 0);
    let empty = run(&["recv", g.name(), "--timeout", "100ms"]);
    assert_eq!(empty.code, 1, "{empty:?}");
    assert!(empty.stderr.contains("timed out"), "{empty:?}");

    // Full and too large.
    for _ in 0..4 {
        q.try_send(Message::new(Request::DO, b"f".as_slice()))
            .unwrap();
    }
    let full = run(&["send", g.name(), "x", "--timeout", "100ms"]);
    assert_eq!(full.code, 1, "{full:?}");
    assert!(full.stderr.contains("full"), "{full:?}");
    let big = run(&["send", g.name(), &"y".repeat(17)]);
    assert_eq!(big.code, 1, "{big:?}");
    assert!(big.stderr.contains("exceeds the max payload"), "{big:?}");

    // A pipe: the command is its child end.
    let gp = ShmGuard::new("cli-script-pipe");
    let pipe = Pipe::create(gp.name(), PipeConfig::new(4, 16)).unwrap();
    pipe.try_send(Message::new(Request::DO, b"down".as_slice()))
        .unwrap();
    assert_eq!(run(&["recv", gp.name(), "--timeout", "2s"]).stdout, "down");
    assert_eq!(run(&["send", gp.name(), "up"]).code, 0);
    assert_eq!(pipe.try_recv().unwrap().data, b"up");
    let j = run(&["join", gp.name(), "--timeout", "1s"]);
    assert_eq!(j.code, 1, "a pipe has no join: {j:?}");

    // rm: refused while in use, done with --force.
    let rm = run(&["rm", g.name()]);
    assert_eq!(rm.code, 1, "{rm:?}");
    assert!(rm.stderr.contains("in use by 1 live handle"), "{rm:?}");
    assert!(g.path().exists());
    let rm = run(&["rm", "--force", g.name()]);
    assert_eq!(rm.code, 0, "{rm:?}");
    assert!(!g.path().exists());
    assert_eq!(run(&["rm", g.name()]).code, 1);
    drop(q);

    // Failures and usage errors.
    let missing = run(&["inspect", "no-such-segment-for-sure"]);
    assert_eq!(missing.code, 1, "{missing:?}");
    assert_eq!(run(&["peek", "bad/name"]).code, 1);
    assert_eq!(run(&["frobnicate"]).code, 2);
    assert_eq!(run(&["peek"]).code, 2);
    assert_eq!(run(&["peek", g.name(), "-n", "many"]).code, 2);
    assert_eq!(run(&["join", g.name(), "--timeout", "soon"]).code, 2);
    let help = run(&["--help"]);
    assert_eq!(help.code, 0);
    assert!(help.stdout.contains("Exit status:"), "{help:?}");
}

// ---------------------------------------------------------------- watch ---

/// A tmux server of our own (a private socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .arg("-L")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run tmux")
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "w"]).stdout).into_owned()
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

/// A file removed on drop.
struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The first number after `label` on the screen (`send   1,234.5/s`).
fn number_after(screen: &str, label: &str) -> Option<f64> {
    let i = screen.find(label)? + label.len();
    let rest = screen[i..].trim_start();
    let num: String = rest
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == ',' || *c == '.')
        .filter(|c| *c != ',')
        .collect();
    num.parse().ok()
}

/// `watch` under a pseudo-terminal (tmux): the screen shows the rates of
/// real traffic, and Ctrl-C ends it with status 0, leaving the alternate
/// screen.
#[test]
fn watch_shows_rates_in_a_terminal_and_ends_on_ctrl_c() {
    if Command::new("tmux").arg("-V").output().is_err() {
        println!("skipped: tmux is not installed (apt-get install -y tmux)");
        return;
    }
    let g = ShmGuard::new("cli-watch");
    let q = Queue::create(g.name(), QueueConfig::new(256, 64)).unwrap();
    let mut traffic = ChildProc::spawn("traffic", &[("NAME", g.name().to_owned())]);
    traffic.wait_ready(READY);
    // The exit status, written by the shell tmux runs the command in (tmux
    // 3.3 may leave a pane's process unreaped, its status unknown).
    let status_file = RemoveOnDrop(std::env::temp_dir().join(format!(
        "mulproc-watch-status-{}",
        common::unique_name("status")
    )));
    let tmux = Tmux {
        socket: format!("mulproc-test-{}", common::unique_name("tmux")),
    };
    let started = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "w",
        "-x",
        "150",
        "-y",
        "30",
        &format!(
            "{BIN} watch {}; echo $? > {}; exec sleep 60",
            g.name(),
            status_file.0.display()
        ),
    ]);
    assert!(started.status.success(), "tmux: {started:?}");
    // Two readings at least (one a second) give a rate.
    let mut screen = String::new();
    let end = Instant::now() + Duration::from_secs(15);
    while Instant::now() < end {
        std::thread::sleep(Duration::from_millis(500));
        screen = tmux.capture();
        if number_after(&screen, "send").is_some_and(|r| r > 0.0) {
            break;
        }
    }
    println!("{screen}");
    assert!(screen.contains(g.name()), "{screen}");
    let send = number_after(&screen, "send").expect("a send rate");
    let recv = number_after(&screen, "recv").expect("a receive rate");
    assert!(send > 100.0, "send rate {send}:\n{screen}");
    assert!(recv > 100.0, "receive rate {recv}:\n{screen}");
    assert!(screen.contains("depth"), "{screen}");
    assert!(screen.contains("live 2"), "{screen}");

    let _ = tmux.cmd(&["send-keys", "-t", "w", "C-c"]);
    let mut status = String::new();
    let end = Instant::now() + Duration::from_secs(10);
    while Instant::now() < end && status.is_empty() {
        std::thread::sleep(Duration::from_millis(50));
        status = std::fs::read_to_string(&status_file.0)
            .unwrap_or_default()
            .trim()
            .to_owned();
    }
    assert_eq!(status, "0", "exit status of watch after Ctrl-C");
    let out = tmux.cmd(&["display-message", "-p", "-t", "w", "#{alternate_on}"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "the alternate screen was left"
    );
    drop(traffic);
    drop(q);
}

/// Without a terminal, `watch` prints one line per refresh, and SIGINT
/// ends it with status 0.
#[test]
fn watch_without_a_terminal_prints_lines() {
    let g = ShmGuard::new("cli-watch-plain");
    let q = Queue::create(g.name(), QueueConfig::new(8, 64)).unwrap();
    q.try_send(Message::new(Request::DO, b"1".as_slice()))
        .unwrap();
    let child = Command::new(BIN)
        .args(["watch", g.name(), "--interval", "200ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(1500));
    // SAFETY: sending a signal to our own child touches no memory.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    let out = child.wait_with_output().expect("wait");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines.len() >= 3, "{text}");
    assert!(
        lines[0].contains("send 0.0/s") && lines[0].contains("depth 1/8"),
        "{text}"
    );
}

/// Another user's private segment is listed by name, owner, mode and age,
/// with "permission denied", and inspecting it fails with exit status 1
/// (the command run as `nobody`; needs root to switch users).
#[test]
fn segments_of_other_users_are_listed_as_far_as_permissions_allow() {
    // SAFETY: geteuid cannot fail and touches no memory.
    if unsafe { libc::geteuid() } != 0 {
        println!("skipped: switching to another user needs root");
        return;
    }
    let g = ShmGuard::new("cli-other-user");
    let _q = Queue::create(g.name(), QueueConfig::new(8, 64)).unwrap();
    let as_nobody = |args: &[&str]| {
        use std::os::unix::process::CommandExt;
        let out = Command::new(BIN)
            .args(args)
            .uid(65534)
            .gid(65534)
            .stdin(Stdio::null())
            .output()
            .expect("run mulproc as nobody");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    };
    let ls = as_nobody(&["ls", "--json"]);
    ls.no_crash();
    let all = ls.json();
    let e = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == g.name())
        .unwrap_or_else(|| panic!("{} not listed: {}", g.name(), ls.stdout));
    assert_eq!(e["readable"], false, "{e}");
    assert_eq!(e["error"], "permission denied");
    assert_eq!(e["file"]["uid"], 0);
    assert_eq!(e["file"]["mode"], "0600");
    let table = as_nobody(&["ls"]);
    let line = table
        .stdout
        .lines()
        .find(|l| l.starts_with(g.name()))
        .expect("listed")
        .to_owned();
    assert!(line.ends_with("permission denied"), "{line}");
    let i = as_nobody(&["inspect", g.name()]);
    assert_eq!(i.code, 1, "{i:?}");
    assert!(i.stderr.contains("permission denied"), "{i:?}");
    // gc leaves it alone (it is not nobody's), and says why.
    let gc = as_nobody(&["gc", g.name()]);
    assert!(gc.stdout.contains("skipped: permission denied"), "{gc:?}");
    assert!(g.path().exists());
}
