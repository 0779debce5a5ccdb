// transport/zmq/frame_pool.hpp — recycled memory for the header frames a FrameWriter builds.
//
// Why: frame 0 (the descriptors, and in wire version 2 the inline stream and small buffers: about
// 1.1 KiB for a 1 KiB message) is allocated by the sending thread and freed by libzmq's I/O thread
// once its bytes are written. Above glibc's per-thread cache (1 KiB chunks) every such malloc and
// free takes the arena's lock against the other thread and lets free() trim the arena with
// madvise; perf showed that as about a quarter of the sending thread's time per 1 KiB message
// (docs/performance.md, "A pool for frame 0"). The pool hands out fixed-size blocks instead and
// takes them back from whichever thread ZeroMQ frees them on.
//
// Threads: frame() is called by the one thread that owns the pool (a FrameWriter's); blocks come
// back from any thread, lock-free (pushed on a list the owner takes whole, so no ABA).
// Lifetime: frames that stay queued in ZeroMQ after their writer (and its socket) are gone still
// come back safely: the pool's state lives until its owner and every block out are done with it.
#pragma once

#include <zmq.hpp>

#include <cstddef>

namespace picklewire::zmq_transport {

class FramePool {
 public:
  // Bytes of frame per block: room for an inline stream and an inline buffer at the default
  // inline_max_bytes (4 KiB each). Larger frames come from ZeroMQ's own allocation.
  static constexpr std::size_t kBlockBytes = 8192;
  // Blocks in existence at most (1 MiB): enough for a send queue of small messages at the default
  // high-water mark's first hundreds; beyond it frames come from ZeroMQ's allocation again.
  static constexpr std::size_t kMaxBlocks = 128;

  FramePool();
  ~FramePool();
  FramePool(FramePool&& other) noexcept;
  FramePool(const FramePool&) = delete;
  FramePool& operator=(const FramePool&) = delete;
  FramePool& operator=(FramePool&&) = delete;

  // An uninitialised frame of `size` bytes, from a free block when it fits.
  zmq::message_t frame(std::size_t size);

  // Blocks created so far (for tests: reuse shows as a count that stops growing).
  std::size_t blocks_created() const;

 private:
  struct Shared;
  Shared* shared_;
};

}  // namespace picklewire::zmq_transport
