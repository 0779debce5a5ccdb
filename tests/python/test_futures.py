"""picklewire.futures.ProcessPoolExecutor against real worker processes, real shared memory, numpy.

Arrays of many dtypes/shapes/orders nested in containers go both ways; pointer checks (the
mapping behind each array's data in /proc/self/maps) show where arguments and results live;
faults (worker and caller SIGKILLed) end in BrokenProcessPool and leave nothing in /dev/shm.
"""
import concurrent.futures
import gc
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import textwrap
import time
import traceback

import numpy as np
import pytest

import futures_support as fs
import module_support as ms
from conftest import CLI
import picklewire
from picklewire import futures as pwf

OUR_PREFIX = f"pwfut-{os.getpid()}-"  # every channel of an executor made by this process
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture
def no_leftovers():
    """Fails the test if an executor left a channel in /dev/shm; removes them whatever happened."""
    yield
    left = ms.shm_files(OUR_PREFIX)
    ms.remove_shm_files(OUR_PREFIX)
    assert left == []


def executor(ctx="fork", **kw):
    return pwf.ProcessPoolExecutor(2, mp_context=mp.get_context(ctx), **kw)


def on_results_channel(address, ex):
    """Whether `address` lies in the executor's results channel (mapped under the segment's name or
    the temporary name it was created under before being published)."""
    home = fs.shm_home(address)
    return home is not None and home.startswith(f"/dev/shm/picklewire.{ex._picklewire.key}-r")


def test_small_tasks_stay_in_band(no_leftovers):
    with executor() as ex:
        assert list(ex.map(pow, range(50), [2] * 50, chunksize=7)) == [i * i for i in range(50)]
        assert ex.submit(fs.echo, np.arange(100)).result().tolist() == list(range(100))
        st = ex.stats()
        assert ms.shm_files(ex._picklewire.key) == []  # nothing bound for small work
    assert st["to_workers"]["oob_messages"] == 0 and st["from_workers"]["oob_messages"] == 0
    assert st["to_workers"]["messages"] == 9 and st["from_workers"]["messages"] == 9  # 8 chunks + 1
    # The 800 bytes of np.arange(100) were pickled into the stream, both ways; nothing else was copied.
    assert st["to_workers"]["copied_bytes"] == {"inband_below_threshold": 800}
    assert st["from_workers"]["copied_bytes"] == {"inband_below_threshold": 800}


@pytest.mark.parametrize("ctx", ["fork", "spawn", "forkserver"])
def test_round_trip_many_dtypes_both_directions(ctx, no_leftovers):
    payload = ms.payloads()
    with executor(ctx, inband_threshold=1024) as ex:
        back, worker_homes = ex.submit(fs.echo_with_homes, payload).result()
        ms.assert_same(payload, back)
        # In the worker: every array large enough lived on its argument channel, writable.
        sent = fs.arrays_in(payload)
        assert len(worker_homes) == len(sent)
        on_shm = 0
        for a, (home, writeable) in zip(sent, worker_homes):
            big_and_exported = a.nbytes >= 1024 and a.dtype.kind not in "mMO" and (
                a.flags.c_contiguous or a.flags.f_contiguous)
            if big_and_exported:
                assert home is not None and f"{ex._picklewire.key}-a" in home, (a.dtype, a.shape, home)
                assert writeable
                on_shm += 1
        assert on_shm > 20
        # In the caller: the results are views of the results channel, writable.
        for a in fs.arrays_in(back):
            if a.nbytes >= 1024 and a.dtype.kind not in "mMO" and (a.flags.c_contiguous or a.flags.f_contiguous):
                assert on_results_channel(a.ctypes.data, ex)
                assert a.flags.writeable
        st = ex.stats()
        assert st["to_workers"]["oob_messages"] == 1 and st["from_workers"]["oob_messages"] == 1
        assert st["channels"]["results"]["total_copied_bytes"] == 0  # zero copies on receive
        assert st["from_workers"]["copied_bytes"]["copied_into_segment"] == st["from_workers"]["oob_bytes"]
        del back


