"""The pickles mulproc writes and reads in Rust for built-in types
(``mulproc._mulproc._dumps`` / ``_loads``, used by ``Queue.put``/``get``,
the pipes and the pool) are pickle's: ``pickle.loads`` reads them, and they
read ``pickle.dumps``'s; everything else goes through the pickle module."""

import gc
import math
import pickle
import random

import pytest

from mulproc._mulproc import _dumps, _loads

import mulproc

SAMPLES = [
    None, True, False, 0, 1, -1, 255, 256, 65535, 65536, -129, 2**31 - 1, -2**31,
    2**31, 2**63 - 1, -2**63, 2**63, -2**63 - 1, 2**200, 0.0, -0.0, 1.5, math.inf, -math.inf,
    "", "a", "é☃𝄞", "x" * 255, "x" * 256, "x" * 70000, b"", b"\x00" * 255, b"\xff" * 256,
    bytes(range(256)) * 300, (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1, [2, [3]]],
    {}, {"a": 1, 2: [3, 4], (5, 6): {"x": None}}, (0, bytes(range(64))),
    [(i, str(i), float(i)) for i in range(100)], "\ud800",  # lone surrogate: pickle's
    bytearray(b"ab"), {1, 2}, frozenset([3]), complex(1, 2), range(3),  # pickle's
]


@pytest.mark.parametrize("obj", SAMPLES, ids=lambda o: type(o).__name__)
def test_round_trips_both_ways(obj):
    ours = _dumps(obj)
    assert pickle.loads(ours) == obj
    assert _loads(ours) == obj
    assert _loads(pickle.dumps(obj, 5)) == obj
    assert _loads(pickle.dumps(obj, 2)) == obj
    assert type(_loads(ours)) is type(obj)


def test_nan_and_types_kept():
    v = _loads(_dumps((math.nan, True, 1)))
    assert math.isnan(v[0]) and v[1] is True and type(v[2]) is int


class MyInt(int):
    pass


class MyTuple(tuple):
    pass


def test_subclasses_keep_their_class():
    for obj in [MyInt(3), MyTuple((1, 2)), [MyInt(4)], {"k": MyTuple(())}]:
        back = _loads(_dumps(obj))
        assert back == obj
        assert repr(back) == repr(obj)
    assert type(_loads(_dumps(MyInt(3)))) is MyInt


def test_shared_and_cyclic_references_are_kept():
    inner = [1, 2]
    shared = [inner, inner]
    back = _loads(_dumps(shared))
    assert back == shared and back[0] is back[1]
    cyc = []
    cyc.append(cyc)
    back = _loads(_dumps(cyc))
    assert back[0] is back
    # And pickle's own memo references, read in Rust.
    back = _loads(pickle.dumps(shared, 5))
    assert back[0] is back[1]


def test_deep_nesting_goes_to_pickle():
    obj = 0
    for _ in range(200):
        obj = (obj,)
    assert _loads(_dumps(obj)) == obj


def test_random_structures():
    rng = random.Random(1)

    def make(depth):
        k = rng.randrange(9 if depth < 4 else 5)
        if k == 0:
            return rng.randrange(-2**70, 2**70) >> rng.randrange(70)
        if k == 1:
            return rng.random() * 1e6
        if k == 2:
            return "".join(chr(rng.randrange(32, 0x2FFF)) for _ in range(rng.randrange(20)))
        if k == 3:
            return rng.randbytes(rng.randrange(300))
        if k == 4:
            return rng.choice([None, True, False])
        if k in (5, 6):
            return tuple(make(depth + 1) for _ in range(rng.randrange(6)))
        if k == 7:
            return [make(depth + 1) for _ in range(rng.randrange(6))]
        return {rng.randrange(1000): make(depth + 1) for _ in range(rng.randrange(6))}

    for _ in range(500):
        obj = make(0)
        assert pickle.loads(_dumps(obj)) == obj
        assert _loads(_dumps(obj)) == obj
        assert _loads(pickle.dumps(obj, 5)) == obj


@pytest.mark.parametrize("bad", [b"", b"\x80\x05", b"\x80\x05K", b"\x80\x05K\x01K\x02.", b"\x80\x05h\x00.",
                                 b"\x80\x05(K\x01.", b"\x80\x05\x86.", b"\x80\x05}K\x01u.", b"garbage",
                                 b"\x80\x05]](at."])  # a mark above the stack's top
def test_malformed_input_as_pickle_reads_it(bad):
    """What the Rust reader cannot make sense of goes to pickle.loads:
    the same error (or the same value) as pickle's own."""

    def outcome(load):
        try:
            return ("value", load(bad))
        except Exception as e:  # noqa: BLE001 - compared below
            return ("error", type(e))

    assert outcome(_loads) == outcome(pickle.loads)


def test_tuples_of_atomic_objects_come_untracked():
    """A tuple read in Rust that holds only numbers, strings, bytes, None
    and such tuples is untracked by the garbage collector at once, as
    CPython's collector would untrack it at its first pass; one holding a
    list or a dict (even an empty one, which may get a list later), or a
    tuple holding one, stays tracked, so that cycles through it are still
    collected."""
    for payload in (_dumps((1, "a", b"b", 2.5, None, True)), pickle.dumps((1, (2, "x"), 2**40), 5)):
        t = _loads(payload)
        assert type(t) is tuple and not gc.is_tracked(t)
    pairs = _loads(_dumps([(i, i * i) for i in range(100)]))
    assert gc.is_tracked(pairs)  # a list, always
    assert not any(gc.is_tracked(p) for p in pairs)
    for obj in ((1, []), (1, {}), ((1, [2]),), (1, ((2, [3]),))):
        back = _loads(_dumps(obj))
        assert back == obj and gc.is_tracked(back)
    # Still collected when part of a cycle through a list.
    cyc = _loads(_dumps([(1, 2)]))
    cyc.append((cyc,))
    assert gc.is_tracked(cyc[1])
    t = _loads(_dumps((1, {})))
    t[1]["me"] = t  # a cycle through the dict: found by the collector
    del t
    assert gc.collect() >= 2


def test_queue_carries_them(unique_name):
    q = mulproc.Queue(16, 4096, name=unique_name)
    try:
        for obj in SAMPLES[:40]:
            if len(_dumps(obj)) <= 4096:
                q.put(obj)
                assert q.get(timeout=5) == obj
    finally:
        q.close()
        q.unlink()
