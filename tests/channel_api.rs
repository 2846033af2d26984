//! The channel interface: every naming form on both queue and pipe, from one
//! generic test body; `Disconnected` on a pipe whose peer closed or died;
//! what a queue says when every other handle is gone.

mod common;

use std::time::{Duration, Instant};

use common::{ChildProc, ShmGuard};
use mulproc::{
    Channel, Filter, Header, Message, Pipe, PipeConfig, Queue, QueueConfig, Received, RecvError,
    RecvTimeoutError, Request, SendRetry, TryRecvError, TrySendError, Wait,
};

const SHORT: Duration = Duration::from_secs(30);
const TINY: Duration = Duration::from_millis(20);

#[test]
fn child_entry() {
    common::child_entry(|role| match role {
        "hold_child_end" => {
            let p = Pipe::open(&common::arg("PIPE")).expect("open child end");
            p.send(Message::new(Request::DO, b"last words".as_slice()))
                .unwrap();
            common::ready();
            std::thread::sleep(Duration::from_secs(600));
            0
        }
        other => panic!("unknown role {other:?}"),
    });
}

fn msg(tag: &[u8]) -> Message<Vec<u8>> {
    Message::new(Request::DO, tag.to_vec())
}

/// Every receive form takes what was sent, and every waiting form times out
/// on an empty channel: one body for any `Channel`, sending on `tx` and
/// receiving on `rx`.
fn every_form<C: Channel>(tx: &C, rx: &C) {
    let far = Instant::now() + SHORT;
    // Plain family.
    tx.try_send(msg(b"a")).unwrap();
    assert_eq!(rx.try_recv().unwrap().data, b"a");
    tx.send(msg(b"b")).unwrap();
    assert_eq!(rx.recv().unwrap().data, b"b");
    tx.send_timeout(msg(b"c"), SHORT).unwrap();
    assert_eq!(rx.recv_timeout(SHORT).unwrap().data, b"c");
    tx.send_deadline(msg(b"d"), far).unwrap();
    assert_eq!(rx.recv_deadline(far).unwrap().data, b"d");

    // In place.
    for (i, tag) in [b"r0", b"r1", b"r2", b"r3"].iter().enumerate() {
        tx.send(msg(*tag)).unwrap();
        let g = match i {
            0 => rx.try_recv_ref().unwrap(),
            1 => rx.recv_ref().unwrap(),
            2 => rx.recv_ref_timeout(SHORT).unwrap(),
            _ => rx.recv_ref_deadline(far).unwrap(),
        };
        assert_eq!(g.data(), *tag);
        assert_eq!(g.header().request, Request::DO);
        g.finish().unwrap();
    }

    // Into a buffer.
    let mut buf = Vec::new();
    for (i, tag) in [b"i0", b"i1", b"i2", b"i3"].iter().enumerate() {
        tx.send(msg(*tag)).unwrap();
        let h = match i {
            0 => rx.try_recv_into(&mut buf).unwrap(),
            1 => rx.recv_into(&mut buf).unwrap(),
            2 => rx.recv_into_timeout(&mut buf, SHORT).unwrap(),
            _ => rx.recv_into_deadline(&mut buf, far).unwrap(),
        };
        assert_eq!((buf.as_slice(), h.request), (&tag[..], Request::DO));
    }

    // Predicate: a rejected message stays, a later one is taken past it.
    for i in 0..4 {
        tx.send(msg(b"skip me")).unwrap();
        tx.send(msg(b"take me")).unwrap();
        let want = |_: &Header, d: &[u8]| d == b"take me";
        let m = match i {
            0 => rx.try_recv_where(want).unwrap(),
            1 => rx.recv_where(want).unwrap(),
            2 => rx.recv_where_timeout(want, SHORT).unwrap(),
            _ => rx.recv_where_deadline(want, far).unwrap(),
        };
        assert_eq!(m.data, b"take me");
        assert_eq!(rx.try_recv().unwrap().data, b"skip me", "rejected one lost");
    }

    // Addressed to me / from a sender.
    let me = rx.pid();
    for i in 0..4 {
        tx.send(msg(b"elsewhere").to(me.wrapping_add(1))).unwrap();
        tx.send(msg(b"mine").to(me)).unwrap();
        let m = match i {
            0 => rx.try_recv_for_me().unwrap(),
            1 => rx.recv_for_me().unwrap(),
            2 => rx.recv_for_me_timeout(SHORT).unwrap(),
            _ => rx.recv_for_me_deadline(far).unwrap(),
        };
        assert_eq!(m.data, b"mine");
        assert_eq!(rx.try_recv().unwrap().data, b"elsewhere");
    }
    for i in 0..4 {
        tx.send(msg(b"forged").from_pid(7)).unwrap();
        tx.send(msg(b"real")).unwrap();
        let who = tx.pid();
        let m = match i {
            0 => rx.try_recv_from(who).unwrap(),
            1 => rx.recv_from(who).unwrap(),
            2 => rx.recv_from_timeout(who, SHORT).unwrap(),
            _ => rx.recv_from_deadline(who, far).unwrap(),
        };
        assert_eq!(
            (m.data.as_slice(), m.sender),
            (b"real".as_slice(), Some(who))
        );
        assert_eq!(rx.try_recv().unwrap().sender, Some(7));
    }

    // Nothing waiting: every form says so, the waiting ones after waiting.
    assert_eq!(rx.try_recv().unwrap_err(), TryRecvError::Empty);
    assert!(rx.try_recv_ref().unwrap_err().is_empty());
    assert!(rx.try_recv_into(&mut buf).unwrap_err().is_empty());
    assert!(rx.try_recv_where(|_, _| true).unwrap_err().is_empty());
    assert!(rx.try_recv_for_me().unwrap_err().is_empty());
    assert!(rx.try_recv_from(1).unwrap_err().is_empty());
    let start = Instant::now();
    assert!(rx.recv_timeout(TINY).unwrap_err().is_timeout());
    assert!(start.elapsed() >= TINY);
    let start = Instant::now();
    let soon = Instant::now() + TINY;
    assert!(rx.recv_deadline(soon).unwrap_err().is_timeout());
    assert!(Instant::now() >= soon, "returned {:?} early", soon - start);
    assert!(rx.recv_ref_timeout(TINY).unwrap_err().is_timeout());
    assert!(rx
        .recv_into_timeout(&mut buf, TINY)
        .unwrap_err()
        .is_timeout());
    assert!(rx
        .recv_where_timeout(|_, _| true, TINY)
        .unwrap_err()
        .is_timeout());
    assert!(rx.recv_for_me_timeout(TINY).unwrap_err().is_timeout());
    assert!(rx.recv_from_timeout(1, TINY).unwrap_err().is_timeout());
    assert!(rx
        .recv_with(Filter::Any, Wait::Never)
        .unwrap_err()
        .is_timeout());

    // Batches.
    let batch: Vec<_> = (0u8..5).map(|i| msg(&[i])).collect();
    assert_eq!(tx.try_send_batch(&batch).unwrap(), 5);
    let mut got = Vec::new();
    assert_eq!(rx.try_recv_batch(3, |_, d| got.push(d[0])).unwrap(), 3);
    assert_eq!(rx.try_recv_batch(10, |_, d| got.push(d[0])).unwrap(), 2);
    assert_eq!(got, [0, 1, 2, 3, 4]);
    assert_eq!(rx.try_recv_batch(10, |_, _| {}).unwrap(), 0);

    // Too large: typed, named fields, message given back.
    let max = tx.max_payload();
    match tx.try_send(Message::new(Request::DO, vec![0u8; max + 1])) {
        Err(TrySendError::TooLarge { msg, len, max: m }) => {
            assert_eq!((len, m, msg.data.len()), (max + 1, max, max + 1));
        }
        other => panic!("oversized send: {other:?}"),
    }
}

