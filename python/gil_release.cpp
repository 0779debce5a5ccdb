// Giving back the Python objects that C++ Buffers own (a PickleBuffer export, the pickled bytes,
// a BufferView), from whatever thread drops the last Buffer.
//
// A transport may drop the last Buffer on a thread that does not hold the GIL: ZeroMQ's I/O
// thread once a frame is on the wire, or our own thread inside a GIL-free transport call. Such a
// thread must not take the GIL: during interpreter shutdown CPython ends any thread that tries
// (pthread_exit), which inside C++/C frames aborts the process. So a thread holding the GIL
// releases at once; any other thread only queues the object, and the queue is drained by the
// next module call that holds the GIL (every send/recv/close/stats, and an atexit hook). After
// shutdown has begun nothing is released: the process is exiting.
#include <mutex>
#include <vector>

#include "module.hpp"

namespace picklewire::python {

bool interpreter_finalizing() noexcept {
#if PY_VERSION_HEX >= 0x030D0000
  return Py_IsFinalizing() != 0;
#else
  return _Py_IsFinalizing() != 0;
#endif
}

namespace {

std::mutex deferred_mutex;
std::vector<PyObject*> deferred_references;
std::vector<PythonBufferExport*> deferred_exports;

bool exiting() noexcept { return !Py_IsInitialized() || interpreter_finalizing(); }
bool may_release_now() noexcept { return !exiting() && PyGILState_Check(); }

void release_reference(PyObject* object) noexcept {
  if (may_release_now()) {
    Py_DECREF(object);
    return;
  }
  if (exiting()) return;  // leak: the process is going away
  std::lock_guard lock(deferred_mutex);
  deferred_references.push_back(object);
}

void release_export(PythonBufferExport* exported) noexcept {
  if (may_release_now()) {
    PyBuffer_Release(&exported->view);
    delete exported;
    return;
  }
  if (exiting()) return;  // leak: the process is going away
  std::lock_guard lock(deferred_mutex);
  deferred_exports.push_back(exported);
}

}  // namespace

void release_deferred() noexcept {
  std::vector<PyObject*> references;
  std::vector<PythonBufferExport*> exports;
  {
    std::lock_guard lock(deferred_mutex);
    references.swap(deferred_references);
    exports.swap(deferred_exports);
  }
  for (PythonBufferExport* e : exports) {
    PyBuffer_Release(&e->view);
    delete e;
  }
  for (PyObject* o : references) Py_DECREF(o);
}

std::shared_ptr<void> python_reference_owner(py::handle object) {
  object.inc_ref();
  return std::shared_ptr<void>(object.ptr(), [](void* p) { release_reference(static_cast<PyObject*>(p)); });
}

std::shared_ptr<PythonBufferExport> export_buffer(py::handle object, int flags) {
  auto* exported = new PythonBufferExport;
  if (PyObject_GetBuffer(object.ptr(), &exported->view, flags) != 0) {
    delete exported;
    throw py::error_already_set();
  }
  return std::shared_ptr<PythonBufferExport>(exported, release_export);
}

}  // namespace picklewire::python
