// ShmSender / ShmReceiver: Messages through a SharedMemorySegment (layout.hpp, channel.hpp).
//
// send: one "message slot" holds the record (stream + buffer table), the stream and every buffer
// that lives outside the segment (copied in once); buffers that already lie in the segment (loans
// from allocate(), or views received on this channel) are named by (slot, offset, size) and not
// copied. recv: the Message's Buffers are views into the mapping, each owning a lease on its slot.
#include "shm/shm_endpoint.hpp"

#include <unistd.h>

#include <algorithm>
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
        pid_(::getpid()),
        start_(process_start_time(pid_)) {
    check_receiver(/*force=*/true);
  }

  Buffer allocate(std::size_t bytes) override {
    const std::uint64_t capacity = channel_->segment().heap_capacity();
    if (bytes > capacity)
      throw TransportError("shm://" + name_ + ": cannot allocate " + std::to_string(bytes) +
                           " bytes, the segment's heap holds " + std::to_string(capacity));
    std::uint32_t slot = acquire_slot(bytes, deadline_for(options_.send_timeout), "allocate");
    auto hold = std::make_shared<LoanHold>(channel_, slot);
    return Buffer::take(std::move(hold), channel_->slot_data(slot), bytes, /*readonly=*/false);
  }

  void send(const Message& message, Timeout timeout) override {
    const auto now = Clock::now();  // one clock read per send (each costs ~20 ns here)
    check_receiver(/*force=*/false, now);
    const auto deadline = deadline_for(timeout, now);
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
      if (channel_->ring_full_locked()) return false;
      const std::optional<std::uint32_t> slot = channel_->allocate_locked(size, pid_, start_);
      if (!slot) return false;
      std::byte* base = channel_->slot_data(*slot);
      write_contents(base, message, record);
      write_record(base, record);
      channel_->publish_locked(*slot, {});
    }
    channel_->notify_data();
    return true;
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

  // PeerGone when the receiver closed the channel or died. Process checks are rate-limited.
  void check_receiver(bool force, Clock::time_point now = Clock::now()) {
    const SegmentHeader& h = channel_->header();
    if (h.receiver_state.load() == static_cast<std::uint32_t>(ReceiverState::closed))
      throw PeerGone("shm://" + name_ + ": the receiver closed the channel");
    if (!force && now - last_liveness_check_ < kLivenessPeriod) return;
    last_liveness_check_ = now;
    if (!process_alive(h.creator_pid, h.creator_start_time))
      throw PeerGone("shm://" + name_ + ": the receiver (pid " + std::to_string(h.creator_pid) + ") is gone");
  }

  // Waits for space with the usual protocol: announce, read the sequence, re-try, sleep on it.
  template <class TryFn>
  auto wait_for_space(const std::optional<Clock::time_point>& deadline, const char* what, std::uint64_t bytes,
                      TryFn try_once) -> decltype(try_once()) {
    SegmentHeader& h = channel_->header();
    auto last_reap = Clock::time_point{};
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
      h.space_waiters.fetch_add(1);
      if (h.space_seq.load() == seq) futex_wait(h.space_seq, seq, sleep_budget(deadline, kLivenessPeriod));
      h.space_waiters.fetch_sub(1);
    }
  }

  std::uint32_t acquire_slot(std::uint64_t bytes, const std::optional<Clock::time_point>& deadline, const char* what) {
    return *wait_for_space(deadline, what, bytes, [&]() -> std::optional<std::uint32_t> {
      ChannelLock lock(*channel_);
      return channel_->allocate_locked(bytes, pid_, start_);
    });
  }

  // Resolves the loaned buffers to their slots, writes the record and publishes, in one critical
  // section (a loan's slot cannot be released between being named and being referenced).
  void publish(std::uint32_t message_slot, const MessageRecord& record, const Message& message,
               const std::optional<Clock::time_point>& deadline) {
    std::byte* base = channel_->slot_data(message_slot);
    wait_for_space(deadline, "send", 0, [&]() -> std::optional<bool> {
      ChannelLock lock(*channel_);
      if (channel_->ring_full_locked()) return std::nullopt;
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
      channel_->publish_locked(message_slot, loaned_slots_);
      return true;
    });
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
  Clock::time_point last_liveness_check_{};
  // Scratch reused across sends (no per-message allocation once warm).
  std::vector<BufferRecord> records_;
  std::vector<std::uint32_t> loaned_;
  std::vector<std::uint32_t> loaned_slots_;
};

