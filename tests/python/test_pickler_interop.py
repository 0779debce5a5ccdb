"""`picklewire repickle` against CPython: what the C++ pickler writes, CPython loads (and for builtin
types it is byte-for-byte what CPython writes); out-of-band buffers land in --oob-dir in order."""
import pickle

import pytest

from conftest import ERROR_LINE, run_cli

SHARED = [1, "shared"]
REC = []
REC.append(REC)

CASES = {
    "scalars": [None, True, False, 0, -1, 2**31, -(2**100), 1.5, 2 - 3j],
    "text": ["", "caf\u00e9", "x" * 70000, b"", b"\x00\xff" * 40000, bytearray(b"ba")],
    "containers": {"t": (1, 2, 3, 4), "s": set(range(1500)), "f": frozenset({1}), "d": {i: i for i in range(1000)}},
    "sharing": [SHARED, SHARED, (SHARED,)],
    "recursive": REC,
}


def repickle(tmp_path, data, protocol=None, buffers=(), oob=False):
    src, dst = tmp_path / "in.pkl", tmp_path / "out.pkl"
    src.write_bytes(data)
    args = ["repickle", src, dst]
    for i, b in enumerate(buffers):
        path = tmp_path / f"in{i}.bin"
        path.write_bytes(b)
        args += ["--buffer", path]
    if protocol is not None:
        args += ["--protocol", protocol]
    if oob:
        args += ["--oob-dir", tmp_path / "oob"]
    result = run_cli(args)
    assert result.returncode == 0, result.stderr
    return dst.read_bytes()


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_repickle_is_cpython_bytes(tmp_path, name, protocol):
    obj = CASES[name]
    original = pickle.dumps(obj, protocol=5)
    ours = repickle(tmp_path, original, protocol=protocol)
    assert ours == pickle.dumps(obj, protocol=protocol)
    back = pickle.loads(ours)
    if name == "sharing":
        assert back[0] is back[1] and back[2][0] is back[0]
    elif name == "recursive":
        assert back[0] is back
    else:
        assert back == obj


def test_default_protocol_is_5_and_buffers_in_band(tmp_path):
    bufs = []
    obj = [pickle.PickleBuffer(b"ro"), pickle.PickleBuffer(bytearray(b"rw"))]
    stream = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    ours = repickle(tmp_path, stream, buffers=[bytes(b.raw()) for b in bufs])
    assert ours[:2] == b"\x80\x05"
    assert ours == pickle.dumps(obj, protocol=5, buffer_callback=lambda b: True)  # truthy: in-band
    back = pickle.loads(ours)
    assert back == [b"ro", bytearray(b"rw")] and type(back[1]) is bytearray


def test_oob_dir_gets_every_buffer_in_order(tmp_path):
    payloads = [b"first" * 1000, bytearray(b"second"), b"third"]
    obj = {"a": pickle.PickleBuffer(payloads[0]), "b": [pickle.PickleBuffer(payloads[1]), "x"],
           "c": pickle.PickleBuffer(payloads[2])}
    bufs = []
    stream = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
    ours = repickle(tmp_path, stream, buffers=[bytes(b.raw()) for b in bufs], oob=True)
    assert ours == stream
    oob = tmp_path / "oob"
    assert sorted(p.name for p in oob.iterdir()) == ["0.bin", "1.bin", "2.bin"]
    loaded = [(oob / f"{i}.bin").read_bytes() for i in range(3)]
    assert loaded == [bytes(p) for p in payloads]
    back = pickle.loads(ours, buffers=[pickle.PickleBuffer(b) for b in loaded])
    assert bytes(back["a"]) == payloads[0] and bytes(back["b"][0]) == payloads[1]
    assert memoryview(back["a"]).readonly


def test_repickle_plain_bytes_to_oob_dir_writes_no_buffer_files(tmp_path):
    ours = repickle(tmp_path, pickle.dumps([b"x" * 10], protocol=5), oob=True)
    assert pickle.loads(ours) == [b"x" * 10]
    assert list((tmp_path / "oob").iterdir()) == []


@pytest.mark.parametrize("data", [b"", b"\x80\x05", b"\x80\x05]\x94(K\x01", b"\x80\x05\x97."])
def test_malformed_input_is_an_unpickling_error(tmp_path, data):
    src, dst = tmp_path / "in.pkl", tmp_path / "out.pkl"
    src.write_bytes(data)
    result = run_cli(["repickle", src, dst])
    assert result.returncode == 1
    assert ERROR_LINE.match(result.stderr), result.stderr
    assert not dst.exists()


class NewObjEx:
    def __getnewargs_ex__(self):
        return (), {"a": 1}


def test_failed_dump_leaves_no_output(tmp_path):
    # Loads (an object made with NEWOBJ_EX) but cannot be written at protocol 3: the output is
    # written while the pickler runs, so a failure must remove what it had written.
    src, dst = tmp_path / "in.pkl", tmp_path / "out.pkl"
    src.write_bytes(pickle.dumps(NewObjEx(), protocol=4))
    result = run_cli(["repickle", src, dst, "--protocol", "3"])
    assert result.returncode == 1
    assert "NEWOBJ_EX" in result.stderr, result.stderr
    assert not dst.exists()
