/// \file picklewire/buffer.hpp — a view of bytes plus whatever keeps those bytes alive.
///
/// A Buffer is (pointer, size, readonly) and an owner: a type-erased reference that holds the
/// memory (a heap block, a shared-memory slot lease, a zmq::message_t, a pickle stream). Copying a
/// Buffer copies the view and shares the owner; the memory lives until the last Buffer (or slice)
/// referring to it is gone. Nothing here ever copies payload bytes except Buffer::copy.
///
/// Ownership verbs (folly IOBuf style):
///   allocate(n)              new heap memory, writable, uninitialised
///   copy(p, n)               new heap memory holding a copy of [p, p+n)
///   wrap(p, n)               borrow: NO owner; the caller keeps [p, p+n) valid for as long as any
///                            Buffer (or slice, or graph, or Message) made from it is alive
///   take(owner, p, n)        shared ownership through any shared_ptr
///   with_free_function(...)  hand over memory with a `void(void* data, void* hint)` releaser, the
///                            same shape zmq::message_t takes
/// Slicing (Arrow style): slice(offset, size) views a sub-range and keeps the parent's owner.
///
/// Thread safety: a Buffer is a value; distinct Buffers sharing one owner may be copied and dropped
/// from any thread (the owner is reference-counted atomically).
/// The vocabulary layer is header-only: transports and the codec share it without linking each other.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>

namespace picklewire {

class Buffer {
 public:
  using FreeFunction = void (*)(void* data, void* hint);

  Buffer() = default;

  static Buffer allocate(std::size_t size) {
    std::shared_ptr<std::byte[]> block(new std::byte[size == 0 ? 1 : size]);
    std::byte* data = block.get();
    return Buffer(data, size, /*readonly=*/false, std::shared_ptr<void>(std::move(block), data));
  }
  static Buffer copy(const void* data, std::size_t size, bool readonly = false) {
    Buffer b = allocate(size);
    if (size) std::memcpy(b.data_, data, size);
    b.readonly_ = readonly;
    return b;
  }
  static Buffer copy(std::string_view bytes, bool readonly = false) { return copy(bytes.data(), bytes.size(), readonly); }
  static Buffer wrap(const void* data, std::size_t size) {
    return Buffer(static_cast<std::byte*>(const_cast<void*>(data)), size, /*readonly=*/true, nullptr);
  }
  static Buffer wrap_mutable(void* data, std::size_t size) {
    return Buffer(static_cast<std::byte*>(data), size, /*readonly=*/false, nullptr);
  }
  static Buffer take(std::shared_ptr<void> owner, void* data, std::size_t size, bool readonly) {
    return Buffer(static_cast<std::byte*>(data), size, readonly, std::move(owner));
  }
  static Buffer with_free_function(void* data, std::size_t size, bool readonly, FreeFunction free_fn,
                                   void* hint = nullptr) {
    std::shared_ptr<void> owner(data, [free_fn, hint](void* p) {
      if (free_fn) free_fn(p, hint);
    });
    return Buffer(static_cast<std::byte*>(data), size, readonly, std::move(owner));
  }

  /// A view of [offset, offset+size) that keeps this buffer's owner alive. Throws std::out_of_range.
  Buffer slice(std::size_t offset, std::size_t size) const {
    if (offset > size_ || size > size_ - offset)
      throw std::out_of_range("Buffer::slice(" + std::to_string(offset) + ", " + std::to_string(size) +
                              ") out of range for a buffer of " + std::to_string(size_) + " bytes");
    return Buffer(data_ + offset, size, readonly_, owner_);
  }
  /// The same memory, marked readonly (a writable view can always be narrowed, never widened).
  Buffer as_readonly() const { Buffer b = *this; b.readonly_ = true; return b; }

  const std::byte* data() const noexcept { return data_; }
  /// Throws std::logic_error when the buffer is readonly.
  std::byte* mutable_data() const {
    if (readonly_) throw std::logic_error("Buffer::mutable_data() on a readonly buffer");
    return data_;
  }
  std::size_t size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  bool readonly() const noexcept { return readonly_; }
  std::span<const std::byte> bytes() const noexcept { return {data_, size_}; }
  std::string_view chars() const noexcept { return {reinterpret_cast<const char*>(data_), size_}; }
  const std::shared_ptr<void>& owner() const noexcept { return owner_; }

  /// True when [data(), data()+size()) lies within [begin, begin+length): how a transport recognises
  /// memory that already lives in its segment.
  bool lies_within(const void* begin, std::size_t length) const noexcept {
    auto b = reinterpret_cast<std::uintptr_t>(begin);
    auto p = reinterpret_cast<std::uintptr_t>(data_);
    return p >= b && p - b <= length && size_ <= length - (p - b);
  }

 private:
  Buffer(std::byte* data, std::size_t size, bool readonly, std::shared_ptr<void> owner)
      : data_(data), size_(size), readonly_(readonly), owner_(std::move(owner)) {}

  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  bool readonly_ = true;
  std::shared_ptr<void> owner_;
};

/// Byte equality of two views (not identity).
inline bool same_bytes(const Buffer& a, const Buffer& b) noexcept {
  return a.size() == b.size() && (a.size() == 0 || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

}  // namespace picklewire
