// src/huge_pages.hpp — internal: ask for transparent huge pages on large buffers the codec fills
// at once (a loaded stream, a big list's items, node chunks, the pickler's output).
//
// Where THP is in "madvise" mode (Debian's default), a fresh 32 MB buffer otherwise costs 8192
// page faults, each mapping and zeroing one 4 KiB page: they were about half of a whole-process
// load + dump of a 30 MB pickle (`perf stat`: 38,500 faults, sys time > user time). With the
// advice the same buffer is ~16 faults of 2 MiB. No effect where THP is "always" or "never", or
// for buffers under 4 MiB (the 2 MiB-aligned interior is what gets huge pages).
#pragma once

#include <sys/mman.h>

#include <cstddef>
#include <cstdint>

namespace picklewire::detail {

inline constexpr std::size_t kHugePageBytes = std::size_t(2) << 20;
inline constexpr std::size_t kHugePageAdviceMinBytes = std::size_t(4) << 20;

inline void advise_huge_pages(void* p, std::size_t bytes) noexcept {
#ifdef MADV_HUGEPAGE
  if (bytes < kHugePageAdviceMinBytes) return;
  const auto start = reinterpret_cast<std::uintptr_t>(p);
  const std::uintptr_t begin = (start + kHugePageBytes - 1) & ~(kHugePageBytes - 1);
  const std::uintptr_t end = (start + bytes) & ~(kHugePageBytes - 1);
  if (end > begin) (void)madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);  // advice only
#else
  (void)p;
  (void)bytes;
#endif
}

}  // namespace picklewire::detail
