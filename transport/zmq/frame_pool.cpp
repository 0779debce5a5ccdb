#include "zmq/frame_pool.hpp"

#include <atomic>
#include <new>
#include <utility>

namespace picklewire::zmq_transport {

struct FramePool::Shared {
  struct Block {
    Shared* shared;
    Block* next;
    alignas(std::max_align_t) std::byte data[kBlockBytes];
  };

  std::atomic<Block*> returned{nullptr};  // pushed by any thread, taken whole by the owner
  std::atomic<std::size_t> refs{1};       // the owner, plus one per block out
  Block* free = nullptr;                  // the owner's
  std::size_t created = 0;                // the owner's

  ~Shared() {
    release_list(free);
    release_list(returned.load(std::memory_order_acquire));
  }
  static void release_list(Block* b) {
    while (b) delete std::exchange(b, b->next);
  }
  void unref() {
    if (refs.fetch_sub(1, std::memory_order_acq_rel) == 1) delete this;
  }

  // ZeroMQ's free function for a pooled frame (any thread).
  static void give_back(void* /*data*/, void* hint) {
    Block* b = static_cast<Block*>(hint);
    Shared* s = b->shared;
    Block* head = s->returned.load(std::memory_order_relaxed);
    do {
      b->next = head;
    } while (!s->returned.compare_exchange_weak(head, b, std::memory_order_release, std::memory_order_relaxed));
    s->unref();
  }
};

FramePool::FramePool() : shared_(new Shared) {}

FramePool::~FramePool() {
  if (shared_) shared_->unref();
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
  s.refs.fetch_add(1, std::memory_order_relaxed);  // the owner holds a reference: the count cannot be 0 here
  try {
    return zmq::message_t(b->data, size, &Shared::give_back, b);
  } catch (...) {  // ZeroMQ could not allocate its message header: the block was never handed out
    b->next = s.free;
    s.free = b;
    s.refs.fetch_sub(1, std::memory_order_relaxed);
    throw;
  }
}

std::size_t FramePool::blocks_created() const { return shared_ ? shared_->created : 0; }

}  // namespace picklewire::zmq_transport
