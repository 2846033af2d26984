//! The contract the scripts rely on: every measuring program, run short,
//! exits 0, ends its output with one `key=value` line of the key that
//! `benches/compare.py` (or `.ci/run`) expects, and leaves no segment in
//! `/dev/shm`; and `--help` names the flags `compare.py` looks for.

use std::process::{Command, Stdio};

/// Runs `bin` with `args`; returns its last stdout line, after checking the
/// exit status and that it left no segment named after its pid.
fn last_line(bin: &str, args: &[&str]) -> String {
    let child = Command::new(bin)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let pid = child.id();
    let out = child.wait_with_output().expect("wait for the program");
    let left = segments_of(pid);
    assert!(
        left.is_empty(),
        "{bin} {args:?} left segments in /dev/shm: {left:?}"
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{bin} {args:?} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or_else(|| panic!("{bin} {args:?} printed nothing"))
        .trim()
        .to_owned()
}

/// Checks `line` is `key=<number>` and returns the number.
fn figure(line: &str, key: &str) -> f64 {
    let (k, v) = line
        .split_once('=')
        .unwrap_or_else(|| panic!("last line {line:?} is not key=value"));
    assert_eq!(k, key, "last line {line:?}");
    v.parse()
        .unwrap_or_else(|e| panic!("last line {line:?}: {e}"))
}

/// Segments in /dev/shm named after process `pid`: `create_unique` names
/// are `u-<pid>-...`, chaos's queue `chaos-<pid>-...`. The programs'
/// children only open what their parent created.
fn segments_of(pid: u32) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/dev/shm") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            n.strip_prefix("mulproc.").is_some_and(|r| {
                r.starts_with(&format!("u-{pid}-")) || r.contains(&format!("-{pid}-"))
            })
        })
        .collect()
}

#[test]
fn pingpong_prints_one_way_ns() {
    let bin = env!("CARGO_BIN_EXE_pingpong");
    let args: [&[&str]; 3] = [
        &["--blocking", "--iters", "200", "--warmup", "10"],
        &["--pipe", "--blocking", "--zero-copy", "--iters", "200"],
        &["--iters", "200", "--blocking", "--idle-us", "50"],
    ];
    for a in args {
        let ns = figure(&last_line(bin, a), "one_way_ns");
        assert!(ns > 0.0 && ns < 1e9, "{a:?}: one_way_ns={ns}");
    }
}

#[test]
fn stream_prints_msgs_per_sec() {
    let bin = env!("CARGO_BIN_EXE_stream");
    let args: [&[&str]; 3] = [
        &["--blocking", "--messages", "5000"],
        &[
            "--producers",
            "3",
            "--blocking",
            "--messages",
            "5000",
            "--touch",
        ],
        &[
            "--pipe",
            "--blocking",
            "--zero-copy",
            "--messages",
            "5000",
            "--size",
            "300",
        ],
    ];
    for a in args {
        let rate = figure(&last_line(bin, a), "msgs_per_sec");
        assert!(rate > 0.0, "{a:?}: msgs_per_sec={rate}");
    }
}

#[test]
fn idle_recv_prints_cpu_percent() {
    let line = last_line(env!("CARGO_BIN_EXE_idle_recv"), &["--secs", "0.3"]);
    let percent = figure(&line, "cpu_percent");
    assert!((0.0..100.0).contains(&percent), "cpu_percent={percent}");
}

#[test]
fn pool_by_hand_prints_tasks_per_sec() {
    let bin = env!("CARGO_BIN_EXE_pool_by_hand");
    let line = last_line(bin, &["--workers", "2", "--tasks", "20_000"]);
    assert!(figure(&line, "tasks_per_sec") > 0.0);
}

#[test]
fn chaos_prints_no_violations() {
    let bin = env!("CARGO_BIN_EXE_chaos");
    let line = last_line(
        bin,
        &["--secs", "0.5", "--producers", "2", "--consumers", "2"],
    );
    assert_eq!(figure(&line, "violations"), 0.0);
}

#[test]
fn help_names_the_flags_compare_py_looks_for() {
    let help = |bin: &str| {
        let out = Command::new(bin)
            .arg("--help")
            .output()
            .expect("run --help");
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let pp = help(env!("CARGO_BIN_EXE_pingpong"));
    for flag in ["--pipe", "--blocking", "--idle-us", "--iters", "--warmup"] {
        assert!(pp.contains(flag), "pingpong --help lacks {flag}:\n{pp}");
    }
    let st = help(env!("CARGO_BIN_EXE_stream"));
    for flag in ["--producers", "--blocking", "--size", "--messages"] {
        assert!(st.contains(flag), "stream --help lacks {flag}:\n{st}");
    }
}

#[test]
fn bad_flags_fail_with_a_message() {
    for (bin, args) in [
        (env!("CARGO_BIN_EXE_pingpong"), &["--iters", "0"][..]),
        (
            env!("CARGO_BIN_EXE_stream"),
            &["--pipe", "--producers", "2"][..],
        ),
        (env!("CARGO_BIN_EXE_stream"), &["--capacity", "3"][..]),
        (env!("CARGO_BIN_EXE_idle_recv"), &["--secs", "-1"][..]),
        (env!("CARGO_BIN_EXE_pool_by_hand"), &["--size", "8"][..]),
        (env!("CARGO_BIN_EXE_pingpong"), &["--no-such-flag"][..]),
    ] {
        let out = Command::new(bin).args(args).output().expect("run");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bin} {args:?} succeeded");
        assert!(!err.trim().is_empty(), "{bin} {args:?} failed silently");
        assert!(!err.contains("panicked"), "{bin} {args:?} panicked: {err}");
    }
}
