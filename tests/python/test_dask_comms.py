"""Dask's own comm checks (distributed/comm/tests/test_comms.py, shipped by python3-distributed)
run against the pw:// backend (picklewire.dask), plus what pw adds: large frames through shared
memory (zero copy, writable, one view per frame), fallback to the socket, a bad hello refused,
cancelled reads. Both ends live in this process, which binds a small receive channel."""
import asyncio
import functools
import gc
import itertools
import json
import os
import socket
import struct

import numpy as np
import pytest

pytest.importorskip("distributed")

import dask  # noqa: E402
from distributed.comm import (  # noqa: E402
    CommClosedError,
    connect,
    get_address_host,
    get_local_address_for,
    listen,
    resolve_address,
)
from distributed.comm.registry import backends, get_backend  # noqa: E402
from distributed.comm.tests import test_comms as dask_checks  # noqa: E402
from distributed.protocol import Serialized, to_serialize  # noqa: E402
from distributed.protocol.serialize import serialize_and_split  # noqa: E402
from distributed.utils_test import gen_test  # noqa: E402

import module_support as ms  # noqa: E402
import picklewire.dask as pwd  # noqa: E402

CAPACITY = 64 << 20
# Every pw comm of this module receives through a 64 MiB channel (this process is no worker).
PW_CONFIG = {"distributed.comm.pw.receive": True, "distributed.comm.pw.capacity": CAPACITY,
             "distributed.comm.pw.threshold": "64 KiB"}


def pw_gen_test(test):
    """Dask's gen_test (fresh loop, leak checks; it resets dask's config first, hence the config
    is set inside). Our process-wide copy threads and channel outlive a test by design."""
    @functools.wraps(test)
    async def with_pw_config(*args, **kwargs):
        with dask.config.set(PW_CONFIG):
            return await test(*args, **kwargs)
    return gen_test(clean_kwargs={"threads": False})(with_pw_config)


