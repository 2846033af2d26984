//! `mulproc.Queue`: a named mulproc queue, duck-compatible with
//! `multiprocessing.JoinableQueue`.

use std::mem::ManuallyDrop;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use mulproc::{
    Header, Message, Queue, QueueConfig, RecvGuard, RecvTimeoutError, Request, SendRetry, Stale,
    TryRecvError, TrySendError,
};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple, PyType};

use crate::buffer;
use crate::errors::{self, Empty, Full};
use crate::fork::{self, Binding, Generation};
use crate::names::{self, NameOwner};
use crate::serial::{self, Serializer};
use crate::wait::{self, Deadline};

/// How long one blocking send waits for space before it looks at the
/// deadline and for signals again (the core's `send` with one try).
pub const SEND_WAIT: Duration = Duration::from_millis(10);

/// A named shared-memory queue; see the package docs.
#[pyclass(module = "mulproc", name = "Queue", frozen, weakref)]
pub struct PyQueue {
    name: String,
    serializer: Serializer,
    capacity: usize,
    max_size: usize,
    /// Locked only with the GIL held.
    binding: Mutex<Binding<Arc<Queue>>>,
    /// Set on the object that created the queue, in the creating process.
    owner: Option<NameOwner>,
}

/// Opens `name` as this binding's handles are configured.
fn open_handle(name: &str) -> PyResult<Queue> {
    let mut q = Queue::open(name).map_err(errors::setup)?;
    q.set_send_retry(SendRetry {
        tries: 1,
        wait: SEND_WAIT,
    });
    Ok(q)
}

/// A pid from Python: `None`, or a positive u32.
fn check_pid(what: &str, pid: Option<i64>) -> PyResult<Option<u32>> {
    match pid {
        None => Ok(None),
        Some(p) if (1..=i64::from(u32::MAX)).contains(&p) => Ok(Some(p as u32)),
        Some(p) => Err(PyValueError::new_err(format!(
            "{what} must be a pid between 1 and 2**32-1 or None, not {p}"
        ))),
    }
}

/// A request code from Python.
fn check_request(code: i64) -> PyResult<Request> {
    u32::try_from(code)
        .map(Request::new)
        .map_err(|_| PyValueError::new_err(format!("request code {code} is not a u32")))
}

/// The serializer a handle opened by name uses when none is given:
/// pickle for a queue only its owner can open, JSON for one its group may
/// open too (unpickling what another user wrote runs their code).
pub fn default_serializer_for(name: &str) -> Serializer {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::metadata(format!("/dev/shm/mulproc.{name}")) {
        Ok(m) if m.permissions().mode() & 0o077 != 0 => Serializer::Json,
        _ => Serializer::Pickle,
    }
}

impl PyQueue {
    fn new_with(q: Queue, serializer: Serializer, owner: Option<NameOwner>) -> PyQueue {
        PyQueue {
            name: q.name().to_owned(),
            serializer,
            capacity: q.capacity(),
            max_size: q.max_payload(),
            binding: Mutex::new(Binding::new(Some(Arc::new(q)))),
            owner,
        }
    }

    /// This process's handle: opened again by name after a fork.
    pub(crate) fn handle(&self) -> PyResult<Arc<Queue>> {
        let mut b = self.binding.lock().unwrap_or_else(|e| e.into_inner());
        b.get(
            || errors::queue_closed(&self.name),
            || Ok(Arc::new(open_handle(&self.name)?)),
        )
    }

