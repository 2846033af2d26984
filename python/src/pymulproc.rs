//! The hot path of `mulproc.pymulproc`'s queues, in Rust: the message
//! codec (`mulproc/pymulproc/_codec.py` is its description and the
//! reference the tests compare with), `_MessageQueue` (the `conn` of the
//! queue ends: `put` and `get` of message lists) and `_QueueEnd` (the
//! ends' `send` and `receive`), so that one pymulproc message costs one
//! Python call.
//!
//! Both are base classes of the Python classes users see
//! (`queuepi.MessageQueue`, `queuepi.Parent`/`Child`), which keep
//! pymulproc's attributes and whatever else is not hot. pymulproc's own
//! tests replace `conn.put` on an instance (`unittest.mock.patch.object`)
//! and count its calls: `send` and `receive` call the Rust methods
//! directly only while `conn` is one of these queues whose `put`, `get`
//! and `task_done` are the ones defined here (neither set on the instance
//! nor overridden by its class), and otherwise call them by name, as
//! pymulproc does.

use std::time::{Duration, Instant};

use mulproc::Request;
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBool, PyDict, PyInt, PyList, PyString, PyTuple, PyType};

use crate::errors::{Empty, Full};
use crate::queue::PyQueue;
use crate::serial::Serializer;

/// Code of a request given as another string (see `_codec`).
const NAMED_REQUEST: u32 = 15;
/// Code of a request given as another object (see `_codec`).
const ENCODED_REQUEST: u32 = 14;
/// pymulproc's built-in requests, by mulproc code.
const BUILT_IN: [(&str, u32); 3] = [("DO", 1), ("FINISHED", 2), ("DIE", 3)];

/// A pid from a message: `None` or an int (not a bool), as `_codec._pid`.
fn pid_of(what: &str, pid: &Bound<'_, PyAny>) -> PyResult<Option<u32>> {
    if pid.is_none() {
        return Ok(None);
    }
    if pid.is_instance_of::<PyBool>() || !pid.is_instance_of::<PyInt>() {
        let ty = pid.get_type().name()?;
        return Err(PyTypeError::new_err(format!(
            "{what} must be an int pid or None, not {ty}"
        )));
    }
    let p: i64 = pid.extract().map_err(|_| out_of_range(what, pid))?;
    if (1..=i64::from(u32::MAX)).contains(&p) {
        Ok(Some(p as u32))
    } else {
        Err(out_of_range(what, pid))
    }
}

fn out_of_range(what: &str, pid: &Bound<'_, PyAny>) -> PyErr {
    let what = what.trim_end_matches("_pid");
    PyValueError::new_err(format!(
        "{what} must be a pid between 1 and 2**32-1 or None, not {pid}"
    ))
}

/// The `(code, prefix)` of a request (see `_codec`); the prefix is put
/// before the data for requests that are not a code.
fn encode_request(
    request: &Bound<'_, PyAny>,
    serializer: Serializer,
) -> PyResult<(u32, Option<Vec<u8>>)> {
    if let Ok(s) = request.cast::<PyString>() {
        let text = s.to_cow()?;
        if let Some(&(_, code)) = BUILT_IN.iter().find(|(name, _)| *name == text) {
            return Ok((code, None));
        }
        return Ok((NAMED_REQUEST, Some(prefixed(text.as_bytes()))));
    }
    if request.is_instance_of::<PyInt>() && !request.is_instance_of::<PyBool>() {
        if let Ok(code) = request.extract::<u32>() {
            return Ok((code, None));
        }
    }
    let raw = serializer.encode(request)?;
    Ok((ENCODED_REQUEST, Some(prefixed(raw.as_bytes()))))
}

/// `len (u32, little endian) + raw`.
fn prefixed(raw: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(4 + raw.len());
    v.extend_from_slice(&(raw.len() as u32).to_le_bytes());
    v.extend_from_slice(raw);
    v
}

/// `request` for a received code.
fn request_object<'py>(py: Python<'py>, code: u32) -> PyResult<Bound<'py, PyAny>> {
    static NAMES: PyOnceLock<[Py<PyString>; 3]> = PyOnceLock::new();
    let names = NAMES.get_or_init(py, || {
        BUILT_IN.map(|(name, _)| PyString::intern(py, name).unbind())
    });
    match BUILT_IN.iter().position(|(_, c)| *c == code) {
        Some(i) => Ok(names[i].bind(py).clone().into_any()),
        None => Ok(code.into_pyobject(py)?.into_any()),
    }
}

/// Splits `len + raw + rest`.
fn split(payload: &[u8]) -> PyResult<(&[u8], &[u8])> {
    let bad = || PyValueError::new_err("a pymulproc message whose request prefix is cut short");
    let n = payload.get(..4).ok_or_else(bad)?;
    let n = u32::from_le_bytes(n.try_into().expect("4 bytes")) as usize;
    let raw = payload.get(4..4 + n).ok_or_else(bad)?;
    Ok((raw, &payload[4 + n..]))
}

