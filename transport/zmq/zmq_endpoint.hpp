// transport/zmq: Sender/Receiver over ZeroMQ PUSH/PULL with picklewire's framing (docs/wire-format.md).
#pragma once

#include <memory>
#include <string_view>

#include "picklewire/endpoint.hpp"

namespace picklewire::zmq_transport {

// `url` is the whole tcp:// / ipc:// / inproc:// URL.
std::unique_ptr<detail::SenderImpl> bind_sender(std::string_view url, const EndpointOptions& options);
std::unique_ptr<detail::SenderImpl> connect_sender(std::string_view url, const EndpointOptions& options);
std::unique_ptr<detail::ReceiverImpl> bind_receiver(std::string_view url, const EndpointOptions& options);
std::unique_ptr<detail::ReceiverImpl> connect_receiver(std::string_view url, const EndpointOptions& options);

}  // namespace picklewire::zmq_transport
