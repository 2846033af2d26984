//! ipmpsc 0.5: a shared-memory ring (file in /dev/shm) guarded by a
//! process-shared pthread mutex and condvar; bincode-encoded messages.
//!
//! Messages go as serde bytes (an 8-byte length and a memcpy) and are read
//! back zero-copy (`&[u8]` borrowed from the ring) and copied out, so the
//! cost is the ring's, not element-by-element serialization. Ping-pong uses
//! two rings, one per direction; the stream uses one ring with N senders.

use std::path::Path;
use std::time::Duration;

use ipmpsc::{Receiver, Sender, SharedRingBuffer};
use serde::{Serialize, Serializer};

use crate::common::{queue_depth, unique_name, ChildControl, Children, PathGuard};
use crate::config::ChildSpec;
use crate::scenario::{echo, produce, PingPong, PingPongSession, Stream, StreamSession};
use crate::transport::{Rx, Tx};
use crate::{err, Config, Result, Scenario};

/// Bytes serialized with `serialize_bytes` (a length and one copy).
struct Bytes<'a>(&'a [u8]);

impl Serialize for Bytes<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_bytes(self.0)
    }
}

struct IpTx(Sender);

impl Tx for IpTx {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        Ok(self.0.send(&Bytes(msg))?)
    }
}

struct IpRx(Receiver);

fn copy_out(buf: &mut [u8], got: &[u8]) -> Result<()> {
    if got.len() != buf.len() {
        return Err(err(format!(
            "ipmpsc: got {} bytes, expected {}",
            got.len(),
            buf.len()
        )));
    }
    buf.copy_from_slice(got);
    Ok(())
}

impl Rx for IpRx {
    #[inline]
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<bool> {
        let mut ctx = self.0.zero_copy_context();
        match ctx.try_recv::<&[u8]>()? {
            Some(got) => copy_out(buf, got).map(|()| true),
            None => Ok(false),
        }
    }

    fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<bool> {
        let mut ctx = self.0.zero_copy_context();
        match ctx.recv_timeout::<&[u8]>(timeout)? {
            Some(got) => copy_out(buf, got).map(|()| true),
            None => Ok(false),
        }
    }
}

/// Ring capacity in bytes: `queue_depth` messages with their 12-byte framing.
fn ring_bytes(size: usize) -> Result<u32> {
    u32::try_from(queue_depth(size) * (size + 16)).map_err(|_| err("ipmpsc ring too large"))
}

fn create_ring(size: usize) -> Result<(PathGuard, SharedRingBuffer)> {
    let guard = PathGuard::new(Path::new("/dev/shm").join(unique_name("ipmpsc")));
    let ring = SharedRingBuffer::create(guard.path_str(), ring_bytes(size)?)?;
    Ok((guard, ring))
}

/// Parent side of a ping-pong.
pub fn pingpong(cfg: &Config) -> Result<Box<dyn PingPongSession>> {
    let (mut to_child, ring_a) = create_ring(cfg.size)?;
    let (mut to_parent, ring_b) = create_ring(cfg.size)?;
    let addr = format!("{},{}", to_child.path_str(), to_parent.path_str());
    let spec = ChildSpec {
        cfg: cfg.clone(),
        addr,
        index: 0,
    };
    let children = Children::spawn_ready(std::slice::from_ref(&spec))?;
    to_child.remove();
    to_parent.remove();
    let tx = IpTx(Sender::new(ring_a));
    let rx = IpRx(Receiver::new(ring_b));
    Ok(Box::new(PingPong::new(children, tx, rx, cfg, None)))
}

/// Parent side of a stream with `cfg.producers` sending processes.
pub fn stream(cfg: &Config) -> Result<Box<dyn StreamSession>> {
    let (mut file, ring) = create_ring(cfg.size)?;
    let specs: Vec<_> = (0..cfg.producers)
        .map(|index| ChildSpec {
            cfg: cfg.clone(),
            addr: file.path_str().to_owned(),
            index,
        })
        .collect();
    let children = Children::spawn_ready(&specs)?;
    file.remove();
    Ok(Box::new(Stream::new(
        children,
        IpRx(Receiver::new(ring)),
        cfg,
        None,
    )))
}

/// Child side.
pub fn child(spec: &ChildSpec, ctrl: &mut dyn ChildControl) -> Result<()> {
    let cfg = &spec.cfg;
    match cfg.scenario {
        Scenario::PingPong => {
            let (a, b) = spec
                .addr
                .split_once(',')
                .ok_or_else(|| err("ipmpsc ping-pong child needs two ring paths"))?;
            let rx = IpRx(Receiver::new(SharedRingBuffer::open(a)?));
            let tx = IpTx(Sender::new(SharedRingBuffer::open(b)?));
            echo(ctrl, tx, rx, cfg.size, cfg.block)
        }
        Scenario::Stream => {
            let tx = IpTx(Sender::new(SharedRingBuffer::open(&spec.addr)?));
            produce(ctrl, tx, cfg.size)
        }
        Scenario::Memcpy | Scenario::Pool => Err(err(format!("no {} child", cfg.scenario))),
    }
}
