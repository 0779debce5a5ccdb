"""The keyword options of Sender/Receiver.bind/connect: typed signatures, checks phrased for
Python users, and the ZeroMQ options (linger, heartbeat, heartbeat_timeout, CURVE key files)
reaching real sockets."""

import errno
import os
import re
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import module_support as ms  # noqa: E402

import picklewire  # noqa: E402

FACTORIES = {
    "Sender.connect": picklewire.Sender.connect,
    "Sender.bind": picklewire.Sender.bind,
    "Receiver.bind": picklewire.Receiver.bind,
    "Receiver.connect": picklewire.Receiver.connect,
}


def signature_line(function):
    return function.__doc__.splitlines()[0]


def keywords_of(function):
    line = signature_line(function)
    return line[line.index("(") + 1: line.rindex(")")]


def test_factories_share_one_typed_signature():
    expected = keywords_of(picklewire.Sender.connect)
    for name, factory in FACTORIES.items():
        assert keywords_of(factory) == expected, name
        returned = name.split(".")[0]
        assert signature_line(factory).endswith(f"-> picklewire._picklewire.{returned}"), signature_line(factory)
    assert expected.startswith("url: str, *, inband_threshold: int = 4096, send_timeout: Optional[float] = None")
    for keyword in ["capacity: int = 268435456", "spin: float = 5e-05", "compress: bool = False",
                    "heartbeat: float = 1.0", "heartbeat_timeout: float = 0.0", "linger: Optional[float] = 1.0",
                    "immediate: bool = True",
                    "curve_server_secret_key_file: Optional[os.PathLike] = None",
                    "curve_authorized_clients_file: Optional[os.PathLike] = None"]:
        assert keyword in expected, keyword


def test_methods_show_types_not_object():
    docs = {
        "send": picklewire.Sender.send, "send_message": picklewire.Sender.send_message,
        "recv": picklewire.Receiver.recv, "recv_message": picklewire.Receiver.recv_message,
        "buffer": picklewire.Sender.buffer, "empty": picklewire.Sender.empty,
        "segment_range": picklewire.Receiver.segment_range, "stats": picklewire.Receiver.stats,
    }
    for name, method in docs.items():
        line = signature_line(method)
        assert "timeout: object" not in line, line
        if "timeout" in line:
            assert "timeout: Optional[float] = None" in line, line
    assert signature_line(picklewire.Sender.send).endswith("-> None")
    assert signature_line(picklewire.Sender.buffer).endswith("-> memoryview")
    assert signature_line(picklewire.Sender.empty).endswith("-> numpy.ndarray")
    assert signature_line(picklewire.Receiver.segment_range).endswith("-> Optional[Tuple[int, int]]")
    assert signature_line(picklewire.Receiver.stats).endswith("-> dict")
    assert "Ctrl-C" in picklewire.Receiver.recv.__doc__


@pytest.mark.parametrize("cls, how", [(picklewire.Sender, "Sender.connect"), (picklewire.Receiver, "Receiver.bind"),
                                      (picklewire.BufferView, "recv()")])
def test_classes_say_how_they_are_made(cls, how):
    with pytest.raises(TypeError, match="cannot be constructed directly") as caught:
        cls()
    assert how in str(caught.value)
    assert how in cls.__init__.__doc__


def assert_for_python_users(message):
    assert "Options::" not in message and "--" not in message, message


