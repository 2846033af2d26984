//! Writes a small seed corpus for both fuzz targets into
//! `tests/fuzz/corpus/<target>/` (the directories `cargo fuzz run` uses by
//! default), so fuzzing starts from valid segments and live queues instead
//! of from nothing:
//!
//! ```text
//! cargo run --manifest-path tests/fuzz/Cargo.toml --example gen_seeds
//! ```
//!
//! Seeds are named `seed-*` and are rewritten on every run; libFuzzer adds
//! its own files next to them.

use std::fs;
use std::path::{Path, PathBuf};

use mulproc::{Message, Pipe, Queue, QueueConfig, Request};
use mulproc_fuzz::{payload, Shm};

fn main() -> std::io::Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("corpus");
    let open_dir = root.join("open_segment");
    let slots_dir = root.join("receive_slots");
    fs::create_dir_all(&open_dir)?;
    fs::create_dir_all(&slots_dir)?;
    let mut n = 0;

    // open_segment, mode 0 (raw): the bytes of real segments, as `create`
    // and a few sends leave them (bit 4 of the mode byte left clear, so the
    // magic and version are the file's own).
    for (cap, max, sent) in [(2u32, 0u32, 0u32), (4, 32, 3), (8, 64, 8), (2, 100, 1)] {
        for pipe in [false, true] {
            let Some(bytes) = segment_bytes(cap, max, sent, pipe) else {
                continue;
            };
            let mut seed = vec![0u8];
            seed.extend_from_slice(&bytes);
            let kind = if pipe { "pipe" } else { "queue" };
            n += write(
                &open_dir,
                &format!("seed-raw-{kind}-{cap}x{max}-{sent}"),
                &seed,
            )?;
        }
    }
    // Mode 1 (forged): queue and pipe layouts, exact length, no patches;
    // 0x41: initialise the queue's sequence words.
    for (mode, c, max) in [
        (0x41u8, 1u8, 64u16),
        (0x51, 1, 64),
        (0x41, 3, 0),
        (0x01, 0, 1),
    ] {
        let mut seed = vec![mode, c];
        seed.extend_from_slice(&max.to_le_bytes());
        seed.extend_from_slice(&[0, 0, 0]); // length delta 0, 0 patches
        n += write(
            &open_dir,
            &format!("seed-forged-{mode:02x}-{c}-{max}"),
            &seed,
        )?;
    }
    // Modes 2 and 3 (real queue / pipe): capacity 4, max payload 64, three
    // messages, one out-of-order receive (queue), no patches.
    n += write(&open_dir, "seed-queue", &[0x02, 1, 64, 3, 1, 0])?;
    n += write(&open_dir, "seed-pipe", &[0x03, 1, 64, 3, 0])?;
    // One patch each: the tail (control word 0) set to head + 1, and the
    // first slot's sequence word set to "published".
    n += write(
        &open_dir,
        "seed-queue-tail",
        &[0x02, 1, 64, 3, 0, 1, 0x03, 0, 0x02, 1],
    )?;
    n += write(
        &open_dir,
        "seed-queue-seq",
        &[0x02, 1, 64, 3, 0, 1, 0x04, 0, 0, 0x05, 0, 1],
    )?;

    // receive_slots: capacity, max payload, rounds, messages, flags,
    // patches, then operations.
    let base = [
        ("plain", vec![1u8, 64, 0, 3, 0, 0]),
        ("laps", vec![1, 64, 9, 4, 0, 0]),
        ("out-of-order", vec![2, 16, 3, 8, 0x11, 0]),
        ("held", vec![1, 8, 0, 4, 0x06 | 0x40 | 0x80, 0]),
        ("second-handle", vec![1, 64, 1, 2, 0x08, 0]),
        ("zero-payload", vec![0, 0, 0, 2, 0, 0]),
    ];
    for (name, seed) in &base {
        n += write(&slots_dir, &format!("seed-{name}"), seed)?;
    }
    // One sequence-word patch of each relative kind on slot 0 (kind 4,
    // selector 0, value mode 5, lap 0, then which: FREE t, PUBLISHED t+1,
    // t+capacity, t+capacity+1, t-1), with and without flag bits.
    for which in 0u8..5 {
        for flags in [0u8, 0x40, 0x80, 0xC0] {
            let mut seed = vec![1u8, 64, 0, 3, 0, 1, 0x04, 0, 0, 0x05 | flags, 0, which];
            seed.extend_from_slice(&[0, 0, 1, 0, 2, 0, 3, 0, 4, 0]); // receives
            n += write(&slots_dir, &format!("seed-seq-{which}-{flags:02x}"), &seed)?;
        }
    }
    // A length over max payload in slot 0 (field 5 of the slot header).
    n += write(
        &slots_dir,
        "seed-len",
        &[1, 64, 0, 3, 0, 1, 0x05, 0, 0, 5, 0x04, 0xFF, 0, 0],
    )?;
    let shape = mulproc_fuzz::Shape::detect();
    println!(
        "wrote {n} seeds under {} (layout seen: version {}, queue slots at {}, slot header {} bytes, pipe slots at {})",
        root.display(),
        shape.version,
        shape.header,
        shape.slot_header,
        shape.pipe_header
    );
    Ok(())
}

/// The bytes of a real segment with `sent` messages in it.
fn segment_bytes(cap: u32, max: u32, sent: u32, pipe: bool) -> Option<Vec<u8>> {
    let shm = Shm::new("seed");
    let config = QueueConfig::new(cap, max);
    let msg = |i: u32| Message::new(Request::DO, payload(i, (i % (max + 1)) as usize));
    if pipe {
        let mut p = Pipe::create(shm.name(), config).ok()?;
        p.set_remove_on_drop(false);
        for i in 0..sent {
            let _ = p.try_send(msg(i));
        }
        let bytes = fs::read(shm.path()).ok();
        drop(p);
        bytes
    } else {
        let mut q = Queue::create(shm.name(), config).ok()?;
        q.set_remove_on_drop(false);
        for i in 0..sent {
            let _ = q.try_send(msg(i));
        }
        fs::read(shm.path()).ok()
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<usize> {
    let path: PathBuf = dir.join(name);
    fs::write(path, bytes)?;
    Ok(1)
}
