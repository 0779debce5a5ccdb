// ShmSender / ShmReceiver: Messages through a SharedMemorySegment (layout.hpp, channel.hpp).
//
// send: a message that fits one cell of the sender's lane (<= 256 bytes, no loans) is written
// there and published without the lock. Any other goes into one "message slot" holding the record
// (stream + buffer table), the stream and every buffer that lives outside the segment (copied in
// once); buffers that already lie in the segment (loans from allocate(), or views received on this
// channel) are named by (slot, offset, size) and not copied; the lane cell (or, for a sender
// without a lane, the ring entry) names the slot. recv: an inline message is copied out of its
// cell; a slot message's Buffers are views into the mapping, each owning a lease on its slot.
#include "shm/shm_endpoint.hpp"

#include <pthread.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <thread>

#include "picklewire/errors.hpp"
#include "shm/channel.hpp"
#include "shm/copy.hpp"
#include "shm/segment.hpp"
#include "shm/wakeup.hpp"

namespace picklewire::shm {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::chrono::milliseconds kLivenessPeriod{100};  // dead peers are noticed within this
constexpr std::chrono::milliseconds kReapPeriod{250};      // receiver idle: reclaim dead senders' slots

constexpr int kPollsPerYield = 64;                          // receiver spin: ring polls between sched_yields
constexpr std::uint64_t kOneLockMessageMax = 4096;          // sender: smaller messages take the lock once
constexpr std::chrono::microseconds kMaxAdaptiveSpin{250};  // receiver: longest adaptive spin window

std::uint64_t align_up(std::uint64_t n, std::uint64_t a) { return (n + a - 1) / a * a; }

// CLOCK_MONOTONIC_COARSE: the last timer tick (a few ms old), read from the vDSO without a
// hardware clock read.
std::chrono::nanoseconds coarse_now() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// This process's pid, kept current across fork() by an atfork handler (glibc's getpid() is a
// system call; this is a load).
std::atomic<pid_t> g_pid{0};
void refresh_pid() noexcept { g_pid.store(::getpid(), std::memory_order_relaxed); }
pid_t current_pid() noexcept {
  static const bool registered = [] {
    refresh_pid();
    ::pthread_atfork(nullptr, nullptr, refresh_pid);
    return true;
  }();
  (void)registered;
  return g_pid.load(std::memory_order_relaxed);
}

// An endpoint serves the process that made it: a lane has one producer and one consumer, and a
// slot hold names its sender's pid. A forked child must connect (or bind) anew.
void check_same_process(pid_t owner, const std::string& name, const char* what) {
  if (current_pid() != owner)
    throw TransportError("shm://" + name + ": this " + what + " was made by process " + std::to_string(owner) +
                         "; after fork(), connect or bind a new one in the child");
}

std::optional<Clock::time_point> deadline_for(Timeout timeout, Clock::time_point now = Clock::now()) {
  if (!timeout) return std::nullopt;
  return now + *timeout;
}

// How long to sleep at most: until the deadline, but never longer than `cap`.
std::chrono::nanoseconds sleep_budget(const std::optional<Clock::time_point>& deadline, std::chrono::nanoseconds cap) {
  if (!deadline) return cap;
  return std::min<std::chrono::nanoseconds>(cap, *deadline - Clock::now());
}

// A sender's hold on a loaned slot: dropping the last Buffer made from allocate() releases it.
struct LoanHold {
  LoanHold(std::shared_ptr<Channel> c, std::uint32_t s) : channel(std::move(c)), slot(s) {}
  LoanHold(const LoanHold&) = delete;
  LoanHold& operator=(const LoanHold&) = delete;
  std::shared_ptr<Channel> channel;
  std::uint32_t slot;
  ~LoanHold() {
    try {
      {
        ChannelLock lock(*channel);
        channel->release_sender_hold_locked(slot);
      }
      channel->notify_space();
    } catch (...) {  // lock unusable: the segment is being torn down, nothing to return to
    }
  }
};

// A receiver's reference on one slot of one received message.
struct SlotLease {
  SlotLease(std::shared_ptr<Channel> c, std::uint32_t s, std::uint32_t r) : channel(std::move(c)), slot(s), references(r) {}
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;
  std::shared_ptr<Channel> channel;
  std::uint32_t slot;
  std::uint32_t references;  // how many buffer records of the message named this slot
  ~SlotLease() {
    try {
      {
        ChannelLock lock(*channel);
        for (std::uint32_t i = 0; i < references; ++i) channel->release_received_locked(slot);
      }
      channel->notify_space();
    } catch (...) {
    }
  }
};

// One endpoint's side of the ledger plus the channel's slot usage (shared by sender and receiver).
TransportStats channel_stats(Channel& channel, const CopyLedger& ledger) {
  TransportStats s;
  s.ledger = ledger;
  Channel::Usage u = channel.usage();
  s.slots_in_use = u.slots_in_use;
  s.bytes_in_use = u.bytes_in_use;
  s.peak_bytes_in_use = u.peak_bytes_in_use;
  s.capacity = u.capacity;
  return s;
}

class ShmSender final : public detail::SenderImpl {
 public:
  ShmSender(std::string name, std::shared_ptr<Channel> channel, const EndpointOptions& options)
      : name_(std::move(name)),
        channel_(std::move(channel)),
        options_(options),
        pid_(current_pid()),
        start_(process_start_time(pid_)) {
    check_receiver(/*force=*/true);
    if (channel_->segment().lane_count() > 0) {
      ChannelLock lock(*channel_);
      lane_ = channel_->claim_lane_locked(pid_, start_);
      if (lane_) lane_head_seen_ = channel_->segment().lane(*lane_).head.load();
    }
  }

