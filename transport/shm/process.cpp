#include "shm/process.hpp"

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <fstream>
#include <sstream>

#include "picklewire/errors.hpp"

namespace picklewire::shm {
namespace pid_cache {

std::atomic<pid_t> current_pid_value{0};

namespace {
void refresh_pid() noexcept { current_pid_value.store(::getpid(), std::memory_order_relaxed); }
}  // namespace

pid_t register_current_pid() noexcept {
  static const bool registered = [] {
    refresh_pid();
    ::pthread_atfork(nullptr, nullptr, refresh_pid);
    return true;
  }();
  (void)registered;
  return current_pid_value.load(std::memory_order_relaxed);
}

void throw_not_same_process(pid_t owner, const std::string& name, const char* what) {
  throw TransportError("shm://" + name + ": this " + what + " was made by process " + std::to_string(owner) +
                           "; after fork(), connect or bind a new one in the child",
                       EPERM);
}

}  // namespace pid_cache

std::uint64_t process_start_time(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return 0;
  auto close_paren = line.rfind(')');  // the command name may contain spaces and parentheses
  if (close_paren == std::string::npos) return 0;
  std::istringstream fields(line.substr(close_paren + 2));
  std::string field;
  // After "pid (comm) ", field 3 (state) comes first; start time is field 22.
  for (int i = 3; i <= 22 && (fields >> field); ++i)
    if (i == 22) return std::strtoull(field.c_str(), nullptr, 10);
  return 0;
}

bool process_alive(pid_t pid, std::uint64_t start_time) {
  if (pid <= 0) return false;
  if (::kill(pid, 0) != 0 && errno != EPERM) return false;
  std::ifstream in("/proc/" + std::to_string(pid) + "/stat");
  std::string line;
  if (!std::getline(in, line)) return false;
  auto close_paren = line.rfind(')');
  if (close_paren == std::string::npos || close_paren + 2 >= line.size()) return false;
  char state = line[close_paren + 2];
  if (state == 'Z' || state == 'X') return false;
  return start_time == 0 || process_start_time(pid) == start_time;
}

}  // namespace picklewire::shm
