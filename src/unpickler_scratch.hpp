// src/unpickler_scratch.hpp — internal: the unpickler's working memory. The value stack and the
// dense memo (ItemStack of Items), the mark stack, and the per-thread cache that lends one load's
// emptied vectors to the next load on the same thread (ScratchLease). The pickle VM
// (unpickler.cpp) is their only user.
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <iterator>
#include <limits>
#include <memory>
#include <utility>
#include <type_traits>
#include <vector>

#include "graph.hpp"
#include "huge_pages.hpp"

namespace picklewire::unpickler_detail {

constexpr std::uint32_t kEmptyMemo = std::numeric_limits<std::uint32_t>::max();

// A value-stack (and memo) entry: the slot and the nesting depth of the value as seen when it was
// built (containers: 1 + deepest child; scalars 0). kEmptyMemo marks an unused memo entry.
struct Item {
  Slot slot;
  std::uint32_t depth = 0;
};

// Copies a slot field by field. The slot being copied was usually written a few instructions
// earlier with field-sized stores (kind + is_inline, then the payload), and a whole-Slot copy is
// one 16-byte load the CPU cannot forward from those stores: a stall of ~15 cycles, which was half
// the time of a MEMOIZE. Field-sized loads are forwarded.
[[gnu::always_inline]] inline void copy_slot(Slot& to, const Slot& from) noexcept {
  to.kind = from.kind;
  to.is_inline = from.is_inline;
  std::memcpy(&to.i, &from.i, sizeof to.i);  // the union's bytes, whichever member is active
}


// The slots of a run of Items, for vector::insert.
struct SlotIterator {
  using iterator_category = std::forward_iterator_tag;
  using value_type = Slot;
  using difference_type = std::ptrdiff_t;
  using pointer = const Slot*;
  using reference = const Slot&;
  const Item* at;
  reference operator*() const noexcept { return at->slot; }
  pointer operator->() const noexcept { return &at->slot; }
  SlotIterator& operator++() noexcept { ++at; return *this; }
  SlotIterator operator++(int) noexcept { return {at++}; }
  bool operator==(const SlotIterator& o) const noexcept { return at == o.at; }
  bool operator!=(const SlotIterator& o) const noexcept { return at != o.at; }
};

// The value stack and the dense memo. Storage stays constructed (all capacity_ items of it)
// and a push writes the slot and depth straight into it: `vector::push_back(Item{...})` made GCC
// assemble the Item in a stack temporary with narrower stores and copy it with one 16-byte load,
// which the CPU cannot forward from those stores — a stall on every push, a third of the time of
// loading a list of ints. (And vector::emplace_back was not inlined: ~37 instructions a MEMOIZE.)
class ItemStack {
 public:
  ItemStack() = default;
  ItemStack(ItemStack&& o) noexcept
      : items_(std::move(o.items_)),
        data_(std::exchange(o.data_, nullptr)),
        capacity_(std::exchange(o.capacity_, 0)),
        size_(std::exchange(o.size_, 0)) {}
  ItemStack& operator=(ItemStack&& o) noexcept {
    items_ = std::move(o.items_);
    data_ = std::exchange(o.data_, nullptr);
    capacity_ = std::exchange(o.capacity_, 0);
    size_ = std::exchange(o.size_, 0);
    return *this;
  }
  std::size_t size() const noexcept { return size_; }
  std::size_t capacity() const noexcept { return capacity_; }
  Item& back() noexcept { return data_[size_ - 1]; }
  const Item* data() const noexcept { return data_; }  // null until the first push
  Item& operator[](std::size_t i) noexcept { return data_[i]; }
  const Item& operator[](std::size_t i) const noexcept { return data_[i]; }
  [[gnu::always_inline]] void push(Slot s, std::uint32_t depth) {
    if (size_ == capacity_) [[unlikely]] reserve(std::max<std::size_t>(64, capacity_ * 2));
    Item& it = data_[size_++];
    copy_slot(it.slot, s);
    it.depth = depth;
  }
  void push_back(const Item& it) { push(it.slot, it.depth); }
  // Makes room for `n` more items and returns the first; the caller writes all `n`.
  Item* extend(std::size_t n) {
    if (n > capacity_ - size_) reserve(std::max<std::size_t>({64, capacity_ * 2, size_ + n}));
    Item* first = data_ + size_;
    size_ += n;
    return first;
  }
  void pop_back() noexcept { --size_; }
  void resize(std::size_t n, const Item& fill = {}) {  // shrinks (drops the top items) or grows with `fill`
    if (n > capacity_) reserve(n);
    for (std::size_t i = size_; i < n; ++i) data_[i] = fill;
    size_ = n;
  }
  void clear() noexcept { size_ = 0; }

 private:
  // Grows to n items, all constructed (the dense memo of a big stream is tens of MB: it gets huge
  // pages before it is first written).
  [[gnu::noinline]] void reserve(std::size_t n) {
    ItemArray grown(static_cast<Item*>(::operator new(n * sizeof(Item))));
    detail::advise_huge_pages(grown.get(), n * sizeof(Item));
    std::uninitialized_copy(data_, data_ + capacity_, grown.get());
    std::uninitialized_value_construct(grown.get() + capacity_, grown.get() + n);
    items_ = std::move(grown);
    data_ = items_.get();
    capacity_ = n;
  }
  static_assert(std::is_trivially_destructible_v<Item> && std::is_trivially_copyable_v<Item>);
  struct FreeItems {
    void operator()(Item* p) const noexcept { ::operator delete(p); }  // (Item is trivially destructible)
  };
  using ItemArray = std::unique_ptr<Item, FreeItems>;
  ItemArray items_;
  // items_'s data and size, kept here: vector::size() divides by sizeof(Item) on every push.
  Item* data_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t size_ = 0;
};

// The scratch vectors of one load (value stack, marks, dense memo) die with it, so each thread
// keeps the last load's vectors, emptied, for its next load: a stream of N memoised objects then
// writes into warm memory instead of faulting in fresh pages (and copying on every doubling) each
// time. Bounded (kMaxCachedScratchBytes); a nested load (persistent_load calling load) or a
// concurrent one on another thread simply gets vectors of its own.
struct Scratch {
  ItemStack stack;
  ItemStack memo;
  std::vector<std::size_t> marks;
  std::size_t bytes() const {
    return (stack.capacity() + memo.capacity()) * sizeof(Item) + marks.capacity() * sizeof(std::size_t);
  }
};
// Lends this thread's cached Scratch (or a new one) for one load and takes it back, emptied, when
// the load is done (unpickler_scratch.cpp).
class ScratchLease {
 public:
  ScratchLease();
  ~ScratchLease();
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;
  Scratch& operator*() const { return *scratch_; }

 private:
  std::unique_ptr<Scratch> scratch_;
};

}  // namespace picklewire::unpickler_detail
