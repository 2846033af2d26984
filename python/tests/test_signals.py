"""Ctrl-C during a blocking call: SIGINT sent to a child blocked in
get / join / put / recv raises KeyboardInterrupt there promptly (the waits
run in slices of at most 50 ms with a signal check between them)."""

import multiprocessing as mp
import os
import signal
import time

import pytest

import mulproc
from workers import interrupted_worker


def _channel(kind):
    if kind == "get":
        return mulproc.Queue(4, 64), None
    if kind == "join":
        q = mulproc.Queue(4, 64)
        q.put(1)  # never received: join waits forever
        return q, None
    if kind == "put":
        return mulproc.Queue(2, 64), None
    a, b = mulproc.Pipe()
    return b, a  # keep the parent end alive: no end of file


@pytest.mark.parametrize("kind", ["get", "join", "put", "recv"])
def test_sigint_interrupts_blocking_call(kind):
    ctx = mp.get_context("fork")
    channel, keep = _channel(kind)
    report = mulproc.Queue(4, 256)
    p = ctx.Process(target=interrupted_worker, args=(kind, channel, report))
    p.start()
    try:
        assert report.get(timeout=30) == ("ready", p.pid)
        time.sleep(0.3)  # deep in the wait (asleep in the kernel)
        sent = time.monotonic()
        os.kill(p.pid, signal.SIGINT)
        what, when = report.get(timeout=10)
        assert what == "interrupted"
        latency = when - sent
        print(f"\nKeyboardInterrupt in {kind}() after {latency * 1000:.1f} ms")
        assert latency < 1.0, f"{latency * 1000:.0f} ms"
    finally:
        p.join(10)
        if p.is_alive():
            p.kill()
            p.join()
    assert p.exitcode == 0
    del keep