    /// Sends `data` as one message, waiting for space if `block`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn send_payload(
        &self,
        py: Python<'_>,
        data: &[u8],
        request: Request,
        recipient: Option<u32>,
        sender: Option<u32>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let q = self.handle()?;
        if data.len() > self.max_size {
            return Err(errors::too_large(&self.name, data.len(), self.max_size));
        }
        let msg = Message {
            request,
            sender,
            recipient,
            data,
        };
        let msg = match q.try_send(msg) {
            Ok(()) => return Ok(()),
            Err(TrySendError::Full(m)) if block => m,
            Err(e) => return Err(errors::send(&self.name, e)),
        };
        let deadline = Deadline::from_timeout(timeout)?;
        let name = self.name.as_str();
        let mut pending = Some(msg);
        let sent = wait::wait_loop(py, deadline, wait::SLICE, |_| {
            let Some(m) = pending.take() else {
                return Ok(Some(()));
            };
            match q.send(m) {
                Ok(()) => Ok(Some(())),
                Err(TrySendError::Full(m)) => {
                    pending = Some(m);
                    Ok(None)
                }
                Err(e) => Err(errors::send(name, e)),
            }
        })?;
        sent.ok_or_else(|| Full::new_err(()))
    }

    /// The serializer of this handle.
    pub(crate) fn serializer_of(&self) -> Serializer {
        self.serializer
    }

    /// The number of slots.
    pub(crate) fn capacity_of(&self) -> usize {
        self.capacity
    }

    /// `task_done()`, for Rust callers.
    pub(crate) fn task_done_impl(&self) -> PyResult<()> {
        self.handle()?
            .task_done()
            .map_err(|_| PyValueError::new_err("task_done() called too many times"))
    }

    /// Takes the next message in place, waiting if `block`.
    pub(crate) fn take(&self, py: Python<'_>, block: bool, timeout: Option<f64>) -> PyResult<Held> {
        let q = self.handle()?;
        // SAFETY: the reference points into the Arc's allocation, which
        // does not move; every guard made from it is put in a `Held`
        // together with a clone of the Arc, dropped after the guard (or
        // dropped here, before `q`, on the error paths).
        let qref: &'static Queue = unsafe { &*Arc::as_ptr(&q) };
        let name = self.name.as_str();
        match qref.try_recv_ref() {
            Ok(g) => return Ok(Held::new(q, g)),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Corrupt(c)) => return Err(errors::corrupt(name, c)),
            Err(e) => return Err(PyOSError::new_err(format!("{name:?}: {e}"))),
        }
        if !block {
            return Err(Empty::new_err(()));
        }
        let deadline = Deadline::from_timeout(timeout)?;
        let got = wait::wait_loop(py, deadline, wait::SLICE, |slice| {
            match qref.recv_ref_timeout(slice) {
                Ok(g) => Ok(Some(SendGuard(g))),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Corrupt(c)) => Err(errors::corrupt(name, c)),
                Err(e) => Err(PyOSError::new_err(format!("{name:?}: {e}"))),
            }
        })?;
        match got {
            Some(g) => Ok(Held::new(q, g.0)),
            None => Err(Empty::new_err(())),
        }
    }

    /// Takes the oldest message `pred(request, sender, recipient, data)`
    /// accepts, waiting if `block`.
    fn take_where(
        &self,
        py: Python<'_>,
        pred: Py<PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Message> {
        let q = self.handle()?;
        let name = self.name.as_str();
        // The first exception `pred` raises; it then rejects everything.
        let failure: Mutex<Option<PyErr>> = Mutex::new(None);
        let mut accept = |h: &Header, d: &[u8]| -> bool {
            let mut failed = failure.lock().unwrap_or_else(|e| e.into_inner());
            if failed.is_some() {
                return false;
            }
            Python::attach(|py| {
                let data = PyBytes::new(py, d);
                let verdict = pred
                    .bind(py)
                    .call1((h.request.code(), h.sender, h.recipient, data))
                    .and_then(|r| r.is_truthy());
                verdict.unwrap_or_else(|e| {
                    *failed = Some(e);
                    false
                })
            })
        };
        let raised = |failure: &Mutex<Option<PyErr>>| {
            failure.lock().unwrap_or_else(|e| e.into_inner()).take()
        };
        match q.try_recv_where(&mut accept) {
            Ok(m) => return Ok(m),
            Err(TryRecvError::Empty) => {}
            Err(TryRecvError::Corrupt(c)) => return Err(errors::corrupt(name, c)),
            Err(e) => return Err(PyOSError::new_err(format!("{name:?}: {e}"))),
        }
        if let Some(e) = raised(&failure) {
            return Err(e);
        }
        if !block {
            return Err(Empty::new_err(()));
        }
        let deadline = Deadline::from_timeout(timeout)?;
        let got = wait::wait_loop(py, deadline, wait::SLICE, |slice| {
            let r = q.recv_where_timeout(&mut accept, slice);
            if let Some(e) = raised(&failure) {
                return Err(e);
            }
            match r {
                Ok(m) => Ok(Some(m)),
                Err(RecvTimeoutError::Timeout) => Ok(None),
                Err(RecvTimeoutError::Corrupt(c)) => Err(errors::corrupt(name, c)),
                Err(e) => Err(PyOSError::new_err(format!("{name:?}: {e}"))),
            }
        })?;
        got.ok_or_else(|| Empty::new_err(()))
    }

    fn corrupt(&self, e: mulproc::CorruptError) -> PyErr {
        errors::corrupt(&self.name, e)
    }

    /// The error for a slot found taken over while held.
    pub(crate) fn corrupt_of(&self, e: mulproc::CorruptError) -> PyErr {
        self.corrupt(e)
    }
}

