"""A Python process and a Rust process share one queue: raw bytes and JSON
values pass both ways, and mulproc.pymulproc's REQ_DO / REQ_DIE arrive in
Rust as Request::DO / Request::DIE (see python/examples/py_interop.rs)."""

import json
import os
import subprocess
from pathlib import Path

import pytest

import mulproc
from mulproc.pymulproc import mpq_protocol, queuepi

ROOT = Path(__file__).resolve().parents[2]
RAW, JSON = 100, 101


@pytest.fixture(scope="module")
def interop_binary():
    """Builds the example (cargo's incremental build: quick when fresh)."""
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    subprocess.run(
        ["cargo", "build", "--quiet", "-p", "mulproc-python", "--example", "py_interop"],
        cwd=ROOT, check=True, timeout=1200,
    )
    path = target / "debug" / "examples" / "py_interop"
    assert path.exists(), path
    return path


def test_python_and_rust_share_one_queue(interop_binary):
    me = os.getpid()
    q = mulproc.Queue(64, 4096, serializer="json")
    rust = subprocess.Popen([str(interop_binary), q.name, str(me)])
    try:
        for_me = lambda r, s, rc, d: rc == me  # noqa: E731

        def get():
            return q.get_message(timeout=30, where=for_me)

        # Rust speaks first: raw bytes, then a JSON value.
        code, sender, _, data = get()
        assert (code, sender, data) == (RAW, rust.pid, b"\x00\x01rust\xff")
        code, sender, _, data = get()
        assert code == JSON and json.loads(data) == {"hello": "from rust", "pid": rust.pid}
        q.task_done()
        q.task_done()

        # Raw bytes, Python -> Rust -> Python.
        q.put_message(bytes(range(256)), request=RAW, recipient=rust.pid)
        code, _, _, data = get()
        assert code == RAW and data == bytes(reversed(range(256)))
        q.task_done()

        # JSON values, Python -> Rust -> Python.
        value = {"ints": [1, -2, 3], "text": "é ☃", "nested": {"ok": True, "none": None}, "f": 2.5}
        q.put_message(json.dumps(value).encode(), request=JSON, recipient=rust.pid)
        code, _, _, data = get()
        assert code == JSON and json.loads(data) == {"echo": value, "from": "rust"}
        q.task_done()

        # pymulproc's requests through the same queue: DO with JSON data,
        # FINISHED back, then the poison pill.
        conn = queuepi.MessageQueue(q)
        comm = queuepi.Parent(conn, timeout=1)
        comm.send(mpq_protocol.REQ_DO, recipient_pid=rust.pid, data={"task": 7})
        reply = comm.receive(func=lambda m: m[2] == me, block=True)
        assert reply == [mpq_protocol.REQ_FINISHED, rust.pid, me, {"done": {"task": 7}}]
        comm.send(mpq_protocol.REQ_DIE, recipient_pid=rust.pid)
        assert rust.wait(timeout=30) == 0
        assert q.join(timeout=10), "Rust marked every message done"
        assert q.empty()
    finally:
        if rust.poll() is None:
            rust.kill()
            rust.wait()