/// The message list `[request, sender, recipient, data]` of a received
/// mulproc message (see `_codec.decode`).
fn decode<'py>(
    py: Python<'py>,
    serializer: Serializer,
    header: &mulproc::Header,
    payload: &[u8],
) -> PyResult<Bound<'py, PyList>> {
    let code = header.request.code();
    let (request, body) = match code {
        NAMED_REQUEST => {
            let (raw, body) = split(payload)?;
            let text = std::str::from_utf8(raw).map_err(|e| {
                PyValueError::new_err(format!("a pymulproc named request that is not UTF-8: {e}"))
            })?;
            (PyString::new(py, text).into_any(), body)
        }
        ENCODED_REQUEST => {
            let (raw, body) = split(payload)?;
            (serializer.decode_slice(py, raw)?, body)
        }
        _ => (request_object(py, code)?, payload),
    };
    let data = if body.is_empty() {
        py.None().into_bound(py)
    } else {
        serializer.decode_slice(py, body)?
    };
    PyList::new(
        py,
        [
            request,
            header.sender.into_pyobject(py)?.into_any(),
            header.recipient.into_pyobject(py)?.into_any(),
            data,
        ],
    )
}

/// The base of `mulproc.pymulproc.queuepi.MessageQueue`: a joinable queue
/// of pymulproc message lists over a `mulproc.Queue`.
#[pyclass(
    module = "mulproc.pymulproc",
    name = "_MessageQueue",
    subclass,
    dict,
    frozen
)]
pub struct MessageQueue {
    queue: Py<PyQueue>,
    max_size: usize,
}

impl MessageQueue {
    /// Waits while the queue holds `max_size` messages (pymulproc's own
    /// bound, when below the capacity); `Full` if that lasts past the
    /// deadline or `block` is false. Returns what is left of `timeout`.
    fn wait_below_max(
        &self,
        py: Python<'_>,
        q: &PyQueue,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Option<f64>> {
        if self.max_size == 0 || self.max_size >= q.capacity_of() {
            return Ok(timeout);
        }
        let deadline = timeout.map(|t| Instant::now() + Duration::from_secs_f64(t.max(0.0)));
        while q.handle()?.len() >= self.max_size {
            if !block || deadline.is_some_and(|d| Instant::now() >= d) {
                return Err(Full::new_err(()));
            }
            py.detach(|| std::thread::sleep(Duration::from_millis(1)));
            py.check_signals()?;
        }
        Ok(deadline.map(|d| d.saturating_duration_since(Instant::now()).as_secs_f64()))
    }

    fn put_impl(
        &self,
        py: Python<'_>,
        message: &Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        let q = self.queue.get();
        let serializer = q.serializer_of();
        let parts = four(message)?;
        let (request, sender, recipient, data) = (&parts[0], &parts[1], &parts[2], &parts[3]);
        let sender = pid_of("sender_pid", sender)?;
        let recipient = pid_of("recipient_pid", recipient)?;
        let (code, prefix) = encode_request(request, serializer)?;
        let timeout = self.wait_below_max(py, q, block, timeout)?;
        let send = |payload: &[u8]| {
            q.send_payload(
                py,
                payload,
                Request::new(code),
                recipient,
                sender,
                block,
                timeout,
            )
        };
        match (prefix, data.is_none()) {
            (None, true) => send(&[]),
            (None, false) => serializer.encode_with(data, send),
            (Some(p), true) => send(&p),
            (Some(mut p), false) => serializer.encode_with(data, |body| {
                p.extend_from_slice(body);
                send(&p)
            }),
        }
    }

    fn get_impl<'py>(
        &self,
        py: Python<'py>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        let q = self.queue.get();
        let held = q.take(py, block, timeout)?;
        let message = decode(py, q.serializer_of(), &held.header(), held.data());
        held.finish().map_err(|e| q.corrupt_of(e))?;
        message
    }

    fn task_done_impl(&self) -> PyResult<()> {
        self.queue.get().task_done_impl()
    }
}

/// The four items of a message list or tuple.
fn four<'py>(message: &Bound<'py, PyAny>) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let bad = || {
        PyValueError::new_err(
            "a pymulproc message is a list of 4: [request, sender_pid, recipient_pid, data]",
        )
    };
    let items: Vec<Bound<'py, PyAny>> = if let Ok(l) = message.cast::<PyList>() {
        l.iter().collect()
    } else if let Ok(t) = message.cast::<PyTuple>() {
        t.iter().collect()
    } else {
        return Err(bad());
    };
    if items.len() == 4 {
        Ok(items)
    } else {
        Err(bad())
    }
}

