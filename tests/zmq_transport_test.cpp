// The ZeroMQ transport over real sockets: framing, lz4, zero-copy ownership, timeouts, hostile
// peers, a stalled consumer, CURVE.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <atomic>
#include <cstring>
#include <numeric>
#include <random>
#include <thread>

#include "picklewire/endpoint.hpp"
#include "picklewire/errors.hpp"
#include "support.hpp"
#include "zmq_support.hpp"
#include "zmq/context.hpp"
#include "zmq/message_frames.hpp"
#include "zmq/wire_header.hpp"
#include "zmq/lz4_codec.hpp"

using namespace picklewire;
using namespace std::chrono_literals;
namespace zt = picklewire::zmq_transport;

namespace {

std::string unique_name(const std::string& stem) {
  static std::atomic<int> n{0};
  return stem + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}


EndpointOptions quick_options() {
  EndpointOptions o;
  o.zmq.linger = 0ms;  // tests tear sockets down without waiting for absent peers
  return o;
}

Buffer random_buffer(std::mt19937_64& rng, std::size_t size, int kind) {
  Buffer b = Buffer::allocate(size);
  auto* p = b.mutable_data();
  if (kind == 0) {  // random: incompressible
    for (std::size_t i = 0; i < size; ++i) p[i] = static_cast<std::byte>(rng());
  } else if (kind == 1) {  // float64 arange: compressible after shuffling
    for (std::size_t i = 0; i + 8 <= size; i += 8) {
      double v = static_cast<double>(i / 8);
      std::memcpy(p + i, &v, 8);
    }
    for (std::size_t i = size / 8 * 8; i < size; ++i) p[i] = std::byte{7};
  } else {  // sparse: mostly zeros
    std::memset(p, 0, size);
    for (std::size_t i = 0; i < size; i += 997) p[i] = static_cast<std::byte>(rng() | 1);
  }
  return b;
}

Message random_message(std::mt19937_64& rng, std::size_t buffers, std::size_t max_size) {
  Message m;
  m.stream = Buffer::copy("\x80\x05stream-" + std::to_string(rng() % 1000), true);
  for (std::size_t i = 0; i < buffers; ++i) {
    std::size_t size = rng() % 4 == 0 ? rng() % 64 : rng() % max_size;
    Buffer b = random_buffer(rng, size, static_cast<int>(rng() % 3));
    m.buffers.push_back(rng() % 2 ? b.as_readonly() : b);
  }
  return m;
}

void expect_same(const Message& a, const Message& b) {
  ASSERT_TRUE(same_bytes(a.stream, b.stream));
  ASSERT_EQ(a.buffers.size(), b.buffers.size());
  for (std::size_t i = 0; i < a.buffers.size(); ++i) {
    ASSERT_TRUE(same_bytes(a.buffers[i], b.buffers[i])) << "buffer " << i << " of " << a.buffers[i].size() << " bytes";
    EXPECT_EQ(a.buffers[i].readonly(), b.buffers[i].readonly()) << "buffer " << i;
  }
}

}  // namespace

// ---------------------------------------------------------------- framing and lz4, no sockets

