#!/usr/bin/env bash
# `cmake --install` as a packager runs it, and a consumer project built against the result:
#  1. install into a DESTDIR stage with --prefix P: every file must land below P;
#  2. a separate CMake project finds it with find_package(picklewire) alone and runs a two-process
#     shared-memory transfer; COMPONENTS it does not have must fail the configure;
#  3. the installed Python package imports from below P and knows its version (importlib.metadata).
# Usage: tests/install_check.sh BUILD_DIR   (ctest runs it as install_consumer)
set -euo pipefail
build=$(cd "$1" && pwd)
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
prefix=/opt/picklewire-check
stage=$work/stage

DESTDIR=$stage cmake --install "$build" --prefix "$prefix" > "$work/install.log"
outside=$(cd "$stage" && find . \( -type f -o -type l \) ! -path ".$prefix/*" | head -5)
if [ -n "$outside" ]; then
  echo "install_check: files installed outside the prefix $prefix:"; echo "$outside"; exit 1
fi
echo "install_check: $(cd "$stage" && find . -type f | wc -l) files, all below $prefix"

root=$stage$prefix
cmake -S "$src/tests/install_consumer" -B "$work/consumer" -DCMAKE_PREFIX_PATH="$root" \
      -DCMAKE_BUILD_TYPE=Release > "$work/configure.log" || { cat "$work/configure.log"; exit 1; }
cmake --build "$work/consumer" -j2 > "$work/build.log" || { cat "$work/build.log"; exit 1; }
"$work/consumer/consumer"

mkdir -p "$work/nonsense"
cat > "$work/nonsense/CMakeLists.txt" <<'CMAKE'
cmake_minimum_required(VERSION 3.25)
project(nonsense LANGUAGES CXX)
find_package(picklewire CONFIG REQUIRED COMPONENTS nonsense)
CMAKE
if cmake -S "$work/nonsense" -B "$work/nonsense/build" -DCMAKE_PREFIX_PATH="$root" > "$work/nonsense.log" 2>&1; then
  echo "install_check: find_package(picklewire COMPONENTS nonsense) was accepted"; exit 1
fi
echo "install_check: COMPONENTS nonsense refused"

site=$(cd "$root" && find . -path '*-packages/picklewire' -type d | head -1)
[ -n "$site" ] || { echo "install_check: no Python package below $prefix"; exit 1; }
(cd "$work" && PYTHONPATH="$root/${site%/picklewire}" /usr/bin/python3 -c '
import importlib.metadata, picklewire, sys
assert picklewire.__file__.startswith(sys.argv[1]), picklewire.__file__
assert importlib.metadata.version("picklewire") == picklewire.__version__, picklewire.__version__
print("install_check: python package", picklewire.__version__, "from", picklewire.__file__)' "$root")
