"""Same-host peers under tcp:// and ipc:// (docs/zmq.md "Same host"), from Python, between real
processes: numpy arrays land in the receiver's shared-memory channel, Sender.empty() lends from
it, the pure-Python peer (picklewire.wire) still interoperates both ways, and the command's
ledger says which path each message took."""

import json
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import zmq

sys.path.insert(0, os.path.dirname(__file__))
import module_support as ms  # noqa: E402

import picklewire  # noqa: E402
from picklewire import wire  # noqa: E402

from test_module_transport import SPAWN, processes, start  # noqa: E402,F401  (fixture and helpers)

TRANSPORTS = ["tcp", "ipc"]
SHAPES = [(1 << 16,), (512, 512), (100,)]  # 512 KiB, 2 MiB: the channel; 800 B: frames


def child_send_arrays(url, ready, results, use_empty, options):
    ready.wait(30)
    with picklewire.Sender.connect(url, **options) as tx:
        for i, shape in enumerate(SHAPES):
            if use_empty:
                a = tx.empty(shape, "<f8")
                a[...] = np.arange(a.size, dtype="<f8").reshape(shape) + i
            else:
                a = np.arange(int(np.prod(shape)), dtype="<f8").reshape(shape) + i
            tx.send({"i": i, "a": a}, timeout=30)
        results.put(tx.stats())


@pytest.mark.parametrize("use_empty", [False, True], ids=["copy", "empty"])
@pytest.mark.parametrize("transport", TRANSPORTS)
def test_arrays_land_in_the_receivers_channel(transport, use_empty, url_for, processes):
    url = url_for(transport)
    ready, results = SPAWN.Event(), SPAWN.Queue()
    with picklewire.Receiver.bind(url) as rx:
        ready.set()
        start(processes, child_send_arrays, url, ready, results, use_empty, {})
        got = []
        for i, shape in enumerate(SHAPES):
            m = rx.recv(timeout=30)
            assert m["i"] == i and m["a"].shape == shape
            assert np.array_equal(m["a"], np.arange(int(np.prod(shape)), dtype="<f8").reshape(shape) + i)
            big = m["a"].nbytes >= 64 * 1024
            assert rx.owns(m["a"]) == big  # large: a view of the channel; small: of its frame
            if big:
                assert m["a"].flags.writeable
            got.append(m)
        received = rx.stats()
        channel = received["same_host_channel"]
        assert channel and os.path.exists("/dev/shm/picklewire." + channel)
        sent = results.get(timeout=30)
    assert not os.path.exists("/dev/shm/picklewire." + channel)  # removed with its receiver
    large_bytes = sum(8 * int(np.prod(s)) for s in SHAPES[:2])
    for side in (sent, received):
        assert side["same_host_messages"] == 2 and side["same_host_bytes"] == large_bytes, side
    assert sent["same_host_fallbacks"] == 0
    assert received["total_copied_bytes"] == 0
    # empty(): the arrays were allocated in the channel, so nothing was copied at all.
    assert sent["copied_bytes"]["copied_into_segment"] == (0 if use_empty else large_bytes)
    assert got[0]["a"][0] == 0.0  # still valid after stats and the with-block


@pytest.mark.parametrize("transport", TRANSPORTS)
def test_same_host_false_sends_frames(transport, url_for, processes):
    url = url_for(transport)
    ready, results = SPAWN.Event(), SPAWN.Queue()
    with picklewire.Receiver.bind(url) as rx:
        ready.set()
        start(processes, child_send_arrays, url, ready, results, True, {"same_host": False})
        for i, shape in enumerate(SHAPES):
            m = rx.recv(timeout=30)
            assert not rx.owns(m["a"])
        assert rx.stats()["same_host_messages"] == 0 and rx.stats()["same_host_channel"] is None
    assert results.get(timeout=30)["same_host_messages"] == 0


def test_keywords_are_checked():
    with pytest.raises(ValueError, match="same_host_capacity"):
        picklewire.Receiver.bind("tcp://127.0.0.1:1", same_host_capacity=10)
    with pytest.raises(ValueError, match="same_host= applies to ZeroMQ URLs"):
        picklewire.Receiver.bind("shm://" + ms.unique_name("kw"), same_host=False)


def test_pure_python_peer_both_ways(tmp_path):
    """picklewire.wire has no shared memory: to it, a same-host Sender says hello (skipped) and sends
    frames; from it, a Receiver gets plain frames. Large arrays, both directions."""
    big = np.arange(1 << 17, dtype="<f8")
    ctx = zmq.Context()
    try:
        url = f"ipc://{tmp_path}/to-python"
        pull = ctx.socket(zmq.PULL)
        pull.rcvtimeo = 20000
        pull.bind(url)
        with picklewire.Sender.connect(url) as tx:
            tx.send({"a": big}, timeout=20)
            assert np.array_equal(wire.recv(pull)["a"], big)
            assert tx.stats()["same_host_fallbacks"] == 1  # no answer to its hello: frames
        pull.close(0)

        url = f"ipc://{tmp_path}/from-python"
        with picklewire.Receiver.bind(url) as rx:
            push = ctx.socket(zmq.PUSH)
            push.connect(url)
            wire.send(push, {"a": big})
            assert np.array_equal(rx.recv(timeout=20)["a"], big)
            assert rx.stats()["same_host_messages"] == 0
            push.close(0)
    finally:
        ctx.term()


@pytest.mark.skipif(not os.environ.get("PICKLEWIRE_CLI"), reason="needs the picklewire command (PICKLEWIRE_CLI)")
@pytest.mark.parametrize("flags", [[], ["--no-same-host"]], ids=["same-host", "frames"])
def test_cli_ledger_tells_the_path(tmp_path, flags):
    cli = os.environ["PICKLEWIRE_CLI"]
    obj = {"a": np.arange(1 << 17, dtype="<f8")}
    bufs = []
    (tmp_path / "s.pkl").write_bytes(pickle.dumps(obj, protocol=5, buffer_callback=bufs.append))
    (tmp_path / "b0.bin").write_bytes(bytes(bufs[0].raw()))
    url = f"tcp://127.0.0.1:{ms.free_tcp_port()}"
    out = tmp_path / "out"
    rx = subprocess.Popen([cli, "recv", url, "--count", "2", "--out", str(out), "--stats", *flags],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        send = subprocess.run([cli, "send", url, str(tmp_path / "s.pkl"), "--buffer", str(tmp_path / "b0.bin"),
                               "--count", "2", "--stats", *flags], capture_output=True, text=True, timeout=60)
        assert send.returncode == 0, send.stderr
        assert rx.wait(60) == 0
        sent = json.loads(send.stderr.strip().splitlines()[-1])
        received = json.loads(rx.stderr.read().strip().splitlines()[-1])
    finally:
        if rx.poll() is None:
            rx.kill()
            rx.wait()
    expected = 0 if flags else 2
    assert sent["same_host_messages"] == received["same_host_messages"] == expected
    assert received["same_host_bytes"] == expected * obj["a"].nbytes
    assert (out / "1.0.bin").read_bytes() == bytes(bufs[0].raw())
