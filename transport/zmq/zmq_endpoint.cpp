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
#include "zmq/same_host.hpp"

namespace picklewire::zmq_transport {
namespace {

using Clock = std::chrono::steady_clock;

// The same-host path (same_host.hpp) is for a connecting Sender over tcp:// or ipc:// with
// ZMQ_IMMEDIATE (one connection at a time, and no queue that outlives it) writing wire version 2
// (version 1 is for peers built before control messages existed).
bool same_host_applies(std::string_view url, bool bind, const ZmqOptions& o) {
  return !bind && o.same_host && o.immediate && o.wire_version >= 2 &&
         (url.starts_with("tcp://") || url.starts_with("ipc://"));
}

std::optional<Clock::time_point> deadline_after(Timeout timeout, Clock::time_point now) {
  if (!timeout) return std::nullopt;
  return now + *timeout;
}

Timeout remaining(std::optional<Clock::time_point> deadline, Clock::time_point now = Clock::now()) {
  if (!deadline) return std::nullopt;
  const auto left = *deadline - now;
  if (left <= Clock::duration::zero()) return std::chrono::milliseconds(0);
  return std::chrono::ceil<std::chrono::milliseconds>(left);
}


class ZmqSender final : public detail::SenderImpl {
 public:
  ZmqSender(std::string_view url, bool bind, const EndpointOptions& options)
      : url_(url), socket_(context(), zmq::socket_type::push), writer_(options.zmq), interrupt_(options),
        heartbeats_(options.zmq.heartbeat.count() > 0 && !url.starts_with("inproc://")),
        default_timeout_(options.send_timeout) {
    // With heartbeats on, watch the connections so that a send to receivers that are all gone
    // throws PeerGone. inproc:// has no connections to watch (and its peers die with the process).
    // The same-host path watches them too: each new connection is negotiated anew.
    if (same_host_applies(url, bind, options.zmq)) same_host_.emplace(options);
    if (heartbeats_ || same_host_) monitor_.emplace(socket_, heartbeat_timeout(options.zmq));
    // A connecting PUSH socket otherwise queues for a peer that may never come (and drops the queue
    // at close): with immediate, send waits (and times out) until a receiver is connected. A bound
    // one has pipes only for connected peers anyway.
    if (!bind && options.zmq.immediate) socket_.set(zmq::sockopt::immediate, 1);
    configure_and_attach(socket_, url, bind, options.zmq);
  }

