"""Handles crossing process boundaries: as arguments of
multiprocessing.Process under fork, spawn and forkserver, pickled inside
messages, and inherited across a bare os.fork()."""

import gc
import multiprocessing as mp
import os
import queue
import signal
import time

import pytest

import mulproc
from workers import echo_worker, handle_in_message_worker, square_worker

METHODS = ["fork", "spawn", "forkserver"]


@pytest.mark.parametrize("method", METHODS)
def test_queue_handles_as_process_arguments(method):
    ctx = mp.get_context(method)
    tasks = mulproc.Queue(64, 256)
    results = mulproc.Queue(64, 256)
    workers = [ctx.Process(target=square_worker, args=(tasks, results)) for _ in range(2)]
    for w in workers:
        w.start()
    try:
        for i in range(40):
            tasks.put(i)
        for _ in workers:
            tasks.put(None)
        assert tasks.join(timeout=60), "workers did not finish the tasks"
        got = [results.get(timeout=10) for _ in range(40)]
        assert sorted((x, sq) for x, sq, _ in got) == [(i, i * i) for i in range(40)]
        assert {pid for _, _, pid in got} <= {w.pid for w in workers}
        with pytest.raises(queue.Empty):
            results.get(timeout=0.05)
    finally:
        for w in workers:
            w.join(30)
            if w.is_alive():
                w.kill()
    assert all(w.exitcode == 0 for w in workers)


@pytest.mark.parametrize("method", METHODS)
def test_pipe_connection_as_process_argument(method):
    ctx = mp.get_context(method)
    parent, child = mulproc.Pipe()
    p = ctx.Process(target=echo_worker, args=(child,))
    p.start()
    try:
        for obj in ([1, 2], {"k": "v"}, b"\x00" * 1000):
            parent.send(obj)
            kind, back, pid = parent.recv()
            assert (kind, back, pid) == ("echo", obj, p.pid)
        parent.send(None)
        assert parent.recv() == "bye"
        # The child exits; not joined yet it is a zombie, which holds
        # nothing: end of file all the same.
        assert parent.poll(10)
        with pytest.raises(EOFError):
            parent.recv()
        with pytest.raises(EOFError):
            parent.recv_bytes()
    finally:
        p.join(30)
        if p.is_alive():
            p.kill()
    assert p.exitcode == 0


@pytest.mark.parametrize("method", METHODS)
def test_handle_pickled_inside_a_message(method):
    ctx = mp.get_context(method)
    carrier = mulproc.Queue(8, 1024)
    replies = mulproc.Queue(8, 1024)
    p = ctx.Process(target=handle_in_message_worker, args=(carrier,))
    p.start()
    try:
        carrier.put((replies, "token-1"))  # the handle is pickled into the slot
        assert replies.get(timeout=30) == ("got", "token-1", p.pid)
        assert carrier.join(timeout=30)
    finally:
        p.join(30)
    assert p.exitcode == 0


def _run_forked(child):
    """Runs `child()` in a bare os.fork() child; returns its exit status."""
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child()
            code = 0
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_fork_child_reopens_and_leaves_the_parents_handle_alone():
    q = mulproc.Queue(8, 256)
    q.put("first")
    assert q.get() == "first"  # the parent's handle now owes one task_done

    def child():
        assert q.pid == os.getpid()  # reopened: this process's own handle
        q.put("from child")
        q.close()  # drops nothing inherited
        q2 = mulproc.Queue.open(q.name)
        assert q2.qsize() >= 1
        del q2
        gc.collect()

    assert _run_forked(child) == 0
    assert q.pid == os.getpid()
    # Had the child dropped the inherited handle, the parent's entry would
    # be deregistered and its task counted abandoned: this would raise.
    q.task_done()
    assert q.get(timeout=5) == "from child"
    q.task_done()
    assert q.join(timeout=5)


def test_fork_child_does_not_free_the_parents_held_slot():
    q = mulproc.Queue(4, 64)
    q.put_bytes(b"held by the parent")
    b = q.get_buffer()
    mv = memoryview(b)

    def child():
        assert bytes(b) == b"held by the parent"  # readable: the mapping is there
        mv.release()
        b.release()  # not ours: does nothing to the parent's slot
        q.put_bytes(b"child")

    assert _run_forked(child) == 0
    assert mv.tobytes() == b"held by the parent"
    mv.release()
    b.release()  # would report a slot taken over if the child had freed it
    assert q.get_bytes(timeout=5) == b"child"
    assert q.empty()


def test_fork_pipe_child_end_taken_in_child_parent_end_refused():
    a, b = mulproc.Pipe()
    a.send("hello")  # the parent end is the creator's

    def child():
        assert b.recv() == "hello"
        b.send("hi parent")
        try:
            a.send("x")
        except OSError as e:
            assert "cannot be used in another process" in str(e)
        else:
            raise AssertionError("the parent end worked in a child")

    assert _run_forked(child) == 0
    assert a.recv() == "hi parent"
    assert a.poll(5)  # the child exited: end of file
    with pytest.raises(EOFError):
        a.recv()


def test_killed_peer_gives_eof():
    ctx = mp.get_context("fork")
    a, b = mulproc.Pipe()
    p = ctx.Process(target=echo_worker, args=(b,))
    p.start()
    a.send(1)
    assert a.recv()[0] == "echo"
    os.kill(p.pid, signal.SIGKILL)
    start = time.monotonic()
    with pytest.raises(EOFError):
        a.recv()
    assert time.monotonic() - start < 5
    p.join()
