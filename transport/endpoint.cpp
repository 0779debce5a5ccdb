// URL dispatch: a URL's scheme picks the transport; the endpoints then move Messages.
#include "picklewire/endpoint.hpp"

#include <string>

#include "picklewire/errors.hpp"
#include "shm/shm_endpoint.hpp"
#include "zmq/zmq_endpoint.hpp"

namespace picklewire {
namespace {

struct Url {
  std::string_view scheme, rest;
};

Url parse(std::string_view url) {
  auto sep = url.find("://");
  if (sep == std::string_view::npos || sep == 0)
    throw TransportError("'" + std::string(url) + "' is not a URL (shm://NAME, tcp://HOST:PORT, ipc://PATH, inproc://NAME)",
                         EINVAL);
  return {url.substr(0, sep), url.substr(sep + 3)};
}

bool is_zmq(std::string_view scheme) { return scheme == "tcp" || scheme == "ipc" || scheme == "inproc"; }

[[noreturn]] void unknown_scheme(std::string_view url, std::string_view scheme) {
  throw TransportError("unknown transport '" + std::string(scheme) + "' in '" + std::string(url) +
                           "' (shm, tcp, ipc, inproc)",
                       EPROTONOSUPPORT);
}

}  // namespace

Sender Sender::connect(std::string_view url, const EndpointOptions& options) {
  Url u = parse(url);
  if (u.scheme == "shm") return Sender(shm::connect_sender(u.rest, options), options);
  if (is_zmq(u.scheme)) return Sender(zmq_transport::connect_sender(url, options), options);
  unknown_scheme(url, u.scheme);
}

Sender Sender::bind(std::string_view url, const EndpointOptions& options) {
  Url u = parse(url);
  if (u.scheme == "shm")
    throw TransportError("a shm:// channel is bound by its Receiver; Senders connect to it", EINVAL);
  if (is_zmq(u.scheme)) return Sender(zmq_transport::bind_sender(url, options), options);
  unknown_scheme(url, u.scheme);
}

Receiver Receiver::bind(std::string_view url, const EndpointOptions& options) {
  Url u = parse(url);
  if (u.scheme == "shm") return Receiver(shm::bind_receiver(u.rest, options), options);
  if (is_zmq(u.scheme)) return Receiver(zmq_transport::bind_receiver(url, options), options);
  unknown_scheme(url, u.scheme);
}

Receiver Receiver::connect(std::string_view url, const EndpointOptions& options) {
  Url u = parse(url);
  if (u.scheme == "shm")
    throw TransportError("a shm:// Receiver binds its channel; only Senders connect", EINVAL);
  if (is_zmq(u.scheme)) return Receiver(zmq_transport::connect_receiver(url, options), options);
  unknown_scheme(url, u.scheme);
}

detail::SenderImpl& Sender::impl() const {
  if (!impl_) throw TransportError("the Sender is closed", EBADF);
  return *impl_;
}

detail::ReceiverImpl& Receiver::impl() const {
  if (!impl_) throw TransportError("the Receiver is closed", EBADF);
  return *impl_;
}

void Sender::send(const Message& message, Timeout timeout) {
  if (!try_send(message, timeout)) throw TimeoutError(impl().timeout_reason());
}

bool Sender::try_send(const Message& message, Timeout timeout) { return impl().try_send(message, timeout); }

Buffer Sender::allocate(std::size_t bytes) { return impl().allocate(bytes); }

TransportStats Sender::stats() const { return impl().stats(); }

std::optional<Message> Receiver::recv(Timeout timeout) { return impl().recv(timeout); }

TransportStats Receiver::stats() const { return impl().stats(); }

}  // namespace picklewire
