"""pymulproc's factories of connection ends."""

import mulproc

from . import pipeapi, queuepi


class PipeCommunication:
    """A pipe between a parent process and one child.

    ``capacity`` (messages per direction, 64) and ``message_size`` (largest
    message, 64 KiB) size it; ``serializer`` is ``'pickle'`` (default) or
    ``'json'``.
    """

    def __init__(self, capacity=64, message_size=65536, serializer=None):
        parent_conn, child_conn = mulproc.Pipe(capacity=capacity, max_size=message_size, serializer=serializer)
        self.parent_conn = pipeapi.MessageConnection(parent_conn)
        self.child_conn = pipeapi.MessageConnection(child_conn)

    def parent(self, **kwargs):
        """The parent process's end."""
        return pipeapi.Parent(self.parent_conn, **kwargs)

    def child(self, **kwargs):
        """The child process's end."""
        return pipeapi.Child(self.child_conn, **kwargs)


class QueueCommunication:
    """A joinable queue between a parent and any number of children.

    ``max_size`` bounds the number of waiting messages (0: no bound of its
    own, the capacity's: 1024 slots unless ``capacity`` says otherwise);
    ``message_size`` is the largest message (64 KiB); ``serializer``
    ``'pickle'`` (default) or ``'json'``; ``name`` names the queue.
    """

    def __init__(self, **kwargs):
        max_size = kwargs.get("max_size", 0)
        self.queue = queuepi.make_queue(
            max_size,
            capacity=kwargs.get("capacity"),
            message_size=kwargs.get("message_size", 65536),
            serializer=kwargs.get("serializer"),
            name=kwargs.get("name"),
        )

    def parent(self, **kwargs):
        """The parent process's end (``timeout``, ``loops`` for ``send``)."""
        return queuepi.Parent(self.queue, **kwargs)

    def child(self, **kwargs):
        """A child process's end (``timeout``, ``loops`` for ``send``)."""
        return queuepi.Child(self.queue, **kwargs)