/// A full channel: `try_send` at once, `send_timeout` after the time,
/// each giving the message back.
fn full_forms<C: Channel>(tx: &C) {
    let mut n = 0;
    while tx.try_send(msg(b"fill")).is_ok() {
        n += 1;
        assert!(n <= 1 << 20, "never full");
    }
    let back = tx.try_send(msg(b"x")).unwrap_err();
    assert!(back.is_full() && !back.is_disconnected());
    assert_eq!(back.into_inner().data, b"x");
    let start = Instant::now();
    let back = tx.send_timeout(msg(b"y"), TINY).unwrap_err();
    assert!(back.is_timeout());
    assert!(start.elapsed() >= TINY);
    assert_eq!(back.into_inner().data, b"y");
    let back = tx
        .send_deadline(msg(b"z"), Instant::now() + TINY)
        .unwrap_err();
    assert!(back.is_full());
}

#[test]
fn every_naming_form_on_a_queue() {
    let q = Queue::create_unique(QueueConfig::new(16, 64)).unwrap();
    let _guard = ShmGuard::with_name(q.name().to_owned());
    every_form(&q, &q);
    full_forms(&q);
}

#[test]
fn every_naming_form_on_a_pipe() {
    let parent = Pipe::create_unique(PipeConfig::new(16, 64)).unwrap();
    let _guard = ShmGuard::with_name(parent.name().to_owned());
    let child = Pipe::open(parent.name()).unwrap();
    every_form(&parent, &child);
    every_form(&child, &parent);
    full_forms(&parent);
}

