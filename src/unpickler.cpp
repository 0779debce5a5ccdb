// The pickle virtual machine: protocols 0-5, every opcode of pickletools.opcodes, into an inert
// Value graph. Shaped like CPython's _pickle.c (one switch, a value stack with a mark stack and a
// fence beside it, a memo), with its error messages where it has them. Nothing recurses: the
// machine is a loop over opcodes, and the graph it builds is owned by an arena.
//
// Hostile input: every length prefix is compared with the remaining input before anything is
// allocated; the memo is dense only for indices below the stream length (sparse above), so a tiny
// stream cannot force a huge table; depth, memo and node counts are bounded by UnpicklerOptions.
#include <algorithm>
#include <bit>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <iterator>
#include <optional>
#include <string>
#include <tuple>
#include <unordered_map>

#include "graph.hpp"
#include "opcodes.hpp"
#include "picklewire/unpickler.hpp"
#include "builtin_reductions.hpp"
#include "fix_imports.hpp"
#include "numpy_reductions.hpp"
#include "unpickler_scratch.hpp"
#include "unpickler_text.hpp"

namespace picklewire {

namespace {

using namespace unpickler_detail;


class Machine {
 public:
  Machine(const Buffer& stream, std::span<const Buffer> buffers, const UnpicklerOptions& options)
      : stack_(std::move((*scratch_).stack)),
        marks_(std::move((*scratch_).marks)),
        memo_(std::move((*scratch_).memo)),
        options_(options),
        buffers_(buffers),
        graph_(std::make_shared<Graph>()),
        base_(reinterpret_cast<const unsigned char*>(stream.data())),
        end_(stream.size()),
        dense_memo_limit_(std::min<std::size_t>(stream.size() + 16, options.max_memo_entries)),
        memo_append_end_(dense_memo_limit_) {
    graph_->keep_alive(stream);
  }
  ~Machine() {  // the scratch goes back to the lease, for this thread's next load
    Scratch& scratch = *scratch_;
    scratch.stack = std::move(stack_);
    scratch.marks = std::move(marks_);
    scratch.memo = std::move(memo_);
  }
  Machine(const Machine&) = delete;
  Machine& operator=(const Machine&) = delete;

  Value run() {
    graph_->limit_nodes(options_.max_nodes);
    try {
      Value result = execute();
      result.graph()->limit_nodes(SIZE_MAX);  // the loaded graph has no limit of its own
      return result;
    } catch (const NodeLimitReached&) {
      fail("too many objects (max_nodes " + std::to_string(options_.max_nodes) + ")");
    }
  }

 private:
  Value execute();  // the loop over opcodes

  [[noreturn, gnu::cold, gnu::noinline]] void fail(const std::string& what) const {
    throw UnpicklingError(what, op_offset_);
  }

  // ---- input
  std::size_t remaining() const { return end_ - pos_; }
  void need(std::uint64_t n) const {
    if (n > remaining()) fail("pickle data was truncated");
  }
  std::string_view take(std::uint64_t n) {
    need(n);
    std::string_view v(reinterpret_cast<const char*>(base_ + pos_), static_cast<std::size_t>(n));
    pos_ += static_cast<std::size_t>(n);
    return v;
  }
  std::uint64_t read_le(int n) {
    need(static_cast<std::uint64_t>(n));
    const unsigned char* p = base_ + pos_;
    pos_ += static_cast<std::size_t>(n);
    if constexpr (std::endian::native == std::endian::little) {
      switch (n) {
        case 1: return p[0];
        case 2: return std::uint64_t(p[0]) | std::uint64_t(p[1]) << 8;
        case 4: {
          std::uint32_t v;
          std::memcpy(&v, p, 4);
          return v;
        }
        case 8: {
          std::uint64_t v;
          std::memcpy(&v, p, 8);
          return v;
        }
        default: break;
      }
    }
    std::uint64_t v = 0;
    for (int i = 0; i < n; ++i) v |= std::uint64_t(p[i]) << (8 * i);
    return v;
  }
  // Superinstructions: true (and the opcode consumed, op_offset_ at it for error messages) when
  // the next opcode is `code`, so a case can handle the pairs and runs picklers always write
  // (str + MEMOIZE, runs of BININT) without a trip through the dispatch for each.
  bool next_is(unsigned char code) {
    if (pos_ < end_ && base_[pos_] == code) [[likely]] {
      op_offset_ = pos_++;
      return true;
    }
    return false;
  }
  // BININT / BININT1 / BININT2 (`Width` bytes each), with pos_ just past the opcode. A list of
  // ints is a run of the same opcode: count the complete ones, make room on the stack once and
  // decode them in a tight loop, instead of a trip through the dispatch and a capacity check per
  // int. A truncated last one is left for the dispatch to read (and report) as usual.
  template <int Width>
  void push_int_run() {
    constexpr std::size_t stride = 1 + Width;
    const std::size_t start = pos_ - 1;
    const unsigned char* p = base_ + start;
    const unsigned char code = p[0];
    const std::size_t complete = (end_ - start) / stride;
    std::size_t n = 0;
    while (n < complete && p[n * stride] == code) ++n;
    if (n == 0) need(Width);  // not even the first is complete: fails
    Item* out = stack_.extend(n);
    for (std::size_t i = 0; i < n; ++i, p += stride) {
      std::int64_t v;
      if constexpr (Width == 4) {  // (compiles to one load on little-endian machines)
        const std::uint32_t u = std::uint32_t(p[1]) | std::uint32_t(p[2]) << 8 | std::uint32_t(p[3]) << 16 |
                                std::uint32_t(p[4]) << 24;
        v = static_cast<std::int32_t>(u);
      } else if constexpr (Width == 2) {
        v = std::int64_t(p[1]) | std::int64_t(p[2]) << 8;
      } else {
        v = p[1];
      }
      out[i].slot = int_slot(v);
      out[i].depth = 0;
    }
    op_offset_ = start + (n - 1) * stride;
    pos_ = start + n * stride;
  }
  // One line without its '\n'.
  std::string_view readline() {
    const void* nl = std::memchr(base_ + pos_, '\n', remaining());
    if (!nl) fail("pickle data was truncated");
    std::size_t len = static_cast<std::size_t>(static_cast<const unsigned char*>(nl) - (base_ + pos_));
    std::string_view v(reinterpret_cast<const char*>(base_ + pos_), len);
    pos_ += len + 1;
    return v;
  }

