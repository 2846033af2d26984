"""``mulproc.Pool``: a ``multiprocessing.Pool``-shaped pool of worker
processes over mulproc's Rust pool (shared-memory queues).

Workers are fresh Python processes (``sys.executable``), never forks, so
the function given to a pool is pickled by reference (module and name),
as multiprocessing's spawn does: it must be importable in the worker
(defined at the top level of a module, or of the main script behind an
``if __name__ == "__main__":`` guard). A lambda or a nested function
raises ``pickle.PicklingError`` when submitted.

A worker killed mid-task (SIGKILL, out of memory) is replaced and its
tasks run again elsewhere; every result arrives exactly once. A task
that was running each time its worker died ``max_attempts`` times fails
with ``WorkerLost``; the rest completes.

``map`` and ``imap`` are driven by the calling thread; while futures are
pending, a result thread completes them and runs their callbacks.
"""

import concurrent.futures
import itertools
import json
import os
import pickle
import sys
import threading
from collections import deque
from multiprocessing.pool import RemoteTraceback

from ._mulproc import _dumps, _PoolCore

__all__ = ["Pool", "WorkerLost", "PoolFuture"]

_PROTOCOL = pickle.HIGHEST_PROTOCOL
_OK, _FAILED, _KILLED, _TOO_LARGE, _UNREADABLE = 0, 1, 2, 3, 5
# Items per task when the pool chooses (chunksize=None).
_AUTO_MAX = 256
_AUTO_UNSIZED = 64
_SLICE = 0.05
# Items a map takes from the pool at a time (results beyond stay in Rust,
# as bytes, until the map needs them: unpickled in bulk, thousands of
# results alive at once would make the garbage collector run, and scan
# them, for nothing).
_TAKE_ITEMS = 512
_counter = itertools.count()

_BOOTSTRAP = (
    "import sys, json; c = json.loads(sys.argv[1]); sys.path[:] = c['sys_path']; "
    "import mulproc._pool_worker as w; w.main(c)"
)


class WorkerLost(RuntimeError):
    """A task's worker process died while running it ``max_attempts`` times
    (or the pool was terminated before it finished)."""


class PoolFuture(concurrent.futures.Future):
    """A ``concurrent.futures.Future`` whose waits drive the pool; also has
    ``multiprocessing.pool.AsyncResult``'s ``get``, ``wait``, ``ready`` and
    ``successful``."""

    def __init__(self, pool):
        super().__init__()
        self._pool = pool

    def _drive_until(self, timeout):
        deadline = None if timeout is None else _now() + timeout
        while not super().done() and not self._pool._core.closed:
            left = None if deadline is None else deadline - _now()
            if left is not None and left <= 0:
                return
            self._pool._drive(_SLICE if left is None else min(left, _SLICE))

    def done(self):
        if not super().done() and self._pool._driver is None:
            self._pool._drive(0)
        return super().done()

    def result(self, timeout=None):
        self._drive_until(timeout)
        return super().result(0)

    def exception(self, timeout=None):
        self._drive_until(timeout)
        return super().exception(0)

    # multiprocessing.pool.AsyncResult's names.
    def get(self, timeout=None):
        """``result(timeout)``, raising ``multiprocessing.TimeoutError``."""
        try:
            return self.result(timeout)
        except concurrent.futures.TimeoutError:
            import multiprocessing

            raise multiprocessing.TimeoutError from None

    def wait(self, timeout=None):
        """Waits until the result is there or ``timeout`` passed."""
        self._drive_until(timeout)

    def ready(self):
        """Whether the result is there."""
        return self.done()

    def successful(self):
        """Whether the task returned (``ValueError`` if not ready yet)."""
        if not self.done():
            raise ValueError("the task has not finished yet")
        return super().exception(0) is None


def _now():
    import time

    return time.monotonic()


def _reraise(exc, tb):
    if exc is None:
        return RuntimeError(f"the task raised an exception that cannot be pickled:\n{tb}")
    exc.__cause__ = RemoteTraceback(tb)
    return exc


