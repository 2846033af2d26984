//! Fault 9, the chaos test, in its CI form: 3 producers and 3 consumers
//! for 5 seconds, a random one SIGKILLed and restarted every 200 ms, then
//! every check of `benches/tools/src/chaos.rs` (nothing lost, nothing invented,
//! duplicates only from consumers killed holding the message, no call or
//! gap past the unblock timeout plus one second, a clean drain).
//!
//! The chaos logic is the `chaos` tool's own source, compiled into this
//! test (no tool binary is built or run): the children are new processes of
//! this test binary, started through the harness's `child_entry` with the
//! role in `MULPROC_TEST_ROLE` (see `tests/common`).
//!
//! The defaults include the example's work in place (`fill_us`,
//! `hold_us`), so that kills leave claims to skip and held messages to
//! offer again; the test checks that recovery did run.
//!
//! `MULPROC_CHAOS_KEEP=1` keeps the per-process logs of a run for study.

mod common;

#[path = "../benches/tools/src/chaos.rs"]
#[allow(dead_code)]
mod chaos;

use std::time::{Duration, Instant};

#[test]
fn child_entry() {
    common::child_entry(|role| match role {
        "hold_reservation" => role_hold_reservation(),
        other => chaos::child_main(other),
    });
}

/// Reserves a slot, is ready, and holds the claim (alive) until killed.
fn role_hold_reservation() -> i32 {
    let q = mulproc::Queue::open(&common::arg("QUEUE")).expect("open");
    let _slot = q.try_reserve().expect("try_reserve");
    common::ready();
    std::thread::sleep(Duration::from_secs(600));
    3
}

/// Pins what the chaos found with `--capacity 2 --unblock-ms 5 --fill-us
/// 20000`: once every slot of the ring is withheld (each fenced claim's
/// producer still alive), a send took skip ticket after skip ticket round
/// the ring, 65,536 of them, and reported `Corrupt`. Now it fails with
/// `Full` after one lap of skips. Two live producers hold both claims of a
/// 2-slot ring past the unblock timeout.
#[test]
fn send_on_a_ring_whose_every_slot_is_withheld_reports_full() {
    use mulproc::{Message, Queue, QueueConfig, Request, TrySendError};
    let shm = common::ShmGuard::new("chaos-all-withheld");
    let mut q = Queue::create(shm.name(), QueueConfig::new(2, 16)).unwrap();
    q.set_unblock_timeout(Duration::from_millis(20));
    let mut holders: Vec<_> = (0..2)
        .map(|_| {
            let mut c =
                common::ChildProc::spawn("hold_reservation", &[("QUEUE", shm.name().to_owned())]);
            c.wait_ready(Duration::from_secs(20));
            c
        })
        .collect();
    // Receives find nothing and run the stall detector: past the unblock
    // timeout, both live claims are fenced and their slots withheld.
    let t = Instant::now();
    while q.recovery_stats().fenced_live < 2 {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "claims not fenced: {:?}",
            q.recovery_stats()
        );
        let _ = q.try_recv();
        std::thread::sleep(Duration::from_millis(2));
    }
    // `tail` (white-box, for the report).
    let tail_at = mulproc::__layout::TAIL_AT;
    let tail_before = common::read_u64(shm.name(), tail_at);
    let t = Instant::now();
    let r = q.try_send(Message::new(Request::DO, b"x".as_slice()));
    let took = t.elapsed();
    let tail_after = common::read_u64(shm.name(), tail_at);
    let what = match &r {
        Ok(()) => "Ok".to_owned(),
        Err(e) => format!("{e:?}: {e}"),
    };
    for h in &mut holders {
        h.kill();
    }
    assert!(
        matches!(r, Err(TrySendError::Full(_))),
        "try_send on a ring whose every slot is withheld: {what} after {took:?}; \
         tail {tail_before:?} -> {tail_after:?}; {:?}",
        q.recovery_stats()
    );
}

#[test]
fn chaos_kill_and_restart_every_200ms_for_5s() {
    let opts = chaos::Opts {
        secs: 5.0,
        ..chaos::Opts::default()
    };
    let launcher = chaos::Launcher {
        args: [
            "--exact",
            common::CHILD_ENTRY,
            "--nocapture",
            "--test-threads=1",
        ]
        .map(String::from)
        .to_vec(),
        role_var: Some(common::ROLE_VAR.to_owned()),
    };
    let t = Instant::now();
    let report = chaos::run(&opts, &launcher).unwrap_or_else(|e| panic!("chaos harness: {e}"));
    println!("{report}");
    println!("wall_clock_secs={:.1}", t.elapsed().as_secs_f64());
    assert!(
        report.violations.is_empty(),
        "the queue broke its promises under chaos:\n{report}"
    );
    // The run really was chaotic: kills of both kinds, wrap-around.
    let get = |k: &str| -> u64 {
        report
            .get(k)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {k} in the report:\n{report}"))
    };
    assert!(get("kills") >= 15, "too few kills:\n{report}");
    assert!(get("sent_ok") > 64 * 100, "too little traffic:\n{report}");
    // About a third of the kills leave something to recover (10 on
    // average in 5 s): none at all means the chaos tested nothing.
    assert!(
        get("skipped_claims") + get("redelivered") > 0,
        "no kill left anything to recover:\n{report}"
    );
    assert!(
        t.elapsed() < Duration::from_secs(60),
        "the run took {:?}",
        t.elapsed()
    );
}
