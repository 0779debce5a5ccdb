// The pickler: a Value graph -> a pickle stream, protocols 2-5, byte-identical to CPython's C
// pickler (Modules/_pickle.c) for builtin types. See docs/pickler.md for the rules it follows.
//
// The walk is iterative: an explicit stack of frames replaces CPython's recursive save(), so a
// graph nested a million deep is written without touching the C++ stack. A frame either saves one
// value (Op::Save) or continues a container after one of its children was saved.
#include <algorithm>
#include <bit>
#include <cmath>
#include <cstring>
#include <new>
#include <list>
#include <memory>
#include <string>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include "builtin_reductions.hpp"
#include "fix_imports.hpp"
#include "graph.hpp"
#include "opcodes.hpp"
#include "pickler_compat_names.hpp"
#include "pickler_output.hpp"
#include "picklewire/pickler.hpp"
#include "numpy_reductions.hpp"

namespace picklewire {
namespace {

using detail::MemoTable;
using detail::PickleOutput;

constexpr std::size_t kBatchSize = 1000;  // APPENDS / SETITEMS / ADDITEMS batches (BATCHSIZE)


// How a run of container items is written.
enum class Run : std::uint8_t {
  Sequence,     // tuple / frozenset elements: all of them, no batching (the closer comes after)
  ListExact,    // batch_list_exact: MARK <=1000 items APPENDS, while items remain
  DictExact,    // batch_dict_exact: MARK <=1000 pairs SETITEMS, again after every full batch
  SetExact,     // save_set: MARK <=1000 items ADDITEMS, again after every full batch
  ListGeneric,  // batch_list (reduce listitems): a lone trailing item is APPEND
  DictGeneric,  // batch_dict (reduce dictitems): a lone trailing pair is SETITEM
};

enum class Op : std::uint8_t {
  Save,            // save(slot)
  Write,           // write one opcode byte
  Items,           // continue a run of items
  TupleEnd,        // after a tuple's elements: TUPLEn / TUPLE, or POPs + GET when it recursed
  FrozenSetEnd,    // after a frozenset's elements: FROZENSET, or POP_MARK + GET
  ReduceEnd,       // after callable, args and REDUCE/NEWOBJ: memoise, or POP + GET; then items/state
  GlobalMemoPut,   // memoise a global written as getattr(parent, name) (protocol < 4)
};

struct Frame {
  Op op = Op::Save;
  bool offer = true;           // Save: offer the value to persistent_id
  std::uint8_t byte = 0;       // Write: the opcode; Items: the Run
  bool in_batch = false;       // Items
  std::uint32_t count = 0;     // Items: items in the current batch; TupleEnd: tuple length
  Slot slot;                   // Save: the value; others: node_slot(the node concerned)
  const std::shared_ptr<Graph>* ctx = nullptr;  // keeps slot alive as a Value (persistent_id); null: never offer
  const Slot* items = nullptr;                  // Items
  const std::pair<Slot, Slot>* pairs = nullptr; // Items (dict runs)
  std::size_t index = 0, size = 0;              // Items
};

// The walk's stack. Room for its first kInline frames is in the Pickler itself, left
// uninitialised (a small dump neither allocates nor clears anything for it up front), and a push
// fills one frame in place; a deeper walk moves the stack to the heap.
class FrameStack {
 public:
  FrameStack() = default;
  FrameStack(const FrameStack&) = delete;
  FrameStack& operator=(const FrameStack&) = delete;

  bool empty() const noexcept { return size_ == 0; }
  Frame& back() noexcept { return data_[size_ - 1]; }
  void pop_back() noexcept { --size_; }
  // A new top frame, default-initialised in place for the caller to fill in. (It may move the
  // other frames: references to them are stale after this.)
  Frame& push() {
    if (size_ == capacity_) grow();
    return *new (&data_[size_++]) Frame();
  }

 private:
  static_assert(std::is_trivially_copyable_v<Frame> && std::is_trivially_destructible_v<Frame>);
  static constexpr std::size_t kInline = 32;

  void grow() {
    auto bigger = std::make_unique_for_overwrite<std::byte[]>(2 * capacity_ * sizeof(Frame));
    std::memcpy(bigger.get(), data_, size_ * sizeof(Frame));
    heap_ = std::move(bigger);
    data_ = reinterpret_cast<Frame*>(heap_.get());
    capacity_ *= 2;
  }

  alignas(Frame) std::byte inline_[kInline * sizeof(Frame)];
  std::unique_ptr<std::byte[]> heap_;
  Frame* data_ = reinterpret_cast<Frame*>(inline_);
  std::size_t size_ = 0, capacity_ = kInline;
};

class Pickler {
 public:
  Pickler(const PicklerOptions& options, PickleOutput& out) : opt_(options), proto_(options.protocol), out_(out) {
    if (proto_ < 2 || proto_ > op::kHighestProtocol)
      throw PicklingError("pickle protocol " + std::to_string(proto_) + " is not supported (2..5)");
  }

  void dump(const Value& value) {
    out_.put(op::PROTO);
    out_.put(static_cast<std::uint8_t>(proto_));
    if (proto_ >= 4) out_.set_framing(true);
    if (value.graph()) memo_.reserve(value.graph()->node_count());
    push_save(value.slot(), &value.graph());
    run();
    out_.put(op::STOP);
    out_.commit_frame();
    out_.set_framing(false);
  }

 private:
  // ------------------------------------------------------------------ stack

