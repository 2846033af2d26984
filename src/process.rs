//! Starting child processes that open the parent's channels: pymulproc's
//! `factory.parent()` / `factory.child()`, the Rust way.
//!
//! In pymulproc the parent builds a `QueueCommunication` and hands
//! `factory.child()` to a `multiprocessing.Process`. In mulproc the parent
//! creates its queues by name and starts a new process of the *current
//! executable* with [`Child`]; the child learns its role and the names of
//! its channels from its environment and opens them by name. No `fork()`:
//! forking a multi-threaded process is unsound, and a fresh process opens
//! the segment exactly as any unrelated process would.
//!
//! The hand-over is a handful of environment variables:
//!
//! | variable | value |
//! | --- | --- |
//! | [`ROLE_VAR`] (`MULPROC_ROLE`) | the role given to [`Child::role`] |
//! | [`PARENT_PID_VAR`] (`MULPROC_PARENT_PID`) | the parent's pid |
//! | `MULPROC_CHANNEL_<KEY>` ([`CHANNEL_VAR_PREFIX`]) | the segment name of channel `key`, upper-cased |
//!
//! In the child, [`role`], [`channel_name`], [`open_queue`] and
//! [`parent_pid`] read them back.
//!
//! # Examples
//!
//! One program, two roles: the parent creates a queue and starts a child of
//! itself, which opens the queue and reports back.
//!
//! ```
//! use std::time::Duration;
//! use mulproc::process::{self, Child};
//! use mulproc::{Message, Queue, QueueConfig, Request};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! if process::role().as_deref() == Some("greeter") {
//!     // In the child: open the parent's channel by its key.
//!     let results = process::open_queue("results")?;
//!     results.send(Message::new(Request::FINISHED, b"hello".as_slice()))?;
//!     return Ok(());
//! }
//!
//! // In the parent.
//! # let name = format!("doc-process-{}", std::process::id());
//! let results = Queue::create(&name, QueueConfig::new(8, 64))?;
//! let mut child = Child::role("greeter").queue("results", &results).spawn()?;
//! let m = results.recv_timeout(Duration::from_secs(30))?;
//! assert_eq!(m.data, b"hello");
//! assert_eq!(m.sender, Some(child.pid()));
//! assert!(child.wait()?.success());
//! # Ok(())
//! # }
//! ```

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::{Message, Pipe, Queue, Request, SendError, SetupError};

/// Environment variable carrying a child's role.
pub const ROLE_VAR: &str = "MULPROC_ROLE";
/// Environment variable carrying the parent's pid.
pub const PARENT_PID_VAR: &str = "MULPROC_PARENT_PID";
/// Prefix of the environment variables carrying channel names: channel
/// `tasks` travels as `MULPROC_CHANNEL_TASKS`.
pub const CHANNEL_VAR_PREFIX: &str = "MULPROC_CHANNEL_";

/// The environment variable for channel `key`, if the key is valid: one or
/// more ASCII letters, digits or `_`; letters are upper-cased.
fn channel_var(key: &str) -> Option<String> {
    let valid = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    valid.then(|| format!("{CHANNEL_VAR_PREFIX}{}", key.to_ascii_uppercase()))
}

// ------------------------------------------------------------ child side ---

/// The role this process was started in by [`Child::spawn`], or `None` if
/// it was not started that way (or the role is not valid Unicode).
///
/// ```
/// // A test process started by cargo, not by `Child::spawn`:
/// assert_eq!(mulproc::process::role(), None);
/// ```
pub fn role() -> Option<String> {
    std::env::var(ROLE_VAR).ok()
}

/// The pid of the process that started this one with [`Child::spawn`], as
/// it told us; `None` if this process was not started that way.
///
/// This is the pid at spawn time: if the parent has died since, the pid
/// may name another process by now.
pub fn parent_pid() -> Option<u32> {
    std::env::var(PARENT_PID_VAR).ok()?.parse().ok()
}

