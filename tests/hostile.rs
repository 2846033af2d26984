//! Property tests: whatever another process wrote into a segment, `open`
//! and the receive path return a result (often an error) — never a panic,
//! never an endless loop, never an access outside the mapping.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use mulproc::{Message, Queue, QueueConfig, Request};
use proptest::prelude::*;

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("hostile-{tag}-{}-{nanos}", std::process::id())
}

fn path(name: &str) -> String {
    format!("/dev/shm/mulproc.{name}")
}

/// Removes the segment file on drop, also when a property fails.
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(path(&self.0));
    }
}

/// Writes `bytes` at `offset` of the segment file of `name`.
fn scribble(name: &str, offset: u64, bytes: &[u8]) {
    let mut f = OpenOptions::new().write(true).open(path(name)).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    f.write_all(bytes).unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// Pins: `open` trusting a field of a segment it has not checked: a
    /// random file (random length, random bytes, with or without a valid
    /// magic, version and init word in front) opens or fails with a typed
    /// error, without panicking or mapping past its end.
    #[test]
    fn open_survives_random_segments(
        body in proptest::collection::vec(any::<u8>(), 0..4096),
        keep_magic in any::<bool>(),
        keep_init in any::<bool>(),
    ) {
        let name = unique("open");
        let _cleanup = Cleanup(name.clone());
        let mut bytes = body;
        if keep_magic && bytes.len() >= 16 {
            bytes[..8].copy_from_slice(b"MULPROC\0");
            bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
        }
        if keep_init && bytes.len() >= 68 {
            bytes[64..68].copy_from_slice(&0x1A17_D04Eu32.to_le_bytes());
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path(&name))
            .unwrap();
        f.write_all(&bytes).unwrap();
        drop(f);
        let t = Instant::now();
        if let Ok(q) = Queue::open(&name) {
            // Whatever it accepted, using it must not panic either.
            let _ = q.try_recv();
            let _ = q.try_send(Message::signal(Request::DO));
        }
        prop_assert!(t.elapsed() < Duration::from_secs(5));
    }

    /// Pins: the receive path trusting a slot header: random sequence
    /// words, lengths and positions written over a live queue give
    /// messages, `Empty` or `Corrupt`, never a panic, a hang, or a read past
    /// the slot.
    #[test]
    fn receive_survives_random_slot_headers(
        writes in proptest::collection::vec((0u64..(128 + 4 * 64), any::<u64>()), 1..12),
    ) {
        let name = unique("recv");
        let _cleanup = Cleanup(name.clone());
        let mut q = Queue::create(&name, QueueConfig::new(4, 32)).unwrap();
        q.set_remove_on_drop(false);
        q.try_send(Message::new(Request::DO, b"before".as_slice())).unwrap();
        for (offset, value) in &writes {
            // Positions (tail, head: lines 2 and 3) and the slot headers
            // (after the 512-byte header and the 16,576-byte control
            // block); 8-byte aligned.
            let offset = offset & !7;
            let offset = if offset < 128 { 128 + offset } else { 17_088 + offset - 128 };
            scribble(&name, offset, &value.to_le_bytes());
        }
        let t = Instant::now();
        for _ in 0..8 {
            if let Ok(m) = q.try_recv() {
                prop_assert!(m.data.len() <= 32);
            }
            let _ = q.try_send(Message::new(Request::DO, b"after".as_slice()));
            let _ = q.recv_timeout(Duration::from_millis(1));
        }
        let _ = q.len();
        prop_assert!(t.elapsed() < Duration::from_secs(10));
    }
}
