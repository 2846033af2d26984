//! procspawn 1.0: a pool of worker processes (re-executed copies of this
//! binary) that run `fn(A) -> R` calls, the arguments and results carried by
//! ipc-channel (Unix sockets, bincode through serde).
//!
//! The pool scenario: T tasks, each `(id, payload)` with a payload of
//! `--size` bytes (default 64: the id, then a splitmix64 stream seeded with
//! it), go through `Pool::spawn` to `--workers` processes (default 4); each
//! worker answers `(id, checksum)`, and the parent checks every answer
//! against the checksum it computed itself. The task function and the
//! payload are those of mulproc's `examples/worker_pool.rs` and of
//! `pool_mp.py`, so the three pools do the same work per task.
//!
//! `Pool::spawn` returns one handle per task, and a pool worker's monitor
//! thread hands a result over only when that handle is joined (a rendezvous
//! channel), so at most one task per worker runs or waits to be joined. The
//! parent keeps at most [`WINDOW`] tasks spawned and not yet joined, joining
//! the oldest first: enough to keep every worker's next task queued, and
//! few file descriptors (a queued task holds three: its argument and result
//! channels are socket pairs).
//!
//! procspawn starts its workers by re-executing the binary with
//! `__PROCSPAWN_CONTENT_PROCESS_ID` set; [`init`] (procspawn's `init`) must
//! run first thing in `main`, before [`crate::child::run_if_child`]: a
//! worker then never looks at `MULPROC_PEER_CHILD`, and the workers are
//! started without it anyway (removed from their environment).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use ::procspawn::{JoinHandle, Pool};

use crate::common::{CHILD_ENV, PARENT_PID_ENV};
use crate::{err, Config, Result};

/// Most tasks spawned and not yet joined.
pub const WINDOW: usize = 64;

static INITIALIZED: AtomicBool = AtomicBool::new(false);

/// procspawn's initialisation: in a pool worker it runs the worker and
/// exits; in any other process it returns at once. Call it first thing in
/// `main` (whatever runs before it runs in every worker too).
pub fn init() {
    ::procspawn::init();
    INITIALIZED.store(true, Ordering::SeqCst);
}

/// A running pool, ready for batches of tasks.
pub trait PoolSession {
    /// Runs `n` tasks (at least one) and checks every result. Returns the
    /// time from the first task spawned to the last result checked, and the
    /// task count.
    fn run(&mut self, n: u64) -> Result<(Duration, u64)>;
}

/// The answer to task `id` with payload `payload`: a checksum of the
/// payload (FNV-1a style, a 64-bit word at a time, the last word
/// zero-padded) folded to 32 bits, plus the id. The same function as
/// mulproc's `examples/worker_pool.rs` and `pool_mp.py`.
pub fn checksum(id: u64, payload: &[u8]) -> u32 {
    const PRIME: u64 = 0x0000_0100_0000_01B3;
    let mix = |h: u64, w: u64| (h ^ w).wrapping_mul(PRIME).rotate_left(29);
    let mut h = 0xCBF2_9CE4_8422_2325u64;
    let mut words = payload.chunks_exact(8);
    for w in &mut words {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        h = mix(h, u64::from_le_bytes(b));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut w = [0u8; 8];
        w[..rest.len()].copy_from_slice(rest);
        h = mix(h, u64::from_le_bytes(w));
    }
    ((h >> 32) as u32 ^ h as u32).wrapping_add(id as u32)
}

/// Writes task `id`'s payload into `buf` (at least 8 bytes): the id, then
/// bytes derived from it (a splitmix64 stream seeded with the id).
pub fn fill_task(id: u64, buf: &mut [u8]) {
    let (head, rest) = buf.split_at_mut(8);
    head.copy_from_slice(&id.to_le_bytes());
    let mut state = id ^ 0x6D75_6C70_726F_6321;
    for chunk in rest.chunks_mut(8) {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        chunk.copy_from_slice(&z.to_le_bytes()[..chunk.len()]);
    }
}

