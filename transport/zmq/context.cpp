#include "zmq/context.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <fstream>
#include <map>
#include <iterator>
#include <mutex>
#include <set>
#include <thread>

#include "picklewire/errors.hpp"

namespace picklewire::zmq_transport {
namespace {

std::string slurp(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TransportError("zmq transport: cannot read CURVE key file '" + path + "'");
  return {std::istreambuf_iterator<char>(in), {}};
}

// ZeroMQ authenticates CURVE clients through a ZAP handler: a REP socket on
// inproc://zeromq.zap.01 in the same context. This one accepts a client when its public key is in
// the allow-list of the server socket's ZAP domain (one domain per authorised-clients file).
class ZapHandler {
 public:
  static ZapHandler& instance() {
    static ZapHandler* handler = new ZapHandler();  // lives as long as the context's io threads
    return *handler;
  }

  // Registers an allow-list; returns the ZAP domain the server socket must announce.
  std::string add_allow_list(const std::string& file) {
    std::set<std::string> keys;
    std::string text = slurp(file);
    std::size_t pos = 0;
    while (pos < text.size()) {
      std::size_t end = text.find('\n', pos);
      if (end == std::string::npos) end = text.size();
      std::string line = text.substr(pos, end - pos);
      while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
      std::size_t start = line.find_first_not_of(" \t");
      if (start != std::string::npos && line[start] != '#') {
        line = line.substr(start);
        if (line.size() != 40) throw TransportError("zmq transport: '" + file + "' holds a line that is not a Z85 CURVE public key");
        std::uint8_t bin[32];
        if (!zmq_z85_decode(bin, line.c_str())) throw TransportError("zmq transport: '" + file + "': invalid Z85 key");
        keys.insert(std::string(reinterpret_cast<char*>(bin), 32));
      }
      pos = end + 1;
    }
    std::lock_guard<std::mutex> lock(mutex_);
    std::string domain = "picklewire-" + std::to_string(domains_.size());
    domains_.emplace(domain, std::move(keys));
    start_locked();
    return domain;
  }

 private:
  void start_locked() {
    if (started_) return;
    started_ = true;
    // Bind before any server socket is attached, so the first handshake finds the handler.
    socket_ = zmq::socket_t(context(), zmq::socket_type::rep);
    socket_.set(zmq::sockopt::linger, 0);
    socket_.bind("inproc://zeromq.zap.01");
    std::thread([this] { serve(); }).detach();
  }

  void serve() {
    for (;;) {
      std::vector<zmq::message_t> request;
      try {
        if (!zmq::recv_multipart(socket_, std::back_inserter(request))) continue;
      } catch (const zmq::error_t&) {
        socket_.close();  // context terminating at exit: it waits for every socket to close
        return;
      }
      // ZAP 1.0 request: version, request id, domain, address, identity, mechanism, credentials...
      bool ok = false;
      if (request.size() >= 6 && request[5].to_string_view() != "CURVE") {
        ok = true;  // NULL / PLAIN on a socket that set a ZAP domain: not ours to judge
      } else if (request.size() >= 7 && request[6].size() == 32) {
        std::lock_guard<std::mutex> lock(mutex_);
        auto it = domains_.find(std::string(request[2].to_string_view()));
        // A server socket without an allow-list of ours (another domain) accepts any client that
        // completed the CURVE handshake, as it would without a ZAP handler in the process.
        ok = it == domains_.end() || it->second.count(std::string(request[6].to_string_view())) != 0;
      }
      std::array<zmq::const_buffer, 6> reply = {
          zmq::str_buffer("1.0"),
          zmq::buffer(request.size() > 1 ? request[1].data() : nullptr, request.size() > 1 ? request[1].size() : 0),
          ok ? zmq::str_buffer("200") : zmq::str_buffer("400"),
          ok ? zmq::str_buffer("OK") : zmq::str_buffer("client key not authorised"),
          zmq::str_buffer(""), zmq::str_buffer("")};
      try {
        zmq::send_multipart(socket_, reply);
      } catch (const zmq::error_t&) {
        socket_.close();
        return;
      }
    }
  }

