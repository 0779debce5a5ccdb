#!/usr/bin/python3
"""CPython's pickle.loads / pickle.dumps beside picklewire's load / dump, on the same streams.

    /usr/bin/python3 bench/codec_vs_cpython.py --build build [--min-time 0.5] [--rounds 3] [--before DIR]

Writes the streams (protocol 5, made by CPython's C pickler) into BUILD/bench-data with a
manifest, times CPython on them, runs BUILD/bench/codec_bench (Google Benchmark, --json), and
prints a side-by-side table: MB/s of stream and ratio ours/CPython. Both sides report their best
per-call time over alternating rounds (the machine is shared and noisy). Streams with out-of-band
buffers run with a 1 KiB and a 1 GiB buffer: both sides should take the same time for both.
--before DIR: another build's DIR/bench/codec_bench (an older commit), timed in the same rounds
on the same streams; its load and dump columns are printed after ours.
"""
import argparse
import json
import mmap
import os
import pathlib
import pickle
import subprocess
import sys
import time


def make_streams():
    """name -> (object, number of objects it holds, [out-of-band payload sizes])."""
    many_small = [{"id": i, "name": "item%d" % i, "tags": ("a%d" % (i % 7), i * 0.5), "ok": i % 2 == 0}
                  for i in range(100_000)]
    ints = [i * 7919 for i in range(200_000)]
    ints_strs = ints[:100_000] + ["s%d" % i for i in range(100_000)]
    mixed = {
        "records": [(i, "user%d" % i, [i, i + 1, i + 2], {"score": i / 3, "flag": None}) for i in range(20_000)],
        "blobs": [bytes([i % 256]) * (100 + i % 5000) for i in range(2_000)],
        "text": ["line %d: %s" % (i, "x" * (i % 200)) for i in range(20_000)],
        "lookup": {"k%d" % i: i for i in range(20_000)},
        "bigints": [2**100 + i for i in range(5_000)],
        "sets": [frozenset(range(i, i + 5)) for i in range(5_000)],
    }
    mixed_count = 20_000 * 4 + 2_000 + 20_000 + 20_000 + 5_000 + 5_000
    return {
        "many_small_dicts": (many_small, 100_000 * 5, []),
        "ints": (ints, 200_000, []),
        "ints_and_strs": (ints_strs, 200_000, []),
        "mixed_graph": (mixed, mixed_count, []),
        # A large array as a protocol-5 peer sends it: metadata in-band, the data out-of-band.
        "large_array": ({"shape": (1 << 20,), "dtype": "uint8", "order": "C"}, 1, [1]),
    }


def write_streams(data_dir):
    data_dir.mkdir(parents=True, exist_ok=True)
    objects = {}
    manifest = []
    for name, (obj, count, oob) in make_streams().items():
        if oob:
            obj = dict(obj, data=pickle.PickleBuffer(b"\0" * 1024))
        bufs = []
        stream = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
        assert len(bufs) == len(oob)
        (data_dir / (name + ".pkl")).write_bytes(stream)
        manifest.append("%s %d %d" % (name, count, len(oob)))
        objects[name] = (obj, stream, count, len(oob))
    (data_dir / "manifest.txt").write_text("\n".join(manifest) + "\n")
    return objects


def best_time(fn, min_time):
    """Best per-call time over repeats that together last at least min_time seconds."""
    fn()
    best, spent, n = float("inf"), 0.0, 1
    while spent < min_time:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        spent += dt
        best = min(best, dt / n)
        if dt < 0.05:
            n *= 2
    return best


def untouched(size):
    return mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, prot=mmap.PROT_READ)


def time_cpython(objects, min_time):
    rows = {}
    for name, (obj, stream, count, nbuf) in objects.items():
        variants = [("", None)] if nbuf == 0 else [("_1KiB", 1 << 10), ("_1GiB", 1 << 30)]
        for suffix, size in variants:
            bufs = [] if size is None else [pickle.PickleBuffer(untouched(size)) for _ in range(nbuf)]
            load_t = best_time(lambda: pickle.loads(stream, buffers=bufs), min_time)
            if nbuf:  # the same graph over the big buffer, written with the buffer out-of-band
                big = dict(obj, data=bufs[0])
                dump_t = best_time(lambda: pickle.dumps(big, protocol=5, buffer_callback=lambda b: False), min_time)
            else:
                dump_t = best_time(lambda: pickle.dumps(obj, protocol=5), min_time)
            rows[name + suffix] = {"bytes": len(stream), "objects": count, "load": load_t, "dump": dump_t}
    return rows


