#!/usr/bin/env bash
# Installs what is missing, builds everything with warnings as errors, and runs every test:
# GoogleTest units, the Python interop suite (pytest under /usr/bin/python3), and a short
# libFuzzer smoke run of the unpickler. Usage: tests/run.sh   (BUILD_DIR=... to choose the build dir)
set -euo pipefail
cd "$(dirname "$0")/.."
bash .ci/install-deps.sh

build=${BUILD_DIR:-build}
jobs=$(nproc)
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DPICKLEWIRE_WERROR=ON \
      -DPython3_EXECUTABLE=/usr/bin/python3 >/dev/null
cmake --build "$build" -j"$jobs"

# Fuzz smoke run: every libFuzzer target under ASan/UBSan, FUZZ_SECONDS split between them (long
# runs: docs/fuzzing.md).
if [ -f tests/fuzz/run.sh ] && command -v clang++ >/dev/null; then
  mkdir -p "$build"
  if bash tests/fuzz/run.sh --seconds "${FUZZ_SECONDS:-60}" > "$build/fuzz-smoke.log" 2>&1; then
    echo "fuzz smoke: $(grep -E '^(== [a-z_]+:|Done [0-9]+ runs)' "$build/fuzz-smoke.log" | paste -sd' ') (log: $build/fuzz-smoke.log)"
  else
    tail -60 "$build/fuzz-smoke.log"
    echo "fuzz smoke: FAILED (log: $build/fuzz-smoke.log)" >&2
    exit 1
  fi
fi

cd "$build"
ctest --output-on-failure -j"$jobs" --timeout 1500
