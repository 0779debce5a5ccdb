// The shared-memory channels of this user for `picklewire shm list | clean` (shm_admin.hpp):
// every /dev/shm entry named picklewire.*, whether its receiver (or, for a temporary or a
// same-host answer box, its creator) still lives, and removing the stale ones.
#include <dirent.h>

#include <boost/interprocess/shared_memory_object.hpp>
#include <cstdlib>
#include <cstring>

#include "picklewire/shm_admin.hpp"
#include "shm/process.hpp"
#include "shm/segment.hpp"

namespace bip = boost::interprocess;

namespace picklewire::shm {
namespace {

// "picklewire.NAME.tmp-PID" -> PID (0 if not a temporary name).
pid_t temp_owner(const std::string& file) {
  auto at = file.rfind(kTempMarker);
  if (at == std::string::npos) return 0;
  return static_cast<pid_t>(std::atoi(file.c_str() + at + std::strlen(kTempMarker)));
}

}  // namespace

std::vector<SegmentInfo> list_segments() {
  std::vector<SegmentInfo> out;
  DIR* dir = ::opendir(kShmDir);
  if (!dir) return out;
  while (dirent* e = ::readdir(dir)) {
    std::string file = e->d_name;
    if (file.rfind(kNamePrefix, 0) != 0) continue;
    SegmentInfo info;
    info.object_name = file;
    pid_t tmp_pid = temp_owner(file);
    const SegmentPeek p = peek_segment(std::string(kShmDir) + file);
    if (!p.exists) continue;
    info.size = p.size;
    const std::string mailbox_prefix = std::string(kNamePrefix) + kMailboxMarker;
    if (file.rfind(mailbox_prefix, 0) == 0) {  // "picklewire.hello-PID-ID"
      info.mailbox = true;
      info.creator_pid = static_cast<pid_t>(std::atoi(file.c_str() + mailbox_prefix.size()));
      info.creator_alive = info.creator_pid > 0 && process_alive(info.creator_pid, 0);
    } else if (tmp_pid != 0) {
      info.temporary = true;
      info.creator_pid = tmp_pid;
      info.creator_alive = process_alive(tmp_pid, 0);
    } else {
      info.channel = file.substr(std::strlen(kNamePrefix));
      info.creator_pid = p.creator;
      info.initialised = p.initialised;
      info.closed = p.closed;
      info.creator_alive = p.initialised && process_alive(p.creator, p.start);
      info.bytes_in_use = p.bytes_in_use;
    }
    out.push_back(std::move(info));
  }
  ::closedir(dir);
  return out;
}

bool remove_if_stale(const SegmentInfo& info) {
  // Re-read: the entry may have been replaced since it was listed.
  for (const SegmentInfo& now : list_segments())
    if (now.object_name == info.object_name)
      return now.stale() && bip::shared_memory_object::remove(now.object_name.c_str());
  return false;
}

}  // namespace picklewire::shm
