//! Memory: the segment is exactly the documented size, and the hot paths
//! allocate nothing per message.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::time::{SystemTime, UNIX_EPOCH};

use mulproc::{Message, Pipe, PipeConfig, Queue, QueueConfig, Request};

/// Counts this thread's allocations (other test threads do not disturb it).
struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

// SAFETY: forwards to the system allocator; the counter is thread-local and
// does not allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|c| c.set(c.get() + 1));
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn allocations() -> u64 {
    ALLOCATIONS.with(|c| c.get())
}

fn unique(tag: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("mem-{tag}-{}-{nanos}", std::process::id())
}

const MESSAGES: u64 = 100_000;

/// Pins: the segment size formula in the README and `QueueConfig` docs,
/// `17,088 + capacity × (64 + round_up(max_payload, 64))`, matching the file
/// that is really created, with a slot header of 64 bytes.
#[test]
fn segment_size_is_the_documented_formula() {
    for (cap, max) in [(2u32, 0u32), (8, 1), (64, 64), (1024, 100), (16, 65_536)] {
        let name = unique("size");
        let cfg = QueueConfig::new(cap, max);
        let q = Queue::create(&name, cfg).unwrap();
        let expected = 17_088 + cap as u64 * (64 + (max as u64).div_ceil(64) * 64);
        assert_eq!(cfg.segment_size().unwrap(), expected);
        let on_disk = std::fs::metadata(format!("/dev/shm/mulproc.{name}"))
            .unwrap()
            .len();
        assert_eq!(on_disk, expected, "capacity {cap}, max payload {max}");
        drop(q);
    }
}

/// Pins: a heap allocation per message on the queue's zero-copy path
/// (`try_reserve` + `commit`, `try_recv_ref`) and on the copy-into-caller's
/// buffer path (`try_send` of borrowed bytes, `recv_into` a reused `Vec`).
#[test]
fn queue_hot_paths_do_not_allocate() {
    let name = unique("queue");
    let q = Queue::create(&name, QueueConfig::new(64, 64)).unwrap();
    let payload = [7u8; 64];
    let mut buf = Vec::with_capacity(64);

    // The counter sees this thread's allocations, so the zero below means
    // something: an owned receive allocates its payload.
    let before = allocations();
    q.try_send(Message::new(Request::DO, &payload[..])).unwrap();
    drop(q.try_recv().unwrap());
    assert!(
        allocations() > before,
        "the counting allocator counts nothing"
    );

    let before = allocations();
    for i in 0..MESSAGES {
        q.try_send(Message::new(Request::DO, &payload[..]).to(42))
            .unwrap();
        let h = q.recv_into(&mut buf).unwrap();
        assert_eq!(h.recipient, Some(42));
        assert_eq!(buf.len(), 64);

        let mut slot = q.try_reserve().unwrap();
        slot.payload_mut()[..8].copy_from_slice(&i.to_le_bytes());
        slot.commit(Request::FINISHED, None, 8).unwrap();
        let g = q.try_recv_ref().unwrap();
        assert_eq!(g.data(), i.to_le_bytes());
        drop(g);
    }
    assert_eq!(
        allocations() - before,
        0,
        "allocations over {MESSAGES} messages"
    );
}

/// Pins: a heap allocation per message on the pipe's paths (borrowed send,
/// `recv_into`, in-place receive).
#[test]
fn pipe_hot_paths_do_not_allocate() {
    let name = unique("pipe");
    let parent = Pipe::create(&name, PipeConfig::new(64, 64)).unwrap();
    let child = Pipe::open(&name).unwrap();
    let payload = [3u8; 64];
    let mut buf = Vec::with_capacity(64);

    let before = allocations();
    for _ in 0..MESSAGES {
        parent
            .try_send(Message::new(Request::DO, &payload[..]))
            .unwrap();
        child.recv_into(&mut buf).unwrap();
        assert_eq!(buf, payload);
        parent
            .try_send(Message::new(Request::DO, &payload[..8]))
            .unwrap();
        let g = child.try_recv_ref().unwrap();
        assert_eq!(g.data().len(), 8);
    }
    assert_eq!(
        allocations() - before,
        0,
        "allocations over {MESSAGES} messages"
    );
}
