#include "shm/mailbox.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <boost/interprocess/mapped_region.hpp>
#include <boost/interprocess/shared_memory_object.hpp>
#include <cerrno>
#include <cstdio>
#include <cstring>

#include "picklewire/errors.hpp"
#include "shm/layout.hpp"
#include "shm/process.hpp"
#include "shm/wakeup.hpp"

namespace bip = boost::interprocess;

namespace picklewire::shm {

// One page. Each generation's answer has its own slot (generation % 4), written under a seqlock
// (odd while being written), so a late answer from a previous connection's receiver never tears
// the current one; the sender reads a slot only while its sequence is even and unchanged.
struct Mailbox::Page {
  static constexpr std::uint64_t kMagic = 0x314f4c4c45485750;  // "PWHELLO1"
  static constexpr std::size_t kSlots = 4;
  struct Slot {
    std::atomic<std::uint32_t> seq;
    std::uint32_t generation;
    std::uint32_t verdict;
    std::int32_t receiver_pid;
    std::uint32_t channel_size;
    char channel[236];
  };
  std::uint64_t magic;
  std::uint64_t id;
  std::atomic<std::uint32_t> posts;  // futex word: bumped after every post
  std::uint32_t reserved;
  std::uint64_t reserved2;
  Slot slots[kSlots];
};
static_assert(sizeof(Mailbox::Page) <= 4096);

namespace {

constexpr std::size_t kPageBytes = 4096;

std::string hex(std::uint64_t v) {
  char text[17];
  std::snprintf(text, sizeof text, "%016llx", static_cast<unsigned long long>(v));
  return text;
}

}  // namespace

std::string Mailbox::object_name(pid_t pid, std::uint64_t id) {
  return std::string(kNamePrefix) + kMailboxMarker + std::to_string(pid) + "-" + hex(id);
}

namespace {
Mailbox::Page* map_page(bip::shared_memory_object& object, std::unique_ptr<bip::mapped_region>& region) {
  region = std::make_unique<bip::mapped_region>(object, bip::read_write, 0, kPageBytes);
  return static_cast<Mailbox::Page*>(region->get_address());
}
}  // namespace

std::unique_ptr<Mailbox> Mailbox::create(std::uint64_t id) {
  const pid_t pid = current_pid();
  const std::string name = object_name(pid, id);
  auto box = std::unique_ptr<Mailbox>(new Mailbox());
  try {
    bip::permissions perm;
    perm.set_permissions(0600);
    bip::shared_memory_object object(bip::create_only, name.c_str(), bip::read_write, perm);
    ::fchmod(object.get_mapping_handle().handle, 0600);  // umask-proof
    box->object_name_ = name;
    box->owner_ = true;
    object.truncate(kPageBytes);
    box->page_ = map_page(object, box->region_);
  } catch (const bip::interprocess_exception& e) {
    if (box->owner_) bip::shared_memory_object::remove(name.c_str());
    throw TransportError("shm: cannot create the same-host answer box " + name + ": " + e.what(), EIO);
  }
  Page* p = new (box->page_) Page();
  p->id = id;
  std::atomic_thread_fence(std::memory_order_release);
  p->magic = Page::kMagic;
  box->id_ = id;
  return box;
}

std::unique_ptr<Mailbox> Mailbox::open(pid_t pid, std::uint64_t id) {
  const std::string name = object_name(pid, id);
  auto box = std::unique_ptr<Mailbox>(new Mailbox());
  try {
    bip::shared_memory_object object(bip::open_only, name.c_str(), bip::read_write);
    struct stat st {};
    // Ours only (a mailbox another user planted is not the sender's), and a whole page.
    if (::fstat(object.get_mapping_handle().handle, &st) != 0 || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0 ||
        static_cast<std::size_t>(st.st_size) < kPageBytes)
      return nullptr;
    box->page_ = map_page(object, box->region_);
  } catch (const bip::interprocess_exception&) {
    return nullptr;
  }
  if (box->page_->magic != Page::kMagic || box->page_->id != id) return nullptr;
  box->object_name_ = name;
  box->id_ = id;
  return box;
}

void Mailbox::remove(pid_t pid, std::uint64_t id) noexcept {
  bip::shared_memory_object::remove(object_name(pid, id).c_str());
}

Mailbox::Mailbox() = default;

Mailbox::~Mailbox() {
  if (owner_) bip::shared_memory_object::remove(object_name_.c_str());
}

void Mailbox::post(std::uint32_t generation, const MailboxAnswer& answer) noexcept {
  Page::Slot& s = page_->slots[generation % Page::kSlots];
  const std::uint32_t seq = s.seq.load(std::memory_order_relaxed);
  s.seq.store(seq | 1, std::memory_order_relaxed);  // odd: being written
  std::atomic_thread_fence(std::memory_order_release);
  s.generation = generation;
  s.verdict = static_cast<std::uint32_t>(answer.verdict);
  s.receiver_pid = answer.receiver_pid;
  s.channel_size = static_cast<std::uint32_t>(std::min(answer.channel.size(), sizeof s.channel));
  std::memcpy(s.channel, answer.channel.data(), s.channel_size);
  s.seq.store((seq | 1) + 1, std::memory_order_release);
  page_->posts.fetch_add(1, std::memory_order_release);
  futex_wake_all(page_->posts);
}

std::optional<MailboxAnswer> Mailbox::answer(std::uint32_t generation) const {
  const Page::Slot& s = page_->slots[generation % Page::kSlots];
  for (int attempt = 0; attempt < 100; ++attempt) {
    const std::uint32_t before = s.seq.load(std::memory_order_acquire);
    if (before == 0) return std::nullopt;  // never written
    if (before & 1) continue;
    // The fields are plain memory another process writes: copy them, then check nothing moved.
    const std::uint32_t gen = s.generation;
    const std::uint32_t verdict = s.verdict;
    const std::int32_t pid = s.receiver_pid;
    const std::uint32_t size = std::min<std::uint32_t>(s.channel_size, sizeof s.channel);
    std::string channel(s.channel, size);
    std::atomic_thread_fence(std::memory_order_acquire);
    if (s.seq.load(std::memory_order_relaxed) != before) continue;
    if (gen != generation) return std::nullopt;
    if (verdict < 1 || verdict > 3) return std::nullopt;  // not an answer this build knows: none
    return MailboxAnswer{static_cast<MailboxAnswer::Verdict>(verdict), std::move(channel), pid};
  }
  return std::nullopt;
}

std::uint32_t Mailbox::posts() const noexcept { return page_->posts.load(std::memory_order_acquire); }

void Mailbox::wait(std::uint32_t seen, std::chrono::nanoseconds timeout) const {
  futex_wait(page_->posts, seen, timeout);
}

}  // namespace picklewire::shm
