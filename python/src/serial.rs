//! How Python objects become message payloads: pickle (the default), JSON
//! (data only, readable by any language: `serde_json` on the Rust side),
//! or raw bytes.

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes};

use crate::fastpickle;

/// A handle's payload format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Serializer {
    /// `pickle.dumps`/`pickle.loads`, highest protocol. Unpickling runs
    /// code: only for channels nobody else can write.
    Pickle,
    /// `json.dumps` (compact, UTF-8) / `json.loads`.
    Json,
    /// Bytes-like objects as they are; receives return `bytes`.
    Bytes,
}

struct Funcs {
    pickle_dumps: Py<PyAny>,
    pickle_loads: Py<PyAny>,
    protocol: Py<PyAny>,
    json_dumps: Py<PyAny>,
    json_loads: Py<PyAny>,
}

fn funcs(py: Python<'_>) -> PyResult<&'static Funcs> {
    static FUNCS: PyOnceLock<Funcs> = PyOnceLock::new();
    FUNCS.get_or_try_init(py, || {
        let pickle = py.import("pickle")?;
        let json = py.import("json")?;
        Ok(Funcs {
            pickle_dumps: pickle.getattr("dumps")?.unbind(),
            pickle_loads: pickle.getattr("loads")?.unbind(),
            protocol: pickle.getattr("HIGHEST_PROTOCOL")?.unbind(),
            json_dumps: json.getattr("dumps")?.unbind(),
            json_loads: json.getattr("loads")?.unbind(),
        })
    })
}

impl Serializer {
    /// From its Python name.
    pub fn parse(name: &str) -> PyResult<Serializer> {
        match name {
            "pickle" => Ok(Serializer::Pickle),
            "json" => Ok(Serializer::Json),
            "bytes" => Ok(Serializer::Bytes),
            other => Err(PyValueError::new_err(format!(
                "unknown serializer {other:?}: expected 'pickle', 'json' or 'bytes'"
            ))),
        }
    }

    /// Its Python name.
    pub fn name(self) -> &'static str {
        match self {
            Serializer::Pickle => "pickle",
            Serializer::Json => "json",
            Serializer::Bytes => "bytes",
        }
    }

    /// Calls `f` with the payload for `obj`. Pickles of built-in types
    /// are written in Rust into a reusable buffer ([`fastpickle`]); other
    /// objects go through `pickle.dumps`.
    pub fn encode_with<R>(
        self,
        obj: &Bound<'_, PyAny>,
        f: impl FnOnce(&[u8]) -> PyResult<R>,
    ) -> PyResult<R> {
        if self == Serializer::Pickle {
            let mut f = Some(f);
            if let Some(r) = fastpickle::with_dumps(obj, |b| (f.take().expect("once"))(b)) {
                return r;
            }
            let bytes = self.encode(obj)?;
            return (f.take().expect("not called"))(bytes.as_bytes());
        }
        let bytes = self.encode(obj)?;
        f(bytes.as_bytes())
    }

    /// The payload for `obj`, as a `bytes` object.
    pub fn encode<'py>(self, obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
        let py = obj.py();
        match self {
            Serializer::Pickle => {
                if let Some(b) = fastpickle::with_dumps(obj, |b| PyBytes::new(py, b)) {
                    return Ok(b);
                }
                let f = funcs(py)?;
                Ok(f.pickle_dumps
                    .bind(py)
                    .call1((obj, f.protocol.bind(py)))?
                    .cast_into::<PyBytes>()?)
            }
            Serializer::Json => {
                let f = funcs(py)?;
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item("separators", (",", ":"))?;
                kwargs.set_item("ensure_ascii", false)?;
                let text = f.json_dumps.bind(py).call((obj,), Some(&kwargs))?;
                Ok(text
                    .call_method1("encode", ("utf-8",))?
                    .cast_into::<PyBytes>()?)
            }
            Serializer::Bytes => bytes_of(obj),
        }
    }

    /// The object a payload encodes.
    pub fn decode<'py>(
        self,
        py: Python<'py>,
        data: Bound<'py, PyBytes>,
    ) -> PyResult<Bound<'py, PyAny>> {
        match self {
            Serializer::Pickle => match fastpickle::loads_small(py, data.as_bytes()) {
                Some(v) => Ok(v),
                None => funcs(py)?.pickle_loads.bind(py).call1((data,)),
            },
            Serializer::Json => funcs(py)?.json_loads.bind(py).call1((data,)),
            Serializer::Bytes => Ok(data.into_any()),
        }
    }

    /// The object a payload encodes, read in place (a `bytes` copy is
    /// made only for the `pickle` and `json` modules, or for `'bytes'`).
    pub fn decode_slice<'py>(self, py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
        if self == Serializer::Pickle {
            if let Some(v) = fastpickle::loads_small(py, data) {
                return Ok(v);
            }
        }
        let bytes = PyBytes::new(py, data);
        match self {
            Serializer::Pickle => funcs(py)?.pickle_loads.bind(py).call1((bytes,)),
            _ => self.decode(py, bytes),
        }
    }
}

/// `pickle.loads(data)`, read in Rust whatever its size when it holds
/// only built-in types (tuples of atomic objects then come untracked by
/// the garbage collector: see [`fastpickle`]), by the `pickle` module
/// otherwise. For the pool's answers, which a worker pickled with
/// [`py_dumps`].
pub fn unpickle<'py>(py: Python<'py>, data: &[u8]) -> PyResult<Bound<'py, PyAny>> {
    match fastpickle::loads(py, data) {
        Some(v) => Ok(v),
        None => funcs(py)?
            .pickle_loads
            .bind(py)
            .call1((PyBytes::new(py, data),)),
    }
}

/// `obj` as `bytes`: itself if it is one, else `bytes(obj)` for any other
/// bytes-like object (bytearray, memoryview, array, numpy array, ...).
pub fn bytes_of<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        return Ok(b.clone());
    }
    if let Ok(b) = obj.cast::<PyByteArray>() {
        return Ok(PyBytes::new(obj.py(), &b.to_vec()));
    }
    // Anything else that exports a buffer (memoryview, array, numpy, ...).
    let py = obj.py();
    let view = py
        .import("builtins")?
        .getattr("memoryview")?
        .call1((obj,))
        .map_err(|_| {
            let ty = obj
                .get_type()
                .name()
                .map(|n| n.to_string())
                .unwrap_or_default();
            PyTypeError::new_err(format!("a bytes-like object is required, not '{ty}'"))
        })?;
    let bytes = view.call_method0("tobytes")?;
    view.call_method0("release")?;
    Ok(bytes.cast_into::<PyBytes>()?)
}

/// `pickle.dumps(obj, 5)`, written in Rust for built-in types
/// (`mulproc._mulproc._dumps`; the pool pickles its chunks with it).
#[pyfunction]
#[pyo3(name = "_dumps")]
pub fn py_dumps<'py>(obj: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    Serializer::Pickle.encode(obj)
}

/// `pickle.loads(data)` for a `bytes` object, read in Rust when it holds
/// only built-in types (`mulproc._mulproc._loads`).
#[pyfunction]
#[pyo3(name = "_loads")]
pub fn py_loads<'py>(data: Bound<'py, PyBytes>) -> PyResult<Bound<'py, PyAny>> {
    Serializer::Pickle.decode(data.py(), data)
}
