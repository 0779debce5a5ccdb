// src/graph.hpp — internal: the nodes behind picklewire::Value and the arena that owns them.
//
// Codec code (unpickler, pickler, repr, converters) works on Node* and Slot directly: no
// reference counting on the hot path. Children are Slots; a Slot's node lives in the same Graph
// or in a graph that Graph imports (keeps alive).
#pragma once

#include <atomic>
#include <memory>
#include <memory_resource>
#include <new>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "picklewire/buffer.hpp"
#include "picklewire/ndarray.hpp"
#include "picklewire/value.hpp"

namespace picklewire {

struct Text {  // Str (UTF-8), Bytes, ByteArray, big Int (LE two's complement)
  std::string_view data;
};
struct ComplexNumber {
  double real = 0, imag = 0;
};
// Container payloads allocate from their graph's memory (Graph::Memory): a small tuple or dict
// costs a bump of a pointer, not a malloc and a free.
using Items = std::pmr::vector<Slot>;                      // Tuple, List, Set, FrozenSet
using Entries = std::pmr::vector<std::pair<Slot, Slot>>;   // Dict
struct GlobalName {
  std::string_view module, name;
};
struct ObjectData {
  ObjectForm form = ObjectForm::Reduce;
  Slot callable, args, kwargs;
  Items states;
  Items list_items;
  Entries dict_items;
  Items set_items;
};

// A PickleBuffer node's Buffer lives in its graph's arena and is only destroyed, never freed, with
// the node: held by pointer, it keeps the largest payload at 32 bytes and every node at 48 (a
// Buffer inline made all of them 56: a sixth more memory written for every str of a load).
struct DestroyOnly {
  void operator()(Buffer* b) const noexcept { b->~Buffer(); }
};
using ArenaBuffer = std::unique_ptr<Buffer, DestroyOnly>;

struct Node {
  Kind kind;
  std::variant<std::monostate, Text, ComplexNumber, Items, Entries, ArenaBuffer, GlobalName,
               std::unique_ptr<ObjectData>, std::unique_ptr<NDArray>>
      payload;

  explicit Node(Kind k) : kind(k) {}
  // Constructs the payload directly (Graph::new_node): emplace<T>() on a default Node would first
  // reset the monostate through the variant's out-of-line visitor, once per node.
  template <class T, class... Args>
  Node(Kind k, std::in_place_type_t<T> t, Args&&... args) : kind(k), payload(t, std::forward<Args>(args)...) {}
  Text& text() { return std::get<Text>(payload); }
  Items& items() { return std::get<Items>(payload); }
  Entries& entries() { return std::get<Entries>(payload); }
  ObjectData& object() { return *std::get<std::unique_ptr<ObjectData>>(payload); }
  NDArray& array() { return *std::get<std::unique_ptr<NDArray>>(payload); }
  const Buffer& buffer() const { return *std::get<ArenaBuffer>(payload); }
  Buffer& buffer() { return *std::get<ArenaBuffer>(payload); }
  GlobalName& global() { return std::get<GlobalName>(payload); }
};

// The kind of what a slot refers to NOW. A numpy BUILD converts an Object node into an NDArray
// node in place (numpy::decode_build), so a slot copied before that (a memo entry, a container
// item) caches a stale `kind`: for a non-inline slot the node's kind is authoritative. Every
// reader of a slot's kind goes through this; `Slot::kind` alone is only trusted for inline slots.
inline Kind kind_of(const Slot& s) noexcept { return s.is_inline ? s.kind : s.node->kind; }

// The node a slot refers to, or nullptr for an inline scalar.
inline Node* node_of(const Slot& s) noexcept { return s.is_inline ? nullptr : s.node; }

// Slot constructors shared by the codec units.
inline Slot node_slot(Node* n) noexcept { return Slot(n->kind, n); }
inline Slot int_slot(std::int64_t v) noexcept { return Slot(Kind::Int, v); }
inline Slot bool_slot(bool b) noexcept { return Slot(Kind::Bool, b); }
inline Slot float_slot(double f) noexcept { return Slot(Kind::Float, f); }

// The heap behind every graph's large blocks (value.cpp): operator new / delete with a per-thread
// cache of freed blocks, so a process that loads message after message reuses warm memory.
std::pmr::memory_resource* large_blocks() noexcept;

// Thrown by Graph when a node beyond Graph::limit_nodes would be made.
struct NodeLimitReached {};

class Graph {
 public:
  // Blocks this large or larger are not bumped from a graph's arena (see Memory).
  static constexpr std::size_t kLargeBlockBytes = 4096;
  Graph();
  ~Graph();  // iterative over chains of imported graphs
  Graph(const Graph&) = delete;
  Graph& operator=(const Graph&) = delete;

