// transport/shm/process.hpp — process identity and liveness: who this process is (cheaply, and
// correctly after fork()), whether another process still runs, and the check that an endpoint is
// used by the process that made it.
#pragma once

#include <sys/types.h>

#include <atomic>
#include <cstdint>
#include <string>

namespace picklewire::shm {

namespace pid_cache {
extern std::atomic<pid_t> current_pid_value;  // 0 until the first call
pid_t register_current_pid() noexcept;
[[noreturn]] void throw_not_same_process(pid_t owner, const std::string& name, const char* what);
}  // namespace pid_cache

// This process's pid, kept current across fork() by an atfork handler (glibc's getpid() is a
// system call; this is a load, on every send and receive).
inline pid_t current_pid() noexcept {
  const pid_t pid = pid_cache::current_pid_value.load(std::memory_order_relaxed);
  return pid != 0 ? pid : pid_cache::register_current_pid();
}

// The start time of `pid` (clock ticks since boot, /proc/PID/stat field 22), 0 if unknown.
std::uint64_t process_start_time(pid_t pid);
// True when `pid` runs and (if start_time != 0) is the same process that had that start time.
// Zombies count as dead: they can never touch the segment again.
bool process_alive(pid_t pid, std::uint64_t start_time);

// An endpoint serves the process that made it: a lane has one producer and one consumer, and a
// slot hold names its sender's pid. A forked child must connect (or bind) anew. Throws
// TransportError (EPERM) naming `what` ("Sender", "Receiver") when `owner` is not this process.
inline void check_same_process(pid_t owner, const std::string& name, const char* what) {
  if (current_pid() != owner) [[unlikely]]
    pid_cache::throw_not_same_process(owner, name, what);
}

}  // namespace picklewire::shm
