// PySender / PyReceiver: Python objects in, pickle protocol 5 with out-of-band buffers through
// the C++ endpoints, Python objects out (see endpoints.hpp for how calls wait).
//
// Sending: CPython's own C pickler (pickle.dumps, protocol 5) runs with a buffer_callback that
// takes each PickleBuffer's memory by reference (a Py_buffer export kept alive by the C++ Buffer's
// owner) instead of letting pickle copy it into the stream; the stream and those buffers form a
// picklewire::Message that the transport moves (the shm transport copies a buffer into its segment
// once, or not at all when the memory already lives there: Sender.empty()/Sender.buffer()).
// Receiving: the received Message's stream and buffers are handed to pickle.loads as memoryviews
// over BufferView objects that own the C++ Buffers, so numpy rebuilds arrays directly on shared
// memory / ZeroMQ frames, and the memory is released when Python drops the last reference.
#include "endpoints.hpp"

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <exception>

#include "endpoint_options.hpp"
#include "picklewire/errors.hpp"

namespace picklewire::python {

// ---- PyEndpoint -----------------------------------------------------------------------------

template <typename Endpoint>
PyEndpoint<Endpoint>::PyEndpoint(Endpoint endpoint, std::string url, const char* kind)
    : endpoint_(std::move(endpoint)), options_(endpoint_->options()), url_(std::move(url)), kind_(kind) {}

template <typename Endpoint>
void PyEndpoint<Endpoint>::close() {
  closed_.store(true);
  std::optional<Endpoint> closing;
  if (interpreter_finalizing()) {  // no GIL games while the interpreter shuts down
    std::lock_guard lock(mutex_);
    closing.swap(endpoint_);
    return;
  }
  {
    py::gil_scoped_release release;
    {
      std::lock_guard lock(mutex_);
      closing.swap(endpoint_);
    }
    closing.reset();
  }
  release_deferred();
}

template <typename Endpoint>
std::string PyEndpoint<Endpoint>::repr() {
  return "<picklewire." + std::string(kind_) + " " + url_ + (closed() ? " closed>" : ">");
}

template <typename Endpoint>
Endpoint& PyEndpoint<Endpoint>::endpoint() {
  if (!endpoint_) throw TransportError("picklewire: " + std::string(kind_) + " for '" + url_ + "' is closed", EBADF);
  return *endpoint_;
}

template <typename Endpoint>
template <class Call>
void PyEndpoint<Endpoint>::call_without_gil(Call&& call) {
  std::exception_ptr failure;
  {
    py::gil_scoped_release release;
    try {
      std::lock_guard lock(mutex_);
      call(endpoint());
    } catch (...) {
      failure = std::current_exception();
    }
  }
  if (PyErr_Occurred()) {
    // The interrupt check ran a signal handler that raised (the transport then threw Interrupted):
    // that exception is the one to raise. Fetch it first: releasing objects may run Python code.
    py::error_already_set raised;
    release_deferred();
    throw raised;
  }
  release_deferred();  // what the transport dropped while we waited without the GIL
  if (failure) std::rethrow_exception(failure);
}

template <typename Endpoint>
template <class Call>
void PyEndpoint<Endpoint>::wait_without_gil(Timeout timeout, Call&& call) {
  using Clock = std::chrono::steady_clock;
  const bool bounded = timeout.has_value();
  const Clock::time_point deadline = bounded ? Clock::now() + *timeout : Clock::time_point::max();
  Timeout remaining = timeout;
  for (;;) {
    try {
      call_without_gil([&](Endpoint& endpoint) { call(endpoint, remaining); });
      return;
    } catch (const Interrupted&) {
      throw;  // the interrupt check asked to stop: never resumed
    } catch (const TransportError& e) {
      if (e.code() != EINTR) throw;
    }
    if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    if (bounded)
      remaining = std::max(std::chrono::ceil<std::chrono::milliseconds>(deadline - Clock::now()),
                           std::chrono::milliseconds(0));
  }
}

template <typename Endpoint>
TransportStats PyEndpoint<Endpoint>::transport_stats() {
  release_deferred();
  TransportStats stats;
  call_without_gil([&](Endpoint& e) { stats = e.stats(); });
  return stats;
}

template class PyEndpoint<Sender>;
template class PyEndpoint<Receiver>;

// ---- PySender -------------------------------------------------------------------------------

void PySender::send(const py::object& obj, std::optional<double> timeout) {
  const std::size_t threshold = options().inband_threshold;
  Message message;
  CopyLedger inband;  // buffers the pickler writes in-band (CPython copies them into the stream)
  auto buffer_callback = py::cpp_function([&](py::handle pickle_buffer) -> bool {
    std::shared_ptr<PythonBufferExport> exported = export_buffer(pickle_buffer, PyBUF_FULL_RO);
    const Py_buffer& view = exported->view;
    // Non-contiguous memory cannot travel as one buffer: let pickle report it as CPython does.
    if (!PyBuffer_IsContiguous(&view, 'A')) return true;
    const std::size_t size = static_cast<std::size_t>(view.len);
    if (size < threshold) {
      inband.record_copy(CopyReason::inband_below_threshold, size);
      return true;  // truthy: pickle writes it in-band
    }
    void* data = size ? view.buf : static_cast<void*>(empty_buffer_storage);
    // The exporter's item size (a numpy array's dtype itemsize, 1 for bytes): the lz4 shuffle hint.
    const std::uint32_t item_size = view.itemsize > 0 ? static_cast<std::uint32_t>(view.itemsize) : 0;
    const bool readonly = view.readonly != 0;
    message.buffers.push_back(Buffer::take(std::move(exported), data, size, readonly));
    message.item_sizes.push_back(item_size);
    return false;  // falsy: out-of-band, NEXT_BUFFER in the stream
  });
  py::object stream = pickle_dumps()(obj, py::arg("protocol") = 5, py::arg("buffer_callback") = buffer_callback);
  if (!PyBytes_Check(stream.ptr())) throw py::type_error("pickle.dumps did not return bytes");
  message.stream = Buffer::take(python_reference_owner(stream), PyBytes_AS_STRING(stream.ptr()),
                                static_cast<std::size_t>(PyBytes_GET_SIZE(stream.ptr())), true);
  send_now(message, timeout);
  for (std::size_t i = 0; i < CopyLedger::kReasons; ++i) {
    pickler_copies_.copies[i] += inband.copies[i];
    pickler_copies_.copied_bytes[i] += inband.copied_bytes[i];
  }
}

void PySender::send_message(const py::object& stream, const py::iterable& buffers, std::optional<double> timeout) {
  Message message;
  message.stream = buffer_from_python(stream);
  for (py::handle b : buffers) message.buffers.push_back(buffer_from_python(b));
  send_now(message, timeout);
}

void PySender::send_now(const Message& message, std::optional<double> timeout) {
  const Timeout wait = timeout ? to_timeout(timeout, "timeout") : options().send_timeout;
  // One send, one wait: Sender::send is try_send (which keeps its filled slot for the whole wait)
  // plus a TimeoutError that says what the transport was waiting for (errno ETIMEDOUT).
  wait_without_gil(wait, [&](Sender& sender, Timeout remaining) { sender.send(message, remaining); });
}

py::memoryview PySender::buffer(std::int64_t nbytes) {
  if (nbytes < 0) throw py::value_error("nbytes must be >= 0, got " + std::to_string(nbytes));
  Buffer b;
  call_without_gil([&](Sender& sender) { b = sender.allocate(static_cast<std::size_t>(nbytes)); });
  return py::reinterpret_steal<py::memoryview>(memoryview_owning(std::move(b)).release());
}

py::object PySender::empty(const py::object& shape, const py::object& dtype, const std::string& order) {
  py::module_& np = numpy_module();
  py::object dt = np.attr("dtype")(dtype);
  py::tuple dims = py::isinstance<py::int_>(shape) ? py::make_tuple(shape) : py::tuple(shape);
  std::size_t nbytes = py::cast<std::size_t>(dt.attr("itemsize"));
  for (py::handle d : dims) {
    const std::int64_t n = py::cast<std::int64_t>(d);
    if (n < 0) throw py::value_error("negative dimensions are not allowed");
    if (n != 0 && nbytes > SIZE_MAX / static_cast<std::size_t>(n)) throw py::value_error("array is too big");
    nbytes *= static_cast<std::size_t>(n);
  }
  return np.attr("ndarray")(dims, dt, py::arg("buffer") = buffer(static_cast<std::int64_t>(nbytes)),
                            py::arg("order") = order);
}

py::dict PySender::stats() {
  const TransportStats stats = transport_stats();
  return stats_dict(stats, &pickler_copies_);
}

// ---- PyReceiver -----------------------------------------------------------------------------

Message PyReceiver::receive(std::optional<double> timeout) {
  const Timeout wait = to_timeout(timeout, "timeout");
  std::optional<Message> message;
  wait_without_gil(wait, [&](Receiver& receiver, Timeout remaining) { message = receiver.recv(remaining); });
  if (!message) {  // only a bounded wait ends empty-handed
    char seconds[32];
    std::snprintf(seconds, sizeof seconds, "%g", timeout.value_or(0.0));
    throw TimeoutError("picklewire: nothing received on '" + url() + "' within " + seconds + " s");
  }
  return std::move(*message);
}

std::tuple<py::memoryview, py::list> PyReceiver::recv_message(std::optional<double> timeout) {
  Message message = receive(timeout);
  py::list buffers;
  for (Buffer& b : message.buffers) buffers.append(memoryview_owning(std::move(b)));
  return {py::reinterpret_steal<py::memoryview>(memoryview_owning(std::move(message.stream)).release()), buffers};
}

py::object PyReceiver::recv(std::optional<double> timeout) {
  auto [stream, buffers] = recv_message(timeout);
  return pickle_loads()(stream, py::arg("buffers") = buffers);
}

py::dict PyReceiver::stats() { return stats_dict(transport_stats()); }

std::optional<std::pair<std::uintptr_t, std::uintptr_t>> PyReceiver::segment_range(const py::object& object) {
  constexpr std::string_view kShm = "shm://";
  if (url().rfind(kShm, 0) == 0) return shm_mapping_holding(object, std::string_view(url()).substr(kShm.size()));
  // A ZeroMQ Receiver's same-host channel, once it has one.
  const std::string channel = transport_stats().same_host_channel;
  if (channel.empty()) return std::nullopt;
  return shm_mapping_holding(object, channel);
}

}  // namespace picklewire::python
