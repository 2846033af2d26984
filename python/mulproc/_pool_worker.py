"""The worker process of ``mulproc.Pool``.

Started by the pool as ``sys.executable -c <bootstrap> <json config>``
(see ``mulproc.pool``): it takes the parent's ``sys.path``, loads the
parent's main script as ``__mp_main__`` (as multiprocessing's spawn does,
so that functions defined in it unpickle), runs the initializer, then
hands the Rust worker loop a ``bytes -> bytes`` handler and never returns.

A task is ``pickle.dumps((pickle.dumps(func), kind, items))`` (the
function pickled apart, so each worker unpickles it once): ``kind`` 0 calls
``func(x)`` for each ``x`` of ``items``, kind 1 ``func(*args, **kwds)``
for each ``(args, kwds)``. The answer is
``pickle.dumps(("ok", values, errors))``: one value per item (``None``
for a failed one) and ``{index: (exception or None, traceback_text)}``
for the failed ones; or ``("error", message)`` when the task itself
cannot be read.
"""

import os
import pickle
import signal
import sys
import traceback

from ._mulproc import _dumps, _serve_pool_worker

_PROTOCOL = pickle.HIGHEST_PROTOCOL


def _failure(exc):
    """An item's failure: the exception (if it pickles) and its traceback."""
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        pickle.dumps(exc, _PROTOCOL)
        return (exc, tb)
    except Exception:
        return (None, f"{type(exc).__name__}: {exc}\n{tb}")


_funcs = {}


def _run(data):
    try:
        fblob, kind, items = pickle.loads(data)
        func = _funcs.get(fblob)
        if func is None:
            if len(_funcs) >= 256:
                _funcs.clear()
            func = _funcs[fblob] = pickle.loads(fblob)
    except BaseException as e:  # noqa: BLE001 - every failure is reported
        return pickle.dumps(
            ("error", f"cannot unpickle the task in the worker: {type(e).__name__}: {e}"),
            _PROTOCOL,
        )
    values = []
    errors = {}
    it = iter(items)
    while True:
        # One try around the whole loop (free until an exception); after
        # one, the loop goes on with the next item. Kind 0 runs in C
        # (list.extend over map, as multiprocessing's mapstar does); what
        # it produced before an exception stays in `values`.
        try:
            if kind == 0:
                values.extend(map(func, it))
            else:
                append = values.append
                for args, kwds in it:
                    append(func(*args, **kwds))
            break
        except BaseException as e:  # noqa: BLE001
            errors[len(values)] = _failure(e)
            values.append(None)
    try:
        return _dumps(("ok", values, errors))
    except Exception:
        # Some value does not pickle: that item fails, the others stand.
        for j, v in enumerate(values):
            try:
                pickle.dumps(v, _PROTOCOL)
            except Exception as e:  # noqa: BLE001
                values[j] = None
                err = pickle.PicklingError(
                    f"the task's result cannot be pickled to send it back: {e}"
                )
                errors[j] = _failure(err)
        return pickle.dumps(("ok", values, errors), _PROTOCOL)


def _load_main(path):
    import runpy
    import types

    mod = types.ModuleType("__mp_main__")
    sys.modules["__mp_main__"] = mod
    sys.modules["__main__"] = mod
    code = runpy.run_path(path, run_name="__mp_main__")
    mod.__dict__.update(code)


def main(config):
    """Runs the worker loop; exits the process."""
    # Ctrl-C goes to the whole process group: the parent decides (it
    # terminates the pool); a task is never cut by KeyboardInterrupt.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    main_path = config.get("main_path")
    if main_path:
        _load_main(main_path)
    init = config.get("initializer")
    if init:
        func, args = pickle.loads(bytes.fromhex(init))
        func(*args)
    key = config.get("backend_env")
    if key is None:
        _serve_pool_worker(_run)
    else:
        pool = config["pool"]
        _serve_pool_worker(
            _run,
            backend=os.environ[key],
            name=pool["name"],
            max_task_bytes=pool["max_task_bytes"],
            max_result_bytes=pool["max_result_bytes"],
        )
