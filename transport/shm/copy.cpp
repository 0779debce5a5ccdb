#include "shm/copy.hpp"

#include <cpuid.h>
#include <sched.h>
#include <immintrin.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <thread>
#include <unistd.h>

#include "shm/wakeup.hpp"

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

namespace {

// One thread's copy routine for a piece of a copy of `total` bytes (see copy.hpp for the choice).
void copy_piece(void* dst, const void* src, std::size_t n, std::size_t total) noexcept {
  if (total >= kNonTemporalFrom)
    copy_non_temporal(dst, src, n);
  else if (total >= kRepMovsbFrom && has_erms())
    rep_movsb(dst, src, n);
  else if (n)
    std::memcpy(dst, src, n);
}

// A large copy cut into chunks that whichever thread gets to them first copies.
struct CopyJob {
  std::byte* dst;
  const std::byte* src;
  std::size_t n;
  std::size_t chunks;
  std::atomic<std::size_t> next{0};

  void work() noexcept {
    for (std::size_t c; (c = next.fetch_add(1, std::memory_order_relaxed)) < chunks;) {
      const std::size_t offset = c * kCopyChunk;
      copy_piece(dst + offset, src + offset, std::min(kCopyChunk, n - offset), n);
    }
  }
};

// One background thread per process that helps with large copies. The sending thread never
// waits for it to start: both take chunks from the same counter, so a helper that is asleep,
// descheduled or busy with another copy costs the sender one wake-up call and nothing else.
// The sender only waits for chunks the helper has already taken.
class CopyHelper {
 public:
  // nullptr when this process may run on one CPU only (machine or affinity mask: a helper would
  // only take turns with the sender). A forked child gets a helper of its own (threads do not
  // survive fork).
  static CopyHelper* for_this_process() {
    static const bool several_cpus = [] {
      cpu_set_t allowed;
      if (::sched_getaffinity(0, sizeof allowed, &allowed) == 0) return CPU_COUNT(&allowed) > 1;
      return std::thread::hardware_concurrency() > 1;
    }();
    if (!several_cpus) return nullptr;
    static std::atomic<CopyHelper*> helper{nullptr};
    static std::atomic<pid_t> owner{0};
    const pid_t pid = ::getpid();
    CopyHelper* h = helper.load(std::memory_order_acquire);
    if (h && owner.load(std::memory_order_relaxed) == pid) return h;
    static std::atomic_flag starting = ATOMIC_FLAG_INIT;
    if (starting.test_and_set(std::memory_order_acquire)) return nullptr;  // another thread starts it
    try {
      h = new CopyHelper();  // never deleted: the detached thread uses it until the process ends
      std::thread([h] { h->run(); }).detach();
    } catch (...) {
      h = nullptr;  // no thread to be had: copy alone
    }
    if (h) {
      owner.store(pid, std::memory_order_relaxed);
      helper.store(h, std::memory_order_release);
    }
    starting.clear(std::memory_order_release);
    return h;
  }

  // Copies with the helper. False when another thread's copy has it (the caller copies alone).
  bool copy(std::byte* dst, const std::byte* src, std::size_t n) noexcept {
    if (busy_.test_and_set(std::memory_order_acquire)) return false;
    CopyJob job{dst, src, n, (n + kCopyChunk - 1) / kCopyChunk};
    job_.store(&job);
    posted_.fetch_add(1);
    posted_.notify_one();
    job.work();
    // Take the job back, then wait out a helper that may still hold it (seq_cst on both sides:
    // either the helper's `active_` increment is seen here, or it sees the null job).
    job_.store(nullptr);
    for (unsigned spins = 0; active_.load() != 0; ++spins) {
      cpu_relax();
      if (spins % 1024 == 1023) std::this_thread::yield();  // the helper may need this CPU
    }
    busy_.clear(std::memory_order_release);
    return true;
  }

 private:
  void run() noexcept {
    std::uint32_t seen = posted_.load();
    for (;;) {
      posted_.wait(seen);
      seen = posted_.load();
      active_.fetch_add(1);
      if (CopyJob* job = job_.load()) job->work();
      active_.fetch_sub(1);
    }
  }

  std::atomic_flag busy_ = ATOMIC_FLAG_INIT;
  std::atomic<CopyJob*> job_{nullptr};
  std::atomic<std::uint32_t> posted_{0};
  std::atomic<int> active_{0};
};

}  // namespace

void copy_into_segment(void* dst, const void* src, std::size_t n) noexcept {
  if (n >= kParallelCopyFrom)
    if (CopyHelper* helper = CopyHelper::for_this_process())
      if (helper->copy(static_cast<std::byte*>(dst), static_cast<const std::byte*>(src), n)) return;
  copy_piece(dst, src, n, n);
}

}  // namespace picklewire::shm
