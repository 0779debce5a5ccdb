// transport/shm/layout.hpp — the bytes of a picklewire shared-memory segment (wire format v2).
//
// One segment per channel, a POSIX shared-memory object named "picklewire.NAME" (/dev/shm on
// Linux), created 0600 by the channel's Receiver. All integers are native-endian (one host).
//
//   [SegmentHeader]   magic "PKLWSHM1", version, sizes and offsets of the parts below, the
//                     creator's pid + start time, the claimed-lanes mask, the control lock,
//                     wake-up words, ring indices, usage counters.
//   [Slot x slot_count]        one entry per heap block in use: (offset, size) in the heap, the
//                              pid of the sender that still holds it, and reference counts.
//   [uint32 x slot_count]      indices of the used slots sorted by heap offset (derived state,
//                              rebuilt after a crash).
//   [uint32 x ring_capacity]   the descriptor ring: each entry names the message slot of one
//                              published message; [head, tail) are the queued messages. Used by
//                              senders that have no lane.
//   [Lane x lane_count]        one single-producer queue per connected Sender (up to kMaxLanes):
//                              kLaneCells cells of kLaneCellSize bytes. A cell either carries a
//                              whole small message inline (no slot, no lock: the sender writes the
//                              cell and bumps tail, the receiver copies it out and bumps head) or
//                              names a message slot like a ring entry (published and taken under
//                              the lock). One queue per sender keeps its messages in order.
//   [heap]                     heap_capacity bytes, 64-byte granular, pre-faulted at bind.
//
// A message slot starts with a MessageRecord: the stream and every buffer as (slot, offset, size,
// flags), offsets relative to the start of the named slot. Buffers copied in by the sender live in
// the message slot itself (slot == kSameSlot); loaned buffers live in their own slot. The receiver
// copies the record out of the segment and validates every index, offset and size before use.
//
// Everything that changes control state (slot table, ring, lane ownership, slot cells, counters)
// happens under one robust, process-shared pthread mutex; only inline lane cells move without
// it, and they reference no slot. A process that dies holding the lock leaves EOWNERDEAD to the
// next locker, which rebuilds the derived state (sorted index, queued counts, claimed-lanes mask)
// from the ground truth (slot entries, ring and lane contents, lane owners) before continuing:
// see Channel::repair_locked().
#pragma once

#include <pthread.h>

#include <atomic>
#include <cstddef>
#include <cstdint>

namespace picklewire::shm {

inline constexpr std::uint64_t kSegmentMagic = 0x314d4853574c4b50ull;  // "PKLWSHM1" little-endian
inline constexpr std::uint32_t kSegmentVersion = 2;
inline constexpr std::uint32_t kMessageMagic = 0x4753454du;            // "MESG"
inline constexpr std::uint32_t kSameSlot = 0xffffffffu;
inline constexpr std::uint64_t kHeapAlign = 64;
inline constexpr char kNamePrefix[] = "picklewire.";
// "picklewire.hello-PID-ID": a same-host ZeroMQ sender's answer box (mailbox.hpp), not a channel.
inline constexpr char kMailboxMarker[] = "hello-";
inline constexpr std::uint32_t kMaxLanes = 64;        // one bit each in SegmentHeader::lanes_claimed
inline constexpr std::uint32_t kLaneCells = 32;       // cells per lane: messages a sender may have queued there
inline constexpr std::uint32_t kLaneCellSize = 256;   // bytes per cell; an inline message fits in one

enum class ReceiverState : std::uint32_t { open = 1, closed = 2 };
enum class SlotState : std::uint32_t { free = 0, used = 1 };

// Flags of a buffer in a MessageRecord.
inline constexpr std::uint32_t kBufferWritable = 1u << 0;

struct alignas(64) SegmentHeader {
  std::uint64_t magic;           // written last at creation: a segment without it is not initialised
  std::uint32_t version;
  std::uint32_t header_size;     // sizeof(SegmentHeader)
  std::uint64_t total_size;      // bytes of the whole segment
  std::uint64_t slot_table_offset;
  std::uint64_t sorted_offset;
  std::uint64_t ring_offset;
  std::uint64_t heap_offset;
  std::uint64_t heap_capacity;
  std::uint32_t slot_count;
  std::uint32_t ring_capacity;
  std::int32_t creator_pid;
  std::uint32_t reserved0;
  std::uint64_t creator_start_time;  // /proc/PID/stat field 22: tells a reused pid apart
  std::atomic<std::uint32_t> receiver_state;
  std::uint32_t lane_count;
  std::uint64_t lanes_offset;
  // Bit i: lane i has an owner (or is closing with messages left). Changed under the lock, read
  // by the receiver's poll without it; rarely written, so it stays in the receiver's cache.
  std::atomic<std::uint64_t> lanes_claimed;

