//! Model checks of the pipe's single-producer single-consumer protocol
//! (`spsc`): the crate's own `Sender` and `Receiver` over one direction
//! built from heap memory (`Direction::new`), with loom's atomics.
//!
//! What is checked is slot ownership and delivery: every message is
//! received once, in order, with its payload intact, through wrap-around,
//! the lazily published `head` and the freed marks, guards released out of
//! order, the batch `take_run`, and a successor receiver. Each message's
//! value travels twice: in its header (atomics, `sender` field) and in a
//! per-slot loom `UnsafeCell` that the model writes between claim and
//! publish and reads between claim and release (where the real code copies
//! the payload), so loom reports a read racing an overwrite as a data race.
//!
//! The slots have no payload bytes (the real code copies zero bytes) and
//! the direction's event counts are the crate's real `EventCount`s, but no
//! model sleeps on them: the models are about slot ownership, not
//! wake-ups (those are `ring.rs`'s wait models). Under loom the sender's
//! "chasing" wait spins 2 times instead of 256 (`spsc::CHASE_PAUSE`).
//!
//! Spins are bounded (a number of tries with a yield between), as loom
//! needs; so a send or receive may give up, and the checks compare what
//! was received with what was sent.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use mulproc::__loom::{
    publish_every, Claimed, Direction, EventCount, PipeSlotHeader, Receiver, Sender,
};
use mulproc::{Header, Request};

/// One pipe direction on the heap, with one payload cell per slot.
struct Model {
    head: AtomicU64,
    tail: AtomicU64,
    slots: Vec<PipeSlotHeader>,
    payload: Vec<UnsafeCell<u64>>,
    not_empty: EventCount,
    not_full: EventCount,
}

// SAFETY: payload cells are accessed only by the slot's current owner, as
// the protocol decides — which is exactly what loom checks.
unsafe impl Sync for Model {}
// SAFETY: as above.
unsafe impl Send for Model {}

impl Model {
    fn new(capacity: usize) -> Arc<Model> {
        Arc::new(Model {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            slots: (0..capacity).map(|_| PipeSlotHeader::new()).collect(),
            payload: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
            not_empty: EventCount::new(),
            not_full: EventCount::new(),
        })
    }

    fn dir(&self) -> Direction<'_> {
        Direction::new(
            &self.head,
            &self.tail,
            &self.slots,
            &self.not_empty,
            &self.not_full,
        )
    }

    fn cell(&self, t: u64) -> &UnsafeCell<u64> {
        &self.payload[(t % self.payload.len() as u64) as usize]
    }

    /// The sending side, as a new holder of the end builds it.
    fn sender(&self) -> Sender {
        let d = self.dir();
        Sender::resume(
            d,
            self.tail.load(Ordering::Acquire),
            self.head.load(Ordering::Acquire),
        )
    }

    /// The receiving side, as a new holder of the end builds it from the
    /// published `head`.
    fn receiver(&self) -> Receiver {
        Receiver::resume(self.dir(), self.head.load(Ordering::Acquire))
            .expect("an honest run leaves honest words")
    }

    /// Sends `v`, retrying a full direction up to `tries` times; false if
    /// it stayed full.
    fn try_send(&self, tx: &Sender, v: u64, tries: u32) -> bool {
        let d = self.dir();
        for _ in 0..tries {
            match tx.claim(d) {
                Claimed::Slot(t) => {
                    // SAFETY: we hold ticket `t`'s slot (loom checks it).
                    self.cell(t).with_mut(|p| unsafe { *p = v });
                    tx.publish(d, t, &header(v), &[]);
                    return true;
                }
                Claimed::Unavailable => thread::yield_now(),
                c => panic!("honest send claims {c:?}"),
            }
        }
        false
    }

    /// Sends each of `values` with `tries` tries each; what was sent.
    fn send_each(
        &self,
        tx: &Sender,
        values: impl IntoIterator<Item = u64>,
        tries: u32,
    ) -> Vec<u64> {
        values
            .into_iter()
            .filter(|&v| self.try_send(tx, v, tries))
            .collect()
    }

    /// Takes the oldest message not taken yet, checks it and returns its
    /// ticket and value, without freeing it.
    fn take(&self, rx: &Receiver) -> Option<(u64, u64)> {
        self.take_where(rx, |_| true)
    }

    /// [`take`](Self::take) of the oldest message `accept` accepts.
    fn take_where(&self, rx: &Receiver, accept: impl Fn(u64) -> bool) -> Option<(u64, u64)> {
        let taken = rx
            .claim(self.dir(), 0, |h, _, len| {
                len == 0 && accept(u64::from(h.sender))
            })
            .expect("an honest message")?;
        // SAFETY: we hold ticket `taken.ticket`'s slot (loom checks it).
        let v = self.cell(taken.ticket).with(|p| unsafe { *p });
        assert_eq!(
            u64::from(taken.header.sender),
            v,
            "header and payload differ"
        );
        Some((taken.ticket, v))
    }

    /// Takes and frees the oldest message, if any.
    fn try_recv(&self, rx: &Receiver) -> Option<u64> {
        self.try_recv_where(rx, |_| true)
    }

    /// Takes and frees the oldest message whose header's value `accept`
    /// accepts (a selective receive: the ones before it stay), if any.
    fn try_recv_where(&self, rx: &Receiver, accept: impl Fn(u64) -> bool) -> Option<u64> {
        let (t, v) = self.take_where(rx, accept)?;
        rx.release(self.dir(), t).expect("an honest release");
        Some(v)
    }

    /// Up to `n` messages, `tries` looks for each.
    fn recv_n(&self, rx: &Receiver, n: usize, tries: u32) -> Vec<u64> {
        let mut got = Vec::new();
        'next: for _ in 0..n {
            for _ in 0..tries {
                if let Some(v) = self.try_recv(rx) {
                    got.push(v);
                    continue 'next;
                }
                thread::yield_now();
            }
            break;
        }
        got
    }

    /// Everything left.
    fn drain(&self, rx: &Receiver) -> Vec<u64> {
        std::iter::from_fn(|| self.try_recv(rx)).collect()
    }

    /// One batch receive of up to `max`: the values, read in place.
    fn take_run(&self, rx: &Receiver, max: usize) -> Vec<u64> {
        let first = rx.head();
        let mut got = Vec::new();
        let n = rx
            .take_run(self.dir(), 0, max, |h, data| {
                assert!(data.is_empty());
                let t = first + got.len() as u64;
                // SAFETY: ticket `t` is taken by us until `take_run` frees
                // the run (loom checks it).
                let v = self.cell(t).with(|p| unsafe { *p });
                assert_eq!(u64::from(h.sender), v, "header and payload differ");
                got.push(v);
            })
            .expect("the receiver holds nothing")
            .expect("honest messages");
        assert_eq!(n, got.len());
        got
    }
}

