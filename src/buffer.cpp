#include "picklewire/buffer.hpp"

#include "huge_pages.hpp"

#include <new>
#include <stdexcept>
#include <string>

namespace picklewire {

Buffer Buffer::allocate(std::size_t size) {
  std::shared_ptr<std::byte[]> block(new std::byte[size == 0 ? 1 : size]);
  std::byte* data = block.get();
  detail::advise_huge_pages(data, size);  // before the caller's first write faults the pages in
  return Buffer(data, size, /*readonly=*/false, std::shared_ptr<void>(std::move(block), data));
}

Buffer Buffer::copy(const void* data, std::size_t size, bool readonly) {
  Buffer b = allocate(size);
  if (size) std::memcpy(b.data_, data, size);
  b.readonly_ = readonly;
  return b;
}

Buffer Buffer::with_free_function(void* data, std::size_t size, bool readonly, FreeFunction free_fn, void* hint) {
  std::shared_ptr<void> owner(data, [free_fn, hint](void* p) {
    if (free_fn) free_fn(p, hint);
  });
  return Buffer(static_cast<std::byte*>(data), size, readonly, std::move(owner));
}

Buffer Buffer::slice(std::size_t offset, std::size_t size) const {
  if (offset > size_ || size > size_ - offset)
    throw std::out_of_range("Buffer::slice(" + std::to_string(offset) + ", " + std::to_string(size) +
                            ") out of range for a buffer of " + std::to_string(size_) + " bytes");
  return Buffer(data_ + offset, size, readonly_, owner_);
}

std::byte* Buffer::mutable_data() const {
  if (readonly_) throw std::logic_error("Buffer::mutable_data() on a readonly buffer");
  return data_;
}

bool Buffer::lies_within(const void* begin, std::size_t length) const noexcept {
  auto b = reinterpret_cast<std::uintptr_t>(begin);
  auto p = reinterpret_cast<std::uintptr_t>(data_);
  return p >= b && p - b <= length && size_ <= length - (p - b);
}

}  // namespace picklewire
