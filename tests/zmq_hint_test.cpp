// The per-buffer item-size hint (Message::item_sizes) end to end: dump_message fills it from the
// NDArray dtypes (0 for plain PickleBuffers), the ZeroMQ FrameWriter byte-shuffles each buffer by
// its own hint (checked in the raw header frame, read with a plain cppzmq PULL socket) and the
// FrameReader hands the hints back in the received Message.
#include <gtest/gtest.h>

#include <zmq.hpp>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "picklewire/endpoint.hpp"
#include "picklewire/ndarray.hpp"
#include "picklewire/pickler.hpp"
#include "picklewire/unpickler.hpp"
#include "picklewire/values.hpp"
#include "support.hpp"
#include "zmq_support.hpp"

using namespace picklewire;
using namespace std::chrono_literals;

namespace {

constexpr std::int64_t kInt16s = 200000, kDoubles = 100000;

NDArray int16_arange() {
  std::vector<std::int16_t> v(kInt16s);
  for (std::int64_t i = 0; i < kInt16s; ++i) v[static_cast<std::size_t>(i)] = static_cast<std::int16_t>(i);
  return NDArray::take(std::move(v), {kInt16s});
}

NDArray float64_arange() {
  std::vector<double> v(kDoubles);
  std::iota(v.begin(), v.end(), 0.0);
  return NDArray::take(std::move(v), {kDoubles});
}

Buffer random_bytes(std::size_t size, std::uint64_t seed) {
  Buffer b = Buffer::allocate(size);
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < size; ++i) b.mutable_data()[i] = static_cast<std::byte>(rng());
  return b;
}

// {"i16": int16 arange, "f64": float64 arange, "pb": random PickleBuffer, "small": in-band array}:
// three out-of-band buffers, in that order.
Value mixed_value(const NDArray& i16, const NDArray& f64, const Buffer& pb) {
  NDArray small = NDArray::allocate(DType::of<float>(), {10});
  return Value::dict({{"i16", Value::ndarray(i16)},
                      {"f64", Value::ndarray(f64)},
                      {"pb", Value::pickle_buffer(pb)},
                      {"small", Value::ndarray(small)}});
}

TEST(PicklerItemSizes, DumpMessageGivesEachOutOfBandBufferItsDtypeItemSize) {
  NDArray i16 = int16_arange(), f64 = float64_arange();
  Buffer pb = random_bytes(100000, 1);
  Message m = dump_message(mixed_value(i16, f64, pb), 4096);
  ASSERT_EQ(m.buffers.size(), 3u);  // the small array went in-band and has no entry
  EXPECT_EQ(m.item_sizes, (std::vector<std::uint32_t>{2, 8, 0}));
  EXPECT_EQ(m.buffers[0].data(), i16.data.data());
  EXPECT_EQ(m.buffers[2].data(), pb.data());

  // An array shared twice is one buffer (memoised), still with its item size; complex128: 16.
  NDArray c = NDArray::allocate(DType::of<std::complex<double>>(), {1000});
  Value shared = Value::ndarray(c);
  Message m2 = dump_message(Value::list({shared, shared, Value::pickle_buffer(pb)}), 0);
  EXPECT_EQ(m2.item_sizes, (std::vector<std::uint32_t>{16, 0}));
}

TEST(PicklerItemSizes, CallbackSeesTheItemSizeOfArrayDataOnly) {
  NDArray i16 = int16_arange(), f64 = float64_arange();
  Buffer pb = random_bytes(100, 2);
  std::vector<std::uint32_t> seen;
  PicklerOptions o;
  o.buffer_callback = [&](const Buffer&, const BufferInfo& info) {
    seen.push_back(info.item_size);
    return BufferPlacement::in_band;
  };
  dump(mixed_value(i16, f64, pb), o);
  EXPECT_EQ(seen, (std::vector<std::uint32_t>{2, 8, 0, 4}));  // in-band buffers are told too
}

// Header fields of buffer i in frame 0 (docs/wire-format.md).
struct RawDescriptor {
  std::uint64_t raw_size, wire_size;
  std::uint8_t codec, flags;
  std::uint32_t item_size;
};

RawDescriptor descriptor(const zmq::message_t& header, std::size_t i) {
  const auto* base = static_cast<const unsigned char*>(header.data());
  const std::size_t start = base[4] == 1 ? 12 : 20;  // version 2: a u64 stream size precedes the descriptors
  const auto* p = base + start + 24 * i;
  auto le = [p](std::size_t at, std::size_t n) {
    std::uint64_t v = 0;
    for (std::size_t k = 0; k < n; ++k) v |= std::uint64_t(p[at + k]) << (8 * k);
    return v;
  };
  return {le(0, 8), le(8, 8), p[16], p[17], static_cast<std::uint32_t>(le(20, 4))};
}

// Sends `value` with `options` to a raw PULL socket and returns the received frames (frames on
// the socket: the same-host path, which would say hello first and send a doorbell, is off).
std::vector<zmq::message_t> send_raw(const Value& value, EndpointOptions options) {
  options.zmq.same_host = false;
  zmq::context_t ctx;
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.set(zmq::sockopt::linger, 0);
  pull.set(zmq::sockopt::rcvtimeo, 5000);
  std::string url = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  pull.bind(url);
  Sender tx = Sender::connect(url, options);
  send_value(tx, value, 5000ms);
  std::vector<zmq::message_t> frames;
  for (;;) {
    zmq::message_t f;
    if (!pull.recv(f)) throw std::runtime_error("no frame from the Sender within 5 s");
    bool more = f.more();
    frames.push_back(std::move(f));
    if (!more) break;
  }
  return frames;
}