  ~ShmSender() override {
    if (!lane_ || current_pid() != pid_) return;  // a forked child's copy: the lane is still its parent's
    try {
      ChannelLock lock(*channel_);
      channel_->close_lane_locked(*lane_);
    } catch (...) {  // lock unusable: the segment is being torn down
    }
  }

  Buffer allocate(std::size_t bytes) override {
    check_same_process(pid_, name_, "Sender");
    const std::uint64_t capacity = channel_->segment().heap_capacity();
    if (bytes > capacity)
      throw TransportError("shm://" + name_ + ": cannot allocate " + std::to_string(bytes) +
                           " bytes, the segment's heap holds " + std::to_string(capacity));
    std::uint32_t slot = acquire_slot(bytes, deadline_for(options_.send_timeout), "allocate");
    auto hold = std::make_shared<LoanHold>(channel_, slot);
    return Buffer::take(std::move(hold), channel_->slot_data(slot), bytes, /*readonly=*/false);
  }

  void send(const Message& message, Timeout timeout) override {
    check_same_process(pid_, name_, "Sender");
    check_receiver(/*force=*/false);
    const std::byte* heap = channel_->segment().heap();
    const std::uint64_t capacity = channel_->segment().heap_capacity();

    // Plan the message slot: record, buffer table, stream, then every buffer to copy in.
    const std::size_t count = message.buffers.size();
    records_.assign(count, BufferRecord{});
    loaned_.clear();
    std::uint64_t size = sizeof(MessageRecord) + std::uint64_t(count) * sizeof(BufferRecord);
    const std::uint64_t stream_offset = align_up(size, kHeapAlign);
    size = stream_offset + message.stream.size();
    std::uint64_t oob_bytes = 0;
    for (std::size_t i = 0; i < count; ++i) {
      const Buffer& b = message.buffers[i];
      oob_bytes += b.size();
      records_[i].flags = b.readonly() ? 0 : kBufferWritable;
      records_[i].size = b.size();
      if (!b.empty() && b.lies_within(heap, capacity)) {
        records_[i].slot = 0;  // resolved under the lock below
        loaned_.push_back(static_cast<std::uint32_t>(i));
      } else {
        records_[i].slot = kSameSlot;
        size = align_up(size, kHeapAlign);
        records_[i].offset = size;
        size += b.size();
      }
    }
    if (size > capacity)
      throw TransportError("shm://" + name_ + ": message needs " + std::to_string(size) +
                           " bytes of segment heap but the segment holds only " + std::to_string(capacity) +
                           " (use allocate() for large buffers, or a larger capacity)");

    if (lane_ && loaned_.empty()) {
      const std::uint64_t inline_size =
          sizeof(LaneCell) + count * sizeof(LaneBuffer) + message.stream.size() + oob_bytes;
      if (inline_size <= kLaneCellSize) {
        send_inline(message, timeout);
        record_sent(message, oob_bytes);
        return;
      }
    }
    const auto deadline = deadline_for(timeout);
    const MessageRecord record{kMessageMagic, static_cast<std::uint32_t>(count), stream_offset, message.stream.size()};
    if (loaned_.empty() && size <= kOneLockMessageMax && send_in_one_critical_section(size, message, record)) {
      record_sent(message, oob_bytes);
      return;
    }
    const std::uint32_t message_slot = acquire_slot(size, deadline, "send");
    std::byte* base = channel_->slot_data(message_slot);
    try {
      write_contents(base, message, record);  // outside the lock: the slot is ours until published
      publish(message_slot, record, message, deadline);
    } catch (...) {
      release_hold(message_slot);
      throw;
    }
    record_sent(message, oob_bytes);
  }

