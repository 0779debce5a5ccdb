// transport/shm/message_record.hpp — reading the record of a published slot message (layout.hpp:
// MessageRecord + BufferRecord table at the start of the message slot). The record was written
// by another process: every index, offset and size is checked against the slot table and the heap
// before anything is believed. A pure function over the bytes it is given (a fuzz target calls it).
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "shm/layout.hpp"

namespace picklewire::shm {

// A message record copied out of the segment and validated.
struct ValidatedMessage {
  std::uint32_t message_slot = 0;
  std::uint64_t stream_offset = 0;  // within the message slot
  std::uint64_t stream_size = 0;
  std::vector<BufferRecord> buffers;  // slot resolved (never kSameSlot), offsets within that slot
};

// Parses the record in `message_slot` of `slots` (whose blocks lie in `heap`, `capacity` bytes)
// into `out` (its buffer vector is reused). False: invalid, and *error (when given) says why. On
// true, the stream lies within the message slot and every buffer within a used slot, and both
// within the heap. `check_queued`: a buffer in another slot must name one with a queued
// reference (a loan the sender published).
bool validate_message_record(std::span<const Slot> slots, const std::byte* heap, std::uint64_t capacity,
                             std::uint32_t message_slot, ValidatedMessage& out, std::string* error,
                             bool check_queued = true);

}  // namespace picklewire::shm
