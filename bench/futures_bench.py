#!/usr/bin/env python3
"""picklewire.futures.ProcessPoolExecutor side by side with concurrent.futures and joblib, in one run.

Workloads (every executor warmed up first: its workers started and, for picklewire, its channels
bound by one task of the same kind; the timed part is the steady state a long-lived pool sees):

  roundtrip   `submit(identity, a).result()` with a 64 MiB float64 array, one call in flight;
              GB/s = 64 MiB / seconds per call (median). For each start method.
              Executors: concurrent.futures.ProcessPoolExecutor (std), joblib's memmapping
              executor (joblib.executor.get_memmapping_executor, loky, arrays above 1 MB memmapped
              to a temporary folder), picklewire.futures.ProcessPoolExecutor (pw), and pw where the
              worker builds its result in `picklewire.futures.empty()` (pw-empty: `copy_into_empty`).
  tiny        2000 `submit(add, i, 1)` then wait for all; tasks per second (median).
  map         `for r in ex.map(double, arrays): ...` over 64 arrays of 16 MiB with 2 workers
              (each result is a new 16 MiB array, consumed and dropped); GB/s of input data.
  sizes       the round trip of `roundtrip` at 16 KiB .. 4 MiB, std and pw (first context only):
              where the default inband_threshold (64 KiB) sits.

Usage:
  PYTHONPATH=build/python /usr/bin/python3 bench/futures_bench.py [--workloads roundtrip tiny map]
        [--contexts fork spawn forkserver] [--json out.json] [--plot docs/futures_bench.png]
        [--replot out.json --plot docs/futures_bench.png]
"""

import argparse
import concurrent.futures
import json
import multiprocessing as mp
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))  # workers import this module by name

MiB = 1 << 20


def identity(x):
    return x


def copy_into_empty(x):
    from picklewire import futures

    out = futures.empty(x.shape, x.dtype)
    np.copyto(out, x)
    return out


def add(x, y):
    return x + y


def double(a):
    return a * 2


def make_executor(kind, ctx, workers=2):
    context = mp.get_context(ctx)
    if kind == "std":
        return concurrent.futures.ProcessPoolExecutor(workers, mp_context=context)
    if kind in ("pw", "pw-empty"):
        from picklewire import futures

        return futures.ProcessPoolExecutor(workers, mp_context=context)
    if kind == "joblib":
        from joblib.executor import get_memmapping_executor

        return get_memmapping_executor(workers, context=ctx) if ctx != "fork" else get_memmapping_executor(workers)
    raise ValueError(kind)


def close(kind, ex):
    if kind == "joblib":
        ex.shutdown(wait=True, kill_workers=True)
    else:
        ex.shutdown(wait=True)


