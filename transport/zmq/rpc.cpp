// Request/reply over DEALER (Client) / ROUTER (Server) with the Message framing of message_frames.hpp.
#include "picklewire/rpc.hpp"

#include <zmq.hpp>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "picklewire/errors.hpp"
#include "zmq/context.hpp"
#include "zmq/wire_header.hpp"
#include "zmq/message_frames.hpp"

namespace picklewire::rpc {

using zmq_transport::FrameReader;
using zmq_transport::FrameWriter;

namespace {

zmq::message_t id_frame(std::uint64_t id) {
  std::byte bytes[8];
  for (int i = 0; i < 8; ++i) bytes[i] = static_cast<std::byte>((id >> (8 * i)) & 0xff);
  return zmq::message_t(bytes, 8);
}

std::uint64_t read_id(const zmq::message_t& frame) {
  if (frame.size() != 8)
    throw TransportError("zmq rpc: invalid message from peer: request-id frame of " + std::to_string(frame.size()) +
                         " bytes (expected 8)");
  const auto* p = static_cast<const std::uint8_t*>(frame.data());
  std::uint64_t id = 0;
  for (int i = 0; i < 8; ++i) id |= std::uint64_t(p[i]) << (8 * i);
  return id;
}

// Time left of a deadline, as a Timeout.
struct Deadline {
  explicit Deadline(Timeout t) : forever(!t), at(std::chrono::steady_clock::now() + (t ? *t : std::chrono::milliseconds(0))) {}
  Timeout left() const {
    if (forever) return std::nullopt;
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(at - std::chrono::steady_clock::now());
    return std::max(ms, std::chrono::milliseconds(0));
  }
  bool forever;
  std::chrono::steady_clock::time_point at;
};

}  // namespace

// What both ends of the request/reply pair hold: the socket, the framing, the ledger.
struct RpcSocket {
  RpcSocket(std::string_view url, bool bind, const EndpointOptions& o, zmq::socket_type type)
      : options(o), socket(zmq_transport::context(), type), writer(o.zmq), reader(o.zmq) {
    zmq_transport::configure_and_attach(socket, url, bind, o.zmq);
  }
  TransportStats stats() const { return zmq_transport::wire_stats(ledger, wire_bytes); }

