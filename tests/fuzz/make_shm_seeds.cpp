// Seed corpora for the shm fuzz targets, written by the real sender: binds two tiny channels
// (one with a lane, one without), sends a few messages of each shape through them (inline cells;
// slot messages with copied-in and loaned buffers), then dumps what a receiver would read: each
// queued lane cell (shm_lane_cell_fuzz) and each queued ring entry's record with the slot table
// and heap in shm_record_fuzz's input format. Usage: make_shm_seeds CELL_DIR RECORD_DIR
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>

#include "shm/segment.hpp"
#include "shm/shm_endpoint.hpp"

namespace {

using namespace picklewire;

Message message(std::size_t stream_bytes, std::initializer_list<std::size_t> buffers) {
  Message m;
  m.stream = Buffer::copy(std::string(stream_bytes, 's'), true);
  char fill = 'a';
  for (std::size_t n : buffers) {
    m.buffers.push_back(Buffer::copy(std::string(n, fill), fill % 2 == 0));  // writable and read-only ones
    ++fill;
  }
  return m;
}

void write(const std::filesystem::path& p, const std::string& bytes) {
  std::ofstream(p, std::ios::binary).write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

void send_all(detail::SenderImpl& tx) {
  tx.try_send(message(0, {}), std::chrono::milliseconds(100));
  tx.try_send(message(40, {}), std::chrono::milliseconds(100));
  tx.try_send(message(30, {8, 0, 16}), std::chrono::milliseconds(100));
  tx.try_send(message(20, {100, 60}), std::chrono::milliseconds(100));
  tx.try_send(message(64, {300}), std::chrono::milliseconds(100));        // a slot message
  tx.try_send(message(16, {1000, 5, 700}), std::chrono::milliseconds(100));
  Buffer loan = tx.allocate(256);                                   // a loaned buffer
  std::memset(loan.mutable_data(), 'L', loan.size());
  Message with_loan = message(24, {12});
  with_loan.buffers.push_back(loan.slice(16, 200));
  tx.try_send(with_loan, std::chrono::milliseconds(100));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: %s CELL_DIR RECORD_DIR\n", argv[0]);
    return 2;
  }
  std::filesystem::create_directories(argv[1]);
  std::filesystem::create_directories(argv[2]);
  int written = 0;
  for (std::uint32_t lanes : {1u, 0u}) {
    const std::string name = "pwseeds-" + std::to_string(::getpid()) + "-" + std::to_string(lanes);
    EndpointOptions o;
    o.shm.capacity = 4096;
    o.shm.slot_count = 16;
    o.shm.lane_count = lanes;
    o.shm.prefault = false;
    auto rx = shm::bind_receiver(name, o);
    auto tx = shm::connect_sender(name, o);
    send_all(*tx);
    auto segment = shm::SharedMemorySegment::open(name, false);
    const shm::SegmentHeader& h = segment->header();
    for (std::uint32_t l = 0; l < segment->lane_count(); ++l) {
      const shm::Lane& lane = segment->lane(l);
      for (std::uint64_t pos = lane.head.load(); pos != lane.tail.load(); ++pos) {
        const std::byte* cell = lane.cells[pos % shm::kLaneCells];
        write(std::filesystem::path(argv[1]) / ("cell-" + std::to_string(written++)),
              std::string(reinterpret_cast<const char*>(cell), shm::kLaneCellSize));
      }
    }
    for (std::uint64_t pos = h.head.load(); pos != h.tail.load(); ++pos) {
      const std::uint32_t slot = segment->ring()[pos % segment->ring_capacity()];
      std::string input(6, '\0');
      std::memcpy(input.data(), &slot, 4);
      input[4] = static_cast<char>(segment->slot_count() - 1);  // the target reads 1 + byte % 16 slots
      input[5] = 1;                                             // check queued references
      input.append(reinterpret_cast<const char*>(segment->slots()), segment->slot_count() * sizeof(shm::Slot));
      input.append(reinterpret_cast<const char*>(segment->heap()), segment->heap_capacity());
      write(std::filesystem::path(argv[2]) / ("record-" + std::to_string(written++)), input);
    }
    tx.reset();
    rx.reset();  // unlinks the segment
  }
  std::printf("%d seeds\n", written);
  return written > 0 ? 0 : 1;
}
