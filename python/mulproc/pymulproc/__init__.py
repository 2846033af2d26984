"""pymulproc 0.1.2's API on mulproc's shared-memory queues and pipes.

Replace ``from pymulproc import ...`` with ``from mulproc.pymulproc import
...`` and the rest of a pymulproc program stays as it is::

    from mulproc.pymulproc import factory, mpq_protocol

    queue_factory = factory.QueueCommunication()
    parent = queue_factory.parent()
    parent.send(mpq_protocol.REQ_DO, data={"value": 20})

Differences, all in pymulproc's favour of its own documentation:

- ``receive(func=...)`` returns the oldest message ``func`` accepts, or
  ``False`` if there is none; the messages it rejects stay where they
  are, in order, for the other processes. pymulproc looks only at the
  front message and re-queues a rejected one at the back (which changes
  the order other processes see); mulproc keeps the order.
- Requests travel as mulproc request codes, so a Rust process reading the
  same queue sees ``Request::DO``, ``FINISHED`` and ``DIE`` for
  ``REQ_DO``, ``REQ_FINISHED`` and ``REQ_DIE``; see ``_codec`` for the
  others. Recipient and sender pids must be ints (or None).
- ``QueueCommunication(max_size=0)`` (pymulproc's "unbounded") makes a
  queue of 1024 slots; pass ``capacity=`` for another size and
  ``message_size=`` for the largest message (64 KiB by default).
"""

__all__ = ["errors", "factory", "interfaces", "mpq_protocol", "pipeapi", "queuepi"]

VERSION = (0, 1, 2)
__version__ = "0.1.2"
