//! Pickle protocol 5, written and read in Rust for the built-in types
//! that make up most messages: `None`, `bool`, `int` (64-bit), `float`,
//! `str`, `bytes`, and `tuple`, `list`, `dict` of those.
//!
//! The bytes are ordinary pickles: `pickle.loads` reads what [`dumps`]
//! writes, and [`loads`] reads what `pickle.dumps` writes for these types
//! (frames, memo puts and gets included). Anything else falls back to the
//! `pickle` module, whole: [`dumps`] returns `None` for an object holding
//! any other type (a subclass of a built-in included, which pickles with
//! its class), a list or dict met twice (shared or cyclic references,
//! which pickle keeps) or nesting deeper than [`MAX_DEPTH`]; [`loads`]
//! returns `None` for any other opcode and for input it cannot make sense
//! of, so that `pickle.loads` raises its own error for it.
//!
//! What this saves per message is the `Pickler`/`Unpickler` object that
//! each `pickle.dumps`/`pickle.loads` call builds and tears down (its memo
//! dict, its output buffer), which for a small tuple costs more than the
//! encoding itself, and the intermediate `bytes` object on the way in and
//! out of a queue slot.

use std::cell::RefCell;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

/// Deepest nesting [`dumps`] writes itself (deeper: the `pickle` module).
pub const MAX_DEPTH: usize = 32;

mod op {
    pub const PROTO: u8 = 0x80;
    pub const FRAME: u8 = 0x95;
    pub const STOP: u8 = b'.';
    pub const NONE: u8 = b'N';
    pub const NEWTRUE: u8 = 0x88;
    pub const NEWFALSE: u8 = 0x89;
    pub const BININT: u8 = b'J';
    pub const BININT1: u8 = b'K';
    pub const BININT2: u8 = b'M';
    pub const LONG1: u8 = 0x8a;
    pub const BINFLOAT: u8 = b'G';
    pub const SHORT_BINUNICODE: u8 = 0x8c;
    pub const BINUNICODE: u8 = b'X';
    pub const BINUNICODE8: u8 = 0x8d;
    pub const SHORT_BINBYTES: u8 = b'C';
    pub const BINBYTES: u8 = b'B';
    pub const BINBYTES8: u8 = 0x8e;
    pub const EMPTY_TUPLE: u8 = b')';
    pub const TUPLE1: u8 = 0x85;
    pub const TUPLE2: u8 = 0x86;
    pub const TUPLE3: u8 = 0x87;
    pub const MARK: u8 = b'(';
    pub const TUPLE: u8 = b't';
    pub const EMPTY_LIST: u8 = b']';
    pub const APPEND: u8 = b'a';
    pub const APPENDS: u8 = b'e';
    pub const EMPTY_DICT: u8 = b'}';
    pub const SETITEM: u8 = b's';
    pub const SETITEMS: u8 = b'u';
    pub const MEMOIZE: u8 = 0x94;
    pub const BINPUT: u8 = b'q';
    pub const LONG_BINPUT: u8 = b'r';
    pub const BINGET: u8 = b'h';
    pub const LONG_BINGET: u8 = b'j';
}

// ------------------------------------------------------------- writing --

/// Why [`dumps`] left an object to the `pickle` module.
struct Unsupported;

struct Writer<'a> {
    out: &'a mut Vec<u8>,
    /// The lists and dicts written so far (by address, alive for the
    /// whole call since `obj` holds them): one met again is a shared or
    /// cyclic reference.
    containers: Vec<usize>,
}

