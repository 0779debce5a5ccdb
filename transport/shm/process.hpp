// transport/shm/process.hpp — process identity and liveness: who this process is (cheaply, and
// correctly after fork()), whether another process still runs, and the check that an endpoint is
// used by the process that made it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>

namespace picklewire::shm {

// This process's pid, kept current across fork() by an atfork handler (glibc's getpid() is a
// system call; this is a load).
pid_t current_pid() noexcept;

// The start time of `pid` (clock ticks since boot, /proc/PID/stat field 22), 0 if unknown.
std::uint64_t process_start_time(pid_t pid);
// True when `pid` runs and (if start_time != 0) is the same process that had that start time.
// Zombies count as dead: they can never touch the segment again.
bool process_alive(pid_t pid, std::uint64_t start_time);

// An endpoint serves the process that made it: a lane has one producer and one consumer, and a
// slot hold names its sender's pid. A forked child must connect (or bind) anew. Throws
// TransportError (EPERM) naming `what` ("Sender", "Receiver") when `owner` is not this process.
void check_same_process(pid_t owner, const std::string& name, const char* what);

}  // namespace picklewire::shm
