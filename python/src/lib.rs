//! The Python binding of mulproc (`mulproc._mulproc`): [`queue::PyQueue`]
//! (`mulproc.Queue`, duck-compatible with `multiprocessing.JoinableQueue`),
//! [`pipe::Connection`] and `mulproc.Pipe()` (duck-compatible with
//! `multiprocessing.Pipe()`), [`pool`] (the core of `mulproc.Pool`), and [`buffer`] (zero-copy reads through the
//! buffer protocol).
//!
//! Every call into the core crate goes through these modules; the Python
//! package beside this crate (`python/mulproc/`) adds the pymulproc layer
//! and the exit hook that removes the names this process created.
//!
//! Rules the code keeps:
//! - the GIL is released around every wait, and every wait is cut into
//!   slices of at most 50 ms with `Python::check_signals` between them
//!   ([`wait`]), so Ctrl-C interrupts a blocking call;
//! - a handle notices a fork ([`fork::generation`]) and reopens itself by
//!   name in the child; what it inherited is leaked, never dropped (its
//!   drop would deregister the parent's handle and unlock the parent's
//!   locks, which the child shares until it closes the descriptor);
//! - the `Mutex`es that hold handles are taken only with the GIL held, so
//!   a fork (which holds the GIL) never copies one of them locked.

use pyo3::prelude::*;

mod buffer;
mod errors;
mod fastpickle;
mod fork;
mod names;
mod pipe;
mod pool;
mod pymulproc;
mod queue;
mod serial;
mod wait;

/// The extension module `mulproc._mulproc`.
#[pymodule]
fn _mulproc(m: &Bound<'_, PyModule>) -> PyResult<()> {
    fork::install();
    m.add_class::<queue::PyQueue>()?;
    m.add_class::<pipe::Connection>()?;
    m.add_class::<buffer::BufferBase>()?;
    m.add_class::<pool::PoolCore>()?;
    m.add_class::<pymulproc::MessageQueue>()?;
    m.add_class::<pymulproc::QueueEnd>()?;
    m.add_function(wrap_pyfunction!(pool::serve_pool_worker, m)?)?;
    m.add("Buffer", buffer::buffer_type(m.py())?)?;
    m.add_function(wrap_pyfunction!(pipe::pipe, m)?)?;
    m.add_function(wrap_pyfunction!(pipe::open_connection, m)?)?;
    m.add_function(wrap_pyfunction!(names::remove_owned, m)?)?;
    m.add_function(wrap_pyfunction!(serial::py_dumps, m)?)?;
    m.add_function(wrap_pyfunction!(serial::py_loads, m)?)?;
    m.add("MAX_CAPACITY", mulproc::MAX_CAPACITY)?;
    m.add("MIN_CAPACITY", mulproc::MIN_CAPACITY)?;
    m.add("MAX_PAYLOAD", mulproc::MAX_PAYLOAD_LIMIT)?;
    m.add("MAX_NAME_LEN", mulproc::MAX_NAME_LEN)?;
    m.add("REQUEST_DO", mulproc::Request::DO.code())?;
    m.add("REQUEST_FINISHED", mulproc::Request::FINISHED.code())?;
    m.add("REQUEST_DIE", mulproc::Request::DIE.code())?;
    Ok(())
}
