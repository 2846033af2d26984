"""pymulproc's README scenarios through mulproc.pymulproc, and where
mulproc.pymulproc differs (order kept, requests as request codes)."""

import multiprocessing
import os

import pytest

import mulproc
from mulproc.pymulproc import _codec, errors, factory, mpq_protocol
from workers import pymulproc_call_child


def test_readme_pipe_example():
    """README: "pymulproc PIPE communication example"."""
    ctx = multiprocessing.get_context("fork")  # the README's child is a closure
    pipe_factory = factory.PipeCommunication()
    parent = pipe_factory.parent()
    child = pipe_factory.child()

    def call_child(_child):
        _child.send(mpq_protocol.REQ_TEST_CHILD)

    child_process = ctx.Process(name="child_process_", target=call_child, args=(child,))
    child_process.start()
    child_process.join()
    message = parent.receive()
    request_offset = mpq_protocol.S_PID_OFFSET - 1
    assert message[request_offset] == mpq_protocol.REQ_TEST_CHILD
    assert child_process.exitcode == 0


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_readme_children_to_parent_communication(method):
    """README: "pymulproc simple 1:N QUEUE communication example"."""
    ctx = multiprocessing.get_context(method)
    queue_factory = factory.QueueCommunication()
    parent = queue_factory.parent()
    parent_pid = multiprocessing.current_process().pid
    val = 3
    child_processes = [
        ctx.Process(name=f"child_process_{offset}", target=pymulproc_call_child,
                    args=(offset + 1, parent_pid, queue_factory, val))
        for offset in range(5)
    ]
    for child in child_processes:
        child.start()
    for child in child_processes:
        child.join()
    counter = 0
    data_offset = mpq_protocol.S_PID_OFFSET + 2
    while not parent.queue_empty():
        message = parent.receive()
        counter += message[data_offset]
    parent.queue_join()
    assert counter == val * len(child_processes)


def test_readme_full_duplex_with_poison_pill():
    """README "More examples": the parent asks one child, only that child
    answers, then every child gets DIE."""
    ctx = multiprocessing.get_context("fork")
    queue_factory = factory.QueueCommunication()
    parent = queue_factory.parent()
    parent_pid = os.getpid()
    children = [ctx.Process(target=pymulproc_call_child, args=(i + 1, parent_pid, queue_factory, None))
                for i in range(4)]
    for c in children:
        c.start()
    target = children[2]
    parent.send(mpq_protocol.REQ_DO, recipient_pid=target.pid)
    message = parent.receive(func=lambda m: m[mpq_protocol.R_PID_OFFSET] == parent_pid, block=True)
    assert message[0] == mpq_protocol.REQ_FINISHED
    assert message[mpq_protocol.S_PID_OFFSET] == target.pid
    assert message[mpq_protocol.S_PID_OFFSET + 2] == 3
    assert parent.queue_empty()
    for _ in children:
        parent.send(mpq_protocol.REQ_DIE)
    for c in children:
        c.join(30)
    assert all(c.exitcode == 0 for c in children)
    parent.queue_join()


def test_rejected_messages_keep_their_order():
    parent = factory.QueueCommunication().parent()
    for i in range(5):
        parent.send(mpq_protocol.REQ_DO, recipient_pid=1000 + i % 2, data=i)
    # Take the messages for 1001; those for 1000 stay in place, in order
    # (pymulproc would have moved each rejected one to the back).
    mine = [parent.receive(func=lambda m: m[2] == 1001)[3] for _ in range(2)]
    assert mine == [1, 3]
    assert parent.receive(func=lambda m: m[2] == 1001) is False
    assert [parent.receive()[3] for _ in range(3)] == [0, 2, 4]
    parent.queue_join()


def test_requests_map_onto_request_codes():
    q = factory.QueueCommunication().queue
    raw = q.queue  # the mulproc.Queue underneath
    me = os.getpid()
    for request, code in ((mpq_protocol.REQ_DO, 1), (mpq_protocol.REQ_FINISHED, 2), (mpq_protocol.REQ_DIE, 3)):
        q.put([request, None, None, None])
        assert raw.get_message(block=False) == (code, me, None, b"")
    q.put([mpq_protocol.REQ_TEST_CHILD, 7, 8, {"d": 1}])
    code, sender, recipient, payload = raw.get_message(block=False)
    assert (code, sender, recipient) == (_codec.NAMED_REQUEST, 7, 8)
    assert _codec.decode(code, sender, recipient, payload, "pickle") == [mpq_protocol.REQ_TEST_CHILD, 7, 8, {"d": 1}]
    # A Rust peer's own request codes arrive as ints.
    raw.put_message(b"", request=200)
    assert q.get(block=False) == [200, me, None, None]
    q.put([("tuple", "request"), None, None, None])
    assert q.get(block=False)[0] == ("tuple", "request")


def test_send_gives_up_with_queues_communication_error():
    queue_factory = factory.QueueCommunication(max_size=1)
    comm = queue_factory.parent(timeout=0.01, loops=3)
    comm.send(mpq_protocol.REQ_FINISHED)
    with pytest.raises(errors.QueuesCommunicationError, match="tried unsuccessfully"):
        comm.send(mpq_protocol.REQ_FINISHED)
    assert comm.receive()[0] == mpq_protocol.REQ_FINISHED
    assert comm.receive() is False


