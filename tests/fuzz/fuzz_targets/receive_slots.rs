//! Fuzz target: random slot headers (and positions) under the receive path.
//!
//! Input, front to back (every read past the end gives 0):
//!
//! 1. capacity `2 << (b % 5)` (2..32), max payload `b` (0..255);
//! 2. `b` rounds of one send and one receive, so positions and sequence
//!    words are on a later lap (and may wrap around the ring);
//! 3. `b % (capacity + 1)` messages sent, some addressed;
//! 4. a flags byte: bit 0, receive some out of order first (read slots
//!    behind an unread one); bit 1, hold a received message (`RecvGuard`)
//!    across the patches; bit 2, hold a reservation (`SendSlot`) across them;
//!    bit 3, receive through a second handle from `Queue::open` (made after
//!    the patches, so `open` sees them too) instead of the creator's;
//! 5. `b % 16` patches: mostly slot header words (sequence words near the
//!    slot's ticket, with the ring's HELD/TAKEN flag bits, lengths,
//!    recipients, ...), also `head`/`tail`, layout fields and raw bytes;
//! 6. operations: every receive flavour (`try_recv`, `try_recv_ref`,
//!    `try_recv_into`, `try_recv_batch`, `try_recv_where`, and the blocking
//!    ones with a zero timeout), sends, reservations, `len`, `task_done`,
//!    more patches; then receives until `Empty` or an error, bounded.
//!
//! Checked: no panic, no hang, and every message received is at most max
//! payload long (the receive path must check the length it reads from the
//! slot header). The segment's length never changes here (see
//! open_segment for that), so no mapping can reach past the end of the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mulproc::{Message, Queue, QueueConfig, Request};
use mulproc_fuzz::{drain_queue, exercise_queue, fast_fixups, payload, Input, Shape, Shm, Target};

fuzz_target!(|data: &[u8]| run(data));

fn run(data: &[u8]) {
    let shape = Shape::detect();
    let mut input = Input::new(data);
    let shm = Shm::new("slots");
    let cap = 2u32 << (input.u8() % 5);
    let max = input.u8() as u32;
    let Ok(mut q) = Queue::create(shm.name(), QueueConfig::new(cap, max)) else {
        return;
    };
    q.set_remove_on_drop(false); // `shm` removes the name
    let pid = q.pid();

    for i in 0..input.u8() as u32 {
        let _ = q.try_send(Message::new(Request::DO, payload(i, 1.min(max as usize))));
        let _ = q.try_recv();
    }
    let n = input.u8() as u32 % (cap + 1);
    for i in 0..n {
        let m = Message::new(Request::new(i), payload(i, (i % (max + 1)) as usize));
        let m = match i % 3 {
            0 => m,
            1 => m.to(pid),
            _ => m.to(1),
        };
        let _ = q.try_send(m);
    }
    let flags = input.u8();
    if flags & 1 != 0 {
        for k in 0..=(flags >> 4) % 4 {
            let _ = q.try_recv_where(|h, _| h.request.code() % 2 == 1 || k == 3);
        }
    }

    let Ok(file) = shm.open() else { return };
    let target = Target {
        file: &file,
        pipe: false,
        shape,
        capacity: cap as u64,
        slot_stride: shape.slot_header,
        first_slot: shape.header,
        resize: false,
        min_len: 0,
        resized: Default::default(),
    };

    {
        // Held across the patches: released or committed onto whatever
        // the patches left.
        let guard = if flags & 2 != 0 {
            q.try_recv_ref().ok()
        } else {
            None
        };
        let slot = if flags & 4 != 0 {
            q.try_reserve().ok()
        } else {
            None
        };
        for _ in 0..input.u8() % 16 {
            target.patch(&mut input);
        }
        if let Some(g) = guard {
            assert!(g.data().len() <= max as usize);
            if flags & 0x40 != 0 {
                let _ = g.finish();
            }
        }
        if let Some(mut s) = slot {
            s.payload_mut()[..0].fill(0);
            if flags & 0x80 != 0 {
                let _ = s.commit(
                    Request::DO,
                    Some(pid),
                    (flags as usize) % (max as usize + 1),
                );
            }
        }
    }

    let opened = if flags & 8 != 0 {
        fast_fixups(&file, shape);
        Queue::open(shm.name()).ok()
    } else {
        None
    };
    let rx = opened.as_ref().unwrap_or(&q);
    exercise_queue(rx, &mut input, 32, |inp| target.patch(inp));
    drain_queue(&q);
    if let Some(o) = &opened {
        drain_queue(o);
    }
}
