#include "shm/segment.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <new>

#include "picklewire/errors.hpp"
#include "shm/process.hpp"

namespace bip = boost::interprocess;

namespace picklewire::shm {
namespace {

std::uint64_t align_up(std::uint64_t n, std::uint64_t a) { return (n + a - 1) / a * a; }

// The errno behind a Boost.Interprocess failure (EIO when it has none).
int system_code(const bip::interprocess_exception& e) {
  const int native = e.get_native_error();
  return native > 0 ? native : EIO;
}

std::string mib(std::uint64_t bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1 << 20));
  return buf;
}

struct Layout {
  std::uint64_t slot_table, sorted, ring, lanes, heap, total;
};

Layout layout_for(std::uint64_t heap_capacity, std::uint32_t slot_count, std::uint32_t ring_capacity,
                  std::uint32_t lane_count) {
  Layout l{};
  l.slot_table = align_up(sizeof(SegmentHeader), 64);
  l.sorted = align_up(l.slot_table + std::uint64_t(slot_count) * sizeof(Slot), 64);
  l.ring = align_up(l.sorted + std::uint64_t(slot_count) * sizeof(std::uint32_t), 64);
  l.lanes = align_up(l.ring + std::uint64_t(ring_capacity) * sizeof(std::uint32_t), alignof(Lane));
  l.heap = align_up(l.lanes + std::uint64_t(lane_count) * sizeof(Lane), 4096);
  l.total = l.heap + heap_capacity;
  return l;
}

// Populates the page tables (and, for a fresh segment, the pages) up front: first-touch faults
// run at ~1 GB/s, far below memcpy speed, and would otherwise land on the first messages.
void prefault(void* address, std::size_t size, bool fresh) {
  if (size == 0) return;
  if (::madvise(address, size, MADV_POPULATE_WRITE) == 0) return;
  volatile std::byte* p = static_cast<std::byte*>(address);
  const long page = ::sysconf(_SC_PAGESIZE);
  for (std::size_t i = 0; i < size; i += static_cast<std::size_t>(page)) {
    if (fresh)
      p[i] = std::byte{0};
    else
      (void)p[i];
  }
}

void init_robust_mutex(pthread_mutex_t* m) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  int rc = pthread_mutex_init(m, &attr);
  pthread_mutexattr_destroy(&attr);
  if (rc != 0) throw TransportError(std::string("shm: cannot initialise the segment lock: ") + std::strerror(rc), rc);
}

void remove_dead_temporaries(const std::string& object_name) {
  for (const SegmentInfo& info : list_segments())
    if (info.temporary && info.object_name.rfind(object_name + kTempMarker, 0) == 0) remove_if_stale(info);
}

}  // namespace

SegmentPeek peek_segment(const std::string& path) {
  SegmentPeek p;
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return p;
  p.exists = true;
  struct stat st {};
  if (::fstat(fd, &st) == 0) p.size = static_cast<std::uint64_t>(st.st_size);
  if (p.size >= sizeof(SegmentHeader)) {
    void* m = ::mmap(nullptr, sizeof(SegmentHeader), PROT_READ, MAP_SHARED, fd, 0);
    if (m != MAP_FAILED) {
      const auto* h = static_cast<const SegmentHeader*>(m);
      p.creator = h->creator_pid;
      p.start = h->creator_start_time;
      p.initialised = h->magic == kSegmentMagic && h->version == kSegmentVersion;
      p.closed = h->receiver_state.load() == static_cast<std::uint32_t>(ReceiverState::closed);
      p.bytes_in_use = h->bytes_in_use;
      ::munmap(m, sizeof(SegmentHeader));
    }
  }
  ::close(fd);
  return p;
}

std::string object_name_for(std::string_view channel_name) {
  if (channel_name.empty() || channel_name.size() > 200)
    throw TransportError("shm: channel name must be 1 to 200 characters, got '" + std::string(channel_name) + "'",
                         EINVAL);
  for (char c : channel_name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
              c == '-';
    if (!ok)
      throw TransportError("shm: channel name '" + std::string(channel_name) +
                               "' may only contain letters, digits, '.', '_' and '-'",
                           EINVAL);
  }
  if (channel_name.find(kTempMarker) != std::string_view::npos)
    throw TransportError("shm: channel name may not contain '.tmp-'", EINVAL);
  if (channel_name.starts_with(kMailboxMarker))
    throw TransportError("shm: channel names starting with 'hello-' are reserved (same-host answer boxes)", EINVAL);
  return std::string(kNamePrefix) + std::string(channel_name);
}

