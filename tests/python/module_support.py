"""Helpers shared by the tests of the picklewire Python module (tests/python/test_module_*.py).

Importable by spawned children: the tests put this directory on sys.path (and multiprocessing's
spawn re-imports the test module, which imports this one)."""

import glob
import itertools
import os
import socket

import numpy as np

_counter = itertools.count()


def unique_name(tag):
    return f"pwpy-{tag}-{os.getpid()}-{next(_counter)}"


def free_tcp_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_url(transport, tmp_path, tag="t"):
    name = unique_name(tag)
    if transport == "shm":
        return f"shm://{name}"
    if transport == "ipc":
        return f"ipc://{tmp_path}/{name}.ipc"
    if transport == "tcp":
        return f"tcp://127.0.0.1:{free_tcp_port()}"
    if transport == "inproc":
        return f"inproc://{name}"
    raise ValueError(transport)


def shm_files(name_part):
    return sorted(glob.glob(f"/dev/shm/*{name_part}*"))


def remove_dead_answer_boxes():
    """Removes the same-host answer boxes (/dev/shm/picklewire.hello-PID-ID, docs/zmq.md "Same
    host") of senders that are gone: a sender killed while no receiver was waiting to notice
    leaves its box behind. Returns the paths removed."""
    removed = []
    for path in glob.glob("/dev/shm/picklewire.hello-*"):
        pid = int(os.path.basename(path)[len("picklewire.hello-"):].split("-")[0])
        try:
            os.kill(pid, 0)
            continue  # alive (or not ours to judge)
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        try:
            os.unlink(path)
            removed.append(path)
        except FileNotFoundError:
            pass
    return removed


def remove_shm_files(name_part):
    for path in shm_files(name_part):
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass


DTYPES = [
    "bool", "int8", "uint8", "int16", "uint16", "<i4", ">i4", "uint32", "<i8", ">u8",
    "float16", "<f4", ">f8", "float64", "complex64", "<c16", "U5", "S3",
    "datetime64[ns]", "timedelta64[s]", "datetime64[D]",
]
SHAPES = [(), (0,), (7,), (3, 4, 5), (1000, 257)]


def array_for(dtype, shape, seed):
    """A deterministic array of `dtype` and `shape` (same bytes in every process)."""
    rng = np.random.default_rng(seed)
    n = int(np.prod(shape, dtype=np.int64))
    dt = np.dtype(dtype)
    if dt.kind in "US":
        base = np.array([f"x{v % 977}"[: max(dt.itemsize // (4 if dt.kind == 'U' else 1), 1)]
                         for v in rng.integers(0, 10**6, n)], dtype=dt)
    elif dt.kind == "b":
        base = rng.integers(0, 2, n).astype(dt)
    elif dt.kind in "Mm":
        base = rng.integers(-10**9, 10**9, n).astype(dt)
    elif dt.kind == "c":
        base = (rng.standard_normal(n) + 1j * rng.standard_normal(n)).astype(dt)
    elif dt.kind == "f":
        base = rng.standard_normal(n).astype(dt)
    else:
        info = np.iinfo(dt)
        base = rng.integers(info.min, info.max, n, endpoint=True, dtype=np.int64 if info.min < 0 else np.uint64).astype(dt)
    return base.reshape(shape)


def payloads():
    """Every object the transport tests send, in order: arrays of many dtypes and shapes, layouts,
    and graphs mixing arrays with ordinary objects (shared references, cycles)."""
    out = []
    seed = 0
    for dtype in DTYPES:
        for shape in SHAPES:
            seed += 1
            out.append(array_for(dtype, shape, seed))
    big = array_for("<f8", (512, 1024), 99)  # 4 MiB
    out.append(np.asfortranarray(big[:300, :200]))  # F-contiguous
    out.append(big[::2, ::3])  # not contiguous: numpy pickles it in-band
    shared = array_for("int32", (64, 64), 7)
    graph = {
        "name": "frame",
        "arrays": [big, shared, shared],
        "meta": {"ints": list(range(10)), "nested": ({"t": (1, 2.5, None)}, frozenset({1, 2})),
                 "bytes": b"\x00\x01" * 3000, "big_int": 2**100, "complex": 1 - 2j},
        "mask": big > 0,
    }
    cyclic = [graph]
    cyclic.append(cyclic)
    out.append(graph)
    out.append(cyclic)
    out.append(bytearray(b"abc" * 5000))
    return out


def assert_same(a, b, memo=None):
    """Deep equality that also checks array dtypes/shapes and shared-reference structure."""
    if memo is None:
        memo = {}
    if id(a) in memo:
        assert memo[id(a)] is b, "sharing differs"
        return
    memo[id(a)] = b
    assert type(a) is type(b), (type(a), type(b))
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape, (a.dtype, b.dtype, a.shape, b.shape)
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), (a, b)
    elif isinstance(a, dict):
        assert list(a.keys()) == list(b.keys())
        for k in a:
            assert_same(a[k], b[k], memo)
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert_same(x, y, memo)
    else:
        assert a == b, (a, b)


# ---- children run by multiprocessing (spawn): module-level so they pickle by reference.

def child_send_payloads(url, ready, options):
    import picklewire
    if ready is not None:
        ready.wait(30)
    with picklewire.Sender.connect(url, **options) as tx:
        for obj in payloads():
            tx.send(obj, timeout=30)


def child_receive_and_check(url, ready, results):
    import picklewire
    try:
        with picklewire.Receiver.bind(url) as rx:
            ready.set()
            for expected in payloads():
                got = rx.recv(timeout=30)
                assert_same(expected, got)
        results.put("ok")
    except BaseException as e:  # reported to the parent, which fails the test with it
        results.put(f"{type(e).__name__}: {e}")


def child_send_empty(url, ready, results, shapes):
    import picklewire
    ready.wait(30)
    with picklewire.Sender.connect(url) as tx:
        for i, shape in enumerate(shapes):
            a = tx.empty(shape, "<f4")
            a[...] = np.arange(a.size, dtype="<f4").reshape(shape) + i
            tx.send(a, timeout=30)
            b = tx.buffer(1 << 16)
            b[:] = bytes([i % 256]) * len(b)
            import pickle
            tx.send(pickle.PickleBuffer(b), timeout=30)
        results.put(tx.stats())


def child_send_forever(url, ready):
    import picklewire
    ready.wait(30)
    with picklewire.Sender.connect(url) as tx:
        i = 0
        while True:
            tx.send({"i": i, "data": np.full(1 << 18, i, dtype=np.int32)})
            i += 1
