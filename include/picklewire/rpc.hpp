/// \file picklewire/rpc.hpp — request/reply over ZeroMQ DEALER/ROUTER, for worker pools.
///
/// A Client sends requests and gets each reply back, matched by a request id, even with many
/// requests outstanding; a Server receives Requests and answers each with Request::reply(). Either
/// side may bind or connect (tcp://, ipc://, inproc://):
///
///   one server, many clients      Server::bind(url)   + Client::connect(url) in each client
///   one coordinator, many workers Client::bind(url)   + Server::connect(url) in each worker:
///                                 requests go round-robin to the connected workers, and every
///                                 reply comes back to the coordinator
///
/// Messages travel in the framing of the PUSH/PULL endpoints (docs/wire-format.md), preceded by
/// one 8-byte little-endian request-id frame (ROUTER adds and strips the peer's identity). A reply
/// is lz4-compressed only when the server asked for compression and the client's request said it
/// accepts lz4. Clients and Servers are not thread-safe (one per thread, like ZeroMQ sockets); a
/// Request must not outlive its Server.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>

#include "picklewire/endpoint.hpp"

namespace picklewire::rpc {

class Request;

class Server {
 public:
  static Server bind(std::string_view url, const EndpointOptions& options = {});
  static Server connect(std::string_view url, const EndpointOptions& options = {});
  /// The next request, or nullopt on timeout. A malformed request throws TransportError (and is
  /// not answered); the next call serves the next one.
  std::optional<Request> recv(Timeout timeout = std::nullopt);
  TransportStats stats() const;

  Server(Server&&) noexcept;
  Server& operator=(Server&&) noexcept;
  ~Server();

  struct Impl;  ///< defined in transport/zmq/rpc.cpp

 private:
  explicit Server(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

/// One received request; reply() at most once.
class Request {
 public:
  const Message& message() const noexcept { return message_; }
  Message& message() noexcept { return message_; }
  std::uint64_t id() const noexcept { return id_; }
  /// Sends the reply to the client that made this request. Throws TimeoutError when it cannot be
  /// queued within `timeout`, TransportError when already replied.
  void reply(const Message& reply, Timeout timeout = std::nullopt);
  /// The server's options and copy ledger (the values layer pickles replies with them).
  const EndpointOptions& options() const;
  CopyLedger& ledger();

 private:
  friend class Server;
  Server::Impl& server() const;
  Server::Impl* server_ = nullptr;
  std::string identity_;
  std::uint64_t id_ = 0;
  bool accepts_lz4_ = false;
  std::uint8_t wire_version_ = 1;  ///< the request's; the reply uses no newer one (zmq wire format)
  bool replied_ = false;
  Message message_;
};

class Client {
 public:
  static Client connect(std::string_view url, const EndpointOptions& options = {});
  static Client bind(std::string_view url, const EndpointOptions& options = {});

  /// Sends a request and returns its id (ids are unique per Client). Throws TimeoutError when no
  /// server can take it within `timeout` (default: options.send_timeout).
  std::uint64_t submit(const Message& request, Timeout timeout);
  std::uint64_t submit(const Message& request);
  /// The reply to request `id` (replies to other requests that arrive meanwhile are kept for their
  /// own wait()), or nullopt when it did not arrive within `timeout`.
  std::optional<Message> wait(std::uint64_t id, Timeout timeout = std::nullopt);
  /// The next reply to any outstanding request, with its id.
  std::optional<std::pair<std::uint64_t, Message>> wait_any(Timeout timeout = std::nullopt);
  /// submit + wait; throws TimeoutError when no reply came within `timeout`.
  Message call(const Message& request, Timeout timeout = std::nullopt);
  /// Requests submitted whose replies were not yet returned by wait / wait_any.
  std::size_t outstanding() const;
  TransportStats stats() const;
  const EndpointOptions& options() const noexcept;
  CopyLedger& ledger() noexcept;  ///< the values layer records the buffers it pickles in-band
  /// The endpoint last bound or connected, as ZeroMQ resolved it (ZMQ_LAST_ENDPOINT): after
  /// bind("tcp://127.0.0.1:*") it names the port the system picked, for workers to connect to.
  std::string endpoint() const;

  Client(Client&&) noexcept;
  Client& operator=(Client&&) noexcept;
  ~Client();

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace picklewire::rpc
