//! The commands that act on segments: `gc`, `rm`, `join`, `send`, `recv`.

use std::io::{BufRead, Read, Write};
use std::time::Duration;

use mulproc::inspect::{self, GcAction, GcOptions, InspectError, KeepReason};
use mulproc::{ChannelKind, Message, Pipe, Queue, RecoveryStats, Request, SendRetry, SetupError};

use crate::show::fail;
use crate::util;
use crate::Status;

// ------------------------------------------------------------------ gc ---

/// What a repair did, counter by counter (only those that moved).
fn delta_text(d: &RecoveryStats) -> String {
    let parts: Vec<String> = [
        (
            d.redelivered,
            "message offered again",
            "messages offered again",
        ),
        (
            d.abandoned_tasks,
            "task counted abandoned",
            "tasks counted abandoned",
        ),
        (
            d.skipped_claims,
            "unpublished claim given up",
            "unpublished claims given up",
        ),
        (d.finished_releases, "slot freed", "slots freed"),
        (d.undone_moves, "move undone", "moves undone"),
        (
            d.handovers,
            "interrupted repair finished",
            "interrupted repairs finished",
        ),
    ]
    .into_iter()
    .filter(|(n, ..)| *n > 0)
    .map(|(n, one, many)| format!("{n} {}", if n == 1 { one } else { many }))
    .collect();
    if parts.is_empty() {
        "no counter moved".into()
    } else {
        parts.join(", ")
    }
}

fn pids_text(pids: &[u32]) -> String {
    if pids.is_empty() {
        String::new()
    } else {
        format!(" (pid {})", util::pid_list(pids, 8))
    }
}

pub fn gc(names: &[String], dry_run: bool, keep_stale: bool) -> Status {
    let explicit = !names.is_empty();
    let names: Vec<String> = if explicit {
        names.to_vec()
    } else {
        match inspect::list() {
            Ok(l) => l.into_iter().map(|l| l.name).collect(),
            Err(e) => return fail(&format!("cannot read {}: {e}", inspect::SHM_DIR)),
        }
    };
    let options = GcOptions::default().dry_run(dry_run).keep_stale(keep_stale);
    let would = |done: &str, planned: &str| if dry_run { planned } else { done }.to_string();
    let mut problem = false;
    let mut acted = 0;
    for name in &names {
        let outcome = match inspect::gc(name, options) {
            Ok(o) => o,
            Err(InspectError::PermissionDenied { .. }) => {
                println!("{name}: skipped: permission denied");
                continue;
            }
            Err(InspectError::NotFound { .. }) if !explicit => continue,
            Err(e) => {
                println!("{name}: failed: {e}");
                problem = true;
                continue;
            }
        };
        match outcome.action {
            GcAction::Nothing if explicit => println!("{name}: nothing to do"),
            GcAction::Nothing => {}
            GcAction::Repair {
                dead_handles,
                dead_claims,
                report,
            } => {
                acted += 1;
                let pids: Vec<u32> = dead_handles.iter().map(|h| h.pid).collect();
                let mut found = Vec::new();
                if !dead_handles.is_empty() {
                    found.push(format!(
                        "{} dead handle{}{}",
                        dead_handles.len(),
                        if dead_handles.len() == 1 { "" } else { "s" },
                        pids_text(&pids)
                    ));
                }
                if !dead_claims.is_empty() {
                    found.push(if dead_claims.len() == 1 {
                        "1 claim of a dead holder".to_string()
                    } else {
                        format!("{} claims of dead holders", dead_claims.len())
                    });
                }
                if found.is_empty() {
                    found.push("an interrupted repair".into());
                }
                match report {
                    None => println!("{name}: would repair {}", found.join(", ")),
                    Some(r) => {
                        println!(
                            "{name}: repaired {}: {}",
                            found.join(", "),
                            delta_text(&r.delta())
                        );
                        if r.dead_handles_after > 0 || r.dead_claims_after > 0 {
                            println!(
                                "{name}: still {} dead handles and {} dead claims after the repair",
                                r.dead_handles_after, r.dead_claims_after
                            );
                            problem = true;
                        }
                    }
                }
            }
            GcAction::RemoveStale {
                kind,
                waiting,
                problem: contents,
            } => {
                acted += 1;
                let what = match (kind, contents) {
                    (Some(ChannelKind::Queue), _) => "stale queue".to_string(),
                    (Some(_), _) => "stale pipe".to_string(),
                    (None, Some(p)) => format!("stale segment ({p})"),
                    (None, None) => "stale segment".to_string(),
                };
                let lost = if waiting > 0 {
                    format!(
                        " ({waiting} message{} {})",
                        if waiting == 1 { "" } else { "s" },
                        would("lost", "would be lost")
                    )
                } else {
                    String::new()
                };
                println!("{name}: {} {what}{lost}", would("removed", "would remove"));
            }
            GcAction::Keep(reason) => {
                let why = match reason {
                    KeepReason::NotOurs { owner } => {
                        format!("owned by {} (uid {owner})", util::user_name(owner))
                    }
                    KeepReason::OpenToOthers { mode } => {
                        format!("mode {mode:04o} is open to other users")
                    }
                    KeepReason::StaleKept => "stale, kept (--keep-stale)".into(),
                    KeepReason::NoLongerStale => "in use again".into(),
                    KeepReason::CorruptInUse => {
                        problem = true;
                        "corrupt and in use: nothing in it can be trusted to repair".into()
                    }
                    KeepReason::OtherVersion => "another layout version".into(),
                    _ => "left alone".into(),
                };
                println!("{name}: kept: {why}");
            }
            _ => {}
        }
    }
    if acted == 0 && !explicit {
        println!("nothing to do");
    }
    if problem || dry_run && acted > 0 {
        Status::Problem
    } else {
        Status::Ok
    }
}

