// ZmqSender / ZmqReceiver: PUSH/PULL endpoints moving Messages as the frames of message_frames.hpp.
#include "zmq/zmq_endpoint.hpp"

#include <zmq.hpp>

#include <algorithm>
#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "interrupt.hpp"
#include "picklewire/errors.hpp"
#include "zmq/context.hpp"
#include "zmq/message_frames.hpp"
#include "zmq/peer_monitor.hpp"

namespace picklewire::zmq_transport {
namespace {

class ZmqSender final : public detail::SenderImpl {
 public:
  ZmqSender(std::string_view url, bool bind, const EndpointOptions& options)
      : url_(url), socket_(context(), zmq::socket_type::push), writer_(options.zmq), interrupt_(options) {
    // With heartbeats on, watch the connections so that a send to receivers that are all gone
    // throws PeerGone. inproc:// has no connections to watch (and its peers die with the process).
    if (options.zmq.heartbeat.count() > 0 && !url.starts_with("inproc://"))
      monitor_.emplace(socket_, heartbeat_timeout(options.zmq));
    // A connecting PUSH socket otherwise queues for a peer that may never come (and drops the queue
    // at close): with immediate, send waits (and times out) until a receiver is connected. A bound
    // one has pipes only for connected peers anyway.
    if (!bind && options.zmq.immediate) socket_.set(zmq::sockopt::immediate, 1);
    configure_and_attach(socket_, url, bind, options.zmq);
  }

  bool try_send(const Message& message, Timeout timeout) override {
    // The ledger counts the message only once it is queued: compute into a copy, commit on success.
    CopyLedger pending = ledger_;
    struct ClearFrames {
      std::vector<zmq::message_t>& frames;
      ~ClearFrames() { frames.clear(); }  // drops our references; ZeroMQ keeps its own until the bytes are on the wire
    } clear{frames_};
    frames_.clear();
    std::uint64_t wire = writer_.write(message, frames_, pending);
    bool sent;
    try {
      sent = monitor_ || interrupt_.active() ? send_polling(timeout) : send_within(timeout);
    } catch (const zmq::error_t& e) {
      ++undelivered_;
      throw TransportError("zmq transport: send to " + url_ + " failed: " + e.what(), e.num());
    } catch (const TransportError&) {  // PeerGone, Interrupted
      ++undelivered_;
      throw;
    }
    if (!sent) {
      ++undelivered_;
      last_timeout_ = timeout;
      return false;
    }
    ledger_ = pending;
    wire_bytes_ += wire;
    return true;
  }

  std::string timeout_reason() const override {
    return "zmq transport: send to " + url_ + " timed out after " +
           std::to_string(last_timeout_ ? last_timeout_->count() : -1) +
           " ms (no receiver, or receivers at their high-water mark)";
  }

  Buffer allocate(std::size_t bytes) override { return Buffer::allocate(bytes); }

  TransportStats stats() const override {
    TransportStats t = wire_stats(ledger_, wire_bytes_);
    t.undelivered_messages = undelivered_;
    return t;
  }
  CopyLedger& ledger() override { return ledger_; }

 private:
  bool send_within(Timeout timeout) {
    set_send_timeout(socket_, timeout, send_timeout_ms_);
    return send_frames(socket_, frames_);
  }

  // Sends without blocking whenever ZeroMQ has room; otherwise waits in ZeroMQ's own blocking send
  // (which wakes the moment there is room: no zmq_poll round trip per full queue) in slices that
  // end at the deadline, the moment the last receiver has been gone for the grace period, the
  // next interrupt check, or kMonitorSlice, after which the monitor's events are applied. The
  // frames are built once: waking up redoes no work.
  bool send_polling(Timeout timeout) {
    using Clock = PeerMonitor::Clock;
    // Try first: a message ZeroMQ accepts at once went to a connected peer (immediate), so the
    // monitor's events only matter while ZeroMQ has no room; they queue up meanwhile (rcvhwm 0)
    // and are applied, in order, once a send has to wait.
    set_send_timeout(socket_, std::chrono::milliseconds(0), send_timeout_ms_);
    if (send_frames(socket_, frames_)) return true;
    std::optional<Clock::time_point> deadline;
    if (timeout) deadline = Clock::now() + *timeout;
    for (;;) {
      Clock::time_point now = Clock::now();
      if (monitor_) {
        monitor_->update();
        if (monitor_->gone(now))
          throw PeerGone("zmq transport: no receiver connected to " + url_ + " for " +
                         std::to_string(monitor_->grace().count()) +
                         " ms (the last one disconnected: its process died, or it missed heartbeats)");
      }
      if (deadline && now >= *deadline) return false;
      if (interrupt_.requested()) throw Interrupted("zmq transport: send to " + url_ + " was interrupted");
      std::optional<Clock::time_point> wake = interrupt_.next_check(deadline, now);
      if (monitor_) {
        if (auto gone = monitor_->gone_at(); gone && (!wake || *gone < *wake)) wake = gone;
        if (!wake || *wake > now + kMonitorSlice) wake = now + kMonitorSlice;
      }
      Timeout slice;
      if (wake) slice = std::max(std::chrono::milliseconds(1), std::chrono::ceil<std::chrono::milliseconds>(*wake - now));
      set_send_timeout(socket_, slice, send_timeout_ms_);
      if (send_frames(socket_, frames_)) return true;
    }
  }