class _Task:
    """One Rust task: a chunk of items bound for ``sink`` from ``start``;
    ``fblob`` is ``func`` pickled (once per map: pickling a function by
    reference looks its module up, a few microseconds)."""

    __slots__ = ("func", "fblob", "kind", "items", "sink", "start")

    def __init__(self, func, fblob, kind, items, sink, start):
        self.func, self.fblob, self.kind = func, fblob, kind
        self.items, self.sink, self.start = items, sink, start

    def part(self, lo, hi):
        """The same task for items ``lo:hi`` only."""
        return _Task(self.func, self.fblob, self.kind, self.items[lo:hi], self.sink, self.start + lo)


class _Sink:
    """Where the results of one map go: whole chunks, ``(values, errors)``
    (errors: ``{index in chunk: exception}``)."""

    def __init__(self, ordered):
        self.ordered = ordered
        self.outstanding = 0  # items submitted, not yet yielded
        self.done = {} if ordered else deque()
        self.next = 0

    def put(self, start, values, errors):
        if self.ordered:
            self.done[start] = (values, errors)
        else:
            self.done.append((values, errors))

    def pop(self):
        if self.ordered:
            r = self.done.pop(self.next, None)
            if r is not None:
                self.next += len(r[0])
        else:
            r = self.done.popleft() if self.done else None
        if r is not None:
            self.outstanding -= len(r[0])
        return r


class _FutureSink:
    __slots__ = ("pool", "future", "callback", "error_callback")

    def __init__(self, pool, future, callback, error_callback):
        self.pool, self.future = pool, future
        self.callback, self.error_callback = callback, error_callback

    def put(self, _start, values, errors):
        self.pool._futures_pending -= 1
        if not errors:
            self.future.set_result(values[0])
            _call(self.callback, values[0])
        else:
            exc = errors[0]
            self.future.set_exception(exc)
            _call(self.error_callback, exc)


def _call(callback, value):
    """A user's callback; what it raises is printed, as a thread's would be."""
    if callback is None:
        return
    try:
        callback(value)
    except Exception:
        import traceback

        print("Exception in a mulproc.Pool callback:", file=sys.stderr)
        traceback.print_exc()


