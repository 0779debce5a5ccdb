// The internal header of the picklewire Python extension (picklewire._picklewire): what its
// rooms offer one another. One .cpp per concern; each section below names the file that defines
// it. Nothing here is public API (the Python API is module.cpp's table and the .pyi stubs).
//
//   gil_release.cpp       Python objects that C++ Buffers own, given back from any thread
//   lazy_imports.cpp      pickle.dumps / pickle.loads / numpy, imported once on first use
//   buffer_view.cpp       picklewire.BufferView: C++ Buffers as Python buffers, and back
//   exceptions.cpp        the picklewire.* exception types and C++ -> Python error translation
//   endpoint_options.cpp  keyword arguments of Sender/Receiver.bind/connect -> EndpointOptions
//   stats.cpp             TransportStats / CopyLedger -> the dict stats() returns
//   memory_maps.cpp       which mapping of this process holds an object's memory (/proc/self/maps)
//   endpoints.cpp         PySender / PyReceiver (endpoints.hpp): the C++ endpoints behind a mutex
//   loads_safe.cpp        picklewire.loads_safe
//   module.cpp            the module table: every name, signature and docstring Python sees
#pragma once

#include <Python.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string_view>
#include <utility>

#include "picklewire/buffer.hpp"
#include "picklewire/endpoint_options.hpp"
#include "picklewire/ledger.hpp"

namespace picklewire::python {

namespace py = pybind11;

// ---- gil_release.cpp ------------------------------------------------------------------------
// A thread that does not hold the GIL (ZeroMQ's I/O thread, or ours inside a GIL-free transport
// call) must not take it to drop a Python reference: during interpreter shutdown CPython ends any
// thread that tries, which inside C++ frames aborts the process. Such releases are queued and
// carried out by the next module call that holds the GIL.

// True while the interpreter is shutting down: Python objects owned by C++ are then leaked rather
// than released.
bool interpreter_finalizing() noexcept;

// Carries out the queued releases. Call with the GIL held and no Python error pending.
void release_deferred() noexcept;

// An owner for Buffer::take that holds a reference to `object`.
std::shared_ptr<void> python_reference_owner(py::handle object);

// A buffer export (PyObject_GetBuffer with `flags`) held while any owner refers to it; released
// under the GIL, or queued, whatever thread drops the last owner. Throws error_already_set when
// `object` refuses the export.
struct PythonBufferExport {
  Py_buffer view{};
};
std::shared_ptr<PythonBufferExport> export_buffer(py::handle object, int flags);

// ---- lazy_imports.cpp -----------------------------------------------------------------------
// Cached, deliberately leaked (destroying them after the interpreter is gone would crash at exit).
py::object& pickle_dumps();
py::object& pickle_loads();
py::module_& numpy_module();  // the extension itself does not need numpy: imported on first use

// ---- buffer_view.cpp ------------------------------------------------------------------------
// The Python type `picklewire.BufferView`: exports one picklewire::Buffer through the buffer
// protocol (readonly exactly when the Buffer is). Every memoryview / numpy array made from it holds
// a reference to the BufferView, so the Buffer (a shared-memory slot lease, a ZeroMQ frame, ...)
// is released when the last of them is garbage collected, whatever happened to the endpoint.
struct BufferView {
  Buffer buffer;
};
// What the buffer protocol exports for `view`: bytes, one dimension, readonly as the Buffer is.
py::buffer_info buffer_info_of(BufferView& view);

// memoryview(BufferView(buffer)): a Python view that owns `buffer`.
py::object memoryview_owning(Buffer buffer);

// A Buffer over the memory `object` exports (C-contiguous), kept exported while any copy of the
// Buffer lives. No copy.
Buffer buffer_from_python(py::handle object);

// Memory a zero-length Buffer points to: the buffer protocol wants a non-null pointer.
extern std::byte empty_buffer_storage[64];

// ---- exceptions.cpp -------------------------------------------------------------------------
struct ExceptionTypes {
  PyObject* error = nullptr;             // picklewire.Error(Exception)
  PyObject* transport_error = nullptr;   // picklewire.TransportError(Error, OSError)
  PyObject* peer_gone = nullptr;         // picklewire.PeerGone(TransportError)
  PyObject* timeout_error = nullptr;     // picklewire.TimeoutError(TransportError, builtins.TimeoutError)
  PyObject* unpickling_error = nullptr;  // picklewire.UnpicklingError(Error, pickle.UnpicklingError)
};
extern ExceptionTypes exception_types;

// Creates the exception types in `m` and registers the translation of picklewire's C++ errors:
// a TransportError's code() becomes the Python exception's `.errno`; Interrupted becomes the
// Python error a signal handler raised during the wait (KeyboardInterrupt, ...) when one is set.
void define_exceptions(py::module_& m);

// ---- endpoint_options.cpp -------------------------------------------------------------------
// A Python timeout (None: wait forever; seconds >= 0) as a transport Timeout. `keyword` names the
// argument in the ValueError.
Timeout to_timeout(std::optional<double> seconds, const char* keyword);

// ---- stats.cpp ------------------------------------------------------------------------------
// stats() of an endpoint; `extra` adds copies made above the transport (CPython's pickler).
py::dict stats_dict(const TransportStats& stats, const CopyLedger* extra = nullptr);

// ---- memory_maps.cpp ------------------------------------------------------------------------
// [begin, end) of the /dev/shm mapping of shm channel `channel_name` in this process that holds
// all of `object`'s memory, or nullopt (the memory lies elsewhere). The kernel's word, not the
// transport's.
std::optional<std::pair<std::uintptr_t, std::uintptr_t>> shm_mapping_holding(py::handle object,
                                                                            std::string_view channel_name);

// ---- loads_safe.cpp -------------------------------------------------------------------------
void define_loads_safe(py::module_& m);

}  // namespace picklewire::python
