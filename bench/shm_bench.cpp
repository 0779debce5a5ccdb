// Shared-memory transport against its baselines, side by side in one run:
//   Memcpy/N            glibc memcpy between two pre-faulted buffers of N bytes
//   NonTemporalCopy/N   the copy-in path's streaming-store copy, same buffers
//   ShmLoaned/N         Sender::allocate(N) + send + the receiver process taking it (0 bytes copied)
//   ShmCopyIn/N         send of an N-byte heap buffer (1 copy into the segment) + receive
//   ZmqIpcPush/N        raw cppzmq PUSH -> PULL over ipc:// to a receiver process
//   ShmPingPong64/spin|default, ZmqIpcPingPong64: 64-byte round trip between two processes
//   ShmSendRecv64       send + try_recv of a 64-byte message in one thread: per-message CPU cost
//   CoreToCorePingPong  two threads bouncing one counter through two cache lines: the floor any
//                       cross-process round trip pays on this machine
//   SpscRingPingPong64  two processes, one single-producer ring each way, 64-byte messages inline
//                       in the ring, spinning: what a lock-free message path could reach here
// Run: build/bench/shm_bench --benchmark_min_time=0.2   (see docs/performance.md)
#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <string>
#include <thread>
#include <vector>
#include <zmq.hpp>

#include "picklewire/endpoint.hpp"
#include "shm/copy.hpp"
#include "shm/wakeup.hpp"

namespace {

using namespace picklewire;
using namespace std::chrono_literals;

std::string unique(const char* tag) {
  static int n = 0;
  return std::string("pwbench-") + tag + "-" + std::to_string(::getpid()) + "-" + std::to_string(n++);
}

Message tagged(std::uint8_t tag) {
  Message m;
  m.stream = Buffer::copy(&tag, 1, true);
  return m;
}
constexpr std::uint8_t kData = 1, kEcho = 2, kQuit = 3;

// A receiver process on shm://NAME answering kEcho on shm://NAME-r.
class ShmPeer {
 public:
  ShmPeer(std::size_t capacity, std::chrono::microseconds spin) : name_(unique("shm")) {
    EndpointOptions o;
    o.shm.capacity = capacity;
    o.shm.spin = spin;
    replies_ = std::make_unique<Receiver>(Receiver::bind("shm://" + name_ + "-r", o));
    pid_ = ::fork();
    if (pid_ == 0) {
      int code = 1;
      try {
        Receiver rx = Receiver::bind("shm://" + name_, o);
        Sender back = Sender::connect("shm://" + name_ + "-r", o);
        back.send(tagged(kEcho));
        for (;;) {
          std::optional<Message> m = rx.recv(30s);
          if (!m) break;
          auto t = std::to_integer<std::uint8_t>(m->stream.data()[0]);
          if (t == kQuit) {
            code = 0;
            break;
          }
          if (t == kEcho) back.send(tagged(kEcho));
        }
      } catch (...) {
      }
      ::_exit(code);
    }
    replies_->recv(30s);
    tx_ = std::make_unique<Sender>(Sender::connect("shm://" + name_, o));
  }
  ~ShmPeer() {
    tx_->send(tagged(kQuit));
    int status;
    ::waitpid(pid_, &status, 0);
  }
  Sender& tx() { return *tx_; }
  Receiver& replies() { return *replies_; }

 private:
  std::string name_;
  pid_t pid_ = -1;
  std::unique_ptr<Receiver> replies_;
  std::unique_ptr<Sender> tx_;
};

// A raw cppzmq receiver process: PULL (drop) or PAIR (echo) on ipc://.
class ZmqPeer {
 public:
  explicit ZmqPeer(bool echo) : path_("ipc:///tmp/" + unique("zmq")), ctx_(1), sock_(ctx_, echo ? ZMQ_PAIR : ZMQ_PUSH) {
    pid_ = ::fork();
    if (pid_ == 0) {
      zmq::context_t ctx(1);
      zmq::socket_t s(ctx, echo ? ZMQ_PAIR : ZMQ_PULL);
      s.bind(path_);
      for (;;) {
        zmq::message_t m;
        if (!s.recv(m)) break;
        if (m.size() == 1) break;  // quit
        if (echo) s.send(m, zmq::send_flags::none);
      }
      ::_exit(0);
    }
    sock_.set(zmq::sockopt::sndhwm, 16);
    sock_.connect(path_);
  }
  ~ZmqPeer() {
    std::uint8_t q = 0;
    sock_.send(zmq::buffer(&q, 1), zmq::send_flags::none);
    int status;
    ::waitpid(pid_, &status, 0);
    ::unlink(path_.substr(6).c_str());
  }
  zmq::socket_t& sock() { return sock_; }

