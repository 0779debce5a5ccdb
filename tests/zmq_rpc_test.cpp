// Request/reply over DEALER/ROUTER: replies routed to the right request, worker pools of threads
// and of processes, value-level calls, compression negotiated by the request header.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "picklewire/errors.hpp"
#include "picklewire/rpc.hpp"
#include "child_role.hpp"
#include "support.hpp"
#include "zmq_support.hpp"
#include "zmq/context.hpp"
#include "zmq/message_frames.hpp"
#include <filesystem>
#include <map>
#include <set>
#include <zmq_addon.hpp>


using namespace picklewire;
using namespace std::chrono_literals;

namespace {

EndpointOptions quick_options() {
  EndpointOptions o;
  o.zmq.linger = 0ms;
  return o;
}

Message text(const std::string& s, std::size_t payload = 0, char fill = 'p') {
  Message m{Buffer::copy(s, true), {}};
  if (payload) m.buffers.push_back(Buffer::copy(std::string(payload, fill)));
  return m;
}

std::string unique_inproc(const std::string& stem) {
  static std::atomic<int> n{0};
  return "inproc://" + stem + "-" + std::to_string(n++);
}

}  // namespace

TEST(ZmqRpc, RepliesFindTheirRequestsWhateverTheOrder) {
  std::string url = unique_inproc("order");
  rpc::Server server = rpc::Server::bind(url, quick_options());
  rpc::Client client = rpc::Client::connect(url, quick_options());
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 5; ++i) ids.push_back(client.submit(text("q" + std::to_string(i), 100000, char('a' + i)), 5000ms));
  EXPECT_EQ(client.outstanding(), 5u);
  std::vector<rpc::Request> requests;
  for (int i = 0; i < 5; ++i) {
    auto r = server.recv(5000ms);
    ASSERT_TRUE(r);
    requests.push_back(std::move(*r));
  }
  // Answer in reverse order; each reply echoes its request's stream and payload.
  for (auto it = requests.rbegin(); it != requests.rend(); ++it) {
    Message reply = text("re:" + std::string(it->message().stream.chars()));
    reply.buffers = it->message().buffers;  // zero-copy: the received frames go straight back out
    it->reply(reply, 5000ms);
  }
  EXPECT_THROW(requests[0].reply(text("twice"), 1000ms), TransportError);
  for (int i : {2, 0, 4, 1, 3}) {
    auto reply = client.wait(ids[i], 5000ms);
    ASSERT_TRUE(reply);
    EXPECT_EQ(reply->stream.chars(), "re:q" + std::to_string(i));
    ASSERT_EQ(reply->buffers.size(), 1u);
    EXPECT_EQ(reply->buffers[0].chars(), std::string(100000, char('a' + i)));
  }
  EXPECT_EQ(client.outstanding(), 0u);
  EXPECT_FALSE(server.recv(10ms));
}

TEST(ZmqRpc, CallTimesOutWithoutAServer) {
  rpc::Client client = rpc::Client::bind(unique_inproc("nobody"), quick_options());
  EXPECT_THROW(client.call(text("hello"), 50ms), TimeoutError);
}

