//! Harness for real multi-process tests of mulproc.
//!
//! Children are new processes of the test binary itself (never `fork()`):
//! [`ChildProc::spawn`] runs `current_exe() --exact child_entry --nocapture
//! --test-threads=1` with `MULPROC_TEST_ROLE=<role>` and role arguments in
//! `MULPROC_TEST_ARG_<NAME>` variables. Each test file that spawns children
//! has one `#[test] fn child_entry()` that calls [`child_entry`]: it returns
//! at once unless `MULPROC_TEST_ROLE` is set (so a normal `cargo test` run
//! passes it trivially), and otherwise runs the role and exits the process
//! with the role's exit code.
//!
//! A child reports to its parent on stdout: [`ready`] prints a readiness
//! line the parent waits for with [`ChildProc::wait_ready`], and [`report`]
//! prints `key=value` result lines that [`Finished::get`] parses. A panic in
//! a role fails the child's libtest run (exit 101), which the parent turns
//! into a panic that shows the child's stdout and stderr.
//!
//! Clean-up on failure: [`ShmGuard`] removes a segment name on drop, and
//! [`ChildProc`] kills (SIGKILL) and reaps its child on drop, so a failing
//! test leaves neither segments nor processes behind. Every wait has a
//! timeout, so no test can hang CI.
#![allow(dead_code)]

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mulproc::{Queue, SendRetry, SetupError};

/// Environment variable naming the role a child plays.
pub const ROLE_VAR: &str = "MULPROC_TEST_ROLE";
/// Prefix of the environment variables carrying role arguments.
pub const ARG_PREFIX: &str = "MULPROC_TEST_ARG_";
/// Name of the libtest entry point of children in every test binary.
pub const CHILD_ENTRY: &str = "child_entry";
/// Line a child prints when it is ready (see [`ready`]).
pub const READY_LINE: &str = "MULPROC-TEST-READY";
/// Prefix of a child's result lines (see [`report`]).
pub const RESULT_PREFIX: &str = "MULPROC-TEST-RESULT ";

// ---------------------------------------------------------------- names ---

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A queue name unique per test run and per call: pid, a per-process
/// counter and a nanosecond timestamp, plus `tag` reduced to
/// `[A-Za-z0-9._-]`.
pub fn unique_name(tag: &str) -> String {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(64)
        .collect();
    format!("t{}-{}-{}-{}", std::process::id(), n, nanos, tag)
}

/// Path of the file behind queue `name` (`/dev/shm/mulproc.<name>`).
pub fn shm_path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/mulproc.{name}"))
}

/// Removes a queue name on drop (ignoring `NotFound`), so a test cleans up
/// its segment even when it panics. Declare it before the `Queue` handles
/// that use the name.
#[derive(Debug)]
pub struct ShmGuard {
    name: String,
}

impl ShmGuard {
    /// A guard over a fresh [`unique_name`].
    pub fn new(tag: &str) -> ShmGuard {
        ShmGuard {
            name: unique_name(tag),
        }
    }

    /// A guard over a given name.
    pub fn with_name(name: String) -> ShmGuard {
        ShmGuard { name }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn path(&self) -> PathBuf {
        shm_path(&self.name)
    }
}

impl Drop for ShmGuard {
    fn drop(&mut self) {
        match Queue::remove(&self.name) {
            Ok(()) | Err(SetupError::NotFound { .. }) => {}
            Err(e) => eprintln!("ShmGuard: could not remove {:?}: {e}", self.name),
        }
    }
}

/// A `send` that waits up to a minute for space (1200 tries of 50 ms): for
/// children and parents that must not give up on a busy but live peer.
pub fn patient() -> SendRetry {
    SendRetry {
        tries: 1200,
        wait: Duration::from_millis(50),
    }
}

// ------------------------------------------------------ segment patching ---

/// Writes `bytes` at `offset` of the segment file of `name` (the page cache
/// is shared with every mapping, so mapped handles see the change).
pub fn patch(name: &str, offset: u64, bytes: &[u8]) {
    let f = OpenOptions::new()
        .write(true)
        .open(shm_path(name))
        .expect("open segment file for patching");
    f.write_all_at(bytes, offset).expect("patch segment file");
}

pub fn patch_u32(name: &str, offset: u64, v: u32) {
    patch(name, offset, &v.to_le_bytes());
}

pub fn patch_u64(name: &str, offset: u64, v: u64) {
    patch(name, offset, &v.to_le_bytes());
}

pub fn read_u32(name: &str, offset: u64) -> Option<u32> {
    let f = File::open(shm_path(name)).ok()?;
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, offset).ok()?;
    Some(u32::from_le_bytes(b))
}

