#!/usr/bin/env bash
# Builds libFuzzer targets (clang++ -fsanitize=fuzzer,address,undefined) into their own build
# directory, generates their seed corpora with the real producers, and fuzzes each in turn.
# Exit status is non-zero when a target finds a crash (the reproducer is left in
# $out/artifacts-<target>/). docs/fuzzing.md has the long-run commands.
#
# Usage: tests/fuzz/run.sh [--seconds N | --runs N] [--jobs J] [--timeout S] [--max-len B] [TARGET...]
#   --seconds N   total time, split evenly between the targets run (default 60: the CI smoke run)
#   --runs N      instead: N executions of each target
#   --jobs J      parallel fuzzing processes per target (libFuzzer -fork)
#   --timeout S   seconds one input may take before it counts as a hang (default 10; a long run
#                 that may be paused with SIGSTOP or starved by other work needs more)
#   --max-len B   longest input tried (default 65536; 4096 runs the unpickler target ~1.7x faster)
#   TARGET...     the targets to run (default: all; --list names them)
# FUZZ_BUILD_DIR=... chooses the build directory (default build-fuzz).
set -euo pipefail
cd "$(dirname "$0")/../.."
seconds=60
runs=
jobs=1
unit_timeout=10
max_len=65536
chosen=()
list_only=
while [ $# -gt 0 ]; do
  case "$1" in
    --seconds) seconds=$2; shift 2 ;;
    --runs) runs=$2; shift 2 ;;
    --jobs) jobs=$2; shift 2 ;;
    --timeout) unit_timeout=$2; shift 2 ;;
    --max-len) max_len=$2; shift 2 ;;
    --list) list_only=1; shift ;;
    -*) sed -n '7,16p' "$0" >&2; exit 2 ;;
    *) chosen+=("$1"); shift ;;
  esac
done
out=${FUZZ_BUILD_DIR:-build-fuzz}
mkdir -p "$out"
fuzz_flags=(-std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined
            -fno-omit-frame-pointer -Iinclude -Isrc)

# ---------------------------------------------------------------- the targets
# One line each: target NAME "DRIVER SOURCES" "EXTRA COMPILER/LINKER FLAGS" "SEED COMMAND (gets a
#   dir)" [PREPARE FUNCTION] [ENVIRONMENT (VAR=value ...)]
# Every target links the sanitized codec (src/*.cpp, compiled once into $out/libcodec.a; it knows
# nothing of transports); a target over other code adds its sources or a PREPARE step.
names=()
declare -A sources flags seeds prepare environment
target() {
  names+=("$1"); sources[$1]=$2; flags[$1]=$3; seeds[$1]=$4; prepare[$1]=${5:-}; environment[$1]=${6:-}
}
pickle_seeds="/usr/bin/python3 tests/fuzz/make_corpus.py"

# loads_safe: the real Python extension, built by CMake with clang and coverage + sanitizers,
# imported by a driver that embeds CPython (tests/fuzz/loads_safe_fuzz.cpp).
build_sanitized_extension() {
  local dir=$out/pyext
  if [ ! -f "$dir/CMakeCache.txt" ]; then
    CC=clang CXX=clang++ cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=Debug -DPython3_EXECUTABLE=/usr/bin/python3 \
      -DPICKLEWIRE_BUILD_TESTS=OFF -DPICKLEWIRE_BUILD_BENCH=OFF \
      -DCMAKE_CXX_FLAGS="-O1 -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer" \
      >"$out/pyext-cmake.log"
  fi
  cmake --build "$dir" --target _picklewire -j"$build_jobs" >"$out/pyext-build.log"
}
python_embed="$(/usr/bin/python3-config --includes) $(/usr/bin/python3-config --embed --ldflags)"