/// The segment name of channel `key` that the parent passed with
/// [`Child::channel`] or [`Child::queue`]. Keys are case-insensitive.
///
/// ```
/// use mulproc::process::{self, ChannelError};
/// // Not started by `Child::spawn`, so no channel was given:
/// assert!(matches!(process::channel_name("tasks"), Err(ChannelError::NotGiven { .. })));
/// assert!(matches!(process::channel_name("no-dash"), Err(ChannelError::InvalidKey { .. })));
/// ```
pub fn channel_name(key: &str) -> Result<String, ChannelError> {
    let var = channel_var(key).ok_or_else(|| ChannelError::InvalidKey {
        key: key.to_owned(),
    })?;
    match std::env::var(&var) {
        Ok(name) => Ok(name),
        Err(std::env::VarError::NotPresent) => Err(ChannelError::NotGiven {
            key: key.to_owned(),
            var,
        }),
        Err(std::env::VarError::NotUnicode(_)) => Err(ChannelError::NotUnicode { var }),
    }
}

/// Opens the queue the parent passed as channel `key`
/// ([`channel_name`] then [`Queue::open`]).
pub fn open_queue(key: &str) -> Result<Queue, ChannelError> {
    Ok(Queue::open(&channel_name(key)?)?)
}

/// Opens the child end of the pipe the parent passed as channel `key`
/// ([`channel_name`] then [`Pipe::open`]).
pub fn open_pipe(key: &str) -> Result<Pipe, ChannelError> {
    Ok(Pipe::open(&channel_name(key)?)?)
}

/// A channel could not be found in this process's environment or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ChannelError {
    /// The key is empty or has a byte outside `[A-Za-z0-9_]`.
    #[error("invalid channel key {key:?}: use ASCII letters, digits and '_'")]
    InvalidKey {
        /// The key given.
        key: String,
    },
    /// The parent passed no channel of that key (or this process was not
    /// started by [`Child::spawn`]).
    #[error(
        "no channel {key:?} was given to this process (environment variable {var} is not set)"
    )]
    NotGiven {
        /// The key given.
        key: String,
        /// The environment variable looked at.
        var: String,
    },
    /// The environment variable is not valid Unicode.
    #[error("environment variable {var} is not valid Unicode")]
    NotUnicode {
        /// The environment variable looked at.
        var: String,
    },
    /// Opening the named queue failed.
    #[error(transparent)]
    Open(#[from] SetupError),
}

// ----------------------------------------------------------- parent side ---

/// A builder for a child process of the current executable, playing a role
/// and given the names of channels to open.
///
/// By default the child runs [`std::env::current_exe`] with this process's
/// own arguments, in the same directory, with the same environment plus
/// [`ROLE_VAR`], [`PARENT_PID_VAR`] and one `MULPROC_CHANNEL_<KEY>`
/// variable per channel. Channel variables this process inherited from its
/// own parent are not passed on: a child sees exactly the channels given
/// here. Standard input, output and error are inherited unless set.
///
/// See the [module documentation](self) for a complete parent/child
/// program.
///
/// ```
/// use mulproc::process::Child;
/// let child = Child::role("worker")
///     .channel("tasks", "my-app-tasks")
///     .channel("results", "my-app-results")
///     .inherit_args(false)
///     .arg("--worker");
/// assert_eq!(child.get_role(), "worker");
/// ```
#[derive(Debug)]
pub struct Child {
    role: String,
    program: Option<PathBuf>,
    inherit_args: bool,
    args: Vec<OsString>,
    envs: Vec<(OsString, OsString)>,
    /// `(key as given, segment name)`; the last of equal keys wins.
    channels: Vec<(String, String)>,
    stdin: Option<Stdio>,
    stdout: Option<Stdio>,
    stderr: Option<Stdio>,
    die_with_parent: bool,
}

impl Child {
    /// A child that will play `role` (read back there with [`role`]).
    pub fn role(role: impl Into<String>) -> Child {
        Child {
            role: role.into(),
            program: None,
            inherit_args: true,
            args: Vec::new(),
            envs: Vec::new(),
            channels: Vec::new(),
            stdin: None,
            die_with_parent: false,
            stdout: None,
            stderr: None,
        }
    }

    /// The role the child will play.
    pub fn get_role(&self) -> &str {
        &self.role
    }

