#include "unpickler_text.hpp"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <locale.h>
#include <stdlib.h>
#include <cstring>
#include <vector>

namespace picklewire {

namespace {
unsigned char at(std::string_view s, std::size_t i) { return static_cast<unsigned char>(s[i]); }
bool cont(unsigned char c) { return (c & 0xc0) == 0x80; }
int hex_value(unsigned char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}
}  // namespace

bool valid_utf8_slow(std::string_view s, bool surrogates, std::size_t* bad) {
  std::size_t i = 0, n = s.size();
  while (i < n) {
    // ASCII fast path, 8 bytes at a time.
    while (i + 8 <= n) {
      std::uint64_t w;
      std::memcpy(&w, s.data() + i, 8);
      if (w & 0x8080808080808080ull) break;
      i += 8;
    }
    if (i >= n) break;
    unsigned char c = at(s, i);
    if (c < 0x80) { ++i; continue; }
    std::size_t len;
    unsigned char lo = 0x80, hi = 0xbf;
    if (c >= 0xc2 && c <= 0xdf) len = 2;
    else if (c == 0xe0) { len = 3; lo = 0xa0; }
    else if (c == 0xed) { len = 3; if (!surrogates) hi = 0x9f; }
    else if (c >= 0xe1 && c <= 0xef) len = 3;
    else if (c == 0xf0) { len = 4; lo = 0x90; }
    else if (c >= 0xf1 && c <= 0xf3) len = 4;
    else if (c == 0xf4) { len = 4; hi = 0x8f; }
    else { *bad = i; return false; }
    if (i + 1 >= n || at(s, i + 1) < lo || at(s, i + 1) > hi) { *bad = i; return false; }
    for (std::size_t k = 2; k < len; ++k)
      if (i + k >= n || !cont(at(s, i + k))) { *bad = i; return false; }
    i += len;
  }
  return true;
}

std::string utf8_error(std::string_view s, std::size_t bad) {
  unsigned char c = at(s, bad);
  const char* reason = (c >= 0x80 && c < 0xc2) || c > 0xf4 ? "invalid start byte"
                       : bad + 1 >= s.size()               ? "unexpected end of data"
                                                            : "invalid continuation byte";
  char buf[160];
  std::snprintf(buf, sizeof buf, "'utf-8' codec can't decode byte 0x%02x in position %zu: %s", c, bad, reason);
  return buf;
}

bool is_ascii(std::string_view s, std::size_t* bad) {
  for (std::size_t i = 0; i < s.size(); ++i)
    if (at(s, i) >= 0x80) { *bad = i; return false; }
  return true;
}

std::string ascii_error(std::string_view s, std::size_t bad) {
  char buf[160];
  std::snprintf(buf, sizeof buf, "'ascii' codec can't decode byte 0x%02x in position %zu: ordinal not in range(128)",
                at(s, bad), bad);
  return buf;
}

void append_utf8(std::string& out, std::uint32_t cp) {
  if (cp < 0x80) {
    out += static_cast<char>(cp);
  } else if (cp < 0x800) {
    out += static_cast<char>(0xc0 | (cp >> 6));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    out += static_cast<char>(0xe0 | (cp >> 12));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  } else {
    out += static_cast<char>(0xf0 | (cp >> 18));
    out += static_cast<char>(0x80 | ((cp >> 12) & 0x3f));
    out += static_cast<char>(0x80 | ((cp >> 6) & 0x3f));
    out += static_cast<char>(0x80 | (cp & 0x3f));
  }
}

std::uint32_t next_code_point(std::string_view s, std::size_t& i) {
  unsigned char c = at(s, i);
  if (c < 0x80) { ++i; return c; }
  if (c < 0xe0) { std::uint32_t cp = ((c & 0x1fu) << 6) | (at(s, i + 1) & 0x3fu); i += 2; return cp; }
  if (c < 0xf0) {
    std::uint32_t cp = ((c & 0x0fu) << 12) | ((at(s, i + 1) & 0x3fu) << 6) | (at(s, i + 2) & 0x3fu);
    i += 3;
    return cp;
  }
  std::uint32_t cp = ((c & 0x07u) << 18) | ((at(s, i + 1) & 0x3fu) << 12) | ((at(s, i + 2) & 0x3fu) << 6) |
                     (at(s, i + 3) & 0x3fu);
  i += 4;
  return cp;
}

bool python_escape_decode(std::string_view body, std::string& out, std::string& error) {
  out.clear();
  out.reserve(body.size());
  std::size_t i = 0, n = body.size();
  while (i < n) {
    char c = body[i++];
    if (c != '\\') { out += c; continue; }
    if (i >= n) { error = "Trailing \\ in string"; return false; }
    char e = body[i++];
    switch (e) {
      case '\n': break;  // line continuation
      case '\\': out += '\\'; break;
      case '\'': out += '\''; break;
      case '"': out += '"'; break;
      case 'b': out += '\b'; break;
      case 'f': out += '\f'; break;
      case 't': out += '\t'; break;
      case 'n': out += '\n'; break;
      case 'r': out += '\r'; break;
      case 'v': out += '\v'; break;
      case 'a': out += '\a'; break;
      case '0': case '1': case '2': case '3': case '4': case '5': case '6': case '7': {
        unsigned v = static_cast<unsigned>(e - '0');
        for (int k = 0; k < 2 && i < n && body[i] >= '0' && body[i] <= '7'; ++k) v = (v << 3) + static_cast<unsigned>(body[i++] - '0');
        out += static_cast<char>(v & 0xff);
        break;
      }
      case 'x': {
        int h1 = i < n ? hex_value(at(body, i)) : -1;
        int h2 = i + 1 < n ? hex_value(at(body, i + 1)) : -1;
        if (h1 < 0 || h2 < 0) {
          error = "invalid \\x escape at position " + std::to_string(i - 2);
          return false;
        }
        out += static_cast<char>((h1 << 4) | h2);
        i += 2;
        break;
      }
      default:  // not an escape: the backslash stays, the character is read again
        out += '\\';
        --i;
        break;
    }
  }
  return true;
}

bool raw_unicode_escape_decode(std::string_view line, std::string& out, std::string& error) {
  out.clear();
  out.reserve(line.size() + line.size() / 2);
  std::size_t i = 0, n = line.size();
  while (i < n) {
    unsigned char c = at(line, i++);
    if (c != '\\' || i >= n) { append_utf8(out, c); continue; }
    unsigned char e = at(line, i++);
    int count = e == 'u' ? 4 : e == 'U' ? 8 : 0;
    if (!count) {
      append_utf8(out, '\\');
      append_utf8(out, e);
      continue;
    }
    std::uint32_t cp = 0;
    for (int k = 0; k < count; ++k, ++i) {
      int h = i < n ? hex_value(at(line, i)) : -1;
      if (h < 0) {
        error = std::string("'rawunicodeescape' codec can't decode bytes in position ") + std::to_string(i - 2 - k) +
                "-" + std::to_string(i - 1) + (count == 4 ? ": truncated \\uXXXX escape" : ": truncated \\UXXXXXXXX escape");
        return false;
      }
      cp = (cp << 4) | static_cast<std::uint32_t>(h);
    }
    if (cp > 0x10ffff) {
      error = "'rawunicodeescape' codec can't decode bytes in position " + std::to_string(i - 10) + "-" +
              std::to_string(i - 1) + ": \\Uxxxxxxxx out of range";
      return false;
    }
    append_utf8(out, cp);
  }
  return true;
}

bool utf8_to_latin1(std::string_view utf8, std::string& out) {
  out.clear();
  out.reserve(utf8.size());
  std::size_t i = 0;
  while (i < utf8.size()) {
    std::uint32_t cp = next_code_point(utf8, i);
    if (cp > 0xff) return false;
    out += static_cast<char>(cp);
  }
  return true;
}

bool parse_python_float(std::string_view line, double& out, bool overflow_is_inf) {
  if (line.empty() || line.size() > 4096) return false;
  for (char c : line)
    if (c == 'x' || c == 'X' || c == '(' || c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v' || c == '\0' || c == 'p' || c == 'P')
      return false;
  std::string s(line);
  // The "C" locale whatever the process set: a FLOAT line always uses '.'.
  static const locale_t c_locale = newlocale(LC_ALL_MASK, "C", nullptr);
  errno = 0;
  char* end = nullptr;
  double d = strtod_l(s.c_str(), &end, c_locale);
  if (end != s.c_str() + s.size()) return false;
  if (errno == ERANGE && std::isinf(d) && !overflow_is_inf) return false;  // overflow ("1e500") is an error in CPython
  out = d;
  return true;
}

std::string decimal_to_le_twos_complement(std::string_view digits, bool negative) {
  return digits_to_le_twos_complement(digits, 10, negative);
}

std::string digits_to_le_twos_complement(std::string_view digits, unsigned base, bool negative) {
  auto value = [](char c) {
    return static_cast<std::uint32_t>(c <= '9' ? c - '0' : c >= 'a' ? c - 'a' + 10 : c - 'A' + 10);
  };
  std::vector<std::uint32_t> limbs;  // base 2^32, little-endian
  std::size_t i = 0;
  while (i < digits.size()) {
    std::uint32_t mul = 1, add = 0;
    // As many digits as keep mul (base^chunk) within 32 bits.
    for (; i < digits.size() && std::uint64_t(mul) * base <= 0xffffffffu; ++i) {
      mul *= base;
      add = add * base + value(digits[i]);
    }
    std::uint64_t carry = add;
    for (std::uint32_t& l : limbs) {
      std::uint64_t v = std::uint64_t(l) * mul + carry;
      l = static_cast<std::uint32_t>(v);
      carry = v >> 32;
    }
    if (carry) limbs.push_back(static_cast<std::uint32_t>(carry));
  }
  std::string le;
  le.reserve(limbs.size() * 4 + 1);
  for (std::uint32_t l : limbs)
    for (int k = 0; k < 4; ++k) le += static_cast<char>((l >> (8 * k)) & 0xff);
  le += '\0';  // room for the sign bit
  if (negative) {
    unsigned carry = 1;
    for (char& b : le) {
      unsigned v = (~static_cast<unsigned char>(b) & 0xffu) + carry;
      b = static_cast<char>(v & 0xff);
      carry = v >> 8;
    }
  }
  return le;
}

}  // namespace picklewire
