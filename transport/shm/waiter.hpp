// transport/shm/waiter.hpp — the one way either side of a channel waits: for room (a sender) or
// for a message (the receiver). Spin, yielding the CPU now and then, for a short window (the peer
// usually answers within microseconds, and a futex sleep costs both sides a system call), then
// sleep on a futex word of the segment until the other side bumps it.
//
// Each wait says exactly what it waits for with a lock-free `ready(seq)` look (a lane cell, a ring
// entry, freed memory, a queued message) and only that wakes it into another attempt: the futex
// word is shared by several reasons to wake, and a wake-up for another reason just goes back to
// sleep. The sleep is announce-then-look-again (Dekker): the waiter counts itself in `waiters`,
// then evaluates `ready`; the notifier changes state, then reads `waiters` and, when non-zero,
// bumps `seq` and wakes. Either the waiter sees the change or the notifier sees the waiter, and a
// bump after the waiter read `seq` makes its futex_wait return at once.
//
// While it waits, the waiter runs the caller's periodic housekeeping (liveness checks, reclaiming
// a dead process's slots) and asks the interrupt check (EndpointOptions::interrupt) at least
// every interrupt period; neither the sleep nor the spin outlasts the next of these. Nothing the
// caller did before the wait (a filled slot) is redone: the waiter only re-runs `attempt`.
#pragma once

#include <time.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <optional>
#include <thread>

#include "interrupt.hpp"
#include "picklewire/endpoint_options.hpp"
#include "shm/wakeup.hpp"

namespace picklewire::shm {

using Clock = std::chrono::steady_clock;

inline std::optional<Clock::time_point> deadline_for(Timeout timeout, Clock::time_point now) {
  if (!timeout) return std::nullopt;
  return now + *timeout;
}

// CLOCK_MONOTONIC_COARSE: the last timer tick (a few ms old), read from the vDSO without a
// hardware clock read.
inline std::chrono::nanoseconds coarse_now() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
  return std::chrono::seconds(ts.tv_sec) + std::chrono::nanoseconds(ts.tv_nsec);
}

// A futex word in the segment and the count of those asleep on it, which the notifier reads
// before it pays for a bump and a wake (Channel::notify_space / notify_data).
struct WakeWord {
  std::atomic<std::uint32_t>& seq;
  std::atomic<std::uint32_t>& waiters;
};

struct WaitPlan {
  WakeWord word;
  std::optional<Clock::time_point> deadline;  // nullopt: no limit
  std::chrono::nanoseconds spin;              // busy-wait this long (from the first failed attempt)
  std::chrono::milliseconds housekeeping_period;
  const InterruptCheck& interrupt;
};

enum class WaitOutcome { done, timed_out, interrupted };

// Ring polls between sched_yields while spinning: a publish is seen within one PAUSE, and on few
// cores the peer may need this very CPU to publish, so it is offered every so often.
inline constexpr int kPollsPerYield = 64;

// Runs `attempt()` until it returns true (done), the deadline passes (timed_out) or the interrupt
// check asks to stop (interrupted). Between attempts it waits as the header describes:
// `ready(seq)` is the lock-free look that says the attempt is worth repeating, `seq` the value of
// the futex word read before the failed attempt. `housekeeping()` runs once per period; when it
// returns true (it freed something) the next attempt comes at once.
template <class Attempt, class Ready, class Housekeeping>
WaitOutcome wait_until(const WaitPlan& plan, Attempt&& attempt, Ready&& ready, Housekeeping&& housekeeping) {
  std::optional<Clock::time_point> spin_until, next_housekeeping, next_interrupt;
  for (;;) {
    const std::uint32_t seq = plan.word.seq.load(std::memory_order_acquire);
    if (attempt()) return WaitOutcome::done;
    Clock::time_point now = Clock::now();
    if (!spin_until) {  // the first failed attempt: the wait starts now
      spin_until = now + plan.spin;
      next_housekeeping = now + plan.housekeeping_period;
      next_interrupt = plan.interrupt.next_check(std::optional<Clock::time_point>(), now);
    }
    if (now >= *next_housekeeping) {
      next_housekeeping = now + plan.housekeeping_period;
      if (housekeeping()) continue;
    }
    if (plan.deadline && now >= *plan.deadline) return WaitOutcome::timed_out;
    if (next_interrupt && now >= *next_interrupt) {
      if (plan.interrupt.requested()) return WaitOutcome::interrupted;
      next_interrupt = plan.interrupt.next_check(std::optional<Clock::time_point>(), now);
    }
    // The next moment something other than `ready` needs this thread.
    Clock::time_point until = *next_housekeeping;
    if (plan.deadline) until = std::min(until, *plan.deadline);
    if (next_interrupt) until = std::min(until, *next_interrupt);

    if (now < *spin_until) {
      // Look after every PAUSE; every kPollsPerYield looks, offer the CPU and read the clock.
      const Clock::time_point spin_end = std::min(until, *spin_until);
      while (now < spin_end) {
        bool is_ready = false;
        for (int i = 0; i < kPollsPerYield && !is_ready; ++i) {
          cpu_relax();
          is_ready = ready(seq);
        }
        if (is_ready) break;
        std::this_thread::yield();
        now = Clock::now();
      }
      continue;
    }
    plan.word.waiters.fetch_add(1);  // announce, then look again (Dekker with the notifier)
    std::atomic_thread_fence(std::memory_order_seq_cst);
    if (!ready(seq)) futex_wait(plan.word.seq, seq, until - now);
    plan.word.waiters.fetch_sub(1);
  }
}

}  // namespace picklewire::shm
