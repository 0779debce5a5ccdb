// transport/shm/channel.hpp — the control plane of a segment: slot allocator + descriptor queue.
//
// Both live in the segment and share one robust process-shared mutex, so that "publish a message
// and take references on its slots" and "take a message off the ring and move its references to
// the receiver" are each one critical section. Ground truth is the slot table (state, offset,
// size, holder pid, received count) and the ring contents; the sorted index and the `queued`
// counts are derived and rebuilt by repair() when a process died holding the lock.
//
// Lanes: a sender with a lane queues there instead of the ring. Inline cells (small messages)
// are written and taken without the lock and reference no slot; slot cells are published and
// taken under the lock, so repair can count their references like ring entries.
//
// Slot lifetime: a slot is allocated held by a sender pid (while it is filled, or for as long as a
// loaned Buffer is alive). Publishing a message adds one `queued` reference per buffer record
// naming the slot (the message slot counts once more for the record itself); taking it off the
// ring turns those into `received` references, each dropped by a receiver lease. A slot is free
// when no sender holds it and both counts are zero. Holds of dead senders are dropped by
// reap_dead_senders(), so a SIGKILLed sender leaks nothing.
#pragma once

#include <pthread.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <vector>

#include "picklewire/endpoint_options.hpp"
#include "shm/message_record.hpp"
#include "shm/segment.hpp"

namespace picklewire::shm {

class Channel;

// Whether a lane has a free cell (a lower bound for its owner: the receiver only frees more).
inline bool lane_has_room(const Lane& lane) noexcept {
  return lane.tail.load(std::memory_order_relaxed) - lane.head.load(std::memory_order_acquire) < kLaneCells;
}

// pthread_mutex_lock for the segment's robust, process-shared mutex, without its one way to sleep
// forever: an unlock wakes one waiter, and when that waiter is SIGKILLed before it takes the lock,
// the wake-up dies with it while the other waiters sleep on a free lock (the kernel's robust-list
// cleanup acts only for a dead *holder*). Waits here are bounded (10 ms) and retried, so a
// lost wake-up costs one retry period instead of a hang. Returns 0, EOWNERDEAD (the previous
// holder died inside its critical section: the caller repairs, then pthread_mutex_consistent)
// or another error code.
int lock_robust_mutex(pthread_mutex_t* m);

// The segment lock, held for the scope. Repairs the control state when its previous holder died.
class ChannelLock {
 public:
  explicit ChannelLock(Channel& channel);
  ~ChannelLock();
  ChannelLock(const ChannelLock&) = delete;
  ChannelLock& operator=(const ChannelLock&) = delete;

 private:
  Channel& channel_;
};

class Channel {
 public:
  explicit Channel(std::shared_ptr<SharedMemorySegment> segment);

  SharedMemorySegment& segment() const noexcept { return *segment_; }
  SegmentHeader& header() const noexcept { return segment_->header(); }
  std::byte* slot_data(std::uint32_t slot) const noexcept { return segment_->heap() + segment_->slots()[slot].offset; }
  const Slot& slot(std::uint32_t index) const noexcept { return segment_->slots()[index]; }

  // ---- under ChannelLock ----
  // A slot of at least `bytes` held by (pid, start), or nullopt when the heap (or the slot
  // table) has no room right now.
  std::optional<std::uint32_t> allocate_locked(std::uint64_t bytes, pid_t pid, std::uint64_t start);
  // The used slot whose memory contains [p, p+size), if any.
  std::optional<std::uint32_t> find_slot_locked(const std::byte* p, std::uint64_t size) const;
  void release_sender_hold_locked(std::uint32_t slot) noexcept;
  void release_received_locked(std::uint32_t slot) noexcept;
  // A sender's queue: its lane, or the shared ring (nullopt).
  bool queue_full_locked(std::optional<std::uint32_t> lane) const noexcept;
  // Appends `message_slot` to the sender's queue, one queued reference on it plus one per loaned
  // buffer slot, and drops the sender's hold on the message slot.
  void publish_locked(std::uint32_t message_slot, std::span<const std::uint32_t> loaned_slots,
                      std::optional<std::uint32_t> lane) noexcept;
  // Takes the oldest queued message off the ring into `out` (whose buffer vector is reused, so a
  // warm receiver allocates nothing here); its references become received references. False
  // when the ring is empty. Throws TransportError (after dropping what it safely can) when its
  // record is invalid.
  bool pop_locked(ValidatedMessage& out);
  // The same for the slot message at the head of `lane` (the receiver saw a slot cell there).
  bool pop_lane_locked(std::uint32_t lane, ValidatedMessage& out);
  // A lane for a new sender (pid, start): a free one, or one whose owner is gone and that is
  // drained. nullopt when all are in use (the sender then uses the ring).
  std::optional<std::uint32_t> claim_lane_locked(pid_t pid, std::uint64_t start);
  // The owner's Sender is gone: the lane is freed now if drained, else when the receiver drains it.
  void close_lane_locked(std::uint32_t lane) noexcept;
  // Frees a lane that is closing (or whose owner died) once it is drained.
  void free_lane_if_done_locked(std::uint32_t lane, bool owner_alive) noexcept;
  void repair_locked() noexcept;

  // ---- take the lock themselves ----
  // Drops the holds of senders that died (and frees their drained lanes); returns how many slots
  // were freed.
  std::size_t reap_dead_senders();
  // After freeing: let blocked senders retry.
  void notify_space() noexcept;
  // After publishing: wake the receiver if it sleeps.
  void notify_data() noexcept;

  struct Usage {
    std::uint64_t slots_in_use, bytes_in_use, peak_bytes_in_use, capacity, repairs;
  };
  Usage usage();

 private:
  friend class ChannelLock;
  void free_slot_locked(std::uint32_t slot) noexcept;
  void maybe_free_locked(std::uint32_t slot) noexcept;
  // Validates the published message in `message_slot` (already off its queue) and turns its
  // queued references into received ones.
  void take_published_locked(std::uint32_t message_slot, ValidatedMessage& out);
  // Parses the record in `message_slot` into `out` without trusting it. False: invalid (why in
  // *error). `check_queued`: loaned slots must carry a queued reference (off during repair,
  // which rebuilds them).
  bool validate_locked(std::uint32_t message_slot, ValidatedMessage& out, std::string* error,
                       bool check_queued = true) const;

  std::shared_ptr<SharedMemorySegment> segment_;
  std::uint32_t free_hint_ = 0;  // process-local: where to start looking for an unused entry
};

// One endpoint's side of the ledger plus the channel's slot usage (sender and receiver alike).
TransportStats endpoint_stats(Channel& channel, const CopyLedger& ledger);

}  // namespace picklewire::shm
