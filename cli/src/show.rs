//! `ls`, `inspect` and `peek`: text for people, JSON for scripts.

use mulproc::inspect::{
    self, Claim, ClaimKind, Contents, FileInfo, HandleInfo, HandleStatus, Holder, InspectError,
    Listed, PeekedMessage, PipeState, Problem, QueueState, RepairKind, Snapshot,
};
use mulproc::{ChannelKind, RecoveryStats};
use serde_json::{json, Value};

use crate::util::{self, table};
use crate::Status;

/// How a segment is doing, in one word or phrase, and whether that is a
/// problem (exit status 1).
pub fn health(s: &Snapshot) -> (String, bool) {
    match &s.contents {
        Err(p) if p.is_corruption() => (format!("corrupt: {p}"), true),
        Err(Problem::InitIncomplete {
            creator_alive: true,
            ..
        }) => ("initialising".into(), false),
        Err(Problem::InitIncomplete { .. }) => ("stale (creation crashed)".into(), true),
        Err(Problem::IncompatibleVersion { found, .. }) => {
            (format!("layout version {found}"), false)
        }
        Err(p) => (p.to_string(), true),
        Ok(_) if !s.anomalies().is_empty() => {
            let a = s.anomalies();
            let more = if a.len() > 1 {
                format!(" (+{} more)", a.len() - 1)
            } else {
                String::new()
            };
            (format!("corrupt: {}{more}", a[0]), true)
        }
        Ok(_) if s.is_stale() => ("stale".into(), true),
        Ok(Contents::Queue(q)) if q.needs_repair() => {
            let dead = q.dead_handles().count();
            let claims = q.dead_claims().count();
            let mut parts = Vec::new();
            if dead > 0 {
                parts.push(format!("{dead} dead handle{}", plural(dead)));
            }
            if claims > 0 {
                parts.push(format!("{claims} dead claim{}", plural(claims)));
            }
            if q.repair.is_some() || q.control_lock.holder_died() {
                parts.push("repair interrupted".into());
            }
            (parts.join(", "), true)
        }
        Ok(_) => ("ok".into(), false),
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 {
        ""
    } else {
        "s"
    }
}

fn kind_name(k: ChannelKind) -> &'static str {
    match k {
        ChannelKind::Queue => "queue",
        ChannelKind::Pipe => "pipe",
        _ => "?",
    }
}

fn error_label(e: &InspectError) -> String {
    match e {
        InspectError::PermissionDenied { .. } => "permission denied".into(),
        InspectError::NotFound { .. } => "gone".into(),
        other => other.to_string(),
    }
}

/// The pids of a pipe's live ends.
fn pipe_live_pids(p: &PipeState) -> Vec<u32> {
    p.ends
        .iter()
        .filter(|e| e.alive)
        .map(|e| e.pid.unwrap_or(0))
        .collect()
}

/// Pids of a pipe's ends that recorded a pid but whose holder is gone.
fn pipe_dead_pids(p: &PipeState) -> Vec<u32> {
    p.ends
        .iter()
        .filter(|e| !e.alive)
        .filter_map(|e| e.pid)
        .collect()
}

fn counted(pids: &[u32]) -> String {
    if pids.is_empty() {
        "0".into()
    } else {
        format!("{} ({})", pids.len(), util::pid_list(pids, 4))
    }
}

// ------------------------------------------------------------------ ls ---

