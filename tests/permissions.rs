//! Permissions: segments of another user, names another user took first,
//! the mode `create` gives a segment whatever the umask, `open`'s refusal of
//! segments open to other users, and the name checks `bad_input.rs` does not
//! cover (pipes, NUL bytes inside a name).
//!
//! "Another user" is real: a child process of this test binary (see
//! `common`) run as `nobody` under `setpriv --reuid --regid --clear-groups`.
//! That needs root (CI runs as root); as any other user the tests that need
//! a second user print a note and pass, the rest still run. Run as root, a
//! missing `setpriv` or `nobody` fails the test instead of skipping it.
//!
//! `nobody` must be able to execute the test binary. It is run from where
//! cargo built it when every directory above it is searchable by others and
//! the file is readable and executable by them (the usual case: `target/`
//! is 0755). Otherwise it is copied, for each child, into a fresh 0755
//! directory under the temp dir (mode 0755), removed again when the child
//! has exited. All children are started one at a time under one lock, so a
//! copy is never open for writing while another child is forked
//! (`ETXTBSY`).
//!
//! Clean-up: every segment name is held by a `ShmGuard` declared before it
//! is created; root can unlink `nobody`'s segments, so the guards remove
//! them even when a test fails. Children exit on their own; one that does
//! not within the timeout is killed and reaped.

mod common;

use std::collections::HashMap;
use std::fs::{self, Permissions};
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::*;
use mulproc::{
    Message, NameProblem, PermissionProblem, Pipe, PipeConfig, Queue, QueueConfig, Request,
    SetupError, MAX_NAME_LEN,
};

/// Generous: the machine is shared and noisy.
const CHILD_TIMEOUT: Duration = Duration::from_secs(60);

// ------------------------------------------------------------ identity ---

/// A field of `/proc/self/status` (e.g. `Uid`, `Umask`).
fn proc_status(field: &str) -> String {
    let status = fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/self/status"))
        .trim()
        .to_owned()
}

/// This process's effective uid (second field of `Uid:`).
fn euid() -> u32 {
    proc_status("Uid")
        .split_whitespace()
        .nth(1)
        .expect("effective uid")
        .parse()
        .expect("numeric uid")
}

/// The other user the tests play against.
#[derive(Clone, Copy, Debug)]
struct OtherUser {
    uid: u32,
    gid: u32,
}

/// `nobody` from /etc/passwd, if we are root; `None` (after a note) if we
/// are not, as only root can start a process as another user. Numeric ids,
/// not the names, go to `setpriv`: `nobody`'s group is `nogroup` on Debian
/// but `nobody` elsewhere.
fn other_user(test: &str) -> Option<OtherUser> {
    if euid() != 0 {
        eprintln!("{test}: not root, cannot run a process as another user; skipped");
        return None;
    }
    let passwd = fs::read_to_string("/etc/passwd").expect("read /etc/passwd");
    let line = passwd
        .lines()
        .find(|l| l.starts_with("nobody:"))
        .expect("running as root but there is no user nobody in /etc/passwd");
    let f: Vec<&str> = line.split(':').collect();
    let user = OtherUser {
        uid: f[2].parse().expect("nobody's uid"),
        gid: f[3].parse().expect("nobody's gid"),
    };
    assert_ne!(user.uid, 0, "nobody is uid 0?");
    Some(user)
}

// ------------------------------------------------------------ children ---

