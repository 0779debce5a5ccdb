#include <algorithm>
#include <bit>
#include <cstring>
#include <limits>
#include <unordered_set>

#include "graph.hpp"
#include "huge_pages.hpp"
#include "picklewire/errors.hpp"
#include "picklewire/ndarray.hpp"
#include "picklewire/value.hpp"

namespace picklewire {

// ---------------------------------------------------------------- Graph

namespace {

// Node chunks grow 10 (in the Graph's inline arena), 20, 40, ... up to kMaxChunkNodes nodes: as many
// as fill a 4 MiB block, the size class the largest chunks are cached in (below).
constexpr std::size_t kMaxChunkNodes = (std::size_t(4) << 20) / sizeof(Node);

// Freed large blocks (container buffers, node chunks, arena refills) are kept per thread, by
// power-of-two size class, for the next graph: a process that loads message after message then
// writes into warm memory instead of having the kernel map, fault in and zero fresh pages for
// every load (glibc serves blocks this large with mmap and gives them back on free). Without it,
// faults were ~20% of loading many small objects and two thirds of loading a list of 200,000 ints.
// Bounded: kBlocksPerClass blocks a class and kMaxCachedBytes in all, per thread.
constexpr int kMinBlockClass = 12;  // 4 KiB: Graph::kLargeBlockBytes
constexpr int kMaxBlockClass = 25;  // 32 MiB; larger blocks go straight to the heap and back
// Under AddressSanitizer nothing is cached, so every use after free is still seen.
#if defined(__SANITIZE_ADDRESS__)
#define PICKLEWIRE_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define PICKLEWIRE_ASAN 1
#endif
#endif
#ifdef PICKLEWIRE_ASAN
constexpr std::size_t kBlocksPerClass = 0;
#else
constexpr std::size_t kBlocksPerClass = 8;
#endif
constexpr std::size_t kMaxCachedBytes = std::size_t(64) << 20;
static_assert(std::size_t(1) << kMinBlockClass == Graph::kLargeBlockBytes);

// Trivially destructible, so a Graph destroyed by another thread_local's destructor (or by a static
// on the main thread, after thread_locals are gone) still finds it; the closer frees the cached
// blocks at thread exit and from then on blocks are freed directly.
struct BlockCache {
  void* blocks[kMaxBlockClass - kMinBlockClass + 1][kBlocksPerClass > 0 ? kBlocksPerClass : 1];
  std::uint8_t count[kMaxBlockClass - kMinBlockClass + 1];
  std::size_t bytes;
  bool closed;
};
thread_local BlockCache t_block_cache;
struct BlockCacheCloser {
  ~BlockCacheCloser() {
    for (auto c = 0; c <= kMaxBlockClass - kMinBlockClass; ++c)
      while (t_block_cache.count[c] > 0) ::operator delete(t_block_cache.blocks[c][--t_block_cache.count[c]]);
    t_block_cache.bytes = 0;
    t_block_cache.closed = true;
  }
};
thread_local BlockCacheCloser t_block_cache_closer;

class CachedHeap final : public std::pmr::memory_resource {
  // Blocks with a stricter alignment than operator new's or above the largest class bypass the
  // cache; the rest are allocated at their class's full size, so any request of the class can
  // reuse them. (Whether a block is cached depends only on bytes and alignment, which pmr passes
  // the same to allocate and deallocate: new and delete always pair up.)
  static bool cacheable(std::size_t bytes, std::size_t align) noexcept {
    return align <= __STDCPP_DEFAULT_NEW_ALIGNMENT__ && bytes - 1 < std::size_t(1) << kMaxBlockClass;  // 0: no
  }
  static int class_of(std::size_t bytes) noexcept {
    return std::max(kMinBlockClass, static_cast<int>(std::bit_width(bytes - 1))) - kMinBlockClass;
  }
  void* do_allocate(std::size_t bytes, std::size_t align) override {
    if (!cacheable(bytes, align)) {
      void* p = ::operator new(bytes, std::align_val_t(align));
      detail::advise_huge_pages(p, bytes);
      return p;
    }
    const int c = class_of(bytes);
    if (t_block_cache.count[c] > 0) {
      t_block_cache.bytes -= std::size_t(1) << (c + kMinBlockClass);
      return t_block_cache.blocks[c][--t_block_cache.count[c]];
    }
    return fresh(std::size_t(1) << (c + kMinBlockClass));
  }
  static void* fresh(std::size_t bytes) {
    void* p = ::operator new(bytes);
    detail::advise_huge_pages(p, bytes);  // not yet touched: the first writes fault in huge pages
    return p;
  }
  void do_deallocate(void* p, std::size_t bytes, std::size_t align) override {
    if (!cacheable(bytes, align)) return ::operator delete(p, std::align_val_t(align));
    const int c = class_of(bytes);
    const std::size_t size = std::size_t(1) << (c + kMinBlockClass);
    BlockCache& cache = t_block_cache;
    if (cache.closed || cache.count[c] == kBlocksPerClass || cache.bytes + size > kMaxCachedBytes)
      return ::operator delete(p);
    (void)&t_block_cache_closer;  // registers the closer for this thread
    cache.blocks[c][cache.count[c]++] = p;
    cache.bytes += size;
  }
  bool do_is_equal(const std::pmr::memory_resource& other) const noexcept override { return this == &other; }
};

}  // namespace

std::pmr::memory_resource* large_blocks() noexcept {
  static auto* heap = new CachedHeap;  // never destroyed: graphs may die during static destruction
  return heap;
}

using Payload = decltype(Node::payload);
template <std::size_t I>
constexpr bool kTrivialAlternative = std::is_trivially_destructible_v<std::variant_alternative_t<I, Payload>>;
constexpr std::size_t kTextIndex = 1, kComplexIndex = 2, kGlobalIndex = 6;
static_assert(std::is_same_v<std::variant_alternative_t<0, Payload>, std::monostate>);
static_assert(std::is_same_v<std::variant_alternative_t<kTextIndex, Payload>, Text> && kTrivialAlternative<kTextIndex>);
static_assert(std::is_same_v<std::variant_alternative_t<kComplexIndex, Payload>, ComplexNumber> &&
              kTrivialAlternative<kComplexIndex>);
static_assert(std::is_same_v<std::variant_alternative_t<kGlobalIndex, Payload>, GlobalName> &&
              kTrivialAlternative<kGlobalIndex>);

Graph::Graph() : memory_(inline_arena_, kInlineArena) {}

void Graph::destroy_chunk(Chunk& c) noexcept {
  if (!c.memory) return;  // a graph without nodes
  auto* nodes = reinterpret_cast<Node*>(c.memory);
  // Only the `owning` nodes have destructors to run: stop after the last of them (a chunk of
  // strings is not visited at all), and skip the variant's destructor dispatch for the others.
  for (std::size_t i = 0, left = c.owning; left != 0 && i < c.used; ++i) {
    const std::size_t payload = nodes[i].payload.index();
    if (payload == 0 || payload == kTextIndex || payload == kComplexIndex || payload == kGlobalIndex) continue;
    nodes[i].~Node();
    --left;
  }
  memory_.deallocate(c.memory, c.capacity * sizeof(Node), alignof(Node));
}

Graph::~Graph() {
  for (Chunk& c : full_) destroy_chunk(c);
  destroy_chunk(current_);
  // Release imported graphs without recursing: a chain of graphs that each import the next would
  // otherwise nest one destructor call per link. The outermost ~Graph on this thread drains a queue.
  static thread_local std::vector<std::shared_ptr<Graph>>* pending = nullptr;
  if (pending) {
    for (auto& g : imports_) pending->push_back(std::move(g));
    return;
  }
  std::vector<std::shared_ptr<Graph>> queue = std::move(imports_);
  pending = &queue;
  while (!queue.empty()) {
    std::shared_ptr<Graph> g = std::move(queue.back());
    queue.pop_back();
    g.reset();  // may push g's imports onto `queue`
  }
  pending = nullptr;
}

void Graph::limit_nodes(std::size_t n) noexcept {
  node_limit_ = n;
  current_.stop = current_.used + std::min(current_.capacity - current_.used, n - std::min(n, node_count()));
}

void Graph::make_room() {
  if (node_count() >= node_limit_) throw NodeLimitReached{};
  if (current_.used == current_.capacity) next_chunk();
  limit_nodes(node_limit_);  // the new stop
}

void Graph::next_chunk() {
  if (!current_.memory) {  // the first chunk
    current_ = {static_cast<std::byte*>(memory_.allocate(kFirstChunkNodes * sizeof(Node), alignof(Node))), 0,
                kFirstChunkNodes};
    return;
  }
  const std::size_t capacity = std::min<std::size_t>(current_.capacity * 2, kMaxChunkNodes);
  full_.reserve(full_.size() + 1);  // may throw: before anything changes hands
  auto* memory = static_cast<std::byte*>(memory_.allocate(capacity * sizeof(Node), alignof(Node)));
  full_.push_back(current_);
  full_nodes_ += current_.used;
  current_ = {memory, 0, capacity};
}

Node* Graph::new_node(Kind kind) {
  if (current_.used == current_.stop) [[unlikely]] make_room();
  void* at = current_.memory + current_.used * sizeof(Node);
  Node* n = nullptr;
  switch (kind) {
    case Kind::Int:  // big int: LE two's complement bytes
    case Kind::Str:
    case Kind::Bytes:
    case Kind::ByteArray: n = new (at) Node(kind, std::in_place_type<Text>); break;
    case Kind::Complex: n = new (at) Node(kind, std::in_place_type<ComplexNumber>); break;
    case Kind::Tuple:
    case Kind::List:
    case Kind::Set:
    case Kind::FrozenSet: n = new (at) Node(kind, std::in_place_type<Items>, &memory_); break;
    case Kind::Dict: n = new (at) Node(kind, std::in_place_type<Entries>, &memory_); break;
    case Kind::PickleBuffer: {
      auto* buffer = new (memory_.arena_allocate(sizeof(Buffer), alignof(Buffer))) Buffer();
      n = new (at) Node(kind, std::in_place_type<ArenaBuffer>, buffer);
      break;
    }
    case Kind::Global: n = new (at) Node(kind, std::in_place_type<GlobalName>); break;
    case Kind::Object:
      n = new (at) Node(kind, std::in_place_type<std::unique_ptr<ObjectData>>, std::make_unique<ObjectData>());
      break;
    case Kind::NDArray:
      n = new (at) Node(kind, std::in_place_type<std::unique_ptr<NDArray>>, std::make_unique<NDArray>());
      break;
    case Kind::None:
    case Kind::Bool:
    case Kind::Float: n = new (at) Node(kind); break;
  }
  const std::size_t payload = n->payload.index();
  if (payload != 0 && payload != kTextIndex && payload != kComplexIndex && payload != kGlobalIndex) ++current_.owning;
  ++current_.used;
  return n;
}

std::string_view Graph::store(std::string_view bytes) {
  if (bytes.empty()) return {};
  void* p = memory_.arena_allocate(bytes.size(), 1);
  std::memcpy(p, bytes.data(), bytes.size());
  return {static_cast<const char*>(p), bytes.size()};
}

bool Graph::reaches(const Graph* target) const {
  std::vector<const Graph*> stack{this};
  std::unordered_set<const Graph*> seen{this};
  while (!stack.empty()) {
    const Graph* g = stack.back();
    stack.pop_back();
    if (g == target) return true;
    for (const auto& i : g->imports_)
      if (seen.insert(i.get()).second) stack.push_back(i.get());
  }
  return false;
}

void Graph::import(const std::shared_ptr<Graph>& other) {
  if (!other || other.get() == this) return;
  if (std::find(imports_.begin(), imports_.end(), other) != imports_.end()) return;
  if (imported_.load(std::memory_order_relaxed) && other->reaches(this))
    throw Error("picklewire: linking these two values would make their graphs own each other; "
                "build values that refer to each other with one picklewire::Builder");
  other->imported_.store(true, std::memory_order_relaxed);
  imports_.push_back(other);
}

Slot Graph::adopt(const Value& v) {
  import(v.graph());
  return v.slot();
}

// ---------------------------------------------------------------- helpers

namespace {

[[noreturn]] void wrong_kind(const char* what, Kind have) {
  throw Error(std::string("picklewire::Value: ") + what + " on a value of kind " + std::string(to_string(have)));
}


// Minimal little-endian two's complement bytes of v (CPython's encode_long; 0 -> empty).
std::vector<std::byte> encode_int64(std::int64_t v) {
  std::vector<std::byte> out;
  if (v == 0) return out;
  auto u = static_cast<std::uint64_t>(v);
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>((u >> (8 * i)) & 0xff));
  while (out.size() > 1) {
    auto last = std::to_integer<unsigned>(out.back());
    auto prev = std::to_integer<unsigned>(out[out.size() - 2]);
    if ((last == 0x00 && !(prev & 0x80)) || (last == 0xff && (prev & 0x80))) out.pop_back();
    else break;
  }
  return out;
}

}  // namespace

