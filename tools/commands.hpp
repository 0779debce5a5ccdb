// The subcommands of `picklewire`, one file each. Each add_*_command registers its subcommand.
#pragma once

#include <CLI/CLI.hpp>

#include <string>
#include <vector>

#include "picklewire/buffer.hpp"
#include "picklewire/endpoint.hpp"

namespace picklewire::cli {

// Exit status when a command fails on bad input (a message was already printed on stderr).
constexpr int kFailure = 1;

// `picklewire repr FILE [--buffer BUF]...` (repr_command.cpp)
void add_repr_command(CLI::App& app);
// `picklewire dis FILE` (dis_command.cpp)
void add_dis_command(CLI::App& app);
// `picklewire repickle IN OUT [--protocol N] [--oob-dir DIR] [--buffer BUF]...` (repickle_command.cpp)
void add_repickle_command(CLI::App& app);

// The whole file as a writable heap Buffer (throws picklewire::Error when it cannot be read).
Buffer read_file_buffer(const std::string& path);

// Flags `send` and `recv` take (endpoint_flags.cpp): --compress, --curve-*, --stats.
struct EndpointFlags {
  bool compress = false;
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
  // With --stats: `{"side": ..., "messages": ..., "copied_bytes": {reason: bytes}, ...}` on stderr.
  void report(const char* side, const TransportStats& stats) const;
};

void add_send_command(CLI::App& app);   // send_command.cpp
void add_recv_command(CLI::App& app);   // recv_command.cpp
void add_bench_command(CLI::App& app);  // bench_command.cpp
void add_shm_command(CLI::App& app);    // shm_command.cpp

}  // namespace picklewire::cli
