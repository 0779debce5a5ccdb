/// \file picklewire/errors.hpp — every error picklewire throws derives from picklewire::Error.
#pragma once

#include <cerrno>
#include <cstddef>
#include <stdexcept>
#include <string>

namespace picklewire {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

/// The stream is malformed, hostile, or asks for something the options forbid. `offset()` is the
/// byte offset of the opcode being executed when the problem was found; what() ends with
/// " at offset N".
class UnpicklingError : public Error {
 public:
  UnpicklingError(const std::string& what, std::size_t offset)
      : Error(what + " at offset " + std::to_string(offset)), reason_(what), offset_(offset) {}
  std::size_t offset() const noexcept { return offset_; }
  const std::string& reason() const noexcept { return reason_; }

 private:
  std::string reason_;
  std::size_t offset_;
};

/// The value graph cannot be written at the requested protocol (or at all).
class PicklingError : public Error {
 public:
  using Error::Error;
};

/// A transport failed: the peer sent something invalid, a resource ran out, a timeout on send.
/// The message says what the peer did or what was exhausted; code() says which kind of failure it
/// was as an errno value (as cppzmq's error_t::num() does), so callers branch on the code, never on
/// the text:
///   EINVAL           a bad URL, option or argument        EPROTONOSUPPORT  an unknown URL scheme
///   ENOENT           no such channel (nobody bound it)    EADDRINUSE       the address or channel is taken
///   EACCES           permissions forbid it                EBADF            the endpoint is closed
///   EPROTO           the peer sent something malformed    EMSGSIZE         the message can never fit
///   ENOSPC           out of memory or disk for a channel  ETIMEDOUT        TimeoutError
///   EPIPE            PeerGone                             EINTR            Interrupted
/// Other codes come straight from the system call or ZeroMQ call that failed.
class TransportError : public Error {
 public:
  explicit TransportError(const std::string& what, int code = EPROTO) : Error(what), code_(code) {}
  int code() const noexcept { return code_; }

 private:
  int code_;
};

/// The other side of a channel is gone (its process died or closed the channel).
class PeerGone : public TransportError {
 public:
  explicit PeerGone(const std::string& what) : TransportError(what, EPIPE) {}
};

/// A send could not complete within its timeout (a recv timeout is an empty optional, not this).
class TimeoutError : public TransportError {
 public:
  explicit TimeoutError(const std::string& what) : TransportError(what, ETIMEDOUT) {}
};

/// A wait gave up because EndpointOptions::interrupt asked it to (the Python module: a signal
/// handler raised, e.g. KeyboardInterrupt). Nothing was sent; nothing stays held.
class Interrupted : public TransportError {
 public:
  explicit Interrupted(const std::string& what) : TransportError(what, EINTR) {}
};

}  // namespace picklewire