/// How a child is started.
#[derive(Clone, Copy, Debug)]
enum As {
    /// As `nobody`, no supplementary groups.
    Other(OtherUser),
    /// As ourselves, under the given umask (set by `sh`, which then execs).
    Umask(&'static str),
}

/// One child at a time (see the file comment on `ETXTBSY`).
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// Whether users other than the owner can execute `exe`: the file is o+rx
/// and every directory above it o+x.
fn others_can_run(exe: &Path) -> bool {
    let Ok(md) = fs::metadata(exe) else {
        return false;
    };
    md.mode() & 0o005 == 0o005
        && exe
            .ancestors()
            .skip(1)
            .filter(|d| !d.as_os_str().is_empty())
            .all(|d| fs::metadata(d).is_ok_and(|m| m.mode() & 0o001 != 0))
}

/// The test binary as others can run it, plus the temporary copy's
/// directory to remove (if a copy was needed).
struct RunnableExe {
    path: PathBuf,
    copy_dir: Option<PathBuf>,
}

impl RunnableExe {
    fn get() -> RunnableExe {
        let exe = std::env::current_exe().expect("current_exe");
        if others_can_run(&exe) {
            return RunnableExe {
                path: exe,
                copy_dir: None,
            };
        }
        let dir = std::env::temp_dir().join(unique_name("mulproc-permissions-exe"));
        fs::create_dir(&dir).expect("create dir for the binary copy");
        let me = RunnableExe {
            path: dir.join("permissions-test"),
            copy_dir: Some(dir.clone()),
        };
        fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        fs::copy(&exe, &me.path).expect("copy the test binary");
        fs::set_permissions(&me.path, Permissions::from_mode(0o755)).unwrap();
        assert!(
            others_can_run(&me.path),
            "copy {} of the test binary is not executable by others",
            me.path.display()
        );
        me
    }
}

impl Drop for RunnableExe {
    fn drop(&mut self) {
        if let Some(d) = &self.copy_dir {
            let _ = fs::remove_dir_all(d);
        }
    }
}

/// Kills and reaps the child on drop if it is still running.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Runs `role` in a child of this test binary started `how`, waits for it
/// to exit (killing it after [`CHILD_TIMEOUT`]), and panics with its output
/// unless it exited 0 after printing its readiness line.
fn run_child(how: As, role: &str, args: &[(&str, String)]) -> Finished {
    let _one_at_a_time = SPAWN_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let exe = RunnableExe::get();
    let mut cmd = match how {
        As::Other(u) => {
            let mut c = Command::new("setpriv");
            c.arg(format!("--reuid={}", u.uid))
                .arg(format!("--regid={}", u.gid))
                .arg("--clear-groups")
                .arg(&exe.path);
            c
        }
        As::Umask(mask) => {
            let mut c = Command::new("sh");
            c.arg("-c")
                .arg(format!("umask {mask} && exec \"$@\""))
                .arg("sh")
                .arg(&exe.path);
            c
        }
    };
    cmd.args(["--exact", CHILD_ENTRY, "--nocapture", "--test-threads=1"])
        .env(ROLE_VAR, role)
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in args {
        cmd.env(format!("{ARG_PREFIX}{k}"), v);
    }
    let mut child = Reaped(
        cmd.spawn()
            .unwrap_or_else(|e| panic!("spawn child {role} ({how:?}): {e}")),
    );
    let mut out = child.0.stdout.take().unwrap();
    let mut err = child.0.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let end = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(st) = child.0.try_wait().expect("try_wait") {
            break st;
        }
        if Instant::now() >= end {
            let _ = child.0.kill();
            break child.0.wait().expect("reap killed child");
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let stdout: Vec<String> = out_t.join().unwrap().lines().map(str::to_owned).collect();
    let stderr = err_t.join().unwrap();
    let results: HashMap<String, String> = stdout
        .iter()
        .filter_map(|l| l.find(RESULT_PREFIX).map(|i| &l[i + RESULT_PREFIX.len()..]))
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let f = Finished {
        status,
        stdout,
        stderr,
        results,
    };
    let ready = f.stdout.iter().any(|l| l.trim_end().ends_with(READY_LINE));
    assert!(
        f.status.success() && ready,
        "child {role} ({how:?}) failed or never got ready\n{}",
        f.describe()
    );
    f
}

fn args(name: &str, kind: Kind, group: bool) -> Vec<(&'static str, String)> {
    vec![
        ("NAME", name.to_owned()),
        ("KIND", kind.as_str().to_owned()),
        ("GROUP", u8::from(group).to_string()),
    ]
}

// --------------------------------------------------------------- roles ---

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Queue,
    Pipe,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Queue => "queue",
            Kind::Pipe => "pipe",
        }
    }

    fn parse(s: &str) -> Kind {
        match s {
            "queue" => Kind::Queue,
            "pipe" => Kind::Pipe,
            other => panic!("unknown kind {other:?}"),
        }
    }

    /// The configuration of this kind (a queue's type: `Pipe::create`
    /// takes it too).
    fn config(self, group: bool) -> QueueConfig {
        let cfg = match self {
            Kind::Queue => QueueConfig::new(4, 16),
            Kind::Pipe => QueueConfig::new(2, 32),
        };
        if group {
            cfg.share_with_group()
        } else {
            cfg
        }
    }

    /// Size of the segment `config` makes, by the crate's own formula for
    /// the kind.
    fn size(self) -> u64 {
        let cfg = self.config(false);
        match self {
            Kind::Queue => cfg.segment_size(),
            Kind::Pipe => PipeConfig::from(cfg).segment_size(),
        }
        .unwrap()
    }

    /// Creates one, leaving the name behind when the handle is dropped.
    fn create_and_leave(self, name: &str, group: bool) {
        match self {
            Kind::Queue => {
                let mut q = Queue::create(name, self.config(group))
                    .unwrap_or_else(|e| panic!("create queue {name}: {e}"));
                q.set_remove_on_drop(false);
            }
            Kind::Pipe => {
                let mut p = Pipe::create(name, self.config(group))
                    .unwrap_or_else(|e| panic!("create pipe {name}: {e}"));
                p.set_remove_on_drop(false);
            }
        }
    }

    /// Opens one and drops the handle again.
    fn open(self, name: &str) -> Result<(), SetupError> {
        match self {
            Kind::Queue => Queue::open(name).map(drop),
            Kind::Pipe => Pipe::open(name).map(drop),
        }
    }
}

