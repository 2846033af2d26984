"""pymulproc's pipe ends on a mulproc pipe."""

from . import _codec, interfaces, mpq_protocol

#: How long ``receive()`` on a pipe waits for a message before it returns
#: ``False`` (seconds). pymulproc's ``multiprocessing`` poll costs about as
#: much; a loop of ``receive()`` calls so lasts as long as pymulproc's and
#: leaves the sender time to run (a zero-timeout mulproc poll takes well
#: under a microsecond).
RECEIVE_GRACE = 50e-6


class MessageConnection:
    """One end of a pipe carrying pymulproc messages over a
    ``mulproc.Connection``: the ``conn`` of the pipe ends."""

    def __init__(self, connection):
        self.connection = connection

    def send(self, message):
        """Sends a message list."""
        code, sender, recipient, payload = _codec.encode(message, self.connection.serializer)
        self.connection.send_message(payload, code, recipient, sender)

    def recv(self):
        """The next message, waiting for it; EOFError once the other end
        is gone."""
        code, sender, recipient, payload = self.connection.recv_message_tuple()
        return _codec.decode(code, sender, recipient, payload, self.connection.serializer)

    def poll(self, timeout=0.0):
        """Whether a message (or end of file) is there, waiting up to
        ``timeout`` seconds."""
        return self.connection.poll(timeout)

    def close(self):
        """Closes this end."""
        self.connection.close()

    @property
    def closed(self):
        """Whether ``close()`` was called."""
        return self.connection.closed

    def __repr__(self):
        return f"<mulproc.pymulproc MessageConnection {self.connection!r}>"


class PipeCommunicationApi(interfaces.CommunicationApiInterface):
    """A pipe end: 1 to 1."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args)

    def send(self, request, sender_pid=None, recipient_pid=None, data=None):
        """Sends ``[request, sender_pid or self.pid, recipient_pid, data]``
        and returns it."""
        message = [request, sender_pid if sender_pid else self.pid, recipient_pid, data]
        self.conn.send(message)
        return message

    def receive(self, **kwargs):
        """The next message if one is there (or arrives within
        ``RECEIVE_GRACE``), else ``False``."""
        if self.conn.poll(RECEIVE_GRACE):
            return self.conn.recv()
        return False


class Parent(PipeCommunicationApi):
    """The parent process's end."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.peer = mpq_protocol.PARENT_COMM_INTERFACE


class Child(PipeCommunicationApi):
    """The child process's end."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.peer = mpq_protocol.CHILD_COMM_INTERFACE
