// numpy's pickle reductions: decoded to NDArray on load, produced from NDArray on dump.
//
// What numpy writes (numpy 1.x; numpy 2 the same under `numpy._core`):
//   protocol 5, C/F-contiguous:   numpy.core.numeric._frombuffer(buffer, dtype, shape, order)
//                                 numpy 2 also: _frombuffer(buffer, dtype, shape, 'K', axis_order)
//                                   = frombuffer(buffer).reshape(shape, 'C').transpose(axis_order)
//   protocols 0-4 (and 5 for non-contiguous or non-buffer dtypes such as datetime64):
//     numpy.core.multiarray._reconstruct(numpy.ndarray, (0,), b'b')
//     BUILD (version, shape, dtype, is_fortran, data)   data: bytes (protocol 0-2: the unpickler
//                                                       has decoded _codecs.encode(str, 'latin1'))
//                                                       or a list (object arrays: kept inert)
//   dtype:  numpy.dtype(code, False, True) BUILD (3, byteorder, subarray, names, fields, elsize,
//           alignment, flags) or version 4 with a 9th item: metadata, for datetimes
//           ({}, (b'unit', count, 1, 1)).
// Anything else (subclasses, structured or object dtypes, subarrays, unknown versions) returns
// nullopt / false so the caller keeps the inert Object node.
#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>

#include "picklewire/errors.hpp"
#include "numpy_reductions.hpp"