/// The header carrying `v`.
fn header(v: u64) -> Header {
    Header {
        request: Request::new(1),
        sender: v as u32,
        recipient: None,
    }
}

/// Capacity 2, five messages streamed while received: the ring wraps
/// around twice, `head` is published as the receiver goes and the sender
/// falls back on the freed marks when it finds it stale. Every message
/// sent is received once, in order, intact.
#[test]
fn stream_wraps_around() {
    loom::model(|| {
        let m = Model::new(2);
        let tx = m.sender();
        let rx = m.receiver();
        let sender = {
            let m = m.clone();
            thread::spawn(move || m.send_each(&tx, 1..=5, 3))
        };
        let mut got = m.recv_n(&rx, 5, 3);
        let sent = sender.join().unwrap();
        got.extend(m.drain(&rx));
        assert_eq!(got, sent);
    });
}

/// Capacity 8 (`head` published every 2 frees), full: the receiver frees
/// tickets 0-2, so the stored `head` stays at 2 while slot 2 is marked
/// freed. The sender's third message (ticket 10, slot 2) is possible only
/// through the freed mark, and must not overwrite the slot before the
/// receiver's read of it is done.
#[test]
fn lazy_head_freed_mark() {
    loom::model(|| {
        let m = Model::new(8);
        assert_eq!(publish_every(8), 2);
        let tx = m.sender();
        let rx = m.receiver();
        assert_eq!(m.send_each(&tx, 1..=8, 1), (1..=8).collect::<Vec<_>>());
        let sender = {
            let m = m.clone();
            thread::spawn(move || m.send_each(&tx, 9..=11, 2))
        };
        let mut got = m.recv_n(&rx, 3, 1);
        assert_eq!(got, [1, 2, 3]);
        let sent = sender.join().unwrap();
        got.extend(m.drain(&rx));
        assert_eq!(got, (1..=8).chain(sent).collect::<Vec<_>>());
    });
}

/// Capacity 8 (`head` published every 2 frees), six messages waiting:
/// the receiver takes four while the sender sends four more, the last two
/// wrapping around onto slots 0 and 1, whose frees the stored `head` may
/// or may not show yet.
#[test]
fn lazy_head_stream() {
    loom::model(|| {
        let m = Model::new(8);
        let tx = m.sender();
        let rx = m.receiver();
        assert_eq!(m.send_each(&tx, 1..=6, 1), (1..=6).collect::<Vec<_>>());
        let sender = {
            let m = m.clone();
            thread::spawn(move || m.send_each(&tx, 7..=10, 2))
        };
        let mut got = m.recv_n(&rx, 4, 1);
        assert_eq!(got, [1, 2, 3, 4]);
        let sent = sender.join().unwrap();
        got.extend(m.drain(&rx));
        assert_eq!(got, (1..=6).chain(sent).collect::<Vec<_>>());
    });
}

