//! Model checks of the ring: exclusive ownership of slots, exactly-once
//! delivery, per-producer order, wrap-around at capacity 2, receivers
//! taking messages out of order, the wait protocol's wake-ups, and crash
//! recovery's fencing, quarantine and redelivery.
#![cfg(loom)]

use loom::cell::UnsafeCell;
use loom::sync::atomic::{AtomicU64, Ordering};
use loom::sync::Arc;
use loom::thread;
use mulproc::__loom::{ClaimError, ClaimEvent, EventCount, Ring, SlotHeader, Wake};

/// A ring on the heap with one payload cell per slot. The payload is a loom
/// `UnsafeCell`, so any access to it that the ring's orderings do not
/// separate is reported as a data race.
struct Model {
    head: AtomicU64,
    tail: AtomicU64,
    slots: Vec<SlotHeader>,
    payload: Vec<UnsafeCell<u64>>,
    not_empty: EventCount,
}

// SAFETY: payload cells are accessed only by the slot's current owner, as
// the ring's protocol decides — which is exactly what loom checks.
unsafe impl Sync for Model {}
// SAFETY: as above.
unsafe impl Send for Model {}

impl Model {
    fn new(capacity: u64) -> Arc<Model> {
        Arc::new(Model {
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            slots: (0..capacity).map(SlotHeader::new).collect(),
            payload: (0..capacity).map(|_| UnsafeCell::new(0)).collect(),
            not_empty: EventCount::new(),
        })
    }

    fn ring(&self) -> Ring<'_> {
        Ring::new(&self.head, &self.tail, &self.slots)
    }

    fn cell(&self, t: u64) -> &UnsafeCell<u64> {
        &self.payload[(t % self.payload.len() as u64) as usize]
    }

    /// Sends `v`, retrying a full ring up to `tries` times; false if it
    /// stayed full. (Unbounded spins make loom's search unbounded: a
    /// spinning thread may read a stale value forever in the model.)
    fn try_send(&self, v: u64, tries: u32) -> bool {
        let mut t = None;
        for _ in 0..tries {
            match self.ring().try_claim_send() {
                Ok(ticket) => {
                    t = Some(ticket);
                    break;
                }
                Err(ClaimError::Unavailable) => thread::yield_now(),
                Err(ClaimError::Corrupt) => panic!("corrupt on send"),
            }
        }
        let Some(t) = t else { return false };
        // SAFETY: we hold ticket `t`'s slot (loom checks this claim).
        self.cell(t).with_mut(|p| unsafe { *p = v });
        self.ring()
            .publish(t)
            .expect("an honest publish is never fenced");
        self.not_empty.notify(Wake::One);
        true
    }

    /// Sends `v` into a ring known to have room.
    fn send(&self, v: u64) {
        assert!(self.try_send(v, 1), "ring unexpectedly full");
    }

    /// Sends each of `values` (two tries each), and if `interleave`
    /// receives one message after each send; returns what was sent and
    /// what was received.
    fn send_each(&self, values: &[u64], interleave: bool) -> (Vec<u64>, Vec<u64>) {
        let (mut sent, mut got) = (Vec::new(), Vec::new());
        for &v in values {
            if self.try_send(v, 2) {
                sent.push(v);
            }
            if interleave {
                got.extend(self.try_recv());
            }
        }
        (sent, got)
    }

    /// Up to two messages, each taken if there is one.
    fn recv_two(&self) -> Vec<u64> {
        let mut got: Vec<u64> = self.try_recv().into_iter().collect();
        got.extend(self.try_recv());
        got
    }

    /// Everything left, in ticket order.
    fn drain(&self) -> Vec<u64> {
        std::iter::from_fn(|| self.try_recv()).collect()
    }

    /// Takes one message that `accept` accepts (after a peek at its
    /// value, as the queue's predicate receive does), if any.
    fn try_recv_where(&self, accept: impl Fn(u64) -> bool) -> Option<u64> {
        // SAFETY: read-only; a racy peek is what invariant 3 guards.
        self.take(|t| accept(self.cell(t).with(|p| unsafe { *p })))
    }

    /// Takes the oldest message, if any.
    fn try_recv(&self) -> Option<u64> {
        self.take(|_| true)
    }

    /// Claims a message through `accept`, reads it and releases the slot.
    fn take(&self, accept: impl FnMut(u64) -> bool) -> Option<u64> {
        let ring = self.ring();
        match ring.try_claim_recv(accept) {
            Ok(t) => {
                // SAFETY: we hold ticket `t`'s slot.
                let v = self.cell(t).with(|p| unsafe { *p });
                ring.release(t).expect("an honest release is never fenced");
                Some(v)
            }
            Err(ClaimError::Unavailable) => None,
            Err(ClaimError::Corrupt) => panic!("corrupt on receive"),
        }
    }

    /// Takes a run of up to `max` messages from `head`, as the queue's
    /// batch receive does: the head claimed, then each next slot while it
    /// is published, then one release of the whole run. Empty if the slot
    /// at `head` was not there to take.
    fn recv_run(&self, max: u64) -> Vec<u64> {
        let ring = self.ring();
        let Some(first) = ring.try_claim_head(|_| {}) else {
            return Vec::new();
        };
        let mut got = Vec::new();
        let mut t = first;
        loop {
            // SAFETY: we hold ticket `t`'s slot (loom checks this claim).
            got.push(self.cell(t).with(|p| unsafe { *p }));
            if got.len() as u64 == max || !ring.try_claim_next(t + 1, |_| {}) {
                break;
            }
            t += 1;
        }
        ring.release_run(first, got.len() as u64)
            .expect("an honest release is never fenced");
        got
    }

    /// Blocks in the event count until a message comes.
    fn recv_blocking(&self) -> u64 {
        self.not_empty
            .wait_until(None, || self.try_recv())
            .expect("no deadline")
    }
}