// ------------------------------------------------------------------ rm ---

pub fn rm(name: &str, force: bool) -> Status {
    match inspect::snapshot(name) {
        Ok(s) if s.in_use && !force => {
            let users = match (s.queue(), s.pipe()) {
                (Some(q), _) => {
                    let pids: Vec<u32> = q.live_handles().map(|h| h.pid).collect();
                    format!("{} live handle(s){}", pids.len(), pids_text(&pids))
                }
                (_, Some(p)) => {
                    let pids: Vec<u32> = p
                        .ends
                        .iter()
                        .filter(|e| e.alive)
                        .filter_map(|e| e.pid)
                        .collect();
                    format!("{} live end(s){}", pids.len(), pids_text(&pids))
                }
                _ => "a live process".into(),
            };
            return fail(&format!(
                "{name} is in use by {users}; --force removes the name anyway (they keep using it, new opens fail)"
            ));
        }
        Err(InspectError::NotFound { .. }) => {
            return fail(&format!("no mulproc segment named {name:?}"))
        }
        _ => {}
    }
    match Queue::remove(name) {
        Ok(()) => {
            println!("removed {name}");
            Status::Ok
        }
        Err(e) => fail(&e),
    }
}

// ---------------------------------------------------------------- join ---

pub fn join(name: &str, timeout: Option<Duration>) -> Status {
    let q = match Queue::open(name) {
        Ok(q) => q,
        Err(e) => return fail(&e),
    };
    match timeout {
        None => {
            q.join();
            println!("{name}: joined");
            Status::Ok
        }
        Some(t) => match q.join_timeout(t) {
            Ok(()) => {
                println!("{name}: joined");
                Status::Ok
            }
            Err(e) => fail(&format!("{name}: {e}")),
        },
    }
}

// --------------------------------------------------------- send / recv ---

/// A queue, or the child end of a pipe.
enum Channel {
    Queue(Queue),
    Pipe(Pipe),
}

fn open(name: &str) -> Result<Channel, SetupError> {
    match Queue::open(name) {
        Ok(q) => Ok(Channel::Queue(q)),
        Err(SetupError::WrongKind {
            found: ChannelKind::Pipe,
            ..
        }) => Pipe::open(name).map(Channel::Pipe),
        Err(e) => Err(e),
    }
}

