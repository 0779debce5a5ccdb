// The endpoint flags `send`, `recv` and `bench` share: ZeroMQ compression and CURVE keys, and the
// copy ledger as one JSON line (see commands.hpp).
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "commands.hpp"
#include "picklewire/errors.hpp"

namespace picklewire::cli {

void EndpointFlags::add_to(CLI::App* cmd, bool sender) {
  if (sender) cmd->add_flag("--compress", compress, "ZeroMQ: lz4 per buffer, skipping small and incompressible ones");
  cmd->add_option("--curve-secret-key", curve_secret_key,
                  "ZeroMQ CURVE: this endpoint's secret key file (Z85). Alone: this endpoint is the CURVE server")
      ->check(CLI::ExistingFile);
  auto* server = cmd->add_option("--curve-server-key", curve_server_key,
                                 "ZeroMQ CURVE: the server's public key file; makes this endpoint a CURVE client "
                                 "(needs --curve-secret-key and --curve-public-key)")
                     ->check(CLI::ExistingFile);
  cmd->add_option("--curve-public-key", curve_public_key, "ZeroMQ CURVE client: this endpoint's public key file")
      ->check(CLI::ExistingFile)
      ->needs(server);
  cmd->add_option("--curve-allow", curve_allow,
                  "ZeroMQ CURVE server: file of client public keys (Z85, one per line) allowed to connect")
      ->check(CLI::ExistingFile)
      ->excludes(server);
  cmd->add_flag("--no-same-host", no_same_host,
                "ZeroMQ: never move buffers through shared memory, even with a peer on this host (docs/zmq.md \"Same host\")");
  cmd->add_flag("--stats", stats, "print this endpoint's copy ledger as one JSON line on stderr at exit");
}

EndpointOptions EndpointFlags::options(const std::string& url) const {
  EndpointOptions o;
  const bool curve = !curve_secret_key.empty() || !curve_server_key.empty() || !curve_allow.empty();
  if ((compress || curve || no_same_host) && url.rfind("shm://", 0) == 0)
    throw UsageError(std::string(compress ? "--compress" : curve ? "--curve-*" : "--no-same-host") +
                     " applies to ZeroMQ URLs (tcp://, ipc://), not " + url);
  o.zmq.compress = compress;
  o.zmq.same_host = !no_same_host;
  if (!curve_server_key.empty()) {  // CURVE client
    if (curve_secret_key.empty() || curve_public_key.empty())
      throw UsageError("a CURVE client (--curve-server-key) also needs --curve-secret-key and --curve-public-key");
    o.zmq.curve_server_public_key_file = curve_server_key;
    o.zmq.curve_client_secret_key_file = curve_secret_key;
    o.zmq.curve_client_public_key_file = curve_public_key;
  } else if (curve) {  // CURVE server
    if (curve_secret_key.empty()) throw UsageError("a CURVE server (--curve-allow) needs --curve-secret-key");
    o.zmq.curve_server_secret_key_file = curve_secret_key;
    o.zmq.curve_authorized_clients_file = curve_allow;
  }
  return o;
}

std::string stats_json(const char* side, const TransportStats& s) {
  const CopyLedger& l = s.ledger;
  nlohmann::ordered_json copied = nlohmann::ordered_json::object();
  for (std::size_t r = 0; r < CopyLedger::kReasons; ++r)
    if (l.copies[r]) copied[std::string(to_string(static_cast<CopyReason>(r)))] = l.copied_bytes[r];
  const nlohmann::ordered_json j = {{"side", side},
                                    {"messages", l.messages},
                                    {"inband_bytes", l.inband_bytes},
                                    {"oob_buffers", l.oob_buffers},
                                    {"oob_bytes", l.oob_bytes},
                                    {"zero_copy_buffers", l.zero_copy_buffers},
                                    {"zero_copy_bytes", l.zero_copy_bytes},
                                    {"same_host_messages", l.same_host_messages},
                                    {"same_host_bytes", l.same_host_bytes},
                                    {"same_host_fallbacks", s.same_host_fallbacks},
                                    {"wire_bytes", s.wire_bytes},
                                    {"copied_bytes", copied}};
  return j.dump();
}

void EndpointFlags::report(const char* side, const TransportStats& s) const {
  if (!stats) return;
  std::fputs((stats_json(side, s) + "\n").c_str(), stderr);
}

}  // namespace picklewire::cli