  // ---- graph
  // (max_nodes: the graph throws NodeLimitReached, which run() reports.)
  Node* make(Kind k) { return graph_->new_node(k); }
  [[gnu::always_inline]] Slot text(Kind k, std::string_view data) { return Slot(k, graph_->new_text_node(k, data)); }
  enum class Py2Encoding { ascii, latin1, utf8, bytes, unknown };
  static Py2Encoding parse_encoding(std::string_view name) {
    std::string n;
    for (char c : name) n += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c == '_' ? '-' : c);
    if (n == "ascii" || n == "us-ascii") return Py2Encoding::ascii;
    if (n == "latin1" || n == "latin-1" || n == "iso-8859-1" || n == "iso8859-1") return Py2Encoding::latin1;
    if (n == "utf-8" || n == "utf8") return Py2Encoding::utf8;
    if (n == "bytes") return Py2Encoding::bytes;
    return Py2Encoding::unknown;
  }
  // A Python 2 str payload, decoded per options.encoding. `view`: body lives in the stream.
  Slot py2_string(std::string_view body, bool view);
  Slot int_from_le(std::string_view le, bool viewable);
  Slot decimal_int(std::string_view digits, bool big_allowed);
  Slot global(std::string_view module, std::string_view name, bool from_stream);
  Slot reduce(const Item& callable, const Item& args);
  Slot newobj(ObjectForm form, const Slot& cls, const Slot& args, const Slot& kwargs);
  Slot instantiate(ObjectForm form, const Slot& cls, const Slot& args);
  Slot object(ObjectForm form, const Slot& callable, const Slot& args, const Slot& kwargs);

  // ---- stack
  std::size_t fence() const { return marks_.empty() ? 0 : marks_.back(); }
  [[noreturn]] void underflow() const {
    fail(marks_.empty() ? "unpickling stack underflow" : "unexpected MARK found");
  }
  [[gnu::always_inline]] void push(Slot s, std::uint32_t depth = 0) { stack_.push(s, depth); }
  Item pop() {
    if (stack_.size() <= fence()) underflow();
    Item it = stack_.back();
    stack_.pop_back();
    return it;
  }
  Item& top() {
    if (stack_.size() <= fence()) underflow();
    return stack_.back();
  }
  std::size_t marker() {
    if (marks_.empty()) fail("could not find MARK");
    std::size_t k = marks_.back();
    marks_.pop_back();
    return k;
  }
  std::uint32_t checked_depth(std::uint64_t d) const {
    if (d > options_.max_depth) fail("nesting depth exceeds max_depth (" + std::to_string(options_.max_depth) + ")");
    return static_cast<std::uint32_t>(d);
  }
  // Appends the slots of stack_[from, end) to `out` in one range insert and returns the deepest
  // nesting among them. (push_back per item costs a capacity check and a constructor call each;
  // resize + assign value-initialises every slot first: both were a quarter of loading a list of
  // ints. Callgrind: 23 instructions an item with resize + assign, 14 with this.)
  std::uint32_t append_slots(Items& out, std::size_t from) {
    const std::size_t n = stack_.size() - from;
    const Item* items = stack_.data() + from;  // (not &stack_[from]: binding a reference to null is undefined, and an empty container's stack may be unallocated)
    out.insert(out.end(), SlotIterator{items}, SlotIterator{items + n});
    return deepest_of(items, n);
  }
  // The largest depth among n items: four independent maxima, not one chain of dependent compares.
  static std::uint32_t deepest_of(const Item* items, std::size_t n) {
    std::uint32_t d[4] = {0, 0, 0, 0};
    std::size_t i = 0;
    for (; i + 4 <= n; i += 4)
      for (int k = 0; k < 4; ++k) d[k] = std::max(d[k], items[i + k].depth);
    for (; i < n; ++i) d[0] = std::max(d[0], items[i].depth);
    return std::max(std::max(d[0], d[1]), std::max(d[2], d[3]));
  }
  // Moves stack_[from, end) into a new container node of `kind` and returns it (not pushed).
  Item collect(Kind kind, std::size_t from) {
    Node* n = make(kind);
    Items& items = n->items();
    items.reserve(stack_.size() - from);
    const std::uint32_t depth = append_slots(items, from);
    stack_.resize(from);
    return {node_slot(n), checked_depth(std::uint64_t(depth) + 1)};
  }
  // The size a container that has just grown to `size` by a batch of `batch` items (entries for a
  // dict) is likely to reach when another batch follows (CPython writes big containers as batches
  // of 1000): the rest of the stream is taken to hold more items at this batch's density, up to
  // kMaxReserveAhead times `size`. Reserving that at once instead of doubling batch by batch spares
  // relocating a big list or dict several times over.
  std::size_t expected_size(std::size_t size, std::size_t batch) const;
  // The opcode after the batch just taken (past a FRAME header) is a MARK: another batch follows.
  bool batch_follows() const {
    const std::size_t next = pos_ < end_ && base_[pos_] == op::FRAME ? pos_ + 9 : pos_;
    return next < end_ && base_[next] == op::MARK;
  }
  // Room for a batch of `more` items (entries for a dict), growing geometrically:
  // APPENDS / SETITEMS arrive in batches of 1000, and reserving the exact size per batch would copy
  // the whole container each time (quadratic); or to expected_size() when that is larger.
  template <class Vector>
  void grow(Vector& v, std::size_t more) {
    const std::size_t need = v.size() + more;
    if (need <= v.capacity()) return;
    v.reserve(std::max({need, v.capacity() * 2, batch_follows() ? expected_size(need, more) : need}));
  }
  void move_items(std::size_t target, std::size_t from, Kind container, const char* opcode, const char* wanted);
  void append_items(std::size_t target, std::size_t from) { move_items(target, from, Kind::List, "APPEND", "a list"); }
  void set_items(std::size_t target, std::size_t from);
  void add_items(std::size_t target, std::size_t from) { move_items(target, from, Kind::Set, "ADDITEMS", "a set"); }

