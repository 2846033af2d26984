"""mulproc.Pool: multiprocessing.Pool's interface over the Rust pool, with
real worker processes (fresh Python interpreters running
``mulproc._pool_worker``)."""

import concurrent.futures
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction

import pytest

import mulproc
from workers import (
    pool_add,
    pool_fail_on_3,
    pool_poison_13,
    pool_slow_pid,
    pool_sleep,
    pool_square,
    pool_unloadable_result,
    pool_unpicklable_result,
)

HERE = os.path.dirname(os.path.abspath(__file__))


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _pool_segments(pid):
    """The /dev/shm paths of a worker's pool (from its environment)."""
    with open(f"/proc/{pid}/environ", "rb") as f:
        env = dict(
            kv.split(b"=", 1) for kv in f.read().split(b"\0") if b"=" in kv
        )
    names = [v.decode() for k, v in env.items() if k.startswith(b"MULPROC_CHANNEL_")]
    return [f"/dev/shm/mulproc.{n}" for n in names]


def test_map_imap_imap_unordered_results_and_order():
    with mulproc.Pool(2) as pool:
        xs = list(range(1000))
        want = [x * x for x in xs]
        assert pool.map(pool_square, xs) == want
        assert pool.map(pool_square, xs, chunksize=1) == want
        assert pool.map(pool_square, tuple(xs), chunksize=7) == want
        assert pool.map(pool_square, []) == []
        assert list(pool.imap(pool_square, iter(xs))) == want
        assert list(pool.imap(pool_square, xs, chunksize=7)) == want
        got = list(pool.imap_unordered(pool_square, (x for x in xs), chunksize=1))
        assert sorted(got) == want
        assert sorted(pool.imap_unordered(pool_square, xs)) == want
        assert pool.starmap(pool_add, [(1, 2), (3, 4)]) == [3, 7]
        # Items and results of other types than the built-ins travel
        # through the pickle module both ways.
        halves = [Fraction(x, 2) for x in range(50)]
        assert pool.map(pool_square, halves, chunksize=8) == [h * h for h in halves]


def test_futures_submit_apply_async_callbacks():
    with mulproc.Pool(2) as pool:
        f = pool.submit(pool_add, 2, b=5)
        assert isinstance(f, concurrent.futures.Future)
        assert f.result(timeout=30) == 7
        assert f.done()
        got, errs = [], []
        fs = [
            pool.apply_async(pool_square, (i,), callback=got.append, error_callback=errs.append)
            for i in range(50)
        ]
        assert [f.get(30) for f in fs] == [i * i for i in range(50)]
        assert sorted(got) == [i * i for i in range(50)] and errs == []
        assert pool.apply(pool_add, (1, 1)) == 2
        slow = pool.submit(pool_sleep, 1.0)
        with pytest.raises(concurrent.futures.TimeoutError):
            slow.result(timeout=0.05)
        assert slow.result(timeout=30) == 1.0


def test_exception_in_func_comes_back_with_its_traceback():
    with mulproc.Pool(2) as pool:
        with pytest.raises(ValueError, match="no threes please") as info:
            pool.map(pool_fail_on_3, range(10))
        remote = str(info.value.__cause__)
        assert "Traceback" in remote and "pool_fail_on_3" in remote
        f = pool.submit(pool_fail_on_3, 3)
        assert isinstance(f.exception(timeout=30), ValueError)
        assert pool.submit(pool_fail_on_3, 4).result(30) == 4
        # imap raises at the failed item, after the ones before it.
        it = pool.imap(pool_fail_on_3, range(10), chunksize=1)
        assert [next(it) for _ in range(3)] == [0, 1, 2]
        with pytest.raises(ValueError):
            next(it)
        # Also inside a chunk: the items before the failed one first.
        for ordered in (pool.imap, pool.imap_unordered):
            it = ordered(pool_fail_on_3, range(6), chunksize=6)
            assert [next(it) for _ in range(3)] == [0, 1, 2]
            with pytest.raises(ValueError, match="no threes"):
                next(it)
        with pytest.raises(pickle.PicklingError, match="cannot be pickled"):
            pool.submit(pool_unpicklable_result, 1).result(30)


