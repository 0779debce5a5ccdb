"""picklewire's Python exceptions carry the transport's error code as `.errno`, so callers tell a
bad scheme, a missing channel, an address in use and a permission problem apart without reading
the message."""

import errno
import os
import socket
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import module_support as ms  # noqa: E402

import picklewire  # noqa: E402


def test_transport_errors_are_oserrors_with_errno():
    assert issubclass(picklewire.TransportError, OSError)
    assert issubclass(picklewire.TransportError, picklewire.Error)
    assert issubclass(picklewire.TimeoutError, TimeoutError)
    assert issubclass(picklewire.PeerGone, picklewire.TransportError)


@pytest.mark.parametrize("open_endpoint", [picklewire.Receiver.bind, picklewire.Receiver.connect,
                                           picklewire.Sender.bind, picklewire.Sender.connect])
def test_unknown_scheme_is_eprotonosupport(open_endpoint):
    with pytest.raises(picklewire.TransportError) as caught:
        open_endpoint("carrier-pigeon://x")
    assert caught.value.errno == errno.EPROTONOSUPPORT
    assert "carrier-pigeon" in str(caught.value)


def test_not_a_url_is_einval():
    with pytest.raises(picklewire.TransportError) as caught:
        picklewire.Receiver.bind("just-a-name")
    assert caught.value.errno == errno.EINVAL


def test_missing_shm_channel_is_enoent(url_for):
    with pytest.raises(picklewire.TransportError) as caught:
        picklewire.Sender.connect(url_for("shm"))  # nobody bound it
    assert caught.value.errno == errno.ENOENT


def test_shm_channel_bound_twice_is_eaddrinuse(url_for):
    url = url_for("shm")
    with picklewire.Receiver.bind(url, capacity=1 << 20):
        with pytest.raises(picklewire.TransportError) as caught:
            picklewire.Receiver.bind(url, capacity=1 << 20)
        assert caught.value.errno == errno.EADDRINUSE


@pytest.mark.parametrize("open_endpoint", [picklewire.Receiver.bind, picklewire.Sender.bind])
def test_tcp_address_in_use_is_eaddrinuse(open_endpoint):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(picklewire.TransportError) as caught:
            open_endpoint(f"tcp://127.0.0.1:{port}")
        assert caught.value.errno == errno.EADDRINUSE


def test_shm_channel_of_wrong_permissions_is_eacces(url_for):
    """A segment that other users may read is refused (its data would not be private). The check
    is picklewire's own, so it holds for root too (tests run as root: a directory without write
    permission would not stop root)."""
    url = url_for("shm")
    name = url[len("shm://"):]
    with picklewire.Receiver.bind(url, capacity=1 << 20):
        [path] = ms.shm_files(name)  # where the transport keeps this channel
    assert not os.path.exists(path)  # closing removed it
    fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
    try:
        os.fchmod(fd, 0o644)  # umask-proof
        os.ftruncate(fd, 1 << 20)
        with pytest.raises(picklewire.TransportError) as caught:
            picklewire.Sender.connect(url)
        assert caught.value.errno == errno.EACCES
    finally:
        os.close(fd)
        os.unlink(path)


def test_closed_endpoint_is_ebadf(url_for):
    url = url_for("ipc")
    rx = picklewire.Receiver.bind(url)
    rx.close()
    with pytest.raises(picklewire.TransportError) as caught:
        rx.recv(timeout=0)
    assert caught.value.errno == errno.EBADF


def test_timeouts_are_etimedout(url_for):
    with picklewire.Receiver.bind(url_for("ipc")) as rx:
        with pytest.raises(picklewire.TimeoutError) as caught:
            rx.recv(timeout=0.05)
    assert caught.value.errno == errno.ETIMEDOUT
    assert isinstance(caught.value, TimeoutError)


def test_peer_gone_is_epipe(url_for):
    url = url_for("shm")
    rx = picklewire.Receiver.bind(url, capacity=1 << 20)
    tx = picklewire.Sender.connect(url)
    rx.close()
    with pytest.raises(picklewire.PeerGone) as caught:
        tx.send(b"x" * 100_000, timeout=5)
    assert caught.value.errno == errno.EPIPE
    tx.close()


def test_unpickling_errors_have_no_errno():
    with pytest.raises(picklewire.UnpicklingError) as caught:
        picklewire.loads_safe(b"\x80\x05garbage")
    assert not isinstance(caught.value, OSError)