/// Checks that `got` holds each producer's messages in the order sent.
fn assert_in_order_per_producer(got: &[u64]) {
    for p in 0..10 {
        let mine: Vec<u64> = got.iter().copied().filter(|v| v / 10 == p).collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "out of order: {got:?}"
        );
    }
}

/// Two producers, one consumer, capacity 2, four messages: the ring wraps
/// around; every message sent is received exactly once, each producer's
/// in order, and no slot is ever touched by two parties at once (loom's
/// cell checks).
#[test]
fn two_producers_one_consumer_wrap_around() {
    loom::model(|| {
        let m = Model::new(2);
        let producers: Vec<_> = (0..2u64)
            .map(|p| {
                let m = m.clone();
                thread::spawn(move || {
                    let mut sent = Vec::new();
                    for v in [p * 10 + 1, p * 10 + 2] {
                        if m.try_send(v, 2) {
                            sent.push(v);
                        }
                    }
                    sent
                })
            })
            .collect();
        let mut got = Vec::new();
        for _ in 0..4 {
            if let Some(v) = m.try_recv() {
                got.push(v);
            }
            thread::yield_now();
        }
        let mut sent: Vec<u64> = producers
            .into_iter()
            .flat_map(|p| p.join().unwrap())
            .collect();
        got.extend(m.drain());
        assert_in_order_per_producer(&got);
        got.sort();
        sent.sort();
        assert_eq!(got, sent);
        assert!(m.ring().is_empty());
    });
}

/// Two consumers race for three messages through capacity 2: each message
/// is taken by exactly one of them, and slots are reused safely even when
/// the consumers finish out of order.
#[test]
fn two_consumers_race() {
    loom::model(|| {
        let m = Model::new(2);
        m.send(1);
        m.send(2);
        let consumers: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                thread::spawn(move || m.recv_two())
            })
            .collect();
        let third = m.try_send(3, 3);
        let mut all: Vec<u64> = consumers
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        all.extend(m.drain());
        all.sort();
        let expected: Vec<u64> = if third { vec![1, 2, 3] } else { vec![1, 2] };
        assert_eq!(all, expected);
        assert!(m.ring().is_empty());
    });
}

