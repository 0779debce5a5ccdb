// Same-host peers under tcp:// and ipc:// (transport/zmq/same_host.hpp, docs/zmq.md "Same host"):
// large messages move through the receiver's shared-memory channel between real processes, loans
// come from that channel, either side can turn the path off, a restarted receiver is negotiated
// anew, a killed sender's slots are reclaimed, and lies from either side fall back or are refused.
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include <cstdlib>
#include <filesystem>
#include <string>
#include <thread>

#include "child_role.hpp"
#include "picklewire/endpoint.hpp"
#include "picklewire/errors.hpp"
#include "shm/mailbox.hpp"
#include "shm_support.hpp"
#include "support.hpp"
#include "zmq/message_frames.hpp"
#include "zmq/same_host.hpp"
#include "zmq/wire_header.hpp"
#include "zmq_support.hpp"

using namespace picklewire;
using namespace std::chrono_literals;
namespace zt = picklewire::zmq_transport;

namespace {

constexpr std::size_t kLarge = 256 << 10;  // above same_host_min_bytes (64 KiB)
constexpr std::size_t kSmall = 1 << 10;

EndpointOptions quick_options() {
  EndpointOptions o;
  o.zmq.linger = 1000ms;
  o.zmq.same_host_capacity = 16 << 20;  // small channels: the tests create several
  return o;
}

// Message i: stream "m<i>", one buffer (large except every third) filled from seed i.
std::size_t size_of(int i) { return i % 3 == 2 ? kSmall : kLarge; }
Message message_for(int i, Buffer buffer) {
  test::fill_pattern(buffer.mutable_data(), buffer.size(), std::uint64_t(i));
  return Message{Buffer::copy(std::string_view("m" + std::to_string(i))), {std::move(buffer)}};
}
void expect_message(const Message& m, int i) {
  ASSERT_EQ(std::string(reinterpret_cast<const char*>(m.stream.data()), m.stream.size()), "m" + std::to_string(i));
  ASSERT_EQ(m.buffers.size(), 1u);
  ASSERT_EQ(m.buffers[0].size(), size_of(i));
  std::vector<std::byte> want(size_of(i));
  test::fill_pattern(want.data(), want.size(), std::uint64_t(i));
  EXPECT_EQ(std::memcmp(m.buffers[0].data(), want.data(), want.size()), 0) << "message " << i;
}

int env_int(const char* name) { return std::atoi(std::getenv(name)); }

// /dev/shm files of ours still there: the receiver's channels (picklewire.zmq-PID-*) and
// senders' answer boxes (picklewire.hello-PID-*).
int leftovers(pid_t pid) {
  int n = 0;
  for (const auto& e : std::filesystem::directory_iterator("/dev/shm")) {
    const std::string f = e.path().filename().string();
    if (f.rfind("picklewire.zmq-" + std::to_string(pid) + "-", 0) == 0 ||
        f.rfind("picklewire.hello-" + std::to_string(pid) + "-", 0) == 0)
      ++n;
  }
  return n;
}

using SameHostTimeouts = zt::SameHostReceiver;

}  // namespace

// Sends COUNT messages (message_for), every fourth large one in a loan from Sender::allocate, and
// checks its own ledger: every large message through the channel (or, with EXPECT_FRAMES, none).
PICKLEWIRE_CHILD_ROLE(same_host_sender) {
  EndpointOptions o = quick_options();
  o.zmq.same_host = env_int("SAME_HOST_SENDER_ON") != 0;
  Sender tx = Sender::connect(std::getenv("SAME_HOST_URL"), o);
  const int count = env_int("SAME_HOST_COUNT");
  int large = 0, loans = 0;
  for (int i = 0; i < count; ++i) {
    const bool loan = size_of(i) == kLarge && i % 4 == 0;
    large += size_of(i) == kLarge;
    loans += loan;
    tx.send(message_for(i, loan ? tx.allocate(size_of(i)) : Buffer::allocate(size_of(i))), 20000ms);
  }
  const TransportStats s = tx.stats();
  if (env_int("SAME_HOST_EXPECT_FRAMES")) {
    EXPECT_EQ(s.ledger.same_host_messages, 0u);
    // A refusal is a fallback for every large message; a sender with the path off tries nothing.
    EXPECT_EQ(s.same_host_fallbacks, o.zmq.same_host ? std::uint64_t(large) : 0u);
  } else {
    EXPECT_EQ(s.ledger.same_host_messages, std::uint64_t(large));
    EXPECT_EQ(s.ledger.same_host_bytes, std::uint64_t(large) * kLarge);
    EXPECT_EQ(s.same_host_fallbacks, 0u);
    // Loans were allocated in the channel: sent without a copy; the rest copied in once.
    EXPECT_EQ(s.ledger.zero_copy_bytes, std::uint64_t(loans) * kLarge);
    EXPECT_EQ(s.ledger.copied(CopyReason::copied_into_segment), std::uint64_t(large - loans) * kLarge);
  }
}

