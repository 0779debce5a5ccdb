// ZeroMQ transport benchmarks: picklewire Message throughput vs raw libzmq moving the same bytes
// zero-copy (ipc://, tcp://), lz4 ratio and speed on compressible arrays, and the cost of the
// incompressibility check on random data. Commands and figures: docs/performance.md ("ZeroMQ").
#include <benchmark/benchmark.h>
#include <sys/resource.h>
#include <unistd.h>
#include <zmq.hpp>

#include <atomic>
#include <cstring>
#include <random>
#include <thread>

#include "../tests/zmq_support.hpp"  // test::free_tcp_port
#include "picklewire/endpoint.hpp"
#include "zmq/context.hpp"
#include "zmq/lz4_codec.hpp"
#include "zmq/message_frames.hpp"

using namespace picklewire;
using namespace std::chrono_literals;
namespace zt = picklewire::zmq_transport;

namespace {

std::string url_for(int transport, const char* tag) {
  static int n = 0;
  if (transport == 0) return "ipc:///tmp/picklewire-bench-" + std::to_string(::getpid()) + "-" + tag + std::to_string(n++);
  return "tcp://127.0.0.1:" + std::to_string(test::free_tcp_port());  // fixed ranges collided between runs
}

// CPU time of the whole process (every thread: the sender, libzmq's I/O thread, the draining
// receiver) between construction and per_message(): a row's total cost per message, which the
// wall-clock rows of a 2-core machine only show once the threads compete for its cores.
class ProcessCpu {
 public:
  ProcessCpu() : start_(now()) {}
  double microseconds_per(long messages) const { return messages ? (now() - start_) / double(messages) : 0.0; }

 private:
  static double now() {
    rusage u{};
    ::getrusage(RUSAGE_SELF, &u);
    auto us = [](const timeval& t) { return double(t.tv_sec) * 1e6 + double(t.tv_usec); };
    return us(u.ru_utime) + us(u.ru_stime);
  }
  double start_;
};

// Waits until the receiver has taken every message sent, asleep: a yield loop would add its own
// CPU to process_cpu_us while the last queued messages drain.
void wait_for_drain(const std::atomic<long>& received, long sent) {
  while (received < sent) std::this_thread::sleep_for(std::chrono::microseconds(50));
}

const char* transport_name(int t) { return t == 0 ? "ipc" : t == 1 ? "tcp" : "shm"; }

Buffer filled(std::size_t size, int kind) {
  Buffer b = Buffer::allocate(size);
  auto* p = b.mutable_data();
  std::mt19937_64 rng(5);
  if (kind == 0) {  // random
    for (std::size_t i = 0; i + 8 <= size; i += 8) {
      std::uint64_t v = rng();
      std::memcpy(p + i, &v, 8);
    }
  } else if (kind == 1) {  // float64 arange
    for (std::size_t i = 0; i + 8 <= size; i += 8) {
      double v = double(i / 8);
      std::memcpy(p + i, &v, 8);
    }
  } else {  // sparse float64: 1% nonzero
    std::memset(p, 0, size);
    for (std::size_t i = 0; i + 8 <= size; i += 800) {
      double v = double(rng() % 1000) / 7.0;
      std::memcpy(p + i, &v, 8);
    }
  }
  return b;
}

// picklewire Sender -> Receiver (drained by a thread), one buffer of range(0) bytes per message.
// wire_version 1: the three-frame format, for before/after figures of version 2 (issue 16).
// transport 2 is shm:// (the same code path as a same-host channel, without the socket).
// same_host: the ZeroMQ URL's same-host path (docs/zmq.md "Same host"); off, frames on the socket
// as between hosts, which is what the comparisons with raw libzmq measure.
void BM_PicklewireMessage(benchmark::State& state, int transport, bool compress, int kind, int wire_version = 2,
                          bool same_host = false) {
  std::size_t size = static_cast<std::size_t>(state.range(0));
  EndpointOptions o;
  o.zmq.same_host = same_host;
  o.zmq.linger = 0ms;
  o.zmq.compress = compress;
  o.zmq.wire_version = wire_version;
  o.zmq.send_hwm = o.zmq.recv_hwm = size >= (64u << 20) ? 2 : 100;
  std::string url = transport == 2 ? "shm://pw-zmq-bench-" + std::to_string(::getpid()) : url_for(transport, "pw");
  if (transport == 2) o.shm.capacity = o.zmq.same_host_capacity;  // the channel a same-host receiver creates
  Receiver rx = Receiver::bind(url, o);
  Sender tx = Sender::connect(url, o);
  std::atomic<long> received{0};
  std::atomic<bool> stop{false};
  std::thread drain([&] {
    while (!stop)
      if (rx.recv(20ms)) ++received;
  });
  Message m{Buffer::copy(std::string_view("\x80\x05stream"), true), {filled(size, kind)}};
  long sent = 0;
  if (same_host || transport == 2) {
    // Not timed: the first message waits for the negotiation and the channel's creation (once
    // per connection), and faults the channel's first pages in.
    tx.send(m);
    ++sent;
  }
  const long untimed = sent;
  ProcessCpu cpu;
  for (auto _ : state) {
    tx.send(m);
    ++sent;
  }
  wait_for_drain(received, sent);
  state.counters["process_cpu_us"] = cpu.microseconds_per(sent - untimed);
  stop = true;
  drain.join();
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(size));
  state.SetLabel(std::string(transport_name(transport)) + (compress ? " lz4" : "") + (wire_version == 1 ? " v1" : "") +
                 (same_host ? " same-host" : ""));
  if (same_host) state.counters["same_host"] = double(tx.stats().ledger.same_host_messages) / double(sent);  // 1: every message
  if (compress) state.counters["wire/raw"] = double(tx.stats().wire_bytes) / double(tx.stats().ledger.oob_bytes + 1);
}

