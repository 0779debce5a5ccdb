"""Side by side in one run: the Python users' best practice today (CPython pickle protocol 5 +
pyzmq send_multipart(copy=False)) against picklewire's Python module (Sender.send(array) /
Receiver.recv()) over the same ZeroMQ transport. One numpy float64 array per message; the
receiver gets a usable ndarray each time (pickle.loads on the frames / recv()).

    cmake --build build --target _picklewire
    /usr/bin/python3 bench/zmq_vs_pyzmq.py --build build [--max-size BYTES] [--rounds 3]

Rounds alternate the two sides so that drift on this shared machine hits both alike; each keeps
its best rate. Prints GB/s (10^9 B/s) and the ratio picklewire / pyzmq. For the C++ Message path
against raw libzmq see build/bench/zmq_bench and docs/performance.md ("ZeroMQ").
"""
import argparse
import os
import pathlib
import pickle
import sys
import threading
import time

import numpy
import zmq


def hwm_for(size):
    return 2 if size >= 64 << 20 else 100


def run_picklewire(url, size, seconds=0.5):
    import picklewire
    hwm = hwm_for(size)
    rx = picklewire.Receiver.bind(url, send_hwm=hwm, recv_hwm=hwm)
    tx = picklewire.Sender.connect(url, send_hwm=hwm, recv_hwm=hwm)
    array = numpy.arange(size // 8, dtype="float64")
    received = [0]
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            try:
                rx.recv(0.02)
            except picklewire.TimeoutError:
                continue
            received[0] += 1

    t = threading.Thread(target=drain)
    t.start()
    sent = 0
    start = time.perf_counter()
    while True:
        tx.send(array)
        sent += 1
        if sent % 8 == 0 and time.perf_counter() - start > seconds:
            break
    while received[0] < sent:
        time.sleep(0.0005)
    elapsed = time.perf_counter() - start
    stop.set()
    t.join()
    tx.close()
    rx.close()
    return sent * size / elapsed


def run_pyzmq(url, size, seconds=0.5):
    ctx = zmq.Context()
    pull, push = ctx.socket(zmq.PULL), ctx.socket(zmq.PUSH)
    hwm = hwm_for(size)
    pull.setsockopt(zmq.RCVHWM, hwm)
    push.setsockopt(zmq.SNDHWM, hwm)
    pull.bind(url)
    push.connect(url)
    array = numpy.arange(size // 8, dtype="float64")
    received = [0]
    stop = threading.Event()

    def drain():
        pull.setsockopt(zmq.RCVTIMEO, 20)
        while not stop.is_set():
            try:
                frames = pull.recv_multipart(copy=False)
            except zmq.Again:
                continue
            pickle.loads(frames[0].buffer, buffers=[f.buffer for f in frames[1:]])
            received[0] += 1

    t = threading.Thread(target=drain)
    t.start()
    sent = 0
    start = time.perf_counter()
    while True:
        buffers = []
        stream = pickle.dumps(array, protocol=5, buffer_callback=buffers.append)
        push.send_multipart([stream] + [b.raw() for b in buffers], copy=False)
        sent += 1
        if sent % 8 == 0 and time.perf_counter() - start > seconds:
            break
    while received[0] < sent:
        time.sleep(0.0005)
    elapsed = time.perf_counter() - start
    stop.set()
    t.join()
    push.close(0)
    pull.close(0)
    ctx.term()
    return sent * size / elapsed


_runs = [0]


def next_url(transport):
    """A fresh address per run: a closed socket's tcp port may still be held for a moment."""
    _runs[0] += 1
    if transport == "ipc":
        return "ipc:///tmp/pw-pyzmq-bench-%d-%d" % (os.getpid(), _runs[0])
    return "tcp://127.0.0.1:%d" % (42000 + (os.getpid() * 64 + _runs[0]) % 20000)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--build", default="build", type=pathlib.Path, help="CMake build directory (for the picklewire module)")
    parser.add_argument("--max-size", type=int, default=1 << 30)
    parser.add_argument("--rounds", type=int, default=3, help="alternating pyzmq / picklewire rounds (best of)")
    args = parser.parse_args()
    sys.path.insert(0, str(args.build / "python"))
    sizes = [s for s in (1 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20, 1 << 30) if s <= args.max_size]
    print("%-4s %11s | %14s %16s %7s" % ("", "bytes", "pyzmq+pickle5", "picklewire", "ratio"))
    for transport in ("ipc", "tcp"):
        for size in sizes:
            best = {"pyzmq": 0.0, "picklewire": 0.0}
            for _ in range(args.rounds):
                best["pyzmq"] = max(best["pyzmq"], run_pyzmq(next_url(transport), size))
                best["picklewire"] = max(best["picklewire"], run_picklewire(next_url(transport), size))
            print("%-4s %11d | %9.3f GB/s %11.3f GB/s %6.2fx" % (
                transport, size, best["pyzmq"] / 1e9, best["picklewire"] / 1e9, best["picklewire"] / best["pyzmq"]), flush=True)


if __name__ == "__main__":
    main()
