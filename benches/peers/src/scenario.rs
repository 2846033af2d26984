//! The scenarios, written once over [`Tx`]/[`Rx`] and a [`Control`]:
//! ping-pong (parent sends, child echoes) and stream (children produce,
//! parent consumes). A session keeps its peers alive between batches, so
//! criterion can run many batches against the same child processes.

use std::any::Any;
use std::time::{Duration, Instant};

use crate::common::{get_seq, put_seq, spin_for, AlignedBuf, ChildControl, Control};
use crate::transport::{recv, Rx, Tx};
use crate::{err, Result};

/// Sequence number 0 never occurs in a batch (counting starts at 1): the
/// parent sends it to end a ping-pong batch early, and the child echoes it.
pub const STOP_SEQ: u64 = 0;

/// A running ping-pong: parent endpoints plus the echoing peer.
pub trait PingPongSession {
    /// Runs `n` round trips, or fewer if `deadline` passes first. Returns the
    /// summed round-trip time (idle time before each send excluded) and the
    /// number of round trips done; if `samples` is given, pushes each round
    /// trip's nanoseconds onto it.
    fn run(
        &mut self,
        n: u64,
        samples: Option<&mut Vec<u64>>,
        deadline: Option<Instant>,
    ) -> Result<(Duration, u64)>;
}

/// A running stream: the parent's receiving end plus the producers.
pub trait StreamSession {
    /// Receives about `n` messages in all (rounded down to a multiple of the
    /// producer count, at least one each). Returns the time from telling the
    /// producers to start until the last message arrived, and the message
    /// count.
    fn run(&mut self, n: u64) -> Result<(Duration, u64)>;
}

/// Parent side of a ping-pong. `C` is declared first so that peers are told
/// to exit (stdin closed) before the endpoints are dropped.
pub struct PingPong<C: Control, T: Tx, R: Rx> {
    ctrl: C,
    tx: T,
    rx: R,
    block: bool,
    idle: Duration,
    msg: AlignedBuf,
    buf: AlignedBuf,
    seq: u64,
    _keep: Option<Box<dyn Any>>,
}

impl<C: Control, T: Tx, R: Rx> PingPong<C, T, R> {
    /// A session over ready peers. `keep` holds anything that must live as
    /// long as the session (e.g. a node or a mapping).
    pub fn new(ctrl: C, tx: T, rx: R, cfg: &crate::Config, keep: Option<Box<dyn Any>>) -> Self {
        PingPong {
            ctrl,
            tx,
            rx,
            block: cfg.block,
            idle: Duration::from_micros(cfg.idle_us),
            msg: AlignedBuf::new(cfg.size, 0, 0xA5),
            buf: AlignedBuf::new(cfg.size, 0, 0),
            seq: 0,
            _keep: keep,
        }
    }
}

impl<C: Control, T: Tx, R: Rx> PingPongSession for PingPong<C, T, R> {
    fn run(
        &mut self,
        n: u64,
        mut samples: Option<&mut Vec<u64>>,
        deadline: Option<Instant>,
    ) -> Result<(Duration, u64)> {
        let PingPong {
            ctrl,
            tx,
            rx,
            block,
            idle,
            msg,
            buf,
            seq,
            ..
        } = self;
        let (msg, buf) = (msg.as_mut_slice(), buf.as_mut_slice());
        if let Some(s) = samples.as_deref_mut() {
            s.reserve(n.min(1 << 22) as usize);
        }
        ctrl.start(n)?;
        let mut total = Duration::ZERO;
        let mut last = Instant::now();
        let mut done = 0;
        while done < n {
            if deadline.is_some_and(|d| last >= d) {
                // Out of time: end the child's batch with the stop message.
                put_seq(msg, STOP_SEQ);
                tx.send(msg)?;
                recv(rx, buf, *block, &mut || ctrl.check_alive())?;
                if get_seq(buf) != STOP_SEQ {
                    return Err(err("ping-pong out of step at the stop message"));
                }
                break;
            }
            let start = if idle.is_zero() {
                // Back-to-back round trips: the previous end is this start,
                // so each round trip costs one clock read.
                last
            } else {
                spin_for(*idle);
                Instant::now()
            };
            *seq += 1;
            put_seq(msg, *seq);
            tx.send(msg)?;
            recv(rx, buf, *block, &mut || ctrl.check_alive())?;
            let end = Instant::now();
            let got = get_seq(buf);
            if got != *seq {
                return Err(err(format!(
                    "ping-pong out of step: sent {}, got back {got}",
                    *seq
                )));
            }
            let rtt = end - start;
            total += rtt;
            if let Some(s) = samples.as_deref_mut() {
                s.push(rtt.as_nanos() as u64);
            }
            last = end;
            done += 1;
        }
        ctrl.finish()?;
        Ok((total, done))
    }
}