def test_results_are_writable_shm_arrays_that_outlive_the_executor(no_leftovers):
    a = np.arange(1 << 20, dtype=np.float64).reshape(1024, 1024)
    with executor() as ex:
        key = ex._picklewire.key
        r = ex.submit(fs.scale_in_place, a, 2.0).result()
        assert on_results_channel(r.ctypes.data, ex)
    np.testing.assert_array_equal(a, np.arange(1 << 20, dtype=np.float64).reshape(1024, 1024))  # ours untouched
    r += 1  # writable, still mapped after shutdown (the name is gone, the memory stays while referenced)
    assert r[0, 1] == 3.0 and r[-1, -1] == 2.0 * ((1 << 20) - 1) + 1
    assert fs.shm_home(r.ctypes.data).endswith("(deleted)")  # unlinked, still mapped
    del r
    gc.collect()
    with open("/proc/self/maps") as maps:
        assert f"{key}-r" not in maps.read()  # unmapped with the last view


@pytest.mark.parametrize("order", ["C", "F"])
def test_empty_results_come_back_without_a_copy(order, no_leftovers):
    with executor() as ex:
        ex.submit(fs.echo, np.zeros(1 << 18)).result()  # a large transfer binds the results channel
        before = ex.stats()["from_workers"]
        shapes = [((512, 1024), "float32"), ((3, 700, 500), "int16"), ((1 << 20,), "complex128")]
        for shape, dtype in shapes:
            r = ex.submit(fs.make_with_empty, shape, dtype, 7).result()
            assert r.shape == shape and r.dtype == dtype and (r == 7).all()
            assert on_results_channel(r.ctypes.data, ex) and r.flags.writeable
        after = ex.stats()["from_workers"]
    sent = sum(int(np.prod(s)) * np.dtype(d).itemsize for s, d in shapes)
    assert after["zero_copy_bytes"] - before["zero_copy_bytes"] == sent
    assert after["copied_bytes"].get("copied_into_segment", 0) == before["copied_bytes"].get("copied_into_segment", 0)


def test_empty_outside_a_worker_is_numpy_empty():
    a = pwf.empty((3, 4), "int32")
    assert a.shape == (3, 4) and a.dtype == np.int32 and fs.shm_home(a.ctypes.data) is None


def test_map_with_chunks_of_arrays(no_leftovers):
    arrays = [np.full((256, 256), i, dtype=np.float64) for i in range(12)]
    with executor() as ex:
        out = list(ex.map(fs.echo, arrays, chunksize=5))
        for i, r in enumerate(out):
            np.testing.assert_array_equal(r, arrays[i])
            assert on_results_channel(r.ctypes.data, ex)
        st = ex.stats()
    assert st["to_workers"]["oob_messages"] == 3 and st["to_workers"]["oob_buffers"] == 12


def test_exception_type_and_traceback_text(no_leftovers):
    with executor() as ex:
        f = ex.submit(fs.raise_about, np.zeros((512, 512)))
        with pytest.raises(ValueError, match=r"bad array of shape \(512, 512\)") as info:
            f.result()
        remote = info.value.__cause__
        assert type(remote) is concurrent.futures.process._RemoteTraceback
        assert 'raise ValueError(f"bad array of shape {a.shape}")' in remote.tb
        assert "raise_about" in "".join(traceback.format_exception(info.value))
        assert ex.submit(pow, 3, 3).result() == 27  # the pool is fine afterwards


def test_results_fall_back_in_band_when_the_channel_is_full(no_leftovers):
    capacity = 1 << 20
    with executor(capacity=capacity) as ex:
        held = [ex.submit(fs.echo, np.full(1 << 16, i, dtype=np.float64)).result() for i in range(4)]  # 512 KiB each
        big = ex.submit(fs.echo, np.ones(1 << 18)).result()  # 2 MiB: larger than the channel
        for i, r in enumerate(held):
            assert (r == i).all()
        assert (big == 1).all()
        copies = ex.stats()["from_workers"]["copies"]
    assert copies.get("inband_segment_full", 0) >= 1 and copies["inband_exceeds_capacity"] == 1


def test_arguments_larger_than_a_worker_channel_grow_it(no_leftovers):
    with executor(capacity=1 << 20) as ex:
        a = np.arange(1 << 19, dtype=np.float64)  # 4 MiB into 1 MiB channels
        back, worker_homes = ex.submit(fs.echo_with_homes, a).result()
        np.testing.assert_array_equal(back, a)
        assert f"{ex._picklewire.key}-a" in worker_homes[0][0]


def test_bad_options_are_clear_errors():
    with pytest.raises(ValueError, match="inband_threshold"):
        pwf.ProcessPoolExecutor(1, inband_threshold=-1)
    with pytest.raises(ValueError, match="capacity"):
        pwf.ProcessPoolExecutor(1, capacity=10)
    with pytest.raises(ValueError, match="capacity"):
        pwf.ProcessPoolExecutor(1, capacity="big")