class ZmqSameHost : public ::testing::TestWithParam<std::string> {
 protected:
  std::string url() {
    if (GetParam() == "ipc") return "ipc://" + (dir_ / ("sock" + std::to_string(sockets_++))).string();
    return "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  }
  test::TempDir dir_;
  int sockets_ = 0;
};

TEST_P(ZmqSameHost, LargeMessagesMoveThroughTheReceiversChannel) {
  const std::string u = url();
  constexpr int kCount = 30;
  {
    Receiver rx = Receiver::bind(u, quick_options());
    test::Child sender{test::spawn_role("same_host_sender", {"SAME_HOST_URL=" + u, "SAME_HOST_COUNT=" + std::to_string(kCount),
                                                       "SAME_HOST_SENDER_ON=1", "SAME_HOST_EXPECT_FRAMES=0"})};
    for (int i = 0; i < kCount; ++i) {
      std::optional<Message> m = rx.recv(20000ms);
      ASSERT_TRUE(m) << "message " << i;
      expect_message(*m, i);  // in order, across both paths
      if (size_of(i) == kLarge) {
        EXPECT_FALSE(m->buffers[0].readonly());  // a writable view of the channel
      }
    }
    EXPECT_EQ(sender.wait(), 0);
    const TransportStats s = rx.stats();
    const std::uint64_t large = 20;  // 30 messages, every third small
    EXPECT_EQ(s.ledger.same_host_messages, large);
    EXPECT_EQ(s.ledger.same_host_bytes, large * kLarge);
    EXPECT_EQ(s.ledger.zero_copy_bytes, large * kLarge + 10 * kSmall);  // channel views, and frames
    EXPECT_EQ(s.ledger.total_copied_bytes(), 0u);
    EXPECT_EQ(s.capacity, quick_options().zmq.same_host_capacity);
    EXPECT_EQ(s.slots_in_use, 0u);  // every message dropped: every slot back
    EXPECT_GT(leftovers(::getpid()), 0);  // the channel, while the receiver lives
  }
  EXPECT_EQ(leftovers(::getpid()), 0);
}

TEST_P(ZmqSameHost, EitherSideCanTurnItOff) {
  for (int receiver_on : {0, 1}) {
    const std::string u = url();
    EndpointOptions o = quick_options();
    o.zmq.same_host = receiver_on != 0;
    Receiver rx = Receiver::bind(u, o);
    test::Child sender{test::spawn_role("same_host_sender",
                                  {"SAME_HOST_URL=" + u, "SAME_HOST_COUNT=6", "SAME_HOST_EXPECT_FRAMES=1",
                                   std::string("SAME_HOST_SENDER_ON=") + (receiver_on ? "0" : "1")})};
    for (int i = 0; i < 6; ++i) {
      std::optional<Message> m = rx.recv(20000ms);
      ASSERT_TRUE(m);
      expect_message(*m, i);
    }
    EXPECT_EQ(sender.wait(), 0) << "receiver_on " << receiver_on;
    EXPECT_EQ(rx.stats().ledger.same_host_messages, 0u);
    EXPECT_EQ(rx.stats().capacity, 0u);  // no channel was created
  }
}

std::string transport_name(const ::testing::TestParamInfo<std::string>& param) { return param.param; }
INSTANTIATE_TEST_SUITE_P(Transports, ZmqSameHost, ::testing::Values("tcp", "ipc"), transport_name);

// Sends 12 messages of 3 MiB, which a 16 MiB channel cannot hold at once.
constexpr int kHoarded = 12;
constexpr std::size_t kHoardSize = 3 << 20;
PICKLEWIRE_CHILD_ROLE(same_host_hoard_sender) {
  Sender tx = Sender::connect(std::getenv("SAME_HOST_URL"), quick_options());
  for (int i = 0; i < kHoarded; ++i) {
    Buffer b = Buffer::allocate(kHoardSize);
    test::fill_pattern(b.mutable_data(), b.size(), std::uint64_t(i));
    tx.send(Message{Buffer::copy(std::string_view("h")), {std::move(b)}}, 20000ms);
  }
  const TransportStats s = tx.stats();
  EXPECT_GT(s.ledger.same_host_messages, 0u);
  EXPECT_GT(s.same_host_fallbacks, 0u);  // the channel was full: frames, not a blocked send
  EXPECT_EQ(s.ledger.same_host_messages + s.same_host_fallbacks, std::uint64_t(kHoarded));
}

TEST(ZmqSameHostFaults, AReceiverThatKeepsEverythingGetsFramesOnceItsChannelIsFull) {
  const std::string u = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  Receiver rx = Receiver::bind(u, quick_options());
  test::Child sender{test::spawn_role("same_host_hoard_sender", {"SAME_HOST_URL=" + u})};
  std::vector<Message> kept;
  for (int i = 0; i < kHoarded; ++i) {
    std::optional<Message> m = rx.recv(30000ms);
    ASSERT_TRUE(m) << "message " << i;
    ASSERT_EQ(m->buffers.size(), 1u);
    EXPECT_EQ(test::checksum(m->buffers[0]), [&] {
      std::vector<std::byte> want(kHoardSize);
      test::fill_pattern(want.data(), want.size(), std::uint64_t(i));
      return test::checksum(want.data(), want.size());
    }()) << "message " << i;
    kept.push_back(std::move(*m));
  }
  EXPECT_EQ(sender.wait(), 0);
  EXPECT_GT(rx.stats().ledger.same_host_messages, 0u);
  EXPECT_LT(rx.stats().ledger.same_host_messages, std::uint64_t(kHoarded));
}

TEST(ZmqSameHostFaults, ASenderThatExitsAfterSendingHasEveryMessageDelivered) {
  const std::string u = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  Receiver rx = Receiver::bind(u, quick_options());
  // The hello, before anything else is sent: the receiver answers it in this recv.
  test::Child sender{test::spawn_role("same_host_sender", {"SAME_HOST_URL=" + u, "SAME_HOST_COUNT=12",
                                                     "SAME_HOST_SENDER_ON=1", "SAME_HOST_EXPECT_FRAMES=0"})};
  std::optional<Message> first = rx.recv(20000ms);
  ASSERT_TRUE(first);
  expect_message(*first, 0);
  EXPECT_EQ(sender.wait(), 0);  // gone (and reaped) before its other messages are read
  std::this_thread::sleep_for(SameHostTimeouts::kDeadSenderGrace + 200ms);
  for (int i = 1; i < 12; ++i) {
    std::optional<Message> m = rx.recv(5000ms);
    ASSERT_TRUE(m) << "message " << i;
    expect_message(*m, i);
  }
  EXPECT_EQ(rx.stats().ledger.same_host_messages, 8u);
}

// Receives COUNT messages from the first index FIRST, expecting every large one through its channel.
PICKLEWIRE_CHILD_ROLE(same_host_receiver) {
  Receiver rx = Receiver::bind(std::getenv("SAME_HOST_URL"), quick_options());
  const int first = env_int("SAME_HOST_FIRST"), count = env_int("SAME_HOST_COUNT");
  test::write_file(std::getenv("SAME_HOST_READY"), "ready");
  int large = 0;
  for (int i = first; i < first + count; ++i) {
    std::optional<Message> m = rx.recv(20000ms);
    ASSERT_TRUE(m);
    expect_message(*m, i);
    large += size_of(i) == kLarge;
  }
  EXPECT_EQ(rx.stats().ledger.same_host_messages, std::uint64_t(large));
}

TEST(ZmqSameHostFaults, ARestartedReceiverIsNegotiatedAnew) {
  test::TempDir dir;
  const std::string u = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  Sender tx = Sender::connect(u, quick_options());
  constexpr int kPerReceiver = 9;
  for (int round = 0; round < 2; ++round) {
    const auto ready = dir / ("ready" + std::to_string(round));
    test::Child receiver{test::spawn_role("same_host_receiver",
                                    {"SAME_HOST_URL=" + u, "SAME_HOST_FIRST=" + std::to_string(round * kPerReceiver),
                                     "SAME_HOST_COUNT=" + std::to_string(kPerReceiver), "SAME_HOST_READY=" + ready.string()})};
    for (int i = round * kPerReceiver; i < (round + 1) * kPerReceiver; ++i)
      tx.send(message_for(i, Buffer::allocate(size_of(i))), 20000ms);
    EXPECT_EQ(receiver.wait(), 0) << "receiver " << round;  // it got all of them, through a channel of its own
  }
  EXPECT_EQ(tx.stats().ledger.same_host_messages, 12u);  // 2 x 6 large
  EXPECT_EQ(tx.stats().same_host_fallbacks, 0u);
}

// Sends one large message in a loan, takes two more loans, tells the parent and waits to be killed.
PICKLEWIRE_CHILD_ROLE(same_host_loan_holder) {
  Sender tx = Sender::connect(std::getenv("SAME_HOST_URL"), quick_options());
  tx.send(message_for(0, tx.allocate(kLarge)), 20000ms);
  Buffer held1 = tx.allocate(kLarge), held2 = tx.allocate(kLarge);
  test::write_file(std::getenv("SAME_HOST_READY"), "ready");
  std::this_thread::sleep_for(60s);
}

TEST(ZmqSameHostFaults, AKilledSendersSlotsAreReclaimed) {
  test::TempDir dir;
  const std::string u = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  Receiver rx = Receiver::bind(u, quick_options());
  test::Child sender{test::spawn_role("same_host_loan_holder", {"SAME_HOST_URL=" + u, "SAME_HOST_READY=" + (dir / "ready").string()})};
  {
    std::optional<Message> m = rx.recv(20000ms);
    ASSERT_TRUE(m);
    expect_message(*m, 0);
  }
  while (!std::filesystem::exists(dir / "ready")) std::this_thread::sleep_for(5ms);
  EXPECT_EQ(rx.stats().slots_in_use, 2u);  // the two loans the sender holds
  const pid_t killed = sender.pid();
  sender.signal(SIGKILL);
  EXPECT_EQ(sender.wait(), 128 + SIGKILL);
  // The idle receiver's housekeeping reclaims them, as an shm:// receiver does while it waits.
  for (int i = 0; i < 40 && rx.stats().slots_in_use != 0; ++i) EXPECT_FALSE(rx.recv(50ms));
  EXPECT_EQ(rx.stats().slots_in_use, 0u);
  EXPECT_EQ(rx.stats().bytes_in_use, 0u);
  EXPECT_EQ(leftovers(killed), 0);  // its answer box too: removed by the receiver that saw it die
}

// A raw ZeroMQ peer that says what it likes: the receiver refuses or ignores, and never crashes.
TEST(ZmqSameHostFaults, AReceiverIgnoresLiesAndRefusesGarbage) {
  const std::string u = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  Receiver rx = Receiver::bind(u, quick_options());
  zmq::context_t ctx;
  zmq::socket_t push(ctx, zmq::socket_type::push);
  push.set(zmq::sockopt::linger, 0);
  push.connect(u);
  auto send_frame = [&](const std::vector<std::byte>& f) { push.send(zmq::const_buffer(f.data(), f.size())); };
  const zt::HostIdentity& me = zt::HostIdentity::current();
  ASSERT_TRUE(me.known);
  zt::Hello hello;
  hello.uid = me.uid;
  hello.pid = static_cast<std::uint32_t>(::getpid());
  hello.generation = 1;
  hello.ipc_namespace = me.ipc_namespace;
  hello.boot_id = me.boot_id;

  zt::Hello other_host = hello;  // another machine's boot id: ignored
  other_host.boot_id[0] ^= std::byte{1};
  other_host.sender_id = 7;
  send_frame(zt::encode_control(other_host));
  zt::Hello no_box = hello;  // this host, but no answer box: a lie, ignored
  no_box.sender_id = 0x1234567;
  send_frame(zt::encode_control(no_box));
  send_frame(zt::encode_control(zt::Doorbell{99, 1}));  // a doorbell with no channel: refused
  std::vector<std::byte> bad = zt::encode_control(zt::Doorbell{99, 2});
  bad.push_back(std::byte{0});  // a record one byte too long: refused
  bad[12] = std::byte{25};
  send_frame(bad);
  // A real message after all that is delivered.
  std::vector<zmq::message_t> frames;
  zt::FrameWriter writer(ZmqOptions{});
  CopyLedger ledger;
  writer.write(message_for(2, Buffer::allocate(kSmall)), frames, ledger);
  ASSERT_TRUE(zt::send_frames(push, frames));

  EXPECT_THROW(rx.recv(5000ms), TransportError);
  EXPECT_THROW(rx.recv(5000ms), TransportError);
  std::optional<Message> m = rx.recv(5000ms);
  ASSERT_TRUE(m);
  expect_message(*m, 2);
  EXPECT_EQ(rx.stats().malformed_messages, 2u);
  EXPECT_EQ(rx.stats().capacity, 0u);  // no hello was believed: no channel

  // A true hello (its box exists): the channel is created and named in the box; a doorbell for a
  // message that is not in it is refused, and the receiver goes on.
  std::unique_ptr<shm::Mailbox> box = shm::Mailbox::create(0xabcdef);
  hello.sender_id = 0xabcdef;
  send_frame(zt::encode_control(hello));
  send_frame(zt::encode_control(zt::Doorbell{0xabcdef, 1}));
  EXPECT_THROW(rx.recv(5000ms), TransportError);
  std::optional<shm::MailboxAnswer> answer = box->answer(1);
  ASSERT_TRUE(answer);
  EXPECT_EQ(answer->verdict, shm::MailboxAnswer::Verdict::accepted);
  EXPECT_EQ(answer->receiver_pid, ::getpid());
  EXPECT_EQ(rx.stats().capacity, quick_options().zmq.same_host_capacity);
  EXPECT_EQ(rx.stats().malformed_messages, 3u);
}

// A raw PULL that answers the hello with a channel that does not exist: the sender sends frames.
TEST(ZmqSameHostFaults, ASenderFallsBackWhenTheReceiverLies) {
  const std::string u = "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());
  zmq::context_t ctx;
  zmq::socket_t pull(ctx, zmq::socket_type::pull);
  pull.set(zmq::sockopt::linger, 0);
  pull.set(zmq::sockopt::rcvtimeo, 10000);
  pull.bind(u);
  Sender tx = Sender::connect(u, quick_options());
  std::thread liar([&] {
    zmq::message_t first;
    ASSERT_TRUE(pull.recv(first));
    const std::span<const std::byte> head(static_cast<const std::byte*>(first.data()), first.size());
    ASSERT_TRUE(zt::is_control(head));
    const zt::Hello hello = std::get<zt::Hello>(zt::decode_control(head));
    std::unique_ptr<shm::Mailbox> box = shm::Mailbox::open(static_cast<pid_t>(hello.pid), hello.sender_id);
    ASSERT_TRUE(box);
    box->post(hello.generation, {shm::MailboxAnswer::Verdict::accepted, "no-such-channel", ::getpid()});
  });
  tx.send(message_for(0, Buffer::allocate(kLarge)), 10000ms);
  liar.join();
  EXPECT_EQ(tx.stats().ledger.same_host_messages, 0u);
  EXPECT_EQ(tx.stats().same_host_fallbacks, 1u);
  std::vector<zmq::message_t> frames;
  ASSERT_TRUE(zmq::recv_multipart(pull, std::back_inserter(frames)));
  CopyLedger ledger;
  expect_message(zt::FrameReader(ZmqOptions{}).read(frames, ledger), 0);  // the message, as frames
}
