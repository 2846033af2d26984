"""mulproc.Pool over Redis Streams (``backend="redis://..."``), against a
real redis-server started for each test (see ``conftest.redis_url``)."""

import os
import signal
import socket
import time

import pytest

import mulproc
from conftest import REDIS_PASSWORD, redis_command
from workers import pool_slow_pid, pool_square


def test_map_over_redis(redis_url):
    with mulproc.Pool(2, backend=redis_url) as pool:
        assert pool.map(pool_square, range(200), chunksize=7) == [x * x for x in range(200)]
        got = sorted(pool.imap_unordered(pool_square, range(50), chunksize=1))
        assert got == sorted(x * x for x in range(50))
        assert pool.submit(pool_square, 12).result(timeout=30) == 144
        pids = pool.worker_pids()
        assert len(pids) == 2
    # Shut down: the pool's streams are gone from the server, and the URL
    # from the environment.
    assert redis_command(redis_url, "DBSIZE") == ":0"
    assert not [k for k in os.environ if k.startswith("MULPROC_PY_POOL_BACKEND_")]


def test_worker_killed_over_redis_has_its_tasks_run_again(redis_url):
    with mulproc.Pool(2, backend=redis_url) as pool:
        victim = pool.worker_pids()[0]
        got = []
        for i, (x, _pid) in enumerate(pool.imap_unordered(pool_slow_pid, range(100), chunksize=1)):
            got.append(x)
            if i == 20:
                os.kill(victim, signal.SIGKILL)
        assert sorted(got) == list(range(100)), "every result exactly once"
        assert pool.stats()["restarted"] >= 1
        assert victim not in pool.worker_pids()


@pytest.mark.parametrize("url", ["redis//localhost", "http://localhost:6379/", "redis://host:notaport/",
                                 "", "shm://x"])
def test_malformed_url_is_a_value_error(url):
    start = time.monotonic()
    with pytest.raises(ValueError, match="backend|URL|url"):
        mulproc.Pool(1, backend=url)
    assert time.monotonic() - start < 2
    assert not [k for k in os.environ if k.startswith("MULPROC_PY_POOL_BACKEND_")]


def test_backend_of_another_type_is_a_type_error():
    with pytest.raises(TypeError, match="backend"):
        mulproc.Pool(1, backend=6379)


def test_unreachable_server_is_a_connection_error():
    with socket.socket() as s:  # a port nobody listens on, while this is held
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        start = time.monotonic()
        with pytest.raises(ConnectionError, match=f"127.0.0.1:{port}"):
            mulproc.Pool(1, backend=f"redis://127.0.0.1:{port}/0")
        assert time.monotonic() - start < 10


def test_wrong_password_is_a_permission_error_and_the_right_one_works(redis_port_with_password):
    port = redis_port_with_password
    start = time.monotonic()
    with pytest.raises(PermissionError) as e:
        mulproc.Pool(1, backend=f"redis://:not-the-password@127.0.0.1:{port}/0")
    assert time.monotonic() - start < 10
    assert "not-the-password" not in str(e.value)
    url = f"redis://:{REDIS_PASSWORD}@127.0.0.1:{port}/0"
    with mulproc.Pool(2, backend=url) as pool:
        assert pool.map(pool_square, range(20)) == [x * x for x in range(20)]
        # The password reaches the workers through their environment only.
        for pid in pool.worker_pids():
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                assert REDIS_PASSWORD.encode() not in f.read()