def _wait_for(path, timeout=60):
    deadline = time.monotonic() + timeout
    while not os.path.exists(path):
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)
    with open(path) as f:
        return int(f.read())


@pytest.mark.parametrize("ctx", ["fork", "spawn"])
def test_worker_killed_mid_task_breaks_the_pool_and_leaks_nothing(ctx, tmp_path, no_leftovers):
    ex = executor(ctx)
    try:
        flag = str(tmp_path / "started")
        f = ex.submit(fs.signal_then_sleep, flag, np.ones(1 << 20), 60, hold_shm_bytes=0)
        pid = _wait_for(flag)
        assert any(fs_path.endswith(f"-a{pid}-1") for fs_path in ms.shm_files(ex._picklewire.key))
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(concurrent.futures.process.BrokenProcessPool):
            f.result(timeout=60)
        with pytest.raises(concurrent.futures.process.BrokenProcessPool):
            ex.submit(pow, 2, 2)
    finally:
        ex.shutdown(wait=True)
    assert ms.shm_files(ex._picklewire.key) == []


def test_worker_killed_holding_a_result_slot(tmp_path, no_leftovers):
    """A worker dies while it holds memory of the results channel (an empty() array): no hang, no leak."""
    ex = executor()
    try:
        ex.submit(fs.echo, np.zeros(1 << 18)).result()  # binds the results channel
        flag = str(tmp_path / "started")
        f = ex.submit(fs.signal_then_sleep, flag, None, 60, hold_shm_bytes=8 << 20)
        pid = _wait_for(flag)
        results = ex.stats()["channels"]["results"]
        assert results["slots_in_use"] == 1 and results["bytes_in_use"] >= 8 << 20  # the worker's empty()
        os.kill(pid, signal.SIGKILL)
        with pytest.raises(concurrent.futures.process.BrokenProcessPool):
            f.result(timeout=60)
        # The results channel's receiver reclaims a dead sender's slots while it waits.
        rx = ex._picklewire.results_rx
        deadline = time.monotonic() + 30
        while ex.stats()["channels"]["results"]["slots_in_use"]:
            assert time.monotonic() < deadline, ex.stats()["channels"]["results"]
            with pytest.raises(picklewire.TimeoutError):
                rx.recv_message(timeout=0.3)
    finally:
        ex.shutdown(wait=True)
    gc.collect()
    assert ms.shm_files(ex._picklewire.key) == []


def test_results_never_collected_do_not_outlive_shutdown(no_leftovers):
    ex = executor()
    key = ex._picklewire.key
    futures = [ex.submit(fs.echo, np.full(1 << 18, i)) for i in range(6)]
    concurrent.futures.wait(futures)
    ex.shutdown(wait=True)
    assert ms.shm_files(key) == []
    del futures
    gc.collect()
    with open("/proc/self/maps") as maps:
        assert f"{key}-r" not in maps.read()  # the memory went with the last future


_KILLED_CALLER = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, {here!r})
    import numpy as np
    import futures_support as fs
    from picklewire.futures import ProcessPoolExecutor
    if __name__ == "__main__":
        ex = ProcessPoolExecutor(2)
        ex.submit(fs.echo, np.ones(1 << 18)).result()
        print("ready", flush=True)
        time.sleep(120)
