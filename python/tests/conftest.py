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


def _ours():
    try:
        return {n for n in os.listdir(SHM) if n.startswith(PREFIXES)}
    except FileNotFoundError:
        return set()


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
    left = _ours() - before
    for n in left:
        try:
            os.unlink(os.path.join(SHM, n))
        except FileNotFoundError:
            pass
    assert not left, f"segments left behind: {sorted(left)}"
