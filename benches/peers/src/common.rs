//! Shared plumbing: child processes and their control channel, clean-up of
//! named resources, timing helpers, statistics and the result line.
//!
//! # Control protocol
//! A child is the current executable re-run with [`CHILD_ENV`] set to an
//! encoded [`ChildSpec`]. Its stdin and stdout are pipes to the parent; every
//! control line starts with `@@` (anything else a library prints on stdout is
//! passed through to stderr):
//! - child → parent `@@ready` once its endpoints are open;
//! - parent → child `@@run N`: handle N messages (echo N, or produce N);
//! - child → parent `@@done` after each batch;
//! - EOF on the child's stdin: the child exits.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::config::ChildSpec;
use crate::{err, Config, Result};

/// Environment variable that turns a re-executed binary into a child.
pub const CHILD_ENV: &str = "MULPROC_PEER_CHILD";
/// Environment variable carrying the parent's pid, checked by the child.
pub const PARENT_PID_ENV: &str = "MULPROC_PEER_PARENT_PID";

/// How long a receiver waits in one blocking call before it checks that its
/// peers are still alive.
pub const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How many failed `try_recv` calls a spinning receiver makes between two
/// liveness checks.
pub const SPINS_PER_CHECK: u32 = 1 << 20;

// ---------------------------------------------------------------------------
// Names and clean-up

/// A name unique to this process and call, e.g. `mulproc-peers-1234-7-ring`.
pub fn unique_name(tag: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    format!("mulproc-peers-{}-{}-{}", std::process::id(), n, tag)
}

/// Paths to unlink if the process is ended by a signal or the watchdog.
static REGISTRY: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn registry() -> std::sync::MutexGuard<'static, Vec<PathBuf>> {
    // A panic while holding the lock leaves a usable Vec<PathBuf>.
    REGISTRY
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Unlinks every path still registered. Safe to call more than once.
pub fn cleanup_registered() {
    for path in registry().drain(..) {
        remove_path(&path);
    }
}

/// Unlinks a file, or removes a directory with everything in it (never
/// following a symbolic link).
fn remove_path(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(path);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(path);
        }
        Err(_) => {}
    }
}

/// A file-system name (shared-memory file, socket, or a private directory
/// of them) owned by this process: unlinked (a directory with its contents)
/// on [`PathGuard::remove`], on drop, or by [`cleanup_registered`] when a
/// signal or the watchdog ends the process.
#[derive(Debug)]
pub struct PathGuard {
    path: Option<PathBuf>,
}

impl PathGuard {
    /// Registers `path` for clean-up. Call before creating the file.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        let path = path.into();
        registry().push(path.clone());
        PathGuard { path: Some(path) }
    }

    /// The guarded path.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(""))
    }

    /// The guarded path as UTF-8 (our names always are).
    pub fn path_str(&self) -> &str {
        self.path().to_str().unwrap_or("")
    }

    /// Unlinks now (e.g. once every child has opened the file).
    pub fn remove(&mut self) {
        if let Some(path) = self.path.take() {
            remove_path(&path);
            registry().retain(|p| p != &path);
        }
    }
}

