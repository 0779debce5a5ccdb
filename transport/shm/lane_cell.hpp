// transport/shm/lane_cell.hpp — the codec of an inline lane cell (layout.hpp): a whole small
// message in kLaneCellSize bytes, written by the lane's sender and read by the receiver without
// the lock. Pure functions over bytes: the reader trusts nothing in the cell (another process
// wrote it, and may still be writing it), so a fuzz target can call it on any bytes.
#pragma once

#include <cstddef>
#include <cstdint>

#include "picklewire/message.hpp"
#include "shm/layout.hpp"

namespace picklewire::shm {

// Bytes a message of `buffer_count` buffers, `stream_bytes` and `buffer_bytes` in all takes in a
// cell; it travels inline when this is at most kLaneCellSize (and it has no loaned buffer).
constexpr std::uint64_t inline_cell_bytes(std::uint64_t buffer_count, std::uint64_t stream_bytes,
                                          std::uint64_t buffer_bytes) noexcept {
  return sizeof(LaneCell) + buffer_count * sizeof(LaneBuffer) + stream_bytes + buffer_bytes;
}

// Writes `message` into `cell` (kLaneCellSize bytes). The caller checked that it fits.
void write_inline_cell(std::byte* cell, const Message& message) noexcept;

// The message in `cell` (kLaneCellSize bytes, possibly still being scribbled on), copied into one
// private 16-byte-aligned block that its stream and buffers share. The header and buffer table
// are copied out and checked once; the payload is then copied within those checked sizes, so a
// writer racing with us garbles only this message and never makes us read outside the cell.
// Throws TransportError (EPROTO) naming `lane` and `position` when the sizes do not fit the cell.
Message read_inline_cell(const std::byte* cell, std::uint32_t lane, std::uint64_t position);

}  // namespace picklewire::shm
