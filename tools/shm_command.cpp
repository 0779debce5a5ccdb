// picklewire shm list | clean — the shared-memory segments of this user's channels.
#include <iomanip>
#include <iostream>

#include "commands.hpp"
#include "picklewire/shm_admin.hpp"

namespace picklewire::cli {
namespace {

const char* state_of(const shm::SegmentInfo& s) {
  if (s.temporary) return s.creator_alive ? "creating" : "stale (interrupted creation)";
  if (s.mailbox) return s.creator_alive ? "live (same-host answer box)" : "stale (sender dead)";
  if (!s.initialised) return "stale (not initialised)";
  if (s.closed) return "stale (receiver closed)";
  return s.creator_alive ? "live" : "stale (receiver dead)";
}

}  // namespace

void add_shm_command(CLI::App& app) {
  CLI::App* cmd = app.add_subcommand("shm", "List or clean up shared-memory channels");
  cmd->require_subcommand(1);
  CLI::App* list = cmd->add_subcommand("list", "Show every picklewire segment in /dev/shm and whether its owner lives");
  list->callback([] {
    auto segments = shm::list_segments();
    if (segments.empty()) {
      std::cout << "no picklewire segments\n";
      return;
    }
    std::cout << std::left << std::setw(40) << "CHANNEL" << std::setw(12) << "SIZE(MiB)" << std::setw(12) << "IN USE"
              << std::setw(10) << "PID" << "STATE\n";
    for (const auto& s : segments)
      std::cout << std::setw(40) << (s.temporary || s.mailbox ? s.object_name : "shm://" + s.channel) << std::setw(12)
                << s.size / (1 << 20) << std::setw(12) << s.bytes_in_use << std::setw(10) << s.creator_pid
                << state_of(s) << "\n";
  });
  CLI::App* clean = cmd->add_subcommand("clean", "Remove segments whose owner is gone (live ones are kept)");
  clean->callback([] {
    int removed = 0;
    for (const auto& s : shm::list_segments())
      if (s.stale() && shm::remove_if_stale(s)) {
        std::cout << "removed /dev/shm/" << s.object_name << " (" << state_of(s) << ")\n";
        ++removed;
      }
    std::cout << removed << " stale segment(s) removed\n";
  });
}

}  // namespace picklewire::cli
