#!/usr/bin/env python3
"""Moves numpy arrays between two processes, side by side with what Python users do today.

Measures, per message, the time from the sender starting to send until the receiver holds a
usable array (both timestamps from CLOCK_MONOTONIC, shared by the processes; the sender's start
time travels with the message). One message in flight at a time; median over repeats.

Methods:
  pw-shm-copy        picklewire shm://, the array lives in the sender's heap (one copy, into the segment)
  pw-shm-empty       picklewire shm://, Sender.empty() allocates the array in the segment: alloc + send
  pw-zmq-ipc         picklewire ipc:// (same host: the buffer moves through the receiver's shm channel)
  pw-zmq-tcp         picklewire tcp://127.0.0.1 (same host, as above)
  pw-zmq-tcp-empty   picklewire tcp://127.0.0.1, Sender.empty() lends the array from the receiver's channel
  pw-zmq-ipc-frames  picklewire ipc:// with same_host=False: ZeroMQ frames (the path across hosts)
  pw-zmq-tcp-frames  picklewire tcp://127.0.0.1 with same_host=False
  mp-queue           multiprocessing.Queue put/get
  pyzmq-pickle5      pickle protocol 5 + pyzmq send_multipart(copy=False) / recv_multipart(copy=False), ipc://
  pyzmq-pickle5-tcp  the same over tcp://127.0.0.1
  shm-handrolled     one multiprocessing.shared_memory segment reused for every message: np.copyto
                     into it + a pipe message with (shape, dtype); the receiver views the segment

Usage:
  PYTHONPATH=build/python /usr/bin/python3 bench/python_transfer.py [--sizes-mib 1 64 512]
        [--methods ...] [--plot docs/python_transfer.png] [--json out.json]
"""

import argparse
import json
import multiprocessing as mp
import os
import pickle
import statistics
import sys
import tempfile
import time

import numpy as np

MiB = 1 << 20
METHODS = ["pw-shm-copy", "pw-shm-empty", "pw-zmq-ipc", "pw-zmq-tcp", "pw-zmq-tcp-empty", "pw-zmq-ipc-frames",
           "pw-zmq-tcp-frames", "mp-queue", "pyzmq-pickle5", "pyzmq-pickle5-tcp", "shm-handrolled"]


def repeats_for(nbytes):
    return 30 if nbytes <= 4 * MiB else (8 if nbytes <= 128 * MiB else 4)


def now():
    return time.perf_counter()  # CLOCK_MONOTONIC on Linux: comparable across processes


# ---- picklewire -------------------------------------------------------------------------------

def pw_receiver(url, nbytes, reps, options, ctrl):
    import picklewire
    times = []
    with picklewire.Receiver.bind(url, **options) as rx:
        ctrl.send("ready")
        for _ in range(reps):
            t0, arr = rx.recv(timeout=120)
            t1 = now()
            assert arr.nbytes == nbytes
            times.append(t1 - t0)
            del arr
            ctrl.send("next")
    ctrl.send(times)