  bool try_send(const Message& message, Timeout timeout) override {
    if (same_host_ && same_host_->worth_it(message.out_of_band_bytes())) {
      switch (send_same_host(message, timeout)) {
        case Outcome::sent: return true;
        case Outcome::timed_out:
          ++undelivered_;
          last_timeout_ = timeout;
          return false;
        case Outcome::fell_back: ++same_host_fallbacks_; break;
      }
    }
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
      sent = monitor_ || interrupt_.active() ? send_polling(timeout) == Outcome::sent : send_within(timeout);
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

  // Same host: a loan from the receiver's channel when there is room in it now (the send then
  // copies nothing at all); otherwise heap memory, which frames send without copying.
  Buffer allocate(std::size_t bytes) override {
    if (same_host_ && same_host_->worth_it(bytes)) {
      const auto now = Clock::now();
      const auto wait_until = deadline_after(default_timeout_, now).value_or(Clock::time_point::max());
      if (detail::SenderImpl* channel = same_host_->negotiate(socket_, *monitor_, wait_until)) {
        try {
          return channel->allocate(bytes);
        } catch (const PeerGone&) {
          same_host_->drop_channel();
        } catch (const Interrupted&) {
          throw;
        } catch (const TransportError&) {  // no room now (TimeoutError), or more than the channel holds
        }
      }
    }
    return Buffer::allocate(bytes);
  }

  TransportStats stats() const override {
    TransportStats t = wire_stats(ledger_, wire_bytes_);
    t.undelivered_messages = undelivered_;
    t.same_host_fallbacks = same_host_fallbacks_;
    if (same_host_) t.wire_bytes += same_host_->hello_bytes();
    return t;
  }
  CopyLedger& ledger() override { return ledger_; }

 private:
  enum class Outcome { sent, timed_out, fell_back };

  // The message into the receiver's channel, then its doorbell on the socket. Falls back (the
  // caller sends frames) when there is no accepted channel, the message is larger than the
  // channel or finds no room in it soon enough (SameHostSender::room_wait), the channel's
  // receiver is gone, or the connection changed before the doorbell left (the new peer never saw
  // the channel; the copy left in the old one is dropped by its receiver).
  Outcome send_same_host(const Message& message, Timeout timeout) {
    const auto deadline = deadline_after(timeout, Clock::now());
    detail::SenderImpl* channel = same_host_->negotiate(socket_, *monitor_, deadline.value_or(Clock::time_point::max()));
    if (!channel) return Outcome::fell_back;
    const CopyLedger before = channel->ledger();
    Timeout room_wait = same_host_->room_wait();
    if (const Timeout left = remaining(deadline); left && *left < *room_wait) room_wait = left;
    bool published = false;
    try {
      published = channel->try_send(same_host_->tagged(message), room_wait);
    } catch (const PeerGone&) {
      same_host_->forget();
      same_host_->drop_channel();
      return Outcome::fell_back;
    } catch (const Interrupted&) {
      same_host_->forget();
      ++undelivered_;
      throw;
    } catch (const TransportError& e) {
      same_host_->forget();
      if (e.code() != EMSGSIZE) same_host_->drop_channel();  // a channel we cannot trust: frames from now on
      return Outcome::fell_back;
    }
    same_host_->found_room(published);
    if (!published) {
      same_host_->forget();
      if (deadline && Clock::now() >= *deadline) return Outcome::timed_out;
      return Outcome::fell_back;  // no room in the channel: frames, as the socket would take it
    }
    // The channel's ledger counted the tag as a buffer copied in: it is not the caller's.
    CopyLedger added = channel->ledger();
    added -= before;
    added.oob_buffers -= 1;
    added.oob_bytes -= SameHostSender::kTagBytes;
    added.copies[static_cast<std::size_t>(CopyReason::copied_into_segment)] -= 1;
    added.copied_bytes[static_cast<std::size_t>(CopyReason::copied_into_segment)] -= SameHostSender::kTagBytes;
    added.same_host_messages = 1;
    added.same_host_bytes = message.out_of_band_bytes();

    const std::vector<std::byte> doorbell = same_host_->commit();
    frames_.clear();
    frames_.emplace_back(doorbell.data(), doorbell.size());
    Outcome rung;
    try {
      rung = send_polling(remaining(deadline), same_host_->generation());
    } catch (const TransportError&) {  // PeerGone, Interrupted
      frames_.clear();
      ++undelivered_;
      throw;
    }
    frames_.clear();
    if (rung == Outcome::sent) {
      ledger_ += added;
      wire_bytes_ += doorbell.size();
    }
    return rung;
  }

  bool send_within(Timeout timeout) {
    set_send_timeout(socket_, timeout, send_timeout_ms_);
    return send_frames(socket_, frames_);
  }

  // Sends in ZeroMQ's own blocking send (which returns the moment there is room: no zmq_poll
  // round trip per full queue) in slices that end at the deadline, the moment the last receiver
  // has been gone for the grace period, the next interrupt check, or kMonitorSlice; between
  // slices the monitor's events are applied. A send that finds room takes one slice and never
  // looks at the monitor (its events queue up meanwhile, rcvhwm 0): with immediate, ZeroMQ only
  // accepts a message for a connected peer. (Trying first without blocking cost a failed send and
  // the monitor's poll per message whenever the queue was full, as it is in any sustained stream.)
  // The frames are built once: waking up redoes no work.
  //
  // A doorbell (`connection` set) may only go to the connection whose receiver owns the channel:
  // the monitor is consulted before the first attempt too, and a change of connection ends the
  // send with fell_back instead.
  Outcome send_polling(Timeout timeout, std::optional<std::uint32_t> connection = std::nullopt) {
    auto connection_changed = [&] {
      monitor_->update();
      return monitor_->connections() != *connection || monitor_->peers() != 1;
    };
    if (connection && connection_changed()) return Outcome::fell_back;
    // The clock is read only when a deadline, an interrupt check or a departed receiver's grace
    // period can end the first slice (a quarter of a microsecond-scale send otherwise).
    const bool clocked = timeout || interrupt_.active() || (monitor_ && heartbeats_ && monitor_->gone_at());
    Clock::time_point now = clocked ? Clock::now() : Clock::time_point{};
    const std::optional<Clock::time_point> deadline = deadline_after(timeout, now);
    for (bool first = true;; first = false) {
      if (!first) {
        now = Clock::now();
        if (connection && connection_changed()) return Outcome::fell_back;
        if (monitor_ && heartbeats_) {
          monitor_->update();
          if (monitor_->gone(now))
            throw PeerGone("zmq transport: no receiver connected to " + url_ + " for " +
                           std::to_string(monitor_->grace().count()) +
                           " ms (the last one disconnected: its process died, or it missed heartbeats)");
        }
        if (deadline && now >= *deadline) return Outcome::timed_out;
        if (interrupt_.requested()) throw Interrupted("zmq transport: send to " + url_ + " was interrupted");
      }
      // Unclocked (`now` unread), nothing but kMonitorSlice can bound the slice, and the
      // differences below are taken from the same `now`: the computation holds either way.
      std::optional<Clock::time_point> wake = interrupt_.next_check(deadline, now);
      if (monitor_ && heartbeats_)
        if (auto gone = monitor_->gone_at(); gone && (!wake || *gone < *wake)) wake = gone;
      if (monitor_ && (heartbeats_ || connection))  // a doorbell re-checks its connection this often
        if (!wake || *wake > now + kMonitorSlice) wake = now + kMonitorSlice;
      Timeout slice;
      if (wake) slice = std::chrono::ceil<std::chrono::milliseconds>(std::max(*wake - now, Clock::duration::zero()));
      if (slice && *slice == std::chrono::milliseconds(0) && !first) slice = std::chrono::milliseconds(1);
      set_send_timeout(socket_, slice, send_timeout_ms_);
      if (send_frames(socket_, frames_)) return Outcome::sent;
    }
  }

  // How late a monitor event (a receiver leaving) may be applied while a send waits.
  static constexpr std::chrono::milliseconds kMonitorSlice{100};

  std::string url_;
  zmq::socket_t socket_;
  std::optional<PeerMonitor> monitor_;  // heartbeats on, or the same-host path (tcp://, ipc://) only
  FrameWriter writer_;
  std::vector<zmq::message_t> frames_;
  CopyLedger ledger_;
  std::uint64_t wire_bytes_ = 0;
  int send_timeout_ms_ = -1;
  InterruptCheck interrupt_;
  Timeout last_timeout_;
  std::uint64_t undelivered_ = 0;
  bool heartbeats_;
  Timeout default_timeout_;
  std::optional<SameHostSender> same_host_;  // connecting tcp:// and ipc:// Senders only
  std::uint64_t same_host_fallbacks_ = 0;
};

class ZmqReceiver final : public detail::ReceiverImpl {
 public:
  ZmqReceiver(std::string_view url, bool bind, const EndpointOptions& options)
      : url_(url), socket_(context(), zmq::socket_type::pull), reader_(options.zmq), interrupt_(options) {
    if (url.starts_with("tcp://") || url.starts_with("ipc://")) same_host_.emplace(options);
    configure_and_attach(socket_, url, bind, options.zmq);
  }