def roundtrip(kind, ctx, repeats):
    a = np.random.default_rng(1).random(64 * MiB // 8)
    fn = copy_into_empty if kind == "pw-empty" else identity
    ex = make_executor(kind, ctx)
    try:
        for _ in range(2):  # start workers, bind channels, fault pages in
            r = ex.submit(fn, a).result()
            assert r.shape == a.shape and r[12345] == a[12345]
            del r
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            r = ex.submit(fn, a).result()
            times.append(time.perf_counter() - t)
            del r
        stats = ex.stats() if hasattr(ex, "stats") else None
    finally:
        close(kind, ex)
    return {"gbps": a.nbytes / statistics.median(times) / 1e9, "seconds": statistics.median(times),
            "repeats": repeats, "stats": stats}


def tiny(kind, ctx, repeats, count=2000):
    ex = make_executor(kind, ctx)
    try:
        for f in [ex.submit(add, i, 1) for i in range(200)]:
            f.result()
        rates = []
        for _ in range(repeats):
            t = time.perf_counter()
            fs = [ex.submit(add, i, 1) for i in range(count)]
            assert [f.result() for f in fs] == [i + 1 for i in range(count)]
            rates.append(count / (time.perf_counter() - t))
    finally:
        close(kind, ex)
    return {"tasks_per_s": statistics.median(rates), "repeats": repeats}


def sizes(kind, ctx, sizes_bytes, repeats=15):
    """Seconds per `submit(identity, a).result()` for each size (median), one executor for all."""
    ex = make_executor(kind, ctx)
    out = {}
    try:
        for nbytes in sizes_bytes:
            a = np.ones(nbytes // 8)
            for _ in range(2):
                ex.submit(identity, a).result()
            times = []
            for _ in range(repeats):
                t = time.perf_counter()
                ex.submit(identity, a).result()
                times.append(time.perf_counter() - t)
            out[nbytes] = statistics.median(times)
    finally:
        close(kind, ex)
    return out


def map_arrays(kind, ctx, repeats, count=64, size=16 * MiB):
    arrays = [np.full(size // 8, i, dtype=np.float64) for i in range(count)]
    ex = make_executor(kind, ctx)
    try:
        for r in ex.map(double, arrays[:2]):  # warm-up
            del r
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            checksum = 0.0
            for r in ex.map(double, arrays):
                checksum += r[-1]
                del r
            times.append(time.perf_counter() - t)
            assert checksum == 2.0 * sum(range(count))
        stats = ex.stats() if hasattr(ex, "stats") else None
    finally:
        close(kind, ex)
    return {"gbps": count * size / statistics.median(times) / 1e9, "seconds": statistics.median(times),
            "repeats": repeats, "stats": stats}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", nargs="+", default=["roundtrip", "tiny", "map", "sizes"])
    ap.add_argument("--contexts", nargs="+", default=["fork", "spawn", "forkserver"])
    ap.add_argument("--json")
    ap.add_argument("--plot")
    ap.add_argument("--replot", metavar="JSON", help="only redraw --plot from the --json of an earlier run")
    args = ap.parse_args()
    if args.replot:
        with open(args.replot) as f:
            results = json.load(f)["results"]
        plot(results, args.contexts, args.plot)
        return

    results = {"roundtrip": {}, "tiny": {}, "map": {}, "sizes": {}}
    if "roundtrip" in args.workloads:
        for ctx in args.contexts:
            for kind, repeats in (("std", 4), ("joblib", 4), ("pw", 15), ("pw-empty", 15)):
                res = roundtrip(kind, ctx, repeats)
                results["roundtrip"][f"{kind}/{ctx}"] = res
                print(f"roundtrip 64 MiB  {kind:9s} {ctx:10s} {res['gbps']:8.3f} GB/s", flush=True)
    if "tiny" in args.workloads:
        for ctx in args.contexts[:1]:
            for kind in ("std", "pw") * 3:  # interleaved: the machine's load drifts
                res = tiny(kind, ctx, 5)
                results["tiny"].setdefault(f"{kind}/{ctx}", []).append(res["tasks_per_s"])
                print(f"tiny x2000        {kind:9s} {ctx:10s} {res['tasks_per_s']:8.0f} tasks/s", flush=True)
    if "map" in args.workloads:
        for ctx in args.contexts[:1]:
            for kind, repeats in (("std", 1), ("pw", 3)):
                res = map_arrays(kind, ctx, repeats)
                results["map"][f"{kind}/{ctx}"] = res
                print(f"map 64x16 MiB     {kind:9s} {ctx:10s} {res['gbps']:8.3f} GB/s", flush=True)

    if "sizes" in args.workloads:
        ladder = [16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20]
        for kind in ("std", "pw"):
            results["sizes"][kind] = sizes(kind, args.contexts[0], ladder)
        for nbytes in ladder:
            std, pw = results["sizes"]["std"][nbytes], results["sizes"]["pw"][nbytes]
            print(f"roundtrip {nbytes >> 10:6d} KiB  std {std * 1e3:8.3f} ms  pw {pw * 1e3:8.3f} ms  {std / pw:6.2f}x",
                  flush=True)

    summary = summarise(results, args.contexts)
    for line in summary:
        print(line)
    print(markdown(results, args.contexts))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results, "summary": summary}, f, indent=1, default=str)
    if args.plot:
        plot(results, args.contexts, args.plot)


def summarise(results, contexts):
    out = []
    rt = results["roundtrip"]
    for ctx in contexts:
        if f"pw/{ctx}" in rt:
            pw = rt[f"pw/{ctx}"]["gbps"]
            out.append(f"roundtrip {ctx}: pw {pw / rt[f'std/{ctx}']['gbps']:.1f}x std, "
                       f"{pw / rt[f'joblib/{ctx}']['gbps']:.1f}x joblib; pw-empty "
                       f"{rt[f'pw-empty/{ctx}']['gbps'] / rt[f'std/{ctx}']['gbps']:.1f}x std")
    for ctx in contexts[:1]:
        if f"pw/{ctx}" in results["tiny"]:
            pw, std = statistics.median(results["tiny"][f"pw/{ctx}"]), statistics.median(results["tiny"][f"std/{ctx}"])
            out.append(f"tiny {ctx}: pw {pw / std:.2f}x std throughput")
        if f"pw/{ctx}" in results["map"]:
            m = results["map"]
            out.append(f"map {ctx}: pw {m[f'pw/{ctx}']['gbps'] / m[f'std/{ctx}']['gbps']:.1f}x std")
    return out


def markdown(results, contexts):
    """The run as the tables of docs/performance.md."""
    lines = []
    rt = results["roundtrip"]
    if rt:
        lines += ["| 64 MiB round trip | " + " | ".join(contexts) + " |", "|---|" + "---|" * len(contexts)]
        for kind in ("std", "joblib", "pw", "pw-empty"):
            cells = []
            for ctx in contexts:
                r = rt.get(f"{kind}/{ctx}")
                cells.append(f"{r['gbps']:.3f} GB/s ({r['gbps'] / rt[f'std/{ctx}']['gbps']:.1f}x std)" if r else "")
            lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    ctx = contexts[0]
    if results["tiny"]:
        runs = {k: results["tiny"].get(f"{k}/{ctx}", []) for k in ("std", "pw")}
        lines += ["", f"| 2000 tiny tasks ({ctx}) | tasks/s, each interleaved round | median | pw / std |", "|---|---|---|---|"]
        for k in ("std", "pw"):
            ratio = statistics.median(runs["pw"]) / statistics.median(runs["std"]) if k == "pw" else 1.0
            lines.append(f"| {k} | {', '.join(f'{v:.0f}' for v in runs[k])} | {statistics.median(runs[k]):.0f} | {ratio:.2f}x |")
    if results["map"]:
        m = results["map"]
        lines += ["", f"| map over 64 x 16 MiB, 2 workers ({ctx}) | seconds | GB/s of input | pw / std |", "|---|---|---|---|"]
        for k in ("std", "pw"):
            r = m[f"{k}/{ctx}"]
            lines.append(f"| {k} | {r['seconds']:.2f} | {r['gbps']:.3f} | {r['gbps'] / m[f'std/{ctx}']['gbps']:.1f}x |")
    if results["sizes"]:
        sz = results["sizes"]
        lines += ["", f"| round trip by size ({ctx}) | std ms | pw ms | pw / std |", "|---|---|---|---|"]
        for nbytes in sz["std"]:
            std, pw = sz["std"][nbytes], sz["pw"][nbytes]
            lines.append(f"| {int(nbytes) >> 10} KiB | {std * 1e3:.3f} | {pw * 1e3:.3f} | {std / pw:.2f}x |")
    return "\n".join(lines)


def plot(results, contexts, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    rt = results["roundtrip"]
    kinds = ["std", "joblib", "pw", "pw-empty"]
    width = 0.2
    ax = axes[0]
    for i, kind in enumerate(kinds):
        vals = [rt.get(f"{kind}/{ctx}", {}).get("gbps", 0) for ctx in contexts]
        ax.bar([c + (i - 1.5) * width for c in range(len(contexts))], vals, width, label=kind)
    ax.set_xticks(range(len(contexts)), contexts)
    ax.set_yscale("log")
    ax.set_ylabel("GB/s (log)")
    ax.set_title("64 MiB array round trip, submit(identity, a).result()")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=4)

    ax = axes[1]
    ctx = contexts[0]
    names = [k for k in ("std", "pw") if f"{k}/{ctx}" in results["tiny"]]
    ax.bar(names, [statistics.median(results["tiny"][f"{k}/{ctx}"]) for k in names], color=["C0", "C2"])
    ax.set_ylabel("tasks/s")
    ax.set_title(f"2000 tiny tasks ({ctx})")

    ax = axes[2]
    names = [k for k in ("std", "pw") if f"{k}/{ctx}" in results["map"]]
    ax.bar(names, [results["map"][f"{k}/{ctx}"]["gbps"] for k in names], color=["C0", "C2"])
    ax.set_ylabel("GB/s of input")
    ax.set_title(f"map(double) over 64 x 16 MiB, 2 workers ({ctx})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