  void push_save(Slot s, const std::shared_ptr<Graph>* ctx, bool offer = true) {  // (s by value: it may be in a frame)
    Frame& f = stack_.push();
    f.op = Op::Save;
    f.slot = s;
    f.ctx = ctx;
    f.offer = offer;
  }
  void push_write(std::uint8_t opcode) {
    Frame& f = stack_.push();
    f.op = Op::Write;
    f.byte = opcode;
  }
  void push_node_op(Op op, Node* n, const std::shared_ptr<Graph>* ctx, std::uint32_t count = 0) {
    Frame& f = stack_.push();
    f.op = op;
    f.slot = node_slot(n);
    f.ctx = ctx;
    f.count = count;
  }
  void push_items(Run run, const Slot* items, std::size_t n, const std::shared_ptr<Graph>* ctx) {
    Frame& f = stack_.push();
    f.op = Op::Items;
    f.byte = static_cast<std::uint8_t>(run);
    f.items = items;
    f.size = n;
    f.ctx = ctx;
  }
  void push_pairs(Run run, const std::pair<Slot, Slot>* pairs, std::size_t n, const std::shared_ptr<Graph>* ctx) {
    Frame& f = stack_.push();
    f.op = Op::Items;
    f.byte = static_cast<std::uint8_t>(run);
    f.pairs = pairs;
    f.size = n;
    f.ctx = ctx;
  }

  void run() {
    while (!stack_.empty()) {
      Frame& top = stack_.back();
      switch (top.op) {
        // (Each case reads the fields it needs, not a copy of the whole frame.)
        case Op::Save: {
          const Slot s = top.slot;
          const std::shared_ptr<Graph>* ctx = top.ctx;
          const bool offer = top.offer;
          stack_.pop_back();
          save(s, ctx, offer);
          break;
        }
        case Op::Write: {
          std::uint8_t b = top.byte;
          stack_.pop_back();
          out_.put(b);
          break;
        }
        case Op::Items: step_items(); break;
        case Op::TupleEnd: {
          Node* n = top.slot.node;
          const std::uint32_t len = top.count;
          stack_.pop_back();
          tuple_end(n, len);
          break;
        }
        case Op::FrozenSetEnd: {
          Node* n = top.slot.node;
          stack_.pop_back();
          frozenset_end(n);
          break;
        }
        case Op::ReduceEnd: {
          Node* n = top.slot.node;
          const std::shared_ptr<Graph>* ctx = top.ctx;
          stack_.pop_back();
          reduce_end(n, ctx);
          break;
        }
        case Op::GlobalMemoPut: {
          Node* n = top.slot.node;
          stack_.pop_back();
          side().global_memo[global_key(n->global())] = memo_put_new();
          break;
        }
      }
    }
  }

  // One step of a run of items: opens / closes batches and pushes the next child.
  void step_items() {
    Frame& f = stack_.back();
    const Run run = static_cast<Run>(f.byte);
    const bool dict = run == Run::DictExact || run == Run::DictGeneric;
    auto push_child = [this](Frame& fr, bool is_dict) {
      // Copy before pushing: push_back may move the frame `fr` refers to.
      const std::shared_ptr<Graph>* ctx = fr.ctx;
      if (is_dict) {
        const auto& kv = fr.pairs[fr.index++];
        Slot k = kv.first, v = kv.second;
        push_save(v, ctx);
        push_save(k, ctx);
      } else {
        Slot s = fr.items[fr.index++];
        push_save(s, ctx);
      }
    };

    if (run == Run::Sequence) {
      save_leaves(f, false, f.size);
      if (f.index < f.size) push_child(f, false);
      else stack_.pop_back();
      return;
    }

    const std::uint8_t close = run == Run::ListExact || run == Run::ListGeneric ? op::APPENDS
                               : dict                                         ? op::SETITEMS
                                                                              : op::ADDITEMS;
    if (!f.in_batch) {
      if (run == Run::ListGeneric || run == Run::DictGeneric) {
        const std::size_t remaining = f.size - f.index;
        if (remaining == 0) {
          stack_.pop_back();
          return;
        }
        if (remaining == 1) {  // batch_list / batch_dict: a lone item is APPEND / SETITEM
          Frame copy = f;
          stack_.pop_back();
          push_write(dict ? op::SETITEM : op::APPEND);
          push_child(copy, dict);
          return;
        }
      }
      out_.put(op::MARK);
      f.in_batch = true;
      f.count = 0;
    }
    f.count += save_leaves(f, dict, std::min(f.size, f.index + (kBatchSize - f.count)));
    if (f.count < kBatchSize && f.index < f.size) {
      ++f.count;
      push_child(f, dict);
      return;
    }
    out_.put(close);
    f.in_batch = false;
    // ListExact loops while items remain; the others loop after every full batch (so a dict or
    // set of exactly 1000 items ends with an empty MARK SETITEMS / MARK ADDITEMS, as in CPython).
    const bool more = run == Run::ListExact ? f.index < f.size : f.count == kBatchSize;
    if (!more) stack_.pop_back();
  }

  // A child save() writes completely without pushing frames (a scalar, a str), when no
  // persistent_id can turn it into something else.
  bool is_leaf(const Slot& s) const { return s.is_inline || s.node->kind == Kind::Str; }
  // Saves the run's children from f.index on, up to index `end`, while they are leaves: in place,
  // in order, rather than a frame pushed and popped for each (a batch of ints or strs is then one
  // loop; that was two thirds of dumping a list of ints). Returns how many it saved.
  std::size_t save_leaves(Frame& f, bool dict, std::size_t end) {
    if (opt_.persistent_id) return 0;
    const std::size_t start = f.index;
    if (dict) {
      for (; f.index < end && is_leaf(f.pairs[f.index].first) && is_leaf(f.pairs[f.index].second); ++f.index) {
        save(f.pairs[f.index].first, f.ctx, true);
        save(f.pairs[f.index].second, f.ctx, true);
      }
    } else {
      while (f.index < end) {
        const Slot& s = f.items[f.index];
        if (s.is_inline) save_scalar_run(f.items, f.index, end);
        else if (s.node->kind == Kind::Str) save(s, f.ctx, true), ++f.index;
        else break;
      }
    }
    return f.index - start;
  }

