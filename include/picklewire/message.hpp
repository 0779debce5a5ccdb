/// \file picklewire/message.hpp — the one type every layer shares.
///
/// A Message is one in-band pickle stream plus its ordered out-of-band buffers: buffers[i] is what
/// the i-th NEXT_BUFFER opcode in `stream` resolves to. Codec, transports and the Python module all
/// produce and consume exactly this; on receive, `stream` and `buffers` are views into shared
/// memory or ZeroMQ frames, each keeping its memory alive (see buffer.hpp).
///
/// `item_sizes` is a per-buffer hint for transports that compress: empty (nothing known), or one
/// entry per buffer giving the dtype item size of the NDArray whose data buffers[i] is (e.g. 2 for
/// int16, 8 for float64), 0 when unknown (a plain PickleBuffer). dump_message fills it; the ZeroMQ
/// transport byte-shuffles by it before lz4 and restores it on receive from the frame header; the
/// shared-memory transport ignores it. A missing entry (fewer entries than buffers) means 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <vector>

#include "picklewire/buffer.hpp"

namespace picklewire {

struct Message {
  Buffer stream;
  std::vector<Buffer> buffers;
  std::vector<std::uint32_t> item_sizes = {};  ///< see above; `= {}` keeps Message{stream, buffers} warning-free

  std::uint32_t item_size(std::size_t i) const noexcept { return i < item_sizes.size() ? item_sizes[i] : 0; }

  std::size_t out_of_band_bytes() const noexcept {
    std::size_t n = 0;
    for (const Buffer& b : buffers) n += b.size();
    return n;
  }
};

}  // namespace picklewire