  TransportStats stats() const override { return channel_stats(*channel_, ledger_); }
  CopyLedger& ledger() override { return ledger_; }

 private:
  void record_sent(const Message& message, std::uint64_t oob_bytes) {
    const std::size_t count = message.buffers.size();
    ledger_.messages += 1;
    ledger_.inband_bytes += message.stream.size();
    ledger_.oob_buffers += count;
    ledger_.oob_bytes += oob_bytes;
    for (std::size_t i = 0; i < count; ++i) {
      if (records_[i].slot == kSameSlot)
        ledger_.record_copy(CopyReason::copied_into_segment, records_[i].size);
      else
        ledger_.record_zero_copy(records_[i].size);
    }
  }

  // A small message without loans: allocate, fill and publish under one lock, which saves the
  // second trip of the lock's cache line between the cores. False when there is no room right now
  // (the caller then takes the waiting path).
  bool send_in_one_critical_section(std::uint64_t size, const Message& message, const MessageRecord& record) {
    {
      ChannelLock lock(*channel_);
      if (channel_->queue_full_locked(lane_)) return false;
      const std::optional<std::uint32_t> slot = channel_->allocate_locked(size, pid_, start_);
      if (!slot) return false;
      std::byte* base = channel_->slot_data(*slot);
      write_contents(base, message, record);
      write_record(base, record);
      channel_->publish_locked(*slot, {}, lane_);
    }
    channel_->notify_data();
    return true;
  }

  // For waits that a slot or ring entry freeing up ends (every such change bumps space_seq), or,
  // for a sender with a lane, a lane cell (taking an inline cell does not bump it).
  auto space_changed() const {
    return [&h = channel_->header(), lane = lane_ ? &channel_->segment().lane(*lane_) : nullptr](std::uint32_t seq) {
      return h.space_seq.load(std::memory_order_relaxed) != seq || (lane && lane_has_room(*lane));
    };
  }

  // A message that fits one lane cell (no loans): written into the next cell of our lane and
  // published by bumping its tail, without the lock or a slot. Waits (like any send) while the
  // lane is full.
  void send_inline(const Message& message, Timeout timeout) {
    Lane& lane = channel_->segment().lane(*lane_);
    const std::uint64_t tail = lane.tail.load(std::memory_order_relaxed);
    if (tail - lane_head_seen_ >= kLaneCells) {  // perhaps full: look at the receiver's head
      wait_for_space(
          deadline_for(timeout), "send", kLaneCellSize,
          [&]() -> std::optional<bool> {
            if (lane_has_room(lane)) return true;
            return std::nullopt;
          },
          space_changed());
      lane_head_seen_ = lane.head.load(std::memory_order_acquire);
    }
    std::byte* cell = lane.cells[tail % kLaneCells];
    const LaneCell header{LaneCellKind::inline_message, 0, static_cast<std::uint32_t>(message.stream.size()),
                          static_cast<std::uint32_t>(message.buffers.size())};
    std::memcpy(cell, &header, sizeof header);
    std::byte* p = cell + sizeof header;
    for (const Buffer& b : message.buffers) {
      const LaneBuffer entry{static_cast<std::uint32_t>(b.size()), b.readonly() ? 0u : kBufferWritable};
      std::memcpy(p, &entry, sizeof entry);
      p += sizeof entry;
    }
    if (message.stream.size()) std::memcpy(p, message.stream.data(), message.stream.size());
    p += message.stream.size();
    for (const Buffer& b : message.buffers) {
      if (b.size()) std::memcpy(p, b.data(), b.size());
      p += b.size();
    }
    lane.tail.store(tail + 1, std::memory_order_release);
    channel_->notify_data();
  }