  // items[index, end) while they are inline scalars (None, bool, int64, float), written straight
  // into the output: one capacity check per run instead of per item, and no dispatch through
  // save(). The frame boundaries stay where save() would put them: the run stops where the open
  // frame is full, and the next round commits it at that opcode boundary.
  static constexpr std::size_t kMaxScalarBytes = 10;  // LONG1 of 8 bytes
  void save_scalar_run(const Slot* items, std::size_t& index, std::size_t end) {
    constexpr std::size_t kRun = 512;
    while (index < end && items[index].is_inline) {
      out_.opcode_boundary();
      const std::size_t last = index + std::min(kRun, end - index);
      char* p = out_.begin_run(kMaxScalarBytes * (last - index));
      const char* const full = out_.boundary_at();
      do {
        p = write_scalar(p, items[index]);
        ++index;
      } while (index < last && items[index].is_inline && p < full);
      out_.end_run(p);
    }
  }

  // One inline scalar as save() writes it; p has room for 10 bytes. Returns the end.
  static char* write_scalar(char* p, const Slot& s) {
    switch (s.kind) {
      case Kind::Int: {
        const std::int64_t v = s.i;
        if (v >= INT32_MIN && v <= INT32_MAX) {
          const auto u = static_cast<std::uint32_t>(v);
          const int width = (u >> 16) ? 4 : (u >> 8) ? 2 : 1;
          p[0] = static_cast<char>(width == 4 ? op::BININT : width == 2 ? op::BININT2 : op::BININT1);
          store_le32(p + 1, u);  // (room for all 4; only `width` of them count)
          return p + 1 + width;
        }
        // LONG1 of the fewest two's-complement bytes that hold v (5..8 here): its magnitude's bits
        // plus the sign bit, rounded up to bytes.
        const auto u = static_cast<std::uint64_t>(v);
        const int bits = 65 - std::countl_zero(v < 0 ? ~u : u);
        const int n = (bits + 7) / 8;
        p[0] = static_cast<char>(op::LONG1);
        p[1] = static_cast<char>(n);
        store_le64(p + 2, u);  // (room for all 8; only n of them count)
        return p + 2 + n;
      }
      case Kind::Float: {  // BINFLOAT: the IEEE 754 bits, big-endian
        std::uint64_t bits;
        std::memcpy(&bits, &s.f, 8);
        if constexpr (std::endian::native == std::endian::little) bits = __builtin_bswap64(bits);
        p[0] = static_cast<char>(op::BINFLOAT);
        std::memcpy(p + 1, &bits, 8);
        return p + 9;
      }
      case Kind::Bool: *p = static_cast<char>(s.b ? op::NEWTRUE : op::NEWFALSE); return p + 1;
      default: *p = static_cast<char>(op::NONE); return p + 1;  // Kind::None: the only other inline kind
    }
  }
  static void store_le32(char* p, std::uint32_t u) {
    if constexpr (std::endian::native == std::endian::little) {
      std::memcpy(p, &u, 4);
    } else {
      for (int i = 0; i < 4; ++i) p[i] = static_cast<char>((u >> (8 * i)) & 0xff);
    }
  }
  static void store_le64(char* p, std::uint64_t u) {
    if constexpr (std::endian::native == std::endian::little) {
      std::memcpy(p, &u, 8);
    } else {
      for (int i = 0; i < 8; ++i) p[i] = static_cast<char>((u >> (8 * i)) & 0xff);
    }
  }

  // ------------------------------------------------------------------ memo

  std::uint32_t memo_put_new() {
    const std::uint32_t idx = memo_size_++;
    if (proto_ >= 4) out_.put(op::MEMOIZE);
    else if (idx < 256) out_.put_with_le(op::BINPUT, idx, 1);
    else out_.put_with_le(op::LONG_BINPUT, idx, 4);
    return idx;
  }
  void memo_put(const Node* n) { memo_.set(n, memo_put_new()); }
  // For a node memoised as soon as it is written (str, list, dict): one memo probe that either
  // finds its index and writes BINGET (true), or gives it the next index (false); the caller then
  // writes it and memo_put_new().
  bool fetch_or_claim(const Node* n) {
    const std::uint32_t idx = memo_.get_or_set(n, memo_size_);
    if (idx == MemoTable::kAbsent) return false;
    memo_get(idx);
    return true;
  }
  void memo_get(std::uint32_t idx) {
    if (idx < 256) out_.put_with_le(op::BINGET, idx, 1);
    else out_.put_with_le(op::LONG_BINGET, idx, 4);
  }
  // The real memo index of n, or kAbsent (also while n is only in progress).
  std::uint32_t memo_index(const Node* n) const {
    std::uint32_t v = memo_.get(n);
    return (v != MemoTable::kAbsent && !(v & MemoTable::kInProgress)) ? v : MemoTable::kAbsent;
  }

  // A tuple, frozenset or reduce is memoised only after its children, so a child may lead back to
  // it; CPython then writes it again (re-entry) and the outer copy is popped. That terminates only
  // if something new was memoised in between; a cycle through nothing but such nodes (which no
  // Python object graph can form) would loop forever, so it is refused.
  void enter_unmemoised(const Node* n) {
    std::uint32_t v = memo_.get(n);
    if (v != MemoTable::kAbsent && (v & MemoTable::kInProgress) && (v & ~MemoTable::kInProgress) == memo_size_)
      throw PicklingError("cannot pickle a cycle that passes only through tuples, frozensets or reduce "
                          "arguments (CPython would recurse forever)");
    memo_.set(n, MemoTable::kInProgress | memo_size_);
  }