/// The outcome of an open, as one word a child can report.
fn outcome(r: Result<(), SetupError>) -> String {
    match r {
        Ok(()) => "ok".into(),
        Err(SetupError::PermissionDenied { reason, .. }) => match reason {
            PermissionProblem::Os => "os".into(),
            PermissionProblem::OtherOwner { owner, me } => format!("other-owner:{owner}:{me}"),
            PermissionProblem::OpenToOthers { mode } => format!("open-to-others:{mode:o}"),
            other => format!("{other:?}"),
        },
        Err(e) => format!("{e:?}").replace('\n', " "),
    }
}

#[test]
fn child_entry() {
    common::child_entry(|role| {
        let name = arg("NAME");
        let kind = Kind::parse(&arg("KIND"));
        // Who and under which umask this child runs, to check the parent
        // got what it asked for.
        report("euid", euid());
        report("umask", proc_status("Umask"));
        match role {
            // Creates a segment, leaves it behind, exits.
            "create" => {
                kind.create_and_leave(&name, arg("GROUP") == "1");
                report("created", "ok");
            }
            // Tries to open a segment; reports the outcome.
            "open" => report("open", outcome(kind.open(&name))),
            other => panic!("unknown role {other:?}"),
        }
        ready();
        0
    });
}

/// Makes `kind` named `name` as `user` (in a child that exits at once) and
/// checks that the file is the user's.
fn create_as(user: OtherUser, name: &str, kind: Kind, group: bool) {
    let f = run_child(As::Other(user), "create", &args(name, kind, group));
    assert_eq!(
        f.get::<u32>("euid"),
        user.uid,
        "setpriv did not switch user"
    );
    let md = fs::metadata(shm_path(name)).expect("the child's segment is gone");
    assert_eq!(md.uid(), user.uid, "segment of {name}");
    assert_eq!(md.len(), kind.size());
}

// ------------------------------------------------- another user's segment ---

