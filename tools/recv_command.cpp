// picklewire recv URL [--out DIR] [--count N] [--timeout S] [--bind|--connect] [endpoint flags]
//
// Receives Messages. With --out, message N's stream goes to DIR/N.pkl and its buffers to
// DIR/N.K.bin (numbered from 0); without, each message is loaded (the C++ unpickler: no code runs)
// and printed as one `repr` line, as `picklewire repr` prints a file. Exits 0 after N messages,
// or after S seconds without one; SIGINT/SIGTERM finish the message in hand, release the channel
// and exit 0. A message that is not a pickle, or a malformed multipart message (a bad header, the
// wrong frame count...), is reported on stderr in one line, counted, the next one is served, and
// the exit status is 1. Malformed messages do not count towards N. Works for every URL: it only
// uses the Receiver API.
#include <cerrno>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <memory>
#include <string>

#include "commands.hpp"
#include "progress.hpp"
#include "picklewire/endpoint.hpp"
#include "picklewire/errors.hpp"
#include "picklewire/repr.hpp"
#include "picklewire/unpickler.hpp"

namespace picklewire::cli {
namespace {

volatile std::sig_atomic_t g_stop = 0;
extern "C" void on_stop_signal(int) { g_stop = 1; }

struct RecvArgs {
  std::string url;
  std::string out_dir;
  std::uint64_t count = 0;  // 0: unlimited
  std::optional<double> timeout_seconds;  // exit after this long without a message; none: wait
  std::uint64_t capacity = 0;             // shm: heap bytes of the channel; 0: the library's default
  bool quiet = false;
  bool bind = false;
  bool connect = false;
  std::size_t max_chars = std::size_t(256) << 20;  // as `picklewire repr --max-chars`
  EndpointFlags endpoint;
};

void write_bytes(const std::filesystem::path& p, const Buffer& b) {
  std::ofstream out(p, std::ios::binary);
  out.write(reinterpret_cast<const char*>(b.data()), static_cast<std::streamsize>(b.size()));
  if (!out) throw Error("cannot write " + p.string());
}

void run(const RecvArgs& a) {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  if (!a.out_dir.empty()) std::filesystem::create_directories(a.out_dir);
  EndpointOptions options = a.endpoint.options(a.url);
  if (a.capacity) {
    if (a.url.rfind("shm://", 0) != 0) throw UsageError("--capacity applies to shm:// URLs, not " + a.url);
    options.shm.capacity = a.capacity;
  }
  // One wait per message, however long; a stop signal ends it through the interrupt check.
  options.interrupt = [] { return g_stop != 0; };
  Receiver receiver = a.connect ? Receiver::connect(a.url, options) : Receiver::bind(a.url, options);
  Timeout idle_limit;
  if (a.timeout_seconds)
    idle_limit = std::chrono::ceil<std::chrono::milliseconds>(std::chrono::duration<double>(*a.timeout_seconds));
  std::uint64_t n = 0, unreadable = 0, malformed = 0;
  Progress progress("received", a.count, a.quiet || a.out_dir.empty());  // repr lines go to the terminal
  while (!g_stop && (a.count == 0 || n < a.count)) {
    std::optional<Message> m;
    try {
      m = receiver.recv(idle_limit);
    } catch (const Interrupted&) {
      break;  // SIGINT / SIGTERM
    } catch (const TransportError& e) {
      // A malformed message (EPROTO) was refused and the next recv serves the next one; anything
      // else (PeerGone, a closed socket) ends the command.
      if (e.code() != EPROTO) throw;
      ++malformed;
      progress.finish();
      std::cerr << "recv: malformed message refused: " << e.what() << std::endl;
      continue;
    }
    if (!m) break;  // --timeout seconds without a message
    progress.add(m->stream.size() + m->out_of_band_bytes());
    if (!a.out_dir.empty()) {
      std::filesystem::path dir(a.out_dir);
      write_bytes(dir / (std::to_string(n) + ".pkl"), m->stream);
      for (std::size_t k = 0; k < m->buffers.size(); ++k)
        write_bytes(dir / (std::to_string(n) + "." + std::to_string(k) + ".bin"), m->buffers[k]);
    } else {
      try {
        std::string line = repr(load(*m), a.max_chars);
        line += '\n';
        std::fwrite(line.data(), 1, line.size(), stdout);
        std::fflush(stdout);
      } catch (const Error& e) {  // UnpicklingError, or a repr over --max-chars
        std::cerr << "message " << n << " (" << m->stream.size() << " bytes, " << m->buffers.size()
                  << " buffers): " << e.what() << std::endl;
        ++unreadable;
      }
    }
    ++n;
  }
  progress.finish();
  a.endpoint.report("receiver", receiver.stats());
  if (malformed || unreadable)
    throw Error(std::to_string(n) + " message(s) received; " + std::to_string(malformed) + " malformed message(s) refused, " +
                std::to_string(unreadable) + " could not be printed");
}

}  // namespace

void add_recv_command(CLI::App& app) {
  auto args = std::make_shared<RecvArgs>();
  CLI::App* cmd = app.add_subcommand("recv", "Receive messages from URL");
  cmd->add_option("url", args->url, "shm://NAME, tcp://HOST:PORT, ipc://PATH")->required();
  cmd->add_option("--out", args->out_dir, "write DIR/N.pkl and DIR/N.K.bin per message");
  cmd->add_option("--count", args->count, "exit after N messages");
  cmd->add_option("--timeout", args->timeout_seconds, "exit after S seconds without a message (default: wait)")
      ->check(CLI::NonNegativeNumber);
  cmd->add_option("--capacity", args->capacity, "shm://: bytes of the channel's buffer heap (units: 64MiB, 1GiB...)")
      ->transform(CLI::AsSizeValue(false));
  cmd->add_flag("--quiet", args->quiet, "no progress line on the terminal (with --out)");
  auto* b = cmd->add_flag("--bind", args->bind, "bind the URL (the default)");
  cmd->add_flag("--connect", args->connect, "connect to the URL (zmq only)")->excludes(b);
  cmd->add_option("--max-chars", args->max_chars, "longest repr line to print (default 256 MiB)");
  args->endpoint.add_to(cmd, /*sender=*/false);
  cmd->callback([args] { run(*args); });
}

}  // namespace picklewire::cli