def pw_sender(url, nbytes, reps, use_empty, options, ctrl):
    import picklewire
    ctrl.recv()  # ready
    with picklewire.Sender.connect(url, **options) as tx:
        src = np.ones(nbytes // 8, dtype=np.float64)
        for _ in range(reps):
            t0 = now()
            if use_empty:
                arr = tx.empty(nbytes // 8, np.float64)
                tx.send((t0, arr), timeout=120)
                del arr
            else:
                tx.send((t0, src), timeout=120)
            ctrl.recv()  # the receiver holds it (and dropped it)


# ---- multiprocessing.Queue --------------------------------------------------------------------

def queue_receiver(q, nbytes, reps, ctrl):
    times = []
    ctrl.send("ready")
    for _ in range(reps):
        t0, arr = q.get()
        times.append(now() - t0)
        assert arr.nbytes == nbytes
        del arr
        ctrl.send("next")
    ctrl.send(times)


def queue_sender(q, nbytes, reps, ctrl):
    ctrl.recv()
    src = np.ones(nbytes // 8, dtype=np.float64)
    for _ in range(reps):
        q.put((now(), src))
        ctrl.recv()


# ---- pyzmq + pickle 5 ---------------------------------------------------------------------------

def pyzmq_receiver(url, nbytes, reps, ctrl):
    import zmq
    ctx = zmq.Context()
    s = ctx.socket(zmq.PULL)
    s.bind(url)
    times = []
    ctrl.send("ready")
    for _ in range(reps):
        frames = s.recv_multipart(copy=False)
        t0, arr = pickle.loads(frames[0].buffer, buffers=[f.buffer for f in frames[1:]])
        times.append(now() - t0)
        assert arr.nbytes == nbytes
        del arr, frames
        ctrl.send("next")
    s.close(0)
    ctx.term()
    ctrl.send(times)


def pyzmq_sender(url, nbytes, reps, ctrl):
    import zmq
    ctrl.recv()
    ctx = zmq.Context()
    s = ctx.socket(zmq.PUSH)
    s.connect(url)
    src = np.ones(nbytes // 8, dtype=np.float64)
    for _ in range(reps):
        t0 = now()
        buffers = []
        stream = pickle.dumps((t0, src), protocol=5, buffer_callback=buffers.append)
        s.send_multipart([stream, *buffers], copy=False)
        ctrl.recv()
    s.close(linger=-1)
    ctx.term()


# ---- hand-rolled multiprocessing.shared_memory ---------------------------------------------------

def handrolled_receiver(name, nbytes, reps, data, ctrl):
    from multiprocessing import shared_memory
    seg = shared_memory.SharedMemory(name=name)
    times = []
    ctrl.send("ready")
    for _ in range(reps):
        t0, shape, dtype = data.recv()
        arr = np.ndarray(shape, dtype, buffer=seg.buf)
        times.append(now() - t0)
        assert arr.nbytes == nbytes
        del arr
        ctrl.send("next")
    seg.close()
    ctrl.send(times)


def handrolled_sender(name, nbytes, reps, data, ctrl):
    from multiprocessing import shared_memory
    seg = shared_memory.SharedMemory(name=name)
    ctrl.recv()
    src = np.ones(nbytes // 8, dtype=np.float64)
    dst = np.ndarray(src.shape, src.dtype, buffer=seg.buf)
    for _ in range(reps):
        t0 = now()
        np.copyto(dst, src)
        data.send((t0, src.shape, src.dtype.str))
        ctrl.recv()
    del dst
    seg.close()


# ---- driver --------------------------------------------------------------------------------------

def run_pair(ctx, recv_target, recv_args, send_target, send_args):
    r_ctrl, s_ctrl = ctx.Pipe()  # receiver <-> sender handshakes
    r_res, parent_res = ctx.Pipe()
    # The receiver talks to the sender ("ready"/"next") and finally sends its times to the parent.
    receiver = ctx.Process(target=_receiver_main, args=(recv_target, recv_args, r_ctrl, r_res))
    sender = ctx.Process(target=send_target, args=(*send_args, s_ctrl))
    receiver.start()
    sender.start()
    times = parent_res.recv()
    sender.join(300)
    receiver.join(300)
    if isinstance(times, str):
        raise RuntimeError(times)
    return times


class _SplitCtrl:
    """Handshakes go to the sender; the final list of times goes to the parent."""

    def __init__(self, to_sender, to_parent):
        self.to_sender, self.to_parent = to_sender, to_parent

    def send(self, msg):
        (self.to_parent if isinstance(msg, list) else self.to_sender).send(msg)


def _receiver_main(target, args, to_sender, to_parent):
    try:
        target(*args, _SplitCtrl(to_sender, to_parent))
    except BaseException as e:
        to_parent.send(f"{target.__name__}: {type(e).__name__}: {e}")
        raise


def measure(method, nbytes, reps, tmpdir):
    ctx = mp.get_context("spawn")
    tag = f"{os.getpid()}-{method}-{nbytes}"
    if method.startswith("pw-shm"):
        capacity = max(64 * MiB, 2 * nbytes + 16 * MiB)
        return _pw(ctx, f"shm://pwbench-py-{tag}", nbytes, reps, {"capacity": capacity}, method == "pw-shm-empty")
    if method.startswith("pw-zmq"):
        # Library defaults, except that the frames variants turn the same-host path off on both ends.
        url = f"ipc://{tmpdir}/pw-{tag}.ipc" if "-ipc" in method else f"tcp://127.0.0.1:{_free_port()}"
        options = {"same_host": False} if method.endswith("-frames") else {}
        return _pw(ctx, url, nbytes, reps, options, method.endswith("-empty"))
    if method == "mp-queue":
        q = ctx.Queue()
        return run_pair(ctx, queue_receiver, (q, nbytes, reps), queue_sender, (q, nbytes, reps))
    if method.startswith("pyzmq-pickle5"):
        url = f"tcp://127.0.0.1:{_free_port()}" if method.endswith("-tcp") else f"ipc://{tmpdir}/pyzmq-{tag}.ipc"
        return run_pair(ctx, pyzmq_receiver, (url, nbytes, reps), pyzmq_sender, (url, nbytes, reps))
    if method == "shm-handrolled":
        from multiprocessing import shared_memory
        seg = shared_memory.SharedMemory(create=True, size=nbytes)
        try:
            np.ndarray(nbytes, np.uint8, buffer=seg.buf)[:] = 0  # pre-fault, as a reused segment would be
            a, b = ctx.Pipe()
            return run_pair(ctx, handrolled_receiver, (seg.name, nbytes, reps, a), handrolled_sender,
                            (seg.name, nbytes, reps, b))
        finally:
            seg.close()
            seg.unlink()
    raise ValueError(method)


def _pw(ctx, url, nbytes, reps, options, use_empty):
    receiver_options = {k: v for k, v in options.items()}
    sender_options = {k: v for k, v in options.items() if k != "capacity"}
    return run_pair(ctx, pw_receiver, (url, nbytes, reps, receiver_options), pw_sender,
                    (url, nbytes, reps, use_empty, sender_options))


def _free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes-mib", type=int, nargs="+", default=[1, 4, 16, 64, 256])
    ap.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    ap.add_argument("--plot", default=None,
                    help="write a PNG: time per message vs size, one line per method, with its spread")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()

    results = {}  # (method, size) -> median seconds
    spread = {}  # (method, size) -> (fastest, slowest) seconds
    with tempfile.TemporaryDirectory() as tmpdir:
        for size_mib in args.sizes_mib:
            nbytes = size_mib * MiB
            for method in args.methods:
                times = measure(method, nbytes, repeats_for(nbytes), tmpdir)
                results[(method, size_mib)] = statistics.median(times)
                spread[(method, size_mib)] = (min(times), max(times))
                print(f"  {method:15s} {size_mib:5d} MiB  median {results[(method, size_mib)] * 1e3:10.3f} ms"
                      f"  ({len(times)} runs)", file=sys.stderr, flush=True)

    header = f"{'method':15s}" + "".join(f" | {s:>5d} MiB: ms   GB/s  xQueue" for s in args.sizes_mib)
    print(header)
    print("-" * len(header))
    for method in args.methods:
        row = f"{method:15s}"
        for s in args.sizes_mib:
            t = results[(method, s)]
            q = results.get(("mp-queue", s))
            ratio = f"{q / t:6.1f}x" if q else "     -"
            row += f" | {t * 1e3:12.3f} {s * MiB / t / 1e9:6.2f} {ratio}"
        print(row)
    for s in args.sizes_mib:
        hand = results.get(("shm-handrolled", s))
        copy = results.get(("pw-shm-copy", s))
        ipc, pyzmq = results.get(("pw-zmq-ipc", s)), results.get(("pyzmq-pickle5", s))
        notes = []
        if hand and copy:
            notes.append(f"pw-shm-copy / hand-rolled = {hand / copy:.2f}x")
        if ipc and pyzmq:
            notes.append(f"pw-zmq-ipc / pyzmq = {pyzmq / ipc:.2f}x")
        # Issue 16 (same host under ZeroMQ URLs): >= 5x pickle 5 + pyzmq, within 0.8x of shm://.
        tcp, pyzmq_tcp = results.get(("pw-zmq-tcp", s)), results.get(("pyzmq-pickle5-tcp", s))
        if tcp and pyzmq_tcp:
            notes.append(f"pw-zmq-tcp / pyzmq-tcp = {pyzmq_tcp / tcp:.2f}x")
        for zmq_method in ("pw-zmq-ipc", "pw-zmq-tcp"):
            t = results.get((zmq_method, s))
            if t and copy:
                notes.append(f"{zmq_method} / pw-shm-copy = {copy / t:.2f}x")
        tcp_empty, shm_empty = results.get(("pw-zmq-tcp-empty", s)), results.get(("pw-shm-empty", s))
        if tcp_empty and shm_empty:
            notes.append(f"pw-zmq-tcp-empty / pw-shm-empty = {shm_empty / tcp_empty:.2f}x")
        if notes:
            print(f"{s} MiB: " + ", ".join(notes))

    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{m}@{s}": t for (m, s), t in results.items()}, f, indent=1)
    if args.plot:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        # Time per message, not GB/s: on the loan path (pw-shm-empty) no payload bytes move, so a
        # rate would be meaningless; each point is the median, the bar the fastest..slowest run.
        fig, ax = plt.subplots(figsize=(8, 5))
        for method in args.methods:
            xs = args.sizes_mib
            med = [results[(method, s)] * 1e3 for s in xs]
            low = [m - spread[(method, s)][0] * 1e3 for m, s in zip(med, xs)]
            high = [spread[(method, s)][1] * 1e3 - m for m, s in zip(med, xs)]
            ax.errorbar(xs, med, yerr=[low, high], marker="o", capsize=3, label=method)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("array size (MiB)")
        ax.set_xticks(args.sizes_mib, [str(s) for s in args.sizes_mib])
        ax.set_ylabel("ms per message, send start -> usable array\n(bars: fastest..slowest run)")
        ax.set_title("numpy array between two processes (median of each method's runs)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=110)


if __name__ == "__main__":
    main()