impl Writer<'_> {
    fn container(&mut self, obj: &Bound<'_, PyAny>) -> Result<(), Unsupported> {
        let addr = obj.as_ptr() as usize;
        if self.containers.contains(&addr) {
            return Err(Unsupported);
        }
        self.containers.push(addr);
        Ok(())
    }

    fn sized(&mut self, short: u8, long: u8, long8: u8, data: &[u8]) {
        let n = data.len();
        if let Ok(n) = u8::try_from(n) {
            self.out.extend_from_slice(&[short, n]);
        } else if let Ok(n) = u32::try_from(n) {
            self.out.push(long);
            self.out.extend_from_slice(&n.to_le_bytes());
        } else {
            self.out.push(long8);
            self.out.extend_from_slice(&(n as u64).to_le_bytes());
        }
        self.out.extend_from_slice(data);
    }

    fn int(&mut self, v: i64) {
        if let Ok(v) = u8::try_from(v) {
            self.out.extend_from_slice(&[op::BININT1, v]);
        } else if let Ok(v) = u16::try_from(v) {
            self.out.push(op::BININT2);
            self.out.extend_from_slice(&v.to_le_bytes());
        } else if let Ok(v) = i32::try_from(v) {
            self.out.push(op::BININT);
            self.out.extend_from_slice(&v.to_le_bytes());
        } else {
            // Two's complement, little endian, as few bytes as keep the sign.
            let bytes = v.to_le_bytes();
            let mut n = 8;
            while n > 1 {
                let top = bytes[n - 1];
                let next_sign = bytes[n - 2] & 0x80;
                if (top == 0 && next_sign == 0) || (top == 0xff && next_sign != 0) {
                    n -= 1;
                } else {
                    break;
                }
            }
            self.out.extend_from_slice(&[op::LONG1, n as u8]);
            self.out.extend_from_slice(&bytes[..n]);
        }
    }

    fn write(&mut self, obj: &Bound<'_, PyAny>, depth: usize) -> Result<(), Unsupported> {
        if depth > MAX_DEPTH {
            return Err(Unsupported);
        }
        // One read of the type, compared with the built-in types' (a
        // subclass is never one of them: the `pickle` module writes it,
        // with its class).
        let ty = obj.get_type_ptr();
        if ty == type_ptr::<PyTuple>(obj.py()) {
            // SAFETY: the type was checked just above.
            let t = unsafe { obj.cast_unchecked::<PyTuple>() };
            let n = t.len();
            if n == 0 {
                self.out.push(op::EMPTY_TUPLE);
                return Ok(());
            }
            if n > 3 {
                self.out.push(op::MARK);
            }
            // Borrowed items: a tuple never changes, and `t` (held by the
            // caller) holds them.
            for item in t.iter_borrowed() {
                self.write(&item, depth + 1)?;
            }
            self.out.push(match n {
                1 => op::TUPLE1,
                2 => op::TUPLE2,
                3 => op::TUPLE3,
                _ => op::TUPLE,
            });
        } else if ty == type_ptr::<PyInt>(obj.py()) {
            // Beyond 64 bits: the pickle module (LONG1 of any length).
            self.int(obj.extract::<i64>().map_err(|_| Unsupported)?);
        } else if ty == type_ptr::<PyBytes>(obj.py()) {
            // SAFETY: the type was checked just above.
            let b = unsafe { obj.cast_unchecked::<PyBytes>() };
            self.sized(
                op::SHORT_BINBYTES,
                op::BINBYTES,
                op::BINBYTES8,
                b.as_bytes(),
            );
        } else if ty == type_ptr::<PyString>(obj.py()) {
            // SAFETY: the type was checked just above.
            let s = unsafe { obj.cast_unchecked::<PyString>() };
            // Lone surrogates (no UTF-8 form): the pickle module.
            let s = s.to_cow().map_err(|_| Unsupported)?;
            self.sized(
                op::SHORT_BINUNICODE,
                op::BINUNICODE,
                op::BINUNICODE8,
                s.as_bytes(),
            );
        } else if obj.is_none() {
            self.out.push(op::NONE);
        } else if ty == type_ptr::<PyBool>(obj.py()) {
            self.out.push(if obj.is_truthy().map_err(|_| Unsupported)? {
                op::NEWTRUE
            } else {
                op::NEWFALSE
            });
        } else if ty == type_ptr::<PyList>(obj.py()) {
            // SAFETY: the type was checked just above.
            let l = unsafe { obj.cast_unchecked::<PyList>() };
            self.container(obj)?;
            self.out.push(op::EMPTY_LIST);
            if !l.is_empty() {
                self.out.push(op::MARK);
                for item in l.iter() {
                    self.write(&item, depth + 1)?;
                }
                self.out.push(op::APPENDS);
            }
        } else if ty == type_ptr::<PyDict>(obj.py()) {
            // SAFETY: the type was checked just above.
            let d = unsafe { obj.cast_unchecked::<PyDict>() };
            self.container(obj)?;
            self.out.push(op::EMPTY_DICT);
            if !d.is_empty() {
                self.out.push(op::MARK);
                for (k, v) in d.iter() {
                    self.write(&k, depth + 1)?;
                    self.write(&v, depth + 1)?;
                }
                self.out.push(op::SETITEMS);
            }
        } else if ty == type_ptr::<PyFloat>(obj.py()) {
            let v: f64 = obj.extract().map_err(|_| Unsupported)?;
            self.out.push(op::BINFLOAT);
            self.out.extend_from_slice(&v.to_be_bytes());
        } else {
            return Err(Unsupported);
        }
        Ok(())
    }
}