class Pool:
    """A pool of ``processes`` worker processes (default: the CPU count).

    ``backend``: where tasks and results travel: ``None`` or ``"shm"``
    (shared memory, the default), or a Redis URL
    ``"redis://[:password@]host:port/db"`` (``rediss://`` for TLS): the
    pool then runs over Redis Streams (``mulproc_redis``), with the same
    guarantees (a killed worker's tasks run again; every result arrives
    once). A malformed URL raises ``ValueError``; a server that does not
    answer, ``ConnectionError`` (within about 2 s); refused credentials,
    ``PermissionError``. The workers get the URL through their
    environment, never their command line (it may hold a password).

    ``initializer(*initargs)`` runs in each worker as it starts.
    ``max_attempts``: deaths of a worker running a task before the task
    fails with ``WorkerLost``. ``max_task_bytes`` / ``max_result_bytes``:
    the largest pickled task and result (a chunk of items, when chunked;
    a chunk too large is split). ``window``: most tasks in flight.

    As a context manager, a normal exit is ``close()`` then ``join()``
    (every submitted task finishes, like ``concurrent.futures``); an exit
    by an exception (``KeyboardInterrupt`` included) is ``terminate()``.
    """

    def __init__(
        self,
        processes=None,
        initializer=None,
        initargs=(),
        maxtasksperchild=None,
        *,
        max_attempts=3,
        max_task_bytes=1 << 16,
        max_result_bytes=1 << 16,
        window=1024,
        backend=None,
    ):
        if maxtasksperchild is not None:
            raise ValueError("maxtasksperchild is not supported by mulproc.Pool")
        if processes is None:
            processes = os.cpu_count() or 1
        if not isinstance(processes, int) or processes < 1:
            raise ValueError("Number of processes must be at least 1")
        if initializer is not None and not callable(initializer):
            raise TypeError("initializer must be a callable")
        if backend is not None and not isinstance(backend, str):
            raise TypeError(f"backend must be None, 'shm' or a Redis URL string, not {type(backend).__name__}")
        name = f"py-{os.getpid()}-{next(_counter)}"
        config = {"sys_path": list(sys.path)}
        self._backend_env = None
        if backend is not None and backend != "shm":
            # The URL may carry a password: to the workers through the
            # environment (readable by this user only), not argv.
            self._backend_env = f"MULPROC_PY_POOL_BACKEND_{name.replace('-', '_')}"
            config["backend_env"] = self._backend_env
            config["pool"] = {
                "name": name,
                "max_task_bytes": max_task_bytes,
                "max_result_bytes": max_result_bytes,
            }
            os.environ[self._backend_env] = backend
        main = sys.modules.get("__main__")
        main_path = getattr(main, "__file__", None)
        if main_path and not getattr(sys.flags, "interactive", 0):
            config["main_path"] = os.path.abspath(main_path)
        if initializer is not None:
            config["initializer"] = self._dumps((initializer, tuple(initargs)), initializer).hex()
        self._processes = processes
        self._window = window
        self._lock = threading.RLock()
        self._tasks = {}
        self._fblobs = {}
        self._futures_pending = 0
        self._driver = None
        self._state = "run"
        try:
            self._core = _PoolCore(
                processes,
                sys.executable,
                ["-c", _BOOTSTRAP, json.dumps(config)],
                window=window,
                max_attempts=max_attempts,
                max_task_bytes=max_task_bytes,
                max_result_bytes=max_result_bytes,
                name=name,
                backend=backend,
            )
        except BaseException as e:
            self._forget_backend()
            if not isinstance(e, RuntimeError) or "before they are ready" not in str(e):
                raise
            raise RuntimeError(
                f"mulproc.Pool: the worker processes ({sys.executable}) exit before they are "
                "ready; their stderr above says why (often the main script fails when the "
                "workers load it as __mp_main__: keep its work under "
                f'if __name__ == "__main__":) [{e}]'
            ) from None

    # ---------------------------------------------------------- plumbing --

    def _forget_backend(self):
        """Removes the backend URL from the environment (the pool is done)."""
        key, self._backend_env = getattr(self, "_backend_env", None), None
        if key is not None:
            try:
                os.environ.pop(key, None)
            except Exception:  # noqa: BLE001 - at interpreter exit, from __del__
                pass

    @staticmethod
    def _dumps(obj, func):
        try:
            return pickle.dumps(obj, _PROTOCOL)
        except (pickle.PicklingError, AttributeError, TypeError) as e:
            try:
                pickle.dumps(func, _PROTOCOL)
            except Exception:
                raise pickle.PicklingError(
                    f"cannot send {func!r} to a worker process: functions are pickled by "
                    "reference (module and name), so it must be defined at the top level "
                    f"of an importable module, not a lambda or a nested function ({e})"
                ) from e
            raise

    def _check_running(self):
        if self._state != "run":
            raise ValueError("Pool not running")

    def _submit(self, task):
        """Pickles and submits one task (splitting a chunk too large)."""
        # Pickled in Rust for built-in types (about twice pickle.dumps's
        # speed on a chunk of small tuples), the pickle module otherwise,
        # straight into the task's buffer.
        message = (task.fblob, task.kind, task.items)
        with self._lock:
            tid = self._core.submit_pickled(message)
            if tid is None:
                if len(task.items) > 1:
                    half = len(task.items) // 2
                    self._submit(task.part(0, half))
                    self._submit(task.part(half, len(task.items)))
                    return
                # One item too large: submit raises the pool's error.
                tid = self._core.submit(_dumps(message))
            self._tasks[tid] = task

    def _drive(self, timeout, items=None):
        """Takes the results there (waiting up to ``timeout`` seconds for
        the first) and hands them to their sinks; with ``items``, stops
        once results for that many items were taken."""
        with self._lock:
            if self._core.closed:
                return
            got = self._core.take(timeout)
            taken = 0
            while got is not None:
                taken += self._dispatch(*got)
                if items is not None and taken >= items:
                    return
                got = self._core.take(0)

    def _dispatch(self, tid, kind, payload):
        """Hands one result to its task's sink; returns the task's items."""
        task = self._tasks.pop(tid, None)
        if task is None:
            return 0
        n = len(task.items)
        if kind == _OK:
            answer = payload  # unpickled by _PoolCore.take
            if answer[0] == "ok":
                _, values, errors = answer
                if errors:
                    errors = {j: _reraise(*e) for j, e in errors.items()}
                task.sink.put(task.start, values, errors)
                return n
            err = RuntimeError(answer[1])
        elif kind in (_KILLED, _TOO_LARGE) and n > 1:
            # One item of the chunk may be the culprit: run each alone.
            for i in range(n):
                self._submit(task.part(i, i + 1))
            return 0
        elif kind == _UNREADABLE:
            err = payload
        elif kind == _KILLED:
            err = WorkerLost(f"{payload}; the task was {_describe(task)}")
        elif kind == _TOO_LARGE:
            err = ValueError(f"{payload} (raise the Pool's max_result_bytes)")
        else:
            err = RuntimeError(payload)
        task.sink.put(task.start, [None] * n, dict.fromkeys(range(n), err))
        return n

    # ---------------------------------------------------------------- maps --

    def _auto_chunk(self, iterable):
        try:
            n = len(iterable)
        except TypeError:
            return _AUTO_UNSIZED
        return max(1, min(_AUTO_MAX, -(-n // (self._processes * 4))))

    def _imap(self, func, iterable, chunksize, ordered, kind=0):
        self._check_running()
        if chunksize is None:
            chunksize = self._auto_chunk(iterable)
        elif not isinstance(chunksize, int) or chunksize < 1:
            raise ValueError(f"chunksize must be a positive int, not {chunksize!r}")
        # Pickle the function now, so that a lambda fails at the call.
        fblob = self._dumps(func, func)
        # The items are handed out by chain's C loop over each chunk's
        # list; the generator runs once per chunk, not once per item.
        return itertools.chain.from_iterable(
            self._imap_chunks(func, fblob, _chunks(iterable, chunksize), chunksize, ordered, kind)
        )

    def _imap_chunks(self, func, fblob, items, chunksize, ordered, kind):
        """The map's results, chunk after chunk (lists); raises a failed
        item's exception after yielding the items before it."""
        sink = _Sink(ordered)
        limit = self._window * chunksize
        index = 0
        more = True
        try:
            while True:
                while more and sink.outstanding < limit:
                    chunk = next(items, None)
                    if chunk is None:
                        more = False
                        break
                    self._submit(_Task(func, fblob, kind, chunk, sink, index))
                    index += len(chunk)
                    sink.outstanding += len(chunk)
                    if len(self._tasks) >= self._window:
                        break
                r = sink.pop()
                while r is not None:
                    values, errors = r
                    if errors:
                        first = min(errors)
                        yield values[:first]
                        raise errors[first]
                    yield values
                    r = sink.pop()
                if not more and sink.outstanding == 0:
                    return
                if self._core.closed:
                    raise WorkerLost("the pool was terminated before the map finished")
                self._drive(_SLICE, _TAKE_ITEMS)
        finally:
            # Results of this map still in flight are dropped when they come.
            for tid, t in list(self._tasks.items()):
                if t.sink is sink:
                    t.sink = _Sink(False)

    def map(self, func, iterable, chunksize=None):
        """``[func(x) for x in iterable]``, computed by the workers; raises
        the first failed item's exception. ``chunksize=None``: the pool
        batches (up to 256 items per task)."""
        if not hasattr(iterable, "__len__"):
            iterable = list(iterable)  # as multiprocessing: sized, for the chunking
        return list(self._imap(func, iterable, chunksize, True))

    def starmap(self, func, iterable, chunksize=None):
        """``map`` calling ``func(*args)`` for each ``args``."""
        items = [(tuple(a), {}) for a in iterable]
        return list(self._imap(func, items, chunksize, True, kind=1))

    def imap(self, func, iterable, chunksize=None):
        """Results in input order as they come (streaming: inputs are read
        as the window allows). ``chunksize=None`` lets the pool batch (up
        to 256 items per task for a sized iterable, 64 otherwise)."""
        return self._imap(func, iterable, chunksize, True)

    def imap_unordered(self, func, iterable, chunksize=None):
        """Like ``imap``, results in the order they finish."""
        return self._imap(func, iterable, chunksize, False)

    # ------------------------------------------------------------- futures --

    def apply_async(self, func, args=(), kwds=None, callback=None, error_callback=None):
        """Submits ``func(*args, **kwds)``; returns a ``PoolFuture``."""
        self._check_running()
        fut = PoolFuture(self)
        fut.set_running_or_notify_cancel()
        sink = _FutureSink(self, fut, callback, error_callback)
        try:
            fblob = self._fblobs[func]
        except (KeyError, TypeError):
            fblob = self._dumps(func, func)
            try:
                if len(self._fblobs) >= 64:
                    self._fblobs.clear()
                self._fblobs[func] = fblob
            except TypeError:
                pass  # not hashable: pickled each time
        with self._lock:
            self._submit(_Task(func, fblob, 1, [(tuple(args), dict(kwds or {}))], sink, 0))
            self._futures_pending += 1
            if self._driver is None:
                self._driver = threading.Thread(
                    target=self._drive_futures, name="mulproc-pool-results", daemon=True
                )
                self._driver.start()
        return fut

    def _drive_futures(self):
        """The result thread, while futures are pending: completes them
        (and runs their callbacks) without anyone waiting on them."""
        try:
            while True:
                with self._lock:
                    if self._futures_pending <= 0 or self._core.closed:
                        self._driver = None
                        return
                self._drive(_SLICE)
        except BaseException:
            with self._lock:
                self._driver = None
            raise

    def submit(self, func, *args, **kwargs):
        """``concurrent.futures`` style: ``func(*args, **kwargs)``."""
        return self.apply_async(func, args, kwargs)

    def apply(self, func, args=(), kwds=None):
        """``func(*args, **kwds)`` in a worker, waiting for the result."""
        return self.apply_async(func, args, kwds).result()

    # ------------------------------------------------------------ lifetime --

    def worker_pids(self):
        """The pids of the worker processes now."""
        # Under the pool's lock, as every call on the core: a thread
        # driving the pool holds it for one slice of a wait at most.
        with self._lock:
            return self._core.worker_pids()

    def stats(self):
        """The Rust pool's counters (submitted, succeeded, failed, retried,
        restarted, duplicates), in tasks (chunks)."""
        with self._lock:
            return self._core.stats()

    def close(self):
        """No more tasks; ``join()`` then waits for those submitted."""
        if self._state == "run":
            self._state = "close"

    def terminate(self):
        """Kills the workers now; unfinished futures fail with
        ``WorkerLost``."""
        self._state = "terminate"
        with self._lock:
            self._core.kill()
            self._forget_backend()
            tasks, self._tasks = self._tasks, {}
            self._futures_pending = 0
        err = WorkerLost("the pool was terminated before the task finished")
        for t in tasks.values():
            if isinstance(t.sink, _FutureSink) and not concurrent.futures.Future.done(t.sink.future):
                t.sink.future.set_exception(err)

    def join(self):
        """Waits for every submitted task, then stops the workers (after
        ``close()`` or ``terminate()``)."""
        if self._state == "run":
            raise ValueError("Pool is still running")
        if self._state == "terminate" or self._core.closed:
            return
        while self._tasks:
            self._drive(_SLICE)
        with self._lock:
            try:
                self._core.shutdown()
            finally:
                self._forget_backend()

    def __enter__(self):
        self._check_running()
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
            self.join()
        else:
            self.terminate()

    def __del__(self):
        core = getattr(self, "_core", None)
        if core is not None and not core.closed:
            try:
                core.kill()
            except Exception:
                pass
        self._forget_backend()

    def __repr__(self):
        return f"<mulproc.Pool state={self._state} processes={self._processes}>"


def _chunks(iterable, n):
    """The items of ``iterable``, ``n`` at a time (lists, or slices of a
    list or tuple: read as the map goes, so that changes to it made
    before a chunk is read show in it, as with an iterator)."""
    if type(iterable) in (list, tuple):
        i = 0
        while True:
            chunk = iterable[i : i + n]
            if not chunk:
                return
            yield chunk
            i += n
    it = iter(iterable)
    while True:
        chunk = list(itertools.islice(it, n))
        if not chunk:
            return
        yield chunk


def _describe(task):
    name = getattr(task.func, "__qualname__", repr(task.func))
    item = task.items[0]
    if task.kind == 1:
        args, kwds = item
        shown = ", ".join([repr(a) for a in args] + [f"{k}={v!r}" for k, v in kwds.items()])
    else:
        shown = repr(item)
    if len(shown) > 200:
        shown = shown[:200] + "..."
    return f"{name}({shown})"
