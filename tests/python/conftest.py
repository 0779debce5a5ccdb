"""Shared pytest fixtures for picklewire's interop tests (run with Debian's /usr/bin/python3).

PICKLEWIRE_CLI is the `picklewire` executable and PICKLEWIRE_BUILD_DIR the CMake build directory
(ctest sets both; by hand they default to ./build).
"""
import math
import os
import pathlib
import re
import subprocess

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
BUILD_DIR = pathlib.Path(os.environ.get("PICKLEWIRE_BUILD_DIR", REPO / "build"))
CLI = pathlib.Path(os.environ.get("PICKLEWIRE_CLI", BUILD_DIR / "picklewire"))

# The one line `picklewire` prints on stderr when it rejects a stream.
ERROR_LINE = re.compile(r"^UnpicklingError: .+ at offset \d+\n$")

# What evaluating repr output needs beyond builtins (Python's own repr needs these too).
EVAL_NAMESPACE = {"nan": math.nan, "inf": math.inf}


@pytest.fixture(scope="session")
def cli():
    if not CLI.exists():
        pytest.fail(f"picklewire CLI not built: {CLI}")
    return CLI


@pytest.fixture(scope="session")
def build_dir():
    return BUILD_DIR


class Result:
    def __init__(self, proc):
        self.returncode = proc.returncode
        self.stdout = proc.stdout.decode("utf-8")
        self.stderr = proc.stderr.decode("utf-8", "replace")


def run_cli(args, timeout=60):
    """Runs the CLI; a hang is a test failure (TimeoutExpired), a signal shows as a negative code."""
    proc = subprocess.run([str(CLI), *map(str, args)], capture_output=True, timeout=timeout)
    return Result(proc)


@pytest.fixture
def repr_of(tmp_path):
    """repr_of(data, buffers=(), extra=()) -> Result of `picklewire repr` on those bytes."""
    counter = [0]

    def run(data, buffers=(), extra=()):
        counter[0] += 1
        stem = tmp_path / f"case{counter[0]}"
        stem.with_suffix(".pkl").write_bytes(data)
        args = ["repr", stem.with_suffix(".pkl")]
        for i, b in enumerate(buffers):
            path = tmp_path / f"case{counter[0]}.buf{i}"
            path.write_bytes(bytes(b))
            args += ["--buffer", path]
        return run_cli(args + list(extra))

    return run


def same(a, b):
    """== that also demands equal types all the way down and treats nan as equal to nan."""
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        if type(x) is not type(y):
            return False
        if isinstance(x, float):
            if not (x == y or (math.isnan(x) and math.isnan(y))):
                return False
            if x == 0 and math.copysign(1, x) != math.copysign(1, y):
                return False
        elif isinstance(x, complex):
            # Python's own complex repr loses the sign of a zero part ('(-0+1j)'): value equality.
            for p, q in ((x.real, y.real), (x.imag, y.imag)):
                if not (p == q or (math.isnan(p) and math.isnan(q))):
                    return False
        elif isinstance(x, (list, tuple)):
            if len(x) != len(y):
                return False
            stack += list(zip(x, y))
        elif isinstance(x, dict):
            if list(x.keys()) != list(y.keys()):
                return False
            stack += [(x[k], y[k]) for k in x]
        elif x != y:
            return False
    return True


@pytest.fixture
def url_for(tmp_path):
    """Makes channel URLs (shm, ipc, tcp, inproc); removes every /dev/shm file they created, even
    when the test fails."""
    import gc
    import module_support as ms

    made = []

    def make(transport, tag="t"):
        url = ms.make_url(transport, tmp_path, tag)
        made.append(url)
        return url

    yield make
    gc.collect()
    for url in made:
        if url.startswith("shm://"):
            ms.remove_shm_files(url[len("shm://"):])
    if any(url.startswith(("tcp://", "ipc://")) for url in made):
        ms.remove_dead_answer_boxes()  # of senders killed before a receiver could notice


def pytest_configure(config):
    # Marks used by the peers' suites we import (distributed's test_comms.py).
    for mark in ("gpu: needs a GPU (Dask's own suite)", "flaky: retried by pytest-rerunfailures in Dask's suite"):
        config.addinivalue_line("markers", mark)