@pytest.mark.parametrize("factory, url_kind, keywords, names", [
    ("Sender.connect", "shm", {"compress": True}, ["compress", "ZeroMQ"]),
    ("Receiver.bind", "shm", {"compress": True}, ["compress", "ZeroMQ"]),
    ("Receiver.bind", "shm", {"linger": 2.0}, ["linger", "ZeroMQ"]),
    ("Receiver.bind", "shm", {"heartbeat": 2.0}, ["heartbeat", "ZeroMQ"]),
    ("Receiver.bind", "shm", {"immediate": False}, ["immediate", "ZeroMQ"]),
    ("Receiver.bind", "shm", {"curve_server_secret_key_file": "/nonexistent"}, ["curve_server_secret_key_file"]),
    ("Sender.connect", "shm", {"capacity": 1 << 20}, ["capacity", "Receiver.bind"]),
    ("Receiver.bind", "tcp", {"capacity": 1 << 20}, ["capacity", "shm://"]),
    ("Sender.connect", "ipc", {"spin": 0.001}, ["spin", "shm://"]),
    ("Receiver.bind", "ipc", {"send_timeout": -1.0}, ["send_timeout"]),
    ("Receiver.bind", "ipc", {"send_timeout": float("nan")}, ["send_timeout"]),
    ("Receiver.bind", "ipc", {"send_timeout": 1e300}, ["send_timeout", "1e9"]),
    ("Receiver.bind", "ipc", {"inband_threshold": -1}, ["inband_threshold"]),
    ("Receiver.bind", "ipc", {"heartbeat": -1.0}, ["heartbeat"]),
    ("Receiver.bind", "ipc", {"heartbeat": 0.0, "heartbeat_timeout": 2.0}, ["heartbeat_timeout", "heartbeat="]),
    ("Receiver.bind", "ipc", {"linger": -0.5}, ["linger"]),
    ("Receiver.bind", "ipc", {"send_hwm": -1}, ["send_hwm"]),
    ("Receiver.bind", "ipc", {"max_message_bytes": -2}, ["max_message_bytes"]),
    ("Receiver.bind", "shm", {"slot_count": 1}, ["slot_count"]),
    ("Receiver.bind", "shm", {"capacity": 100}, ["capacity"]),
    ("Receiver.bind", "shm", {"ring_capacity": 0}, ["ring_capacity"]),
    ("Receiver.bind", "tcp", {"curve_server_secret_key_file": "s", "curve_client_secret_key_file": "c"}, ["CURVE"]),
    ("Sender.connect", "tcp", {"curve_client_secret_key_file": "c"}, ["curve_client_public_key_file"]),
    ("Receiver.bind", "tcp", {"curve_authorized_clients_file": "a"}, ["curve_server_secret_key_file"]),
])
def test_bad_or_misplaced_options_raise_valueerror(factory, url_kind, keywords, names, url_for):
    url = url_for(url_kind)
    with pytest.raises(ValueError) as caught:
        FACTORIES[factory](url, **keywords)
    for name in names:
        assert name in str(caught.value), (name, str(caught.value))
    assert_for_python_users(str(caught.value))
    if url.startswith("shm://"):
        assert not ms.shm_files(url[len("shm://"):])  # refused before anything was created


def test_timeout_arguments_are_checked(url_for):
    with picklewire.Receiver.bind(url_for("ipc")) as rx:
        with pytest.raises(ValueError, match="timeout"):
            rx.recv(timeout=-1)
        with pytest.raises(ValueError, match="timeout"):
            rx.recv(timeout=float("inf"))
        with pytest.raises(TypeError):
            rx.recv(timeout="soon")


def test_segment_geometry_reaches_the_segment(url_for):
    url = url_for("shm")
    with picklewire.Receiver.bind(url, capacity=1 << 20, lane_count=0, ring_capacity=3, prefault=False,
                                  spin=0.0) as rx, picklewire.Sender.connect(url, spin=0.0) as tx:
        assert rx.stats()["capacity"] >= 1 << 20 and rx.stats()["capacity"] < 2 << 20
        for i in range(3):
            tx.send(b"%d" % i * 1000, timeout=5)
        with pytest.raises(picklewire.TimeoutError):
            tx.send(b"x" * 1000, timeout=0.2)  # the ring holds 3
        assert [rx.recv(timeout=5)[:1] for _ in range(3)] == [b"0", b"1", b"2"]


# ---- ZeroMQ options against real sockets


def keypair_files(tmp_path, tag):
    zmq = pytest.importorskip("zmq")
    if not zmq.has("curve"):
        pytest.skip("this libzmq has no CURVE support")
    public, secret = zmq.curve_keypair()
    (tmp_path / f"{tag}.key").write_bytes(secret)
    (tmp_path / f"{tag}.pub").write_bytes(public)
    return tmp_path / f"{tag}.key", tmp_path / f"{tag}.pub", public