  // ------------------------------------------------------------------ scalars

  // One inline scalar (None, bool, int64, float) at an opcode boundary.
  void save_scalar(const Slot& s) {
    char* p = out_.begin_run(kMaxScalarBytes);
    out_.end_run(write_scalar(p, s));
  }
  void save_int64(std::int64_t v) { save_scalar(int_slot(v)); }

  static std::size_t minimal_length(const unsigned char* le, std::size_t n) {
    while (n > 1 && ((le[n - 1] == 0x00 && !(le[n - 2] & 0x80)) || (le[n - 1] == 0xff && (le[n - 2] & 0x80)))) --n;
    if (n == 1 && le[0] == 0) n = 0;
    return n;
  }

  void save_long_bytes(const unsigned char* le, std::size_t n) {
    if (n < 256) out_.put_with_le(op::LONG1, n, 1);
    else {
      if (n > 0x7fffffffu) throw PicklingError("int too large to pickle");
      out_.put_with_le(op::LONG4, n, 4);
    }
    out_.write(le, n);
  }

  void save_big_int(const Node* n) {
    std::string_view d = std::get<Text>(n->payload).data;
    const auto* le = reinterpret_cast<const unsigned char*>(d.data());
    std::size_t len = minimal_length(le, d.size());
    if (len <= 8) {  // not normalised by whoever built it: write it as the small int it is
      std::uint64_t u = 0;
      for (std::size_t i = 0; i < len; ++i) u |= std::uint64_t(le[i]) << (8 * i);
      if (len > 0 && len < 8 && (le[len - 1] & 0x80)) u |= ~std::uint64_t(0) << (8 * len);
      save_int64(static_cast<std::int64_t>(u));
      return;
    }
    save_long_bytes(le, len);
  }

  // ------------------------------------------------------------------ str / bytes / bytearray

  // memcpy for the few bytes most strs hold (dict keys, names): two overlapping loads and stores
  // instead of a call into libc, which costs more than the copy itself at these sizes.
  // n bytes, sizeof(Word) <= n <= 2 * sizeof(Word), as a first and a last (overlapping) word.
  template <class Word>
  static void copy_ends(char* dst, const char* src, std::size_t n) {
    Word head, tail;
    std::memcpy(&head, src, sizeof(Word));
    std::memcpy(&tail, src + n - sizeof(Word), sizeof(Word));
    std::memcpy(dst, &head, sizeof(Word));
    std::memcpy(dst + n - sizeof(Word), &tail, sizeof(Word));
  }
  static void copy_short(char* dst, const char* src, std::size_t n) {
    if (n > 16) {
      std::memcpy(dst, src, n);
    } else if (n >= 8) {
      copy_ends<std::uint64_t>(dst, src, n);
    } else if (n >= 4) {
      copy_ends<std::uint32_t>(dst, src, n);
    } else {
      for (std::size_t i = 0; i < n; ++i) dst[i] = src[i];
    }
  }

  // A str node: fetched from the memo, or written and memoised. The usual short one at protocol 4+
  // is opcode, length, text and MEMOIZE in one write.
  void save_str(std::string_view utf8, const Node* n) {
    if (fetch_or_claim(n)) return;
    if (utf8.size() <= 0xff && proto_ >= 4) {
      char* p = out_.begin_run(3 + utf8.size());
      p[0] = static_cast<char>(op::SHORT_BINUNICODE);
      p[1] = static_cast<char>(utf8.size());
      copy_short(p + 2, utf8.data(), utf8.size());
      p[2 + utf8.size()] = static_cast<char>(op::MEMOIZE);
      out_.end_run(p + 3 + utf8.size());
      ++memo_size_;
      return;
    }
    write_unicode(utf8);
    memo_put_new();
  }

  void write_unicode(std::string_view utf8) {
    if (utf8.size() <= 0xff && proto_ >= 4) {  // the usual str: opcode, length and text in one write
      char* p = out_.begin_run(2 + utf8.size());
      p[0] = static_cast<char>(op::SHORT_BINUNICODE);
      p[1] = static_cast<char>(utf8.size());
      std::memcpy(p + 2, utf8.data(), utf8.size());
      out_.end_run(p + 2 + utf8.size());
      return;
    }
    char h[9];
    std::size_t hn;
    const std::size_t n = utf8.size();
    if (n <= 0xff && proto_ >= 4) {
      h[0] = static_cast<char>(op::SHORT_BINUNICODE);
      h[1] = static_cast<char>(n);
      hn = 2;
    } else if (n <= 0xffffffffu) {
      h[0] = static_cast<char>(op::BINUNICODE);
      for (int i = 0; i < 4; ++i) h[1 + i] = static_cast<char>((n >> (8 * i)) & 0xff);
      hn = 5;
    } else if (proto_ >= 4) {
      h[0] = static_cast<char>(op::BINUNICODE8);
      for (int i = 0; i < 8; ++i) h[1 + i] = static_cast<char>((static_cast<std::uint64_t>(n) >> (8 * i)) & 0xff);
      hn = 9;
    } else {
      throw PicklingError("serializing a string larger than 4 GiB requires pickle protocol 4 or higher");
    }
    out_.write_payload(h, hn, utf8.data(), n);
  }