TEST(ZmqFraming, HeaderRoundTripAndRejections) {
  zt::Header h;
  h.version = zt::kVersion1;
  h.flags = zt::kAcceptsLz4;
  h.buffers = {{100, 100, zt::Codec::raw, zt::kReadonly, 0}, {1 << 20, 4000, zt::Codec::lz4, zt::kShuffled, 8}};
  std::vector<std::byte> bytes(zt::encoded_size(h));
  zt::encode(h, bytes);
  EXPECT_EQ(bytes.size(), 12u + 2 * 24u);
  zt::Header d = zt::decode(bytes);
  ASSERT_EQ(d.buffers.size(), 2u);
  EXPECT_EQ(d.buffers[1].raw_size, 1u << 20);
  EXPECT_EQ(d.buffers[1].item_size, 8u);
  EXPECT_EQ(d.buffers[0].flags, zt::kReadonly);

  auto rejects = [&](std::vector<std::byte> b, const char* needle) {
    try {
      zt::decode(b);
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const TransportError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  auto bad = bytes; bad[0] = std::byte{'X'}; rejects(bad, "bad magic");
  bad = bytes; bad[4] = std::byte{3}; rejects(bad, "version 3");
  bad = bytes; bad[5] = std::byte{0x80}; rejects(bad, "unknown header flags");
  bad = bytes; bad[8] = std::byte{3}; rejects(bad, "announces 3 buffers");
  bad = bytes; bad.pop_back(); rejects(bad, "announces 2 buffers");
  bad = bytes; bad[12 + 16] = std::byte{9}; rejects(bad, "unknown codec 9");
  bad = bytes; bad[12 + 24 + 17] = std::byte{0x10}; rejects(bad, "unknown buffer flags");
  bad = bytes; bad[12 + 17] = std::byte{zt::kInline}; rejects(bad, "unknown buffer flags");  // version 2 only
  bad = bytes; bad[5] = std::byte{zt::kStreamOwnFrame}; rejects(bad, "unknown header flags");  // version 2 only
  bad = bytes; bad[12] = std::byte{101}; rejects(bad, "raw size 101 != wire size 100");
  rejects(std::vector<std::byte>(5), "shorter than the fixed");
}

// Version 2 through the frame writer and reader, no sockets: small messages in one frame whose
// inline buffers the reader hands out as views of it; large ones in frames of their own.
TEST(ZmqFraming, Version2InlinesSmallItemsAndReadsThemWithoutCopies) {
  EndpointOptions o;
  zt::FrameWriter writer(o.zmq);
  zt::FrameReader reader(o.zmq);
  std::mt19937_64 rng(3);
  Buffer small = random_buffer(rng, 1000, 0), tiny = random_buffer(rng, 3, 0), big = random_buffer(rng, 100000, 0);
  Message m{Buffer::copy(std::string_view("\x80\x05small stream"), true), {small.as_readonly(), tiny, Buffer(), big, small}};
  std::vector<zmq::message_t> frames;
  CopyLedger sent, received;
  writer.write(m, frames, sent);
  ASSERT_EQ(frames.size(), 2u);  // frame 0 (header, stream, four inline buffers) and the big buffer
  EXPECT_EQ(static_cast<const std::uint8_t*>(frames[0].data())[4], zt::kVersion2);
  EXPECT_EQ(sent.copied(CopyReason::travelled_inline), 2003u);
  EXPECT_EQ(sent.zero_copy_bytes, 100000u);
  const auto* frame0 = static_cast<const std::byte*>(frames[0].data());
  const std::size_t frame0_size = frames[0].size();
  Message got = reader.read(frames, received);
  expect_same(m, got);
  for (std::size_t i : {0u, 1u, 4u}) {
    EXPECT_GE(got.buffers[i].data(), frame0) << i;
    EXPECT_LE(got.buffers[i].data() + got.buffers[i].size(), frame0 + frame0_size) << i;
    EXPECT_EQ(static_cast<std::size_t>(got.buffers[i].data() - frame0) % zt::kInlineAlignment, 0u) << i;
  }
  EXPECT_EQ(received.total_copied_bytes(), 0u);
  EXPECT_EQ(received.zero_copy_bytes, received.oob_bytes);
  // The views keep frame 0 alive on their own.
  Buffer keep = got.buffers[4];
  got = Message();
  EXPECT_TRUE(same_bytes(keep, small));

  // A stream above the inline limit gets its own frame; version 1 keeps three or more frames.
  Message large_stream{random_buffer(rng, 5000, 0), {tiny}};
  frames.clear();
  writer.write(large_stream, frames, sent);
  ASSERT_EQ(frames.size(), 2u);
  expect_same(large_stream, reader.read(frames, received));
  o.zmq.wire_version = 1;
  frames.clear();
  zt::FrameWriter(o.zmq).write(m, frames, sent);
  ASSERT_EQ(frames.size(), 7u);
  expect_same(m, reader.read(frames, received));
  o.zmq.wire_version = 3;
  EXPECT_THROW(zt::FrameWriter{o.zmq}, TransportError);

  // Frame 0 must hold its inline items exactly, padding zeroed.
  auto rejects = [&](std::vector<std::byte> bytes, const char* needle) {
    try {
      zt::decode(bytes);
      ADD_FAILURE() << "accepted: " << needle;
    } catch (const TransportError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  frames.clear();
  writer.write(Message{Buffer::copy(std::string_view("abc"), true), {tiny, tiny}}, frames, sent);
  ASSERT_EQ(frames.size(), 1u);
  std::vector<std::byte> good(static_cast<const std::byte*>(frames[0].data()),
                              static_cast<const std::byte*>(frames[0].data()) + frames[0].size());
  ASSERT_EQ(good.size(), 20u + 2 * 24u + 3 + 1 + 3 + 5 + 3);  // stream, pad to 72, tiny, pad to 80, tiny
  EXPECT_NO_THROW(zt::decode(good));
  auto bad = good; bad.push_back(std::byte{0}); rejects(bad, "beyond its inline items");
  bad = good; bad.pop_back(); rejects(bad, "overruns the header frame");
  bad = good; bad[20 + 2 * 24 + 3] = std::byte{1}; rejects(bad, "nonzero padding");
  bad = good; bad[12] = std::byte{200}; rejects(bad, "the stream of 200 inline bytes");
  bad = good; bad[20 + 16] = std::byte{1}; rejects(bad, "inline buffer is not raw");
  rejects(std::vector<std::byte>(good.begin(), good.begin() + 30), "announces 2 buffers");
}

TEST(ZmqLz4, RoundTripsWithAndWithoutShuffle) {
  std::mt19937_64 rng(42);
  for (std::size_t size : {std::size_t(0), std::size_t(1), std::size_t(4097), zt::kChunkBytes, zt::kChunkBytes * 3 + 13}) {
    for (int kind = 0; kind < 3; ++kind) {
      Buffer in = random_buffer(rng, size, kind);
      for (std::uint32_t k : {0u, 2u, 4u, 8u, 12u}) {
        std::vector<std::byte> wire(zt::compressed_bound(size));
        wire.resize(zt::compress(in.bytes(), k, wire));
        std::vector<std::byte> out(size);
        zt::decompress(wire, k, out);
        ASSERT_TRUE(size == 0 || std::memcmp(out.data(), in.data(), size) == 0) << size << " " << kind << " " << k;
      }
    }
  }
}

TEST(ZmqLz4, SamplerSkipsRandomAndPicksShuffleForFloats) {
  std::mt19937_64 rng(1);
  zt::CompressionPolicy p;
  EXPECT_FALSE(zt::choose_compression(random_buffer(rng, 1 << 20, 0).bytes(), p).compress);
  auto floats = zt::choose_compression(random_buffer(rng, 1 << 20, 1).bytes(), p);
  EXPECT_TRUE(floats.compress);
  EXPECT_EQ(floats.shuffle_item_size, 8u);
  EXPECT_TRUE(zt::choose_compression(random_buffer(rng, 1 << 20, 2).bytes(), p).compress);
  EXPECT_FALSE(zt::choose_compression(random_buffer(rng, 1000, 2).bytes(), p).compress);  // too small
}

TEST(ZmqLz4, BadBlocksAreTransportErrors) {
  std::mt19937_64 rng(3);
  Buffer in = random_buffer(rng, 300000, 2);
  std::vector<std::byte> wire(zt::compressed_bound(in.size()));
  wire.resize(zt::compress(in.bytes(), 0, wire));
  std::vector<std::byte> out(in.size());
  auto truncated = wire; truncated.resize(wire.size() - 1);
  EXPECT_THROW(zt::decompress(truncated, 0, out), TransportError);
  auto trailing = wire; trailing.push_back(std::byte{0});
  EXPECT_THROW(zt::decompress(trailing, 0, out), TransportError);
  auto corrupt = wire; for (std::size_t i = 4; i < corrupt.size(); i += 7) corrupt[i] = std::byte{0xff};
  EXPECT_THROW(zt::decompress(corrupt, 0, out), TransportError);
  std::vector<std::byte> wrong_size(in.size() + 1);
  EXPECT_THROW(zt::decompress(wire, 0, wrong_size), TransportError);
}

// ---------------------------------------------------------------- endpoints over real sockets

struct TransportCase {
  std::string name;
  bool compress;
  int wire_version = 2;
};

class ZmqRoundTrip : public ::testing::TestWithParam<TransportCase> {};

TEST_P(ZmqRoundTrip, ManyBuffersOfRandomSizes) {
  test::TempDir dir;
  std::string url;
  if (GetParam().name == "inproc") url = "inproc://" + unique_name("rt");
  else if (GetParam().name == "ipc") url = "ipc://" + (dir / "sock").string();
  else url = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  EndpointOptions o = quick_options();
  o.zmq.compress = GetParam().compress;
  o.zmq.wire_version = GetParam().wire_version;
  Receiver rx = Receiver::bind(url, o);
  Sender tx = Sender::connect(url, o);
  std::mt19937_64 rng(7);
  std::vector<Message> sent;
  for (int i = 0; i < 12; ++i) {
    sent.push_back(random_message(rng, static_cast<std::size_t>(rng() % 24), 300000));
    tx.send(sent.back(), 5000ms);
  }
  for (const Message& expected : sent) {
    auto got = rx.recv(5000ms);
    ASSERT_TRUE(got);
    expect_same(expected, *got);
  }
  EXPECT_FALSE(rx.recv(0ms));
  TransportStats ts = tx.stats(), rs = rx.stats();
  EXPECT_EQ(ts.ledger.messages, 12u);
  EXPECT_EQ(rs.ledger.messages, 12u);
  EXPECT_EQ(ts.ledger.oob_bytes, rs.ledger.oob_bytes);
  EXPECT_EQ(ts.wire_bytes, rs.wire_bytes);
  if (GetParam().compress) {
    EXPECT_GT(ts.ledger.copied(CopyReason::compressed), 0u);
    EXPECT_EQ(ts.ledger.copies[size_t(CopyReason::compressed)], rs.ledger.copies[size_t(CopyReason::decompressed)]);
    EXPECT_LT(ts.wire_bytes, ts.ledger.oob_bytes);
  } else {
    // Version 2 copies small buffers into the header frame on send (travelled_inline); the
    // receiver takes every buffer, inline or not, without a copy.
    EXPECT_EQ(ts.ledger.total_copied_bytes(), ts.ledger.copied(CopyReason::travelled_inline));
    if (GetParam().wire_version == 1) EXPECT_EQ(ts.ledger.total_copied_bytes(), 0u);
    else EXPECT_GT(ts.ledger.copied(CopyReason::travelled_inline), 0u);
    EXPECT_EQ(rs.ledger.total_copied_bytes(), 0u);
    EXPECT_EQ(rs.ledger.zero_copy_bytes, rs.ledger.oob_bytes);
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, ZmqRoundTrip,
                         ::testing::Values(TransportCase{"inproc", false}, TransportCase{"ipc", false},
                                           TransportCase{"tcp", false}, TransportCase{"inproc", true},
                                           TransportCase{"ipc", true}, TransportCase{"tcp", true},
                                           TransportCase{"ipc", false, 1}, TransportCase{"tcp", false, 1},
                                           TransportCase{"tcp", true, 1}),
                         [](const auto& param_info) {
                           return param_info.param.name + (param_info.param.compress ? "_lz4" : "_raw") +
                                  (param_info.param.wire_version == 1 ? "_v1" : "");
                         });

TEST(ZmqEndpoint, SenderMayBindAndReceiverConnect) {
  std::string url = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  Sender tx = Sender::bind(url, quick_options());
  Receiver rx = Receiver::connect(url, quick_options());
  Message m{Buffer::copy("stream"), {Buffer::copy("payload")}};
  tx.send(m, 5000ms);
  auto got = rx.recv(5000ms);
  ASSERT_TRUE(got);
  expect_same(m, *got);
}

TEST(ZmqEndpoint, ZeroCopyOwnershipCountedByFreeFunction) {
  // inproc moves the very zmq_msg content between the sockets: the received buffer IS the sent
  // memory, and its owner is released exactly when the receiver drops its last view.
  static std::atomic<int> releases{0};
  releases = 0;
  std::string url = "inproc://" + unique_name("owner");
  Receiver rx = Receiver::bind(url, quick_options());
  Sender tx = Sender::connect(url, quick_options());
  std::vector<std::byte*> blocks;
  Message m;
  m.stream = Buffer::copy("s");
  for (int i = 0; i < 5; ++i) {
    auto* block = new std::byte[100000];
    std::memset(block, i, 100000);
    blocks.push_back(block);
    m.buffers.push_back(Buffer::with_free_function(block, 100000, false, [](void* data, void*) {
      delete[] static_cast<std::byte*>(data);
      ++releases;
    }));
  }
  tx.send(m, 5000ms);
  m.buffers.clear();  // the sender's own references are gone: only ZeroMQ holds the memory now
  EXPECT_EQ(releases.load(), 0);
  auto got = rx.recv(5000ms);
  ASSERT_TRUE(got);
  ASSERT_EQ(got->buffers.size(), 5u);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(got->buffers[i].data(), blocks[i]) << "received buffer is not the sent memory";
  EXPECT_EQ(releases.load(), 0);
  Buffer keep = got->buffers[2].slice(10, 10);
  got.reset();
  EXPECT_EQ(releases.load(), 4);  // the slice keeps its frame alive
  keep = Buffer();
  EXPECT_EQ(releases.load(), 5);
  EXPECT_EQ(tx.stats().ledger.zero_copy_buffers, 5u);
  EXPECT_EQ(tx.stats().ledger.total_copied_bytes(), 0u);
}

TEST(ZmqEndpoint, BorrowedBuffersAreCopiedAndCounted) {
  std::string url = "inproc://" + unique_name("borrow");
  Receiver rx = Receiver::bind(url, quick_options());
  Sender tx = Sender::connect(url, quick_options());
  std::vector<char> mine(5000, 'x');
  tx.send(Message{Buffer::copy("s"), {Buffer::wrap(mine.data(), mine.size())}}, 5000ms);
  mine.assign(5000, 'y');  // the sender may reuse its memory at once
  auto got = rx.recv(5000ms);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->buffers[0].chars(), std::string(5000, 'x'));
  EXPECT_EQ(tx.stats().ledger.copied(CopyReason::copied_borrowed_memory), 5000u);
}

TEST(ZmqEndpoint, ReceiveTimeoutIsEmptySendTimeoutThrows) {
  std::string url = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  Receiver rx = Receiver::bind(url, quick_options());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(rx.recv(50ms));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 45ms);
  // A PUSH socket with no peer cannot queue anything: send times out.
  Sender tx = Sender::bind("inproc://" + unique_name("nobody"), quick_options());
  EXPECT_THROW(tx.send(Message{Buffer::copy("s"), {}}, 30ms), TimeoutError);
  EXPECT_EQ(tx.stats().ledger.messages, 0u);
}

TEST(ZmqEndpoint, StalledConsumerBoundsQueuedMemory) {
  // The receiver stops reading: the sender fills both high-water marks (plus what the kernel
  // buffers over tcp) and then times out instead of queueing without bound.
  static std::atomic<long> live_bytes{0};
  live_bytes = 0;
  std::string url = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  EndpointOptions o = quick_options();
  o.zmq.send_hwm = 4;
  o.zmq.recv_hwm = 4;
  Receiver rx = Receiver::bind(url, o);
  Sender tx = Sender::connect(url, o);
  constexpr std::size_t kSize = 1 << 20;
  int sent = 0;
  for (; sent < 200; ++sent) {
    auto* block = new std::byte[kSize]();
    live_bytes += kSize;
    Buffer b = Buffer::with_free_function(block, kSize, false, [](void* data, void*) {
      delete[] static_cast<std::byte*>(data);
      live_bytes -= kSize;
    });
    try {
      tx.send(Message{Buffer::copy("s"), {b}}, 200ms);
    } catch (const TimeoutError&) {
      break;
    }
  }
  EXPECT_LT(sent, 60) << "the sender should hit the high-water marks";
  EXPECT_LE(live_bytes.load(), long(sent + 1) * long(kSize));
  // The consumer resumes: everything queued arrives, and the memory is released as it goes.
  int received = 0;
  while (auto m = rx.recv(500ms)) ++received;
  EXPECT_EQ(received, sent);
  for (int i = 0; i < 100 && live_bytes.load() > 0; ++i) std::this_thread::sleep_for(10ms);
  EXPECT_EQ(live_bytes.load(), 0);
}

TEST(ZmqEndpoint, MalformedMessagesAreErrorsAndTheReceiverKeepsServing) {
  std::string url = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  Receiver rx = Receiver::bind(url, quick_options());
  zmq::socket_t raw(zt::context(), zmq::socket_type::push);
  raw.set(zmq::sockopt::linger, 0);
  raw.connect(url);

  auto header = [](std::vector<zt::BufferDescriptor> bufs) {
    zt::Header h;
    h.version = zt::kVersion1;
    h.buffers = std::move(bufs);
    std::string bytes(zt::encoded_size(h), '\0');
    zt::encode(h, std::span<std::byte>(reinterpret_cast<std::byte*>(bytes.data()), bytes.size()));
    return bytes;
  };
  std::string good_lz4(zt::compressed_bound(200000), '\0');
  std::string sparse(200000, '\0');
  good_lz4.resize(zt::compress(std::span<const std::byte>(reinterpret_cast<const std::byte*>(sparse.data()), sparse.size()), 0,
                               std::span<std::byte>(reinterpret_cast<std::byte*>(good_lz4.data()), good_lz4.size())));
  std::string bad_lz4 = good_lz4;
  bad_lz4[6] = '\xff';
  bad_lz4[7] = '\xff';

  struct Case { std::vector<std::string> frames; const char* needle; };
  std::vector<Case> cases = {
      {{"garbage-header", "s"}, "bad magic"},
      {{std::string("PWZM\x07\0\0\0\0\0\0\0", 12), "s"}, "version 7"},
      {{header({{3, 3, zt::Codec::raw, 0, 0}}), "s"}, "3 frames) but 2"},
      {{header({{3, 3, zt::Codec::raw, 0, 0}}), "s", "abcd"}, "header says 3 wire bytes, frame has 4"},
      {{header({}), "s", "extra", "extra"}, "frames beyond"},
      {{header({{200000, bad_lz4.size(), zt::Codec::lz4, 0, 0}}), "s", bad_lz4}, "bad lz4"},
      {{header({{200001, good_lz4.size(), zt::Codec::lz4, 0, 0}}), "s", good_lz4}, "bad lz4"},
      {{header({{std::uint64_t(1) << 50, 10, zt::Codec::lz4, 0, 0}}), "s", "0123456789"}, "cannot decode to"},
      {{"x"}, "shorter than the fixed"},
      {{"", "s"}, "shorter than the fixed"},  // a zero-byte header frame
      {{std::string("PWZM\x02\0\0\0\0\0\0\0", 12)}, "announces 0 buffers but its frame holds 12"},
      {{std::string("PWZM\x02\0\0\0\0\0\0\0\x09\0\0\0\0\0\0\0", 20) + "abc"}, "the stream of 9 inline bytes"},
      {{std::string("PWZM\x02\x02\0\0\0\0\0\0\x09\0\0\0\0\0\0\0", 20), "abc"}, "stream has 9 bytes, its frame has 3"},
  };
  for (const Case& c : cases) {
    std::vector<zmq::const_buffer> parts;
    for (const auto& f : c.frames) parts.push_back(zmq::buffer(f));
    zmq::send_multipart(raw, parts);
    try {
      auto m = rx.recv(5000ms);
      ADD_FAILURE() << "accepted a malformed message (" << c.needle << "), got " << (m ? "a message" : "nothing");
    } catch (const TransportError& e) {
      EXPECT_NE(std::string(e.what()).find(c.needle), std::string::npos) << e.what();
    }
  }
  // A valid message after all that garbage still arrives.
  std::string ok_header = header({{200000, good_lz4.size(), zt::Codec::lz4, zt::kReadonly, 0}});
  std::vector<zmq::const_buffer> ok = {zmq::buffer(ok_header), zmq::str_buffer("stream"), zmq::buffer(good_lz4)};
  zmq::send_multipart(raw, ok);
  auto m = rx.recv(5000ms);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->buffers[0].chars(), sparse);
  EXPECT_TRUE(m->buffers[0].readonly());
  EXPECT_EQ(rx.stats().malformed_messages, cases.size());
}

// A connecting Sender hands messages only to a connected receiver (ZMQ_IMMEDIATE): with nobody
// listening, a send times out instead of queueing a message that would be dropped at close.
TEST(ZmqEndpoint, ConnectedSenderWithNobodyListeningTimesOut) {
  const std::string url = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  Sender tx = Sender::connect(url);  // the defaults, linger included
  EXPECT_THROW(tx.send(Message{Buffer::copy("s"), {}}, 200ms), TimeoutError);
  EXPECT_FALSE(tx.try_send(Message{Buffer::copy("s"), {}}, 0ms));
  EXPECT_EQ(tx.stats().undelivered_messages, 2u);
  EXPECT_EQ(tx.stats().ledger.messages, 0u);
  // Once a receiver is there, the same sender delivers.
  Receiver rx = Receiver::bind(url, quick_options());
  tx.send(Message{Buffer::copy("late"), {}}, 5000ms);
  auto got = rx.recv(5000ms);
  ASSERT_TRUE(got);
  EXPECT_EQ(got->stream.chars(), "late");
  EXPECT_EQ(tx.stats().undelivered_messages, 2u);
}

// Senders with heartbeats watch their socket through libzmq's monitor. Closing one used to close
// our end of the monitor first, leaving libzmq's monitor PAIR without a peer; its next event (sent
// from the I/O thread as the connection ends) then blocked that thread for good and every later
// connection of the process hung. Many senders, closed one after the other: every one must connect.
TEST(ZmqEndpoint, ClosingMonitoredSendersMidTransferKeepsTheProcessWorking) {
  std::mt19937_64 rng(9);
  Message big{Buffer::copy(std::string_view("s")), {random_buffer(rng, 1 << 20, 1), random_buffer(rng, 300000, 0)}};
  for (int i = 0; i < 40; ++i) {
    zmq::context_t ctx;  // the receiver in a context of its own, as another process's would be
    zmq::socket_t pull(ctx, zmq::socket_type::pull);
    pull.set(zmq::sockopt::linger, 0);
    pull.set(zmq::sockopt::rcvtimeo, 5000);
    const std::string url = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
    pull.bind(url);
    EndpointOptions o = quick_options();
    ASSERT_GT(o.zmq.heartbeat.count(), 0);  // the default: a monitored sender
    o.zmq.compress = i % 2 == 0;
    // The raw PULL reads one message and closes: it must be the big one, not a same-host hello.
    // (Closed while the big one was still arriving, the PULL's context aborted here in libzmq
    // 4.3.4: "Resource temporarily unavailable (src/session_base.cpp:260)".)
    o.zmq.same_host = false;
    Sender tx = Sender::connect(url, o);
    ASSERT_NO_THROW(tx.send(big, 5000ms)) << "iteration " << i;
    std::vector<zmq::message_t> frames;
    ASSERT_TRUE(zmq::recv_multipart(pull, std::back_inserter(frames))) << "iteration " << i;
  }  // the sender closes (its monitor still sees the connection end); the receiver's context ends
}

TEST(ZmqEndpoint, BindErrorsCarryTheirCodes) {
  const std::string url = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  Receiver first = Receiver::bind(url, quick_options());
  try {
    Receiver::bind(url, quick_options());
    ADD_FAILURE() << "bound an address already in use";
  } catch (const TransportError& e) {
    EXPECT_EQ(e.code(), EADDRINUSE) << e.what();
  }
  for (const char* bad : {"tcp://127.0.0.1:99999", "tcp://127.0.0.1:", "tcp://127.0.0.1:12ab", "tcp://127.0.0.1"}) {
    try {
      Receiver::bind(bad, quick_options());
      ADD_FAILURE() << "bound " << bad;
    } catch (const TransportError& e) {
      EXPECT_EQ(e.code(), EINVAL) << bad << ": " << e.what();
    }
    EXPECT_THROW(Sender::connect(bad, quick_options()), TransportError) << bad;
  }
}

TEST(ZmqEndpoint, MaxMessageBytesRefusesLargeMessages) {
  std::string url = "inproc://" + unique_name("max");
  EndpointOptions o = quick_options();
  o.zmq.max_message_bytes = 1 << 16;
  Receiver rx = Receiver::bind(url, o);
  Sender tx = Sender::connect(url, quick_options());
  tx.send(Message{Buffer::copy("s"), {Buffer::allocate(1 << 17)}}, 1000ms);
  EXPECT_THROW(rx.recv(1000ms), TransportError);  // inproc bypasses ZMQ_MAXMSGSIZE: our own check
  tx.send(Message{Buffer::copy("s"), {Buffer::allocate(100)}}, 1000ms);
  EXPECT_TRUE(rx.recv(1000ms));
}

TEST(ZmqCurve, EncryptedAndOnlyAuthorisedClients) {
  test::TempDir dir;
  auto keypair = [&](const std::string& name) {
    char pub[41], sec[41];
    ASSERT_EQ(zmq_curve_keypair(pub, sec), 0);
    test::write_file(dir / (name + ".pub"), pub);
    test::write_file(dir / (name + ".key"), sec);
  };
  keypair("server");
  keypair("client");
  keypair("intruder");
  test::write_file(dir / "authorized", test::read_file(dir / "client.pub") + "\n");
  std::string url = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  EndpointOptions server = quick_options();
  server.zmq.curve_server_secret_key_file = dir / "server.key";
  server.zmq.curve_authorized_clients_file = dir / "authorized";
  Receiver rx = Receiver::bind(url, server);

  auto client_options = [&](const std::string& who, const std::string& server_pub) {
    EndpointOptions c = quick_options();
    c.zmq.curve_client_secret_key_file = dir / (who + ".key");
    c.zmq.curve_client_public_key_file = dir / (who + ".pub");
    c.zmq.curve_server_public_key_file = dir / server_pub;
    return c;
  };
  // Refused peers may queue a message locally (ZeroMQ queues on connect), but nothing reaches the
  // server: their handshakes fail.
  auto try_send = [](Sender& s, const char* text) {
    try {
      s.send(Message{Buffer::copy(text), {}}, 300ms);
    } catch (const TimeoutError&) {
    }
  };
  Sender intruder = Sender::connect(url, client_options("intruder", "server.pub"));
  try_send(intruder, "intruder");
  Sender wrong_server = Sender::connect(url, client_options("client", "intruder.pub"));
  try_send(wrong_server, "wrong server key");
  Sender plain = Sender::connect(url, quick_options());
  try_send(plain, "plain");
  EXPECT_FALSE(rx.recv(500ms));
  Sender tx = Sender::connect(url, client_options("client", "server.pub"));
  tx.send(Message{Buffer::copy("authorised"), {Buffer::copy("secret")}}, 5000ms);
  auto m = rx.recv(5000ms);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->stream.chars(), "authorised");
  EXPECT_FALSE(rx.recv(100ms));  // nothing from the refused peers ever arrived
}