#[pymethods]
impl MessageQueue {
    /// A queue of messages over `queue_` (a `mulproc.Queue`);
    /// `max_size` is pymulproc's bound (0: the queue's capacity).
    #[new]
    #[pyo3(signature = (queue_, max_size=0))]
    fn new(queue_: Py<PyQueue>, max_size: i64) -> PyResult<Self> {
        let max_size = usize::try_from(max_size).map_err(|_| {
            PyValueError::new_err(format!(
                "max_size must be 0 (no bound) or positive, not {max_size}"
            ))
        })?;
        Ok(MessageQueue {
            queue: queue_,
            max_size,
        })
    }

    /// The `mulproc.Queue` underneath.
    #[getter]
    fn queue(&self, py: Python<'_>) -> Py<PyQueue> {
        self.queue.clone_ref(py)
    }

    /// pymulproc's bound on waiting messages (0: none of its own).
    #[getter]
    fn max_size(&self) -> usize {
        self.max_size
    }

    /// Puts a message list; `queue.Full` when no room came in time.
    #[pyo3(signature = (message, block=true, timeout=None))]
    fn put(
        &self,
        py: Python<'_>,
        message: &Bound<'_, PyAny>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<()> {
        self.put_impl(py, message, block, timeout)
    }

    /// `put(message, False)`.
    fn put_nowait(&self, py: Python<'_>, message: &Bound<'_, PyAny>) -> PyResult<()> {
        self.put_impl(py, message, false, None)
    }

    /// Removes and returns the next message; `queue.Empty` if none came
    /// in time.
    #[pyo3(signature = (block=true, timeout=None))]
    fn get<'py>(
        &self,
        py: Python<'py>,
        block: bool,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyList>> {
        self.get_impl(py, block, timeout)
    }

    /// `get(False)`.
    fn get_nowait<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.get_impl(py, false, None)
    }

    /// Marks one received message as processed.
    fn task_done(&self) -> PyResult<()> {
        self.task_done_impl()
    }

    /// Pickles as its queue (by name) and bound.
    fn __reduce__<'py>(slf: &Bound<'py, Self>) -> PyResult<Reduced<'py>> {
        let me = slf.get();
        Ok((slf.get_type(), (me.queue.clone_ref(slf.py()), me.max_size)))
    }
}

/// What `_MessageQueue.__reduce__` returns: the class and its arguments.
type Reduced<'py> = (Bound<'py, PyType>, (Py<PyQueue>, usize));

/// The methods `_QueueEnd` calls directly when `conn` has them as they
/// are defined here.
struct Ours {
    put: Py<PyAny>,
    get: Py<PyAny>,
    task_done: Py<PyAny>,
}