pub fn ls(json: bool) -> Status {
    let listed = match inspect::list() {
        Ok(l) => l,
        Err(e) => {
            eprintln!("mulproc: cannot read {}: {e}", inspect::SHM_DIR);
            return Status::Problem;
        }
    };
    let mut problem = false;
    for l in &listed {
        problem |= match &l.snapshot {
            Ok(s) => health(s).1,
            Err(InspectError::PermissionDenied { .. }) => false,
            // Removed between the directory listing and the look.
            Err(InspectError::NotFound { .. }) => false,
            Err(_) => true,
        };
    }
    if json {
        let v: Vec<Value> = listed.iter().map(listed_json).collect();
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if listed.is_empty() {
        println!("no mulproc segments in {}", inspect::SHM_DIR);
    } else {
        print!("{}", ls_table(&listed));
    }
    if problem {
        Status::Problem
    } else {
        Status::Ok
    }
}

fn ls_table(listed: &[Listed]) -> String {
    let mut rows = vec![[
        "NAME", "KIND", "CAP", "MAXPL", "WAITING", "BYTES", "LIVE", "DEAD", "UNFIN", "OWNER",
        "MODE", "AGE", "STATE",
    ]
    .map(String::from)
    .to_vec()];
    for l in listed {
        let file_cols = |f: Option<&FileInfo>| match f {
            Some(f) => [
                util::user_name(f.uid),
                format!("{:04o}", f.mode),
                util::age(f.created),
            ],
            None => ["-".into(), "-".into(), "-".into()],
        };
        let dash = || "-".to_string();
        let row: Vec<String> = match &l.snapshot {
            Err(e) => {
                let [owner, mode, age] = file_cols(l.file.as_ref());
                vec![
                    l.name.clone(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    dash(),
                    owner,
                    mode,
                    age,
                    error_label(e),
                ]
            }
            Ok(s) => {
                let [owner, mode, age] = file_cols(Some(&s.file));
                let (state, _) = health(s);
                let (kind, cap, maxpl, waiting, bytes, live, dead, unfin) = match &s.contents {
                    Ok(Contents::Queue(q)) => {
                        let live: Vec<u32> = q.live_handles().map(|h| h.pid).collect();
                        let dead: Vec<u32> = q.dead_handles().map(|h| h.pid).collect();
                        let more = if q.scanned < q.depth() { "+" } else { "" };
                        (
                            "queue".to_string(),
                            q.layout.capacity.to_string(),
                            q.layout.max_payload.to_string(),
                            format!("{}{more}", q.slots.waiting),
                            format!("{}{more}", util::bytes(q.bytes_waiting)),
                            counted(&live),
                            counted(&dead),
                            q.unfinished().to_string(),
                        )
                    }
                    Ok(Contents::Pipe(p)) => {
                        let [a, b] = p.directions;
                        (
                            "pipe".to_string(),
                            p.layout.capacity.to_string(),
                            p.layout.max_payload.to_string(),
                            format!("{}/{}", a.waiting, b.waiting),
                            format!(
                                "{}/{}",
                                util::bytes(a.bytes_waiting),
                                util::bytes(b.bytes_waiting)
                            ),
                            counted(&pipe_live_pids(p)),
                            counted(&pipe_dead_pids(p)),
                            dash(),
                        )
                    }
                    _ => (
                        dash(),
                        dash(),
                        dash(),
                        dash(),
                        dash(),
                        dash(),
                        dash(),
                        dash(),
                    ),
                };
                vec![
                    l.name.clone(),
                    kind,
                    cap,
                    maxpl,
                    waiting,
                    bytes,
                    live,
                    dead,
                    unfin,
                    owner,
                    mode,
                    age,
                    state,
                ]
            }
        };
        rows.push(row);
    }
    table(&rows)
}

// ---------------------------------------------------------------- JSON ---

fn file_json(f: &FileInfo) -> Value {
    json!({
        "uid": f.uid,
        "owner": util::user_name(f.uid),
        "gid": f.gid,
        "group": util::group_name(f.gid),
        "mode": format!("{:04o}", f.mode),
        "size": f.size,
        "age_seconds": util::age_seconds(f.created),
    })
}

fn listed_json(l: &Listed) -> Value {
    match &l.snapshot {
        Ok(s) => snapshot_json(s, false),
        Err(e) => json!({
            "name": l.name,
            "readable": false,
            "error": error_label(e),
            "file": l.file.as_ref().map(file_json),
        }),
    }
}

fn recovery_json(r: &RecoveryStats) -> Value {
    json!({
        "skipped_claims": r.skipped_claims,
        "fenced_live": r.fenced_live,
        "redelivered": r.redelivered,
        "abandoned_tasks": r.abandoned_tasks,
        "undone_moves": r.undone_moves,
        "handovers": r.handovers,
        "finished_releases": r.finished_releases,
    })
}

fn status_name(s: HandleStatus) -> &'static str {
    match s {
        HandleStatus::Live => "live",
        HandleStatus::Dead => "dead",
        HandleStatus::Registering => "registering",
        _ => "?",
    }
}

fn handle_json(h: &HandleInfo) -> Value {
    json!({
        "entry": h.index,
        "status": status_name(h.status),
        "pid": h.pid,
        "generation": h.generation,
        "outstanding": h.outstanding,
        "claiming": h.claiming,
        "sending": h.sending.map(|(a, b)| json!([a, b])),
    })
}

fn claim_kind_name(k: ClaimKind) -> &'static str {
    match k {
        ClaimKind::Writing => "writing",
        ClaimKind::Held => "held",
        ClaimKind::Moving => "moving",
        ClaimKind::Skip => "skip",
        ClaimKind::Withheld => "withheld",
        _ => "?",
    }
}

