// libFuzzer target: a published slot message's record read the way the receiver reads what a
// sender wrote (transport/shm/message_record.hpp). Input: u32 message slot, u8 slot count (1..16),
// u8 flags (bit 0: check queued references), that many raw Slot entries, then the heap. The only
// acceptable outcome besides a valid message is `false`; a message that validates must lie, stream
// and every buffer, inside its slot and inside the heap (its bytes are read to let AddressSanitizer
// check).
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "shm/message_record.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace picklewire::shm;
  if (size < 6) return 0;
  std::uint32_t message_slot;
  std::memcpy(&message_slot, data, 4);
  const std::size_t slot_count = 1 + data[4] % 16;
  const bool check_queued = data[5] & 1;
  data += 6;
  size -= 6;
  if (size < slot_count * sizeof(Slot)) return 0;
  std::vector<Slot> slots(slot_count);
  std::memcpy(slots.data(), data, slot_count * sizeof(Slot));
  data += slot_count * sizeof(Slot);
  size -= slot_count * sizeof(Slot);
  // The heap exactly as large as what is left, on its own allocation (ASan bounds).
  auto* heap = new std::byte[size + 1];
  std::memcpy(heap, data, size);
  ValidatedMessage m;
  std::string error;
  if (validate_message_record(slots, heap, size, message_slot, m, &error, check_queued)) {
    const Slot& ms = slots[m.message_slot];
    if (m.stream_offset + m.stream_size > ms.size || ms.offset + ms.size > size) __builtin_trap();
    volatile std::byte sink{};
    if (m.stream_size) sink = heap[ms.offset + m.stream_offset + m.stream_size - 1];
    for (const BufferRecord& b : m.buffers) {
      if (b.slot >= slot_count) __builtin_trap();
      const Slot& s = slots[b.slot];
      if (s.state != SlotState::used || b.offset + b.size > s.size || s.offset + s.size > size) __builtin_trap();
      if (b.size) sink = heap[s.offset + b.offset + b.size - 1];
    }
    (void)sink;
  } else if (error.empty()) {
    __builtin_trap();  // a refusal always says why
  }
  delete[] heap;
  return 0;
}
