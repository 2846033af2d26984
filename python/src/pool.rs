//! The binding of `mulproc::pool` (`mulproc._mulproc._PoolCore` and
//! `_serve_pool_worker`): the parent side drives a
//! `Pool<Vec<u8>, Vec<u8>, BytesCodec>` whose workers are Python processes
//! (`sys.executable -c "import mulproc._pool_worker ..."`), and the worker
//! side runs the Rust worker loop with a bytes -> bytes Python handler.
//! Pickling, chunking and the `multiprocessing.Pool`-shaped interface are
//! in `python/mulproc/pool.py`.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use mulproc::pool::{BytesCodec, Completed, Pool, PoolError, TaskError};
use pyo3::exceptions::{PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::wait::{wait_loop, Deadline, SLICE};

type Core = Pool<Vec<u8>, Vec<u8>, BytesCodec>;

/// Result kinds handed to Python with each result.
const OK: u8 = 0;
/// The handler itself failed (the Python handler raised: a bug of the
/// worker module, not of the task's function).
const FAILED: u8 = 1;
/// The task killed its worker `max_attempts` times.
const KILLED: u8 = 2;
/// The task's input or result was too large for the pool's channels.
const TOO_LARGE: u8 = 3;
/// Anything else (undecodable, or the pool failed).
const OTHER: u8 = 4;

fn pool_error(e: PoolError) -> PyErr {
    match e {
        PoolError::Config(_) => PyValueError::new_err(e.to_string()),
        PoolError::Task(TaskError::TooLarge { .. }) => PyValueError::new_err(format!(
            "{e} (raise the Pool's max_task_bytes, or pass less per task)"
        )),
        e => PyRuntimeError::new_err(e.to_string()),
    }
}

/// The parent's side: the Rust pool and the results taken while waiting
/// for room in the window.
struct Inner {
    pool: Core,
    stash: VecDeque<Completed<Vec<u8>>>,
}

impl Inner {
    /// Waits (GIL released, signals checked every 50 ms) until fewer than
    /// `window` tasks are in flight, keeping the results that come.
    fn make_room(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.pool.in_flight() < self.pool.window() {
            return Ok(());
        }
        let Inner { pool, stash } = self;
        wait_loop(py, Deadline::from_timeout(None)?, SLICE, |slice| {
            if let Some(c) = pool.next_result_timeout(slice).map_err(pool_error)? {
                stash.push_back(c);
                // Take the rest that are there without waiting.
                while let Some(c) = pool.try_next_result().map_err(pool_error)? {
                    stash.push_back(c);
                }
            }
            Ok((pool.in_flight() < pool.window()).then_some(()))
        })?;
        Ok(())
    }
}

/// The parent's side of a pool of Python worker processes, over bytes
/// (used by `mulproc.Pool`; not for direct use).
#[pyclass(module = "mulproc", name = "_PoolCore", frozen)]
pub struct PoolCore {
    inner: Mutex<Option<Inner>>,
}

impl PoolCore {
    /// Runs `f` on the live pool; the pool is driven by one thread at a
    /// time (`mulproc.Pool` keeps a lock around every call).
    fn with<T>(&self, f: impl FnOnce(&mut Inner) -> PyResult<T>) -> PyResult<T> {
        let mut guard = self
            .inner
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("the pool is being driven by another thread"))?;
        match guard.as_mut() {
            Some(inner) => f(inner),
            None => Err(PyValueError::new_err("Pool not running")),
        }
    }
}

fn result_tuple(py: Python<'_>, c: Completed<Vec<u8>>) -> (u64, u8, Py<PyAny>) {
    let (kind, payload): (u8, Py<PyAny>) = match c.result {
        Ok(bytes) => (OK, PyBytes::new(py, &bytes).into_any().unbind()),
        Err(e) => {
            let kind = match &e {
                TaskError::Failed { .. } | TaskError::Panicked { .. } => FAILED,
                TaskError::Killed { .. } => KILLED,
                TaskError::TooLarge { .. } => TOO_LARGE,
                _ => OTHER,
            };
            let text = e.to_string().into_pyobject(py).expect("a str");
            (kind, text.into_any().unbind())
        }
    };
    (c.id, kind, payload)
}

