// src/pickler_output.hpp — internal: the pickler's output stream (with CPython's framing) and its
// memo table. Split from pickler.cpp so each piece can be read (and tested) on its own.
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <memory>
#include <new>
#include <utility>
#include <string_view>
#include <vector>

#include "huge_pages.hpp"
#include "opcodes.hpp"
#include "picklewire/buffer.hpp"
#include "picklewire/pickler.hpp"

namespace picklewire::detail {

// Protocol 4 framing, as CPython's C pickler does it (_pickle.c): a frame opens at the first write
// after the previous one closed, and is committed at the start of the next save() once it holds at
// least kFrameSizeTarget bytes. A frame smaller than kFrameSizeMin loses its header on commit.
// A bytes/str payload of at least kFrameSizeTarget bytes is written outside any frame: the open
// frame is committed first, then header + payload go out unframed (_Pickler_write_bytes).
inline constexpr std::size_t kFrameSizeTarget = 64 * 1024;
inline constexpr std::size_t kFrameSizeMin = 4;
inline constexpr std::size_t kFrameHeaderSize = 9;

class PickleOutput {
 public:
  PickleOutput() = default;
  PickleOutput(const PickleOutput&) = delete;
  PickleOutput& operator=(const PickleOutput&) = delete;
  ~PickleOutput() {
    if (data_ != inline_) std::free(data_);
  }

  void set_framing(bool on) noexcept {
    framing_ = on;
    update_frame_state();
  }

  // With a sink, the stream goes out in pieces of about kPieceSize bytes as they are final (at a
  // committed frame, or at an opcode boundary without framing) and the buffer is reused.
  void set_sink(const StreamSink* sink) noexcept {
    sink_ = sink;
    update_frame_state();
  }
  // Hands what is left to the sink (after the last commit_frame()).
  void finish() {
    if (sink_) flush();
  }

  void put(std::uint8_t byte) {
    *reserve(1) = static_cast<char>(byte);
    ++len_;
  }
  void write(const void* data, std::size_t n) {
    char* dst = reserve(n);
    if (n) std::memcpy(dst, data, n);
    len_ += n;
  }
  void write(std::string_view s) { write(s.data(), s.size()); }

  // An opcode with a little-endian length (or index) argument of `width` bytes.
  // (Every int, memo index and length goes through here: room for the widest form is reserved and
  // all 8 value bytes stored at once; only 1 + width of them count.)
  void put_with_le(std::uint8_t opcode, std::uint64_t value, int width) {
    char* dst = reserve(9);
    dst[0] = static_cast<char>(opcode);
    if constexpr (std::endian::native == std::endian::little) {
      std::memcpy(dst + 1, &value, 8);
    } else {
      for (int i = 0; i < width; ++i) dst[1 + i] = static_cast<char>((value >> (8 * i)) & 0xff);
    }
    len_ += 1 + static_cast<std::size_t>(width);
  }

  // Header + payload, the payload outside any frame when it is large (_Pickler_write_bytes).
  void write_payload(const char* header, std::size_t header_size, const void* data, std::size_t n) {
    const bool bypass = n >= kFrameSizeTarget;
    const bool framing = framing_;
    if (bypass) {
      commit_frame();
      framing_ = false;
      update_frame_state();
      if (sink_) {  // the payload goes to the sink from where it is, never copied
        write(header, header_size);
        flush();
        if (n) (*sink_)(data, n);
        framing_ = framing;
        update_frame_state();
        return;
      }
    }
    // One reservation for both parts: a large payload is copied exactly once.
    char* dst = reserve(header_size + n);
    std::memcpy(dst, header, header_size);
    if (n) std::memcpy(dst + header_size, data, n);
    len_ += header_size + n;
    framing_ = framing;
    update_frame_state();
  }

