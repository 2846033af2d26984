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

use mulproc::pool::{Backend, Builder, BytesCodec, Completed, Pool, PoolError, Stats, TaskError};
use mulproc::BackendError;
use mulproc_redis::{RedisBackend, RedisQueueError, RedisSetupError};
use pyo3::exceptions::{PyConnectionError, PyPermissionError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use crate::serial;
use crate::wait::{wait_loop, Deadline, SLICE};

/// The Rust pool over one of its backends.
enum Core {
    /// Shared memory (the default).
    Shm(Box<Pool<Vec<u8>, Vec<u8>, BytesCodec>>),
    /// Redis Streams (`backend="redis://..."`).
    Redis(Box<Pool<Vec<u8>, Vec<u8>, BytesCodec, RedisBackend>>),
}

/// `$body` with `$p` bound to the pool, whichever its backend.
macro_rules! on_pool {
    ($core:expr, $p:ident => $body:expr) => {
        match $core {
            Core::Shm($p) => $body,
            Core::Redis($p) => $body,
        }
    };
}

impl Core {
    fn in_flight(&self) -> usize {
        on_pool!(self, p => p.in_flight())
    }
    fn window(&self) -> usize {
        on_pool!(self, p => p.window())
    }
    fn pending_results(&self) -> usize {
        on_pool!(self, p => p.pending_results())
    }
    fn submit(&mut self, data: Vec<u8>) -> Result<u64, PoolError> {
        on_pool!(self, p => p.submit(data))
    }
    fn try_next_result(&mut self) -> Result<Option<Completed<Vec<u8>>>, PoolError> {
        on_pool!(self, p => p.try_next_result())
    }
    fn next_result_timeout(
        &mut self,
        d: Duration,
    ) -> Result<Option<Completed<Vec<u8>>>, PoolError> {
        on_pool!(self, p => p.next_result_timeout(d))
    }
    fn worker_pids(&self) -> Vec<u32> {
        on_pool!(self, p => p.worker_pids())
    }
    fn stats(&self) -> Stats {
        on_pool!(self, p => p.stats())
    }
    fn shutdown(self) -> Result<Stats, PoolError> {
        match self {
            Core::Shm(p) => p.shutdown(),
            Core::Redis(p) => p.shutdown(),
        }
    }
    fn kill(self) -> Stats {
        match self {
            Core::Shm(p) => p.kill(),
            Core::Redis(p) => p.kill(),
        }
    }
}

/// Which backend a `mulproc.Pool` runs over, from its `backend` argument.
enum BackendChoice {
    Shm,
    Redis(RedisBackend),
}

/// `None` or `"shm"`: shared memory; `redis://...` or `rediss://...`: a
/// Redis server. Anything else, or a URL the Redis client cannot read,
/// is a ValueError (nothing is contacted here).
fn parse_backend(backend: Option<&str>) -> PyResult<BackendChoice> {
    let url = match backend {
        None | Some("shm") => return Ok(BackendChoice::Shm),
        Some(u) => u,
    };
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(PyValueError::new_err(format!(
            "backend must be 'shm' or a Redis URL such as 'redis://host:6379/0', not {url:?}"
        )));
    }
    RedisBackend::new(url)
        .map(BackendChoice::Redis)
        .map_err(|e| PyValueError::new_err(format!("backend {}: {e}", redact(url))))
}

/// A URL with its password (if any) replaced, for messages.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let host_start = rest.find('/').unwrap_or(rest.len());
    match rest[..host_start].rfind('@') {
        Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
        None => url.to_owned(),
    }
}

/// The builder both the parent and a Redis pool's workers use: the same
/// settings give the same channel sizes on both sides.
fn builder(
    name: String,
    processes: usize,
    window: usize,
    max_task_bytes: usize,
    max_result_bytes: usize,
) -> Builder<BytesCodec> {
    Pool::builder()
        .bytes()
        .name(name)
        .workers(processes)
        .window(window)
        .max_task_bytes(max_task_bytes)
        .max_result_bytes(max_result_bytes)
}