namespace picklewire::numpy {

namespace {

// ---------------------------------------------------------------- reading slots


const Items* tuple_items(const Slot& s) {
  const Node* n = node_of(s);
  return n && n->kind == Kind::Tuple ? &std::get<Items>(n->payload) : nullptr;
}
std::optional<std::int64_t> int_of(const Slot& s) {
  if (kind_of(s) == Kind::Int && s.is_inline) return s.i;
  return std::nullopt;
}
std::optional<bool> bool_of(const Slot& s) {
  if (kind_of(s) == Kind::Bool) return s.b;
  if (auto i = int_of(s)) return *i != 0;  // numpy's setstate accepts any truth value; ints are what old pickles hold
  return std::nullopt;
}
std::optional<std::string_view> text_of(const Slot& s, Kind k) {
  const Node* n = node_of(s);
  if (n && n->kind == k) return std::get<Text>(n->payload).data;
  return std::nullopt;
}
bool is_none(const Slot& s) { return kind_of(s) == Kind::None; }

// numpy 1.x module `numpy.core.<sub>`, numpy 2 `numpy._core.<sub>`.
bool numpy_core_module(std::string_view module, std::string_view sub) {
  for (std::string_view prefix : {std::string_view("numpy.core."), std::string_view("numpy._core.")})
    if (module.size() == prefix.size() + sub.size() && module.starts_with(prefix) && module.ends_with(sub)) return true;
  return false;
}

bool is_ndarray_class(const Slot& s) {
  const Node* n = node_of(s);
  if (!n || n->kind != Kind::Global) return false;
  const auto& g = std::get<GlobalName>(n->payload);
  return g.name == "ndarray" && (g.module == "numpy" || numpy_core_module(g.module, "multiarray"));
}

bool is_dtype_class(const Slot& s) {
  const Node* n = node_of(s);
  if (!n || n->kind != Kind::Global) return false;
  const auto& g = std::get<GlobalName>(n->payload);
  return g.name == "dtype" && (g.module == "numpy" || numpy_core_module(g.module, "multiarray") ||
                               numpy_core_module(g.module, "_multiarray_umath"));
}

// ---------------------------------------------------------------- dtype

// The datetime unit from numpy's metadata tuple (b'ms', 10, 1, 1) -> "10ms"; generic -> "".
std::optional<std::string> datetime_unit(const Slot& metadata) {
  const Items* outer = tuple_items(metadata);
  if (!outer || outer->size() != 2) return std::nullopt;
  const Node* dict = node_of((*outer)[0]);
  if (!dict || dict->kind != Kind::Dict || !std::get<Entries>(dict->payload).empty()) return std::nullopt;
  const Items* t = tuple_items((*outer)[1]);
  if (!t || t->size() != 4) return std::nullopt;
  auto base = text_of((*t)[0], Kind::Bytes);
  if (!base) base = text_of((*t)[0], Kind::Str);
  auto num = int_of((*t)[1]), den = int_of((*t)[2]), events = int_of((*t)[3]);
  if (!base || !num || !den || !events || *num < 1 || *den != 1 || *events != 1) return std::nullopt;
  if (*base == "generic") return *num == 1 ? std::optional<std::string>("") : std::nullopt;
  std::string unit = (*num == 1 ? std::string() : std::to_string(*num)) + std::string(*base);
  try {
    DType::parse("M8[" + unit + "]");
  } catch (const Error&) {
    return std::nullopt;
  }
  return unit;
}

std::optional<DType> dtype_from_object(const ObjectData& o) {
  if (o.form != ObjectForm::Reduce || !is_dtype_class(o.callable)) return std::nullopt;
  if (!o.list_items.empty() || !o.dict_items.empty() || !o.set_items.empty() || o.states.size() > 1) return std::nullopt;
  const Items* args = tuple_items(o.args);
  if (!args || args->empty() || args->size() > 3) return std::nullopt;
  auto code = text_of((*args)[0], Kind::Str);
  if (!code) return std::nullopt;
  if (args->size() >= 2) {  // align=True changes structured layouts only; refuse anything odd
    auto align = bool_of((*args)[1]);
    if (!align) return std::nullopt;
  }
  // The code names kind and size without byte order: 'f8', 'U3', 'M8', 'V16', 'b1'.
  if (code->empty() || std::string_view("biufcSUVMm").find((*code)[0]) == std::string_view::npos) return std::nullopt;
  DType d;
  try {
    d = DType::parse(*code);
  } catch (const Error&) {
    return std::nullopt;  // 'O8', 'f16' (long double), 'c32', ...
  }
  if (o.states.empty()) return d;  // numpy always writes the state; without it numpy uses native order

  const Items* st = tuple_items(o.states[0]);
  if (!st || (st->size() != 8 && st->size() != 9)) return std::nullopt;
  auto version = int_of((*st)[0]);
  auto order = text_of((*st)[1], Kind::Str);
  if (!version || (*version != 3 && *version != 4) || !order || order->size() != 1) return std::nullopt;
  if (!is_none((*st)[2]) || !is_none((*st)[3]) || !is_none((*st)[4])) return std::nullopt;  // subarray / structured
  auto elsize = int_of((*st)[5]), alignment = int_of((*st)[6]), flags = int_of((*st)[7]);
  if (!elsize || !alignment || !flags || (*flags & 0x01) != 0) return std::nullopt;  // NPY_ITEM_HASOBJECT
  const char bo = (*order)[0];
  if (bo != '<' && bo != '>' && bo != '|' && bo != '=') return std::nullopt;
  if (d.kind == 'S' || d.kind == 'U' || d.kind == 'V') {  // flexible: state's elsize is the truth
    if (*elsize < 0 || *elsize > std::numeric_limits<std::uint32_t>::max() ||
        static_cast<std::uint32_t>(*elsize) != d.itemsize)
      return std::nullopt;
  }
  if (d.byteorder != '|' && (bo == '<' || bo == '>')) d.byteorder = bo;
  if (d.kind == 'M' || d.kind == 'm') {
    if (st->size() != 9) return std::nullopt;
    auto unit = datetime_unit((*st)[8]);
    if (!unit) return std::nullopt;
    d.unit = *unit;
  } else if (st->size() == 9) {
    // Version 4 carries a metadata dict for other dtypes; an empty one (or None) changes nothing.
    const Node* md = node_of((*st)[8]);
    if (!is_none((*st)[8]) && !(md && md->kind == Kind::Dict && std::get<Entries>(md->payload).empty()))
      return std::nullopt;
  }
  try {
    d.validate();
  } catch (const Error&) {
    return std::nullopt;
  }
  return d;
}

// ---------------------------------------------------------------- array data

[[noreturn]] void reject(const std::string& what, std::size_t offset) { throw UnpicklingError(what, offset); }

// Shape from a tuple of ints (or a single int). nullopt: not a shape at all (keep inert).
// Negative extents, too many dimensions and overflow are what numpy rejects: UnpicklingError.
std::optional<std::vector<std::int64_t>> shape_of(const Slot& s, std::size_t offset) {
  std::vector<std::int64_t> shape;
  if (auto single = int_of(s)) {
    shape.push_back(*single);
  } else if (const Items* items = tuple_items(s)) {
    if (items->size() > NDArray::kMaxDims)
      reject("numpy array with " + std::to_string(items->size()) + " dimensions (at most 64)", offset);
    shape.reserve(items->size());
    for (const Slot& d : *items) {
      auto v = int_of(d);
      if (!v) return std::nullopt;
      shape.push_back(*v);
    }
  } else {
    return std::nullopt;
  }
  for (auto d : shape)
    if (d < 0) reject("numpy array shape has a negative dimension", offset);
  return shape;
}

std::string describe(const std::vector<std::int64_t>& shape, const DType& dtype) {
  std::string s = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  if (shape.size() == 1) s += ",";
  return s + ") of " + dtype.str();
}

// Byte size of `shape` x dtype; UnpicklingError on overflow (a hostile shape).
std::uint64_t expected_bytes(const std::vector<std::int64_t>& shape, const DType& dtype, std::size_t offset) {
  std::uint64_t n = dtype.itemsize;
  for (auto d : shape)
    if (__builtin_mul_overflow(n, static_cast<std::uint64_t>(d), &n) || n > (std::uint64_t(1) << 62))
      reject("numpy array " + describe(shape, dtype) + " is too large", offset);
  return n;
}

// The array's data as a Buffer. Out-of-band: the delivered Buffer itself (zero copy). In-band
// bytes/bytearray: a view of the stream (kept alive by the graph) when it is aligned for the dtype,
// else an aligned copy (typed access needs alignment; see docs/ndarray.md). `writable_copy`: the
// copy is writable (numpy's arrays from bytearray and from _reconstruct are).
std::optional<Buffer> data_of(const Slot& s, const DType& dtype, bool writable_copy) {
  const Node* n = node_of(s);
  if (!n) return std::nullopt;
  if (n->kind == Kind::PickleBuffer) return n->buffer();
  if (n->kind != Kind::Bytes && n->kind != Kind::ByteArray) return std::nullopt;
  std::string_view bytes = std::get<Text>(n->payload).data;
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % dtype.alignment() == 0) return Buffer::wrap(bytes.data(), bytes.size());
  Buffer copy = Buffer::copy(bytes.data(), bytes.size(), /*readonly=*/!writable_copy);
  return copy;
}


std::optional<Slot> decode_frombuffer(Graph& graph, const Slot& args, std::size_t offset) {
  const Items* a = tuple_items(args);
  if (!a || (a->size() != 4 && a->size() != 5)) return std::nullopt;
  std::optional<DType> dtype;
  if (auto s = text_of((*a)[1], Kind::Str)) {
    try { dtype = DType::parse(*s); } catch (const Error&) { return std::nullopt; }
  } else {
    dtype = decode_dtype((*a)[1]);
  }
  if (!dtype || dtype->itemsize == 0) return std::nullopt;  // numpy's frombuffer refuses itemsize 0 too
  auto order = text_of((*a)[3], Kind::Str);
  if (!order || order->size() != 1) return std::nullopt;
  auto shape = shape_of((*a)[2], offset);
  if (!shape) return std::nullopt;

  // numpy 2's fifth argument: the buffer is C-ordered in `shape`, then transposed by axis_order.
  std::vector<std::int64_t> axes;
  const bool has_axes = a->size() == 5 && !is_none((*a)[4]);
  if (has_axes) {
    if (*order != "K") return std::nullopt;
    const Items* ax = tuple_items((*a)[4]);
    if (!ax) {
      const Node* l = node_of((*a)[4]);
      if (!l || l->kind != Kind::List) return std::nullopt;
      ax = &std::get<Items>(l->payload);
    }
    if (ax->size() != shape->size()) reject("numpy _frombuffer: axis order does not match the shape", offset);
    std::vector<bool> seen(shape->size(), false);
    for (const Slot& x : *ax) {
      auto v = int_of(x);
      if (!v) return std::nullopt;
      if (*v < 0 || static_cast<std::size_t>(*v) >= shape->size() || seen[*v])
        reject("numpy _frombuffer: axis order is not a permutation", offset);
      seen[*v] = true;
      axes.push_back(*v);
    }
  } else if (*order != "C" && *order != "F" && *order != "A") {
    return std::nullopt;
  }

  const bool writable = node_of((*a)[0]) && node_of((*a)[0])->kind == Kind::ByteArray;
  auto data = data_of((*a)[0], *dtype, writable);
  if (!data) return std::nullopt;
  const std::uint64_t need = expected_bytes(*shape, *dtype, offset);
  if (data->size() != need)
    reject("numpy _frombuffer: buffer of " + std::to_string(data->size()) + " bytes does not hold an array " +
               describe(*shape, *dtype) + " (" + std::to_string(need) + " bytes)",
           offset);

  Node* node = graph.new_node(Kind::NDArray);
  NDArray& arr = node->array();
  arr.dtype = *dtype;
  arr.data = std::move(*data);
  if (has_axes) {
    const auto c = NDArray::contiguous_strides(*shape, dtype->itemsize, Order::C);
    for (auto ax : axes) {
      arr.shape.push_back((*shape)[ax]);
      arr.strides.push_back(c[ax]);
    }
  } else {
    // reshape of a 1-d buffer with order 'A' is C order.
    arr.strides = NDArray::contiguous_strides(*shape, dtype->itemsize, *order == "F" ? Order::F : Order::C);
    arr.shape = std::move(*shape);
  }
  return node_slot(node);
}

// ---------------------------------------------------------------- writing nodes

struct Lowering {
  Graph& g;