    /// Passes channel `key` as the segment name `name` (opened in the child
    /// with [`open_queue`] or [`channel_name`]). Keys are ASCII letters,
    /// digits and `_`, case-insensitive; an invalid key makes
    /// [`spawn`](Child::spawn) fail with [`SpawnError::InvalidChannelKey`].
    /// Giving a key twice keeps the last name.
    pub fn channel(mut self, key: impl Into<String>, name: impl Into<String>) -> Child {
        self.channels.push((key.into(), name.into()));
        self
    }

    /// Passes `queue` as channel `key` (its [`name`](Queue::name)).
    pub fn queue(self, key: impl Into<String>, queue: &Queue) -> Child {
        self.channel(key, queue.name())
    }

    /// Passes `pipe` as channel `key` (its [`name`](Pipe::name)); the child
    /// takes the child end with [`open_pipe`].
    pub fn pipe(self, key: impl Into<String>, pipe: &Pipe) -> Child {
        self.channel(key, pipe.name())
    }

    /// Whether the child gets this process's arguments (default `true`)
    /// before those added with [`arg`](Child::arg).
    pub fn inherit_args(mut self, inherit: bool) -> Child {
        self.inherit_args = inherit;
        self
    }

    /// Adds an argument (after the inherited ones, if any).
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Child {
        self.args.push(arg.as_ref().to_owned());
        self
    }

    /// Adds arguments (after the inherited ones, if any).
    pub fn args<I, S>(mut self, args: I) -> Child
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Sets an environment variable in the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Child {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Runs `program` instead of the current executable.
    pub fn program(mut self, program: impl Into<PathBuf>) -> Child {
        self.program = Some(program.into());
        self
    }

    /// The child's standard input (default: inherited).
    pub fn stdin(mut self, cfg: impl Into<Stdio>) -> Child {
        self.stdin = Some(cfg.into());
        self
    }

    /// The child's standard output (default: inherited).
    pub fn stdout(mut self, cfg: impl Into<Stdio>) -> Child {
        self.stdout = Some(cfg.into());
        self
    }

    /// The child's standard error (default: inherited).
    pub fn stderr(mut self, cfg: impl Into<Stdio>) -> Child {
        self.stderr = Some(cfg.into());
        self
    }

    /// Makes the child die (SIGKILL) when the parent does, even by
    /// SIGKILL: the kernel's parent-death signal (`PR_SET_PDEATHSIG`),
    /// set between fork and exec, and a check that the parent did not die
    /// before it was set. The kernel sends it when the *thread* that
    /// spawned the child exits: spawn from a thread that lives as long as
    /// the children should (the main thread, or a pool's own).
    pub fn die_with_parent(mut self, die: bool) -> Child {
        self.die_with_parent = die;
        self
    }

    /// Starts the child. Never forks the calling process: it is a new
    /// process of the executable (`posix_spawn`/`exec`, as
    /// [`std::process::Command`] does).
    ///
    /// [`SpawnError`] converts into [`io::Error`], so `?` works in a
    /// function returning `io::Result`.
    pub fn spawn(self) -> Result<ChildProcess, SpawnError> {
        let mut channel_vars = Vec::with_capacity(self.channels.len());
        for (key, name) in &self.channels {
            let var = channel_var(key)
                .ok_or_else(|| SpawnError::InvalidChannelKey { key: key.clone() })?;
            channel_vars.push((var, name));
        }
        let program = match self.program {
            Some(p) => p,
            None => std::env::current_exe().map_err(SpawnError::CurrentExe)?,
        };
        let mut cmd = Command::new(program);
        if self.inherit_args {
            cmd.args(std::env::args_os().skip(1));
        }
        cmd.args(&self.args);
        for (var, _) in std::env::vars_os() {
            if var
                .to_str()
                .is_some_and(|v| v.starts_with(CHANNEL_VAR_PREFIX))
            {
                cmd.env_remove(var);
            }
        }
        cmd.envs(self.envs.iter().map(|(k, v)| (k, v)));
        cmd.env(ROLE_VAR, &self.role)
            .env(PARENT_PID_VAR, std::process::id().to_string());
        for (var, name) in channel_vars {
            cmd.env(var, name);
        }
        if let Some(s) = self.stdin {
            cmd.stdin(s);
        }
        if let Some(s) = self.stdout {
            cmd.stdout(s);
        }
        if let Some(s) = self.stderr {
            cmd.stderr(s);
        }
        if self.die_with_parent {
            crate::sys::die_with_parent(&mut cmd);
        }
        let child = cmd.spawn().map_err(SpawnError::Spawn)?;
        Ok(ChildProcess {
            child: Some(child),
            role: self.role,
        })
    }
}

/// [`Child::spawn`] failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// A channel key is empty or has a byte outside `[A-Za-z0-9_]`.
    #[error("invalid channel key {key:?}: use ASCII letters, digits and '_'")]
    InvalidChannelKey {
        /// The key given.
        key: String,
    },
    /// The current executable could not be found.
    #[error("cannot find the current executable: {0}")]
    CurrentExe(#[source] io::Error),
    /// The OS refused to start the process.
    #[error("cannot start the child process: {0}")]
    Spawn(#[source] io::Error),
}

impl From<SpawnError> for io::Error {
    fn from(e: SpawnError) -> io::Error {
        match e {
            SpawnError::CurrentExe(e) | SpawnError::Spawn(e) => e,
            e @ SpawnError::InvalidChannelKey { .. } => {
                io::Error::new(io::ErrorKind::InvalidInput, e)
            }
        }
    }
}

/// A running child started by [`Child::spawn`].
///
/// **Dropping it kills the child** (SIGKILL) and reaps it, unless it has
/// already been waited for: unlike [`std::process::Child`], a forgotten or
/// panicking parent leaves neither stray processes nor zombies behind. Wait
/// for the child ([`wait`](ChildProcess::wait),
/// [`wait_timeout`](ChildProcess::wait_timeout)) to let it finish, or
/// [`detach`](ChildProcess::detach) it to let it run on.
pub struct ChildProcess {
    /// `Some` until [`detach`](ChildProcess::detach) consumes the handle.
    child: Option<std::process::Child>,
    role: String,
}

impl fmt::Debug for ChildProcess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChildProcess")
            .field("pid", &self.pid())
            .field("role", &self.role)
            .finish()
    }
}