  // A new node of `kind` with the payload that kind uses, default-initialised.
  Node* new_node(Kind kind);
  // A new Str / Bytes / ByteArray / big-Int node viewing `data` (the loader's hot path: inline,
  // no dispatch on the kind).
  Node* new_text_node(Kind kind, std::string_view data) {
    if (current_.used == current_.stop) [[unlikely]] make_room();
    Node* n = new (current_.memory + current_.used * sizeof(Node)) Node(kind, std::in_place_type<Text>, Text{data});
    ++current_.used;
    return n;
  }
  // At most `n` nodes in all: making one more throws NodeLimitReached (the unpickler's max_nodes,
  // checked on the chunk's own bound, so the hot path tests one counter). SIZE_MAX: no limit.
  void limit_nodes(std::size_t n) noexcept;
  // Copies `bytes` into graph-owned storage (for text the stream cannot be viewed for).
  std::string_view store(std::string_view bytes);
  // Lets nodes view bytes of `buffer` (the pickle stream) instead of copying them.
  void keep_alive(Buffer buffer) {
    if (kept_none_) {  // the common case (one stream): no vector
      first_kept_ = std::move(buffer);
      kept_none_ = false;
    } else {
      more_kept_.push_back(std::move(buffer));
    }
  }
  // Makes this graph keep `other` alive because nodes here point into it. Refuses (Error) to
  // create an ownership cycle between graphs.
  void import(const std::shared_ptr<Graph>& other);
  // A Slot for `v` valid inside this graph (imports v's graph when it is another one).
  Slot adopt(const Value& v);

  std::size_t node_count() const noexcept { return full_nodes_ + current_.used; }

 private:
  bool reaches(const Graph* target) const;

  // The graph's memory: node chunks, container payloads and stored text. Small blocks are bumped
  // from an arena that starts inside the Graph and is freed with it, so a small load (a message's
  // metadata) allocates nothing but the Graph. Blocks of kLargeBlockBytes or more, and the
  // arena's own refills, come from large_blocks() and are freed one by one, so a big list that
  // grows does not leave its old buffers behind.
  class Memory final : public std::pmr::memory_resource {
   public:
    Memory(void* initial, std::size_t size) : arena_(initial, size, large_blocks()) {}
    // Always from the arena, whatever the size (text is never freed before the graph).
    void* arena_allocate(std::size_t bytes, std::size_t align) { return arena_.allocate(bytes, align); }

   private:
    void* do_allocate(std::size_t bytes, std::size_t align) override {
      return bytes >= kLargeBlockBytes ? large_blocks()->allocate(bytes, align) : arena_.allocate(bytes, align);
    }
    void do_deallocate(void* p, std::size_t bytes, std::size_t align) override {
      if (bytes >= kLargeBlockBytes) large_blocks()->deallocate(p, bytes, align);
    }
    bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
    std::pmr::monotonic_buffer_resource arena_;
  };

  // Nodes live in chunks of 10, 20, 40, ... nodes (the first from the Graph's inline arena), up
  // to kMaxChunkNodes (value.cpp), all from memory_.
  static constexpr std::size_t kFirstChunkNodes = 10;
  // Inline arena: the first node chunk plus a small tuple and dict (what a numpy array's metadata
  // needs), while the Graph and its shared_ptr control block stay within glibc's per-thread cache
  // (<= 1032 bytes).
  static constexpr std::size_t kInlineArena = 720;
  struct Chunk {
    std::byte* memory = nullptr;  // from memory_
    std::size_t used = 0, capacity = 0;
    std::size_t stop = 0;  // new nodes go up to here (capacity, or fewer when the node limit is near)
    // Nodes whose payload has a destructor to run (containers, buffers, objects, arrays). A
    // chunk of only strings, bytes and scalars is freed without visiting its nodes.
    std::size_t owning = 0;
  };
  void make_room();  // a node can be made at current_.used, or NodeLimitReached
  void next_chunk();
  void destroy_chunk(Chunk& c) noexcept;
  alignas(std::max_align_t) std::byte inline_arena_[kInlineArena];
  Memory memory_;
  Chunk current_;             // where new nodes go
  std::vector<Chunk> full_;   // earlier, full chunks
  std::size_t full_nodes_ = 0;  // nodes in full_
  std::size_t node_limit_ = SIZE_MAX;
  bool kept_none_ = true;
  Buffer first_kept_;  // keep_alive: usually the one stream a load views
  std::vector<Buffer> more_kept_;
  std::vector<std::shared_ptr<Graph>> imports_;
  // Set once another graph imports this one. While it is false nothing can reach this graph, so
  // importing cannot close a cycle and the reachability search is skipped (building bottom-up
  // with the static factories stays linear).
  std::atomic<bool> imported_{false};
};

// An int from little-endian two's complement bytes (LONG1/LONG4, int(str), ...): inline when it
// fits 64 bits, else a big-Int node of the minimal bytes (viewing `le` when `viewable`, the bytes
// outliving the graph's use of them; else a copy in the graph). Inline: LONG1 is on the loader's
// hot path for ints beyond 32 bits.
inline Slot int_from_le(Graph& graph, std::string_view le, bool viewable) {
  std::size_t n = le.size();
  auto byte = [&](std::size_t i) { return static_cast<unsigned char>(le[i]); };
  while (n > 1 && ((byte(n - 1) == 0x00 && !(byte(n - 2) & 0x80)) || (byte(n - 1) == 0xff && (byte(n - 2) & 0x80))))
    --n;
  if (n == 0 || (n == 1 && byte(0) == 0)) return int_slot(0);
  if (n <= 8) {
    std::uint64_t u = 0;
    for (std::size_t i = 0; i < n; ++i) u |= std::uint64_t(byte(i)) << (8 * i);
    if (byte(n - 1) & 0x80)
      for (std::size_t i = n; i < 8; ++i) u |= std::uint64_t(0xff) << (8 * i);
    return int_slot(static_cast<std::int64_t>(u));
  }
  le = le.substr(0, n);
  return Slot(Kind::Int, graph.new_text_node(Kind::Int, viewable ? le : graph.store(le)));
}

}  // namespace picklewire