/// Whether `e` is (or wraps) a backend error whose source is `T`.
fn backend_source<T: std::error::Error + 'static>(e: &BackendError) -> Option<&T> {
    e.source_error().downcast_ref::<T>()
}

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
/// The worker's answer arrived but does not unpickle in the parent (a
/// value of a class the parent cannot import, say): the payload is the
/// exception `pickle.loads` raised.
const UNREADABLE: u8 = 5;

fn pool_error(e: PoolError) -> PyErr {
    let backend = match &e {
        PoolError::Backend(b) => Some(b),
        PoolError::Send(mulproc::TrySendError::Backend(_, b)) => Some(b),
        PoolError::Recv(mulproc::RecvTimeoutError::Backend(b)) => Some(b),
        PoolError::TryRecv(mulproc::TryRecvError::Backend(b)) => Some(b),
        _ => None,
    };
    if let Some(b) = backend {
        match backend_source::<RedisSetupError>(b) {
            Some(RedisSetupError::Unreachable { .. } | RedisSetupError::NotRedis { .. }) => {
                return PyConnectionError::new_err(e.to_string())
            }
            Some(RedisSetupError::Authentication { .. }) => {
                return PyPermissionError::new_err(e.to_string())
            }
            _ => {}
        }
        if let Some(RedisQueueError::Connection(_)) = backend_source::<RedisQueueError>(b) {
            return PyConnectionError::new_err(e.to_string());
        }
    }
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
    /// The pool's `max_task_bytes`.
    max_task: usize,
}

