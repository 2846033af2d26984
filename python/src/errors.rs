//! Every error of the core crate as the standard Python exception that
//! means it, with the core's message.

use mulproc::{CorruptError, SetupError, TrySendError};
use pyo3::exceptions::{PyBrokenPipeError, PyEOFError, PyOSError, PyValueError};
use pyo3::PyErr;

pyo3::import_exception!(queue, Empty);
pyo3::import_exception!(queue, Full);

/// `OSError(errno, message)`: Python picks the subclass from the errno
/// (`FileNotFoundError` for `ENOENT`, `PermissionError` for `EACCES`, ...).
pub fn os_error(errno: i32, message: impl Into<String>) -> PyErr {
    PyOSError::new_err((errno, message.into()))
}

/// A failed create or open.
pub fn setup(e: SetupError) -> PyErr {
    let msg = e.to_string();
    match &e {
        SetupError::InvalidName { .. } | SetupError::InvalidConfig(_) => PyValueError::new_err(msg),
        SetupError::NotAQueue { .. }
        | SetupError::WrongKind { .. }
        | SetupError::IncompatibleVersion { .. } => PyValueError::new_err(msg),
        SetupError::NotFound { .. } => os_error(libc::ENOENT, msg),
        SetupError::AlreadyExists { .. }
        | SetupError::Stale { .. }
        | SetupError::StaleShapeMismatch { .. } => os_error(libc::EEXIST, msg),
        SetupError::PermissionDenied { .. } => os_error(libc::EACCES, msg),
        SetupError::EndTaken { .. }
        | SetupError::Busy { .. }
        | SetupError::InitIncomplete { .. } => os_error(libc::EBUSY, msg),
        SetupError::TooManyHandles { .. } => os_error(libc::EMFILE, msg),
        SetupError::Corrupt { .. } => os_error(libc::EIO, msg),
        SetupError::Os { source, .. } => os_error(source.raw_os_error().unwrap_or(libc::EIO), msg),
        _ => PyOSError::new_err(msg),
    }
}

/// A corrupt segment found while sending or receiving.
pub fn corrupt(name: &str, e: CorruptError) -> PyErr {
    os_error(libc::EIO, format!("{name:?}: {e}"))
}

/// A failed send, other than a full channel when the caller waits.
pub fn send<T>(name: &str, e: TrySendError<T>) -> PyErr {
    match e {
        TrySendError::Full(_) => Full::new_err(()),
        TrySendError::TooLarge { len, max, .. } => too_large(name, len, max),
        TrySendError::Disconnected(_) => broken_pipe(name),
        TrySendError::Corrupt(_, c) => corrupt(name, c),
        TrySendError::Fenced(_) => os_error(
            libc::ETIMEDOUT,
            format!(
                "{name:?}: the message was not delivered: this process held its slot past the \
                 unblock timeout (stopped or too slow) and another process reclaimed it"
            ),
        ),
        other => PyOSError::new_err(format!("{name:?}: {other}")),
    }
}

/// A message larger than the channel's largest.
pub fn too_large(name: &str, len: usize, max: usize) -> PyErr {
    PyValueError::new_err(format!(
        "message of {len} bytes exceeds the max_size of {name:?} ({max} bytes)"
    ))
}

/// Use of a closed queue (`multiprocessing` raises the same).
pub fn queue_closed(name: &str) -> PyErr {
    PyValueError::new_err(format!("Queue {name:?} is closed"))
}

/// Use of a closed connection (`multiprocessing` raises the same).
pub fn handle_closed() -> PyErr {
    PyOSError::new_err("handle is closed")
}

/// The peer end of a pipe is gone and nothing is left to receive.
pub fn eof(name: &str) -> PyErr {
    PyEOFError::new_err(format!(
        "pipe {name:?}: the other end was closed or its process exited"
    ))
}

/// The peer end of a pipe is gone: nobody will receive what we send.
pub fn broken_pipe(name: &str) -> PyErr {
    PyBrokenPipeError::new_err((
        libc::EPIPE,
        format!("pipe {name:?}: the other end was closed or its process exited"),
    ))
}
