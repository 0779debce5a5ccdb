#include "shm/lane_cell.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <string>

#include "picklewire/errors.hpp"

namespace picklewire::shm {
namespace {

std::uint64_t align16(std::uint64_t n) { return (n + 15) / 16 * 16; }

}  // namespace

void write_inline_cell(std::byte* cell, const Message& message) noexcept {
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

Message read_inline_cell(const std::byte* cell, std::uint32_t lane, std::uint64_t position) {
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
