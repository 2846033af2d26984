//! `memcpy` bandwidth: copy one buffer into another, over and over. At
//! 64 KiB both buffers stay in cache: this is the bound for a stream that
//! copies each 64 KiB message once.
//!
//! The source is page-aligned and the destination is `dst_offset` bytes
//! past a page boundary (default 0). Alignment matters on this machine:
//! glibc copies 64 KiB with `rep movsb`, which runs ~15x slower when the
//! destination is 16 (mod 64) bytes off, as plain `Vec`s from malloc are.

use std::hint::black_box;
use std::time::{Duration, Instant};

use crate::common::AlignedBuf;

/// A source and a destination buffer of the run's size.
#[derive(Debug)]
pub struct Memcpy {
    src: AlignedBuf,
    dst: AlignedBuf,
}

impl Memcpy {
    /// Buffers of `size` bytes (touched once, so no page faults later).
    pub fn new(size: usize, dst_offset: usize) -> Self {
        Memcpy {
            src: AlignedBuf::new(size, 0, 0x5A),
            dst: AlignedBuf::new(size, dst_offset, 1),
        }
    }

    /// Bytes moved by one copy.
    pub fn size(&self) -> usize {
        self.src.as_slice().len()
    }

    /// Copies `n` times; returns the elapsed time.
    pub fn run(&mut self, n: u64) -> Duration {
        let src = self.src.as_slice();
        let dst = self.dst.as_mut_slice();
        let t0 = Instant::now();
        for _ in 0..n {
            // black_box keeps the copies from being merged or dropped.
            black_box(&mut *dst).copy_from_slice(black_box(src));
        }
        t0.elapsed()
    }
}
