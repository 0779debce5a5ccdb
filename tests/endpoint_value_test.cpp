// Value-level calls across two processes: Sender::send(const Value&) / Receiver::recv_value(), and
// Sender::allocate_array. The receiver runs in this process; the sender is a fresh exec of this
// test binary (its child role endpoint_value_sender), so it is a real second process that shares no
// state with this one (a forked child would inherit ZeroMQ's context, unusable after fork).
//
// The same test bodies run over shm:// and ipc://; what differs is where heap buffers go (shm:
// copied into the segment once; zmq: handed to ZeroMQ as they are) and where received memory lives.
#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "picklewire/endpoint.hpp"
#include "picklewire/ndarray.hpp"
#include "picklewire/repr.hpp"
#include "picklewire/values.hpp"
#include "child_role.hpp"
#include "shm_support.hpp"

namespace picklewire {
namespace {

using namespace std::chrono_literals;
using test::fill_pattern;
using test::wait_child;

constexpr const char* kPeerEnv = "PICKLEWIRE_VALUE_PEER";  // "<scenario> <url>" for the sender process
constexpr std::size_t kThreshold = 4096;  // EndpointOptions::inband_threshold by default (checked in the first test)

// The byte counts the graph below is made of, by how each buffer travels.
constexpr std::size_t kSmallBuffer = 100;                      // in-band (below the threshold)
constexpr std::size_t kSmallArray = 3 * 4 * sizeof(double);    // in-band
constexpr std::size_t kLoanBuffer = std::size_t(1) << 20;      // Sender::allocate
constexpr std::int64_t kLoanRows = 256, kLoanCols = 300;       // Sender::allocate_array, float64
constexpr std::size_t kLoanArray = kLoanRows * kLoanCols * sizeof(double);
constexpr std::size_t kHeapBuffer = 200000;                    // heap memory, readonly
constexpr std::int64_t kHeapRows = 100, kHeapCols = 70;        // heap int32, Fortran order
constexpr std::size_t kHeapArray = kHeapRows * kHeapCols * sizeof(std::int32_t);
static_assert(kSmallBuffer < kThreshold && kSmallArray < kThreshold && kHeapArray >= kThreshold);

// ---------------------------------------------------------------- the graph

void fill(const Buffer& b, std::uint64_t seed) { fill_pattern(b.mutable_data(), b.size(), seed); }

template <class T>
void fill_values(const NDArray& a, double scale) {
  std::span<T> v = a.as_mutable<T>();
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<T>(static_cast<double>(i) * scale);
}

// A dict of str / int / float / nested containers holding two in-band buffers, two loaned and two
// heap ones. With a `lender` the loaned parts come from it; without, from the heap: the value the
// receiver expects (equal() compares bytes, not where they live), where the small writable
// PickleBuffer is a bytearray, as pickle writes an in-band writable buffer.
Value make_graph(Sender* lender) {
  Buffer small = Buffer::allocate(kSmallBuffer);
  fill(small, 1);
  NDArray small_array = NDArray::allocate(DType::of<double>(), {3, 4});
  fill_values<double>(small_array, 0.5);

  Buffer loan = lender ? lender->allocate(kLoanBuffer) : Buffer::allocate(kLoanBuffer);
  fill(loan, 2);
  NDArray loan_array = lender ? allocate_array(*lender, DType::of<double>(), {kLoanRows, kLoanCols})
                              : NDArray::allocate(DType::of<double>(), {kLoanRows, kLoanCols});
  fill_values<double>(loan_array, 0.25);

  Buffer heap = Buffer::allocate(kHeapBuffer);
  fill(heap, 3);
  NDArray heap_array = NDArray::allocate(DType::of<std::int32_t>(), {kHeapRows, kHeapCols}, Order::F);
  fill_values<std::int32_t>(heap_array, 3);

  return Value::dict({
      {"name", "frame-7"},
      {"seq", 7},
      {"meta", Value::dict({{"tags", Value::list({"raw", Value::str("ünïcode")})},
                            {"ratio", 0.5},
                            {"shape", Value::tuple({kLoanRows, kLoanCols})}})},
      {"small", Value::list({lender ? Value::pickle_buffer(small) : Value::bytearray(small.chars()),
                             Value::ndarray(small_array)})},
      {"loaned", Value::list({Value::pickle_buffer(loan), Value::ndarray(loan_array)})},
      {"heap", Value::list({Value::pickle_buffer(heap.as_readonly()), Value::ndarray(heap_array)})},
  });
}

// ---------------------------------------------------------------- the peer process

// Sender side of each scenario. Runs in the exec'd peer; gtest assertions there set its exit code.
void run_sender(const std::string& scenario, const std::string& url) {
  // "graph" checks the ledger of ZeroMQ frames; on one host, the same-host path would take its
  // large message through shared memory instead (tests/zmq_same_host_test.cpp covers that).
  EndpointOptions options;
  options.zmq.same_host = scenario != "graph";
  Sender tx = Sender::connect(url, options);
  const bool shm = url.rfind("shm://", 0) == 0;
  if (scenario == "graph") {
    send_value(tx, make_graph(&tx), 10s);
    const CopyLedger l = tx.stats().ledger;
    EXPECT_EQ(l.messages, 1u);
    EXPECT_EQ(l.copied(CopyReason::inband_below_threshold), kSmallBuffer + kSmallArray);
    EXPECT_EQ(l.copies[static_cast<std::size_t>(CopyReason::inband_below_threshold)], 2u);
    EXPECT_EQ(l.oob_buffers, 4u);
    EXPECT_EQ(l.oob_bytes, kLoanBuffer + kLoanArray + kHeapBuffer + kHeapArray);
    if (shm) {  // heap buffers are copied into the segment once, loans not at all
      EXPECT_EQ(l.zero_copy_bytes, kLoanBuffer + kLoanArray);
      EXPECT_EQ(l.copied(CopyReason::copied_into_segment), kHeapBuffer + kHeapArray);
      EXPECT_EQ(l.total_copied_bytes(), kSmallBuffer + kSmallArray + kHeapBuffer + kHeapArray);
    } else {  // ZeroMQ takes owned memory (loans are heap there) without copying
      EXPECT_EQ(l.zero_copy_bytes, kLoanBuffer + kLoanArray + kHeapBuffer + kHeapArray);
      EXPECT_EQ(l.total_copied_bytes(), kSmallBuffer + kSmallArray);
    }
  } else if (scenario == "array") {
    NDArray a = allocate_array(tx, DType::of<double>(), {512, 1024});
    std::span<double> v = a.as_mutable<double>();
    for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<double>(i) * 1.5 - 7;
    const void* where = a.data.data();
    send_value(tx, Value::ndarray(a), 10s);
    EXPECT_EQ(a.data.data(), where);
    const CopyLedger l = tx.stats().ledger;
    EXPECT_EQ(l.total_copied_bytes(), 0u);
    EXPECT_EQ(l.zero_copy_buffers, 1u);
    EXPECT_EQ(l.zero_copy_bytes, v.size_bytes());
  } else {
    FAIL() << "unknown scenario " << scenario;
  }
}

PICKLEWIRE_CHILD_ROLE(endpoint_value_sender) {
  const char* spec = std::getenv(kPeerEnv);
  ASSERT_NE(spec, nullptr) << "run by EndpointValue tests with " << kPeerEnv << " set";
  std::istringstream in(spec);
  std::string scenario, url;
  in >> scenario >> url;
  run_sender(scenario, url);
}

// Starts this binary again as the sender of `scenario`.
pid_t spawn_sender(const std::string& scenario, const std::string& url) {
  return test::spawn_role("endpoint_value_sender", {std::string(kPeerEnv) + "=" + scenario + " " + url});
}

// ---------------------------------------------------------------- the receiver (this process)

// True when [p, p+n) lies in a mapping of the channel's /dev/shm file (/proc/self/maps).
bool in_shm_mapping(const void* p, std::size_t n, const std::string& channel) {
  std::ifstream maps("/proc/self/maps");
  const auto addr = reinterpret_cast<std::uintptr_t>(p);
  for (std::string line; std::getline(maps, line);) {
    if (line.find("/dev/shm/picklewire." + channel) == std::string::npos) continue;
    std::uintptr_t lo = 0, hi = 0;
    char dash = 0;
    std::istringstream(line) >> std::hex >> lo >> dash >> hi;
    if (addr >= lo && addr + n <= hi) return true;
  }
  return false;
}

// A receiving endpoint for one test: a unique shm:// channel or ipc:// socket path, removed after.
class Transport {
 public:
  explicit Transport(const std::string& scheme) : shm_(scheme == "shm"), channel_("value") {
    if (shm_) {
      url_ = channel_.url();
    } else {
      path_ = std::filesystem::temp_directory_path() / ("pw-value-" + channel_.name() + ".ipc");
      url_ = "ipc://" + path_.string();
    }
  }
  ~Transport() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove(path_, ec);
  }
  bool shm() const { return shm_; }
  const std::string& url() const { return url_; }
  const std::string& channel() const { return channel_.name(); }

