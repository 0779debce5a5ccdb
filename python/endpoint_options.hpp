// The keyword arguments of Sender.connect / Sender.bind / Receiver.bind / Receiver.connect: one
// struct (EndpointKeywords), one argument list with typed defaults, and one factory template that
// module.cpp's table uses for all four, so the four signatures cannot drift apart.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>
#include <pybind11/stl/filesystem.h>

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <utility>

#include "module.hpp"
#include "picklewire/endpoint_options.hpp"

namespace picklewire::python {

using KeyFile = std::optional<std::filesystem::path>;

// The C++ defaults, which the keywords' defaults are read from (one owner: endpoint_options.hpp).
inline const EndpointOptions& library_defaults() {
  static const EndpointOptions defaults;
  return defaults;
}
inline double seconds_of(std::chrono::nanoseconds d) { return std::chrono::duration<double>(d).count(); }

// Every keyword, named as Python sees it and defaulted to the C++ library's default (in seconds
// where C++ has a duration); docs/python.md "Options" says what each does.
struct EndpointKeywords {
  std::int64_t inband_threshold = static_cast<std::int64_t>(library_defaults().inband_threshold);
  std::optional<double> send_timeout;
  // shm://
  std::int64_t capacity = static_cast<std::int64_t>(library_defaults().shm.capacity);
  std::int64_t slot_count = library_defaults().shm.slot_count;
  std::int64_t ring_capacity = library_defaults().shm.ring_capacity;
  std::int64_t lane_count = library_defaults().shm.lane_count;
  double spin = seconds_of(library_defaults().shm.spin);
  bool prefault = library_defaults().shm.prefault;
  // ZeroMQ (tcp://, ipc://, inproc://)
  bool compress = library_defaults().zmq.compress;
  std::int64_t compress_min_bytes = static_cast<std::int64_t>(library_defaults().zmq.compress_min_bytes);
  bool shuffle = library_defaults().zmq.shuffle;
  std::int64_t send_hwm = library_defaults().zmq.send_hwm;
  std::int64_t recv_hwm = library_defaults().zmq.recv_hwm;
  std::int64_t max_message_bytes = library_defaults().zmq.max_message_bytes;
  double heartbeat = seconds_of(library_defaults().zmq.heartbeat);
  double heartbeat_timeout = seconds_of(library_defaults().zmq.heartbeat_timeout);
  std::optional<double> linger =
      library_defaults().zmq.linger ? std::optional<double>(seconds_of(*library_defaults().zmq.linger)) : std::nullopt;
  bool immediate = library_defaults().zmq.immediate;
  bool same_host = library_defaults().zmq.same_host;
  std::int64_t same_host_min_bytes = static_cast<std::int64_t>(library_defaults().zmq.same_host_min_bytes);
  std::int64_t same_host_capacity = static_cast<std::int64_t>(library_defaults().zmq.same_host_capacity);
  KeyFile curve_server_secret_key_file;
  KeyFile curve_server_public_key_file;
  KeyFile curve_client_secret_key_file;
  KeyFile curve_client_public_key_file;
  KeyFile curve_authorized_clients_file;
};

// Which call the keywords were given to: some options only make sense for one of them.
enum class EndpointRole { sender_connect, sender_bind, receiver_bind, receiver_connect };

// The EndpointOptions for `url`, with the interrupt check that lets Ctrl-C end a wait. Throws
// ValueError naming the keyword for a value out of range, or an option that does not apply to the
// URL's transport or to this call (e.g. compress=True on shm://, capacity on Sender.connect).
EndpointOptions to_endpoint_options(const std::string& url, const EndpointKeywords& k, EndpointRole role);

// Defines `name` as a static method of `cls` opening an `Endpoint` (PySender / PyReceiver) with
// `open(url, options)` (e.g. picklewire::Sender::connect), without the GIL (connecting may wait).
template <class Endpoint, class Class, class Open>
void def_endpoint_factory(Class& cls, const char* name, EndpointRole role, Open open, const char* doc) {
  namespace py = pybind11;
  using py::arg;
  const EndpointKeywords d;
  cls.def_static(
      name,
      [role, open](const std::string& url, std::int64_t inband_threshold, std::optional<double> send_timeout,
                   std::int64_t capacity, std::int64_t slot_count, std::int64_t ring_capacity, std::int64_t lane_count,
                   double spin, bool prefault, bool compress, std::int64_t compress_min_bytes, bool shuffle,
                   std::int64_t send_hwm, std::int64_t recv_hwm, std::int64_t max_message_bytes, double heartbeat,
                   double heartbeat_timeout, std::optional<double> linger, bool immediate, bool same_host,
                   std::int64_t same_host_min_bytes, std::int64_t same_host_capacity, KeyFile curve_server_secret_key_file,
                   KeyFile curve_server_public_key_file, KeyFile curve_client_secret_key_file,
                   KeyFile curve_client_public_key_file, KeyFile curve_authorized_clients_file) {
        const EndpointKeywords k{inband_threshold,
                                 send_timeout,
                                 capacity,
                                 slot_count,
                                 ring_capacity,
                                 lane_count,
                                 spin,
                                 prefault,
                                 compress,
                                 compress_min_bytes,
                                 shuffle,
                                 send_hwm,
                                 recv_hwm,
                                 max_message_bytes,
                                 heartbeat,
                                 heartbeat_timeout,
                                 linger,
                                 immediate,
                                 same_host,
                                 same_host_min_bytes,
                                 same_host_capacity,
                                 std::move(curve_server_secret_key_file),
                                 std::move(curve_server_public_key_file),
                                 std::move(curve_client_secret_key_file),
                                 std::move(curve_client_public_key_file),
                                 std::move(curve_authorized_clients_file)};
        const EndpointOptions options = to_endpoint_options(url, k, role);
        py::gil_scoped_release release;
        return std::make_unique<Endpoint>(open(url, options), url);
      },
      arg("url"), py::kw_only(), arg("inband_threshold") = d.inband_threshold, arg("send_timeout") = d.send_timeout,
      arg("capacity") = d.capacity, arg("slot_count") = d.slot_count, arg("ring_capacity") = d.ring_capacity,
      arg("lane_count") = d.lane_count, arg("spin") = d.spin, arg("prefault") = d.prefault,
      arg("compress") = d.compress, arg("compress_min_bytes") = d.compress_min_bytes, arg("shuffle") = d.shuffle,
      arg("send_hwm") = d.send_hwm, arg("recv_hwm") = d.recv_hwm, arg("max_message_bytes") = d.max_message_bytes,
      arg("heartbeat") = d.heartbeat, arg("heartbeat_timeout") = d.heartbeat_timeout, arg("linger") = d.linger,
      arg("immediate") = d.immediate, arg("same_host") = d.same_host,
      arg("same_host_min_bytes") = d.same_host_min_bytes, arg("same_host_capacity") = d.same_host_capacity,
      arg("curve_server_secret_key_file") = d.curve_server_secret_key_file,
      arg("curve_server_public_key_file") = d.curve_server_public_key_file,
      arg("curve_client_secret_key_file") = d.curve_client_secret_key_file,
      arg("curve_client_public_key_file") = d.curve_client_public_key_file,
      arg("curve_authorized_clients_file") = d.curve_authorized_clients_file, doc);
}

}  // namespace picklewire::python