impl Drop for PathGuard {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Makes the process clean up its registered paths when it gets SIGINT,
/// SIGTERM or SIGHUP, or when `timeout` passes; it then exits with status
/// 130 (signal) or 124 (timeout). Children die with us (PR_SET_PDEATHSIG).
///
/// Must be called before any other thread is started: it blocks the signals
/// in the calling thread, and threads inherit that mask.
pub fn install_exit_guards(timeout: Option<Duration>) -> Result<()> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it
    // fully before use, and pthread_sigmask only reads it.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(std::io::Error::from_raw_os_error(rc).into());
        }
        set
    };
    std::thread::Builder::new()
        .name("signal-guard".into())
        .spawn(move || {
            let mut sig: libc::c_int = 0;
            // SAFETY: `set` is an initialised sigset_t owned by this closure
            // and `sig` is a valid out-pointer.
            let rc = unsafe { libc::sigwait(&set, &mut sig) };
            if rc == 0 {
                eprintln!("peer: signal {sig}, cleaning up");
                cleanup_registered();
                std::process::exit(130);
            }
        })?;
    if let Some(timeout) = timeout {
        std::thread::Builder::new()
            .name("watchdog".into())
            .spawn(move || {
                std::thread::sleep(timeout);
                eprintln!("peer: timed out after {timeout:?}, cleaning up");
                cleanup_registered();
                std::process::exit(124);
            })?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Control channel, parent side

/// The parent's handle on its peers (child processes or threads).
pub trait Control {
    /// Tells every peer to handle `n` messages.
    fn start(&mut self, n: u64) -> Result<()>;
    /// Waits until every peer has reported its batch done.
    fn finish(&mut self) -> Result<()>;
    /// Fails if a peer has died.
    fn check_alive(&mut self) -> Result<()>;
}

/// One child process: the current executable re-run with a [`ChildSpec`].
#[derive(Debug)]
pub struct ChildProc {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
    label: String,
}

impl ChildProc {
    /// Starts a child; does not wait for it to be ready.
    pub fn spawn(spec: &ChildSpec) -> Result<Self> {
        let exe = std::env::current_exe()?;
        let mut child = Command::new(exe)
            .env(CHILD_ENV, spec.encode())
            .env(PARENT_PID_ENV, std::process::id().to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(err("child pipes were not created"));
        };
        Ok(ChildProc {
            child,
            stdin: Some(stdin),
            stdout: BufReader::new(stdout),
            label: format!("{} child {}", spec.cfg.system, spec.index),
        })
    }

    /// Reads control lines until `want` (e.g. `@@ready`).
    pub fn expect(&mut self, want: &str) -> Result<()> {
        let mut line = String::new();
        loop {
            line.clear();
            if self.stdout.read_line(&mut line)? == 0 {
                let status = self.child.wait()?;
                return Err(err(format!(
                    "{} exited ({status}) while the parent waited for {want}",
                    self.label
                )));
            }
            let trimmed = line.trim_end();
            if trimmed == want {
                return Ok(());
            }
            if trimmed.starts_with("@@") {
                return Err(err(format!(
                    "{}: expected {want}, got {trimmed:?}",
                    self.label
                )));
            }
            // Not ours: something a library printed on stdout.
            eprintln!("[{}] {trimmed}", self.label);
        }
    }

    fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| err("child stdin already closed"))?;
        stdin.write_all(line.as_bytes())?;
        stdin.write_all(b"\n")?;
        stdin.flush()?;
        Ok(())
    }

    fn check_alive(&mut self) -> Result<()> {
        match self.child.try_wait()? {
            Some(status) => Err(err(format!("{} died ({status})", self.label))),
            None => Ok(()),
        }
    }
}

impl Drop for ChildProc {
    fn drop(&mut self) {
        // EOF on stdin tells a child that is between batches to exit.
        drop(self.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(_) => break,
            }
        }
        // Still running (e.g. stuck in a receive): kill it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A group of child processes, started together.
#[derive(Debug, Default)]
pub struct Children(Vec<ChildProc>);

impl Children {
    /// Starts one child per spec and waits until all are ready.
    pub fn spawn_ready(specs: &[ChildSpec]) -> Result<Self> {
        let mut children = Children(Vec::with_capacity(specs.len()));
        for spec in specs {
            children.0.push(ChildProc::spawn(spec)?);
        }
        for child in &mut children.0 {
            child.expect("@@ready")?;
        }
        Ok(children)
    }
}

impl Control for Children {
    fn start(&mut self, n: u64) -> Result<()> {
        let line = format!("@@run {n}");
        self.0.iter_mut().try_for_each(|c| c.send_line(&line))
    }

    fn finish(&mut self) -> Result<()> {
        self.0.iter_mut().try_for_each(|c| c.expect("@@done"))
    }