fn holder_json(h: &Holder) -> Value {
    match *h {
        Holder::Alive { entry, pid } => json!({"entry": entry, "pid": pid, "alive": true}),
        Holder::Dead { entry, pid } => json!({"entry": entry, "pid": pid, "alive": false}),
        _ => Value::Null,
    }
}

fn claim_json(c: &Claim) -> Value {
    json!({
        "ticket": c.ticket,
        "slot": c.slot,
        "state": claim_kind_name(c.kind),
        "holder": holder_json(&c.holder),
        "signed": c.signed,
    })
}

fn repair_kind_name(k: RepairKind) -> String {
    match k {
        RepairKind::Fence => "fence".into(),
        RepairKind::Redeliver => "redeliver".into(),
        RepairKind::UndoMove => "undo move".into(),
        RepairKind::Skip => "skip".into(),
        RepairKind::Other(n) => format!("unknown ({n})"),
        _ => "?".into(),
    }
}

fn problem_json(p: &Problem) -> Value {
    json!(p.to_string())
}

/// A snapshot as JSON: the summary `ls` prints, and with `detailed` every
/// field `inspect` prints.
pub fn snapshot_json(s: &Snapshot, detailed: bool) -> Value {
    let (state, problem) = health(s);
    let mut v = json!({
        "name": s.name,
        "readable": true,
        "kind": s.kind().map(kind_name),
        "file": file_json(&s.file),
        "in_use": s.in_use,
        "stale": s.is_stale(),
        "corrupt": s.is_corrupt(),
        "state": state,
        "problem": problem,
        "contents_problem": s.contents.as_ref().err().map(problem_json),
        "anomalies": s.anomalies().iter().map(|a| a.to_string()).collect::<Vec<_>>(),
    });
    let obj = v.as_object_mut().expect("an object");
    if let Some(l) = s.layout() {
        obj.insert("capacity".into(), json!(l.capacity));
        obj.insert("max_payload".into(), json!(l.max_payload));
        if detailed {
            obj.insert(
                "layout".into(),
                json!({
                    "version": l.version,
                    "capacity": l.capacity,
                    "max_payload": l.max_payload,
                    "stride": l.stride,
                    "data_offset": l.data_offset,
                    "total_size": l.total_size,
                    "creator_pid": l.creator_pid,
                    "creator_uid": l.creator_uid,
                }),
            );
        }
    }
    match &s.contents {
        Ok(Contents::Queue(q)) => queue_json(q, detailed, obj),
        Ok(Contents::Pipe(p)) => pipe_json(p, detailed, obj),
        _ => {}
    }
    v
}

fn queue_json(q: &QueueState, detailed: bool, obj: &mut serde_json::Map<String, Value>) {
    obj.insert("waiting".into(), json!(q.slots.waiting));
    obj.insert("bytes_waiting".into(), json!(q.bytes_waiting));
    obj.insert("depth".into(), json!(q.depth()));
    obj.insert("unfinished".into(), json!(q.unfinished()));
    obj.insert(
        "live_pids".into(),
        json!(q.live_handles().map(|h| h.pid).collect::<Vec<_>>()),
    );
    obj.insert(
        "dead_pids".into(),
        json!(q.dead_handles().map(|h| h.pid).collect::<Vec<_>>()),
    );
    obj.insert("recovery".into(), recovery_json(&q.recovery));
    if !detailed {
        return;
    }
    let c = q.slots;
    obj.insert("head".into(), json!(q.head));
    obj.insert("tail".into(), json!(q.tail));
    obj.insert("done".into(), json!(q.done));
    obj.insert("scanned".into(), json!(q.scanned));
    obj.insert(
        "slots".into(),
        json!({
            "waiting": c.waiting, "held": c.held, "writing": c.writing, "taken": c.taken,
            "moving": c.moving, "skipped": c.skipped, "moved_on": c.moved_on,
        }),
    );
    obj.insert(
        "handles".into(),
        Value::Array(q.handles.iter().map(handle_json).collect()),
    );
    obj.insert(
        "claims".into(),
        Value::Array(q.claims.iter().map(claim_json).collect()),
    );
    obj.insert("withheld".into(), json!(q.withheld));
    obj.insert(
        "repair_in_progress".into(),
        q.repair
            .map(|r| json!({"kind": repair_kind_name(r.kind), "ticket": r.ticket}))
            .unwrap_or(Value::Null),
    );
    obj.insert(
        "control_lock".into(),
        json!({
            "held": q.control_lock.held,
            "marked_held": q.control_lock.marked_held,
            "holder_died": q.control_lock.holder_died(),
        }),
    );
    obj.insert(
        "sleepers".into(),
        json!({
            "receivers": q.sleepers.receivers,
            "selective": q.sleepers.selective,
            "senders": q.sleepers.senders,
            "joiners": q.sleepers.joiners,
        }),
    );
    obj.insert("passed_over".into(), json!(q.passed_over));
}