  // The message slot's stream and copied-in buffers, at the offsets in `record` and records_.
  void write_contents(std::byte* base, const Message& message, const MessageRecord& record) {
    if (message.stream.size()) std::memcpy(base + record.stream_offset, message.stream.data(), message.stream.size());
    for (std::size_t i = 0; i < message.buffers.size(); ++i) {
      if (records_[i].slot != kSameSlot) continue;
      const Buffer& b = message.buffers[i];
      copy_into_segment(base + records_[i].offset, b.data(), b.size());
    }
  }

  // The message record and buffer table at the start of the slot (loans resolved by then).
  void write_record(std::byte* base, const MessageRecord& record) {
    std::memcpy(base, &record, sizeof record);
    if (record.buffer_count)
      std::memcpy(base + sizeof(MessageRecord), records_.data(), record.buffer_count * sizeof(BufferRecord));
  }

  // PeerGone when the receiver closed the channel or died. The process check is rate-limited by
  // the coarse clock (a few ns where Clock::now() costs ~25 ns here, a tenth of a small message's
  // send); its tick of a few ms is precise enough for kLivenessPeriod.
  void check_receiver(bool force) {
    const auto now = coarse_now();
    const SegmentHeader& h = channel_->header();
    if (h.receiver_state.load() == static_cast<std::uint32_t>(ReceiverState::closed))
      throw PeerGone("shm://" + name_ + ": the receiver closed the channel");
    if (!force && now - last_liveness_check_ < kLivenessPeriod) return;
    last_liveness_check_ = now;
    if (!process_alive(h.creator_pid, h.creator_start_time))
      throw PeerGone("shm://" + name_ + ": the receiver (pid " + std::to_string(h.creator_pid) + ") is gone");
  }

  // Waits for space: re-try while `worth_retrying(seq)` says something changed (a cheap lock-free
  // look), spinning up to ShmOptions::spin (the receiver frees space every few hundred ns while it
  // keeps up; sleeping instead costs a futex wake-up per message, and on few cores the wake-ups
  // pull both processes onto one CPU), then sleep: announce, look again, sleep on space_seq.
  template <class TryFn, class ReadyFn>
  auto wait_for_space(const std::optional<Clock::time_point>& deadline, const char* what, std::uint64_t bytes,
                      TryFn try_once, ReadyFn worth_retrying) -> decltype(try_once()) {
    SegmentHeader& h = channel_->header();
    auto last_reap = Clock::time_point{};
    std::optional<Clock::time_point> spin_until;
    for (;;) {
      const std::uint32_t seq = h.space_seq.load();
      if (auto r = try_once()) return r;
      check_receiver(/*force=*/false);
      const auto now = Clock::now();
      if (now - last_reap >= kLivenessPeriod) {
        last_reap = now;
        if (channel_->reap_dead_senders()) continue;
      }
      if (deadline && now >= *deadline) {
        Channel::Usage u = channel_->usage();
        throw TimeoutError("shm://" + name_ + ": " + what + " timed out waiting for " + std::to_string(bytes) +
                           " bytes of segment space (" + std::to_string(u.bytes_in_use) + " of " +
                           std::to_string(u.capacity) + " bytes in " + std::to_string(u.slots_in_use) +
                           " slots in use, or the queue is full: is the receiver keeping up?)");
      }
      if (!spin_until) spin_until = now + options_.shm.spin;
      if (now < *spin_until) {
        bool ready = false;
        for (int i = 0; i < kPollsPerYield && !ready; ++i) {
          cpu_relax();
          ready = worth_retrying(seq);
        }
        if (!ready) std::this_thread::yield();  // on few cores the receiver may need this CPU
        continue;
      }
      h.space_waiters.fetch_add(1);  // Dekker with Channel::notify_space: announce, then look again
      if (h.space_seq.load() == seq && !worth_retrying(seq))
        futex_wait(h.space_seq, seq, sleep_budget(deadline, kLivenessPeriod));
      h.space_waiters.fetch_sub(1);
    }
  }

  std::uint32_t acquire_slot(std::uint64_t bytes, const std::optional<Clock::time_point>& deadline, const char* what) {
    return *wait_for_space(
        deadline, what, bytes,
        [&]() -> std::optional<std::uint32_t> {
          ChannelLock lock(*channel_);
          return channel_->allocate_locked(bytes, pid_, start_);
        },
        space_changed());
  }