pub fn read_u64(name: &str, offset: u64) -> Option<u64> {
    let f = File::open(shm_path(name)).ok()?;
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, offset).ok()?;
    Some(u64::from_le_bytes(b))
}

/// Creates a segment file by hand, mode 0600, with `contents` (the caller
/// holds a [`ShmGuard`] over `name`).
pub fn forge_file(name: &str, contents: &[u8]) {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(shm_path(name))
        .expect("create forged segment file");
    f.write_all(contents).expect("write forged segment file");
}

/// Offset of the receivers' sleeper count (`not_empty.waiters`), from the
/// crate's hidden layout export. White-box, used only as a soft readiness
/// hint (see [`wait_for_sleepers`]).
pub const NOT_EMPTY_WAITERS: u64 = mulproc::__layout::NOT_EMPTY_WAITERS;
/// Offset of the senders' sleeper count (`not_full.waiters`).
pub const NOT_FULL_WAITERS: u64 = mulproc::__layout::NOT_FULL_WAITERS;

/// Soft readiness check: waits (at most `timeout`) until the sleeper count
/// at `offset` is at least `at_least`. Returns whether it got there. Never
/// fails a test by itself: callers also sleep, so a layout change only
/// costs this hint.
pub fn wait_for_sleepers(name: &str, offset: u64, at_least: u32, timeout: Duration) -> bool {
    let end = Instant::now() + timeout;
    loop {
        if read_u32(name, offset).is_some_and(|w| w >= at_least) {
            return true;
        }
        if Instant::now() >= end {
            return false;
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}

// ------------------------------------------------------------ child side ---

/// The body of every test binary's `#[test] fn child_entry()`. Does nothing
/// unless `MULPROC_TEST_ROLE` is set; otherwise runs `run(role)` and exits
/// the process with the code it returns (a panic fails the child's libtest
/// run instead, exit 101).
pub fn child_entry(run: impl FnOnce(&str) -> i32) {
    let Ok(role) = std::env::var(ROLE_VAR) else {
        return;
    };
    let code = run(&role);
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    std::process::exit(code);
}

/// A role argument (panics if missing).
pub fn arg(name: &str) -> String {
    std::env::var(format!("{ARG_PREFIX}{name}"))
        .unwrap_or_else(|_| panic!("child role argument {name} missing"))
}

/// A parsed role argument.
pub fn arg_parse<T: std::str::FromStr>(name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    arg(name)
        .parse()
        .unwrap_or_else(|e| panic!("child role argument {name}: {e:?}"))
}

/// Tells the parent this child is ready (it then waits in
/// [`ChildProc::wait_ready`]).
pub fn ready() {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{READY_LINE}");
    let _ = out.flush();
}

/// Reports `key=value` to the parent.
pub fn report(key: &str, value: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{RESULT_PREFIX}{key}={value}");
    let _ = out.flush();
}

// ----------------------------------------------------------- parent side ---

/// How a child ended.
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub stderr: String,
    pub results: HashMap<String, String>,
}

impl Finished {
    /// A reported result, parsed (panics with the child's output if
    /// missing or unparsable).
    pub fn get<T: std::str::FromStr>(&self, key: &str) -> T {
        let v = self
            .results
            .get(key)
            .unwrap_or_else(|| panic!("child did not report {key:?}\n{}", self.describe()));
        v.parse()
            .unwrap_or_else(|_| panic!("child reported {key}={v:?}, unparsable"))
    }

    pub fn describe(&self) -> String {
        format!(
            "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status,
            self.stdout.join("\n"),
            self.stderr
        )
    }
}

/// A child process of the test binary playing a role. Killed (SIGKILL) and
/// reaped on drop if still running.
#[derive(Debug)]
pub struct ChildProc {
    role: String,
    child: Option<Child>,
    status: Option<ExitStatus>,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    out_thread: Option<JoinHandle<()>>,
    err_thread: Option<JoinHandle<String>>,
}

impl ChildProc {
    /// Spawns a child playing `role`, with `args` as role arguments.
    pub fn spawn(role: &str, args: &[(&str, String)]) -> ChildProc {
        let exe = std::env::current_exe().expect("current_exe");
        let mut cmd = Command::new(exe);
        cmd.args(["--exact", CHILD_ENTRY, "--nocapture", "--test-threads=1"])
            .env(ROLE_VAR, role)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in args {
            cmd.env(format!("{ARG_PREFIX}{k}"), v);
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn child {role}: {e}"));
        let stdout = child.stdout.take().expect("child stdout");
        let mut stderr = child.stderr.take().expect("child stderr");
        let (tx, rx) = mpsc::channel();
        let out_thread = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let err_thread = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        ChildProc {
            role: role.to_owned(),
            child: Some(child),
            status: None,
            lines: rx,
            seen: Vec::new(),
            out_thread: Some(out_thread),
            err_thread: Some(err_thread),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, |c| c.id())
    }

    /// True while the child has not exited.
    pub fn is_running(&mut self) -> bool {
        if self.status.is_some() {
            return false;
        }
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(st))) => {
                self.status = Some(st);
                false
            }
            Some(Ok(None)) => true,
            _ => false,
        }
    }

    /// Waits for the child's [`ready`] line; panics (after killing it) if
    /// it exits first or `timeout` passes.
    pub fn wait_ready(&mut self, timeout: Duration) {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                // libtest's "test child_entry ... " may precede it on the line.
                Ok(line) if line.trim_end().ends_with(READY_LINE) => return,
                Ok(line) => self.seen.push(line),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let f = self.kill();
                    panic!(
                        "child {} not ready within {timeout:?}\n{}",
                        self.role,
                        f.describe()
                    );
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let f = self.finish(Duration::from_secs(10));
                    panic!(
                        "child {} exited before it was ready\n{}",
                        self.role,
                        f.describe()
                    );
                }
            }
        }
    }

    /// Waits up to `timeout` for the child to exit (polling `try_wait`).
    /// On timeout it is killed and reaped, and `Err` describes it.
    pub fn wait(&mut self, timeout: Duration) -> Result<Finished, String> {
        let end = Instant::now() + timeout;
        while self.is_running() {
            if Instant::now() >= end {
                let f = self.kill();
                return Err(format!(
                    "child {} (pid {}) still running after {timeout:?}; killed\n{}",
                    self.role,
                    self.pid(),
                    f.describe()
                ));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(self.collect())
    }

    /// Waits up to `timeout` for the child to exit with code 0; panics with
    /// its output otherwise.
    pub fn wait_success(&mut self, timeout: Duration) -> Finished {
        let role = self.role.clone();
        match self.wait(timeout) {
            Ok(f) if f.status.success() => f,
            Ok(f) => panic!("child {role} failed\n{}", f.describe()),
            Err(e) => panic!("{e}"),
        }
    }

    /// Kills the child (SIGKILL, via `Child::kill`) and reaps it.
    pub fn kill(&mut self) -> Finished {
        if let Some(c) = self.child.as_mut() {
            if self.status.is_none() {
                let _ = c.kill();
                self.status = c.wait().ok();
            }
        }
        self.collect()
    }

    /// Waits (bounded) and collects whatever the child has written.
    fn finish(&mut self, timeout: Duration) -> Finished {
        match self.wait(timeout) {
            Ok(f) => f,
            Err(_) => self.collect(),
        }
    }

    /// After the child has exited: joins the readers, gathers the output.
    fn collect(&mut self) -> Finished {
        if let Some(t) = self.out_thread.take() {
            let _ = t.join();
        }
        let stderr = self
            .err_thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default();
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        let stdout = std::mem::take(&mut self.seen);
        let results = stdout
            .iter()
            // libtest's "test child_entry ... " may precede the first one.
            .filter_map(|l| l.find(RESULT_PREFIX).map(|i| &l[i + RESULT_PREFIX.len()..]))
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Finished {
            status: self.status.expect("collect after exit"),
            stdout,
            stderr,
            results,
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        if let Some(c) = self.child.as_mut() {
            if self.status.is_none() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Waits for every child, in order, each within what is left of `timeout`.
pub fn wait_all(children: &mut [ChildProc], timeout: Duration) -> Vec<Finished> {
    let end = Instant::now() + timeout;
    children
        .iter_mut()
        .map(|c| c.wait_success(end.saturating_duration_since(Instant::now())))
        .collect()
}
