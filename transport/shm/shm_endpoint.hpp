// transport/shm: Sender/Receiver over a Boost.Interprocess shared-memory segment (shm_sender.cpp,
// shm_receiver.cpp; docs/shm.md).
#pragma once

#include <memory>
#include <string_view>

#include "picklewire/endpoint.hpp"

namespace picklewire::shm {

// `name` is the part of shm://NAME after the scheme.
std::unique_ptr<detail::SenderImpl> connect_sender(std::string_view name, const EndpointOptions& options);
std::unique_ptr<detail::ReceiverImpl> bind_receiver(std::string_view name, const EndpointOptions& options);

}  // namespace picklewire::shm
