#!/usr/bin/python3
"""Worker-to-worker transfer of one large array in a Dask LocalCluster: tcp:// vs pw://.

For each protocol, in one run: a LocalCluster(n_workers=2, threads_per_worker=1, processes=True)
on 127.0.0.1. Worker A computes a float64 array of --mib MiB; a task pinned to worker B needs it,
so B fetches it from A. Reported per protocol:

* transfer time: the `duration` Dask itself records in B's `transfer_incoming_log` (request,
  serialisation, the move, deserialisation), first (cold) transfer and the median of the warm ones;
* bandwidth = bytes / duration;
* peak RSS of B during the transfer (VmHWM after resetting it through /proc/self/clear_refs just
  before), B's RSS before it, and A's RSS after it (on pw, A maps B's channel: shared pages that
  the kernel counts in A's RSS too);
* for pw: B's ledger (bytes received through shared memory, copies on receive) and A's copy-in.

    PYTHONPATH=build/python /usr/bin/python3 bench/dask_transfer.py [--mib 256] [--reps 5] [--json]

The pw channel capacity defaults to the array size + 16 MiB (set --capacity-mib to change it):
a channel is pre-faulted, so it is resident memory of the receiving worker from its start.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np

import dask
from distributed import Client, LocalCluster, wait


def make_array(nbytes, seed):
    a = np.empty(nbytes // 8)
    a[:] = seed  # touch every page: a real, resident array
    return a


def first_element(a):
    return float(a[0])


def reset_peak_rss():
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # resets VmHWM to the current RSS (Linux >= 4.0)
    return rss_kib()


def rss_kib(field="VmRSS"):
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def peak_rss_kib():
    return rss_kib("VmHWM")


def last_incoming(dask_worker):
    log = list(dask_worker.transfer_incoming_log)
    return log[-1] if log else None


def pw_ledger():
    import picklewire.dask
    return picklewire.dask.ledger()


def run(protocol, nbytes, reps, capacity):
    config = {"distributed.comm.pw.capacity": capacity}
    with dask.config.set(config):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, protocol=protocol,
                               host="127.0.0.1", dashboard_address=None)
    client = Client(cluster)
    try:
        client.wait_for_workers(2)
        a_addr, b_addr = sorted(client.scheduler_info()["workers"])
        # Open the worker-to-worker connection (and on pw the sender's mapping of B's channel).
        small = client.submit(make_array, 1 << 20, -1, workers=[a_addr], pure=False)
        client.submit(first_element, small, workers=[b_addr], pure=False).result()
        del small
        rows = []
        for i in range(reps + 1):
            src = client.submit(make_array, nbytes, i, workers=[a_addr], pure=False)
            wait(src)
            time.sleep(0.2)
            rss_before = client.run(reset_peak_rss, workers=[b_addr])[b_addr]
            ledger_before = client.run(pw_ledger) if protocol == "pw" else None
            assert client.submit(first_element, src, workers=[b_addr], pure=False).result() == float(i)
            entry = client.run(last_incoming, workers=[b_addr])[b_addr]
            peak = client.run(peak_rss_kib, workers=[b_addr])[b_addr]
            sender_rss = client.run(rss_kib, workers=[a_addr])[a_addr]
            row = {"rep": i, "duration_s": entry["duration"], "bytes": entry["total"],
                   "gbps": entry["total"] / entry["duration"] / 1e9,
                   "rss_before_mib": rss_before / 1024, "peak_rss_mib": peak / 1024,
                   "sender_rss_mib": sender_rss / 1024}
            if protocol == "pw":
                after = client.run(pw_ledger)
                row["shm_received_bytes"] = after[b_addr]["shm_received_bytes"] - ledger_before[b_addr]["shm_received_bytes"]
                row["received_copied_bytes"] = after[b_addr]["copied_bytes"]["received"] - ledger_before[b_addr]["copied_bytes"]["received"]
                row["sender_copied_into_segment"] = (after[a_addr]["copied_bytes"]["copied_into_segment"]
                                                     - ledger_before[a_addr]["copied_bytes"]["copied_into_segment"])
                row["fallbacks"] = {k: v - ledger_before[a_addr].get(k, 0) for k, v in after[a_addr].items()
                                    if k.startswith("fallback_") and v - ledger_before[a_addr].get(k, 0)}
            rows.append(row)
            del src
            client.run(lambda: __import__("gc").collect())
            time.sleep(0.3)  # B releases its copy: the slot returns to its channel
        return rows
    finally:
        client.close()
        cluster.close()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=256)
    parser.add_argument("--reps", type=int, default=5, help="warm transfers after the first (cold) one")
    parser.add_argument("--capacity-mib", type=int, default=None)
    parser.add_argument("--protocols", default="tcp,pw")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    nbytes = args.mib << 20
    capacity = (args.capacity_mib << 20) if args.capacity_mib else nbytes + (16 << 20)
    results = {p: run(p, nbytes, args.reps, capacity) for p in args.protocols.split(",")}
    if args.json:
        json.dump(results, sys.stdout, indent=1)
        print()
        return
    print(f"{args.mib} MiB float64 array, worker A -> worker B, LocalCluster(n_workers=2, processes=True), "
          f"{os.cpu_count()} CPUs; pw capacity {capacity >> 20} MiB")
    print("| protocol | cold transfer | warm transfer (median) | warm GB/s | B RSS before | B peak RSS | A RSS after | received through shm | copied on receive |")
    print("|---|---|---|---|---|---|---|---|---|")
    base = None
    for protocol, rows in results.items():
        warm = rows[1:] or rows
        d = statistics.median(r["duration_s"] for r in warm)
        base = base or d
        gbps = statistics.median(r["gbps"] for r in warm)
        peak = max(r["peak_rss_mib"] for r in warm)
        before = statistics.median(r["rss_before_mib"] for r in warm)
        shm = statistics.median(r.get("shm_received_bytes", 0) for r in warm) / 2**20
        copied = max(r.get("received_copied_bytes", 0) for r in warm)
        sender = max(r["sender_rss_mib"] for r in warm)
        print(f"| {protocol} | {rows[0]['duration_s'] * 1e3:.0f} ms | {d * 1e3:.1f} ms ({base / d:.1f}x) | "
              f"{gbps:.2f} | {before:.0f} MiB | {peak:.0f} MiB | {sender:.0f} MiB | {shm:.0f} MiB | {copied} B |")
    for protocol, rows in results.items():
        print(protocol, "durations (ms):", " ".join(f"{r['duration_s'] * 1e3:.1f}" for r in rows),
              "| peak RSS (MiB):", " ".join(f"{r['peak_rss_mib']:.0f}" for r in rows))
        if protocol == "pw":
            print("pw sender copied into B's segment (MiB):",
                  " ".join(f"{r['sender_copied_into_segment'] / 2**20:.0f}" for r in rows),
                  "| fallbacks:", [r["fallbacks"] for r in rows if r["fallbacks"]])


if __name__ == "__main__":
    main()
