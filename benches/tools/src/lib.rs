//! The harness that mulproc's measuring programs share: `pingpong`,
//! `stream`, `idle_recv`, `chaos` and `pool_by_hand` (the binaries of this
//! crate, see `benches/README.md`).
//!
//! One way of doing each thing, so that the programs differ only in what
//! they measure:
//!
//! * **Flags**: each program declares its own with clap's derive;
//!   [`count`] parses the numbers (`2_000_000` and `2,000,000` too). A
//!   child re-reads its parent's flags: [`spawn`] passes this process's
//!   arguments on.
//! * **Children**: [`spawn`] starts a new process of the current
//!   executable in a role with [`mulproc::process::Child`] (never `fork`),
//!   with its channels by name, standard input closed, and
//!   [`die_with_parent`](mulproc::process::Child::die_with_parent) set, so
//!   that no child outlives a parent that is killed. [`Children`] watches
//!   them from the parent (and kills and reaps them when dropped),
//!   [`ParentWatch`] watches the parent from a child.
//! * **Waiting**: [`send`] and [`recv`] are the send and receive of every
//!   program, generic over [`mulproc::Channel`] (queue or pipe), spinning
//!   on the `try_` forms or blocking as a [`Mode`] says and checking the
//!   other side now and then, so that nobody waits forever for a process
//!   that is gone.
//! * **Figures**: [`main`] runs a program's parent or child role and
//!   prints the parent's figure as the last line of output, `key=value`,
//!   which `benches/compare.py`, `benches/compare_pymulproc.sh` and
//!   `.ci/run` read; [`fmt_ns`], [`median`], [`percentile`] and the CPU
//!   clocks ([`cpu_time`], [`proc_cpu_ns`]) for the lines before it.

use std::error::Error;
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use mulproc::process::{self, Child, ChildProcess};
use mulproc::{Channel, Header, Message, Received, RecvTimeoutError, Request, TryRecvError};

pub mod chaos;

/// The error of a measuring program: anything, with a message.
pub type Result<T, E = Box<dyn Error>> = std::result::Result<T, E>;

/// Child → parent, before anything else: the channels are open.
pub const READY: Request = Request::new(Request::FIRST_USER_CODE);
/// Parent → children, once all are ready: start.
pub const GO: Request = Request::new(Request::FIRST_USER_CODE + 1);

/// How long a blocking call waits before it checks that the other side is
/// still alive.
pub const LIVENESS_TIMEOUT: Duration = Duration::from_millis(100);
/// How long children may take to start and open their channels.
pub const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Empty polls between liveness checks in a spin loop.
const SPINS_PER_CHECK: u32 = 1 << 16;

// ------------------------------------------------------------------ flags ---

/// Parses a count for clap: digits, optionally grouped with `_` or `,`
/// (`2_000_000`, `2,000,000`).
///
/// ```
/// assert_eq!(mulproc_bench_tools::count("2,000_000"), Ok(2_000_000));
/// assert!(mulproc_bench_tools::count("two").is_err());
/// ```
pub fn count(s: &str) -> std::result::Result<u64, String> {
    s.replace(['_', ','], "")
        .parse()
        .map_err(|e| format!("{s:?}: {e}"))
}

// --------------------------------------------------------------- children ---

/// Starts a child of this executable playing `role`: with this process's
/// own arguments (so it re-reads the parent's flags), the channels
/// `(key, segment name)`, the extra environment `envs`, standard input
/// closed, and [`die_with_parent`](Child::die_with_parent) set.
pub fn spawn(
    role: &str,
    channels: &[(&str, &str)],
    envs: &[(&str, String)],
) -> Result<ChildProcess> {
    let mut child = Child::role(role).die_with_parent(true).stdin(Stdio::null());
    for (key, name) in channels {
        child = child.channel(*key, *name);
    }
    for (key, value) in envs {
        child = child.env(key, value);
    }
    Ok(child.spawn()?)
}

/// The other side of a wait, checked when a wait finds nothing so that it
/// does not go on forever for a process that is gone.
pub trait Watch {
    /// Fails if waiting on can no longer succeed.
    fn check(&mut self) -> Result<()>;
}

