//! Runs the `peer` binary once per system with tiny iteration counts and
//! checks the result line and that nothing is left in /dev/shm or /tmp.

use std::process::Command;

fn run(args: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_peer"))
        .args(args.split_whitespace())
        .args(["--timeout-s", "30"])
        .output()
        .expect("cannot run the peer binary");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "peer {args} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().last().unwrap_or_default().to_owned()
}

fn value(line: &str, key: &str) -> f64 {
    let v = line
        .strip_prefix(key)
        .and_then(|r| r.strip_prefix('='))
        .unwrap_or_else(|| panic!("expected {key}=..., got {line:?}"));
    let v: f64 = v.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
    assert!(v.is_finite() && v > 0.0, "{line:?}");
    v
}

/// Shared-memory files, directories and sockets of peer runs
/// (`mulproc-peers-*`), and cloudtoid's semaphores for them
/// (`sem.ct3ip.mulproc-peers-*`).
fn leftovers() -> Vec<String> {
    ["/dev/shm", "/tmp"]
        .iter()
        .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("mulproc-peers-") || n.starts_with("sem.ct3ip.mulproc-peers-"))
        .collect()
}

#[test]
fn every_scenario_prints_its_figure() {
    let before = leftovers();
    let pingpong = [
        "--system raw",
        "--system futex",
        "--system futex --block --idle-us 50",
        "--system arrayqueue",
        "--system ipmpsc",
        "--system ipmpsc --block",
        "--system iceoryx2",
        "--system iceoryx2 --block",
        "--system cloudtoid",
        "--system cloudtoid --block",
        "--system uds",
        "--system uds --block",
    ];
    for args in pingpong {
        value(
            &run(&format!(
                "{args} --scenario pingpong --iters 2000 --warmup 200"
            )),
            "one_way_ns",
        );
    }
    let stream = [
        "--system arrayqueue --size 1024",
        "--system ipmpsc --size 8",
        "--system ipmpsc --block --producers 4",
        "--system iceoryx2 --size 65536",
        "--system iceoryx2 --block --producers 4",
        "--system cloudtoid --size 1024",
        "--system cloudtoid --block --producers 4",
        "--system cloudtoid --batch 64",
        "--system cloudtoid --size 65536 --batch 7 --producers 4",
        "--system uds --producers 4",
        "--system uds --block",
    ];
    for args in stream {
        value(
            &run(&format!(
                "{args} --scenario stream --iters 20000 --warmup 2000"
            )),
            "msgs_per_sec",
        );
    }
    value(
        &run("--system memcpy --iters 100 --warmup 10"),
        "bytes_per_sec",
    );
    value(
        &run("--system procspawn --scenario pool --iters 2000 --warmup 100"),
        "tasks_per_sec",
    );
    value(
        &run("--system procspawn --scenario pool --iters 500 --warmup 10 --workers 2 --size 61"),
        "tasks_per_sec",
    );
    let after = leftovers();
    let new: Vec<_> = after.iter().filter(|n| !before.contains(n)).collect();
    assert!(new.is_empty(), "left behind: {new:?}");
}

#[test]
fn bad_flags_fail_cleanly() {
    for args in [
        "--system raw --scenario stream",
        "--system nope",
        "--system arrayqueue --size 100",
        "--system ipmpsc --scenario stream --batch 8",
        "--system cloudtoid --scenario pool",
        "--system procspawn --scenario stream",
        "--system procspawn --workers 0",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_peer"))
            .args(args.split_whitespace())
            .output()
            .expect("cannot run the peer binary");
        assert_eq!(out.status.code(), Some(2), "{args}");
    }
}
