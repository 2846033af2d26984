//! `mulproc.Buffer`: a received message held in place, exporting its
//! payload through the buffer protocol (`memoryview(buf)`, `bytes(buf)`,
//! `numpy.frombuffer(buf)`) without a copy.
//!
//! PyO3 offers `__getbuffer__` only where the buffer protocol is part of
//! the limited API (Python 3.11 and later), and this wheel is abi3 for 3.9
//! and later. So the class is split in two: `_BufferBase`, a PyO3 class
//! with the state, the methods and the attributes, and `Buffer`, a
//! subclass made at import with `PyType_FromSpecWithBases` that adds the
//! two buffer slots (`bf_getbuffer`, `bf_releasebuffer`). Every CPython
//! from 3.9 on accepts those slots in a type spec; the limited API of 3.9
//! and 3.10 only leaves `Py_buffer`'s layout out of its headers, so it is
//! declared here ([`RawBuffer`]), as in CPython's `Include/pybuffer.h`
//! (unchanged since 3.3).

use std::ffi::{c_int, c_void};
use std::sync::Mutex;

use mulproc::Header;
use pyo3::exceptions::PyBufferError;
use pyo3::ffi;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyTuple, PyType};

use crate::errors;
use crate::queue::Held;

/// CPython's `Py_buffer` (`Include/pybuffer.h`).
#[repr(C)]
pub struct RawBuffer {
    buf: *mut c_void,
    obj: *mut ffi::PyObject,
    len: ffi::Py_ssize_t,
    itemsize: ffi::Py_ssize_t,
    readonly: c_int,
    ndim: c_int,
    format: *mut std::ffi::c_char,
    shape: *mut ffi::Py_ssize_t,
    strides: *mut ffi::Py_ssize_t,
    suboffsets: *mut ffi::Py_ssize_t,
    internal: *mut c_void,
}

extern "C" {
    /// Exported by every CPython 3 (part of the limited API from 3.11).
    fn PyBuffer_FillInfo(
        view: *mut RawBuffer,
        obj: *mut ffi::PyObject,
        buf: *mut c_void,
        len: ffi::Py_ssize_t,
        readonly: c_int,
        flags: c_int,
    ) -> c_int;
}

struct State {
    held: Option<Held>,
    header: Option<Header>,
    /// memoryviews (and other consumers) currently holding the buffer.
    exports: usize,
    queue: String,
}

/// The state and methods of `mulproc.Buffer`; not used directly.
#[pyclass(module = "mulproc", name = "_BufferBase", subclass, frozen)]
pub struct BufferBase {
    /// Locked only with the GIL held.
    state: Mutex<State>,
}

impl BufferBase {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn header(&self) -> PyResult<Header> {
        self.state()
            .header
            .ok_or_else(|| PyBufferError::new_err("the buffer has no message"))
    }
}

#[pymethods]
impl BufferBase {
    /// An empty, released buffer; buffers holding a message come from
    /// `Queue.get_buffer()`.
    #[new]
    fn py_new() -> BufferBase {
        BufferBase {
            state: Mutex::new(State {
                held: None,
                header: None,
                exports: 0,
                queue: String::new(),
            }),
        }
    }

    /// Frees the slot. Raises BufferError while a memoryview of the
    /// buffer is still alive (release that first), as `memoryview.release`
    /// and `mmap.close` do. Releasing twice does nothing.
    fn release(&self) -> PyResult<()> {
        let mut st = self.state();
        if st.exports > 0 {
            return Err(PyBufferError::new_err(format!(
                "cannot release the slot: {} exported buffer(s) (memoryview) still use it",
                st.exports
            )));
        }
        match st.held.take() {
            Some(held) => {
                let name = st.queue.clone();
                drop(st);
                held.finish().map_err(|e| errors::corrupt(&name, e))
            }
            None => Ok(()),
        }
    }

    /// Whether the slot has been freed.
    #[getter]
    fn released(&self) -> bool {
        self.state().held.is_none()
    }

    /// The request code of the message.
    #[getter]
    fn request(&self) -> PyResult<u32> {
        Ok(self.header()?.request.code())
    }

    /// The sender's pid.
    #[getter]
    fn sender(&self) -> PyResult<u32> {
        Ok(self.header()?.sender)
    }

    /// The recipient's pid, None for anyone.
    #[getter]
    fn recipient(&self) -> PyResult<Option<u32>> {
        Ok(self.header()?.recipient)
    }

    fn __len__(&self) -> PyResult<usize> {
        match &self.state().held {
            Some(h) => Ok(h.data().len()),
            None => Err(PyBufferError::new_err("the buffer is released")),
        }
    }

