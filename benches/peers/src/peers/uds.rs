//! `std::os::unix::net::UnixStream`, blocking sockets, fixed-size framing.
//!
//! One connection per child (ping-pong uses it both ways). Receiving:
//! - spin (`try_recv`): `recv(MSG_DONTWAIT)` on the blocking socket;
//! - block (`recv_timeout`): one connection → plain blocking `recv` with
//!   SO_RCVTIMEO; several → `poll` over them, then `recv(MSG_DONTWAIT)`.
//!
//! A partial message is kept in a staging buffer until the rest arrives.

use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::time::Duration;

use crate::common::{unique_name, ChildControl, Children, PathGuard, POLL_INTERVAL};
use crate::config::ChildSpec;
use crate::scenario::{echo, produce, PingPong, PingPongSession, Stream, StreamSession};
use crate::transport::{Rx, Tx};
use crate::{err, Config, Result, Scenario};

struct UdsTx(UnixStream);

impl Tx for UdsTx {
    #[inline]
    fn send(&mut self, msg: &[u8]) -> Result<()> {
        Ok(self.0.write_all(msg)?)
    }
}

struct Conn {
    stream: UnixStream,
    stage: Vec<u8>,
    filled: usize,
}

/// `recv(2)`: `Some(n)` bytes (0 = peer closed), `None` on EAGAIN (nothing
/// now, or SO_RCVTIMEO expired).
fn recv_some(stream: &UnixStream, dst: &mut [u8], flags: libc::c_int) -> Result<Option<usize>> {
    loop {
        // SAFETY: `dst` is a valid, writable buffer of `dst.len()` bytes for
        // the duration of the call; the fd is owned by `stream`.
        let n = unsafe {
            libc::recv(
                stream.as_raw_fd(),
                dst.as_mut_ptr().cast(),
                dst.len(),
                flags,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => {}
            Some(libc::EAGAIN) => return Ok(None),
            _ => return Err(e.into()),
        }
    }
}

impl Conn {
    /// Reads until one whole message is in `buf` (`true`) or the socket has
    /// nothing more now (`false`, partial data kept).
    fn fill(&mut self, buf: &mut [u8], flags: libc::c_int) -> Result<bool> {
        let size = buf.len();
        loop {
            let dst = if self.filled == 0 {
                &mut buf[..]
            } else {
                &mut self.stage[self.filled..size]
            };
            let n = match recv_some(&self.stream, dst, flags)? {
                None => return Ok(false),
                Some(0) => return Err(err("unix socket closed by the peer")),
                Some(n) => n,
            };
            if self.filled == 0 {
                if n == size {
                    return Ok(true);
                }
                self.stage[..n].copy_from_slice(&buf[..n]);
            }
            self.filled += n;
            if self.filled == size {
                buf.copy_from_slice(&self.stage[..size]);
                self.filled = 0;
                return Ok(true);
            }
        }
    }
}

struct UdsRx {
    conns: Vec<Conn>,
    next: usize,
    pollfds: Vec<libc::pollfd>,
}

impl UdsRx {
    fn new(streams: Vec<UnixStream>, size: usize, block: bool) -> Result<Self> {
        if block && streams.len() == 1 {
            streams[0].set_read_timeout(Some(POLL_INTERVAL))?;
        }
        let pollfds = streams
            .iter()
            .map(|s| libc::pollfd {
                fd: s.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let conns = streams
            .into_iter()
            .map(|stream| Conn {
                stream,
                stage: vec![0; size],
                filled: 0,
            })
            .collect();
        Ok(UdsRx {
            conns,
            next: 0,
            pollfds,
        })
    }
}

impl Rx for UdsRx {
    #[inline]
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<bool> {
        let n = self.conns.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.conns[i].fill(buf, libc::MSG_DONTWAIT)? {
                // Round-robin: start after this connection next time.
                self.next = (i + 1) % n;
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<bool> {
        if self.conns.len() == 1 {
            // Blocking recv; SO_RCVTIMEO (= POLL_INTERVAL) bounds the wait.
            return self.conns[0].fill(buf, 0);
        }
        if self.try_recv(buf)? {
            return Ok(true);
        }
        let ms = libc::c_int::try_from(timeout.as_millis()).unwrap_or(libc::c_int::MAX);
        // SAFETY: `pollfds` is a valid array of `len` pollfd structs owned
        // by `self`, and its fds stay open while `self.conns` lives.
        let rc = unsafe {
            libc::poll(
                self.pollfds.as_mut_ptr(),
                self.pollfds.len() as libc::nfds_t,
                ms,
            )
        };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::EINTR) {
                return Err(e.into());
            }
        }
        self.try_recv(buf)
    }
}

/// Binds a listener at a fresh path under /tmp.
fn listen() -> Result<(PathGuard, UnixListener)> {
    let guard = PathGuard::new(Path::new("/tmp").join(unique_name("uds.sock")));
    let listener = UnixListener::bind(guard.path())?;
    Ok((guard, listener))
}

/// Accepts one connection per child (all already connected: they connect
/// before reporting ready).
fn accept_all(listener: &UnixListener, n: usize) -> Result<Vec<UnixStream>> {
    (0..n).map(|_| Ok(listener.accept()?.0)).collect()
}

/// Parent side of a ping-pong.
pub fn pingpong(cfg: &Config) -> Result<Box<dyn PingPongSession>> {
    let (mut path, listener) = listen()?;
    let spec = ChildSpec {
        cfg: cfg.clone(),
        addr: path.path_str().to_owned(),
        index: 0,
    };
    let children = Children::spawn_ready(std::slice::from_ref(&spec))?;
    let mut streams = accept_all(&listener, 1)?;
    path.remove();
    let stream = streams.pop().ok_or_else(|| err("no connection"))?;
    let tx = UdsTx(stream.try_clone()?);
    let rx = UdsRx::new(vec![stream], cfg.size, cfg.block)?;
    Ok(Box::new(PingPong::new(children, tx, rx, cfg, None)))
}

/// Parent side of a stream: one connection per producer.
pub fn stream(cfg: &Config) -> Result<Box<dyn StreamSession>> {
    let (mut path, listener) = listen()?;
    let specs: Vec<_> = (0..cfg.producers)
        .map(|index| ChildSpec {
            cfg: cfg.clone(),
            addr: path.path_str().to_owned(),
            index,
        })
        .collect();
    let children = Children::spawn_ready(&specs)?;
    let streams = accept_all(&listener, cfg.producers)?;
    path.remove();
    let rx = UdsRx::new(streams, cfg.size, cfg.block)?;
    Ok(Box::new(Stream::new(children, rx, cfg, None)))
}

/// Child side.
pub fn child(spec: &ChildSpec, ctrl: &mut dyn ChildControl) -> Result<()> {
    let cfg = &spec.cfg;
    let stream = UnixStream::connect(&spec.addr)?;
    match cfg.scenario {
        Scenario::PingPong => {
            let tx = UdsTx(stream.try_clone()?);
            let rx = UdsRx::new(vec![stream], cfg.size, cfg.block)?;
            echo(ctrl, tx, rx, cfg.size, cfg.block)
        }
        Scenario::Stream => produce(ctrl, UdsTx(stream), cfg.size),
        Scenario::Memcpy | Scenario::Pool => Err(err(format!("no {} child", cfg.scenario))),
    }
}