/// The type object of the built-in type `T`, for comparing with an
/// object's type.
#[inline]
fn type_ptr<T: pyo3::type_object::PyTypeInfo>(py: Python<'_>) -> *mut pyo3::ffi::PyTypeObject {
    T::type_object_raw(py)
}

/// Writes the protocol-5 pickle of `obj` to `out` (cleared first), or
/// returns `false` (with `out` in any state) when `obj` is for the
/// `pickle` module.
pub fn dumps_into(obj: &Bound<'_, PyAny>, out: &mut Vec<u8>) -> bool {
    out.clear();
    out.extend_from_slice(&[op::PROTO, 5]);
    let mut w = Writer {
        out,
        containers: Vec::new(),
    };
    if w.write(obj, 0).is_err() {
        return false;
    }
    out.push(op::STOP);
    true
}

thread_local! {
    /// One reusable output buffer per thread (calls hold the GIL; a
    /// nested call, which cannot happen as nothing here runs Python code,
    /// would get a fresh buffer).
    static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on the pickle of `obj` written in Rust, or returns `None`
/// when `obj` is for the `pickle` module.
pub fn with_dumps<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> Option<R> {
    BUF.with(|cell| match cell.try_borrow_mut() {
        Ok(mut buf) => {
            let ok = dumps_into(obj, &mut buf);
            let r = ok.then(|| f(&buf));
            if buf.capacity() > 1 << 20 {
                *buf = Vec::new(); // do not keep a huge buffer around
            }
            r
        }
        Err(_) => {
            let mut buf = Vec::new();
            dumps_into(obj, &mut buf).then(|| f(&buf))
        }
    })
}

// ------------------------------------------------------------- reading --

/// A cursor over the input; every read is bounds-checked.
struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.pos.checked_add(n)?;
        let s = self.data.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn len8(&mut self) -> Option<usize> {
        self.u64().and_then(|n| usize::try_from(n).ok())
    }
}

/// Payloads up to this size are read here; longer ones by `pickle.loads`,
/// whose setup is then amortised and whose per-object work is cheaper
/// (it builds objects with CPython's internal calls).
pub const SMALL: usize = 1024;

/// [`loads`] for a payload of at most [`SMALL`] bytes, else `None` (for
/// the `pickle` module).
pub fn loads_small<'py>(py: Python<'py>, data: &[u8]) -> Option<Bound<'py, PyAny>> {
    if data.len() <= SMALL {
        loads(py, data)
    } else {
        None
    }
}