/// Waits of up to 100 ms, as many as `timeout` holds.
fn retry_for(timeout: Duration) -> SendRetry {
    let wait = timeout.min(Duration::from_millis(100));
    let tries = if wait.is_zero() {
        0
    } else {
        timeout.as_nanos().div_ceil(wait.as_nanos()) as u32
    };
    SendRetry { tries, wait }
}

pub fn send(
    name: &str,
    data: &[String],
    request: Request,
    to: Option<u32>,
    lines: bool,
    timeout: Duration,
) -> Status {
    let payloads: Vec<Vec<u8>> = if lines {
        let mut v = Vec::new();
        for line in std::io::stdin().lock().split(b'\n') {
            match line {
                Ok(l) => v.push(l),
                Err(e) => return fail(&format!("reading standard input: {e}")),
            }
        }
        v
    } else if !data.is_empty() {
        vec![data.join(" ").into_bytes()]
    } else {
        let mut buf = Vec::new();
        if let Err(e) = std::io::stdin().lock().read_to_end(&mut buf) {
            return fail(&format!("reading standard input: {e}"));
        }
        vec![buf]
    };
    let mut channel = match open(name) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    let retry = retry_for(timeout);
    match &mut channel {
        Channel::Queue(q) => q.set_send_retry(retry),
        Channel::Pipe(p) => p.set_send_retry(retry),
    }
    for (i, payload) in payloads.into_iter().enumerate() {
        let mut msg = Message::new(request, payload);
        if let Some(pid) = to {
            msg = msg.to(pid);
        }
        let r = match &channel {
            Channel::Queue(q) => q.send(msg),
            Channel::Pipe(p) => p.send(msg),
        };
        if let Err(e) = r {
            let when = if e.is_full() {
                format!(" (waited {timeout:?})")
            } else {
                String::new()
            };
            return fail(&format!("{name}: message {}: {e}{when}", i + 1));
        }
    }
    Status::Ok
}

pub fn recv(name: &str, timeout: Option<Duration>, header: bool) -> Status {
    let channel = match open(name) {
        Ok(c) => c,
        Err(e) => return fail(&e),
    };
    // Forever is a loop of long waits, so the same call serves both.
    let wait = timeout.unwrap_or(Duration::from_secs(3600));
    let m = loop {
        let r = match &channel {
            Channel::Queue(q) => q.recv_timeout(wait),
            Channel::Pipe(p) => p.recv_timeout(wait),
        };
        match r {
            Ok(m) => break m,
            Err(mulproc::RecvTimeoutError::Timeout) if timeout.is_none() => continue,
            Err(e) => return fail(&format!("{name}: {e}")),
        }
    };
    if header {
        eprintln!(
            "request={} sender={} recipient={} len={}",
            util::request_name(m.request),
            m.sender.map_or("-".into(), |p| p.to_string()),
            m.recipient.map_or("anyone".into(), |p| p.to_string()),
            m.data.len()
        );
    }
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(&m.data).and_then(|()| out.flush()) {
        return fail(&format!("writing standard output: {e}"));
    }
    // Written out: that was the task. Marked done so `join` counts it
    // (a handle dropped with it unmarked would count it abandoned).
    if let Channel::Queue(q) = &channel {
        let _ = q.task_done();
    }
    Status::Ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_covers_the_timeout() {
        let r = retry_for(Duration::from_secs(1));
        assert_eq!((r.tries, r.wait), (10, Duration::from_millis(100)));
        let r = retry_for(Duration::from_millis(250));
        assert_eq!(r.tries, 3);
        let r = retry_for(Duration::from_millis(30));
        assert_eq!((r.tries, r.wait), (1, Duration::from_millis(30)));
        assert_eq!(retry_for(Duration::ZERO).tries, 0);
    }

    #[test]
    fn delta_names_what_moved() {
        let mut d = RecoveryStats::default();
        d.redelivered = 1;
        d.abandoned_tasks = 2;
        assert_eq!(
            delta_text(&d),
            "1 message offered again, 2 tasks counted abandoned"
        );
        assert_eq!(delta_text(&RecoveryStats::default()), "no counter moved");
    }
}
