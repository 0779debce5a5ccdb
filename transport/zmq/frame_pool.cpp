#include "zmq/frame_pool.hpp"

#include <atomic>
#include <cstdint>
#include <new>
#include <utility>

namespace picklewire::zmq_transport {
namespace {
std::byte closed_tag;  // its address marks a pool whose owner is gone (never dereferenced)
}  // namespace

// While the owner lives, nothing is written per frame that the other thread also writes except
// the list of returned blocks, which the owner takes whole only when its own list is empty (a
// reference count per frame made both threads write one cache line per message). Once the owner
// is gone, blocks still out are counted down in `outstanding`, and the last one frees the pool.
struct FramePool::Shared {
  struct Block {
    Block* next;
    Shared* shared;
    alignas(std::max_align_t) std::byte data[kBlockBytes];
  };
  static Block* closed() { return reinterpret_cast<Block*>(&closed_tag); }

  std::atomic<Block*> returned{nullptr};     // pushed by any thread, taken whole by the owner; closed() once it is gone
  std::atomic<std::int64_t> outstanding{0};  // after close: blocks still out, less those back (may dip below 0 meanwhile)
  Block* free = nullptr;                     // the owner's
  std::size_t created = 0;                   // the owner's

  static std::int64_t release_list(Block* b) {
    std::int64_t n = 0;
    for (; b; ++n) delete std::exchange(b, b->next);
    return n;
  }
  void close() {
    std::int64_t out = static_cast<std::int64_t>(created);
    out -= release_list(std::exchange(free, nullptr));
    out -= release_list(returned.exchange(closed(), std::memory_order_acq_rel));
    if (outstanding.fetch_add(out, std::memory_order_acq_rel) + out == 0) delete this;
  }

  // ZeroMQ's free function for a pooled frame (any thread).
  static void give_back(void* /*data*/, void* hint) {
    Block* b = static_cast<Block*>(hint);
    Shared* s = b->shared;
    Block* head = s->returned.load(std::memory_order_acquire);
    for (;;) {
      if (head == closed()) {
        delete b;
        if (s->outstanding.fetch_sub(1, std::memory_order_acq_rel) == 1) delete s;
        return;
      }
      b->next = head;
      if (s->returned.compare_exchange_weak(head, b, std::memory_order_release, std::memory_order_acquire)) return;
    }
  }
};

FramePool::FramePool() : shared_(new Shared) {}

FramePool::~FramePool() {
  if (shared_) shared_->close();
}

FramePool::FramePool(FramePool&& other) noexcept : shared_(std::exchange(other.shared_, nullptr)) {}

zmq::message_t FramePool::frame(std::size_t size) {
  Shared& s = *shared_;
  if (size > kBlockBytes) return zmq::message_t(size);
  if (!s.free) s.free = s.returned.exchange(nullptr, std::memory_order_acquire);
  Shared::Block* b = s.free;
  if (b) {
    s.free = b->next;
  } else {
    if (s.created == kMaxBlocks) return zmq::message_t(size);
    b = new Shared::Block;  // (its bytes uninitialised: the writer fills what it sends)
    b->shared = &s;
    ++s.created;
  }
  try {
    return zmq::message_t(b->data, size, &Shared::give_back, b);
  } catch (...) {  // ZeroMQ could not allocate its message header: the block was never handed out
    b->next = s.free;
    s.free = b;
    throw;
  }
}

std::size_t FramePool::blocks_created() const { return shared_ ? shared_->created : 0; }

}  // namespace picklewire::zmq_transport
