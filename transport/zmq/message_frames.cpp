#include "zmq/message_frames.hpp"

#include <cstring>
#include <memory>
#include <string>

#include "picklewire/errors.hpp"
#include "zmq/wire_header.hpp"

namespace picklewire::zmq_transport {
namespace {

// zmq::message_t's free function: the hint is a heap copy of the Buffer's owner; dropping it is
// the moment ZeroMQ is done with the bytes.
void release_owner(void* /*data*/, void* hint) { delete static_cast<std::shared_ptr<void>*>(hint); }

zmq::message_t zero_copy_frame(const Buffer& b) {
  if (b.empty()) return zmq::message_t();
  auto hint = std::make_unique<std::shared_ptr<void>>(b.owner());
  zmq::message_t frame(const_cast<std::byte*>(b.data()), b.size(), &release_owner, hint.get());
  hint.release();  // now owned by the frame
  return frame;
}

[[noreturn]] void invalid(const std::string& what) {
  throw TransportError("zmq transport: invalid message from peer: " + what);
}

}  // namespace

FrameWriter::FrameWriter(const ZmqOptions& o)
    : compress(o.compress), version(o.wire_version == 1 ? kVersion1 : kVersion2), inline_max_bytes(o.inline_max_bytes) {
  if (o.wire_version != 1 && o.wire_version != 2)
    throw TransportError("zmq transport: wire_version " + std::to_string(o.wire_version) + " is not 1 or 2", EINVAL);
  policy.min_bytes = o.compress_min_bytes;
  policy.shuffle = o.shuffle;
  policy.item_size = o.item_size;
}

std::uint64_t FrameWriter::write(const Message& message, std::vector<zmq::message_t>& frames, CopyLedger& ledger,
                                 bool with_lz4, std::uint8_t wire_version) {
  const bool v2 = wire_version == kVersion2;
  Header& header = header_;
  header.version = wire_version;
  header.flags = accepts_lz4 ? kAcceptsLz4 : 0;
  header.stream_size = message.stream.size();
  const bool stream_inline = v2 && message.stream.size() <= inline_max_bytes;
  if (v2 && !stream_inline) header.flags |= kStreamOwnFrame;
  header.buffers.resize(message.buffers.size());  // each descriptor reset below
  const std::size_t first = frames.size();
  frames.emplace_back();  // frame 0, built once the descriptors are known
  auto payload_frame = [&](const Buffer& b) {
    if (b.owner() || b.empty()) return zero_copy_frame(b);
    ledger.record_copy(CopyReason::copied_borrowed_memory, b.size());
    return zmq::message_t(b.data(), b.size());
  };
  std::uint64_t wire = 0;
  if (!stream_inline) {
    frames.push_back(payload_frame(message.stream));
    wire += message.stream.size();
  }
  for (std::size_t i = 0; i < message.buffers.size(); ++i) {
    const Buffer& b = message.buffers[i];
    BufferDescriptor& d = header.buffers[i];
    d = BufferDescriptor{};
    d.raw_size = b.size();
    d.flags = b.readonly() ? kReadonly : 0;
    // The buffer's own hint (its NDArray's dtype item size) beats the endpoint-wide item_size; the
    // sample then only decides whether shuffling by it, and compressing at all, pays.
    std::uint32_t hint = message.item_size(i);
    d.item_size = hint ? hint : policy.item_size;
    CompressionChoice choice;
    if (with_lz4) {
      if (hint >= 2 && hint <= 64) {
        CompressionPolicy hinted = policy;
        hinted.item_size = hint;
        choice = choose_compression(b.bytes(), hinted);
      } else {
        choice = choose_compression(b.bytes(), policy);
      }
    }
    if (choice.compress) {
      Buffer out = Buffer::allocate(compressed_bound(b.size()));
      std::size_t n = zmq_transport::compress(b.bytes(), choice.shuffle_item_size,
                                              std::span<std::byte>(out.mutable_data(), out.size()));
      ledger.record_copy(CopyReason::compressed, b.size());
      d.codec = Codec::lz4;
      d.wire_size = n;
      if (choice.shuffle_item_size) {
        d.flags |= kShuffled;
        d.item_size = choice.shuffle_item_size;
      }
      frames.push_back(zero_copy_frame(out.slice(0, n)));
      wire += n;
    } else if (v2 && b.size() <= inline_max_bytes) {
      // Copied into frame 0 below: one small copy costs less than a frame of its own.
      d.codec = Codec::raw;
      d.wire_size = b.size();
      d.flags |= kInline;
      if (!b.empty()) ledger.record_copy(CopyReason::travelled_inline, b.size());
    } else {
      d.codec = Codec::raw;
      d.wire_size = b.size();
      if (b.owner() || b.empty()) ledger.record_zero_copy(b.size());
      frames.push_back(payload_frame(b));
      wire += b.size();
    }
  }
  // Frame 0: the descriptors, then (version 2) the inline stream and buffers, each buffer at the
  // next multiple of kInlineAlignment with zeroed padding (wire_header.hpp).
  const std::size_t descriptors = encoded_size(header);
  std::size_t size = descriptors;
  if (v2) {
    if (stream_inline) size += message.stream.size();
    for (const BufferDescriptor& d : header.buffers)
      if (d.flags & kInline) size = align_inline(size) + d.wire_size;
  }
  zmq::message_t frame0 = frame0_pool_.frame(size);
  auto* out = static_cast<std::byte*>(frame0.data());
  encode(header, std::span<std::byte>(out, descriptors));
  if (v2) {
    std::size_t pos = descriptors;
    if (stream_inline && !message.stream.empty()) {
      std::memcpy(out + pos, message.stream.data(), message.stream.size());
      pos += message.stream.size();
    }
    for (std::size_t i = 0; i < message.buffers.size(); ++i) {
      if (!(header.buffers[i].flags & kInline)) continue;
      const std::size_t aligned = align_inline(pos);
      std::memset(out + pos, 0, aligned - pos);
      pos = aligned;
      const Buffer& b = message.buffers[i];
      if (!b.empty()) std::memcpy(out + pos, b.data(), b.size());
      pos += b.size();
    }
  }
  frames[first] = std::move(frame0);
  wire += size;
  ledger.messages += 1;
  ledger.inband_bytes += message.stream.size();
  ledger.oob_buffers += message.buffers.size();
  ledger.oob_bytes += message.out_of_band_bytes();
  return wire;
}

Message FrameReader::read(std::span<zmq::message_t> frames, CopyLedger& ledger, std::uint8_t* header_flags,
                          std::uint8_t* version) {
  if (frames.empty()) invalid("empty multipart message");
  Header& header = header_;
  decode(std::span<const std::byte>(static_cast<const std::byte*>(frames[0].data()), frames[0].size()), header);
  if (header.flags & kControl) invalid("a control message where a message was expected");
  if (header_flags) *header_flags = header.flags & kAcceptsLz4;
  if (version) *version = header.version;
  const bool v2 = header.version == kVersion2;
  const std::size_t n = header.buffers.size();
  const std::size_t expected = 1 + frames_after_header(header);
  if (frames.size() != expected)
    invalid("header announces " + std::to_string(n) + " buffers (" + std::to_string(expected) + " frames) but " +
            std::to_string(frames.size()) + " frames arrived");
  const bool stream_own_frame = !v2 || (header.flags & kStreamOwnFrame);
  if (stream_own_frame && v2 && frames[1].size() != header.stream_size)
    invalid("header says the stream has " + std::to_string(header.stream_size) + " bytes, its frame has " +
            std::to_string(frames[1].size()));
  // Check every size before allocating anything: the total a message may make us hold is bounded.
  std::uint64_t total = stream_own_frame ? frames[1].size() : header.stream_size;
  std::size_t next = stream_own_frame ? 2 : 1;
  for (std::size_t i = 0; i < n; ++i) {
    const BufferDescriptor& d = header.buffers[i];
    if (!(d.flags & kInline)) {
      if (frames[next].size() != d.wire_size)
        invalid("buffer " + std::to_string(i) + ": header says " + std::to_string(d.wire_size) + " wire bytes, frame has " +
                std::to_string(frames[next].size()));
      ++next;
    }
    if (d.codec == Codec::lz4 && d.raw_size > max_decoded_size(d.wire_size))
      invalid("buffer " + std::to_string(i) + ": " + std::to_string(d.wire_size) + " lz4 bytes cannot decode to " +
              std::to_string(d.raw_size));
    total += d.raw_size;
    if (total < d.raw_size) invalid("sizes overflow");
  }
  if (max_message_bytes >= 0 && total > static_cast<std::uint64_t>(max_message_bytes))
    invalid("message of " + std::to_string(total) + " bytes exceeds max_message_bytes " + std::to_string(max_message_bytes));

  auto own = [](zmq::message_t& frame, bool readonly) {
    auto owner = std::make_shared<zmq::message_t>(std::move(frame));
    void* data = owner->data();
    std::size_t size = owner->size();
    return Buffer::take(std::move(owner), data, size, readonly);
  };
  // Inline items are views of frame 0, which they keep alive together (no copy).
  // (The base is read after the move: a frame of up to 33 bytes keeps its bytes inside the
  // zmq_msg_t itself, so they move with it.)
  std::shared_ptr<zmq::message_t> frame0;
  std::byte* frame0_base = nullptr;
  auto view_of_frame0 = [&](std::size_t offset, std::size_t size, bool readonly) {
    if (!frame0) {
      frame0 = std::make_shared<zmq::message_t>(std::move(frames[0]));
      frame0_base = static_cast<std::byte*>(frame0->data());
    }
    return Buffer::take(frame0, frame0_base + offset, size, readonly);
  };
  Message m;
  if (stream_own_frame)
    m.stream = own(frames[1], /*readonly=*/true);
  else
    m.stream = view_of_frame0(header.stream_offset, static_cast<std::size_t>(header.stream_size), /*readonly=*/true);
  m.buffers.reserve(n);
  // The sender's per-buffer item sizes, kept for whoever forwards or inspects the Message; left
  // empty (no allocation) when the peer knew none.
  for (std::size_t i = 0; i < n; ++i) {
    if (header.buffers[i].item_size == 0) continue;
    m.item_sizes.resize(n);
    for (std::size_t j = 0; j < n; ++j) m.item_sizes[j] = header.buffers[j].item_size;
    break;
  }
  next = stream_own_frame ? 2 : 1;
  for (std::size_t i = 0; i < n; ++i) {
    const BufferDescriptor& d = header.buffers[i];
    bool readonly = (d.flags & kReadonly) != 0;
    if (d.flags & kInline) {
      m.buffers.push_back(view_of_frame0(d.inline_offset, static_cast<std::size_t>(d.raw_size), readonly));
      ledger.record_zero_copy(d.raw_size);
      continue;
    }
    zmq::message_t& frame = frames[next++];
    if (d.codec == Codec::raw) {
      m.buffers.push_back(own(frame, readonly));
      ledger.record_zero_copy(d.raw_size);
    } else {
      Buffer out = Buffer::allocate(static_cast<std::size_t>(d.raw_size));
      try {
        decompress(std::span<const std::byte>(static_cast<const std::byte*>(frame.data()), frame.size()),
                   (d.flags & kShuffled) ? d.item_size : 0, std::span<std::byte>(out.mutable_data(), out.size()));
      } catch (const TransportError& e) {
        throw TransportError(std::string(e.what()) + " (buffer " + std::to_string(i) + ")");
      }
      ledger.record_copy(CopyReason::decompressed, d.wire_size);
      m.buffers.push_back(readonly ? out.as_readonly() : out);
    }
  }
  ledger.messages += 1;
  ledger.inband_bytes += m.stream.size();
  ledger.oob_buffers += n;
  ledger.oob_bytes += total - m.stream.size();
  return m;
}

bool send_frames(zmq::socket_t& socket, std::vector<zmq::message_t>& frames) {
  for (std::size_t i = 0; i < frames.size(); ++i) {
    auto flags = i + 1 < frames.size() ? zmq::send_flags::sndmore : zmq::send_flags::none;
    if (!socket.send(frames[i], flags)) {
      // Only the first frame can time out: ZeroMQ admits the rest of a started message.
      if (i == 0) return false;
      throw TransportError("zmq transport: frame " + std::to_string(i) + " of a started message was refused");
    }
  }
  return true;
}

bool recv_frames(zmq::socket_t& socket, std::vector<zmq::message_t>& frames, std::size_t prefix, std::size_t& dropped,
                 std::uint64_t& wire_bytes) {
  frames.clear();
  dropped = 0;
  std::size_t limit = prefix + 1;
  zmq::message_t excess;  // frames beyond the limit are received here and dropped
  for (;;) {
    // Received in place (no temporary to move and close per frame): the frame's slot, or `excess`.
    const bool keep = frames.size() < limit;
    zmq::message_t& frame = keep ? frames.emplace_back() : excess;
    if (!socket.recv(frame, zmq::recv_flags::none)) {
      if (keep) frames.pop_back();
      if (frames.empty() && dropped == 0) return false;  // timeout before anything arrived
      continue;  // the rest of a started message is already queued: ZeroMQ delivers atomically
    }
    const std::size_t size = frame.size();
    wire_bytes += size;
    const bool more = frame.more();
    if (!keep) {
      ++dropped;
    } else if (more && frames.size() == prefix + 1) {
      // Keep as many frames as a header of this length describes (the count is trusted only when
      // the header frame is exactly as long as it says). A header without more frames needs no count.
      const auto count = announced_frame_count(std::span<const std::byte>(static_cast<const std::byte*>(frame.data()), size));
      limit = prefix + (count ? *count : 2);
    }
    if (!more) return true;
  }
}

}  // namespace picklewire::zmq_transport