TEST(ZmqItemSizeHint, HeaderShufflesEachArrayByItsOwnItemSize) {
  NDArray i16 = int16_arange(), f64 = float64_arange();
  Buffer pb = random_bytes(100000, 3);
  Value v = mixed_value(i16, f64, pb);
  EndpointOptions o;
  o.zmq.linger = 0ms;
  o.zmq.compress = true;
  std::vector<zmq::message_t> hinted = send_raw(v, o);
  // Version 2 (the default): header and the small stream in frame 0, then the three buffers.
  ASSERT_EQ(hinted.size(), 4u);
  RawDescriptor d16 = descriptor(hinted[0], 0), d64 = descriptor(hinted[0], 1), dpb = descriptor(hinted[0], 2);
  // 2 is never tried by the sampler on its own (it tries 4 and 8): only the hint can put it here.
  EXPECT_EQ(d16.item_size, 2u);
  EXPECT_EQ(d16.codec, 1u);
  EXPECT_EQ(d16.flags & 0x02, 0x02);  // shuffled
  EXPECT_EQ(d64.item_size, 8u);
  EXPECT_EQ(d64.codec, 1u);
  EXPECT_EQ(d64.flags & 0x02, 0x02);
  EXPECT_EQ(dpb.item_size, 0u);  // plain PickleBuffer: no hint, random bytes: not compressed
  EXPECT_EQ(dpb.codec, 0u);
  EXPECT_EQ(d16.raw_size, i16.nbytes());
  EXPECT_EQ(d64.raw_size, f64.nbytes());

  // The same value compressed without shuffling goes over the wire much larger.
  o.zmq.shuffle = false;
  std::vector<zmq::message_t> plain = send_raw(v, o);
  ASSERT_EQ(plain.size(), 4u);
  RawDescriptor p16 = descriptor(plain[0], 0), p64 = descriptor(plain[0], 1);
  EXPECT_EQ(p16.flags & 0x02, 0);
  EXPECT_EQ(p64.flags & 0x02, 0);
  EXPECT_LT(d16.wire_size * 4, p16.wire_size) << "int16 shuffled " << d16.wire_size << " vs " << p16.wire_size;
  EXPECT_LT(d64.wire_size * 2, p64.wire_size) << "float64 shuffled " << d64.wire_size << " vs " << p64.wire_size;
  std::printf("int16 arange %zu B: shuffled by 2 -> %llu B, unshuffled -> %llu B; float64 arange %zu B: shuffled by 8 -> %llu B, "
              "unshuffled -> %llu B\n",
              i16.nbytes(), static_cast<unsigned long long>(d16.wire_size), static_cast<unsigned long long>(p16.wire_size),
              f64.nbytes(), static_cast<unsigned long long>(d64.wire_size), static_cast<unsigned long long>(p64.wire_size));
}

class ZmqItemSizeRoundTrip : public ::testing::TestWithParam<bool> {};

TEST_P(ZmqItemSizeRoundTrip, ReceiverGetsTheHintsAndTheData) {
  static std::atomic<int> n{0};
  std::string url = "inproc://zmq-hint-" + std::to_string(n++);
  EndpointOptions o;
  o.zmq.linger = 0ms;
  o.zmq.compress = GetParam();
  Receiver rx = Receiver::bind(url, o);
  Sender tx = Sender::connect(url, o);
  NDArray i16 = int16_arange(), f64 = float64_arange();
  Buffer pb = random_bytes(100000, 4);
  send_value(tx, mixed_value(i16, f64, pb), 5000ms);
  std::optional<Message> m = rx.recv(5000ms);
  ASSERT_TRUE(m);
  EXPECT_EQ(m->item_sizes, (std::vector<std::uint32_t>{2, 8, 0}));
  Value got = load(*m);
  auto r16 = got.get("i16").as_ndarray().as<std::int16_t>();
  EXPECT_TRUE(std::equal(r16.begin(), r16.end(), i16.as<std::int16_t>().begin(), i16.as<std::int16_t>().end()));
  auto r64 = got.get("f64").as_ndarray().as<double>();
  EXPECT_TRUE(std::equal(r64.begin(), r64.end(), f64.as<double>().begin(), f64.as<double>().end()));
  EXPECT_TRUE(same_bytes(got.get("pb").as_buffer(), pb));
  if (GetParam()) {
    EXPECT_EQ(rx.stats().ledger.copies[std::size_t(CopyReason::decompressed)], 2u);
  }

  // A Message without hints arrives without hints (no per-buffer entries invented).
  tx.send(Message{Buffer::copy("s"), {pb}}, 5000ms);
  std::optional<Message> bare = rx.recv(5000ms);
  ASSERT_TRUE(bare);
  EXPECT_TRUE(bare->item_sizes.empty());
}

INSTANTIATE_TEST_SUITE_P(Compression, ZmqItemSizeRoundTrip, ::testing::Values(false, true),
                         [](const auto& param_info) { return param_info.param ? std::string("lz4") : std::string("raw"); });

}  // namespace
