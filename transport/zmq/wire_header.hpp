// transport/zmq/wire_header.hpp — the bytes of the ZeroMQ wire format's header frame (docs/wire-format.md):
// the one place that knows its layout. message_frames.hpp turns whole Messages into frames with it.
//
// One Message is one ZeroMQ multipart message, in one of two versions (the version byte of frame
// 0 says which; a receiver reads both, a sender writes ZmqOptions::wire_version):
//
// Version 1 (three or more frames):
//   frame 0     header, little-endian, 12 + 24 * n bytes:
//                 magic "PWZM" (4 bytes), version u8 (= 1), flags u8, reserved u16 (= 0),
//                 buffer count n u32,
//                 then per buffer: raw size u64, wire size u64, codec u8, buffer flags u8,
//                                  reserved u16 (= 0), item size u32
//   frame 1     the pickle stream (protocol 5), as is
//   frame 2+i   buffer i: its raw bytes (codec 0) or lz4 chunks (codec 1, see lz4_codec.hpp)
//
// Version 2 (small messages in one frame):
//   frame 0     magic "PWZM", version u8 (= 2), flags u8, reserved u16 (= 0), buffer count n u32,
//               stream size u64, then n descriptors as in version 1 (20 + 24 * n bytes), then the
//               inline area: the stream (unless header flag kStreamOwnFrame), then each buffer
//               flagged kInline, each starting at the next multiple of 8 from the frame's start
//               (zero padding). The frame ends right after the last inline item.
//   frames 1..  the stream when kStreamOwnFrame, then every buffer not flagged kInline, in order.
//
// Header flags: bit 0 kAcceptsLz4 — the sender of this message can decode lz4 buffers (a reply
// to it may be compressed); bit 1 kStreamOwnFrame (version 2 only). Buffer flags: bit 0 readonly
// (the buffer is delivered read-only, as READONLY_BUFFER in the stream expects), bit 1 shuffled
// (lz4 chunks were byte-shuffled by item size before compression), bit 2 kInline (version 2 only;
// raw codec only). Any other bit set, an unknown version or codec, a nonzero reserved field or
// padding byte, a frame count other than the header describes, or a frame whose size differs
// from its wire size makes the message invalid: the receiver throws TransportError for it and
// serves the next one.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace picklewire::zmq_transport {

inline constexpr char kMagic[4] = {'P', 'W', 'Z', 'M'};
inline constexpr std::uint8_t kVersion1 = 1;
inline constexpr std::uint8_t kVersion2 = 2;
inline constexpr std::uint8_t kLatestVersion = kVersion2;
inline constexpr std::size_t kFixedHeaderBytes = 12;    // version 1
inline constexpr std::size_t kFixedHeaderBytesV2 = 20;  // version 2: + stream size u64
inline constexpr std::size_t kCountOffset = 8;  // the u32 buffer count within the fixed part
inline constexpr std::size_t kPerBufferHeaderBytes = 24;
inline constexpr std::size_t kInlineAlignment = 8;  // version 2: inline buffers start at multiples of this

// Header flags.
inline constexpr std::uint8_t kAcceptsLz4 = 0x01;
inline constexpr std::uint8_t kStreamOwnFrame = 0x02;  // version 2
// Buffer flags.
inline constexpr std::uint8_t kReadonly = 0x01;
inline constexpr std::uint8_t kShuffled = 0x02;
inline constexpr std::uint8_t kInline = 0x04;  // version 2

enum class Codec : std::uint8_t { raw = 0, lz4 = 1 };

struct BufferDescriptor {
  std::uint64_t raw_size = 0;   // bytes the receiver delivers
  std::uint64_t wire_size = 0;  // bytes of the frame (or of the inline item)
  Codec codec = Codec::raw;
  std::uint8_t flags = 0;       // kReadonly | kShuffled | kInline
  std::uint32_t item_size = 0;  // shuffle granularity when kShuffled (2..64); otherwise a hint, 0 unknown
  std::size_t inline_offset = 0;  // version 2, kInline: where its bytes start in frame 0 (set by decode)
};

struct Header {
  std::uint8_t version = kLatestVersion;
  std::uint8_t flags = 0;
  std::uint64_t stream_size = 0;   // version 2
  std::size_t stream_offset = 0;   // version 2 without kStreamOwnFrame: where the stream starts (set by decode)
  std::vector<BufferDescriptor> buffers;
};

// Bytes of the fixed part and descriptors (for version 1, the whole frame 0).
std::size_t encoded_size(const Header& header) noexcept;
// Version 2: where an inline item that follows `offset` starts.
constexpr std::size_t align_inline(std::size_t offset) noexcept {
  return (offset + kInlineAlignment - 1) / kInlineAlignment * kInlineAlignment;
}
// Writes the fixed part and descriptors into `out` (at least encoded_size(header) bytes).
void encode(const Header& header, std::span<std::byte> out) noexcept;
// Parses and validates frame 0 against everything it alone can tell (magic, version, flags,
// reserved fields, count and inline sizes versus the frame's length, codec, sizes, padding).
// Throws TransportError saying what was wrong. Version 2: fills stream_offset and inline_offset.
Header decode(std::span<const std::byte> frame);
// How many frames (frame 0 included) a message whose frame 0 is `frame` announces, when the
// frame is long enough to hold the descriptors it announces, without validating the rest; nullopt
// for a frame that cannot be a header. A receiver uses it to bound how many frames of a message it
// keeps before decoding.
std::optional<std::size_t> announced_frame_count(std::span<const std::byte> frame) noexcept;
// The frames after frame 0 that a (validated) header describes.
std::size_t frames_after_header(const Header& header) noexcept;

}  // namespace picklewire::zmq_transport
