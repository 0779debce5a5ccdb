// picklewire bench URL --size BYTES [--count N] [--loan] [--json] [--compress] [--no-same-host]
//
// Two processes (this one and a forked child). The child binds URL and receives; it answers on a
// reply channel (shm://NAME-reply, ipc://PATH-reply, tcp://HOST:PORT+1) that this process binds.
//   throughput: N messages of BYTES, timed from the first send to the child's "done" reply;
//   latency:    ping-pong of BYTES-sized messages, each answered by a small reply, percentiles of
//               the round trip;
//   copies:     user-space copy passes per message, end to end: the sender's ledger plus the
//               receiver's (which the child sends back in its answer to Tag::quit).
// --loan fills a buffer from Sender::allocate (zero copy on shm), otherwise a pre-faulted heap
// buffer is sent (one copy into the segment on shm).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "progress.hpp"
#include "picklewire/endpoint.hpp"
#include "picklewire/errors.hpp"

namespace picklewire::cli {
namespace {

using Clock = std::chrono::steady_clock;

struct BenchArgs {
  std::string url;
  std::uint64_t size = 0;
  std::uint64_t count = 1000;
  bool loan = false;
  bool json = false;
  std::uint64_t capacity = 0;  // shm heap bytes; 0: sized from --size
  bool compress = false;       // zmq: lz4 per buffer
  bool no_same_host = false;   // zmq: frames even on this host
  bool quiet = false;          // no progress line
};

// tcp://HOST:PORT -> PORT, or UsageError for a URL without a valid port (bench needs PORT and PORT+1).
int tcp_port(const std::string& url) {
  const auto colon = url.rfind(':');
  const std::string port = colon == std::string::npos || colon < 6 ? "" : url.substr(colon + 1);
  int value = 0;
  const auto [end, ec] = std::from_chars(port.data(), port.data() + port.size(), value);
  if (port.empty() || ec != std::errc() || end != port.data() + port.size() || value < 1 || value > 65534)
    throw UsageError("bench: " + url + " needs a port between 1 and 65534 (tcp://HOST:PORT; PORT+1 carries the replies)");
  return value;
}

std::string reply_url(const std::string& url) {
  if (url.rfind("tcp://", 0) == 0) {
    const int port = tcp_port(url);
    return url.substr(0, url.rfind(':') + 1) + std::to_string(port + 1);
  }
  if (url.rfind("inproc://", 0) == 0) throw UsageError("bench: inproc:// cannot join two processes; use ipc:// or tcp://");
  return url + "-reply";
}

// The receiver process connects its reply socket to tcp://HOST:PORT+1 before this process can
// bind it (ZeroMQ cannot be set up before fork): if something else listens there, the receiver's
// first message would go to it. So refuse a PORT+1 that is taken, before starting anything.
void check_reply_port_free(const std::string& url) {
  if (url.rfind("tcp://", 0) != 0) return;
  const int port = tcp_port(url) + 1;
  std::string host = url.substr(6, url.rfind(':') - 6);
  if (host == "*" || host == "localhost") host = "127.0.0.1";
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<std::uint16_t>(port));
  if (::inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) return;  // a name: ZeroMQ resolves it
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) return;
  const bool taken = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  if (taken)
    throw TransportError("bench: tcp port " + std::to_string(port) + " (PORT+1, for the replies) already has a listener on " +
                             host + "; choose another PORT",
                         EADDRINUSE);
}

enum class Tag : std::uint8_t { data = 1, ping = 2, done = 3, ready = 4, quit = 5 };

Message control(Tag tag) {
  Message m;
  const auto t = static_cast<std::uint8_t>(tag);
  m.stream = Buffer::copy(&t, 1, true);
  return m;
}
Tag tag_of(const Message& m) { return m.stream.size() ? static_cast<Tag>(std::to_integer<std::uint8_t>(m.stream.data()[0])) : Tag::quit; }

int run_child(const BenchArgs& a, const EndpointOptions& options) {
  Receiver rx = Receiver::bind(a.url, options);
  Sender reply = Sender::connect(reply_url(a.url), options);
  reply.send(control(Tag::ready));
  for (;;) {
    std::optional<Message> m = rx.recv(std::chrono::seconds(30));
    if (!m) return 2;
    Tag t = tag_of(*m);
    if (t == Tag::done || t == Tag::ping) reply.send(control(t));
    if (t == Tag::quit) {
      // Answer with the receiving side's ledger (copies, bytes copied), then wait for the parent
      // to confirm it arrived: ZeroMQ sends from its I/O thread, which _exit would cut short.
      const TransportStats stats = rx.stats();
      std::uint64_t totals[2] = {0, stats.ledger.total_copied_bytes()};
      for (auto c : stats.ledger.copies) totals[0] += c;
      Message answer = control(Tag::quit);
      answer.buffers.push_back(Buffer::copy(totals, sizeof totals, true));
      reply.send(answer);
      rx.recv(std::chrono::seconds(5));
      return 0;
    }
  }
}

