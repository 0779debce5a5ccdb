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

#include <array>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <variant>
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
// Version 2: frame 0 is a control message between picklewire endpoints (the same-host
// negotiation below), not a Message: no buffers, the inline "stream" is the control record, and
// it is the only frame. Receivers that know it act on it and deliver nothing; older ones refuse
// it as an unknown flag (so a sender only sends one where it is understood or harmless).
inline constexpr std::uint8_t kControl = 0x04;
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
// The same into `out`, whose descriptor storage is reused (a receiver decodes every message into
// one Header and allocates nothing once it has seen its largest buffer count). On a throw `out`
// holds a partial decode.
void decode(std::span<const std::byte> frame, Header& out);
// How many frames (frame 0 included) a message whose frame 0 is `frame` announces, when the
// frame is long enough to hold the descriptors it announces, without validating the rest; nullopt
// for a frame that cannot be a header. A receiver uses it to bound how many frames of a message it
// keeps before decoding.
std::optional<std::size_t> announced_frame_count(std::span<const std::byte> frame) noexcept;
// The frames after frame 0 that a (validated) header describes.
std::size_t frames_after_header(const Header& header) noexcept;

// Control records (docs/wire-format.md "Same host"). Little-endian; byte 0 is the kind, bytes
// 1..3 reserved (0).
//   Hello (kind 1, 48 bytes): u32 uid, u32 pid, u32 generation (the sender's connection number),
//     u64 sender id (random, also names its answer box), u64 IPC namespace (inode of
//     /proc/self/ns/ipc), 16-byte boot id. A connecting Sender sends it once per connection.
//   Doorbell (kind 2, 24 bytes): u32 reserved, u64 sender id, u64 sequence: "the message tagged
//     (sender id, sequence) is in your same-host channel; deliver it now".
struct Hello {
  std::uint32_t uid = 0;
  std::uint32_t pid = 0;
  std::uint32_t generation = 0;
  std::uint64_t sender_id = 0;
  std::uint64_t ipc_namespace = 0;
  std::array<std::byte, 16> boot_id{};
};
struct Doorbell {
  std::uint64_t sender_id = 0;
  std::uint64_t sequence = 0;
};
using Control = std::variant<Hello, Doorbell>;

// Whether frame 0 is a version-2 control message (magic, version and kControl only; decode_control validates).
bool is_control(std::span<const std::byte> frame) noexcept;
// The whole frame 0 of a control message.
std::vector<std::byte> encode_control(const Control& control);
// Validates a control message's frame 0 (header as decode() checks it, no buffers, a record of a
// known kind and its exact size, reserved bytes zero). Throws TransportError saying what was wrong.
Control decode_control(std::span<const std::byte> frame);

}  // namespace picklewire::zmq_transport