  Slot none() { return Slot(); }
  Slot integer(std::int64_t v) { return int_slot(v); }
  Slot boolean(bool b) { return bool_slot(b); }
  Slot text(Kind k, std::string_view bytes, bool copy_into_graph) {
    Node* n = g.new_node(k);
    n->text().data = copy_into_graph ? g.store(bytes) : bytes;
    return node_slot(n);
  }
  Slot tuple(std::vector<Slot> items) {
    Node* n = g.new_node(Kind::Tuple);
    n->items().assign(items.begin(), items.end());
    return node_slot(n);
  }
  Slot global(std::string_view module, std::string_view name) {  // string literals: static storage
    Node* n = g.new_node(Kind::Global);
    n->global() = {module, name};
    return node_slot(n);
  }
  Slot reduce(Slot callable, Slot args) {
    Node* n = g.new_node(Kind::Object);
    ObjectData& o = n->object();
    o.form = ObjectForm::Reduce;
    o.callable = callable;
    o.args = args;
    return node_slot(n);
  }
  Slot shape(const std::vector<std::int64_t>& shape) {
    std::vector<Slot> items;
    items.reserve(shape.size());
    for (auto d : shape) items.push_back(integer(d));
    return tuple(std::move(items));
  }

  // numpy.dtype(code, False, True) with numpy's own BUILD state, so CPython + numpy restore it.
  Slot dtype(const DType& d) {
    std::string code(1, d.kind);
    code += std::to_string(d.kind == 'U' ? d.itemsize / 4 : d.itemsize);
    Slot obj = reduce(global("numpy", "dtype"), tuple({text(Kind::Str, code, true), boolean(false), boolean(true)}));
    const std::string_view order = d.byteorder == '<' ? "<" : d.byteorder == '>' ? ">" : "|";
    std::int64_t elsize = -1, alignment = -1, flags = 0;
    if (d.kind == 'S' || d.kind == 'V') elsize = d.itemsize, alignment = 1;
    if (d.kind == 'U') elsize = d.itemsize, alignment = 4, flags = 8;  // NPY_NEEDS_INIT, as numpy writes it
    std::vector<Slot> state = {integer(3), text(Kind::Str, order, false), none(), none(), none(),
                               integer(elsize), integer(alignment), integer(flags)};
    if (d.kind == 'M' || d.kind == 'm') {
      state[0] = integer(4);
      std::size_t digits = 0;
      while (digits < d.unit.size() && d.unit[digits] >= '0' && d.unit[digits] <= '9') ++digits;
      const std::int64_t count = digits ? std::stoll(d.unit.substr(0, digits)) : 1;
      const std::string base = d.unit.empty() ? "generic" : d.unit.substr(digits);
      Node* empty = g.new_node(Kind::Dict);
      state.push_back(tuple({node_slot(empty),
                             tuple({text(Kind::Bytes, base, true), integer(count), integer(1), integer(1)})}));
    }
    obj.node->object().states.push_back(tuple(std::move(state)));
    return obj;
  }
};

}  // namespace