  // A run of small writes with one capacity check (Pickler::save_scalar_run): begin_run makes room
  // for `max_bytes` (opening a frame if one is due, as any write would) and returns where to
  // write; boundary_at() is where the next opcode boundary has work (the open frame reaches
  // kFrameSizeTarget, or a piece is ready for the sink): a write position at or past it must first
  // go through opcode_boundary(); end_run(p) ends the run at p.
  char* begin_run(std::size_t max_bytes) { return reserve(max_bytes); }
  const char* boundary_at() const noexcept {
    if (boundary_len_ == kNever) return data_ + cap_ + 1;  // never reached: nothing to do
    return data_ + boundary_len_;
  }
  void end_run(const char* p) noexcept { len_ = static_cast<std::size_t>(p - data_); }

  // Called at the start of every save(), like _Pickler_OpcodeBoundary.
  void opcode_boundary() {
    if (len_ >= boundary_len_) [[unlikely]] {
      if (framing_) commit_frame();
      else flush();  // (only with a sink)
    }
  }

  void commit_frame() {
    if (!framing_ || !frame_open_) return;
    const std::size_t frame_len = len_ - frame_start_ - kFrameHeaderSize;
    char* q = data_ + frame_start_;
    if (frame_len >= kFrameSizeMin) {
      q[0] = static_cast<char>(op::FRAME);
      auto le = static_cast<std::uint64_t>(frame_len);
      if constexpr (std::endian::native == std::endian::big) le = __builtin_bswap64(le);
      std::memcpy(q + 1, &le, 8);
    } else {
      std::memmove(q, q + kFrameHeaderSize, frame_len);
      len_ -= kFrameHeaderSize;
    }
    frame_open_ = false;
    update_frame_state();
    if (sink_ && len_ >= kPieceSize) flush();
  }

  std::size_t size() const noexcept { return len_; }

  // Hands the bytes over: a heap buffer without copying it; bytes still in the inline buffer are
  // copied into one block that holds them and the Buffer's owner together (one allocation).
  Buffer take() {
    Buffer b;
    if (data_ == inline_) {
      std::shared_ptr<std::byte[]> block = std::make_shared_for_overwrite<std::byte[]>(std::max<std::size_t>(len_, 1));
      std::byte* bytes = block.get();
      std::memcpy(bytes, inline_, len_);
      b = Buffer::take(std::shared_ptr<void>(std::move(block), bytes), bytes, len_, /*readonly=*/false);
    } else {
      b = Buffer::with_free_function(data_, len_, /*readonly=*/false, [](void* p, void*) { std::free(p); });
    }
    data_ = inline_;
    len_ = 0;
    cap_ = kInlineBytes;
    frame_open_ = false;
    update_frame_state();
    return b;
  }

 private:
  // Room for n more bytes at data_ + len_ (after opening a frame if one is due). Every write
  // comes through here: the usual case is one test inline, the rest out of line.
  char* reserve(std::size_t n) {
    if (frame_due_ || n > cap_ - len_) [[unlikely]]
      return reserve_slow(n);
    return data_ + len_;
  }
  [[gnu::noinline]] char* reserve_slow(std::size_t n) {
    const std::size_t need = len_ + n + (frame_due_ ? kFrameHeaderSize : 0);
    if (need > cap_) grow(need);
    if (frame_due_) {
      frame_start_ = len_;
      frame_open_ = true;
      len_ += kFrameHeaderSize;  // filled in by commit_frame
      update_frame_state();
    }
    return data_ + len_;
  }

  // The two questions every write and every save() ask, answered when the framing state changes
  // rather than on each write: is a frame due to open, and at what length does the next opcode
  // boundary have work (the open frame is full; without framing, a piece is ready for the sink).
  static constexpr std::size_t kNever = SIZE_MAX;
  void update_frame_state() noexcept {
    frame_due_ = framing_ && !frame_open_;
    if (framing_) boundary_len_ = frame_open_ ? frame_start_ + kFrameHeaderSize + kFrameSizeTarget : kNever;
    else boundary_len_ = sink_ ? kPieceSize : kNever;
  }

  // Everything written so far to the sink (no frame is open: all of it is final).
  void flush() {
    if (len_) (*sink_)(data_, len_);
    len_ = 0;
  }

