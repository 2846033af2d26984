//! `mulproc::process`: children of the current executable that open the
//! parent's channels, kill-on-drop handles, and the poison pill.
//!
//! Children are real processes of this test binary, started with
//! `process::Child` itself: `--exact child_main` makes the child's libtest
//! run only [`child_main`], which plays the role in `MULPROC_ROLE` (and
//! does nothing in a normal test run, where no role is set).

use std::collections::HashMap;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use mulproc::process::{self, ChannelError, Child, ChildProcess, SpawnError};
use mulproc::{Message, Pipe, PipeConfig, Queue, QueueConfig, Request, SendRetry, SetupError};

/// Long enough for a loaded CI machine; a test that needs it has failed.
const PATIENCE: Duration = Duration::from_secs(30);

// ------------------------------------------------------------- helpers ---

/// A queue name unique to this process, test and moment.
fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("ps-{}-{nanos}-{tag}", std::process::id())
}

/// A queue created under a unique name; the handle removes it on drop,
/// panics included.
fn queue(tag: &str) -> Queue {
    let mut q = Queue::create(&unique(tag), QueueConfig::new(64, 256)).expect("create queue");
    q.set_send_retry(patient());
    q
}

fn patient() -> SendRetry {
    SendRetry {
        tries: 300,
        wait: Duration::from_millis(100),
    }
}

/// A child of this test binary that runs only `child_main`. Its libtest
/// chatter on stdout is dropped; its stderr (panics) shows.
fn child(role: &str) -> Child {
    Child::role(role)
        .inherit_args(false)
        .args(["--exact", "child_main", "--nocapture", "--test-threads=1"])
        .stdout(Stdio::null())
}

fn wait_exit(c: &mut ChildProcess) -> ExitStatus {
    match c.wait_timeout(PATIENCE).expect("wait_timeout") {
        Some(st) => st,
        None => panic!(
            "child {} (pid {}) did not exit in {PATIENCE:?}",
            c.role(),
            c.pid()
        ),
    }
}

fn proc_exists(pid: u32) -> bool {
    std::fs::metadata(format!("/proc/{pid}")).is_ok()
}

