// ShmReceiver: binds a channel's segment and takes Messages off it (layout.hpp, channel.hpp).
//
// recv() takes the next message round-robin over the claimed lanes and the ring, or waits for one
// (waiter.hpp). An inline message is copied out of its cell (lane_cell.hpp); a slot message's
// Buffers are views into the mapping, each owning a lease on its slot (lease.hpp).
#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>

#include "interrupt.hpp"
#include "picklewire/errors.hpp"
#include "shm/channel.hpp"
#include "shm/lane_cell.hpp"
#include "shm/lease.hpp"
#include "shm/process.hpp"
#include "shm/segment.hpp"
#include "shm/shm_endpoint.hpp"
#include "shm/waiter.hpp"

namespace picklewire::shm {
namespace {

constexpr std::chrono::milliseconds kReapPeriod{250};      // idle: reclaim dead senders' slots this often
constexpr std::chrono::microseconds kMaxAdaptiveSpin{250};  // longest adaptive spin window

class ShmReceiver final : public detail::ReceiverImpl {
 public:
  ShmReceiver(std::string name, std::shared_ptr<Channel> channel, const EndpointOptions& options)
      : name_(std::move(name)), channel_(std::move(channel)), options_(options), interrupt_(options_),
        pid_(current_pid()) {}

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
    // Fast path without a clock read: a message is already queued.
    if (anything_queued()) {
      if (std::optional<Message> m = take()) return m;
    }
    return wait_for_message(timeout);
  }

  TransportStats stats() const override { return endpoint_stats(*channel_, ledger_); }

 private:
  // Reclaims dead senders' slots at most every kReapPeriod, counted across calls: a caller that
  // polls (timeout 0) or waits in short slices must reach it too, not only one long wait.
  void reap_if_due(Clock::time_point now) {
    if (now < next_reap_) return;
    next_reap_ = now + kReapPeriod;
    channel_->reap_dead_senders();
  }

  // recv() when nothing is queued yet: out of line, so that the fast path above stays small.
  [[gnu::noinline]] std::optional<Message> wait_for_message(Timeout timeout) {
    const auto start = Clock::now();
    reap_if_due(start);
    SegmentHeader& h = channel_->header();
    std::optional<Message> out;
    const WaitOutcome outcome = wait_until(
        WaitPlan{{h.data_seq, h.receiver_waiting}, deadline_for(timeout, start), spin_window(), kReapPeriod, interrupt_},
        [&] { return anything_queued() && (out = take()).has_value(); },
        [this](std::uint32_t) { return anything_queued(); },
        [this] {
          reap_if_due(Clock::now());
          return false;  // freeing slots brings no message
        });
    switch (outcome) {
      case WaitOutcome::done:
        last_wait_ = Clock::now() - start;
        return out;
      case WaitOutcome::timed_out:
        return std::nullopt;
      case WaitOutcome::interrupted:
        break;
    }
    throw Interrupted("shm://" + name_ + ": receive was interrupted");
  }

 public:
  // How long recv() spins before it blocks. Spinning buys latency for small messages. A stream
  // whose messages come a little further apart than the configured spin (a 4 MiB copy-in arrives
  // every ~100 us) would block on every message, and then every send pays a futex wake (a syscall
  // and a cross-CPU wake-up: 8-12% of a 1-4 MiB copy-in sender's time, measured). So while the
  // last wait was short, spin for twice that long; an idle or slow stream falls back to the
  // configured spin, and spin 0 (block at once) stays 0. The spin loop yields the CPU, so on few
  // cores it does not starve the sender.
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
                               " queued messages, more than its " + std::to_string(kLaneCells) + " cells",
                           EPROTO);
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
  // kLaneCellSize bytes: cheaper than a slot lease); then the cell goes back to the sender.
  Message take_inline(std::uint32_t lane, std::uint64_t head) {
    Lane& l = channel_->segment().lane(lane);
    struct HandBack {  // on every exit, the error paths included
      Lane& lane;
      std::uint64_t next;
      Channel& channel;
      ~HandBack() {
        lane.head.store(next, std::memory_order_release);
        channel.notify_space();
      }
    } hand_back{l, head + 1, *channel_};
    Message out = read_inline_cell(l.cells[head % kLaneCells], lane, head);
    for (const Buffer& b : out.buffers) {
      ledger_.oob_bytes += b.size();
      ledger_.record_copy(CopyReason::travelled_inline, b.size());
    }
    ledger_.messages += 1;
    ledger_.inband_bytes += out.stream.size();
    ledger_.oob_buffers += out.buffers.size();
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
  InterruptCheck interrupt_;
  pid_t pid_;
  CopyLedger ledger_;
  std::chrono::nanoseconds last_wait_{kMaxAdaptiveSpin + std::chrono::microseconds(1)};  // see spin_window()
  Clock::time_point next_reap_{};  // see reap_if_due()
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

std::unique_ptr<detail::ReceiverImpl> bind_receiver(std::string_view name, const EndpointOptions& options) {
  SegmentGeometry geometry{options.shm.capacity, options.shm.slot_count, options.shm.ring_capacity,
                           options.shm.prefault, options.shm.lane_count};
  auto segment = SharedMemorySegment::create(name, geometry);
  return std::make_unique<ShmReceiver>(std::string(name), std::make_shared<Channel>(std::move(segment)), options);
}

}  // namespace picklewire::shm