std::shared_ptr<SharedMemorySegment> SharedMemorySegment::create(std::string_view name, const SegmentGeometry& g) {
  const std::string object = object_name_for(name);
  if (g.heap_capacity < 4096) throw TransportError("shm: capacity must be at least 4096 bytes", EINVAL);
  if (g.slot_count < 2 || g.slot_count > (1u << 24)) throw TransportError("shm: slot_count must be 2..2^24", EINVAL);
  if (g.ring_capacity < 1 || g.ring_capacity > (1u << 24))
    throw TransportError("shm: ring_capacity must be 1..2^24", EINVAL);
  if (g.lane_count > kMaxLanes)
    throw TransportError("shm: lane_count must be 0.." + std::to_string(kMaxLanes), EINVAL);
  const Layout l = layout_for(align_up(g.heap_capacity, kHeapAlign), g.slot_count, g.ring_capacity, g.lane_count);

  // A previous segment of this name: reclaim it when its creator is gone, refuse otherwise.
  const std::string path = std::string(kShmDir) + object;
  const SegmentPeek old = peek_segment(path);
  if (old.exists) {
    bool stale = !old.initialised || old.closed || !process_alive(old.creator, old.start);
    if (!old.initialised && old.size >= sizeof(SegmentHeader) && old.creator != 0 &&
        process_alive(old.creator, old.start))
      stale = false;
    if (!stale)
      throw TransportError("shm://" + std::string(name) + " is already bound by a live receiver (pid " +
                               std::to_string(old.creator) + ")",
                           EADDRINUSE);
    bip::shared_memory_object::remove(object.c_str());
  }
  remove_dead_temporaries(object);

  struct statvfs vfs {};
  if (::statvfs(kShmDir, &vfs) == 0) {
    std::uint64_t avail = std::uint64_t(vfs.f_bavail) * vfs.f_frsize;
    if (avail < l.total)
      throw TransportError("shm: /dev/shm has " + mib(avail) + " free but shm://" + std::string(name) + " needs " +
                               mib(l.total) + "; lower the channel's capacity (C++ ShmOptions::capacity, Python capacity=, the command's --capacity) or enlarge /dev/shm",
                           ENOSPC);
  }

  const std::string temp = object + kTempMarker + std::to_string(::getpid());
  bip::shared_memory_object::remove(temp.c_str());
  auto segment = std::shared_ptr<SharedMemorySegment>(new SharedMemorySegment());
  segment->object_name_ = object;
  try {
    bip::permissions perm;
    perm.set_permissions(0600);
    bip::shared_memory_object shm(bip::create_only, temp.c_str(), bip::read_write, perm);
    ::fchmod(shm.get_mapping_handle().handle, 0600);  // umask-proof
    shm.truncate(static_cast<bip::offset_t>(l.total));
    auto region = std::make_unique<bip::mapped_region>(shm, bip::read_write);
    auto* base = static_cast<std::byte*>(region->get_address());
    prefault(base, l.total, /*fresh=*/true);
    if (!g.prefault) ::madvise(base + l.heap, l.total - l.heap, MADV_DONTNEED);  // opt-out: give pages back
    auto* h = new (base) SegmentHeader();
    h->creator_pid = ::getpid();
    h->creator_start_time = process_start_time(::getpid());
    h->version = kSegmentVersion;
    h->header_size = sizeof(SegmentHeader);
    h->total_size = l.total;
    h->slot_table_offset = l.slot_table;
    h->sorted_offset = l.sorted;
    h->ring_offset = l.ring;
    h->lane_count = g.lane_count;
    h->lanes_offset = l.lanes;
    for (std::uint32_t i = 0; i < g.lane_count; ++i) new (base + l.lanes + i * sizeof(Lane)) Lane();
    h->heap_offset = l.heap;
    h->heap_capacity = l.total - l.heap;
    h->slot_count = g.slot_count;
    h->ring_capacity = g.ring_capacity;
    h->receiver_state.store(static_cast<std::uint32_t>(ReceiverState::open));
    init_robust_mutex(&h->lock);
    std::atomic_thread_fence(std::memory_order_seq_cst);
    h->magic = kSegmentMagic;
    segment->attach(std::move(region), l.total);
    // Publish: link() fails if the name exists, which gives create_only semantics atomically.
    if (::link((std::string(kShmDir) + temp).c_str(), path.c_str()) != 0) {
      int err = errno;
      bip::shared_memory_object::remove(temp.c_str());
      if (err == EEXIST)
        throw TransportError("shm://" + std::string(name) + " was bound by another receiver at the same time",
                             EADDRINUSE);
      throw TransportError("shm: cannot publish " + path + ": " + std::strerror(err), err);
    }
    bip::shared_memory_object::remove(temp.c_str());
  } catch (const bip::interprocess_exception& e) {
    bip::shared_memory_object::remove(temp.c_str());
    throw TransportError("shm: cannot create shm://" + std::string(name) + ": " + e.what(), system_code(e));
  }
  return segment;
}

