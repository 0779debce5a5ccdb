// picklewire._picklewire — the module table of the pybind11 extension behind `import picklewire`:
// every name, signature and docstring Python sees, and nothing else (module.hpp lists the rooms
// that do the work). Signatures carry types (help(), IDEs, stubgen); python/picklewire/_picklewire.pyi
// repeats them for type checkers.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "endpoint_options.hpp"
#include "endpoints.hpp"
#include "module.hpp"

namespace pw = picklewire;
namespace pwp = picklewire::python;

namespace {

namespace py = pybind11;
using py::arg;

// Sender, Receiver and BufferView objects are made by factories; say so instead of pybind11's
// generic "No constructor defined!".
template <class Class>
void not_constructible(Class& cls, const std::string& how) {
  const std::string message = "picklewire." + std::string(py::str(cls.attr("__name__"))) +
                              " cannot be constructed directly: " + how;
  cls.def(py::init([message](const py::args&, const py::kwargs&) -> typename Class::type* {
            throw py::type_error(message);
          }),
          ("Not constructible: " + how).c_str());
}


}  // namespace

PYBIND11_MODULE(_picklewire, m) {
  m.doc() = "picklewire's C++ core; import `picklewire`, not this module.";
  pwp::define_exceptions(m);

  py::class_<pwp::BufferView> buffer_view(m, "BufferView", py::buffer_protocol(), R"doc(
Memory received by (or allocated from) a picklewire endpoint, exported through the buffer protocol.

Not constructed directly: recv() wraps every received buffer in one (then in a memoryview), and
Sender.buffer()/Sender.empty() wrap memory allocated in the shared segment. The memory stays valid
for as long as any memoryview or numpy array made from it is alive; it is readonly exactly when the
sender marked it so.)doc");
  not_constructible(buffer_view, "recv(), Sender.buffer() and Sender.empty() make them");
  buffer_view.def_buffer(&pwp::buffer_info_of)
      .def_property_readonly("readonly", [](const pwp::BufferView& v) { return v.buffer.readonly(); },
                             "True when the sender marked the memory read-only.")
      .def_property_readonly("nbytes", [](const pwp::BufferView& v) { return v.buffer.size(); }, "Length in bytes.")
      .def_property_readonly("address", [](const pwp::BufferView& v) { return reinterpret_cast<std::uintptr_t>(v.buffer.data()); },
                             "Address of the first byte in this process.")
      .def("__len__", [](const pwp::BufferView& v) { return v.buffer.size(); })
      .def("__repr__", [](const pwp::BufferView& v) {
        return "<picklewire.BufferView " + std::to_string(v.buffer.size()) + " bytes" + (v.buffer.readonly() ? " readonly>" : ">");
      });

  // ---- Sender
  py::class_<pwp::PySender> sender(m, "Sender", R"doc(
Sends Python objects (pickled by CPython at protocol 5, large buffers out-of-band) to a Receiver.

Open one with Sender.connect(url, ...) (any URL) or Sender.bind(url, ...) (ZeroMQ URLs); the
keyword options are described in docs/python.md ("Options"). A Sender is a context manager.)doc");
  not_constructible(sender, "use Sender.connect(url, ...) or Sender.bind(url, ...)");
  pwp::def_endpoint_factory<pwp::PySender>(
      sender, "connect", pwp::EndpointRole::sender_connect,
      [](const std::string& url, const pw::EndpointOptions& o) { return pw::Sender::connect(url, o); },
      "Connects to a channel: shm://NAME (its Receiver must have bound it first), tcp://HOST:PORT,\n"
      "ipc://PATH, inproc://NAME. Raises TransportError (errno ENOENT: no such shm channel,\n"
      "EPROTONOSUPPORT: unknown scheme, EINVAL: not a URL) or ValueError for a bad option.");
  pwp::def_endpoint_factory<pwp::PySender>(
      sender, "bind", pwp::EndpointRole::sender_bind,
      [](const std::string& url, const pw::EndpointOptions& o) { return pw::Sender::bind(url, o); },
      "Binds a ZeroMQ channel (tcp://, ipc://, inproc://) that Receivers connect to (a shm:// channel\n"
      "is bound by its Receiver). Raises TransportError (errno EADDRINUSE: address taken, EACCES: not\n"
      "permitted) or ValueError for a bad option.");
  sender
      .def("send", &pwp::PySender::send, arg("obj"), arg("timeout") = py::none(),
           "Pickles obj (protocol 5) and sends it; returns once the transport has taken it.\n\n"
           "timeout: seconds to wait for room (None: the endpoint's send_timeout, by default forever).\n"
           "Raises picklewire.TimeoutError when there was no room in time (nothing was sent),\n"
           "PeerGone when the receiver is gone. Ctrl-C interrupts the wait (KeyboardInterrupt).")
      .def("send_message", &pwp::PySender::send_message, arg("stream"), arg("buffers") = py::tuple(),
           arg("timeout") = py::none(),
           "Sends an already pickled stream with its out-of-band buffers (bytes-like objects), as is.\n"
           "timeout as for send().")
      .def("buffer", &pwp::PySender::buffer, arg("nbytes"),
           "Writable memory that sending copies nothing for (a memoryview; on shm:// a slot inside the\n"
           "segment). Send it wrapped in pickle.PickleBuffer.")
      .def(
          "empty",
          [](pwp::PySender& s, const py::object& shape, const py::object& dtype, const std::string& order) {
            return py::reinterpret_borrow<py::array>(s.empty(shape, dtype, order));
          },
          arg("shape"), arg("dtype") = "float64", arg("order") = "C",
          "An uninitialised numpy array in memory that sending copies nothing for (allocate one per message).")
      .def("stats", &pwp::PySender::stats, "The copy ledger and transport counters of this Sender, as a dict.")
      .def("close", &pwp::PySender::close, "Closes the Sender (idempotent).")
      .def_property_readonly("closed", &pwp::PySender::closed, "True once close() was called.")
      .def_property_readonly("url", &pwp::PySender::url, "The URL this Sender was opened with.")
      .def("__enter__", [](pwp::PySender& s) -> pwp::PySender& { return s; }, py::return_value_policy::reference)
      .def("__exit__", [](pwp::PySender& s, const py::args&) { s.close(); return false; })
      .def("__repr__", &pwp::PySender::repr);

  // ---- Receiver
  py::class_<pwp::PyReceiver> receiver(m, "Receiver", R"doc(
Receives Python objects sent by picklewire Senders (Python or C++).

Open one with Receiver.bind(url, ...) (any URL; on shm:// it creates the channel, so start the
Receiver before its Senders) or Receiver.connect(url, ...) (ZeroMQ URLs a Sender bound). The
keyword options are described in docs/python.md ("Options"). A Receiver is a context manager.)doc");
  not_constructible(receiver, "use Receiver.bind(url, ...) or Receiver.connect(url, ...)");
  pwp::def_endpoint_factory<pwp::PyReceiver>(
      receiver, "bind", pwp::EndpointRole::receiver_bind,
      [](const std::string& url, const pw::EndpointOptions& o) { return pw::Receiver::bind(url, o); },
      "Binds (creates) a channel: shm://NAME, tcp://HOST:PORT, ipc://PATH, inproc://NAME. Raises\n"
      "TransportError (errno EADDRINUSE: address or shm channel taken, EACCES: not permitted,\n"
      "EPROTONOSUPPORT: unknown scheme) or ValueError for a bad option.");
  pwp::def_endpoint_factory<pwp::PyReceiver>(
      receiver, "connect", pwp::EndpointRole::receiver_connect,
      [](const std::string& url, const pw::EndpointOptions& o) { return pw::Receiver::connect(url, o); },
      "Connects to a ZeroMQ channel (tcp://, ipc://, inproc://) bound by a Sender.");
  receiver
      .def("recv", &pwp::PyReceiver::recv, arg("timeout") = py::none(),
           "The next object, rebuilt on the received memory (numpy arrays are views of it).\n\n"
           "timeout: seconds to wait (None: forever). Raises picklewire.TimeoutError when nothing\n"
           "arrived in time, PeerGone when no sender can ever send again. Ctrl-C interrupts the wait.")
      .def("recv_message", &pwp::PyReceiver::recv_message, arg("timeout") = py::none(),
           "The next message, not unpickled: (stream, [buffers]) as memoryviews over the received\n"
           "memory (read it with loads_safe() when the peer is not trusted). timeout as for recv().")
      .def("stats", &pwp::PyReceiver::stats, "The copy ledger and transport counters of this Receiver, as a dict.")
      .def("segment_range", &pwp::PyReceiver::segment_range, arg("obj"),
           "(begin, end) of this channel's shared-memory mapping holding obj's memory (shm://; tcp://, ipc://: the "
           "same-host channel), else None.")
      .def("owns", &pwp::PyReceiver::owns, arg("obj"),
           "True when obj's memory lies in this channel's shared-memory segment (tcp://, ipc://: its same-host channel).")
      .def("close", &pwp::PyReceiver::close, "Closes the Receiver (idempotent); received objects stay valid.")
      .def_property_readonly("closed", &pwp::PyReceiver::closed, "True once close() was called.")
      .def_property_readonly("url", &pwp::PyReceiver::url, "The URL this Receiver was opened with.")
      .def("__enter__", [](pwp::PyReceiver& r) -> pwp::PyReceiver& { return r; }, py::return_value_policy::reference)
      .def("__exit__", [](pwp::PyReceiver& r, const py::args&) { r.close(); return false; })
      .def("__repr__", &pwp::PyReceiver::repr);

  pwp::define_loads_safe(m);
  // Release what transport threads handed back before the interpreter starts shutting down.
  py::module_::import("atexit").attr("register")(py::cpp_function([] { pwp::release_deferred(); }));
}