 private:
  bool shm_;
  test::UniqueChannel channel_;
  std::filesystem::path path_;
  std::string url_;
};

EndpointOptions receiver_options() {
  EndpointOptions o;
  o.shm.capacity = std::size_t(16) << 20;
  return o;
}

// Binds a receiver on the parameter's transport; value_from() runs a sender scenario against it.
class EndpointValue : public ::testing::TestWithParam<std::string> {
 protected:
  std::optional<Value> value_from(const std::string& scenario) {
    pid_t peer = spawn_sender(scenario, t.url());
    std::optional<Value> got = recv_value(rx, 20s);
    EXPECT_EQ(wait_child(peer, 20s), 0) << "the sender process failed (its output is above)";
    return got;
  }
  Transport t{GetParam()};
  Receiver rx = Receiver::bind(t.url(), receiver_options());
};

TEST_P(EndpointValue, GraphWithInBandLoanedAndHeapBuffers) {
  ASSERT_EQ(kThreshold, EndpointOptions{}.inband_threshold);  // the sizes above straddle the default
  std::optional<Value> got = value_from("graph");
  ASSERT_TRUE(got);

  EXPECT_TRUE(equal(*got, make_graph(nullptr))) << repr(*got).substr(0, 400);
  EXPECT_EQ(got->get("name").as_str(), "frame-7");
  EXPECT_EQ(got->get("meta").get("tags")[1].as_str(), "ünïcode");

  {  // views of the received value, dropped before the lease check below
  const Value loaned = got->get("loaned"), heap = got->get("heap"), small = got->get("small");
  ASSERT_TRUE(loaned[0].is(Kind::PickleBuffer));
  ASSERT_TRUE(loaned[1].is(Kind::NDArray));
  const NDArray& loan_array = loaned[1].as_ndarray();
  EXPECT_EQ(loan_array.dtype.str(), "<f8");
  EXPECT_EQ(loan_array.shape, (std::vector<std::int64_t>{kLoanRows, kLoanCols}));
  EXPECT_EQ(loan_array.as<double>()[1000], 250.0);
  EXPECT_FALSE(loan_array.readonly());  // sent writable: the receiver owns the memory
  const NDArray& heap_array = heap[1].as_ndarray();
  EXPECT_TRUE(heap_array.is_f_contiguous());
  EXPECT_EQ(heap_array.as<std::int32_t>()[99], 297);
  EXPECT_TRUE(heap[0].as_buffer().readonly());
  EXPECT_EQ(small[1].as_ndarray().as<double>()[11], 5.5);
  EXPECT_TRUE(small[0].is(Kind::ByteArray));  // in-band, writable
  if (t.shm()) {  // zero copy on receive: every out-of-band byte is read where the sender wrote it
    EXPECT_TRUE(in_shm_mapping(loan_array.data.data(), loan_array.nbytes(), t.channel()));
    EXPECT_TRUE(in_shm_mapping(loaned[0].as_buffer().data(), kLoanBuffer, t.channel()));
    EXPECT_TRUE(in_shm_mapping(heap_array.data.data(), kHeapArray, t.channel()));
    EXPECT_TRUE(in_shm_mapping(heap[0].as_buffer().data(), kHeapBuffer, t.channel()));
    EXPECT_FALSE(in_shm_mapping(&loaned, 1, t.channel()));  // the check can say no
  }
  }

  const CopyLedger l = rx.stats().ledger;
  EXPECT_EQ(l.messages, 1u);
  EXPECT_EQ(l.oob_buffers, 4u);
  EXPECT_EQ(l.total_copied_bytes(), 0u);
  EXPECT_EQ(l.zero_copy_bytes, kLoanBuffer + kLoanArray + kHeapBuffer + kHeapArray);
  if (t.shm()) {
    EXPECT_GE(rx.stats().slots_in_use, 1u);
    got.reset();  // the value's views were the last leases
    EXPECT_EQ(rx.stats().slots_in_use, 0u);
  }
}

TEST_P(EndpointValue, AllocateArraySendsAnNDArrayWithoutCopying) {
  std::optional<Value> got = value_from("array");
  ASSERT_TRUE(got);
  ASSERT_TRUE(got->is(Kind::NDArray)) << to_string(got->kind());
  const NDArray& a = got->as_ndarray();
  EXPECT_EQ(a.dtype, DType::of<double>());
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{512, 1024}));
  std::span<const double> v = a.as<double>();
  ASSERT_EQ(v.size(), 512u * 1024u);
  std::size_t wrong = 0;
  for (std::size_t i = 0; i < v.size(); ++i) wrong += v[i] != static_cast<double>(i) * 1.5 - 7;
  EXPECT_EQ(wrong, 0u);
  EXPECT_EQ(rx.stats().ledger.total_copied_bytes(), 0u);
  EXPECT_EQ(rx.stats().ledger.zero_copy_bytes, v.size_bytes());
  if (t.shm()) {
    EXPECT_TRUE(in_shm_mapping(v.data(), v.size_bytes(), t.channel()));
  }
}

