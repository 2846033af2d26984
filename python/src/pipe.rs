//! `mulproc.Pipe()` and `mulproc.Connection`: the two ends of a mulproc
//! pipe, duck-compatible with `multiprocessing.Pipe()`'s connections.
//!
//! The first connection is the pipe's parent end, taken by the creating
//! process at creation; the second is the child end, taken by whichever
//! process uses it first (so a parent may keep its copy of the child's
//! connection, as `multiprocessing` users do). The core pipe has one
//! user per end, one thread at a time: a connection holds its end under
//! a mutex, which a waiting receive holds for at most [`PIPE_SLICE`].
//!
//! End of file: a receive that finds nothing raises EOFError once the
//! other end has been taken and then let go (closed, or its process
//! exited): the core pipe's `Disconnected`, which it tells from the peer
//! end's owner word and the kernel's lock on it (a reused pid cannot
//! hide a death). A send to such a peer raises BrokenPipeError.

use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::time::Duration;

use mulproc::{
    Header, Message, Pipe, PipeConfig, PipeEnd, RecvTimeoutError, Request, SendRetry, TryRecvError,
    TrySendError,
};
use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyTuple};

use crate::errors;
use crate::fork::Binding;
use crate::names::{self, NameOwner};
use crate::queue::SEND_WAIT;
use crate::serial::{self, Serializer};
use crate::wait::{self, Deadline};

/// Longest a waiting receive holds its end's mutex: what a send from
/// another thread of the same process may wait for it.
const PIPE_SLICE: Duration = Duration::from_millis(20);

/// One end as this process uses it.
struct End {
    pipe: Pipe,
    /// A message `poll` took while waiting, for the next receive.
    pending: Option<Message>,
}

impl End {
    fn new(mut pipe: Pipe) -> End {
        pipe.set_send_retry(SendRetry {
            tries: 1,
            wait: SEND_WAIT,
        });
        End {
            pipe,
            pending: None,
        }
    }

    /// Whether the other end was taken and has been let go since (closed,
    /// or its process died).
    fn peer_gone(&mut self) -> bool {
        self.pipe.is_disconnected()
    }

    /// The next message, if one is waiting.
    fn try_take(&mut self, name: &str) -> PyResult<Option<Message>> {
        if let Some(m) = self.pending.take() {
            return Ok(Some(m));
        }
        match self.pipe.try_recv() {
            Ok(m) => Ok(Some(m)),
            Err(TryRecvError::Empty) => Ok(None),
            Err(TryRecvError::Disconnected) => Err(errors::eof(name)),
            Err(TryRecvError::Corrupt(c)) => Err(errors::corrupt(name, c)),
            Err(e) => Err(PyOSError::new_err(format!("pipe {name:?}: {e}"))),
        }
    }

    /// Waits up to `slice` for a message; EOFError if none comes and the
    /// peer is gone.
    fn wait_take(&mut self, name: &str, slice: Duration) -> PyResult<Option<Message>> {
        if let Some(m) = self.try_take(name)? {
            return Ok(Some(m));
        }
        match self.pipe.recv_timeout(slice) {
            Ok(m) => Ok(Some(m)),
            Err(RecvTimeoutError::Timeout) => Ok(None),
            Err(RecvTimeoutError::Disconnected) => Err(errors::eof(name)),
            Err(RecvTimeoutError::Corrupt(c)) => Err(errors::corrupt(name, c)),
            Err(e) => Err(PyOSError::new_err(format!("pipe {name:?}: {e}"))),
        }
    }
}

type Shared = Arc<Mutex<End>>;

/// Locks an end (poisoning is ignored: an `End` has no invariant a panic
/// could break half-way).
fn lock(end: &Mutex<End>) -> MutexGuard<'_, End> {
    end.lock().unwrap_or_else(|e| e.into_inner())
}

/// One end of a mulproc pipe; see the package docs.
#[pyclass(module = "mulproc", name = "Connection", frozen, weakref)]
pub struct Connection {
    name: String,
    end: PipeEnd,
    serializer: Serializer,
    readable: bool,
    writable: bool,
    max_size: usize,
    /// Locked only with the GIL held.
    binding: Mutex<Binding<Shared>>,
    /// Set on the connections that created the pipe, in that process.
    _owner: Option<Arc<NameOwner>>,
}

fn end_name(end: PipeEnd) -> &'static str {
    match end {
        PipeEnd::Parent => "parent",
        PipeEnd::Child => "child",
    }
}