/// A selective receiver takes the second message past the first one, which
/// another receiver still gets; the ring then wraps over both slots.
#[test]
fn selective_receive_passes_the_head() {
    loom::model(|| {
        let m = Model::new(2);
        m.send(1);
        m.send(2);
        let picky = {
            let m = m.clone();
            thread::spawn(move || m.try_recv_where(|v| v == 2))
        };
        let plain = m.try_recv();
        assert_eq!(picky.join().unwrap(), Some(2));
        assert_eq!(plain, Some(1));
        // Both slots must be free again: two more sends fit.
        m.send(3);
        m.send(4);
        assert_eq!(m.drain(), vec![3, 4]);
    });
}

/// A full ring whose oldest message was passed over (the one behind it was
/// taken by a selective receive) is unblocked by moving that message onto
/// the read slot behind it, while a plain receiver races for it: the
/// message arrives exactly once, intact, and both slots are free after.
#[test]
fn move_passed_over_message() {
    loom::model(|| {
        let m = Model::new(2);
        m.send(1);
        m.send(2);
        assert_eq!(m.try_recv_where(|v| v == 2), Some(2));
        let receiver = {
            let m = m.clone();
            thread::spawn(move || m.try_recv())
        };
        let ring = m.ring();
        let mv = ring.begin_move();
        if let Some((from, to)) = mv {
            // SAFETY: the move holds both slots.
            let v = m.cell(from).with(|p| unsafe { *p });
            // SAFETY: as above.
            m.cell(to).with_mut(|p| unsafe { *p = v });
            ring.finish_move(from, to);
        }
        let mut got: Vec<u64> = receiver.join().unwrap().into_iter().collect();
        got.extend(m.drain());
        assert_eq!(got, vec![1], "move {mv:?}");
        m.send(3);
        m.send(4);
        assert_eq!(m.drain(), vec![3, 4]);
    });
}

/// A producer claims two slots at once (one CAS of `tail`) while a consumer
/// frees them one by one: a batch never takes a slot whose previous lap is
/// still being read.
#[test]
fn batch_claim_against_consumer() {
    loom::model(|| {
        let m = Model::new(2);
        m.send(1);
        let consumer = {
            let m = m.clone();
            thread::spawn(move || m.recv_two())
        };
        let mut sent = vec![1];
        if let Ok((first, n)) = m.ring().try_claim_send_many(2, |_| {}) {
            for i in 0..n {
                let v = 10 + i;
                // SAFETY: the batch claim gave us tickets first..first+n.
                m.cell(first + i).with_mut(|p| unsafe { *p = v });
                m.ring().publish(first + i).unwrap();
                sent.push(v);
            }
        }
        let mut got = consumer.join().unwrap();
        got.extend(m.drain());
        assert_eq!(got, sent);
    });
}

/// A batch is filled in order and published last first, as
/// `Queue::try_send_batch` does: a receiver racing with the publishes never
/// takes a later message of the batch before an earlier one (receivers
/// stop at the first slot not yet published), and every access to a
/// payload is ordered by the publish.
#[test]
fn batch_published_last_first_keeps_order() {
    loom::model(|| {
        let m = Model::new(4);
        let consumer = {
            let m = m.clone();
            thread::spawn(move || m.recv_two())
        };
        let (first, n) = m
            .ring()
            .try_claim_send_many(3, |_| {})
            .expect("an empty ring has room");
        assert_eq!((first, n), (0, 3));
        for i in 0..n {
            // SAFETY: the batch claim gave us tickets first..first+n.
            m.cell(first + i).with_mut(|p| unsafe { *p = 10 + i });
        }
        for t in (first..first + n).rev() {
            m.ring().publish(t).unwrap();
        }
        let mut got = consumer.join().unwrap();
        got.extend(m.drain());
        assert_eq!(got, [10, 11, 12]);
    });
}