// ---------------------------------------------------------------- public

std::optional<DType> decode_dtype(const Slot& s) {
  if (auto str = text_of(s, Kind::Str)) {
    try {
      return DType::parse(*str);
    } catch (const Error&) {
      return std::nullopt;
    }
  }
  const Node* n = node_of(s);
  if (!n || n->kind != Kind::Object) return std::nullopt;
  return dtype_from_object(*std::get<std::unique_ptr<ObjectData>>(n->payload));
}

std::optional<Slot> decode_reduce(Graph& graph, const GlobalName& callable, const Slot& args, std::size_t offset) {
  if (callable.name == "_frombuffer" && numpy_core_module(callable.module, "numeric"))
    return decode_frombuffer(graph, args, offset);
  return std::nullopt;  // dtype, _reconstruct (decoded at BUILD), scalar, ...: inert
}

bool decode_build(Graph&, Node& object, const Slot& state, std::size_t offset) {
  if (object.kind != Kind::Object) return false;
  const ObjectData& o = object.object();
  if (o.form != ObjectForm::Reduce || !o.states.empty() || !o.list_items.empty() || !o.dict_items.empty() ||
      !o.set_items.empty())
    return false;
  const Node* callable = node_of(o.callable);
  if (!callable || callable->kind != Kind::Global) return false;
  const auto& g = std::get<GlobalName>(callable->payload);
  if (g.name != "_reconstruct" || !numpy_core_module(g.module, "multiarray")) return false;
  const Items* args = tuple_items(o.args);
  if (!args || args->empty() || !is_ndarray_class((*args)[0])) return false;  // subclasses stay inert

  // numpy's ndarray.__setstate__: (version, shape, dtype, is_fortran, data) or the 4-tuple without version.
  const Items* st = tuple_items(state);
  if (!st || (st->size() != 5 && st->size() != 4)) return false;
  const std::size_t base = st->size() == 5 ? 1 : 0;
  if (base == 1) {
    auto version = int_of((*st)[0]);
    if (!version || *version != 1) return false;
  }
  auto dtype = decode_dtype((*st)[base + 1]);
  auto fortran = bool_of((*st)[base + 2]);
  if (!dtype || !fortran) return false;
  auto shape = shape_of((*st)[base], offset);
  if (!shape) return false;
  const Kind data_kind = kind_of((*st)[base + 3]);
  if (data_kind != Kind::Bytes && data_kind != Kind::ByteArray) return false;  // e.g. a list: object array
  auto data = data_of((*st)[base + 3], *dtype, /*writable_copy=*/true);
  if (!data) return false;
  const std::uint64_t need = expected_bytes(*shape, *dtype, offset);
  if (data->size() != need)
    reject("numpy ndarray state: " + std::to_string(data->size()) + " bytes of data for an array " +
               describe(*shape, *dtype) + " (" + std::to_string(need) + " bytes)",
           offset);

  auto arr = std::make_unique<NDArray>();
  arr->strides = NDArray::contiguous_strides(*shape, dtype->itemsize, *fortran ? Order::F : Order::C);
  arr->shape = std::move(*shape);
  arr->dtype = std::move(*dtype);
  arr->data = std::move(*data);
  // Convert in place: every memo entry and container slot that refers to this node now sees the array.
  object.kind = Kind::NDArray;
  object.payload = std::move(arr);
  return true;
}

