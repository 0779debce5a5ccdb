#!/usr/bin/python3
"""Whole process, load + dump: `picklewire repickle IN OUT --protocol 5` beside
`python3 -c "pickle.dumps(pickle.loads(...), 5)"` on the same files, one workload after another.

    /usr/bin/python3 bench/codec_repickle.py --cli build/picklewire [--cli-before OTHER] [--rounds 5]

Writes the workloads (protocol 5 streams made by CPython, 15-30 MB each) into a temporary
directory, checks that each side's output is byte-identical to CPython's, and prints the best wall
time of each side over alternating rounds (the machine is shared and noisy) and the ratio
CPython / ours. --cli-before adds a column for another build of the CLI, timed in the same rounds.
"""
import argparse
import os
import pathlib
import pickle
import subprocess
import sys
import tempfile
import time

PYTHON = "/usr/bin/python3"
CPYTHON_REPICKLE = (
    "import pickle, sys\n"
    "data = open(sys.argv[1], 'rb').read()\n"
    "open(sys.argv[2], 'wb').write(pickle.dumps(pickle.loads(data), 5))\n"
)


def workloads():
    return {
        "400k_small_dict_records": [{"id": i, "name": "user%d" % i, "score": i * 0.25, "active": i % 3 == 0}
                                    for i in range(400_000)],
        "4M_floats_and_ints": [i * 0.5 if i % 2 else i * 7919 for i in range(4_000_000)],
        "1M_short_strings": ["s%d" % i for i in range(1_000_000)],
        "nested_lists_dicts_tuples": [{"k%d" % (i % 50): [i, (i, -i), {"x": [i, i + 1]}], "t": (i, "a", [None, True])}
                                      for i in range(150_000)],
    }


def run(cmd):
    start = time.perf_counter()
    subprocess.run(cmd, check=True)
    return time.perf_counter() - start


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cli", required=True)
    ap.add_argument("--cli-before")
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    sides = [("CPython", lambda i, o: [PYTHON, "-c", CPYTHON_REPICKLE, i, o])]
    if args.cli_before:
        sides.append(("before", lambda i, o: [args.cli_before, "repickle", i, o, "--protocol", "5"]))
    sides.append(("ours", lambda i, o: [args.cli, "repickle", i, o, "--protocol", "5"]))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = pathlib.Path(tmp)
        rows = []
        for name, obj in workloads().items():
            src = tmp / (name + ".pkl")
            src.write_bytes(pickle.dumps(obj, 5))
            del obj
            expected = pickle.dumps(pickle.loads(src.read_bytes()), 5)
            best = {}
            for _ in range(args.rounds):
                for side, cmd in sides:
                    out = tmp / ("out-" + side)
                    t = run(cmd(str(src), str(out)))
                    best[side] = min(best.get(side, t), t)
                    if out.read_bytes() != expected:
                        sys.exit("%s: %s output differs from CPython's" % (name, side))
                    out.unlink()
            rows.append((name, src.stat().st_size, best))
            src.unlink()
    head = "%-28s %10s | %10s" % ("workload", "MB", "CPython")
    for side, _ in sides[1:]:
        head += " | %10s %7s" % (side, "ratio")
    print(head)
    print("-" * len(head))
    for name, size, best in rows:
        line = "%-28s %10.1f | %8.0f ms" % (name, size / 1e6, best["CPython"] * 1e3)
        for side, _ in sides[1:]:
            line += " | %8.0f ms %6.1fx" % (best[side] * 1e3, best["CPython"] / best[side])
        print(line)
    print("load average:", " ".join("%.2f" % x for x in os.getloadavg()))


if __name__ == "__main__":
    main()
