#include "zmq/wire_header.hpp"

#include <bit>
#include <cstring>

#include "picklewire/errors.hpp"

namespace picklewire::zmq_transport {
namespace {

// The wire is little-endian. On little-endian hosts a field is one unaligned move (memcpy);
// elsewhere byte by byte. (GCC did not fold the byte loop into a move: it was a third of the
// header's decode, which every received message pays.)
template <typename T>
void put(std::byte*& p, T v) noexcept {
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(p, &v, sizeof(T));
  } else {
    for (std::size_t i = 0; i < sizeof(T); ++i) p[i] = static_cast<std::byte>((static_cast<std::uint64_t>(v) >> (8 * i)) & 0xff);
  }
  p += sizeof(T);
}

template <typename T>
T get(const std::byte*& p) noexcept {
  T v;
  if constexpr (std::endian::native == std::endian::little) {
    std::memcpy(&v, p, sizeof(T));
  } else {
    std::uint64_t u = 0;
    for (std::size_t i = 0; i < sizeof(T); ++i) u |= static_cast<std::uint64_t>(p[i]) << (8 * i);
    v = static_cast<T>(u);
  }
  p += sizeof(T);
  return v;
}

[[noreturn]] void invalid(const std::string& what) {
  throw TransportError("zmq transport: invalid message from peer: " + what);
}

std::size_t fixed_bytes(std::uint8_t version) noexcept {
  return version == kVersion1 ? kFixedHeaderBytes : kFixedHeaderBytesV2;
}

}  // namespace

std::size_t encoded_size(const Header& header) noexcept {
  return fixed_bytes(header.version) + kPerBufferHeaderBytes * header.buffers.size();
}

void encode(const Header& header, std::span<std::byte> out) noexcept {
  std::byte* p = out.data();
  std::memcpy(p, kMagic, sizeof kMagic);
  p += sizeof kMagic;
  put<std::uint8_t>(p, header.version);
  put<std::uint8_t>(p, header.flags);
  put<std::uint16_t>(p, 0);
  put<std::uint32_t>(p, static_cast<std::uint32_t>(header.buffers.size()));
  if (header.version != kVersion1) put<std::uint64_t>(p, header.stream_size);
  for (const BufferDescriptor& b : header.buffers) {
    put<std::uint64_t>(p, b.raw_size);
    put<std::uint64_t>(p, b.wire_size);
    put<std::uint8_t>(p, static_cast<std::uint8_t>(b.codec));
    put<std::uint8_t>(p, b.flags);
    put<std::uint16_t>(p, 0);
    put<std::uint32_t>(p, b.item_size);
  }
}

std::optional<std::size_t> announced_frame_count(std::span<const std::byte> frame) noexcept {
  if (frame.size() < kFixedHeaderBytes) return std::nullopt;
  const std::uint8_t version = static_cast<std::uint8_t>(frame[4]);
  const std::byte* p = frame.data() + kCountOffset;
  const std::uint64_t count = get<std::uint32_t>(p);
  if (version != kVersion2) {
    // Version 1 (and anything unknown, which decode() refuses): the frame is exactly the descriptors.
    if (frame.size() != kFixedHeaderBytes + kPerBufferHeaderBytes * count) return std::nullopt;
    return static_cast<std::size_t>(count + 2);
  }
  if (frame.size() < kFixedHeaderBytesV2 + kPerBufferHeaderBytes * count) return std::nullopt;
  std::size_t frames = 1 + ((static_cast<std::uint8_t>(frame[5]) & kStreamOwnFrame) ? 1 : 0);
  for (std::uint64_t i = 0; i < count; ++i) {
    const auto flags = static_cast<std::uint8_t>(frame[kFixedHeaderBytesV2 + kPerBufferHeaderBytes * i + 17]);
    if (!(flags & kInline)) ++frames;
  }
  return frames;
}

std::size_t frames_after_header(const Header& header) noexcept {
  if (header.version == kVersion1) return header.buffers.size() + 1;
  std::size_t n = (header.flags & kStreamOwnFrame) ? 1 : 0;
  for (const BufferDescriptor& b : header.buffers)
    if (!(b.flags & kInline)) ++n;
  return n;
}

Header decode(std::span<const std::byte> frame) {
  Header h;
  decode(frame, h);
  return h;
}

