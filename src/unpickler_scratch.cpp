// The per-thread cache of the unpickler's scratch vectors (see unpickler_scratch.hpp).
#include "unpickler_scratch.hpp"

namespace picklewire::unpickler_detail {

namespace {

constexpr std::size_t kMaxCachedScratchBytes = std::size_t(32) << 20;
// Trivially destructible (usable from any thread_local destructor); the closer frees the cached
// scratch at thread exit and stops caching.
struct CachedScratch {
  Scratch* scratch = nullptr;
  bool closed = false;
};
thread_local CachedScratch t_cached_scratch;
struct CachedScratchCloser {
  ~CachedScratchCloser() {
    delete t_cached_scratch.scratch;
    t_cached_scratch = {nullptr, true};
  }
};
thread_local CachedScratchCloser t_cached_scratch_closer;


}  // namespace

ScratchLease::ScratchLease() : scratch_(std::exchange(t_cached_scratch.scratch, nullptr)) {
  if (!scratch_) scratch_ = std::make_unique<Scratch>();
}

ScratchLease::~ScratchLease() {
  scratch_->stack.clear();
  scratch_->memo.clear();
  scratch_->marks.clear();
  if (!t_cached_scratch.closed && !t_cached_scratch.scratch && scratch_->bytes() <= kMaxCachedScratchBytes) {
    (void)&t_cached_scratch_closer;  // registers the closer for this thread
    t_cached_scratch.scratch = scratch_.release();
  }
}

}  // namespace picklewire::unpickler_detail
