"""The interface both ends implement, as in pymulproc."""

import abc
import multiprocessing


class CommunicationApiInterface(abc.ABC):
    """One process's end of a conversation: ``send`` and ``receive``."""

    def __init__(self, conn):
        #: The channel: a queue of messages, or one end of a pipe.
        self.conn = conn
        #: This process's pid, the default sender of its messages.
        self.pid = multiprocessing.current_process().pid

    @abc.abstractmethod
    def send(self, request, sender_pid=None, recipient_pid=None, data=None):
        """Sends ``[request, sender_pid or self.pid, recipient_pid, data]``
        and returns that list."""

    @abc.abstractmethod
    def receive(self, **kwargs):
        """The next message for this process, or ``False``."""