impl ChildProcess {
    fn inner(&mut self) -> &mut std::process::Child {
        self.child
            .as_mut()
            .expect("the child is present until detach consumes the handle")
    }

    /// The child's pid: the sender of its messages.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, std::process::Child::id)
    }

    /// The role the child plays.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The standard library handle, e.g. to take a piped stdout.
    pub fn as_std_mut(&mut self) -> &mut std::process::Child {
        self.inner()
    }

    /// Waits for the child to exit, as long as it takes.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        self.inner().wait()
    }

    /// The child's exit status if it has exited, without waiting.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.inner().try_wait()
    }

    /// Waits at most `timeout` for the child to exit; `Ok(None)` if it is
    /// still running. Polls, sleeping between checks (50 µs at first,
    /// growing to 5 ms), so a child that exits is noticed promptly.
    ///
    /// ```
    /// use std::time::Duration;
    /// use mulproc::process::Child;
    /// let mut sleeper = Child::role("sleeper").program("sleep").inherit_args(false).arg("30").spawn()?;
    /// assert!(sleeper.wait_timeout(Duration::from_millis(20))?.is_none());
    /// sleeper.kill()?;
    /// assert!(!sleeper.wait()?.success());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn wait_timeout(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut nap = Duration::from_micros(50);
        loop {
            if let Some(status) = self.try_wait()? {
                return Ok(Some(status));
            }
            let now = Instant::now();
            let left = match deadline {
                Some(d) if now >= d => return Ok(None),
                Some(d) => d - now,
                None => nap,
            };
            std::thread::sleep(nap.min(left));
            nap = (nap * 2).min(Duration::from_millis(5));
        }
    }

    /// Sends SIGKILL to the child (nothing if it has already been waited
    /// for). It still has to be reaped: [`wait`](ChildProcess::wait), or
    /// drop the handle.
    pub fn kill(&mut self) -> io::Result<()> {
        self.inner().kill()
    }

    /// Gives up the kill-on-drop guarantee: returns the standard library
    /// handle, which lets the child run on when dropped (and leaves a
    /// zombie once it exits unless someone waits for it).
    pub fn detach(mut self) -> std::process::Child {
        self.child
            .take()
            .expect("the child is present until detach consumes the handle")
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            // Already reaped (or waitable right now): nothing to kill.
            if let Ok(Some(_)) = child.try_wait() {
                return;
            }
            // Errors here mean the child is gone already (or was reaped by
            // someone else); a drop has nowhere to report them.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// ------------------------------------------------------------ poison pill ---

/// Sends one [`Request::DIE`] (the poison pill) to each worker in `pids`,
/// addressed to it, with [`Queue::send`] (retrying as the queue's
/// [`SendRetry`](crate::SendRetry) says).
///
/// Pills queue up behind the tasks already sent, so every worker finishes
/// the work ahead of its pill. Addressed pills suit workers that receive
/// with [`Queue::recv_for_me`]: each gets its own pill and no other. The
/// worker side:
///
/// ```no_run
/// # fn worker(tasks: &mulproc::Queue) -> Result<(), mulproc::RecvTimeoutError> {
/// use mulproc::Request;
/// loop {
///     let m = tasks.recv_for_me()?;
///     if m.request == Request::DIE {
///         break;
///     }
///     // ... work on m.data ...
/// }
/// # Ok(()) }
/// ```
///
/// On failure, the error tells how many pills went out before it.
///
/// ```
/// use mulproc::{process, Queue, QueueConfig, Request};
/// # let name = format!("doc-stop-{}", std::process::id());
/// let tasks = Queue::create(&name, QueueConfig::new(8, 64))?;
/// process::stop_workers(&tasks, [101, 102])?;
/// let pill = tasks.try_recv()?;
/// assert_eq!((pill.request, pill.recipient), (Request::DIE, Some(101)));
/// assert_eq!(tasks.try_recv()?.recipient, Some(102));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn stop_workers(
    queue: &Queue,
    pids: impl IntoIterator<Item = u32>,
) -> Result<(), StopWorkersError> {
    for (sent, pid) in pids.into_iter().enumerate() {
        queue
            .send(Message::signal(Request::DIE).to(pid))
            .map_err(|error| StopWorkersError { sent, error })?;
    }
    Ok(())
}