  void grow(std::size_t need) {
    std::size_t cap = cap_;
    while (cap < need) cap = cap > (SIZE_MAX / 2) ? need : cap * 2;
    void* p = data_ == inline_ ? std::malloc(cap) : std::realloc(data_, cap);
    if (!p) throw std::bad_alloc();
    if (data_ == inline_) std::memcpy(p, inline_, len_);
    data_ = static_cast<char*>(p);
    advise_huge_pages(data_ + len_, cap - len_);  // the part not written yet
    cap_ = cap;
  }

  // A dump starts writing here, inside the PickleOutput (on the caller's stack): a small dump
  // allocates only the Buffer take() returns; a bigger one moves to the heap and grows there.
  static constexpr std::size_t kInlineBytes = 512;
  char inline_[kInlineBytes];
  char* data_ = inline_;
  std::size_t len_ = 0, cap_ = kInlineBytes;
  std::size_t frame_start_ = 0;
  bool frame_open_ = false;
  bool framing_ = false;
  bool frame_due_ = false;              // framing_ && !frame_open_
  std::size_t boundary_len_ = kNever;  // see update_frame_state
  // A piece is a few frames: big enough that the sink is called rarely, small enough that the
  // buffer stays in cache and never needs fresh pages.
  static constexpr std::size_t kPieceSize = 256 * 1024;
  const StreamSink* sink_ = nullptr;
};

// Node identity -> memo index, open addressing (the pickler's PyMemoTable). A value with
// kInProgress set marks a tuple / frozenset / reduce that is being written and is not memoised
// yet; its low bits hold the memo size when it was entered (see Pickler::enter_unmemoised).
//
// The entry array outlives the dump: each thread keeps its last one (up to kMaxCachedEntries) for
// its next dump, and entries carry the number of the dump that wrote them, so a new dump starts
// with an empty table without clearing it. A small dump then allocates nothing for its memo, and a
// big one writes into warm memory instead of faulting in (and zeroing) a fresh table.
class MemoTable {
 public:
  static constexpr std::uint32_t kInProgress = 0x80000000u;
  static constexpr std::uint32_t kAbsent = 0xffffffffu;

  MemoTable() {
    Cache& cache = t_cache;
    std::uint32_t generation = cache.generation;  // a fresh array is all epoch 0: valid in any generation
    if (cache.entries && !cache.closed) {
      entries_ = std::exchange(cache.entries, nullptr);
      capacity_ = cache.capacity;
      generation = cache.entries_generation;
    }
    epoch_ = ++cache.epoch;
    if (epoch_ == 0) {  // 2^32 dumps on this thread: epochs start again, in a new generation
      ++cache.generation;
      epoch_ = cache.epoch = 1;
    }
    // An array last written in an older generation may hold any epoch: it is cleared once.
    if (generation != cache.generation) std::fill(entries_, entries_ + capacity_, Entry{});
    generation_ = cache.generation;
    if (capacity_ < 64) rehash(64);
    mask_ = capacity_ - 1;
    full_at_ = full_at(capacity_);
  }
  ~MemoTable() {
    Cache& cache = t_cache;
    if (cache.closed || cache.entries || capacity_ > kMaxCachedEntries) {
      release(entries_);
      return;
    }
    (void)&t_cache_closer;  // registers the closer for this thread
    cache.entries = entries_;
    cache.capacity = capacity_;
    cache.entries_generation = generation_;
  }
  MemoTable(const MemoTable&) = delete;
  MemoTable& operator=(const MemoTable&) = delete;

  // Room for about n keys without rehashing.
  void reserve(std::size_t n) {
    std::size_t capacity = capacity_;
    while (n * 3 >= capacity * 2) capacity *= 2;
    if (capacity != capacity_) rehash(capacity);
  }

  std::uint32_t get(const void* key) const noexcept {
    for (std::size_t i = slot_of(key);; i = (i + 1) & mask_) {
      const Entry& e = entries_[i];
      if (e.epoch != epoch_) return kAbsent;
      if (e.key == key) return e.value;
    }
  }

