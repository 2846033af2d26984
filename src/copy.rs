//! Copying message bytes, at the same speed whatever the buffers' addresses.
//!
//! glibc copies large blocks (above a threshold of 2-4 KiB here) with
//! `rep movsb`, whose speed on this machine's CPU depends on where the
//! destination sits relative to the source. Measured, 64 KiB in cache:
//!
//! | destination − source (mod 64) | one `memcpy` | in 1 KiB pieces |
//! |-------------------------------|--------------|-----------------|
//! | 0, 32                         | 38–50 GB/s   | 49–50 GB/s      |
//! | 48                            | 24–45 GB/s   | 50 GB/s         |
//! | 8, 16, 24                     | 2.1–3.0 GB/s | 42–50 GB/s      |
//!
//! A payload slot is 64-byte aligned and a `Vec` from malloc only 16-byte
//! aligned, so receiving 64 KiB into a caller's `Vec` could be 20x slower
//! for no reason the caller can see. Pieces of at most [`PIECE`] bytes stay under the
//! threshold, where glibc copies with vector loads and stores at full
//! speed for any alignment; the extra calls cost nothing measurable.

/// Largest piece copied by one `memcpy`.
const PIECE: usize = 1024;

/// Copies `n` bytes from `src` to `dst`, in pieces of at most [`PIECE`].
///
/// # Safety
///
/// As [`std::ptr::copy_nonoverlapping`]: `src` valid for reading and `dst`
/// for writing `n` bytes, the two not overlapping.
#[inline]
pub(crate) unsafe fn copy_bytes(src: *const u8, dst: *mut u8, n: usize) {
    if n <= PIECE {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, n) };
        return;
    }
    let mut done = 0;
    while done < n {
        let k = PIECE.min(n - done);
        // SAFETY: `done + k <= n`, inside both areas of the caller's
        // contract, which do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(src.add(done), dst.add(done), k) };
        done += k;
    }
}

/// Appends `src` to `buf` with [`copy_bytes`].
pub(crate) fn extend(buf: &mut Vec<u8>, src: &[u8]) {
    buf.reserve(src.len());
    let len = buf.len();
    // SAFETY: `reserve` made room for `src.len()` more bytes after `len`;
    // `src` is not part of `buf` (we hold `buf` mutably); the bytes written
    // are initialised before `set_len` counts them.
    unsafe {
        copy_bytes(src.as_ptr(), buf.as_mut_ptr().add(len), src.len());
        buf.set_len(len + src.len());
    }
}

/// A new `Vec` holding a copy of `src` (as `to_vec`, with [`copy_bytes`]).
pub(crate) fn to_vec(src: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(src.len());
    extend(&mut v, src);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_every_length_and_offset() {
        let src: Vec<u8> = (0..5000u32).map(|i| (i * 7 + 3) as u8).collect();
        for len in [0, 1, 63, 1023, 1024, 1025, 2048, 4097] {
            for off in [0, 1, 16, 33] {
                let s = &src[off..off + len];
                let mut buf = vec![9u8; 3];
                extend(&mut buf, s);
                assert_eq!(&buf[..3], [9, 9, 9]);
                assert_eq!(&buf[3..], s, "len {len} offset {off}");
                assert_eq!(to_vec(s), s);
            }
        }
    }
}
