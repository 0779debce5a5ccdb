// src/unpickler_text.hpp — internal: the text rules of the pickle format, as CPython applies them.
// UTF-8 with lone surrogates ('surrogatepass', how str nodes store text), protocol-0 STRING
// escapes (PyBytes_DecodeEscape), UNICODE's raw-unicode-escape, float() of a FLOAT line, and
// decimal ints of any size. Used by the unpickler, repr and dis.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <string_view>

namespace picklewire {

// True when `s` is well-formed UTF-8; with `surrogates`, encoded U+D800..U+DFFF are accepted too
// (CPython's 'surrogatepass'). On failure *bad is the offset of the offending byte.
bool valid_utf8_slow(std::string_view s, bool surrogates, std::size_t* bad);
// Short ASCII strings (keys, names, small values: most strs in a pickle) are checked inline with
// two overlapping 4-byte loads; the rest goes to the full validator.
inline bool valid_utf8(std::string_view s, bool surrogates, std::size_t* bad) {
  const std::size_t n = s.size();
  if (n >= 4 && n <= 8) {
    std::uint32_t head, tail;
    std::memcpy(&head, s.data(), 4);
    std::memcpy(&tail, s.data() + n - 4, 4);
    if (((head | tail) & 0x80808080u) == 0) return true;
  }
  return valid_utf8_slow(s, surrogates, bad);
}
// CPython's UnicodeDecodeError text for a failure at `bad`.
std::string utf8_error(std::string_view s, std::size_t bad);
bool is_ascii(std::string_view s, std::size_t* bad);
std::string ascii_error(std::string_view s, std::size_t bad);

// Appends code point `cp` as UTF-8 (surrogates as their 3-byte form).
void append_utf8(std::string& out, std::uint32_t cp);
// The code point at s[i] (s valid as above); advances i.
std::uint32_t next_code_point(std::string_view s, std::size_t& i);

// Python's bytes escape decoding (the STRING opcode body, quotes already stripped).
bool python_escape_decode(std::string_view body, std::string& out, std::string& error);
// raw-unicode-escape -> UTF-8 (the UNICODE opcode).
bool raw_unicode_escape_decode(std::string_view line, std::string& out, std::string& error);
// UTF-8 -> latin-1 bytes; false when a code point is above U+00FF.
bool utf8_to_latin1(std::string_view utf8, std::string& out);

// float(line) as the FLOAT opcode accepts it (PyOS_string_to_double: inf, nan, no hex, overflow
// is an error, underflow gives 0 / a subnormal). `overflow_is_inf`: overflow gives +-inf instead,
// as float(str) does.
bool parse_python_float(std::string_view line, double& out, bool overflow_is_inf = false);

// Decimal digits (no sign, no leading zeros needed) -> little-endian two's complement bytes,
// not minimal (the caller trims). Quadratic: callers bound the digit count.
std::string decimal_to_le_twos_complement(std::string_view digits, bool negative);
// The same for digits in `base` (2..36; 0-9, then a-z or A-Z).
std::string digits_to_le_twos_complement(std::string_view digits, unsigned base, bool negative);

}  // namespace picklewire