  // One multipart message per turn: a control message (same_host.hpp) is acted on and the wait
  // goes on for the rest of the timeout; a doorbell delivers the message it names.
  std::optional<Message> recv(Timeout timeout) override {
    // One clock reading serves the deadline and the first wait: a receive that finds a message
    // reads the clock no more (clock_gettime is a visible share of a small message's cost).
    Clock::time_point now = Clock::now();
    const std::optional<Clock::time_point> deadline = deadline_after(timeout, now);
    for (;;) {
      std::size_t dropped = 0;
      if (!receive_frames(deadline, now, dropped)) return std::nullopt;
      // A malformed message is counted and refused; the next recv serves the next message.
      struct ClearFrames {
        std::vector<zmq::message_t>& frames;
        ~ClearFrames() { frames.clear(); }
      } clear{frames_};
      try {
        if (dropped)
          throw TransportError("zmq transport: invalid message from peer: " + std::to_string(dropped) +
                               " frames beyond what its header describes");
        const std::span<const std::byte> head(static_cast<const std::byte*>(frames_[0].data()), frames_[0].size());
        if (!is_control(head)) return reader_.read(frames_, ledger_);
        if (frames_.size() != 1)
          throw TransportError("zmq transport: invalid message from peer: a control message of " +
                               std::to_string(frames_.size()) + " frames");
        const Control control = decode_control(head);
        if (const Hello* hello = std::get_if<Hello>(&control)) {
          if (same_host_) same_host_->on_hello(*hello);
          now = Clock::now();
          continue;
        }
        if (!same_host_)
          throw TransportError("zmq transport: invalid message from peer: a same-host doorbell on " + url_);
        return same_host_->take(std::get<Doorbell>(control), ledger_);
      } catch (const TransportError&) {
        ++malformed_;
        throw;
      }
    }
  }