  // Resolves the loaned buffers to their slots, writes the record and publishes, in one critical
  // section (a loan's slot cannot be released between being named and being referenced).
  void publish(std::uint32_t message_slot, const MessageRecord& record, const Message& message,
               const std::optional<Clock::time_point>& deadline) {
    std::byte* base = channel_->slot_data(message_slot);
    wait_for_space(deadline, "send", 0, [&]() -> std::optional<bool> {
      ChannelLock lock(*channel_);
      if (channel_->queue_full_locked(lane_)) return std::nullopt;
      loaned_slots_.clear();
      for (std::uint32_t i : loaned_) {
        const Buffer& b = message.buffers[i];
        std::optional<std::uint32_t> slot = channel_->find_slot_locked(b.data(), b.size());
        if (!slot)
          throw TransportError("shm://" + name_ + ": buffer " + std::to_string(i) +
                               " points into the segment but not into a live slot (a loan used after release?)");
        records_[i].slot = *slot;
        records_[i].offset = static_cast<std::uint64_t>(b.data() - channel_->slot_data(*slot));
        loaned_slots_.push_back(*slot);
      }
      write_record(base, record);
      channel_->publish_locked(message_slot, loaned_slots_, lane_);
      return true;
    }, space_changed());
    channel_->notify_data();
  }

  void release_hold(std::uint32_t slot) noexcept {
    try {
      ChannelLock lock(*channel_);
      channel_->release_sender_hold_locked(slot);
    } catch (...) {
    }
  }

  std::string name_;
  std::shared_ptr<Channel> channel_;
  EndpointOptions options_;
  pid_t pid_;
  std::uint64_t start_;
  CopyLedger ledger_;
  std::chrono::nanoseconds last_liveness_check_{};
  // Scratch reused across sends (no per-message allocation once warm).
  std::vector<BufferRecord> records_;
  std::vector<std::uint32_t> loaned_;
  std::vector<std::uint32_t> loaned_slots_;
  std::optional<std::uint32_t> lane_;  // our queue; nullopt: all lanes were taken, we use the ring
  std::uint64_t lane_head_seen_ = 0;   // the receiver's lane head when we last looked (a lower bound)
};

class ShmReceiver final : public detail::ReceiverImpl {
 public:
  ShmReceiver(std::string name, std::shared_ptr<Channel> channel, const EndpointOptions& options)
      : name_(std::move(name)), channel_(std::move(channel)), options_(options), pid_(current_pid()) {}

  ~ShmReceiver() override {
    if (current_pid() != pid_) return;  // a forked child's copy: the channel is still its parent's
    // Senders see `closed` at once; the name goes now, the memory when the last mapping (ours,
    // held by outstanding leases, or a sender's) goes.
    channel_->header().receiver_state.store(static_cast<std::uint32_t>(ReceiverState::closed));
    channel_->segment().unlink();
    channel_->notify_space();  // blocked senders wake up and see it
  }

  std::optional<Message> recv(Timeout timeout) override {
    check_same_process(pid_, name_, "Receiver");
    SegmentHeader& h = channel_->header();
    // Fast path without a clock read: a message is already queued.
    if (anything_queued()) {
      if (std::optional<Message> m = take()) return m;
    }
    const auto start = Clock::now();
    const auto deadline = deadline_for(timeout, start);
    const auto spin_until = start + spin_window();
    for (;;) {
      if (anything_queued()) {
        if (std::optional<Message> m = take()) {
          last_wait_ = Clock::now() - start;
          return m;
        }
      }
      auto now = Clock::now();
      if (deadline && now >= *deadline) return std::nullopt;
      if (now < spin_until) {
        // Poll the ring after every PAUSE, so a publish is seen within one PAUSE (polling only
        // after 64 PAUSEs + a sched_yield cost up to ~2 us per one-way trip). Every
        // kPollsPerYield polls: on few cores the peer may need this very CPU to publish, so offer
        // it (sched_yield), then read the clock.
        while (now < spin_until) {
          bool ready = false;
          for (int i = 0; i < kPollsPerYield && !ready; ++i) {
            cpu_relax();
            ready = anything_queued();
          }
          if (ready) break;
          std::this_thread::yield();
          now = Clock::now();
          if (deadline && now >= *deadline) break;
        }
        continue;
      }
      // Across calls: Python waits in 50 ms slices, so a per-call clock would never reach the period.
      if (now - last_reap_ >= kReapPeriod) {
        last_reap_ = now;
        channel_->reap_dead_senders();
      }
      h.receiver_waiting.store(1);
      const std::uint32_t seq = h.data_seq.load();
      std::atomic_thread_fence(std::memory_order_seq_cst);  // Dekker with Channel::notify_data
      if (!anything_queued()) futex_wait(h.data_seq, seq, sleep_budget(deadline, kReapPeriod));
      h.receiver_waiting.store(0);
    }
  }

