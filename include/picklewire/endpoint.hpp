/// \file picklewire/endpoint.hpp — Sender / Receiver named by URL: one API for every transport.
///
///   shm://NAME                  shared memory on this host (transport/shm). The Receiver binds
///                               (creates) the channel, Senders connect. Many senders, one receiver.
///   tcp://HOST:PORT, ipc://PATH, inproc://NAME
///                               ZeroMQ PUSH/PULL (transport/zmq); either side may bind or connect.
///
/// Code switches transport by changing the URL. Endpoints move a Message and nothing else; the
/// value-level calls (send_value, recv_value, allocate_array) live a layer up, in values.hpp.
///
/// Received Messages are views: their Buffers point into the shared-memory mapping or the ZeroMQ
/// frames and keep that memory alive (a shared-memory slot returns to its segment when the last
/// Buffer referring to it is dropped, from any thread). Senders and Receivers are not thread-safe:
/// use one per thread (as with ZeroMQ sockets).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "picklewire/buffer.hpp"
#include "picklewire/endpoint_options.hpp"
#include "picklewire/ledger.hpp"
#include "picklewire/message.hpp"

namespace picklewire {

namespace detail {
class SenderImpl {
 public:
  virtual ~SenderImpl() = default;
  /// false: the message could not be handed over within `timeout` (nothing sent, nothing held).
  virtual bool try_send(const Message& message, Timeout timeout) = 0;
  /// What a send that timed out was waiting for, one sentence for the TimeoutError's message.
  virtual std::string timeout_reason() const = 0;
  virtual Buffer allocate(std::size_t bytes) = 0;
  virtual TransportStats stats() const = 0;
  virtual CopyLedger& ledger() = 0;
};
class ReceiverImpl {
 public:
  virtual ~ReceiverImpl() = default;
  virtual std::optional<Message> recv(Timeout timeout) = 0;
  virtual TransportStats stats() const = 0;
  virtual CopyLedger& ledger() = 0;
};
}  // namespace detail

class Sender {
 public:
  static Sender connect(std::string_view url, const EndpointOptions& options = {});
  static Sender bind(std::string_view url, const EndpointOptions& options = {});  ///< zmq only

  /// Sends `message`. Waits up to `timeout` (default: options.send_timeout) for room, then throws
  /// TimeoutError; throws PeerGone when the receiver is gone, Interrupted when options.interrupt
  /// asked to stop.
  void send(const Message& message, Timeout timeout);
  void send(const Message& message) { send(message, options_.send_timeout); }
  /// send() that returns false instead of throwing TimeoutError; one wait, however long.
  bool try_send(const Message& message, Timeout timeout);

  /// Writable memory that sending copies nothing for: on shm a slot inside the segment, elsewhere
  /// heap memory the transport hands over without copying.
  Buffer allocate(std::size_t bytes);

  TransportStats stats() const;
  /// This side's copy ledger, for the layers above that copy too (the values layer records the
  /// buffers it pickles in-band): stats().ledger includes what they add.
  CopyLedger& ledger() { return impl().ledger(); }
  const EndpointOptions& options() const noexcept { return options_; }
  void close() { impl_.reset(); }

  explicit Sender(std::unique_ptr<detail::SenderImpl> impl, EndpointOptions options = {})
      : impl_(std::move(impl)), options_(std::move(options)) {}

 private:
  detail::SenderImpl& impl() const;
  std::unique_ptr<detail::SenderImpl> impl_;
  EndpointOptions options_;
};

class Receiver {
 public:
  static Receiver bind(std::string_view url, const EndpointOptions& options = {});
  static Receiver connect(std::string_view url, const EndpointOptions& options = {});  ///< zmq only

  /// The next Message, or nullopt when none arrived within `timeout` (nullopt: wait forever).
  /// Throws TransportError for a malformed message (the next call serves the next one) and
  /// PeerGone when no sender can ever send again (shm: the channel was torn down).
  std::optional<Message> recv(Timeout timeout = std::nullopt);
  std::optional<Message> try_recv() { return recv(std::chrono::milliseconds(0)); }

  TransportStats stats() const;
  const EndpointOptions& options() const noexcept { return options_; }
  void close() { impl_.reset(); }

  explicit Receiver(std::unique_ptr<detail::ReceiverImpl> impl, EndpointOptions options = {})
      : impl_(std::move(impl)), options_(std::move(options)) {}

 private:
  detail::ReceiverImpl& impl() const;
  std::unique_ptr<detail::ReceiverImpl> impl_;
  EndpointOptions options_;
};

}  // namespace picklewire