impl Connection {
    /// This process's end: taken on first use (the child end), or again
    /// after a fork.
    fn end(&self) -> PyResult<Shared> {
        let mut b = self.binding.lock().unwrap_or_else(|e| e.into_inner());
        b.get(errors::handle_closed, || {
            let pipe = match self.end {
                PipeEnd::Child => Pipe::open(&self.name).map_err(errors::setup)?,
                PipeEnd::Parent => {
                    return Err(errors::os_error(
                        libc::EBUSY,
                        format!(
                            "pipe {:?}: the first connection of mulproc.Pipe() is the creating \
                             process's end and cannot be used in another process; pass the \
                             second one to the other process",
                            self.name
                        ),
                    ))
                }
            };
            Ok(Arc::new(Mutex::new(End::new(pipe))))
        })
    }

    fn check_readable(&self) -> PyResult<()> {
        if self.readable {
            Ok(())
        } else {
            Err(PyOSError::new_err("connection is write-only"))
        }
    }

    fn check_writable(&self) -> PyResult<()> {
        if self.writable {
            Ok(())
        } else {
            Err(PyOSError::new_err("connection is read-only"))
        }
    }

    /// Sends one message, waiting for room as long as it takes.
    fn send_payload(
        &self,
        py: Python<'_>,
        data: &[u8],
        request: Request,
        recipient: Option<u32>,
        sender: Option<u32>,
    ) -> PyResult<()> {
        self.check_writable()?;
        let shared = self.end()?;
        if data.len() > self.max_size {
            return Err(errors::too_large(&self.name, data.len(), self.max_size));
        }
        let name = self.name.as_str();
        let msg = Message {
            request,
            sender,
            recipient,
            data,
        };
        // The fast path, without giving up the GIL, if the end is free.
        let msg = match shared.try_lock() {
            Ok(end) => match end.pipe.try_send(msg) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Full(m)) => m,
                Err(e) => return Err(errors::send(name, e)),
            },
            Err(TryLockError::Poisoned(p)) => {
                drop(p);
                msg
            }
            Err(TryLockError::WouldBlock) => msg,
        };
        let mut pending = Some(msg);
        wait::wait_loop(py, Deadline::from_timeout(None)?, wait::SLICE, |_| {
            let Some(m) = pending.take() else {
                return Ok(Some(()));
            };
            let end = lock(&shared);
            match end.pipe.send(m) {
                Ok(()) => Ok(Some(())),
                Err(TrySendError::Full(m)) => {
                    pending = Some(m);
                    Ok(None)
                }
                Err(e) => Err(errors::send(name, e)),
            }
        })?;
        Ok(())
    }

    /// Receives one message, waiting as long as it takes.
    fn recv_message(&self, py: Python<'_>) -> PyResult<Message> {
        self.check_readable()?;
        let shared = self.end()?;
        let name = self.name.as_str();
        if let Ok(mut end) = shared.try_lock() {
            if let Some(m) = end.try_take(name)? {
                return Ok(m);
            }
            if end.peer_gone() {
                return Err(errors::eof(name));
            }
        }
        let got = wait::wait_loop(py, Deadline::from_timeout(None)?, PIPE_SLICE, |slice| {
            lock(&shared).wait_take(name, slice)
        })?;
        got.ok_or_else(|| errors::eof(name))
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

fn check_pid(what: &str, pid: Option<i64>) -> PyResult<Option<u32>> {
    match pid {
        None => Ok(None),
        Some(p) if (1..=i64::from(u32::MAX)).contains(&p) => Ok(Some(p as u32)),
        Some(p) => Err(PyValueError::new_err(format!(
            "{what} must be a pid between 1 and 2**32-1 or None, not {p}"
        ))),
    }
}

#[pymethods]
impl Connection {
    /// Sends `obj`, encoded by the connection's serializer.
    fn send(&self, py: Python<'_>, obj: &Bound<'_, PyAny>) -> PyResult<()> {
        self.check_writable()?;
        self.serializer.encode_with(obj, |data| {
            self.send_payload(py, data, Request::DO, None, None)
        })
    }

    /// Sends the bytes of a bytes-like object (from `offset`, `size` of
    /// them) as one message, whatever the serializer.
    #[pyo3(signature = (buf, offset=0, size=None))]
    fn send_bytes(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        offset: i64,
        size: Option<i64>,
    ) -> PyResult<()> {
        self.check_writable()?;
        let data = serial::bytes_of(buf)?;
        let bytes = data.as_bytes();
        let n = bytes.len() as i64;
        if offset < 0 {
            return Err(PyValueError::new_err("offset is negative"));
        }
        if n < offset {
            return Err(PyValueError::new_err("buffer length < offset"));
        }
        let size = size.unwrap_or(n - offset);
        if size < 0 {
            return Err(PyValueError::new_err("size is negative"));
        }
        if offset + size > n {
            return Err(PyValueError::new_err("buffer length < offset + size"));
        }
        let part = &bytes[offset as usize..(offset + size) as usize];
        self.send_payload(py, part, Request::DO, None, None)
    }

    /// Sends one message with its header (request code, recipient and
    /// sender pids), for layers like `mulproc.pymulproc`.
    #[pyo3(signature = (data, request=1, recipient=None, sender=None))]
    fn send_message(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyAny>,
        request: i64,
        recipient: Option<i64>,
        sender: Option<i64>,
    ) -> PyResult<()> {
        let data = serial::bytes_of(data)?;
        let request = u32::try_from(request)
            .map(Request::new)
            .map_err(|_| PyValueError::new_err(format!("request code {request} is not a u32")))?;
        let recipient = check_pid("recipient", recipient)?;
        let sender = check_pid("sender", sender)?;
        self.send_payload(py, data.as_bytes(), request, recipient, sender)
    }

    /// Receives the next object, waiting as long as it takes; EOFError
    /// once the other end is gone and nothing is left.
    fn recv<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let m = self.recv_message(py)?;
        self.serializer.decode_slice(py, &m.data)
    }

    /// Receives the next message's bytes. OSError if it is longer than
    /// `maxlength` (the message is then lost, as with multiprocessing).
    #[pyo3(signature = (maxlength=None))]
    fn recv_bytes<'py>(
        &self,
        py: Python<'py>,
        maxlength: Option<i64>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        if let Some(max) = maxlength {
            if max < 0 {
                return Err(PyValueError::new_err("negative maxlength"));
            }
        }
        let m = self.recv_message(py)?;
        if let Some(max) = maxlength {
            if m.data.len() as i64 > max {
                return Err(PyOSError::new_err(format!(
                    "bad message length: {} bytes, maxlength {max}",
                    m.data.len()
                )));
            }
        }
        Ok(PyBytes::new(py, &m.data))
    }

    /// Receives the next message's bytes into the writable buffer `buf`
    /// at `offset`; returns the number of bytes. Raises
    /// `multiprocessing.BufferTooShort` (with the bytes as its argument)
    /// if they do not fit.
    #[pyo3(signature = (buf, offset=0))]
    fn recv_bytes_into(
        &self,
        py: Python<'_>,
        buf: &Bound<'_, PyAny>,
        offset: i64,
    ) -> PyResult<usize> {
        let view = py
            .import("builtins")?
            .getattr("memoryview")?
            .call1((buf,))?;
        let view = view.call_method1("cast", ("B",))?;
        let room: i64 = view.len()? as i64;
        if offset < 0 || offset > room {
            return Err(PyValueError::new_err("offset out of bounds"));
        }
        let m = self.recv_message(py)?;
        let n = m.data.len() as i64;
        let bytes = PyBytes::new(py, &m.data);
        if offset + n > room {
            let too_short = py.import("multiprocessing")?.getattr("BufferTooShort")?;
            return Err(PyErr::from_value(too_short.call1((bytes,))?));
        }
        let slice = pyo3::types::PySlice::new(py, offset as isize, (offset + n) as isize, 1);
        view.set_item(slice, bytes)?;
        view.call_method0("release")?;
        Ok(n as usize)
    }

    /// Receives the next message as `(request, sender, recipient, data)`.
    fn recv_message_tuple<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let m = self.recv_message(py)?;
        message_tuple(py, &m.header(), &m.data)
    }

    /// Whether there is anything to receive, waiting up to `timeout`
    /// seconds (None: as long as it takes). True at end of file too (the
    /// next receive raises EOFError), as with multiprocessing.
    #[pyo3(signature = (timeout=0.0))]
    fn poll(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<bool> {
        self.check_readable()?;
        let shared = self.end()?;
        let name = self.name.as_str();
        if let Ok(mut end) = shared.try_lock() {
            if end.pending.is_some() || !end.pipe.is_empty() || end.peer_gone() {
                return Ok(true);
            }
        }
        let deadline = Deadline::from_timeout(timeout)?;
        if deadline.expired() {
            return Ok(false);
        }
        let got = wait::wait_loop(py, deadline, PIPE_SLICE, |slice| {
            let mut end = lock(&shared);
            if end.pending.is_some() || !end.pipe.is_empty() {
                return Ok(Some(()));
            }
            if end.peer_gone() {
                return Ok(Some(())); // end of file: the next receive raises it
            }
            match end.pipe.recv_timeout(slice) {
                Ok(m) => {
                    end.pending = Some(m);
                    Ok(Some(()))
                }
                Err(RecvTimeoutError::Timeout) => Ok(None),
                // The peer went while we waited: readable (end of file).
                Err(RecvTimeoutError::Disconnected) => Ok(Some(())),
                Err(RecvTimeoutError::Corrupt(c)) => Err(errors::corrupt(name, c)),
                Err(e) => Err(PyOSError::new_err(format!("pipe {name:?}: {e}"))),
            }
        })?;
        Ok(got.is_some())
    }

    /// Closes this end: the other end's receives raise EOFError once
    /// they have taken what was sent.
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

    /// Whether this connection receives.
    #[getter]
    fn readable(&self) -> bool {
        self.readable
    }

    /// Whether this connection sends.
    #[getter]
    fn writable(&self) -> bool {
        self.writable
    }

    /// The pipe's name.
    #[getter]
    fn name(&self) -> &str {
        &self.name
    }

    /// `'parent'` (the first connection of `Pipe()`) or `'child'`.
    #[getter]
    fn end_name(&self) -> &'static str {
        end_name(self.end)
    }

    /// Largest message in bytes (after serialization).
    #[getter]
    fn max_size(&self) -> usize {
        self.max_size
    }

    /// `'pickle'`, `'json'` or `'bytes'`.
    #[getter]
    fn serializer(&self) -> &'static str {
        self.serializer.name()
    }

    /// A mulproc connection has no file descriptor to wait on.
    fn fileno(&self) -> PyResult<i64> {
        Err(PyOSError::new_err(
            "mulproc connections have no file descriptor; use poll(timeout)",
        ))
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> bool {
        self.close();
        false
    }

    /// Pickles as name, end and settings: the copy takes the end by name
    /// when first used in its process.
    #[allow(clippy::type_complexity)]
    fn __reduce__<'py>(
        &self,
        py: Python<'py>,
    ) -> PyResult<(
        Bound<'py, PyAny>,
        (String, &'static str, &'static str, bool, bool, usize),
    )> {
        let f = py.import("mulproc._mulproc")?.getattr("_open_connection")?;
        Ok((
            f,
            (
                self.name.clone(),
                end_name(self.end),
                self.serializer.name(),
                self.readable,
                self.writable,
                self.max_size,
            ),
        ))
    }

    fn __repr__(&self) -> String {
        format!(
            "<mulproc.Connection name={:?} end={}{}{}>",
            self.name,
            end_name(self.end),
            if self.readable && self.writable {
                ""
            } else if self.readable {
                " read-only"
            } else {
                " write-only"
            },
            if self.closed() { " closed" } else { "" }
        )
    }
}

