// Two processes exchange a large numpy-style float64 array (an NDArray Value, pickled at protocol 5
// with its data out-of-band) over shm://, on two paths:
//   loaned:  the sender writes the array straight into shared memory (Sender::allocate_array), so
//            sending copies nothing;
//   copy-in: the array lives in ordinary heap memory and is copied into the segment once.
// The receiver loads each message with recv_value(): its NDArray views the segment in place (no
// copy), and it checks the values' checksum through as<double>(). Both sides' copy ledgers are
// printed: bytes copied with their reason codes, and bytes that moved without a copy.
//
//   build/examples/shm_array_demo [--size 512MiB] [--count 3] [--python]
#include <sys/wait.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "picklewire/endpoint.hpp"
#include "picklewire/ndarray.hpp"
#include "picklewire/values.hpp"

using namespace picklewire;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

namespace {

std::int64_t now_ns() { return Clock::now().time_since_epoch().count(); }  // one clock for all processes

double fill(std::span<double> a, double scale) {
  double sum = 0;
  for (std::size_t i = 0; i < a.size(); ++i) sum += (a[i] = static_cast<double>(i % 1000) * scale);
  return sum;
}

// One demo message: the array and what the receiver needs to check and time it.
Value message(const char* path, const NDArray& array, double checksum) {
  return Value::dict({{"path", path}, {"checksum", checksum}, {"array", Value::ndarray(array)}, {"sent_at_ns", now_ns()}});
}

// The ledger as a Value, so the sender can hand its own to the receiver, which prints everything.
Value ledger_value(const CopyLedger& l) {
  std::vector<std::pair<Value, Value>> copied;
  for (std::size_t r = 0; r < CopyLedger::kReasons; ++r)
    if (l.copies[r]) copied.emplace_back(std::string(to_string(static_cast<CopyReason>(r))), l.copied_bytes[r]);
  return Value::dict({{"messages", l.messages},
                      {"oob_bytes", l.oob_bytes},
                      {"zero_copy_bytes", l.zero_copy_bytes},
                      {"copied", Value::dict(std::move(copied))}});
}

std::string describe(const Value& ledger) {
  const auto mib = [](const Value& v) { return std::to_string(v.as_int() >> 20) + " MiB"; };
  std::string s = std::to_string(ledger.get("messages").as_int()) + " messages, " + mib(ledger.get("oob_bytes")) +
                  " out-of-band, " + mib(ledger.get("zero_copy_bytes")) + " zero-copy, copied: ";
  const Value copied = ledger.get("copied");
  if (copied.size() == 0) s += "0 bytes";
  for (std::size_t i = 0; i < copied.size(); ++i)
    s += (i ? ", " : "") + std::to_string(copied.value(i).as_int()) + " bytes (" + std::string(copied.key(i).as_str()) + ")";
  return s;
}

CopyLedger minus(CopyLedger a, const CopyLedger& b) { return a -= b; }

// The receiver says when it is done with a message, so that each one is timed alone (one in flight).
void wait_for_receiver(int ack_fd) {
  char c;
  if (::read(ack_fd, &c, 1) != 1) throw std::runtime_error("the receiver is gone");
}

int sender(const std::string& url, std::int64_t elements, int count, int ack_fd) {
  Sender tx = Sender::connect(url);
  for (int i = 0; i < count; ++i) {
    NDArray a = allocate_array(tx, DType::of<double>(), {elements});  // lives in the segment
    const double sum = fill(a.as_mutable<double>(), 0.5);           // writing it IS the transfer
    send_value(tx, message("loaned", a, sum));
    wait_for_receiver(ack_fd);
  }
  const CopyLedger after_loans = tx.stats().ledger;
  NDArray heap = NDArray::allocate(DType::of<double>(), {elements}, Order::C, Init::uninitialised);
  const double sum = fill(heap.as_mutable<double>(), 0.25);
  for (int i = 0; i < count; ++i) {
    send_value(tx, message("copy-in", heap, sum));
    wait_for_receiver(ack_fd);
  }
  const CopyLedger all = tx.stats().ledger;
  send_value(tx, Value::dict({{"loaned", ledger_value(after_loans)}, {"copy-in", ledger_value(minus(all, after_loans))}}));
  return 0;
}

// What CPython makes of the same pickle: a numpy array over the out-of-band buffer.
void show_python_view(const Message& m) {
  const std::string dir = "/tmp/picklewire-demo-" + std::to_string(::getpid());
  std::string cmd = "mkdir -p " + dir;
  if (std::system(cmd.c_str()) != 0) return;
  auto write = [&](const std::string& name, const Buffer& b) {
    std::FILE* f = std::fopen((dir + "/" + name).c_str(), "wb");
    if (!f) return;
    std::fwrite(b.data(), 1, b.size(), f);
    std::fclose(f);
  };
  write("msg.pkl", m.stream);
  for (std::size_t k = 0; k < m.buffers.size(); ++k) write("buf" + std::to_string(k), m.buffers[k]);
  cmd = "/usr/bin/python3 -c \"import pickle,glob,numpy; d='" + dir +
        "'; bufs=[open(f,'rb').read() for f in sorted(glob.glob(d+'/buf*'))]; "
        "v=pickle.loads(open(d+'/msg.pkl','rb').read(), buffers=bufs); a=v['array']; "
        "print('python:   pickle.loads(stream, buffers=...) ->', type(a).__module__+'.'+type(a).__name__, a.dtype, a.shape, "
        "'sum', a.sum() == v['checksum'] and 'OK' or 'MISMATCH')\"; rm -rf " + dir;
  std::fflush(stdout);
  if (std::system(cmd.c_str()) != 0) std::printf("python:   (could not run /usr/bin/python3 with numpy)\n");
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"picklewire shared-memory array demo: a float64 NDArray between two processes"};
  std::uint64_t bytes = std::uint64_t(512) << 20;
  int count = 3;
  bool python = false;
  app.add_option("--size", bytes, "array size in bytes (suffixes: KiB MiB GiB, default 512MiB)")
      ->transform(CLI::AsSizeValue(false));
  app.add_option("--count", count, "messages per path (default 3)")->check(CLI::Range(1, 1000));
  app.add_flag("--python", python, "also load one message with CPython's pickle + numpy");
  CLI11_PARSE(app, argc, argv);
  const auto elements = static_cast<std::int64_t>(bytes / sizeof(double));
  bytes = static_cast<std::uint64_t>(elements) * sizeof(double);
  const std::string url = "shm://picklewire-demo-" + std::to_string(::getpid());

