// transport/shm/lane_cell.hpp — the codec of an inline lane cell (layout.hpp): a whole small
// message in kLaneCellSize bytes, written by the lane's sender and read by the receiver without
// the lock. Pure functions over bytes: the reader trusts nothing in the cell (another process
// wrote it, and may still be writing it), so a fuzz target can call it on any bytes. Inline: they
// are most of the work of a small send and receive, and a call apiece measurably slowed the
// one-thread send+receive of a 64-byte message (ShmSendRecv64).
#pragma once

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "picklewire/errors.hpp"
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
inline void write_inline_cell(std::byte* cell, const Message& message) noexcept {
  const LaneCell header{LaneCellKind::inline_message, 0, static_cast<std::uint32_t>(message.stream.size()),
                        static_cast<std::uint32_t>(message.buffers.size())};
  std::memcpy(cell, &header, sizeof header);
  std::byte* p = cell + sizeof header;
  for (const Buffer& b : message.buffers) {
    const LaneBuffer entry{static_cast<std::uint32_t>(b.size()), b.readonly() ? 0u : kBufferWritable};
    std::memcpy(p, &entry, sizeof entry);
    p += sizeof entry;
  }
  if (message.stream.size()) std::memcpy(p, message.stream.data(), message.stream.size());
  p += message.stream.size();
  for (const Buffer& b : message.buffers) {
    if (b.size()) std::memcpy(p, b.data(), b.size());
    p += b.size();
  }
}

// The message in `cell` (kLaneCellSize bytes, possibly still being scribbled on), copied into one
// private 16-byte-aligned block that its stream and buffers share. The header and buffer table
// are copied out and checked once; the payload is then copied within those checked sizes, so a
// writer racing with us garbles only this message and never makes us read outside the cell.
// Throws TransportError (EPROTO) naming `lane` and `position` when the sizes do not fit the cell.
inline std::uint64_t align16(std::uint64_t n) { return (n + 15) / 16 * 16; }

inline Message read_inline_cell(const std::byte* cell, std::uint32_t lane, std::uint64_t position) {
  constexpr std::uint32_t kMaxBuffers = (kLaneCellSize - sizeof(LaneCell)) / sizeof(LaneBuffer);
  LaneCell header;
  std::memcpy(&header, cell, sizeof header);
  LaneBuffer table[kMaxBuffers];
  const std::uint32_t count = std::min(header.buffer_count, kMaxBuffers);
  std::memcpy(table, cell + sizeof header, count * sizeof(LaneBuffer));
  std::uint64_t end = inline_cell_bytes(header.buffer_count, header.stream_size, 0);
  std::uint64_t block_size = header.stream_size;  // each buffer 16-aligned in the block
  for (std::uint32_t i = 0; i < count; ++i) {
    end += table[i].size;
    block_size = align16(block_size) + table[i].size;
  }
  if (end > kLaneCellSize)
    throw TransportError("shm: lane " + std::to_string(lane) + " cell " + std::to_string(position) + " describes " +
                             std::to_string(header.buffer_count) + " buffers and a stream of " +
                             std::to_string(header.stream_size) + " bytes, more than its " +
                             std::to_string(kLaneCellSize) + " bytes",
                         EPROTO);
  struct alignas(16) Chunk {  // so that the block, hence every buffer in it, is 16-byte aligned
    std::byte bytes[16];
  };
  const auto chunks = std::make_shared_for_overwrite<Chunk[]>(block_size / 16 + 1);
  const std::shared_ptr<std::byte> block(chunks, chunks[0].bytes);
  Message out;
  const std::byte* from = cell + sizeof header + count * sizeof(LaneBuffer);
  std::memcpy(block.get(), from, header.stream_size);
  out.stream = Buffer::take(block, block.get(), header.stream_size, true);
  from += header.stream_size;
  std::uint64_t at = header.stream_size;
  out.buffers.reserve(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    const LaneBuffer& b = table[i];
    at = align16(at);
    std::memcpy(block.get() + at, from, b.size);
    out.buffers.push_back(Buffer::take(block, block.get() + at, b.size, (b.flags & kBufferWritable) == 0));
    from += b.size;
    at += b.size;
  }
  return out;
}


}  // namespace picklewire::shm