  TransportStats stats() const override { return channel_stats(*channel_, ledger_); }

  // How long recv() spins before it blocks. Spinning buys latency for small messages. A stream
  // whose messages come a little further apart than the configured spin (a 4 MiB copy-in arrives
  // every ~100 us) would block on every message, and then every send pays a futex wake (a syscall
  // and a cross-CPU wake-up: 8-12% of a 1-4 MiB copy-in sender's time here). So while the last
  // wait was short, spin for twice that long; an idle or slow stream falls back to the configured
  // spin, and spin 0 (block at once) stays 0. The spin loop yields the CPU, so on few cores it
  // does not starve the sender.
  std::chrono::nanoseconds spin_window() const {
    const std::chrono::nanoseconds configured = options_.shm.spin;
    if (configured.count() == 0 || last_wait_ > kMaxAdaptiveSpin) return configured;
    return std::clamp<std::chrono::nanoseconds>(2 * last_wait_, configured, kMaxAdaptiveSpin);
  }
  CopyLedger& ledger() override { return ledger_; }

 private:
  // Is a message queued on the ring or on any claimed lane? Reads only lines the senders write
  // when they publish, so a spinning receiver keeps them in its cache until then.
  bool anything_queued() const noexcept {
    const SegmentHeader& h = channel_->header();
    if (h.head.load(std::memory_order_relaxed) != h.tail.load(std::memory_order_acquire)) return true;
    for (std::uint64_t mask = claimed_lanes(); mask != 0; mask &= mask - 1) {
      const Lane& l = channel_->segment().lane(static_cast<std::uint32_t>(__builtin_ctzll(mask)));
      if (l.head.load(std::memory_order_relaxed) != l.tail.load(std::memory_order_acquire)) return true;
    }
    return false;
  }

  std::uint64_t claimed_lanes() const noexcept {
    const std::uint32_t count = channel_->segment().lane_count();
    const std::uint64_t valid = count >= 64 ? ~std::uint64_t(0) : (std::uint64_t(1) << count) - 1;
    return channel_->header().lanes_claimed.load(std::memory_order_acquire) & valid;
  }

  // The next message, round-robin over the sources (the claimed lanes from next_source_ on, the
  // ring, the lanes before next_source_), so that no sender starves the others; within a source,
  // in order.
  std::optional<Message> take() {
    const std::uint64_t claimed = claimed_lanes();
    const std::uint64_t from_next = next_source_ >= 64 ? 0 : claimed & (~std::uint64_t(0) << next_source_);
    for (std::uint64_t mask = from_next; mask != 0; mask &= mask - 1)
      if (std::optional<Message> m = take_from_lane(static_cast<std::uint32_t>(__builtin_ctzll(mask)))) return m;
    const SegmentHeader& h = channel_->header();
    if (h.head.load(std::memory_order_relaxed) != h.tail.load(std::memory_order_acquire)) {
      next_source_ = 0;
      return take_slot_message(std::nullopt);
    }
    for (std::uint64_t mask = claimed & ~from_next; mask != 0; mask &= mask - 1)
      if (std::optional<Message> m = take_from_lane(static_cast<std::uint32_t>(__builtin_ctzll(mask)))) return m;
    return std::nullopt;
  }

