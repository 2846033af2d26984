"""pymulproc's queue ends on a mulproc queue."""

import mulproc
from mulproc._mulproc import _MessageQueue, _QueueEnd

from . import _codec, interfaces, mpq_protocol

#: Default wait of one ``put`` attempt in ``send`` (seconds).
QUEUE_PUT_TIMEOUT_OP = 0.1
#: Default number of ``put`` attempts in ``send``.
NUM_ATTEMPTS = 10


class MessageQueue(_MessageQueue):
    """A joinable queue of pymulproc messages (``[request, sender_pid,
    recipient_pid, data]`` lists) over a ``mulproc.Queue``: the ``conn`` of
    the queue ends. Pickles (to other processes) as the queue's name.

    ``MessageQueue(queue_, max_size=0)``: ``max_size`` (pymulproc's bound,
    0 for none) may be smaller than the queue's capacity, which is a power
    of two: ``put`` then also waits while ``qsize() >= max_size``.
    Producers check that bound one at a time, so with several producing
    at once the queue can briefly hold up to one message more per extra
    producer.

    ``put(message, block=True, timeout=None)``, ``put_nowait``,
    ``get(block=True, timeout=None)``, ``get_nowait`` and ``task_done``
    are in Rust (``mulproc._mulproc._MessageQueue``, the codec of
    ``_codec``); ``queue`` is the ``mulproc.Queue``.
    """

    def get_where(self, func, block=True, timeout=None):
        """Removes and returns the oldest message ``func(message)``
        accepts; the others stay in place, in order."""
        serializer = self.queue.serializer

        def accept(code, sender, recipient, payload):
            return func(_codec.decode(code, sender, recipient, payload, serializer))

        code, sender, recipient, payload = self.queue.get_message(block, timeout, accept)
        return _codec.decode(code, sender, recipient, payload, serializer)

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


def _rebuild_end(cls, conn, pid, timeout, loops, state):
    end = cls.__new__(cls)
    end.conn, end.pid, end.timeout, end.loops = conn, pid, timeout, loops
    end.__dict__.update(state)
    return end


class QueueCommunicationApi(_QueueEnd, interfaces.CommunicationApiInterface):
    """A queue end: 1 to N, N to 1, N to M.

    ``send(request, sender_pid=None, recipient_pid=None, data=None)``
    puts ``[request, sender_pid or self.pid, recipient_pid, data]`` with
    ``conn.put(message, timeout=self.timeout)``, trying ``loops`` times
    before it raises ``QueuesCommunicationError``, and returns the
    message. ``receive(func=None, block=False)`` returns the next message
    (the oldest ``func`` accepts; the rejected ones stay in place, in
    order, where pymulproc re-queues them at the back) or ``False``, and
    marks it done for ``queue_join``. Both are in Rust
    (``mulproc._mulproc._QueueEnd``): one Python call per message.
    """

    def __init__(self, *args, **kwargs):
        interfaces.CommunicationApiInterface.__init__(self, *args)
        #: Wait of one ``put`` attempt in ``send`` (seconds).
        self.timeout = kwargs.get("timeout", QUEUE_PUT_TIMEOUT_OP)
        #: Number of ``put`` attempts before ``send`` gives up.
        self.loops = kwargs.get("loops", NUM_ATTEMPTS)

    # The abstract methods of the interface are _QueueEnd's.
    send = _QueueEnd.send
    receive = _QueueEnd.receive

    def queue_empty(self):
        """Whether the queue is empty."""
        return self.conn.empty()

    def queue_join(self):
        """Waits until every message sent has been received."""
        self.conn.join()

    def __reduce__(self):
        return (_rebuild_end, (type(self), self.conn, self.pid, self.timeout, self.loops, dict(self.__dict__)))


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