  TransportStats stats() const override {
    TransportStats t = wire_stats(ledger_, wire_bytes_);
    t.malformed_messages = malformed_;
    if (same_host_) same_host_->add_stats(t);
    return t;
  }
  CopyLedger& ledger() override { return ledger_; }

 private:
  // Waits for the next multipart message until `deadline`: without an interrupt check, one
  // blocking receive; with one, slices between checks (a receive that times out has taken
  // nothing, so slicing redoes no work). False when none came.
  // With a same-host channel, the wait is also sliced for its housekeeping (same_host.hpp).
  // `now`: the time, read by the caller just before.
  bool receive_frames(std::optional<Clock::time_point> deadline, Clock::time_point now, std::size_t& dropped) {
    bool socket_idle = false;  // the last slice found nothing
    for (bool first = true;; first = false) {
      if (!first) now = Clock::now();
      Timeout slice = remaining(deadline, now);
      if (interrupt_.active()) {
        const auto wake = *interrupt_.next_check(deadline, now);
        slice = std::chrono::ceil<std::chrono::milliseconds>(std::max(wake - now, Clock::duration::zero()));
      }
      const bool housekeeping = same_host_ && same_host_->has_channel();
      if (housekeeping) {
        if (now >= next_maintenance_) {
          same_host_->maintain(socket_idle);
          next_maintenance_ = now + SameHostReceiver::kMaintenancePeriod;
        }
        const auto until_due = std::chrono::ceil<std::chrono::milliseconds>(next_maintenance_ - now);
        if (!slice || *slice > until_due) slice = until_due;
      }
      set_recv_timeout(socket_, slice, recv_timeout_ms_);
      bool got;
      try {
        got = recv_frames(socket_, frames_, 0, dropped, wire_bytes_);
      } catch (const zmq::error_t& e) {
        throw TransportError("zmq transport: receive on " + url_ + " failed: " + e.what(), e.num());
      }
      if (got) return true;
      socket_idle = true;
      if (deadline && Clock::now() >= *deadline) return false;
      if (!interrupt_.active()) {
        if (deadline || housekeeping) continue;  // a slice ended early: the rest of the wait
        return false;
      }
      if (interrupt_.requested()) throw Interrupted("zmq transport: receive on " + url_ + " was interrupted");
    }
  }

  std::string url_;
  zmq::socket_t socket_;
  FrameReader reader_;
  std::vector<zmq::message_t> frames_;
  CopyLedger ledger_;
  std::uint64_t wire_bytes_ = 0;
  int recv_timeout_ms_ = -1;
  InterruptCheck interrupt_;
  std::uint64_t malformed_ = 0;
  std::optional<SameHostReceiver> same_host_;  // tcp:// and ipc:// Receivers
  Clock::time_point next_maintenance_{};
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
