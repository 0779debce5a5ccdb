/// \file picklewire/value.hpp — an inert, shareable representation of a pickled object graph.
///
/// Loading a pickle never runs code: a global is a name (Kind::Global), a REDUCE / NEWOBJ / BUILD
/// is an Object node that records callable, arguments and state. Well-known reductions decode to
/// native kinds (complex, set, bytes, bytearray, numpy arrays -> Kind::NDArray).
///
/// Memory model. Every non-scalar node lives in a Graph, an arena that owns all the nodes one load
/// (or one Builder) created, so cycles cannot leak and destroying a graph of any depth is a loop,
/// never a recursion. A Value is a handle: (node, shared ownership of its Graph). None, bool, int
/// that fits int64 and float are held inline and allocate nothing. A graph that references nodes
/// of another graph keeps that graph alive ("imports" it). Memoised objects stay shared: two
/// handles to the same node have the same identity().
///
/// Building graphs in C++: the static factories (Value::list, Value::dict, ...) each start a graph
/// of their own; a Builder puts everything it makes into one graph, which is what you want for
/// large graphs and the only way to build a cycle that spans several containers (two graphs may not
/// import each other: that would be an ownership cycle, and is refused with picklewire::Error).
///
/// Python semantics: str is stored as UTF-8 (lone surrogates as CPython's 'surrogatepass' encodes
/// them); an int of any size is exact (beyond int64 as little-endian two's complement bytes, the
/// LONG1/LONG4 payload); dicts keep insertion order and may hold unhashable keys (nothing is hashed).
///
/// Thread safety: concurrent reads of one graph from many threads are safe; mutation (append,
/// set_item, ...) is not synchronised.
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "picklewire/buffer.hpp"

namespace picklewire {

struct NDArray;
struct Node;
class Graph;

enum class Kind : std::uint8_t {
  None, Bool, Int, Float, Complex, Str, Bytes, ByteArray,
  Tuple, List, Dict, Set, FrozenSet,
  PickleBuffer,  ///< an out-of-band (or in-band protocol-5) buffer: a Buffer view, readonly or writable
  Global,        ///< (module, qualname) — a name, never resolved
  Object,        ///< REDUCE / NEWOBJ / NEWOBJ_EX / INST / OBJ, plus BUILD state and APPEND/SETITEM items
  NDArray,       ///< a numpy array (see ndarray.hpp)
};
std::string_view to_string(Kind k) noexcept;

/// How an Object node was constructed, which is how the pickler writes it back.
enum class ObjectForm : std::uint8_t {
  Reduce,    ///< callable(*args)                      REDUCE
  NewObj,    ///< cls.__new__(cls, *args)              NEWOBJ
  NewObjEx,  ///< cls.__new__(cls, *args, **kwargs)    NEWOBJ_EX
  Inst,      ///< protocol 0 INST 'module name'        (callable is a Global)
  Obj,       ///< protocol 1 OBJ                       (callable is the class)
};

/// Internal: a child reference inside a graph (scalars inline, the rest a Node*).
struct Slot {
  Kind kind = Kind::None;
  bool is_inline = true;  ///< Int: true when the value fits int64 (i), false for a big int (node)
  union {
    bool b;
    std::int64_t i;
    double f;
    Node* node;
  };
  Slot() : i(0) {}
  /// Whole-slot constructors (src/graph.hpp's int_slot, node_slot, ...). They write kind and
  /// is_inline together, so a copy that reads both at once is forwarded from the store buffer;
  /// `Slot s; s.kind = ...;` writes them separately and stalls the copy that follows.
  Slot(Kind k, Node* n) noexcept : kind(k), is_inline(false), node(n) {}
  Slot(Kind k, std::int64_t v) noexcept : kind(k), is_inline(true), i(v) {}
  Slot(Kind k, bool v) noexcept : kind(k), is_inline(true), b(v) {}
  Slot(Kind k, double v) noexcept : kind(k), is_inline(true), f(v) {}
};

class Value;

/// The parts of an Object node (a convenience copy of handles; the node is not copied).
struct ObjectParts {
  ObjectForm form = ObjectForm::Reduce;
  std::vector<Value> callable_args_kwargs;  ///< [callable, args, kwargs]
  std::vector<Value> states;                ///< one per BUILD applied, in order
  std::vector<Value> list_items;            ///< APPEND / APPENDS applied to the object
  std::vector<std::pair<Value, Value>> dict_items;  ///< SETITEM / SETITEMS applied to the object
  std::vector<Value> set_items;             ///< ADDITEMS applied to the object
};

class Value {
 public:
  Value() noexcept {}  // None
  Value(std::nullptr_t) noexcept {}
  Value(bool b) noexcept { slot_.kind = Kind::Bool; slot_.b = b; }
  Value(int i) noexcept : Value(static_cast<long long>(i)) {}
  Value(long i) noexcept : Value(static_cast<long long>(i)) {}
  Value(long long i) noexcept { slot_.kind = Kind::Int; slot_.i = static_cast<std::int64_t>(i); }
  Value(unsigned long long i);  ///< beyond int64: a big int
  Value(unsigned long i) : Value(static_cast<unsigned long long>(i)) {}
  Value(unsigned int i) noexcept : Value(static_cast<long long>(i)) {}
  Value(double f) noexcept { slot_.kind = Kind::Float; slot_.f = f; }
  Value(const char* utf8);  ///< str
  Value(std::string_view utf8);  ///< str
  Value(const std::string& utf8) : Value(std::string_view(utf8)) {}

