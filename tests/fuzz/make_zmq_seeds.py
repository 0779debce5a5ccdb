#!/usr/bin/env python3
"""Seeds for the zmq_frames fuzz target, made by a real producer: picklewire.wire (the pure-Python
peer, which speaks the same wire as the C++ sender) encodes objects in both wire versions, raw and
lz4, and each multipart message is written in the target's input layout: u8 frame count, a u16
little-endian length per frame but the last, then the frames' bytes.
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
print(f"{n} seeds in {out}")
