// An endpoint's TransportStats (its copy ledger and transport counters) as the dict stats()
// returns; the keys are documented in docs/python.md, "Statistics".
#include <string>

#include "module.hpp"

namespace picklewire::python {
namespace {

py::dict ledger_dict(const CopyLedger& ledger, const CopyLedger* extra) {
  py::dict copies, copied_bytes;
  std::uint64_t total = 0;
  for (std::size_t i = 0; i < CopyLedger::kReasons; ++i) {
    const std::uint64_t n = ledger.copies[i] + (extra ? extra->copies[i] : 0);
    const std::uint64_t bytes = ledger.copied_bytes[i] + (extra ? extra->copied_bytes[i] : 0);
    py::str name(std::string(to_string(static_cast<CopyReason>(i))));
    copies[name] = n;
    copied_bytes[name] = bytes;
    total += bytes;
  }
  py::dict d;
  d["messages"] = ledger.messages;
  d["inband_bytes"] = ledger.inband_bytes;
  d["oob_buffers"] = ledger.oob_buffers;
  d["oob_bytes"] = ledger.oob_bytes;
  d["zero_copy_buffers"] = ledger.zero_copy_buffers;
  d["zero_copy_bytes"] = ledger.zero_copy_bytes;
  d["same_host_messages"] = ledger.same_host_messages;
  d["same_host_bytes"] = ledger.same_host_bytes;
  d["copies"] = copies;
  d["copied_bytes"] = copied_bytes;
  d["total_copied_bytes"] = total;
  return d;
}

}  // namespace

py::dict stats_dict(const TransportStats& stats, const CopyLedger* extra) {
  py::dict d = ledger_dict(stats.ledger, extra);
  d["slots_in_use"] = stats.slots_in_use;
  d["bytes_in_use"] = stats.bytes_in_use;
  d["peak_bytes_in_use"] = stats.peak_bytes_in_use;
  d["capacity"] = stats.capacity;
  d["wire_bytes"] = stats.wire_bytes;
  d["undelivered_messages"] = stats.undelivered_messages;
  d["malformed_messages"] = stats.malformed_messages;
  d["same_host_fallbacks"] = stats.same_host_fallbacks;
  d["same_host_channel"] = stats.same_host_channel.empty() ? py::object(py::none()) : py::object(py::str(stats.same_host_channel));
  return d;
}

}  // namespace picklewire::python