fn pipe_json(p: &PipeState, detailed: bool, obj: &mut serde_json::Map<String, Value>) {
    let waiting: u64 = p.directions.iter().map(|d| d.waiting).sum();
    let bytes: u64 = p.directions.iter().map(|d| d.bytes_waiting).sum();
    obj.insert("waiting".into(), json!(waiting));
    obj.insert("bytes_waiting".into(), json!(bytes));
    obj.insert("live_pids".into(), json!(pipe_live_pids(p)));
    obj.insert("dead_pids".into(), json!(pipe_dead_pids(p)));
    let dirs: Vec<Value> = p
        .directions
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let mut v = json!({
                "direction": if i == 0 { "parent_to_child" } else { "child_to_parent" },
                "waiting": d.waiting,
                "bytes_waiting": d.bytes_waiting,
            });
            if detailed {
                let o = v.as_object_mut().expect("an object");
                o.insert("head".into(), json!(d.head));
                o.insert("tail".into(), json!(d.tail));
                o.insert("receiver_sleeping".into(), json!(d.receiver_sleeping));
                o.insert("sender_sleeping".into(), json!(d.sender_sleeping));
            }
            v
        })
        .collect();
    obj.insert("directions".into(), Value::Array(dirs));
    if detailed {
        let ends: Vec<Value> = p
            .ends
            .iter()
            .enumerate()
            .map(|(i, e)| {
                json!({
                    "end": if i == 0 { "parent" } else { "child" },
                    "pid": e.pid,
                    "alive": e.alive,
                })
            })
            .collect();
        obj.insert("ends".into(), Value::Array(ends));
    }
}

// ------------------------------------------------------------- inspect ---

/// Prints an error that ends a command, and says it failed.
pub fn fail(e: &dyn std::fmt::Display) -> Status {
    eprintln!("mulproc: {e}");
    Status::Problem
}

pub fn inspect(name: &str, json: bool) -> Status {
    let s = match inspect::snapshot(name) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    let (_, problem) = health(&s);
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&snapshot_json(&s, true)).unwrap_or_default()
        );
    } else {
        print!("{}", inspect_text(&s));
    }
    if problem {
        Status::Problem
    } else {
        Status::Ok
    }
}

fn holder_text(h: &Holder) -> String {
    match *h {
        Holder::Alive { entry, pid } => format!("pid {pid} (entry {entry}, alive)"),
        Holder::Dead { entry, pid } => format!("pid {pid} (entry {entry}, DEAD)"),
        _ => "unknown".into(),
    }
}

