/// \file picklewire/shm_admin.hpp — the shared-memory channels of this user, for tools that tidy up
/// (`picklewire shm list | clean`): which segments exist in /dev/shm, whether their receiver still
/// lives, and removing the ones whose owner is gone. Reads each segment's header without trusting it.
#pragma once

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

namespace picklewire::shm {

/// What `picklewire shm list` shows for one /dev/shm entry of ours.
struct SegmentInfo {
  std::string object_name;  ///< file name in /dev/shm
  std::string channel;      ///< NAME of shm://NAME ("" for a temporary)
  std::uint64_t size = 0;
  pid_t creator_pid = 0;
  bool creator_alive = false;
  bool initialised = false;  ///< header complete
  bool closed = false;       ///< receiver closed it
  bool temporary = false;    ///< left over from an interrupted creation
  bool mailbox = false;      ///< a same-host ZeroMQ sender's answer box ("picklewire.hello-PID-ID"), owned by creator_pid
  std::uint64_t bytes_in_use = 0;
  bool stale() const { return temporary || mailbox ? !creator_alive : (!initialised || closed || !creator_alive); }
};
std::vector<SegmentInfo> list_segments();
/// Removes `info` if it is (still) stale. Returns true when removed.
bool remove_if_stale(const SegmentInfo& info);

}  // namespace picklewire::shm
