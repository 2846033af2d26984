"""mulproc.Queue in one process: multiprocessing's queue behaviour that
applies (order, timeouts, Full/Empty, task_done/join), serializers,
zero-copy buffers and errors."""

import gc
import os
import pickle
import queue
import threading
import time

import pytest

import mulproc


def test_put_get_order_and_sizes():
    q = mulproc.Queue(16, 1024)
    for i in range(10):
        q.put(("item", i))
    assert q.qsize() == 10
    assert not q.empty() and not q.full()
    assert [q.get() for _ in range(10)] == [("item", i) for i in range(10)]
    assert q.empty()
    assert q.capacity == q.maxsize == 16 and q.max_size == 1024


def test_get_nowait_and_timeout_raise_empty():
    q = mulproc.Queue(4, 64)
    with pytest.raises(queue.Empty):
        q.get_nowait()
    with pytest.raises(queue.Empty):
        q.get(False)
    start = time.monotonic()
    with pytest.raises(queue.Empty):
        q.get(timeout=0.2)
    took = time.monotonic() - start
    assert 0.19 <= took < 1.0, took
    # multiprocessing treats a negative timeout as 0.
    with pytest.raises(queue.Empty):
        q.get(timeout=-1)


def test_put_nowait_and_timeout_raise_full():
    q = mulproc.Queue(2, 64)
    q.put(1)
    q.put_nowait(2)
    assert q.full()
    with pytest.raises(queue.Full):
        q.put_nowait(3)
    with pytest.raises(queue.Full):
        q.put(3, False)
    start = time.monotonic()
    with pytest.raises(queue.Full):
        q.put(3, timeout=0.2)
    took = time.monotonic() - start
    assert 0.19 <= took < 1.0, took
    assert [q.get(), q.get()] == [1, 2]


def test_blocking_put_waits_for_a_get_in_another_thread():
    q = mulproc.Queue(2, 64)
    q.put(1)
    q.put(2)
    t = threading.Timer(0.1, q.get)
    t.start()
    start = time.monotonic()
    q.put(3, timeout=5)  # the GIL is released while it waits
    assert time.monotonic() - start >= 0.09
    t.join()
    assert [q.get(), q.get()] == [2, 3]


def test_blocking_get_releases_the_gil():
    q = mulproc.Queue(4, 64)
    counter = [0]
    stop = threading.Event()

    def spin():
        while not stop.is_set():
            counter[0] += 1

    t = threading.Thread(target=spin)
    t.start()
    try:
        with pytest.raises(queue.Empty):
            q.get(timeout=0.3)
        # The other thread ran meanwhile: a wait that kept the GIL would
        # not have let it run at all.
        assert counter[0] > 1000
    finally:
        stop.set()
        t.join()


def test_task_done_too_many_times_raises_value_error():
    q = mulproc.Queue(4, 64)
    with pytest.raises(ValueError, match="task_done"):
        q.task_done()
    q.put("a")
    q.get()
    q.task_done()
    with pytest.raises(ValueError, match="task_done"):
        q.task_done()


def test_join_waits_for_task_done():
    q = mulproc.Queue(8, 64)
    for i in range(3):
        q.put(i)
    assert q.join(timeout=0.05) is False
    done = []

    def worker():
        for _ in range(3):
            done.append(q.get())
            time.sleep(0.02)
            q.task_done()

    t = threading.Thread(target=worker)
    t.start()
    q.join()
    assert done == [0, 1, 2]
    t.join()
    assert q.join(timeout=0) is True


def test_close_then_use_raises_value_error_and_keeps_the_name():
    q = mulproc.Queue(4, 64)
    q.put(1)
    q.close()
    q.close()  # twice is fine
    assert q.closed
    for call in (lambda: q.put(2), q.get, q.qsize, q.task_done):
        with pytest.raises(ValueError, match="closed"):
            call()
    # The name stays while the creating object lives: others still open it.
    other = mulproc.Queue.open(q.name)
    assert other.get_nowait() == 1
    q.join_thread()
    q.cancel_join_thread()