class ShmReceiver final : public detail::ReceiverImpl {
 public:
  ShmReceiver(std::string name, std::shared_ptr<Channel> channel, const EndpointOptions& options)
      : name_(std::move(name)), channel_(std::move(channel)), options_(options) {}

  ~ShmReceiver() override {
    // Senders see `closed` at once; the name goes now, the memory when the last mapping (ours,
    // held by outstanding leases, or a sender's) goes.
    channel_->header().receiver_state.store(static_cast<std::uint32_t>(ReceiverState::closed));
    channel_->segment().unlink();
    channel_->notify_space();  // blocked senders wake up and see it
  }

  std::optional<Message> recv(Timeout timeout) override {
    SegmentHeader& h = channel_->header();
    // Fast path without a clock read: a message is already queued.
    if (h.head.load(std::memory_order_relaxed) != h.tail.load(std::memory_order_acquire)) {
      if (std::optional<Message> m = take()) return m;
    }
    const auto start = Clock::now();
    const auto deadline = deadline_for(timeout, start);
    const auto spin_until = start + spin_window();
    auto last_reap = start;
    for (;;) {
      if (h.head.load(std::memory_order_relaxed) != h.tail.load(std::memory_order_acquire)) {
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
            ready = h.tail.load(std::memory_order_relaxed) != h.head.load(std::memory_order_relaxed);
          }
          if (ready) break;
          std::this_thread::yield();
          now = Clock::now();
          if (deadline && now >= *deadline) break;
        }
        continue;
      }
      if (now - last_reap >= kReapPeriod) {
        last_reap = now;
        channel_->reap_dead_senders();
      }
      h.receiver_waiting.store(1);
      const std::uint32_t seq = h.data_seq.load();
      if (h.head.load() == h.tail.load()) futex_wait(h.data_seq, seq, sleep_budget(deadline, kReapPeriod));
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
  std::optional<Message> take() {
    bool popped;
    {
      ChannelLock lock(*channel_);
      popped = channel_->pop_locked(popped_);  // throws TransportError for an invalid record (already dequeued)
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
  CopyLedger ledger_;
  std::chrono::nanoseconds last_wait_{kMaxAdaptiveSpin + std::chrono::microseconds(1)};  // see spin_window()
  // take()'s scratch, reused so that a warm receiver allocates only the Message and its leases.
  struct PendingLease {
    std::uint32_t slot;
    std::uint32_t references;
    std::shared_ptr<void> lease;
  };
  ValidatedMessage popped_;
  std::vector<PendingLease> leases_;
};

}  // namespace

std::unique_ptr<detail::SenderImpl> connect_sender(std::string_view name, const EndpointOptions& options) {
  auto segment = SharedMemorySegment::open(name, options.shm.prefault);
  return std::make_unique<ShmSender>(std::string(name), std::make_shared<Channel>(std::move(segment)), options);
}

std::unique_ptr<detail::ReceiverImpl> bind_receiver(std::string_view name, const EndpointOptions& options) {
  SegmentGeometry geometry{options.shm.capacity, options.shm.slot_count, options.shm.ring_capacity,
                           options.shm.prefault};
  auto segment = SharedMemorySegment::create(name, geometry);
  return std::make_unique<ShmReceiver>(std::string(name), std::make_shared<Channel>(std::move(segment)), options);
}

}  // namespace picklewire::shm