/// Pins: a segment created by another user is trusted because root (or
/// anyone the OS lets open it) can map it: `Queue::open` and `Pipe::open`
/// refuse it with `PermissionDenied(OtherOwner)` naming both uids, also when
/// it is group-shared, also when asked for the wrong kind (the owner check
/// comes before anything in the segment is read), and without writing to
/// it (a refused `Pipe::open` must not claim the child end).
#[test]
fn segment_created_by_another_user_is_refused() {
    let Some(user) = other_user("segment_created_by_another_user_is_refused") else {
        return;
    };
    let me = euid();
    for kind in [Kind::Queue, Kind::Pipe] {
        for group in [false, true] {
            let shm = ShmGuard::new(&format!("other-owner-{}", kind.as_str()));
            create_as(user, shm.name(), kind, group);
            let before = fs::read(shm.path()).unwrap();
            for open_as in [Kind::Queue, Kind::Pipe] {
                match open_as.open(shm.name()) {
                    Err(SetupError::PermissionDenied {
                        name,
                        reason: PermissionProblem::OtherOwner { owner, me: m },
                    }) => {
                        assert_eq!(name, shm.name());
                        assert_eq!((owner, m), (user.uid, me));
                    }
                    other => panic!(
                        "{open_as:?}::open of {kind:?} (group {group}) of uid {}: \
                         expected OtherOwner, got {other:?}",
                        user.uid
                    ),
                }
            }
            assert_eq!(
                fs::read(shm.path()).unwrap(),
                before,
                "a refused open wrote to the segment"
            );
        }
    }
}

/// Pins the other direction: another user gets no handle on our segment.
/// Owner-only (0600) and group-shared (0660, our group, which `nobody` is
/// not in) are refused by the OS (`PermissionDenied(Os)`); one widened to
/// 0666 passes the OS but is refused as `OtherOwner` (owner before mode).
#[test]
fn another_user_cannot_open_our_segment() {
    let Some(user) = other_user("another_user_cannot_open_our_segment") else {
        return;
    };
    let me = euid();
    for kind in [Kind::Queue, Kind::Pipe] {
        for (group, widen, want) in [
            (false, None, "os".to_owned()),
            (true, None, "os".to_owned()),
            (false, Some(0o666), format!("other-owner:{me}:{}", user.uid)),
        ] {
            let shm = ShmGuard::new(&format!("ours-{}", kind.as_str()));
            kind.create_and_leave(shm.name(), group);
            if let Some(mode) = widen {
                fs::set_permissions(shm.path(), Permissions::from_mode(mode)).unwrap();
            }
            let f = run_child(As::Other(user), "open", &args(shm.name(), kind, false));
            assert_eq!(f.get::<u32>("euid"), user.uid);
            assert_eq!(
                f.get::<String>("open"),
                want,
                "{kind:?}, group {group}, widened to {widen:?}"
            );
        }
    }
}

// ------------------------------------------------ a name taken by another ---

/// Pins: a name another user created first is reused (we would send to, or
/// receive from, a segment they control): our `create` of either kind, with
/// either sharing, is `AlreadyExists`, and their segment is untouched (same
/// file, owner, mode, size and bytes) and still opens for them.
#[test]
fn name_taken_by_another_user_is_an_error_at_create() {
    let Some(user) = other_user("name_taken_by_another_user_is_an_error_at_create") else {
        return;
    };
    for kind in [Kind::Queue, Kind::Pipe] {
        let shm = ShmGuard::new(&format!("taken-{}", kind.as_str()));
        create_as(user, shm.name(), kind, false);
        let md = fs::metadata(shm.path()).unwrap();
        let before = fs::read(shm.path()).unwrap();
        for group in [false, true] {
            for (what, r) in [
                (
                    "queue",
                    Queue::create(shm.name(), Kind::Queue.config(group)).map(drop),
                ),
                (
                    "pipe",
                    Pipe::create(shm.name(), Kind::Pipe.config(group)).map(drop),
                ),
                (
                    "big queue",
                    Queue::create(shm.name(), QueueConfig::new(8, 64)).map(drop),
                ),
            ] {
                match r {
                    Err(SetupError::AlreadyExists { name }) => assert_eq!(name, shm.name()),
                    other => panic!(
                        "{what} create (group {group}) over {kind:?} of uid {}: {other:?}",
                        user.uid
                    ),
                }
            }
        }
        let after = fs::metadata(shm.path()).expect("our failed create removed their name");
        assert_eq!(
            (after.ino(), after.uid(), after.mode() & 0o7777, after.len()),
            (md.ino(), user.uid, 0o600, kind.size()),
            "their segment changed"
        );
        assert_eq!(fs::read(shm.path()).unwrap(), before, "bytes changed");
        let f = run_child(As::Other(user), "open", &args(shm.name(), kind, false));
        assert_eq!(
            f.get::<String>("open"),
            "ok",
            "their segment no longer opens"
        );
    }
}

