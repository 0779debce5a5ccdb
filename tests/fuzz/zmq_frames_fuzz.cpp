// libFuzzer target: one ZeroMQ multipart message from a peer, decoded the way a Receiver decodes
// it (transport/zmq/message_frames.hpp over wire_header.hpp and lz4_codec.hpp): header frame (v1
// or v2), stream, inline and separate buffers, lz4 chunks with and without shuffling; a control
// message (the same-host hello and doorbell) is decoded as the receive loop does, ahead of that.
// Input: u8 frame count (1..8), then per frame a u16 little-endian length, then the bytes (the last
// frame takes what is left). The only acceptable outcomes are a Message whose every view lies in
// memory it owns (each byte is read, for AddressSanitizer) or picklewire::TransportError.
#include <zmq.hpp>

#include <cstddef>
#include <algorithm>
#include <cstdint>
#include <vector>

#include "picklewire/errors.hpp"
#include "zmq/message_frames.hpp"
#include "zmq/wire_header.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace picklewire;
  if (size < 1) return 0;
  const std::size_t count = 1 + data[0] % 8;
  ++data;
  --size;
  std::vector<zmq::message_t> frames;
  for (std::size_t i = 0; i < count; ++i) {
    std::size_t length = size;
    if (i + 1 < count) {
      if (size < 2) break;
      length = std::min<std::size_t>(size - 2, data[0] | std::size_t(data[1]) << 8);
      data += 2;
      size -= 2;
    }
    frames.emplace_back(data, length);  // a copy, owned by the frame, as ZeroMQ delivers it
    data += length;
    size -= length;
  }
  if (frames.empty()) return 0;  // ZeroMQ delivers at least one frame per message
  // The header frame alone, as the receive loop bounds what it keeps.
  (void)zmq_transport::announced_frame_count(
      std::span<const std::byte>(static_cast<const std::byte*>(frames[0].data()), frames[0].size()));
  const std::span<const std::byte> head(static_cast<const std::byte*>(frames[0].data()), frames[0].size());
  if (zmq_transport::is_control(head)) {
    try {
      const zmq_transport::Control control = zmq_transport::decode_control(head);
      // A valid record re-encodes to the very frame it came from (one owner of its layout).
      const std::vector<std::byte> again = zmq_transport::encode_control(control);
      if (again.size() != head.size() || !std::equal(again.begin(), again.end(), head.begin())) __builtin_trap();
    } catch (const TransportError&) {
    }
  }
  ZmqOptions options;
  options.max_message_bytes = 64 << 20;  // a peer may announce less than this; more is refused
  zmq_transport::FrameReader reader(options);
  CopyLedger ledger;
  try {
    Message m = reader.read(frames, ledger);
    volatile std::byte sink{};
    for (std::byte b : m.stream.bytes()) sink = b;
    for (const Buffer& buffer : m.buffers)
      for (std::byte b : buffer.bytes()) sink = b;
    (void)sink;
  } catch (const TransportError&) {
  }
  return 0;
}
