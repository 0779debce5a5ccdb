// transport/zmq/wire_header.hpp — the bytes of the ZeroMQ wire format's header frame (docs/wire-format.md):
// the one place that knows its layout. message_frames.hpp turns whole Messages into frames with it.
//
// One Message is one ZeroMQ multipart message:
//
//   frame 0     header, little-endian, 12 + 24 * n bytes:
//                 magic "PWZM" (4 bytes), version u8 (= 1), flags u8, reserved u16 (= 0),
//                 buffer count n u32,
//                 then per buffer: raw size u64, wire size u64, codec u8, buffer flags u8,
//                                  reserved u16 (= 0), item size u32
//   frame 1     the pickle stream (protocol 5), as is
//   frame 2+i   buffer i: its raw bytes (codec 0) or lz4 chunks (codec 1, see lz4_codec.hpp)
//
// Header flags: bit 0 kAcceptsLz4 — the sender of this message can decode lz4 buffers (a reply
// to it may be compressed). Buffer flags: bit 0 readonly (the buffer is delivered read-only, as
// READONLY_BUFFER in the stream expects), bit 1 shuffled (lz4 chunks were byte-shuffled by item
// size before compression). Any other bit set, an unknown version or codec, a nonzero reserved
// field, a frame count other than n + 2, or a frame whose size differs from its wire size makes
// the message invalid: the receiver throws TransportError for it and serves the next one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace picklewire::zmq_transport {

inline constexpr char kMagic[4] = {'P', 'W', 'Z', 'M'};
inline constexpr std::uint8_t kVersion = 1;
inline constexpr std::size_t kFixedHeaderBytes = 12;
inline constexpr std::size_t kCountOffset = 8;  // the u32 buffer count within the fixed part
inline constexpr std::size_t kPerBufferHeaderBytes = 24;

// Header flags.
inline constexpr std::uint8_t kAcceptsLz4 = 0x01;
inline constexpr std::uint8_t kKnownHeaderFlags = kAcceptsLz4;
// Buffer flags.
inline constexpr std::uint8_t kReadonly = 0x01;
inline constexpr std::uint8_t kShuffled = 0x02;
inline constexpr std::uint8_t kKnownBufferFlags = kReadonly | kShuffled;

enum class Codec : std::uint8_t { raw = 0, lz4 = 1 };

struct BufferDescriptor {
  std::uint64_t raw_size = 0;   // bytes the receiver delivers
  std::uint64_t wire_size = 0;  // bytes of the frame
  Codec codec = Codec::raw;
  std::uint8_t flags = 0;       // kReadonly | kShuffled
  std::uint32_t item_size = 0;  // shuffle granularity when kShuffled (2..64); otherwise a hint, 0 unknown
};

struct Header {
  std::uint8_t flags = 0;
  std::vector<BufferDescriptor> buffers;
};

std::size_t encoded_size(const Header& header) noexcept;
// Writes the header into `out` (exactly encoded_size(header) bytes).
void encode(const Header& header, std::span<std::byte> out) noexcept;
// Parses and validates frame 0 against everything the header alone can tell (magic, version,
// flags, reserved fields, count versus the frame's length, codec, sizes). Throws TransportError
// saying what was wrong.
Header decode(std::span<const std::byte> frame);
// The buffer count a header frame announces when the frame's length agrees with it (fixed part +
// one descriptor per buffer), without validating the rest; nullopt for a frame that cannot be a
// header. A receiver uses it to bound how many frames of a message it keeps before decoding.
std::optional<std::uint32_t> announced_buffer_count(std::span<const std::byte> frame) noexcept;

}  // namespace picklewire::zmq_transport
