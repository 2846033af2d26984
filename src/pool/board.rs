//! The pool's status board: a small shared file (`/dev/shm/mulproc.<name>`)
//! of 64-bit words, one region per worker slot, where a worker announces
//! the tasks it holds and the one it is running, and the parent lists the
//! tasks given up as poison, which workers must skip.
//!
//! After a worker's death the parent reads the dead worker's region: the
//! task it was running is charged with a death (the poison rule), the
//! tasks it held are counted as retried (the channel redelivers them).
//! Every word is an atomic; the writer of each is a single process (the
//! worker of the slot, or the parent for the header and the poison list),
//! and nothing read from the board is used as an index or a length
//! without being bounded first: a scribbled board can make the pool miscount,
//! never read or write outside the mapping.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

/// Most task ids a worker announces as held (its largest batch).
pub(crate) const MAX_HELD: usize = 64;
/// Most poison tasks a pool can list.
pub(crate) const POISON_CAP: usize = 4096;
/// Most worker slots.
pub(crate) const MAX_SLOTS: usize = 128;

const MAGIC: u64 = 0x6D75_6C70_6F6F_6C31; // "mulpool1"
const HEADER_WORDS: usize = 8;
/// running, held count, held ids, ready pid; padded to whole cache lines.
const SLOT_WORDS: usize = 72;
const W_MAGIC: usize = 0;
const W_SLOTS: usize = 1;
const W_POISON_COUNT: usize = 2;
const S_READY: usize = 0;
const S_RUNNING: usize = 1;
const S_HELD_COUNT: usize = 2;
const S_HELD: usize = 3;
const _: () = assert!(S_HELD + MAX_HELD <= SLOT_WORDS && SLOT_WORDS % 8 == 0);

fn words(slots: usize) -> usize {
    HEADER_WORDS + slots * SLOT_WORDS + POISON_CAP
}

fn path(name: &str) -> PathBuf {
    PathBuf::from(format!("/dev/shm/mulproc.{name}"))
}

/// A mapped board.
pub(crate) struct Board {
    base: *mut AtomicU64,
    words: usize,
    slots: usize,
    /// Set in the creator: the file is removed on drop.
    remove: Option<PathBuf>,
}

// SAFETY: the mapping is shared memory accessed only through atomics; the
// pointer stays valid until drop unmaps it.
unsafe impl Send for Board {}
// SAFETY: as above: every access is an atomic operation.
unsafe impl Sync for Board {}

impl std::fmt::Debug for Board {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Board").field("slots", &self.slots).finish()
    }
}

