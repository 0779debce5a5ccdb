// The shared-memory transport across real processes (fork): delivery, zero copy, leases,
// back-pressure, timeouts, dead peers, hostile descriptors.
#include <gtest/gtest.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <future>
#include <map>
#include <random>
#include <thread>
#include <vector>

#include "picklewire/endpoint.hpp"
#include "picklewire/errors.hpp"
#include "shm/channel.hpp"
#include "shm/copy.hpp"
#include "shm/segment.hpp"
#include "shm_support.hpp"

namespace picklewire {
namespace {

using namespace std::chrono_literals;
using test::checksum;
using test::fill_pattern;
using test::fork_child;
using test::Pipe;
using test::UniqueChannel;
using test::wait_child;

EndpointOptions small_options(std::size_t capacity = std::size_t(8) << 20) {
  EndpointOptions o;
  o.shm.capacity = capacity;
  return o;
}

// A test message: stream = [sender, seq, n, checksum...], buffers with seeded contents.
Message make_message(std::uint64_t sender, std::uint64_t seq, const std::vector<std::size_t>& sizes) {
  Message m;
  std::vector<std::uint64_t> head{sender, seq, sizes.size()};
  for (std::size_t i = 0; i < sizes.size(); ++i) {
    Buffer b = Buffer::allocate(sizes[i]);
    fill_pattern(b.mutable_data(), b.size(), sender * 1'000'003 + seq * 131 + i);
    head.push_back(checksum(b));
    m.buffers.push_back(b);
  }
  m.stream = Buffer::copy(head.data(), head.size() * 8, true);
  return m;
}

struct Seen {
  std::uint64_t sender, seq;
};

// Verifies a test message; returns (sender, seq) or throws.
Seen verify(const Message& m) {
  if (m.stream.size() < 24 || m.stream.size() % 8) throw std::runtime_error("bad stream size");
  std::vector<std::uint64_t> head(m.stream.size() / 8);
  std::memcpy(head.data(), m.stream.data(), m.stream.size());
  if (head[2] != m.buffers.size() || head.size() != 3 + m.buffers.size()) throw std::runtime_error("bad count");
  for (std::size_t i = 0; i < m.buffers.size(); ++i)
    if (checksum(m.buffers[i]) != head[3 + i]) throw std::runtime_error("checksum mismatch in buffer " + std::to_string(i));
  return {head[0], head[1]};
}

// Receives `count` test messages, checking that each sender's arrive in order (seq 0, 1, ...);
// returns how many came from each sender. Across senders the receiver takes turns, so no order
// holds there.
std::map<std::uint64_t, std::uint64_t> receive_in_sender_order(Receiver& rx, std::size_t count) {
  std::map<std::uint64_t, std::uint64_t> next;
  for (std::size_t i = 0; i < count; ++i) {
    std::optional<Message> m = rx.recv(10s);
    if (!m) {
      ADD_FAILURE() << "message " << i << " of " << count << " did not arrive";
      break;
    }
    Seen s = verify(*m);
    EXPECT_EQ(next[s.sender]++, s.seq) << "sender " << s.sender << " out of order";
  }
  return next;
}

TEST(ShmTransport, RoundTripInProcessWithCopyLedger) {
  UniqueChannel ch("rt");
  Receiver rx = Receiver::bind(ch.url(), small_options());
  Sender tx = Sender::connect(ch.url());
  Message sent = make_message(1, 7, {0, 1, 100, 5000, 1 << 20});
  tx.send(sent);
  std::optional<Message> got = rx.recv(1s);
  ASSERT_TRUE(got);
  Seen s = verify(*got);
  EXPECT_EQ(s.sender, 1u);
  EXPECT_EQ(s.seq, 7u);
  EXPECT_TRUE(got->stream.readonly());
  EXPECT_FALSE(got->buffers[3].readonly());  // sent writable: the receiver owns the copy
  TransportStats st = tx.stats();
  EXPECT_EQ(st.ledger.messages, 1u);
  EXPECT_EQ(st.ledger.oob_buffers, 5u);
  EXPECT_EQ(st.ledger.copied(CopyReason::copied_into_segment), sent.out_of_band_bytes());
  EXPECT_EQ(st.ledger.zero_copy_bytes, 0u);
  EXPECT_GE(rx.stats().slots_in_use, 1u);
  got.reset();
  EXPECT_EQ(rx.stats().slots_in_use, 0u);
  EXPECT_EQ(rx.stats().bytes_in_use, 0u);
  EXPECT_GT(rx.stats().peak_bytes_in_use, std::uint64_t(1) << 20);
}

TEST(ShmTransport, EmptyQueueTimesOutAndTryRecvReturnsNothing) {
  UniqueChannel ch("to");
  Receiver rx = Receiver::bind(ch.url(), small_options());
  EXPECT_FALSE(rx.try_recv());
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(rx.recv(60ms));
  auto took = std::chrono::steady_clock::now() - t0;
  EXPECT_GE(took, 55ms);
  EXPECT_LT(took, 1s);
}

// The TransportError code of what `f` throws (0: it threw nothing).
template <class F>
int error_code_of(F&& f) {
  try {
    f();
  } catch (const TransportError& e) {
    return e.code();
  }
  return 0;
}

// Each kind of failure has its own errno-like code (docs/shm.md "Errors").
TEST(ShmTransport, SegmentIsPrivateAndNamesAreChecked) {
  UniqueChannel ch("perm");
  Receiver rx = Receiver::bind(ch.url(), small_options());
  auto st = std::filesystem::status("/dev/shm/picklewire." + ch.name());
  EXPECT_EQ(st.permissions() & std::filesystem::perms::all,
            std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_EQ(error_code_of([&] { Receiver::bind(ch.url(), small_options()); }), EADDRINUSE);  // bound by a live receiver
  EXPECT_EQ(error_code_of([] { Sender::connect("shm://bad/name"); }), EINVAL);
  EXPECT_EQ(error_code_of([] { Receiver::bind("shm://with.tmp-1"); }), EINVAL);
  EXPECT_EQ(error_code_of([] { Sender::connect("shm://pwtest-nobody-bound-this"); }), ENOENT);
  EXPECT_EQ(error_code_of([] { Sender::connect("nosuch://x"); }), EPROTONOSUPPORT);
  EndpointOptions tiny = small_options(1024);
  EXPECT_EQ(error_code_of([&] { UniqueChannel other("tiny"); Receiver::bind(other.url(), tiny); }), EINVAL);
  {
    Sender tx = Sender::connect(ch.url());
    EXPECT_EQ(error_code_of([&] { tx.send(make_message(0, 0, {std::size_t(16) << 20}), 1s); }), EMSGSIZE);
    EXPECT_EQ(error_code_of([&] { tx.allocate(std::size_t(16) << 20); }), EMSGSIZE);
  }
  std::filesystem::permissions("/dev/shm/picklewire." + ch.name(), std::filesystem::perms::group_read,
                               std::filesystem::perm_options::add);
  EXPECT_EQ(error_code_of([&] { Sender::connect(ch.url()); }), EACCES);  // mode no longer 0600
}

TEST(ShmTransport, TooSmallShmIsAClearError) {
  UniqueChannel ch("huge");
  EndpointOptions o;
  o.shm.capacity = std::size_t(1) << 50;
  try {
    Receiver::bind(ch.url(), o);
    FAIL() << "bind of a 1 PiB segment succeeded";
  } catch (const TransportError& e) {
    EXPECT_NE(std::string(e.what()).find("/dev/shm has"), std::string::npos) << e.what();
    EXPECT_EQ(e.code(), ENOSPC);
  }
}

TEST(ShmTransport, LoanIsZeroCopyAcrossProcesses) {
  UniqueChannel ch("loan");
  Receiver rx = Receiver::bind(ch.url(), small_options(std::size_t(64) << 20));
  Pipe go, done;
  pid_t child = fork_child([&] {
    Sender tx = Sender::connect(ch.url());
    Buffer loan = tx.allocate(std::size_t(16) << 20);
    fill_pattern(loan.mutable_data(), loan.size(), 42);
    Message m;
    std::uint64_t head[4] = {9, 0, 1, checksum(loan)};
    m.stream = Buffer::copy(head, sizeof head, true);
    m.buffers.push_back(loan.slice(0, loan.size()));
    tx.send(m);
    TransportStats s = tx.stats();
    if (s.ledger.zero_copy_bytes != loan.size() || s.ledger.total_copied_bytes() != 0) return 3;
    // Write through the loan after sending: the receiver's view is the same memory.
    std::uint64_t v;
    go.get(v);
    std::memset(loan.mutable_data(), 0xAB, 64);
    done.put(1);
    return 0;
  });
  std::optional<Message> got = rx.recv(5s);
  ASSERT_TRUE(got);
  EXPECT_EQ(verify(*got).sender, 9u);
  EXPECT_FALSE(got->buffers[0].readonly());
  go.put(0);
  std::uint64_t v;
  ASSERT_TRUE(done.get(v));
  // The child wrote 0xAB into its loan after sending: identical memory, not a copy.
  EXPECT_EQ(got->buffers[0].data()[0], std::byte{0xAB});
  EXPECT_EQ(got->buffers[0].data()[63], std::byte{0xAB});
  EXPECT_EQ(wait_child(child, 10s), 0);
  got.reset();
  rx.recv(300ms);  // idle: reclaims anything of the exited sender
  EXPECT_EQ(rx.stats().slots_in_use, 0u);
}

TEST(ShmTransport, ManyBuffersRandomSizesAcrossProcesses) {
  UniqueChannel ch("many");
  Receiver rx = Receiver::bind(ch.url(), small_options(std::size_t(300) << 20));
  constexpr int kMessages = 40;
  pid_t child = fork_child([&] {
    Sender tx = Sender::connect(ch.url());
    std::mt19937_64 rng(1234);
    for (int i = 0; i < kMessages; ++i) {
      std::vector<std::size_t> sizes(rng() % 20);
      for (auto& s : sizes) s = rng() % 3 == 0 ? rng() % 16 : rng() % (256 << 10);
      if (i == 10) sizes = {std::size_t(256) << 20};            // one 256 MiB buffer (copy-in)
      if (i == 20) sizes = {std::size_t(64) << 20, 3, 0, 77};  // large + tiny + empty
      if (i % 3 == 0) {
        // Half loans, half copies in one message.
        Message m = make_message(1, static_cast<std::uint64_t>(i), sizes);
        for (std::size_t k = 0; k < m.buffers.size(); k += 2) {
          Buffer loan = tx.allocate(m.buffers[k].size());
          if (loan.size()) std::memcpy(loan.mutable_data(), m.buffers[k].data(), loan.size());
          m.buffers[k] = loan;
        }
        tx.send(m, 20s);
      } else {
        tx.send(make_message(1, static_cast<std::uint64_t>(i), sizes), 20s);
      }
    }
    return 0;
  });
  for (int i = 0; i < kMessages; ++i) {
    std::optional<Message> m = rx.recv(20s);
    ASSERT_TRUE(m) << "message " << i;
    Seen s = verify(*m);
    EXPECT_EQ(s.seq, static_cast<std::uint64_t>(i));
  }
  EXPECT_EQ(wait_child(child, 30s), 0);
  rx.recv(300ms);
  EXPECT_EQ(rx.stats().slots_in_use, 0u);
}

// The copy-in routine shares large copies with a helper thread in chunks: every size and
// alignment around the chunk and routine edges must come out byte-exact, with nothing written
// outside the destination, also when several threads copy at once (one has the helper, the others
// copy alone) and in a forked child (which needs a helper of its own).
bool copies_exactly(std::size_t n, std::size_t src_shift, std::size_t dst_shift, std::uint64_t seed) {
  constexpr std::size_t kGuard = 64;
  std::vector<std::byte> src(n + src_shift), dst(n + dst_shift + 2 * kGuard, std::byte{0xA5});
  fill_pattern(src.data() + src_shift, n, seed);
  std::byte* out = dst.data() + kGuard + dst_shift;
  shm::copy_into_segment(out, src.data() + src_shift, n);
  if (std::memcmp(out, src.data() + src_shift, n) != 0) return false;
  auto untouched = [](const std::byte* p, std::size_t k) {
    return std::all_of(p, p + k, [](std::byte b) { return b == std::byte{0xA5}; });
  };
  return untouched(dst.data(), kGuard + dst_shift) && untouched(out + n, kGuard);
}

TEST(ShmCopy, LargeCopiesAreExactAtEveryChunkEdge) {
  const std::size_t from = shm::kParallelCopyFrom, chunk = shm::kCopyChunk;
  const std::vector<std::size_t> sizes{from - 1, from, from + 1, from + 3 * chunk + 17, shm::kNonTemporalFrom - 1,
                                       shm::kNonTemporalFrom + 5, (std::size_t(40) << 20) + 3};
  for (std::size_t n : sizes)
    for (std::size_t shift : {0, 1, 33})
      EXPECT_TRUE(copies_exactly(n, shift, (shift * 7) % 64, n + shift)) << n << " bytes, shift " << shift;

  std::vector<std::future<bool>> at_once;
  for (int t = 0; t < 3; ++t)
    at_once.push_back(std::async(std::launch::async, [&, t] {
      bool ok = true;
      for (int i = 0; i < 8; ++i) ok = ok && copies_exactly(from + chunk * static_cast<std::size_t>(t + i) + 9, 3, 5, i);
      return ok;
    }));
  for (auto& f : at_once) EXPECT_TRUE(f.get());

  pid_t child = fork_child([&] { return copies_exactly(shm::kNonTemporalFrom + 1, 1, 2, 7) ? 0 : 1; });
  EXPECT_EQ(wait_child(child, 30s), 0);
}

TEST(ShmTransport, ManySendersOneReceiver) {
  UniqueChannel ch("mpsc");
  Receiver rx = Receiver::bind(ch.url(), small_options(std::size_t(4) << 20));
  constexpr int kSenders = 4, kEach = 200;
  std::vector<pid_t> kids;
  for (int s = 0; s < kSenders; ++s)
    kids.push_back(fork_child([&, s] {
      Sender tx = Sender::connect(ch.url());
      std::mt19937_64 rng(static_cast<std::uint64_t>(s));
      for (int i = 0; i < kEach; ++i)
        tx.send(make_message(static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(i), {rng() % 60000, 8}), 10s);
      return 0;
    }));
  receive_in_sender_order(rx, kSenders * kEach);
  for (pid_t k : kids) EXPECT_EQ(wait_child(k, 10s), 0);
  EXPECT_EQ(rx.stats().slots_in_use, 0u);
}

// Each sender's lane carries its small messages inline and names the slots of its larger ones,
// so its order holds across both kinds (and across loans); with fewer lanes than senders, the
// others share the ring. Inline messages are counted as copied out of the lane on receive.
class ShmLanes : public ::testing::TestWithParam<std::uint32_t> {};

TEST_P(ShmLanes, EachSendersOrderHoldsAcrossInlineSlotAndLoanedMessages) {
  UniqueChannel ch("lanes");
  EndpointOptions o = small_options(std::size_t(4) << 20);
  o.shm.lane_count = GetParam();
  Receiver rx = Receiver::bind(ch.url(), o);
  constexpr int kSenders = 3, kEach = 300;
  // Message i of every sender: inline (no buffer, or 8 bytes), in a slot (300 B, 5 KB), loaned.
  auto sizes_for = [](int i) -> std::vector<std::size_t> {
    switch (i % 5) {
      case 0: return {};
      case 1: return {8};
      case 2: return {300};
      case 3: return {5000, 8};
      default: return {};
    }
  };
  std::vector<pid_t> kids;
  for (int s = 0; s < kSenders; ++s)
    kids.push_back(fork_child([&, s] {
      Sender tx = Sender::connect(ch.url());
      for (int i = 0; i < kEach; ++i) {
        Message m = make_message(static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(i), sizes_for(i));
        if (i % 5 == 4) {  // a loaned buffer: zero copy, named by slot
          Buffer loan = tx.allocate(2000);
          fill_pattern(loan.mutable_data(), loan.size(), 99);
          std::vector<std::uint64_t> head{static_cast<std::uint64_t>(s), static_cast<std::uint64_t>(i), 1,
                                          test::checksum(loan)};
          m.stream = Buffer::copy(head.data(), head.size() * 8, true);
          m.buffers = {loan};
        }
        tx.send(m, 10s);
      }
      return 0;
    }));
  receive_in_sender_order(rx, kSenders * kEach);
  for (pid_t k : kids) EXPECT_EQ(wait_child(k, 10s), 0);
  EXPECT_EQ(rx.stats().slots_in_use, 0u);
  // A sender with a lane sent 2 of every 5 messages inline: 8 bytes of buffer per 5 messages.
  // With fewer lanes than senders, a lane freed by a sender that finished may be claimed by one
  // that connects later, so between that many and all of the senders had one.
  const std::uint64_t per_sender = (kEach / 5) * 8;
  const std::uint64_t copied = rx.stats().ledger.copied(CopyReason::travelled_inline);
  EXPECT_EQ(copied % per_sender, 0u);
  EXPECT_GE(copied, std::min<std::uint64_t>(GetParam(), kSenders) * per_sender);
  EXPECT_LE(copied, (GetParam() == 0 ? 0 : kSenders) * per_sender);
}

INSTANTIATE_TEST_SUITE_P(LaneCounts, ShmLanes, ::testing::Values(64u, 1u, 0u),
                         [](const auto& param_info) { return "lanes_" + std::to_string(param_info.param); });

TEST(ShmTransport, SmallMessagesTravelInlineAndAreCopiedOut) {
  UniqueChannel ch("inline");
  Receiver rx = Receiver::bind(ch.url(), small_options());
  Sender tx = Sender::connect(ch.url());
  Buffer writable = Buffer::allocate(16);
  fill_pattern(writable.mutable_data(), 16, 5);
  Message small;
  small.stream = Buffer::copy("abc", 3, true);
  small.buffers = {Buffer::copy("0123456789", 10, true), writable};
  tx.send(small);
  std::optional<Message> got = rx.recv(1s);
  ASSERT_TRUE(got);
  ASSERT_EQ(got->buffers.size(), 2u);
  EXPECT_EQ(std::memcmp(got->stream.data(), "abc", 3), 0);
  EXPECT_EQ(std::memcmp(got->buffers[0].data(), "0123456789", 10), 0);
  EXPECT_TRUE(got->buffers[0].readonly());
  EXPECT_FALSE(got->buffers[1].readonly());  // sent writable: the receiver owns its copy
  EXPECT_EQ(checksum(got->buffers[1]), checksum(writable));
  EXPECT_EQ(reinterpret_cast<std::uintptr_t>(got->buffers[1].data()) % 16, 0u);
  EXPECT_EQ(rx.stats().slots_in_use, 0u);  // held, yet no slot: it was copied out of the lane
  EXPECT_EQ(rx.stats().ledger.copied(CopyReason::travelled_inline), 26u);
  EXPECT_EQ(tx.stats().ledger.copied(CopyReason::copied_into_segment), 26u);

  // One byte over the cell: a slot, and the received buffer is a zero-copy view holding it.
  const std::size_t cell_payload = shm::kLaneCellSize - sizeof(shm::LaneCell) - sizeof(shm::LaneBuffer) - 3;
  Message big;
  big.stream = Buffer::copy("abc", 3, true);
  big.buffers = {Buffer::allocate(cell_payload + 1)};
  tx.send(big);
  got = rx.recv(1s);
  ASSERT_TRUE(got);
  EXPECT_EQ(rx.stats().slots_in_use, 1u);
  EXPECT_EQ(rx.stats().ledger.zero_copy_bytes, cell_payload + 1);
  got.reset();
  EXPECT_EQ(rx.stats().slots_in_use, 0u);
  big.buffers = {Buffer::allocate(cell_payload)};  // exactly fills the cell: inline
  tx.send(big);
  got = rx.recv(1s);
  ASSERT_TRUE(got);
  EXPECT_EQ(rx.stats().slots_in_use, 0u);
  EXPECT_EQ(rx.stats().ledger.copied(CopyReason::travelled_inline), 26u + cell_payload);
}

// Lanes are claimed per Sender, freed when their Sender is gone and the receiver drained them
// (or when their process died), and reused; a Sender that finds none uses the ring.
TEST(ShmTransport, LanesAreFreedWhenTheirSenderLeavesOrDies) {
  UniqueChannel ch("lanefree");
  EndpointOptions o = small_options();
  o.shm.lane_count = 1;
  Receiver rx = Receiver::bind(ch.url(), o);
  auto segment = shm::SharedMemorySegment::open(ch.name(), false);
  auto claimed = [&] { return segment->header().lanes_claimed.load(); };
  {
    auto first = std::make_unique<Sender>(Sender::connect(ch.url()));
    EXPECT_EQ(claimed(), 1u);
    Sender second = Sender::connect(ch.url());  // no lane left: the ring
    first->send(make_message(1, 0, {}));
    second.send(make_message(2, 0, {}));
    first.reset();  // leaves a queued message: the lane stays until it is taken
    EXPECT_EQ(claimed(), 1u);
    std::map<std::uint64_t, int> got;
    for (int i = 0; i < 2; ++i) {
      std::optional<Message> m = rx.recv(1s);
      ASSERT_TRUE(m);
      got[verify(*m).sender] += 1;
    }
    EXPECT_EQ(got[1], 1);
    EXPECT_EQ(got[2], 1);
    EXPECT_EQ(claimed(), 0u);  // drained: freed by the receiver
    Sender third = Sender::connect(ch.url());
    EXPECT_EQ(claimed(), 1u);
  }
  EXPECT_EQ(claimed(), 0u);  // an empty lane is freed by its Sender's destructor at once

  Pipe ready;
  pid_t child = fork_child([&] {
    Sender tx = Sender::connect(ch.url());
    for (int i = 0; i < 3; ++i) tx.send(make_message(3, static_cast<std::uint64_t>(i), {8}));
    ready.put(1);
    ::pause();
    return 0;
  });
  std::uint64_t v;
  ASSERT_TRUE(ready.get(v));
  ::kill(child, SIGKILL);
  EXPECT_EQ(wait_child(child, 5s), 128 + SIGKILL);
  for (std::uint64_t i = 0; i < 3; ++i) {  // published before the death: delivered, intact, in order
    std::optional<Message> m = rx.recv(1s);
    ASSERT_TRUE(m);
    EXPECT_EQ(verify(*m).seq, i);
  }
  EXPECT_FALSE(rx.recv(400ms));  // idle: the receiver reaps the dead sender's lane
  EXPECT_EQ(claimed(), 0u);
}

TEST(ShmTransport, LeasesReleaseInAnyOrderFromAnyThread) {
  UniqueChannel ch("lease");
  Receiver rx = Receiver::bind(ch.url(), small_options());
  Sender tx = Sender::connect(ch.url());
  std::vector<Buffer> held;
  for (int i = 0; i < 30; ++i) {
    tx.send(make_message(0, static_cast<std::uint64_t>(i), {1000, 70000, 5}));
    std::optional<Message> m = rx.recv(1s);
    ASSERT_TRUE(m);
    verify(*m);
    for (const Buffer& b : m->buffers) held.push_back(b.slice(0, b.size() / 2));  // slices keep the lease
  }
  EXPECT_EQ(rx.stats().slots_in_use, 30u);
  std::shuffle(held.begin(), held.end(), std::mt19937(5));
  std::vector<std::thread> threads;
  for (int t = 0; t < 3; ++t)
    threads.emplace_back([&, t] {
      for (std::size_t i = static_cast<std::size_t>(t); i < held.size(); i += 3) held[i] = Buffer();
    });
  for (auto& t : threads) t.join();
  EXPECT_EQ(rx.stats().slots_in_use, 0u);
  EXPECT_EQ(rx.stats().bytes_in_use, 0u);
}

TEST(ShmTransport, FullSegmentBlocksThenTimesOutThenRecovers) {
  UniqueChannel ch("full");
  Receiver rx = Receiver::bind(ch.url(), small_options(std::size_t(1) << 20));
  Sender tx = Sender::connect(ch.url());
  // A single buffer larger than the segment fails at once, saying so.
  auto t0 = std::chrono::steady_clock::now();
  try {
    tx.send(make_message(0, 0, {std::size_t(2) << 20}), 5s);
    FAIL() << "oversized send succeeded";
  } catch (const TimeoutError&) {
    FAIL() << "oversized send waited";
  } catch (const TransportError& e) {
    EXPECT_NE(std::string(e.what()).find("segment holds only"), std::string::npos) << e.what();
  }
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);

  int sent = 0;
  try {
    for (;; ++sent) tx.send(make_message(0, static_cast<std::uint64_t>(sent), {200000}), 100ms);
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("timed out"), std::string::npos);
  }
  EXPECT_GE(sent, 4);
  EXPECT_LE(sent, 6);
  // A blocked sender in another process resumes as soon as the receiver frees room.
  pid_t child = fork_child([&] {
    Sender tx2 = Sender::connect(ch.url());
    tx2.send(make_message(5, 0, {200000}), 10s);
    return 0;
  });
  std::this_thread::sleep_for(100ms);
  std::map<std::uint64_t, std::uint64_t> got = receive_in_sender_order(rx, static_cast<std::size_t>(sent) + 1);
  EXPECT_EQ(got[0], static_cast<std::uint64_t>(sent));
  EXPECT_EQ(got[5], 1u);
  EXPECT_EQ(wait_child(child, 10s), 0);
}

// A sender's lane holds kLaneCells inline messages; then send waits for the receiver, times out
// saying so, and a sender blocked in another process (asleep: spin 0) resumes once the receiver
// takes a message.
TEST(ShmTransport, FullLaneBlocksThenTimesOutThenRecovers) {
  UniqueChannel ch("fulllane");
  Receiver rx = Receiver::bind(ch.url(), small_options());
  Sender tx = Sender::connect(ch.url());
  std::uint64_t sent = 0;
  try {
    for (;; ++sent) tx.send(make_message(0, sent, {8}), 100ms);
  } catch (const TimeoutError& e) {
    EXPECT_NE(std::string(e.what()).find("the queue is full"), std::string::npos) << e.what();
  }
  EXPECT_EQ(sent, shm::kLaneCells);
  Pipe full;
  pid_t child = fork_child([&] {
    EndpointOptions o;
    o.shm.spin = 0us;
    Sender tx2 = Sender::connect(ch.url(), o);
    for (std::uint64_t i = 0; i < shm::kLaneCells; ++i) tx2.send(make_message(5, i, {8}), 10s);
    full.put(1);
    tx2.send(make_message(5, shm::kLaneCells, {8}), 10s);  // blocks until the receiver takes one
    return 0;
  });
  std::uint64_t v;
  ASSERT_TRUE(full.get(v));
  std::this_thread::sleep_for(100ms);  // the child is asleep on its full lane by now
  std::map<std::uint64_t, std::uint64_t> got = receive_in_sender_order(rx, 2 * shm::kLaneCells + 1);
  EXPECT_EQ(got[0], shm::kLaneCells);
  EXPECT_EQ(got[5], shm::kLaneCells + 1);
  EXPECT_EQ(wait_child(child, 10s), 0);
  tx.send(make_message(0, sent, {8}), 100ms);  // room again
  ASSERT_TRUE(rx.recv(1s));
}

// A lane has one producer and one consumer: endpoints copied into a forked child refuse to be
// used there (saying so), and their destructors in the child leave the parent's channel alone.
TEST(ShmTransport, EndpointsInheritedThroughForkRefuseWorkAndLeaveTheChannelAlone) {
  UniqueChannel ch("fork");
  auto rx = std::make_unique<Receiver>(Receiver::bind(ch.url(), small_options()));
  auto tx = std::make_unique<Sender>(Sender::connect(ch.url()));
  pid_t child = fork_child([&] {
    int refused = 0;
    try {
      tx->send(make_message(9, 0, {8}), 1s);
    } catch (const TransportError& e) {
      refused += std::string(e.what()).find("after fork()") != std::string::npos && e.code() == EPERM;
    }
    try {
      rx->recv(0ms);
    } catch (const TransportError& e) {
      refused += std::string(e.what()).find("after fork()") != std::string::npos && e.code() == EPERM;
    }
    tx.reset();  // destructors run in the child: they must not close the parent's lane or channel
    rx.reset();
    Sender own = Sender::connect(ch.url());  // a new Sender in the child works
    own.send(make_message(9, 1, {8}), 1s);
    return refused == 2 ? 0 : 1;
  });
  EXPECT_EQ(wait_child(child, 10s), 0);
  tx->send(make_message(1, 0, {8}), 1s);
  std::map<std::uint64_t, std::uint64_t> seen;
  for (int i = 0; i < 2; ++i) {
    std::optional<Message> m = rx->recv(1s);
    ASSERT_TRUE(m);
    Seen s = verify(*m);
    seen[s.sender] = s.seq;
  }
  EXPECT_EQ(seen[1], 0u);
  EXPECT_EQ(seen[9], 1u);
}

TEST(ShmTransport, SenderGetsPeerGoneWithinASecondOfReceiverDeath) {
  UniqueChannel ch("gone");
  Pipe ready;
  pid_t receiver = fork_child([&] {
    Receiver rx = Receiver::bind(ch.url(), small_options(std::size_t(1) << 20));
    ready.put(1);
    ::pause();
    return 0;
  });
  std::uint64_t v;
  ASSERT_TRUE(ready.get(v));
  Sender tx = Sender::connect(ch.url());
  tx.send(make_message(0, 0, {10}), 1s);
  ::kill(receiver, SIGKILL);  // not reaped yet: a zombie must count as dead too
  auto t0 = std::chrono::steady_clock::now();
  bool gone = false;
  for (int i = 1; i < 100000 && !gone; ++i) {
    try {
      tx.send(make_message(0, static_cast<std::uint64_t>(i), {100000}));  // no timeout: must not hang
    } catch (const PeerGone& e) {
      gone = true;
      EXPECT_NE(std::string(e.what()).find("is gone"), std::string::npos);
    }
  }
  EXPECT_TRUE(gone);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 1s);
  EXPECT_EQ(wait_child(receiver, 5s), 128 + SIGKILL);
  // The stale segment of the dead creator is reclaimed by the next bind.
  Receiver rx = Receiver::bind(ch.url(), small_options(std::size_t(1) << 20));
  EXPECT_FALSE(rx.try_recv());
}

