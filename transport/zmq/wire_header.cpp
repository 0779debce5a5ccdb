#include "zmq/wire_header.hpp"

#include <cstring>

#include "picklewire/errors.hpp"

namespace picklewire::zmq_transport {
namespace {

// The wire is little-endian; load/store byte by byte so the code is correct on any host and the
// compiler folds it into plain moves on little-endian ones.
template <typename T>
void put(std::byte*& p, T v) noexcept {
  for (std::size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<std::byte>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff);
  p += sizeof(T);
}

template <typename T>
T get(const std::byte*& p) noexcept {
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < sizeof(T); ++i) v |= static_cast<std::uint64_t>(p[i]) << (8 * i);
  p += sizeof(T);
  return static_cast<T>(v);
}

[[noreturn]] void invalid(const std::string& what) {
  throw TransportError("zmq transport: invalid message from peer: " + what);
}

}  // namespace

std::size_t encoded_size(const Header& header) noexcept {
  return kFixedHeaderBytes + kPerBufferHeaderBytes * header.buffers.size();
}

void encode(const Header& header, std::span<std::byte> out) noexcept {
  std::byte* p = out.data();
  std::memcpy(p, kMagic, sizeof kMagic);
  p += sizeof kMagic;
  put<std::uint8_t>(p, kVersion);
  put<std::uint8_t>(p, header.flags);
  put<std::uint16_t>(p, 0);
  put<std::uint32_t>(p, static_cast<std::uint32_t>(header.buffers.size()));
  for (const BufferDescriptor& b : header.buffers) {
    put<std::uint64_t>(p, b.raw_size);
    put<std::uint64_t>(p, b.wire_size);
    put<std::uint8_t>(p, static_cast<std::uint8_t>(b.codec));
    put<std::uint8_t>(p, b.flags);
    put<std::uint16_t>(p, 0);
    put<std::uint32_t>(p, b.item_size);
  }
}

std::optional<std::uint32_t> announced_buffer_count(std::span<const std::byte> frame) noexcept {
  if (frame.size() < kFixedHeaderBytes) return std::nullopt;
  const std::byte* p = frame.data() + kCountOffset;
  const auto count = get<std::uint32_t>(p);
  if (frame.size() != kFixedHeaderBytes + kPerBufferHeaderBytes * std::uint64_t(count)) return std::nullopt;
  return count;
}

Header decode(std::span<const std::byte> frame) {
  if (frame.size() < kFixedHeaderBytes)
    invalid("header frame of " + std::to_string(frame.size()) + " bytes is shorter than the fixed " +
            std::to_string(kFixedHeaderBytes) + " (not a picklewire peer?)");
  const std::byte* p = frame.data();
  if (std::memcmp(p, kMagic, sizeof kMagic) != 0) invalid("bad magic (expected \"PWZM\"; not a picklewire peer?)");
  p += sizeof kMagic;
  auto version = get<std::uint8_t>(p);
  if (version != kVersion)
    invalid("wire format version " + std::to_string(version) + " is not supported (this build speaks version " +
            std::to_string(kVersion) + ")");
  Header h;
  h.flags = get<std::uint8_t>(p);
  if (h.flags & ~kKnownHeaderFlags) invalid("unknown header flags 0x" + std::to_string(h.flags));
  if (get<std::uint16_t>(p) != 0) invalid("nonzero reserved header field");
  auto count = get<std::uint32_t>(p);
  // The count must match the frame's length exactly: never allocate for buffers that are not described.
  if (announced_buffer_count(frame) != count)
    invalid("header announces " + std::to_string(count) + " buffers but its frame holds " +
            std::to_string(frame.size()) + " bytes");
  h.buffers.resize(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    BufferDescriptor& b = h.buffers[i];
    b.raw_size = get<std::uint64_t>(p);
    b.wire_size = get<std::uint64_t>(p);
    auto codec = get<std::uint8_t>(p);
    b.flags = get<std::uint8_t>(p);
    auto reserved = get<std::uint16_t>(p);
    b.item_size = get<std::uint32_t>(p);
    std::string which = "buffer " + std::to_string(i) + ": ";
    if (codec > static_cast<std::uint8_t>(Codec::lz4)) invalid(which + "unknown codec " + std::to_string(codec));
    b.codec = static_cast<Codec>(codec);
    if (b.flags & ~kKnownBufferFlags) invalid(which + "unknown buffer flags " + std::to_string(b.flags));
    if (reserved != 0) invalid(which + "nonzero reserved field");
    if (b.codec == Codec::raw && b.raw_size != b.wire_size)
      invalid(which + "raw buffer with raw size " + std::to_string(b.raw_size) + " != wire size " +
              std::to_string(b.wire_size));
    if (b.codec == Codec::raw && (b.flags & kShuffled)) invalid(which + "shuffled flag on an uncompressed buffer");
    if ((b.flags & kShuffled) && (b.item_size < 2 || b.item_size > 64))
      invalid(which + "shuffle item size " + std::to_string(b.item_size) + " outside 2..64");
  }
  return h;
}

}  // namespace picklewire::zmq_transport
