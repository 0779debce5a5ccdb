#include "shm/lease.hpp"

namespace picklewire::shm {

LoanHold::~LoanHold() {
  try {
    {
      ChannelLock lock(*channel);
      channel->release_sender_hold_locked(slot);
    }
    channel->notify_space();
  } catch (...) {  // lock unusable: the segment is being torn down, nothing to return to
  }
}

SlotLease::~SlotLease() {
  try {
    {
      ChannelLock lock(*channel);
      for (std::uint32_t i = 0; i < references; ++i) channel->release_received_locked(slot);
    }
    channel->notify_space();
  } catch (...) {  // as above
  }
}

}  // namespace picklewire::shm