def test_unlink_removes_the_name_now():
    q = mulproc.Queue(4, 64)
    assert os.path.exists(f"/dev/shm/mulproc.{q.name}")
    q.unlink()
    assert not os.path.exists(f"/dev/shm/mulproc.{q.name}")
    q.put(1)  # this handle still works
    assert q.get() == 1
    with pytest.raises(FileNotFoundError):
        mulproc.Queue.open(q.name)


def test_name_removed_when_creating_object_is_collected():
    q = mulproc.Queue(4, 64)
    name = q.name
    del q
    gc.collect()
    assert not os.path.exists(f"/dev/shm/mulproc.{name}")


def test_oversized_message_says_its_size_and_the_limit():
    q = mulproc.Queue(4, 100)
    with pytest.raises(ValueError, match=r"of 101 bytes exceeds the max_size .* \(100 bytes\)"):
        q.put_bytes(b"x" * 101)
    with pytest.raises(ValueError, match="exceeds the max_size"):
        q.put("y" * 200)
    q.put_bytes(b"x" * 100)
    assert q.get_bytes() == b"x" * 100


def test_serializers_and_raw_bytes():
    qj = mulproc.Queue(8, 256, serializer="json")
    qj.put({"a": [1, 2.5, None, "é"]})
    assert qj.get() == {"a": [1, 2.5, None, "é"]}
    with pytest.raises(TypeError):
        qj.put(object())  # not JSON data
    qj.put_bytes(b'{"raw": true}')
    assert qj.get() == {"raw": True}

    qb = mulproc.Queue(8, 256, serializer="bytes")
    qb.put(b"abc")
    qb.put(bytearray(b"def"))
    qb.put(memoryview(b"ghi"))
    assert [qb.get(), qb.get(), qb.get()] == [b"abc", b"def", b"ghi"]
    with pytest.raises(TypeError, match="bytes-like"):
        qb.put("not bytes")

    qp = mulproc.Queue(8, 256)
    qp.put_bytes(b"\x00\xff")
    assert qp.get_bytes() == b"\x00\xff"
    with pytest.raises(ValueError, match="serializer"):
        mulproc.Queue(8, 256, serializer="yaml")


def test_group_shared_queue_defaults_to_json():
    q = mulproc.Queue(4, 64, share_with_group=True)
    assert q.serializer == "json"
    assert mulproc.Queue.open(q.name).serializer == "json"
    assert mulproc.Queue(4, 64, share_with_group=True, serializer="pickle").serializer == "pickle"


def test_put_message_and_get_message_with_header_and_where():
    q = mulproc.Queue(8, 64)
    me = os.getpid()
    q.put_message(b"for 111", request=100, recipient=111)
    q.put_message(b"for me", request=101, recipient=me, sender=42)
    assert q.get_message(where=lambda r, s, rc, d: rc == me) == (101, 42, me, b"for me")
    assert q.get_message(block=False) == (100, me, 111, b"for 111")
    with pytest.raises(queue.Empty):
        q.get_message(block=False, where=lambda *m: True)
    q.put_message(b"z")
    with pytest.raises(ZeroDivisionError):
        q.get_message(block=False, where=lambda *m: 1 / 0)
    assert q.get_message(timeout=1, where=lambda *m: True)[3] == b"z"
    for bad in (-1, 0, 2**32):
        with pytest.raises(ValueError, match="recipient"):
            q.put_message(b"", recipient=bad)
    with pytest.raises(ValueError, match="request code"):
        q.put_message(b"", request=-5)


def test_blocking_selective_get_wakes_on_matching_message():
    q = mulproc.Queue(8, 64)
    q.put_message(b"not this", request=5)
    threading.Timer(0.1, lambda: q.put_message(b"this", request=6)).start()
    start = time.monotonic()
    m = q.get_message(timeout=5, where=lambda r, *_: r == 6)
    assert m[3] == b"this" and time.monotonic() - start < 4
    assert q.get_message(block=False)[3] == b"not this"