  // Protocol 3+ bytes (also an in-band readonly buffer); memoised as `owner`.
  void save_bytes_data(const Node* owner, const void* data, std::size_t n) {
    char h[9];
    std::size_t hn;
    if (n <= 0xff) {
      h[0] = static_cast<char>(op::SHORT_BINBYTES);
      h[1] = static_cast<char>(n);
      hn = 2;
    } else if (n <= 0xffffffffu) {
      h[0] = static_cast<char>(op::BINBYTES);
      for (int i = 0; i < 4; ++i) h[1 + i] = static_cast<char>((n >> (8 * i)) & 0xff);
      hn = 5;
    } else if (proto_ >= 4) {
      h[0] = static_cast<char>(op::BINBYTES8);
      for (int i = 0; i < 8; ++i) h[1 + i] = static_cast<char>((static_cast<std::uint64_t>(n) >> (8 * i)) & 0xff);
      hn = 9;
    } else {
      throw PicklingError("serializing a bytes object larger than 4 GiB requires pickle protocol 4 or higher");
    }
    out_.write_payload(h, hn, data, n);
    memo_put(owner);
  }

  // Protocol 5 bytearray (also an in-band writable buffer); memoised as `owner`.
  void save_bytearray_data(const Node* owner, const void* data, std::size_t n) {
    char h[9];
    h[0] = static_cast<char>(op::BYTEARRAY8);
    for (int i = 0; i < 8; ++i) h[1 + i] = static_cast<char>((static_cast<std::uint64_t>(n) >> (8 * i)) & 0xff);
    out_.write_payload(h, 9, data, n);
    memo_put(owner);
  }

  // bytes before protocol 3: _codecs.encode(latin-1 text, 'latin1'), or bytes() when empty.
  void save_bytes_reduce(Node* owner, std::string_view data, const std::shared_ptr<Graph>* ctx) {
    Graph& g = scratch();
    Node* args = g.new_node(Kind::Tuple);
    Slot callable;
    if (data.empty()) {
      callable = synth_global("builtins", "bytes");
    } else {
      callable = synth_global("_codecs", "encode");
      std::string text;
      text.reserve(data.size() * 2);
      for (unsigned char c : data) {
        if (c < 0x80) text.push_back(static_cast<char>(c));
        else {
          text.push_back(static_cast<char>(0xc0 | (c >> 6)));
          text.push_back(static_cast<char>(0x80 | (c & 0x3f)));
        }
      }
      Node* s = g.new_node(Kind::Str);
      s->text().data = g.store(text);
      mark_synthetic(s);
      args->items() = {node_slot(s), latin1()};
    }
    mark_synthetic(args);
    save_reduce(owner, callable, node_slot(args), ctx);
  }

  // bytearray before protocol 5: bytearray(bytes) or bytearray().
  void save_bytearray_reduce(Node* owner, std::string_view data, const std::shared_ptr<Graph>* ctx) {
    Graph& g = scratch();
    Node* args = g.new_node(Kind::Tuple);
    if (!data.empty()) {
      Node* b = g.new_node(Kind::Bytes);
      b->text().data = data;  // a view: the graph being written outlives this dump
      mark_synthetic(b);
      args->items() = {node_slot(b)};
    }
    mark_synthetic(args);
    save_reduce(owner, synth_global("builtins", "bytearray"), node_slot(args), ctx);
  }

  // set / frozenset before protocol 4: set([items]) / frozenset([items]).
  void save_set_reduce(Node* owner, std::string_view type_name, const std::shared_ptr<Graph>* ctx) {
    Graph& g = scratch();
    Node* list = g.new_node(Kind::List);
    list->items() = owner->items();
    Node* args = g.new_node(Kind::Tuple);
    args->items() = {node_slot(list)};
    mark_synthetic(list);
    mark_synthetic(args);
    save_reduce(owner, synth_global("builtins", type_name), node_slot(args), ctx);
  }

  // save_reduce(callable, args, obj) for a builtin's reduction: callable args REDUCE, then memoise.
  void save_reduce(Node* owner, Slot callable, Slot args, const std::shared_ptr<Graph>* ctx) {
    enter_unmemoised(owner);
    push_node_op(Op::ReduceEnd, owner, ctx);
    push_write(op::REDUCE);
    push_save(args, ctx, false);
    push_save(callable, ctx, false);
  }

  // ------------------------------------------------------------------ globals

  static std::string global_key(const GlobalName& g) {
    std::string k;
    k.reserve(g.module.size() + g.name.size() + 1);
    k.append(g.module).push_back('\0');
    k.append(g.name);
    return k;
  }

