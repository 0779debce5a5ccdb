// Support for the shared-memory tests: uniquely named channels that are always removed, child
// processes with a watchdog, and checksummed payloads.
#pragma once

#include <signal.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>

#include <gtest/gtest.h>

#include "child_role.hpp"  // wait_child
#include "picklewire/buffer.hpp"

namespace picklewire::test {

// A channel name no other test (or test run) uses; its /dev/shm files (final and temporary) are
// removed on scope exit, whatever happened, and the destructor checks none is left.
class UniqueChannel {
 public:
  explicit UniqueChannel(const std::string& tag) {
    static std::atomic<int> counter{0};
    std::random_device rd;
    name_ = "pwtest-" + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(counter++) + "-" +
            std::to_string(rd() % 100000);
  }
  ~UniqueChannel() { remove_files(); }
  UniqueChannel(const UniqueChannel&) = delete;
  UniqueChannel& operator=(const UniqueChannel&) = delete;

  const std::string& name() const { return name_; }
  std::string url() const { return "shm://" + name_; }
  // Files in /dev/shm that belong to this channel.
  int files_left() const {
    int n = 0;
    for (const auto& e : std::filesystem::directory_iterator("/dev/shm"))
      if (e.path().filename().string().rfind("picklewire." + name_, 0) == 0) ++n;
    return n;
  }
  void remove_files() const {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/dev/shm", ec))
      if (e.path().filename().string().rfind("picklewire." + name_, 0) == 0) std::filesystem::remove(e.path(), ec);
  }

 private:
  std::string name_;
};

// Runs `body` in a forked child; its return value is the exit status (exceptions: 100). The child
// dies with the test process: a test that stops at a failed ASSERT leaves no child behind (an
// orphan would keep ctest waiting on the output pipe it inherited).
inline pid_t fork_child(const std::function<int()>& body) {
  const pid_t parent = ::getpid();
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error("fork failed");
  if (pid == 0) {
    ::prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (::getppid() != parent) ::_exit(101);  // the parent died before prctl took effect
    int code = 100;
    try {
      code = body();
    } catch (const std::exception& e) {
      std::fprintf(stderr, "child %d: %s\n", ::getpid(), e.what());
    }
    std::fflush(stderr);
    ::_exit(code);
  }
  return pid;
}

// A pipe to tell the parent a child is ready (or pass a small number back).
class Pipe {
 public:
  Pipe() {
    if (::pipe(fds_) != 0) throw std::runtime_error("pipe failed");
  }
  ~Pipe() {
    ::close(fds_[0]);
    ::close(fds_[1]);
  }
  void put(std::uint64_t v) const {
    if (::write(fds_[1], &v, sizeof v) != sizeof v) std::abort();
  }
  // Blocks; returns false on EOF (writer gone).
  bool get(std::uint64_t& v) const { return ::read(fds_[0], &v, sizeof v) == sizeof v; }

 private:
  int fds_[2];
};

inline std::uint64_t splitmix64(std::uint64_t x) {
  x += 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

// Deterministic pseudo-random bytes from a seed (cheap enough for hundreds of MiB).
inline void fill_pattern(std::byte* p, std::size_t n, std::uint64_t seed) {
  std::size_t i = 0;
  std::uint64_t s = splitmix64(seed);
  for (; i + 8 <= n; i += 8) {
    s += 0x9e3779b97f4a7c15ull;
    std::uint64_t w = s ^ (s >> 29);
    std::memcpy(p + i, &w, 8);
  }
  for (; i < n; ++i) p[i] = static_cast<std::byte>(splitmix64(seed + i));
}

inline std::uint64_t checksum(const std::byte* p, std::size_t n) {
  std::uint64_t h = 0xcbf29ce484222325ull ^ n;
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    std::uint64_t w;
    std::memcpy(&w, p + i, 8);
    h = (h ^ w) * 0x100000001b3ull;
    h ^= h >> 32;
  }
  for (; i < n; ++i) h = (h ^ static_cast<std::uint64_t>(p[i])) * 0x100000001b3ull;
  return h;
}
inline std::uint64_t checksum(const Buffer& b) { return checksum(b.data(), b.size()); }

}  // namespace picklewire::test