  std::mutex mutex_;
  bool started_ = false;
  zmq::socket_t socket_;
  std::map<std::string, std::set<std::string>> domains_;
};

}  // namespace

zmq::context_t& context() {
  static zmq::context_t ctx(1);
  return ctx;
}

std::string read_curve_key(const std::string& path) {
  std::string text = slurp(path);
  std::string key;
  for (char c : text)
    if (!std::isspace(static_cast<unsigned char>(c))) key.push_back(c);
  if (key.size() != 40) throw TransportError("zmq transport: '" + path + "' does not hold a Z85 CURVE key (40 characters)");
  return key;
}

namespace {
int to_ms(Timeout timeout) {
  return timeout ? static_cast<int>(std::clamp<std::int64_t>(timeout->count(), 0, INT32_MAX)) : -1;
}
}  // namespace

void set_send_timeout(zmq::socket_t& socket, Timeout timeout, int& cached_ms) {
  int ms = to_ms(timeout);
  if (ms != cached_ms) socket.set(zmq::sockopt::sndtimeo, ms);
  cached_ms = ms;
}

void set_recv_timeout(zmq::socket_t& socket, Timeout timeout, int& cached_ms) {
  int ms = to_ms(timeout);
  if (ms != cached_ms) socket.set(zmq::sockopt::rcvtimeo, ms);
  cached_ms = ms;
}

std::chrono::milliseconds heartbeat_timeout(const ZmqOptions& o) {
  return o.heartbeat_timeout.count() > 0 ? o.heartbeat_timeout : 3 * o.heartbeat;
}

namespace {
// libzmq parses a tcp:// port with atoi and keeps its low 16 bits' worth of nonsense (port 99999
// binds some other port, silently); refuse anything that is not '*' or a decimal 0..65535.
void check_tcp_port(std::string_view url) {
  if (!url.starts_with("tcp://")) return;
  const auto colon = url.rfind(':');
  const std::string_view port = colon == std::string_view::npos ? std::string_view() : url.substr(colon + 1);
  if (colon < 6 || port.empty())
    throw TransportError("zmq transport: '" + std::string(url) + "' has no port (tcp://HOST:PORT)", EINVAL);
  if (port == "*") return;
  std::uint32_t value = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || port.size() > 5)
      throw TransportError("zmq transport: '" + std::string(url) + "': port '" + std::string(port) + "' is not a number 0..65535", EINVAL);
    value = value * 10 + static_cast<std::uint32_t>(c - '0');
  }
  if (value > 65535)
    throw TransportError("zmq transport: '" + std::string(url) + "': port " + std::string(port) + " is out of range 0..65535", EINVAL);
}
}  // namespace

void configure_and_attach(zmq::socket_t& socket, std::string_view url, bool bind, const ZmqOptions& o) {
  check_tcp_port(url);
  try {
    socket.set(zmq::sockopt::sndhwm, o.send_hwm);
    socket.set(zmq::sockopt::rcvhwm, o.recv_hwm);
    socket.set(zmq::sockopt::maxmsgsize, o.max_message_bytes);
    socket.set(zmq::sockopt::linger, o.linger ? static_cast<int>(std::min<std::int64_t>(o.linger->count(), INT32_MAX)) : -1);
    if (o.heartbeat.count() > 0) {
      int timeout = static_cast<int>(heartbeat_timeout(o).count());
      socket.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(o.heartbeat.count()));
      socket.set(zmq::sockopt::heartbeat_timeout, timeout);
      socket.set(zmq::sockopt::heartbeat_ttl, timeout);
    }
    bool curve_server = !o.curve_server_secret_key_file.empty();
    bool curve_client = !o.curve_client_secret_key_file.empty();
    if (curve_server && curve_client)
      throw TransportError("zmq transport: an endpoint is either a CURVE server (server secret key) or a CURVE client, not both");
    if (curve_server) {
      socket.set(zmq::sockopt::curve_server, 1);
      socket.set(zmq::sockopt::curve_secretkey, read_curve_key(o.curve_server_secret_key_file));
      if (!o.curve_authorized_clients_file.empty())
        socket.set(zmq::sockopt::zap_domain, ZapHandler::instance().add_allow_list(o.curve_authorized_clients_file));
    } else if (curve_client) {
      if (o.curve_server_public_key_file.empty() || o.curve_client_public_key_file.empty())
        throw TransportError("zmq transport: a CURVE client needs its public key file and the server's public key file");
      socket.set(zmq::sockopt::curve_serverkey, read_curve_key(o.curve_server_public_key_file));
      socket.set(zmq::sockopt::curve_publickey, read_curve_key(o.curve_client_public_key_file));
      socket.set(zmq::sockopt::curve_secretkey, read_curve_key(o.curve_client_secret_key_file));
    }
    std::string u(url);
    if (bind)
      socket.bind(u);
    else
      socket.connect(u);
  } catch (const zmq::error_t& e) {
    // The code is ZeroMQ's errno (EADDRINUSE for a taken address, EINVAL for a malformed one, ...).
    throw TransportError("zmq transport: cannot " + std::string(bind ? "bind " : "connect ") + std::string(url) + ": " + e.what(),
                         e.num());
  }
}

}  // namespace picklewire::zmq_transport
