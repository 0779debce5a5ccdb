// transport/zmq/same_host.hpp — ZeroMQ peers on one host move buffers through shared memory
// (docs/zmq.md "Same host", docs/wire-format.md "Same host").
//
// A connecting Sender says hello on each new connection (its host identity, and the id of the
// answer box it created: shm/mailbox.hpp). A Receiver on the same host, as the same user, opens
// that box, which proves the claim, creates its channel (one per Receiver, shared by all its
// same-host senders: the shm:// machinery, slots, leases, crash repair, loans) and posts the
// channel's name there. From then on the Sender puts each large message into that channel,
// tagged (sender id, sequence), and sends only a doorbell on the socket; the doorbell keeps the
// message's place among the others on the socket, so per-sender order holds across both paths.
// Anything else (another host, a refusal, no answer yet, a full or too small channel) is frames.
//
// Only a *connecting* Sender with ZMQ_IMMEDIATE (the default) uses the path: it has at most one
// connection at a time, so the doorbell goes to the receiver that answered. A bound PUSH socket
// round-robins over any number of receivers and cannot choose: it always sends frames.
#pragma once

#include <zmq.hpp>

#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "picklewire/endpoint.hpp"
#include "zmq/peer_monitor.hpp"
#include "zmq/wire_header.hpp"

namespace picklewire::shm {
class Mailbox;
}

namespace picklewire::zmq_transport {

// Who this process is, as far as sharing /dev/shm goes: the kernel's boot id, the IPC namespace
// (two containers on one kernel are told apart) and the user.
struct HostIdentity {
  std::array<std::byte, 16> boot_id{};
  std::uint64_t ipc_namespace = 0;
  std::uint32_t uid = 0;
  bool known = false;  // false when /proc does not tell (then nothing is same-host)
  static const HostIdentity& current();
  bool matches(const Hello& hello) const noexcept;
};

// The Sender's half: the negotiation per connection, and sending through the accepted channel.
class SameHostSender {
 public:
  using Clock = std::chrono::steady_clock;
  explicit SameHostSender(const EndpointOptions& options);
  ~SameHostSender();

  // Worth the channel: at least ZmqOptions::same_host_min_bytes of out-of-band buffers.
  bool worth_it(std::size_t out_of_band_bytes) const noexcept { return out_of_band_bytes >= min_bytes_; }

  // Brings the negotiation up to date with the socket's current connection (a new connection
  // drops the old channel and gets a hello) and takes up an answer the receiver posted. With
  // `wait_until`, waits (at most until then) for a first connection and for the answer, within
  // the bounds in same_host.cpp. Returns the channel when the current connection's receiver
  // accepted, else nullptr (send frames).
  detail::SenderImpl* negotiate(zmq::socket_t& socket, PeerMonitor& monitor, std::optional<Clock::time_point> wait_until);

  // The connection the channel belongs to (PeerMonitor::connections()).
  std::uint32_t generation() const noexcept { return generation_; }
  // The channel failed (its receiver died or closed it): frames until the next connection.
  void drop_channel() noexcept;
  // How long a send waits for room in the channel before it sends frames instead: a receiver
  // that keeps what it received must not make sends block that frames would not. After a send
  // found no room, the next ones do not wait until one fits again.
  std::chrono::milliseconds room_wait() const noexcept { return channel_was_full_ ? std::chrono::milliseconds(0) : kRoomWait; }
  void found_room(bool room) noexcept { channel_was_full_ = !room; }
  static constexpr std::chrono::milliseconds kRoomWait{500};

  // `message` plus its tag (the last buffer: sender id and the next sequence number), for the
  // channel; then the doorbell for it once the channel took it (commit()).
  static constexpr std::size_t kTagBytes = 16;
  const Message& tagged(const Message& message);
  std::vector<std::byte> commit();  // the doorbell frame of the message tagged last
  void forget() noexcept;           // the channel did not take it: drop the references
  std::string describe_refusal() const { return refusal_; }
  std::uint64_t hello_bytes() const noexcept { return hello_bytes_; }  // handed to ZeroMQ so far

 private:
  bool send_hello(zmq::socket_t& socket);

  std::size_t min_bytes_;
  EndpointOptions channel_options_;  // for the ShmSender into the receiver's channel
  std::unique_ptr<shm::Mailbox> mailbox_;
  std::uint64_t sender_id_ = 0;
  std::uint64_t sequence_ = 0;
  std::uint32_t generation_ = 0;  // the connection negotiated (or being negotiated)
  bool hello_sent_ = false;
  bool settled_ = false;  // refused, failed or dropped: frames for the rest of this connection
  bool channel_was_full_ = false;
  Clock::time_point hello_sent_at_{};
  std::optional<Clock::time_point> preparing_since_;
  std::unique_ptr<detail::SenderImpl> channel_;
  std::string refusal_;
  std::uint64_t hello_bytes_ = 0;
  Message tagged_;
  std::array<std::byte, 16> tag_{};
};

// The Receiver's half: answers hellos, owns the channel, delivers the message a doorbell names.
class SameHostReceiver {
 public:
  explicit SameHostReceiver(const EndpointOptions& options);
  ~SameHostReceiver();

  // Acts on a hello: when it comes from this host and user (its answer box opens), creates the
  // channel if needed and posts accepted (or refused: the path is off, or the channel could not
  // be created). A hello from elsewhere, or a lie, is ignored: nobody can be told.
  void on_hello(const Hello& hello);
  // The message the doorbell names, tag removed; its buffers are views of the channel (leases).
  // Ledger: counted as received, zero-copy, same-host. Throws TransportError when the channel
  // does not hold it (a peer ringing for nothing).
  Message take(const Doorbell& doorbell, CopyLedger& ledger);
  // The channel's usage (slots, bytes, capacity), when there is one.
  void add_stats(TransportStats& stats) const;
  // Housekeeping while the Receiver waits (every kMaintenancePeriod): the channel reclaims the
  // slots that senders which died were holding (as shm:// does while it waits), messages already
  // in the channel move to the stash (their doorbells follow), the answer box of a sender seen
  // dead is removed (a killed sender leaves it behind), and the stashed messages of a
  // sender dead for kDeadSenderGrace are dropped once `socket_idle` (the last wait on the socket
  // found nothing): no doorbell of its can still come, so nobody will ever ring for them.
  void maintain(bool socket_idle);
  bool has_channel() const noexcept { return channel_ != nullptr; }
  static constexpr std::chrono::milliseconds kMaintenancePeriod{250};
  static constexpr std::chrono::milliseconds kDeadSenderGrace{1000};

 private:
  struct Tagged {
    std::uint64_t sender_id, sequence;
    Message message;
  };
  bool enabled_;
  EndpointOptions channel_options_;
  std::string channel_name_;
  std::unique_ptr<detail::ReceiverImpl> channel_;
  std::string failure_;         // why the channel could not be created (every hello is then refused)
  std::vector<Tagged> stash_;   // taken from the channel before their doorbells arrived
  struct Peer {
    std::uint64_t sender_id;
    std::int32_t pid;
    std::optional<std::chrono::steady_clock::time_point> dead_since;
  };
  std::vector<Peer> senders_;  // the senders told about the channel

  // Moves one message from the channel to the stash (or drops it: not tagged); false when the
  // channel holds none.
  bool stash_next();
};

}  // namespace picklewire::zmq_transport