/// Reads a pickle of the types above; `None` when the `pickle` module
/// must (another opcode, or input this reader finds wrong: `pickle.loads`
/// then says what is wrong with it).
pub fn loads<'py>(py: Python<'py>, data: &[u8]) -> Option<Bound<'py, PyAny>> {
    let mut r = Reader { data, pos: 0 };
    // About one stack entry per few bytes of a list's items (a pool's
    // chunk): one allocation instead of a doubling per level.
    let mut stack: Vec<Bound<'py, PyAny>> = Vec::with_capacity((data.len() / 8).clamp(8, 1024));
    let mut marks: Vec<usize> = Vec::new();
    let mut memo: Vec<Option<Bound<'py, PyAny>>> = Vec::new();
    let put = |memo: &mut Vec<Option<Bound<'py, PyAny>>>, i: usize, v: Bound<'py, PyAny>| {
        if i > memo.len() + 1024 {
            return None; // a sparse memo: leave it to pickle
        }
        if memo.len() <= i {
            memo.resize(i + 1, None);
        }
        memo[i] = Some(v);
        Some(())
    };
    loop {
        match r.u8()? {
            op::PROTO => {
                if r.u8()? > 5 {
                    return None;
                }
            }
            op::FRAME => {
                r.u64()?;
            }
            op::STOP => {
                return if stack.len() == 1 && marks.is_empty() {
                    stack.pop()
                } else {
                    None
                };
            }
            op::NONE => stack.push(py.None().into_bound(py)),
            op::NEWTRUE => stack.push(PyBool::new(py, true).to_owned().into_any()),
            op::NEWFALSE => stack.push(PyBool::new(py, false).to_owned().into_any()),
            op::BININT1 => stack.push(r.u8()?.into_pyobject(py).ok()?.into_any()),
            op::BININT2 => {
                let b = r.take(2)?;
                let v = u16::from_le_bytes([b[0], b[1]]);
                stack.push(v.into_pyobject(py).ok()?.into_any());
            }
            op::BININT => {
                let v = r.u32()? as i32;
                stack.push(v.into_pyobject(py).ok()?.into_any());
            }
            op::LONG1 => {
                let n = r.u8()? as usize;
                if n > 8 {
                    return None;
                }
                let b = r.take(n)?;
                let v = if n == 0 {
                    0
                } else {
                    let fill = if b[n - 1] & 0x80 != 0 { 0xff } else { 0 };
                    let mut full = [fill; 8];
                    full[..n].copy_from_slice(b);
                    i64::from_le_bytes(full)
                };
                stack.push(v.into_pyobject(py).ok()?.into_any());
            }
            op::BINFLOAT => {
                let b = r.take(8)?;
                let v = f64::from_be_bytes(b.try_into().ok()?);
                stack.push(PyFloat::new(py, v).into_any());
            }
            op::SHORT_BINUNICODE => {
                let n = r.u8()? as usize;
                stack.push(string(py, r.take(n)?)?);
            }
            op::BINUNICODE => {
                let n = r.u32()? as usize;
                stack.push(string(py, r.take(n)?)?);
            }
            op::BINUNICODE8 => {
                let n = r.len8()?;
                stack.push(string(py, r.take(n)?)?);
            }
            op::SHORT_BINBYTES => {
                let n = r.u8()? as usize;
                stack.push(PyBytes::new(py, r.take(n)?).into_any());
            }
            op::BINBYTES => {
                let n = r.u32()? as usize;
                stack.push(PyBytes::new(py, r.take(n)?).into_any());
            }
            op::BINBYTES8 => {
                let n = r.len8()?;
                stack.push(PyBytes::new(py, r.take(n)?).into_any());
            }
            op::EMPTY_TUPLE => stack.push(PyTuple::empty(py).into_any()),
            op::TUPLE1 | op::TUPLE2 | op::TUPLE3 => {
                let n = usize::from(r.data[r.pos - 1] - op::TUPLE1 + 1);
                let from = stack.len().checked_sub(n)?;
                if marks.last().is_some_and(|&m| m > from) {
                    return None;
                }
                let t = tuple(py, &mut stack, from)?;
                stack.push(t);
            }
            op::MARK => marks.push(stack.len()),
            op::TUPLE => {
                let from = marks.pop()?;
                let t = tuple(py, &mut stack, from)?;
                stack.push(t);
            }
            op::EMPTY_LIST => stack.push(PyList::empty(py).into_any()),
            op::APPEND => {
                let v = stack.pop()?;
                let list = stack.last()?.cast::<PyList>().ok()?;
                list.append(v).ok()?;
            }
            op::APPENDS => {
                let from = marks.pop()?;
                let list = stack
                    .get(from.checked_sub(1)?)?
                    .cast::<PyList>()
                    .ok()?
                    .clone();
                for v in stack.drain(from..) {
                    list.append(v).ok()?;
                }
            }
            op::EMPTY_DICT => stack.push(PyDict::new(py).into_any()),
            op::SETITEM => {
                let v = stack.pop()?;
                let k = stack.pop()?;
                let dict = stack.last()?.cast::<PyDict>().ok()?;
                dict.set_item(k, v).ok()?;
            }
            op::SETITEMS => {
                let from = marks.pop()?;
                if !(stack.len().checked_sub(from)?).is_multiple_of(2) {
                    return None;
                }
                let dict = stack
                    .get(from.checked_sub(1)?)?
                    .cast::<PyDict>()
                    .ok()?
                    .clone();
                let mut it = stack.drain(from..);
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    dict.set_item(k, v).ok()?;
                }
            }
            op::MEMOIZE => {
                let v = stack.last()?.clone();
                let i = memo.len();
                put(&mut memo, i, v)?;
            }
            op::BINPUT => {
                let i = r.u8()? as usize;
                let v = stack.last()?.clone();
                put(&mut memo, i, v)?;
            }
            op::LONG_BINPUT => {
                let i = r.u32()? as usize;
                let v = stack.last()?.clone();
                put(&mut memo, i, v)?;
            }
            op::BINGET => {
                let i = r.u8()? as usize;
                stack.push(memo.get(i)?.clone()?);
            }
            op::LONG_BINGET => {
                let i = r.u32()? as usize;
                stack.push(memo.get(i)?.clone()?);
            }
            _ => return None,
        }
    }
}