// Raw libzmq PUSH/PULL, the same bytes as one zero-copy frame (zmq_msg_init_data, no-op free).
// header_frame: first a small frame, as picklewire's wire format sends a message with one buffer
// above inline_max_bytes (header frame, then the buffer's frame); beside the one-frame rows it
// prices the format's second frame apart from picklewire's own code.
// same_options: the sockets configured as picklewire's default endpoints configure theirs
// (configure_and_attach with default ZmqOptions: heartbeats; immediate on the connecting PUSH),
// which issue 16 asks for by default and which cost libzmq some per-message work of its own.
void BM_RawZmq(benchmark::State& state, int transport, bool header_frame = false, bool same_options = false) {
  std::size_t size = static_cast<std::size_t>(state.range(0));
  std::string url = url_for(transport, "raw");
  zmq::socket_t pull(zt::context(), zmq::socket_type::pull), push(zt::context(), zmq::socket_type::push);
  int hwm = size >= (64u << 20) ? 2 : 100;
  if (same_options) {
    ZmqOptions o;
    o.send_hwm = o.recv_hwm = hwm;
    o.linger = 0ms;
    push.set(zmq::sockopt::immediate, 1);
    zt::configure_and_attach(pull, url, /*bind=*/true, o);
    zt::configure_and_attach(push, url, /*bind=*/false, o);
  } else {
    pull.set(zmq::sockopt::rcvhwm, hwm);
    push.set(zmq::sockopt::sndhwm, hwm);
    pull.set(zmq::sockopt::linger, 0);
    push.set(zmq::sockopt::linger, 0);
    pull.bind(url);
    push.connect(url);
  }
  pull.set(zmq::sockopt::rcvtimeo, 20);
  Buffer data = filled(size, 0);
  const std::byte header[48] = {};  // a version-2 header with one descriptor and the stream inline
  std::atomic<long> received{0};
  std::atomic<bool> stop{false};
  std::thread drain([&] {
    zmq::message_t msg;
    while (!stop)
      if (pull.recv(msg) && !msg.more()) ++received;
  });
  long sent = 0;
  ProcessCpu cpu;
  for (auto _ : state) {
    if (header_frame) {
      zmq::message_t head(header, sizeof header);
      push.send(head, zmq::send_flags::sndmore);
    }
    zmq::message_t msg(const_cast<std::byte*>(data.data()), size, [](void*, void*) {}, nullptr);
    push.send(msg, zmq::send_flags::none);
    ++sent;
  }
  wait_for_drain(received, sent);
  state.counters["process_cpu_us"] = cpu.microseconds_per(sent);
  stop = true;
  drain.join();
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(size));
  state.SetLabel(std::string(transport_name(transport)) + (header_frame ? " header+buffer" : "") +
                 (same_options ? " picklewire's socket options" : ""));
}

// FrameWriter::write then FrameReader::read of the message BM_PicklewireMessage sends, without a
// socket: the per-message CPU picklewire adds to libzmq's, steady where the socket rows are not.
void BM_FramesWriteRead(benchmark::State& state) {
  std::size_t size = static_cast<std::size_t>(state.range(0));
  ZmqOptions o;
  zt::FrameWriter writer(o);
  zt::FrameReader reader(o);
  Message m{Buffer::copy(std::string_view("\x80\x05stream"), true), {filled(size, 0)}};
  std::vector<zmq::message_t> frames;
  CopyLedger ledger;
  for (auto _ : state) {
    frames.clear();
    writer.write(m, frames, ledger);
    benchmark::DoNotOptimize(reader.read(frames, ledger));
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations()) * static_cast<std::int64_t>(size));
}

void sizes(benchmark::internal::Benchmark* b) {
  for (std::int64_t s : {1 << 10, 64 << 10, 1 << 20, 16 << 20, 256 << 20, 1 << 30}) b->Arg(s);
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}