def test_result_that_does_not_unpickle_in_the_parent_fails_its_items():
    """An answer that pickles in the worker but raises when the parent
    unpickles it fails the items of its chunk with that exception; the
    other chunks and the pool go on."""
    with mulproc.Pool(2) as pool:
        with pytest.raises(LookupError, match="does not unpickle here"):
            pool.map(pool_unloadable_result, range(20), chunksize=4)
        with pytest.raises(LookupError, match="does not unpickle here"):
            pool.submit(pool_unloadable_result, 5).result(30)
        got = list(pool.imap(pool_unloadable_result, range(5), chunksize=1))
        assert got == [0, 1, 2, 3, 4]
        assert pool.map(pool_square, range(100)) == [x * x for x in range(100)]


def test_lambda_raises_pickling_error_at_submit():
    with mulproc.Pool(1) as pool:
        with pytest.raises(pickle.PicklingError, match="top level"):
            pool.submit(lambda x: x, 1)
        with pytest.raises(pickle.PicklingError, match="top level"):
            pool.imap(lambda x: x, [1])


def test_worker_sigkilled_during_imap_unordered_every_result_once():
    n = 600
    with mulproc.Pool(3) as pool:
        victims = pool.worker_pids()
        got = []
        for i, (x, pid) in enumerate(pool.imap_unordered(pool_slow_pid, range(n), chunksize=1)):
            got.append(x)
            if i in (50, 200):
                os.kill(victims[0 if i == 50 else 1], signal.SIGKILL)
        assert sorted(got) == list(range(n)), "every result exactly once"
        stats = pool.stats()
        assert stats["restarted"] >= 2
        assert not set(victims[:2]) & set(pool.worker_pids())


def test_poison_task_fails_with_worker_lost_and_the_rest_completes():
    with mulproc.Pool(2, max_attempts=2) as pool:
        fs = [pool.submit(pool_poison_13, i) for i in range(30)]
        for i, f in enumerate(fs):
            if i == 13:
                with pytest.raises(mulproc.WorkerLost, match="killed its worker 2 times") as e:
                    f.result(60)
                assert isinstance(e.value, RuntimeError)
                assert "pool_poison_13(13)" in str(e.value)
            else:
                assert f.result(60) == i * i
        # Chunked: the chunk holding 13 is split, only 13 fails.
        it = pool.imap(pool_poison_13, range(40), chunksize=10)
        assert [next(it) for _ in range(13)] == [i * i for i in range(13)]
        with pytest.raises(mulproc.WorkerLost):
            next(it)
        assert pool.map(pool_square, range(5)) == [0, 1, 4, 9, 16]


def test_context_manager_shutdown_leaves_no_process_and_no_segment():
    with mulproc.Pool(3) as pool:
        pids = pool.worker_pids()
        segments = _pool_segments(pids[0])
        assert len(segments) == 3 and all(os.path.exists(s) for s in segments)
        f = pool.submit(pool_sleep, 0.3)
    # A normal exit is close + join: the task submitted finished.
    assert f.result(0) == 0.3
    assert not any(_alive(p) for p in pids)
    assert not any(os.path.exists(s) for s in segments)
    with pytest.raises(ValueError, match="Pool not running"):
        pool.submit(pool_square, 1)


def test_terminate_close_join():
    pool = mulproc.Pool(2)
    with pytest.raises(ValueError, match="still running"):
        pool.join()
    pids = pool.worker_pids()
    segments = _pool_segments(pids[0])
    f = pool.submit(pool_sleep, 30)
    pool.terminate()
    pool.join()
    with pytest.raises(mulproc.WorkerLost, match="terminated"):
        f.result(1)
    assert not any(_alive(p) for p in pids)
    assert not any(os.path.exists(s) for s in segments)
    # An exception leaving the with block terminates.
    with pytest.raises(KeyError):
        with mulproc.Pool(1) as pool:
            pids = pool.worker_pids()
            raise KeyError("out")
    assert not any(_alive(p) for p in pids)


SCRIPT = textwrap.dedent(
    """
    import sys, time
    sys.path.insert(0, {here!r})
    import mulproc
    from workers import pool_sleep
    if __name__ == "__main__":
        with mulproc.Pool(2) as pool:
            print(" ".join(map(str, pool.worker_pids())), flush=True)
            try:
                pool.map(pool_sleep, [0.05] * 2000, chunksize=1)
            except KeyboardInterrupt:
                print("interrupted", time.monotonic(), flush=True)
                raise
    """
)