std::shared_ptr<SharedMemorySegment> SharedMemorySegment::open(std::string_view name, bool do_prefault) {
  const std::string object = object_name_for(name);
  auto segment = std::shared_ptr<SharedMemorySegment>(new SharedMemorySegment());
  segment->object_name_ = object;
  try {
    bip::shared_memory_object shm(bip::open_only, object.c_str(), bip::read_write);
    struct stat st {};
    if (::fstat(shm.get_mapping_handle().handle, &st) != 0)
      throw TransportError("shm: cannot stat shm://" + std::string(name) + ": " + std::strerror(errno), errno);
    if (st.st_uid != ::geteuid())
      throw TransportError("shm://" + std::string(name) + " belongs to uid " + std::to_string(st.st_uid) +
                               ", not to this user: refusing to use it",
                           EACCES);
    if ((st.st_mode & 077) != 0)
      throw TransportError("shm://" + std::string(name) + " is accessible to other users (mode " +
                               std::to_string(st.st_mode & 0777) + " octal-decimal): refusing to use it",
                           EACCES);
    if (static_cast<std::uint64_t>(st.st_size) < sizeof(SegmentHeader))
      throw TransportError("shm://" + std::string(name) + " is too small to be a picklewire segment", EPROTO);
    auto region = std::make_unique<bip::mapped_region>(shm, bip::read_write);
    segment->attach(std::move(region), static_cast<std::uint64_t>(st.st_size));
    if (do_prefault) prefault(segment->heap_, segment->heap_capacity_, /*fresh=*/false);
  } catch (const bip::interprocess_exception& e) {
    const int code = system_code(e);
    if (code == ENOENT)
      throw TransportError("shm: no receiver has bound shm://" + std::string(name) + " (" + e.what() + ")", ENOENT);
    throw TransportError("shm: cannot open shm://" + std::string(name) + ": " + e.what(), code);
  }
  return segment;
}

void SharedMemorySegment::attach(std::unique_ptr<bip::mapped_region> region, std::uint64_t file_size) {
  auto* base = static_cast<std::byte*>(region->get_address());
  auto* h = reinterpret_cast<SegmentHeader*>(base);
  auto bad = [&](const char* what) {
    return TransportError("shm: " + object_name_ + " has an invalid header (" + what + ")", EPROTO);
  };
  if (h->magic != kSegmentMagic) throw bad("magic");
  if (h->version != kSegmentVersion)
    throw TransportError("shm: " + object_name_ + " has wire-format version " + std::to_string(h->version) +
                             ", this build speaks " + std::to_string(kSegmentVersion),
                         EPROTO);
  if (h->header_size != sizeof(SegmentHeader)) throw bad("header size");
  if (h->total_size != file_size || region->get_size() < file_size) throw bad("size");
  if (h->slot_count < 2 || h->slot_count > (1u << 24) || h->ring_capacity < 1 || h->ring_capacity > (1u << 24) ||
      h->lane_count > kMaxLanes)
    throw bad("counts");
  const Layout l = layout_for(h->heap_capacity, h->slot_count, h->ring_capacity, h->lane_count);
  if (l.slot_table != h->slot_table_offset || l.sorted != h->sorted_offset || l.ring != h->ring_offset ||
      l.lanes != h->lanes_offset || l.heap != h->heap_offset || l.total != file_size)
    throw bad("layout");
  header_ = h;
  slots_ = reinterpret_cast<Slot*>(base + l.slot_table);
  sorted_ = reinterpret_cast<std::uint32_t*>(base + l.sorted);
  ring_ = reinterpret_cast<std::uint32_t*>(base + l.ring);
  lanes_ = reinterpret_cast<Lane*>(base + l.lanes);
  heap_ = base + l.heap;
  heap_capacity_ = h->heap_capacity;
  slot_count_ = h->slot_count;
  ring_capacity_ = h->ring_capacity;
  lane_count_ = h->lane_count;
  region_ = std::move(region);
}

SharedMemorySegment::~SharedMemorySegment() = default;

void SharedMemorySegment::unlink() const noexcept { bip::shared_memory_object::remove(object_name_.c_str()); }

}  // namespace picklewire::shm
