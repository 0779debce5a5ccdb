// C++ endpoints against the pure-Python peer (python/picklewire/wire.py: pyzmq + stdlib + lz4)
// in another process, both directions, compression on and off, and the peer killed mid-stream.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <tuple>

#include "child_role.hpp"
#include "picklewire/endpoint.hpp"
#include "picklewire/errors.hpp"
#include "support.hpp"

using namespace picklewire;
using namespace std::chrono_literals;

namespace {

const std::string kWire = std::string(PICKLEWIRE_TEST_DIR) + "/../python/picklewire/wire.py";

std::vector<std::string> python_peer(std::vector<std::string> args) {
  std::vector<std::string> argv = {PICKLEWIRE_PYTHON, kWire};
  argv.insert(argv.end(), args.begin(), args.end());
  return argv;
}

EndpointOptions quick_options() {
  EndpointOptions o;
  o.zmq.linger = 0ms;
  return o;
}

const char* kExpr =
    "[numpy.arange(50000, dtype='float64'), bytearray(b'x' * 10000), {'k': numpy.ones((300, 300), dtype='int32')}, "
    "numpy.arange(1000, dtype='int16'), 'small']";

// Writes the Message where a Python oracle can load it and compares with kExpr.
void expect_python_loads(const Message& m, const std::string& expr) {
  test::TempDir dir;
  test::write_file(dir / "stream", m.stream.chars());
  for (std::size_t i = 0; i < m.buffers.size(); ++i) test::write_file(dir / ("b" + std::to_string(i)), m.buffers[i].chars());
  std::string script =
      "import pickle, numpy, sys\n"
      "sys.path.insert(0, '" + std::string(PICKLEWIRE_TEST_DIR) + "/../python/picklewire')\n"
      "import wire\n"
      "d = '" + dir.path().string() + "'\n"
      "bufs = [open(d + '/b%d' % i, 'rb').read() for i in range(" + std::to_string(m.buffers.size()) + ")]\n"
      "obj = pickle.loads(open(d + '/stream', 'rb').read(), buffers=bufs)\n"
      "print('ok' if wire._equal(obj, " + expr + ") else 'mismatch %r' % (obj,))\n";
  EXPECT_EQ(test::run_python(script), "ok\n");
}

// CPython's own protocol-5 pickle of `expr` with its out-of-band buffers, as a Message.
Message python_pickle(const std::string& expr) {
  std::string script =
      "import pickle, numpy, sys, struct\n"
      "bufs = []\n"
      "s = pickle.dumps(" + expr + ", protocol=5, buffer_callback=lambda b: bufs.append(b) if b.raw().nbytes >= 4096 else True)\n"
      "out = sys.stdout.buffer\n"
      "out.write(struct.pack('<QI', len(s), len(bufs)) + s)\n"
      "for b in bufs:\n"
      "    r = b.raw(); out.write(struct.pack('<QB', r.nbytes, r.readonly) + bytes(r))\n";
  std::string out = test::run_python(script);
  auto u64 = [&](std::size_t at) { std::uint64_t v; std::memcpy(&v, out.data() + at, 8); return v; };
  std::uint64_t len = u64(0);
  std::uint32_t count;
  std::memcpy(&count, out.data() + 8, 4);
  Message m;
  m.stream = Buffer::copy(out.substr(12, len), true);
  std::size_t at = 12 + len;
  for (std::uint32_t i = 0; i < count; ++i) {
    std::uint64_t n = u64(at);
    bool readonly = out[at + 8] != 0;
    Buffer b = Buffer::copy(out.data() + at + 9, n, readonly);
    m.buffers.push_back(b);
    at += 9 + n;
  }
  return m;
}

}  // namespace

// (compress, wire version): both peers write either version and read both.
class PythonPeer : public ::testing::TestWithParam<std::tuple<bool, int>> {
 protected:
  bool compress() const { return std::get<0>(GetParam()); }
  int version() const { return std::get<1>(GetParam()); }
};

TEST_P(PythonPeer, PythonSendsCppReceives) {
  test::TempDir dir;
  std::string url = "ipc://" + (dir / "py2cpp").string();
  Receiver rx = Receiver::bind(url, quick_options());
  std::vector<std::string> args = {"send", url, "--count", "3", "--expr", kExpr, "--wire-version", std::to_string(version())};
  if (compress()) args.push_back("--compress");
  test::Child py = test::spawn(python_peer(args));
  for (int i = 0; i < 3; ++i) {
    auto m = rx.recv(20000ms);
    ASSERT_TRUE(m) << "no message from the Python peer";
    ASSERT_EQ(m->buffers.size(), 2u);  // the float64 and int32 arrays; the 2000-byte int16 array and the bytearray are in-band
    EXPECT_EQ(m->buffers[0].size(), 400000u);
    if (i == 0) expect_python_loads(*m, kExpr);
  }
  EXPECT_EQ(py.wait(20000ms), 0);
  if (compress()) {
    EXPECT_GT(rx.stats().ledger.copied(CopyReason::decompressed), 0u);
  } else {
    EXPECT_EQ(rx.stats().ledger.zero_copy_buffers, 6u);
  }
}