  // A global is memoised by its name: in Python the same name is the same object.
  void save_global(Node* n, const std::shared_ptr<Graph>* ctx) {
    const GlobalName& g = n->global();
    SideTables& side_tables = side();
    std::string key = global_key(g);
    if (auto it = side_tables.global_memo.find(key); it != side_tables.global_memo.end()) {
      memo_get(it->second);
      return;
    }
    if (proto_ >= 4) {
      // save(module_name): the module's name is one str object in Python, shared by its globals.
      out_.opcode_boundary();
      if (auto it = side_tables.module_memo.find(std::string(g.module)); it != side_tables.module_memo.end()) {
        memo_get(it->second);
      } else {
        write_unicode(g.module);
        side_tables.module_memo.emplace(std::string(g.module), memo_put_new());
      }
      out_.opcode_boundary();  // save(qualname): a fresh str
      write_unicode(g.name);
      memo_put_new();
      out_.put(op::STACK_GLOBAL);
      side_tables.global_memo.emplace(std::move(key), memo_put_new());
      return;
    }
    if (std::size_t dot = g.name.rfind('.'); dot != std::string_view::npos) {
      // A nested qualname before protocol 4: getattr(parent, lastname), then memoise the global.
      Graph& s = scratch();
      Node* parent = s.new_node(Kind::Global);
      parent->global() = {g.module, g.name.substr(0, dot)};
      Node* last = s.new_node(Kind::Str);
      last->text().data = g.name.substr(dot + 1);
      Node* args = s.new_node(Kind::Tuple);
      args->items() = {node_slot(parent), node_slot(last)};
      mark_synthetic(parent);
      mark_synthetic(last);
      mark_synthetic(args);
      push_node_op(Op::GlobalMemoPut, n, ctx);
      push_write(op::REDUCE);
      push_save(node_slot(args), ctx, false);
      push_save(synth_global("builtins", "getattr"), ctx, false);
      return;
    }
    std::string_view module = g.module, name = g.name;
    if (proto_ < 3) {  // fix_imports: Python 3 names to the Python 2 names CPython writes
      bool mapped = false;
      for (const auto& m : compat::kReverseNameMapping)
        if (m.module3 == module && m.name3 == name) {
          module = m.module2;
          name = m.name2;
          mapped = true;
          break;
        }
      if (!mapped)
        for (const auto& m : compat::kReverseImportMapping)
          if (m.module3 == module) {
            module = m.module2;
            break;
          }
      for (std::string_view part : {module, name})
        for (char c : part)
          if (static_cast<unsigned char>(c) >= 0x80)
            throw PicklingError("can't pickle global identifier '" + std::string(part) +
                                "' using pickle protocol " + std::to_string(proto_));
      // A global that already carries a Python 2 name (an inert node loaded from a protocol 4+
      // stream, say '__builtin__.bytearray') would be renamed by the reader: it would read back
      // as another object. CPython never writes one (it cannot import such a module).
      if (module == g.module && name == g.name) {
        const auto [module3, name3] = fix_imports::python3_name(module, name);
        if (module3 != module || name3 != name)
          throw PicklingError("global '" + std::string(module) + "." + std::string(name) +
                              "' cannot be written at protocol " + std::to_string(proto_) +
                              ": a reader below protocol 3 takes it for Python 2's name of '" + std::string(module3) +
                              "." + std::string(name3) + "' (fix_imports)");
      }
    }
    for (std::string_view part : {module, name})
      if (part.find('\n') != std::string_view::npos)
        throw PicklingError("a global name with a newline cannot be written at protocol < 4");
    out_.put(op::GLOBAL);
    out_.write(module);
    out_.put('\n');
    out_.write(name);
    out_.put('\n');
    side_tables.global_memo.emplace(std::move(key), memo_put_new());
  }

  // ------------------------------------------------------------------ objects

  void save_object(Node* n, const std::shared_ptr<Graph>* ctx) {
    const ObjectData& o = n->object();
    enter_unmemoised(n);
    push_node_op(Op::ReduceEnd, n, ctx);
    switch (o.form) {
      case ObjectForm::NewObjEx:
        if (proto_ < 4)
          throw PicklingError("an object built with NEWOBJ_EX (cls.__new__(cls, *args, **kwargs)) needs protocol 4 or higher");
        push_write(op::NEWOBJ_EX);
        push_save(o.kwargs, ctx);
        push_save(o.args, ctx);
        push_save(o.callable, ctx);
        return;
      case ObjectForm::NewObj:
        push_write(op::NEWOBJ);
        push_save(o.args, ctx);
        push_save(o.callable, ctx);
        return;
      case ObjectForm::Inst:
      case ObjectForm::Obj: {
        // Protocol 0/1 instances: INST / OBJ call cls(*args) when there are arguments and
        // cls.__new__(cls) when there are none and cls is a class; REDUCE and NEWOBJ say the same
        // at protocol 2+. (A callable known not to be a class, builtins.len say, is called.)
        const bool no_args = kind_of(o.args) == Kind::Tuple && o.args.node->items().empty();
        const std::optional<std::string_view> type = builtin_reductions::python_type_name(o.callable);
        const bool a_class = !type || *type == "type";
        push_write(no_args && a_class ? op::NEWOBJ : op::REDUCE);
        push_save(o.args, ctx);
        push_save(o.callable, ctx);
        return;
      }
      case ObjectForm::Reduce:
        push_write(op::REDUCE);
        push_save(o.args, ctx);
        push_save(o.callable, ctx);
        return;
    }
  }

  // After REDUCE / NEWOBJ: if the object was written meanwhile (it recursed through its
  // arguments), drop this copy and fetch that one; otherwise memoise it and apply its items and
  // state (save_reduce order: listitems, dictitems, then BUILD).
  void reduce_end(Node* n, const std::shared_ptr<Graph>* ctx) {
    if (std::uint32_t idx = memo_index(n); idx != MemoTable::kAbsent) {
      out_.put(op::POP);
      memo_get(idx);
      return;
    }
    memo_put(n);
    if (n->kind != Kind::Object) return;
    const ObjectData& o = n->object();
    for (std::size_t i = o.states.size(); i-- > 0;) {
      push_write(op::BUILD);
      push_save(o.states[i], ctx);
    }
    if (!o.set_items.empty()) {
      if (proto_ < 4) throw PicklingError("an object with ADDITEMS items needs protocol 4 or higher");
      push_items(Run::SetExact, o.set_items.data(), o.set_items.size(), ctx);
    }
    if (!o.dict_items.empty()) push_pairs(Run::DictGeneric, o.dict_items.data(), o.dict_items.size(), ctx);
    if (!o.list_items.empty()) push_items(Run::ListGeneric, o.list_items.data(), o.list_items.size(), ctx);
  }

