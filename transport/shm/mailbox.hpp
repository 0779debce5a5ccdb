// transport/shm/mailbox.hpp — a same-host ZeroMQ Sender's answer box: one page of shared memory
// ("picklewire.hello-PID-ID" in /dev/shm, mode 0600) that the Sender creates and that a Receiver
// on the same host writes its verdict on the Sender's hello into (docs/zmq.md "Same host").
//
// PUSH/PULL carries nothing back to a sender, so this page is the back channel. It is also the
// proof behind a hello's claim to come from this host: only a process that shares this host's
// /dev/shm can open it, and only the sender that named it in its hello knows its id.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

namespace boost::interprocess {
class mapped_region;
}

namespace picklewire::shm {

struct MailboxAnswer {
  enum class Verdict : std::uint32_t { preparing = 1, accepted = 2, refused = 3 };
  Verdict verdict = Verdict::refused;
  std::string channel;          // accepted: the NAME of the receiver's shm://NAME channel
  std::int32_t receiver_pid = 0;
};

class Mailbox {
 public:
  // The /dev/shm object name of sender `pid`'s mailbox `id`.
  static std::string object_name(pid_t pid, std::uint64_t id);
  // Sender: creates this process's mailbox `id`; removed when the Mailbox is destroyed (and by
  // `picklewire shm clean` once the process is gone). Throws TransportError.
  static std::unique_ptr<Mailbox> create(std::uint64_t id);
  // Receiver: opens the mailbox a hello named; nullptr when there is none of that pid and id (a
  // peer on another host, or one that lied).
  static std::unique_ptr<Mailbox> open(pid_t pid, std::uint64_t id);
  // Receiver: removes the mailbox of a sender it saw die (a killed sender cannot remove its own).
  static void remove(pid_t pid, std::uint64_t id) noexcept;
  ~Mailbox();
  Mailbox(const Mailbox&) = delete;
  Mailbox& operator=(const Mailbox&) = delete;

  // Receiver: the answer to the hello of connection `generation` (a later post replaces an
  // earlier one for the same generation: preparing, then accepted or refused). Wakes the sender.
  void post(std::uint32_t generation, const MailboxAnswer& answer) noexcept;
  // Sender: the latest answer posted for `generation`, if any.
  std::optional<MailboxAnswer> answer(std::uint32_t generation) const;
  // Sender: blocks until any post after `seen` (a value of posts()) or `timeout`.
  void wait(std::uint32_t seen, std::chrono::nanoseconds timeout) const;
  std::uint32_t posts() const noexcept;

  std::uint64_t id() const noexcept { return id_; }

  struct Page;  // the layout (mailbox.cpp)

 private:
  Mailbox();
  Page* page_ = nullptr;
  std::unique_ptr<boost::interprocess::mapped_region> region_;
  std::uint64_t id_ = 0;
  std::string object_name_;
  bool owner_ = false;
};

}  // namespace picklewire::shm