/// A connection to the pipe `name`, unbound: it takes its end when first
/// used (what an unpickled connection is).
#[pyfunction]
#[pyo3(name = "_open_connection")]
pub fn open_connection(
    name: String,
    end: &str,
    serializer: &str,
    readable: bool,
    writable: bool,
    max_size: usize,
) -> PyResult<Connection> {
    let end = match end {
        "parent" => PipeEnd::Parent,
        "child" => PipeEnd::Child,
        other => return Err(PyValueError::new_err(format!("unknown pipe end {other:?}"))),
    };
    Ok(Connection {
        name,
        end,
        serializer: Serializer::parse(serializer)?,
        readable,
        writable,
        max_size,
        binding: Mutex::new(Binding::new(None)),
        _owner: None,
    })
}

/// `multiprocessing.Pipe()`: a pair of connections. Duplex by default;
/// with `duplex=False`, the first receives only and the second sends only.
#[pyfunction]
#[pyo3(name = "Pipe", signature = (duplex=true, *, capacity=64, max_size=65536, name=None, serializer=None))]
pub fn pipe(
    duplex: bool,
    capacity: i64,
    max_size: i64,
    name: Option<String>,
    serializer: Option<&str>,
) -> PyResult<(Connection, Connection)> {
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
    let serializer = Serializer::parse(serializer.unwrap_or("pickle"))?;
    let name = name.unwrap_or_else(|| names::generate("pypipe"));
    let mut parent =
        Pipe::create(&name, PipeConfig::new(capacity, max_size)).map_err(errors::setup)?;
    parent.set_remove_on_drop(false);
    let owner = Arc::new(NameOwner::new(&name, Pipe::remove));
    let max = parent.max_payload();
    let first = Connection {
        name: name.clone(),
        end: PipeEnd::Parent,
        serializer,
        readable: true,
        writable: duplex,
        max_size: max,
        binding: Mutex::new(Binding::new(Some(Arc::new(Mutex::new(End::new(parent)))))),
        _owner: Some(owner.clone()),
    };
    let second = Connection {
        name,
        end: PipeEnd::Child,
        serializer,
        readable: duplex,
        writable: true,
        max_size: max,
        binding: Mutex::new(Binding::new(None)),
        _owner: Some(owner),
    };
    Ok((first, second))
}
