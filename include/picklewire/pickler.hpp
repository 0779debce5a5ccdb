/// \file picklewire/pickler.hpp — writes a Value graph as a pickle, protocols 2-5, as CPython's C pickler.
///
/// For graphs of builtin types the bytes are CPython's bytes: dumps(loads(b)) == b for a CPython
/// protocol-5 pickle b. Shared nodes are memoised and written once (then BINGET), so sharing and
/// cycles survive a round trip.
///
/// Buffers (PickleBuffer values and NDArray data) follow CPython's buffer_callback rules: the
/// callback decides per buffer; out_of_band writes NEXT_BUFFER (+ READONLY_BUFFER when the buffer
/// is readonly) and the caller takes the buffer; in_band writes its bytes into the stream (bytes if
/// readonly, bytearray if writable). Without a callback every buffer is in-band. Protocol < 5
/// cannot carry buffers out-of-band: PickleBuffer is written as bytes/bytearray reductions, as
/// CPython would write the underlying object.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>

#include "picklewire/buffer.hpp"
#include "picklewire/errors.hpp"
#include "picklewire/ledger.hpp"
#include "picklewire/message.hpp"
#include "picklewire/value.hpp"

namespace picklewire {

enum class BufferPlacement { in_band, out_of_band };

/// What the pickler knows about a buffer besides its bytes.
struct BufferInfo {
  /// The dtype item size when the buffer is an NDArray's data (e.g. 8 for float64), 0 for a plain
  /// PickleBuffer. Transports use it as the byte-shuffle granularity (Message::item_sizes).
  std::uint32_t item_size = 0;
};

struct PicklerOptions {
  int protocol = 5;  ///< 2..5
  /// Called once per buffer, in stream order. The Buffer passed shares the original memory (no copy).
  std::function<BufferPlacement(const Buffer&, const BufferInfo&)> buffer_callback;
  /// persistent_id: a value to write as a persistent id (BINPERSID) instead of the object, or
  /// nullopt to pickle it normally. Called for every value before it is written.
  std::function<std::optional<Value>(const Value&)> persistent_id;
  /// Copies the pickler makes (e.g. a non-contiguous NDArray made contiguous) are recorded here.
  CopyLedger* ledger = nullptr;
};

/// Writes `value` and returns the stream.
Buffer dump(const Value& value, const PicklerOptions& options = {});

/// Receives a stream in pieces, in order (dump_to).
using StreamSink = std::function<void(const void* data, std::size_t size)>;

/// Writes `value` as dump() does (the same bytes), handing the stream to `sink` in pieces as they
/// are complete (whole frames, a few hundred KiB each; a large bytes/str payload straight from the
/// value) instead of returning it: the stream is never in memory all at once. Exceptions from
/// `sink` propagate; a failed dump may have passed part of the stream to it.
void dump_to(const Value& value, const StreamSink& sink, const PicklerOptions& options = {});

/// Protocol 5 with every buffer of at least `inband_threshold` bytes out-of-band, in order, in the
/// returned Message (smaller ones are written in-band), with Message::item_sizes giving each
/// out-of-band buffer's BufferInfo::item_size.
Message dump_message(const Value& value, std::size_t inband_threshold = 0, CopyLedger* ledger = nullptr);

}  // namespace picklewire