  alignas(64) pthread_mutex_t lock;  // robust + process-shared; guards everything below
  std::uint32_t used_count;          // entries of the sorted index in use
  std::uint32_t reserved1;           // unused
  std::uint64_t bytes_in_use;
  std::uint64_t peak_bytes_in_use;
  std::uint64_t repairs;             // times a dead lock holder's state was repaired

  alignas(64) std::atomic<std::uint64_t> tail;   // next ring position a sender fills
  std::atomic<std::uint32_t> data_seq;           // futex: bumped by a publish that sees receiver_waiting
  std::atomic<std::uint32_t> receiver_waiting;   // receivers (at most one) about to block on data_seq

  alignas(64) std::atomic<std::uint64_t> head;   // next ring position the receiver takes
  std::atomic<std::uint32_t> space_seq;          // futex: bumped when slots or ring entries free up
  std::atomic<std::uint32_t> space_waiters;      // senders blocked on space_seq
};

struct Slot {
  std::uint64_t offset;        // in the heap
  std::uint64_t size;          // bytes (a multiple of kHeapAlign)
  std::uint64_t sender_start;  // start time of sender_pid (pid reuse)
  std::int32_t sender_pid;     // sender still holding the slot (allocating, filling, loaned); 0: none
  SlotState state;
  std::uint32_t queued;        // references from queued messages (derived: recomputed on repair)
  std::uint32_t received;      // references held by the receiver's leases
};

// One sender's queue. Owner fields change under the lock; tail is written only by the owner,
// head only by the receiver, each on its own cache line.
struct alignas(64) Lane {
  std::int32_t owner_pid;              // 0: free
  std::atomic<std::uint32_t> closing;  // the owner's Sender is gone: freed once the receiver drained it
  std::uint64_t owner_start;           // start time of owner_pid (pid reuse)
  alignas(64) std::atomic<std::uint64_t> tail;  // next cell the owner fills; [head, tail) are queued
  alignas(64) std::atomic<std::uint64_t> head;  // next cell the receiver takes
  alignas(64) std::byte cells[kLaneCells][kLaneCellSize];
};

enum class LaneCellKind : std::uint32_t { inline_message = 1, slot_message = 2 };

// The start of a lane cell. An inline message follows it as buffer_count LaneBuffers, the stream,
// then each buffer's bytes, packed.
struct LaneCell {
  LaneCellKind kind;
  std::uint32_t message_slot;  // slot_message: as a ring entry
  std::uint32_t stream_size;   // inline_message
  std::uint32_t buffer_count;  // inline_message
};
struct LaneBuffer {
  std::uint32_t size;
  std::uint32_t flags;  // kBufferWritable
};

struct MessageRecord {
  std::uint32_t magic;
  std::uint32_t buffer_count;
  std::uint64_t stream_offset;  // within the message slot
  std::uint64_t stream_size;
};

struct BufferRecord {
  std::uint32_t slot;  // kSameSlot: the message slot; otherwise a loaned slot's index
  std::uint32_t flags;
  std::uint64_t offset;  // within that slot
  std::uint64_t size;
};

static_assert(std::atomic<std::uint32_t>::is_always_lock_free && std::atomic<std::uint64_t>::is_always_lock_free);
static_assert(sizeof(std::atomic<std::uint32_t>) == 4, "futex words must be plain 32-bit integers");

}  // namespace picklewire::shm