TEST(ShmTransport, ClosedReceiverIsPeerGone) {
  UniqueChannel ch("closed");
  auto rx = std::make_unique<Receiver>(Receiver::bind(ch.url(), small_options()));
  Sender tx = Sender::connect(ch.url());
  rx.reset();
  EXPECT_EQ(ch.files_left(), 0);
  EXPECT_THROW(tx.send(make_message(0, 0, {1})), PeerGone);
}

TEST(ShmTransport, DeadSenderSlotsAreReclaimed) {
  UniqueChannel ch("reap");
  Receiver rx = Receiver::bind(ch.url(), small_options());
  Pipe ready;
  pid_t child = fork_child([&] {
    Sender tx = Sender::connect(ch.url());
    std::vector<Buffer> loans;
    for (int i = 0; i < 10; ++i) loans.push_back(tx.allocate(100000));
    tx.send(make_message(3, 0, {1000}));  // one delivered message, then hold the loans and die
    ready.put(1);
    ::pause();
    return 0;
  });
  std::uint64_t v;
  ASSERT_TRUE(ready.get(v));
  EXPECT_EQ(rx.stats().slots_in_use, 11u);
  ::kill(child, SIGKILL);
  EXPECT_EQ(wait_child(child, 5s), 128 + SIGKILL);
  std::optional<Message> m = rx.recv(1s);
  ASSERT_TRUE(m);  // delivered before the death: intact
  EXPECT_EQ(verify(*m).sender, 3u);
  m.reset();
  EXPECT_FALSE(rx.recv(400ms));  // idle: the receiver reaps the dead sender's loans
  EXPECT_EQ(rx.stats().slots_in_use, 0u);
}

