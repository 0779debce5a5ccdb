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

// Every keyword, named and defaulted as Python sees it; docs/python.md "Options" says what each does.
struct EndpointKeywords {
  std::int64_t inband_threshold = 4096;
  std::optional<double> send_timeout;
  // shm://
  std::int64_t capacity = 256 << 20;
  std::int64_t slot_count = 4096;
  std::int64_t ring_capacity = 1024;
  std::int64_t lane_count = 64;
  double spin = 50e-6;
  bool prefault = true;
  // ZeroMQ (tcp://, ipc://, inproc://)
  bool compress = false;
  std::int64_t compress_min_bytes = 64 * 1024;
  bool shuffle = true;
  std::int64_t send_hwm = 1000;
  std::int64_t recv_hwm = 1000;
  std::int64_t max_message_bytes = -1;
  double heartbeat = 0.0;
  double heartbeat_timeout = 0.0;
  std::optional<double> linger = 30.0;
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
                   double heartbeat_timeout, std::optional<double> linger, KeyFile curve_server_secret_key_file,
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
      arg("curve_server_secret_key_file") = d.curve_server_secret_key_file,
      arg("curve_server_public_key_file") = d.curve_server_public_key_file,
      arg("curve_client_secret_key_file") = d.curve_client_secret_key_file,
      arg("curve_client_public_key_file") = d.curve_client_public_key_file,
      arg("curve_authorized_clients_file") = d.curve_authorized_clients_file, doc);
}

}  // namespace picklewire::python