// lz4 on its own: compress / decompress GB/s (of raw bytes) and ratio, for arange and sparse.
void BM_Lz4Compress(benchmark::State& state, int kind) {
  std::size_t size = 64u << 20;
  Buffer in = filled(size, kind);
  zt::CompressionChoice choice = zt::choose_compression(in.bytes(), {});
  std::vector<std::byte> out(zt::compressed_bound(size));
  std::size_t n = 0;
  for (auto _ : state) n = zt::compress(in.bytes(), choice.shuffle_item_size, out);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
  state.counters["ratio"] = double(size) / double(n);
  state.counters["shuffle"] = choice.shuffle_item_size;
}

void BM_Lz4Decompress(benchmark::State& state, int kind) {
  std::size_t size = 64u << 20;
  Buffer in = filled(size, kind);
  zt::CompressionChoice choice = zt::choose_compression(in.bytes(), {});
  std::vector<std::byte> wire(zt::compressed_bound(size));
  wire.resize(zt::compress(in.bytes(), choice.shuffle_item_size, wire));
  std::vector<std::byte> out(size);
  for (auto _ : state) zt::decompress(wire, choice.shuffle_item_size, out);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
}

// The sampling check alone on random data (what compress=true costs when it decides to skip).
void BM_Lz4SkipCheck(benchmark::State& state) {
  std::size_t size = static_cast<std::size_t>(state.range(0));
  Buffer in = filled(size, 0);
  for (auto _ : state) benchmark::DoNotOptimize(zt::choose_compression(in.bytes(), {}));
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * size));
}

}  // namespace

BENCHMARK_CAPTURE(BM_PicklewireMessage, ipc, 0, false, 0)->Apply(sizes);
BENCHMARK_CAPTURE(BM_RawZmq, ipc, 0)->Apply(sizes);
BENCHMARK_CAPTURE(BM_PicklewireMessage, tcp, 1, false, 0)->Apply(sizes);
BENCHMARK_CAPTURE(BM_RawZmq, tcp, 1)->Apply(sizes);
BENCHMARK_CAPTURE(BM_RawZmq, ipc_header_and_buffer, 0, true)->Arg(64 << 10)->Arg(1 << 20)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_RawZmq, tcp_header_and_buffer, 1, true)->Arg(64 << 10)->Arg(1 << 20)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_RawZmq, ipc_same_options, 0, false, true)->Arg(1 << 10)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_RawZmq, tcp_same_options, 1, false, true)->Arg(1 << 10)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_RawZmq, ipc_header_and_buffer_same_options, 0, true, true)->Arg(64 << 10)->Arg(1 << 20)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_RawZmq, tcp_header_and_buffer_same_options, 1, true, true)->Arg(64 << 10)->Arg(1 << 20)->UseRealTime()->Unit(benchmark::kMicrosecond);
// The same-host path (C++ Message, heap buffer: one copy into the receiver's channel) beside shm://.
void same_host_sizes(benchmark::internal::Benchmark* b) {
  for (std::int64_t s : {1 << 20, 16 << 20, 256 << 20}) b->Arg(s);
  b->UseRealTime()->Unit(benchmark::kMicrosecond);
}
BENCHMARK_CAPTURE(BM_PicklewireMessage, ipc_same_host, 0, false, 0, 2, true)->Apply(same_host_sizes);
BENCHMARK_CAPTURE(BM_PicklewireMessage, tcp_same_host, 1, false, 0, 2, true)->Apply(same_host_sizes);
BENCHMARK_CAPTURE(BM_PicklewireMessage, shm, 2, false, 0)->Apply(same_host_sizes);
BENCHMARK_CAPTURE(BM_PicklewireMessage, ipc_v1, 0, false, 0, 1)->Arg(1 << 10)->Arg(64 << 10)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PicklewireMessage, tcp_v1, 1, false, 0, 1)->Arg(1 << 10)->Arg(64 << 10)->UseRealTime()->Unit(benchmark::kMicrosecond);
// compress=true on random data: the skip path end to end (compare with tcp above).
BENCHMARK_CAPTURE(BM_PicklewireMessage, tcp_lz4_random, 1, true, 0)->Arg(1 << 20)->Arg(16 << 20)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PicklewireMessage, tcp_lz4_arange, 1, true, 1)->Arg(16 << 20)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_PicklewireMessage, tcp_lz4_sparse, 1, true, 2)->Arg(16 << 20)->UseRealTime()->Unit(benchmark::kMicrosecond);
BENCHMARK_CAPTURE(BM_Lz4Compress, arange_f64, 1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Lz4Compress, sparse_f64, 2)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Lz4Decompress, arange_f64, 1)->Unit(benchmark::kMillisecond);
BENCHMARK_CAPTURE(BM_Lz4Decompress, sparse_f64, 2)->Unit(benchmark::kMillisecond);
BENCHMARK(BM_FramesWriteRead)->Arg(1 << 10)->Arg(64 << 10);
BENCHMARK(BM_Lz4SkipCheck)->Arg(64 << 10)->Arg(1 << 20)->Arg(16 << 20);
BENCHMARK_MAIN();
