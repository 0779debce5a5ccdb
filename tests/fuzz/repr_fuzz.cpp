// libFuzzer target: the repr printer and the pickler on graphs the unpickler built from any bytes.
// Byte 0 chooses the options (decode_reductions, the pickler's protocol 2-5, a repr bound); the
// rest is the stream. What must hold, beyond "no crash, no leak, no UB":
//   * repr with a bound either throws picklewire::Error (the text is longer than the bound) or
//     returns exactly the unbounded text;
//   * the pickler either refuses the graph (picklewire::Error) or writes a stream the unpickler
//     loads, and a graph that went through dump + load once is a fixed point: dumping and loading
//     it again prints the same repr (the first trip may normalise, e.g. an in-band PickleBuffer
//     comes back as bytes).
#include <cstddef>
#include <cstdint>
#include <string>

#include "picklewire/pickler.hpp"
#include "picklewire/repr.hpp"
#include "picklewire/unpickler.hpp"

namespace {

using namespace picklewire;

constexpr std::size_t kMaxRepr = 1u << 20;

UnpicklerOptions tight_options(bool decode_reductions) {
  UnpicklerOptions options;
  options.max_depth = 2000;
  options.max_nodes = 1u << 16;
  options.decode_reductions = decode_reductions;
  options.extensions[1] = {"copyreg", "_reconstructor"};
  options.persistent_load = [](const Value& pid) { return pid; };
  return options;
}

// dump + load at `protocol`; nullopt when the pickler refuses the graph. The reload uses the
// default limits: a shallow graph may legitimately pickle deeper than the first load's tight
// max_depth allows (a global 'a.b.c...' with thousands of dots is a leaf, and at protocol < 4 one
// getattr reduction per dot, as CPython writes it).
std::optional<Value> round_trip(const Value& v, int protocol, UnpicklerOptions options) {
  options.max_depth = UnpicklerOptions{}.max_depth;
  options.max_nodes = UnpicklerOptions{}.max_nodes;
  Buffer stream;
  PicklerOptions pickler;
  pickler.protocol = protocol;
  try {
    stream = dump(v, pickler);
  } catch (const Error&) {
    return std::nullopt;
  }
  try {
    return load(stream, {}, options);
  } catch (const Error&) {
    __builtin_trap();  // the pickler wrote a stream its own unpickler rejects
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size < 1) return 0;
  const std::uint8_t mode = data[0];
  const bool decode_reductions = mode & 1;
  const int protocol = 2 + ((mode >> 1) & 3);
  const std::size_t bound = std::size_t(mode >> 3) * 7;  // 0 .. 217 characters
  Buffer stream = Buffer::copy(data + 1, size - 1, /*readonly=*/true);
  Buffer buffers[2] = {Buffer::copy(std::string_view("out-of-band"), false), Buffer::copy(std::string(64, '\x01'), true)};
  const UnpicklerOptions options = tight_options(decode_reductions);
  Value v;
  try {
    v = load(stream, buffers, options);
  } catch (const Error&) {
    return 0;
  }
  std::string full;
  try {
    full = repr(v, kMaxRepr);
  } catch (const Error&) {
    return 0;  // a graph whose text is too long (sharing expands): not printed in full
  }
  try {
    if (repr(v, bound) != full) __builtin_trap();
  } catch (const Error&) {
    if (full.size() <= bound) __builtin_trap();  // refused a text within the bound
  }
  if (!equal(v, v)) __builtin_trap();
  std::optional<Value> once = round_trip(v, protocol, options);
  if (!once) return 0;
  std::string once_text;
  try {
    once_text = repr(*once, kMaxRepr);
  } catch (const Error&) {
    return 0;
  }
  std::optional<Value> twice = round_trip(*once, protocol, options);
  if (!twice) __builtin_trap();  // the pickler refused what it had written itself
  if (repr(*twice, kMaxRepr) != once_text) __builtin_trap();
  return 0;
}