  // get() and, when key has no real index (absent, or only in progress), set(key, value), in one
  // probe: for a node memoised right after it is looked up. Returns the index found, or kAbsent
  // when key was given `value`.
  std::uint32_t get_or_set(const void* key, std::uint32_t value) {
    auto [e, fresh] = slot_for(key);
    if (!fresh && !(e.value & kInProgress)) return e.value;
    e.value = value;
    return kAbsent;
  }

  void set(const void* key, std::uint32_t value) { slot_for(key).first.value = value; }

 private:
  struct Entry;
  // The entry for `key` (probing from its hash), claimed for it if it had none (true): the one
  // probe set() and get_or_set() share.
  std::pair<Entry&, bool> slot_for(const void* key) {
    if (used_ >= full_at_) rehash(capacity_ * 2);
    for (std::size_t i = slot_of(key);; i = (i + 1) & mask_) {
      Entry& e = entries_[i];
      if (e.epoch != epoch_) {
        e = {key, 0, epoch_};
        ++used_;
        return {e, true};
      }
      if (e.key == key) return {e, false};
    }
  }

  struct Entry {
    const void* key = nullptr;
    std::uint32_t value = 0;
    std::uint32_t epoch = 0;  // the dump that wrote it; any other: empty (same 16 bytes as before)
  };
  static constexpr std::size_t kMaxCachedEntries = std::size_t(2) << 20;  // 32 MiB

  // Trivially destructible (usable from any thread_local destructor); the closer frees the
  // cached array at thread exit and stops caching.
  struct Cache {
    Entry* entries;  // new[]'d, `capacity` of them
    std::size_t capacity;
    std::uint32_t entries_generation;  // the generation its epochs belong to
    std::uint32_t epoch;               // the last dump's
    std::uint32_t generation;          // bumped when epoch wraps
    bool closed;
  };
  static inline thread_local Cache t_cache{};
  struct CacheCloser {
    ~CacheCloser() {
      release(t_cache.entries);
      t_cache.entries = nullptr;
      t_cache.closed = true;
    }
  };
  static inline thread_local CacheCloser t_cache_closer;

  // Nodes of one graph sit next to each other in its arena and are mostly visited in allocation
  // order: a hash that keeps neighbours in neighbouring slots (as CPython's memo does, ptr >> 3)
  // turns the lookups into a near-sequential scan instead of one cache miss per node.
  // `capacity` empty entries (epoch 0: empty for every dump). A big table (a dump of millions of
  // objects) gets huge pages before it is first written.
  static Entry* allocate(std::size_t capacity) {
    void* raw = ::operator new(capacity * sizeof(Entry));
    advise_huge_pages(raw, capacity * sizeof(Entry));
    return new (raw) Entry[capacity];
  }
  static void release(Entry* entries) noexcept { ::operator delete(entries); }  // (trivially destructible)

  std::size_t slot_of(const void* key) const noexcept {
    return static_cast<std::size_t>(reinterpret_cast<std::uintptr_t>(key) >> 3) & mask_;
  }

  // The number of entries at which an insertion first grows the table (two thirds full, as
  // PyMemoTable: (used + 1) * 3 >= capacity * 2), kept so that insertions compare, not multiply.
  static std::size_t full_at(std::size_t capacity) noexcept { return (2 * capacity + 2) / 3 - 1; }

  void rehash(std::size_t capacity) {
    Entry* old = std::exchange(entries_, allocate(capacity));
    const std::size_t old_capacity = std::exchange(capacity_, capacity);
    mask_ = capacity - 1;
    full_at_ = full_at(capacity);
    used_ = 0;
    for (std::size_t i = 0; i < old_capacity; ++i)
      if (old[i].epoch == epoch_) set(old[i].key, old[i].value);
    release(old);
  }

  Entry* entries_ = nullptr;
  std::size_t capacity_ = 0;
  std::size_t used_ = 0, mask_ = 0;
  std::size_t full_at_ = 0;  // full_at(capacity_)
  std::uint32_t epoch_ = 0;
  std::uint32_t generation_ = 0;
};

}  // namespace picklewire::detail