  void tuple_end(Node* n, std::uint32_t len) {
    if (std::uint32_t idx = memo_index(n); idx != MemoTable::kAbsent) {  // it recursed
      if (len <= 3) for (std::uint32_t i = 0; i < len; ++i) out_.put(op::POP);
      else out_.put(op::POP_MARK);
      memo_get(idx);
      return;
    }
    static constexpr std::uint8_t by_len[] = {op::EMPTY_TUPLE, op::TUPLE1, op::TUPLE2, op::TUPLE3};
    out_.put(len <= 3 ? by_len[len] : static_cast<std::uint8_t>(op::TUPLE));
    memo_put(n);
  }

  void frozenset_end(Node* n) {
    if (std::uint32_t idx = memo_index(n); idx != MemoTable::kAbsent) {
      out_.put(op::POP_MARK);
      memo_get(idx);
      return;
    }
    out_.put(op::FROZENSET);
    memo_put(n);
  }

  // ------------------------------------------------------------------ buffers

  void save_pickle_buffer(Node* n, const std::shared_ptr<Graph>* ctx) {
    const Buffer& b = n->buffer();
    if (proto_ >= 5) {
      BufferPlacement where = BufferPlacement::in_band;
      if (opt_.buffer_callback) {
        BufferInfo info;
        if (side_) {
          const auto& sizes = side_->array_data_item_size;
          if (auto it = sizes.find(n); it != sizes.end()) info.item_size = it->second;
        }
        where = opt_.buffer_callback(b, info);
      }
      if (where == BufferPlacement::out_of_band) {  // not memoised, as in CPython
        out_.put(op::NEXT_BUFFER);
        if (b.readonly()) out_.put(op::READONLY_BUFFER);
        return;
      }
      if (b.readonly()) save_bytes_data(n, b.data(), b.size());
      else save_bytearray_data(n, b.data(), b.size());
      return;
    }
    // Before protocol 5 a buffer is written as the object it views would be: bytes or bytearray.
    if (b.readonly()) {
      if (proto_ >= 3) save_bytes_data(n, b.data(), b.size());
      else save_bytes_reduce(n, b.chars(), ctx);
    } else {
      save_bytearray_reduce(n, b.chars(), ctx);
    }
  }

  // ------------------------------------------------------------------ save()

  // The common kinds (inline scalars, strs) are written here; the rest in save_node, kept out of
  // line so that this stays a small function (most calls are for scalars and strs).
  void save(const Slot& s, const std::shared_ptr<Graph>* ctx, bool offer) {
    out_.opcode_boundary();
    if (offer && ctx && opt_.persistent_id && !is_synthetic(s) && save_persistent_id(s, ctx)) return;
    if (s.is_inline) {
      save_scalar(s);
      return;
    }
    if (s.node->kind == Kind::Str) {
      save_str(s.node->text().data, s.node);
      return;
    }
    save_node(s.node, ctx);
  }

  // persistent_id(value): when it gives an id, BINPERSID is written for it (true).
  [[gnu::noinline]] bool save_persistent_id(const Slot& s, const std::shared_ptr<Graph>* ctx) {
    std::optional<Value> pid = opt_.persistent_id(Value(s, *ctx));
    if (!pid) return false;
    std::list<Value>& pids = side().pids;
    pids.push_back(std::move(*pid));
    push_write(op::BINPERSID);
    push_save(pids.back().slot(), &pids.back().graph(), /*offer=*/false);
    return true;
  }

  [[gnu::noinline]] void save_node(Node* n, const std::shared_ptr<Graph>* ctx) {
    if (n->kind == Kind::Int) {
      save_big_int(n);
      return;
    }
    if (n->kind != Kind::Global && n->kind != Kind::List && n->kind != Kind::Dict) {
      if (std::uint32_t idx = memo_index(n); idx != MemoTable::kAbsent) {
        memo_get(idx);
        return;
      }
    }
    switch (n->kind) {
      case Kind::Bytes: {
        std::string_view d = n->text().data;
        if (proto_ >= 3) save_bytes_data(n, d.data(), d.size());
        else save_bytes_reduce(n, d, ctx);
        return;
      }
      case Kind::ByteArray: {
        std::string_view d = n->text().data;
        if (proto_ >= 5) save_bytearray_data(n, d.data(), d.size());
        else save_bytearray_reduce(n, d, ctx);
        return;
      }
      case Kind::Complex: {
        const auto& c = std::get<ComplexNumber>(n->payload);
        Node* args = scratch().new_node(Kind::Tuple);
        args->items() = {float_slot(c.real), float_slot(c.imag)};
        mark_synthetic(args);
        save_reduce(n, synth_global("builtins", "complex"), node_slot(args), ctx);
        return;
      }
      case Kind::Tuple: {
        const Items& items = n->items();
        if (items.empty()) {  // () is a singleton CPython never memoises
          out_.put(op::EMPTY_TUPLE);
          return;
        }
        enter_unmemoised(n);
        push_node_op(Op::TupleEnd, n, ctx, static_cast<std::uint32_t>(std::min<std::size_t>(items.size(), 4)));
        if (items.size() > 3) out_.put(op::MARK);
        push_items(Run::Sequence, items.data(), items.size(), ctx);
        return;
      }
      case Kind::List: {
        if (fetch_or_claim(n)) return;
        out_.put(op::EMPTY_LIST);
        memo_put_new();
        const Items& items = n->items();
        if (items.size() == 1) {
          push_write(op::APPEND);
          push_save(items[0], ctx);
        } else if (!items.empty()) {
          push_items(Run::ListExact, items.data(), items.size(), ctx);
        }
        return;
      }
      case Kind::Dict: {
        if (fetch_or_claim(n)) return;
        out_.put(op::EMPTY_DICT);
        memo_put_new();
        const Entries& e = n->entries();
        if (e.size() == 1) {
          Slot k = e[0].first, v = e[0].second;
          push_write(op::SETITEM);
          push_save(v, ctx);
          push_save(k, ctx);
        } else if (!e.empty()) {
          push_pairs(Run::DictExact, e.data(), e.size(), ctx);
        }
        return;
      }
      case Kind::Set:
        if (proto_ < 4) {
          save_set_reduce(n, "set", ctx);
          return;
        }
        out_.put(op::EMPTY_SET);
        memo_put(n);
        if (!n->items().empty()) push_items(Run::SetExact, n->items().data(), n->items().size(), ctx);
        return;
      case Kind::FrozenSet:
        if (proto_ < 4) {
          save_set_reduce(n, "frozenset", ctx);
          return;
        }
        enter_unmemoised(n);
        out_.put(op::MARK);
        push_node_op(Op::FrozenSetEnd, n, ctx);
        push_items(Run::Sequence, n->items().data(), n->items().size(), ctx);
        return;
      case Kind::PickleBuffer: save_pickle_buffer(n, ctx); return;
      case Kind::Global: save_global(n, ctx); return;
      case Kind::Object: save_object(n, ctx); return;
      case Kind::NDArray: {
        // numpy's own reduction of the array, built once per array node so a shared array is
        // written once and fetched from the memo after that. Not offered to persistent_id.
        SideTables& side_tables = side();
        auto [it, fresh] = side_tables.lowered.try_emplace(n);
        if (fresh) {
          const Node* data = nullptr;
          it->second = numpy::lower_ndarray(scratch(), n->array(), proto_, opt_.ledger, &data);
          if (data) side_tables.array_data_item_size.emplace(data, n->array().dtype.itemsize);
        }
        push_save(it->second, nullptr, false);
        return;
      }
      default: throw PicklingError("cannot pickle a value of kind " + std::string(to_string(n->kind)));
    }
  }

