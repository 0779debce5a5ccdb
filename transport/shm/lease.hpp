// transport/shm/lease.hpp — the owners behind Buffers that point into a segment: a sender's hold on
// a slot it loaned out with allocate(), and a receiver's references on the slots of a message it
// received. Dropping the last Buffer runs the destructor, which gives the slot back (from any
// thread) and wakes senders waiting for space.
#pragma once

#include <cstdint>
#include <memory>

#include "shm/channel.hpp"

namespace picklewire::shm {

// A sender's hold on a loaned slot: dropping the last Buffer made from allocate() releases it.
struct LoanHold {
  LoanHold(std::shared_ptr<Channel> c, std::uint32_t s) : channel(std::move(c)), slot(s) {}
  LoanHold(const LoanHold&) = delete;
  LoanHold& operator=(const LoanHold&) = delete;
  ~LoanHold();
  std::shared_ptr<Channel> channel;
  std::uint32_t slot;
};

// A receiver's reference on one slot of one received message.
struct SlotLease {
  SlotLease(std::shared_ptr<Channel> c, std::uint32_t s, std::uint32_t r) : channel(std::move(c)), slot(s), references(r) {}
  SlotLease(const SlotLease&) = delete;
  SlotLease& operator=(const SlotLease&) = delete;
  ~SlotLease();
  std::shared_ptr<Channel> channel;
  std::uint32_t slot;
  std::uint32_t references;  // how many buffer records of the message named this slot
};

}  // namespace picklewire::shm