std::string_view to_string(Kind k) noexcept {
  switch (k) {
    case Kind::None: return "None";
    case Kind::Bool: return "bool";
    case Kind::Int: return "int";
    case Kind::Float: return "float";
    case Kind::Complex: return "complex";
    case Kind::Str: return "str";
    case Kind::Bytes: return "bytes";
    case Kind::ByteArray: return "bytearray";
    case Kind::Tuple: return "tuple";
    case Kind::List: return "list";
    case Kind::Dict: return "dict";
    case Kind::Set: return "set";
    case Kind::FrozenSet: return "frozenset";
    case Kind::PickleBuffer: return "PickleBuffer";
    case Kind::Global: return "global";
    case Kind::Object: return "object";
    case Kind::NDArray: return "ndarray";
  }
  return "?";
}

// ---------------------------------------------------------------- Builder

Builder::Builder() : graph_(std::make_shared<Graph>()) {}

namespace {
Value text_value(const std::shared_ptr<Graph>& g, Kind kind, std::string_view data) {
  Node* n = g->new_node(kind);
  n->text().data = g->store(data);
  return Value(node_slot(n), g);
}
Value items_value(const std::shared_ptr<Graph>& g, Kind kind, const std::vector<Value>& items) {
  Node* n = g->new_node(kind);
  Items& out = n->items();
  out.reserve(items.size());
  for (const Value& v : items) out.push_back(g->adopt(v));
  return Value(node_slot(n), g);
}
}  // namespace

