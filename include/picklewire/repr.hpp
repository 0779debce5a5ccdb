/// \file picklewire/repr.hpp — a Value as one line of Python, and structural equality.
///
/// repr(v) is what Python's repr() prints for the object CPython's pickle.loads would return, for
/// every builtin kind: evaluating it with builtins only (plus `nan` and `inf` bound to the floats,
/// as Python's own repr needs too) gives an equal object. Recursion prints as Python does: `[...]`,
/// `{...}`, `(...)`. Ints beyond ~4200 decimal digits print in hex (0x..., -0x...) so the output
/// stays linear-time and evaluable (Python refuses decimal literals over 4300 digits).
///
/// Kinds that are not builtin objects print as calls to helper names that builtins do NOT define,
/// so evaluating untrusted output can never import or call anything by accident (docs/unpickler.md):
///   Global                 _global('module', 'qualname')
///   Object                 _reduce(callable, args) | _newobj(cls, args) | _newobj_ex(cls, args, kwargs)
///                          | _inst(cls, args) | _obj(cls, args), wrapped (innermost first) by
///                          _additems(o, [..]), _extend(o, [..]), _setitems(o, [(k, v), ..]),
///                          then one _build(o, state) per BUILD, in order
///   NDArray                array([[1.0, 2.0], [3.0, 4.0]], dtype='<f8', shape=(2, 2), order='C') (format_ndarray)
///   an Object or NDArray already being printed (a cycle through it)   ...
/// An out-of-band PickleBuffer prints as b'...' when readonly and bytearray(b'...') when writable.
#pragma once

#include <cstddef>
#include <limits>
#include <string>

#include "picklewire/value.hpp"

namespace picklewire {

/// One line, no newline. Iterative (any depth). Throws picklewire::Error when the text would
/// exceed `max_chars` (a small pickle with much sharing can expand exponentially, as in Python).
std::string repr(const Value& value, std::size_t max_chars = std::numeric_limits<std::size_t>::max());

/// Structural equality of two graphs: same kinds, same scalars (a float equals itself even when
/// nan; -0.0 == 0.0), same bytes, items in stored order (dict and set entries too), same object
/// parts. Identity and sharing are not compared. Iterative and cycle-safe (a pair of nodes under
/// comparison is assumed equal when met again).
bool equal(const Value& a, const Value& b);

}  // namespace picklewire