impl Inner {
    /// Waits (GIL released, signals checked every 50 ms) until fewer than
    /// `window` tasks are in flight, keeping the results that come.
    fn make_room(&mut self, py: Python<'_>) -> PyResult<()> {
        if self.pool.in_flight() < self.pool.window() {
            return Ok(());
        }
        let Inner { pool, stash, .. } = self;
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

/// A result as `take` hands it over: `(id, kind, payload)`, the payload
/// of an answer (kind [`OK`]) unpickled here, in Rust for built-in types
/// (see [`serial::unpickle`]).
fn result_tuple(py: Python<'_>, c: Completed<Vec<u8>>) -> (u64, u8, Py<PyAny>) {
    let (kind, payload): (u8, Py<PyAny>) = match c.result {
        Ok(bytes) => match serial::unpickle(py, &bytes) {
            Ok(answer) => (OK, answer.unbind()),
            Err(e) => (UNREADABLE, e.into_value(py).into_any()),
        },
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
    /// until each is ready (GIL released). `backend`: `None`/`"shm"`, or a
    /// Redis URL (ValueError if malformed; ConnectionError if no server
    /// answers).
    #[new]
    #[pyo3(signature = (processes, program, args, *, window, max_attempts, max_task_bytes, max_result_bytes, name, backend=None))]
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
        backend: Option<&str>,
    ) -> PyResult<Self> {
        let choice = parse_backend(backend)?;
        let b = builder(name, processes, window, max_task_bytes, max_result_bytes)
            .max_attempts(max_attempts)
            .worker_command(program, args)
            .start_timeout(Duration::from_secs(60));
        fn start<B: Backend>(
            b: Builder<BytesCodec, B>,
        ) -> Result<Pool<Vec<u8>, Vec<u8>, BytesCodec, B>, PoolError> {
            b.start_fallible(|_: Vec<u8>| Err::<Vec<u8>, &str>("not a worker"))
        }
        let pool = py
            .detach(|| match choice {
                BackendChoice::Shm => start(b).map(|p| Core::Shm(Box::new(p))),
                BackendChoice::Redis(r) => start(b.backend(r)).map(|p| Core::Redis(Box::new(p))),
            })
            .map_err(pool_error)?;
        Ok(PoolCore {
            inner: Mutex::new(Some(Inner {
                pool,
                stash: VecDeque::new(),
                max_task: max_task_bytes,
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

    /// Pickles `obj` (in Rust for built-in types, else with the `pickle`
    /// module, whose errors propagate) and submits it as one task;
    /// returns its id, or `None` when the pickle is larger than the
    /// pool's `max_task_bytes` (nothing is submitted: the caller splits
    /// the chunk, or submits the bytes to get the error). Waits for room
    /// in the window first (GIL released, Ctrl-C works).
    ///
    /// The pickle goes straight into the task's buffer: no `bytes`
    /// object, one copy less than `submit(_dumps(obj))`.
    fn submit_pickled(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<Option<u64>> {
        let data = serial::Serializer::Pickle.encode_with(obj, |b| Ok(b.to_vec()))?;
        self.with(|inner| {
            if data.len() > inner.max_task {
                return Ok(None);
            }
            inner.make_room(py)?;
            inner.pool.submit(data).map(Some).map_err(pool_error)
        })
    }

    /// The next result as `(id, kind, payload)` (kind 0: payload is the
    /// worker's answer, unpickled; kind 5: the exception unpickling it
    /// raised; otherwise a message), waiting up to `timeout`
    /// seconds (`None`: forever) with the GIL released; `None` on timeout
    /// or when no result is pending.
    #[pyo3(signature = (timeout=None))]
    fn take(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Option<(u64, u8, Py<PyAny>)>> {
        let deadline = Deadline::from_timeout(timeout)?;
        let got = self.with(|inner| {
            if let Some(c) = inner.stash.pop_front() {
                return Ok(Some(c));
            }
            if inner.pool.pending_results() == 0 {
                return Ok(None);
            }
            if let Some(c) = inner.pool.try_next_result().map_err(pool_error)? {
                return Ok(Some(c));
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
            Ok(got.flatten())
        })?;
        // Unpickled with the pool unlocked: the `pickle` module may run
        // code of the result's classes, which may release the GIL.
        Ok(got.map(|c| result_tuple(py, c)))
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
///
/// Over shared memory the worker finds everything in its environment;
/// over Redis (`backend`), it builds the parent's pool settings (`name`,
/// `max_task_bytes`, `max_result_bytes`: the same as the parent's) to
/// open the same channels.
#[pyfunction]
#[pyo3(name = "_serve_pool_worker")]
#[pyo3(signature = (handler, *, backend=None, name=None, max_task_bytes=0, max_result_bytes=0))]
pub fn serve_pool_worker(
    py: Python<'_>,
    handler: Py<PyAny>,
    backend: Option<&str>,
    name: Option<String>,
    max_task_bytes: usize,
    max_result_bytes: usize,
) -> PyResult<()> {
    let choice = parse_backend(backend)?;
    if !mulproc::pool::is_worker() {
        return Err(PyRuntimeError::new_err(
            "this process was not started as a pool worker",
        ));
    }
    let run = move |data: Vec<u8>| {
        Python::attach(|py| {
            let out = handler
                .bind(py)
                .call1((PyBytes::new(py, &data),))
                .and_then(|r| r.extract::<Vec<u8>>());
            out.map_err(|e| e.to_string())
        })
    };
    let err = match choice {
        BackendChoice::Shm => py.detach(move || {
            mulproc::pool::serve_worker::<BytesCodec, Vec<u8>, Vec<u8>, String, _>(run)
        }),
        BackendChoice::Redis(r) => {
            let name = name.ok_or_else(|| {
                PyValueError::new_err("a Redis pool worker needs the pool's name")
            })?;
            // In a worker of this pool (checked above: this process is a
            // pool worker), `start_fallible` runs the worker loop and exits
            // the process; it returns only with an error (a worker of
            // another pool), never with a started pool.
            let b = builder(name, 1, 1, max_task_bytes, max_result_bytes).backend(r);
            match py.detach(move || b.start_fallible(run)) {
                Ok(pool) => {
                    let _ = pool.kill();
                    PoolError::Config("this process was not started as a pool worker".into())
                }
                Err(e) => e,
            }
        }
    };
    Err(PyRuntimeError::new_err(err.to_string()))
}
