"""pymulproc's exception."""


class QueuesCommunicationError(Exception):
    """A send gave up: the queue stayed full through all its attempts."""
