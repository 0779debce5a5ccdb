// transport/zmq/peer_monitor.hpp — how many peers a socket is talking to, from ZeroMQ's socket
// monitor (zmq_socket_monitor): how a Sender with heartbeats on notices that its receivers are gone.
#pragma once

#include <zmq.hpp>

#include <chrono>
#include <cstdint>
#include <optional>

namespace picklewire::zmq_transport {

class PeerMonitor {
 public:
  using Clock = std::chrono::steady_clock;

  // Starts monitoring `watched` (before it binds or connects, so no connection is missed). The
  // peer counts as gone once `watched` had at least one peer and has had none for `grace`.
  PeerMonitor(zmq::socket_t& watched, std::chrono::milliseconds grace);
  // Stops the monitoring; the watched socket must still be open (declare the PeerMonitor after it).
  ~PeerMonitor();
  PeerMonitor(const PeerMonitor&) = delete;
  PeerMonitor& operator=(const PeerMonitor&) = delete;

  // Applies the events queued so far. Never blocks.
  void update();
  // Connections that completed their ZMTP handshake and have not disconnected.
  int peers() const noexcept { return peers_; }
  // Connections that ever completed their handshake: a new value means a new peer connection
  // (for a connecting socket, the one it has now).
  std::uint32_t connections() const noexcept { return connections_; }
  // When the peer counts as gone (a point in the past when it already is), or nullopt while a peer
  // is connected, or before the first one ever was.
  std::optional<Clock::time_point> gone_at() const;
  bool gone(Clock::time_point now) const { auto g = gone_at(); return g && now >= *g; }
  // Readable when events are queued: poll it together with the watched socket.
  zmq::socket_t& events() noexcept { return events_; }
  std::chrono::milliseconds grace() const noexcept { return grace_; }

 private:
  void* watched_;  // the monitored socket's handle
  zmq::socket_t events_;
  std::chrono::milliseconds grace_;
  int peers_ = 0;
  std::uint32_t connections_ = 0;
  int failed_handshakes_ = 0;  // handshake failures whose DISCONNECTED is still to come
  std::optional<Clock::time_point> last_peer_left_;
};

}  // namespace picklewire::zmq_transport
