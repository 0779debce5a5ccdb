// How shm sends and receives wait: a send blocked on a full queue or a full segment sleeps (no
// busy loop) and copies its payload in once however long it waits; try_send gives up cleanly; an
// interrupt check ends a wait with Interrupted and leaves nothing held.
#include <gtest/gtest.h>
#include <time.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <future>
#include <thread>
#include <vector>

#include "picklewire/endpoint.hpp"
#include "picklewire/errors.hpp"
#include "shm/layout.hpp"
#include "shm_support.hpp"

namespace picklewire {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;
using test::UniqueChannel;

constexpr std::size_t kMiB = std::size_t(1) << 20;
constexpr auto kBlocked = 3s;  // how long the receiver keeps a sender waiting

std::chrono::nanoseconds thread_cpu_time() {
  timespec ts{};
  ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

Message message_of(std::size_t bytes, std::uint8_t fill) {
  Message m;
  m.stream = Buffer::copy(std::string_view("stream"), true);
  Buffer b = Buffer::allocate(bytes);
  std::memset(b.mutable_data(), fill, bytes);
  m.buffers.push_back(b);
  return m;
}

// What one blocked send cost its thread.
struct BlockedSend {
  std::chrono::nanoseconds wall{}, cpu{};
  std::uint64_t copies_in = 0, bytes_in = 0;
};

// Sends `m` on `tx` from a new thread (so that its CPU time is the send's alone) and reports.
std::future<BlockedSend> send_in_thread(Sender& tx, const Message& m) {
  return std::async(std::launch::async, [&tx, &m] {
    const CopyLedger before = tx.stats().ledger;
    const auto cpu0 = thread_cpu_time();
    const auto t0 = Clock::now();
    tx.send(m, 30s);
    BlockedSend r;
    r.wall = Clock::now() - t0;
    r.cpu = thread_cpu_time() - cpu0;
    const CopyLedger after = tx.stats().ledger;
    const auto reason = static_cast<std::size_t>(CopyReason::copied_into_segment);
    r.copies_in = after.copies[reason] - before.copies[reason];
    r.bytes_in = after.copied_bytes[reason] - before.copied_bytes[reason];
    return r;
  });
}

void expect_slept(const BlockedSend& r, std::chrono::microseconds spin, std::size_t payload) {
  std::printf("blocked send: %.3f s wall, %.4f s CPU of its thread\n", std::chrono::duration<double>(r.wall).count(),
              std::chrono::duration<double>(r.cpu).count());
  EXPECT_GE(r.wall, kBlocked - 100ms);
  EXPECT_EQ(r.copies_in, 1u);
  EXPECT_EQ(r.bytes_in, payload);
  // A sleeping sender costs its thread the one copy-in and a wake-up per liveness period; one
  // that spins costs the whole wait.
  EXPECT_LT(r.cpu, r.wall / 20 + spin) << "cpu " << r.cpu.count() << " ns over " << r.wall.count() << " ns";
}

// The receiver does not take messages: the sender's lane fills up while the segment's memory is
// free. The 8 MiB send fills its slot, then waits for a lane cell, asleep.
TEST(ShmWait, SendToABackloggedReceiverSleepsAndCopiesOnce) {
  UniqueChannel ch("backlog");
  EndpointOptions o;
  o.shm.capacity = 64 * kMiB;
  Receiver rx = Receiver::bind(ch.url(), o);
  Sender tx = Sender::connect(ch.url(), o);
  for (std::uint32_t i = 0; i < shm::kLaneCells; ++i) tx.send(message_of(8, 1), 1s);  // inline, fills the lane
  const Message big = message_of(8 * kMiB, 7);
  auto blocked = send_in_thread(tx, big);
  ASSERT_EQ(blocked.wait_for(kBlocked), std::future_status::timeout) << "the send did not wait";
  for (std::uint32_t i = 0; i <= shm::kLaneCells; ++i) ASSERT_TRUE(rx.recv(5s)) << i;
  const BlockedSend r = blocked.get();
  expect_slept(r, o.shm.spin, 8 * kMiB);
  EXPECT_EQ(rx.stats().slots_in_use, 0u);
}

// The receiver keeps what it received: the segment's memory runs out while the lane has room
// (the case that used to spin on "the lane has room"). The send waits for memory, asleep.
TEST(ShmWait, SendToAFullSegmentSleepsAndCopiesOnce) {
  UniqueChannel ch("fullseg");
  EndpointOptions o;
  o.shm.capacity = 20 * kMiB;
  Receiver rx = Receiver::bind(ch.url(), o);
  Sender tx = Sender::connect(ch.url(), o);
  std::vector<Message> held;
  for (int i = 0; i < 2; ++i) {
    tx.send(message_of(8 * kMiB, static_cast<std::uint8_t>(i)), 1s);
    std::optional<Message> m = rx.recv(5s);
    ASSERT_TRUE(m);
    held.push_back(std::move(*m));
  }
  const Message big = message_of(8 * kMiB, 9);
  auto blocked = send_in_thread(tx, big);
  ASSERT_EQ(blocked.wait_for(kBlocked), std::future_status::timeout) << "the send did not wait";
  held.clear();  // frees 16 MiB
  const BlockedSend r = blocked.get();
  expect_slept(r, o.shm.spin, 8 * kMiB);
  std::optional<Message> m = rx.recv(5s);
  ASSERT_TRUE(m);
  ASSERT_EQ(m->buffers.size(), 1u);
  EXPECT_EQ(static_cast<std::uint8_t>(m->buffers[0].data()[8 * kMiB - 1]), 9u);
}

// An interrupt check that turns true ends a send that holds its filled slot: Interrupted, and
// the slot goes back.
TEST(ShmWait, InterruptEndsABlockedSendAndReleasesItsSlot) {
  UniqueChannel ch("intr");
  std::atomic<bool> stop{false};
  EndpointOptions o;
  o.shm.capacity = 64 * kMiB;
  o.interrupt = [&stop] { return stop.load(); };
  o.interrupt_period = 20ms;
  Receiver rx = Receiver::bind(ch.url(), o);
  Sender tx = Sender::connect(ch.url(), o);
  for (std::uint32_t i = 0; i < shm::kLaneCells; ++i) tx.send(message_of(8, 1), 1s);
  std::thread stopper([&stop] {
    std::this_thread::sleep_for(200ms);
    stop = true;
  });
  const auto t0 = Clock::now();
  try {
    tx.send(message_of(8 * kMiB, 3), 30s);
    ADD_FAILURE() << "the send completed";
  } catch (const Interrupted& e) {
    EXPECT_EQ(e.code(), EINTR);
  }
  stopper.join();
  EXPECT_LT(Clock::now() - t0, 10s);
  EXPECT_EQ(tx.stats().slots_in_use, 0u);
  EXPECT_EQ(tx.stats().bytes_in_use, 0u);
  EXPECT_EQ(tx.stats().ledger.messages, shm::kLaneCells);
  // A waiting recv is interrupted the same way once the queue is drained.
  for (std::uint32_t i = 0; i < shm::kLaneCells; ++i) ASSERT_TRUE(rx.recv(1s));
  EXPECT_THROW(rx.recv(std::nullopt), Interrupted);
  stop = false;
  tx.send(message_of(8 * kMiB, 4), 5s);  // the channel still works
  ASSERT_TRUE(rx.recv(5s));
}

// try_send gives up after its timeout, holding nothing, and says why; send throws TimeoutError
// with the same sentence.
TEST(ShmWait, TrySendTimesOutHoldingNothing) {
  UniqueChannel ch("trysend");
  EndpointOptions o;
  o.shm.capacity = 64 * kMiB;
  Receiver rx = Receiver::bind(ch.url(), o);
  Sender tx = Sender::connect(ch.url(), o);
  for (std::uint32_t i = 0; i < shm::kLaneCells; ++i) ASSERT_TRUE(tx.try_send(message_of(8, 1), 1s));
  const Message big = message_of(8 * kMiB, 5);
  EXPECT_FALSE(tx.try_send(big, 100ms));
  EXPECT_EQ(tx.stats().slots_in_use, 0u);
  EXPECT_FALSE(tx.try_send(message_of(8, 1), 0ms));  // inline, lane full
  try {
    tx.send(big, 50ms);
    ADD_FAILURE() << "the send completed";
  } catch (const TimeoutError& e) {
    EXPECT_EQ(e.code(), ETIMEDOUT);
    EXPECT_NE(std::string(e.what()).find("the queue is full"), std::string::npos) << e.what();
  }
  EXPECT_EQ(tx.stats().slots_in_use, 0u);
  EXPECT_EQ(tx.stats().ledger.messages, shm::kLaneCells);
  ASSERT_TRUE(rx.recv(1s));
  EXPECT_TRUE(tx.try_send(big, 1s));  // one cell free again
}

}  // namespace
}  // namespace picklewire
