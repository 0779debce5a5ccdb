// src/builtin_reductions.hpp — internal: what CPython makes of REDUCE, NEWOBJ and NEWOBJ_EX when
// the callable is a builtin, decided without importing anything (numpy's reductions are in
// numpy_reductions.hpp). The unpickler calls these; everything they cannot decide stays an inert
// Object node.
#pragma once

#include <cstddef>
#include <optional>
#include <string_view>

#include "graph.hpp"

namespace picklewire::builtin_reductions {

// type(x).__name__ where it is knowable without importing (a literal's type, builtins' known
// names: 'type' for a builtin type, 'builtin_function_or_method', 'NoneType' for builtins.None,
// ...); nullopt for inert objects and other globals.
std::optional<std::string_view> python_type_name(const Slot& s);

// CPython's verdict on a REDUCE of `callable` applied to `args`, where it is knowable without
// importing: throws UnpicklingError at `offset`, in CPython's words, when CPython refuses (args not
// a tuple: "argument list must be a tuple"; a callable that is not callable: "'NoneType' object is
// not callable"). Returns when CPython would go on to call it.
void check_reduce(const Slot& callable, const Slot& args, std::size_t offset);

// The same for NEWOBJ (`form` ObjectForm::NewObj, `kwargs` unused) and NEWOBJ_EX: the class must
// be a type ("NEWOBJ class argument must be a type, not builtin_function_or_method"), args a tuple,
// kwargs a dict, in that order, as _pickle.c checks them.
void check_newobj(ObjectForm form, const Slot& cls, const Slot& args, const Slot& kwargs, std::size_t offset);

// REDUCE of a builtin callable `callable` (a Global) with `args` (a Tuple slot): the value CPython
// would produce, for calls that run no user code (builtins.int('12'), set([1, 2]),
// bytearray(b'..'), complex(1, 2), _codecs.encode(str, 'latin1'), copyreg._reconstructor(cls,
// object, None) -> the NEWOBJ form, ...). nullopt keeps the inert Object node. Throws
// UnpicklingError at `offset`, in CPython's words, where CPython's call raises (int('x'):
// "invalid literal for int() with base 10: 'x'").
std::optional<Slot> decode_reduce(Graph& graph, const GlobalName& callable, const Slot& args, std::size_t offset);

// NEWOBJ / NEWOBJ_EX of a builtin type: cls.__new__(cls, *args, **kwargs). For int, str, tuple,
// ... that is the call; list, dict, set and bytearray.__new__ ignore their arguments and return an
// empty container (their __init__, which NEWOBJ does not call, fills it). `kwargs`: a Dict slot or
// None (NEWOBJ).
std::optional<Slot> decode_newobj(Graph& graph, const GlobalName& cls, const Slot& args, const Slot& kwargs,
                                  std::size_t offset);

}  // namespace picklewire::builtin_reductions