void decode(std::span<const std::byte> frame, Header& h) {
  if (frame.size() < kFixedHeaderBytes)
    invalid("header frame of " + std::to_string(frame.size()) + " bytes is shorter than the fixed " +
            std::to_string(kFixedHeaderBytes) + " (not a picklewire peer?)");
  const std::byte* p = frame.data();
  if (std::memcmp(p, kMagic, sizeof kMagic) != 0) invalid("bad magic (expected \"PWZM\"; not a picklewire peer?)");
  p += sizeof kMagic;
  h.stream_size = 0;
  h.stream_offset = 0;
  h.version = get<std::uint8_t>(p);
  if (h.version != kVersion1 && h.version != kVersion2)
    invalid("wire format version " + std::to_string(h.version) + " is not supported (this build reads versions 1 and 2)");
  const bool v2 = h.version == kVersion2;
  h.flags = get<std::uint8_t>(p);
  const std::uint8_t known_header_flags = v2 ? (kAcceptsLz4 | kStreamOwnFrame | kControl) : kAcceptsLz4;
  if (h.flags & ~known_header_flags) invalid("unknown header flags 0x" + std::to_string(h.flags));
  if ((h.flags & kControl) && h.flags != kControl) invalid("a control message with other header flags");
  if (get<std::uint16_t>(p) != 0) invalid("nonzero reserved header field");
  auto count = get<std::uint32_t>(p);
  // The count must agree with the frame's length: never allocate for buffers that are not described.
  const std::uint64_t descriptors_end = fixed_bytes(h.version) + kPerBufferHeaderBytes * std::uint64_t(count);
  if (v2 ? frame.size() < descriptors_end : frame.size() != descriptors_end)
    invalid("header announces " + std::to_string(count) + " buffers but its frame holds " +
            std::to_string(frame.size()) + " bytes");
  if (v2) h.stream_size = get<std::uint64_t>(p);
  const std::uint8_t known_buffer_flags = v2 ? (kReadonly | kShuffled | kInline) : (kReadonly | kShuffled);
  // A reused Header: each descriptor is reset before it is filled (the last message's inline
  // offsets must not survive); resize + reset costs less than assign's general path.
  h.buffers.resize(count);
  for (std::uint32_t i = 0; i < count; ++i) {
    BufferDescriptor& b = h.buffers[i];
    b = BufferDescriptor{};
    b.raw_size = get<std::uint64_t>(p);
    b.wire_size = get<std::uint64_t>(p);
    auto codec = get<std::uint8_t>(p);
    b.flags = get<std::uint8_t>(p);
    auto reserved = get<std::uint16_t>(p);
    b.item_size = get<std::uint32_t>(p);
    // The prefix of this buffer's errors, built only when there is one to throw.
    auto which = [i] { return "buffer " + std::to_string(i) + ": "; };
    if (codec > static_cast<std::uint8_t>(Codec::lz4)) invalid(which() + "unknown codec " + std::to_string(codec));
    b.codec = static_cast<Codec>(codec);
    if (b.flags & ~known_buffer_flags) invalid(which() + "unknown buffer flags " + std::to_string(b.flags));
    if (reserved != 0) invalid(which() + "nonzero reserved field");
    if (b.codec == Codec::raw && b.raw_size != b.wire_size)
      invalid(which() + "raw buffer with raw size " + std::to_string(b.raw_size) + " != wire size " +
              std::to_string(b.wire_size));
    if (b.codec == Codec::raw && (b.flags & kShuffled)) invalid(which() + "shuffled flag on an uncompressed buffer");
    if ((b.flags & kShuffled) && (b.item_size < 2 || b.item_size > 64))
      invalid(which() + "shuffle item size " + std::to_string(b.item_size) + " outside 2..64");
    if ((b.flags & kInline) && b.codec != Codec::raw) invalid(which() + "inline buffer is not raw");
  }
  if (!v2) return;
  // Version 2: the inline items must fill the rest of the frame exactly, padding zeroed. Each size
  // is checked against what is left before it is added, so nothing overflows.
  std::size_t pos = static_cast<std::size_t>(descriptors_end);
  // `buffer`: the item's buffer index, or -1 for the stream (named only when throwing).
  auto take = [&](std::uint64_t size, std::int64_t buffer) {
    if (size > frame.size() - pos)
      invalid((buffer < 0 ? std::string("the stream") : "buffer " + std::to_string(buffer)) + " of " + std::to_string(size) + " inline bytes overruns the header frame of " +
              std::to_string(frame.size()) + " bytes");
    pos += static_cast<std::size_t>(size);
  };
  h.stream_offset = pos;
  if (!(h.flags & kStreamOwnFrame)) take(h.stream_size, -1);
  for (std::uint32_t i = 0; i < count; ++i) {
    if (!(h.buffers[i].flags & kInline)) continue;
    const std::size_t aligned = align_inline(pos);
    if (aligned > frame.size()) invalid("buffer " + std::to_string(i) + ": inline padding overruns the header frame");
    for (std::size_t k = pos; k < aligned; ++k)
      if (frame[k] != std::byte{0}) invalid("nonzero padding byte at " + std::to_string(k) + " of the header frame");
    pos = aligned;
    h.buffers[i].inline_offset = pos;
    take(h.buffers[i].wire_size, i);
  }
  if (pos != frame.size())
    invalid("header frame holds " + std::to_string(frame.size() - pos) + " bytes beyond its inline items");
  if ((h.flags & kControl) && count != 0) invalid("a control message with " + std::to_string(count) + " buffers");
}