/// Pins: a symbolic link another user put under a queue name redirects us
/// to a segment of theirs choosing (here: a valid queue of ours, which the
/// owner check alone would accept): `create` over it is `AlreadyExists`,
/// `open` through it fails (shm_open does not follow links), and the target
/// is untouched.
#[test]
fn symlink_under_a_queue_name_is_not_followed() {
    let Some(user) = other_user("symlink_under_a_queue_name_is_not_followed") else {
        return;
    };
    let target = ShmGuard::new("symlink-target");
    let q = Queue::create(target.name(), QueueConfig::new(4, 16)).unwrap();
    q.try_send(Message::new(Request::DO, b"mine".as_slice()))
        .unwrap();
    let link = ShmGuard::new("symlink");
    std::os::unix::fs::symlink(target.path(), link.path()).unwrap();
    std::os::unix::fs::lchown(link.path(), Some(user.uid), Some(user.gid)).unwrap();
    let before = fs::read(target.path()).unwrap();

    match Queue::create(link.name(), QueueConfig::new(4, 16)) {
        Err(SetupError::AlreadyExists { .. }) => {}
        other => panic!("create over a symlink: expected AlreadyExists, got {other:?}"),
    }
    for kind in [Kind::Queue, Kind::Pipe] {
        let r = kind.open(link.name());
        assert!(r.is_err(), "{kind:?}::open followed the symlink");
        eprintln!("{kind:?}::open through a symlink: {}", outcome(r));
    }
    assert!(fs::symlink_metadata(link.path()).unwrap().is_symlink());
    assert_eq!(fs::read(target.path()).unwrap(), before, "target changed");
    assert_eq!(q.try_recv().unwrap().data, b"mine");
}

// --------------------------------------------------------------- modes ---

/// Pins: the umask narrows or the caller's umask widens the mode `create`
/// gives (it must `fchmod` exactly): under `umask 077` a group-shared
/// segment is still 0660, under `umask 000` an owner-only one is still 0600
/// (and a group-shared one 0660, not 0666), for queues and pipes. Each is
/// made by a child started under that umask by `sh`; the child reports the
/// umask it had.
#[test]
fn create_mode_ignores_umask() {
    for kind in [Kind::Queue, Kind::Pipe] {
        for (mask, group, want) in [
            ("077", true, 0o660),
            ("077", false, 0o600),
            ("000", false, 0o600),
            ("000", true, 0o660),
            ("027", true, 0o660),
        ] {
            let shm = ShmGuard::new(&format!("umask-{mask}-{}", kind.as_str()));
            let f = run_child(As::Umask(mask), "create", &args(shm.name(), kind, group));
            assert_eq!(f.get::<String>("umask"), format!("0{mask}"), "sh umask");
            let mode = fs::metadata(shm.path()).unwrap().mode() & 0o7777;
            assert_eq!(
                mode, want,
                "{kind:?} group {group} under umask {mask}: mode {mode:o}"
            );
        }
    }
}