  // ---- memo
  void memo_put(std::uint64_t index, const Item& it);
  void store_memo(std::uint64_t index, const Item& it);  // memo_put's work
  // MEMOIZE: the next index, so almost always one past the dense part: append, without memo_put's
  // checks and without pre-filling empty entries.
  [[gnu::always_inline]] void memoize(const Item& it) {
    if (memo_count_ < memo_append_end_) [[likely]] {
      memo_.push(it.slot, it.depth);
      ++memo_count_;
      return;
    }
    memo_put(memo_count_, it);
  }
  const Item& memo_get(std::uint64_t index);

  // The stack, marks and memo are the lease's, moved into the machine for the load (members, not
  // references: one load less on every push) and moved back by ~Machine.
  ScratchLease scratch_;  // first: destroyed last, after ~Machine has handed the scratch back
  ItemStack stack_;
  std::vector<std::size_t> marks_;
  ItemStack memo_;  // dense part (see memo_put)
  const UnpicklerOptions& options_;
  std::span<const Buffer> buffers_;
  std::size_t next_buffer_ = 0;
  std::shared_ptr<Graph> graph_;
  const unsigned char* base_;
  std::size_t end_;
  std::size_t pos_ = 0;
  std::size_t op_offset_ = 0;
  std::size_t last_mark_offset_ = 0;  // stream offset of the latest MARK (expected_size)
  int proto_ = 0;
  std::unordered_map<std::uint64_t, Item> sparse_memo_;
  std::size_t memo_count_ = 0;  // entries stored (MEMOIZE's next index, as in CPython)
  std::size_t dense_memo_limit_;
  // memoize() appends while memo_count_ is below this: dense_memo_limit_ while the memo is dense
  // without gaps (memo_count_ == memo_.size()) and nothing is sparse, else 0. memo_put keeps it.
  std::size_t memo_append_end_;
  std::optional<Py2Encoding> py2_encoding_;  // options_.encoding, parsed at the first Python 2 str
};

Slot Machine::py2_string(std::string_view body, bool view) {
  auto keep = [&](std::string_view b) { return view ? b : graph_->store(b); };
  std::size_t bad;
  if (!py2_encoding_) py2_encoding_ = parse_encoding(options_.encoding);  // only Python 2 streams need it
  switch (*py2_encoding_) {
    case Py2Encoding::bytes: return text(Kind::Bytes, keep(body));
    case Py2Encoding::ascii:
      if (!is_ascii(body, &bad)) fail(ascii_error(body, bad));
      return text(Kind::Str, keep(body));
    case Py2Encoding::utf8:
      if (!valid_utf8(body, /*surrogates=*/false, &bad)) fail(utf8_error(body, bad));
      return text(Kind::Str, keep(body));
    case Py2Encoding::latin1: {
      if (is_ascii(body, &bad)) return text(Kind::Str, keep(body));
      std::string utf8;
      utf8.reserve(body.size() * 2);
      for (char c : body) append_utf8(utf8, static_cast<unsigned char>(c));
      return text(Kind::Str, graph_->store(utf8));
    }
    case Py2Encoding::unknown: break;
  }
  fail("unknown encoding: " + options_.encoding);
}

// ---------------------------------------------------------------- memo

// The memo is a vector for the dense indices picklers write (0, 1, 2, ...) and a hash map for
// the rest, so its memory follows the entries actually stored, never a hostile index (CPython's C
// unpickler sizes its table by the largest index).
void Machine::memo_put(std::uint64_t index, const Item& it) {
  store_memo(index, it);
  memo_append_end_ = memo_count_ == memo_.size() && sparse_memo_.empty() ? dense_memo_limit_ : 0;
}

void Machine::store_memo(std::uint64_t index, const Item& it) {
  if (index >= options_.max_memo_entries)
    fail("memo index " + std::to_string(index) + " exceeds max_memo_entries (" +
         std::to_string(options_.max_memo_entries) + ")");
  std::size_t dense_bound = std::min(dense_memo_limit_, 2 * memo_count_ + 1024);
  if (index < memo_.size() || index < dense_bound) {
    if (index >= memo_.size()) {
      // At least 32 entries at once: a small stream's few MEMOIZEs then resize the memo once.
      std::size_t grow_to = std::max<std::size_t>({static_cast<std::size_t>(index) + 1, memo_.size() * 2, 32});
      Item empty;
      empty.depth = kEmptyMemo;
      memo_.resize(std::max<std::size_t>(static_cast<std::size_t>(index) + 1, std::min(grow_to, dense_bound)), empty);
    }
    Item& slot = memo_[static_cast<std::size_t>(index)];
    if (slot.depth == kEmptyMemo && (sparse_memo_.empty() || sparse_memo_.erase(index) == 0)) ++memo_count_;
    copy_slot(slot.slot, it.slot);  // `it` is usually the item push() has just written
    slot.depth = it.depth;
    return;
  }
  auto [where, inserted] = sparse_memo_.insert_or_assign(index, it);
  (void)where;
  if (inserted) ++memo_count_;
}

const Item& Machine::memo_get(std::uint64_t index) {
  if (index < memo_.size() && memo_[static_cast<std::size_t>(index)].depth != kEmptyMemo)
    return memo_[static_cast<std::size_t>(index)];
  if (!sparse_memo_.empty()) {
    auto where = sparse_memo_.find(index);
    if (where != sparse_memo_.end()) return where->second;
  }
  fail("Memo value not found at index " + std::to_string(index));
}

// ---------------------------------------------------------------- ints

Slot Machine::int_from_le(std::string_view le, bool viewable) { return picklewire::int_from_le(*graph_, le, viewable); }

// Protocol-0 INT / LONG / GET arguments: an optional sign and decimal digits, of any size up to
// max_decimal_int_digits (the conversion is quadratic).
Slot Machine::decimal_int(std::string_view s, bool big_allowed) {
  bool negative = false;
  std::string_view digits = s;
  if (!digits.empty() && (digits[0] == '-' || digits[0] == '+')) {
    negative = digits[0] == '-';
    digits.remove_prefix(1);
  }
  if (digits.empty() || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
    fail("could not convert string to int");
  while (digits.size() > 1 && digits[0] == '0') digits.remove_prefix(1);
  if (digits.size() <= 18) {
    std::int64_t v = 0;
    for (char c : digits) v = v * 10 + (c - '0');
    return int_slot(negative ? -v : v);
  }
  if (!big_allowed) fail("could not convert string to int");
  if (digits.size() > options_.max_decimal_int_digits)
    fail("int literal of " + std::to_string(digits.size()) + " digits exceeds max_decimal_int_digits (" +
         std::to_string(options_.max_decimal_int_digits) + ")");
  std::string le = decimal_to_le_twos_complement(digits, negative);
  return int_from_le(le, false);
}

// ---------------------------------------------------------------- globals and reductions

Slot Machine::global(std::string_view module, std::string_view name, bool from_stream) {
  if (from_stream) {
    std::size_t bad;
    if (!valid_utf8(module, /*surrogates=*/false, &bad) || !valid_utf8(name, false, &bad))
      fail("'utf-8' codec can't decode global name");
  }
  if (proto_ < 3) std::tie(module, name) = fix_imports::python3_name(module, name);  // Python 2 names
  if (options_.find_class && !options_.find_class(module, name))
    fail("global '" + std::string(module) + "." + std::string(name) + "' is forbidden");
  Node* n = make(Kind::Global);
  n->global() = {module, name};
  return node_slot(n);
}

Slot Machine::object(ObjectForm form, const Slot& callable, const Slot& args, const Slot& kwargs) {
  Node* n = make(Kind::Object);
  ObjectData& o = n->object();
  o.form = form;
  o.callable = callable;
  o.args = args;
  o.kwargs = kwargs;
  return node_slot(n);
}

// REDUCE: what CPython refuses fails here; builtins and numpy's reductions decode to native
// values; the rest stays an inert Object node.
Slot Machine::reduce(const Item& callable, const Item& args) {
  const Slot& c = callable.slot;
  const Slot& a = args.slot;
  builtin_reductions::check_reduce(c, a, op_offset_);
  if (options_.decode_reductions && !c.is_inline && c.node->kind == Kind::Global) {
    const GlobalName& g = c.node->global();
    if (g.module.starts_with("numpy")) {
      if (std::optional<Slot> decoded = numpy::decode_reduce(*graph_, g, a, op_offset_)) return *decoded;
    } else if (std::optional<Slot> decoded = builtin_reductions::decode_reduce(*graph_, g, a, op_offset_)) {
      return *decoded;
    }
  }
  return object(ObjectForm::Reduce, c, a, Slot());
}

// NEWOBJ / NEWOBJ_EX (kwargs None for NEWOBJ), the same way.
Slot Machine::newobj(ObjectForm form, const Slot& cls, const Slot& args, const Slot& kwargs) {
  builtin_reductions::check_newobj(form, cls, args, kwargs, op_offset_);
  if (options_.decode_reductions && !cls.is_inline && cls.node->kind == Kind::Global) {
    if (std::optional<Slot> decoded = builtin_reductions::decode_newobj(*graph_, cls.node->global(), args, kwargs, op_offset_))
      return *decoded;
  }
  return object(form, cls, args, kwargs);
}

// INST / OBJ (`args` a tuple): pickle's _instantiate, cls.__new__(cls) for a class without
// arguments and cls(*args) otherwise, judged and decoded the same ways.
Slot Machine::instantiate(ObjectForm form, const Slot& cls, const Slot& args) {
  builtin_reductions::check_reduce(cls, args, op_offset_);
  if (options_.decode_reductions && !cls.is_inline && cls.node->kind == Kind::Global) {
    const GlobalName& g = cls.node->global();
    std::optional<Slot> decoded = args.node->items().empty()
                                      ? builtin_reductions::decode_newobj(*graph_, g, args, Slot(), op_offset_)
                                      : builtin_reductions::decode_reduce(*graph_, g, args, op_offset_);
    if (decoded) return *decoded;
  }
  return object(form, cls, args, Slot());
}

// ---------------------------------------------------------------- containers

// How many times its current size a container may be reserved ahead on an estimate. Bounds what
// a misleading (or hostile) stream can make the loader reserve to 4x what it actually holds.
constexpr std::size_t kMaxReserveAhead = 4;

std::size_t Machine::expected_size(std::size_t size, std::size_t batch) const {
  if (batch == 0) return size;
  const std::size_t batch_bytes = pos_ - last_mark_offset_;  // MARK ... APPENDS (or the nearest MARK)
  const std::size_t bytes_per_item = std::max<std::size_t>(1, batch_bytes / batch);
  return std::min(size + (end_ - pos_) / bytes_per_item, size * kMaxReserveAhead);
}

// APPEND(S) into a list (or an object's list items) and ADDITEMS into a set (or an object's set
// items): moves stack_[from, end) into the target at stack_[target - 1].
void Machine::move_items(std::size_t target, std::size_t from, Kind container, const char* opcode, const char* wanted) {
  if (target == 0 || target > stack_.size()) underflow();
  Item& t = stack_[target - 1];
  Items* out = nullptr;
  if (!t.slot.is_inline && t.slot.node->kind == container) out = &t.slot.node->items();
  else if (!t.slot.is_inline && t.slot.node->kind == Kind::Object)
    out = container == Kind::List ? &t.slot.node->object().list_items : &t.slot.node->object().set_items;
  else fail(std::string(opcode) + " target is not " + wanted + " but " + std::string(to_string(kind_of(t.slot))));
  grow(*out, stack_.size() - from);
  const bool any = from < stack_.size();
  const std::uint32_t deepest = append_slots(*out, from);
  if (any) t.depth = std::max(t.depth, checked_depth(std::uint64_t(deepest) + 1));
  stack_.resize(from);
}

void Machine::set_items(std::size_t target, std::size_t from) {
  if (target == 0 || target > stack_.size()) underflow();
  if ((stack_.size() - from) % 2 != 0) fail("odd number of items for SETITEMS");
  Item& t = stack_[target - 1];
  Entries* out = nullptr;
  if (!t.slot.is_inline && t.slot.node->kind == Kind::Dict) out = &t.slot.node->entries();
  else if (!t.slot.is_inline && t.slot.node->kind == Kind::Object) out = &t.slot.node->object().dict_items;
  else fail("SETITEM target is not a dict but " + std::string(to_string(kind_of(t.slot))));
  grow(*out, (stack_.size() - from) / 2);
  std::uint32_t deepest = 0;
  for (std::size_t i = from; i < stack_.size(); i += 2) {
    out->emplace_back(stack_[i].slot, stack_[i + 1].slot);
    deepest = std::max({deepest, stack_[i].depth, stack_[i + 1].depth});
  }
  if (from < stack_.size()) t.depth = std::max(t.depth, checked_depth(std::uint64_t(deepest) + 1));
  stack_.resize(from);
}

// ---------------------------------------------------------------- the loop

Value Machine::execute() {
  for (;;) {
    op_offset_ = pos_;
    if (pos_ >= end_) fail("Ran out of input");
    const unsigned char code = base_[pos_++];
    switch (code) {
      case op::MARK:
        if (marks_.size() >= options_.max_depth)
          fail("nesting depth exceeds max_depth (" + std::to_string(options_.max_depth) + ")");
        marks_.push_back(stack_.size());
        last_mark_offset_ = op_offset_;
        break;
      case op::STOP: {
        Item result = pop();
        return Value(result.slot, std::move(graph_));  // the machine is done with it: no atomic increment + decrement
      }
      case op::POP:
        if (!marks_.empty() && marks_.back() == stack_.size()) marks_.pop_back();
        else pop();
        break;
      case op::POP_MARK: stack_.resize(marker()); break;
      case op::DUP: {
        Item t = top();
        stack_.push_back(t);
        break;
      }
      case op::FLOAT: {
        std::string_view line = readline();
        double d;
        if (!parse_python_float(line, d)) fail("could not convert string to float");
        push(float_slot(d));
        break;
      }
      case op::INT: {
        std::string_view line = readline();
        if (line == "00") push(bool_slot(false));
        else if (line == "01") push(bool_slot(true));
        else push(decimal_int(line, true));
        break;
      }
      // A list of ints is a run of the same opcode: take the run here rather than through the
      // dispatch's indirect jump once per int (next_is, below).
      case op::BININT: push_int_run<4>(); break;
      case op::BININT1: push_int_run<1>(); break;
      case op::BININT2: push_int_run<2>(); break;
      case op::LONG: {
        std::string_view line = readline();
        if (!line.empty() && line.back() == 'L') line.remove_suffix(1);
        push(decimal_int(line, true));
        break;
      }
      case op::NONE: push(Slot()); break;
      case op::NEWTRUE: push(bool_slot(true)); break;
      case op::NEWFALSE: push(bool_slot(false)); break;
      case op::PERSID:
      case op::BINPERSID: {
        Slot pid;
        if (code == op::PERSID) {
          std::string_view line = readline();
          if (!std::all_of(line.begin(), line.end(), [](char ch) { return static_cast<unsigned char>(ch) < 0x80; }))
            fail("persistent IDs in protocol 0 must be ASCII strings");
          pid = text(Kind::Str, line);
        } else {
          pid = pop().slot;
        }
        if (!options_.persistent_load)
          fail("A load persistent id instruction was encountered, but no persistent_load function was specified.");
        Value loaded = options_.persistent_load(Value(pid, graph_));
        push(graph_->adopt(loaded), 1);
        break;
      }
      case op::REDUCE: {
        Item args = pop();
        Item callable = pop();
        push(reduce(callable, args), checked_depth(std::uint64_t(std::max(args.depth, callable.depth)) + 1));
        break;
      }
      case op::STRING: {
        std::string_view line = readline();
        if (line.size() < 2 || line.front() != line.back() || (line.front() != '\'' && line.front() != '"'))
          fail("the STRING opcode argument must be quoted");
        std::string_view body = line.substr(1, line.size() - 2);
        std::string decoded;
        std::string error;
        bool escaped = body.find('\\') != std::string_view::npos;
        if (escaped) {
          if (!python_escape_decode(body, decoded, error)) fail(error);
          body = decoded;
        }
        push(py2_string(body, !escaped));
        break;
      }
      case op::BINSTRING:
      case op::SHORT_BINSTRING: {
        std::int64_t n = code == op::BINSTRING ? static_cast<std::int32_t>(static_cast<std::uint32_t>(read_le(4)))
                                               : static_cast<std::int64_t>(read_le(1));
        if (n < 0) fail("BINSTRING pickle has negative byte count");
        push(py2_string(take(static_cast<std::uint64_t>(n)), true));
        break;
      }
      case op::UNICODE: {
        std::string_view line = readline();
        bool plain = std::all_of(line.begin(), line.end(),
                                 [](char ch) { return ch != '\\' && static_cast<unsigned char>(ch) < 0x80; });
        if (plain) {
          push(text(Kind::Str, line));
        } else {
          std::string decoded, error;
          if (!raw_unicode_escape_decode(line, decoded, error)) fail(error);
          push(text(Kind::Str, graph_->store(decoded)));
        }
        break;
      }
      case op::BINUNICODE:
      case op::SHORT_BINUNICODE:
      case op::BINUNICODE8: {
        std::uint64_t n = read_le(code == op::SHORT_BINUNICODE ? 1 : code == op::BINUNICODE ? 4 : 8);
        std::string_view body = take(n);
        std::size_t bad;
        if (!valid_utf8(body, /*surrogates=*/true, &bad)) fail(utf8_error(body, bad));
        const Slot str = text(Kind::Str, body);
        push(str);
        if (next_is(op::MEMOIZE)) memoize(Item{str, 0});  // a protocol-4+ str is memoised at once
        break;
      }
      case op::BINBYTES:
      case op::SHORT_BINBYTES:
      case op::BINBYTES8: {
        std::uint64_t n = read_le(code == op::SHORT_BINBYTES ? 1 : code == op::BINBYTES ? 4 : 8);
        push(text(Kind::Bytes, take(n)));
        break;
      }
      case op::BYTEARRAY8: {
        std::uint64_t n = read_le(8);
        push(text(Kind::ByteArray, take(n)));
        break;
      }
      case op::NEXT_BUFFER: {
        if (next_buffer_ >= buffers_.size()) fail("not enough out-of-band buffers");
        Node* n = make(Kind::PickleBuffer);
        n->buffer() = buffers_[next_buffer_++];
        push(node_slot(n));
        break;
      }
      case op::READONLY_BUFFER: {
        Item& t = top();
        Kind k = kind_of(t.slot);
        if (k == Kind::PickleBuffer) {
          if (!t.slot.node->buffer().readonly()) {
            Node* n = make(Kind::PickleBuffer);
            n->buffer() = t.slot.node->buffer().as_readonly();
            t.slot = node_slot(n);
          }
        } else if (k == Kind::ByteArray) {
          t.slot = text(Kind::Bytes, t.slot.node->text().data);
        } else if (k != Kind::Bytes) {
          fail("memoryview: a bytes-like object is required, not '" + std::string(to_string(k)) + "'");
        }
        break;
      }
      case op::APPEND: {
        std::size_t len = stack_.size();
        if (len <= fence()) underflow();
        append_items(len - 1, len - 1);
        break;
      }
      case op::APPENDS: {
        std::size_t k = marker();
        append_items(k, k);
        break;
      }
      case op::SETITEM: {
        std::size_t len = stack_.size();
        if (len < fence() + 2) underflow();
        set_items(len - 2, len - 2);
        break;
      }
      case op::SETITEMS: {
        std::size_t k = marker();
        set_items(k, k);
        break;
      }
      case op::ADDITEMS: {
        std::size_t k = marker();
        add_items(k, k);
        break;
      }
      case op::BUILD: {
        Item state = pop();
        Item& t = top();
        if (kind_of(t.slot) != Kind::Object)
          fail("BUILD target is not an object but " + std::string(to_string(kind_of(t.slot))));
        Node& obj = *t.slot.node;
        const Slot& callable = obj.object().callable;
        bool decoded = false;
        if (options_.decode_reductions && !callable.is_inline && callable.node->kind == Kind::Global &&
            callable.node->global().module.starts_with("numpy"))
          decoded = numpy::decode_build(*graph_, obj, state.slot, op_offset_);
        if (!decoded) obj.object().states.push_back(state.slot);
        t.depth = std::max(t.depth, checked_depth(std::uint64_t(state.depth) + 1));
        break;
      }
      case op::GLOBAL: {
        std::string_view module = readline();
        std::string_view name = readline();
        push(global(module, name, true));
        break;
      }
      case op::STACK_GLOBAL: {
        Item name = pop();
        Item module = pop();
        if (kind_of(name.slot) != Kind::Str || kind_of(module.slot) != Kind::Str) fail("STACK_GLOBAL requires str");
        push(global(module.slot.node->text().data, name.slot.node->text().data, false));
        break;
      }
      case op::INST: {
        std::size_t k = marker();
        std::string_view module = readline();
        std::string_view name = readline();
        Slot cls = global(module, name, true);
        Item args = collect(Kind::Tuple, k);
        push(instantiate(ObjectForm::Inst, cls, args.slot), args.depth);
        break;
      }
      case op::OBJ: {
        std::size_t k = marker();
        if (stack_.size() < k + 1) underflow();
        Item cls = stack_[k];
        Item args = collect(Kind::Tuple, k + 1);
        stack_.pop_back();
        push(instantiate(ObjectForm::Obj, cls.slot, args.slot), std::max(args.depth, checked_depth(cls.depth + 1ull)));
        break;
      }
      case op::NEWOBJ: {
        Item args = pop();
        Item cls = pop();
        push(newobj(ObjectForm::NewObj, cls.slot, args.slot, Slot()),
             checked_depth(std::uint64_t(std::max(args.depth, cls.depth)) + 1));
        break;
      }
      case op::NEWOBJ_EX: {
        Item kwargs = pop();
        Item args = pop();
        Item cls = pop();
        push(newobj(ObjectForm::NewObjEx, cls.slot, args.slot, kwargs.slot),
             checked_depth(std::uint64_t(std::max({args.depth, cls.depth, kwargs.depth})) + 1));
        break;
      }
      case op::DICT: {
        std::size_t k = marker();
        if ((stack_.size() - k) % 2 != 0) fail("odd number of items for DICT");
        Node* n = make(Kind::Dict);
        Entries& e = n->entries();
        e.reserve((stack_.size() - k) / 2);
        std::uint32_t depth = 0;
        for (std::size_t i = k; i < stack_.size(); i += 2) {
          e.emplace_back(stack_[i].slot, stack_[i + 1].slot);
          depth = std::max({depth, stack_[i].depth, stack_[i + 1].depth});
        }
        stack_.resize(k);
        push(node_slot(n), checked_depth(depth + 1ull));
        break;
      }
      case op::EMPTY_DICT: push(node_slot(make(Kind::Dict)), 1); break;
      case op::EMPTY_LIST: push(node_slot(make(Kind::List)), 1); break;
      case op::EMPTY_TUPLE: push(node_slot(make(Kind::Tuple)), 1); break;
      case op::EMPTY_SET: push(node_slot(make(Kind::Set)), 1); break;
      case op::LIST: {
        Item it = collect(Kind::List, marker());
        stack_.push_back(it);
        break;
      }
      case op::TUPLE: {
        Item it = collect(Kind::Tuple, marker());
        stack_.push_back(it);
        break;
      }
      case op::FROZENSET: {
        Item it = collect(Kind::FrozenSet, marker());
        stack_.push_back(it);
        break;
      }
      case op::TUPLE1:
      case op::TUPLE2:
      case op::TUPLE3: {
        std::size_t n = static_cast<std::size_t>(code - op::TUPLE1 + 1);
        if (stack_.size() < fence() + n) underflow();
        Item it = collect(Kind::Tuple, stack_.size() - n);
        stack_.push_back(it);
        break;
      }
      case op::GET: {
        std::string_view line = readline();
        Slot idx = decimal_int(line, false);
        if (idx.i < 0) fail("Memo value not found at index " + std::to_string(idx.i));
        Item it = memo_get(static_cast<std::uint64_t>(idx.i));
        stack_.push_back(it);
        break;
      }
      case op::BINGET:
      case op::LONG_BINGET: {
        Item it = memo_get(read_le(code == op::BINGET ? 1 : 4));
        stack_.push_back(it);
        break;
      }
      case op::PUT: {
        std::string_view line = readline();
        Slot idx = decimal_int(line, false);
        if (idx.i < 0) fail("negative PUT argument");
        memo_put(static_cast<std::uint64_t>(idx.i), top());
        break;
      }
      case op::BINPUT: {
        std::uint64_t idx = read_le(1);
        memo_put(idx, top());
        break;
      }
      case op::LONG_BINPUT: {
        std::uint64_t idx = read_le(4);
        memo_put(idx, top());
        break;
      }
      case op::MEMOIZE: memoize(top()); break;
      case op::EXT1:
      case op::EXT2:
      case op::EXT4: {
        std::int64_t ext = code == op::EXT4 ? static_cast<std::int32_t>(static_cast<std::uint32_t>(read_le(4)))
                                            : static_cast<std::int64_t>(read_le(code == op::EXT1 ? 1 : 2));
        if (ext <= 0) fail("EXT specifies code <= 0");
        auto where = options_.extensions.find(static_cast<std::int32_t>(ext));
        if (where == options_.extensions.end()) fail("unregistered extension code " + std::to_string(ext));
        push(global(graph_->store(where->second.first), graph_->store(where->second.second), false));
        break;
      }
      case op::PROTO: {
        std::uint64_t p = read_le(1);
        if (p > static_cast<std::uint64_t>(op::kHighestProtocol)) fail("unsupported pickle protocol: " + std::to_string(p));
        proto_ = static_cast<int>(p);
        break;
      }
      case op::FRAME: {
        std::uint64_t n = read_le(8);
        need(n);  // CPython checks the frame is complete; the opcodes inside are read as usual
        break;
      }
      case op::LONG1:
      case op::LONG4: {
        std::int64_t n = code == op::LONG1 ? static_cast<std::int64_t>(read_le(1))
                                           : static_cast<std::int32_t>(static_cast<std::uint32_t>(read_le(4)));
        if (n < 0) fail("LONG pickle has negative byte count");
        push(int_from_le(take(static_cast<std::uint64_t>(n)), true));
        break;
      }
      case op::BINFLOAT: {
        std::uint64_t be = read_le(8);
        std::uint64_t bits = 0;
        for (int i = 0; i < 8; ++i) bits |= ((be >> (8 * i)) & 0xff) << (8 * (7 - i));
        double d;
        std::memcpy(&d, &bits, sizeof d);
        push(float_slot(d));
        break;
      }
      default: {
        char buf[32];
        if (code >= 0x20 && code <= 0x7e && code != '\'' && code != '\\')
          std::snprintf(buf, sizeof buf, "invalid load key, '%c'.", code);
        else
          std::snprintf(buf, sizeof buf, "invalid load key, '\\x%02x'.", code);
        fail(buf);
      }
    }
  }
}

}  // namespace

Value load(const Buffer& stream, std::span<const Buffer> buffers, const UnpicklerOptions& options) {
  Machine machine(stream, buffers, options);
  return machine.run();
}

std::function<bool(std::string_view, std::string_view)> allow_globals(std::vector<std::string> allowed) {
  return [allowed = std::move(allowed)](std::string_view module, std::string_view qualname) {
    for (const std::string& entry : allowed) {
      std::string_view e = entry;
      std::size_t dot = e.size() >= 2 && e.ends_with(".*") ? e.size() - 2 : std::string_view::npos;
      if (dot != std::string_view::npos) {
        if (e.substr(0, dot) == module) return true;
      } else if (e.size() == module.size() + 1 + qualname.size() && e.starts_with(module) &&
                 e[module.size()] == '.' && e.substr(module.size() + 1) == qualname) {
        return true;
      }
    }
    return false;
  };
}

}  // namespace picklewire
