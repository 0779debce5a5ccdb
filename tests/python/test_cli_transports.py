"""`picklewire send` / `recv` over ZeroMQ tcp:// on 127.0.0.1: lz4 compression and CURVE keys.

The ledger each side prints with --stats proves what happened on the wire: the sender recorded an
lz4 pass ("compressed"), the receiver a decompression; CURVE refuses a client without the right key.
"""
import json
import os
import pickle
import socket
import subprocess
from pathlib import Path

import numpy as np
import zmq

CLI = os.environ.get("PICKLEWIRE_CLI") or str(Path(os.environ.get("PICKLEWIRE_BUILD_DIR", "build")) / "picklewire")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stats_line(stderr):
    lines = [l for l in stderr.splitlines() if l.startswith("{")]
    assert len(lines) == 1, stderr
    return json.loads(lines[0])


def write_message(tmp_path, obj):
    buffers = []
    stream = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    (tmp_path / "m.pkl").write_bytes(stream)
    args = []
    for i, b in enumerate(buffers):
        (tmp_path / f"m.{i}.bin").write_bytes(b.raw())
        args += ["--buffer", str(tmp_path / f"m.{i}.bin")]
    return stream, buffers, args


def run_pair(tmp_path, url, send_flags, recv_flags, args, recv_timeout="10"):
    out = tmp_path / "out"
    recv = subprocess.Popen([CLI, "recv", url, "--out", str(out), "--count", "1", "--timeout", recv_timeout, "--stats",
                             *recv_flags], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    send = subprocess.Popen([CLI, "send", url, str(tmp_path / "m.pkl"), *args, "--stats", *send_flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        recv_err = recv.communicate(timeout=60)[1]
        if recv.returncode == 0 and list(out.glob("0.pkl")):
            send_err = send.communicate(timeout=60)[1]
        else:  # nothing arrived: the sender may linger on its queued message
            send.kill()
            send_err = send.communicate()[1]
    finally:
        for p in (recv, send):
            if p.poll() is None:
                p.kill()
                p.wait()
    return out, recv, recv_err, send, send_err


def test_send_compress_over_tcp_round_trips_and_is_in_both_ledgers(tmp_path):
    arange = np.arange(2_000_000, dtype=np.float64)  # compressible (byte shuffle + lz4)
    obj = {"a": arange, "meta": ["x", 1]}
    stream, buffers, args = write_message(tmp_path, obj)
    url = f"tcp://127.0.0.1:{free_port()}"
    # Frames, as between hosts: on one host the buffer would move through shared memory instead.
    out, recv, recv_err, send, send_err = run_pair(tmp_path, url, ["--compress", "--no-same-host"], [], args)
    assert recv.returncode == 0, recv_err
    assert send.returncode == 0, send_err
    assert (out / "0.pkl").read_bytes() == stream
    got = pickle.loads((out / "0.pkl").read_bytes(), buffers=[(out / "0.0.bin").read_bytes()])
    np.testing.assert_array_equal(got["a"], arange)
    sent, received = stats_line(send_err), stats_line(recv_err)
    assert sent["copied_bytes"].get("compressed") == arange.nbytes
    assert sent["wire_bytes"] < arange.nbytes / 2
    assert received["copied_bytes"].get("decompressed", 0) > 0
    assert received["oob_bytes"] == arange.nbytes


def test_without_compress_nothing_is_compressed(tmp_path):
    stream, buffers, args = write_message(tmp_path, pickle.PickleBuffer(bytes(300_000)))
    out, recv, recv_err, send, send_err = run_pair(tmp_path, f"tcp://127.0.0.1:{free_port()}", [], [], args)
    assert recv.returncode == 0 and send.returncode == 0, recv_err + send_err
    assert "compressed" not in stats_line(send_err)["copied_bytes"]
    assert (out / "0.0.bin").read_bytes() == bytes(300_000)


def keypair(tmp_path, who):
    public, secret = zmq.curve_keypair()
    (tmp_path / f"{who}.pub").write_bytes(public + b"\n")
    (tmp_path / f"{who}.key").write_bytes(secret + b"\n")
    (tmp_path / f"{who}.key").chmod(0o600)
    return public


def test_curve_keys_encrypt_and_refuse_an_unlisted_client(tmp_path):
    keypair(tmp_path, "server")
    client = keypair(tmp_path, "client")
    keypair(tmp_path, "intruder")
    (tmp_path / "allowed").write_bytes(b"# clients\n" + client + b"\n")
    stream, buffers, args = write_message(tmp_path, [b"secret" * 10_000, pickle.PickleBuffer(b"s" * 50_000)])
    server = ["--curve-secret-key", str(tmp_path / "server.key"), "--curve-allow", str(tmp_path / "allowed")]

    def as_client(who):
        return ["--curve-server-key", str(tmp_path / "server.pub"), "--curve-secret-key", str(tmp_path / f"{who}.key"),
                "--curve-public-key", str(tmp_path / f"{who}.pub")]

    out, recv, recv_err, send, send_err = run_pair(tmp_path, f"tcp://127.0.0.1:{free_port()}", as_client("client"),
                                                   server, args)
    assert recv.returncode == 0 and send.returncode == 0, recv_err + send_err
    assert pickle.loads((out / "0.pkl").read_bytes(), buffers=[(out / "0.0.bin").read_bytes()])[1] == b"s" * 50_000

    (out / "0.pkl").unlink()
    out, recv, recv_err, send, send_err = run_pair(tmp_path, f"tcp://127.0.0.1:{free_port()}", as_client("intruder"),
                                                   server, args, recv_timeout="1.5")
    assert recv.returncode == 0, recv_err
    assert not list(out.glob("*.pkl")), "an unlisted client's message was delivered"
    assert stats_line(recv_err)["messages"] == 0


def test_zeromq_flags_on_shm_are_refused(tmp_path):
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(None, protocol=5))
    r = subprocess.run([CLI, "send", "shm://pwtest-never-bound", str(tmp_path / "m.pkl"), "--compress"],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "ZeroMQ" in r.stderr
    r = subprocess.run([CLI, "recv", "tcp://127.0.0.1:1", "--curve-public-key", str(tmp_path / "m.pkl")],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode != 0 and "curve-server-key" in r.stderr


def test_bench_runs_over_ipc_with_and_without_compress(tmp_path):
    base = tmp_path / "bench"
    for flags, compressed in (([], False), (["--compress"], True)):
        # Frames, as between hosts (on one host the buffers would move through shared memory).
        r = subprocess.run([CLI, "bench", f"ipc://{base}", "--size", "262144", "--count", "50", "--json",
                            "--no-same-host", *flags],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        result = json.loads(r.stdout)
        assert result["messages_per_s"] > 0 and result["rtt_us"]["p50"] > 0
        assert (result["copied_bytes_per_message"] > 0) == compressed  # the lz4 pass is in the ledger
    assert not list(tmp_path.glob("bench*")), "bench left its ipc socket files"


def test_bench_over_shm_counts_the_copies_of_both_sides_per_payload_message():
    name = f"pwtest-bench-{os.getpid()}"
    # 3 MiB: above the size from which a helper thread shares the copy; copied in once, or loaned.
    # 64 B: the whole message fits a lane cell, so it is copied into the lane and out of it.
    for size, flags, sending, receiving in ((3 << 20, [], 1.0, 0.0), (3 << 20, ["--loan"], 0.0, 0.0),
                                            (64, [], 1.0, 1.0)):
        r = subprocess.run([CLI, "bench", f"shm://{name}", "--size", str(size), "--count", "20", "--json", *flags],
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr
        result = json.loads(r.stdout)
        assert result["sender_copies_per_message"] == sending
        assert result["receiver_copies_per_message"] == receiving
        assert result["copies_per_message"] == sending + receiving
        assert result["copied_bytes_per_message"] == (sending + receiving) * size
        assert result["throughput_GBps"] > 0 and result["rtt_us"]["p50"] > 0
    assert not list(Path("/dev/shm").glob(f"picklewire.{name}*")), "bench left a segment behind"