 private:
  std::string path_;
  pid_t pid_ = -1;
  zmq::context_t ctx_;
  zmq::socket_t sock_;
};

std::vector<char> prefaulted(std::size_t n) { return std::vector<char>(n, 1); }

void Memcpy(benchmark::State& state) {
  auto n = static_cast<std::size_t>(state.range(0));
  auto a = prefaulted(n), b = prefaulted(n);
  for (auto _ : state) {
    std::memcpy(b.data(), a.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

void NonTemporalCopy(benchmark::State& state) {
  auto n = static_cast<std::size_t>(state.range(0));
  auto a = prefaulted(n), b = prefaulted(n);
  for (auto _ : state) {
    picklewire::shm::copy_non_temporal(b.data(), a.data(), n);
    benchmark::ClobberMemory();
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

std::size_t capacity_for(std::size_t n) { return std::max<std::size_t>(2 * n + (1 << 20), 16 << 20); }

void ShmLoaned(benchmark::State& state) {
  auto n = static_cast<std::size_t>(state.range(0));
  ShmPeer peer(capacity_for(n), 50us);
  for (auto _ : state) {
    Message m = tagged(kData);
    Buffer b = peer.tx().allocate(n);
    b.mutable_data()[0] = std::byte{1};
    m.buffers.push_back(std::move(b));
    peer.tx().send(m);
  }
  TransportStats s = peer.tx().stats();
  state.counters["copied_bytes"] = static_cast<double>(s.ledger.total_copied_bytes());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

void ShmCopyIn(benchmark::State& state) {
  auto n = static_cast<std::size_t>(state.range(0));
  const std::size_t capacity = capacity_for(n);
  ShmPeer peer(capacity, std::chrono::microseconds(state.range(1)));
  Message m = tagged(kData);
  Buffer payload = Buffer::allocate(n);
  std::memset(payload.mutable_data(), 1, n);
  m.buffers.push_back(payload);
  // Steady state, as in a long-lived channel: one lap over the whole heap before timing. On the
  // shadow-paging VMs here a process's first store to each page of its mapping takes a hypervisor
  // fault (0.6-0.8 GB/s) even though the segment was pre-faulted (docs/performance.md).
  for (std::size_t sent = 0; sent < capacity + n; sent += n) peer.tx().send(m);
  for (auto _ : state) peer.tx().send(m);
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

void ZmqIpcPush(benchmark::State& state) {
  auto n = static_cast<std::size_t>(state.range(0));
  ZmqPeer peer(false);
  auto payload = prefaulted(n);
  for (auto _ : state) {
    zmq::message_t m(payload.data(), n);  // cppzmq copies into its message
    peer.sock().send(m, zmq::send_flags::none);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(n));
}

// Per-iteration round-trip times, reported as p50_us / p99_us counters beside the mean
// (latency targets are stated as medians; on a VM, rare host preemptions of 100+ us inflate the
// mean several times over while the median holds).
class RoundTrips {
 public:
  explicit RoundTrips(benchmark::State& state) : state_(state) { times_.reserve(1 << 20); }
  ~RoundTrips() {
    if (times_.empty()) return;
    std::sort(times_.begin(), times_.end());
    auto at = [&](double q) { return times_[static_cast<std::size_t>(q * static_cast<double>(times_.size() - 1))]; };
    state_.counters["p50_us"] = at(0.5);
    state_.counters["p99_us"] = at(0.99);
  }
  template <typename F>
  void time(F&& round_trip) {
    const auto t0 = std::chrono::steady_clock::now();
    round_trip();
    times_.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count());
  }

 private:
  benchmark::State& state_;
  std::vector<double> times_;
};

void ShmPingPong64(benchmark::State& state) {
  ShmPeer peer(16 << 20, std::chrono::microseconds(state.range(0)));
  Buffer payload = Buffer::allocate(64);
  std::memset(payload.mutable_data(), 1, 64);
  RoundTrips trips(state);
  for (auto _ : state)
    trips.time([&] {
      Message m = tagged(kEcho);
      m.buffers.push_back(payload);
      peer.tx().send(m);
      peer.replies().recv();
    });
}

// One process, one thread: send a 64-byte message and take it back with try_recv. No scheduling
// and no cross-core traffic, so this is the per-message CPU cost of both sides (locks, slot
// allocation, validation, leases, allocations), stable even on a loaded machine.
void ShmSendRecv64(benchmark::State& state) {
  const std::string url = "shm://" + unique("local");
  EndpointOptions o;
  o.shm.capacity = 16 << 20;
  Receiver rx = Receiver::bind(url, o);
  Sender tx = Sender::connect(url, o);
  Buffer payload = Buffer::allocate(64);
  std::memset(payload.mutable_data(), 1, 64);
  for (auto _ : state) {
    Message m = tagged(kEcho);
    m.buffers.push_back(payload);
    tx.send(m);
    std::optional<Message> r = rx.try_recv();
    if (!r) state.SkipWithError("message not received");
    benchmark::DoNotOptimize(r);
  }
}

void ZmqIpcPingPong64(benchmark::State& state) {
  ZmqPeer peer(true);
  char payload[64] = {};
  RoundTrips trips(state);
  for (auto _ : state)
    trips.time([&] {
      peer.sock().send(zmq::buffer(payload, 64), zmq::send_flags::none);
      zmq::message_t r;
      (void)peer.sock().recv(r);
    });
}

// The floor for a message path with no lock and no slot allocation: one single-producer ring per
// direction in a shared mapping, the 64-byte message copied inline into a ring cell, head and tail
// on lines of their own. Per direction two lines cross cores (the tail, then the cell); ShmPingPong64
// moves the lock word, slot table, sorted index, ring entry, tail and record (docs/performance.md).
void SpscRingPingPong64(benchmark::State& state) {
  struct Ring {
    alignas(64) std::atomic<std::uint64_t> tail{0};
    alignas(64) std::atomic<std::uint64_t> head{0};
    struct alignas(64) Cell {
      char bytes[64];
    } cells[64];
    void push(const char* message) {
      const std::uint64_t t = tail.load(std::memory_order_relaxed);
      while (t - head.load(std::memory_order_acquire) >= 64) picklewire::shm::cpu_relax();
      std::memcpy(cells[t % 64].bytes, message, 64);
      tail.store(t + 1, std::memory_order_release);
    }
    void pop(char* message) {
      const std::uint64_t h = head.load(std::memory_order_relaxed);
      while (tail.load(std::memory_order_acquire) == h) picklewire::shm::cpu_relax();
      std::memcpy(message, cells[h % 64].bytes, 64);
      head.store(h + 1, std::memory_order_release);
    }
  };
  void* mapping = ::mmap(nullptr, 2 * sizeof(Ring), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  if (mapping == MAP_FAILED) return state.SkipWithError("mmap failed");
  Ring* forward = new (mapping) Ring();
  Ring* back = new (static_cast<Ring*>(mapping) + 1) Ring();
  char message[64] = {};
  const pid_t echo = ::fork();
  if (echo == 0) {
    for (;;) {
      forward->pop(message);
      if (message[0] == kQuit) ::_exit(0);
      back->push(message);
    }
  }
  {
    RoundTrips trips(state);
    for (auto _ : state)
      trips.time([&] {
        message[0] = kEcho;
        forward->push(message);
        back->pop(message);
      });
  }
  message[0] = kQuit;
  forward->push(message);
  int status;
  ::waitpid(echo, &status, 0);
  ::munmap(mapping, 2 * sizeof(Ring));
}

constexpr std::int64_t KiB = 1 << 10, MiB = 1 << 20, GiB = std::int64_t(1) << 30;

// The hardware floor under ShmPingPong64: a round trip of two cache lines between two threads
// (each polls with PAUSE, as the receiver's spin does), no transport at all.
void CoreToCorePingPong(benchmark::State& state) {
  struct alignas(64) Line {
    std::atomic<std::int64_t> v{0};
  };
  Line ping, pong;
  std::atomic<bool> stop{false};
  std::thread echo([&] {
    std::int64_t seen = 0;
    while (!stop.load(std::memory_order_relaxed)) {
      const std::int64_t v = ping.v.load(std::memory_order_acquire);
      if (v != seen) {
        seen = v;
        pong.v.store(v, std::memory_order_release);
      } else {
        picklewire::shm::cpu_relax();
      }
    }
  });
  std::int64_t n = 0;
  {
    RoundTrips trips(state);
    for (auto _ : state)
      trips.time([&] {
        ping.v.store(++n, std::memory_order_release);
        while (pong.v.load(std::memory_order_acquire) != n) picklewire::shm::cpu_relax();
      });
  }
  stop = true;
  echo.join();
}

BENCHMARK(Memcpy)->RangeMultiplier(4)->Range(MiB, 256 * MiB)->UseRealTime();
BENCHMARK(NonTemporalCopy)->RangeMultiplier(4)->Range(MiB, 256 * MiB)->UseRealTime();
BENCHMARK(ShmCopyIn)->ArgsProduct({benchmark::CreateRange(MiB, 256 * MiB, 4), {50, 0}})->ArgNames({"", "spin_us"})->UseRealTime();
BENCHMARK(ShmLoaned)->RangeMultiplier(32)->Range(KiB, GiB)->UseRealTime();
BENCHMARK(ZmqIpcPush)->RangeMultiplier(32)->Range(KiB, 32 * MiB)->UseRealTime();
// spin: 200 ms (always spinning); default: ShmOptions' 50 us, then block; 0: block at once (futex).
BENCHMARK(ShmPingPong64)->Arg(200000)->Arg(50)->Arg(0)->UseRealTime()->ArgName("spin_us");
BENCHMARK(ShmSendRecv64);
BENCHMARK(ZmqIpcPingPong64)->UseRealTime();
BENCHMARK(CoreToCorePingPong)->UseRealTime();
BENCHMARK(SpscRingPingPong64)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
