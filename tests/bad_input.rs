//! Bad input: oversized payloads, invalid names and configurations, name
//! clashes, and segments forged or scribbled on by hand in /dev/shm. Each
//! must give its typed error, never a panic, and leave nothing behind.

mod common;

use std::fs::{self, OpenOptions, Permissions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use common::*;
use mulproc::{
    ConfigError, CorruptError, CorruptKind, Message, NameProblem, PermissionProblem, Pipe, Queue,
    QueueConfig, RecvTimeoutError, Request, SetupError, TryRecvError, TrySendError, MAX_CAPACITY,
    MAX_NAME_LEN, MAX_PAYLOAD_LIMIT,
};

// Byte layout of a segment, from the crate's hidden export (derived from
// its structures): never copied numbers.
use mulproc::__layout::{
    CAPACITY_AT, CREATOR_PID_AT, DATA_OFFSET_AT, HEADER_SIZE_AT, INIT_AT, INIT_DONE, KIND_AT,
    MAGIC, MAGIC_AT, MAX_PAYLOAD_AT, SLOT_HEADER_SIZE_AT, SLOT_LEN_AT as SLOT_LEN,
    SLOT_SEQ_AT as SLOT_SEQ, STRIDE_AT, TAIL_AT, TOTAL_SIZE_AT, VERSION, VERSION_AT,
};
/// Where a queue's slot headers start: the segment header, then the
/// control block.
const HEADER: u64 = mulproc::__layout::QUEUE_HEADER_SIZE;
const SLOT: u64 = mulproc::__layout::SLOT_HEADER_SIZE;

/// The queue every forging test starts from: 8 slots of 64 bytes, so
/// stride 64, data after the 8 slot headers, total that + 8 × 64.
const CAP: u32 = 8;
const MAXP: u32 = 64;
const DATA_OFFSET: u64 = HEADER + CAP as u64 * SLOT;
const TOTAL: u64 = DATA_OFFSET + CAP as u64 * MAXP as u64;

/// Creates a real queue under `shm`'s name and closes it, leaving its file
/// for the caller to damage.
fn leave_segment(shm: &ShmGuard) {
    let mut q = Queue::create(shm.name(), QueueConfig::new(CAP, MAXP)).expect("create");
    q.set_remove_on_drop(false);
    drop(q);
    assert_eq!(fs::metadata(shm.path()).unwrap().len(), TOTAL);
}

fn set_len(shm: &ShmGuard, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(shm.path())
        .unwrap()
        .set_len(len)
        .unwrap();
}

fn corrupt_kind(r: Result<Queue, SetupError>) -> CorruptKind {
    match r {
        Err(SetupError::Corrupt { source, .. }) => source.kind,
        other => panic!("expected Corrupt, got {other:?}"),
    }
}

// ----------------------------------------------------------- payloads ---

/// Pins: an oversized payload is written (even partly) or swallowed:
/// `TooLarge` gives the message back, and the queue and its slot are
/// untouched, whether the queue has room or is full.
#[test]
fn oversized_payload_is_refused_and_nothing_written() {
    let shm = ShmGuard::new("too-large");
    let q = Queue::create(shm.name(), QueueConfig::new(4, 8)).unwrap();
    q.try_send(Message::new(Request::DO, b"ok".as_slice()))
        .unwrap();
    assert_eq!(q.len(), 1);
    // Next ticket is 1: slot 1's payload after the 4 slot headers and slot
    // 0's payload (8 bytes rounded up).
    let slot1_payload = HEADER + 4 * SLOT + mulproc::__layout::PAYLOAD_ALIGN;
    let big = vec![0x5Au8; 9];
    for via_send in [false, true] {
        let m = Message::new(Request::new(42), big.clone()).to(7);
        let err = if via_send {
            q.send(m).unwrap_err()
        } else {
            q.try_send(m).unwrap_err()
        };
        assert!(
            matches!(err, TrySendError::TooLarge { len: 9, max: 8, .. }),
            "{err:?}"
        );
        let back = err.into_inner();
        assert_eq!(back.data, big);
        assert_eq!((back.request, back.recipient), (Request::new(42), Some(7)));
        assert_eq!(q.len(), 1);
        assert_eq!(
            read_u64(shm.name(), slot1_payload),
            Some(0),
            "bytes written"
        );
    }
    // Exactly max_payload is fine.
    q.try_send(Message::new(Request::DO, vec![1u8; 8])).unwrap();
    // On a full queue an oversized payload is still TooLarge, not Full.
    q.try_send(Message::signal(Request::DO)).unwrap();
    q.try_send(Message::signal(Request::DO)).unwrap();
    assert!(matches!(
        q.try_send(Message::new(Request::DO, big.as_slice())),
        Err(TrySendError::TooLarge { len: 9, max: 8, .. })
    ));
    assert_eq!(q.try_recv().unwrap().data, b"ok");
    assert_eq!(q.try_recv().unwrap().data, [1u8; 8]);
    assert_eq!(q.len(), 2);
}

/// Pins: a zero max payload (signals only) and a too-large commit of an
/// in-place reservation: refused with `TooLarge`, the slot becomes a
/// tombstone that receivers skip.
#[test]
fn zero_max_payload_and_oversized_commit() {
    let shm = ShmGuard::new("zero-payload");
    let q = Queue::create(shm.name(), QueueConfig::new(2, 0)).unwrap();
    q.try_send(Message::signal(Request::DIE)).unwrap();
    assert!(matches!(
        q.try_send(Message::new(Request::DO, [1u8].as_slice())),
        Err(TrySendError::TooLarge { len: 1, max: 0, .. })
    ));
    let m = q.try_recv().unwrap();
    assert_eq!((m.request, m.data.len()), (Request::DIE, 0));

    let shm2 = ShmGuard::new("big-commit");
    let q = Queue::create(shm2.name(), QueueConfig::new(4, 16)).unwrap();
    let slot = q.try_reserve().unwrap();
    assert_eq!(
        slot.commit(Request::DO, None, 17).unwrap_err(),
        TrySendError::TooLarge {
            msg: (),
            len: 17,
            max: 16
        }
    );
    q.try_send(Message::new(Request::DO, b"after".as_slice()))
        .unwrap();
    let m = q.try_recv().unwrap();
    assert_eq!(
        (m.request, m.data.as_slice()),
        (Request::DO, b"after".as_slice())
    );
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
    assert!(q.is_empty());
}

// -------------------------------------------------------------- names ---

/// Pins: each kind of bad name is refused by create, open and remove with
/// the right `NameProblem`, before any file is made.
#[test]
fn invalid_names_are_refused() {
    let long = "x".repeat(MAX_NAME_LEN + 1);
    let cases: &[(&str, NameProblem)] = &[
        ("", NameProblem::Empty),
        (&long, NameProblem::TooLong),
        ("a/b", NameProblem::Slash),
        ("/jobs", NameProblem::Slash),
        ("jobs/", NameProblem::Slash),
        (".hidden", NameProblem::LeadingDot),
        ("..", NameProblem::LeadingDot),
        ("sp ace", NameProblem::BadCharacter),
        ("tab\t", NameProblem::BadCharacter),
        ("nul\0", NameProblem::BadCharacter),
        ("colon:x", NameProblem::BadCharacter),
        ("star*", NameProblem::BadCharacter),
        ("é", NameProblem::BadCharacter),
        ("new\nline", NameProblem::BadCharacter),
    ];
    assert_eq!(long.len(), 201);
    for (name, want) in cases {
        let check = |what: &str, e: SetupError| match e {
            SetupError::InvalidName { name: n, problem } => {
                assert_eq!(&n, name, "{what}");
                assert_eq!(problem, *want, "{what} {name:?}");
            }
            other => panic!("{what} {name:?}: expected InvalidName, got {other:?}"),
        };
        check(
            "create",
            Queue::create(name, QueueConfig::new(2, 8)).unwrap_err(),
        );
        check("open", Queue::open(name).unwrap_err());
        check("remove", Queue::remove(name).unwrap_err());
    }
}

/// Pins: an off-by-one at the name length limit: exactly 200 bytes works.
#[test]
fn name_of_max_length_works() {
    let mut name = unique_name("max-len");
    while name.len() < MAX_NAME_LEN {
        name.push('x');
    }
    assert_eq!(name.len(), 200);
    let _shm = ShmGuard::with_name(name.clone());
    let q = Queue::create(&name, QueueConfig::new(2, 8)).unwrap();
    let o = Queue::open(&name).unwrap();
    o.try_send(Message::new(Request::DO, b"hi".as_slice()))
        .unwrap();
    assert_eq!(q.try_recv().unwrap().data, b"hi");
    assert_eq!(q.name(), name);
}

// ------------------------------------------------------ configuration ---

/// Pins: bad capacities and sizes give their `ConfigError`, and no segment
/// is left behind.
#[test]
fn invalid_configs_are_refused() {
    let cases = [
        (QueueConfig::new(0, 8), ConfigError::CapacityTooSmall(0)),
        (QueueConfig::new(1, 8), ConfigError::CapacityTooSmall(1)),
        (
            QueueConfig::new(3, 8),
            ConfigError::CapacityNotPowerOfTwo(3),
        ),
        (
            QueueConfig::new(1000, 8),
            ConfigError::CapacityNotPowerOfTwo(1000),
        ),
        (
            QueueConfig::new(u32::MAX, 8),
            ConfigError::CapacityNotPowerOfTwo(u32::MAX),
        ),
        (
            QueueConfig::new(MAX_CAPACITY * 2, 8),
            ConfigError::CapacityTooLarge(MAX_CAPACITY * 2),
        ),
        (
            QueueConfig::new(2, MAX_PAYLOAD_LIMIT + 1),
            ConfigError::PayloadTooLarge(MAX_PAYLOAD_LIMIT + 1),
        ),
        (
            QueueConfig::new(MAX_CAPACITY, MAX_PAYLOAD_LIMIT),
            ConfigError::SegmentTooLarge,
        ),
    ];
    for (cfg, want) in cases {
        let shm = ShmGuard::new("bad-config");
        assert_eq!(cfg.segment_size(), Err(want));
        match Queue::create(shm.name(), cfg) {
            Err(SetupError::InvalidConfig(e)) => assert_eq!(e, want, "{cfg:?}"),
            other => panic!("{cfg:?}: expected InvalidConfig, got {other:?}"),
        }
        assert!(!shm.path().exists(), "{cfg:?} left a segment behind");
    }
    // The boundaries themselves are fine.
    for cfg in [
        QueueConfig::new(2, 0),
        QueueConfig::new(2, MAX_PAYLOAD_LIMIT),
    ] {
        assert!(cfg.segment_size().is_ok(), "{cfg:?}");
    }
}

// ---------------------------------------------------- names in the OS ---

/// Pins: name clashes and missing names: create twice is `AlreadyExists`
/// (and leaves the first queue working), open/remove of a missing name is
/// `NotFound`.
#[test]
fn create_twice_and_open_missing() {
    let shm = ShmGuard::new("twice");
    let q = Queue::create(shm.name(), QueueConfig::new(4, 8)).unwrap();
    q.try_send(Message::new(Request::DO, b"first".as_slice()))
        .unwrap();
    match Queue::create(shm.name(), QueueConfig::new(8, 16)) {
        Err(SetupError::AlreadyExists { name }) => assert_eq!(name, shm.name()),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    let o = Queue::open(shm.name()).unwrap();
    assert_eq!((o.capacity(), o.max_payload()), (4, 8));
    assert_eq!(o.try_recv().unwrap().data, b"first");

    let missing = ShmGuard::new("missing");
    match Queue::open(missing.name()) {
        Err(SetupError::NotFound { name }) => assert_eq!(name, missing.name()),
        other => panic!("expected NotFound, got {other:?}"),
    }
    assert!(matches!(
        Queue::remove(missing.name()),
        Err(SetupError::NotFound { .. })
    ));
}

/// Pins: name lifetime: the creating handle removes the name on drop (and
/// only its own segment, not a newer one of the same name); opened handles
/// never do; `remove` leaves open handles working; `close` reports.
#[test]
fn name_lifetime() {
    let shm = ShmGuard::new("lifetime");
    let name = shm.name();

    let q = Queue::create(name, QueueConfig::new(2, 8)).unwrap();
    drop(Queue::open(name).unwrap());
    assert!(shm.path().exists(), "an opened handle removed the name");
    drop(q);
    assert!(!shm.path().exists(), "creator drop did not remove the name");
    assert!(matches!(
        Queue::open(name),
        Err(SetupError::NotFound { .. })
    ));

    let q = Queue::create(name, QueueConfig::new(2, 8)).unwrap();
    let o = Queue::open(name).unwrap();
    Queue::remove(name).unwrap();
    assert!(matches!(
        Queue::open(name),
        Err(SetupError::NotFound { .. })
    ));
    o.try_send(Message::new(Request::DO, b"still".as_slice()))
        .unwrap();
    assert_eq!(q.try_recv().unwrap().data, b"still");
    // A new queue under the old name is not removed by the old creator.
    let q2 = Queue::create(name, QueueConfig::new(4, 8)).unwrap();
    drop(q);
    assert_eq!(Queue::open(name).unwrap().capacity(), 4);
    q2.close().unwrap();
    assert!(!shm.path().exists(), "close did not remove the name");

    let mut q = Queue::create(name, QueueConfig::new(2, 8)).unwrap();
    q.set_remove_on_drop(false);
    drop(q);
    assert!(shm.path().exists(), "set_remove_on_drop(false) ignored");
    Queue::remove(name).unwrap();
}

// ------------------------------------------------------------ forging ---

/// Pins: a foreign file under a queue's name is trusted: wrong magic is
/// `NotAQueue`.
#[test]
fn forged_wrong_magic() {
    let shm = ShmGuard::new("magic");
    leave_segment(&shm);
    patch(shm.name(), MAGIC_AT, b"NOTMULPR");
    match Queue::open(shm.name()) {
        Err(SetupError::NotAQueue { name }) => assert_eq!(name, shm.name()),
        other => panic!("expected NotAQueue, got {other:?}"),
    }
}

/// Pins: a segment of another layout version is used:
/// `IncompatibleVersion` with both versions.
#[test]
fn forged_wrong_version() {
    for v in [0u32, 1, VERSION - 1, VERSION + 1, u32::MAX] {
        let shm = ShmGuard::new("version");
        leave_segment(&shm);
        patch_u32(shm.name(), VERSION_AT, v);
        match Queue::open(shm.name()) {
            Err(SetupError::IncompatibleVersion {
                found, expected, ..
            }) => assert_eq!((found, expected), (v, VERSION)),
            other => panic!("version {v}: expected IncompatibleVersion, got {other:?}"),
        }
    }
}

/// Pins: a file shorter than its layout is mapped and used (SIGBUS):
/// `Corrupt(Truncated)` with both sizes.
#[test]
fn forged_truncated() {
    for (len, expected) in [
        (TOTAL - 1, TOTAL),
        (DATA_OFFSET, TOTAL),
        (513, TOTAL),
        (100, 512),
    ] {
        let shm = ShmGuard::new("truncated");
        leave_segment(&shm);
        set_len(&shm, len);
        assert_eq!(
            corrupt_kind(Queue::open(shm.name())),
            CorruptKind::Truncated {
                expected,
                found: len
            },
            "file of {len} bytes"
        );
    }
    // Layout fields consistent with each other but calling for more than
    // the file holds (capacity 16 in a file made for 8).
    let shm = ShmGuard::new("truncated-consistent");
    leave_segment(&shm);
    patch_u32(shm.name(), CAPACITY_AT, 16);
    patch_u64(shm.name(), DATA_OFFSET_AT, HEADER + 16 * SLOT);
    patch_u64(
        shm.name(),
        TOTAL_SIZE_AT,
        HEADER + 16 * (SLOT + MAXP as u64),
    );
    assert_eq!(
        corrupt_kind(Queue::open(shm.name())),
        CorruptKind::Truncated {
            expected: HEADER + 16 * (SLOT + MAXP as u64),
            found: TOTAL
        }
    );
}

/// Pins: a larger file than the layout needs is fine (the layout decides).
#[test]
fn forged_oversized_file_is_accepted() {
    let shm = ShmGuard::new("bigger");
    leave_segment(&shm);
    set_len(&shm, TOTAL + 8192);
    let q = Queue::open(shm.name()).unwrap();
    assert_eq!(
        (q.capacity(), q.max_payload()),
        (CAP as usize, MAXP as usize)
    );
    q.try_send(Message::new(Request::DO, b"x".as_slice()))
        .unwrap();
    assert_eq!(q.try_recv().unwrap().data, b"x");
}

/// Pins: layout fields that contradict each other or the layout formula
/// are trusted: each is `Corrupt(LayoutFields)`.
#[test]
fn forged_inconsistent_layout_fields() {
    let cases: &[(&str, u64, u64, bool)] = &[
        // (what, offset, value, is_u64)
        ("header_size", HEADER_SIZE_AT, 256, false),
        ("header_size 0", HEADER_SIZE_AT, 0, false),
        ("slot_header_size", SLOT_HEADER_SIZE_AT, 128, false),
        ("capacity 0", CAPACITY_AT, 0, false),
        ("capacity 1", CAPACITY_AT, 1, false),
        ("capacity 3", CAPACITY_AT, 3, false),
        ("capacity 16", CAPACITY_AT, 16, false),
        ("capacity max", CAPACITY_AT, u32::MAX as u64, false),
        ("max_payload 200", MAX_PAYLOAD_AT, 200, false),
        ("max_payload max", MAX_PAYLOAD_AT, u32::MAX as u64, false),
        ("stride 8", STRIDE_AT, 8, false),
        ("stride 0", STRIDE_AT, 0, false),
        ("data_offset +64", DATA_OFFSET_AT, DATA_OFFSET + 64, true),
        ("data_offset 0", DATA_OFFSET_AT, 0, true),
        ("data_offset max", DATA_OFFSET_AT, u64::MAX, true),
        ("total_size -1", TOTAL_SIZE_AT, TOTAL - 1, true),
        ("total_size +4096", TOTAL_SIZE_AT, TOTAL + 4096, true),
        ("total_size max", TOTAL_SIZE_AT, u64::MAX, true),
    ];
    for &(what, at, v, wide) in cases {
        let shm = ShmGuard::new("layout");
        leave_segment(&shm);
        if wide {
            patch_u64(shm.name(), at, v);
        } else {
            patch_u32(shm.name(), at, v as u32);
        }
        assert_eq!(
            corrupt_kind(Queue::open(shm.name())),
            CorruptKind::LayoutFields,
            "{what}"
        );
    }
}

/// Pins: a half-initialised segment (creator died before the init word) is
/// used, or `open` hangs: `InitIncomplete` with the recorded creator pid,
/// after the bounded wait.
#[test]
fn forged_init_never_completed() {
    let shm = ShmGuard::new("init");
    leave_segment(&shm);
    assert_eq!(read_u32(shm.name(), INIT_AT), Some(INIT_DONE));
    assert_eq!(
        read_u32(shm.name(), CREATOR_PID_AT),
        Some(std::process::id())
    );
    patch_u32(shm.name(), INIT_AT, 0);
    let t = Instant::now();
    match Queue::open(shm.name()) {
        Err(SetupError::InitIncomplete { creator_pid, .. }) => {
            assert_eq!(creator_pid, std::process::id())
        }
        other => panic!("expected InitIncomplete, got {other:?}"),
    }
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "open waited too long"
    );

    // A creator that got no further than sizing the file: all zeros.
    let shm = ShmGuard::new("init-zeros");
    forge_file(shm.name(), &[0u8; TOTAL as usize]);
    match Queue::open(shm.name()) {
        Err(SetupError::InitIncomplete { creator_pid, .. }) => assert_eq!(creator_pid, 0),
        other => panic!("expected InitIncomplete, got {other:?}"),
    }

    // Not ours at all, and not initialised either: NotAQueue.
    let shm = ShmGuard::new("init-garbage");
    forge_file(shm.name(), &[0xEEu8; 4096]);
    assert!(matches!(
        Queue::open(shm.name()),
        Err(SetupError::NotAQueue { .. })
    ));
}

/// Pins: a hand-made file with a correct header opens and works (the
/// forging tests above test the checks, not the byte layout's spelling).
#[test]
fn forged_valid_segment_opens() {
    let shm = ShmGuard::new("forged-ok");
    let mut bytes = vec![0u8; TOTAL as usize];
    let put32 = |b: &mut Vec<u8>, at: u64, v: u32| {
        b[at as usize..at as usize + 4].copy_from_slice(&v.to_le_bytes())
    };
    let put64 = |b: &mut Vec<u8>, at: u64, v: u64| {
        b[at as usize..at as usize + 8].copy_from_slice(&v.to_le_bytes())
    };
    put64(&mut bytes, MAGIC_AT, MAGIC);
    put32(&mut bytes, VERSION_AT, VERSION);
    put32(&mut bytes, HEADER_SIZE_AT, HEADER as u32);
    put32(&mut bytes, CAPACITY_AT, CAP);
    put32(&mut bytes, MAX_PAYLOAD_AT, MAXP);
    put32(&mut bytes, SLOT_HEADER_SIZE_AT, SLOT as u32);
    put32(&mut bytes, STRIDE_AT, MAXP);
    put64(&mut bytes, DATA_OFFSET_AT, DATA_OFFSET);
    put64(&mut bytes, TOTAL_SIZE_AT, TOTAL);
    put32(&mut bytes, CREATOR_PID_AT, 1);
    put32(&mut bytes, KIND_AT, 1);
    for i in 0..CAP as u64 {
        put64(&mut bytes, HEADER + i * SLOT + SLOT_SEQ, i);
    }
    put32(&mut bytes, INIT_AT, INIT_DONE);
    forge_file(shm.name(), &bytes);
    let q = Queue::open(shm.name()).unwrap();
    for i in 0..20u8 {
        q.try_send(Message::new(Request::DO, vec![i; i as usize]))
            .unwrap();
        assert_eq!(q.try_recv().unwrap().data, vec![i; i as usize]);
    }
}

/// Pins: a segment other users can read or write is trusted:
/// `PermissionDenied(OpenToOthers)`; group access (0660) is allowed.
#[test]
fn segment_open_to_others_is_refused() {
    for mode in [0o666, 0o604, 0o602, 0o601, 0o677] {
        let shm = ShmGuard::new("mode");
        leave_segment(&shm);
        fs::set_permissions(shm.path(), Permissions::from_mode(mode)).unwrap();
        match Queue::open(shm.name()) {
            Err(SetupError::PermissionDenied {
                reason: PermissionProblem::OpenToOthers { mode: m },
                ..
            }) => assert_eq!(m & 0o777, mode, "{mode:o}"),
            other => panic!("mode {mode:o}: expected OpenToOthers, got {other:?}"),
        }
    }
    let shm = ShmGuard::new("mode-group");
    leave_segment(&shm);
    fs::set_permissions(shm.path(), Permissions::from_mode(0o660)).unwrap();
    Queue::open(shm.name()).expect("group access refused");

    // And create makes 0600 (0660 shared with the group), whatever the umask.
    let shm = ShmGuard::new("mode-created");
    let _q = Queue::create(shm.name(), QueueConfig::new(2, 8)).unwrap();
    assert_eq!(fs::metadata(shm.path()).unwrap().mode() & 0o777, 0o600);
    let shm = ShmGuard::new("mode-created-group");
    let _q = Queue::create(shm.name(), QueueConfig::new(2, 8).share_with_group()).unwrap();
    assert_eq!(fs::metadata(shm.path()).unwrap().mode() & 0o777, 0o660);
}

/// Pins: a segment owned by another user is trusted:
/// `PermissionDenied(OtherOwner)`. Needs root to give the file away;
/// skipped (passes) otherwise.
#[test]
fn segment_of_other_owner_is_refused() {
    let shm = ShmGuard::new("owner");
    leave_segment(&shm);
    if std::os::unix::fs::chown(shm.path(), Some(65534), None).is_err() {
        eprintln!("not root: cannot chown, OtherOwner not tested");
        return;
    }
    let me = fs::metadata("/proc/self").unwrap().uid();
    match Queue::open(shm.name()) {
        Err(SetupError::PermissionDenied {
            reason: PermissionProblem::OtherOwner { owner, me: m },
            ..
        }) => assert_eq!((owner, m), (65534, me)),
        other => panic!("expected OtherOwner, got {other:?}"),
    }
}

// --------------------------------------- scribbling on a live segment ---

/// Pins: a message length over max payload written into a slot by a
/// misbehaving process is trusted (out-of-bounds read) or stops the queue:
/// it is `Corrupt(Length)`, and the messages behind it still arrive.
#[test]
fn scribbled_message_length_is_refused_and_queue_goes_on() {
    let shm = ShmGuard::new("scribble-len");
    let q = Queue::create(shm.name(), QueueConfig::new(4, 8)).unwrap();
    for m in [b"one".as_slice(), b"two", b"three"] {
        q.try_send(Message::new(Request::DO, m)).unwrap();
    }
    patch_u32(shm.name(), HEADER + SLOT_LEN, 9); // slot 0: ticket 0
    patch_u32(shm.name(), HEADER + SLOT + SLOT_LEN, u32::MAX); // slot 1
    assert_eq!(
        q.try_recv().unwrap_err(),
        TryRecvError::Corrupt(CorruptError {
            kind: CorruptKind::Length { len: 9, max: 8 }
        })
    );
    assert_eq!(
        q.recv_timeout(Duration::from_secs(5)).unwrap_err(),
        RecvTimeoutError::Corrupt(CorruptError {
            kind: CorruptKind::Length {
                len: u32::MAX,
                max: 8
            }
        })
    );
    assert_eq!(q.try_recv().unwrap().data, b"three");
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
    for i in 0..10u8 {
        q.try_send(Message::new(Request::DO, vec![i])).unwrap();
        assert_eq!(q.try_recv().unwrap().data, [i]);
    }
}

/// Pins: sequence words no honest process writes make send or receive spin
/// forever or panic: they report `Corrupt(Positions)` and give the message
/// back.
#[test]
fn scribbled_sequence_words_are_reported() {
    let shm = ShmGuard::new("scribble-seq");
    let q = Queue::create(shm.name(), QueueConfig::new(4, 8)).unwrap();
    q.try_send(Message::new(Request::DO, b"x".as_slice()))
        .unwrap();
    for i in 0..4 {
        patch_u64(shm.name(), HEADER + i * SLOT + SLOT_SEQ, 1 << 40);
    }
    let positions = CorruptError {
        kind: CorruptKind::Positions,
    };
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Corrupt(positions));
    let t = Instant::now();
    assert_eq!(
        q.recv_timeout(Duration::from_secs(5)).unwrap_err(),
        RecvTimeoutError::Corrupt(positions)
    );
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "waited instead of reporting"
    );
    assert!(matches!(
        q.try_recv_ref(),
        Err(TryRecvError::Corrupt(CorruptError {
            kind: CorruptKind::Positions
        }))
    ));
    match q.try_send(Message::new(Request::DO, b"back".as_slice())) {
        Err(TrySendError::Corrupt(m, e)) => {
            assert_eq!(m.data, b"back");
            assert_eq!(e, positions);
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    let t = Instant::now();
    assert!(matches!(
        q.send(Message::new(Request::DO, b"back".as_slice())),
        Err(TrySendError::Corrupt(..))
    ));
    assert!(
        t.elapsed() < Duration::from_secs(4),
        "waited instead of reporting"
    );
    assert!(matches!(q.try_reserve(), Err(TrySendError::Corrupt((), _))));
}

/// Pins: any panic, arithmetic overflow (debug build) or endless loop on
/// arbitrary positions, sequence words and slot headers: a fixed-seed
/// scribbler overwrites them, and every operation must return. (Receives
/// that find impossible positions retry a bounded number of times before
/// reporting `Corrupt`, ~7 ms each in a debug build: hence few rounds.)
#[test]
fn scribbled_control_words_never_panic_or_hang() {
    let shm = ShmGuard::new("scribble-fuzz");
    let q = Queue::create(shm.name(), QueueConfig::new(CAP, MAXP)).unwrap();
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let t = Instant::now();
    let mut buf = Vec::new();
    for round in 0..150 {
        for _ in 0..1 + next() % 4 {
            // Any 8-aligned word from the tail position to the end of the
            // slot headers (the layout info is copied and checked at open).
            let at = TAIL_AT + (next() % ((DATA_OFFSET - TAIL_AT) / 8)) * 8;
            let v = match next() % 5 {
                0 => next() % 64,
                1 => u64::MAX - next() % 64,
                2 => next() & 0xFFFF_FFFF,
                3 => (next() % 64) << 32 | (next() % 64),
                _ => next(),
            };
            patch_u64(shm.name(), at, v);
        }
        for _ in 0..2 {
            let _ = q.try_send(Message::new(Request::DO, [round as u8; 5].as_slice()));
            let _ = q.try_recv();
            if let Ok(slot) = q.try_reserve() {
                let _ = slot.commit(Request::DO, None, (next() % 80) as usize);
            }
            if let Ok(g) = q.try_recv_ref() {
                assert!(g.data().len() <= MAXP as usize);
                let _ = g.finish();
            }
            let _ = q.recv_into_timeout(&mut buf, Duration::ZERO);
            let _ = q.recv_timeout(Duration::ZERO);
            assert!(q.len() <= CAP as usize);
            let _ = q.is_empty();
        }
    }
    eprintln!("150 scribble rounds in {:?}", t.elapsed());
}

/// Pins: arbitrary layout fields make `open` panic or overflow: a fixed-seed
/// scribbler damages the layout info of valid segments; `open` must return
/// (Ok or an error), and an Ok queue must work.
#[test]
fn scribbled_layout_info_never_panics() {
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    let mut opened = 0;
    for _ in 0..150 {
        let shm = ShmGuard::new("layout-fuzz");
        leave_segment(&shm);
        for _ in 0..1 + next() % 3 {
            // Layout info only, before the init word (kept intact so every
            // round reaches the field checks instead of the init wait).
            let at = (next() % 8) * 8;
            let v = match next() % 3 {
                0 => next() % 4096,
                1 => u64::MAX - next() % 4096,
                _ => next(),
            };
            patch_u64(shm.name(), at, v);
        }
        if let Ok(q) = Queue::open(shm.name()) {
            opened += 1;
            q.try_send(Message::new(Request::DO, b"ok".as_slice()))
                .unwrap();
            assert_eq!(q.try_recv().unwrap().data, b"ok");
        }
    }
    eprintln!("{opened} of 150 damaged segments still opened");
}

/// Pins (found by the fuzz targets, `tests/fuzz/artifacts/`): positions and
/// counters at the top of their range, written by another process, give
/// `Corrupt` or are carried on with, never an arithmetic overflow (a panic
/// in debug builds): a pipe whose direction heads or tails are near
/// `u64::MAX` when an end is opened; a queue whose `done_count` is
/// `u64::MAX` when a task is marked done or a reservation given up.
#[test]
fn positions_and_counters_at_the_top_of_their_range() {
    // The child end reads its own direction's (1) positions and the head
    // of the other.
    use mulproc::__layout::{pipe_head_at, pipe_tail_at, DONE_COUNT_AT};
    for (what, at) in [
        ("dir 0 head", pipe_head_at(0)),
        ("dir 1 tail", pipe_tail_at(1)),
        ("dir 1 head", pipe_head_at(1)),
    ] {
        let shm = ShmGuard::new("pipe-top");
        let mut p = Pipe::create(shm.name(), QueueConfig::new(4, 16)).unwrap();
        p.set_remove_on_drop(false);
        drop(p);
        patch_u64(shm.name(), at, u64::MAX);
        match Pipe::open(shm.name()) {
            Err(SetupError::Corrupt { source, .. }) => {
                assert_eq!(source.kind, CorruptKind::Positions, "{what}")
            }
            other => panic!("{what}: expected Corrupt, got {other:?}"),
        }
    }
    // Queue: the join counter at its top.
    let shm = ShmGuard::new("done-top");
    let q = Queue::create(shm.name(), QueueConfig::new(4, 16)).unwrap();
    patch_u64(shm.name(), DONE_COUNT_AT, u64::MAX);
    drop(q.try_reserve().unwrap()); // given up: counted done
    q.try_send(Message::new(Request::DO, b"x".as_slice()))
        .unwrap();
    q.try_recv().unwrap();
    q.task_done().unwrap();
    // The count wrapped: join may not be satisfied, but answers.
    let _ = q.join_timeout(Duration::from_millis(10));
}
