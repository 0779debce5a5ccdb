// Dead peers on ZeroMQ: with heartbeats on, a PUSH Sender whose receiver process died (SIGKILL) or
// froze (SIGSTOP: only heartbeats can tell) throws PeerGone from send once the grace period (the
// heartbeat timeout) has passed without a reconnect, instead of queueing or timing out silently.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <thread>

#include "picklewire/endpoint.hpp"
#include "picklewire/errors.hpp"
#include "child_role.hpp"
#include "support.hpp"
#include "zmq_support.hpp"


using namespace picklewire;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

constexpr auto kHeartbeat = 100ms;
constexpr auto kHeartbeatTimeout = 400ms;

EndpointOptions heartbeat_options() {
  EndpointOptions o;
  o.zmq.linger = 0ms;
  o.zmq.heartbeat = kHeartbeat;
  o.zmq.heartbeat_timeout = kHeartbeatTimeout;
  return o;
}


struct Case {
  std::string name;
  std::string transport;  // tcp | ipc
  bool sender_binds;
  int signal;             // SIGKILL: the process dies; SIGSTOP: it freezes with its connections open
};

class ZmqPeerGone : public ::testing::TestWithParam<Case> {};

}  // namespace

// Receiver process body, started by ZmqPeerGone (the environment says where).
PICKLEWIRE_CHILD_ROLE(zmq_peer_gone_receiver) {
  const char* url = std::getenv("PICKLEWIRE_PEER_GONE_URL");
  bool bind = std::string(std::getenv("PICKLEWIRE_PEER_GONE_BIND")) == "1";
  std::string ready = std::getenv("PICKLEWIRE_PEER_GONE_READY");
  Receiver rx = bind ? Receiver::bind(url, heartbeat_options()) : Receiver::connect(url, heartbeat_options());
  pid_t parent = ::getppid();
  for (auto until = Clock::now() + 30s; Clock::now() < until && ::getppid() == parent;)
    if (rx.recv(100ms) && !std::filesystem::exists(ready)) test::write_file(ready, "ready");
}

TEST_P(ZmqPeerGone, SendThrowsPeerGoneOnceTheReceiverIsGone) {
  const Case& c = GetParam();
  test::TempDir dir;
  std::string url = c.transport == "ipc" ? "ipc://" + (dir / "sock").string()
                                         : "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  std::filesystem::path ready = dir / "ready";
  std::optional<Sender> tx;
  if (c.sender_binds) tx.emplace(Sender::bind(url, heartbeat_options()));

  test::Child child{test::spawn_role("zmq_peer_gone_receiver",
                                     {"PICKLEWIRE_PEER_GONE_URL=" + url,
                                      std::string("PICKLEWIRE_PEER_GONE_BIND=") + (c.sender_binds ? "0" : "1"),
                                      "PICKLEWIRE_PEER_GONE_READY=" + ready.string()})};

  // Talk until the receiver has a message: the connection (and its handshake) is up.
  if (!c.sender_binds) {
    for (auto until = Clock::now() + 20s; Clock::now() < until;) {
      try {
        tx.emplace(Sender::connect(url, heartbeat_options()));
        break;
      } catch (const TransportError&) {  // ipc path not bound yet
        std::this_thread::sleep_for(20ms);
      }
    }
    ASSERT_TRUE(tx);
  }
  Message hello{Buffer::copy("hello"), {Buffer::copy(std::string(1000, 'x'))}};
  for (auto until = Clock::now() + 20s; !std::filesystem::exists(ready) && Clock::now() < until;) {
    try {
      tx->send(hello, 1000ms);
    } catch (const TimeoutError&) {  // a bound Sender waits for the process to start and connect
    }
    std::this_thread::sleep_for(20ms);
  }
  ASSERT_TRUE(std::filesystem::exists(ready)) << "the receiver process never got a message";

  ASSERT_TRUE(child.signal(c.signal));
  auto signalled = Clock::now();
  if (c.signal == SIGKILL) {
    EXPECT_EQ(child.wait(), 128 + SIGKILL);
  }
  // Sends may still be queued (for a reconnect) during the grace period; then PeerGone, even with
  // no timeout at all (a bound PUSH with no peer would otherwise block forever).
  int queued = 0;
  bool gone = false;
  while (!gone && Clock::now() - signalled < 10s) {
    try {
      tx->send(hello, std::nullopt);
      ++queued;
      std::this_thread::sleep_for(10ms);
    } catch (const PeerGone& e) {
      gone = true;
      EXPECT_NE(std::string(e.what()).find("no receiver connected to " + url), std::string::npos) << e.what();
    }
  }
  auto noticed = Clock::now() - signalled;
  ASSERT_TRUE(gone) << "send never threw PeerGone";
  EXPECT_GE(noticed, kHeartbeatTimeout - 50ms) << "PeerGone before the grace period";
  EXPECT_LT(noticed, 5s);
  // A frozen process keeps its connections open: only the missing heartbeat replies drop them
  // (after heartbeat_timeout), and the grace period starts then.
  if (c.signal == SIGSTOP) {
    EXPECT_GE(noticed, 2 * kHeartbeatTimeout - 50ms);
  }
  // It stays gone: the next send fails at once.
  auto t0 = Clock::now();
  EXPECT_THROW(tx->send(hello, 5000ms), PeerGone);
  EXPECT_LT(Clock::now() - t0, 200ms);
  std::cout << c.name << ": PeerGone after " << std::chrono::duration_cast<std::chrono::milliseconds>(noticed).count()
            << " ms, " << queued << " sends queued meanwhile\n";
}

INSTANTIATE_TEST_SUITE_P(Receivers, ZmqPeerGone,
                         ::testing::Values(Case{"tcp_sender_connects_receiver_killed", "tcp", false, SIGKILL},
                                           Case{"ipc_sender_binds_receiver_killed", "ipc", true, SIGKILL},
                                           Case{"tcp_sender_connects_receiver_frozen", "tcp", false, SIGSTOP},
                                           Case{"tcp_sender_binds_receiver_frozen", "tcp", true, SIGSTOP}),
                         [](const auto& param_info) { return param_info.param.name; });

TEST(ZmqPeerGoneNever, ANeverConnectedReceiverIsATimeoutNotPeerGone) {
  Sender tx = Sender::connect("tcp://127.0.0.1:" + std::to_string(test::free_tcp_port()), heartbeat_options());
  Sender bound = Sender::bind("tcp://127.0.0.1:" + std::to_string(test::free_tcp_port()), heartbeat_options());
  Message m{Buffer::copy("s"), {}};
  // Neither has anywhere to queue: a bound PUSH has no peer, a connecting one (ZMQ_IMMEDIATE, the
  // default since issue 16) hands messages only to a connected receiver.
  EXPECT_THROW(tx.send(m, 50ms), TimeoutError);
  EXPECT_THROW(bound.send(m, 50ms), TimeoutError);
  std::this_thread::sleep_for(kHeartbeatTimeout + 100ms);
  EXPECT_THROW(tx.send(m, 50ms), TimeoutError);
  EXPECT_THROW(bound.send(m, 50ms), TimeoutError);
  EXPECT_EQ(tx.stats().ledger.messages, 0u);
  EXPECT_EQ(bound.stats().ledger.messages, 0u);
  EXPECT_EQ(tx.stats().undelivered_messages, 2u);
}
