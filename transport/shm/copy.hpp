// transport/shm/copy.hpp — the one copy of the copy-in path (a buffer from outside the segment).
#pragma once

#include <cstddef>

namespace picklewire::shm {

// Copies n bytes into the segment. Large copies use non-temporal stores: the destination is read
// by another process (and usually not soon by this core), so pulling it through this core's
// cache first only halves the bandwidth. Mid-sized copies use `rep movsb` where the CPU has ERMS:
// glibc stops using it above the L2 size (often 1 MiB) and falls back to a vector loop that can be
// slower from the cache for 1-4 MiB (docs/performance.md). Small copies are glibc memcpy. From
// kParallelCopyFrom a helper thread takes chunks of the copy too (copy.cpp): one core drives one
// memory stream, so two cores copy large buffers faster than one memcpy.
// Thread-safe; callable in a forked child.
void copy_into_segment(void* dst, const void* src, std::size_t n) noexcept;

// Exposed for the benchmark: non-temporal copy regardless of size (falls back to memcpy when the
// CPU lacks AVX2).
void copy_non_temporal(void* dst, const void* src, std::size_t n) noexcept;

// Sizes from which copy_into_segment uses non-temporal stores (bench/shm_bench.cpp measures it).
inline constexpr std::size_t kNonTemporalFrom = std::size_t(16) << 20;
// Sizes from which copy_into_segment uses `rep movsb` (below kNonTemporalFrom, on ERMS CPUs).
inline constexpr std::size_t kRepMovsbFrom = std::size_t(1) << 20;
// Sizes from which copy_into_segment shares the copy with a helper thread, in chunks of
// kCopyChunk (on machines with more than one CPU). From 1 MiB the copy takes long enough to pay
// for waking the helper on the machines measured (docs/performance.md); below, the wake-up
// (tens of microseconds on a slow virtual CPU) would cost more than it saves.
inline constexpr std::size_t kParallelCopyFrom = std::size_t(1) << 20;
inline constexpr std::size_t kCopyChunk = std::size_t(256) << 10;

}  // namespace picklewire::shm