  // How late a monitor event (a receiver leaving) may be applied while a send waits.
  static constexpr std::chrono::milliseconds kMonitorSlice{100};

  std::string url_;
  zmq::socket_t socket_;
  std::optional<PeerMonitor> monitor_;  // heartbeats on (tcp://, ipc://) only
  FrameWriter writer_;
  std::vector<zmq::message_t> frames_;
  CopyLedger ledger_;
  std::uint64_t wire_bytes_ = 0;
  int send_timeout_ms_ = -1;
  InterruptCheck interrupt_;
  Timeout last_timeout_;
  std::uint64_t undelivered_ = 0;
};

class ZmqReceiver final : public detail::ReceiverImpl {
 public:
  ZmqReceiver(std::string_view url, bool bind, const EndpointOptions& options)
      : url_(url), socket_(context(), zmq::socket_type::pull), reader_(options.zmq), interrupt_(options) {
    configure_and_attach(socket_, url, bind, options.zmq);
  }

  std::optional<Message> recv(Timeout timeout) override {
    using Clock = std::chrono::steady_clock;
    std::optional<Clock::time_point> deadline;
    if (timeout) deadline = Clock::now() + *timeout;
    std::size_t dropped = 0;
    for (;;) {
      // Without an interrupt check, one blocking receive; with one, slices between checks (a
      // receive that times out has taken nothing, so slicing redoes no work).
      Timeout slice = timeout;
      if (interrupt_.active()) {
        const auto now = Clock::now();
        const auto wake = *interrupt_.next_check(deadline, now);
        slice = std::chrono::ceil<std::chrono::milliseconds>(std::max(wake - now, Clock::duration::zero()));
      }
      set_recv_timeout(socket_, slice, recv_timeout_ms_);
      bool got;
      try {
        got = recv_frames(socket_, frames_, 0, dropped, wire_bytes_);
      } catch (const zmq::error_t& e) {
        throw TransportError("zmq transport: receive on " + url_ + " failed: " + e.what(), e.num());
      }
      if (got) break;
      if (!interrupt_.active() || (deadline && Clock::now() >= *deadline)) return std::nullopt;
      if (interrupt_.requested()) throw Interrupted("zmq transport: receive on " + url_ + " was interrupted");
    }
    // A malformed message is counted and refused; the next recv serves the next message.
    struct ClearFrames {
      std::vector<zmq::message_t>& frames;
      ~ClearFrames() { frames.clear(); }
    } clear{frames_};
    try {
      if (dropped)
        throw TransportError("zmq transport: invalid message from peer: " + std::to_string(dropped) +
                             " frames beyond what its header describes");
      return reader_.read(frames_, ledger_);
    } catch (const TransportError&) {
      ++malformed_;
      throw;
    }
  }

  TransportStats stats() const override {
    TransportStats t = wire_stats(ledger_, wire_bytes_);
    t.malformed_messages = malformed_;
    return t;
  }
  CopyLedger& ledger() override { return ledger_; }

 private:
  std::string url_;
  zmq::socket_t socket_;
  FrameReader reader_;
  std::vector<zmq::message_t> frames_;
  CopyLedger ledger_;
  std::uint64_t wire_bytes_ = 0;
  int recv_timeout_ms_ = -1;
  InterruptCheck interrupt_;
  std::uint64_t malformed_ = 0;
};

}  // namespace

std::unique_ptr<detail::SenderImpl> bind_sender(std::string_view url, const EndpointOptions& options) {
  return std::make_unique<ZmqSender>(url, /*bind=*/true, options);
}
std::unique_ptr<detail::SenderImpl> connect_sender(std::string_view url, const EndpointOptions& options) {
  return std::make_unique<ZmqSender>(url, /*bind=*/false, options);
}
std::unique_ptr<detail::ReceiverImpl> bind_receiver(std::string_view url, const EndpointOptions& options) {
  return std::make_unique<ZmqReceiver>(url, /*bind=*/true, options);
}
std::unique_ptr<detail::ReceiverImpl> connect_receiver(std::string_view url, const EndpointOptions& options) {
  return std::make_unique<ZmqReceiver>(url, /*bind=*/false, options);
}

}  // namespace picklewire::zmq_transport
