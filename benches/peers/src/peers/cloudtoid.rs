//! cloudtoid-interprocess 3.0: a shared-memory byte queue (protocol v3)
//! with many publishers, competing subscribers and crash recovery (leases
//! in `flock`ed files; a dead publisher's or reader's work is reclaimed).
//!
//! Each queue lives in a private directory under /dev/shm
//! (`Options::with_path`): the library puts the ring in
//! `.cloudtoid/interprocess/v3/mmf/NAME.qu` and one lease file per endpoint
//! under `.cloudtoid/interprocess/v3/readers/NAME/`, and its wake-up
//! semaphore is the POSIX named semaphore `/ct3ip.NAME`
//! (`/dev/shm/sem.ct3ip.NAME`). Unlike the other peers' files these cannot
//! be unlinked once the children have opened them: the library finds
//! live endpoints by their lease files, and a missing one reads as a dead
//! endpoint whose registration may be reclaimed. So the directory and the
//! semaphore are removed when the session ends (the library's last endpoint
//! removes the ring, leases and semaphore itself; the guards also take the
//! directories), and on a signal or the watchdog.
//!
//! - Sending: `try_send` (8-byte record header + payload rounded up to 8),
//!   retried on `Full` with a `sched_yield` every
//!   [`SPINS_PER_YIELD`](crate::transport::SPINS_PER_YIELD) tries; the
//!   library has no blocking send.
//! - Batch stream (`--batch N`): `try_send_batch` of N messages, the unsent
//!   suffix retried on a short count; the consumer still takes one message
//!   at a time (there is no batch receive).
//! - Receiving: `try_recv_into` (one copy into our buffer). The blocking
//!   receive (`--block`) tries `try_recv_into` first and otherwise sleeps
//!   in `recv_timeout`, which waits on the semaphore (re-checking every
//!   5 ms) and returns a freshly allocated `Vec` that is copied out.
//!
//! Ring capacity: `queue_depth(size)` records of `(size + 15) & !7` bytes,
//! so exactly that many messages fit (1024 of 64 B: 73 728 bytes of ring).

use std::path::{Path, PathBuf};
use std::time::Duration;

use cloudtoid_interprocess::{Options, Publisher, Subscriber};

use crate::common::{
    put_seq, queue_depth, unique_name, AlignedBuf, ChildControl, Children, PathGuard,
};
use crate::config::ChildSpec;
use crate::scenario::{echo, produce, PingPong, PingPongSession, Stream, StreamSession};
use crate::transport::{Rx, Tx, SPINS_PER_YIELD};
use crate::{err, Config, Result, Scenario};

/// Bytes one message takes in the ring: an 8-byte header (state, length)
/// and the payload rounded up to 8 (the protocol's `(len + 15) & !7`).
fn record_bytes(size: usize) -> usize {
    (size + 15) & !7
}

/// The queue options every participant of a run uses.
fn options(dir: &str, name: &str, size: usize) -> Options {
    Options::new(name, queue_depth(size) * record_bytes(size)).with_path(dir)
}

/// Waits a little on a full queue: spins, and yields every
/// [`SPINS_PER_YIELD`] calls.
#[inline]
fn backoff(spins: &mut u32) {
    *spins += 1;
    if spins.is_multiple_of(SPINS_PER_YIELD) {
        std::thread::yield_now();
    } else {
        std::hint::spin_loop();
    }
}

struct CtTx(Publisher);

impl Tx for CtTx {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let mut spins = 0;
        loop {
            match self.0.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(e) if e.is_full() => backoff(&mut spins),
                Err(e) => return Err(e.into()),
            }
        }
    }
}

struct CtRx(Subscriber);

fn check_len(got: usize, want: usize) -> Result<()> {
    if got != want {
        return Err(err(format!("cloudtoid: got {got} bytes, expected {want}")));
    }
    Ok(())
}

impl Rx for CtRx {
    #[inline]
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<bool> {
        // A longer message would be truncated to `buf.len()` (and consumed);
        // every message of a run has the run's size, so only a short one can
        // be told apart, and is an error.
        match self.0.try_recv_into(buf)? {
            Some(n) => check_len(n, buf.len()).map(|()| true),
            None => Ok(false),
        }
    }

    fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<bool> {
        // `recv_timeout` would try once before sleeping too; trying here
        // first saves its allocation when a message is already there.
        if self.try_recv(buf)? {
            return Ok(true);
        }
        match self.0.recv_timeout(timeout)? {
            Some(got) => {
                check_len(got.len(), buf.len())?;
                buf.copy_from_slice(&got);
                Ok(true)
            }
            None => Ok(false),
        }
    }
}

/// Everything of one run on disk: the private directory and the
/// semaphores of its queues. Dropped last (after every endpoint).
struct Files {
    _sems: Vec<PathGuard>,
    _dir: PathGuard,
    dir: PathBuf,
}

impl Files {
    /// Creates the private directory for the queues `names`.
    fn create(names: &[&str]) -> Result<Self> {
        let dir = Path::new("/dev/shm").join(unique_name("cloudtoid"));
        let guard = PathGuard::new(&dir);
        std::fs::create_dir(&dir)?;
        let sems = names
            .iter()
            .map(|n| PathGuard::new(Path::new("/dev/shm").join(format!("sem.ct3ip.{n}"))))
            .collect();
        Ok(Files {
            _sems: sems,
            _dir: guard,
            dir,
        })
    }

