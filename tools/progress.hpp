// A one-line progress report for long commands (bench, send --count, recv --count): messages,
// bytes and rate, redrawn in place on stderr at most five times a second. Silent when stderr is
// not a terminal (pipes, CI logs, tests) or with --quiet, so scripted output stays clean.
#pragma once

#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <string>

namespace picklewire::cli {

class Progress {
 public:
  using Clock = std::chrono::steady_clock;

  // `what`: a word for the work ("sent", "received", "bench"); `total` messages, 0 if unknown.
  Progress(std::string what, std::uint64_t total, bool quiet)
      : what_(std::move(what)), total_(total), enabled_(!quiet && ::isatty(STDERR_FILENO)), start_(Clock::now()) {}
  Progress(const Progress&) = delete;
  Progress& operator=(const Progress&) = delete;
  ~Progress() { finish(); }

  // One more message of `bytes`; redraws when the last drawing is old enough. Cheap otherwise.
  void add(std::uint64_t bytes) {
    ++messages_;
    bytes_ += bytes;
    if (!enabled_ || (messages_ & 63) != 1) return;  // look at the clock every 64 messages
    const auto now = Clock::now();
    if (now - last_draw_ < std::chrono::milliseconds(200)) return;
    last_draw_ = now;
    draw(now);
  }

  // Clears the line (the command's own report follows).
  void finish() {
    if (!enabled_ || !drawn_) return;
    std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
    drawn_ = false;
  }

 private:
  void draw(Clock::time_point now) {
    const double seconds = std::chrono::duration<double>(now - start_).count();
    char line[160];
    const double mb = double(bytes_) / 1e6;
    if (total_)
      std::snprintf(line, sizeof line, "\r%s %llu/%llu messages, %.1f MB, %.1f MB/s, %.0f messages/s\033[K", what_.c_str(),
                    static_cast<unsigned long long>(messages_), static_cast<unsigned long long>(total_), mb,
                    seconds > 0 ? mb / seconds : 0.0, seconds > 0 ? double(messages_) / seconds : 0.0);
    else
      std::snprintf(line, sizeof line, "\r%s %llu messages, %.1f MB, %.1f MB/s, %.0f messages/s\033[K", what_.c_str(),
                    static_cast<unsigned long long>(messages_), mb, seconds > 0 ? mb / seconds : 0.0,
                    seconds > 0 ? double(messages_) / seconds : 0.0);
    std::fputs(line, stderr);
    std::fflush(stderr);
    drawn_ = true;
  }

  std::string what_;
  std::uint64_t total_;
  bool enabled_;
  Clock::time_point start_;
  Clock::time_point last_draw_{};
  std::uint64_t messages_ = 0;
  std::uint64_t bytes_ = 0;
  bool drawn_ = false;
};

}  // namespace picklewire::cli
