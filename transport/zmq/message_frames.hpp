// transport/zmq/message_frames.hpp — a Message to and from the frames of one ZeroMQ multipart
// message (header frame: wire_header.hpp), and sending/receiving those frames on a socket; shared
// by the PUSH/PULL endpoints and the DEALER/ROUTER request/reply pair.
#pragma once

#include <zmq.hpp>

#include <cstdint>
#include <span>
#include <vector>

#include "picklewire/endpoint_options.hpp"
#include "picklewire/ledger.hpp"
#include "picklewire/message.hpp"
#include "zmq/frame_pool.hpp"
#include "zmq/lz4_codec.hpp"
#include "zmq/wire_header.hpp"

namespace picklewire::zmq_transport {

struct FrameWriter {
  bool compress = false;
  CompressionPolicy policy;
  bool accepts_lz4 = true;  // announced in the header
  std::uint8_t version = 2;              // ZmqOptions::wire_version
  std::size_t inline_max_bytes = 4096;   // version 2: ZmqOptions::inline_max_bytes

  explicit FrameWriter(const ZmqOptions& o);
  // Throws TransportError (EINVAL) for a wire_version other than 1 or 2.
  // Appends header, stream and buffer frames to `frames` (version 2: small stream and buffers
  // copied into the header frame, ledger travelled_inline). Other buffers with an owner travel zero-copy
  // (the frame's free function drops a reference to the owner); borrowed buffers (Buffer::wrap,
  // no owner) are copied into ZeroMQ's memory (ledger: copied_borrowed_memory), because ZeroMQ
  // may still read a frame after send() returns. Returns the wire bytes.
  std::uint64_t write(const Message& message, std::vector<zmq::message_t>& frames, CopyLedger& ledger) {
    return write(message, frames, ledger, compress, version);
  }
  // The same with this message's own settings (an rpc reply: the requesting client's lz4 and
  // wire version), leaving the writer's as they are.
  std::uint64_t write(const Message& message, std::vector<zmq::message_t>& frames, CopyLedger& ledger,
                      bool with_lz4, std::uint8_t wire_version);

 private:
  Header header_;  // reused by every write: its descriptor storage is allocated once, not per message
  FramePool frame0_pool_;  // frame 0's memory, recycled (frame_pool.hpp says why)
};

struct FrameReader {
  std::int64_t max_message_bytes = -1;  // total raw bytes a message may announce; -1: no limit
  explicit FrameReader(const ZmqOptions& o) : max_message_bytes(o.max_message_bytes) {}
  // Validates the frames (wire version 1 or 2) against their header and returns the Message;
  // buffers are views owning their frames (inline ones: views of the header frame, owning it),
  // or, for lz4 buffers, the memory they were decompressed into. Throws
  // TransportError saying what the peer did wrong. `header_flags` receives the header's flags
  // (kAcceptsLz4), `version` the message's wire version.
  Message read(std::span<zmq::message_t> frames, CopyLedger& ledger, std::uint8_t* header_flags = nullptr,
               std::uint8_t* version = nullptr);

 private:
  Header header_;  // reused by every read, as FrameWriter's
};

// Sends `frames` as one multipart message. Returns false when the first frame could not be
// queued within the socket's send timeout (nothing was sent); later frames of a message that
// started never block.
bool send_frames(zmq::socket_t& socket, std::vector<zmq::message_t>& frames);

// Receives one multipart message into `frames` (cleared first): `prefix` routing frames, then our
// frames. Returns false on timeout. Keeps no more frames than the header (frame `prefix`)
// describes; the rest are drained and counted in `dropped`, so a peer sending millions of empty
// frames cannot exhaust memory.
bool recv_frames(zmq::socket_t& socket, std::vector<zmq::message_t>& frames, std::size_t prefix,
                 std::size_t& dropped, std::uint64_t& wire_bytes);

}  // namespace picklewire::zmq_transport