# The shared-memory parsers of what another process wrote: seeds are written by the real sender
# (tests/fuzz/make_shm_seeds.cpp runs a Sender against a Receiver and keeps the bytes it wrote).
build_shm_seed_maker() {
  if [ ! -x "$out/make_shm_seeds" ] || [ -n "$(find tests/fuzz/make_shm_seeds.cpp transport/shm -newer "$out/make_shm_seeds" | head -1)" ]; then
    clang++ -std=c++20 -O1 -Iinclude -Itransport tests/fuzz/make_shm_seeds.cpp transport/shm/*.cpp \
      -o "$out/make_shm_seeds" -lpthread -lrt
  fi
}
shm_seeds() {  # shm_seeds cell|record DIR
  local scratch
  scratch=$(mktemp -d)
  "$out/make_shm_seeds" "$scratch/cell" "$scratch/record" >/dev/null
  cp "$scratch/$1"/* "$2"/
  rm -rf "$scratch"
}

target unpickler  "tests/fuzz/unpickler_fuzz.cpp"  "" "$pickle_seeds"
target repr       "tests/fuzz/repr_fuzz.cpp"       "" "$pickle_seeds --prefix-byte"
target loads_safe "tests/fuzz/loads_safe_fuzz.cpp"          "$python_embed" "$pickle_seeds --prefix-byte" \
                  build_sanitized_extension \
                  "FUZZ_PICKLEWIRE_PYTHONPATH=$out/pyext/python ASAN_OPTIONS=detect_leaks=0:detect_odr_violation=0"
target zmq_frames "tests/fuzz/zmq_frames_fuzz.cpp transport/zmq/message_frames.cpp transport/zmq/frame_pool.cpp transport/zmq/wire_header.cpp transport/zmq/lz4_codec.cpp" \
                  "-Itransport -lzmq -llz4" "/usr/bin/python3 tests/fuzz/make_zmq_seeds.py"
target shm_lane_cell "tests/fuzz/shm_lane_cell_fuzz.cpp" "-Itransport" "shm_seeds cell" build_shm_seed_maker
target shm_record    "tests/fuzz/shm_record_fuzz.cpp transport/shm/message_record.cpp" "-Itransport" "shm_seeds record" \
                     build_shm_seed_maker

if [ -n "$list_only" ]; then printf '%s\n' "${names[@]}"; exit 0; fi
if [ ${#chosen[@]} -eq 0 ]; then chosen=("${names[@]}"); fi
for name in "${chosen[@]}"; do
  if [ -z "${sources[$name]+set}" ]; then echo "unknown target '$name' (have: ${names[*]})" >&2; exit 2; fi
done

# ---------------------------------------------------------------- build, seed, fuzz
limit=(-max_total_time=$(( seconds / ${#chosen[@]} > 0 ? seconds / ${#chosen[@]} : 1 )))
if [ -n "$runs" ]; then limit=(-runs="$runs"); fi
parallel=()
if [ "$jobs" -gt 1 ]; then parallel=(-fork="$jobs"); fi
# The codec, compiled once for every target (each object rebuilt when its source or any header
# is newer), in parallel.
build_jobs=${FUZZ_BUILD_JOBS:-$(nproc)}
mkdir -p "$out/codec"
newest_header=$(ls -t src/*.hpp src/*.inc include/picklewire/*.hpp | head -1)
stale=()
for src in src/*.cpp; do
  obj=$out/codec/$(basename "${src%.cpp}").o
  if [ ! -f "$obj" ] || [ "$src" -nt "$obj" ] || [ "$newest_header" -nt "$obj" ]; then stale+=("$src" "$obj"); fi
done
if [ ${#stale[@]} -gt 0 ] || [ ! -f "$out/libcodec.a" ]; then
  codec_flags=("${fuzz_flags[@]/-fsanitize=fuzzer,/-fsanitize=fuzzer-no-link,}")
  export FUZZ_CODEC_FLAGS="${codec_flags[*]}"  # (no flag contains a space)
  # shellcheck disable=SC2016  # expanded by the inner sh
  printf '%s\n' "${stale[@]}" | xargs -r -P "$build_jobs" -n 2 sh -c 'clang++ $FUZZ_CODEC_FLAGS -c "$0" -o "$1"' 
  objects=()
  for src in src/*.cpp; do objects+=("$out/codec/$(basename "${src%.cpp}").o"); done
  rm -f "$out/libcodec.a"
  ar rcs "$out/libcodec.a" "${objects[@]}"
fi

status=0
for name in "${chosen[@]}"; do
  binary=$out/${name}_fuzz
  read -r -a srcs <<<"$(echo ${sources[$name]})"  # (globs expanded)
  if [ -n "${prepare[$name]}" ]; then "${prepare[$name]}"; fi
  if [ ! -x "$binary" ] || [ -n "$(find "${srcs[@]}" "$out/libcodec.a" -newer "$binary" 2>/dev/null | head -1)" ]; then
    # shellcheck disable=SC2086  # flags[] holds several words
    clang++ "${fuzz_flags[@]}" "${srcs[@]}" "$out/libcodec.a" ${flags[$name]} -o "$binary"
  fi
  mkdir -p "$out/seeds-$name" "$out/corpus-$name" "$out/artifacts-$name"
  ${seeds[$name]} "$out/seeds-$name" >/dev/null
  # Inputs that once crashed the target (tests/fuzz/regressions/TARGET/, each fixed with a unit
  # test) are replayed by every run, the smoke run included.
  regressions=()
  if [ -d "tests/fuzz/regressions/$name" ]; then regressions=("tests/fuzz/regressions/$name"); fi
  echo "== $name: ${limit[*]} ${parallel[*]}"
  # shellcheck disable=SC2086  # environment[] holds VAR=value words
  if ! env ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ${environment[$name]} \
      "$binary" "${limit[@]}" -timeout="$unit_timeout" -rss_limit_mb=2048 -max_len="$max_len" "${parallel[@]}" \
      -artifact_prefix="$out/artifacts-$name/" -print_final_stats=1 "$out/corpus-$name" "$out/seeds-$name" "${regressions[@]}"; then
    echo "== $name: FAILED (reproducer in $out/artifacts-$name/)"
    status=1
  fi
done
exit $status