void run(const BenchArgs& a) {
  if (a.size == 0) throw UsageError("bench: --size must be at least 1 byte");
  EndpointOptions options;
  if ((a.compress || a.no_same_host) && a.url.rfind("shm://", 0) == 0)
    throw UsageError(std::string("bench: ") + (a.compress ? "--compress" : "--no-same-host") +
                     " applies to ZeroMQ URLs, not " + a.url);
  (void)reply_url(a.url);  // usage errors first
  check_reply_port_free(a.url);
  options.zmq.compress = a.compress;
  options.zmq.same_host = !a.no_same_host;
  // Room for a few messages in flight; at least 64 MiB so small messages never wait.
  options.shm.capacity = a.capacity ? a.capacity : std::max<std::uint64_t>(4 * a.size + (1 << 20), 64 << 20);
  options.zmq.send_hwm = 16;
  // ipc:// socket files outlive processes that _exit before ZeroMQ removes them: remove both.
  struct IpcFiles {
    std::vector<std::string> paths;
    ~IpcFiles() {
      std::error_code ec;
      for (const auto& p : paths) std::filesystem::remove(p, ec);
    }
  } ipc_files;
  if (a.url.rfind("ipc://", 0) == 0) ipc_files.paths = {a.url.substr(6), reply_url(a.url).substr(6)};
  // A shm:// reply channel must exist before the child connects to it; a ZeroMQ one must be made
  // after the fork, since ZeroMQ's context (and its I/O threads) does not survive fork in the child.
  const bool shm = a.url.rfind("shm://", 0) == 0;
  std::optional<Receiver> replies;
  if (shm) replies.emplace(Receiver::bind(reply_url(a.url), options));
  pid_t child = ::fork();
  if (child < 0) throw Error("bench: fork failed");
  if (child == 0) {
    int code = 1;
    try {
      code = run_child(a, options);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "bench receiver: %s\n", e.what());
    }
    std::fflush(nullptr);
    ::_exit(code);
  }
  struct Reaper {
    pid_t pid;
    ~Reaper() {  // the child exits on Tag::quit; kill it only if it is stuck
      int status;
      for (int i = 0; i < 500; ++i) {
        if (::waitpid(pid, &status, WNOHANG) != 0) return;
        ::usleep(10000);
      }
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
    }
  } reaper{child};
  if (!shm) replies.emplace(Receiver::bind(reply_url(a.url), options));

  if (!replies->recv(std::chrono::seconds(30))) throw Error("bench: the receiver process did not start");
  Sender tx = Sender::connect(a.url, options);

  Buffer heap_payload;
  if (!a.loan) {
    heap_payload = Buffer::allocate(a.size);
    std::memset(heap_payload.mutable_data(), 1, a.size);  // pre-fault
  }
  auto make = [&](Tag tag) {
    Message m = control(tag);
    if (a.loan) {
      Buffer b = tx.allocate(a.size);
      b.mutable_data()[0] = std::byte{1};  // the writer's work is not what is measured
      m.buffers.push_back(std::move(b));
    } else {
      m.buffers.push_back(heap_payload);
    }
    return m;
  };

  // Warm-up, then throughput.
  constexpr std::uint64_t kWarmUp = 3;
  for (std::uint64_t i = 0; i < kWarmUp; ++i) tx.send(make(Tag::data));
  const auto t0 = Clock::now();
  {
    Progress progress("bench: sent", a.count, a.quiet || a.json);
    for (std::uint64_t i = 0; i < a.count; ++i) {
      tx.send(make(Tag::data));
      progress.add(a.size);
    }
  }
  tx.send(control(Tag::done));
  if (!replies->recv(std::chrono::seconds(120))) throw Error("bench: no reply from the receiver");
  const double seconds = std::chrono::duration<double>(Clock::now() - t0).count();

  // Ping-pong latency.
  const std::uint64_t pings = std::min<std::uint64_t>(a.count, 10000);
  std::vector<double> rtt_us;
  rtt_us.reserve(pings);
  for (std::uint64_t i = 0; i < pings; ++i) {
    Message m = make(Tag::ping);
    const auto p0 = Clock::now();
    tx.send(m);
    if (!replies->recv(std::chrono::seconds(30))) throw Error("bench: ping lost");
    rtt_us.push_back(std::chrono::duration<double, std::micro>(Clock::now() - p0).count());
  }
  tx.send(control(Tag::quit));
  std::optional<Message> last = replies->recv(std::chrono::seconds(30));
  if (!last || last->buffers.size() != 1 || last->buffers[0].size() != 2 * sizeof(std::uint64_t))
    throw Error("bench: the receiver did not report its copies");
  std::uint64_t receiver[2];
  std::memcpy(receiver, last->buffers[0].data(), sizeof receiver);
  tx.send(control(Tag::quit));  // received: the child may exit
  std::sort(rtt_us.begin(), rtt_us.end());
  auto pct = [&](double p) { return rtt_us.empty() ? 0.0 : rtt_us[static_cast<std::size_t>(p * (rtt_us.size() - 1))]; };

  TransportStats st = tx.stats();
  std::uint64_t sender_copies = 0;
  for (auto c : st.ledger.copies) sender_copies += c;
  // Per message that carried the payload (warm-up, timed and ping messages); the control messages
  // (done, quit) carry none and would dilute the figure.
  const double payload_messages = double(kWarmUp + a.count + pings);
  const double sender_per_message = double(sender_copies) / payload_messages;
  const double receiver_per_message = double(receiver[0]) / payload_messages;
  const double per_message_copies = sender_per_message + receiver_per_message;
  const double copied_per_message = double(st.ledger.total_copied_bytes() + receiver[1]) / payload_messages;
  const double gbps = double(a.size) * double(a.count) / seconds / 1e9;
  const double msgs = double(a.count) / seconds;

  if (a.json) {
    const nlohmann::ordered_json j = {
        {"url", a.url},
        {"size", a.size},
        {"count", a.count},
        {"loan", a.loan},
        {"throughput_GBps", gbps},
        {"messages_per_s", msgs},
        {"rtt_us", {{"p50", pct(0.5)}, {"p90", pct(0.9)}, {"p99", pct(0.99)}}},
        {"copies_per_message", per_message_copies},
        {"sender_copies_per_message", sender_per_message},
        {"receiver_copies_per_message", receiver_per_message},
        {"copied_bytes_per_message", copied_per_message},
        {"sender", nlohmann::ordered_json::parse(stats_json("sender", st))}};
    std::cout << j.dump() << "\n";
    return;
  }
  char line[1024];
  std::snprintf(line, sizeof line,
                "%s size=%llu count=%llu %s\n  throughput   %.3f GB/s, %.0f messages/s\n"
                "  round trip   p50 %.2f us, p90 %.2f us, p99 %.2f us\n"
                "  copies       %.2f per message: %.2f sending, %.2f receiving (%.0f bytes copied per message)\n",
                a.url.c_str(), static_cast<unsigned long long>(a.size), static_cast<unsigned long long>(a.count),
                a.loan ? "loaned" : "copy-in", gbps, msgs, pct(0.5), pct(0.9), pct(0.99), per_message_copies,
                sender_per_message, receiver_per_message, copied_per_message);
  std::cout << line;
}

}  // namespace