async def _eventually(condition, seconds=20.0):
    """Polls `condition` while the loop runs; a generous bound, not a speed check."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.01)
    return True


@pytest.fixture(autouse=True, scope="module")
def pw_channel():
    """The channel is closed (and its /dev/shm file removed) at the end, even when a test failed."""
    yield
    pwd.shutdown()
    assert not ms.shm_files(f"dask-{os.getpid()}-")


def test_entry_point_finds_the_backend():
    backends.pop("pw", None)  # found through importlib.metadata, not a registration by hand
    assert isinstance(get_backend("pw"), pwd.PicklewireBackend)


def test_addresses_are_host_port():
    assert get_address_host("pw://127.0.0.1:8786") == "127.0.0.1"
    assert resolve_address("pw://localhost:8786") == "pw://127.0.0.1:8786"
    assert get_local_address_for("pw://127.0.0.1:8786") == "pw://127.0.0.1"


@pw_gen_test
async def test_client_server():
    await dask_checks.check_client_server("pw://127.0.0.1", dask_checks.tcp_eq("127.0.0.1"))


@pw_gen_test
async def test_comm_closed_implicit():
    await dask_checks.check_comm_closed_implicit("pw://127.0.0.1")


@pw_gen_test
async def test_comm_closed_explicit():
    await dask_checks.check_comm_closed_explicit("pw://127.0.0.1")


@pw_gen_test
async def test_many_listeners():
    await dask_checks.check_many_listeners("pw://127.0.0.1")


@pw_gen_test
async def test_deserialize():
    before = pwd.ledger()["shm_received_bytes"]
    await dask_checks.check_deserialize("pw://127.0.0.1")
    assert pwd.ledger()["shm_received_bytes"] > before  # the 8 MB payloads took shared memory


@pw_gen_test
async def test_deserialize_roundtrip():
    await dask_checks.check_deserialize_roundtrip("pw://127.0.0.1")


@pw_gen_test
async def test_deserialize_eoferror():
    await dask_checks.check_deserialize_eoferror("pw://127.0.0.1")


@pw_gen_test
async def test_connect_timeout():
    await dask_checks.check_connect_timeout(f"pw://127.0.0.1:{ms.free_tcp_port()}")


@pw_gen_test
async def test_repr():
    a, b = await dask_checks.get_comm_pair("pw://127.0.0.1")
    assert a.local_address in repr(b)
    assert b.local_address in repr(a)
    await dask_checks.check_repr(a, b)


@pw_gen_test
async def test_comm_addresses():
    a, b = await dask_checks.get_comm_pair("pw://127.0.0.1")
    await dask_checks.check_addresses(a, b)


# ---- what pw adds

@pw_gen_test
async def test_large_frames_arrive_in_shared_memory_writable_and_uncopied():
    a, b = await dask_checks.get_comm_pair("pw://127.0.0.1")
    try:
        assert a.extra_info["pw"]["same_host"] and a.extra_info["pw"]["peer_channel"]
        before = pwd.ledger()
        # 40 MiB would be cut into 40 shards of 1 MiB on tcp here; on pw it is one frame, one view.
        arrays = [np.arange(5 << 20, dtype="<f8"), np.full((1000, 257), 7, np.int16)]
        with dask.config.set({"distributed.comm.shard": "1 MiB"}):
            written = await a.write({"op": "data", "x": [to_serialize(x) for x in arrays], "small": b"abc"})
        got = await b.read()
        after = pwd.ledger()
        for sent, received in zip(arrays, got["x"]):
            assert np.array_equal(sent, received)
            assert received.flags.writeable
            assert pwd._inbox.receiver.owns(received)  # a view of the channel: not copied out
        assert got["small"] == b"abc"
        payload = sum(x.nbytes for x in arrays)
        assert after["shm_received_bytes"] - before["shm_received_bytes"] == payload
        assert after["copied_bytes"]["received"] == 0
        assert after["copied_bytes"]["copied_into_segment"] - before["copied_bytes"]["copied_into_segment"] == payload
        assert written >= payload
        # The slots stay leased while the arrays live, and return when they are gone.
        in_use = pwd.ledger()["channel"]["bytes_in_use"]
        assert in_use >= payload
        del got, received
        gc.collect()
        # (Dask deserialises large messages in a thread; the loop drops its result a turn later.)
        assert await _eventually(lambda: pwd.ledger()["channel"]["bytes_in_use"] <= in_use - payload)
    finally:
        a.abort()
        b.abort()


@pw_gen_test
async def test_shards_of_one_frame_arrive_contiguous_and_are_joined_without_a_copy():
    # Data relayed from a tcp hop arrives cut into shards (a Serialized with split frames): they go
    # as one buffer and come back as views of one object, so merge_memoryviews copies nothing.
    a, b = await dask_checks.get_comm_pair("pw://127.0.0.1")
    try:
        x = np.arange(3 << 20, dtype="<f8")  # 24 MiB
        header, shards = serialize_and_split(x, size=1 << 20)
        assert len(shards) >= 24
        before = pwd.ledger()
        await a.write({"x": Serialized(header, shards), "y": to_serialize(x[:1 << 17])})
        got = await b.read()
        after = pwd.ledger()
        assert np.array_equal(got["x"], x) and np.array_equal(got["y"], x[:1 << 17])
        assert got["x"].flags.writeable and pwd._inbox.receiver.owns(got["x"])
        assert after["shm_received_messages"] == before["shm_received_messages"] + 1
        assert after["copied_bytes"]["received"] == 0
    finally:
        a.abort()
        b.abort()


@pw_gen_test
async def test_readonly_frame_arrives_writable_through_a_loan():
    a, b = await dask_checks.get_comm_pair("pw://127.0.0.1")
    try:
        before = pwd.ledger()
        frozen = np.arange(1 << 18, dtype="<i8")
        frozen.flags.writeable = False
        blob = os.urandom(1 << 20)  # a bytes frame: read-only
        await a.write({"x": to_serialize(frozen), "blob": to_serialize(blob)})
        got = await b.read()
        assert np.array_equal(got["x"], frozen) and not got["x"].flags.writeable  # as sent
        assert got["blob"] == blob
        after = pwd.ledger()
        assert after["copies"]["copied_into_loan"] > before["copies"]["copied_into_loan"]
        assert after["shm_received_bytes"] - before["shm_received_bytes"] >= frozen.nbytes + len(blob)
    finally:
        a.abort()
        b.abort()


@pw_gen_test
async def test_frames_larger_than_the_peer_channel_go_on_the_socket():
    a, b = await dask_checks.get_comm_pair("pw://127.0.0.1")
    try:
        before = pwd.ledger()
        big = np.random.default_rng(3).integers(0, 1 << 30, CAPACITY // 8 + 1024, dtype=np.int64)
        await a.write({"x": to_serialize(big)})
        got = await b.read()
        assert np.array_equal(got["x"], big) and got["x"].flags.writeable
        assert not pwd._inbox.receiver.owns(got["x"])
        after = pwd.ledger()
        assert after.get("fallback_too_large", 0) == before.get("fallback_too_large", 0) + 1
        assert after["shm_received_bytes"] == before["shm_received_bytes"]
    finally:
        a.abort()
        b.abort()


@pw_gen_test
async def test_full_channel_falls_back_and_recovers():
    a, b = await dask_checks.get_comm_pair("pw://127.0.0.1")
    try:
        held = []
        chunk = np.ones(20 << 20, np.uint8)
        before = pwd.ledger()
        for _ in range(4):  # 80 MiB through a 64 MiB channel while the receiver keeps them all
            await a.write({"x": to_serialize(chunk)})
            held.append((await b.read())["x"])
        after = pwd.ledger()
        assert all(np.array_equal(h, chunk) for h in held)
        assert after.get("fallback_channel_full", 0) > before.get("fallback_channel_full", 0)
        held.clear()
        gc.collect()
        # Leases returned: the next message goes through shared memory again.
        assert await _eventually(lambda: pwd.ledger()["channel"]["bytes_in_use"] == 0)
        mid = pwd.ledger()["shm_received_messages"]
        await a.write({"x": to_serialize(chunk)})
        assert np.array_equal((await b.read())["x"], chunk)
        assert pwd.ledger()["shm_received_messages"] == mid + 1
    finally:
        a.abort()
        b.abort()


@pw_gen_test
async def test_readonly_frame_into_a_full_channel_falls_back_at_once():
    a, b = await dask_checks.get_comm_pair("pw://127.0.0.1")
    try:
        await a.write({"x": to_serialize(np.ones(40 << 20, np.uint8))})
        held = (await b.read())["x"]  # 40 of the 64 MiB stay leased
        before = pwd.ledger().get("fallback_channel_full", 0)
        blob = os.urandom(30 << 20)  # read-only: would need a 30 MiB loan
        await a.write({"blob": to_serialize(blob)})
        assert (await b.read())["blob"] == blob
        assert pwd.ledger().get("fallback_channel_full", 0) == before + 1
        assert pwd._inbox.receiver.owns(held)
    finally:
        a.abort()
        b.abort()


@pw_gen_test
async def test_no_channel_means_tcp():
    with dask.config.set({"distributed.comm.pw.receive": False}):
        a, b = await dask_checks.get_comm_pair("pw://127.0.0.1")
    try:
        assert a.extra_info["pw"]["peer_channel"] is None and b.extra_info["pw"]["peer_channel"] is None
        before = pwd.ledger()["shm_messages"]
        x = np.arange(1 << 20, dtype="f8")
        await a.write({"x": to_serialize(x)})
        assert np.array_equal((await b.read())["x"], x)
        assert pwd.ledger()["shm_messages"] == before
    finally:
        a.abort()
        b.abort()


@pw_gen_test
async def test_peer_on_another_host_uses_tcp(monkeypatch):
    # The two ends of a pair say hello with different boot ids, as two machines would.
    boots = itertools.count()
    real_hello = pwd._hello

    def hello_from_another_boot():
        comm_id, hello = real_hello()
        return comm_id, {**hello, "boot": f"boot-{next(boots)}"}

    monkeypatch.setattr(pwd, "_hello", hello_from_another_boot)
    a, b = await dask_checks.get_comm_pair("pw://127.0.0.1")
    try:
        assert not a.extra_info["pw"]["same_host"] and not b.extra_info["pw"]["same_host"]
        before = pwd.ledger()["shm_messages"]
        x = np.arange(1 << 20, dtype="f8")
        await b.write({"x": to_serialize(x)})
        got = (await a.read())["x"]
        assert np.array_equal(got, x) and got.flags.writeable and not pwd._inbox.receiver.owns(got)
        assert pwd.ledger()["shm_messages"] == before
    finally:
        a.abort()
        b.abort()


@pw_gen_test
async def test_cancelled_read_aborts_the_comm_without_hanging():
    a, b = await dask_checks.get_comm_pair("pw://127.0.0.1")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(b.read(), 0.05)
    assert b.closed()
    with pytest.raises(CommClosedError):
        await b.read()
    with pytest.raises(CommClosedError):
        await a.read()  # the peer saw the abort
    a.abort()


@pw_gen_test
async def test_listener_refuses_a_peer_that_is_not_pw():
    handled = []

    async def handle_comm(comm):
        handled.append(comm)

    async with listen("pw://127.0.0.1", handle_comm) as listener:
        host, port = get_backend("pw").get_address_host_port(listener.contact_address[len("pw://"):])
        bad_hellos = [b"[1, 2]", b"{not json", json.dumps({"channel": "../etc", "capacity": 1, "comm_id": 1}).encode(),
                      json.dumps({"channel": "dask-1-ab", "capacity": "big", "comm_id": 1}).encode()]
        for garbage in [b"GET / HTTP/1.0\r\n\r\n" * 4, b"PWDASK1\0" + struct.pack("<Q", 1 << 40)] + [
                b"PWDASK1\0" + struct.pack("<Q", len(h)) + h for h in bad_hellos]:
            # In a thread: the listener runs on this loop. A listener that never closed the
            # connection would fail the test with socket.timeout.
            await asyncio.to_thread(_send_and_drain, host, port, garbage)
        # A real pw peer is still served afterwards.
        comm = await connect(listener.contact_address)
        await comm.close()
        await asyncio.sleep(0.05)
    assert len(handled) == 1


def _send_and_drain(host, port, data):
    with socket.create_connection((host, port)) as s:
        s.settimeout(10)
        s.sendall(data)
        while s.recv(1 << 16):  # the listener's hello, then end of stream
            pass


def test_stale_segment_of_a_dead_process_is_removed(tmp_path):
    import multiprocessing as mp
    child = mp.get_context("spawn").Process(target=_bind_and_die, args=(str(tmp_path / "name"),))
    child.start()
    child.join(60)
    name = (tmp_path / "name").read_text()
    assert os.path.exists(f"/dev/shm/picklewire.{name}")  # SIGKILLed: could not unlink it
    try:
        assert f"picklewire.{name}" in pwd.clean_stale_segments()
        assert not os.path.exists(f"/dev/shm/picklewire.{name}")
    finally:
        ms.remove_shm_files(name)


def _bind_and_die(path):
    import signal
    with dask.config.set({**PW_CONFIG, "distributed.comm.pw.capacity": 1 << 20}):
        inbox = pwd._get_inbox()
    with open(path, "w") as f:
        f.write(inbox.name)
    os.kill(os.getpid(), signal.SIGKILL)