  // The message at the head of `lane`, if any.
  std::optional<Message> take_from_lane(std::uint32_t lane) {
    Lane& l = channel_->segment().lane(lane);
    const std::uint64_t head = l.head.load(std::memory_order_relaxed);
    const std::uint64_t tail = l.tail.load(std::memory_order_acquire);
    if (head == tail) return std::nullopt;
    next_source_ = lane + 1;
    if (tail - head > kLaneCells) {
      drop_lane_queue(lane);
      throw TransportError("shm: lane " + std::to_string(lane) + " claims " + std::to_string(tail - head) +
                           " queued messages, more than its " + std::to_string(kLaneCells) + " cells");
    }
    LaneCell cell;
    std::memcpy(&cell, l.cells[head % kLaneCells], sizeof cell);
    std::optional<Message> m =
        cell.kind == LaneCellKind::inline_message ? take_inline(lane, head) : take_slot_message(lane);
    if (l.closing.load(std::memory_order_relaxed) && l.head.load(std::memory_order_relaxed) == tail) {
      ChannelLock lock(*channel_);  // its sender left and this was its last message: free the lane
      channel_->free_lane_if_done_locked(lane, /*owner_alive=*/true);
    }
    return m;
  }

  // Throws away what a garbled lane holds (under the lock, so that repair sees a consistent lane).
  void drop_lane_queue(std::uint32_t lane) {
    ChannelLock lock(*channel_);
    Lane& l = channel_->segment().lane(lane);
    l.head.store(l.tail.load());
  }

  // The inline message in cell `head` of `lane`, copied out into one private block (it is at most
  // kLaneCellSize bytes: cheaper than a slot lease); then the cell goes back to the sender. The
  // header and buffer table are copied out of the segment and checked once, and the payload is
  // copied straight from the cell within those checked sizes: a sender that scribbles meanwhile
  // garbles only its own message, it cannot make us read outside the cell.
  Message take_inline(std::uint32_t lane, std::uint64_t head) {
    Lane& l = channel_->segment().lane(lane);
    const std::byte* cell = l.cells[head % kLaneCells];
    struct HandBack {  // on every exit, the error paths included
      Lane& lane;
      std::uint64_t next;
      Channel& channel;
      ~HandBack() {
        lane.head.store(next, std::memory_order_release);
        channel.notify_space();
      }
    } hand_back{l, head + 1, *channel_};

    constexpr std::uint32_t kMaxBuffers = (kLaneCellSize - sizeof(LaneCell)) / sizeof(LaneBuffer);
    LaneCell header;
    std::memcpy(&header, cell, sizeof header);
    LaneBuffer table[kMaxBuffers];
    const std::uint32_t count = std::min(header.buffer_count, kMaxBuffers);
    std::memcpy(table, cell + sizeof header, count * sizeof(LaneBuffer));
    std::uint64_t end = sizeof header + std::uint64_t(header.buffer_count) * sizeof(LaneBuffer) + header.stream_size;
    std::uint64_t block_size = header.stream_size;  // each buffer 16-aligned in the block
    for (std::uint32_t i = 0; i < count; ++i) {
      end += table[i].size;
      block_size = align_up(block_size, 16) + table[i].size;
    }
    if (end > kLaneCellSize)
      throw TransportError("shm: lane " + std::to_string(lane) + " cell " + std::to_string(head) + " describes " +
                           std::to_string(header.buffer_count) + " buffers and a stream of " +
                           std::to_string(header.stream_size) + " bytes, more than its " +
                           std::to_string(kLaneCellSize) + " bytes");
    struct alignas(16) Chunk {  // so that the block, hence every buffer in it, is 16-byte aligned
      std::byte bytes[16];
    };
    const auto chunks = std::make_shared_for_overwrite<Chunk[]>(block_size / 16 + 1);
    const std::shared_ptr<std::byte> block(chunks, chunks[0].bytes);
    Message out;
    const std::byte* from = cell + sizeof header + count * sizeof(LaneBuffer);
    std::memcpy(block.get(), from, header.stream_size);
    out.stream = Buffer::take(block, block.get(), header.stream_size, true);
    from += header.stream_size;
    std::uint64_t at = header.stream_size;
    out.buffers.reserve(count);
    for (std::uint32_t i = 0; i < count; ++i) {
      const LaneBuffer& b = table[i];
      at = align_up(at, 16);
      std::memcpy(block.get() + at, from, b.size);
      out.buffers.push_back(Buffer::take(block, block.get() + at, b.size, (b.flags & kBufferWritable) == 0));
      from += b.size;
      at += b.size;
      ledger_.oob_bytes += b.size;
      ledger_.record_copy(CopyReason::copied_out_of_lane, b.size);
    }
    ledger_.messages += 1;
    ledger_.inband_bytes += header.stream_size;
    ledger_.oob_buffers += count;
    return out;
  }