/// The parent's view of its children: killed and reaped when dropped
/// (each [`ChildProcess`] is), so an error in the parent leaves none
/// behind.
#[derive(Debug, Default)]
pub struct Children {
    procs: Vec<ChildProcess>,
    /// The last check found every child exited.
    all_gone: bool,
}

impl Children {
    /// No children yet.
    pub fn new() -> Children {
        Children::default()
    }

    /// Adds a child started with [`spawn`].
    pub fn push(&mut self, child: ChildProcess) {
        self.procs.push(child);
    }

    /// The children's pids, in the order they were added.
    pub fn pids(&self) -> Vec<u32> {
        self.procs.iter().map(ChildProcess::pid).collect()
    }

    /// The children themselves.
    pub fn procs_mut(&mut self) -> &mut [ChildProcess] {
        &mut self.procs
    }

    /// Waits up to `timeout` in all for every child to exit successfully.
    pub fn wait_all(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        for (i, c) in self.procs.iter_mut().enumerate() {
            let left = deadline.saturating_duration_since(Instant::now());
            match c.wait_timeout(left)? {
                Some(s) if s.success() => {}
                Some(s) => {
                    return Err(format!("{} {i} (pid {}) failed ({s})", c.role(), c.pid()).into())
                }
                None => {
                    return Err(format!("{} {i} (pid {}) did not exit", c.role(), c.pid()).into())
                }
            }
        }
        Ok(())
    }
}

impl Watch for Children {
    /// Fails if a child failed, or if every child had already exited at
    /// the previous check: children exit successfully only once they have
    /// sent everything, so a wait that still finds nothing after that
    /// will never end.
    fn check(&mut self) -> Result<()> {
        let mut running = 0;
        for (i, c) in self.procs.iter_mut().enumerate() {
            match c.try_wait()? {
                None => running += 1,
                Some(s) if s.success() => {}
                Some(s) => {
                    return Err(format!("{} {i} (pid {}) failed ({s})", c.role(), c.pid()).into())
                }
            }
        }
        if running > 0 {
            self.all_gone = false;
        } else if self.all_gone {
            return Err("every child has exited, and what we wait for has not come".into());
        } else {
            self.all_gone = true;
        }
        Ok(())
    }
}

/// A child's view of the parent that started it.
#[derive(Debug)]
pub struct ParentWatch(u32);

impl ParentWatch {
    /// Watches the parent named in the environment by
    /// [`Child::spawn`]; fails if there is none, or it is gone already.
    pub fn new() -> Result<ParentWatch> {
        let pid = process::parent_pid().ok_or("not started by a parent of this harness")?;
        let mut w = ParentWatch(pid);
        w.check()?;
        Ok(w)
    }
}

impl Watch for ParentWatch {
    fn check(&mut self) -> Result<()> {
        // Once the parent dies we are re-parented, so the id changes
        // (and `die_with_parent` kills us anyway).
        if std::os::unix::process::parent_id() == self.0 {
            Ok(())
        } else {
            Err("the parent process is gone".into())
        }
    }
}

// ---------------------------------------------------------------- waiting ---

/// How a program waits for its channel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// `try_send` / `try_recv*` in a spin loop.
    Spin,
    /// `send` / `recv*_timeout`: spin briefly, yield, sleep in the kernel.
    Block,
}

impl Mode {
    /// `Block` if `blocking`, else `Spin`.
    pub fn blocking(blocking: bool) -> Mode {
        if blocking {
            Mode::Block
        } else {
            Mode::Spin
        }
    }
}

/// How [`recv`] takes a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// A [`Message`] of its own (`try_recv` / `recv_timeout`: one
    /// allocation per message).
    Owned,
    /// Copied into the caller's buffer (`try_recv_into` /
    /// `recv_into_timeout`: no allocation).
    Into,
    /// In place (`try_recv_ref` / `recv_ref_timeout`), the slot freed
    /// after the caller's function returns.
    InPlace,
}

