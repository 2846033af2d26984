"""mulproc.Pipe() connections: multiprocessing.Pipe()'s behaviour that
applies, end of file, and errors."""

import array
import multiprocessing
import threading
import time

import pytest

import mulproc


def test_duplex_send_recv_both_ways():
    a, b = mulproc.Pipe()
    a.send({"x": 1})
    b.send([2])
    assert b.recv() == {"x": 1}
    assert a.recv() == [2]
    assert a.readable and a.writable and b.readable and b.writable


def test_order_is_kept():
    a, b = mulproc.Pipe(capacity=8)
    for i in range(8):
        a.send(i)
    assert [b.recv() for _ in range(8)] == list(range(8))


def test_poll_with_timeout():
    a, b = mulproc.Pipe()
    assert a.poll() is False
    start = time.monotonic()
    assert a.poll(0.2) is False
    assert 0.19 <= time.monotonic() - start < 1.0
    threading.Timer(0.1, lambda: b.send("late")).start()
    assert a.poll(5) is True
    assert a.poll() is True  # still there: poll does not consume
    assert a.recv() == "late"
    threading.Timer(0.1, lambda: b.send("forever")).start()
    assert a.poll(None) is True
    assert a.recv() == "forever"


def test_send_bytes_recv_bytes_and_into():
    a, b = mulproc.Pipe()
    a.send_bytes(b"hello world", 6)
    a.send_bytes(b"hello world", 0, 5)
    a.send_bytes(bytearray(b"abc"))
    assert b.recv_bytes() == b"world"
    assert b.recv_bytes() == b"hello"
    buf = array.array("b", [0] * 8)
    assert b.recv_bytes_into(buf, 2) == 3
    assert buf.tobytes() == b"\x00\x00abc\x00\x00\x00"
    a.send_bytes(b"too long for it")
    with pytest.raises(multiprocessing.BufferTooShort):
        b.recv_bytes_into(bytearray(4))
    a.send_bytes(b"12345")
    with pytest.raises(OSError, match="bad message length"):
        b.recv_bytes(maxlength=3)
    with pytest.raises(ValueError):
        a.send_bytes(b"abc", 4)
    with pytest.raises(ValueError):
        a.send_bytes(b"abc", 1, 5)


def test_one_way_pipe():
    r, w = mulproc.Pipe(duplex=False)
    assert r.readable and not r.writable and w.writable and not w.readable
    w.send(1)
    assert r.recv() == 1
    with pytest.raises(OSError, match="read-only"):
        r.send(1)
    with pytest.raises(OSError, match="write-only"):
        w.recv()


def test_close_gives_eof_after_the_messages_left():
    a, b = mulproc.Pipe()
    b.send("last words")
    b.close()
    assert b.closed
    with pytest.raises(OSError, match="handle is closed"):
        b.send("x")
    assert a.poll()
    assert a.recv() == "last words"
    assert a.poll() is True  # end of file
    with pytest.raises(EOFError):
        a.recv()
    with pytest.raises(BrokenPipeError):
        for _ in range(1000):  # fills the direction, then sees nobody will read
            a.send(b"x" * 100)


def test_recv_before_the_peer_connected_waits():
    a, b = mulproc.Pipe()
    threading.Timer(0.2, lambda: b.send("first")).start()
    assert a.recv() == "first"


def test_context_manager_and_repr():
    a, b = mulproc.Pipe()
    with a:
        assert "end=parent" in repr(a)
    assert a.closed
    assert "end=child" in repr(b)
    with pytest.raises(OSError):
        b.fileno()


def test_oversized_message_and_bad_arguments():
    a, b = mulproc.Pipe(max_size=64)
    with pytest.raises(ValueError, match=r"of 65 bytes exceeds the max_size .*\(64 bytes\)"):
        a.send_bytes(b"x" * 65)
    with pytest.raises(ValueError, match="capacity"):
        mulproc.Pipe(capacity=3)
    with pytest.raises(TypeError, match="bytes-like"):
        a.send_bytes("text")
    with pytest.raises(ValueError, match="serializer"):
        mulproc.Pipe(serializer="xml")


def test_json_pipe():
    a, b = mulproc.Pipe(serializer="json")
    a.send({"n": [1, 2]})
    assert b.recv() == {"n": [1, 2]}
    with pytest.raises(TypeError):
        a.send({1, 2})


def test_message_header_round_trip():
    a, b = mulproc.Pipe()
    a.send_message(b"payload", request=77, recipient=1234, sender=99)
    assert b.recv_message_tuple() == (77, 99, 1234, b"payload")