std::string transport_name(const ::testing::TestParamInfo<std::string>& param) { return param.param; }
INSTANTIATE_TEST_SUITE_P(Transports, EndpointValue, ::testing::Values("shm", "ipc"), transport_name);

// In one process: the helper's checks and layout (no peer needed).
TEST(AllocateArray, LayoutAndBadShapes) {
  test::UniqueChannel ch("arr");
  EndpointOptions options;
  options.shm.capacity = std::size_t(4) << 20;
  Receiver rx = Receiver::bind(ch.url(), options);
  Sender tx = Sender::connect(ch.url());
  NDArray f = allocate_array(tx, DType::of<float>(), {3, 5}, Order::F);
  EXPECT_TRUE(f.is_f_contiguous());
  EXPECT_EQ(f.nbytes(), 60u);
  EXPECT_EQ(f.data.size(), 60u);
  EXPECT_FALSE(f.readonly());
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(f.data.data()) % 64, 0u);
  EXPECT_TRUE(in_shm_mapping(f.data.data(), f.nbytes(), ch.name()));
  NDArray empty = allocate_array(tx, DType::of<std::int16_t>(), {0, 4});
  EXPECT_EQ(empty.nbytes(), 0u);
  EXPECT_THROW(allocate_array(tx, DType::of<double>(), {-1}), Error);
  EXPECT_THROW(allocate_array(tx, DType::of<double>(), {std::int64_t(1) << 40, std::int64_t(1) << 40}), Error);
  EXPECT_THROW(allocate_array(tx, DType::of<double>(), {std::int64_t(1) << 30}), TransportError);  // 8 GiB > 4 MiB
}

}  // namespace
}  // namespace picklewire