    fn dir(&self) -> Result<&str> {
        self.dir
            .to_str()
            .ok_or_else(|| err("cloudtoid directory name is not UTF-8"))
    }
}

/// Parent side of a ping-pong: queue `a` parent → child, `b` back.
pub fn pingpong(cfg: &Config) -> Result<Box<dyn PingPongSession>> {
    let (a, b) = (unique_name("ct-a"), unique_name("ct-b"));
    let files = Files::create(&[&a, &b])?;
    let dir = files.dir()?;
    // Our endpoints exist before the child's, so neither queue is ever
    // without an endpoint (the queue is transient: it would start afresh).
    let tx = CtTx(Publisher::open(&options(dir, &a, cfg.size))?);
    let rx = CtRx(Subscriber::open(&options(dir, &b, cfg.size))?);
    let spec = ChildSpec {
        cfg: cfg.clone(),
        addr: format!("{dir},{a},{b}"),
        index: 0,
    };
    let children = Children::spawn_ready(std::slice::from_ref(&spec))?;
    Ok(Box::new(PingPong::new(
        children,
        tx,
        rx,
        cfg,
        Some(Box::new(files)),
    )))
}

/// Parent side of a stream with `cfg.producers` publishing processes.
pub fn stream(cfg: &Config) -> Result<Box<dyn StreamSession>> {
    let name = unique_name("ct-s");
    let files = Files::create(&[&name])?;
    let dir = files.dir()?;
    let rx = CtRx(Subscriber::open(&options(dir, &name, cfg.size))?);
    let specs: Vec<_> = (0..cfg.producers)
        .map(|index| ChildSpec {
            cfg: cfg.clone(),
            addr: format!("{dir},{name}"),
            index,
        })
        .collect();
    let children = Children::spawn_ready(&specs)?;
    Ok(Box::new(Stream::new(
        children,
        rx,
        cfg,
        Some(Box::new(files)),
    )))
}

/// Child side of a batch stream: each batch of the control channel is sent
/// `batch` messages at a time with `try_send_batch`.
fn produce_batches(
    ctrl: &mut dyn ChildControl,
    publisher: &Publisher,
    size: usize,
    batch: usize,
) -> Result<()> {
    // One page-aligned block of `batch` messages, back to back.
    let mut block = AlignedBuf::new(size * batch, 0, 0x5A);
    let mut seq = 0u64;
    ctrl.ready()?;
    while let Some(n) = ctrl.next_batch()? {
        let mut left = n;
        while left > 0 {
            let k = left.min(batch as u64) as usize;
            for msg in block.as_mut_slice().chunks_exact_mut(size).take(k) {
                seq += 1;
                put_seq(msg, seq);
            }
            let msgs: Vec<&[u8]> = block.as_slice().chunks_exact(size).take(k).collect();
            let (mut sent, mut spins) = (0, 0);
            while sent < k {
                let m = publisher.try_send_batch(&msgs[sent..])?;
                if m == 0 {
                    backoff(&mut spins);
                }
                sent += m;
            }
            left -= k as u64;
        }
        ctrl.done()?;
    }
    Ok(())
}

/// Child side.
pub fn child(spec: &ChildSpec, ctrl: &mut dyn ChildControl) -> Result<()> {
    let cfg = &spec.cfg;
    let mut parts = spec.addr.split(',');
    let dir = parts
        .next()
        .ok_or_else(|| err("cloudtoid child needs a directory"))?;
    let mut queue = || {
        parts
            .next()
            .map(|name| options(dir, name, cfg.size))
            .ok_or_else(|| err("cloudtoid child needs a queue name"))
    };
    match cfg.scenario {
        Scenario::PingPong => {
            let rx = CtRx(Subscriber::open(&queue()?)?);
            let tx = CtTx(Publisher::open(&queue()?)?);
            echo(ctrl, tx, rx, cfg.size, cfg.block)
        }
        Scenario::Stream if cfg.batch > 1 => {
            let publisher = Publisher::open(&queue()?)?;
            produce_batches(ctrl, &publisher, cfg.size, cfg.batch)
        }
        Scenario::Stream => produce(ctrl, CtTx(Publisher::open(&queue()?)?), cfg.size),
        Scenario::Memcpy | Scenario::Pool => Err(err("no such cloudtoid child")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_holds_exactly_the_queue_depth() {
        assert_eq!(record_bytes(8), 16);
        assert_eq!(record_bytes(64), 72);
        assert_eq!(record_bytes(65), 80);
        // In one process: fill a ring of 1024 records, the next send is Full.
        let name = unique_name("ct-test");
        let files = Files::create(&[&name]).unwrap();
        let o = options(files.dir().unwrap(), &name, 64);
        let sub = Subscriber::open(&o).unwrap();
        let publ = Publisher::open(&o).unwrap();
        let msg = [7u8; 64];
        for _ in 0..queue_depth(64) {
            publ.try_send(&msg).unwrap();
        }
        assert!(publ.try_send(&msg).unwrap_err().is_full());
        let mut buf = [0u8; 64];
        assert_eq!(sub.try_recv_into(&mut buf).unwrap(), Some(64));
        drop((sub, publ));
        drop(files);
        assert!(!Path::new("/dev/shm")
            .join(format!("sem.ct3ip.{name}"))
            .exists());
    }
}