Slot lower_ndarray(Graph& scratch, const NDArray& array, int protocol, CopyLedger* ledger, const Node** data_buffer) {
  if (data_buffer) *data_buffer = nullptr;
  try {
    array.validate();
  } catch (const Error& e) {
    throw PicklingError(std::string("cannot pickle the ndarray: ") + e.what());
  }
  Lowering w{scratch};
  // The bytes numpy reads back: C- or F-contiguous memory as it is, anything else copied to C order.
  Buffer bytes;
  bool fortran = false;
  if (array.is_c_contiguous()) {
    bytes = array.data.slice(static_cast<std::size_t>(array.offset), array.nbytes());
  } else if (array.is_f_contiguous()) {
    bytes = array.data.slice(static_cast<std::size_t>(array.offset), array.nbytes());
    fortran = true;
  } else {
    NDArray c = array.copy(Order::C);
    if (ledger) ledger->record_copy(CopyReason::non_contiguous, c.nbytes());
    bytes = array.readonly() ? c.data.as_readonly() : c.data;
    scratch.keep_alive(bytes);  // the in-band form views it until the pickler has written it
  }
  if (array.size() == 0) bytes = Buffer::copy("", 0, array.readonly());  // nothing to view; no null pointers

  if (protocol >= 5) {
    // numpy.core.numeric: numpy 1.x's path, which numpy 2 still resolves (numpy._core is absent
    // before 1.26). See docs/ndarray.md.
    Node* pb = scratch.new_node(Kind::PickleBuffer);
    pb->buffer() = bytes;
    if (data_buffer) *data_buffer = pb;
    return w.reduce(w.global("numpy.core.numeric", "_frombuffer"),
                    w.tuple({node_slot(pb), w.dtype(array.dtype), w.shape(array.shape),
                             w.text(Kind::Str, fortran ? "F" : "C", false)}));
  }
  Slot obj = w.reduce(w.global("numpy.core.multiarray", "_reconstruct"),
                      w.tuple({w.global("numpy", "ndarray"), w.tuple({w.integer(0)}), w.text(Kind::Bytes, "b", false)}));
  // The data bytes view the array's memory: the pickler copies them once, into the stream.
  Slot data = w.text(Kind::Bytes, bytes.chars(), false);
  obj.node->object().states.push_back(
      w.tuple({w.integer(1), w.shape(array.shape), w.dtype(array.dtype), w.boolean(fortran), data}));
  return obj;
}

}  // namespace picklewire::numpy
