#include "shm/channel.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <string>
#include <unordered_map>

#include "picklewire/errors.hpp"
#include "shm/process.hpp"
#include "shm/wakeup.hpp"

namespace picklewire::shm {
namespace {

std::uint64_t align_up(std::uint64_t n, std::uint64_t a) { return (n + a - 1) / a * a; }

// [offset, offset+size) within [0, limit), overflow-safe.
bool in_range(std::uint64_t offset, std::uint64_t size, std::uint64_t limit) {
  return offset <= limit && size <= limit - offset;
}

}  // namespace

int lock_robust_mutex(pthread_mutex_t* m) {
  // Critical sections are microseconds long: a wait this long means a lost wake-up (or a holder
  // stopped or dying), and the retry takes a free lock at once.
  constexpr std::chrono::nanoseconds kLockRetry = std::chrono::milliseconds(10);
  int rc = pthread_mutex_trylock(m);  // the uncontended path: no clock read
  while (rc == EBUSY || rc == ETIMEDOUT) {
    // steady_clock is CLOCK_MONOTONIC on Linux.
    const auto until = (std::chrono::steady_clock::now() + kLockRetry).time_since_epoch();
    const auto secs = std::chrono::duration_cast<std::chrono::seconds>(until);
    const timespec deadline{static_cast<time_t>(secs.count()), static_cast<long>((until - secs).count())};
    rc = pthread_mutex_clocklock(m, CLOCK_MONOTONIC, &deadline);
  }
  return rc;
}

ChannelLock::ChannelLock(Channel& channel) : channel_(channel) {
  pthread_mutex_t* m = &channel_.header().lock;
  int rc = lock_robust_mutex(m);
  if (rc == EOWNERDEAD) {
    // The previous holder died inside a critical section: rebuild derived state, then go on.
    channel_.repair_locked();
    pthread_mutex_consistent(m);
  } else if (rc != 0) {
    throw TransportError(std::string("shm: segment lock unusable: ") + std::strerror(rc), rc);
  }
}

ChannelLock::~ChannelLock() { pthread_mutex_unlock(&channel_.header().lock); }

Channel::Channel(std::shared_ptr<SharedMemorySegment> segment) : segment_(std::move(segment)) {}

std::optional<std::uint32_t> Channel::allocate_locked(std::uint64_t bytes, pid_t pid, std::uint64_t start) {
  SegmentHeader& h = header();
  const std::uint64_t capacity = segment_->heap_capacity();
  const std::uint64_t size = align_up(std::max<std::uint64_t>(bytes, 1), kHeapAlign);
  if (size > capacity) return std::nullopt;
  const std::uint32_t n = h.used_count;
  if (n >= segment_->slot_count()) return std::nullopt;
  Slot* slots = segment_->slots();
  std::uint32_t* sorted = segment_->sorted();

  // Address-ordered first fit over the gaps between used slots (gap g lies before sorted[g]).
  // A steady stream whose receiver keeps up then reuses the same few low blocks, which are still
  // in this core's cache (and TLB) from the last message: the copy-in runs at cache speed, where a
  // next-fit ring would walk the whole heap and write to cold memory every time (measured: 1 MiB
  // copy-in 22 GB/s next-fit vs memcpy's 47). First fit also fragments less than next fit.
  std::optional<std::uint32_t> gap;
  std::uint64_t gap_start = 0;
  for (std::uint32_t g = 0; g <= n; ++g) {
    std::uint64_t begin = g == 0 ? 0 : slots[sorted[g - 1]].offset + slots[sorted[g - 1]].size;
    std::uint64_t end = g == n ? capacity : slots[sorted[g]].offset;
    if (end >= begin && end - begin >= size) {
      gap = g;
      gap_start = begin;
      break;
    }
  }
  if (!gap) return std::nullopt;

  std::uint32_t entry = free_hint_ % segment_->slot_count();
  while (slots[entry].state != SlotState::free) entry = (entry + 1) % segment_->slot_count();
  free_hint_ = entry + 1;

  Slot& s = slots[entry];
  s.offset = gap_start;
  s.size = size;
  s.sender_pid = pid;
  s.sender_start = start;
  s.queued = 0;
  s.received = 0;
  std::atomic_signal_fence(std::memory_order_seq_cst);
  s.state = SlotState::used;  // ground truth last: a crash before this leaves the entry free
  std::memmove(sorted + *gap + 1, sorted + *gap, (n - *gap) * sizeof(std::uint32_t));
  sorted[*gap] = entry;
  h.used_count = n + 1;
  h.bytes_in_use += size;
  h.peak_bytes_in_use = std::max(h.peak_bytes_in_use, h.bytes_in_use);
  return entry;
}

std::optional<std::uint32_t> Channel::find_slot_locked(const std::byte* p, std::uint64_t size) const {
  const std::byte* heap = segment_->heap();
  if (p < heap) return std::nullopt;
  const auto offset = static_cast<std::uint64_t>(p - heap);
  const Slot* slots = segment_->slots();
  const std::uint32_t* sorted = segment_->sorted();
  const std::uint32_t n = header().used_count;
  // The last slot starting at or before `offset`.
  std::uint32_t lo = 0, hi = n;
  while (lo < hi) {
    std::uint32_t mid = lo + (hi - lo) / 2;
    if (slots[sorted[mid]].offset <= offset)
      lo = mid + 1;
    else
      hi = mid;
  }
  if (lo == 0) return std::nullopt;
  const std::uint32_t index = sorted[lo - 1];
  const Slot& s = slots[index];
  if (s.state != SlotState::used || !in_range(offset - s.offset, size, s.size)) return std::nullopt;
  return index;
}

void Channel::free_slot_locked(std::uint32_t slot) noexcept {
  SegmentHeader& h = header();
  Slot& s = segment_->slots()[slot];
  s.state = SlotState::free;  // ground truth first
  std::uint32_t* sorted = segment_->sorted();
  const std::uint32_t n = h.used_count;
  for (std::uint32_t i = 0; i < n; ++i) {
    if (sorted[i] == slot) {
      std::memmove(sorted + i, sorted + i + 1, (n - i - 1) * sizeof(std::uint32_t));
      h.used_count = n - 1;
      break;
    }
  }
  h.bytes_in_use -= std::min(h.bytes_in_use, s.size);
  h.space_seq.fetch_add(1);
}

void Channel::maybe_free_locked(std::uint32_t slot) noexcept {
  const Slot& s = segment_->slots()[slot];
  if (s.state == SlotState::used && s.sender_pid == 0 && s.queued == 0 && s.received == 0) free_slot_locked(slot);
}

void Channel::release_sender_hold_locked(std::uint32_t slot) noexcept {
  Slot& s = segment_->slots()[slot];
  s.sender_pid = 0;
  s.sender_start = 0;
  maybe_free_locked(slot);
}

void Channel::release_received_locked(std::uint32_t slot) noexcept {
  Slot& s = segment_->slots()[slot];
  if (s.received > 0) s.received -= 1;
  maybe_free_locked(slot);
}

bool Channel::queue_full_locked(std::optional<std::uint32_t> lane) const noexcept {
  if (lane) return !lane_has_room(segment_->lane(*lane));
  const SegmentHeader& h = header();
  return h.tail.load(std::memory_order_relaxed) - h.head.load(std::memory_order_relaxed) >= segment_->ring_capacity();
}

void Channel::publish_locked(std::uint32_t message_slot, std::span<const std::uint32_t> loaned_slots,
                             std::optional<std::uint32_t> lane) noexcept {
  Slot* slots = segment_->slots();
  std::atomic<std::uint64_t>& tail_word = lane ? segment_->lane(*lane).tail : header().tail;
  const std::uint64_t tail = tail_word.load(std::memory_order_relaxed);
  if (lane) {
    const LaneCell cell{LaneCellKind::slot_message, message_slot, 0, 0};
    std::memcpy(segment_->lane(*lane).cells[tail % kLaneCells], &cell, sizeof cell);
  } else {
    segment_->ring()[tail % segment_->ring_capacity()] = message_slot;
  }
  slots[message_slot].queued += 1;
  for (std::uint32_t s : loaned_slots) slots[s].queued += 1;
  tail_word.store(tail + 1, std::memory_order_release);  // the publish point (repair trusts [head, tail))
  release_sender_hold_locked(message_slot);
}

bool Channel::validate_locked(std::uint32_t message_slot, ValidatedMessage& m, std::string* error,
                              bool check_queued) const {
  return validate_message_record({segment_->slots(), segment_->slot_count()}, segment_->heap(),
                                 segment_->heap_capacity(), message_slot, m, error, check_queued);
}

bool Channel::pop_locked(ValidatedMessage& m) {
  SegmentHeader& h = header();
  const std::uint64_t head = h.head.load(std::memory_order_relaxed);
  if (head == h.tail.load(std::memory_order_acquire)) return false;
  const std::uint32_t message_slot = segment_->ring()[head % segment_->ring_capacity()];
  h.head.store(head + 1, std::memory_order_release);
  h.space_seq.fetch_add(1);
  take_published_locked(message_slot, m);
  return true;
}

bool Channel::pop_lane_locked(std::uint32_t lane, ValidatedMessage& m) {
  Lane& l = segment_->lane(lane);
  const std::uint64_t head = l.head.load(std::memory_order_relaxed);
  if (head == l.tail.load(std::memory_order_acquire)) return false;
  LaneCell cell;
  std::memcpy(&cell, l.cells[head % kLaneCells], sizeof cell);  // copy: the sender may scribble meanwhile
  l.head.store(head + 1, std::memory_order_release);
  header().space_seq.fetch_add(1);
  if (cell.kind != LaneCellKind::slot_message)
    throw TransportError("shm: lane " + std::to_string(lane) + " cell " + std::to_string(head) +
                         " is not a message (kind " + std::to_string(static_cast<std::uint32_t>(cell.kind)) + ")",
                         EPROTO);
  take_published_locked(cell.message_slot, m);
  return true;
}

std::optional<std::uint32_t> Channel::claim_lane_locked(pid_t pid, std::uint64_t start) {
  SegmentHeader& h = header();
  const std::uint32_t count = segment_->lane_count();
  auto claim = [&](std::uint32_t i) {
    Lane& l = segment_->lane(i);
    l.owner_start = start;
    l.closing.store(0);
    l.owner_pid = pid;  // ground truth (repair rebuilds the mask from it)
    h.lanes_claimed.fetch_or(std::uint64_t(1) << i);
    return i;
  };
  for (std::uint32_t i = 0; i < count; ++i)
    if (segment_->lane(i).owner_pid == 0) return claim(i);
  // All owned: take over a drained lane whose owner left or died (reap may not have run yet).
  for (std::uint32_t i = 0; i < count; ++i) {
    Lane& l = segment_->lane(i);
    if (l.head.load() != l.tail.load()) continue;
    if (l.closing.load() || !process_alive(l.owner_pid, l.owner_start)) return claim(i);
  }
  return std::nullopt;
}

void Channel::close_lane_locked(std::uint32_t lane) noexcept {
  segment_->lane(lane).closing.store(1);
  free_lane_if_done_locked(lane, /*owner_alive=*/true);
}

void Channel::free_lane_if_done_locked(std::uint32_t lane, bool owner_alive) noexcept {
  Lane& l = segment_->lane(lane);
  if (l.owner_pid == 0 || (owner_alive && !l.closing.load())) return;
  if (l.head.load() != l.tail.load()) return;  // the receiver still has messages to take
  header().lanes_claimed.fetch_and(~(std::uint64_t(1) << lane));
  l.owner_pid = 0;
  l.owner_start = 0;
  l.closing.store(0);
}

void Channel::take_published_locked(std::uint32_t message_slot, ValidatedMessage& m) {
  Slot* slots = segment_->slots();
  std::string error;
  if (!validate_locked(message_slot, m, &error)) {
    // Drop the one reference we can attribute with certainty; repair-grade accounting of a
    // hostile sender's loans is not possible, its slots are reclaimed when it exits.
    if (message_slot < segment_->slot_count() && slots[message_slot].state == SlotState::used &&
        slots[message_slot].queued > 0) {
      slots[message_slot].queued -= 1;
      maybe_free_locked(message_slot);
    }
    throw TransportError("shm: a sender published an invalid message: " + error, EPROTO);
  }
  Slot& ms = slots[message_slot];
  ms.queued -= 1;
  ms.received += 1;
  for (const BufferRecord& b : m.buffers) {
    if (b.slot == message_slot) continue;
    Slot& s = slots[b.slot];
    s.queued -= 1;  // validated > 0 above; a slot named twice was queued twice
    s.received += 1;
  }
}

void Channel::repair_locked() noexcept {
  SegmentHeader& h = header();
  Slot* slots = segment_->slots();
  std::uint32_t* sorted = segment_->sorted();
  const std::uint32_t count = segment_->slot_count();
  const std::uint64_t capacity = segment_->heap_capacity();
  h.repairs += 1;

  // Sorted index and usage from the slot entries; a torn entry (impossible by write order, but
  // cheap to guard) is dropped.
  std::uint32_t n = 0;
  std::uint64_t bytes = 0;
  for (std::uint32_t i = 0; i < count; ++i) {
    Slot& s = slots[i];
    if (s.state != SlotState::used) continue;
    if (!in_range(s.offset, s.size, capacity) || s.size == 0) {
      s.state = SlotState::free;
      continue;
    }
    s.queued = 0;
    sorted[n++] = i;
    bytes += s.size;
  }
  std::sort(sorted, sorted + n, [&](std::uint32_t a, std::uint32_t b) { return slots[a].offset < slots[b].offset; });
  for (std::uint32_t i = 1; i < n; ++i) {
    const Slot& prev = slots[sorted[i - 1]];
    if (prev.offset + prev.size > slots[sorted[i]].offset) {  // overlap: keep the earlier one
      slots[sorted[i]].state = SlotState::free;
      bytes -= slots[sorted[i]].size;
      std::memmove(sorted + i, sorted + i + 1, (n - i - 1) * sizeof(std::uint32_t));
      --n;
      --i;
    }
  }
  h.used_count = n;
  h.bytes_in_use = bytes;

  // The published messages: ring entries and lane slot cells in [head, tail). Nobody can take or
  // publish a slot message while we hold the lock; the receiver may still take inline cells
  // meanwhile, and a sender overwrite them with inline cells, which name no slot.
  std::uint64_t head = h.head.load(), tail = h.tail.load();
  if (tail - head > segment_->ring_capacity()) h.tail.store(tail = head);
  std::uint64_t claimed = 0;
  for (std::uint32_t i = 0; i < segment_->lane_count(); ++i) {
    Lane& l = segment_->lane(i);
    if (l.owner_pid != 0) claimed |= std::uint64_t(1) << i;
    const std::uint64_t lane_tail = l.tail.load();
    if (lane_tail - l.head.load() > kLaneCells) l.head.store(lane_tail);  // garbage: drop the lane's queue
  }
  h.lanes_claimed.store(claimed);
  auto for_each_published = [&](auto&& visit) {
    for (std::uint64_t pos = head; pos != tail; ++pos) visit(segment_->ring()[pos % segment_->ring_capacity()]);
    for (std::uint32_t i = 0; i < segment_->lane_count(); ++i) {
      const Lane& l = segment_->lane(i);
      const std::uint64_t lane_tail = l.tail.load();
      for (std::uint64_t pos = l.head.load(); pos != lane_tail && lane_tail - pos <= kLaneCells; ++pos) {
        LaneCell cell;
        std::memcpy(&cell, l.cells[pos % kLaneCells], sizeof cell);
        if (cell.kind == LaneCellKind::slot_message) visit(cell.message_slot);
      }
    }
  };

  // Queued references from the published messages.
  for_each_published([&](std::uint32_t message_slot) {
    if (message_slot >= count || slots[message_slot].state != SlotState::used) return;
    slots[message_slot].queued += 1;
  });
  ValidatedMessage m;
  for_each_published([&](std::uint32_t message_slot) {
    if (message_slot >= count || slots[message_slot].state != SlotState::used) return;
    if (!validate_locked(message_slot, m, nullptr, /*check_queued=*/false)) return;
    for (const BufferRecord& b : m.buffers)
      if (b.slot != message_slot) slots[b.slot].queued += 1;
  });
  h.space_seq.fetch_add(1);
}

std::size_t Channel::reap_dead_senders() {
  std::size_t freed = 0;
  {
    ChannelLock lock(*this);
    Slot* slots = segment_->slots();
    std::unordered_map<pid_t, bool> alive;
    for (std::uint32_t i = 0; i < segment_->slot_count(); ++i) {
      Slot& s = slots[i];
      if (s.state != SlotState::used || s.sender_pid == 0) continue;
      auto it = alive.find(s.sender_pid);
      if (it == alive.end()) it = alive.emplace(s.sender_pid, process_alive(s.sender_pid, s.sender_start)).first;
      if (it->second) continue;
      const std::uint64_t before = header().used_count;
      release_sender_hold_locked(i);
      freed += before - header().used_count;
    }
    for (std::uint64_t mask = header().lanes_claimed.load(); mask != 0; mask &= mask - 1) {
      const auto lane = static_cast<std::uint32_t>(__builtin_ctzll(mask));
      if (lane >= segment_->lane_count()) continue;
      const Lane& l = segment_->lane(lane);
      if (l.owner_pid == 0) continue;
      auto it = alive.find(l.owner_pid);
      if (it == alive.end())
        it = alive.emplace(l.owner_pid, process_alive(l.owner_pid, l.owner_start)).first;
      free_lane_if_done_locked(lane, it->second);
    }
  }
  if (freed) notify_space();
  return freed;
}

void Channel::notify_space() noexcept {
  SegmentHeader& h = header();
  // Dekker with a waiting sender (waiter.hpp: announce in space_waiters, then look again): our
  // frees (a lane head, a slot) are ordered before this load. The bump makes a futex_wait that
  // races with us return at once (taking an inline lane cell changes nothing else in space_seq).
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (h.space_waiters.load() > 0) {
    h.space_seq.fetch_add(1);
    futex_wake_all(h.space_seq);
  }
}

void Channel::notify_data() noexcept {
  SegmentHeader& h = header();
  // Dekker with the receiver's wait (waiter.hpp: count itself in receiver_waiting, then read the
  // ring and lanes): our tail store is ordered before this load, so either we see the receiver
  // announce its sleep, or it sees the new tail and does not sleep. A spinning receiver thus costs
  // no write to the line it polls (data_seq shares it with tail) and no futex syscall.
  std::atomic_thread_fence(std::memory_order_seq_cst);
  if (h.receiver_waiting.load()) {
    h.data_seq.fetch_add(1);
    futex_wake_all(h.data_seq);
  }
}

Channel::Usage Channel::usage() {
  ChannelLock lock(*this);
  const SegmentHeader& h = header();
  return {h.used_count, h.bytes_in_use, h.peak_bytes_in_use, segment_->heap_capacity(), h.repairs};
}

TransportStats endpoint_stats(Channel& channel, const CopyLedger& ledger) {
  TransportStats s;
  s.ledger = ledger;
  const Channel::Usage u = channel.usage();
  s.slots_in_use = u.slots_in_use;
  s.bytes_in_use = u.bytes_in_use;
  s.peak_bytes_in_use = u.peak_bytes_in_use;
  s.capacity = u.capacity;
  return s;
}

}  // namespace picklewire::shm