Value Builder::str(std::string_view utf8) { return text_value(graph_, Kind::Str, utf8); }
Value Builder::bytes(std::string_view data) { return text_value(graph_, Kind::Bytes, data); }
Value Builder::bytearray(std::string_view data) { return text_value(graph_, Kind::ByteArray, data); }

Value Builder::big_int(std::span<const std::byte> le) {
  // Drop redundant sign bytes, then keep it inline when it fits int64.
  std::size_t n = le.size();
  while (n > 1) {
    auto last = std::to_integer<unsigned>(le[n - 1]);
    auto prev = std::to_integer<unsigned>(le[n - 2]);
    if ((last == 0x00 && !(prev & 0x80)) || (last == 0xff && (prev & 0x80))) --n;
    else break;
  }
  if (n == 0) return Value(0);
  if (n == 1 && std::to_integer<unsigned>(le[0]) == 0) return Value(0);
  if (n <= 8) {
    std::uint64_t u = 0;
    for (std::size_t i = 0; i < n; ++i) u |= std::uint64_t(std::to_integer<unsigned>(le[i])) << (8 * i);
    if (std::to_integer<unsigned>(le[n - 1]) & 0x80)
      for (std::size_t i = n; i < 8; ++i) u |= std::uint64_t(0xff) << (8 * i);
    return Value(static_cast<long long>(u));
  }
  return text_value(graph_, Kind::Int, std::string_view(reinterpret_cast<const char*>(le.data()), n));
}