  // The slot message at the head of the ring (nullopt) or of `lane`: its Buffers are views into
  // the slots, each holding a lease.
  std::optional<Message> take_slot_message(std::optional<std::uint32_t> lane) {
    bool popped;
    {
      ChannelLock lock(*channel_);
      // Throws TransportError for an invalid record (already dequeued).
      popped = lane ? channel_->pop_lane_locked(*lane, popped_) : channel_->pop_locked(popped_);
    }
    channel_->notify_space();
    if (!popped) return std::nullopt;
    const ValidatedMessage* m = &popped_;

    // One lease per distinct slot, holding one reference per buffer record naming it (the
    // message slot one more, for the record). Scratch reused across messages; cleared on exit
    // so it never keeps a slot alive.
    struct ClearLeases {
      std::vector<PendingLease>& v;
      ~ClearLeases() { v.clear(); }
    } clear_leases{leases_};
    leases_.clear();
    leases_.push_back({m->message_slot, 1, nullptr});
    for (const BufferRecord& b : m->buffers) {
      if (b.slot == m->message_slot) continue;
      auto it = std::find_if(leases_.begin(), leases_.end(), [&](const PendingLease& l) { return l.slot == b.slot; });
      if (it == leases_.end())
        leases_.push_back({b.slot, 1, nullptr});
      else
        it->references += 1;
    }
    for (PendingLease& l : leases_) l.lease = std::make_shared<SlotLease>(channel_, l.slot, l.references);
    auto lease_for = [&](std::uint32_t slot) -> const std::shared_ptr<void>& {
      for (const PendingLease& l : leases_)
        if (l.slot == slot) return l.lease;
      return leases_.front().lease;  // unreachable: every named slot got a lease above
    };

    Message out;
    std::byte* base = channel_->slot_data(m->message_slot);
    out.stream = Buffer::take(lease_for(m->message_slot), base + m->stream_offset, m->stream_size, true);
    out.buffers.reserve(m->buffers.size());
    std::uint64_t oob = 0;
    for (const BufferRecord& b : m->buffers) {
      out.buffers.push_back(Buffer::take(lease_for(b.slot), channel_->slot_data(b.slot) + b.offset, b.size,
                                         /*readonly=*/(b.flags & kBufferWritable) == 0));
      oob += b.size;
      ledger_.record_zero_copy(b.size);
    }
    ledger_.messages += 1;
    ledger_.inband_bytes += m->stream_size;
    ledger_.oob_buffers += m->buffers.size();
    ledger_.oob_bytes += oob;
    return out;
  }

  std::string name_;
  std::shared_ptr<Channel> channel_;
  EndpointOptions options_;
  pid_t pid_;
  CopyLedger ledger_;
  std::chrono::nanoseconds last_wait_{kMaxAdaptiveSpin + std::chrono::microseconds(1)};  // see spin_window()
  Clock::time_point last_reap_{};  // when recv() last reclaimed dead senders' slots
  // take()'s scratch, reused so that a warm receiver allocates only the Message and its leases.
  struct PendingLease {
    std::uint32_t slot;
    std::uint32_t references;
    std::shared_ptr<void> lease;
  };
  ValidatedMessage popped_;
  std::vector<PendingLease> leases_;
  std::uint32_t next_source_ = 0;  // take(): where the round-robin over lanes and ring resumes
};

}  // namespace

std::unique_ptr<detail::SenderImpl> connect_sender(std::string_view name, const EndpointOptions& options) {
  auto segment = SharedMemorySegment::open(name, options.shm.prefault);
  return std::make_unique<ShmSender>(std::string(name), std::make_shared<Channel>(std::move(segment)), options);
}

std::unique_ptr<detail::ReceiverImpl> bind_receiver(std::string_view name, const EndpointOptions& options) {
  SegmentGeometry geometry{options.shm.capacity, options.shm.slot_count, options.shm.ring_capacity,
                           options.shm.prefault, options.shm.lane_count};
  auto segment = SharedMemorySegment::create(name, geometry);
  return std::make_unique<ShmReceiver>(std::string(name), std::make_shared<Channel>(std::move(segment)), options);
}

}  // namespace picklewire::shm
