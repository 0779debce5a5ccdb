// src/numpy_reductions.hpp — numpy's reductions, decoded on load and produced on dump (issue 3 owns
// numpy_reductions.cpp, which implements these). The unpickler and pickler call them; they know
// nothing else of numpy.
#pragma once

#include <optional>

#include "graph.hpp"
#include "picklewire/ledger.hpp"

namespace picklewire::numpy {

// REDUCE of `callable` (a Global) with `args` (a Tuple slot). Returns the native value (an NDArray
// or a dtype node) for a numpy reduction it understands, nullopt to keep the inert Object node.
// Throws UnpicklingError only where numpy itself would fail to load (e.g. buffer too small);
// `offset` is the byte offset of the REDUCE opcode, reported in that error.
std::optional<Slot> decode_reduce(Graph& graph, const GlobalName& callable, const Slot& args,
                                  std::size_t offset);

// BUILD of `state` applied to `object` (an Object node). When the object is numpy's
// `_reconstruct(ndarray, ...)` placeholder, converts the node in place to Kind::NDArray (so memo
// references stay shared; do not touch object.object() afterwards) and returns true; false leaves
// the generic BUILD to the caller (dtype objects keep their BUILD state: an array's dtype is read
// from that inert `numpy.dtype` Object node when the array is decoded). `offset`: the BUILD
// opcode's byte offset, reported in errors.
bool decode_build(Graph& graph, Node& object, const Slot& state, std::size_t offset);

// The DType a `numpy.dtype(code, align, copy)` Object node (with its BUILD state) describes, or a
// dtype string such as '<f8'; nullopt for what picklewire keeps inert (structured, subarray, object,
// long double, metadata it does not understand).
std::optional<DType> decode_dtype(const Slot& dtype);

// The Object-node graph (in `scratch`) that the pickler writes for `array` at `protocol`:
// protocol 5 the _frombuffer form with the data as a PickleBuffer, protocols 2-4 the _reconstruct
// form. A non-contiguous array is made contiguous first and the copy is recorded in `ledger`.
// `data_buffer`, when given, receives the PickleBuffer node holding the array's data (protocol 5;
// nullptr otherwise), so the pickler can tell the buffer callback the dtype's item size.
Slot lower_ndarray(Graph& scratch, const NDArray& array, int protocol, CopyLedger* ledger,
                   const Node** data_buffer = nullptr);

}  // namespace picklewire::numpy