#[pymethods]
impl PoolCore {
    /// Starts `processes` workers running `program` with `args` and waits
    /// until each is ready (GIL released).
    #[new]
    #[pyo3(signature = (processes, program, args, *, window, max_attempts, max_task_bytes, max_result_bytes, name))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        processes: usize,
        program: String,
        args: Vec<String>,
        window: usize,
        max_attempts: u32,
        max_task_bytes: usize,
        max_result_bytes: usize,
        name: String,
    ) -> PyResult<Self> {
        let pool = py
            .detach(|| {
                Pool::builder()
                    .bytes()
                    .name(name)
                    .workers(processes)
                    .window(window)
                    .max_attempts(max_attempts)
                    .max_task_bytes(max_task_bytes)
                    .max_result_bytes(max_result_bytes)
                    .worker_command(program, args)
                    .start_timeout(Duration::from_secs(60))
                    .start_fallible(|_: Vec<u8>| Err::<Vec<u8>, &str>("not a worker"))
            })
            .map_err(pool_error)?;
        Ok(PoolCore {
            inner: Mutex::new(Some(Inner {
                pool,
                stash: VecDeque::new(),
            })),
        })
    }

    /// Submits one task (bytes); returns its id. Waits for room in the
    /// window first (GIL released, Ctrl-C works).
    fn submit(&self, py: Python<'_>, data: &[u8]) -> PyResult<u64> {
        self.with(|inner| {
            inner.make_room(py)?;
            inner.pool.submit(data.to_vec()).map_err(pool_error)
        })
    }

    /// The next result as `(id, kind, payload)` (kind 0: payload is the
    /// result's bytes; otherwise a message), waiting up to `timeout`
    /// seconds (`None`: forever) with the GIL released; `None` on timeout
    /// or when no result is pending.
    #[pyo3(signature = (timeout=None))]
    fn take(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<(u64, u8, Py<PyAny>)>> {
        let deadline = Deadline::from_timeout(timeout)?;
        self.with(|inner| {
            if let Some(c) = inner.stash.pop_front() {
                return Ok(Some(result_tuple(py, c)));
            }
            if inner.pool.pending_results() == 0 {
                return Ok(None);
            }
            if let Some(c) = inner.pool.try_next_result().map_err(pool_error)? {
                return Ok(Some(result_tuple(py, c)));
            }
            let pool = &mut inner.pool;
            let got = wait_loop(py, deadline, SLICE, |slice| {
                if pool.pending_results() == 0 {
                    return Ok(Some(None));
                }
                Ok(pool
                    .next_result_timeout(slice)
                    .map_err(pool_error)?
                    .map(Some))
            })?;
            Ok(got.flatten().map(|c| result_tuple(py, c)))
        })
    }

    /// Results not taken yet (answered or in flight).
    fn pending(&self) -> PyResult<usize> {
        self.with(|inner| Ok(inner.pool.pending_results() + inner.stash.len()))
    }

    /// Tasks in flight.
    fn in_flight(&self) -> PyResult<usize> {
        self.with(|inner| Ok(inner.pool.in_flight()))
    }

    /// The pids of the worker processes now.
    fn worker_pids(&self) -> PyResult<Vec<u32>> {
        self.with(|inner| Ok(inner.pool.worker_pids()))
    }

    /// The pool's counters as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.with(|inner| Ok(inner.pool.stats()))?;
        let d = PyDict::new(py);
        d.set_item("submitted", s.submitted)?;
        d.set_item("succeeded", s.succeeded)?;
        d.set_item("failed", s.failed)?;
        d.set_item("retried", s.retried)?;
        d.set_item("restarted", s.restarted)?;
        d.set_item("duplicates", s.duplicates)?;
        Ok(d)
    }

    /// Graceful shutdown: waits for every task in flight (GIL released,
    /// Ctrl-C works: the workers are then killed), poison pills, reaps,
    /// removes the names. Results not taken are dropped.
    fn shutdown(&self, py: Python<'_>) -> PyResult<()> {
        self.with(|inner| {
            // Finish in slices so that signals are seen.
            let pool = &mut inner.pool;
            wait_loop(py, Deadline::from_timeout(None)?, SLICE, |slice| {
                while pool
                    .next_result_timeout(Duration::ZERO)
                    .map_err(pool_error)?
                    .is_some()
                {}
                if pool.in_flight() == 0 {
                    return Ok(Some(()));
                }
                pool.next_result_timeout(slice).map_err(pool_error)?;
                Ok(None)
            })?;
            Ok(())
        })?;
        let inner = self.take_inner()?;
        py.detach(|| inner.pool.shutdown()).map_err(pool_error)?;
        Ok(())
    }

    /// Kills every worker at once, reaps them, removes the names.
    fn kill(&self, py: Python<'_>) -> PyResult<()> {
        if let Ok(inner) = self.take_inner() {
            py.detach(|| inner.pool.kill());
        }
        Ok(())
    }

    /// Whether the pool has been shut down or killed.
    #[getter]
    fn closed(&self) -> bool {
        self.inner.try_lock().map(|g| g.is_none()).unwrap_or(false)
    }
}

impl PoolCore {
    fn take_inner(&self) -> PyResult<Inner> {
        let mut guard = self
            .inner
            .try_lock()
            .map_err(|_| PyRuntimeError::new_err("the pool is being driven by another thread"))?;
        guard
            .take()
            .ok_or_else(|| PyValueError::new_err("Pool not running"))
    }
}

/// In a pool worker process: runs the Rust worker loop with `handler`
/// (`bytes -> bytes`, called with the GIL held for each task; it should
/// never raise: an exception becomes the task's failure message) and exits
/// the process. Raises `RuntimeError` if this process is not a pool worker.
#[pyfunction]
#[pyo3(name = "_serve_pool_worker")]
pub fn serve_pool_worker(py: Python<'_>, handler: Py<PyAny>) -> PyResult<()> {
    let err = py.detach(move || {
        mulproc::pool::serve_worker::<BytesCodec, Vec<u8>, Vec<u8>, String, _>(
            move |data: Vec<u8>| {
                Python::attach(|py| {
                    let out = handler
                        .bind(py)
                        .call1((PyBytes::new(py, &data),))
                        .and_then(|r| r.extract::<Vec<u8>>());
                    out.map_err(|e| e.to_string())
                })
            },
        )
    });
    Err(PyRuntimeError::new_err(err.to_string()))
}