    fn __bytes__<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        match &self.state().held {
            Some(h) => Ok(PyBytes::new(py, h.data())),
            None => Err(PyBufferError::new_err("the buffer is released")),
        }
    }

    fn __enter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    #[pyo3(signature = (*_exc))]
    fn __exit__(&self, _exc: &Bound<'_, PyTuple>) -> PyResult<bool> {
        self.release()?;
        Ok(false)
    }

    fn __repr__(&self) -> String {
        let st = self.state();
        match (&st.held, st.header) {
            (Some(h), Some(hd)) => format!(
                "<mulproc.Buffer {} bytes from pid {} request={}>",
                h.data().len(),
                hd.sender,
                hd.request.code()
            ),
            _ => "<mulproc.Buffer released>".to_owned(),
        }
    }
}

/// The `Buffer` type: `_BufferBase` plus the buffer slots.
pub fn buffer_type(py: Python<'_>) -> PyResult<&Bound<'_, PyType>> {
    static TYPE: PyOnceLock<Py<PyType>> = PyOnceLock::new();
    let t = TYPE.get_or_try_init(py, || -> PyResult<Py<PyType>> {
        let base = py.get_type::<BufferBase>();
        let bases = PyTuple::new(py, [base])?;
        let mut slots = [
            ffi::PyType_Slot {
                slot: ffi::Py_bf_getbuffer,
                pfunc: get_buffer as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: ffi::Py_bf_releasebuffer,
                pfunc: release_buffer as *mut c_void,
            },
            ffi::PyType_Slot {
                slot: 0,
                pfunc: std::ptr::null_mut(),
            },
        ];
        // Python 3.9 and 3.10 keep pointing at the name: a static string.
        let mut spec = ffi::PyType_Spec {
            name: c"mulproc.Buffer".as_ptr(),
            basicsize: 0, // the base's layout
            itemsize: 0,
            flags: ffi::Py_TPFLAGS_DEFAULT as _,
            slots: slots.as_mut_ptr(),
        };
        // SAFETY: the spec and slots are valid for the call (CPython copies
        // the slots); `bases` is a live tuple of one type.
        let t = unsafe { ffi::PyType_FromSpecWithBases(&mut spec, bases.as_ptr()) };
        // SAFETY: a new reference or null with an exception set.
        let t = unsafe { Bound::from_owned_ptr_or_err(py, t)? };
        Ok(t.cast_into::<PyType>()?.unbind())
    })?;
    Ok(t.bind(py))
}

/// A `Buffer` holding `held`.
pub fn new_buffer(py: Python<'_>, held: Held, queue: String) -> PyResult<Bound<'_, PyAny>> {
    let obj = buffer_type(py)?.call0()?;
    {
        let base = obj.cast::<BufferBase>()?.get();
        let mut st = base.state();
        st.header = Some(held.header());
        st.held = Some(held);
        st.queue = queue;
    }
    Ok(obj)
}

/// `bf_getbuffer`: exports the payload, read-only.
unsafe extern "C" fn get_buffer(
    obj: *mut ffi::PyObject,
    view: *mut RawBuffer,
    flags: c_int,
) -> c_int {
    let r = std::panic::catch_unwind(|| {
        // SAFETY: CPython calls buffer slots with the GIL held.
        let py = unsafe { Python::assume_attached() };
        // SAFETY: `obj` is a live object (the caller holds a reference).
        let any = unsafe { Bound::from_borrowed_ptr(py, obj) };
        let result = (|| -> PyResult<()> {
            let base = any.cast::<BufferBase>()?.get();
            let mut st = base.state();
            let Some(held) = &st.held else {
                return Err(PyBufferError::new_err("the buffer is released"));
            };
            let data = held.data();
            // SAFETY: `view` is the caller's Py_buffer; the memory stays
            // valid while an export is counted (release refuses, and the
            // exporter cannot be freed: the view holds a reference to it).
            // PyBuffer_FillInfo raises BufferError for a writable request.
            let rc = unsafe {
                PyBuffer_FillInfo(
                    view,
                    obj,
                    data.as_ptr() as *mut c_void,
                    data.len() as ffi::Py_ssize_t,
                    1,
                    flags,
                )
            };
            if rc != 0 {
                return Err(PyErr::fetch(py));
            }
            st.exports += 1;
            Ok(())
        })();
        match result {
            Ok(()) => 0,
            Err(e) => {
                e.restore(py);
                // SAFETY: as the C API asks of a failed getbuffer.
                unsafe { (*view).obj = std::ptr::null_mut() };
                -1
            }
        }
    });
    r.unwrap_or(-1)
}

/// `bf_releasebuffer`: one export fewer.
unsafe extern "C" fn release_buffer(obj: *mut ffi::PyObject, _view: *mut RawBuffer) {
    let _ = std::panic::catch_unwind(|| {
        // SAFETY: as in `get_buffer`.
        let py = unsafe { Python::assume_attached() };
        // SAFETY: as in `get_buffer`.
        let any = unsafe { Bound::from_borrowed_ptr(py, obj) };
        if let Ok(base) = any.cast::<BufferBase>() {
            let mut st = base.get().state();
            st.exports = st.exports.saturating_sub(1);
        }
    });
}