/// A received message as `(request, sender, recipient, data)`.
fn message_tuple<'py>(
    py: Python<'py>,
    header: &Header,
    data: &[u8],
) -> PyResult<Bound<'py, PyTuple>> {
    PyTuple::new(
        py,
        [
            header.request.code().into_pyobject(py)?.into_any(),
            header.sender.into_pyobject(py)?.into_any(),
            header.recipient.into_pyobject(py)?.into_any(),
            PyBytes::new(py, data).into_any(),
        ],
    )
}

#[pymethods]
impl PyQueue {
    /// Creates a queue of `capacity` slots (a power of two, at least 2) of
    /// up to `max_size` bytes each.
    #[new]
    #[pyo3(signature = (capacity=1024, max_size=65536, *, name=None, serializer=None, share_with_group=false, on_stale="fail"))]
    fn py_new(
        capacity: i64,
        max_size: i64,
        name: Option<String>,
        serializer: Option<&str>,
        share_with_group: bool,
        on_stale: &str,
    ) -> PyResult<PyQueue> {
        let capacity = u32::try_from(capacity).map_err(|_| {
            PyValueError::new_err(format!(
                "capacity must be between 2 and 2**24, not {capacity}"
            ))
        })?;
        let max_size = u32::try_from(max_size).map_err(|_| {
            PyValueError::new_err(format!(
                "max_size must be between 0 and {}, not {max_size}",
                mulproc::MAX_PAYLOAD_LIMIT
            ))
        })?;
        let serializer = match serializer {
            Some(s) => Serializer::parse(s)?,
            None if share_with_group => Serializer::Json,
            None => Serializer::Pickle,
        };
        let stale = match on_stale {
            "fail" => Stale::Fail,
            "recreate" => Stale::Recreate,
            "reuse" => Stale::Reuse,
            other => {
                return Err(PyValueError::new_err(format!(
                    "on_stale must be 'fail', 'recreate' or 'reuse', not {other:?}"
                )))
            }
        };
        let name = name.unwrap_or_else(|| names::generate("py"));
        let mut config = QueueConfig::new(capacity, max_size).on_stale(stale);
        if share_with_group {
            config = config.share_with_group();
        }
        let mut q = Queue::create(&name, config).map_err(errors::setup)?;
        // The name lives as long as this object (see `names`), not as
        // long as this handle: `close()` keeps it for children that open
        // it later.
        q.set_remove_on_drop(false);
        q.set_send_retry(SendRetry {
            tries: 1,
            wait: SEND_WAIT,
        });
        let owner = NameOwner::new(&name, Queue::remove);
        Ok(PyQueue::new_with(q, serializer, Some(owner)))
    }

    /// Opens the queue named `name`, created by any process of this user.
    #[classmethod]
    #[pyo3(signature = (name, serializer=None))]
    fn open(_cls: &Bound<'_, PyType>, name: &str, serializer: Option<&str>) -> PyResult<PyQueue> {
        let serializer = match serializer {
            Some(s) => Serializer::parse(s)?,
            None => default_serializer_for(name),
        };
        Ok(PyQueue::new_with(open_handle(name)?, serializer, None))
    }

    /// Removes the name `name` (processes that have the queue open keep
    /// using it; new opens fail with FileNotFoundError).
    #[staticmethod]
    fn remove(name: &str) -> PyResult<()> {
        Queue::remove(name).map_err(errors::setup)
    }

    /// Puts `obj` into the queue, encoded by the queue's serializer.
    #[pyo3(signature = (obj, block=true, timeout=None))]
    fn put(
        &self,
        py: Python<'_>,
        obj: &Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        self.serializer.encode_with(obj, |data| {
            self.send_payload(py, data, Request::DO, None, None, block, timeout)
        })
    }

