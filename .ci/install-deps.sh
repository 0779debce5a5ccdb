#!/usr/bin/env bash
# Installs the Debian packages picklewire needs to build, test and run its demos.
# Idempotent: asks apt only for what dpkg says is missing, so a prepared machine pays nothing.
set -euo pipefail

packages=(
  build-essential cmake pkg-config
  libboost-dev                       # Boost.Interprocess (header-only): shared-memory transport
  libzmq3-dev cppzmq-dev liblz4-dev  # ZeroMQ transport and its per-buffer compression
  libcli11-dev nlohmann-json3-dev    # the picklewire command line and its JSON output
  libgtest-dev libbenchmark-dev      # tests and benchmarks
  python3-dev pybind11-dev           # the Python module
  python3-numpy python3-zmq python3-pytest python3-matplotlib  # interop tests, pyzmq peer, plots
  libpython3.11-testsuite            # CPython's pickletester.py, test_concurrent_futures.py: peers' own tests
  python3-distributed python3-joblib # Dask: the pw:// comm backend and its tests; joblib: a benchmark baseline
  python3-setuptools python3-wheel python3-pip  # pip install --no-build-isolation . (the wheel backend)
  doxygen                            # the API reference (docs/api.md)
  clang libclang-rt-14-dev           # libFuzzer + sanitizers for the fuzz smoke run
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}"
  sudo_cmd=()
  [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
