// picklewire.Sender / picklewire.Receiver: the C++ endpoints (include/picklewire/endpoint.hpp)
// behind a mutex, called without the GIL. module.cpp's table gives them their Python names.
#pragma once

#include <atomic>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <tuple>

#include "module.hpp"
#include "picklewire/endpoint.hpp"
#include "picklewire/message.hpp"

namespace picklewire::python {

// What Sender and Receiver objects share.
//
// Every transport call runs without the GIL and waits at most once, for the whole timeout: the
// endpoint's options carry an interrupt check (endpoint_options.cpp) that the transport asks
// every 50 ms, which runs Python's signal handlers; when one raises (Ctrl-C: KeyboardInterrupt)
// the transport ends the wait with picklewire::Interrupted and the call re-raises that Python
// exception. A send therefore fills its shared-memory slot once and keeps it for its whole wait.
//
// The mutex (one transport call at a time) is only ever taken without the GIL: a waiting call's
// interrupt check takes the GIL while holding the mutex, so taking them the other way round
// would deadlock.
template <typename Endpoint>
class PyEndpoint {
 public:
  PyEndpoint(Endpoint endpoint, std::string url, const char* kind);
  PyEndpoint(const PyEndpoint&) = delete;
  PyEndpoint& operator=(const PyEndpoint&) = delete;
  ~PyEndpoint() { close(); }

  // Waits (without the GIL) for the transport to let go of what it was moving. Idempotent.
  void close();
  // Never waits for a call in progress. (Not noexcept: pybind11 binds a base-class member function
  // pointer to the derived class only when its type has no noexcept.)
  bool closed() const { return closed_.load(); }
  const std::string& url() const { return url_; }
  std::string repr();

 protected:
  // Runs `call(endpoint)` without the GIL under the mutex, then gives back what the transport
  // dropped meanwhile; a Python exception raised by a signal handler during the call wins over
  // whatever the call threw.
  template <class Call>
  void call_without_gil(Call&& call);
  // call_without_gil(call(endpoint, remaining)) for a call that waits up to `timeout`. A system
  // call that a signal interrupted (errno EINTR from the transport; ZeroMQ reports it so) first
  // runs the signal handlers: a handler that raised ends the call with its exception, otherwise
  // the call is resumed for what is left of the timeout, as CPython resumes system calls (PEP 475).
  template <class Call>
  void wait_without_gil(Timeout timeout, Call&& call);
  TransportStats transport_stats();

  const EndpointOptions& options() const { return options_; }  // as opened; never changes

 private:
  Endpoint& endpoint();  // throws TransportError (EBADF) once closed

  std::mutex mutex_;
  std::optional<Endpoint> endpoint_;
  std::atomic<bool> closed_{false};
  EndpointOptions options_;
  std::string url_;
  const char* kind_;  // "Sender" / "Receiver", for messages
};

class PySender : public PyEndpoint<Sender> {
 public:
  PySender(Sender sender, std::string url) : PyEndpoint(std::move(sender), std::move(url), "Sender") {}

  // Pickles `obj` (protocol 5) and sends it; returns when the transport has taken the message.
  // timeout: seconds, None: the endpoint's send_timeout.
  void send(const py::object& obj, std::optional<double> timeout);
  // Sends an already pickled stream and its out-of-band buffers (any buffer-protocol objects).
  void send_message(const py::object& stream, const py::iterable& buffers, std::optional<double> timeout);
  // Writable memory that sending copies nothing for (shm: a slot inside the segment).
  py::memoryview buffer(std::int64_t nbytes);
  // An uninitialised numpy array in such memory.
  py::object empty(const py::object& shape, const py::object& dtype, const std::string& order);
  py::dict stats();

 private:
  void send_now(const Message& message, std::optional<double> timeout);

  CopyLedger pickler_copies_;  // in-band copies made by CPython's pickler for this sender; guarded by the GIL
};

class PyReceiver : public PyEndpoint<Receiver> {
 public:
  PyReceiver(Receiver receiver, std::string url) : PyEndpoint(std::move(receiver), std::move(url), "Receiver") {}

  // The next object (pickle.loads over views of the received memory). timeout: seconds, None: forever.
  py::object recv(std::optional<double> timeout);
  // The next message, not unpickled: (stream, [buffers]) as memoryviews over the received memory.
  std::tuple<py::memoryview, py::list> recv_message(std::optional<double> timeout);
  py::dict stats();
  // The (begin, end) of this channel's shared-memory mapping holding obj's memory, or None.
  std::optional<std::pair<std::uintptr_t, std::uintptr_t>> segment_range(const py::object& object);
  bool owns(const py::object& object) { return segment_range(object).has_value(); }

 private:
  Message receive(std::optional<double> timeout);
};

}  // namespace picklewire::python
