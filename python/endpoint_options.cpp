// Keyword arguments -> EndpointOptions, checked and phrased for Python users: every message names
// the keyword, never a C++ option. Also the interrupt check every endpoint's waits run.
#include "endpoint_options.hpp"

#include <chrono>
#include <cmath>
#include <limits>
#include <string_view>

namespace picklewire::python {

namespace {

// True when a Python signal handler raised (the exception stays pending, and the endpoint call
// re-raises it when the transport returns with Interrupted). Runs on the waiting thread, which
// released the GIL for the wait: it takes the GIL back for the check. Only the main thread runs
// signal handlers, so other threads never ask (and never contend for the GIL every period).
bool python_signal_raised(unsigned long main_thread) {
  if (PyThread_get_thread_ident() != main_thread || interpreter_finalizing()) return false;
  py::gil_scoped_acquire gil;
  return PyErr_CheckSignals() != 0;
}

unsigned long main_thread_ident() {
  static const unsigned long ident =
      py::cast<unsigned long>(py::module_::import("threading").attr("main_thread")().attr("ident"));
  return ident;
}

[[noreturn]] void bad(const std::string& message) { throw py::value_error(message); }

template <class T>
T in_range(std::int64_t value, const char* keyword, std::int64_t low, std::int64_t high, const char* unit = "") {
  if (value < low || value > high)
    bad(std::string(keyword) + " must be " + std::to_string(low) + ".." + std::to_string(high) + unit + ", got " +
        std::to_string(value));
  return static_cast<T>(value);
}

// Seconds as a Duration, to the nearest unit (0.1 is 100 ms, not 101), but a positive time never
// becomes 0 (which would mean "do not wait" or "off").
template <class Duration>
Duration seconds_to(double seconds, const char* keyword, const char* allowed = "a finite number of seconds >= 0") {
  if (!(seconds >= 0) || !std::isfinite(seconds)) bad(std::string(keyword) + " must be " + allowed);
  // Far beyond any real wait, and below where microseconds overflow 64 bits.
  constexpr double kLongest = 1e9;
  if (seconds > kLongest) bad(std::string(keyword) + " must be at most 1e9 seconds (None: wait forever), got " + std::to_string(seconds));
  const auto rounded = std::chrono::round<Duration>(std::chrono::duration<double>(seconds));
  return seconds > 0 && rounded.count() == 0 ? Duration(1) : rounded;
}

std::string key_file(const KeyFile& file) { return file ? file->string() : std::string(); }

bool starts_with(const std::string& url, std::string_view prefix) { return url.rfind(prefix, 0) == 0; }
bool is_shm(const std::string& url) { return starts_with(url, "shm://"); }
bool is_zmq(const std::string& url) {
  return starts_with(url, "tcp://") || starts_with(url, "ipc://") || starts_with(url, "inproc://");
}

// The first keyword that differs from its default among those that only ZeroMQ reads, or nullptr.
const char* zmq_keyword_given(const EndpointKeywords& k) {
  const EndpointKeywords d;
  if (k.compress != d.compress) return "compress";
  if (k.compress_min_bytes != d.compress_min_bytes) return "compress_min_bytes";
  if (k.shuffle != d.shuffle) return "shuffle";
  if (k.send_hwm != d.send_hwm) return "send_hwm";
  if (k.recv_hwm != d.recv_hwm) return "recv_hwm";
  if (k.max_message_bytes != d.max_message_bytes) return "max_message_bytes";
  if (k.heartbeat != d.heartbeat) return "heartbeat";
  if (k.heartbeat_timeout != d.heartbeat_timeout) return "heartbeat_timeout";
  if (k.linger != d.linger) return "linger";
  if (k.immediate != d.immediate) return "immediate";
  if (k.same_host != d.same_host) return "same_host";
  if (k.same_host_min_bytes != d.same_host_min_bytes) return "same_host_min_bytes";
  if (k.same_host_capacity != d.same_host_capacity) return "same_host_capacity";
  if (k.curve_server_secret_key_file) return "curve_server_secret_key_file";
  if (k.curve_server_public_key_file) return "curve_server_public_key_file";
  if (k.curve_client_secret_key_file) return "curve_client_secret_key_file";
  if (k.curve_client_public_key_file) return "curve_client_public_key_file";
  if (k.curve_authorized_clients_file) return "curve_authorized_clients_file";
  return nullptr;
}

// The first keyword that differs from its default among those that shape a new shm segment
// (read by Receiver.bind on shm:// only), or nullptr.
const char* segment_keyword_given(const EndpointKeywords& k) {
  const EndpointKeywords d;
  if (k.capacity != d.capacity) return "capacity";
  if (k.slot_count != d.slot_count) return "slot_count";
  if (k.ring_capacity != d.ring_capacity) return "ring_capacity";
  if (k.lane_count != d.lane_count) return "lane_count";
  return nullptr;
}

// ... and among those any shm endpoint reads.
const char* shm_keyword_given(const EndpointKeywords& k) {
  const EndpointKeywords d;
  if (const char* segment = segment_keyword_given(k)) return segment;
  if (k.spin != d.spin) return "spin";
  if (k.prefault != d.prefault) return "prefault";
  return nullptr;
}

// An option the URL's transport or this call would silently ignore is a mistake worth saying.
void check_applies(const std::string& url, const EndpointKeywords& k, EndpointRole role) {
  if (is_shm(url)) {
    if (const char* keyword = zmq_keyword_given(k)) {
      if (std::string_view(keyword) == "compress")
        bad("compress=True applies to ZeroMQ URLs (tcp://, ipc://), not " + url +
            ": shared memory moves buffers without copying them, compression would only add work");
      bad(std::string(keyword) + "= applies to ZeroMQ URLs (tcp://, ipc://, inproc://), not " + url);
    }
    if (role == EndpointRole::sender_connect)
      if (const char* keyword = segment_keyword_given(k))
        bad(std::string(keyword) + "= shapes the shared-memory segment, which Receiver.bind creates: give it there, not to Sender.connect");
  } else if (is_zmq(url)) {  // (an unknown scheme is the transport's to report: errno EPROTONOSUPPORT)
    if (const char* keyword = shm_keyword_given(k))
      bad(std::string(keyword) + "= applies to shm:// URLs only, not " + url);
  }
}

}  // namespace

Timeout to_timeout(std::optional<double> seconds, const char* keyword) {
  if (!seconds) return std::nullopt;
  return seconds_to<std::chrono::milliseconds>(*seconds, keyword, "None or a finite number of seconds >= 0");
}

EndpointOptions to_endpoint_options(const std::string& url, const EndpointKeywords& k, EndpointRole role) {
  check_applies(url, k, role);
  constexpr std::int64_t kUint32Max = std::numeric_limits<std::uint32_t>::max();
  constexpr std::int64_t kInt32Max = std::numeric_limits<std::int32_t>::max();
  constexpr std::int64_t kInt64Max = std::numeric_limits<std::int64_t>::max();
  EndpointOptions o;
  o.inband_threshold = in_range<std::size_t>(k.inband_threshold, "inband_threshold", 0, kInt64Max, " bytes");
  o.send_timeout = to_timeout(k.send_timeout, "send_timeout");

  o.shm.capacity = in_range<std::size_t>(k.capacity, "capacity", 4096, kInt64Max, " bytes");
  o.shm.slot_count = in_range<std::uint32_t>(k.slot_count, "slot_count", 2, 1 << 24);
  o.shm.ring_capacity = in_range<std::uint32_t>(k.ring_capacity, "ring_capacity", 1, 1 << 24);
  o.shm.lane_count = in_range<std::uint32_t>(k.lane_count, "lane_count", 0, kUint32Max);  // the transport knows its maximum
  o.shm.spin = seconds_to<std::chrono::microseconds>(k.spin, "spin");
  o.shm.prefault = k.prefault;

  o.zmq.compress = k.compress;
  o.zmq.compress_min_bytes = in_range<std::size_t>(k.compress_min_bytes, "compress_min_bytes", 0, kInt64Max, " bytes");
  o.zmq.shuffle = k.shuffle;
  o.zmq.send_hwm = in_range<int>(k.send_hwm, "send_hwm", 0, kInt32Max, " messages");
  o.zmq.recv_hwm = in_range<int>(k.recv_hwm, "recv_hwm", 0, kInt32Max, " messages");
  o.zmq.max_message_bytes = in_range<std::int64_t>(k.max_message_bytes, "max_message_bytes", -1, kInt64Max);
  o.zmq.heartbeat = seconds_to<std::chrono::milliseconds>(k.heartbeat, "heartbeat");
  o.zmq.heartbeat_timeout = seconds_to<std::chrono::milliseconds>(k.heartbeat_timeout, "heartbeat_timeout");
  if (o.zmq.heartbeat_timeout.count() > 0 && o.zmq.heartbeat.count() == 0)
    bad("heartbeat_timeout= needs heartbeat= (the interval of the heartbeats whose absence it times)");
  o.zmq.linger = to_timeout(k.linger, "linger");
  o.zmq.immediate = k.immediate;
  o.zmq.same_host = k.same_host;
  o.zmq.same_host_min_bytes = in_range<std::size_t>(k.same_host_min_bytes, "same_host_min_bytes", 0, kInt64Max, " bytes");
  o.zmq.same_host_capacity = in_range<std::size_t>(k.same_host_capacity, "same_host_capacity", 4096, kInt64Max, " bytes");
  o.zmq.curve_server_secret_key_file = key_file(k.curve_server_secret_key_file);
  o.zmq.curve_server_public_key_file = key_file(k.curve_server_public_key_file);
  o.zmq.curve_client_secret_key_file = key_file(k.curve_client_secret_key_file);
  o.zmq.curve_client_public_key_file = key_file(k.curve_client_public_key_file);
  o.zmq.curve_authorized_clients_file = key_file(k.curve_authorized_clients_file);
  const bool curve_server = k.curve_server_secret_key_file.has_value();
  const bool curve_client = k.curve_client_secret_key_file || k.curve_client_public_key_file || k.curve_server_public_key_file;
  if (curve_server && curve_client)
    bad("an endpoint is either a CURVE server (curve_server_secret_key_file=) or a CURVE client "
        "(curve_client_secret_key_file=, curve_client_public_key_file=, curve_server_public_key_file=), not both");
  if (curve_client && !(k.curve_client_secret_key_file && k.curve_client_public_key_file && k.curve_server_public_key_file))
    bad("a CURVE client needs all three of curve_client_secret_key_file=, curve_client_public_key_file= and "
        "curve_server_public_key_file=");
  if (k.curve_authorized_clients_file && !curve_server)
    bad("curve_authorized_clients_file= is for a CURVE server: give curve_server_secret_key_file= too");

  // One wait per send/recv, however long: the transport asks this every interrupt_period.
  o.interrupt = [main_thread = main_thread_ident()] { return python_signal_raised(main_thread); };
  return o;
}

}  // namespace picklewire::python
