// ShmSender: sends Messages into a channel's segment (layout.hpp, channel.hpp).
//
// A message that fits one cell of the sender's lane (<= 256 bytes, no loans) is written there and
// published without the lock (lane_cell.hpp). A small one (<= 4 KiB, no loans) is allocated,
// filled and published under one lock when there is room at once. Any other goes into one
// "message slot" holding the record (stream + buffer table), the stream and every buffer that
// lives outside the segment (copied in once); buffers that already lie in the segment (loans from
// allocate(), or views received on this channel) are named by (slot, offset, size) and not
// copied; the lane cell (or, for a sender without a lane, the ring entry) names the slot.
//
// A send waits (waiter.hpp) at most twice: for heap memory before it fills its slot, then for a
// free queue entry to publish the filled slot. The filled slot stays held across the second wait,
// however long, so the payload is copied into the segment exactly once; on a timeout or an
// interrupt the slot is given back.
#include <cerrno>
#include <chrono>
#include <cstring>

#include "interrupt.hpp"
#include "picklewire/errors.hpp"
#include "shm/channel.hpp"
#include "shm/copy.hpp"
#include "shm/lane_cell.hpp"
#include "shm/lease.hpp"
#include "shm/process.hpp"
#include "shm/segment.hpp"
#include "shm/shm_endpoint.hpp"
#include "shm/waiter.hpp"

namespace picklewire::shm {
namespace {

constexpr std::chrono::milliseconds kLivenessPeriod{100};  // a dead receiver is noticed within this
constexpr std::uint64_t kOneLockMessageMax = 4096;         // smaller messages take the lock once

std::uint64_t align_up(std::uint64_t n, std::uint64_t a) { return (n + a - 1) / a * a; }

class ShmSender final : public detail::SenderImpl {
 public:
  ShmSender(std::string name, std::shared_ptr<Channel> channel, const EndpointOptions& options)
      : name_(std::move(name)),
        channel_(std::move(channel)),
        options_(options),
        interrupt_(options_),
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
                               " bytes, the segment's heap holds " + std::to_string(capacity),
                           EMSGSIZE);
    std::optional<std::uint32_t> slot = acquire_slot(bytes, deadline_for(options_.send_timeout, Clock::now()), "allocate");
    if (!slot) throw TimeoutError(timeout_reason_);
    auto hold = std::make_shared<LoanHold>(channel_, *slot);
    return Buffer::take(std::move(hold), channel_->slot_data(*slot), bytes, /*readonly=*/false);
  }

  std::string timeout_reason() const override { return timeout_reason_; }

  bool try_send(const Message& message, Timeout timeout) override {
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
        records_[i].slot = 0;  // resolved under the lock when published
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
                               " (use allocate() for large buffers, or a larger capacity)",
                           EMSGSIZE);

