// The subcommands of `picklewire`, one file each. Each add_*_command registers its subcommand.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "picklewire/buffer.hpp"
#include "picklewire/endpoint.hpp"
#include "picklewire/errors.hpp"

namespace picklewire::cli {

// Exit statuses (a message was already printed on stderr): the work failed (bad input, a transport
// error, a message not delivered), or the command line itself was wrong (as getopt tools do).
constexpr int kFailure = 1;
constexpr int kUsageError = 2;

// A combination of arguments that cannot work, found after parsing (exit status kUsageError).
class UsageError : public Error {
 public:
  using Error::Error;
};

// `picklewire repr FILE [--buffer BUF]...` (repr_command.cpp)
void add_repr_command(CLI::App& app);
// `picklewire dis FILE` (dis_command.cpp)
void add_dis_command(CLI::App& app);
// `picklewire repickle IN OUT [--protocol N] [--oob-dir DIR] [--buffer BUF]...` (repickle_command.cpp)
void add_repickle_command(CLI::App& app);

// The whole file as a writable heap Buffer (throws picklewire::Error when it cannot be read).
Buffer read_file_buffer(const std::string& path);

// Flags `send` and `recv` take (endpoint_flags.cpp): --compress, --curve-*, --no-same-host, --stats.
struct EndpointFlags {
  bool compress = false;
  bool no_same_host = false;     // ZeroMQ: frames even to a peer on this host
  std::string curve_secret_key;  // this endpoint's secret key file
  std::string curve_public_key;  // CURVE client: this endpoint's public key file
  std::string curve_server_key;  // CURVE client: the server's public key file
  std::string curve_allow;       // CURVE server: allowed client public keys
  bool stats = false;

  // --compress only on a sender: a receiver decompresses whatever the message header says.
  void add_to(CLI::App* cmd, bool sender);
  // The EndpointOptions these flags ask for; throws picklewire::Error for a combination that
  // cannot work (ZeroMQ flags on shm://, an incomplete CURVE client).
  EndpointOptions options(const std::string& url) const;
  // With --stats: stats_json(side, stats) as one line on stderr.
  void report(const char* side, const TransportStats& stats) const;
};

// One endpoint's statistics as one JSON object, the layout `--stats` prints and `bench --json`
// embeds (docs/ledger.md): {"side", "messages", "inband_bytes", "oob_buffers", "oob_bytes",
// "zero_copy_buffers", "zero_copy_bytes", "same_host_messages", "same_host_bytes",
// "same_host_fallbacks", "wire_bytes", "copied_bytes": {reason: bytes}}.
std::string stats_json(const char* side, const TransportStats& stats);

void add_send_command(CLI::App& app);   // send_command.cpp
void add_recv_command(CLI::App& app);   // recv_command.cpp
void add_bench_command(CLI::App& app);  // bench_command.cpp
void add_shm_command(CLI::App& app);    // shm_command.cpp

}  // namespace picklewire::cli
