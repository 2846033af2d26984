"""Shared fixtures: unique names, and a check that every test removes the
shared-memory names it made (``/dev/shm/mulproc.*``)."""

import gc
import itertools
import os

import pytest

SHM = "/dev/shm"
# Names made by these tests: generated ones (``py-<pid>-...``,
# ``pypipe-<pid>-...``) and the ``t-<pid>-...`` names of ``unique_name``.
PREFIXES = ("mulproc.py-", "mulproc.pypipe-", "mulproc.t-")
_counter = itertools.count()


def _creator_pid(name):
    """The pid a generated name carries (``<prefix><pid>-...``), or None."""
    for prefix in PREFIXES:
        if name.startswith(prefix):
            head = name[len(prefix):].split("-", 1)[0]
            return int(head) if head.isdigit() else None
    return None


def _is_this_run(pid):
    """Made by this process, or by one that has exited (our children are
    gone by the time a test ends): not by another test run that is still
    going on this machine, whose segments are its own business."""
    if pid is None or pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _ours():
    try:
        names = os.listdir(SHM)
    except FileNotFoundError:
        return set()
    return {n for n in names if n.startswith(PREFIXES)}


@pytest.fixture
def unique_name():
    """A name no other test run uses: ``t-<pid>-<n>``."""
    return f"t-{os.getpid()}-{next(_counter)}"


@pytest.fixture(autouse=True)
def no_leftover_segments():
    """Fails a test that leaves a segment behind (and removes it)."""
    before = _ours()
    yield
    gc.collect()
    left = {n for n in _ours() - before if _is_this_run(_creator_pid(n))}
    for n in left:
        try:
            os.unlink(os.path.join(SHM, n))
        except FileNotFoundError:
            pass
    assert not left, f"segments left behind: {sorted(left)}"
