#include "shm/message_record.hpp"

#include <cstring>

namespace picklewire::shm {
namespace {

// [offset, offset+size) within [0, limit), overflow-safe.
bool in_range(std::uint64_t offset, std::uint64_t size, std::uint64_t limit) {
  return offset <= limit && size <= limit - offset;
}

}  // namespace

bool validate_message_record(std::span<const Slot> slot_table, const std::byte* heap, std::uint64_t capacity,
                             std::uint32_t message_slot, ValidatedMessage& m, std::string* error, bool check_queued) {
  const Slot* slots = slot_table.data();
  const auto slot_count = static_cast<std::uint32_t>(slot_table.size());
  auto fail = [&](std::string why) {
    if (error) *error = std::move(why);
    return false;
  };
  if (message_slot >= slot_count) return fail("message slot index " + std::to_string(message_slot) + " out of range");
  const Slot ms = slots[message_slot];  // copy: a peer may scribble on the segment meanwhile
  if (ms.state != SlotState::used) return fail("message slot " + std::to_string(message_slot) + " is not in use");
  if (!in_range(ms.offset, ms.size, capacity))
    return fail("message slot " + std::to_string(message_slot) + " lies outside the heap");
  if (ms.size < sizeof(MessageRecord)) return fail("message slot too small for a record");
  const std::byte* base = heap + ms.offset;
  MessageRecord record;
  std::memcpy(&record, base, sizeof record);
  if (record.magic != kMessageMagic) return fail("bad message record magic");
  const std::uint64_t table_bytes = std::uint64_t(record.buffer_count) * sizeof(BufferRecord);
  if (!in_range(sizeof(MessageRecord), table_bytes, ms.size))
    return fail("buffer count " + std::to_string(record.buffer_count) + " does not fit the message slot");
  if (!in_range(record.stream_offset, record.stream_size, ms.size))
    return fail("stream (offset " + std::to_string(record.stream_offset) + ", size " +
                std::to_string(record.stream_size) + ") outside its slot of " + std::to_string(ms.size) + " bytes");
  m.message_slot = message_slot;
  m.stream_offset = record.stream_offset;
  m.stream_size = record.stream_size;
  m.buffers.resize(record.buffer_count);
  if (table_bytes) std::memcpy(m.buffers.data(), base + sizeof(MessageRecord), table_bytes);
  for (std::size_t i = 0; i < m.buffers.size(); ++i) {
    BufferRecord& b = m.buffers[i];
    if (b.slot == kSameSlot) b.slot = message_slot;
    if (b.slot >= slot_count)
      return fail("buffer " + std::to_string(i) + " names slot " + std::to_string(b.slot) + ", out of range");
    const Slot s = slots[b.slot];
    if (s.state != SlotState::used || !in_range(s.offset, s.size, capacity))
      return fail("buffer " + std::to_string(i) + " names slot " + std::to_string(b.slot) + ", which is not in use");
    if (check_queued && b.slot != message_slot && s.queued == 0)
      return fail("buffer " + std::to_string(i) + " names slot " + std::to_string(b.slot) + " without a reference");
    if (!in_range(b.offset, b.size, s.size))
      return fail("buffer " + std::to_string(i) + " (offset " + std::to_string(b.offset) + ", size " +
                  std::to_string(b.size) + ") lies outside its slot of " + std::to_string(s.size) + " bytes");
  }
  return true;
}

}  // namespace picklewire::shm