fn parse_report(data: &[u8]) -> HashMap<String, String> {
    std::str::from_utf8(data)
        .expect("report is UTF-8")
        .split(';')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

// ---------------------------------------------------------- child side ---

/// Entry point of every child. Returns at once in a normal test run.
#[test]
fn child_main() {
    let Some(role) = process::role() else {
        return;
    };
    let code = match role.as_str() {
        "reporter" => role_reporter(),
        "nester" => role_nester(),
        "grandchild" => role_grandchild(),
        "sleeper" => role_sleeper(),
        "worker" => role_worker(),
        "pipe_echo" => role_pipe_echo(),
        other => {
            eprintln!("unknown role {other:?}");
            2
        }
    };
    std::process::exit(code);
}

/// Takes the child end of pipe `ctl`, echoes one message back, and exits
/// on DIE.
fn role_pipe_echo() -> i32 {
    let pipe = process::open_pipe("ctl").expect("open_pipe");
    let m = pipe.recv_timeout(PATIENCE).expect("recv");
    pipe.send(Message::new(Request::FINISHED, m.data))
        .expect("send echo");
    let die = pipe.recv_timeout(PATIENCE).expect("recv DIE");
    i32::from(die.request != Request::DIE)
}

/// Reports what it sees of its environment on channel `results`.
fn role_reporter() -> i32 {
    let results = process::open_queue("results").expect("open results");
    let other = process::channel_name("Other").expect("channel Other");
    let same = process::channel_name("RESULTS").ok() == Some(results.name().to_owned());
    let missing = matches!(
        process::channel_name("missing"),
        Err(ChannelError::NotGiven { .. })
    );
    let ghost = matches!(
        process::open_queue("ghost"),
        Err(ChannelError::Open(SetupError::NotFound { .. }))
    );
    let ppid_ok = process::parent_pid() == Some(std::os::unix::process::parent_id());
    let report = format!(
        "role={};other={other};case_insensitive={same};missing={missing};ghost={ghost};\
         ppid_ok={ppid_ok};extra_env={}",
        process::role().unwrap_or_default(),
        std::env::var("EXTRA").unwrap_or_default(),
    );
    let to = process::parent_pid().expect("parent pid");
    results
        .send(Message::new(Request::FINISHED, report.as_bytes()).to(to))
        .expect("send report");
    0
}

/// Starts a grandchild given only channel `only`, and waits for it.
fn role_nester() -> i32 {
    let results = process::open_queue("results").expect("open results");
    let mut grandchild = child("grandchild")
        .queue("only", &results)
        .spawn()
        .expect("spawn grandchild");
    i32::from(!wait_exit(&mut grandchild).success())
}

fn role_grandchild() -> i32 {
    let results = process::open_queue("only").expect("open only");
    let inherited_hidden = matches!(
        process::channel_name("results"),
        Err(ChannelError::NotGiven { .. })
    );
    let report = format!(
        "role={};inherited_hidden={inherited_hidden};ppid_ok={}",
        process::role().unwrap_or_default(),
        process::parent_pid() == Some(std::os::unix::process::parent_id()),
    );
    results
        .send(Message::new(Request::FINISHED, report.as_bytes()))
        .expect("send report");
    0
}

/// Says it is up, then sleeps until killed.
fn role_sleeper() -> i32 {
    let ready = process::open_queue("ready").expect("open ready");
    ready
        .send(Message::signal(Request::DO))
        .expect("send ready");
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// A pymulproc-style worker: doubles each task's number for the sender,
/// stops at its poison pill. `MODE=mine` receives with `recv_for_me`
/// (pills addressed by pid), `MODE=any` with plain receive (pills for
/// anyone). Gives up after `PATIENCE` without a message (exit 3).
fn role_worker() -> i32 {
    let tasks = process::open_queue("tasks").expect("open tasks");
    let mut results = process::open_queue("results").expect("open results");
    results.set_send_retry(patient());
    let mine = std::env::var("MODE").as_deref() == Ok("mine");
    let mut done = 0u32;
    loop {
        let m = if mine {
            tasks.recv_for_me_timeout(PATIENCE)
        } else {
            tasks.recv_timeout(PATIENCE)
        };
        let Ok(m) = m else {
            eprintln!("worker {}: no message: {m:?}", std::process::id());
            return 3;
        };
        if m.request == Request::DIE {
            let bye = format!("bye={done}");
            results
                .send(Message::new(Request::FINISHED, bye.as_bytes()))
                .expect("send bye");
            return 0;
        }
        let n = u32::from_le_bytes(m.data[..4].try_into().expect("4-byte task"));
        let reply =
            Message::new(Request::FINISHED, (n * 2).to_le_bytes()).to(m.sender.unwrap_or(0));
        results.send(reply).expect("send result");
        done += 1;
    }
}

// --------------------------------------------------------- parent side ---

#[test]
fn child_sees_its_role_channels_and_parent_pid() {
    let results = queue("reporter");
    let mut c = child("reporter")
        .queue("results", &results)
        .channel("other", "some-other-name")
        .channel("ghost", unique("ghost"))
        .env("EXTRA", "kept")
        .spawn()
        .expect("spawn");
    let m = results.recv_timeout(PATIENCE).expect("report");
    assert_eq!(m.sender, Some(c.pid()), "the child sends with its own pid");
    assert_eq!(m.recipient, Some(std::process::id()));
    let r = parse_report(&m.data);
    assert_eq!(r["role"], "reporter");
    assert_eq!(r["other"], "some-other-name");
    assert_eq!(r["case_insensitive"], "true");
    assert_eq!(r["missing"], "true");
    assert_eq!(r["ghost"], "true");
    assert_eq!(r["ppid_ok"], "true");
    assert_eq!(r["extra_env"], "kept");
    assert!(wait_exit(&mut c).success());
}

#[test]
fn nested_child_sees_only_its_own_channels() {
    let results = queue("nested");
    let mut c = child("nester")
        .queue("results", &results)
        .spawn()
        .expect("spawn");
    let m = results.recv_timeout(PATIENCE).expect("report");
    let r = parse_report(&m.data);
    assert_eq!(r["role"], "grandchild");
    assert_eq!(
        r["inherited_hidden"], "true",
        "MULPROC_CHANNEL_RESULTS leaked to the grandchild"
    );
    assert_eq!(r["ppid_ok"], "true");
    assert_ne!(m.sender, Some(c.pid()));
    assert!(wait_exit(&mut c).success());
}

#[test]
fn dropping_an_unwaited_child_kills_and_reaps_it() {
    let ready = queue("drop");
    let c = child("sleeper")
        .queue("ready", &ready)
        .spawn()
        .expect("spawn");
    let pid = c.pid();
    ready.recv_timeout(PATIENCE).expect("sleeper ready");
    assert!(proc_exists(pid));
    drop(c);
    // Reaped, not just killed: a zombie would still have /proc/<pid>.
    assert!(!proc_exists(pid), "child {pid} still exists after drop");
}

#[test]
fn wait_timeout_reports_a_running_child_then_kill_ends_it() {
    use std::os::unix::process::ExitStatusExt;
    let ready = queue("kill");
    let mut c = child("sleeper")
        .queue("ready", &ready)
        .spawn()
        .expect("spawn");
    ready.recv_timeout(PATIENCE).expect("sleeper ready");
    assert_eq!(c.wait_timeout(Duration::from_millis(30)).unwrap(), None);
    assert_eq!(c.try_wait().unwrap(), None);
    c.kill().unwrap();
    let st = wait_exit(&mut c);
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    // Waited: dropping now kills nothing and does not fail.
    c.kill().unwrap();
    drop(c);
}

#[test]
fn detached_child_outlives_its_handle() {
    let ready = queue("detach");
    let c = child("sleeper")
        .queue("ready", &ready)
        .spawn()
        .expect("spawn");
    ready.recv_timeout(PATIENCE).expect("sleeper ready");
    let pid = c.pid();
    let mut std_child = c.detach();
    std::thread::sleep(Duration::from_millis(20));
    assert!(proc_exists(pid), "detached child was killed");
    std_child.kill().unwrap();
    std_child.wait().unwrap();
    assert!(!proc_exists(pid));
}

fn run_pool(mode: &str, workers: usize, tasks_n: u32) {
    let tasks = queue(&format!("tasks-{mode}"));
    let results = queue(&format!("results-{mode}"));
    let mut pool: Vec<ChildProcess> = (0..workers)
        .map(|_| {
            child("worker")
                .queue("tasks", &tasks)
                .queue("results", &results)
                .env("MODE", mode)
                .spawn()
                .expect("spawn worker")
        })
        .collect();
    for n in 0..tasks_n {
        tasks
            .send(Message::new(Request::DO, n.to_le_bytes()))
            .expect("send task");
    }
    let mut sum = 0u64;
    for _ in 0..tasks_n {
        let m = results.recv_timeout(PATIENCE).expect("result");
        assert_eq!(m.recipient, Some(std::process::id()));
        assert!(pool.iter().any(|w| Some(w.pid()) == m.sender));
        sum += u64::from(u32::from_le_bytes(m.data[..].try_into().unwrap()));
    }
    assert_eq!(sum, (0..u64::from(tasks_n)).map(|n| 2 * n).sum::<u64>());

    match mode {
        "mine" => process::stop_workers(&tasks, pool.iter().map(ChildProcess::pid)),
        _ => process::stop_any_workers(&tasks, workers),
    }
    .expect("stop workers");
    let mut byes = 0;
    for _ in 0..workers {
        let m = results.recv_timeout(PATIENCE).expect("bye");
        assert!(m.data.starts_with(b"bye="), "unexpected {m:?}");
        byes += 1;
    }
    assert_eq!(byes, workers);
    for w in &mut pool {
        let st = wait_exit(w);
        assert!(st.success(), "worker {} ended with {st:?}", w.pid());
    }
    assert!(tasks.is_empty(), "a pill was left over");
}

#[test]
fn stop_workers_by_pid_makes_each_worker_exit_cleanly() {
    run_pool("mine", 3, 60);
}

#[test]
fn stop_any_workers_by_count_makes_each_worker_exit_cleanly() {
    run_pool("any", 3, 60);
}

#[test]
fn invalid_channel_key_is_refused_before_spawning() {
    for key in ["", "no-dash", "sp ace", "é"] {
        let err = child("reporter").channel(key, "x").spawn().unwrap_err();
        assert!(
            matches!(&err, SpawnError::InvalidChannelKey { key: k } if k == key),
            "{key:?}: {err:?}"
        );
        let io: std::io::Error = err.into();
        assert_eq!(io.kind(), std::io::ErrorKind::InvalidInput);
    }
}

#[test]
fn lookups_in_a_process_not_started_by_spawn_give_typed_errors() {
    assert_eq!(process::role(), None);
    assert_eq!(process::parent_pid(), None);
    assert!(matches!(
        process::channel_name("tasks"),
        Err(ChannelError::NotGiven { var, .. }) if var == "MULPROC_CHANNEL_TASKS"
    ));
    assert!(matches!(
        process::open_queue("tasks"),
        Err(ChannelError::NotGiven { .. })
    ));
    assert!(matches!(
        process::channel_name("a.b"),
        Err(ChannelError::InvalidKey { .. })
    ));
}

#[test]
fn missing_program_is_a_spawn_error() {
    let err = Child::role("x")
        .program("/nonexistent/mulproc-test-program")
        .spawn()
        .unwrap_err();
    assert!(matches!(err, SpawnError::Spawn(ref e) if e.kind() == std::io::ErrorKind::NotFound));
}

/// Pins: a pipe handed to a child with `Child::pipe` and taken with
/// `process::open_pipe` not being usable from both ends (the child's end,
/// its pid as the parent's peer, a message each way).
#[test]
fn child_takes_the_child_end_of_a_pipe() {
    let parent = Pipe::create(&unique("pipe"), PipeConfig::new(8, 64)).expect("create pipe");
    let mut c = child("pipe_echo")
        .pipe("ctl", &parent)
        .spawn()
        .expect("spawn");
    parent
        .send(Message::new(Request::DO, b"ping".as_slice()))
        .expect("send");
    let echo = parent.recv_timeout(PATIENCE).expect("echo");
    assert_eq!(echo.request, Request::FINISHED);
    assert_eq!(echo.data, b"ping");
    assert_eq!(echo.sender, Some(c.pid()));
    assert_eq!(parent.peer_pid(), Some(c.pid()));
    parent
        .send(Message::signal(Request::DIE))
        .expect("send DIE");
    assert!(wait_exit(&mut c).success());
    // The child's end was given back when its handle dropped.
    assert_eq!(parent.peer_pid(), None);
}
