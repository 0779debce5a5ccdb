// Modules the extension calls into, imported on first use and cached. The objects are leaked on
// purpose: destroying a py::object after the interpreter is gone would crash at exit.
#include "module.hpp"

namespace picklewire::python {

py::object& pickle_dumps() {
  static auto* dumps = new py::object(py::module_::import("pickle").attr("dumps"));
  return *dumps;
}

py::object& pickle_loads() {
  static auto* loads = new py::object(py::module_::import("pickle").attr("loads"));
  return *loads;
}

py::module_& numpy_module() {
  static auto* np = new py::module_(py::module_::import("numpy"));
  return *np;
}

}  // namespace picklewire::python