    /// `put(obj, False)`.
    fn put_nowait(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        self.put(py, obj, false, None)
    }

    /// Puts a bytes-like object as it is, whatever the serializer.
    #[pyo3(signature = (data, block=true, timeout=None))]
    fn put_bytes(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let data = serial::bytes_of(data)?;
        self.send_payload(py, data.as_bytes(), Request::DO, None, None, block, timeout)
    }

    /// Puts one message with its header: payload bytes, request code,
    /// recipient pid (None: anyone) and sender pid (None: this process).
    #[pyo3(signature = (data, request=1, recipient=None, sender=None, block=true, timeout=None))]
    #[allow(clippy::too_many_arguments)]
    fn put_message(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        request: i64,
        recipient: Option<i64>,
        sender: Option<i64>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let data = serial::bytes_of(data)?;
        let request = check_request(request)?;
        let recipient = check_pid("recipient", recipient)?;
        let sender = check_pid("sender", sender)?;
        self.send_payload(
            py,
            data.as_bytes(),
            request,
            recipient,
            sender,
            block,
            timeout,
        )
    }

    /// Removes and returns the next object, decoded by the serializer.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let held = self.take(py, block, timeout)?;
        // Decoded in place; the slot is freed whatever the outcome.
        let obj = self.serializer.decode_slice(py, held.data());
        held.finish().map_err(|e| self.corrupt(e))?;
        obj
    }

    /// `get(False)`.
    fn get_nowait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        self.get(py, false, None)
    }

    /// Removes the next message and returns its payload as bytes.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get_bytes<'py>(
        &self,
        py: Python<'py>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let held = self.take(py, block, timeout)?;
        let bytes = PyBytes::new(py, held.data());
        held.finish().map_err(|e| self.corrupt(e))?;
        Ok(bytes)
    }

    /// Removes the next message and returns it in place: a `Buffer` that
    /// exports the payload through the buffer protocol (`memoryview(b)`)
    /// without copying, and holds the slot until released.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get_buffer<'py>(
        &self,
        py: Python<'py>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let held = self.take(py, block, timeout)?;
        buffer::new_buffer(py, held, self.name.clone())
    }

    /// Removes the next message, returning `(request, sender, recipient,
    /// data)`; with `where`, the oldest message that
    /// `where(request, sender, recipient, data)` accepts (the others stay
    /// in place, in order, for other receivers).
    #[pyo3(signature = (block=true, timeout=None, r#where=None))]
    fn get_message<'py>(
        &self,
        py: Python<'py>,
        block: bool,
        timeout: Option<f64>,
        r#where: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        match r#where {
            None => {
                let held = self.take(py, block, timeout)?;
                let t = message_tuple(py, &held.header(), held.data())?;
                held.finish().map_err(|e| self.corrupt(e))?;
                Ok(t)
            }
            Some(pred) => {
                let m = self.take_where(py, pred, block, timeout)?;
                message_tuple(py, &m.header(), &m.data)
            }
        }
    }

    /// Marks one message received through this handle as processed.
    fn task_done(&self) -> PyResult<()> {
        self.task_done_impl()
    }

    /// Waits until every message put into the queue has been received
    /// and marked done.
    #[pyo3(signature = (timeout=None))]
    fn join(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        let q = self.handle()?;
        let deadline = Deadline::from_timeout(timeout)?;
        let done = wait::wait_loop(py, deadline, wait::SLICE, |slice| {
            Ok(q.join_timeout(slice).is_ok().then_some(()))
        })?;
        Ok(done.is_some() || q.join_timeout(Duration::ZERO).is_ok())
    }

    /// Slots in use right now (a snapshot).
    fn qsize(&self) -> PyResult<usize> {
        Ok(self.handle()?.len())
    }

    /// Whether no message was waiting at the moment of the call.
    fn empty(&self) -> PyResult<bool> {
        Ok(self.handle()?.is_empty())
    }

    /// Whether every slot was in use at the moment of the call.
    fn full(&self) -> PyResult<bool> {
        Ok(self.handle()?.len() >= self.capacity)
    }

    /// Closes this process's handle; further use raises ValueError. The
    /// name stays (see `unlink`).
    fn close(&self) {
        self.binding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .close();
    }

    /// Whether `close()` was called.
    #[getter]
    fn closed(&self) -> bool {
        self.binding
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_closed()
    }

    /// Does nothing (there is no feeder thread); for compatibility.
    fn join_thread(&self) {}

    /// Does nothing (there is no feeder thread); for compatibility.
    fn cancel_join_thread(&self) {}

    /// Removes the queue's name now, if this object created it (otherwise
    /// does nothing). Processes that have it open keep using it.
    fn unlink(&self) -> PyResult<()> {
        match &self.owner {
            Some(o) => o.unlink().map_err(errors::setup),
            None => Ok(()),
        }
    }

    /// The queue's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// Number of slots.
    #[getter]
    fn capacity(&self) -> usize {
        self.capacity
    }

    /// Largest message in bytes (after serialization).
    #[getter]
    fn max_size(&self) -> usize {
        self.max_size
    }

    /// `maxsize` of `multiprocessing` queues: the capacity.
    #[getter]
    fn maxsize(&self) -> usize {
        self.capacity
    }

    /// `'pickle'`, `'json'` or `'bytes'`.
    #[getter]
    fn serializer(&self) -> &'static str {
        self.serializer.name()
    }

    /// Pid of the process using this handle, the default sender of its
    /// messages.
    #[getter]
    fn pid(&self) -> PyResult<u32> {
        Ok(self.handle()?.pid())
    }

    /// Pickles as name and serializer: the copy opens the queue by name.
    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, (String, &'static str))> {
        let me = slf.get();
        let open = slf.get_type().getattr("open")?;
        Ok((open, (me.name.clone(), me.serializer.name())))
    }

    fn __repr__(&self) -> String {
        format!(
            "<mulproc.Queue name={:?} capacity={} max_size={} serializer='{}'{}>",
            self.name,
            self.capacity,
            self.max_size,
            self.serializer.name(),
            if self.closed() { " closed" } else { "" }
        )
    }
}

