"""Task functions for tests/python/test_futures.py: module-level so that every start method finds them."""
import os
import time

import numpy as np

from picklewire import futures


def shm_home(address):
    """The /dev/shm file backing the mapping that holds `address` in this process, or None."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            begin, end = (int(x, 16) for x in fields[0].split("-"))
            if begin <= address < end:
                path = fields[5].strip() if len(fields) == 6 else ""
                return path if path.startswith("/dev/shm/") else None
    return None


def arrays_in(obj):
    """Every numpy array reachable through dicts, lists and tuples, each once, depth first."""
    out, seen, stack = [], set(), [obj]
    while stack:
        x = stack.pop()
        if id(x) in seen:
            continue
        seen.add(id(x))
        if isinstance(x, np.ndarray):
            out.append(x)
        elif isinstance(x, dict):
            stack.extend(reversed(list(x.values())))
        elif isinstance(x, (list, tuple)):
            stack.extend(reversed(x))
    return out


def homes(obj):
    """(shm mapping path or None, writeable) of every array in `obj` with data."""
    return [(shm_home(a.ctypes.data) if a.nbytes else None, a.flags.writeable) for a in arrays_in(obj)]


def echo(x):
    return x


def echo_with_homes(x):
    """`x` back, and where each of its arrays lived in the worker."""
    return x, homes(x)


def scale_in_place(a, factor):
    a *= factor  # the worker's argument is its own (writable) copy, as with the standard executor
    return a


def make_with_empty(shape, dtype, value):
    a = futures.empty(shape, dtype)
    a[...] = value
    return a


def raise_about(a):
    raise ValueError(f"bad array of shape {a.shape}")


def signal_then_sleep(flag_path, payload, seconds, hold_shm_bytes=0):
    """Writes this worker's pid to `flag_path` (so the test can kill it mid-task), then sleeps."""
    held = futures.empty((hold_shm_bytes,), np.uint8) if hold_shm_bytes else None
    with open(flag_path + ".tmp", "w") as f:
        f.write(str(os.getpid()))
    os.rename(flag_path + ".tmp", flag_path)
    time.sleep(seconds)
    return payload, held


def pid_of(_=None):
    return os.getpid()
