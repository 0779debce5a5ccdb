#include "zmq/same_host.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <random>

#include "picklewire/errors.hpp"
#include "shm/mailbox.hpp"
#include "shm/process.hpp"
#include "shm/shm_endpoint.hpp"

namespace picklewire::zmq_transport {
namespace {

using Clock = std::chrono::steady_clock;

// How long a send (or allocate) that could use the channel waits, once per connection:
// for the socket's first connection (a send right after connect()), for the receiver's answer
// (a picklewire receiver answers from its next recv(); an older or pure-Python peer never does),
// and for a receiver that said it is creating its channel (populating it runs at ~1-2 GB/s).
constexpr std::chrono::milliseconds kConnectWait{1000};
constexpr std::chrono::milliseconds kAnswerWait{50};
constexpr std::chrono::milliseconds kPrepareWait{5000};
constexpr std::chrono::milliseconds kWaitSlice{10};

constexpr std::size_t kTagBytes = SameHostSender::kTagBytes;

std::uint64_t random_nonzero() {
  std::random_device device;
  std::uint64_t v = 0;
  while (v == 0) v = (std::uint64_t(device()) << 32) ^ device();
  return v;
}

void store_u64(std::byte* p, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<std::byte>(v >> (8 * i));
}
std::uint64_t load_u64(const std::byte* p) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= std::uint64_t(p[i]) << (8 * i);
  return v;
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

HostIdentity read_identity() {
  HostIdentity id;
  id.uid = static_cast<std::uint32_t>(::geteuid());
  std::ifstream file("/proc/sys/kernel/random/boot_id");
  std::string text;
  if (!std::getline(file, text)) return id;
  std::size_t n = 0;
  for (std::size_t i = 0; i + 1 < text.size() && n < id.boot_id.size();) {
    if (text[i] == '-') { ++i; continue; }
    const int hi = hex_digit(text[i]), lo = hex_digit(text[i + 1]);
    if (hi < 0 || lo < 0) return id;
    id.boot_id[n++] = static_cast<std::byte>(hi * 16 + lo);
    i += 2;
  }
  struct stat st {};
  if (n != id.boot_id.size() || ::stat("/proc/self/ns/ipc", &st) != 0) return id;
  id.ipc_namespace = static_cast<std::uint64_t>(st.st_ino);
  id.known = true;
  return id;
}

// The channel's name: unique per Receiver (pid and a random part), so a restarted receiver
// never meets its predecessor's channel.
std::string new_channel_name() {
  char text[64];
  std::snprintf(text, sizeof text, "zmq-%d-%08llx", static_cast<int>(::getpid()),
                static_cast<unsigned long long>(random_nonzero() & 0xffffffffULL));
  return text;
}

}  // namespace

const HostIdentity& HostIdentity::current() {
  static const HostIdentity identity = read_identity();
  return identity;
}

bool HostIdentity::matches(const Hello& hello) const noexcept {
  return known && hello.boot_id == boot_id && hello.ipc_namespace == ipc_namespace && hello.uid == uid;
}

// ------------------------------------------------------------------------------------------------
// Sender

SameHostSender::SameHostSender(const EndpointOptions& options)
    : min_bytes_(options.zmq.same_host_min_bytes), channel_options_(options) {
  // allocate() from the channel never waits for room: a loan the channel cannot give now comes
  // from the heap instead (frames send it without copying). Sends pass their own timeout.
  channel_options_.send_timeout = std::chrono::milliseconds(0);
  tagged_.buffers.reserve(8);
}

SameHostSender::~SameHostSender() = default;

void SameHostSender::drop_channel() noexcept {
  channel_.reset();
  settled_ = true;
}

bool SameHostSender::send_hello(zmq::socket_t& socket) {
  const HostIdentity& me = HostIdentity::current();
  if (!me.known) {
    refusal_ = "this host's identity is unknown (/proc/sys/kernel/random/boot_id or /proc/self/ns/ipc unreadable)";
    settled_ = true;
    return false;
  }
  if (!mailbox_) {
    try {
      sender_id_ = random_nonzero();
      mailbox_ = shm::Mailbox::create(sender_id_);
    } catch (const Error& e) {
      refusal_ = e.what();
      settled_ = true;
      return false;
    }
  }
  Hello hello;
  hello.uid = me.uid;
  hello.pid = static_cast<std::uint32_t>(shm::current_pid());
  hello.generation = generation_;
  hello.sender_id = sender_id_;
  hello.ipc_namespace = me.ipc_namespace;
  hello.boot_id = me.boot_id;
  const std::vector<std::byte> frame = encode_control(hello);
  // Never waits: a socket at its high-water mark says hello on a later send.
  if (!socket.send(zmq::const_buffer(frame.data(), frame.size()), zmq::send_flags::dontwait)) return false;
  hello_bytes_ += frame.size();
  return true;
}

detail::SenderImpl* SameHostSender::negotiate(zmq::socket_t& socket, PeerMonitor& monitor,
                                              std::optional<Clock::time_point> wait_until) {
  const auto call_start = Clock::now();
  for (;;) {
    monitor.update();
    const auto now = Clock::now();
    std::optional<Clock::time_point> limit;  // how long this state is worth waiting for
    std::uint32_t posts_seen = 0;
    if (monitor.peers() == 1) {
      if (monitor.connections() != generation_) {  // a new connection: a new receiver, maybe
        channel_.reset();
        generation_ = monitor.connections();
        hello_sent_ = false;
        settled_ = false;
        preparing_since_.reset();
      }
      if (channel_) return channel_.get();
      if (settled_) return nullptr;
      if (!hello_sent_ && (hello_sent_ = send_hello(socket))) hello_sent_at_ = now;
      if (settled_) return nullptr;
      if (!hello_sent_) return nullptr;
      posts_seen = mailbox_->posts();
      if (std::optional<shm::MailboxAnswer> answer = mailbox_->answer(generation_)) {
        using Verdict = shm::MailboxAnswer::Verdict;
        if (answer->verdict == Verdict::accepted) {
          try {
            channel_ = shm::connect_sender(answer->channel, channel_options_);
            return channel_.get();
          } catch (const Error& e) {  // a receiver that named no usable channel: frames
            refusal_ = std::string("the receiver's channel cannot be used: ") + e.what();
            settled_ = true;
            return nullptr;
          }
        }
        if (answer->verdict == Verdict::refused) {
          refusal_ = "the receiver refused (its same-host path is off, or its channel could not be created)";
          settled_ = true;
          return nullptr;
        }
        if (!preparing_since_) preparing_since_ = now;
        limit = *preparing_since_ + kPrepareWait;
      } else {
        limit = hello_sent_at_ + kAnswerWait;
      }
    } else if (monitor.peers() == 0) {
      limit = call_start + kConnectWait;
    } else {
      return nullptr;  // more than one connection (a reconnect overlapping): cannot tell which gets what
    }
    if (!wait_until) return nullptr;
    const auto until = std::min(*limit, *wait_until);
    if (now >= until) return nullptr;
    const auto slice = std::min<Clock::duration>(until - now, kWaitSlice);
    if (monitor.peers() == 1) {
      mailbox_->wait(posts_seen, slice);
    } else {
      zmq::pollitem_t item{monitor.events().handle(), 0, ZMQ_POLLIN, 0};
      zmq::poll(&item, 1, std::chrono::ceil<std::chrono::milliseconds>(slice));
    }
  }
}

const Message& SameHostSender::tagged(const Message& message) {
  tagged_.stream = message.stream;
  tagged_.buffers.assign(message.buffers.begin(), message.buffers.end());
  store_u64(tag_.data(), sender_id_);
  store_u64(tag_.data() + 8, sequence_ + 1);
  // Borrowed: the channel copies it into the message's slot before try_send returns.
  tagged_.buffers.push_back(Buffer::wrap(tag_.data(), tag_.size()));
  return tagged_;
}

std::vector<std::byte> SameHostSender::commit() {
  ++sequence_;
  forget();
  return encode_control(Doorbell{sender_id_, sequence_});
}

void SameHostSender::forget() noexcept {
  tagged_.buffers.clear();  // our references to the caller's buffers
  tagged_.stream = Buffer();
}

// ------------------------------------------------------------------------------------------------
// Receiver

SameHostReceiver::SameHostReceiver(const EndpointOptions& options)
    : enabled_(options.zmq.same_host), channel_options_(options) {
  channel_options_.shm.capacity = options.zmq.same_host_capacity;
  channel_options_.interrupt = nullptr;  // take() never waits
}

SameHostReceiver::~SameHostReceiver() = default;

void SameHostReceiver::on_hello(const Hello& hello) {
  if (!HostIdentity::current().matches(hello)) return;  // another host, namespace or user
  std::unique_ptr<shm::Mailbox> box = shm::Mailbox::open(static_cast<pid_t>(hello.pid), hello.sender_id);
  if (!box) return;  // its /dev/shm is not ours after all, or it lied
  using Verdict = shm::MailboxAnswer::Verdict;
  const std::int32_t me = static_cast<std::int32_t>(shm::current_pid());
  if (!enabled_) {
    box->post(hello.generation, {Verdict::refused, {}, me});
    return;
  }
  if (!channel_ && failure_.empty()) {
    box->post(hello.generation, {Verdict::preparing, {}, me});
    try {
      channel_name_ = new_channel_name();
      channel_ = shm::bind_receiver(channel_name_, channel_options_);
    } catch (const Error& e) {
      failure_ = e.what();
    }
  }
  if (channel_) {
    if (std::none_of(senders_.begin(), senders_.end(), [&](const Peer& p) { return p.sender_id == hello.sender_id; }))
      senders_.push_back({hello.sender_id, static_cast<std::int32_t>(hello.pid), std::nullopt});
    box->post(hello.generation, {Verdict::accepted, channel_name_, me});
  } else
    box->post(hello.generation, {Verdict::refused, {}, me});
}

Message SameHostReceiver::take(const Doorbell& doorbell, CopyLedger& ledger) {
  auto deliver = [&](Message m) {
    ledger.messages += 1;
    ledger.inband_bytes += m.stream.size();
    ledger.oob_buffers += m.buffers.size();
    const std::size_t oob = m.out_of_band_bytes();
    ledger.oob_bytes += oob;
    for (const Buffer& b : m.buffers) ledger.record_zero_copy(b.size());
    ledger.same_host_messages += 1;
    ledger.same_host_bytes += oob;
    return m;
  };
  for (auto it = stash_.begin(); it != stash_.end(); ++it) {
    if (it->sender_id == doorbell.sender_id && it->sequence == doorbell.sequence) {
      Message m = std::move(it->message);
      stash_.erase(it);
      return deliver(std::move(m));
    }
  }
  // Messages of this sender older than the one rung for will never be rung for (their doorbell
  // could not be sent: the sender fell back to frames for them).
  std::erase_if(stash_, [&](const Tagged& t) { return t.sender_id == doorbell.sender_id && t.sequence < doorbell.sequence; });
  if (!channel_)
    throw TransportError("zmq transport: invalid message from peer: a doorbell, but this receiver has no same-host channel");
  // The sender published the message before it rang, so it is in the channel now.
  while (stash_next()) {
    Tagged& newest = stash_.back();
    if (newest.sender_id == doorbell.sender_id && newest.sequence == doorbell.sequence) {
      Message m = std::move(newest.message);
      stash_.pop_back();
      return deliver(std::move(m));
    }
    if (newest.sender_id == doorbell.sender_id && newest.sequence < doorbell.sequence) stash_.pop_back();  // orphan, as above
  }
  throw TransportError("zmq transport: invalid message from peer: its doorbell names message " +
                       std::to_string(doorbell.sequence) + " of sender " + std::to_string(doorbell.sender_id) +
                       ", which is not in this receiver's same-host channel");
}

bool SameHostReceiver::stash_next() {
  for (;;) {
    std::optional<Message> m = channel_->recv(std::chrono::milliseconds(0));
    if (!m) return false;
    // Every message our senders put in the channel ends with its 16-byte tag; anything else was
    // put there by someone else (the channel's name is no secret to this user): dropped.
    if (m->buffers.empty() || m->buffers.back().size() != kTagBytes) continue;
    const std::byte* tag = m->buffers.back().data();
    const std::uint64_t sender_id = load_u64(tag), sequence = load_u64(tag + 8);
    m->buffers.pop_back();
    if (m->item_sizes.size() > m->buffers.size()) m->item_sizes.resize(m->buffers.size());
    stash_.push_back({sender_id, sequence, std::move(*m)});
    return true;
  }
}

void SameHostReceiver::maintain(bool socket_idle) {
  if (!channel_) return;
  try {
    while (stash_next()) {
    }
  } catch (const TransportError&) {  // a malformed record: the channel refused it; go on
  }
  const auto now = Clock::now();
  for (Peer& p : senders_)
    if (!p.dead_since && !shm::process_alive(p.pid, 0)) {
      p.dead_since = now;
      shm::Mailbox::remove(p.pid, p.sender_id);  // a killed sender left its answer box behind
    }
  // A sender that exited after sending still has doorbells on their way or queued in the socket:
  // its messages stay until the socket has been found empty well after its death (then no
  // doorbell of its can come any more, and what is left of it was never rung for).
  if (socket_idle)
    std::erase_if(senders_, [&](const Peer& p) { return p.dead_since && now - *p.dead_since >= kDeadSenderGrace; });
  std::erase_if(stash_, [&](const Tagged& t) {
    return std::none_of(senders_.begin(), senders_.end(), [&](const Peer& p) { return p.sender_id == t.sender_id; });
  });
}

void SameHostReceiver::add_stats(TransportStats& stats) const {
  if (!channel_) return;
  const TransportStats c = channel_->stats();
  stats.slots_in_use = c.slots_in_use;
  stats.bytes_in_use = c.bytes_in_use;
  stats.peak_bytes_in_use = c.peak_bytes_in_use;
  stats.capacity = c.capacity;
  stats.same_host_channel = channel_name_;
}

}  // namespace picklewire::zmq_transport