/// A message held in place: the core's guard and the handle it borrows.
pub struct Held {
    /// Borrows `*queue`; dropped first.
    guard: ManuallyDrop<RecvGuard<'static>>,
    queue: ManuallyDrop<Arc<Queue>>,
    born: Generation,
}

// SAFETY: the guard is a claim on a slot of a queue handle that is
// `Send + Sync`; releasing it from another thread goes through `&Queue`.
// Its one non-`Send` field is the pointer to the payload, which points
// into the shared mapping that `queue` keeps alive.
unsafe impl Send for Held {}

/// Carries a guard out of a GIL-released section (see [`Held`]'s `Send`).
struct SendGuard(RecvGuard<'static>);
// SAFETY: as for `Held`; the `Arc` that keeps the guard's queue alive is
// held by the caller for as long as the guard.
unsafe impl Send for SendGuard {}

impl Held {
    fn new(queue: Arc<Queue>, guard: RecvGuard<'static>) -> Held {
        Held {
            guard: ManuallyDrop::new(guard),
            queue: ManuallyDrop::new(queue),
            born: fork::generation(),
        }
    }

    /// The payload, in place.
    pub fn data(&self) -> &[u8] {
        self.guard.data()
    }

    /// The message header.
    pub fn header(&self) -> Header {
        *self.guard.header()
    }

    /// Frees the slot, reporting a slot taken over meanwhile.
    pub fn finish(mut self) -> Result<(), mulproc::CorruptError> {
        if self.born != fork::generation() {
            return Ok(()); // inherited across a fork: see `drop`
        }
        // SAFETY: taken once; `self` is forgotten below so neither field
        // is dropped again, and the guard goes before the queue.
        let (guard, queue) = unsafe {
            (
                ManuallyDrop::take(&mut self.guard),
                ManuallyDrop::take(&mut self.queue),
            )
        };
        std::mem::forget(self);
        let r = guard.finish();
        drop(queue);
        r
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.born != fork::generation() {
            // Inherited across a fork: the slot is the parent's to free.
            return;
        }
        // SAFETY: dropped once, here; the guard (which borrows the queue)
        // before the queue.
        unsafe {
            ManuallyDrop::drop(&mut self.guard);
            ManuallyDrop::drop(&mut self.queue);
        }
    }
}