impl Board {
    /// Creates a board of `slots` worker slots under a new unique name;
    /// returns it and the name for [`Board::open`].
    pub(crate) fn create(slots: usize) -> io::Result<(Board, String)> {
        assert!(slots <= MAX_SLOTS);
        let name = format!("{}-board", crate::unique_name());
        let p = path(&name);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&p)?;
        let len = (words(slots) * 8) as u64;
        let mapped = file
            .set_len(len)
            .and_then(|()| Board::map(&file, words(slots), slots));
        match mapped {
            Ok(mut b) => {
                b.word(W_SLOTS).store(slots as u64, Ordering::Relaxed);
                // Release: the header above is visible with the magic.
                b.word(W_MAGIC).store(MAGIC, Ordering::Release);
                if slots == 0 {
                    // No worker will open it (every worker of the pool is
                    // remote): its name goes now, so that a parent killed
                    // with no worker to clean up leaves nothing behind.
                    let _ = std::fs::remove_file(&p);
                } else {
                    b.remove = Some(p);
                }
                Ok((b, name))
            }
            Err(e) => {
                let _ = std::fs::remove_file(&p);
                Err(e)
            }
        }
    }

    /// Opens the board `name` made by [`Board::create`] (in a worker),
    /// checking owner, mode, size and magic.
    pub(crate) fn open(name: &str) -> io::Result<Board> {
        let bad = |what: &str| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("pool board {name:?}: {what}"),
            )
        };
        if name.contains('/') {
            return Err(bad("invalid name"));
        }
        let file = OpenOptions::new().read(true).write(true).open(path(name))?;
        let meta = file.metadata()?;
        // SAFETY: getuid has no preconditions.
        let uid = unsafe { libc::getuid() };
        if meta.uid() != uid || meta.mode() & 0o077 != 0 {
            return Err(bad("not owned by this user, or open to others"));
        }
        let len = meta.len();
        if len % 8 != 0 || len < (HEADER_WORDS * 8) as u64 || len > (words(MAX_SLOTS) * 8) as u64 {
            return Err(bad("wrong size"));
        }
        let total = (len / 8) as usize;
        let mut b = Board::map(&file, total, 0)?;
        // Acquire: pairs with the creator's Release store of the magic.
        if b.word(W_MAGIC).load(Ordering::Acquire) != MAGIC {
            return Err(bad("not a pool board"));
        }
        let slots = b.word(W_SLOTS).load(Ordering::Relaxed) as usize;
        if slots > MAX_SLOTS || words(slots) != total {
            return Err(bad("layout does not match its size"));
        }
        b.slots = slots;
        Ok(b)
    }

    fn map(file: &File, words: usize, slots: usize) -> io::Result<Board> {
        use std::os::fd::AsRawFd;
        // SAFETY: a fresh shared mapping of the whole file; the kernel
        // picks the address; the fd is valid for the call.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                words * 8,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Board {
            base: p.cast(),
            words,
            slots,
            remove: None,
        })
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < self.words, "board word {i} out of {}", self.words);
        // SAFETY: `i` is inside the mapping (checked above), which is
        // page-aligned, so the word is aligned; the memory is only ever
        // accessed atomically, by every process, and lives until drop.
        unsafe { &*self.base.add(i) }
    }

    fn slot_word(&self, slot: usize, w: usize) -> &AtomicU64 {
        assert!(slot < self.slots && w < SLOT_WORDS);
        self.word(HEADER_WORDS + slot * SLOT_WORDS + w)
    }

    /// Worker slots on this board.
    pub(crate) fn slots(&self) -> usize {
        self.slots
    }

    // ------------------------------------------------------ worker side ---

    /// The worker of `slot` has its channels open.
    pub(crate) fn set_ready(&self, slot: usize, pid: u32) {
        self.slot_word(slot, S_READY)
            .store(u64::from(pid), Ordering::Release);
    }

    /// Announces the tasks the worker of `slot` now holds.
    pub(crate) fn set_held(&self, slot: usize, ids: &[u64]) {
        let n = ids.len().min(MAX_HELD);
        for (i, &id) in ids[..n].iter().enumerate() {
            self.slot_word(slot, S_HELD + i)
                .store(id, Ordering::Relaxed);
        }
        // Release: the ids above are visible with the count.
        self.slot_word(slot, S_HELD_COUNT)
            .store(n as u64, Ordering::Release);
    }

    /// Announces task `id` as the `i`-th held by the worker of `slot`
    /// (`i` counts from 0 after a [`set_held`](Board::set_held) with no
    /// ids).
    #[inline]
    pub(crate) fn push_held(&self, slot: usize, i: usize, id: u64) {
        if i < MAX_HELD {
            self.slot_word(slot, S_HELD + i)
                .store(id, Ordering::Relaxed);
            // Release: the id is visible with the count.
            self.slot_word(slot, S_HELD_COUNT)
                .store(i as u64 + 1, Ordering::Release);
        }
    }

    /// Marks task `id` (or none) as the one running in `slot`.
    #[inline]
    pub(crate) fn set_running(&self, slot: usize, id: Option<u64>) {
        let v = id.map_or(0, |id| id.wrapping_add(1));
        self.slot_word(slot, S_RUNNING).store(v, Ordering::Release);
    }

    /// True if the parent has given task `id` up as poison.
    #[inline]
    pub(crate) fn is_poisoned(&self, id: u64) -> bool {
        // Acquire: pairs with the parent's Release in `poison`.
        let n = self.word(W_POISON_COUNT).load(Ordering::Acquire) as usize;
        let base = HEADER_WORDS + self.slots * SLOT_WORDS;
        (0..n.min(POISON_CAP)).any(|i| self.word(base + i).load(Ordering::Relaxed) == id)
    }

    // ------------------------------------------------------ parent side ---

    /// Clears `slot` for a new worker.
    pub(crate) fn reset_slot(&self, slot: usize) {
        self.slot_word(slot, S_READY).store(0, Ordering::Relaxed);
        self.slot_word(slot, S_RUNNING).store(0, Ordering::Relaxed);
        self.slot_word(slot, S_HELD_COUNT)
            .store(0, Ordering::Relaxed);
    }

    /// The pid the worker of `slot` reported when ready, if it did.
    pub(crate) fn ready(&self, slot: usize) -> Option<u32> {
        let v = self.slot_word(slot, S_READY).load(Ordering::Acquire);
        (v != 0).then_some(v as u32)
    }

    /// What the (dead) worker of `slot` last announced: the task it was
    /// running, and the tasks it held.
    pub(crate) fn last_words(&self, slot: usize) -> (Option<u64>, Vec<u64>) {
        let running = self.slot_word(slot, S_RUNNING).load(Ordering::Acquire);
        let n = (self.slot_word(slot, S_HELD_COUNT).load(Ordering::Acquire) as usize).min(MAX_HELD);
        let held = (0..n)
            .map(|i| self.slot_word(slot, S_HELD + i).load(Ordering::Relaxed))
            .collect();
        (running.checked_sub(1), held)
    }

    /// Lists `id` as poison; false if the list is full.
    pub(crate) fn poison(&self, id: u64) -> bool {
        let n = self.word(W_POISON_COUNT).load(Ordering::Relaxed) as usize;
        if n >= POISON_CAP {
            return false;
        }
        let base = HEADER_WORDS + self.slots * SLOT_WORDS;
        self.word(base + n).store(id, Ordering::Relaxed);
        // Release: pairs with the Acquire in `is_poisoned`.
        self.word(W_POISON_COUNT)
            .store(n as u64 + 1, Ordering::Release);
        true
    }

    /// Removes the board's name `name` (a worker whose parent died).
    pub(crate) fn remove(name: &str) {
        if !name.contains('/') {
            let _ = std::fs::remove_file(path(name));
        }
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of that length; no reference
        // into it outlives `self`.
        unsafe {
            libc::munmap(self.base.cast(), self.words * 8);
        }
        if let Some(p) = &self.remove {
            let _ = std::fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_round_trips_between_handles_and_is_removed() {
        let (b, name) = Board::create(3).unwrap();
        let w = Board::open(&name).unwrap();
        assert_eq!(w.slots(), 3);
        w.set_ready(2, 77);
        w.set_held(2, &[5, 6, 7]);
        w.set_running(2, Some(6));
        assert_eq!(b.ready(2), Some(77));
        assert_eq!(b.last_words(2), (Some(6), vec![5, 6, 7]));
        assert!(!w.is_poisoned(6));
        assert!(b.poison(6));
        assert!(w.is_poisoned(6) && !w.is_poisoned(5));
        b.reset_slot(2);
        assert_eq!(b.last_words(2), (None, vec![]));
        assert_eq!(b.ready(2), None);
        drop(w);
        drop(b);
        assert!(Board::open(&name).is_err(), "removed with its creator");
    }
}
