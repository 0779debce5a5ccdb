#!/usr/bin/env bash
# `pip install --no-build-isolation .` as a user runs it on this machine (Debian's pip, no index):
# the in-tree backend builds with CMake, the package installs into a fresh target directory, and
# a smoke test in an empty directory imports it, reads its version and entry points, moves an
# array through a real shared-memory channel, and runs the installed `picklewire` command.
# Usage: tests/pip_install_check.sh   (ctest runs it as pip_install)
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

/usr/bin/python3 -m pip install --quiet --no-build-isolation --no-index --no-deps \
  --config-settings jobs=2 --target "$work/site" "$src" > "$work/pip.log" 2>&1 || { tail -40 "$work/pip.log"; exit 1; }

mkdir "$work/fresh"
cd "$work/fresh"
PYTHONPATH="$work/site" /usr/bin/python3 - "$work/site" <<'PY'
import importlib.metadata, os, sys
import numpy as np
import picklewire

site = sys.argv[1]
assert picklewire.__file__.startswith(site), picklewire.__file__
assert importlib.metadata.version("picklewire") == picklewire.__version__ != "0+unknown"
backends = [e.value for e in importlib.metadata.entry_points(group="distributed.comm.backends") if e.name == "pw"]
assert backends == ["picklewire.dask:PicklewireBackend"], backends

url = f"shm://pip-smoke-{os.getpid()}"
with picklewire.Receiver.bind(url, capacity=8 << 20) as rx, picklewire.Sender.connect(url) as tx:
    a = np.arange(100_000, dtype=np.float64)
    tx.send({"a": a})
    got = rx.recv(timeout=10)
    assert np.array_equal(got["a"], a) and rx.owns(got["a"])
print("pip_install: picklewire", picklewire.__version__, "from", os.path.dirname(picklewire.__file__))
PY
"$work/site/bin/picklewire" --version
