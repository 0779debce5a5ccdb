#include "shm/copy.hpp"

#include <cpuid.h>
#include <immintrin.h>

#include <cstdint>
#include <cstring>

namespace picklewire::shm {
namespace {

__attribute__((target("avx2"))) void stream_copy_avx2(std::byte* dst, const std::byte* src, std::size_t n) noexcept {
  // Head: bring dst to 32-byte alignment with an ordinary copy.
  std::size_t head = (32 - (reinterpret_cast<std::uintptr_t>(dst) & 31)) & 31;
  if (head > n) head = n;
  std::memcpy(dst, src, head);
  dst += head;
  src += head;
  n -= head;
  std::size_t blocks = n / 128;
  for (std::size_t i = 0; i < blocks; ++i) {
    __m256i a = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src));
    __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 32));
    __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 64));
    __m256i d = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + 96));
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst), a);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + 32), b);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + 64), c);
    _mm256_stream_si256(reinterpret_cast<__m256i*>(dst + 96), d);
    src += 128;
    dst += 128;
  }
  _mm_sfence();  // streaming stores are weakly ordered: make them visible before publishing
  std::memcpy(dst, src, n % 128);
}

bool has_avx2() noexcept {
  static const bool yes = __builtin_cpu_supports("avx2");
  return yes;
}

// ERMS: the CPU advertises `rep movsb` as its fast bulk copy (CPUID leaf 7, EBX bit 9).
bool has_erms() noexcept {
  static const bool yes = [] {
    unsigned a, b, c, d;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & (1u << 9)) != 0;
  }();
  return yes;
}

void rep_movsb(void* dst, const void* src, std::size_t n) noexcept {
  asm volatile("rep movsb" : "+D"(dst), "+S"(src), "+c"(n) : : "memory");
}

}  // namespace

void copy_non_temporal(void* dst, const void* src, std::size_t n) noexcept {
  if (has_avx2())
    stream_copy_avx2(static_cast<std::byte*>(dst), static_cast<const std::byte*>(src), n);
  else
    std::memcpy(dst, src, n);
}

void copy_into_segment(void* dst, const void* src, std::size_t n) noexcept {
  if (n >= kNonTemporalFrom)
    copy_non_temporal(dst, src, n);
  else if (n >= kRepMovsbFrom && has_erms())
    rep_movsb(dst, src, n);
  else if (n)
    std::memcpy(dst, src, n);
}

}  // namespace picklewire::shm
