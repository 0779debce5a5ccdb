// picklewire send URL FILE [--buffer BUF]... [--count N] [--bind|--connect] [--timeout S] [--wire-version V]
//                [endpoint flags]
//
// Sends FILE as a Message's pickle stream and each BUF as its out-of-band buffers, in order.
// Files are read straight into memory from Sender::allocate, so on shm:// they go into the segment
// with no further copy. Works for every URL: it only uses the Sender API.
//
// Exit status 0 only when every message was handed over: a send that times out (--timeout; over
// ZeroMQ a connecting sender only hands messages to connected receivers) or finds the receiver
// gone (heartbeats: within ~5 s of its death) stops the command with status 1, saying how many of
// the N messages were sent. Without --timeout it waits for a receiver as long as it takes. At exit
// ZeroMQ may still hold queued messages (a slow receiver): the exit waits until they have left or
// the receiver is declared dead (heartbeats, ~3 s), or --linger S seconds; what remains then is
// dropped and cannot be counted (PUSH has no acknowledgements).
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <iostream>
#include <memory>
#include <string>
#include <vector>

#include "commands.hpp"
#include "progress.hpp"
#include "picklewire/endpoint.hpp"
#include "picklewire/errors.hpp"

namespace picklewire::cli {
namespace {

struct SendArgs {
  std::string url;
  std::string stream_file;
  std::vector<std::string> buffer_files;
  std::uint64_t count = 1;
  bool bind = false;
  bool connect = false;
  double timeout_seconds = -1;
  int wire_version = 0;  // 0: the library's default
  // The command exists to deliver: by default its exit waits until ZeroMQ has handed every queued
  // message to the receiver, or heartbeats declared the receiver dead (ZmqOptions' 1 s default
  // would drop a slow receiver's backlog, uncounted, and exit 0).
  double linger_seconds = -1;  // -1: forever
  bool quiet = false;
  EndpointFlags endpoint;
};

// Reads a whole file into a buffer lent by the sender.
Buffer read_into(Sender& sender, const std::string& path, bool readonly) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) throw Error("cannot open " + path + ": " + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    throw Error("cannot stat " + path);
  }
  Buffer b = sender.allocate(static_cast<std::size_t>(st.st_size));
  std::size_t done = 0;
  while (done < b.size()) {
    ssize_t n = ::read(fd, b.mutable_data() + done, b.size() - done);
    if (n <= 0) {
      ::close(fd);
      throw Error("cannot read " + path + ": " + (n < 0 ? std::strerror(errno) : "file shrank"));
    }
    done += static_cast<std::size_t>(n);
  }
  ::close(fd);
  return readonly ? b.as_readonly() : b;
}

void run(const SendArgs& a) {
  EndpointOptions options = a.endpoint.options(a.url);
  if (a.timeout_seconds >= 0)
    options.send_timeout = std::chrono::milliseconds(static_cast<long long>(a.timeout_seconds * 1000));
  if (a.wire_version) options.zmq.wire_version = a.wire_version;
  options.zmq.linger = a.linger_seconds < 0 ? Timeout()
                                            : Timeout(std::chrono::milliseconds(static_cast<long long>(a.linger_seconds * 1000)));
  Sender sender = a.bind ? Sender::bind(a.url, options) : Sender::connect(a.url, options);
  Message m;
  m.stream = read_into(sender, a.stream_file, true);
  for (const std::string& f : a.buffer_files) m.buffers.push_back(read_into(sender, f, true));
  Progress progress("sent", a.count, a.quiet || a.count < 2);
  for (std::uint64_t i = 0; i < a.count; ++i) {
    try {
      sender.send(m);
      progress.add(m.stream.size() + m.out_of_band_bytes());
    } catch (const TransportError& e) {  // TimeoutError, PeerGone, Interrupted, a socket error
      progress.finish();
      a.endpoint.report("sender", sender.stats());
      const std::string what = dynamic_cast<const PeerGone*>(&e) ? "the receiver is gone" : "not delivered";
      throw Error("send: " + what + ": " + std::to_string(a.count - i) + " of " + std::to_string(a.count) +
                  " message(s) not sent (" + std::to_string(i) + " were): " + e.what());
    }
  }
  a.endpoint.report("sender", sender.stats());
}

}  // namespace

void add_send_command(CLI::App& app) {
  auto args = std::make_shared<SendArgs>();
  CLI::App* cmd = app.add_subcommand("send", "Send a pickle stream (and out-of-band buffers) to URL");
  cmd->add_option("url", args->url, "shm://NAME, tcp://HOST:PORT, ipc://PATH")->required();
  cmd->add_option("file", args->stream_file, "the pickle stream")->required()->check(CLI::ExistingFile);
  cmd->add_option("--buffer", args->buffer_files, "an out-of-band buffer's bytes (repeat, in order)")
      ->check(CLI::ExistingFile);
  cmd->add_option("--count", args->count, "send the message N times (default 1)");
  cmd->add_flag("--quiet", args->quiet, "no progress line on the terminal");
  cmd->add_option("--timeout", args->timeout_seconds, "seconds to wait for room per message (default: forever)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--linger", args->linger_seconds,
                  "ZeroMQ: seconds the exit waits for queued messages to leave (default -1: until they have, or "
                  "heartbeats declare the receiver dead); what is still queued then is dropped uncounted")
      ->check(CLI::Range(-1.0, 1e9));
  cmd->add_option("--wire-version", args->wire_version, "ZeroMQ wire format to write: 2 (default) or 1 for older receivers")
      ->check(CLI::IsMember({1, 2}));
  auto* b = cmd->add_flag("--bind", args->bind, "bind the URL (zmq only)");
  cmd->add_flag("--connect", args->connect, "connect to the URL (the default)")->excludes(b);
  args->endpoint.add_to(cmd, /*sender=*/true);
  cmd->callback([args] { run(*args); });
}

}  // namespace picklewire::cli