  /// ---- factories (each starts a graph of its own; see Builder for one shared graph)
  static Value str(std::string_view utf8);
  static Value bytes(std::string_view data);
  static Value bytearray(std::string_view data);
  /// An int of any size from its little-endian two's-complement bytes (as LONG1/LONG4 carry it).
  static Value big_int(std::span<const std::byte> le_twos_complement);
  static Value complex(double real, double imag);
  static Value tuple(std::vector<Value> items = {});
  static Value list(std::vector<Value> items = {});
  static Value dict(std::vector<std::pair<Value, Value>> items = {});
  static Value set(std::vector<Value> items = {});
  static Value frozenset(std::vector<Value> items = {});
  static Value pickle_buffer(Buffer buffer);
  static Value global(std::string_view module, std::string_view qualname);
  static Value object(ObjectForm form, const Value& callable, const Value& args, const Value& kwargs = {});
  static Value ndarray(NDArray array);

  /// ---- mutation (List, Dict, Set, Object; the graph stays shared, so cycles are possible)
  void append(const Value& item);                          ///< List; Object: an APPENDS item
  void set_item(const Value& key, const Value& value);     ///< Dict (appends; no dedup); Object: SETITEMS
  void add(const Value& item);                             ///< Set; Object: ADDITEMS
  void add_state(const Value& state);                      ///< Object: BUILD

  /// ---- inspection
  /// The kind of the node as it is now (a numpy BUILD seen later in the same load may have turned
  /// an Object this handle was copied from into an NDArray; the node, not the handle, decides).
  Kind kind() const noexcept;
  bool is(Kind k) const noexcept { return kind() == k; }
  bool is_none() const noexcept { return kind() == Kind::None; }

  bool as_bool() const;
  bool fits_int64() const noexcept { return slot_.kind == Kind::Int && slot_.is_inline; }
  std::int64_t as_int() const;                       ///< throws if not Int or beyond int64
  std::vector<std::byte> int_bytes() const;          ///< minimal LE two's complement (LONG1 payload; 0 -> empty)
  double as_float() const;                           ///< Float (Int converts, exactly or throws)
  std::complex<double> as_complex() const;
  std::string_view as_str() const;                   ///< Str (UTF-8)
  std::string_view as_bytes() const;                 ///< Bytes or ByteArray
  const Buffer& as_buffer() const;                   ///< PickleBuffer
  std::string_view global_module() const;            ///< Global
  std::string_view global_name() const;              ///< Global
  const NDArray& as_ndarray() const;                 ///< NDArray
  ObjectParts object_parts() const;                  ///< Object

  /// Tuple, List, Set, FrozenSet: items; Dict: number of entries.
  std::size_t size() const;
  Value item(std::size_t i) const;                   ///< Tuple, List, Set, FrozenSet
  Value operator[](std::size_t i) const { return item(i); }
  Value key(std::size_t i) const;                    ///< Dict entry i
  Value value(std::size_t i) const;                  ///< Dict entry i
  /// Dict: the value of the first entry whose key is the str `key`; None (and *found = false) if absent.
  Value get(std::string_view key, bool* found = nullptr) const;

  /// Identity: two handles of the same node compare equal; inline scalars have none (nullptr).
  const void* identity() const noexcept { return slot_.is_inline ? nullptr : slot_.node; }
  bool is_same(const Value& o) const noexcept;

  /// ---- internal (codec implementation)
  Value(Slot slot, std::shared_ptr<Graph> graph) noexcept : slot_(slot), graph_(std::move(graph)) {}
  const Slot& slot() const noexcept { return slot_; }
  const std::shared_ptr<Graph>& graph() const noexcept { return graph_; }

 private:
  Slot slot_;
  std::shared_ptr<Graph> graph_;  ///< null for inline scalars
};

/// Builds many values into one graph: fast (one arena), and cycles across containers are allowed.
class Builder {
 public:
  Builder();
  Value str(std::string_view utf8);
  Value bytes(std::string_view data);
  Value bytearray(std::string_view data);
  Value big_int(std::span<const std::byte> le_twos_complement);
  Value complex(double real, double imag);
  Value tuple(std::vector<Value> items = {});
  Value list(std::vector<Value> items = {});
  Value dict(std::vector<std::pair<Value, Value>> items = {});
  Value set(std::vector<Value> items = {});
  Value frozenset(std::vector<Value> items = {});
  Value pickle_buffer(Buffer buffer);
  Value global(std::string_view module, std::string_view qualname);
  Value object(ObjectForm form, const Value& callable, const Value& args, const Value& kwargs = {});
  Value ndarray(NDArray array);
  const std::shared_ptr<Graph>& graph() const noexcept { return graph_; }

 private:
  std::shared_ptr<Graph> graph_;
};

}  // namespace picklewire
