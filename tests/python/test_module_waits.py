"""How picklewire.Sender.send / Receiver.recv wait: once, for the whole timeout, with the payload
copied at most once, almost no CPU while blocked, and Ctrl-C still interrupting promptly.

The receivers run in separate Python processes (real shared memory, real sockets); the blocked
send runs in this process so that time.thread_time() measures exactly the waiting thread.
"""

import os
import re
import selectors
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

import picklewire

HOLD_SECONDS = 3.0  # how long the receiver child keeps the sender blocked
SPIN_SECONDS = 50e-6  # the endpoints' default spin= (busy-wait before sleeping), allowed on top


class Child:
    """A Python child running `code`; it talks in lines on stdout."""

    def __init__(self, code):
        self.proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, text=True,
                                     env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})

    def expect(self, line, timeout=30):
        got = self.readline(timeout)
        assert got == line, (got, self.stderr())
        return got

    def readline(self, timeout):
        deadline = time.monotonic() + timeout
        with selectors.DefaultSelector() as sel:
            sel.register(self.proc.stdout, selectors.EVENT_READ)
            while time.monotonic() < deadline:
                if sel.select(0.1):
                    return self.proc.stdout.readline().strip()
                if self.proc.poll() is not None:
                    break
        return self.proc.stdout.readline().strip() if self.proc.poll() is not None else "<no line in time>"

    def stderr(self):
        try:
            self.proc.wait(5)  # its stdout may close a moment before it exits
        except subprocess.TimeoutExpired:
            return "<still running>"
        return self.proc.stderr.read()

    def finish(self, timeout=30):
        try:
            return self.proc.wait(timeout)
        finally:
            self.kill()

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def children():
    started = []

    def start(code):
        child = Child(code)
        started.append(child)
        return child

    yield start
    for child in started:
        child.kill()


def copies_into_segment(sender):
    return sender.stats()["copies"]["copied_into_segment"]


def timed_send(tx, obj, timeout=60):
    """Sends `obj`; returns (wall seconds, this thread's CPU seconds) the call took."""
    wall, cpu = time.monotonic(), time.thread_time()
    tx.send(obj, timeout=timeout)
    return time.monotonic() - wall, time.thread_time() - cpu


def assert_waited_cheaply(wall, cpu):
    print(f"blocked send: {wall:.3f} s wall, {cpu * 1000:.1f} ms CPU ({100 * cpu / wall:.2f}%)")
    assert wall >= HOLD_SECONDS / 2, f"the send did not block (returned after {wall:.3f} s)"
    # The acceptance figure of issue 15: under 5% of the wait, beyond the configured spin.
    assert cpu - SPIN_SECONDS < 0.05 * wall, f"the blocked send used {cpu:.3f} s of CPU over {wall:.3f} s"


@pytest.mark.parametrize("queue", ["ring", "lane"])
def test_send_to_a_backlogged_receiver_copies_once_and_sleeps(queue, url_for, children):
    """The receiver's queue is full but the segment has room: the send fills its slot once and
    keeps it while it waits for the queue, instead of re-copying the payload every time slice."""
    url = url_for("shm")
    # ring: no lanes, a 4-message ring. lane: the sender's own lane (its cells fill first).
    geometry = "lane_count=0, ring_capacity=4" if queue == "ring" else ""
    queued = 4 if queue == "ring" else 64  # more than a lane holds
    rx = children(f"""
        import gc, sys, time, numpy as np, picklewire
        rx = picklewire.Receiver.bind({url!r}, {geometry})
        print("ready", flush=True)
        time.sleep({HOLD_SECONDS})  # the backlog: receive nothing for a while
        while True:
            got = rx.recv(timeout=30)
            if isinstance(got, np.ndarray):
                break
        assert got.shape == (4 << 20,) and got[0] == 0 and got[-1] == (4 << 20) - 1, got
        print("ok", flush=True)
        rx.close()
    """)
    rx.expect("ready")
    with picklewire.Sender.connect(url) as tx:
        filler = b"x" * 1000  # too big to travel inline in a lane cell: each takes a queue entry
        sent = 0
        while sent < queued:
            try:
                tx.send(filler, timeout=0.5)
            except picklewire.TimeoutError:
                break  # the queue is full
            sent += 1
        assert sent >= 1
        big = np.arange(4 << 20, dtype=np.int64)  # 32 MiB: re-copying it every slice would show
        before = copies_into_segment(tx)
        wall, cpu = timed_send(tx, big)
        assert copies_into_segment(tx) - before == 1
        assert tx.stats()["copied_bytes"]["copied_into_segment"] >= big.nbytes
    rx.expect("ok")
    assert rx.finish() == 0
    assert_waited_cheaply(wall, cpu)