/// Parent side of a stream with `producers` peers.
pub struct Stream<C: Control, R: Rx> {
    ctrl: C,
    rx: R,
    producers: u64,
    block: bool,
    buf: AlignedBuf,
    expect: u64,
    _keep: Option<Box<dyn Any>>,
}

impl<C: Control, R: Rx> Stream<C, R> {
    /// A session over ready producers.
    pub fn new(ctrl: C, rx: R, cfg: &crate::Config, keep: Option<Box<dyn Any>>) -> Self {
        Stream {
            ctrl,
            rx,
            producers: cfg.producers as u64,
            block: cfg.block,
            buf: AlignedBuf::new(cfg.size, 0, 0),
            expect: 1,
            _keep: keep,
        }
    }
}

impl<C: Control, R: Rx> StreamSession for Stream<C, R> {
    fn run(&mut self, n: u64) -> Result<(Duration, u64)> {
        let Stream {
            ctrl,
            rx,
            producers,
            block,
            buf,
            expect,
            ..
        } = self;
        let buf = buf.as_mut_slice();
        let each = (n / *producers).max(1);
        let total = each * *producers;
        let t0 = Instant::now();
        ctrl.start(each)?;
        for _ in 0..total {
            recv(rx, buf, *block, &mut || ctrl.check_alive())?;
            if *producers == 1 {
                // One producer: messages arrive in order, none lost.
                let got = get_seq(buf);
                if got != *expect {
                    return Err(err(format!(
                        "stream out of order: expected {}, got {got}",
                        *expect
                    )));
                }
                *expect += 1;
            }
        }
        let dt = t0.elapsed();
        ctrl.finish()?;
        Ok((dt, total))
    }
}

/// Child side of a ping-pong: echo each batch.
pub fn echo<T: Tx, R: Rx>(
    ctrl: &mut dyn ChildControl,
    mut tx: T,
    mut rx: R,
    size: usize,
    block: bool,
) -> Result<()> {
    let mut buf = AlignedBuf::new(size, 0, 0);
    let buf = buf.as_mut_slice();
    ctrl.ready()?;
    while let Some(n) = ctrl.next_batch()? {
        for _ in 0..n {
            // The parent's death kills us (PR_SET_PDEATHSIG): no check needed.
            recv(&mut rx, buf, block, &mut || Ok(()))?;
            tx.send(buf)?;
            if get_seq(buf) == STOP_SEQ {
                break;
            }
        }
        ctrl.done()?;
    }
    Ok(())
}

/// Child side of a stream: produce each batch.
pub fn produce<T: Tx>(ctrl: &mut dyn ChildControl, mut tx: T, size: usize) -> Result<()> {
    let mut msg = AlignedBuf::new(size, 0, 0x5A);
    let msg = msg.as_mut_slice();
    let mut seq = 0u64;
    ctrl.ready()?;
    while let Some(n) = ctrl.next_batch()? {
        for _ in 0..n {
            seq += 1;
            put_seq(msg, seq);
            tx.send(msg)?;
        }
        ctrl.done()?;
    }
    Ok(())
}