def test_buffer_is_zero_copy_and_holds_the_slot():
    q = mulproc.Queue(4, 64)
    q.put_bytes(b"hello world")
    q.put_bytes(b"second")
    b = q.get_buffer()
    assert isinstance(b, mulproc.Buffer)
    assert len(b) == 11 and bytes(b) == b"hello world"
    assert b.request == mulproc.REQUEST_DO and b.sender == os.getpid() and b.recipient is None
    assert q.qsize() == 2  # held in place: the slot is still in use
    mv = memoryview(b)
    assert mv.readonly and mv.nbytes == 11 and mv[:5] == b"hello"
    with pytest.raises(BufferError):
        b.release()  # a memoryview still uses it
    with pytest.raises(TypeError):
        mv[0] = 1  # read-only
    mv.release()
    b.release()
    b.release()  # twice is fine
    assert b.released
    with pytest.raises(BufferError):
        memoryview(b)
    assert q.qsize() == 1
    with q.get_buffer() as b2:
        with memoryview(b2) as mv2:
            assert mv2.tobytes() == b"second"
    assert b2.released and q.empty()


def test_buffer_dropped_without_release_frees_the_slot():
    q = mulproc.Queue(2, 64)
    q.put_bytes(b"a")
    b = q.get_buffer()
    del b
    gc.collect()
    assert q.empty()


def test_pickled_handle_in_same_process_opens_by_name():
    q = mulproc.Queue(4, 64, serializer="json")
    q2 = pickle.loads(pickle.dumps(q))
    assert q2.name == q.name and q2.serializer == "json"
    q.put([1])
    assert q2.get() == [1]


def test_open_errors(unique_name):
    with pytest.raises(FileNotFoundError, match=unique_name):
        mulproc.Queue.open(unique_name)
    q = mulproc.Queue(4, 64, name=unique_name)
    with pytest.raises(FileExistsError, match="already exists"):
        mulproc.Queue(4, 64, name=unique_name)
    a, b = mulproc.Pipe()
    with pytest.raises(ValueError, match="is a Pipe, not a Queue"):
        mulproc.Queue.open(a.name)
    del q


def test_bad_arguments():
    for bad in (7, 1, 0, -4, 2**40):
        with pytest.raises(ValueError, match="capacity"):
            mulproc.Queue(bad, 64)
    with pytest.raises(ValueError, match="max_size|max payload"):
        mulproc.Queue(4, -1)
    with pytest.raises(ValueError, match="max payload"):
        mulproc.Queue(4, 2**30)
    for bad in ("", "a/b", ".hidden", "x" * 300, "sp ace"):
        with pytest.raises(ValueError, match="invalid queue name"):
            mulproc.Queue(4, 64, name=bad)
    with pytest.raises(TypeError):
        mulproc.Queue("four", 64)
    q = mulproc.Queue(4, 64)
    with pytest.raises(TypeError):
        q.get(timeout="soon")
    with pytest.raises(ValueError, match="NaN"):
        q.get(timeout=float("nan"))
    with pytest.raises(TypeError):
        q.put_bytes(12)
    with pytest.raises(ValueError, match="on_stale"):
        mulproc.Queue(4, 64, on_stale="maybe")


def test_segment_of_another_user_raises_permission_error(unique_name):
    if os.geteuid() != 0:
        pytest.skip("needs root to make a segment owned by another user")
    q = mulproc.Queue(4, 64, name=unique_name)
    path = f"/dev/shm/mulproc.{unique_name}"
    os.chown(path, 65534, 65534)
    try:
        with pytest.raises(PermissionError, match="owned by uid 65534"):
            mulproc.Queue.open(unique_name)
    finally:
        os.chown(path, 0, 0)
    del q


def test_repr_and_attributes():
    q = mulproc.Queue(4, 64)
    assert q.name in repr(q) and "capacity=4" in repr(q)
    assert q.pid == os.getpid()
    assert q.serializer == "pickle"
