// libFuzzer target: picklewire.loads_safe (the C++ unpickler, then python/loads_safe.cpp's
// conversion of the graph to Python objects) on any bytes, inside an embedded CPython.
//
// The extension is the real one, built by CMake with clang and -fsanitize=fuzzer-no-link,address,
// undefined (tests/fuzz/run.sh does that), and imported from FUZZ_PICKLEWIRE_PYTHONPATH: its
// coverage feeds the fuzzer and ASan/UBSan watch it, while CPython and numpy run uninstrumented.
// Byte 0 chooses the allow-list (nothing, or a few harmless classes whose reductions then run);
// the rest is the stream, with two out-of-band buffers. The only acceptable failure is
// picklewire.UnpicklingError (loads_safe reports everything as one); any other exception, a crash
// or a sanitizer report is a bug.
#include <pybind11/embed.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace py = pybind11;

namespace {

struct Harness {
  py::object loads_safe, unpickling_error, buffers, allow_nothing, allow_some;
};
Harness* harness = nullptr;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  // Every Python allocation through malloc, so ASan sees them (pymalloc's arenas look like
  // overflows to it), and no site-packages surprises beyond what the module needs.
  setenv("PYTHONMALLOC", "malloc", 1);
  const char* path = std::getenv("FUZZ_PICKLEWIRE_PYTHONPATH");
  if (!path) {
    std::fprintf(stderr, "set FUZZ_PICKLEWIRE_PYTHONPATH to the sanitized build's python/ directory\n");
    std::abort();
  }
  // Never finalized: the interpreter lives until the process exits (leak checks are off for this
  // target; CPython keeps memory to the end by design).
  new py::scoped_interpreter();
  py::module_::import("sys").attr("path").attr("insert")(0, path);
  py::module_ picklewire = py::module_::import("picklewire");
  py::module_::import("numpy");  // imported once here, not inside the first input's time
  harness = new Harness{
      picklewire.attr("loads_safe"),
      picklewire.attr("UnpicklingError"),
      py::make_tuple(py::module_::import("builtins").attr("bytearray")(py::bytes("out-of-band")), py::bytes(std::string(64, '\x01'))),
      py::tuple(),
      py::make_tuple("collections.OrderedDict", "collections.deque", "datetime.date", "datetime.timedelta",
                     "builtins.complex", "builtins.set", "builtins.frozenset"),
  };
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const py::object& allowed = (data[0] & 1) ? harness->allow_some : harness->allow_nothing;
  try {
    py::object result =
        harness->loads_safe(py::bytes(reinterpret_cast<const char*>(data + 1), size - 1), harness->buffers, allowed);
  } catch (py::error_already_set& e) {
    if (!e.matches(harness->unpickling_error)) {
      std::fprintf(stderr, "loads_safe raised something other than picklewire.UnpicklingError: %s\n", e.what());
      std::abort();
    }
  }
  return 0;
}
