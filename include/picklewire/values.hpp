/// \file picklewire/values.hpp — the values layer: Value graphs over endpoints, the one place that uses
/// both the codec (value.hpp, pickler.hpp, unpickler.hpp, ndarray.hpp) and the transports
/// (endpoint.hpp, rpc.hpp). Neither of those knows the other; this thin layer joins them:
///
///   send_value(sender, value)        pickle at protocol 5 (every buffer of at least the sender's
///                                    options().inband_threshold bytes out-of-band) and send
///   recv_value(receiver)             receive and load: the value's buffers are views of the
///                                    received memory (shared memory or ZeroMQ frames), no copy
///   allocate_array(sender, ...)      an NDArray on memory the sender lends (shm: inside the
///                                    segment), so that send_value copies none of its bytes
///   rpc::submit_value / call_value / reply_value   the same over request/reply
///
/// Buffers the pickler writes in-band (smaller than the threshold) are recorded in the endpoint's
/// ledger as inband_below_threshold, so stats() shows every copy.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "picklewire/endpoint.hpp"
#include "picklewire/errors.hpp"
#include "picklewire/ndarray.hpp"
#include "picklewire/pickler.hpp"
#include "picklewire/rpc.hpp"
#include "picklewire/unpickler.hpp"
#include "picklewire/value.hpp"

namespace picklewire {

/// Pickles `value` at protocol 5 and sends it. Waits and throws like Sender::send.
inline void send_value(Sender& sender, const Value& value, Timeout timeout) {
  sender.send(dump_message(value, sender.options().inband_threshold, &sender.ledger()), timeout);
}
inline void send_value(Sender& sender, const Value& value) { send_value(sender, value, sender.options().send_timeout); }

/// The next value, or nullopt when none arrived within `timeout`. Throws like Receiver::recv, and
/// UnpicklingError for a malformed stream (the message is consumed).
inline std::optional<Value> recv_value(Receiver& receiver, Timeout timeout = std::nullopt,
                                       const UnpicklerOptions& options = {}) {
  std::optional<Message> m = receiver.recv(timeout);
  if (!m) return std::nullopt;
  return load(*m, options);
}

/// A writable, contiguous array whose data comes from sender.allocate(): fill it, then
/// send_value(sender, Value::ndarray(array)) copies none of its bytes on shm://. Throws
/// picklewire::Error for a bad dtype or shape, TransportError when the transport cannot lend that much.
inline NDArray allocate_array(Sender& sender, const DType& dtype, std::vector<std::int64_t> shape,
                              Order order = Order::C) {
  dtype.validate();
  if (shape.size() > NDArray::kMaxDims)
    throw Error("allocate_array: " + std::to_string(shape.size()) + " dimensions (at most " +
                std::to_string(NDArray::kMaxDims) + ")");
  std::size_t bytes = dtype.itemsize;
  for (std::int64_t extent : shape) {
    if (extent < 0) throw Error("allocate_array: negative extent " + std::to_string(extent) + " in the shape");
    if (__builtin_mul_overflow(bytes, static_cast<std::size_t>(extent), &bytes))
      throw Error("allocate_array: the shape's byte size overflows");
  }
  /// Slots are 64-byte aligned, enough for every dtype; from_buffer checks the size against the shape.
  return NDArray::from_buffer(sender.allocate(bytes), dtype, std::move(shape), order);
}

namespace rpc {

/// Pickles `request` and submits it (Client::submit); returns its id.
inline std::uint64_t submit_value(Client& client, const Value& request, Timeout timeout) {
  return client.submit(dump_message(request, client.options().inband_threshold, &client.ledger()), timeout);
}
inline std::uint64_t submit_value(Client& client, const Value& request) {
  return submit_value(client, request, client.options().send_timeout);
}

/// submit_value + wait + load; throws TimeoutError when no reply came within `timeout`.
inline Value call_value(Client& client, const Value& request, Timeout timeout = std::nullopt,
                        const UnpicklerOptions& options = {}) {
  Message reply = client.call(dump_message(request, client.options().inband_threshold, &client.ledger()), timeout);
  return load(reply, options);
}

/// Pickles `reply` and answers `request` with it (Request::reply).
inline void reply_value(Request& request, const Value& reply, Timeout timeout = std::nullopt) {
  request.reply(dump_message(reply, request.options().inband_threshold, &request.ledger()), timeout);
}

}  // namespace rpc
}  // namespace picklewire
