"""mulproc: named shared-memory queues and pipes between processes.

``Queue`` is duck-compatible with ``multiprocessing.JoinableQueue``,
``Pipe()`` with ``multiprocessing.Pipe()``, ``Pool`` with
``multiprocessing.Pool`` (over the Rust worker pool); ``mulproc.pymulproc`` is
pymulproc 0.1.2's API on top of them. Handles pass to other processes the
way multiprocessing's do: as arguments of ``multiprocessing.Process``
under fork, spawn and forkserver (they pickle as their name and reopen).
"""

import multiprocessing.util as _mp_util

from ._mulproc import (
    MAX_CAPACITY,
    MAX_NAME_LEN,
    MAX_PAYLOAD,
    MIN_CAPACITY,
    REQUEST_DIE,
    REQUEST_DO,
    REQUEST_FINISHED,
    Buffer,
    Connection,
    Pipe,
    Queue,
    _remove_owned,
)
from .pool import Pool, PoolFuture, WorkerLost

__all__ = [
    "Queue",
    "Pool",
    "PoolFuture",
    "WorkerLost",
    "Pipe",
    "Connection",
    "Buffer",
    "MAX_CAPACITY",
    "MIN_CAPACITY",
    "MAX_PAYLOAD",
    "MAX_NAME_LEN",
    "REQUEST_DO",
    "REQUEST_FINISHED",
    "REQUEST_DIE",
]

__version__ = "0.1.0"

# Names this process created and still owns are removed at exit, after
# multiprocessing has joined the children (its exit function runs the
# finalizers of negative priority last), so a child that opens a queue by
# name late still finds it. Finalizers do not run in forked children.
_mp_util.Finalize(None, _remove_owned, exitpriority=-100)
