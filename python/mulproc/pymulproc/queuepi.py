"""pymulproc's queue ends on a mulproc queue."""

import queue
import time

import mulproc

from . import _codec, errors, interfaces, mpq_protocol

#: Default wait of one ``put`` attempt in ``send`` (seconds).
QUEUE_PUT_TIMEOUT_OP = 0.1
#: Default number of ``put`` attempts in ``send``.
NUM_ATTEMPTS = 10


class MessageQueue:
    """A joinable queue of pymulproc messages (``[request, sender_pid,
    recipient_pid, data]`` lists) over a ``mulproc.Queue``: the ``conn`` of
    the queue ends. Pickles (to other processes) as the queue's name.

    ``max_size`` (pymulproc's bound, 0 for none) may be smaller than the
    queue's capacity, which is a power of two: ``put`` then also waits
    while ``qsize() >= max_size``. Producers check that bound one at a
    time, so with several producing at once the queue can briefly hold up
    to one message more per extra producer.
    """

    def __init__(self, queue_, max_size=0):
        self.queue = queue_
        self.max_size = max_size

    def put(self, message, block=True, timeout=None):
        """Puts a message; ``queue.Full`` when no room came in time."""
        code, sender, recipient, payload = _codec.encode(message, self.queue.serializer)
        if self.max_size and self.max_size < self.queue.capacity:
            deadline = None if timeout is None else time.monotonic() + max(timeout, 0.0)
            while self.queue.qsize() >= self.max_size:
                if not block or (deadline is not None and time.monotonic() >= deadline):
                    raise queue.Full
                time.sleep(0.001)
            if deadline is not None:
                timeout = max(deadline - time.monotonic(), 0.0)
        self.queue.put_message(payload, code, recipient, sender, block, timeout)

    def put_nowait(self, message):
        """``put(message, False)``."""
        self.put(message, block=False)

    def get(self, block=True, timeout=None):
        """Removes and returns the next message; ``queue.Empty`` if none."""
        code, sender, recipient, payload = self.queue.get_message(block, timeout)
        return _codec.decode(code, sender, recipient, payload, self.queue.serializer)

    def get_nowait(self):
        """``get(False)``."""
        return self.get(block=False)

    def get_where(self, func, block=True, timeout=None):
        """Removes and returns the oldest message ``func(message)``
        accepts; the others stay in place, in order."""
        serializer = self.queue.serializer

        def accept(code, sender, recipient, payload):
            return func(_codec.decode(code, sender, recipient, payload, serializer))

        code, sender, recipient, payload = self.queue.get_message(block, timeout, accept)
        return _codec.decode(code, sender, recipient, payload, serializer)

    def task_done(self):
        """Marks one received message as processed."""
        self.queue.task_done()

    def join(self):
        """Waits until every message put has been received and marked done."""
        self.queue.join()

    def empty(self):
        """Whether no message was waiting at the moment of the call."""
        return self.queue.empty()

    def full(self):
        """Whether the queue was full at the moment of the call."""
        if self.max_size and self.queue.qsize() >= self.max_size:
            return True
        return self.queue.full()

    def qsize(self):
        """Messages in the queue at the moment of the call."""
        return self.queue.qsize()

    def close(self):
        """Closes this process's handle."""
        self.queue.close()

    def __repr__(self):
        return f"<mulproc.pymulproc MessageQueue {self.queue!r}>"


class QueueCommunicationApi(interfaces.CommunicationApiInterface):
    """A queue end: 1 to N, N to 1, N to M."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args)
        #: Wait of one ``put`` attempt in ``send`` (seconds).
        self.timeout = kwargs.get("timeout", QUEUE_PUT_TIMEOUT_OP)
        #: Number of ``put`` attempts before ``send`` gives up.
        self.loops = kwargs.get("loops", NUM_ATTEMPTS)

    def send(self, request, sender_pid=None, recipient_pid=None, data=None):
        """Puts ``[request, sender_pid or self.pid, recipient_pid, data]``,
        trying ``loops`` times for ``timeout`` seconds each; raises
        ``QueuesCommunicationError`` when every attempt found the queue
        full. Returns the message."""
        message = [request, sender_pid if sender_pid else self.pid, recipient_pid, data]
        loops = self.loops
        while True:
            try:
                self.conn.put(message, timeout=self.timeout)
            except queue.Full as ex:
                loops -= 1
                if not loops:
                    raise errors.QueuesCommunicationError(
                        f"Process {self.pid} tried unsuccessfully to put the following {message} in the queue"
                    ) from ex
            else:
                return message

    def receive(self, **kwargs):
        """The next message, or ``False`` if there is none.

        ``func=f``: the oldest message for which ``f(message)`` is true;
        the messages ``f`` rejects stay in the queue, in order, for the
        other processes (pymulproc re-queues them at the back). ``block=True``
        waits until there is such a message. The message taken is marked
        done (``task_done``) for ``queue_join``.
        """
        func = kwargs.get("func")
        block = kwargs.get("block", False)
        try:
            if func is None:
                message = self.conn.get(block=block)
            else:
                message = self.conn.get_where(func, block=block)
        except queue.Empty:
            return False
        self.conn.task_done()
        return message

    def queue_empty(self):
        """Whether the queue is empty."""
        return self.conn.empty()

    def queue_join(self):
        """Waits until every message sent has been received."""
        self.conn.join()


class Parent(QueueCommunicationApi):
    """The parent process's end."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.peer = mpq_protocol.PARENT_COMM_INTERFACE


class Child(QueueCommunicationApi):
    """A child process's end."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.peer = mpq_protocol.CHILD_COMM_INTERFACE


def make_queue(max_size=0, capacity=None, message_size=65536, serializer=None, name=None):
    """The ``MessageQueue`` of a ``QueueCommunication``."""
    if max_size < 0:
        raise ValueError(f"max_size must be 0 (no bound) or positive, not {max_size}")
    if capacity is None:
        capacity = 1024 if max_size == 0 else max(2, 1 << (max_size - 1).bit_length())
    q = mulproc.Queue(capacity, message_size, name=name, serializer=serializer)
    return MessageQueue(q, max_size)
