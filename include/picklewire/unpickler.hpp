/// \file picklewire/unpickler.hpp — reads pickle protocols 0-5 into an inert Value graph.
///
/// Nothing in the stream runs code. The reader is built for hostile bytes: every length is checked
/// against the remaining input before anything is allocated, nesting, memo and node counts are
/// bounded (UnpicklerOptions), and every failure is an UnpicklingError carrying the byte offset.
/// Nothing is returned after an error.
///
/// Lifetimes: the returned graph may view bytes of `stream` (str/bytes payloads) and of `buffers`
/// (PickleBuffer and NDArray data are the delivered Buffers, not copies); it keeps both alive
/// through their owners. A Buffer made with Buffer::wrap has no owner: the caller keeps that memory
/// valid for as long as the returned Value (or anything taken from it) is alive.
#pragma once

#include <cstddef>
#include <functional>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>

#include "picklewire/buffer.hpp"
#include "picklewire/errors.hpp"
#include "picklewire/message.hpp"
#include "picklewire/value.hpp"

namespace picklewire {

struct UnpicklerOptions {
  /// Threat: deeply nested containers exhausting memory or stack of whoever walks the graph later.
  /// Counts open MARKs plus container nesting on the value stack. Walks over graphs are iterative,
  /// so this bounds memory, not recursion.
  std::size_t max_depth = 100'000;
  /// Threat: PUT/BINPUT/LONG_BINPUT with huge indices forcing a huge memo table.
  std::size_t max_memo_entries = 1u << 24;
  /// Threat: a small stream expanding into billions of nodes (e.g. DUP/BINGET loops are bounded by
  /// input size, but tuples of memo references multiply work). Counts nodes created.
  std::size_t max_nodes = 1u << 28;
  /// Threat: protocol-0 LONG / INT with millions of decimal digits (quadratic conversion).
  /// CPython's own limit for int <-> str conversion is 4300 digits.
  std::size_t max_decimal_int_digits = 4300;

  /// find_class policy. Called for every GLOBAL / STACK_GLOBAL / INST (module, qualname) and for
  /// every global a well-known reduction would decode. Return false to reject the stream with an
  /// UnpicklingError ("global 'os.system' is forbidden"). Empty (the default): every global loads
  /// as an inert name.
  std::function<bool(std::string_view module, std::string_view qualname)> find_class;

  /// persistent_load: maps a persistent id (PERSID's str, BINPERSID's object) to a value. Empty:
  /// a persistent id is an UnpicklingError, as in CPython.
  std::function<Value(const Value& pid)> persistent_load;

  /// The copyreg extension registry for EXT1/EXT2/EXT4: code -> (module, qualname). A code that is
  /// not registered is an UnpicklingError.
  std::map<std::int32_t, std::pair<std::string, std::string>> extensions;

  /// How Python 2 `str` (STRING, BINSTRING, SHORT_BINSTRING) loads, as CPython's
  /// Unpickler(encoding=...): "ASCII" (the default; non-ASCII bytes are an error), "latin1",
  /// "utf-8" (each -> str), or "bytes" (-> bytes). Any other name is an error when such an opcode
  /// is met. ("latin1" is what numpy documents for Python 2 array pickles.)
  std::string encoding = "ASCII";

  /// Decode well-known reductions (builtin types called with literal arguments, _codecs.encode,
  /// copyreg._reconstructor, numpy arrays and dtypes) to native kinds (docs/unpickler.md). Off:
  /// every reduction stays an Object node. Either way, a reduction CPython refuses without
  /// importing anything (None as the callable, a non-tuple argument list, NEWOBJ of a function)
  /// is an UnpicklingError in CPython's words.
  bool decode_reductions = true;
};

/// An allow-list policy for UnpicklerOptions::find_class: "module.qualname" entries, or "module.*".
std::function<bool(std::string_view, std::string_view)> allow_globals(std::vector<std::string> allowed);

/// Loads one pickle. `buffers` are the out-of-band buffers, consumed in order by NEXT_BUFFER;
/// fewer than the stream needs is an error ("not enough out-of-band buffers"); more is allowed
/// (CPython allows it too).
Value load(const Buffer& stream, std::span<const Buffer> buffers = {}, const UnpicklerOptions& options = {});
inline Value load(const Message& message, const UnpicklerOptions& options = {}) {
  return load(message.stream, message.buffers, options);
}

}  // namespace picklewire
