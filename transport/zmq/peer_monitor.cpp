#include "zmq/peer_monitor.hpp"

#include <atomic>
#include <cstdint>
#include <cstring>
#include <string>

#include "zmq/context.hpp"

namespace picklewire::zmq_transport {
namespace {

// Every ZMTP connection ends in exactly one DISCONNECTED, preceded by either HANDSHAKE_SUCCEEDED
// (a peer) or one HANDSHAKE_FAILED_* (never a peer: refused key, not a ZeroMQ peer, a stopped
// process that accepts TCP but never greets). Those are the only events needed to count peers.
constexpr int kFailedHandshake =
    ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | ZMQ_EVENT_HANDSHAKE_FAILED_AUTH;
constexpr int kEvents = ZMQ_EVENT_HANDSHAKE_SUCCEEDED | kFailedHandshake | ZMQ_EVENT_DISCONNECTED;

std::string next_monitor_endpoint() {
  static std::atomic<std::uint64_t> n{0};
  return "inproc://picklewire-peer-monitor-" + std::to_string(n++);
}

}  // namespace

PeerMonitor::PeerMonitor(zmq::socket_t& watched, std::chrono::milliseconds grace)
    : watched_(watched.handle()), events_(context(), zmq::socket_type::pair), grace_(grace) {
  std::string endpoint = next_monitor_endpoint();
  if (zmq_socket_monitor(watched.handle(), endpoint.c_str(), kEvents) != 0) throw zmq::error_t();
  events_.set(zmq::sockopt::linger, 0);
  // The monitor PAIR drops events beyond its high-water mark; a flapping peer must not make us
  // lose a DISCONNECTED, so keep them all (each is a few bytes; update() drains them on every send).
  events_.set(zmq::sockopt::rcvhwm, 0);
  events_.connect(endpoint);
}

// libzmq's side of the monitor is a PAIR socket whose sends block while it has no peer, and it
// sends from the I/O thread (a DISCONNECTED while the closed socket lingers): with our end closed
// first, that thread would block for good and every later connection of the process would hang.
// So stop the monitor (closing libzmq's PAIR) before our end goes.
PeerMonitor::~PeerMonitor() { zmq_socket_monitor(watched_, nullptr, 0); }

void PeerMonitor::update() {
  zmq::message_t event, address;
  while (events_.recv(event, zmq::recv_flags::dontwait)) {
    // Frame 1: u16 event id, u32 value (host order); frame 2: the endpoint, always present.
    (void)events_.recv(address, zmq::recv_flags::none);
    if (event.size() < sizeof(std::uint16_t)) continue;
    std::uint16_t id;
    std::memcpy(&id, event.data(), sizeof id);
    if (id == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) {
      ++peers_;
      ++connections_;
      last_peer_left_.reset();
    } else if (id & kFailedHandshake) {
      ++failed_handshakes_;
    } else if (id == ZMQ_EVENT_DISCONNECTED) {
      if (failed_handshakes_ > 0) {
        --failed_handshakes_;
      } else if (peers_ > 0 && --peers_ == 0) {
        last_peer_left_ = Clock::now();
      }
    }
  }
}

std::optional<PeerMonitor::Clock::time_point> PeerMonitor::gone_at() const {
  if (peers_ > 0 || !last_peer_left_) return std::nullopt;
  return *last_peer_left_ + grace_;
}

}  // namespace picklewire::zmq_transport