fn inspect_text(s: &Snapshot) -> String {
    let mut out = String::new();
    let f = &s.file;
    let (state, _) = health(s);
    out.push_str(&format!(
        "{}: {}\n",
        s.name,
        s.kind().map_or("segment", kind_name)
    ));
    out.push_str(&format!(
        "  file       {}/{}{}  {} bytes  owner {} ({})  group {} ({})  mode {:04o}  age {}\n",
        inspect::SHM_DIR,
        inspect::FILE_PREFIX,
        s.name,
        f.size,
        util::user_name(f.uid),
        f.uid,
        util::group_name(f.gid),
        f.gid,
        f.mode,
        util::age(f.created)
    ));
    out.push_str(&format!(
        "  state      {state}   (in use: {}, stale: {})\n",
        yes(s.in_use),
        yes(s.is_stale())
    ));
    if let Some(l) = s.layout() {
        out.push_str(&format!(
            "  layout     version {}, {} slots{} of up to {} bytes, stride {}, data at {}, {} bytes\n",
            l.version,
            l.capacity,
            if l.kind == ChannelKind::Pipe { " per direction" } else { "" },
            l.max_payload,
            l.stride,
            l.data_offset,
            l.total_size
        ));
        out.push_str(&format!(
            "  creator    pid {} (uid {})\n",
            l.creator_pid, l.creator_uid
        ));
    }
    match &s.contents {
        Err(p) => out.push_str(&format!("  contents   {p}\n")),
        Ok(Contents::Queue(q)) => queue_text(q, &mut out),
        Ok(Contents::Pipe(p)) => pipe_text(p, &mut out),
        Ok(_) => {}
    }
    if !s.anomalies().is_empty() {
        out.push_str("\nanomalies (states no honest run produces):\n");
        for a in s.anomalies() {
            out.push_str(&format!("  {a}\n"));
        }
    }
    out
}

fn yes(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn queue_text(q: &QueueState, out: &mut String) {
    let c = q.slots;
    out.push_str(&format!(
        "  positions  head {}  tail {}  depth {} of {}\n",
        q.head,
        q.tail,
        q.depth(),
        q.layout.capacity
    ));
    out.push_str(&format!(
        "  slots      {} waiting ({}), {} held by receivers, {} being written, {} read out of order, {} moving, {} skipped, {} freed while looked at{}\n",
        c.waiting,
        util::bytes(q.bytes_waiting),
        c.held,
        c.writing,
        c.taken,
        c.moving,
        c.skipped,
        c.moved_on,
        if q.scanned < q.depth() {
            format!(" (first {} looked at)", q.scanned)
        } else {
            String::new()
        }
    ));
    out.push_str(&format!(
        "  join       {} sent, {} done, {} unfinished\n",
        q.tail,
        q.done,
        q.unfinished()
    ));
    out.push_str(&format!(
        "  sleepers   receivers {}, selective {}, senders {}, joiners {}\n",
        q.sleepers.receivers, q.sleepers.selective, q.sleepers.senders, q.sleepers.joiners
    ));
    let lock = if q.control_lock.held {
        "held by a live process"
    } else if q.control_lock.holder_died() {
        "free; its last holder died inside (the next locker finishes its repair)"
    } else {
        "free"
    };
    out.push_str(&format!("  control    lock {lock}; repair record "));
    match q.repair {
        Some(r) => out.push_str(&format!(
            "{} of ticket {} (unfinished)\n",
            repair_kind_name(r.kind),
            r.ticket
        )),
        None => out.push_str("empty\n"),
    }
    let r = &q.recovery;
    out.push_str(&format!(
        "  recovery   skipped claims {}, fenced live {}, redelivered {}, abandoned tasks {}, undone moves {}, handovers {}, finished releases {}; withheld now {}\n",
        r.skipped_claims, r.fenced_live, r.redelivered, r.abandoned_tasks, r.undone_moves,
        r.handovers, r.finished_releases, q.withheld
    ));
    out.push_str(&format!(
        "  selective  {}\n",
        if q.passed_over {
            "a selective receive has passed a message over"
        } else {
            "no message passed over yet"
        }
    ));

    out.push_str(&format!("\nhandles ({}):\n", q.handles.len()));
    if q.handles.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut rows = vec![[
            "ENTRY",
            "STATUS",
            "PID",
            "GEN",
            "OUTSTANDING",
            "CLAIMING",
            "SENDING",
        ]
        .map(String::from)
        .to_vec()];
        for h in &q.handles {
            rows.push(vec![
                h.index.to_string(),
                match h.status {
                    HandleStatus::Dead => "DEAD".into(),
                    s => status_name(s).to_string(),
                },
                h.pid.to_string(),
                h.generation.to_string(),
                h.outstanding.to_string(),
                h.claiming.map_or("-".into(), |t| t.to_string()),
                h.sending.map_or("-".into(), |(a, b)| format!("{a}..{b}")),
            ]);
        }
        indent(&table(&rows), out);
    }

    out.push_str(&format!("\nclaims in flight ({}):\n", q.claims.len()));
    if q.claims.is_empty() {
        out.push_str("  none\n");
    } else {
        let mut rows = vec![["TICKET", "SLOT", "STATE", "HOLDER", "NAMED BY"]
            .map(String::from)
            .to_vec()];
        for c in &q.claims {
            rows.push(vec![
                c.ticket.to_string(),
                c.slot.to_string(),
                claim_kind_name(c.kind).into(),
                holder_text(&c.holder),
                if c.signed {
                    "owner word"
                } else {
                    "announcement"
                }
                .into(),
            ]);
        }
        indent(&table(&rows), out);
    }
}