/// Whether `obj`, an object this reader built, may hold references to
/// tracked objects now or later, the test of CPython's own
/// `_PyTuple_MaybeUntrack`: false for numbers, strings, bytes, `None`
/// and untracked tuples; true for lists (always tracked) and dicts (an
/// empty or atomic dict is untracked, but it becomes tracked when a
/// container is stored in it, which nothing would tell a tuple holding
/// it).
fn may_be_tracked(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `obj` is a live object and the GIL is held (the `Bound`);
    // `PyObject_GC_IsTracked` reads its type and GC header only (0 for an
    // object of a type without GC support).
    let tracked = unsafe { pyo3::ffi::PyObject_GC_IsTracked(obj.as_ptr()) != 0 };
    tracked || obj.is_exact_instance_of::<PyDict>()
}

/// The tuple of `stack[from..]` (taken off the stack), untracked from the
/// cyclic garbage collector when none of its items may be tracked (see
/// [`may_be_tracked`]): such a tuple cannot be part of a reference cycle,
/// and CPython untracks it itself, but only lazily, when a collection
/// first examines it (`_PyTuple_MaybeUntrack`). Untracked at creation, the tuples of a
/// message (the `(id, value)` results of a pool's chunk, say) cost the
/// collections that run while they live nothing.
fn tuple<'py>(
    py: Python<'py>,
    stack: &mut Vec<Bound<'py, PyAny>>,
    from: usize,
) -> Option<Bound<'py, PyAny>> {
    // A mark above the stack's top (items popped below it since): wrong input.
    let items = stack.get(from..)?;
    let atomic = !items.is_empty() && !items.iter().any(may_be_tracked);
    let t = new_tuple(py, stack.drain(from..))?;
    if atomic {
        // SAFETY: `t` is a tuple this function just made (tracked by
        // `PyTuple_New`) and holds the GIL; untracking an object only
        // takes it off the collector's list (`PyObject_GC_UnTrack` is a
        // no-op for one not tracked). Its items are all untracked, so no
        // cycle can run through it: the collector would never have freed
        // it, and reference counting frees it as before.
        unsafe { pyo3::ffi::PyObject_GC_UnTrack(t.as_ptr().cast()) };
    }
    Some(t.into_any())
}

/// A tuple of `items` (`PyTuple_New` and `PyTuple_SetItem`, without
/// the length checks of a general iterator).
fn new_tuple<'py>(
    py: Python<'py>,
    items: std::vec::Drain<'_, Bound<'py, PyAny>>,
) -> Option<Bound<'py, PyTuple>> {
    let n = items.len();
    let n_ssize = pyo3::ffi::Py_ssize_t::try_from(n).ok()?;
    // SAFETY: the GIL is held (`py`). `PyTuple_New` returns a new
    // reference or NULL (a MemoryError set: taken and dropped here, the
    // `pickle` module then fails the same way). Each `PyTuple_SetItem`
    // steals the reference `into_ptr` hands over, at an index below the
    // length the tuple was made with (the drain yields exactly `n`
    // items), on a tuple nobody else has seen yet.
    unsafe {
        let t = pyo3::ffi::PyTuple_New(n_ssize);
        if t.is_null() {
            let _ = PyErr::take(py);
            return None;
        }
        for (i, item) in items.enumerate() {
            pyo3::ffi::PyTuple_SetItem(t, i as pyo3::ffi::Py_ssize_t, item.into_ptr());
        }
        Some(Bound::from_owned_ptr(py, t).cast_into_unchecked())
    }
}

/// A `str` from pickle's UTF-8 (pickle writes lone surrogates with
/// `surrogatepass`; those are left to it).
fn string<'py>(py: Python<'py>, b: &[u8]) -> Option<Bound<'py, PyAny>> {
    std::str::from_utf8(b)
        .ok()
        .map(|s| PyString::new(py, s).into_any())
}
