/// \file picklewire/ledger.hpp — the copy ledger: every byte a transport (or the pickler) copies, and why.
///
/// Each endpoint keeps one CopyLedger. A copy of payload bytes that is not recorded here is a bug:
/// tests assert on these counters (e.g. "0 bytes copied for a loaned buffer").
/// Reason codes are stable names (docs/ledger.md): they appear in `picklewire bench --json` and in
/// the Python module's stats() dict.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>

namespace picklewire {

enum class CopyReason : std::uint8_t {
  copied_into_segment,     ///< shm send: the buffer's memory lived outside the segment, copied in once
  inband_below_threshold,  ///< a buffer smaller than the in-band threshold was written into the stream
  non_contiguous,          ///< an ndarray view was made C-contiguous before it could be sent
  compressed,              ///< lz4 (with optional byte shuffle) pass over a buffer on send
  decompressed,            ///< lz4 pass on receive, straight into the buffer the receiver keeps
  copied_borrowed_memory,  ///< zmq send: a borrowed buffer (Buffer::wrap, no owner) copied into ZeroMQ's memory
  travelled_inline,        ///< shm recv: a small message (<= 256 B in all) travelled inline in its sender's
                           /// lane cell and was copied out of it
  kCount
};

constexpr std::string_view to_string(CopyReason r) noexcept {
  switch (r) {
    case CopyReason::copied_into_segment: return "copied_into_segment";
    case CopyReason::inband_below_threshold: return "inband_below_threshold";
    case CopyReason::non_contiguous: return "non_contiguous";
    case CopyReason::compressed: return "compressed";
    case CopyReason::decompressed: return "decompressed";
    case CopyReason::copied_borrowed_memory: return "copied_borrowed_memory";
    case CopyReason::travelled_inline: return "travelled_inline";
    case CopyReason::kCount: break;
  }
  return "unknown";
}

struct CopyLedger {
  static constexpr std::size_t kReasons = static_cast<std::size_t>(CopyReason::kCount);

  std::uint64_t messages = 0;           ///< Messages sent (sender) or received (receiver)
  std::uint64_t inband_bytes = 0;       ///< bytes of pickle stream
  std::uint64_t oob_buffers = 0;        ///< out-of-band buffers
  std::uint64_t oob_bytes = 0;          ///< their bytes
  std::uint64_t zero_copy_buffers = 0;  ///< out-of-band buffers that moved without a user-space copy
  std::uint64_t zero_copy_bytes = 0;
  /// zmq endpoints: Messages that moved through a same-host shared-memory channel instead of frames
  /// (docs/zmq.md "Same host"), and their out-of-band bytes (also counted above, by how they moved).
  std::uint64_t same_host_messages = 0;
  std::uint64_t same_host_bytes = 0;
  std::array<std::uint64_t, kReasons> copies{};        ///< copy passes per reason
  std::array<std::uint64_t, kReasons> copied_bytes{};  ///< bytes per reason (input bytes of the pass)

  void record_copy(CopyReason reason, std::uint64_t bytes) noexcept {
    copies[static_cast<std::size_t>(reason)] += 1;
    copied_bytes[static_cast<std::size_t>(reason)] += bytes;
  }
  void record_zero_copy(std::uint64_t bytes) noexcept {
    zero_copy_buffers += 1;
    zero_copy_bytes += bytes;
  }
  /// Adds (or removes) another ledger's counts: what a span of work added is `after -= before`.
  CopyLedger& operator+=(const CopyLedger& o) noexcept { return combine(o, +1); }
  CopyLedger& operator-=(const CopyLedger& o) noexcept { return combine(o, -1); }

  std::uint64_t copied(CopyReason reason) const noexcept { return copied_bytes[static_cast<std::size_t>(reason)]; }
  CopyLedger& combine(const CopyLedger& o, int sign) noexcept {  // unsigned wrap-around is exact for -1
    auto add = [sign](std::uint64_t& into, std::uint64_t v) { into += sign > 0 ? v : std::uint64_t(0) - v; };
    add(messages, o.messages);
    add(inband_bytes, o.inband_bytes);
    add(oob_buffers, o.oob_buffers);
    add(oob_bytes, o.oob_bytes);
    add(zero_copy_buffers, o.zero_copy_buffers);
    add(zero_copy_bytes, o.zero_copy_bytes);
    add(same_host_messages, o.same_host_messages);
    add(same_host_bytes, o.same_host_bytes);
    for (std::size_t i = 0; i < kReasons; ++i) {
      add(copies[i], o.copies[i]);
      add(copied_bytes[i], o.copied_bytes[i]);
    }
    return *this;
  }
  std::uint64_t total_copied_bytes() const noexcept {
    std::uint64_t n = 0;
    for (auto b : copied_bytes) n += b;
    return n;
  }
};

}  // namespace picklewire