  EndpointOptions options;
  options.shm.capacity = 2 * bytes + (16 << 20);  // two arrays in flight, plus the small messages
  Receiver rx = Receiver::bind(url, options);
  std::printf("receiver: bound %s (%llu MiB segment, pre-faulted); %d messages of a %llu MiB float64 array per path\n",
              url.c_str(), static_cast<unsigned long long>(options.shm.capacity >> 20), count,
              static_cast<unsigned long long>(bytes >> 20));
  std::fflush(stdout);  // or the child inherits (and prints again) the buffered line
  int ack[2];
  if (::pipe(ack) != 0) return 1;
  pid_t child = ::fork();
  if (child == 0) {
    ::close(ack[1]);
    int code = 1;
    try {
      code = sender(url, elements, count, ack[0]);
    } catch (const std::exception& e) {
      std::fprintf(stderr, "sender: %s\n", e.what());
    }
    std::fflush(stdout);
    ::_exit(code);
  }

  ::close(ack[0]);
  int failures = 0;
  std::optional<Message> for_python;  // the last copy-in message, kept whole for CPython
  for (const char* path : {"loaned", "copy-in"}) {
    std::vector<double> seconds;
    for (int i = 0; i < count; ++i) {
      std::optional<Value> v;
      if (python && i == count - 1 && std::string(path) == "copy-in") {  // recv + load by hand, to keep the Message
        for_python = rx.recv(60s);
        if (for_python) v = load(*for_python);
      } else {
        v = recv_value(rx, 60s);
      }
      const std::int64_t arrived = now_ns();
      if (!v) {
        std::fprintf(stderr, "receiver: timed out\n");
        return 1;
      }
      const NDArray& a = v->get("array").as_ndarray();
      double sum = 0;
      for (double x : a.as<double>()) sum += x;  // reads the sender's bytes in shared memory
      const bool ok = sum == v->get("checksum").as_float() && a.nbytes() == bytes && v->get("path").as_str() == path;
      if (!ok) std::fprintf(stderr, "receiver: %s message %d: checksum MISMATCH\n", path, i);
      failures += !ok;
      seconds.push_back(static_cast<double>(arrived - v->get("sent_at_ns").as_int()) / 1e9);
      v.reset();
      if (::write(ack[1], "k", 1) != 1) return 1;
    }
    std::sort(seconds.begin(), seconds.end());
    const double median = seconds[seconds.size() / 2];
    std::printf("%-8s send -> recv_value, median of %d: %8.3f ms, %8.1f GB/s effective, %7.0f messages/s (checksums %s)\n",
                path, count, median * 1e3, static_cast<double>(bytes) / median / 1e9, 1 / median,
                failures ? "FAILED" : "OK");
  }
  std::printf("(the loaned path copies nothing: its time is the fixed cost of a message, whatever the size)\n");
  if (for_python) show_python_view(*for_python);
  for_python.reset();
  std::optional<Value> sender_ledgers = recv_value(rx, 60s);
  int status = 0;
  ::waitpid(child, &status, 0);
  ::close(ack[1]);
  const bool got_ledgers = sender_ledgers.has_value();
  if (sender_ledgers) {
    std::printf("sender ledger, loaned:  %s\n", describe(sender_ledgers->get("loaned")).c_str());
    std::printf("sender ledger, copy-in: %s\n", describe(sender_ledgers->get("copy-in")).c_str());
  }
  sender_ledgers.reset();  // its views hold the last message's slot
  const TransportStats st = rx.stats();
  std::printf("receiver ledger:        %s; %llu slots still in use\n", describe(ledger_value(st.ledger)).c_str(),
              static_cast<unsigned long long>(st.slots_in_use));
  return failures || !got_ledgers || !WIFEXITED(status) || WEXITSTATUS(status) != 0;
}
