//! The two traits every peer system implements: the ends of a one-way,
//! fixed-message-size channel.

use std::time::Duration;

use crate::Result;

/// Empty polls between two `sched_yield` calls of a spinning receiver or a
/// sender spinning on a full queue (a few µs of spinning).
pub const SPINS_PER_YIELD: u32 = 1024;

/// Sending end. `send` may wait (spin or block, as the system does) while the
/// channel is full.
pub trait Tx {
    /// Sends one message of the run's size.
    fn send(&mut self, msg: &[u8]) -> Result<()>;
}

/// Receiving end. Messages are copied into `buf`, whose length is the run's
/// message size.
pub trait Rx {
    /// Takes a message if one is there; never waits.
    fn try_recv(&mut self, buf: &mut [u8]) -> Result<bool>;

    /// Waits asleep (the system's blocking receive) for at most `timeout`;
    /// `false` if nothing came. Spin-only systems do not implement it.
    fn recv_timeout(&mut self, buf: &mut [u8], timeout: Duration) -> Result<bool>;
}

/// Receives one message, spinning on [`Rx::try_recv`] (`block == false`) or
/// sleeping in [`Rx::recv_timeout`] (`block == true`). `alive` is called now
/// and then while nothing comes, to give up if the peer died.
///
/// The spin calls `sched_yield` after every [`SPINS_PER_YIELD`] empty polls:
/// without it, when other load leaves both peers on one core, a spinning
/// receiver burns whole 4 ms time slices while its sender waits, and a
/// stream collapses to one queue-full per tick.
#[inline]
pub fn recv<R: Rx + ?Sized>(
    rx: &mut R,
    buf: &mut [u8],
    block: bool,
    alive: &mut dyn FnMut() -> Result<()>,
) -> Result<()> {
    if block {
        while !rx.recv_timeout(buf, crate::common::POLL_INTERVAL)? {
            alive()?;
        }
    } else {
        let mut spins = 0u32;
        while !rx.try_recv(buf)? {
            spins += 1;
            if spins.is_multiple_of(SPINS_PER_YIELD) {
                std::thread::yield_now();
            }
            if spins == crate::common::SPINS_PER_CHECK {
                spins = 0;
                alive()?;
            }
        }
    }
    Ok(())
}