def test_curve_keys_authenticate_and_refuse(tmp_path, url_for):
    server_key, server_pub, _ = keypair_files(tmp_path, "server")
    client_key, client_pub, client_public = keypair_files(tmp_path, "client")
    stranger_key, stranger_pub, _ = keypair_files(tmp_path, "stranger")
    allowed = tmp_path / "allowed"
    allowed.write_bytes(client_public + b"\n")
    url = url_for("tcp")
    with picklewire.Receiver.bind(url, curve_server_secret_key_file=server_key,
                                  curve_authorized_clients_file=str(allowed)) as rx:
        with picklewire.Sender.connect(url, curve_server_public_key_file=server_pub, curve_client_secret_key_file=client_key,
                                       curve_client_public_key_file=client_pub) as tx:
            tx.send({"a": np.arange(100_000)}, timeout=10)
            assert rx.recv(timeout=10)["a"][-1] == 99_999
        for refused in [dict(curve_server_public_key_file=server_pub, curve_client_secret_key_file=stranger_key,
                             curve_client_public_key_file=stranger_pub), {}]:
            with picklewire.Sender.connect(url, linger=0, **refused) as tx:
                try:
                    tx.send("must not arrive", timeout=0.5)
                except picklewire.TimeoutError:
                    pass  # no authenticated connection to queue it on
                with pytest.raises(picklewire.TimeoutError):
                    rx.recv(timeout=1.0)


def test_curve_key_file_missing_is_a_transport_error(tmp_path, url_for):
    with pytest.raises(picklewire.TransportError, match="no-such.key"):
        picklewire.Receiver.bind(url_for("tcp"), curve_server_secret_key_file=tmp_path / "no-such.key")


@pytest.mark.parametrize("heartbeat", [True, False])
def test_heartbeat_turns_a_vanished_receiver_into_peergone(heartbeat, url_for):
    """With heartbeat= (and heartbeat_timeout=) the bound Sender notices its only receiver died
    and raises PeerGone (errno EPIPE); without, the send just waits (TimeoutError)."""
    url = url_for("tcp")
    keywords = dict(heartbeat=0.1, heartbeat_timeout=0.5) if heartbeat else {}
    with picklewire.Sender.bind(url, linger=0, send_hwm=1, **keywords) as tx:
        child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
            import picklewire, time
            rx = picklewire.Receiver.connect({url!r}, recv_hwm=1)
            print(rx.recv(timeout=30), flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True)
        try:
            tx.send("hello", timeout=30)
            assert child.stdout.readline().strip() == "hello"
        finally:
            child.kill()
            child.wait()
        expected = picklewire.PeerGone if heartbeat else picklewire.TimeoutError
        with pytest.raises(expected) as caught:
            for _ in range(100):  # the first sends may still fill the pipes' high-water marks
                tx.send(np.zeros(100_000), timeout=1.0)
        assert caught.value.errno == (errno.EPIPE if heartbeat else errno.ETIMEDOUT)


@pytest.mark.parametrize("linger", [0.0, None])
def test_linger_bounds_how_long_exit_waits_for_queued_messages(linger, url_for):
    """A message queued for a receiver that never comes: linger=0 drops it at exit, linger=None
    waits for it forever (the child is still alive after the parent gave up waiting)."""
    url = url_for("tcp")  # nobody listens there
    # immediate=False: queue for a peer that is not connected (by default a send would time out).
    child = subprocess.Popen([sys.executable, "-c", textwrap.dedent(f"""
        import picklewire
        tx = picklewire.Sender.connect({url!r}, linger={linger!r}, immediate=False)
        tx.send("queued, never delivered", timeout=5)
        tx.close()
        print("closed", flush=True)
    """)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "closed"
        if linger == 0.0:
            assert child.wait(30) == 0
        else:
            with pytest.raises(subprocess.TimeoutExpired):
                child.wait(3)
    finally:
        if child.poll() is None:
            child.send_signal(signal.SIGKILL)
            child.wait()


def test_typing_stub_matches_the_extension():
    """python/picklewire/_picklewire.pyi lists the same keywords, in the same order, with the same
    defaults as the extension's signatures (the stub is hand-written: this keeps it honest)."""
    import ast
    import pathlib
    stub = pathlib.Path(picklewire.__file__).with_name("_picklewire.pyi")
    tree = ast.parse(stub.read_text())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    for qualified, factory in FACTORIES.items():
        cls, name = qualified.split(".")
        [stub_def] = [f for f in classes[cls].body if isinstance(f, ast.FunctionDef) and f.name == name]
        stub_keywords = [(a.arg, ast.literal_eval(d)) for a, d in zip(stub_def.args.kwonlyargs, stub_def.args.kw_defaults)]
        runtime = re.findall(r"(\w+): [^=,]+(?:\[[^\]]*\])? = ([^,]+)", keywords_of(factory))
        runtime_keywords = [(k, ast.literal_eval(v) if v != "None" else None) for k, v in runtime]
        assert len(runtime_keywords) == 26 and stub_keywords == runtime_keywords, qualified