def test_json_serializer_and_bad_messages():
    comm = factory.QueueCommunication(serializer="json").parent()
    msg = comm.send(mpq_protocol.REQ_DO, data={"value": 20})
    assert msg == ["DO", os.getpid(), None, {"value": 20}]
    assert comm.receive() == msg
    with pytest.raises(TypeError, match="recipient_pid"):
        comm.send(mpq_protocol.REQ_DO, recipient_pid="someone")
    with pytest.raises(ValueError, match="list of 4"):
        comm.conn.put(["DO", 1])


def test_handle_attributes():
    comm = factory.QueueCommunication().child(timeout=0.5, loops=3)
    assert (comm.pid, comm.timeout, comm.loops) == (os.getpid(), 0.5, 3)
    assert comm.peer == mpq_protocol.CHILD_COMM_INTERFACE
    assert isinstance(comm.conn.queue, mulproc.Queue)
    assert comm.conn.empty()


CODEC_CASES = [
    (mpq_protocol.REQ_DO, None, None, None),
    (mpq_protocol.REQ_FINISHED, 12, 34, (7, b"x" * 64)),
    (mpq_protocol.REQ_DIE, None, 5, {"a": [1, 2.5, "é"]}),
    (mpq_protocol.REQ_TEST_PARENT, 1, None, "named request"),
    (42, None, None, b"an int request is its code"),
    (("a", "tuple", "request"), 3, None, [None, True]),
]


def _jsonable(obj):
    if isinstance(obj, (list, tuple)):
        return [_jsonable(x) for x in obj]
    if isinstance(obj, bytes):
        return obj.decode("latin-1")
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    return obj


@pytest.mark.parametrize("serializer", ["pickle", "json"])
@pytest.mark.parametrize("message", CODEC_CASES, ids=lambda m: repr(m[0])[:12])
def test_rust_codec_is_the_python_codec(unique_name, serializer, message):
    """The Rust put/get of the queue ends read and write exactly what
    _codec.py describes (a Rust or older peer reads the same bytes)."""
    message = list(message)
    if serializer == "json":  # what JSON can carry: lists, no bytes
        message = _jsonable(message)
    qf = factory.QueueCommunication(name=unique_name, serializer=serializer)
    try:
        conn, raw = qf.queue, qf.queue.queue
        # A message without a sender gets this process's pid, both ways.
        expected = [message[0], message[1] or os.getpid(), *message[2:]]
        conn.put(message)  # Rust encoder
        code, sender, recipient, payload = raw.get_message(timeout=5)
        assert _codec.decode(code, sender, recipient, payload, serializer) == expected
        raw.task_done()
        code, sender, recipient, payload = _codec.encode(message, serializer)
        raw.put_message(payload, code, recipient, sender)  # Python encoder
        assert conn.get(timeout=5) == expected  # Rust decoder
        conn.task_done()
        conn.join()
    finally:
        qf.queue.close()
        qf.queue.queue.unlink()


def test_send_checks_what_pymulproc_checks(unique_name):
    qf = factory.QueueCommunication(name=unique_name)
    try:
        parent = qf.parent(timeout=0.01, loops=3)
        with pytest.raises(TypeError, match="recipient_pid must be an int pid or None, not str"):
            parent.send(mpq_protocol.REQ_DO, recipient_pid="me")
        with pytest.raises(ValueError, match="list of 4"):
            qf.queue.put([1, 2, 3])
        with pytest.raises(ValueError, match="between 1 and 2\\*\\*32-1"):
            parent.send(mpq_protocol.REQ_DO, recipient_pid=-5)
        assert parent.receive() is False
        sent = parent.send(mpq_protocol.REQ_DO, data=b"x")
        assert sent == [mpq_protocol.REQ_DO, parent.pid, None, b"x"]
        assert parent.receive(block=True) == sent
        assert parent.receive(func=lambda m: True) is False
        parent.queue_join()
    finally:
        qf.queue.close()
        qf.queue.queue.unlink()


def test_bounded_queue_send_gives_up_after_its_loops(unique_name):
    qf = factory.QueueCommunication(name=unique_name, max_size=2)
    try:
        parent = qf.parent(timeout=0.01, loops=3)
        parent.send(mpq_protocol.REQ_DO)
        parent.send(mpq_protocol.REQ_DO)
        with pytest.raises(errors.QueuesCommunicationError, match="tried unsuccessfully") as e:
            parent.send(mpq_protocol.REQ_DO, data=1)
        assert isinstance(e.value.__cause__, __import__("queue").Full)
        assert parent.receive() and parent.receive()
        parent.queue_join()
    finally:
        qf.queue.close()
        qf.queue.queue.unlink()


def test_queue_ends_pickle(unique_name):
    import pickle

    qf = factory.QueueCommunication(name=unique_name)
    try:
        parent = qf.parent(timeout=0.5, loops=4)
        parent.peer_note = "kept"
        copy = pickle.loads(pickle.dumps(parent))
        assert (type(copy), copy.pid, copy.timeout, copy.loops, copy.peer_note) == (
            type(parent), parent.pid, 0.5, 4, "kept")
        copy.send(mpq_protocol.REQ_DO, data="via the copy")
        assert parent.receive(block=True)[3] == "via the copy"
        copy.conn.close()
    finally:
        qf.queue.close()
        qf.queue.queue.unlink()