fn ours(py: Python<'_>) -> PyResult<&'static Ours> {
    static OURS: PyOnceLock<Ours> = PyOnceLock::new();
    OURS.get_or_try_init(py, || {
        let t = py.get_type::<MessageQueue>();
        Ok(Ours {
            put: t.getattr("put")?.unbind(),
            get: t.getattr("get")?.unbind(),
            task_done: t.getattr("task_done")?.unbind(),
        })
    })
}

/// `conn` as one of our queues if its method `name` is ours (not set on
/// the instance, not overridden by its class).
fn direct<'a, 'py>(
    conn: &'a Bound<'py, PyAny>,
    name: &Bound<'py, PyString>,
    ours: &Py<PyAny>,
) -> PyResult<Option<&'a Bound<'py, MessageQueue>>> {
    let Ok(q) = conn.cast::<MessageQueue>() else {
        return Ok(None);
    };
    let dict = conn.getattr(intern!(conn.py(), "__dict__"))?;
    if dict.cast::<PyDict>()?.contains(name)? {
        return Ok(None);
    }
    Ok(conn.get_type().getattr(name)?.is(ours).then_some(q))
}

fn queues_communication_error(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static ERR: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    ERR.import(py, "mulproc.pymulproc.errors", "QueuesCommunicationError")
}

/// The base of `mulproc.pymulproc.queuepi.QueueCommunicationApi`: one
/// process's end of a queue, with pymulproc's `send` and `receive`.
#[pyclass(module = "mulproc.pymulproc", name = "_QueueEnd", subclass, dict)]
pub struct QueueEnd {
    /// The queue of messages (`MessageQueue`, or anything with `put`,
    /// `get`, `get_where`, `task_done`).
    #[pyo3(get, set)]
    conn: Py<PyAny>,
    /// This process's pid, the default sender of its messages.
    #[pyo3(get, set)]
    pid: Py<PyAny>,
    /// Wait of one `put` attempt in `send` (seconds).
    #[pyo3(get, set)]
    timeout: Py<PyAny>,
    /// Number of `put` attempts before `send` gives up.
    #[pyo3(get, set)]
    loops: Py<PyAny>,
}

#[pymethods]
impl QueueEnd {
    /// An end with nothing set yet (the Python subclass's `__init__`
    /// sets `conn`, `pid`, `timeout` and `loops`).
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(
        py: Python<'_>,
        _args: &Bound<'_, PyTuple>,
        _kwargs: Option<&Bound<'_, PyDict>>,
    ) -> Self {
        QueueEnd {
            conn: py.None(),
            pid: py.None(),
            timeout: py.None(),
            loops: py.None(),
        }
    }

    /// Puts `[request, sender_pid or self.pid, recipient_pid, data]`,
    /// trying `loops` times for `timeout` seconds each; raises
    /// `QueuesCommunicationError` when every attempt found the queue
    /// full. Returns the message.
    #[pyo3(signature = (request, sender_pid=None, recipient_pid=None, data=None))]
    fn send<'py>(
        slf: &Bound<'py, Self>,
        request: Bound<'py, PyAny>,
        sender_pid: Option<Bound<'py, PyAny>>,
        recipient_pid: Option<Bound<'py, PyAny>>,
        data: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyList>> {
        let py = slf.py();
        let me = slf.borrow();
        let none = || py.None().into_bound(py);
        let sender = match sender_pid {
            Some(s) if s.is_truthy()? => s,
            _ => me.pid.bind(py).clone(),
        };
        let message = PyList::new(
            py,
            [
                request,
                sender,
                recipient_pid.unwrap_or_else(none),
                data.unwrap_or_else(none),
            ],
        )?;
        let conn = me.conn.bind(py).clone();
        let timeout_obj = me.timeout.bind(py).clone();
        let timeout: Option<f64> = timeout_obj.extract()?;
        let mut loops: i64 = me.loops.bind(py).extract()?;
        let pid = me.pid.bind(py).clone();
        drop(me);
        let ours = ours(py)?;
        let name = intern!(py, "put");
        loop {
            let attempt = match direct(&conn, name, &ours.put)? {
                Some(q) => q.get().put_impl(py, message.as_any(), true, timeout),
                None => {
                    let kwargs = PyDict::new(py);
                    kwargs.set_item(intern!(py, "timeout"), &timeout_obj)?;
                    conn.call_method(name, (&message,), Some(&kwargs)).map(drop)
                }
            };
            match attempt {
                Ok(()) => return Ok(message),
                Err(e) if e.is_instance_of::<Full>(py) => {
                    loops -= 1;
                    if loops == 0 {
                        let err = PyErr::from_type(
                            queues_communication_error(py)?.clone(),
                            format!(
                                "Process {pid} tried unsuccessfully to put the following {} in the queue",
                                message.repr()?
                            ),
                        );
                        err.set_cause(py, Some(e));
                        return Err(err);
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The next message, or `False` if there is none.
    ///
    /// `func=f`: the oldest message for which `f(message)` is true; the
    /// messages `f` rejects stay in the queue, in order, for the other
    /// processes (pymulproc re-queues them at the back). `block=True`
    /// waits until there is such a message. The message taken is marked
    /// done (`task_done`) for `queue_join`.
    #[pyo3(signature = (*, func=None, block=None, **_ignored))]
    fn receive<'py>(
        slf: &Bound<'py, Self>,
        func: Option<Bound<'py, PyAny>>,
        block: Option<Bound<'py, PyAny>>,
        _ignored: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // pymulproc reads `kwargs.get("func")` and `kwargs.get("block",
        // False)` and ignores the rest; so do these named parameters,
        // without a dict per call.
        let py = slf.py();
        let func = func.filter(|f| !f.is_none());
        let block = match block {
            Some(b) => b.is_truthy()?,
            None => false,
        };
        let conn = slf.borrow().conn.bind(py).clone();
        let ours = ours(py)?;
        let got = match &func {
            None => match direct(&conn, intern!(py, "get"), &ours.get)? {
                Some(q) => q.get().get_impl(py, block, None).map(Bound::into_any),
                None => {
                    let kw = PyDict::new(py);
                    kw.set_item(intern!(py, "block"), block)?;
                    conn.call_method(intern!(py, "get"), (), Some(&kw))
                }
            },
            Some(f) => {
                let kw = PyDict::new(py);
                kw.set_item(intern!(py, "block"), block)?;
                conn.call_method(intern!(py, "get_where"), (f,), Some(&kw))
            }
        };
        let message = match got {
            Ok(m) => m,
            Err(e) if e.is_instance_of::<Empty>(py) => {
                return Ok(PyBool::new(py, false).to_owned().into_any())
            }
            Err(e) => return Err(e),
        };
        match direct(&conn, intern!(py, "task_done"), &ours.task_done)? {
            Some(q) => q.get().task_done_impl()?,
            None => {
                conn.call_method0(intern!(py, "task_done"))?;
            }
        }
        Ok(message)
    }
}