/// What a worker runs: answers `(id, checksum)`.
fn task((id, payload): (u64, Vec<u8>)) -> (u64, u32) {
    (id, checksum(id, &payload))
}

struct Pending {
    id: u64,
    expected: u32,
    handle: JoinHandle<(u64, u32)>,
}

/// The pool; dropping it kills the workers (SIGKILL: they hold nothing
/// that needs cleaning up).
struct ProcspawnPool {
    pool: Pool,
    size: usize,
    next_id: u64,
}

impl ProcspawnPool {
    fn join(&self, p: Pending) -> Result<()> {
        let (id, sum) = p
            .handle
            .join()
            .map_err(|e| err(format!("procspawn task {} failed: {e}", p.id)))?;
        if id != p.id || sum != p.expected {
            return Err(err(format!(
                "procspawn task {}: got ({id}, {sum:#x}), expected ({}, {:#x})",
                p.id, p.id, p.expected
            )));
        }
        Ok(())
    }
}

impl PoolSession for ProcspawnPool {
    fn run(&mut self, n: u64) -> Result<(Duration, u64)> {
        let n = n.max(1);
        let mut in_flight = VecDeque::with_capacity(WINDOW);
        let t0 = Instant::now();
        for _ in 0..n {
            if in_flight.len() == WINDOW {
                let oldest = in_flight.pop_front().ok_or_else(|| err("empty window"))?;
                self.join(oldest)?;
            }
            let id = self.next_id;
            self.next_id += 1;
            let mut payload = vec![0u8; self.size];
            fill_task(id, &mut payload);
            let expected = checksum(id, &payload);
            let handle = self.pool.spawn((id, payload), task);
            in_flight.push_back(Pending {
                id,
                expected,
                handle,
            });
        }
        while let Some(p) = in_flight.pop_front() {
            self.join(p)?;
        }
        Ok((t0.elapsed(), n))
    }
}

/// Starts a pool of `cfg.workers` processes.
pub fn pool(cfg: &Config) -> Result<Box<dyn PoolSession>> {
    if !INITIALIZED.load(Ordering::SeqCst) {
        return Err(err(
            "procspawn is not initialised: call mulproc_peers::peers::procspawn::init() \
             first thing in main",
        ));
    }
    let pool = Pool::builder(cfg.workers)
        .env_remove(CHILD_ENV)
        .env_remove(PARENT_PID_ENV)
        .disable_stdin()
        .build()
        .map_err(|e| err(format!("cannot start the procspawn pool: {e}")))?;
    Ok(Box::new(ProcspawnPool {
        pool,
        size: cfg.size,
        next_id: 0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_matches_the_reference_values() {
        let mut buf = [0u8; 64];
        fill_task(7, &mut buf);
        assert_eq!(&buf[..8], &7u64.to_le_bytes());
        assert_ne!(&buf[8..16], &[0u8; 8]);
        let (id, sum) = task((7, buf.to_vec()));
        assert_eq!((id, sum), (7, checksum(7, &buf)));
        // A different id gives a different payload and checksum.
        let mut other = [0u8; 64];
        fill_task(8, &mut other);
        assert_ne!(buf, other);
        assert_ne!(checksum(8, &other), sum);
        // The zero-padded tail word: 60 bytes hash like 60 bytes + 4 zeros.
        let mut padded = buf;
        padded[60..].fill(0);
        assert_eq!(checksum(7, &buf[..60]), checksum(7, &padded));
    }

    #[test]
    fn same_tasks_as_pool_mp_py() {
        // Values printed by pool_mp.py's fill_task/checksum (Python ints),
        // so the Rust and Python pools do the same work.
        let mut buf = [0u8; 64];
        fill_task(7, &mut buf);
        assert_eq!(checksum(7, &buf), 0x5c8f_3512);
        let mut odd = [0u8; 61];
        fill_task(12345, &mut odd);
        assert_eq!(checksum(12345, &odd), 0xc128_e7b4);
    }
}