/// Pins: a segment whose mode was widened after creation to give "other"
/// users access is trusted: 0606 and 0604 are `OpenToOthers` (with the
/// mode) for queues and pipes; group access only (0640, 0660) opens and
/// works.
#[test]
fn mode_open_to_others_is_refused_group_modes_open() {
    for kind in [Kind::Queue, Kind::Pipe] {
        for mode in [0o606, 0o604] {
            let shm = ShmGuard::new(&format!("widened-{mode:o}"));
            kind.create_and_leave(shm.name(), false);
            fs::set_permissions(shm.path(), Permissions::from_mode(mode)).unwrap();
            match kind.open(shm.name()) {
                Err(SetupError::PermissionDenied {
                    name,
                    reason: PermissionProblem::OpenToOthers { mode: m },
                }) => {
                    assert_eq!(name, shm.name());
                    assert_eq!(m & 0o7777, mode, "reported mode");
                }
                other => panic!("{kind:?} mode {mode:o}: expected OpenToOthers, got {other:?}"),
            }
        }
        for mode in [0o640, 0o660] {
            let shm = ShmGuard::new(&format!("group-{mode:o}"));
            match kind {
                Kind::Queue => {
                    let q = Queue::create(shm.name(), kind.config(false)).unwrap();
                    fs::set_permissions(shm.path(), Permissions::from_mode(mode)).unwrap();
                    let o = Queue::open(shm.name())
                        .unwrap_or_else(|e| panic!("queue mode {mode:o} refused: {e}"));
                    o.try_send(Message::new(Request::DO, b"hi".as_slice()))
                        .unwrap();
                    assert_eq!(q.try_recv().unwrap().data, b"hi");
                }
                Kind::Pipe => {
                    let p = Pipe::create(shm.name(), kind.config(false)).unwrap();
                    fs::set_permissions(shm.path(), Permissions::from_mode(mode)).unwrap();
                    let c = Pipe::open(shm.name())
                        .unwrap_or_else(|e| panic!("pipe mode {mode:o} refused: {e}"));
                    c.try_send(Message::new(Request::DO, b"up".as_slice()))
                        .unwrap();
                    assert_eq!(p.try_recv().unwrap().data, b"up");
                }
            }
        }
    }
}

// --------------------------------------------------------------- names ---

/// Pins what `invalid_names_are_refused` (bad_input.rs) leaves out: pipes
/// check names too (create, open, remove), and a NUL byte anywhere (alone,
/// first, in the middle: a C string would cut the name short there) is
/// `BadCharacter`, never a shorter name. Nothing is left in /dev/shm.
#[test]
fn pipe_names_and_nul_bytes_are_refused() {
    let long = "p".repeat(MAX_NAME_LEN + 1);
    let cases: &[(&str, NameProblem)] = &[
        ("", NameProblem::Empty),
        (&long, NameProblem::TooLong),
        ("a/b", NameProblem::Slash),
        (".p", NameProblem::LeadingDot),
        ("sp ace", NameProblem::BadCharacter),
        ("\0", NameProblem::BadCharacter),
        ("\0jobs", NameProblem::BadCharacter),
        ("jo\0bs", NameProblem::BadCharacter),
        ("nul\0", NameProblem::BadCharacter),
    ];
    for &(name, want) in cases {
        let check = |what: &str, e: SetupError| match e {
            SetupError::InvalidName { name: n, problem } => {
                assert_eq!(n, name, "{what}");
                assert_eq!(problem, want, "{what} {name:?}");
            }
            other => panic!("{what} {name:?}: expected InvalidName, got {other:?}"),
        };
        check(
            "Pipe::create",
            Pipe::create(name, PipeConfig::new(2, 8)).unwrap_err(),
        );
        check("Pipe::open", Pipe::open(name).unwrap_err());
        check("Pipe::remove", Pipe::remove(name).unwrap_err());
        check(
            "Queue::create",
            Queue::create(name, QueueConfig::new(2, 8)).unwrap_err(),
        );
        check("Queue::open", Queue::open(name).unwrap_err());
    }
    // The part before the NUL must not have been created in its place.
    for prefix in ["jo", "nul"] {
        assert!(!shm_path(prefix).exists(), "{prefix} created");
    }
}

/// Pins: an off-by-one at the name length limit for pipes: exactly 200
/// bytes creates, opens and carries messages both ways.
#[test]
fn pipe_name_of_max_length_works() {
    let mut name = unique_name("pipe-max-len");
    while name.len() < MAX_NAME_LEN {
        name.push('p');
    }
    assert_eq!(name.len(), 200);
    let shm = ShmGuard::with_name(name.clone());
    let p = Pipe::create(&name, PipeConfig::new(2, 8)).unwrap();
    assert!(shm.path().exists());
    let c = Pipe::open(&name).unwrap();
    c.try_send(Message::new(Request::DO, b"up".as_slice()))
        .unwrap();
    assert_eq!(p.try_recv().unwrap().data, b"up");
    p.try_send(Message::new(Request::DO, b"down".as_slice()))
        .unwrap();
    assert_eq!(c.try_recv().unwrap().data, b"down");
    assert_eq!((p.name(), c.name()), (name.as_str(), name.as_str()));
}
