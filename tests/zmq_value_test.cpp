// Value-level calls over ZeroMQ: Sender::send(const Value&) / Receiver::recv_value() with a graph
// of builtins, PickleBuffers and NDArrays over inproc, ipc and tcp, lz4 on and off: values, readonly
// flags, zero-copy (same memory over inproc) and the copy ledger on both sides.
#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <numeric>
#include <random>

#include "picklewire/endpoint.hpp"
#include "picklewire/ndarray.hpp"
#include "picklewire/values.hpp"
#include "support.hpp"
#include "zmq_support.hpp"

using namespace picklewire;
using namespace std::chrono_literals;

namespace {


Buffer random_bytes(std::size_t size, std::uint64_t seed, bool readonly) {
  Buffer b = Buffer::allocate(size);
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i < size; ++i) b.mutable_data()[i] = static_cast<std::byte>(rng());
  return readonly ? b.as_readonly() : b;
}

struct Case {
  std::string transport;
  bool compress;
};

class ZmqValues : public ::testing::TestWithParam<Case> {};

TEST_P(ZmqValues, GraphOfBuiltinsBuffersAndArraysRoundTrips) {
  test::TempDir dir;
  static std::atomic<int> n{0};
  std::string url;
  if (GetParam().transport == "inproc") url = "inproc://zmq-values-" + std::to_string(n++);
  else if (GetParam().transport == "ipc") url = "ipc://" + (dir / "sock").string();
  else url = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  EndpointOptions o;
  o.zmq.linger = 0ms;
  o.zmq.compress = GetParam().compress;
  Receiver rx = Receiver::bind(url, o);
  Sender tx = Sender::connect(url, o);

  // Compressible: a writable float64 arange and a readonly, mostly-zero int32 array.
  constexpr std::int64_t kDoubles = 200000, kInts = 100000;
  std::vector<double> doubles(kDoubles);
  std::iota(doubles.begin(), doubles.end(), 0.0);
  NDArray f64 = NDArray::take(std::move(doubles), {kDoubles / 100, 100});
  NDArray i32_mut = NDArray::allocate(DType::of<std::int32_t>(), {kInts});
  for (std::int64_t i = 0; i < kInts; i += 1000) i32_mut.as_mutable<std::int32_t>()[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i);
  NDArray i32 = NDArray::from_buffer(i32_mut.data.as_readonly(), i32_mut.dtype, i32_mut.shape);
  // Incompressible: random PickleBuffers, one writable, one readonly. In-band: a small array.
  Buffer pb = random_bytes(300000, 1, false), pb_ro = random_bytes(100000, 2, true);
  NDArray small = NDArray::allocate(DType::of<float>(), {10});
  small.as_mutable<float>()[3] = 2.5f;

  Value graph = Value::dict({{"name", "job-7"},
                             {"n", 42},
                             {"pi", 3.25},
                             {"tags", Value::list({1, "two", Value(), Value::bytes("three")})},
                             {"f64", Value::ndarray(f64)},
                             {"i32", Value::ndarray(i32)},
                             {"pb", Value::pickle_buffer(pb)},
                             {"pb_ro", Value::pickle_buffer(pb_ro)},
                             {"small", Value::ndarray(small)}});
  send_value(tx, graph, 5000ms);
  std::optional<Value> got = recv_value(rx, 5000ms);
  ASSERT_TRUE(got);

  EXPECT_EQ(got->get("name").as_str(), "job-7");
  EXPECT_EQ(got->get("n").as_int(), 42);
  EXPECT_EQ(got->get("pi").as_float(), 3.25);
  Value tags = got->get("tags");
  EXPECT_EQ(tags[0].as_int(), 1);
  EXPECT_EQ(tags[1].as_str(), "two");
  EXPECT_TRUE(tags[2].is_none());
  EXPECT_EQ(tags[3].as_bytes(), "three");

  const NDArray& rf64 = got->get("f64").as_ndarray();
  EXPECT_EQ(rf64.shape, (std::vector<std::int64_t>{kDoubles / 100, 100}));
  auto d = rf64.as<double>();
  ASSERT_EQ(d.size(), std::size_t(kDoubles));
  for (std::size_t i = 0; i < d.size(); ++i) ASSERT_EQ(d[i], double(i)) << i;
  EXPECT_FALSE(rf64.readonly());
  const NDArray& ri32 = got->get("i32").as_ndarray();
  EXPECT_TRUE(ri32.readonly());
  EXPECT_TRUE(std::equal(ri32.as<std::int32_t>().begin(), ri32.as<std::int32_t>().end(), i32.as<std::int32_t>().begin(),
                         i32.as<std::int32_t>().end()));
  const Buffer& rpb = got->get("pb").as_buffer();
  EXPECT_TRUE(same_bytes(rpb, pb));
  EXPECT_FALSE(rpb.readonly());
  const Buffer& rpb_ro = got->get("pb_ro").as_buffer();
  EXPECT_TRUE(same_bytes(rpb_ro, pb_ro));
  EXPECT_TRUE(rpb_ro.readonly());
  EXPECT_EQ(got->get("small").as_ndarray().as<float>()[3], 2.5f);

  // Ledger: four buffers out-of-band, the small array in-band.
  const std::uint64_t compressible = f64.nbytes() + i32.nbytes(), incompressible = pb.size() + pb_ro.size();
  CopyLedger s = tx.stats().ledger, r = rx.stats().ledger;
  EXPECT_EQ(s.messages, 1u);
  EXPECT_EQ(r.messages, 1u);
  EXPECT_EQ(s.oob_buffers, 4u);
  EXPECT_EQ(r.oob_buffers, 4u);
  EXPECT_EQ(s.oob_bytes, compressible + incompressible);
  EXPECT_EQ(r.oob_bytes, s.oob_bytes);
  EXPECT_EQ(s.copied(CopyReason::inband_below_threshold), small.nbytes());
  if (GetParam().compress) {
    EXPECT_EQ(s.copied(CopyReason::compressed), compressible);  // the sampler skips the random buffers
    EXPECT_EQ(s.copies[std::size_t(CopyReason::compressed)], 2u);
    EXPECT_EQ(r.copies[std::size_t(CopyReason::decompressed)], 2u);
    EXPECT_LT(r.copied(CopyReason::decompressed), compressible / 10);  // wire bytes in
    EXPECT_EQ(s.zero_copy_bytes, incompressible);
    EXPECT_EQ(r.zero_copy_bytes, incompressible);
    EXPECT_LT(tx.stats().wire_bytes, incompressible + compressible / 10);
  } else {
    EXPECT_EQ(s.total_copied_bytes(), small.nbytes());
    EXPECT_EQ(r.total_copied_bytes(), 0u);
    EXPECT_EQ(s.zero_copy_bytes, compressible + incompressible);
    EXPECT_EQ(r.zero_copy_bytes, compressible + incompressible);
    if (GetParam().transport == "inproc") {
      // inproc hands the very memory over: the received array IS the sent one.
      EXPECT_EQ(rf64.data.data(), f64.data.data());
      EXPECT_EQ(rpb.data(), pb.data());
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Transports, ZmqValues,
                         ::testing::Values(Case{"inproc", false}, Case{"ipc", false}, Case{"tcp", false},
                                           Case{"inproc", true}, Case{"ipc", true}, Case{"tcp", true}),
                         [](const auto& param_info) { return param_info.param.transport + (param_info.param.compress ? "_lz4" : "_raw"); });

}  // namespace