/// The inherent forms need no `use mulproc::Channel`.
mod without_the_trait {
    use mulproc::{Message, Pipe, PipeConfig, Queue, QueueConfig, Request};
    use std::time::Duration;

    #[test]
    fn inherent_forms_on_queue_and_pipe() {
        let q = Queue::create_unique(QueueConfig::new(4, 16)).unwrap();
        let _g = super::ShmGuard::with_name(q.name().to_owned());
        q.send_timeout(Message::signal(Request::DO), Duration::from_secs(1))
            .unwrap();
        assert_eq!(
            q.recv_where_timeout(|h, _| h.request == Request::DO, Duration::from_secs(1))
                .unwrap()
                .request,
            Request::DO
        );
        let p = Pipe::create_unique(PipeConfig::new(4, 16)).unwrap();
        let _g2 = super::ShmGuard::with_name(p.name().to_owned());
        let c = Pipe::open(p.name()).unwrap();
        p.send(Message::signal(Request::FINISHED)).unwrap();
        assert_eq!(c.recv_for_me().unwrap().request, Request::FINISHED);
    }
}

#[test]
fn send_retry_reads_back() {
    let mut q = Queue::create_unique(QueueConfig::new(4, 16)).unwrap();
    let _g = ShmGuard::with_name(q.name().to_owned());
    assert_eq!(q.send_retry(), SendRetry::default());
    let r = SendRetry {
        tries: 3,
        wait: Duration::from_millis(5),
    };
    q.set_send_retry(r);
    assert_eq!(q.send_retry(), r);
    let mut p = Pipe::create_unique(PipeConfig::new(4, 16)).unwrap();
    let _g2 = ShmGuard::with_name(p.name().to_owned());
    p.set_send_retry(r);
    assert_eq!(Channel::send_retry(&p), r);
}

#[test]
fn unique_names_are_unique_and_openable() {
    let a = Queue::create_unique(QueueConfig::new(4, 16)).unwrap();
    let b = Queue::create_unique(QueueConfig::new(4, 16)).unwrap();
    let _ga = ShmGuard::with_name(a.name().to_owned());
    let _gb = ShmGuard::with_name(b.name().to_owned());
    assert_ne!(a.name(), b.name());
    a.send(Message::signal(Request::DO)).unwrap();
    assert_eq!(Queue::open(a.name()).unwrap().len(), 1);
}

/// A pipe end may hold several messages and free them in any order; the
/// sender reuses a slot only once everything before it is freed.
#[test]
fn pipe_holds_several_guards_and_frees_them_out_of_order() {
    let parent = Pipe::create_unique(PipeConfig::new(4, 16)).unwrap();
    let _g = ShmGuard::with_name(parent.name().to_owned());
    let child = Pipe::open(parent.name()).unwrap();
    for i in 0u8..4 {
        parent.send(msg(&[i])).unwrap();
    }
    assert!(parent.try_send(msg(b"no room")).unwrap_err().is_full());
    let g0 = child.try_recv_ref().unwrap();
    let g1 = child.try_recv_ref().unwrap();
    let g2 = child.try_recv_ref().unwrap();
    assert_eq!(
        (g0.data(), g1.data(), g2.data()),
        (&[0][..], &[1][..], &[2][..])
    );
    drop(g1);
    drop(g2);
    // Ticket 0 still held: no room yet, and the held bytes are intact.
    assert!(parent.try_send(msg(b"no room")).unwrap_err().is_full());
    assert_eq!(g0.data(), [0]);
    drop(g0);
    for i in 4u8..7 {
        parent.try_send(msg(&[i])).unwrap();
    }
    let got: Vec<u8> = (0..4).map(|_| child.try_recv().unwrap().data[0]).collect();
    assert_eq!(got, [3, 4, 5, 6]);
}