void add_bench_command(CLI::App& app) {
  auto args = std::make_shared<BenchArgs>();
  CLI::App* cmd = app.add_subcommand("bench", "Measure throughput, round-trip latency and copies between two processes");
  cmd->add_option("url", args->url, "shm://NAME, ipc://PATH or tcp://HOST:PORT (PORT+1 carries replies)")->required();
  cmd->add_option("--size", args->size, "payload bytes per message (units: 64KiB, 1MiB, 1GiB, 1MB...)")
      ->transform(CLI::AsSizeValue(/*kb_is_1000=*/false))
      ->required();
  cmd->add_option("--count", args->count, "messages (default 1000)");
  cmd->add_option("--capacity", args->capacity, "shm heap bytes (default: enough for a few messages; units as --size)")
      ->transform(CLI::AsSizeValue(false));
  cmd->add_flag("--loan", args->loan, "send buffers from Sender::allocate (zero copy on shm)");
  cmd->add_flag("--json", args->json, "one JSON object instead of text");
  cmd->add_flag("--quiet", args->quiet, "no progress line on the terminal");
  cmd->add_flag("--compress", args->compress, "ZeroMQ: lz4 per buffer (the payload is one repeated byte: compressible)");
  cmd->add_flag("--no-same-host", args->no_same_host,
                "ZeroMQ: frames as between hosts, not the same-host shared-memory path (docs/zmq.md \"Same host\")");
  cmd->callback([args] { run(*args); });
}

}  // namespace picklewire::cli
