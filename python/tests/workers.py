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


class PymulprocChild:
    """The child of pymulproc's README queue examples."""

    def __init__(self, identifier, parent_pid, conn):
        import multiprocessing

        self.id = identifier
        self.conn = conn
        self.parent_pid = parent_pid
        self.pid = multiprocessing.current_process().pid

    def is_message_for_me(self, message):
        from mulproc.pymulproc import mpq_protocol

        recipient = message[mpq_protocol.S_PID_OFFSET + 1]
        return recipient == self.pid or not recipient

    def run(self, data=None):
        from mulproc.pymulproc import mpq_protocol

        if data:
            self.conn.send(mpq_protocol.REQ_FINISHED, data=data)
            return
        while True:
            message = self.conn.receive(func=self.is_message_for_me, block=True)
            if message[mpq_protocol.S_PID_OFFSET - 1] == mpq_protocol.REQ_DIE:
                return
            self.conn.send(mpq_protocol.REQ_FINISHED, recipient_pid=self.parent_pid, data=self.id)


def pymulproc_call_child(identifier, parent_pid, q_factory, data):
    """pymulproc's README `call_child`."""
    PymulprocChild(identifier, parent_pid, q_factory.child()).run(data=data)


# ---- functions run by mulproc.Pool's workers (pickled by reference) ----


def pool_square(x):
    """x * x."""
    return x * x


def pool_add(a, b=0):
    """a + b."""
    return a + b


def pool_fail_on_3(x):
    """Raises ValueError for 3, returns x otherwise."""
    if x == 3:
        raise ValueError(f"no threes please (got {x})")
    return x


def pool_slow_pid(x):
    """(x, worker pid) after 2 ms."""
    time.sleep(0.002)
    return x, os.getpid()


def pool_poison_13(x):
    """SIGKILLs its own worker for 13; x * x otherwise."""
    if x == 13:
        os.kill(os.getpid(), signal.SIGKILL)
    return x * x


def pool_sleep(x):
    """Sleeps x seconds, returns x."""
    time.sleep(x)
    return x


def pool_unpicklable_result(x):
    """A result that cannot be pickled (a lock) for 1."""
    import threading

    return threading.Lock() if x == 1 else x


def _refuse_to_load(text):
    """Called by pickle.loads for an Unloadable: raises."""
    raise LookupError(f"this value does not unpickle here ({text})")


class Unloadable:
    """A value that pickles, but raises when unpickled."""

    def __reduce__(self):
        return (_refuse_to_load, ("by design",))


def pool_unloadable_result(x):
    """A result that pickles but does not unpickle (in the parent) for 5."""
    return Unloadable() if x == 5 else x
