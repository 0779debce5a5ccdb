"""picklewire.Sender.send tells the ZeroMQ transport each out-of-band buffer's item size (the
exporter's itemsize, e.g. a numpy array's dtype): frame 0 carries it per buffer and lz4 shuffles by
it. Read with a plain pyzmq PULL socket, per docs/wire-format.md."""
import os
import pickle
import struct
import sys

import numpy as np
import zmq

sys.path.insert(0, os.path.dirname(__file__))
import module_support as ms  # noqa: E402

import picklewire  # noqa: E402


def _descriptors(header):
    magic, version, _flags, _reserved, count = struct.unpack_from("<4sBBHI", header, 0)
    assert magic == b"PWZM"
    start = 12 if version == 1 else 20  # version 2: a u64 stream size precedes the descriptors
    return [struct.unpack_from("<QQBBHI", header, start + 24 * i) for i in range(count)]


def test_send_shuffles_each_array_by_its_dtype_itemsize():
    ctx = zmq.Context()
    pull = ctx.socket(zmq.PULL)
    pull.linger = 0
    pull.rcvtimeo = 5000
    url = f"tcp://127.0.0.1:{ms.free_tcp_port()}"
    pull.bind(url)
    try:
        i16 = np.arange(200_000, dtype=np.int16)
        f64 = np.arange(100_000, dtype=np.float64)
        # Frames to a raw PULL: the same-host path would say hello and send a doorbell instead.
        with picklewire.Sender.connect(url, compress=True, same_host=False) as tx:
            tx.send({"i16": i16, "f64": f64, "raw": pickle.PickleBuffer(bytearray(os.urandom(100_000)))})
            frames = pull.recv_multipart()
        descriptors = _descriptors(frames[0])
        assert len(descriptors) == 3
        (raw16, wire16, codec16, flags16, _, item16), (_, wire64, codec64, flags64, _, item64), raw = descriptors
        assert (item16, codec16, flags16 & 2) == (2, 1, 2)  # 2 is no sampler guess: only the hint gives it
        assert (item64, codec64, flags64 & 2) == (8, 1, 2)
        assert raw[5] == 1 and raw[2] == 0  # a bytearray exports item size 1; random bytes: sent raw
        assert raw16 == i16.nbytes and wire16 < i16.nbytes // 20
        assert wire64 < f64.nbytes // 20
    finally:
        pull.close()
        ctx.term()
