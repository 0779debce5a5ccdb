// A test binary's second job: besides its tests, it can run as a peer process (a sender, a
// receiver, a worker) that a test starts. A role is a function registered by name:
//
//   PICKLEWIRE_CHILD_ROLE(zmq_rpc_worker) { ... uses std::getenv for its parameters ... }
//   pid_t pid = test::spawn_role("zmq_rpc_worker", {"PICKLEWIRE_RPC_WORKER_URL=" + url});
//
// test_main.cpp runs the role named by PICKLEWIRE_TEST_ROLE instead of the tests, so a role is a
// real second process that shares no state with the test, and never shows up as a (skipped or
// disabled) test of its own. GoogleTest assertions work inside a role; any failure makes the
// process exit 1.
#pragma once

#include <signal.h>
#include <spawn.h>
#include <sys/types.h>
#include <sys/wait.h>

#include <chrono>
#include <map>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

extern char** environ;

namespace picklewire::test {

inline constexpr const char* kRoleVariable = "PICKLEWIRE_TEST_ROLE";

using RoleBody = void (*)();

inline std::map<std::string, RoleBody>& roles() {
  static std::map<std::string, RoleBody> registry;
  return registry;
}

inline bool register_role(const char* name, RoleBody body) {
  roles().emplace(name, body);
  return true;
}

// Starts this binary again as `role`, with `env` ("NAME=value") added to this process's environment.
inline pid_t spawn_role(const std::string& role, const std::vector<std::string>& env = {}) {
  std::vector<std::string> extra = env;
  extra.push_back(std::string(kRoleVariable) + "=" + role);
  std::vector<char*> envp;
  for (char** e = environ; *e; ++e) envp.push_back(*e);
  for (std::string& e : extra) envp.push_back(e.data());
  envp.push_back(nullptr);
  char self[] = "/proc/self/exe";
  char* argv[] = {self, nullptr};
  pid_t pid = 0;
  if (::posix_spawn(&pid, self, nullptr, nullptr, argv, envp.data()) != 0)
    throw std::runtime_error("cannot start " + role + " process");
  return pid;
}

// Waits for `pid` at most `limit`; a child still running then is SIGKILLed and reported as hung
// (returns -1). Otherwise returns the exit status, or 128+signal.
inline int wait_child(pid_t pid, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  for (;;) {
    int status = 0;
    pid_t r = ::waitpid(pid, &status, WNOHANG);
    if (r == pid) return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (r < 0) return -2;
    if (std::chrono::steady_clock::now() >= deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
}

// A child process that is SIGKILLed and reaped when this goes out of scope, whatever the test's
// outcome (a failed ASSERT returns early; an orphan would keep ctest waiting on its output pipe).
class Child {
 public:
  Child() = default;
  explicit Child(pid_t pid) noexcept : pid_(pid) {}
  Child(Child&& other) noexcept : pid_(std::exchange(other.pid_, -1)) {}
  Child& operator=(Child&& other) noexcept {
    if (this != &other) {
      reap();
      pid_ = std::exchange(other.pid_, -1);
    }
    return *this;
  }
  ~Child() { reap(); }

  pid_t pid() const noexcept { return pid_; }
  bool signal(int sig) const noexcept { return ::kill(pid_, sig) == 0; }
  // The exit status (or 128+signal); -1 if it was still running after `limit` (then killed).
  int wait(std::chrono::milliseconds limit = std::chrono::seconds(60)) {
    const int code = wait_child(pid_, limit);
    pid_ = -1;
    return code;
  }

 private:
  void reap() noexcept {
    if (pid_ <= 0) return;
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
    pid_ = -1;
  }
  pid_t pid_ = -1;
};

// Starts the program `argv[0]` (a path) with `argv` and this process's environment.
inline Child spawn(std::vector<std::string> argv) {
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  pid_t pid = 0;
  if (::posix_spawn(&pid, args[0], nullptr, nullptr, args.data(), environ) != 0)
    throw std::runtime_error("cannot start " + argv.at(0));
  return Child(pid);
}

}  // namespace picklewire::test

#define PICKLEWIRE_CHILD_ROLE(name)                                                                     \
  static void picklewire_role_##name();                                                              \
  [[maybe_unused]] static const bool picklewire_role_registered_##name =                              \
      ::picklewire::test::register_role(#name, &picklewire_role_##name);                            \
  static void picklewire_role_##name()