/// One empty poll of a spin loop: a CPU relax hint, and every so often a
/// check of the other side.
#[inline]
pub fn poll_pause(spins: &mut u32, watch: &mut impl Watch) -> Result<()> {
    *spins = spins.wrapping_add(1);
    if *spins % SPINS_PER_CHECK == 0 {
        watch.check()?;
    }
    std::hint::spin_loop();
    Ok(())
}

/// Sends `data` with `request`: spinning on `try_send`, or with `send`
/// (asleep while the channel is full), checking `watch` while it is full.
pub fn send<C: Channel>(
    ch: &C,
    mode: Mode,
    watch: &mut impl Watch,
    request: Request,
    data: &[u8],
) -> Result<()> {
    let mut spins = 0u32;
    let mut msg = Message::new(request, data);
    loop {
        let r = match mode {
            Mode::Spin => ch.try_send(msg),
            Mode::Block => ch.send(msg),
        };
        match r {
            Ok(()) => return Ok(()),
            Err(e) if e.is_full() => {
                msg = e.into_inner();
                match mode {
                    Mode::Spin => poll_pause(&mut spins, watch)?,
                    Mode::Block => watch.check()?,
                }
            }
            Err(e) => return Err(e.to_string().into()),
        }
    }
}

/// Receives one message as `mode` and `take` say and hands its header and
/// payload to `f`; checks `watch` whenever a wait finds nothing. `buf` is
/// the buffer of [`Take::Into`] (unused otherwise).
#[inline]
pub fn recv<C: Channel, R>(
    ch: &C,
    mode: Mode,
    take: Take,
    watch: &mut impl Watch,
    buf: &mut Vec<u8>,
    f: impl FnOnce(&Header, &[u8]) -> R,
) -> Result<R> {
    let mut spins = 0u32;
    loop {
        match take {
            Take::InPlace => {
                let got = match mode {
                    Mode::Block => timed(ch.recv_ref_timeout(LIVENESS_TIMEOUT))?,
                    Mode::Spin => polled(ch.try_recv_ref())?,
                };
                if let Some(g) = got {
                    let r = f(g.header(), g.data());
                    g.finish()?;
                    return Ok(r);
                }
            }
            Take::Into => {
                let got = match mode {
                    Mode::Block => timed(ch.recv_into_timeout(buf, LIVENESS_TIMEOUT))?,
                    Mode::Spin => polled(ch.try_recv_into(buf))?,
                };
                if let Some(h) = got {
                    return Ok(f(&h, buf));
                }
            }
            Take::Owned => {
                let got = match mode {
                    Mode::Block => timed(ch.recv_timeout(LIVENESS_TIMEOUT))?,
                    Mode::Spin => polled(ch.try_recv())?,
                };
                if let Some(m) = got {
                    let h = Header {
                        request: m.request,
                        sender: m.sender.unwrap_or(0),
                        recipient: m.recipient,
                    };
                    return Ok(f(&h, &m.data));
                }
            }
        }
        match mode {
            Mode::Spin => poll_pause(&mut spins, watch)?,
            Mode::Block => watch.check()?,
        }
    }
}