def time_ours(build, data_dir, min_time):
    """Best per-call time like best_time: the fastest of 5 repetitions (each a mean over
    min_time / 5 seconds), so both sides report the same statistic."""
    exe = pathlib.Path(build) / "bench" / "codec_bench"
    env = dict(os.environ, PICKLEWIRE_BENCH_DATA=str(data_dir))
    out = subprocess.run([str(exe), "--benchmark_format=json", "--benchmark_min_time=%g" % (min_time / 5),
                          "--benchmark_repetitions=5"],
                         env=env, check=True, capture_output=True, text=True).stdout
    times = {}
    for b in json.loads(out)["benchmarks"]:
        if b.get("error_occurred"):
            sys.exit("codec_bench: %s: %s" % (b["name"], b.get("error_message")))
        if b.get("run_type") == "aggregate":
            continue
        unit = {"ns": 1e-9, "us": 1e-6, "ms": 1e-3, "s": 1.0}[b["time_unit"]]
        op, name = b["run_name"].split("/", 1)
        row = times.setdefault(name, {})
        row[op] = min(row.get(op, float("inf")), b["real_time"] * unit)
    return times


def best_of(a, b):
    """Per stream and operation, the faster of two measurement rounds."""
    if a is None:
        return b
    return {name: {op: min(t, a[name][op]) for op, t in row.items()} for name, row in b.items()}


def fmt_time(t):
    return "%.2f ms" % (t * 1e3) if t >= 1e-4 else "%.2f us" % (t * 1e6)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", default="build", type=pathlib.Path, help="CMake build directory")
    ap.add_argument("--min-time", default=0.5, type=float, help="seconds per measurement")
    ap.add_argument("--rounds", default=3, type=int, help="alternating CPython / picklewire rounds (best of)")
    ap.add_argument("--before", type=pathlib.Path, help="another build directory, timed in the same rounds")
    args = ap.parse_args()
    data_dir = args.build / "bench-data"
    objects = write_streams(data_dir)
    # Rounds alternate CPython and ours, so a noisy moment on this shared machine hits both sides;
    # each side keeps its best time per stream.
    cpy = ours = before = None
    for _ in range(args.rounds):
        cpy = best_of(cpy, time_cpython(objects, args.min_time))
        ours = best_of(ours, time_ours(args.build, data_dir, args.min_time))
        if args.before:
            before = best_of(before, time_ours(args.before, data_dir, args.min_time))
    head = "%-22s %9s | %-11s %-11s %6s | %-11s %-11s %6s" % (
        "stream", "bytes", "CPy loads", "our load", "ratio", "CPy dumps", "our dump", "ratio")
    if before:
        head += " | %-11s %6s %-11s %6s" % ("before load", "ratio", "before dump", "ratio")
    print(head)
    print("-" * len(head))
    for name, row in cpy.items():
        o = ours[name]
        line = "%-22s %9d | %-11s %-11s %5.1fx | %-11s %-11s %5.1fx" % (
            name, row["bytes"], fmt_time(row["load"]), fmt_time(o["load"]), row["load"] / o["load"],
            fmt_time(row["dump"]), fmt_time(o["dump"]), row["dump"] / o["dump"])
        if before:
            b = before[name]
            line += " | %-11s %5.1fx %-11s %5.1fx" % (fmt_time(b["load"]), row["load"] / b["load"],
                                                      fmt_time(b["dump"]), row["dump"] / b["dump"])
        print(line)
    print("\nMB/s of stream (ours): " + ", ".join(
        "%s load %.0f / dump %.0f" % (n, cpy[n]["bytes"] / ours[n]["load"] / 1e6, cpy[n]["bytes"] / ours[n]["dump"] / 1e6)
        for n in cpy))


if __name__ == "__main__":
    main()
