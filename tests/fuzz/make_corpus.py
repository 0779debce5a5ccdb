#!/usr/bin/python3
"""Writes the pickle fuzz seed corpus: CPython pickles of a broad set of objects at protocols
0-5 (C and pure-Python picklers), builtin reductions, numpy arrays, plus pickletester's fixed
vectors. Generated at fuzz time, never committed.
Usage: make_corpus.py [--prefix-byte] DIR
  --prefix-byte: each seed starts with one more byte, for targets whose byte 0 chooses options
  (repr_fuzz, loads_safe_fuzz); it varies with the seed, so the options get covered.
"""
import hashlib
import math
import pathlib
import pickle
import sys

options = [a for a in sys.argv[1:] if a.startswith("--")]
paths = [a for a in sys.argv[1:] if not a.startswith("--")]
if len(paths) != 1 or set(options) - {"--prefix-byte"}:
    sys.exit(__doc__)
out = pathlib.Path(paths[0])
prefix_byte = "--prefix-byte" in options
out.mkdir(parents=True, exist_ok=True)


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y


class Slots:
    __slots__ = ("a",)

    def __init__(self):
        self.a = 1


rec = []
rec.append(rec)
shared = [1, 2]
objects = [
    None, True, False, 0, 1, -1, 255, 65536, 2**31, -2**63, 2**100, -(10**50), 1.5, -0.0, math.nan, math.inf,
    1 + 2j, "", "abc", "é\u20ac\U0001F600\ud800", "quote'\"\\\n", b"", b"\x00\xff", bytearray(b"ba"),
    (), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), [], [1, "a"], {}, {"a": 1, 2: [3]}, set(), {1, 2}, frozenset({1}),
    [shared, shared], rec, Point(1, "y"), Slots(), range(3), list(range(1200)), {str(i): i for i in range(50)},
]
seen = set()


def emit(data):
    if prefix_byte:
        data = hashlib.sha1(data).digest()[:1] + data
    name = hashlib.sha1(data).hexdigest()
    if name not in seen:
        seen.add(name)
        (out / name).write_bytes(data)


for proto in range(6):
    for obj in objects:
        for dumps in (pickle.dumps, pickle._dumps):
            try:
                emit(dumps(obj, protocol=proto))
            except Exception:
                pass
    if proto == 5:
        emit(pickle.dumps([pickle.PickleBuffer(b"ro"), pickle.PickleBuffer(bytearray(b"rw"))], protocol=5,
                          buffer_callback=lambda b: False))
# Builtin reductions, as REDUCE / NEWOBJ / NEWOBJ_EX (src/builtin_reductions.cpp).
for name, args in [("int", ("0x1f", 0)), ("int", (1.5e20,)), ("float", (" 1_0.5 ",)), ("str", (b"a", "utf-8")),
                   ("bytes", ([1, 2],)), ("bytearray", (3,)), ("tuple", ("ab",)), ("dict", ([(1, 2)],)),
                   ("set", ([1],)), ("frozenset", ((),)), ("bool", ([0],)), ("complex", (1, 2)), ("list", ({1: 2},))]:
    body = pickle.dumps(args, 2)[2:-1]
    head = b"\x80\x02cbuiltins\n" + name.encode() + b"\n" + body
    emit(head + b"R.")
    emit(head + b"\x81.")
    emit(head + b"}\x92.")
    emit(b"cbuiltins\n" + name.encode() + b"\n" + pickle.dumps(args, 0)[:-1] + b"R.")
try:
    import numpy
    for proto in (2, 4, 5):
        for arr in (numpy.arange(6, dtype="<i4").reshape(2, 3), numpy.array([1.5, 2.5]).T, numpy.zeros(3, "M8[ms]"),
                    numpy.array([1 + 2j], dtype=">c8"), numpy.arange(4)[::2]):
            emit(pickle.dumps(arr, protocol=proto))
    emit(pickle.dumps(numpy.arange(3), protocol=5, buffer_callback=lambda b: False))
except ImportError as exc:
    print("numpy not available:", exc, file=sys.stderr)
try:
    sys.path.insert(0, "/usr/lib/python3.11")
    from test import pickletester
    for name in ("DATA0", "DATA1", "DATA2", "DATA3", "DATA4", "DATA_SET", "DATA_XRANGE", "DATA_COOKIE", "DATA_UEERR"):
        emit(getattr(pickletester, name))
except Exception as exc:  # the test suite package is optional for the corpus
    print("pickletester not available:", exc, file=sys.stderr)
print(len(seen), "seeds in", out)