  // ------------------------------------------------------------------ synthetic values

  // Nodes that stand for objects CPython creates while reducing a builtin (the reduce tuples,
  // `_codecs.encode`, 'latin1', ...). They live in a scratch graph for the duration of the dump.
  Graph& scratch() {
    SideTables& side_tables = side();
    if (!side_tables.scratch) side_tables.scratch = std::make_shared<Graph>();
    return *side_tables.scratch;
  }
  Slot synth_global(std::string_view module, std::string_view name) {
    Node* g = scratch().new_node(Kind::Global);
    g->global() = {module, name};
    mark_synthetic(g);
    return node_slot(g);
  }
  // 'latin1': one interned str in CPython, so one node here (written once, then fetched).
  Slot latin1() {
    Node*& latin1 = side().latin1;
    if (!latin1) {
      latin1 = scratch().new_node(Kind::Str);
      latin1->text().data = "latin1";
      mark_synthetic(latin1);
    }
    return node_slot(latin1);
  }
  void mark_synthetic(const Node* n) {
    if (opt_.persistent_id) side().synthetic.insert(n);
  }
  bool is_synthetic(const Slot& s) const {
    return !s.is_inline && side_ && !side_->synthetic.empty() && side_->synthetic.count(s.node) != 0;
  }

  const PicklerOptions& opt_;
  const int proto_;
  PickleOutput& out_;
  FrameStack stack_;
  MemoTable memo_;
  std::uint32_t memo_size_ = 0;
  // What only some dumps need (globals, numpy arrays, persistent ids, builtins' reductions): made
  // on first use, so a dump of plain containers and scalars neither builds nor destroys it.
  struct SideTables {
    std::unordered_map<std::string, std::uint32_t> global_memo;  // "module\0qualname" -> memo index
    std::unordered_map<std::string, std::uint32_t> module_memo;  // STACK_GLOBAL module names
    std::unordered_map<const Node*, Slot> lowered;               // NDArray -> numpy's reduction
    std::unordered_map<const Node*, std::uint32_t> array_data_item_size;  // its data PickleBuffer -> dtype item size
    std::unordered_set<const Node*> synthetic;                   // only kept when persistent_id is set
    std::list<Value> pids;  // persistent ids being written (stable addresses)
    std::shared_ptr<Graph> scratch;
    Node* latin1 = nullptr;
  };
  SideTables& side() {
    if (!side_) side_ = std::make_unique<SideTables>();
    return *side_;
  }
  std::unique_ptr<SideTables> side_;
};

}  // namespace

Buffer dump(const Value& value, const PicklerOptions& options) {
  PickleOutput out;
  Pickler(options, out).dump(value);
  return out.take();
}

void dump_to(const Value& value, const StreamSink& sink, const PicklerOptions& options) {
  PickleOutput out;
  out.set_sink(&sink);
  Pickler(options, out).dump(value);
  out.finish();
}

Message dump_message(const Value& value, std::size_t inband_threshold, CopyLedger* ledger) {
  Message message;
  PicklerOptions options;
  options.protocol = 5;
  options.ledger = ledger;
  options.buffer_callback = [&](const Buffer& b, const BufferInfo& info) {
    if (b.size() >= inband_threshold) {
      message.buffers.push_back(b);
      message.item_sizes.push_back(info.item_size);
      return BufferPlacement::out_of_band;
    }
    if (ledger) ledger->record_copy(CopyReason::inband_below_threshold, b.size());
    return BufferPlacement::in_band;
  };
  message.stream = dump(value, options);
  return message;
}

}  // namespace picklewire