Value Builder::complex(double real, double imag) {
  Node* n = graph_->new_node(Kind::Complex);
  std::get<ComplexNumber>(n->payload) = {real, imag};
  return Value(node_slot(n), graph_);
}

Value Builder::tuple(std::vector<Value> items) { return items_value(graph_, Kind::Tuple, items); }
Value Builder::list(std::vector<Value> items) { return items_value(graph_, Kind::List, items); }
Value Builder::set(std::vector<Value> items) { return items_value(graph_, Kind::Set, items); }
Value Builder::frozenset(std::vector<Value> items) { return items_value(graph_, Kind::FrozenSet, items); }

Value Builder::dict(std::vector<std::pair<Value, Value>> items) {
  Node* n = graph_->new_node(Kind::Dict);
  Entries& out = n->entries();
  out.reserve(items.size());
  for (const auto& [k, v] : items) out.emplace_back(graph_->adopt(k), graph_->adopt(v));
  return Value(node_slot(n), graph_);
}

Value Builder::pickle_buffer(Buffer buffer) {
  Node* n = graph_->new_node(Kind::PickleBuffer);
  n->buffer() = std::move(buffer);
  return Value(node_slot(n), graph_);
}

Value Builder::global(std::string_view module, std::string_view qualname) {
  Node* n = graph_->new_node(Kind::Global);
  n->global() = {graph_->store(module), graph_->store(qualname)};
  return Value(node_slot(n), graph_);
}

