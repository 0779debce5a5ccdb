// libFuzzer target: any 256 bytes as an inline lane cell, read the way the receiver reads a cell
// another process wrote (transport/shm/lane_cell.hpp). The only acceptable failure is a
// TransportError; anything else, a read outside the cell, a leak or UB is a bug. A message that
// reads back is written into a fresh cell and read again: it must come back the same.
#include <cstddef>
#include <cstdint>
#include <cstring>

#include "picklewire/errors.hpp"
#include "shm/lane_cell.hpp"

namespace {

bool same(const picklewire::Buffer& a, const picklewire::Buffer& b) {
  return a.size() == b.size() && a.readonly() == b.readonly() && (a.size() == 0 || std::memcmp(a.data(), b.data(), a.size()) == 0);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace picklewire;
  // Exactly one cell on the heap, so that AddressSanitizer sees any read past its end.
  auto* cell = new std::byte[shm::kLaneCellSize]();
  std::memcpy(cell, data, std::min<std::size_t>(size, shm::kLaneCellSize));
  try {
    const Message m = shm::read_inline_cell(cell, 0, 0);
    std::uint64_t payload = m.stream.size();
    for (const Buffer& b : m.buffers) payload += b.size();
    if (shm::inline_cell_bytes(m.buffers.size(), 0, payload) > shm::kLaneCellSize) __builtin_trap();
    auto* again = new std::byte[shm::kLaneCellSize]();
    shm::write_inline_cell(again, m);
    const Message back = shm::read_inline_cell(again, 0, 0);
    delete[] again;
    if (!same(back.stream, m.stream) || back.buffers.size() != m.buffers.size()) __builtin_trap();
    for (std::size_t i = 0; i < m.buffers.size(); ++i)
      if (!same(back.buffers[i], m.buffers[i])) __builtin_trap();
  } catch (const TransportError&) {
  }
  delete[] cell;
  return 0;
}
