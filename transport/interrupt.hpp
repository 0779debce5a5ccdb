// transport/interrupt.hpp — EndpointOptions::interrupt as every transport's waits use it: a wait
// that has an interrupt check wakes at least every interrupt_period to ask it, and nothing that
// the wait already did (a filled slot, built frames) is redone or given back while it waits.
#pragma once

#include <algorithm>
#include <chrono>
#include <functional>
#include <optional>

#include "picklewire/endpoint_options.hpp"

namespace picklewire {

class InterruptCheck {
 public:
  explicit InterruptCheck(const EndpointOptions& options)
      : check_(options.interrupt), period_(std::max(options.interrupt_period, std::chrono::milliseconds(1))) {}

  bool active() const noexcept { return static_cast<bool>(check_); }
  // True when the caller asked the wait to stop (the waiting call then throws Interrupted).
  bool requested() const { return check_ && check_(); }
  // The longest a wait may sleep before asking again: until `deadline`, but with a check no
  // later than one period from `now`. nullopt: no check and no deadline, sleep as long as needed.
  template <class TimePoint>
  std::optional<TimePoint> next_check(const std::optional<TimePoint>& deadline, TimePoint now) const {
    if (!active()) return deadline;
    const TimePoint next = now + period_;
    return deadline && *deadline < next ? *deadline : next;
  }

 private:
  std::function<bool()> check_;
  std::chrono::milliseconds period_;
};

}  // namespace picklewire
