"""picklewire: move Python objects between processes with as few copies as possible.

    import picklewire, numpy as np

    with picklewire.Receiver.bind("shm://frames") as rx:          # process A, started first:
        frame = rx.recv()                                         # it creates the channel. frame: a
                                                                  # numpy array living in shared memory

    with picklewire.Sender.connect("shm://frames") as tx:         # process B
        tx.send(np.zeros((1080, 1920, 3), np.uint8))              # one copy, into the segment
        a = tx.empty((1080, 1920, 3), np.uint8); a[:] = 7         # already in the segment:
        tx.send(a)                                                # zero copies

URLs: shm://NAME (shared memory, this host), tcp://HOST:PORT, ipc://PATH, inproc://NAME (ZeroMQ).
Keyword options (capacity=, compress=, linger=, heartbeat=, CURVE key files, ...) are listed in
help(picklewire.Sender.connect) and docs/python.md; transport failures raise
picklewire.TransportError, an OSError whose errno says what failed (ENOENT, EADDRINUSE, ...).
Objects are pickled by CPython's own pickler at protocol 5; every buffer of at least
`inband_threshold` bytes (numpy array data, PickleBuffer) travels out-of-band through the
transport, and the receiver rebuilds arrays directly on the received memory. C++ peers
(picklewire::Sender / Receiver, the `picklewire` command) speak the same wire.

`loads_safe(data, buffers=(), allowed=())` reads a pickle from a peer you do not trust: nothing
but builtins, numpy arrays and the globals you allow is ever built. See docs/python.md.
"""

try:
    from picklewire._version import __version__  # written by the build (CMake or the wheel backend)
except ImportError:  # a source checkout that was never built
    __version__ = "0+unknown"

try:
    from picklewire._picklewire import (
        BufferView,
        Error,
        PeerGone,
        Receiver,
        Sender,
        TimeoutError,
        TransportError,
        UnpicklingError,
        loads_safe,
    )
except ImportError as _extension_missing:  # e.g. a pyzmq-only peer using picklewire.wire
    _missing = _extension_missing

    def __getattr__(name):
        if name in __all__:
            raise ImportError(f"picklewire.{name} needs the C++ extension picklewire._picklewire: {_missing}")
        raise AttributeError(f"module 'picklewire' has no attribute {name!r}")

__all__ = [
    "BufferView",
    "Error",
    "PeerGone",
    "Receiver",
    "Sender",
    "TimeoutError",
    "TransportError",
    "UnpicklingError",
    "loads_safe",
]
