// Which mapping of this process holds an object's memory, read from /proc/self/maps: the
// kernel's word, not the transport's (Receiver.owns / Receiver.segment_range, and the tests that
// prove a received array lies in the shared segment).
#include <fstream>
#include <sstream>
#include <string>

#include "module.hpp"

namespace picklewire::python {
namespace {

struct Mapping {
  std::uintptr_t begin = 0, end = 0;
  std::string path;
};

// The mapping of this process containing `address`: [begin, end) and the mapped file's path.
std::optional<Mapping> mapping_containing(std::uintptr_t address) {
  std::ifstream maps("/proc/self/maps");
  std::string line;
  while (std::getline(maps, line)) {
    std::istringstream fields(line);
    std::string range, perms, offset, device, inode, path;
    fields >> range >> perms >> offset >> device >> inode;
    std::getline(fields >> std::ws, path);
    const auto dash = range.find('-');
    if (dash == std::string::npos) continue;
    Mapping m{std::stoull(range.substr(0, dash), nullptr, 16), std::stoull(range.substr(dash + 1), nullptr, 16), path};
    if (address >= m.begin && address < m.end) return m;
  }
  return std::nullopt;
}

// Address and length of whatever `object` exports through the buffer protocol.
std::pair<std::uintptr_t, std::size_t> buffer_extent(py::handle object) {
  Py_buffer view;
  if (PyObject_GetBuffer(object.ptr(), &view, PyBUF_FULL_RO) != 0) {
    // numpy refuses buffer exports of some dtypes (datetime64): ask its array interface instead.
    if (!py::hasattr(object, "__array_interface__")) throw py::error_already_set();
    PyErr_Clear();
    py::tuple data = object.attr("__array_interface__")["data"];
    return {py::cast<std::uintptr_t>(data[0]), py::cast<std::size_t>(object.attr("nbytes"))};
  }
  const auto extent = std::make_pair(reinterpret_cast<std::uintptr_t>(view.buf), static_cast<std::size_t>(view.len));
  PyBuffer_Release(&view);
  return extent;
}

}  // namespace

std::optional<std::pair<std::uintptr_t, std::uintptr_t>> shm_mapping_holding(py::handle object,
                                                                            std::string_view channel_name) {
  const auto [address, length] = buffer_extent(object);
  const std::optional<Mapping> m = mapping_containing(address);
  if (!m || m->path.rfind("/dev/shm/", 0) != 0 || m->path.find(channel_name) == std::string::npos) return std::nullopt;
  if (address + length > m->end) return std::nullopt;
  return std::make_pair(m->begin, m->end);
}

}  // namespace picklewire::python
