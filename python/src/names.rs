//! Names: generated ones, and the names this process created, removed
//! when their creating object goes away or at exit.
//!
//! A queue or pipe created from Python keeps its name for as long as the
//! object that created it lives in the creating process: children opened
//! by name (pickled handles, or handles reopened after a fork) find it
//! even after the creator called `close()`. The name is removed when that
//! object is garbage collected, by `unlink()`, or at interpreter exit by
//! `remove_owned` (the package registers it as a `multiprocessing` exit
//! finalizer, which runs after the children have been joined).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use pyo3::prelude::*;

use crate::fork;

/// Names created by this process (pid, name), not yet removed. Locked
/// only with the GIL held (see the crate docs on fork).
static OWNED: Mutex<Vec<(u32, String)>> = Mutex::new(Vec::new());

/// A fresh name: `py-<pid>-<counter>-<random>`.
pub fn generate(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos() ^ (d.as_secs() as u32).rotate_left(16))
        .unwrap_or(0);
    format!("{prefix}-{}-{n}-{nanos:08x}", std::process::id())
}

/// Whose removal a created name is; see the module docs. Shared by the
/// objects that created the channel (both connections of a pipe).
#[derive(Debug)]
pub struct NameOwner {
    name: String,
    born: fork::Generation,
    /// Removes the name (`Queue::remove` or `Pipe::remove`).
    remove: fn(&str) -> Result<(), mulproc::SetupError>,
}

impl NameOwner {
    /// Records `name` as created by this process.
    pub fn new(name: &str, remove: fn(&str) -> Result<(), mulproc::SetupError>) -> NameOwner {
        OWNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((std::process::id(), name.to_owned()));
        NameOwner {
            name: name.to_owned(),
            born: fork::generation(),
            remove,
        }
    }

    /// Removes the name now, if this process still owns it.
    pub fn unlink(&self) -> Result<(), mulproc::SetupError> {
        if self.born == fork::generation() && disown(&self.name) {
            (self.remove)(&self.name)
        } else {
            Ok(())
        }
    }
}

impl Drop for NameOwner {
    fn drop(&mut self) {
        // Nowhere to report from a drop; `unlink()` reports.
        let _ = self.unlink();
    }
}

/// Takes `name` off this process's list; false if it was not on it.
fn disown(name: &str) -> bool {
    let me = std::process::id();
    let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
    match owned.iter().position(|(pid, n)| *pid == me && n == name) {
        Some(i) => {
            owned.swap_remove(i);
            true
        }
        None => false,
    }
}

/// Removes every name this process created and still owns (the exit
/// hook). Names inherited from a parent across a fork are left alone.
#[pyfunction]
#[pyo3(name = "_remove_owned")]
pub fn remove_owned() {
    let me = std::process::id();
    let mine: Vec<String> = {
        let mut owned = OWNED.lock().unwrap_or_else(|e| e.into_inner());
        let (mine, others): (Vec<_>, Vec<_>) = owned.drain(..).partition(|(pid, _)| *pid == me);
        *owned = others;
        mine.into_iter().map(|(_, n)| n).collect()
    };
    for name in mine {
        // Queues and pipes share the namespace; either remove does.
        let _ = mulproc::Queue::remove(&name);
    }
}