  EndpointOptions options;
  zmq::socket_t socket;
  FrameWriter writer;
  FrameReader reader;
  std::vector<zmq::message_t> frames;
  CopyLedger ledger;
  std::uint64_t wire_bytes = 0;
  int send_timeout_ms = -1, recv_timeout_ms = -1;
};

struct Server::Impl : RpcSocket {
  // A reply to a client that has gone away is dropped, not an error (ROUTER's default).
  Impl(std::string_view url, bool bind, const EndpointOptions& o)
      : RpcSocket(url, bind, o, zmq::socket_type::router) {}
};

void Request::reply(const Message& reply, Timeout timeout) {
  Server::Impl& s = server();
  if (replied_) throw TransportError("zmq rpc: request " + std::to_string(id_) + " was already answered", EINVAL);
  std::vector<zmq::message_t> frames;
  frames.emplace_back(identity_.data(), identity_.size());
  frames.push_back(id_frame(id_));
  // The server's one writer (its header and frame pool are reused) with this client's settings:
  // lz4 only for a client that accepts it, and (negotiation) a client that wrote an older wire
  // version gets its reply in that version.
  FrameWriter& writer = s.writer;
  std::uint64_t wire = writer.write(reply, frames, s.ledger, writer.compress && accepts_lz4_,
                                    std::min(writer.version, wire_version_));
  zmq_transport::set_send_timeout(s.socket, timeout ? timeout : s.options.send_timeout, s.send_timeout_ms);
  if (!zmq_transport::send_frames(s.socket, frames))
    throw TimeoutError("zmq rpc: reply to request " + std::to_string(id_) + " could not be queued in time");
  s.wire_bytes += wire;
  replied_ = true;
}

Server::Impl& Request::server() const {
  if (!server_) throw TransportError("zmq rpc: this Request has no server", EINVAL);
  return *server_;
}
const EndpointOptions& Request::options() const { return server().options; }
CopyLedger& Request::ledger() { return server().ledger; }

Server::Server(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Server::Server(Server&&) noexcept = default;
Server& Server::operator=(Server&&) noexcept = default;
Server::~Server() = default;

Server Server::bind(std::string_view url, const EndpointOptions& options) {
  return Server(std::make_unique<Impl>(url, true, options));
}
Server Server::connect(std::string_view url, const EndpointOptions& options) {
  return Server(std::make_unique<Impl>(url, false, options));
}

std::optional<Request> Server::recv(Timeout timeout) {
  Impl& s = *impl_;
  zmq_transport::set_recv_timeout(s.socket, timeout, s.recv_timeout_ms);
  std::size_t dropped = 0;
  if (!zmq_transport::recv_frames(s.socket, s.frames, 2, dropped, s.wire_bytes)) return std::nullopt;
  if (dropped || s.frames.size() < 3)
    throw TransportError("zmq rpc: invalid request from peer: " +
                         (dropped ? std::to_string(dropped) + " frames beyond what its header describes"
                                  : std::string("too few frames")));
  Request r;
  r.server_ = &s;
  r.identity_ = std::string(s.frames[0].to_string_view());
  r.id_ = read_id(s.frames[1]);
  std::uint8_t flags = 0;
  r.message_ = s.reader.read(std::span<zmq::message_t>(s.frames).subspan(2), s.ledger, &flags, &r.wire_version_);
  r.accepts_lz4_ = (flags & zmq_transport::kAcceptsLz4) != 0;
  s.frames.clear();
  return r;
}

TransportStats Server::stats() const { return impl_->stats(); }

struct Client::Impl : RpcSocket {
  Impl(std::string_view url, bool bind, const EndpointOptions& o) : RpcSocket(url, bind, o, zmq::socket_type::dealer) {}
  std::uint64_t next_id = 1;
  std::set<std::uint64_t> pending;            // submitted, reply not yet received
  std::map<std::uint64_t, Message> arrived;   // received, not yet handed out

  // Receives one reply into `arrived`; false on timeout. Replies to unknown ids (a request we
  // never made, or answered twice) are malformed.
  bool receive_one(Timeout timeout) {
    zmq_transport::set_recv_timeout(socket, timeout, recv_timeout_ms);
    std::size_t dropped = 0;
    if (!zmq_transport::recv_frames(socket, frames, 1, dropped, wire_bytes)) return false;
    if (dropped || frames.size() < 2) throw TransportError("zmq rpc: invalid reply from peer: wrong frame count");
    std::uint64_t id = read_id(frames[0]);
    Message m = reader.read(std::span<zmq::message_t>(frames).subspan(1), ledger);
    frames.clear();
    if (!pending.erase(id)) throw TransportError("zmq rpc: reply to unknown request id " + std::to_string(id));
    arrived.emplace(id, std::move(m));
    return true;
  }
};

Client::Client(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
Client::Client(Client&&) noexcept = default;
Client& Client::operator=(Client&&) noexcept = default;
Client::~Client() = default;

Client Client::connect(std::string_view url, const EndpointOptions& options) {
  return Client(std::make_unique<Impl>(url, false, options));
}
std::string Client::endpoint() const { return impl_->socket.get(zmq::sockopt::last_endpoint); }

Client Client::bind(std::string_view url, const EndpointOptions& options) {
  return Client(std::make_unique<Impl>(url, true, options));
}

std::uint64_t Client::submit(const Message& request) { return submit(request, impl_->options.send_timeout); }

std::uint64_t Client::submit(const Message& request, Timeout timeout) {
  Impl& c = *impl_;
  std::uint64_t id = c.next_id++;
  std::vector<zmq::message_t> frames;
  frames.push_back(id_frame(id));
  CopyLedger pending_ledger = c.ledger;
  std::uint64_t wire = c.writer.write(request, frames, pending_ledger);
  zmq_transport::set_send_timeout(c.socket, timeout, c.send_timeout_ms);
  if (!zmq_transport::send_frames(c.socket, frames))
    throw TimeoutError("zmq rpc: request could not be queued in time (no server connected, or all at their high-water mark)");
  c.ledger = pending_ledger;
  c.wire_bytes += wire;
  c.pending.insert(id);
  return id;
}

std::optional<Message> Client::wait(std::uint64_t id, Timeout timeout) {
  Impl& c = *impl_;
  Deadline deadline(timeout);
  for (;;) {
    if (auto it = c.arrived.find(id); it != c.arrived.end()) {
      Message m = std::move(it->second);
      c.arrived.erase(it);
      return m;
    }
    if (!c.pending.count(id)) throw TransportError("zmq rpc: no outstanding request with id " + std::to_string(id));
    if (!c.receive_one(deadline.left())) return std::nullopt;
  }
}

std::optional<std::pair<std::uint64_t, Message>> Client::wait_any(Timeout timeout) {
  Impl& c = *impl_;
  if (c.arrived.empty()) {
    if (c.pending.empty()) throw TransportError("zmq rpc: wait_any with no outstanding request");
    if (!c.receive_one(timeout)) return std::nullopt;
  }
  auto it = c.arrived.begin();
  std::pair<std::uint64_t, Message> r(it->first, std::move(it->second));
  c.arrived.erase(it);
  return r;
}

Message Client::call(const Message& request, Timeout timeout) {
  Deadline deadline(timeout);
  std::uint64_t id = submit(request, timeout ? deadline.left() : impl_->options.send_timeout);
  auto reply = wait(id, deadline.left());
  if (!reply) throw TimeoutError("zmq rpc: no reply to request " + std::to_string(id) + " in time");
  return std::move(*reply);
}

std::size_t Client::outstanding() const { return impl_->pending.size() + impl_->arrived.size(); }

TransportStats Client::stats() const { return impl_->stats(); }
const EndpointOptions& Client::options() const noexcept { return impl_->options; }
CopyLedger& Client::ledger() noexcept { return impl_->ledger; }

}  // namespace picklewire::rpc
