// transport/shm/segment.hpp — SharedMemorySegment: create (0600) or open (owner/mode checked) the
// POSIX shared-memory object behind shm://NAME, map it, and validate its header.
//
// Creation is atomic: the segment is built and initialised under a temporary name
// ("picklewire.NAME.tmp-PID") and only then hard-linked to its final name, so a segment found
// under the final name is always initialised, and a creator killed mid-creation leaves only a
// temporary file that the next bind (or `picklewire shm clean`) removes.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "picklewire/shm_admin.hpp"
#include "shm/layout.hpp"

namespace boost::interprocess {
class mapped_region;
}

namespace picklewire::shm {

struct SegmentGeometry {
  std::size_t heap_capacity;
  std::uint32_t slot_count;
  std::uint32_t ring_capacity;
  bool prefault;
  std::uint32_t lane_count = kMaxLanes;  // 0..kMaxLanes
};

class SharedMemorySegment {
 public:
  // Creates the channel's segment. A segment of the same name whose creator is dead (or closed
  // it) is removed first; one whose creator lives is an error naming that pid.
  static std::shared_ptr<SharedMemorySegment> create(std::string_view name, const SegmentGeometry& geometry);
  // Opens an existing segment (a sender). Checks it belongs to this user, mode 0600, and that
  // its header is consistent with its size.
  static std::shared_ptr<SharedMemorySegment> open(std::string_view name, bool prefault);

  ~SharedMemorySegment();
  SharedMemorySegment(const SharedMemorySegment&) = delete;
  SharedMemorySegment& operator=(const SharedMemorySegment&) = delete;

  SegmentHeader& header() const noexcept { return *header_; }
  Slot* slots() const noexcept { return slots_; }
  std::uint32_t* sorted() const noexcept { return sorted_; }
  std::uint32_t* ring() const noexcept { return ring_; }
  Lane& lane(std::uint32_t index) const noexcept { return lanes_[index]; }
  std::uint32_t lane_count() const noexcept { return lane_count_; }
  std::byte* heap() const noexcept { return heap_; }
  std::uint64_t heap_capacity() const noexcept { return heap_capacity_; }
  std::uint32_t slot_count() const noexcept { return slot_count_; }
  std::uint32_t ring_capacity() const noexcept { return ring_capacity_; }
  const std::string& object_name() const noexcept { return object_name_; }
  // Removes the name (the memory stays mapped until every process unmaps it).
  void unlink() const noexcept;

 private:
  SharedMemorySegment() = default;
  void attach(std::unique_ptr<boost::interprocess::mapped_region> region, std::uint64_t file_size);

  std::unique_ptr<boost::interprocess::mapped_region> region_;
  std::string object_name_;
  SegmentHeader* header_ = nullptr;
  Slot* slots_ = nullptr;
  std::uint32_t* sorted_ = nullptr;
  std::uint32_t* ring_ = nullptr;
  Lane* lanes_ = nullptr;
  std::byte* heap_ = nullptr;
  std::uint64_t heap_capacity_ = 0;
  std::uint32_t slot_count_ = 0;
  std::uint32_t ring_capacity_ = 0;
  std::uint32_t lane_count_ = 0;
};

// "picklewire." + name, after checking name is [A-Za-z0-9._-]{1,200}.
std::string object_name_for(std::string_view channel_name);

// What a /dev/shm entry of ours says about itself, read without trusting it (a short or foreign
// file reads as not initialised).
struct SegmentPeek {
  bool exists = false;
  bool initialised = false;
  bool closed = false;
  pid_t creator = 0;
  std::uint64_t start = 0;
  std::uint64_t size = 0;
  std::uint64_t bytes_in_use = 0;
};
SegmentPeek peek_segment(const std::string& path);

inline constexpr char kShmDir[] = "/dev/shm/";
inline constexpr char kTempMarker[] = ".tmp-";  // "picklewire.NAME.tmp-PID": a segment being created

}  // namespace picklewire::shm