/// Waits at most [`SETUP_TIMEOUT`] for a message (`what`, for the error),
/// checking `watch` meanwhile: the set-up handshakes.
pub fn recv_setup<C: Channel>(ch: &C, watch: &mut impl Watch, what: &str) -> Result<Message> {
    let deadline = Instant::now() + SETUP_TIMEOUT;
    loop {
        match ch.recv_timeout(LIVENESS_TIMEOUT) {
            Ok(m) => return Ok(m),
            Err(RecvTimeoutError::Timeout) => {
                watch.check()?;
                if Instant::now() >= deadline {
                    return Err(format!("no {what} within {SETUP_TIMEOUT:?}").into());
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// A receive that may time out: `None` on the timeout.
fn timed<T>(r: std::result::Result<T, RecvTimeoutError>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(RecvTimeoutError::Timeout) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A receive that may find nothing: `None` when empty.
fn polled<T>(r: std::result::Result<T, TryRecvError>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(TryRecvError::Empty) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Busy-waits `d` on the clock (a pause that keeps the core, so that the
/// other side's receiver goes to sleep meanwhile).
pub fn spin_for(d: Duration) {
    let end = Instant::now() + d;
    while Instant::now() < end {
        std::hint::spin_loop();
    }
}

// ---------------------------------------------------------------- figures ---

/// What a child started in a role runs.
pub type Role = fn() -> Result<()>;

/// Runs a measuring program: `children` gives the function of each child
/// role (run when this process was started in that role by [`spawn`]),
/// and otherwise `parent` runs and its figure, `key=value`, is printed as
/// the last line. Errors go to stderr, prefixed with `name`, and make the
/// exit code 1.
pub fn main(
    name: &str,
    children: &[(&str, Role)],
    parent: impl FnOnce() -> Result<String>,
) -> ExitCode {
    if let Some(role) = process::role() {
        let Some((_, f)) = children.iter().find(|(r, _)| *r == role) else {
            eprintln!("{name}: unknown role {role:?}");
            return ExitCode::FAILURE;
        };
        return match f() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{name} ({role} {}): error: {e}", std::process::id());
                ExitCode::FAILURE
            }
        };
    }
    match parent() {
        Ok(figure) => {
            println!("{figure}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{name}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A duration in ns, µs or ms, whichever reads best.
///
/// ```
/// use mulproc_bench_tools::fmt_ns;
/// assert_eq!(fmt_ns(180.0), "180 ns");
/// assert_eq!(fmt_ns(15_200.0), "15.2 µs");
/// ```
pub fn fmt_ns(ns: f64) -> String {
    if ns < 10_000.0 {
        format!("{ns:.0} ns")
    } else if ns < 10_000_000.0 {
        format!("{:.1} µs", ns / 1e3)
    } else {
        format!("{:.1} ms", ns / 1e6)
    }
}

/// The median of sorted samples (the mean of the middle two for an even
/// count); 0 for none.
///
/// ```
/// assert_eq!(mulproc_bench_tools::median(&[1, 2, 10]), 2.0);
/// assert_eq!(mulproc_bench_tools::median(&[1, 2, 3, 10]), 2.5);
/// ```
pub fn median(sorted: &[u64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        n if n % 2 == 1 => sorted[n / 2] as f64,
        n => (sorted[n / 2 - 1] + sorted[n / 2]) as f64 / 2.0,
    }
}

/// The nearest-rank percentile `p` (0–100) of sorted samples; 0 for none.
///
/// ```
/// let s: Vec<u64> = (1..=100).collect();
/// assert_eq!(mulproc_bench_tools::percentile(&s, 99.0), 99);
/// ```
pub fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Whose CPU time [`cpu_time`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Who {
    /// This process.
    This,
    /// Its children that have been waited for, since this process started
    /// — and, inherited across `exec`, those of whatever ran in this
    /// process before (`cargo run` waits for the compiler, then execs the
    /// program): take a baseline at start and subtract it.
    Children,
}

/// CPU time (user + system) from `getrusage`, to the microsecond.
pub fn cpu_time(who: Who) -> Duration {
    let who = match who {
        Who::This => libc::RUSAGE_SELF,
        Who::Children => libc::RUSAGE_CHILDREN,
    };
    // SAFETY: `rusage` is plain data, for which all zeroes is a valid value.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `ru` is a valid, writable `rusage`; on failure it stays zero.
    unsafe { libc::getrusage(who, &mut ru) };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Nanoseconds process `pid` has spent on a CPU so far, from
/// `/proc/<pid>/schedstat` (or `stat`'s clock ticks where that is
/// missing).
pub fn proc_cpu_ns(pid: u32) -> Result<u64> {
    if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/schedstat")) {
        if let Some(ns) = s.split_whitespace().next().and_then(|f| f.parse().ok()) {
            return Ok(ns);
        }
    }
    // utime and stime: fields 14 and 15, the 12th and 13th after the
    // command name, in clock ticks.
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let ticks: u64 = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|t| t.parse::<u64>().ok())
        .sum();
    // SAFETY: sysconf has no memory-safety preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Ok(ticks * 1_000_000_000 / hz)
}
