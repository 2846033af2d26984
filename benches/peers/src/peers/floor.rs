//! The floors: one word per direction in a shared mapping, each in its own
//! 64-byte cache line.
//!
//! - `raw`: an `AtomicU64` that the receiver spins on (the cost of moving one
//!   cache line each way);
//! - `futex`: an `AtomicU32` futex word; the sender always calls FUTEX_WAKE
//!   and a blocking receiver sleeps in FUTEX_WAIT (non-private, so it works
//!   across processes), as in `futex_killed_waiter.c` part 2.
//!
//! Only the 8-byte sequence number crosses (the value of the word); the
//! message size is ignored: these are bounds, not queues.

use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::{get_seq, put_seq, ChildControl, Children, PathGuard};
use crate::config::ChildSpec;
use crate::scenario::{echo, PingPong, PingPongSession};
use crate::shm::{Shared, SharedPod};
use crate::transport::{Rx, Tx};
use crate::{err, Config, Result};

/// A word alone in its cache line.
#[repr(C, align(64))]
#[derive(Debug, Default)]
pub struct Line<W> {
    word: W,
}

/// The shared region: `ping` is written by the parent, `pong` by the child.
#[repr(C)]
#[derive(Debug, Default)]
pub struct Region<W> {
    ping: Line<W>,
    pong: Line<W>,
}

// SAFETY: repr(C), all-zero is a valid AtomicU64/AtomicU32, no pointers, and
// mutation only through the atomics.
unsafe impl SharedPod for Region<AtomicU64> {}
// SAFETY: as above.
unsafe impl SharedPod for Region<AtomicU32> {}

#[derive(Debug, Clone, Copy)]
enum Dir {
    Ping,
    Pong,
}

impl<W> Region<W> {
    fn word(&self, dir: Dir) -> &W {
        match dir {
            Dir::Ping => &self.ping.word,
            Dir::Pong => &self.pong.word,
        }
    }
}

/// A floor endpoint: the mapping, which line, and the last value seen (used
/// by receivers). `W` picks the flavour: `AtomicU64` raw, `AtomicU32` futex.
struct End<W: 'static>
where
    Region<W>: SharedPod,
{
    region: Arc<Shared<Region<W>>>,
    dir: Dir,
    last: u64,
}

impl Tx for End<AtomicU64> {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        self.region
            .word(self.dir)
            .store(get_seq(msg), Ordering::Release);
        Ok(())
    }
}

impl Rx for End<AtomicU64> {
    #[inline]
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<bool> {
        let v = self.region.word(self.dir).load(Ordering::Acquire);
        if v == self.last {
            return Ok(false);
        }
        self.last = v;
        put_seq(buf, v);
        Ok(true)
    }

    fn recv_timeout(&mut self, _buf: &mut [u8], _timeout: Duration) -> Result<bool> {
        Err(err("raw has no blocking receive"))
    }
}

impl Tx for End<AtomicU32> {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        let word = self.region.word(self.dir);
        // The word carries the low 32 bits of the sequence number.
        word.store(get_seq(msg) as u32, Ordering::Release);
        futex_wake(word)
    }
}

impl End<AtomicU32> {
    #[inline]
    fn take(&mut self, buf: &mut [u8]) -> Option<u32> {
        let v = self.region.word(self.dir).load(Ordering::Acquire);
        if u64::from(v) == self.last {
            return Some(v);
        }
        self.last = u64::from(v);
        put_seq(buf, u64::from(v));
        None
    }
}

impl Rx for End<AtomicU32> {
    #[inline]
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<bool> {
        Ok(self.take(buf).is_none())
    }

    fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<bool> {
        loop {
            let Some(current) = self.take(buf) else {
                return Ok(true);
            };
            if !futex_wait(self.region.word(self.dir), current, timeout)? {
                // Timed out: one last look.
                return Ok(self.take(buf).is_none());
            }
        }
    }
}

/// FUTEX_WAIT while `*word == expected`, for at most `timeout`. Returns
/// `false` on timeout, `true` when woken, interrupted or the value differed.
fn futex_wait(word: &AtomicU32, expected: u32, timeout: Duration) -> Result<bool> {
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        // Below 1e9: fits any c_long.
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: `word` is a live, aligned 32-bit atomic in a MAP_SHARED mapping
    // (FUTEX_WAIT without FUTEX_PRIVATE_FLAG, so other processes can wake
    // it); `ts` outlives the call; the unused arguments are null/0.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            std::ptr::from_ref(&ts),
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if rc == 0 {
        return Ok(true);
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::ETIMEDOUT) => Ok(false),
        Some(libc::EAGAIN) | Some(libc::EINTR) => Ok(true),
        _ => Err(e.into()),
    }
}

/// FUTEX_WAKE one waiter on `word` (a system call even with no waiter, as in
/// the C reference).
fn futex_wake(word: &AtomicU32) -> Result<()> {
    // SAFETY: `word` is a live, aligned 32-bit atomic; FUTEX_WAKE reads no
    // other argument than the count.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            1u32,
            0usize,
            0usize,
            0u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error().into());
    }
    Ok(())
}

fn parent<W: Send + Sync + 'static>(cfg: &Config) -> Result<Box<dyn PingPongSession>>
where
    Region<W>: SharedPod,
    End<W>: Tx + Rx,
{
    let mut file = PathGuard::new(Path::new("/dev/shm").join(crate::common::unique_name("floor")));
    let region = Arc::new(Shared::<Region<W>>::create(file.path())?);
    let spec = ChildSpec {
        cfg: cfg.clone(),
        addr: file.path_str().to_owned(),
        index: 0,
    };
    let children = Children::spawn_ready(std::slice::from_ref(&spec))?;
    file.remove(); // mapped by both sides now
    let tx = End {
        region: Arc::clone(&region),
        dir: Dir::Ping,
        last: 0,
    };
    let rx = End {
        region,
        dir: Dir::Pong,
        last: 0,
    };
    Ok(Box::new(PingPong::new(children, tx, rx, cfg, None)))
}

fn child<W: Send + Sync + 'static>(spec: &ChildSpec, ctrl: &mut dyn ChildControl) -> Result<()>
where
    Region<W>: SharedPod,
    End<W>: Tx + Rx,
{
    let region = Arc::new(Shared::<Region<W>>::open(Path::new(&spec.addr))?);
    let tx = End {
        region: Arc::clone(&region),
        dir: Dir::Pong,
        last: 0,
    };
    let rx = End {
        region,
        dir: Dir::Ping,
        last: 0,
    };
    echo(ctrl, tx, rx, spec.cfg.size, spec.cfg.block)
}

/// Parent side of the raw (spin) floor.
pub fn raw_pingpong(cfg: &Config) -> Result<Box<dyn PingPongSession>> {
    parent::<AtomicU64>(cfg)
}

/// Parent side of the futex floor.
pub fn futex_pingpong(cfg: &Config) -> Result<Box<dyn PingPongSession>> {
    parent::<AtomicU32>(cfg)
}

/// Child side of the raw floor.
pub fn raw_child(spec: &ChildSpec, ctrl: &mut dyn ChildControl) -> Result<()> {
    child::<AtomicU64>(spec, ctrl)
}

/// Child side of the futex floor.
pub fn futex_child(spec: &ChildSpec, ctrl: &mut dyn ChildControl) -> Result<()> {
    child::<AtomicU32>(spec, ctrl)
}