fn pipe_text(p: &PipeState, out: &mut String) {
    for (i, e) in p.ends.iter().enumerate() {
        out.push_str(&format!(
            "  {} end {}\n",
            if i == 0 { "parent" } else { "child " },
            match (e.alive, e.pid) {
                (true, Some(pid)) => format!("pid {pid}, alive"),
                (true, None) => "held by a live process".into(),
                (false, Some(pid)) => format!("pid {pid}, gone"),
                (false, None) => "not taken".into(),
            }
        ));
    }
    for (i, d) in p.directions.iter().enumerate() {
        out.push_str(&format!(
            "  {}  sent {}  received {}  waiting {} ({}){}{}\n",
            if i == 0 {
                "parent -> child"
            } else {
                "child -> parent"
            },
            d.tail,
            d.head,
            d.waiting,
            util::bytes(d.bytes_waiting),
            if d.receiver_sleeping > 0 {
                "  receiver asleep"
            } else {
                ""
            },
            if d.sender_sleeping > 0 {
                "  sender waiting for room"
            } else {
                ""
            },
        ));
    }
}

fn indent(text: &str, out: &mut String) {
    for line in text.lines() {
        out.push_str("  ");
        out.push_str(line);
        out.push('\n');
    }
}

// ---------------------------------------------------------------- peek ---

pub fn peek(name: &str, count: usize, bytes: usize, json: bool) -> Status {
    let p = match inspect::peek(name, count, bytes) {
        Ok(p) => p,
        Err(e) => return fail(&e),
    };
    if json {
        let v = json!({
            "name": name,
            "kind": kind_name(p.kind),
            "messages": p.messages.iter().map(message_json).collect::<Vec<_>>(),
            "changed_while_read": p.changed,
            "anomalies": p.anomalies.iter().map(|a| a.to_string()).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else {
        if p.messages.is_empty() {
            println!("{name}: no message waiting");
        }
        for m in &p.messages {
            print!("{}", message_text(m));
        }
        if p.changed > 0 {
            println!(
                "({} more received or rewritten while being read, not shown)",
                p.changed
            );
        }
        for a in &p.anomalies {
            println!("anomaly: {a}");
        }
    }
    if p.anomalies.is_empty() {
        Status::Ok
    } else {
        Status::Problem
    }
}

fn direction_name(d: Option<usize>) -> Option<&'static str> {
    d.map(|d| {
        if d == 0 {
            "parent_to_child"
        } else {
            "child_to_parent"
        }
    })
}

fn message_json(m: &PeekedMessage) -> Value {
    json!({
        "ticket": m.ticket,
        "direction": direction_name(m.direction),
        "request": m.header.request.code(),
        "request_name": util::request_name(m.header.request),
        "sender": m.header.sender,
        "recipient": m.header.recipient,
        "len": m.len,
        "data_hex": util::hex(&m.data),
        "data_text": util::printable(&m.data),
        "truncated": m.is_truncated(),
    })
}

fn message_text(m: &PeekedMessage) -> String {
    let dir = match m.direction {
        Some(0) => "parent -> child  ",
        Some(_) => "child -> parent  ",
        None => "",
    };
    let mut s = format!(
        "#{}  {dir}{}  from {}  to {}  {} byte{}{}\n",
        m.ticket,
        util::request_name(m.header.request),
        m.header.sender,
        m.header
            .recipient
            .map_or("anyone".to_string(), |r| r.to_string()),
        m.len,
        plural(m.len as usize),
        if m.is_truncated() {
            format!(" (first {} shown)", m.data.len())
        } else {
            String::new()
        }
    );
    s.push_str(&util::hex_dump(&m.data, "    "));
    s
}