    if (lane_ && loaned_.empty() && inline_cell_bytes(count, message.stream.size(), oob_bytes) <= kLaneCellSize) {
      if (!send_inline(message, timeout)) return false;
      record_copied_in(count);  // into the cell
      record_sent(message, oob_bytes);
      return true;
    }
    const auto deadline = deadline_for(timeout, Clock::now());
    const MessageRecord record{kMessageMagic, static_cast<std::uint32_t>(count), stream_offset, message.stream.size()};
    if (loaned_.empty() && size <= kOneLockMessageMax && send_in_one_critical_section(size, message, record)) {
      record_copied_in(count);
      record_sent(message, oob_bytes);
      return true;
    }
    const std::optional<std::uint32_t> message_slot = acquire_slot(size, deadline, "send");
    if (!message_slot) return false;
    std::byte* base = channel_->slot_data(*message_slot);
    bool published = false;
    try {
      write_contents(base, message, record);  // outside the lock: the slot is ours until published
      record_copied_in(count);
      published = publish(*message_slot, record, message, deadline);
    } catch (...) {
      release_hold(*message_slot);
      throw;
    }
    if (!published) {
      release_hold(*message_slot);
      return false;
    }
    record_sent(message, oob_bytes);
    return true;
  }

  TransportStats stats() const override { return endpoint_stats(*channel_, ledger_); }
  CopyLedger& ledger() override { return ledger_; }

 private:
  // The ledger counts a copy-in when it is made, so a send that then times out (or is
  // interrupted) still shows the copy it paid for; the rest when the message is sent.
  void record_copied_in(std::size_t count) {
    for (std::size_t i = 0; i < count; ++i)
      if (records_[i].slot == kSameSlot) ledger_.record_copy(CopyReason::copied_into_segment, records_[i].size);
  }
  void record_sent(const Message& message, std::uint64_t oob_bytes) {
    const std::size_t count = message.buffers.size();
    ledger_.messages += 1;
    ledger_.inband_bytes += message.stream.size();
    ledger_.oob_buffers += count;
    ledger_.oob_bytes += oob_bytes;
    for (std::size_t i = 0; i < count; ++i)
      if (records_[i].slot != kSameSlot) ledger_.record_zero_copy(records_[i].size);
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

  // A message that fits one lane cell (no loans): written into the next cell of our lane and
  // published by bumping its tail, without the lock or a slot. Waits while the lane is full;
  // false on timeout.
  bool send_inline(const Message& message, Timeout timeout) {
    Lane& lane = channel_->segment().lane(*lane_);
    const std::uint64_t tail = lane.tail.load(std::memory_order_relaxed);
    if (tail - lane_head_seen_ >= kLaneCells) {  // perhaps full: look at the receiver's head
      if (!wait_for_lane_cell(lane, timeout)) return false;
      lane_head_seen_ = lane.head.load(std::memory_order_acquire);
    }
    write_inline_cell(lane.cells[tail % kLaneCells], message);
    lane.tail.store(tail + 1, std::memory_order_release);
    channel_->notify_data();
    return true;
  }

  // Out of line, so that the inline send stays small.
  [[gnu::noinline]] bool wait_for_lane_cell(const Lane& lane, Timeout timeout) {
    return finish_wait(wait_for_queue(deadline_for(timeout, Clock::now()),
                                      [&] {
                                        if (lane_has_room(lane)) return true;
                                        check_receiver(/*force=*/false);
                                        return false;
                                      }),
                       "send", 0);
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
  // the coarse clock (a few ns where Clock::now() costs tens, a tenth of a small message's send);
  // its tick of a few ms is precise enough for kLivenessPeriod.
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

  // Is there a free entry in our queue (the lane, or the ring for a sender without one)? A
  // lock-free look; publishing checks again under the lock.
  bool queue_has_room() const noexcept {
    if (lane_) return lane_has_room(channel_->segment().lane(*lane_));
    const SegmentHeader& h = channel_->header();
    return h.tail.load(std::memory_order_relaxed) - h.head.load(std::memory_order_acquire) <
           channel_->segment().ring_capacity();
  }

  WaitPlan plan(const std::optional<Clock::time_point>& deadline) const {
    SegmentHeader& h = channel_->header();
    return WaitPlan{{h.space_seq, h.space_waiters}, deadline, options_.shm.spin, kLivenessPeriod, interrupt_};
  }
  // Dead senders' holds are what a live sender may be waiting for.
  auto reap() {
    return [this] { return channel_->reap_dead_senders() > 0; };
  }

  // Waits until our queue has room and `attempt` (which publishes) succeeds.
  template <class Attempt>
  WaitOutcome wait_for_queue(const std::optional<Clock::time_point>& deadline, Attempt&& attempt) {
    return wait_until(plan(deadline), attempt, [this](std::uint32_t) { return queue_has_room(); }, reap());
  }

  // true: done; false: timed out (timeout_reason_ says waiting for what: heap bytes, or a queue
  // entry when `bytes` is 0); Interrupted: the interrupt check asked to stop.
  bool finish_wait(WaitOutcome outcome, const char* what, std::uint64_t bytes) {
    if (outcome == WaitOutcome::done) return true;
    if (outcome == WaitOutcome::interrupted)
      throw Interrupted("shm://" + name_ + ": " + what + " was interrupted while waiting for the receiver");
    if (bytes == 0) {
      const std::string queue = lane_ ? "this sender's lane holds " + std::to_string(kLaneCells)
                                      : "the ring holds " + std::to_string(channel_->segment().ring_capacity());
      timeout_reason_ = "shm://" + name_ + ": " + what + " timed out: the queue is full (" + queue +
                        " messages the receiver has not taken yet: is the receiver keeping up?)";
    } else {
      const Channel::Usage u = channel_->usage();
      timeout_reason_ = "shm://" + name_ + ": " + what + " timed out waiting for " + std::to_string(bytes) +
                        " bytes of segment space (" + std::to_string(u.bytes_in_use) + " of " +
                        std::to_string(u.capacity) + " bytes in " + std::to_string(u.slots_in_use) +
                        " slots in use: is the receiver keeping up, or holding on to what it received?)";
    }
    return false;
  }

  // A slot of `bytes` held by us; nullopt on timeout. Only freed memory (which bumps space_seq)
  // makes another attempt worth it.
  std::optional<std::uint32_t> acquire_slot(std::uint64_t bytes, const std::optional<Clock::time_point>& deadline,
                                            const char* what) {
    std::optional<std::uint32_t> slot;
    SegmentHeader& h = channel_->header();
    const WaitOutcome outcome = wait_until(
        plan(deadline),
        [&] {
          {
            ChannelLock lock(*channel_);
            slot = channel_->allocate_locked(bytes, pid_, start_);
          }
          if (slot) return true;
          check_receiver(/*force=*/false);
          return false;
        },
        [&h](std::uint32_t seq) { return h.space_seq.load(std::memory_order_relaxed) != seq; }, reap());
    if (!finish_wait(outcome, what, bytes)) return std::nullopt;
    return slot;
  }

  // Resolves the loaned buffers to their slots, writes the record and publishes, in one critical
  // section (a loan's slot cannot be released between being named and being referenced). Waits
  // for a queue entry; false on timeout (the caller still holds the slot).
  bool publish(std::uint32_t message_slot, const MessageRecord& record, const Message& message,
               const std::optional<Clock::time_point>& deadline) {
    std::byte* base = channel_->slot_data(message_slot);
    const WaitOutcome outcome = wait_for_queue(deadline, [&] {
      {
        ChannelLock lock(*channel_);
        if (!channel_->queue_full_locked(lane_)) {
          loaned_slots_.clear();
          for (std::uint32_t i : loaned_) {
            const Buffer& b = message.buffers[i];
            std::optional<std::uint32_t> slot = channel_->find_slot_locked(b.data(), b.size());
            if (!slot)
              throw TransportError("shm://" + name_ + ": buffer " + std::to_string(i) +
                                       " points into the segment but not into a live slot (a loan used after release?)",
                                   EINVAL);
            records_[i].slot = *slot;
            records_[i].offset = static_cast<std::uint64_t>(b.data() - channel_->slot_data(*slot));
            loaned_slots_.push_back(*slot);
          }
          write_record(base, record);
          channel_->publish_locked(message_slot, loaned_slots_, lane_);
          return true;
        }
      }
      check_receiver(/*force=*/false);
      return false;
    });
    if (!finish_wait(outcome, "send", 0)) return false;
    channel_->notify_data();
    return true;
  }

  void release_hold(std::uint32_t slot) noexcept {
    try {
      {
        ChannelLock lock(*channel_);
        channel_->release_sender_hold_locked(slot);
      }
      channel_->notify_space();
    } catch (...) {  // lock unusable: the segment is being torn down
    }
  }

  std::string name_;
  std::shared_ptr<Channel> channel_;
  EndpointOptions options_;
  InterruptCheck interrupt_;
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
  std::string timeout_reason_;
};

}  // namespace

std::unique_ptr<detail::SenderImpl> connect_sender(std::string_view name, const EndpointOptions& options) {
  auto segment = SharedMemorySegment::open(name, options.shm.prefault);
  return std::make_unique<ShmSender>(std::string(name), std::make_shared<Channel>(std::move(segment)), options);
}

}  // namespace picklewire::shm