namespace {
constexpr std::uint8_t kHelloKind = 1;
constexpr std::uint8_t kDoorbellKind = 2;
constexpr std::size_t kHelloBytes = 48;
constexpr std::size_t kDoorbellBytes = 24;
}  // namespace

bool is_control(std::span<const std::byte> frame) noexcept {
  return frame.size() >= kFixedHeaderBytesV2 && std::memcmp(frame.data(), kMagic, sizeof kMagic) == 0 &&
         static_cast<std::uint8_t>(frame[4]) == kVersion2 && (static_cast<std::uint8_t>(frame[5]) & kControl);
}

std::vector<std::byte> encode_control(const Control& control) {
  const bool hello = std::holds_alternative<Hello>(control);
  const std::size_t record = hello ? kHelloBytes : kDoorbellBytes;
  Header header;
  header.version = kVersion2;
  header.flags = kControl;
  header.stream_size = record;
  std::vector<std::byte> frame(kFixedHeaderBytesV2 + record);
  encode(header, frame);
  std::byte* p = frame.data() + kFixedHeaderBytesV2;
  put<std::uint8_t>(p, hello ? kHelloKind : kDoorbellKind);
  put<std::uint8_t>(p, 0);
  put<std::uint16_t>(p, 0);
  if (hello) {
    const Hello& h = std::get<Hello>(control);
    put<std::uint32_t>(p, h.uid);
    put<std::uint32_t>(p, h.pid);
    put<std::uint32_t>(p, h.generation);
    put<std::uint64_t>(p, h.sender_id);
    put<std::uint64_t>(p, h.ipc_namespace);
    std::memcpy(p, h.boot_id.data(), h.boot_id.size());
  } else {
    const Doorbell& d = std::get<Doorbell>(control);
    put<std::uint32_t>(p, 0);
    put<std::uint64_t>(p, d.sender_id);
    put<std::uint64_t>(p, d.sequence);
  }
  return frame;
}

Control decode_control(std::span<const std::byte> frame) {
  const Header h = decode(frame);
  if (!(h.flags & kControl)) invalid("expected a control message");
  const std::span<const std::byte> record = frame.subspan(h.stream_offset, h.stream_size);
  if (record.empty()) invalid("an empty control record");
  const std::byte* p = record.data();
  const auto kind = get<std::uint8_t>(p);
  const bool reserved_ok = get<std::uint8_t>(p) == 0 && get<std::uint16_t>(p) == 0;
  const std::size_t expected = kind == kHelloKind ? kHelloBytes : kind == kDoorbellKind ? kDoorbellBytes : 0;
  if (expected == 0) invalid("unknown control record kind " + std::to_string(kind));
  if (record.size() != expected)
    invalid("control record of kind " + std::to_string(kind) + " has " + std::to_string(record.size()) +
            " bytes, not " + std::to_string(expected));
  if (!reserved_ok) invalid("nonzero reserved bytes in a control record");
  if (kind == kHelloKind) {
    Hello hello;
    hello.uid = get<std::uint32_t>(p);
    hello.pid = get<std::uint32_t>(p);
    hello.generation = get<std::uint32_t>(p);
    hello.sender_id = get<std::uint64_t>(p);
    hello.ipc_namespace = get<std::uint64_t>(p);
    std::memcpy(hello.boot_id.data(), p, hello.boot_id.size());
    return hello;
  }
  if (get<std::uint32_t>(p) != 0) invalid("nonzero reserved bytes in a doorbell");
  Doorbell doorbell;
  doorbell.sender_id = get<std::uint64_t>(p);
  doorbell.sequence = get<std::uint64_t>(p);
  return doorbell;
}

}  // namespace picklewire::zmq_transport
