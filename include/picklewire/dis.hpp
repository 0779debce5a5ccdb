/// \file picklewire/dis.hpp — a pickle as an opcode listing, like `python -m pickletools`.
#pragma once

#include <string>

#include "picklewire/buffer.hpp"
#include "picklewire/errors.hpp"

namespace picklewire {

/// One line per opcode: "%5d: " offset, the opcode byte as Python prints it, indentation by open
/// MARKs, the name, the argument (Python repr), "(MARK at N)" / "(as N)" annotations; then
/// "highest protocol among opcodes = N". Emulates pickletools' stack and memo checks: an unknown
/// opcode, a truncated argument, a missing MARK, a stack underflow, a memo key stored twice or
/// never stored, a missing STOP, or a non-empty stack after STOP throw UnpicklingError (offset of
/// the opcode). Iterative; the output is linear in the input.
std::string dis(const Buffer& stream);
/// The same listing appended to `out` line by line: when it throws, `out` holds the lines before
/// the error, as pickletools.dis has printed them by the time it raises (`picklewire dis` prints
/// them, then the error).
void dis(const Buffer& stream, std::string& out);

}  // namespace picklewire
