// FramePool (transport/zmq/frame_pool.hpp): blocks are reused once ZeroMQ frees their frames,
// come back from other threads, outlive their pool while frames are still queued, and a real
// socket carries pooled frames intact.
#include <gtest/gtest.h>
#include <unistd.h>
#include <zmq.hpp>

#include <atomic>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "zmq/context.hpp"
#include "zmq/frame_pool.hpp"

namespace zt = picklewire::zmq_transport;

namespace {

zmq::message_t filled(zt::FramePool& pool, std::size_t size, char c) {
  zmq::message_t frame = pool.frame(size);
  std::memset(frame.data(), c, size);
  return frame;
}

}  // namespace

TEST(FramePool, AFreedFrameLendsItsBlockToTheNext) {
  zt::FramePool pool;
  for (int i = 0; i < 1000; ++i) {
    zmq::message_t frame = filled(pool, 1100, 'a');
    EXPECT_EQ(frame.size(), 1100u);
  }
  EXPECT_EQ(pool.blocks_created(), 1u);
}

TEST(FramePool, BlocksComeBackFromAnotherThread) {
  zt::FramePool pool;
  for (int round = 0; round < 50; ++round) {
    std::vector<zmq::message_t> frames;
    for (int i = 0; i < 20; ++i) frames.push_back(filled(pool, 64 + i, char('a' + i)));
    std::thread([&] { frames.clear(); }).join();  // as libzmq's I/O thread frees them
  }
  EXPECT_EQ(pool.blocks_created(), 20u);
}

TEST(FramePool, LargeFramesAndFramesBeyondTheCapUseZeroMQsMemory) {
  zt::FramePool pool;
  zmq::message_t big = filled(pool, zt::FramePool::kBlockBytes + 1, 'b');
  EXPECT_EQ(pool.blocks_created(), 0u);
  std::vector<zmq::message_t> held;
  for (std::size_t i = 0; i < zt::FramePool::kMaxBlocks + 10; ++i) held.push_back(filled(pool, 100, 'c'));
  EXPECT_EQ(pool.blocks_created(), zt::FramePool::kMaxBlocks);
  for (const auto& f : held) EXPECT_EQ(static_cast<const char*>(f.data())[99], 'c');
}

TEST(FramePool, FramesOutliveTheirPool) {
  std::vector<zmq::message_t> frames;
  {
    zt::FramePool pool;
    for (int i = 0; i < 10; ++i) frames.push_back(filled(pool, 500, char('0' + i)));
  }
  // Under ASan (the fuzz build) or valgrind a block freed with its pool would show here.
  for (int i = 0; i < 10; ++i) EXPECT_EQ(static_cast<const char*>(frames[i].data())[499], char('0' + i));
  std::thread([&] { frames.clear(); }).join();
}

// Blocks come back on another thread while the owner takes and makes more, and the owner goes
// while that thread still holds some (the last one back frees the pool). The sanitizer builds of
// this file are the real check (the socket test aside: libzmq is not instrumented for TSan):
//   g++ -std=c++20 -O1 -g -fsanitize=thread -Iinclude -Itransport tests/zmq_frame_pool_test.cpp
//       transport/zmq/frame_pool.cpp transport/zmq/context.cpp -lgtest -lgtest_main -lzmq -lpthread
//   ./a.out --gtest_filter=-*RealSocket*       (and the same with -fsanitize=address,undefined)
TEST(FramePool, ReturnsRaceTheOwnerAndOutliveIt) {
  std::mutex lock;
  std::deque<zmq::message_t> handed;
  std::atomic<bool> done{false};
  std::thread returner([&] {
    for (;;) {
      std::unique_lock<std::mutex> l(lock);
      if (handed.empty()) {
        if (done) return;
        l.unlock();
        std::this_thread::yield();
        continue;
      }
      zmq::message_t frame = std::move(handed.front());
      handed.pop_front();
      l.unlock();
      if (static_cast<const char*>(frame.data())[199] != 'x') std::abort();
    }  // the frame goes back to its pool here, on this thread
  });
  {
    zt::FramePool pool;
    for (int i = 0; i < 20000; ++i) {
      zmq::message_t frame = filled(pool, 200, 'x');
      std::lock_guard<std::mutex> l(lock);
      handed.push_back(std::move(frame));
    }
    EXPECT_LE(pool.blocks_created(), zt::FramePool::kMaxBlocks);
  }
  done = true;
  returner.join();
}

TEST(FramePool, PooledFramesCrossARealSocketIntact) {
  const std::string url = "ipc:///tmp/picklewire-frame-pool-" + std::to_string(::getpid());
  zmq::socket_t pull(zt::context(), zmq::socket_type::pull), push(zt::context(), zmq::socket_type::push);
  pull.set(zmq::sockopt::linger, 0);
  push.set(zmq::sockopt::linger, 0);
  pull.set(zmq::sockopt::rcvtimeo, 5000);
  pull.bind(url);
  push.connect(url);
  std::size_t created;
  {
    zt::FramePool pool;
    for (int i = 0; i < 2000; ++i) {
      zmq::message_t frame = filled(pool, 100 + i % 900, char('A' + i % 26));
      ASSERT_TRUE(push.send(frame, zmq::send_flags::none));
    }
    created = pool.blocks_created();
  }  // the pool's owner is gone while frames may still be queued in ZeroMQ
  for (int i = 0; i < 2000; ++i) {
    zmq::message_t got;
    ASSERT_TRUE(pull.recv(got));
    ASSERT_EQ(got.size(), 100u + i % 900);
    const char* p = static_cast<const char*>(got.data());
    EXPECT_EQ(p[0], char('A' + i % 26));
    EXPECT_EQ(p[got.size() - 1], char('A' + i % 26));
  }
  EXPECT_LE(created, zt::FramePool::kMaxBlocks);
  ::unlink(url.substr(6).c_str());
}