TEST(ZmqRpc, ThreadWorkerPoolOverIpcWithCompressedReplies) {
  test::TempDir dir;
  std::string url = "ipc://" + (dir / "pool").string();
  EndpointOptions o = quick_options();
  o.zmq.compress = true;
  rpc::Client coordinator = rpc::Client::bind(url, o);
  std::atomic<int> served[3] = {0, 0, 0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int w = 0; w < 3; ++w)
    workers.emplace_back([&, w] {
      rpc::Server server = rpc::Server::connect(url, o);
      while (!stop) {
        auto r = server.recv(50ms);
        if (!r) continue;
        ++served[w];
        // Reply: the request's payload (zeros compress well) plus the worker's number.
        Message reply = text(std::to_string(w));
        reply.buffers = r->message().buffers;
        r->reply(reply, 5000ms);
      }
    });
  std::this_thread::sleep_for(200ms);  // let all workers connect, so round-robin reaches each
  std::vector<std::uint64_t> ids;
  for (int i = 0; i < 30; ++i) {
    Message m = text("job");
    m.buffers.push_back(Buffer::copy(std::string(200000, '\0')));
    ids.push_back(coordinator.submit(m, 5000ms));
  }
  int replies = 0;
  while (coordinator.outstanding()) {
    auto r = coordinator.wait_any(10000ms);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->second.buffers.at(0).chars(), std::string(200000, '\0'));
    ++replies;
  }
  stop = true;
  for (auto& t : workers) t.join();
  EXPECT_EQ(replies, 30);
  for (auto& s : served) EXPECT_GT(s.load(), 0) << "a worker got no job";
  EXPECT_EQ(coordinator.stats().ledger.copies[size_t(CopyReason::compressed)], 30u);
  EXPECT_EQ(coordinator.stats().ledger.copies[size_t(CopyReason::decompressed)], 30u);  // replies compressed too
}

// Worker process body, started by ProcessWorkerPool (the environment says where).
PICKLEWIRE_CHILD_ROLE(zmq_rpc_worker) {
  const char* url = std::getenv("PICKLEWIRE_RPC_WORKER_URL");
  rpc::Server server = rpc::Server::connect(url, quick_options());
  for (;;) {
    auto r = server.recv(5000ms);
    if (!r) return;  // coordinator gone quiet: done
    if (r->message().stream.chars() == "ping") {
      r->reply(text("0 " + std::to_string(::getpid())), 1000ms);
      continue;
    }
    if (r->message().stream.chars() == "exit") {
      r->reply(text("bye"), 1000ms);
      return;
    }
    // Sum of the float64s in buffer 0, and this worker's pid.
    const Buffer& b = r->message().buffers.at(0);
    double sum = 0;
    for (std::size_t i = 0; i + 8 <= b.size(); i += 8) {
      double v;
      std::memcpy(&v, b.data() + i, 8);
      sum += v;
    }
    r->reply(text(std::to_string(sum) + " " + std::to_string(::getpid())), 5000ms);
  }
}

TEST(ZmqRpc, ProcessWorkerPool) {
  std::string url = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  rpc::Client coordinator = rpc::Client::bind(url, quick_options());
  std::vector<test::Child> workers;  // killed and reaped at the end, whatever the outcome
  for (int w = 0; w < 3; ++w) workers.emplace_back(test::spawn_role("zmq_rpc_worker", {"PICKLEWIRE_RPC_WORKER_URL=" + url}));
  // Ping until every worker has answered (they connect as their processes start), so that
  // DEALER's round-robin spreads the jobs over all of them.
  std::set<std::string> worker_pids;
  auto deadline = std::chrono::steady_clock::now() + 20s;
  while (worker_pids.size() < 3 && std::chrono::steady_clock::now() < deadline) {
    Message pong = coordinator.call(text("ping"), 10000ms);
    std::string s(pong.stream.chars());
    worker_pids.insert(s.substr(s.find(' ') + 1));
    std::this_thread::sleep_for(5ms);
  }
  ASSERT_EQ(worker_pids.size(), 3u);
  worker_pids.clear();
  std::map<std::uint64_t, double> expected;
  for (int i = 0; i < 24; ++i) {
    Message m = text("sum");
    Buffer b = Buffer::allocate(8 * 10000);
    double total = 0;
    for (int k = 0; k < 10000; ++k) {
      double v = i * 10000 + k;
      std::memcpy(b.mutable_data() + 8 * k, &v, 8);
      total += v;
    }
    m.buffers.push_back(b);
    expected[coordinator.submit(m, 10000ms)] = total;
  }
  while (coordinator.outstanding()) {
    auto r = coordinator.wait_any(20000ms);
    ASSERT_TRUE(r) << "a worker did not answer";
    std::string s(r->second.stream.chars());
    EXPECT_DOUBLE_EQ(std::stod(s.substr(0, s.find(' '))), expected.at(r->first));
    worker_pids.insert(s.substr(s.find(' ') + 1));
  }
  EXPECT_EQ(worker_pids.size(), 3u) << "jobs were not spread over all worker processes";
  for (int w = 0; w < 3; ++w) coordinator.submit(text("exit"), 5000ms);
  for (int w = 0; w < 3; ++w) EXPECT_TRUE(coordinator.wait_any(10000ms));
}

