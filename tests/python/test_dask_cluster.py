"""A real Dask cluster on pw:// (LocalCluster, 2 worker processes, each with its nanny): arrays
move between workers through shared memory (zero copy on receive, held in Worker.data on the
channel), dask.array reductions equal numpy's, a worker SIGKILLed mid-computation is recovered
by Dask, and no /dev/shm segment is left behind."""
import os
import signal
import time

import numpy as np
import pytest

pytest.importorskip("distributed")

import dask  # noqa: E402
import dask.array as da  # noqa: E402
from distributed import Client, LocalCluster  # noqa: E402

import module_support as ms  # noqa: E402
from conftest import CLI, run_cli  # noqa: E402
import picklewire.dask as pwd  # noqa: E402

# Small channels: a CI machine runs this next to other tests.
PW_CONFIG = {"distributed.comm.pw.capacity": "96 MiB", "distributed.comm.pw.threshold": "64 KiB"}


def _wait_for(condition, seconds=60.0):
    """Polls `condition`; a generous bound against a hang, not a speed check."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture
def pw_cluster():
    """(client, [worker addresses]); afterwards every segment of the cluster's processes is gone
    (checked), and removed anyway if the test failed."""
    pids = set()
    with dask.config.set(PW_CONFIG):
        cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, protocol="pw",
                               dashboard_address=None, host="127.0.0.1")
    client = Client(cluster)
    try:
        assert cluster.scheduler_address.startswith("pw://127.0.0.1:")
        client.wait_for_workers(2, timeout=60)
        workers = sorted(client.scheduler_info()["workers"])

        def remember_pids():
            pids.update(client.run(os.getpid).values())

        remember_pids()
        yield client, workers, remember_pids
        remember_pids()
    finally:
        client.close()
        cluster.close()
        leftovers = [f for pid in pids for f in ms.shm_files(f"dask-{pid}-")]
        if CLI.exists():  # what a user sees: `picklewire shm list` names none of them
            listed = run_cli(["shm", "list"]).stdout
            leftovers += [line for line in listed.splitlines() for pid in pids
                          if line.startswith(f"shm://dask-{pid}-")]
        for pid in pids:
            ms.remove_shm_files(f"dask-{pid}-")
    assert pids and not leftovers, leftovers


def _placement(x):
    """Runs in a worker: where its copy of `x` lives."""
    import picklewire.dask as pwd
    inbox = pwd._inbox
    return {"in_channel": inbox is not None and inbox.receiver.owns(x), "writeable": x.flags.writeable}


def test_arrays_move_between_workers_through_shared_memory(pw_cluster):
    client, (w0, w1), _ = pw_cluster
    a = np.random.default_rng(0).standard_normal(3 << 20)  # 24 MiB
    before = client.run(pwd.ledger)
    [fa] = client.scatter([a], workers=[w0])
    total = client.submit(np.sum, fa, workers=[w1], pure=False).result()
    assert total == a.sum()
    assert client.submit(_placement, fa, workers=[w1], pure=False).result() == {"in_channel": True, "writeable": True}
    after = client.run(pwd.ledger)
    # w1 received it from w0 through w1's channel, without copying; w0 copied it in once.
    assert after[w1]["shm_received_bytes"] - before[w1]["shm_received_bytes"] >= a.nbytes
    assert after[w1]["copied_bytes"]["received"] == 0
    assert after[w0]["copied_bytes"]["copied_into_segment"] - before[w0]["copied_bytes"]["copied_into_segment"] >= a.nbytes
    # w1's Worker.data holds the array on the channel: its slot stays leased until it is released.
    assert after[w1]["channel"]["bytes_in_use"] >= a.nbytes
    del fa
    assert _wait_for(lambda: client.run(pwd.ledger, workers=[w1])[w1]["channel"]["bytes_in_use"] < a.nbytes)

    # dask.array reductions whose chunks cross between the workers.
    x = da.random.RandomState(42).random((2400, 2400), chunks=(600, 600))
    xs = x.compute()
    x = x.persist()
    got = dask.compute((x + x.T).sum(axis=1), (x - x.mean(axis=0)).std(axis=0), x[::2].T.dot(x[::2, :300]))
    np.testing.assert_allclose(got[0], (xs + xs.T).sum(axis=1))
    np.testing.assert_allclose(got[1], (xs - xs.mean(axis=0)).std(axis=0))
    np.testing.assert_allclose(got[2], xs[::2].T.dot(xs[::2, :300]))
    final = client.run(pwd.ledger)
    moved = sum(final[w]["shm_received_messages"] - after[w]["shm_received_messages"] for w in (w0, w1))
    assert moved > 0


def _slow_block(block):
    time.sleep(0.2)
    return block * 2.0


def test_worker_killed_mid_computation_is_recovered(pw_cluster):
    client, (w0, w1), remember_pids = pw_cluster
    x = da.random.RandomState(7).random((3200, 800), chunks=(200, 800))  # 16 chunks of 1.25 MiB
    expected = (x.compute() * 2.0)
    expected = (expected + expected[::-1]).sum(axis=0)
    victim = client.run(os.getpid, workers=[w0])[w0]
    # w1 sends an array to w0 first, so it maps w0's channel (checked unmapped after the kill).
    on_w1 = client.submit(np.ones, 1 << 18, workers=[w1], pure=False)
    assert client.submit(np.sum, on_w1, workers=[w0], pure=False).result() == 1 << 18
    assert client.run(_maps_channel_of, victim, workers=[w1])[w1]
    y = x.map_blocks(_slow_block, dtype=float)
    future = client.compute((y + y[::-1]).sum(axis=0))
    assert _wait_for(lambda: any(client.processing().values()), 60)
    time.sleep(0.5)  # some blocks done, transfers under way
    os.kill(victim, signal.SIGKILL)
    np.testing.assert_allclose(future.result(timeout=120), expected)
    # The nanny restarts the worker; the new one removed its predecessor's segment at bind.
    assert _wait_for(lambda: len(client.scheduler_info()["workers"]) == 2, 60)
    remember_pids()
    assert not os.path.exists(f"/proc/{victim}") or not _alive(victim)
    assert _wait_for(lambda: not ms.shm_files(f"dask-{victim}-"), 60)
    # The survivor unmapped the dead worker's channel once its comms to it closed (a mapping of the
    # unlinked file would keep that memory alive).
    assert _wait_for(lambda: not client.run(_maps_channel_of, victim, workers=[w1])[w1], 60)


def _maps_channel_of(pid):
    """Runs in a worker: whether it still maps the channel of process `pid`."""
    with open("/proc/self/maps") as f:
        return any(f"/dev/shm/picklewire.dask-{pid}-" in line for line in f)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False
