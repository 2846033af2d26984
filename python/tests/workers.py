"""Functions run in child processes by the tests (importable by name, so
they work under spawn and forkserver too)."""

import os
import signal
import time


def square_worker(tasks, results):
    """Squares ints from `tasks` into `results` until None."""
    while True:
        x = tasks.get()
        if x is None:
            tasks.task_done()
            return
        results.put((x, x * x, os.getpid()))
        tasks.task_done()


def echo_worker(conn):
    """Sends back what it receives until None, then says bye and exits."""
    while True:
        obj = conn.recv()
        if obj is None:
            conn.send("bye")
            return
        conn.send(("echo", obj, os.getpid()))


def handle_in_message_worker(carrier):
    """Receives a queue handle inside a message and answers through it."""
    reply_queue, token = carrier.get()
    reply_queue.put(("got", token, os.getpid()))
    carrier.task_done()


def interrupted_worker(kind, channel, report):
    """Blocks in one call on `channel` and reports when SIGINT ended it."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    report.put(("ready", os.getpid()))
    try:
        if kind == "get":
            channel.get()
        elif kind == "join":
            channel.join()
        elif kind == "put":
            while True:
                channel.put(b"x")
        elif kind == "recv":
            channel.recv()
        report.put(("returned", None))
    except KeyboardInterrupt:
        report.put(("interrupted", time.monotonic()))