// A robust mutex's unlock wakes one waiter; when that waiter is SIGKILLed before it takes the lock,
// the others sleep on a free lock forever (seen once in ShmFault: a receiver and a sender asleep on
// the segment lock after a sender was killed). Reproduced exactly: a holder process releases the
// lock word without a wake-up and exits, which is the state such a death leaves. The segment lock
// must still be taken within a retry period.
TEST(ShmLock, AWaiterWhoseWakeUpWasLostStillGetsTheLock) {
  void* mem = ::mmap(nullptr, sizeof(pthread_mutex_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  auto* m = static_cast<pthread_mutex_t*>(mem);
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  ASSERT_EQ(pthread_mutex_init(m, &attr), 0);
  pthread_mutexattr_destroy(&attr);

  Pipe locked, go;
  pid_t holder = fork_child([&] {
    if (pthread_mutex_lock(m) != 0) return 1;
    locked.put(1);
    std::uint64_t v;
    go.get(v);
    // What an unlock leaves when its one wake-up went to a waiter that was then killed: a free
    // lock word (glibc keeps the owner's tid in __lock) and nobody woken. Exiting now, the kernel's
    // robust-list cleanup sees a word that is not ours and wakes no one either.
    __atomic_store_n(&m->__data.__lock, 0, __ATOMIC_RELEASE);
    return 0;
  });
  std::uint64_t v;
  ASSERT_TRUE(locked.get(v));
  std::promise<int> result;
  std::future<int> taken = result.get_future();
  std::thread waiter([&] {
    int rc = shm::lock_robust_mutex(m);
    if (rc == 0) pthread_mutex_unlock(m);
    result.set_value(rc);
  });
  std::this_thread::sleep_for(100ms);  // the waiter is asleep in the kernel by now
  go.put(1);
  EXPECT_EQ(wait_child(holder, 5s), 0);
  const bool done = taken.wait_for(5s) == std::future_status::ready;
  EXPECT_TRUE(done) << "the waiter still sleeps on a free lock";
  if (!done) ::syscall(SYS_futex, &m->__data.__lock, FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);  // to join it
  waiter.join();
  if (done) {
    EXPECT_EQ(taken.get(), 0);
  }
  pthread_mutex_destroy(m);
  ::munmap(mem, sizeof(pthread_mutex_t));
}

TEST(ShmTransport, HostileRecordsAreTransportErrors) {
  UniqueChannel ch("hostile");
  Receiver rx = Receiver::bind(ch.url(), small_options());
  auto channel = std::make_shared<shm::Channel>(shm::SharedMemorySegment::open(ch.name(), false));
  auto publish_bad = [&](const std::function<void(shm::MessageRecord&, shm::BufferRecord&)>& corrupt) {
    shm::ChannelLock lock(*channel);
    std::uint32_t slot = *channel->allocate_locked(256, ::getpid(), 0);
    shm::MessageRecord rec{shm::kMessageMagic, 1, 128, 8};
    shm::BufferRecord buf{shm::kSameSlot, 0, 136, 8};
    corrupt(rec, buf);
    std::memcpy(channel->slot_data(slot), &rec, sizeof rec);
    std::memcpy(channel->slot_data(slot) + sizeof rec, &buf, sizeof buf);
    channel->publish_locked(slot, {}, std::nullopt);
  };
  auto expect_rejected = [&](const char* needle) {
    try {
      rx.recv(1s);
      FAIL() << "accepted a hostile record (" << needle << ")";
    } catch (const TransportError& e) {
      EXPECT_NE(std::string(e.what()).find(needle), std::string::npos) << e.what();
    }
  };
  publish_bad([](auto& r, auto&) { r.magic = 0; });
  expect_rejected("magic");
  publish_bad([](auto& r, auto&) { r.buffer_count = 0xffffffffu; });
  expect_rejected("does not fit");
  publish_bad([](auto& r, auto&) { r.stream_offset = ~0ull - 3; });
  expect_rejected("stream");
  publish_bad([](auto&, auto& b) { b.offset = 250; });
  expect_rejected("outside its slot");
  publish_bad([](auto&, auto& b) { b.size = ~0ull; });
  expect_rejected("outside its slot");
  publish_bad([](auto&, auto& b) { b.slot = 123456789; });
  expect_rejected("out of range");
  publish_bad([](auto&, auto& b) { b.slot = 77; });
  expect_rejected("not in use");

  // Lane cells: claimed like a Sender would, then filled with garbage.
  std::uint32_t lane;
  {
    shm::ChannelLock lock(*channel);
    lane = *channel->claim_lane_locked(::getpid(), 0);
  }
  shm::Lane& l = channel->segment().lane(lane);
  auto publish_cell = [&](shm::LaneCell cell, std::uint64_t advance = 1) {
    const std::uint64_t tail = l.tail.load();
    std::memcpy(l.cells[tail % shm::kLaneCells], &cell, sizeof cell);
    l.tail.store(tail + advance);
  };
  publish_cell({shm::LaneCellKind::inline_message, 0, 1000, 0});
  expect_rejected("more than its 256 bytes");
  publish_cell({shm::LaneCellKind::inline_message, 0, 0, 0xffffffffu});
  expect_rejected("more than its 256 bytes");
  publish_cell({static_cast<shm::LaneCellKind>(7), 0, 0, 0});
  expect_rejected("not a message (kind 7)");
  publish_cell({shm::LaneCellKind::slot_message, 123456789, 0, 0});
  expect_rejected("out of range");
  publish_cell({shm::LaneCellKind::inline_message, 0, 0, 0}, 1000);
  expect_rejected("claims 1000 queued messages");
  {
    shm::ChannelLock lock(*channel);
    channel->close_lane_locked(lane);
  }
  // The channel still works afterwards and nothing leaked.
  Sender tx = Sender::connect(ch.url());
  tx.send(make_message(0, 1, {10, 20}));
  std::optional<Message> m = rx.recv(1s);
  ASSERT_TRUE(m);
  verify(*m);
  m.reset();
  EXPECT_EQ(rx.stats().slots_in_use, 0u);
}

}  // namespace
}  // namespace picklewire