/// Capacity 2, full: the receiver holds both messages and frees the second
/// first, then the first, while the sender sends two more. The sender
/// writes in ticket order, so the marked second slot stays unwritten until
/// the held first is freed; neither held slot is overwritten.
#[test]
fn held_out_of_order() {
    loom::model(|| {
        let m = Model::new(2);
        let tx = m.sender();
        let rx = m.receiver();
        assert_eq!(m.send_each(&tx, [1, 2], 1), [1, 2]);
        let sender = {
            let m = m.clone();
            thread::spawn(move || m.send_each(&tx, [3, 4], 3))
        };
        let (t1, v1) = m.take(&rx).unwrap();
        let (t2, v2) = m.take(&rx).unwrap();
        assert_eq!((v1, v2), (1, 2));
        let d = m.dir();
        rx.release(d, t2).unwrap();
        // Still held: a second read must see the value unchanged.
        // SAFETY: we still hold ticket `t1` (loom checks it).
        assert_eq!(m.cell(t1).with(|p| unsafe { *p }), 1);
        rx.release(d, t1).unwrap();
        let mut got = vec![v1, v2];
        got.extend(m.recv_n(&rx, 2, 2));
        let sent = sender.join().unwrap();
        got.extend(m.drain(&rx));
        assert_eq!(got, [1, 2].into_iter().chain(sent).collect::<Vec<_>>());
    });
}

/// Capacity 4, full: a selective receive passes over the odd messages and
/// takes and frees the even ones behind them (marked freed, `head` stays),
/// then the passed-over ones are received, while the sender waits for the
/// first slot to be freed and streams two more. The slots freed out of
/// order are not rewritten before the ones ahead of them.
#[test]
fn selective_pass_over() {
    loom::model(|| {
        let m = Model::new(4);
        let tx = m.sender();
        let rx = m.receiver();
        assert_eq!(m.send_each(&tx, 1..=4, 1), [1, 2, 3, 4]);
        let sender = {
            let m = m.clone();
            thread::spawn(move || m.send_each(&tx, [5, 6], 3))
        };
        let mut got = Vec::new();
        for _ in 0..2 {
            got.extend(m.try_recv_where(&rx, |v| v % 2 == 0));
        }
        assert_eq!(got, [2, 4]);
        got.extend(m.recv_n(&rx, 4, 2));
        let sent = sender.join().unwrap();
        got.extend(m.drain(&rx));
        assert_eq!(
            got,
            [2, 4, 1, 3].into_iter().chain(sent).collect::<Vec<_>>()
        );
    });
}

/// Capacity 4: the receiver takes batches (`take_run`), which free a run
/// by one store of `head` and no marks, while the sender streams six
/// messages through the wrap-around.
#[test]
fn take_run_against_sender() {
    loom::model(|| {
        let m = Model::new(4);
        let tx = m.sender();
        let rx = m.receiver();
        let sender = {
            let m = m.clone();
            thread::spawn(move || m.send_each(&tx, 1..=6, 3))
        };
        let mut got = Vec::new();
        for _ in 0..3 {
            got.extend(m.take_run(&rx, 4));
            thread::yield_now();
        }
        let sent = sender.join().unwrap();
        loop {
            let run = m.take_run(&rx, 4);
            if run.is_empty() {
                break;
            }
            got.extend(run);
        }
        assert_eq!(got, sent);
    });
}

/// Capacity 8, full: a first receiver frees tickets 0-2 (`head` stored at
/// 2, slot 2 marked), takes ticket 3 and stops without freeing it. A
/// successor built from the published state, while the sender goes on,
/// passes the freed ticket 2 and starts at ticket 3: it reads exactly the
/// messages not freed, once each, in order.
#[test]
fn successor_receiver_skips_freed() {
    loom::model(|| {
        let m = Model::new(8);
        let tx = m.sender();
        assert_eq!(m.send_each(&tx, 1..=8, 1), (1..=8).collect::<Vec<_>>());
        let sender = {
            let m = m.clone();
            thread::spawn(move || m.send_each(&tx, 9..=10, 2))
        };
        let first = {
            let m = m.clone();
            thread::spawn(move || {
                let rx = m.receiver();
                let got = m.recv_n(&rx, 3, 1);
                let held = m.take(&rx).map(|(_, v)| v);
                (got, held)
            })
        };
        let (freed, held) = first.join().unwrap();
        assert_eq!((freed, held), (vec![1, 2, 3], Some(4)));
        let rx = m.receiver();
        assert_eq!(
            rx.head(),
            3,
            "the successor starts after every freed ticket"
        );
        let mut got = m.recv_n(&rx, 2, 1);
        let sent = sender.join().unwrap();
        got.extend(m.drain(&rx));
        assert_eq!(got, (4..=8).chain(sent).collect::<Vec<_>>());
    });
}
