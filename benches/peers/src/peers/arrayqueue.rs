//! crossbeam-queue `ArrayQueue` between threads of one process: the
//! in-process bound. Slots hold `[u8; N]` arrays moved by value (sizes 8,
//! 64, 1024, 65536); a full queue makes the sender spin (yielding now and
//! then, like a spinning receiver). (Forcing 64-byte
//! alignment on the slots made 64 KiB messages 2-3x slower here: glibc's
//! `rep movsb` speed depends on the relative offsets of source and
//! destination in ways that favour no single layout.)

use std::sync::Arc;
use std::time::Duration;

use crossbeam_queue::ArrayQueue;

use crate::common::{queue_depth, Threads};
use crate::scenario::{echo, produce, PingPong, PingPongSession, Stream, StreamSession};
use crate::transport::{Rx, Tx, SPINS_PER_YIELD};
use crate::{err, Config, Result};

type Queue<const N: usize> = Arc<ArrayQueue<[u8; N]>>;

struct AqTx<const N: usize>(Queue<N>);

impl<const N: usize> Tx for AqTx<N> {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let mut item = [0u8; N];
        item.copy_from_slice(msg);
        let mut spins = 0u32;
        while let Err(back) = self.0.push(item) {
            item = back;
            spins += 1;
            if spins.is_multiple_of(SPINS_PER_YIELD) {
                std::thread::yield_now();
            }
        }
        Ok(())
    }
}

struct AqRx<const N: usize>(Queue<N>);

impl<const N: usize> Rx for AqRx<N> {
    #[inline]
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<bool> {
        match self.0.pop() {
            Some(item) => {
                buf.copy_from_slice(&item);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn recv_timeout(&mut self, _buf: &mut [u8], _timeout: Duration) -> Result<bool> {
        Err(err("ArrayQueue has no blocking receive"))
    }
}

fn pingpong_n<const N: usize>(cfg: &Config) -> Result<Box<dyn PingPongSession>> {
    let to_peer = Arc::new(ArrayQueue::<[u8; N]>::new(queue_depth(N)));
    let to_parent = Arc::new(ArrayQueue::<[u8; N]>::new(queue_depth(N)));
    let mut threads = Threads::default();
    let (tx, rx) = (AqTx(Arc::clone(&to_parent)), AqRx(Arc::clone(&to_peer)));
    threads.spawn("echo", move |ctrl| echo(ctrl, tx, rx, N, false))?;
    Ok(Box::new(PingPong::new(
        threads,
        AqTx(to_peer),
        AqRx(to_parent),
        cfg,
        None,
    )))
}

fn stream_n<const N: usize>(cfg: &Config) -> Result<Box<dyn StreamSession>> {
    let queue = Arc::new(ArrayQueue::<[u8; N]>::new(queue_depth(N)));
    let mut threads = Threads::default();
    for i in 0..cfg.producers {
        let tx = AqTx(Arc::clone(&queue));
        threads.spawn(&format!("producer-{i}"), move |ctrl| produce(ctrl, tx, N))?;
    }
    Ok(Box::new(Stream::new(threads, AqRx(queue), cfg, None)))
}

/// Parent side of a ping-pong with a peer thread.
pub fn pingpong(cfg: &Config) -> Result<Box<dyn PingPongSession>> {
    match cfg.size {
        8 => pingpong_n::<8>(cfg),
        64 => pingpong_n::<64>(cfg),
        1024 => pingpong_n::<1024>(cfg),
        65536 => pingpong_n::<65536>(cfg),
        s => Err(err(format!("arrayqueue: unsupported size {s}"))),
    }
}

/// Consumer side of a stream with `cfg.producers` producer threads.
pub fn stream(cfg: &Config) -> Result<Box<dyn StreamSession>> {
    match cfg.size {
        8 => stream_n::<8>(cfg),
        64 => stream_n::<64>(cfg),
        1024 => stream_n::<1024>(cfg),
        65536 => stream_n::<65536>(cfg),
        s => Err(err(format!("arrayqueue: unsupported size {s}"))),
    }
}