/// Sends `count` [`Request::DIE`] messages addressed to anyone, with
/// [`Queue::send`]: one per worker, for workers that each stop at the
/// first pill they receive with plain [`Queue::recv`]:
///
/// ```no_run
/// # fn worker(tasks: &mulproc::Queue) -> Result<(), mulproc::RecvError> {
/// use mulproc::Request;
/// loop {
///     let m = tasks.recv()?;
///     if m.request == Request::DIE {
///         break; // take one pill and stop, so each worker gets one
///     }
///     // ... work on m.data ...
/// }
/// # Ok(()) }
/// ```
///
/// ```
/// use mulproc::{process, Queue, QueueConfig, Request};
/// # let name = format!("doc-stop-any-{}", std::process::id());
/// let tasks = Queue::create(&name, QueueConfig::new(8, 64))?;
/// process::stop_any_workers(&tasks, 3)?;
/// assert_eq!(tasks.len(), 3);
/// assert_eq!(tasks.try_recv()?.request, Request::DIE);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn stop_any_workers(queue: &Queue, count: usize) -> Result<(), StopWorkersError> {
    for sent in 0..count {
        queue
            .send(Message::signal(Request::DIE))
            .map_err(|error| StopWorkersError { sent, error })?;
    }
    Ok(())
}

/// [`stop_workers`] or [`stop_any_workers`] could not send every pill.
#[derive(Debug, thiserror::Error)]
#[error("sent {sent} poison pills, then: {error}")]
pub struct StopWorkersError {
    /// Pills sent before the failure.
    pub sent: usize,
    /// The failure, with the pill that was not sent.
    #[source]
    pub error: SendError<Message<&'static [u8]>>,
}