TEST(ZmqRpc, MalformedRequestIsAnErrorAndTheServerKeepsServing) {
  std::string url = unique_inproc("bad");
  rpc::Server server = rpc::Server::bind(url, quick_options());
  zmq::socket_t raw(zmq_transport::context(), zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.connect(url);
  std::array<zmq::const_buffer, 2> bad = {zmq::str_buffer("short-id"), zmq::str_buffer("junk")};
  zmq::send_multipart(raw, bad);
  EXPECT_THROW(server.recv(5000ms), TransportError);
  rpc::Client client = rpc::Client::connect(url, quick_options());
  std::uint64_t id = client.submit(text("ok"), 5000ms);
  auto r = server.recv(5000ms);
  ASSERT_TRUE(r);
  r->reply(text("fine"));
  EXPECT_EQ(client.wait(id, 5000ms)->stream.chars(), "fine");
}

// Negotiation: the server (writing version 2) answers a version-1 request in version 1, so a
// client built before version 2 can read its reply; a version-2 request gets a version-2 reply.
TEST(ZmqRpc, ReplyUsesNoNewerWireVersionThanTheRequest) {
  std::string url = unique_inproc("version");
  rpc::Server server = rpc::Server::bind(url, quick_options());
  zmq::socket_t raw(zmq_transport::context(), zmq::socket_type::dealer);
  raw.set(zmq::sockopt::linger, 0);
  raw.set(zmq::sockopt::rcvtimeo, 5000);
  raw.connect(url);
  for (int version : {1, 2}) {
    EndpointOptions o = quick_options();
    o.zmq.wire_version = version;
    std::vector<zmq::message_t> frames;
    std::uint64_t id = 40 + version;
    frames.emplace_back(&id, 8);  // the request id, little-endian on this host
    CopyLedger ledger;
    zmq_transport::FrameWriter(o.zmq).write(text("hello"), frames, ledger);
    ASSERT_TRUE(zmq_transport::send_frames(raw, frames));
    auto r = server.recv(5000ms);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->message().stream.chars(), "hello");
    r->reply(text("answer"), 5000ms);
    std::vector<zmq::message_t> reply;
    ASSERT_TRUE(zmq::recv_multipart(raw, std::back_inserter(reply)));
    ASSERT_GE(reply.size(), 2u);
    EXPECT_EQ(static_cast<const std::uint8_t*>(reply[1].data())[4], version) << "reply to a version-" << version << " request";
    EXPECT_EQ(reply.size(), version == 1 ? 3u : 2u);  // id + header + stream, or id + one frame
  }
}

TEST(ZmqRpc, BindToAnyPortAndReportTheEndpoint) {
  rpc::Client coordinator = rpc::Client::bind("tcp://127.0.0.1:*", quick_options());
  std::string endpoint = coordinator.endpoint();
  ASSERT_EQ(endpoint.rfind("tcp://127.0.0.1:", 0), 0u) << endpoint;
  int port = std::stoi(endpoint.substr(std::string("tcp://127.0.0.1:").size()));
  EXPECT_GT(port, 0);
  rpc::Server server = rpc::Server::connect(endpoint, quick_options());
  std::thread serve([&] {
    if (auto r = server.recv(10000ms)) r->reply(text("pong"), 5000ms);
  });
  EXPECT_EQ(coordinator.call(text("ping"), 10000ms).stream.chars(), "pong");
  serve.join();
}
