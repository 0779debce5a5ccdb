// picklewire/endpoint.hpp — Sender / Receiver named by URL: one API for every transport.
//
//   shm://NAME                  shared memory on this host (transport/shm). The Receiver binds
//                               (creates) the channel, Senders connect. Many senders, one receiver.
//   tcp://HOST:PORT, ipc://PATH, inproc://NAME
//                               ZeroMQ PUSH/PULL (transport/zmq); either side may bind or connect.
//
// Code switches transport by changing the URL. Message-level calls move a Message and nothing
// else; value-level calls pickle (protocol 5) with a buffer callback that sends every buffer of at
// least `inband_threshold` bytes out-of-band.
//
// Received Messages are views: their Buffers point into the shared-memory mapping or the ZeroMQ
// frames and keep that memory alive (a shared-memory slot returns to its segment when the last
// Buffer referring to it is dropped, from any thread). Senders and Receivers are not thread-safe:
// use one per thread (as with ZeroMQ sockets).
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
#include "picklewire/ledger.hpp"
#include "picklewire/message.hpp"
#include "picklewire/ndarray.hpp"
#include "picklewire/unpickler.hpp"
#include "picklewire/value.hpp"

namespace picklewire {

// nullopt: wait forever. zero: do not wait.
using Timeout = std::optional<std::chrono::milliseconds>;

struct ShmOptions {
  std::size_t capacity = std::size_t(256) << 20;    // Receiver::bind: bytes of buffer heap in the segment
  std::chrono::microseconds spin{50};               // busy-wait this long before blocking on a wake-up
  std::uint32_t slot_count = 4096;                  // Receiver::bind: max slots (messages + loans) in use at once
  std::uint32_t ring_capacity = 1024;               // Receiver::bind: max messages queued, not yet received
  std::uint32_t lane_count = 64;                    // Receiver::bind: per-sender queues (0..64; 0: all use the ring)
  bool prefault = true;                             // populate the mapping's pages up front (first touch ~1 GB/s)
};

struct ZmqOptions {
  bool compress = false;          // lz4 per buffer (tcp:// only by default; see docs/wire-format.md)
  bool shuffle = true;            // byte-shuffle typed arrays before lz4 when compressing
  int send_hwm = 1000;            // ZeroMQ high-water marks, in messages
  int recv_hwm = 1000;
  std::int64_t max_message_bytes = -1;  // receiver: refuse larger messages (ZMQ_MAXMSGSIZE); -1: none
  std::chrono::milliseconds heartbeat{0};  // ZMTP heartbeats to notice dead peers; 0: off
  // How long a peer may stay silent before its connection is dropped (ZMTP heartbeat timeout and
  // TTL); 0: 3 x heartbeat. A PUSH Sender whose receivers all disconnected and none came back
  // within this time throws PeerGone from send (docs/zmq.md "Dead peers").
  std::chrono::milliseconds heartbeat_timeout{0};
  std::string curve_server_secret_key_file;  // CURVE (tcp://): see docs/security.md
  std::string curve_server_public_key_file;
  std::string curve_client_secret_key_file;
  std::string curve_client_public_key_file;
  // CURVE server: when set, only clients whose public key (Z85, one per line) is listed may connect.
  std::string curve_authorized_clients_file;
  std::size_t compress_min_bytes = 64 * 1024;  // buffers below this are never compressed
  // Shuffle hint for lz4: the item size of the typed arrays being sent (e.g. 8 for float64);
  // 0: try 4 and 8 on each buffer's sample and keep what compresses best.
  std::uint32_t item_size = 0;
  // How long closing an endpoint (and process exit) waits for queued messages to leave; nullopt: forever.
  Timeout linger = std::chrono::milliseconds(30000);
};

struct EndpointOptions {
  std::size_t inband_threshold = 4096;  // value-level send: smaller buffers go in-band
  Timeout send_timeout = std::nullopt;  // default timeout of send() when none is given
  ShmOptions shm;
  ZmqOptions zmq;
};

struct TransportStats {
  CopyLedger ledger;                    // this endpoint's side: sent (Sender) or received (Receiver)
  std::uint64_t slots_in_use = 0;       // shm: slots not yet returned to the segment
  std::uint64_t bytes_in_use = 0;       // shm: heap bytes held by those slots
  std::uint64_t peak_bytes_in_use = 0;  // shm
  std::uint64_t capacity = 0;           // shm: heap bytes in the segment
  std::uint64_t wire_bytes = 0;         // zmq: bytes handed to ZeroMQ (after compression)
};

namespace detail {
class SenderImpl {
 public:
  virtual ~SenderImpl() = default;
  virtual void send(const Message& message, Timeout timeout) = 0;
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
  static Sender bind(std::string_view url, const EndpointOptions& options = {});  // zmq only

  // Sends `message`. Waits up to `timeout` (default: options.send_timeout) for room, then throws
  // TimeoutError; throws PeerGone when the receiver is gone.
  void send(const Message& message, Timeout timeout);
  void send(const Message& message) { send(message, options_.send_timeout); }
  // Pickles `value` at protocol 5 and sends it.
  void send(const Value& value, Timeout timeout);
  void send(const Value& value) { send(value, options_.send_timeout); }

  // Writable memory that sending copies nothing for: on shm a slot inside the segment, elsewhere
  // heap memory the transport hands over without copying.
  Buffer allocate(std::size_t bytes);
  // A writable, contiguous array whose data comes from allocate(): fill it, then
  // send(Value::ndarray(array)) copies none of its bytes on shm://. Throws picklewire::Error for a
  // bad dtype or shape, TransportError when the transport cannot lend that much.
  NDArray allocate_array(const DType& dtype, std::vector<std::int64_t> shape, Order order = Order::C);

  TransportStats stats() const;
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
  static Receiver connect(std::string_view url, const EndpointOptions& options = {});  // zmq only

  // The next Message, or nullopt when none arrived within `timeout` (nullopt: wait forever).
  // Throws TransportError for a malformed message (the next call serves the next one) and
  // PeerGone when no sender can ever send again (shm: the channel was torn down).
  std::optional<Message> recv(Timeout timeout = std::nullopt);
  std::optional<Message> try_recv() { return recv(std::chrono::milliseconds(0)); }
  // recv() then load(): the value's buffers are views of the received memory.
  std::optional<Value> recv_value(Timeout timeout = std::nullopt, const UnpicklerOptions& options = {});

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