TEST_P(PythonPeer, CppSendsPythonReceives) {
  test::TempDir dir;
  std::string url = "ipc://" + (dir / "cpp2py").string();
  Message m = python_pickle(kExpr);
  ASSERT_EQ(m.buffers.size(), 2u);
  test::Child py = test::spawn(python_peer({"recv", url, "--count", "2", "--expect", kExpr}));
  EndpointOptions o = quick_options();
  o.zmq.compress = compress();
  o.zmq.wire_version = version();
  // Version 2 uncompressed: put even the large buffers inside frame 0, so the Python peer decodes
  // inline buffers (and the stream) from one frame.
  if (version() == 2 && !compress()) o.zmq.inline_max_bytes = std::size_t(1) << 20;
  Sender tx = Sender::connect(url, o);
  tx.send(m, 20000ms);
  tx.send(m, 20000ms);
  EXPECT_EQ(py.wait(20000ms), 0) << "the Python peer rejected or mis-decoded our message";
  if (version() == 2 && !compress()) {
    EXPECT_EQ(tx.stats().ledger.copied(CopyReason::travelled_inline), 2 * m.out_of_band_bytes());
  }
  if (compress()) {
    EXPECT_GT(tx.stats().ledger.copied(CopyReason::compressed), 0u);
  }
}

INSTANTIATE_TEST_SUITE_P(CompressionAndWireVersion, PythonPeer, ::testing::Combine(::testing::Bool(), ::testing::Values(1, 2)),
                         [](const auto& param_info) {
                           return std::string(std::get<0>(param_info.param) ? "lz4" : "raw") + "_v" +
                                  std::to_string(std::get<1>(param_info.param));
                         });

TEST(PythonPeerRobustness, PeerKilledMidStreamLosesNothingDelivered) {
  test::TempDir dir;
  std::string url = "ipc://" + (dir / "killed").string();
  Receiver rx = Receiver::bind(url, quick_options());
  {
    test::Child py = test::spawn(python_peer({"send", url, "--count", "0", "--expr", "numpy.arange(200000, dtype='float64')"}));
    for (int i = 0; i < 5; ++i) {
      auto m = rx.recv(20000ms);
      ASSERT_TRUE(m);
      ASSERT_EQ(m->buffers.size(), 1u);
      ASSERT_EQ(m->buffers[0].size(), 1600000u);
    }
    py.signal(SIGKILL);
    EXPECT_EQ(py.wait(5000ms), 128 + SIGKILL);
  }
  // Whatever was in flight is either a whole message or nothing: never an error, never a hang.
  int drained = 0;
  while (auto m = rx.recv(300ms)) {
    ASSERT_EQ(m->buffers.at(0).size(), 1600000u);
    ++drained;
  }
  // The receiver keeps serving: a new peer's message arrives.
  test::Child again = test::spawn(python_peer({"send", url, "--count", "1", "--expr", "numpy.arange(10.0)"}));
  auto m = rx.recv(20000ms);
  ASSERT_TRUE(m);
  expect_python_loads(*m, "numpy.arange(10.0)");
  EXPECT_EQ(again.wait(20000ms), 0);
}

TEST(PythonPeerRobustness, PeerWithoutLz4RefusesCompressedMessagesClearly) {
  // A Python without the lz4 module (simulated by hiding it) must refuse, not misread.
  test::TempDir dir;
  std::string url = "ipc://" + (dir / "nolz4").string();
  test::write_file(dir / "lz4.py", "raise ImportError('hidden for the test')\n");
  std::string script = "import sys; sys.path.insert(0, '" + dir.path().string() + "'); sys.argv = ['wire.py'] + sys.argv[1:]; "
                       "exec(open('" + kWire + "').read())";
  test::Child py = test::spawn({PICKLEWIRE_PYTHON, "-c", script, "recv", url, "--count", "1"});
  EndpointOptions o = quick_options();
  o.zmq.compress = true;
  Sender tx = Sender::connect(url, o);
  Message m = python_pickle("numpy.zeros(100000)");
  tx.send(m, 20000ms);
  EXPECT_EQ(py.wait(20000ms), 3);  // WireError exit status
}
