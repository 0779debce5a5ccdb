#!/usr/bin/python3
"""picklewire's ZeroMQ messages against raw libzmq, side by side, replicated over processes.

One zmq_bench process runs picklewire's rows and raw libzmq's rows interleaved (random order of
repetitions) and gives one ratio per pair. On this shared 2-core VM that ratio moves from one
process to the next by more than the difference being measured: libzmq's I/O thread, the sender
and the receiver compete for the two cores, and the I/O thread allocates every received frame
of 64 KiB and up from a glibc arena that the receiving thread frees into, whose trims and page
faults (from 128 KiB, malloc's moving mmap threshold) depend on what ran before in the process.
So this runs `--runs` fresh processes and reports per pair the median of their ratios and its
quartiles. (Each row alone in its own process was tried too: the rows then run minutes apart and
the machine's drift over minutes made the spread wider, not narrower.)

Ratio = raw libzmq's time (or whole-process CPU) per message / picklewire's: 1.0 is parity,
0.9 means picklewire takes 11% longer. `raw` is one frame holding the bytes; `raw 2 frames` is the
header frame and the buffer's frame that wire format 2 sends from inline_max_bytes up; `same
options` is raw libzmq with picklewire's default socket options (heartbeats, and immediate on the
connecting PUSH, both asked for by issue 16). The last four pairs are libzmq against itself: the
price of the second frame, and of those options.

    /usr/bin/python3 bench/zmq_vs_raw.py [--bench build/bench/zmq_bench] [--runs 9]
"""
import argparse
import json
import statistics
import subprocess
import sys

KIB, MIB = 1024, 1 << 20
# picklewire against a raw libzmq row: (label, size, the raw row's variant)
COMPARISONS = [
    ("1 KiB vs raw", KIB, ""),
    ("1 KiB vs raw, same options", KIB, "_same_options"),
    ("64 KiB vs raw", 64 * KIB, ""),
    ("64 KiB vs raw 2 frames", 64 * KIB, "_header_and_buffer"),
    ("64 KiB vs raw 2 fr., same opt.", 64 * KIB, "_header_and_buffer_same_options"),
    ("1 MiB vs raw", MIB, ""),
    ("1 MiB vs raw 2 frames", MIB, "_header_and_buffer"),
    ("1 MiB vs raw 2 fr., same opt.", MIB, "_header_and_buffer_same_options"),
]
# libzmq against itself at 64 KiB: (label, variant, baseline variant)
LIBZMQ_ALONE = [
    ("raw: 2 frames vs 1, 64 KiB", "_header_and_buffer", ""),
    ("raw: options vs none, 64 KiB", "_header_and_buffer_same_options", "_header_and_buffer"),
]


def raw_row(transport, size, variant):
    return f"BM_RawZmq/{transport}{variant}/{size}"


PAIRS = [  # (label, measured row, baseline row)
    *((f"{t} {label}", f"BM_PicklewireMessage/{t}/{size}", raw_row(t, size, variant))
      for label, size, variant in COMPARISONS for t in ("ipc", "tcp")),
    *((f"{label} {t}", raw_row(t, 64 * KIB, variant), raw_row(t, 64 * KIB, baseline))
      for label, variant, baseline in LIBZMQ_ALONE for t in ("ipc", "tcp")),
]
ROWS = sorted({row for _, ours, raw in PAIRS for row in (ours, raw)})
FILTER = "^(" + "|".join(ROWS) + ")/"


def one_run(bench, min_time, repetitions):
    """The median time and CPU per message of every row, interleaved in one fresh process."""
    out = subprocess.run(
        [bench, f"--benchmark_filter={FILTER}", f"--benchmark_min_time={min_time}",
         f"--benchmark_repetitions={repetitions}", "--benchmark_enable_random_interleaving=true",
         "--benchmark_report_aggregates_only=true", "--benchmark_format=json"],
        capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"{bench} failed ({out.returncode}):\n{out.stderr[-2000:]}")
    rows = {}
    for b in json.loads(out.stdout)["benchmarks"]:
        # The median of the repetitions (a single repetition has no aggregate: itself).
        if b.get("aggregate_name") == "median" or (repetitions == 1 and b.get("run_type") == "iteration"):
            rows[b["run_name"].removesuffix("/real_time")] = (b["real_time"], b["process_cpu_us"])
    return rows


def quartiles(values):
    if len(values) < 2:
        return values[0], values[0]
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], q[2]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bench", default="build/bench/zmq_bench")
    ap.add_argument("--runs", type=int, default=9, help="fresh zmq_bench processes")
    ap.add_argument("--repetitions", type=int, default=3, help="interleaved repetitions per process (their median)")
    ap.add_argument("--min-time", default="0.2", help="seconds per repetition")
    args = ap.parse_args()

    time_ratios = {label: [] for label, _, _ in PAIRS}
    cpu_ratios = {label: [] for label, _, _ in PAIRS}
    for run in range(args.runs):
        rows = one_run(args.bench, args.min_time, args.repetitions)
        line = []
        for label, ours, raw in PAIRS:
            time_ratios[label].append(rows[raw][0] / rows[ours][0])
            cpu_ratios[label].append(rows[raw][1] / rows[ours][1])
            line.append(f"{time_ratios[label][-1]:.2f}")
        print(f"run {run + 1}/{args.runs}: " + " ".join(line), file=sys.stderr, flush=True)

    print(f"picklewire vs raw libzmq, {args.runs} processes x {args.repetitions} interleaved repetitions "
          f"of {args.min_time} s (ratio raw / picklewire per message; 1.0 = parity)")
    print(f"{'pair':<36} {'time: median':>12} {'quartiles':>11}   {'CPU: median':>11} {'quartiles':>11}")
    for label, _, _ in PAIRS:
        t, c = time_ratios[label], cpu_ratios[label]
        tq, cq = quartiles(t), quartiles(c)
        print(f"{label:<36} {statistics.median(t):>12.2f} {tq[0]:>5.2f}-{tq[1]:<5.2f}   "
              f"{statistics.median(c):>11.2f} {cq[0]:>5.2f}-{cq[1]:<5.2f}")


if __name__ == "__main__":
    main()