/// Issue 12: a batch receive takes a run from `head` (claims slot by slot,
/// one move of `head` past the run, then the frees) while a producer wraps
/// around a 2-slot ring and a plain receiver races for the same messages:
/// each message is taken exactly once, each receiver gets them in the
/// order sent, no slot is reused while its run still holds it (loom's cell
/// checks), and every slot is free after.
#[test]
fn run_receive_against_producer_and_receiver() {
    loom::model(|| {
        let m = Model::new(2);
        m.send(1);
        let batch = {
            let m = m.clone();
            thread::spawn(move || {
                let mut got = m.recv_run(2);
                got.extend(m.recv_run(2));
                got
            })
        };
        let (sent, plain) = m.send_each(&[2, 3], true);
        let batch = batch.join().unwrap();
        assert!(batch.windows(2).all(|w| w[0] < w[1]), "{batch:?}");
        assert!(plain.windows(2).all(|w| w[0] < w[1]), "{plain:?}");
        let mut all: Vec<u64> = batch.into_iter().chain(plain).chain(m.drain()).collect();
        all.sort();
        let mut expected = vec![1];
        expected.extend(sent);
        assert_eq!(all, expected);
        m.send(4);
        m.send(5);
        assert_eq!(m.drain(), vec![4, 5]);
    });
}

/// Issue 12, invariant 5 with a run: while a batch receive moves `head`
/// past its run in one CAS, a selective receiver takes the message right
/// behind the run out of order (marks it read). Whichever comes later in
/// `head`'s order advances over the read slot: it is never stranded at
/// `head`, so all four slots are free after.
#[test]
fn run_release_advances_over_a_slot_read_behind_it() {
    loom::model(|| {
        let m = Model::new(4);
        for v in [1, 2, 3] {
            m.send(v);
        }
        let picky = {
            let m = m.clone();
            thread::spawn(move || m.try_recv_where(|v| v == 3))
        };
        // The selective receiver only looks at 1 and 2 (it holds neither),
        // so the run takes both.
        assert_eq!(m.recv_run(2), [1, 2]);
        assert_eq!(picky.join().unwrap(), Some(3));
        // Before any other receive, which would advance over it itself.
        assert!(m.ring().is_empty(), "a read slot stranded at head");
        for v in 10..14 {
            m.send(v);
        }
        assert_eq!(m.drain(), vec![10, 11, 12, 13]);
    });
}

/// A receiver asleep in the event count is woken by a send from another
/// thread: no lost wake-up (a lost one deadlocks the model).
#[test]
fn sleeper_is_woken_by_notifier() {
    loom::model(|| {
        let m = Model::new(2);
        let sleeper = {
            let m = m.clone();
            thread::spawn(move || m.recv_blocking())
        };
        m.send(7);
        assert_eq!(sleeper.join().unwrap(), 7);
    });
}

/// Two sleepers, two sends: each send wakes one, both get a message.
#[test]
fn two_sleepers_two_sends() {
    loom::model(|| {
        let m = Model::new(2);
        let sleepers: Vec<_> = (0..2)
            .map(|_| {
                let m = m.clone();
                thread::spawn(move || m.recv_blocking())
            })
            .collect();
        m.send(1);
        m.send(2);
        let mut got: Vec<u64> = sleepers.into_iter().map(|s| s.join().unwrap()).collect();
        got.sort();
        assert_eq!(got, vec![1, 2]);
    });
}

// ------------------------------------------------------------- recovery ---