    fn check_alive(&mut self) -> Result<()> {
        self.0.iter_mut().try_for_each(ChildProc::check_alive)
    }
}

/// Peers that are threads of this process (the ArrayQueue bound).
#[derive(Debug, Default)]
pub struct Threads {
    peers: Vec<ThreadPeer>,
}

#[derive(Debug)]
struct ThreadPeer {
    cmd: Option<mpsc::Sender<u64>>,
    done: mpsc::Receiver<()>,
    handle: Option<JoinHandle<Result<()>>>,
}

impl Threads {
    /// Starts a thread running `body` with its end of the control channel,
    /// and waits until it reports ready.
    pub fn spawn<F>(&mut self, name: &str, body: F) -> Result<()>
    where
        F: FnOnce(&mut ThreadChildControl) -> Result<()> + Send + 'static,
    {
        let (cmd_tx, cmd_rx) = mpsc::channel();
        let (done_tx, done_rx) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name(name.to_owned())
            // Room for 64 KiB messages moved by value.
            .stack_size(16 << 20)
            .spawn(move || {
                let mut ctrl = ThreadChildControl {
                    cmd: cmd_rx,
                    done: done_tx,
                };
                body(&mut ctrl)
            })?;
        let mut peer = ThreadPeer {
            cmd: Some(cmd_tx),
            done: done_rx,
            handle: Some(handle),
        };
        peer.wait_signal()?; // ready
        self.peers.push(peer);
        Ok(())
    }
}

impl ThreadPeer {
    fn wait_signal(&mut self) -> Result<()> {
        if self.done.recv().is_ok() {
            return Ok(());
        }
        // The thread ended: report its error.
        match self.handle.take().map(JoinHandle::join) {
            Some(Ok(Err(e))) => Err(e),
            Some(Err(_)) => Err(err("peer thread panicked")),
            _ => Err(err("peer thread ended")),
        }
    }
}

impl Control for Threads {
    fn start(&mut self, n: u64) -> Result<()> {
        for p in &self.peers {
            p.cmd
                .as_ref()
                .and_then(|c| c.send(n).ok())
                .ok_or_else(|| err("peer thread ended"))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.peers.iter_mut().try_for_each(ThreadPeer::wait_signal)
    }

    fn check_alive(&mut self) -> Result<()> {
        if self
            .peers
            .iter()
            .any(|p| p.handle.as_ref().is_none_or(|h| h.is_finished()))
        {
            return Err(err("peer thread ended"));
        }
        Ok(())
    }
}

impl Drop for ThreadPeer {
    fn drop(&mut self) {
        drop(self.cmd.take());
        // A thread blocked mid-batch cannot be stopped from outside; it is
        // detached then (and ends with the process).
        if let Some(h) = self.handle.take() {
            if h.is_finished() {
                let _ = h.join();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Control channel, child side

/// The child's end of the control channel.
pub trait ChildControl {
    /// Reports that the endpoints are open.
    fn ready(&mut self) -> Result<()>;
    /// The next batch size, or `None` when the parent is done.
    fn next_batch(&mut self) -> Result<Option<u64>>;
    /// Reports a batch done.
    fn done(&mut self) -> Result<()>;
}

/// Control over stdin/stdout (child processes).
#[derive(Debug)]
pub struct StdioControl {
    line: String,
}

impl StdioControl {
    /// Uses this process's stdin and stdout.
    pub fn new() -> Self {
        StdioControl {
            line: String::new(),
        }
    }

    fn say(&self, what: &str) -> Result<()> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{what}")?;
        out.flush()?;
        Ok(())
    }
}

impl Default for StdioControl {
    fn default() -> Self {
        Self::new()
    }
}

impl ChildControl for StdioControl {
    fn ready(&mut self) -> Result<()> {
        self.say("@@ready")
    }

    fn next_batch(&mut self) -> Result<Option<u64>> {
        self.line.clear();
        if std::io::stdin().lock().read_line(&mut self.line)? == 0 {
            return Ok(None);
        }
        let line = self.line.trim();
        let n = line
            .strip_prefix("@@run ")
            .ok_or_else(|| err(format!("unexpected control line {line:?}")))?;
        Ok(Some(n.parse()?))
    }

    fn done(&mut self) -> Result<()> {
        self.say("@@done")
    }
}

/// Control over channels (peer threads).
#[derive(Debug)]
pub struct ThreadChildControl {
    cmd: mpsc::Receiver<u64>,
    done: mpsc::Sender<()>,
}

impl ChildControl for ThreadChildControl {
    fn ready(&mut self) -> Result<()> {
        self.done.send(()).map_err(|_| err("parent gone"))
    }

    fn next_batch(&mut self) -> Result<Option<u64>> {
        Ok(self.cmd.recv().ok())
    }

    fn done(&mut self) -> Result<()> {
        self.done.send(()).map_err(|_| err("parent gone"))
    }
}

// ---------------------------------------------------------------------------
// Timing, sizing, statistics, output

/// Busy-waits (no sleep, no yield) for `d`.
pub fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

/// Runs `batch(n)` (which returns its measured time and the count it did)
/// either once with `cfg.iters`, or, without it, in batches of about
/// [`Config::BATCH_TIME`] (first sized from `per_iter`, doubled while too
/// short) until [`Config::TARGET_TIME`] of wall time has passed. Returns the
/// summed measured time and count.
pub fn measure(
    cfg: &Config,
    per_iter: Duration,
    mut batch: impl FnMut(u64) -> Result<(Duration, u64)>,
) -> Result<(Duration, u64)> {
    if let Some(n) = cfg.iters {
        return batch(n.max(1));
    }
    let mut size = cfg.batch_for(per_iter);
    let (mut time, mut count) = (Duration::ZERO, 0);
    let wall = Instant::now();
    while wall.elapsed() < Config::TARGET_TIME {
        let (dt, k) = batch(size)?;
        time += dt;
        count += k;
        if dt < Config::BATCH_TIME / 2 {
            size = size.saturating_mul(2);
        }
    }
    Ok((time, count))
}

/// Queue depth in messages for the queue-based peers: 1024 slots, fewer for
/// big messages (at most ~16 MiB of slots), at least 16.
pub fn queue_depth(size: usize) -> usize {
    ((16 << 20) / size.max(1)).clamp(16, 1024)
}

/// A byte buffer that starts `offset` bytes past a page boundary (so
/// `offset == 0` gives page, hence cache-line, alignment). Message buffers
/// use it so that every peer copies between equally aligned buffers: on
/// this machine glibc's `rep movsb` copy is ~15x slower for a destination
/// 16 (mod 64) bytes off, which plain `Vec`s from malloc are.
#[derive(Debug, Clone)]
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    const PAGE: usize = 4096;

    /// `len` bytes of `fill`, `offset % 4096` bytes past a page boundary.
    pub fn new(len: usize, offset: usize, fill: u8) -> Self {
        let storage = vec![fill; len + 2 * Self::PAGE];
        let start = storage.as_ptr().align_offset(Self::PAGE) + offset % Self::PAGE;
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    /// The bytes, writable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// Writes the sequence number into the first 8 bytes of a message.
#[inline]
pub fn put_seq(msg: &mut [u8], seq: u64) {
    msg[..8].copy_from_slice(&seq.to_le_bytes());
}

/// Reads the sequence number from the first 8 bytes of a message.
#[inline]
pub fn get_seq(msg: &[u8]) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&msg[..8]);
    u64::from_le_bytes(b)
}

/// Order statistics of a sample of nanosecond timings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Number of samples.
    pub n: usize,
    /// Smallest sample.
    pub min: u64,
    /// 10th percentile.
    pub p10: u64,
    /// Median.
    pub median: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// Arithmetic mean.
    pub mean: f64,
}

impl Summary {
    /// Summarises `samples` (sorted in place). `None` if empty.
    pub fn of(samples: &mut [u64]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let n = samples.len();
        let at = |q: f64| samples[((n - 1) as f64 * q).round() as usize];
        Some(Summary {
            n,
            min: samples[0],
            p10: at(0.10),
            median: median_sorted(samples),
            p90: at(0.90),
            p99: at(0.99),
            mean: samples.iter().map(|&s| s as f64).sum::<f64>() / n as f64,
        })
    }
}

/// Median of a sorted, non-empty slice (mean of the two middle values when
/// the length is even).
pub fn median_sorted(sorted: &[u64]) -> u64 {
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        sorted[n / 2 - 1].midpoint(sorted[n / 2])
    }
}

/// Prints the machine-read result line. It must be the last line on stdout.
pub fn print_result(key: &str, value: f64) {
    if value >= 1e6 {
        println!("{key}={value:.0}");
    } else {
        println!("{key}={value:.1}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_orders() {
        let mut v = vec![5, 1, 4, 2, 3];
        let s = Summary::of(&mut v).unwrap();
        assert_eq!((s.min, s.median, s.n), (1, 3, 5));
        assert_eq!(median_sorted(&[1, 2, 3, 10]), 2);
        assert!(Summary::of(&mut []).is_none());
    }

    #[test]
    fn aligned_buf_is_aligned() {
        let mut b = AlignedBuf::new(100, 0, 7);
        assert_eq!(b.as_slice().as_ptr() as usize % 4096, 0);
        assert_eq!(b.as_mut_slice().len(), 100);
        let b = AlignedBuf::new(10, 16, 0);
        assert_eq!(b.as_slice().as_ptr() as usize % 4096, 16);
    }

    #[test]
    fn seq_round_trips() {
        let mut m = [0u8; 16];
        put_seq(&mut m, 0xdead_beef_1234);
        assert_eq!(get_seq(&m), 0xdead_beef_1234);
    }

    #[test]
    fn path_guard_unlinks() {
        let p = std::env::temp_dir().join(unique_name("guard-test"));
        let mut g = PathGuard::new(&p);
        std::fs::write(&p, b"x").unwrap();
        g.remove();
        assert!(!p.exists());
        assert!(registry().iter().all(|q| q != &p));
        let d = std::env::temp_dir().join(unique_name("guard-dir-test"));
        let g = PathGuard::new(&d);
        std::fs::create_dir_all(d.join("a/b")).unwrap();
        std::fs::write(d.join("a/b/f"), b"x").unwrap();
        drop(g);
        assert!(!d.exists());
    }
}