def test_send_to_a_full_segment_copies_once_and_sleeps(url_for, children):
    """The segment's heap is full (the receiver holds every message it got): the send waits for
    memory without burning CPU, then copies the payload in once."""
    url = url_for("shm")
    mib8 = 8 << 20
    rx = children(f"""
        import gc, time, numpy as np, picklewire
        rx = picklewire.Receiver.bind({url!r}, capacity=20 << 20)
        print("ready", flush=True)
        held = [rx.recv(timeout=30), rx.recv(timeout=30)]  # 16 MiB of the 20 MiB heap
        print("holding", flush=True)
        time.sleep({HOLD_SECONDS})
        del held
        gc.collect()
        got = rx.recv(timeout=30)
        assert got.nbytes == {mib8} and got[0] == 3 and got[-1] == 3, got
        print("ok", flush=True)
        rx.close()
    """)
    rx.expect("ready")
    with picklewire.Sender.connect(url) as tx:
        tx.send(np.full(mib8, 1, np.uint8), timeout=30)
        tx.send(np.full(mib8, 2, np.uint8), timeout=30)
        rx.expect("holding")
        before = copies_into_segment(tx)
        wall, cpu = timed_send(tx, np.full(mib8, 3, np.uint8))
        assert copies_into_segment(tx) - before == 1
    rx.expect("ok")
    assert rx.finish() == 0
    assert_waited_cheaply(wall, cpu)


def test_send_timeout_is_one_wait_and_gives_the_slot_back(url_for):
    """A send that times out raises picklewire.TimeoutError (errno ETIMEDOUT) after its timeout,
    sent nothing and holds nothing: the next send fits once the receiver drained."""
    url = url_for("shm")
    with picklewire.Receiver.bind(url, lane_count=0, ring_capacity=2) as rx, picklewire.Sender.connect(url) as tx:
        for i in range(2):
            tx.send(np.full(100_000, i, np.uint8), timeout=10)
        with pytest.raises(picklewire.TimeoutError) as caught:
            tx.send(np.full(1 << 20, 9, np.uint8), timeout=0.3)
        assert caught.value.errno == __import__("errno").ETIMEDOUT
        # The ledger counts a copy when it is made: the timed-out message paid its one copy-in, but
        # it is not counted as a message sent.
        assert copies_into_segment(tx) == 3
        assert tx.stats()["messages"] == 2
        assert [rx.recv(timeout=10)[0] for _ in range(2)] == [0, 1]
        with pytest.raises(picklewire.TimeoutError):
            rx.recv(timeout=0.05)  # the timed-out message was not published
        tx.send(np.full(1 << 20, 7, np.uint8), timeout=10)
        assert rx.recv(timeout=10)[0] == 7
        assert rx.stats()["slots_in_use"] <= 1  # only what we still hold (the last array)


CTRL_C_CASES = {
    # A send blocked on a full shm queue, with and without a timeout.
    "shm-send-queue-full": """
        rx = picklewire.Receiver.bind(URL, lane_count=0, ring_capacity=1)
        tx = picklewire.Sender.connect(URL)
        tx.send(b"x" * 1000, timeout=10)
        BLOCK = lambda: tx.send(np.zeros(1 << 20), timeout=600)
    """,
    "shm-recv": """
        rx = picklewire.Receiver.bind(URL)
        BLOCK = lambda: rx.recv(timeout=600)
    """,
    "tcp-send-no-receiver": """
        tx = picklewire.Sender.bind(URL)
        BLOCK = lambda: tx.send(np.zeros(1 << 20))
    """,
    "tcp-recv": """
        rx = picklewire.Receiver.bind(URL)
        BLOCK = lambda: rx.recv()
    """,
}


@pytest.mark.parametrize("case", sorted(CTRL_C_CASES))
def test_ctrl_c_interrupts_a_blocked_call(case, url_for, children):
    """SIGINT while send/recv waits raises KeyboardInterrupt from that very call, promptly."""
    url = url_for(case.split("-")[0])
    child = children(
        f"import numpy as np, picklewire\nURL = {url!r}\n"
        + textwrap.dedent(CTRL_C_CASES[case])
        + textwrap.dedent("""
            print("ready", flush=True)
            try:
                BLOCK()
                print("returned", flush=True)
            except KeyboardInterrupt:
                print("interrupted", flush=True)
        """))
    child.expect("ready")
    time.sleep(0.3)  # let it block
    child.proc.send_signal(signal.SIGINT)
    child.expect("interrupted", timeout=10)
    assert child.finish() == 0, child.stderr()


@pytest.mark.parametrize("transport", ["shm", "ipc"])
def test_a_signal_whose_handler_returns_does_not_end_the_wait(transport, url_for, children):
    """PEP 475: a handler that does not raise lets the wait go on; the message still arrives."""
    url = url_for(transport)
    child = children(f"""
        import signal, picklewire
        seen = []
        signal.signal(signal.SIGUSR1, lambda *_: seen.append(1))
        rx = picklewire.Receiver.bind({url!r})
        print("ready", flush=True)
        got = rx.recv(timeout=60)
        print(f"{{got}} after {{len(seen)}} signals", flush=True)
        rx.close()
    """)
    child.expect("ready")
    for _ in range(3):
        time.sleep(0.15)
        child.proc.send_signal(signal.SIGUSR1)
    time.sleep(0.15)
    with picklewire.Sender.connect(url) as tx:
        tx.send("hello", timeout=10)
    # Signals that arrive closer together than the handlers run are merged into one call by CPython.
    got = child.readline(30)
    assert re.fullmatch(r"hello after [123] signals", got), (got, child.stderr())
    assert child.finish() == 0