/// A recoverer fences the claim of a producer that is slow, not dead,
/// while the producer is anywhere between announcing its claim and
/// publishing. As the queue does: the producer announces the tickets it
/// is about to claim, claims (the tail CAS releases the announcement),
/// signs, writes, publishes, and lifts the quarantine if the publish
/// fails; the recoverer reads `tail` with Acquire, fences, and withholds
/// the slot if the claim is signed or announced by a live handle (here:
/// always, the producer lives). Whatever the interleaving, the late
/// producer's payload write never races with the next lap's producer on
/// the same slot (loom's cell check), and every message whose publish
/// succeeded arrives exactly once.
#[test]
fn fenced_live_producer_never_overwrites() {
    loom::model(|| {
        let m = Model::new(2);
        let owner = Arc::new(AtomicU64::new(0));
        let announced = Arc::new(AtomicU64::new(0));
        let late = {
            let (m, owner, announced) = (m.clone(), owner.clone(), announced.clone());
            thread::spawn(move || {
                let ring = m.ring();
                let (t, _) = ring
                    .try_claim_send_many(1, |e| {
                        if let ClaimEvent::Announce { .. } = e {
                            announced.store(1, Ordering::Relaxed)
                        }
                    })
                    .ok()?;
                owner.store(1, Ordering::Relaxed);
                // SAFETY: we hold the claim, or a quarantine keeps the slot
                // ours; loom checks exactly this.
                m.cell(t).with_mut(|p| unsafe { *p = 100 });
                match ring.publish(t) {
                    Ok(()) => Some(100),
                    Err(_) => {
                        ring.lift_quarantine(t, || true);
                        None
                    }
                }
            })
        };
        let recoverer = {
            let (m, owner, announced) = (m.clone(), owner.clone(), announced.clone());
            thread::spawn(move || {
                let ring = m.ring();
                if ring.sent_acquire() > 0 && ring.seq(0) == 0 && ring.fence_claim(0).is_ok() {
                    let alive = owner.load(Ordering::Relaxed) == 1
                        || announced.load(Ordering::Relaxed) == 1;
                    if !alive {
                        // Nobody announced it: nobody can write into it.
                        ring.lift_quarantine(0, || true);
                    }
                }
            })
        };
        recoverer.join().unwrap();
        // Another producer laps the ring over the fenced slot.
        let (mut sent, mut got) = m.send_each(&[1, 2], true);
        sent.extend(late.join().unwrap());
        got.extend(m.drain());
        got.sort();
        sent.sort();
        assert_eq!(got, sent);
    });
}

/// A quarantined slot's tickets are passed by while its holder lifts the
/// quarantine concurrently: producers either skip the slot or, once it is
/// lifted, use it; the holder's last write to it happens before any reuse,
/// and every message is received exactly once, in order.
#[test]
fn quarantine_lift_races_skip() {
    loom::model(|| {
        let m = Model::new(2);
        // Ticket 0 claimed by a holder that then stalls; fenced and kept.
        let ring = m.ring();
        let t = ring.try_claim_send().unwrap();
        ring.fence_claim(t).unwrap();
        let holder = {
            let m = m.clone();
            thread::spawn(move || {
                // SAFETY: the slot is withheld for us until we lift it.
                m.cell(t).with_mut(|p| unsafe { *p = 99 });
                assert!(m.ring().publish(t).is_err(), "a fenced publish succeeded");
                m.ring().lift_quarantine(t, || true);
            })
        };
        let (sent, mut got) = m.send_each(&[1, 2, 3], true);
        holder.join().unwrap();
        got.extend(m.drain());
        assert_eq!(got, sent);
        assert!(!got.contains(&99));
    });
}

/// A receiver dies holding a message; once its death is known (the model
/// joins its thread, as the kernel's lock release orders it), a recoverer
/// offers the message again and another receiver gets it, racing a
/// producer that laps the ring: nothing lost, nothing twice among the
/// living, and the slot is reused safely.
#[test]
fn dead_receivers_message_is_redelivered() {
    loom::model(|| {
        let m = Model::new(2);
        m.send(1);
        let dead = {
            let m = m.clone();
            thread::spawn(move || {
                let t = m.ring().try_claim_recv(|_| true).unwrap();
                // SAFETY: we hold the slot; we read and then "die".
                m.cell(t).with(|p| unsafe { *p })
            })
        };
        assert_eq!(dead.join().unwrap(), 1);
        m.ring().redeliver(0).expect("held by the dead receiver");
        let receiver = {
            let m = m.clone();
            thread::spawn(move || m.recv_two())
        };
        let mut sent = vec![1];
        sent.extend(m.send_each(&[2, 3], false).0);
        let mut got = receiver.join().unwrap();
        got.extend(m.drain());
        assert_eq!(got, sent);
    });
}