Value Builder::object(ObjectForm form, const Value& callable, const Value& args, const Value& kwargs) {
  Node* n = graph_->new_node(Kind::Object);
  ObjectData& o = n->object();
  o.form = form;
  o.callable = graph_->adopt(callable);
  o.args = graph_->adopt(args);
  o.kwargs = graph_->adopt(kwargs);
  return Value(node_slot(n), graph_);
}

Value Builder::ndarray(NDArray array) {
  Node* n = graph_->new_node(Kind::NDArray);
  n->array() = std::move(array);
  return Value(node_slot(n), graph_);
}

// ---------------------------------------------------------------- Value

Value::Value(unsigned long long i) {
  if (i <= static_cast<unsigned long long>(std::numeric_limits<std::int64_t>::max())) {
    slot_.kind = Kind::Int;
    slot_.i = static_cast<std::int64_t>(i);
    return;
  }
  std::byte le[9];
  for (int k = 0; k < 8; ++k) le[k] = static_cast<std::byte>((i >> (8 * k)) & 0xff);
  le[8] = std::byte{0};
  *this = Builder().big_int(le);
}
Value::Value(const char* utf8) : Value(std::string_view(utf8)) {}
Value::Value(std::string_view utf8) { *this = Builder().str(utf8); }

Value Value::str(std::string_view utf8) { return Builder().str(utf8); }
Value Value::bytes(std::string_view data) { return Builder().bytes(data); }
Value Value::bytearray(std::string_view data) { return Builder().bytearray(data); }
Value Value::big_int(std::span<const std::byte> le) { return Builder().big_int(le); }
Value Value::complex(double real, double imag) { return Builder().complex(real, imag); }
Value Value::tuple(std::vector<Value> items) { return Builder().tuple(std::move(items)); }
Value Value::list(std::vector<Value> items) { return Builder().list(std::move(items)); }
Value Value::dict(std::vector<std::pair<Value, Value>> items) { return Builder().dict(std::move(items)); }
Value Value::set(std::vector<Value> items) { return Builder().set(std::move(items)); }
Value Value::frozenset(std::vector<Value> items) { return Builder().frozenset(std::move(items)); }
Value Value::pickle_buffer(Buffer buffer) { return Builder().pickle_buffer(std::move(buffer)); }
Value Value::global(std::string_view m, std::string_view q) { return Builder().global(m, q); }
Value Value::object(ObjectForm f, const Value& c, const Value& a, const Value& k) { return Builder().object(f, c, a, k); }
Value Value::ndarray(NDArray array) { return Builder().ndarray(std::move(array)); }

void Value::append(const Value& item) {
  Node* n = node_of(slot_);
  if (kind() == Kind::List) n->items().push_back(graph_->adopt(item));
  else if (kind() == Kind::Object) n->object().list_items.push_back(graph_->adopt(item));
  else wrong_kind("append", kind());
}

void Value::set_item(const Value& key, const Value& value) {
  Node* n = node_of(slot_);
  if (kind() == Kind::Dict) n->entries().emplace_back(graph_->adopt(key), graph_->adopt(value));
  else if (kind() == Kind::Object) n->object().dict_items.emplace_back(graph_->adopt(key), graph_->adopt(value));
  else wrong_kind("set_item", kind());
}

void Value::add(const Value& item) {
  Node* n = node_of(slot_);
  if (kind() == Kind::Set) n->items().push_back(graph_->adopt(item));
  else if (kind() == Kind::Object) n->object().set_items.push_back(graph_->adopt(item));
  else wrong_kind("add", kind());
}

void Value::add_state(const Value& state) {
  if (kind() != Kind::Object) wrong_kind("add_state", kind());
  node_of(slot_)->object().states.push_back(graph_->adopt(state));
}

bool Value::as_bool() const {
  if (kind() != Kind::Bool) wrong_kind("as_bool", kind());
  return slot_.b;
}

std::int64_t Value::as_int() const {
  if (kind() != Kind::Int) wrong_kind("as_int", kind());
  if (!slot_.is_inline) throw Error("picklewire::Value::as_int: the int does not fit in 64 bits");
  return slot_.i;
}

