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


# --------------------------------------------------------------- Redis --

def _redis_binary():
    """``$MULPROC_REDIS_SERVER``, else ``redis-server`` on PATH, else None."""
    import shutil

    return os.environ.get("MULPROC_REDIS_SERVER") or shutil.which("redis-server")


def _free_port():
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_redis(binary, workdir, extra=()):
    """A redis-server on a free port of 127.0.0.1 in ``workdir`` (more
    arguments: ``extra``), ready (its log said so); returns ``(process,
    port)``."""
    import subprocess
    import threading

    last = ""
    for _ in range(10):
        port = _free_port()
        proc = subprocess.Popen(
            [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(workdir),
             "--daemonize", "no", "--protected-mode", "no", "--logfile", "",
             "--save", "", "--appendonly", "no", *extra],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        ready = threading.Event()
        log = []

        def read(out=proc.stdout, log=log, ready=ready):
            for line in out:
                log.append(line)
                if "Ready to accept connections" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        for _ in range(200):
            if ready.wait(0.1) or proc.poll() is not None:
                break
        if ready.is_set():
            return proc, port
        # Another process took the port between the probe and the bind.
        proc.kill()
        proc.wait()
        last = "".join(log)
    raise RuntimeError(f"could not start redis-server: {last}")


def _redis_fixture(tmp_path, extra=()):
    binary = _redis_binary()
    if binary is None:
        pytest.skip("redis-server is not installed (apt-get install redis-server, "
                    "or point $MULPROC_REDIS_SERVER at the binary)")
    proc, port = _start_redis(binary, tmp_path, extra)
    try:
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except Exception:
            proc.kill()
            proc.wait()


@pytest.fixture
def redis_url(tmp_path):
    """``redis://127.0.0.1:<port>/0`` of a real redis-server of its own, in
    a temporary directory, stopped at the end (also when the test fails).
    Skipped, saying why, when redis-server is not installed."""
    for port in _redis_fixture(tmp_path):
        yield f"redis://127.0.0.1:{port}/0"


REDIS_PASSWORD = "s3cret-for-tests"


@pytest.fixture
def redis_port_with_password(tmp_path):
    """The port of a real redis-server of its own that wants
    ``REDIS_PASSWORD`` (as ``redis_url``)."""
    yield from _redis_fixture(tmp_path, ("--requirepass", REDIS_PASSWORD))


def redis_command(url, *args):
    """One command to the server at ``url`` over a plain socket (RESP);
    returns the reply line. For checks in tests, no client library needed."""
    import socket
    from urllib.parse import urlparse

    u = urlparse(url)
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        parts = [f"*{len(args)}\r\n".encode()]
        for a in args:
            a = str(a).encode()
            parts.append(b"$%d\r\n%s\r\n" % (len(a), a))
        s.sendall(b"".join(parts))
        return s.makefile("rb").readline().decode().rstrip("\r\n")