""")


def _start_and_kill_a_caller():
    """A caller that bound its channels, SIGKILLed with its workers; returns its channel files."""
    child = subprocess.Popen([sys.executable, "-c", _KILLED_CALLER.format(here=HERE)], stdout=subprocess.PIPE,
                             start_new_session=True, env=dict(os.environ))
    try:
        assert child.stdout.readline().strip() == b"ready"
        files = ms.shm_files(f"pwfut-{child.pid}-")
        assert any(p.endswith("-r") for p in files) and any("-a" in p for p in files), files
    finally:
        os.killpg(child.pid, signal.SIGKILL)
        child.wait(timeout=60)
        child.stdout.close()
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{pid}") for pid in _workers_of(files)) and time.monotonic() < deadline:
        time.sleep(0.05)
    return child.pid, files


def _workers_of(files):
    return [int(p.rsplit("-a", 1)[1].split("-")[0]) for p in files if "-a" in p.rsplit("/", 1)[1]]


def test_killed_caller_channels_are_reclaimed_by_the_next_executor():
    pid, files = _start_and_kill_a_caller()
    try:
        assert all(os.path.exists(p) for p in files)  # nobody could clean up yet
        sweep = "from picklewire.futures import ProcessPoolExecutor\nProcessPoolExecutor(1).shutdown()\n"
        subprocess.run([sys.executable, "-c", sweep], check=True, timeout=60, env=dict(os.environ))
        assert ms.shm_files(f"pwfut-{pid}-") == []
    finally:
        ms.remove_shm_files(f"pwfut-{pid}-")


def test_killed_caller_channels_are_found_by_picklewire_shm_clean():
    if not CLI.exists():
        pytest.skip(f"picklewire CLI not built: {CLI}")
    pid, files = _start_and_kill_a_caller()
    try:
        listing = subprocess.run([str(CLI), "shm", "list"], capture_output=True, text=True, timeout=60).stdout
        for p in files:
            assert os.path.basename(p)[len("picklewire."):] in listing
        subprocess.run([str(CLI), "shm", "clean"], check=True, capture_output=True, timeout=60)
        assert ms.shm_files(f"pwfut-{pid}-") == []
    finally:
        ms.remove_shm_files(f"pwfut-{pid}-")


def test_a_forked_child_exiting_leaves_the_parents_channels_alone(no_leftovers):
    """A child forked by the caller runs the caller's exit hooks: they must not close its channels."""
    a = np.arange(1 << 17, dtype=np.float64)
    ex = executor()
    try:
        np.testing.assert_array_equal(ex.submit(fs.echo, a).result(timeout=60), a)
        pid = os.fork()
        if pid == 0:
            try:
                pwf._close_all_callers()  # what the child's atexit would run
            finally:
                os._exit(0)
        assert os.waitpid(pid, 0)[1] == 0
        assert ms.shm_files(ex._picklewire.key)  # still bound
        # Were the channels closed, the worker would wait for a reply that never comes.
        np.testing.assert_array_equal(ex.submit(fs.echo, a).result(timeout=60), a)
    except BaseException:
        for p in ex._processes.values():
            p.kill()
        raise
    finally:
        ex.shutdown(wait=True)


def test_medium_payloads_ride_the_pipe(no_leftovers):
    """Buffers above inband_threshold that total less than MIN_OOB_MESSAGE_BYTES go in-band, intact."""
    parts = {"a": np.arange(4096, dtype=np.int64), "b": np.ones((64, 64), np.float32)}  # 32 KiB + 16 KiB
    frozen = np.arange(20000, dtype=np.float64)  # 160 KiB, read-only: goes out-of-band, stays read-only
    frozen.flags.writeable = False
    with executor() as ex:
        back, worker_homes = ex.submit(fs.echo_with_homes, parts).result()
        ms.assert_same(parts, back)
        assert worker_homes == [(None, True), (None, True)]  # private, writable copies in the worker
        assert back["a"].flags.writeable and back["b"].flags.writeable
        st = ex.stats()
        assert ms.shm_files(ex._picklewire.key) == []
        ro_back, ro_homes = ex.submit(fs.echo_with_homes, frozen).result()
        np.testing.assert_array_equal(ro_back, frozen)
        assert not ro_homes[0][1] and not ro_back.flags.writeable
    for direction in ("to_workers", "from_workers"):
        assert st[direction]["inband_messages"] == 1 and st[direction]["oob_messages"] == 0
        assert st[direction]["copied_bytes"] == {"inband_below_threshold": 48 * 1024}


def test_small_arguments_large_results_find_the_channel(no_leftovers):
    """A pool that only ever gets scalar arguments: the first large result travels in-band (no
    channel yet) and makes the caller bind one; the workers find it and later results are zero-copy."""
    with executor() as ex:
        first = ex.submit(fs.make_with_empty, (1 << 20,), "uint8", 1).result()
        assert (first == 1).all() and not on_results_channel(first.ctypes.data, ex)
        assert ex.stats()["from_workers"]["copies"] == {"inband_no_channel": 1}
        deadline = time.monotonic() + 60
        while not ms.shm_files(f"{ex._picklewire.key}-r"):  # bound in the background
            assert time.monotonic() < deadline
            time.sleep(0.02)
        for value in (2, 3, 4):  # both workers, whichever runs which
            r = ex.submit(fs.make_with_empty, (1 << 20,), "uint8", value).result()
            assert (r == value).all() and on_results_channel(r.ctypes.data, ex)
        assert ex.stats()["from_workers"]["zero_copy_bytes"] == 3 << 20