std::vector<std::byte> Value::int_bytes() const {
  if (kind() != Kind::Int) wrong_kind("int_bytes", kind());
  if (slot_.is_inline) return encode_int64(slot_.i);
  std::string_view d = slot_.node->text().data;
  auto* p = reinterpret_cast<const std::byte*>(d.data());
  return {p, p + d.size()};
}

double Value::as_float() const {
  if (kind() == Kind::Float) return slot_.f;
  if (fits_int64()) return static_cast<double>(slot_.i);
  wrong_kind("as_float", kind());
}

std::complex<double> Value::as_complex() const {
  if (kind() != Kind::Complex) wrong_kind("as_complex", kind());
  const auto& c = std::get<ComplexNumber>(slot_.node->payload);
  return {c.real, c.imag};
}

std::string_view Value::as_str() const {
  if (kind() != Kind::Str) wrong_kind("as_str", kind());
  return slot_.node->text().data;
}

std::string_view Value::as_bytes() const {
  if (kind() != Kind::Bytes && kind() != Kind::ByteArray) wrong_kind("as_bytes", kind());
  return slot_.node->text().data;
}

const Buffer& Value::as_buffer() const {
  if (kind() != Kind::PickleBuffer) wrong_kind("as_buffer", kind());
  return slot_.node->buffer();
}

std::string_view Value::global_module() const {
  if (kind() != Kind::Global) wrong_kind("global_module", kind());
  return slot_.node->global().module;
}

std::string_view Value::global_name() const {
  if (kind() != Kind::Global) wrong_kind("global_name", kind());
  return slot_.node->global().name;
}

const NDArray& Value::as_ndarray() const {
  if (kind() != Kind::NDArray) wrong_kind("as_ndarray", kind());
  return slot_.node->array();
}

ObjectParts Value::object_parts() const {
  if (kind() != Kind::Object) wrong_kind("object_parts", kind());
  const ObjectData& o = slot_.node->object();
  auto v = [this](const Slot& s) { return Value(s, graph_); };
  ObjectParts p;
  p.form = o.form;
  p.callable_args_kwargs = {v(o.callable), v(o.args), v(o.kwargs)};
  for (const Slot& s : o.states) p.states.push_back(v(s));
  for (const Slot& s : o.list_items) p.list_items.push_back(v(s));
  for (const auto& [k, x] : o.dict_items) p.dict_items.emplace_back(v(k), v(x));
  for (const Slot& s : o.set_items) p.set_items.push_back(v(s));
  return p;
}

std::size_t Value::size() const {
  switch (kind()) {
    case Kind::Tuple:
    case Kind::List:
    case Kind::Set:
    case Kind::FrozenSet: return slot_.node->items().size();
    case Kind::Dict: return slot_.node->entries().size();
    default: wrong_kind("size", kind());
  }
}

Value Value::item(std::size_t i) const {
  switch (kind()) {
    case Kind::Tuple:
    case Kind::List:
    case Kind::Set:
    case Kind::FrozenSet: return Value(slot_.node->items().at(i), graph_);
    default: wrong_kind("item", kind());
  }
}

Value Value::key(std::size_t i) const {
  if (kind() != Kind::Dict) wrong_kind("key", kind());
  return Value(slot_.node->entries().at(i).first, graph_);
}

Value Value::value(std::size_t i) const {
  if (kind() != Kind::Dict) wrong_kind("value", kind());
  return Value(slot_.node->entries().at(i).second, graph_);
}

Value Value::get(std::string_view key, bool* found) const {
  if (kind() != Kind::Dict) wrong_kind("get", kind());
  for (const auto& [k, v] : slot_.node->entries()) {
    if (kind_of(k) == Kind::Str && k.node->text().data == key) {
      if (found) *found = true;
      return Value(v, graph_);
    }
  }
  if (found) *found = false;
  return Value();
}

Kind Value::kind() const noexcept { return kind_of(slot_); }

bool Value::is_same(const Value& o) const noexcept {
  if (kind() != o.kind()) return false;
  if (!slot_.is_inline || !o.slot_.is_inline) return !slot_.is_inline && !o.slot_.is_inline && slot_.node == o.slot_.node;
  switch (kind()) {
    case Kind::None: return true;
    case Kind::Bool: return slot_.b == o.slot_.b;
    case Kind::Int: return slot_.i == o.slot_.i;
    case Kind::Float: return std::memcmp(&slot_.f, &o.slot_.f, sizeof(double)) == 0;
    default: return false;
  }
}

}  // namespace picklewire
