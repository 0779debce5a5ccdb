/// \file picklewire/endpoint_options.hpp — what every endpoint is configured with and reports: options,
/// timeouts, statistics. Vocabulary shared by the transports (which read the options) and the
/// layers above them (the values layer, the command, the Python module); it pulls in neither.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <optional>
#include <string>

#include "picklewire/ledger.hpp"

namespace picklewire {

/// nullopt: wait forever. zero: do not wait.
using Timeout = std::optional<std::chrono::milliseconds>;

struct ShmOptions {
  std::size_t capacity = std::size_t(256) << 20;    ///< Receiver::bind: bytes of buffer heap in the segment
  std::chrono::microseconds spin{50};               ///< busy-wait this long before blocking on a wake-up
  std::uint32_t slot_count = 4096;                  ///< Receiver::bind: max slots (messages + loans) in use at once
  std::uint32_t ring_capacity = 1024;               ///< Receiver::bind: max messages queued, not yet received
  std::uint32_t lane_count = 64;                    ///< Receiver::bind: per-sender queues (0..64; 0: all use the ring)
  bool prefault = true;                             ///< populate the mapping's pages up front (first touch ~1 GB/s)
};

struct ZmqOptions {
  bool compress = false;          ///< lz4 per buffer (tcp:// only by default; see docs/wire-format.md)
  bool shuffle = true;            ///< byte-shuffle typed arrays before lz4 when compressing
  int send_hwm = 1000;            ///< ZeroMQ high-water marks, in messages
  int recv_hwm = 1000;
  std::int64_t max_message_bytes = -1;  ///< receiver: refuse larger messages (ZMQ_MAXMSGSIZE); -1: none
  /// ZMTP heartbeats to notice dead peers (tcp://, ipc://); 0: off. On by default so that a Sender
  /// whose receivers died throws PeerGone instead of blocking forever (docs/zmq.md "Dead peers").
  std::chrono::milliseconds heartbeat{1000};
  /// How long a peer may stay silent before its connection is dropped (ZMTP heartbeat timeout and
  /// TTL); 0: 3 x heartbeat. A PUSH Sender whose receivers all disconnected and none came back
  /// within this time throws PeerGone from send (docs/zmq.md "Dead peers"). Default: 3 s, so a
  /// killed receiver is reported within 5 s.
  std::chrono::milliseconds heartbeat_timeout{0};
  /// Connecting Sender: queue messages only for receivers whose connection is up (ZMQ_IMMEDIATE),
  /// so a send with nobody listening waits for one (and times out) instead of vanishing into a queue.
  bool immediate = true;
  /// Wire format written by Senders and Clients (docs/wire-format.md): 2 (header, stream and small
  /// buffers in one frame) or 1 (three or more frames; for peers built before version 2).
  /// Receivers read both.
  int wire_version = 2;
  /// Wire version 2: the stream and each uncompressed buffer of at most this many bytes travel
  /// inside the header frame (copied there on send, views of it on receive); larger ones get a frame.
  std::size_t inline_max_bytes = 4096;
  /// Same-host peers (docs/zmq.md "Same host"): a connecting Sender (tcp://, ipc://) whose receiver
  /// runs on this host, as the same user, moves each message with at least `same_host_min_bytes`
  /// of out-of-band buffers through a shared-memory channel the receiver owns; only a doorbell
  /// travels on the socket. Both ends must have it on (Receiver: accept such senders).
  bool same_host = true;
  std::size_t same_host_min_bytes = 64 * 1024;
  /// Receiver: the heap of the channel it creates when the first same-host sender says hello.
  /// Messages larger than this go as frames. (The channel's other geometry: EndpointOptions::shm.)
  std::size_t same_host_capacity = std::size_t(512) << 20;
  std::string curve_server_secret_key_file;  ///< CURVE (tcp://): see docs/security.md
  std::string curve_server_public_key_file;
  std::string curve_client_secret_key_file;
  std::string curve_client_public_key_file;
  /// CURVE server: when set, only clients whose public key (Z85, one per line) is listed may connect.
  std::string curve_authorized_clients_file;
  std::size_t compress_min_bytes = 64 * 1024;  ///< buffers below this are never compressed
  /// Shuffle hint for lz4: the item size of the typed arrays being sent (e.g. 8 for float64);
  /// 0: try 4 and 8 on each buffer's sample and keep what compresses best.
  std::uint32_t item_size = 0;
  /// How long closing an endpoint (and process exit) waits for queued messages to leave; nullopt:
  /// forever. Messages still queued when it expires are dropped by ZeroMQ (docs/zmq.md "Closing").
  Timeout linger = std::chrono::milliseconds(1000);
};

struct EndpointOptions {
  std::size_t inband_threshold = 4096;  ///< value-level send: smaller buffers go in-band
  Timeout send_timeout = std::nullopt;  ///< default timeout of send() when none is given
  /// Asked at least every `interrupt_period` while a send or recv waits; when it returns true the
  /// call ends with Interrupted (nothing sent, nothing held). Lets a caller with its own reasons to
  /// stop (the Python module: a pending signal such as Ctrl-C) wait once for the whole timeout
  /// instead of re-entering the call in slices, which would redo the send's work each time.
  std::function<bool()> interrupt;
  std::chrono::milliseconds interrupt_period{50};
  ShmOptions shm;
  ZmqOptions zmq;
};

struct TransportStats {
  CopyLedger ledger;                    ///< this endpoint's side: sent (Sender) or received (Receiver)
  /// shm (and a zmq Receiver's same-host channel): slots not yet returned to the segment
  std::uint64_t slots_in_use = 0;
  std::uint64_t bytes_in_use = 0;       ///< shm: heap bytes held by those slots
  std::uint64_t peak_bytes_in_use = 0;  ///< shm
  std::uint64_t capacity = 0;           ///< shm: heap bytes in the segment
  std::uint64_t wire_bytes = 0;         ///< zmq: bytes handed to ZeroMQ (after compression)
  /// zmq Sender: sends that ended without handing the message over (TimeoutError, PeerGone,
  /// Interrupted). Messages ZeroMQ accepted and then dropped (their receiver died with them queued,
  /// or the linger expired at close) are not counted: PUSH has no acknowledgements (docs/zmq.md).
  std::uint64_t undelivered_messages = 0;
  /// zmq Receiver: malformed multipart messages refused (recv threw TransportError for each).
  std::uint64_t malformed_messages = 0;
  /// zmq Sender: messages of at least ZmqOptions::same_host_min_bytes sent as frames although the
  /// same-host path is on (the receiver is elsewhere or has it off, its answer was not in yet, the
  /// message does not fit its channel, or the connection changed under the send).
  std::uint64_t same_host_fallbacks = 0;
  /// zmq Receiver: NAME of its same-host channel (shm://NAME, in /dev/shm as picklewire.NAME);
  /// empty until a same-host sender's hello made it create one.
  std::string same_host_channel;
};

}  // namespace picklewire
