//! Property tests: whatever another process wrote into a segment, `open`
//! and the receive path return a result (often an error) — never a panic,
//! never an endless loop, never an access outside the mapping.

mod common;

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::time::{Duration, Instant};

use common::{patch as scribble, shm_path, ShmGuard};
use mulproc::__layout::{
    CACHE_LINE, INIT_AT, INIT_DONE, MAGIC, MAGIC_AT, QUEUE_HEADER_SIZE, SLOT_HEADER_SIZE as SLOT,
    TAIL_AT, VERSION, VERSION_AT,
};
use mulproc::{Message, Queue, QueueConfig, Request};
use proptest::prelude::*;

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
        let shm = ShmGuard::new("hostile-open");
        let name = shm.name().to_owned();
        let mut bytes = body;
        let (magic, version, init) = (MAGIC_AT as usize, VERSION_AT as usize, INIT_AT as usize);
        if keep_magic && bytes.len() >= version + 4 {
            bytes[magic..magic + 8].copy_from_slice(&MAGIC.to_le_bytes());
            bytes[version..version + 4].copy_from_slice(&VERSION.to_le_bytes());
        }
        if keep_init && bytes.len() >= init + 4 {
            bytes[init..init + 4].copy_from_slice(&INIT_DONE.to_le_bytes());
        }
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(shm_path(&name))
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
        writes in proptest::collection::vec((0u64..(2 * CACHE_LINE + 4 * SLOT), any::<u64>()), 1..12),
    ) {
        let shm = ShmGuard::new("hostile-recv");
        let name = shm.name().to_owned();
        let mut q = Queue::create(&name, QueueConfig::new(4, 32)).unwrap();
        q.set_remove_on_drop(false);
        q.try_send(Message::new(Request::DO, b"before".as_slice())).unwrap();
        for (offset, value) in &writes {
            // Positions (tail, head: two lines from TAIL_AT) and the slot
            // headers (after the header and the control block); 8-byte
            // aligned.
            let offset = offset & !7;
            let lines = 2 * CACHE_LINE;
            let offset = if offset < lines { TAIL_AT + offset } else { QUEUE_HEADER_SIZE + offset - lines };
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
