// C++ Buffers as Python buffers (BufferView, memoryview_owning) and Python buffers as C++ Buffers
// (buffer_from_python), without copying either way.
#include "module.hpp"

namespace picklewire::python {

alignas(64) std::byte empty_buffer_storage[64];

py::buffer_info buffer_info_of(BufferView& view) {
  const Buffer& b = view.buffer;
  void* data = b.size() ? const_cast<std::byte*>(b.data()) : static_cast<void*>(empty_buffer_storage);
  return py::buffer_info(data, 1, "B", 1, {static_cast<py::ssize_t>(b.size())}, {1}, b.readonly());
}

py::object memoryview_owning(Buffer buffer) {
  py::object view_owner = py::cast(BufferView{std::move(buffer)}, py::return_value_policy::move);
  PyObject* view = PyMemoryView_FromObject(view_owner.ptr());
  if (!view) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(view);
}

Buffer buffer_from_python(py::handle object) {
  std::shared_ptr<PythonBufferExport> exported = export_buffer(object, PyBUF_C_CONTIGUOUS);
  const std::size_t size = static_cast<std::size_t>(exported->view.len);
  void* data = size ? exported->view.buf : static_cast<void*>(empty_buffer_storage);
  const bool readonly = exported->view.readonly != 0;
  return Buffer::take(std::move(exported), data, size, readonly);
}

}  // namespace picklewire::python
