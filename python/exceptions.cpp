// The picklewire.* exception types and the translation of picklewire's C++ errors into them.
//
// TransportError is also an OSError: its `.errno` is TransportError::code() (EPROTONOSUPPORT for
// an unknown URL scheme, ENOENT for a channel nobody bound, EADDRINUSE, EACCES, ...; the list is
// in include/picklewire/errors.hpp), so callers branch on the code, never on the message text.
#include <cerrno>
#include <string>

#include "module.hpp"
#include "picklewire/errors.hpp"

namespace picklewire::python {

ExceptionTypes exception_types;

namespace {

// Sets `type(message)` as the pending Python error, with `.errno = code` when `code` is given.
void set_error(PyObject* type, const char* message, std::optional<int> code = std::nullopt) {
  // Messages quote paths and peer data: never let a stray byte turn into a UnicodeDecodeError.
  py::object text = py::reinterpret_steal<py::object>(
      PyUnicode_DecodeUTF8(message, static_cast<Py_ssize_t>(std::char_traits<char>::length(message)), "replace"));
  if (!text) return;  // the decoding error is the pending one
  py::object instance = py::reinterpret_steal<py::object>(PyObject_CallOneArg(type, text.ptr()));
  if (!instance) return;  // the constructor's error is the pending one
  if (code) {
    py::object number = py::reinterpret_steal<py::object>(PyLong_FromLong(*code));
    if (!number || PyObject_SetAttrString(instance.ptr(), "errno", number.ptr()) != 0) return;
  }
  PyErr_SetObject(type, instance.ptr());
}

PyObject* new_exception_type(py::module_& m, const char* name, const char* doc, const py::object& bases) {
  const std::string qualified = std::string("picklewire.") + name;
  PyObject* type = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, bases.ptr(), nullptr);
  if (!type) throw py::error_already_set();
  m.add_object(name, py::handle(type));
  return type;
}

void translate(std::exception_ptr failure) {
  auto& types = exception_types;
  try {
    if (failure) std::rethrow_exception(failure);
  } catch (const PeerGone& e) {
    set_error(types.peer_gone, e.what(), e.code());
  } catch (const TimeoutError& e) {
    set_error(types.timeout_error, e.what(), e.code());
  } catch (const Interrupted& e) {
    // The interrupt check of a wait (endpoints.cpp) ran the signal handlers; the exception one of
    // them raised is already pending and is what the caller must see.
    if (PyErr_Occurred()) return;
    set_error(types.transport_error, e.what(), e.code());
  } catch (const TransportError& e) {
    set_error(types.transport_error, e.what(), e.code());
  } catch (const UnpicklingError& e) {
    set_error(types.unpickling_error, e.what());
  } catch (const Error& e) {
    set_error(types.error, e.what());
  }
}

}  // namespace

void define_exceptions(py::module_& m) {
  auto& types = exception_types;
  auto borrowed = [](PyObject* type) { return py::reinterpret_borrow<py::object>(type); };
  types.error = new_exception_type(m, "Error", "Base class of every picklewire error.", borrowed(PyExc_Exception));
  types.transport_error = new_exception_type(
      m, "TransportError",
      "A transport failed: a bad URL, a channel that does not exist or is taken, the peer sent something\n"
      "invalid, a resource ran out, the endpoint is closed. Also an OSError: `errno` says which kind of\n"
      "failure it was (errno.EPROTONOSUPPORT: unknown URL scheme, ENOENT: no such channel, EADDRINUSE:\n"
      "address or channel taken, EACCES: permission denied, EINVAL: bad URL or argument, EBADF: closed,\n"
      "EPROTO: malformed data from the peer, ENOSPC: out of memory for a channel, EMSGSIZE: the message\n"
      "can never fit); branch on it, not on the message text.",
      py::make_tuple(borrowed(types.error), borrowed(PyExc_OSError)));
  types.peer_gone = new_exception_type(
      m, "PeerGone", "The other side of the channel is gone (its process died or closed the channel). errno: EPIPE.",
      borrowed(types.transport_error));
  types.timeout_error = new_exception_type(
      m, "TimeoutError",
      "send() or recv() did not complete within its timeout (also a builtin TimeoutError). errno: ETIMEDOUT.",
      py::make_tuple(borrowed(types.transport_error), borrowed(PyExc_TimeoutError)));
  types.unpickling_error = new_exception_type(
      m, "UnpicklingError", "loads_safe() refused the data: malformed, hostile, or a global that is not allowed.",
      py::make_tuple(borrowed(types.error), py::module_::import("pickle").attr("UnpicklingError")));
  py::register_exception_translator(translate);
}

}  // namespace picklewire::python
