#!/usr/bin/env python3
"""Seeds for the zmq_frames fuzz target, made by a real producer: picklewire.wire (the pure-Python
peer, which speaks the same wire as the C++ sender) encodes objects in both wire versions, raw and
lz4, and each multipart message is written in the target's input layout: u8 frame count, a u16
little-endian length per frame but the last, then the frames' bytes.
Control messages come from the C++ sender itself: the `picklewire` command (PICKLEWIRE_CLI, or
build/picklewire) sends a large buffer over ipc:// to a raw PULL socket and says hello first; a
doorbell seed is that hello's frame rewritten as the kind-2 record of docs/wire-format.md (a
doorbell only flows to a receiver that answered, which a raw socket cannot).
Usage: make_zmq_seeds.py DIR"""
import os
import pickle
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
import numpy as np  # noqa: E402

from picklewire import wire  # noqa: E402

out = sys.argv[1]
os.makedirs(out, exist_ok=True)
objects = [
    None, b"x" * 10, {"a": np.arange(12, dtype=np.int16)}, [np.ones(700, dtype=np.float64), b"y" * 5000],
    pickle.PickleBuffer(bytearray(b"z" * 3000)), np.zeros((64, 64), dtype=np.uint8), "text" * 50,
]
n = 0
for version in (1, 2):
    for compress in ((False, True) if wire.lz4_available() else (False,)):
        for threshold in (0, 64, 4096):
            for obj in objects:
                frames = [bytes(f) for f in wire.encode(obj, inband_threshold=threshold, compress=compress, version=version)]
                if len(frames) > 8 or any(len(f) > 0xFFFF for f in frames[:-1]):
                    continue
                data = bytes([len(frames) - 1]) + b"".join(struct.pack("<H", len(f)) + f for f in frames[:-1]) + frames[-1]
                with open(os.path.join(out, f"seed-{n}"), "wb") as f:
                    f.write(data)
                n += 1


def write_seed(frames):
    global n
    data = bytes([len(frames) - 1]) + b"".join(struct.pack("<H", len(f)) + f for f in frames[:-1]) + frames[-1]
    with open(os.path.join(out, f"seed-{n}"), "wb") as f:
        f.write(data)
    n += 1


def control_seeds():
    import subprocess
    import tempfile
    import zmq
    root = os.path.join(os.path.dirname(__file__), "..", "..")
    cli = os.environ.get("PICKLEWIRE_CLI", os.path.join(root, "build", "picklewire"))
    if not os.access(cli, os.X_OK):
        print(f"no {cli}: no control-message seeds (build the command first)")
        return
    with tempfile.TemporaryDirectory() as tmp:
        bufs = []
        with open(os.path.join(tmp, "s.pkl"), "wb") as f:
            f.write(pickle.dumps(np.zeros(1 << 14), protocol=5, buffer_callback=bufs.append))
        with open(os.path.join(tmp, "b.bin"), "wb") as f:
            f.write(bytes(bufs[0].raw()))
        ctx = zmq.Context()
        pull = ctx.socket(zmq.PULL)
        pull.rcvtimeo = 20000
        pull.linger = 0
        url = "ipc://" + os.path.join(tmp, "sock")
        pull.bind(url)
        sender = subprocess.Popen([cli, "send", url, os.path.join(tmp, "s.pkl"), "--buffer", os.path.join(tmp, "b.bin")])
        try:
            hello = pull.recv_multipart()
            rest = pull.recv_multipart()  # the message itself, as frames (nobody answered)
        finally:
            sender.wait(30)
            pull.close()
            ctx.term()
    if wire.control_kind(hello) != wire.CONTROL_HELLO:
        raise SystemExit("the sender's first message was not a hello")
    write_seed(hello)
    write_seed(rest)
    # The doorbell: same fixed part with a 24-byte record (kind 2, the hello's sender id, sequence 1).
    head = bytearray(hello[0][:20])
    struct.pack_into("<Q", head, 12, 24)
    sender_id = hello[0][20 + 16:20 + 24]
    write_seed([bytes(head) + bytes([2, 0, 0, 0, 0, 0, 0, 0]) + sender_id + struct.pack("<Q", 1)])


control_seeds()
print(f"{n} seeds in {out}")