def test_ctrl_c_during_map(tmp_path):
    script = tmp_path / "ctrl_c_map.py"
    script.write_text(SCRIPT.format(here=HERE))
    p = subprocess.Popen(
        [sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        pids = [int(x) for x in p.stdout.readline().split()]
        assert len(pids) == 2
        time.sleep(0.5)  # deep in the map
        sent = time.monotonic()
        p.send_signal(signal.SIGINT)
        line = p.stdout.readline().split()
        assert line and line[0] == "interrupted", p.stderr.read()
        latency = float(line[1]) - sent
        print(f"\nKeyboardInterrupt in Pool.map after {latency * 1000:.1f} ms")
        assert latency < 1.0
        p.wait(15)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert p.returncode != 0
    assert "KeyboardInterrupt" in p.stderr.read()
    deadline = time.monotonic() + 5
    while any(_alive(q) for q in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(q) for q in pids)


def test_bad_arguments():
    with pytest.raises(ValueError):
        mulproc.Pool(0)
    with pytest.raises(ValueError, match="maxtasksperchild"):
        mulproc.Pool(1, maxtasksperchild=10)
    with mulproc.Pool(1) as pool:
        with pytest.raises(ValueError, match="chunksize"):
            pool.map(pool_square, [1], chunksize=0)


def test_futures_complete_without_being_waited_on():
    with mulproc.Pool(2) as pool:
        fs = [pool.submit(pool_square, i) for i in range(20)]
        done, _ = concurrent.futures.wait(fs, timeout=30)
        assert len(done) == 20
        assert sorted(f.result() for f in concurrent.futures.as_completed(fs, 30)) == sorted(
            i * i for i in range(20)
        )
        got = []
        pool.apply_async(pool_square, (5,), callback=got.append)
        deadline = time.monotonic() + 30
        while not got and time.monotonic() < deadline:
            time.sleep(0.01)
        assert got == [25]


def test_sizes_split_or_refused():
    with mulproc.Pool(2, max_task_bytes=4096, max_result_bytes=4096) as pool:
        big = [b"x" * 1000] * 40  # 40 kB in all: split into tasks that fit
        assert pool.map(len, big) == [1000] * 40
        assert pool.map(pool_square, [b"ab"] * 0) == []
        with pytest.raises(ValueError, match="max_task_bytes"):
            pool.submit(len, b"x" * 10000)
        with pytest.raises(ValueError, match="max_result_bytes"):
            pool.submit(bytes, 10000).result(30)
        # A chunk whose results are too large together is split.
        assert pool.map(bytes, [1000] * 40, chunksize=40) == [bytes(1000)] * 40


def test_imap_after_terminate_raises_instead_of_hanging():
    pool = mulproc.Pool(1)
    it = pool.imap(pool_sleep, [0.2] * 5, chunksize=1)
    assert next(it) == 0.2
    pool.terminate()
    with pytest.raises(mulproc.WorkerLost, match="terminated"):
        list(it)
    pool.join()


def test_stats_and_worker_pids_while_another_thread_drives_the_pool():
    # A pending future keeps the pool's result thread inside the core's
    # blocking take; stats() and worker_pids() wait for its slice instead
    # of failing, and so do they from a thread while the caller iterates.
    import threading

    with mulproc.Pool(2) as pool:
        slow = pool.submit(pool_sleep, 0.5)
        for _ in range(20):
            assert pool.stats()["submitted"] >= 1
            assert len(pool.worker_pids()) == 2
            time.sleep(0.01)
        errors = []

        def watch(stop):
            while not stop.is_set():
                try:
                    pool.stats()
                    pool.worker_pids()
                except Exception as e:  # noqa: BLE001 (reported below)
                    errors.append(e)
                    return

        stop = threading.Event()
        watcher = threading.Thread(target=watch, args=(stop,))
        watcher.start()
        try:
            assert sorted(pool.imap_unordered(pool_square, range(2000), chunksize=1)) == [
                x * x for x in range(2000)
            ]
        finally:
            stop.set()
            watcher.join(30)
        assert errors == []
        assert slow.result(timeout=30) == 0.5