/// Pins: `recv` on a pipe whose peer is gone blocking forever. The peer
/// closes after sending: what it sent comes first, then `Disconnected`,
/// from every receive form; a send gives the message back as
/// `Disconnected`.
#[test]
fn pipe_peer_closed_drains_then_disconnected() {
    let parent = Pipe::create_unique(PipeConfig::new(8, 16)).unwrap();
    let _g = ShmGuard::with_name(parent.name().to_owned());
    let child = Pipe::open(parent.name()).unwrap();
    assert!(!parent.is_disconnected());
    for i in 0u8..3 {
        child.send(msg(&[i])).unwrap();
    }
    child.close().unwrap();
    assert!(parent.is_disconnected());
    assert_eq!(parent.peer_pid(), None);
    for i in 0u8..3 {
        assert_eq!(parent.recv().unwrap().data, [i]);
    }
    assert_eq!(parent.recv().unwrap_err(), RecvError::Disconnected);
    assert_eq!(parent.try_recv().unwrap_err(), TryRecvError::Disconnected);
    assert_eq!(
        parent.recv_timeout(SHORT).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
    assert!(parent
        .recv_where(|_, _| true)
        .unwrap_err()
        .is_disconnected());
    let back = parent.send(msg(b"anyone?")).unwrap_err();
    assert!(back.is_disconnected());
    assert_eq!(back.into_inner().data, b"anyone?");
    assert!(parent.try_send(msg(b"x")).unwrap_err().is_disconnected());

    // A new child end connects again.
    let again = Pipe::open(parent.name()).unwrap();
    assert!(!parent.is_disconnected());
    parent.send(msg(b"hi")).unwrap();
    assert_eq!(again.recv().unwrap().data, b"hi");
}

/// A receiver asleep in `recv` is woken by the peer's close.
#[test]
fn pipe_close_wakes_a_sleeping_receiver() {
    let parent = Pipe::create_unique(PipeConfig::new(8, 16)).unwrap();
    let _g = ShmGuard::with_name(parent.name().to_owned());
    let name = parent.name().to_owned();
    let closer = std::thread::spawn(move || {
        let child = Pipe::open(&name).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        drop(child);
    });
    let start = Instant::now();
    let r = parent.recv_timeout(SHORT);
    closer.join().unwrap();
    assert_eq!(r.unwrap_err(), RecvTimeoutError::Disconnected);
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
}

/// A peer SIGKILLed (no close, no drop): a blocked `recv` returns what it
/// sent, then `Disconnected` (noticed by the wait's re-check, within about
/// 200 ms), and sends into the pipe fail once it is full.
#[test]
fn pipe_peer_killed_is_disconnected() {
    let parent = Pipe::create_unique(PipeConfig::new(4, 16)).unwrap();
    let _g = ShmGuard::with_name(parent.name().to_owned());
    let mut child = ChildProc::spawn("hold_child_end", &[("PIPE", parent.name().to_owned())]);
    child.wait_ready(SHORT);
    assert_eq!(parent.peer_pid(), Some(child.pid()));
    child.kill();
    let start = Instant::now();
    assert_eq!(parent.recv_timeout(SHORT).unwrap().data, b"last words");
    assert_eq!(
        parent.recv_timeout(SHORT).unwrap_err(),
        RecvTimeoutError::Disconnected
    );
    let took = start.elapsed();
    assert!(took < Duration::from_secs(5), "noticed after {took:?}");
    eprintln!("dead peer noticed after {took:?}");
    let mut sent = 0;
    let err = loop {
        match parent.send_timeout(msg(b"lost"), SHORT) {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(
            sent <= 4,
            "sends into a dead peer's full pipe kept succeeding"
        );
    };
    assert!(err.is_disconnected(), "{err:?}");
}

/// Documented: a queue is a mailbox by name, so it never says
/// `Disconnected`; with every other handle gone a receive times out.
#[test]
fn queue_with_every_other_handle_gone_times_out() {
    let q = Queue::create_unique(QueueConfig::new(4, 16)).unwrap();
    let _g = ShmGuard::with_name(q.name().to_owned());
    {
        let other = Queue::open(q.name()).unwrap();
        other.send(msg(b"before")).unwrap();
    }
    assert_eq!(q.recv_timeout(SHORT).unwrap().data, b"before");
    assert_eq!(q.recv_timeout(TINY).unwrap_err(), RecvTimeoutError::Timeout);
    assert_eq!(q.try_recv().unwrap_err(), TryRecvError::Empty);
}

#[cfg(feature = "serde")]
#[test]
fn serde_value_forms_on_queue_and_pipe() {
    fn values<C: Channel>(tx: &C, rx: &C) {
        let far = Instant::now() + SHORT;
        tx.try_send_value(Request::DO, None, &(1u32, "one"))
            .unwrap();
        tx.send_value(Request::DO, None, &(2u32, "two")).unwrap();
        tx.send_value_timeout(Request::DO, None, &(3u32, "three"), SHORT)
            .unwrap();
        tx.send_value_deadline(Request::DO, Some(9), &(4u32, "four"), far)
            .unwrap();
        let (_, a): (_, (u32, String)) = rx.try_recv_value().unwrap();
        let (_, b): (_, (u32, String)) = rx.recv_value().unwrap();
        let (_, c): (_, (u32, String)) = rx.recv_value_timeout(SHORT).unwrap();
        let (h, d): (_, (u32, String)) = rx.recv_value_deadline(far).unwrap();
        assert_eq!([a.0, b.0, c.0, d.0], [1, 2, 3, 4]);
        assert_eq!((h.recipient, d.1.as_str()), (Some(9), "four"));
        assert!(rx.try_recv_value::<u8>().unwrap_err().is_timeout());
        assert!(rx.recv_value_timeout::<u8>(TINY).unwrap_err().is_timeout());
    }
    let q = Queue::create_unique(QueueConfig::new(8, 64)).unwrap();
    let _g = ShmGuard::with_name(q.name().to_owned());
    values(&q, &q);
    let p = Pipe::create_unique(PipeConfig::new(8, 64)).unwrap();
    let _g2 = ShmGuard::with_name(p.name().to_owned());
    let c = Pipe::open(p.name()).unwrap();
    values(&p, &c);
}

/// Pins the natural batch loop degrading to one slot per call (issue 12):
/// on a ring with some room but less than a run of
/// `min(len, 32, capacity / 4)` slots, `try_send_batch` says Full instead of
/// claiming the few slots a draining receiver just freed; once the run is
/// free it takes all the room there is in one claim.
#[test]
fn queue_batch_send_waits_for_a_run() {
    let q = Queue::create_unique(QueueConfig::new(128, 16)).unwrap();
    let _g = ShmGuard::with_name(q.name().to_owned());
    let batch: Vec<_> = (0u8..64).map(|i| msg(&[i])).collect();
    assert_eq!(q.try_send_batch(&batch).unwrap(), 64);
    assert_eq!(q.try_send_batch(&batch).unwrap(), 64);
    assert!(q.try_send_batch(&batch).unwrap_err().is_full(), "ring full");
    assert_eq!(q.try_recv_batch(5, |_, _| {}).unwrap(), 5);
    // 5 free, less than the run of 32: nothing sent.
    assert!(q.try_send_batch(&batch).unwrap_err().is_full());
    assert_eq!(q.len(), 123);
    // A single message (a run of 1) still goes into one free slot.
    q.try_send_batch(&batch[..1]).unwrap();
    assert_eq!(q.try_recv_batch(28, |_, _| {}).unwrap(), 28);
    // 32 free now: one call takes them all.
    assert_eq!(q.try_send_batch(&batch).unwrap(), 32);
    assert_eq!(q.len(), 128);
}
