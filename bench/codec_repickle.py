#!/usr/bin/python3
"""Whole process, load + dump: `picklewire repickle IN OUT --protocol 5` beside
`python3 -c "pickle.dumps(pickle.loads(...), 5)"` on the same files, one workload after another.

    /usr/bin/python3 bench/codec_repickle.py --cli build/picklewire [--cli-before OTHER] [--rounds 5]

Writes the workloads (protocol 5 streams made by CPython, 15-30 MB each) into a temporary
directory, checks that each side's output is byte-identical to CPython's, and prints, for each
side, the best wall time and the best CPU time (user + sys of the process, from wait4) over
alternating rounds, with the ratios CPython / ours. On a shared machine the CPU time is the steadier
of the two: wall time also counts the minutes other tenants hold the cores. --cli-before adds
columns for another build of the CLI, timed in the same rounds.
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
    """(wall seconds, CPU seconds of the child: user + sys)."""
    start = time.perf_counter()
    proc = subprocess.Popen(cmd)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise subprocess.CalledProcessError(proc.returncode, cmd)
    return wall, usage.ru_utime + usage.ru_stime


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
                    wall, cpu = run(cmd(str(src), str(out)))
                    w, c = best.get(side, (wall, cpu))
                    best[side] = (min(w, wall), min(c, cpu))
                    if out.read_bytes() != expected:
                        sys.exit("%s: %s output differs from CPython's" % (name, side))
                    out.unlink()
            rows.append((name, src.stat().st_size, best))
            src.unlink()
    head = "%-26s %5s | %-17s" % ("workload", "MB", "CPython wall/CPU")
    for side, _ in sides[1:]:
        head += " | %-17s %-12s" % (side + " wall/CPU", "ratio w/CPU")
    print(head)
    print("-" * len(head))
    for name, size, best in rows:
        cw, cc = best["CPython"]
        line = "%-26s %5.1f | %6.0f / %6.0f ms" % (name, size / 1e6, cw * 1e3, cc * 1e3)
        for side, _ in sides[1:]:
            w, c = best[side]
            line += " | %6.0f / %6.0f ms %4.1fx / %4.1fx" % (w * 1e3, c * 1e3, cw / w, cc / c)
        print(line)
    print("load average:", " ".join("%.2f" % x for x in os.getloadavg()))


if __name__ == "__main__":
    main()
