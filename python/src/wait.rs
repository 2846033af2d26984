//! Blocking waits: the GIL released, cut into slices with a signal check
//! between them, so Ctrl-C (KeyboardInterrupt) interrupts any wait within
//! one slice.

use std::time::{Duration, Instant};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// Longest slice of a wait on a queue between two signal checks.
pub const SLICE: Duration = Duration::from_millis(50);

/// When a wait ends: `None` for never.
#[derive(Clone, Copy, Debug)]
pub struct Deadline(Option<Instant>);

impl Deadline {
    /// From a Python timeout in seconds, as `multiprocessing` reads it:
    /// `None` (or infinity) waits forever; a negative timeout is 0; NaN is
    /// refused.
    pub fn from_timeout(timeout: Option<f64>) -> PyResult<Deadline> {
        let Some(t) = timeout else {
            return Ok(Deadline(None));
        };
        if t.is_nan() {
            return Err(PyValueError::new_err("timeout must be a number, not NaN"));
        }
        if t.is_infinite() && t > 0.0 {
            return Ok(Deadline(None));
        }
        let d = Duration::try_from_secs_f64(t.max(0.0)).unwrap_or(Duration::MAX);
        Ok(Deadline(Instant::now().checked_add(d)))
    }

    /// Time left, `None` for forever.
    pub fn remaining(&self) -> Option<Duration> {
        self.0.map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        self.remaining().is_some_and(|r| r.is_zero())
    }
}

/// Calls `step(slice)` with the GIL released until it returns `Some` or
/// the deadline passes (`Ok(None)`), each slice at most `max_slice` long,
/// checking for signals between slices (a KeyboardInterrupt raised by the
/// handler ends the wait with that exception).
pub fn wait_loop<T, F>(
    py: Python<'_>,
    deadline: Deadline,
    max_slice: Duration,
    mut step: F,
) -> PyResult<Option<T>>
where
    T: Send,
    F: FnMut(Duration) -> PyResult<Option<T>> + Send,
{
    loop {
        let slice = match deadline.remaining() {
            None => max_slice,
            Some(r) if r.is_zero() => return Ok(None),
            Some(r) => r.min(max_slice),
        };
        if let Some(v) = py.detach(|| step(slice))? {
            return Ok(Some(v));
        }
        py.check_signals()?;
    }
}
