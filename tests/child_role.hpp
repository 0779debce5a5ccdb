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

#include <spawn.h>
#include <sys/types.h>

#include <map>
#include <stdexcept>
#include <string>
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

}  // namespace picklewire::test

#define PICKLEWIRE_CHILD_ROLE(name)                                                                     \
  static void picklewire_role_##name();                                                              \
  [[maybe_unused]] static const bool picklewire_role_registered_##name =                              \
      ::picklewire::test::register_role(#name, &picklewire_role_##name);                            \
  static void picklewire_role_##name()
