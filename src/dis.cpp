// The disassembler: pickletools.dis() in C++, with pickletools' stack/memo emulation.
#include "picklewire/dis.hpp"

#include <cstdio>
#include <cstring>
#include <string_view>
#include <unordered_set>
#include <vector>

#include "opcodes.hpp"
#include "repr_internal.hpp"
#include "unpickler_text.hpp"

namespace picklewire {

namespace {

enum class Arg : std::uint8_t {
  none, uint1, uint2, uint4, uint8, int4, decimalnl_short, decimalnl_long, long1, long4, stringnl,
  stringnl_noescape, stringnl_noescape_pair, string1, string4, bytes1, bytes4, bytes8, bytearray8,
  unicodestringnl, unicodestring1, unicodestring4, unicodestring8, floatnl, float8
};

// Stack effects in pickletools' terms: `pop` plain items, then a mark and the slice above it when
// `mark_before` (with `pop` items below the mark), then `push` items (or a mark).
struct OpInfo {
  const char* name = nullptr;
  Arg arg = Arg::none;
  int proto = 0;
  int pop = 0;
  bool mark_before = false;
  int push = 0;
  bool pushes_mark = false;
};

struct Table {
  OpInfo ops[256];
  Table() {
    auto def = [&](std::uint8_t code, const char* name, Arg arg, int proto, int pop, bool mark, int push,
                   bool pushes_mark = false) { ops[code] = {name, arg, proto, pop, mark, push, pushes_mark}; };
    using namespace op;
    def(INT, "INT", Arg::decimalnl_short, 0, 0, false, 1);
    def(BININT, "BININT", Arg::int4, 1, 0, false, 1);
    def(BININT1, "BININT1", Arg::uint1, 1, 0, false, 1);
    def(BININT2, "BININT2", Arg::uint2, 1, 0, false, 1);
    def(LONG, "LONG", Arg::decimalnl_long, 0, 0, false, 1);
    def(LONG1, "LONG1", Arg::long1, 2, 0, false, 1);
    def(LONG4, "LONG4", Arg::long4, 2, 0, false, 1);
    def(STRING, "STRING", Arg::stringnl, 0, 0, false, 1);
    def(BINSTRING, "BINSTRING", Arg::string4, 1, 0, false, 1);
    def(SHORT_BINSTRING, "SHORT_BINSTRING", Arg::string1, 1, 0, false, 1);
    def(BINBYTES, "BINBYTES", Arg::bytes4, 3, 0, false, 1);
    def(SHORT_BINBYTES, "SHORT_BINBYTES", Arg::bytes1, 3, 0, false, 1);
    def(BINBYTES8, "BINBYTES8", Arg::bytes8, 4, 0, false, 1);
    def(BYTEARRAY8, "BYTEARRAY8", Arg::bytearray8, 5, 0, false, 1);
    def(NEXT_BUFFER, "NEXT_BUFFER", Arg::none, 5, 0, false, 1);
    def(READONLY_BUFFER, "READONLY_BUFFER", Arg::none, 5, 1, false, 1);
    def(NONE, "NONE", Arg::none, 0, 0, false, 1);
    def(NEWTRUE, "NEWTRUE", Arg::none, 2, 0, false, 1);
    def(NEWFALSE, "NEWFALSE", Arg::none, 2, 0, false, 1);
    def(UNICODE, "UNICODE", Arg::unicodestringnl, 0, 0, false, 1);
    def(SHORT_BINUNICODE, "SHORT_BINUNICODE", Arg::unicodestring1, 4, 0, false, 1);
    def(BINUNICODE, "BINUNICODE", Arg::unicodestring4, 1, 0, false, 1);
    def(BINUNICODE8, "BINUNICODE8", Arg::unicodestring8, 4, 0, false, 1);
    def(FLOAT, "FLOAT", Arg::floatnl, 0, 0, false, 1);
    def(BINFLOAT, "BINFLOAT", Arg::float8, 1, 0, false, 1);
    def(EMPTY_LIST, "EMPTY_LIST", Arg::none, 1, 0, false, 1);
    def(APPEND, "APPEND", Arg::none, 0, 2, false, 1);
    def(APPENDS, "APPENDS", Arg::none, 1, 1, true, 1);
    def(LIST, "LIST", Arg::none, 0, 0, true, 1);
    def(EMPTY_TUPLE, "EMPTY_TUPLE", Arg::none, 1, 0, false, 1);
    def(TUPLE, "TUPLE", Arg::none, 0, 0, true, 1);
    def(TUPLE1, "TUPLE1", Arg::none, 2, 1, false, 1);
    def(TUPLE2, "TUPLE2", Arg::none, 2, 2, false, 1);
    def(TUPLE3, "TUPLE3", Arg::none, 2, 3, false, 1);
    def(EMPTY_DICT, "EMPTY_DICT", Arg::none, 1, 0, false, 1);
    def(DICT, "DICT", Arg::none, 0, 0, true, 1);
    def(SETITEM, "SETITEM", Arg::none, 0, 3, false, 1);
    def(SETITEMS, "SETITEMS", Arg::none, 1, 1, true, 1);
    def(EMPTY_SET, "EMPTY_SET", Arg::none, 4, 0, false, 1);
    def(ADDITEMS, "ADDITEMS", Arg::none, 4, 1, true, 1);
    def(FROZENSET, "FROZENSET", Arg::none, 4, 0, true, 1);
    def(POP, "POP", Arg::none, 0, 1, false, 0);
    def(DUP, "DUP", Arg::none, 0, 1, false, 2);
    def(MARK, "MARK", Arg::none, 0, 0, false, 0, true);
    def(POP_MARK, "POP_MARK", Arg::none, 1, 0, true, 0);
    def(GET, "GET", Arg::decimalnl_short, 0, 0, false, 1);
    def(BINGET, "BINGET", Arg::uint1, 1, 0, false, 1);
    def(LONG_BINGET, "LONG_BINGET", Arg::uint4, 1, 0, false, 1);
    def(PUT, "PUT", Arg::decimalnl_short, 0, 0, false, 0);
    def(BINPUT, "BINPUT", Arg::uint1, 1, 0, false, 0);
    def(LONG_BINPUT, "LONG_BINPUT", Arg::uint4, 1, 0, false, 0);
    def(MEMOIZE, "MEMOIZE", Arg::none, 4, 1, false, 1);
    def(EXT1, "EXT1", Arg::uint1, 2, 0, false, 1);
    def(EXT2, "EXT2", Arg::uint2, 2, 0, false, 1);
    def(EXT4, "EXT4", Arg::int4, 2, 0, false, 1);
    def(GLOBAL, "GLOBAL", Arg::stringnl_noescape_pair, 0, 0, false, 1);
    def(STACK_GLOBAL, "STACK_GLOBAL", Arg::none, 4, 2, false, 1);
    def(REDUCE, "REDUCE", Arg::none, 0, 2, false, 1);
    def(BUILD, "BUILD", Arg::none, 0, 2, false, 1);
    def(INST, "INST", Arg::stringnl_noescape_pair, 0, 0, true, 1);
    def(OBJ, "OBJ", Arg::none, 1, 0, true, 1);
    def(NEWOBJ, "NEWOBJ", Arg::none, 2, 2, false, 1);
    def(NEWOBJ_EX, "NEWOBJ_EX", Arg::none, 4, 3, false, 1);
    def(PROTO, "PROTO", Arg::uint1, 2, 0, false, 0);
    def(STOP, "STOP", Arg::none, 0, 1, false, 0);
    def(FRAME, "FRAME", Arg::uint8, 4, 0, false, 0);
    def(PERSID, "PERSID", Arg::stringnl_noescape, 0, 0, false, 1);
    def(BINPERSID, "BINPERSID", Arg::none, 1, 1, false, 1);
  }
};

const Table& table() {
  static const Table t;
  return t;
}

// Python's ascii(str) of a latin-1 / ASCII string given as UTF-8.
void ascii_str(std::string& out, std::string_view utf8) {
  std::string r;
  detail::repr_str(r, utf8);
  std::size_t i = 0;
  while (i < r.size()) {
    std::uint32_t cp = next_code_point(r, i);
    char buf[16];
    if (cp < 0x80) out += static_cast<char>(cp);
    else if (cp <= 0xff) { std::snprintf(buf, sizeof buf, "\\x%02x", cp); out += buf; }
    else if (cp <= 0xffff) { std::snprintf(buf, sizeof buf, "\\u%04x", cp); out += buf; }
    else { std::snprintf(buf, sizeof buf, "\\U%08x", cp); out += buf; }
  }
}

class Disassembler {
 public:
  Disassembler(const Buffer& stream, std::string& out)
      : p_(reinterpret_cast<const unsigned char*>(stream.data())), n_(stream.size()), out_(out) {}

  void run() {
    int maxproto = 0;
    for (;;) {
      offset_ = pos_;
      if (pos_ >= n_) fail("pickle exhausted before seeing STOP");
      unsigned char code = p_[pos_++];
      const OpInfo& info = table().ops[code];
      if (!info.name) {
        char buf[64];
        std::snprintf(buf, sizeof buf, "at position %zu, opcode '\\x%02x' unknown", offset_, code);
        if (code >= 0x20 && code < 0x7f && code != '\'' && code != '\\')
          std::snprintf(buf, sizeof buf, "at position %zu, opcode '%c' unknown", offset_, code);
        fail(buf);
      }
      std::string arg;
      bool has_arg = read_arg(info, code, arg);
      maxproto = std::max(maxproto, info.proto);

      char head[32];
      std::snprintf(head, sizeof head, "%5zu: ", offset_);
      std::string line = head;
      std::string code_repr;
      if (code >= 0x20 && code < 0x7f && code != '\\' && code != '\'') code_repr = std::string(1, static_cast<char>(code));
      else if (code == '\\') code_repr = "\\\\";
      else if (code == '\'') code_repr = "'";
      else {
        char b[8];
        std::snprintf(b, sizeof b, "\\x%02x", code);
        code_repr = b;
      }
      line += code_repr;
      if (code_repr.size() < 4) line.append(4 - code_repr.size(), ' ');
      line += ' ';
      line.append(4 * marks_.size(), ' ');
      line += info.name;

      // Stack emulation, as pickletools does it.
      std::string markmsg, error;
      int numtopop = info.pop;
      bool pop_mark = info.mark_before || (code == op::POP && !stack_.empty() && stack_.back());
      if (pop_mark) {
        if (!marks_.empty()) {
          markmsg = "(MARK at " + std::to_string(marks_.back()) + ")";
          marks_.pop_back();
          while (!stack_.empty() && !stack_.back()) stack_.pop_back();
          if (!stack_.empty()) stack_.pop_back();
          if (!info.mark_before) numtopop = 0;  // POP of a mark
        } else {
          error = markmsg = "no MARK exists on stack";
        }
      }
      if (code == op::PUT || code == op::BINPUT || code == op::LONG_BINPUT || code == op::MEMOIZE) {
        std::uint64_t idx = code == op::MEMOIZE ? memo_.size() : memo_arg_;
        if (code == op::MEMOIZE) markmsg = "(as " + std::to_string(idx) + ")";
        if (memo_.count(idx)) error = "memo key " + arg + " already defined";
        else if (stack_.empty()) error = "stack is empty -- can't store into memo";
        else if (stack_.back()) error = "can't store markobject in the memo";
        else memo_.insert(idx);
      } else if (code == op::GET || code == op::BINGET || code == op::LONG_BINGET) {
        if (!memo_.count(memo_arg_)) error = "memo key " + arg + " has never been stored into";
      }
      if (has_arg || !markmsg.empty()) {
        std::size_t name_len = std::strlen(info.name);
        if (name_len < 10) line.append(10 - name_len, ' ');
        if (has_arg) line += ' ' + arg;
        if (!markmsg.empty()) line += ' ' + markmsg;
      }
      out_ += line;
      out_ += '\n';
      if (!error.empty()) fail(error);
      if (static_cast<int>(stack_.size()) < numtopop)
        fail("tries to pop " + std::to_string(numtopop) + " items from stack with only " +
             std::to_string(stack_.size()) + " items");
      stack_.resize(stack_.size() - static_cast<std::size_t>(numtopop));
      if (info.pushes_mark) {
        marks_.push_back(offset_);
        stack_.push_back(true);
      }
      for (int k = 0; k < info.push; ++k) stack_.push_back(false);
      if (code == op::STOP) break;
    }
    out_ += "highest protocol among opcodes = " + std::to_string(maxproto) + "\n";
    if (!stack_.empty()) fail("stack not empty after STOP");
  }

 private:
  [[noreturn]] void fail(const std::string& what) const { throw UnpicklingError(what, offset_); }

  std::string_view take(std::uint64_t k) {
    if (k > n_ - pos_) fail("pickle data was truncated");
    std::string_view v(reinterpret_cast<const char*>(p_ + pos_), static_cast<std::size_t>(k));
    pos_ += static_cast<std::size_t>(k);
    return v;
  }
  std::uint64_t le(int k) {
    std::string_view v = take(static_cast<std::uint64_t>(k));
    std::uint64_t r = 0;
    for (int i = 0; i < k; ++i) r |= std::uint64_t(static_cast<unsigned char>(v[static_cast<std::size_t>(i)])) << (8 * i);
    return r;
  }
  std::string_view line() {
    const void* nl = std::memchr(p_ + pos_, '\n', n_ - pos_);
    if (!nl) fail("no newline found when trying to read stringnl");
    std::size_t len = static_cast<std::size_t>(static_cast<const unsigned char*>(nl) - (p_ + pos_));
    std::string_view v(reinterpret_cast<const char*>(p_ + pos_), len);
    pos_ += len + 1;
    return v;
  }
  void decimal(std::string_view s, std::string& out) {
    std::string_view d = s;
    bool neg = false;
    if (!d.empty() && (d[0] == '-' || d[0] == '+')) {
      neg = d[0] == '-';
      d.remove_prefix(1);
    }
    if (d.empty() || d.size() > 4300 || d.find_first_not_of("0123456789") != std::string_view::npos)
      fail("invalid literal for int() with base 10: " + std::string(s.substr(0, 64)));
    while (d.size() > 1 && d[0] == '0') d.remove_prefix(1);
    if (neg && d != "0") out += '-';
    out += d;
  }
  void text_utf8(std::string_view s, std::string& out) {
    std::size_t bad;
    if (!valid_utf8(s, true, &bad)) fail(utf8_error(s, bad));
    detail::repr_str(out, s);
  }
  // codecs.escape_decode(s)[0].decode("ascii"), as pickletools reads text arguments.
  std::string escaped_ascii(std::string_view s) {
    std::string decoded, error;
    if (!python_escape_decode(s, decoded, error)) fail(error);
    std::size_t bad;
    if (!is_ascii(decoded, &bad)) fail(ascii_error(decoded, bad));
    return decoded;
  }
  void latin1(std::string_view s, std::string& out) {
    std::string u;
    for (char c : s) append_utf8(u, static_cast<unsigned char>(c));
    ascii_str(out, u);
  }

  bool read_arg(const OpInfo& info, unsigned char code, std::string& out) {
    switch (info.arg) {
      case Arg::none: return false;
      case Arg::uint1: memo_arg_ = le(1); out = std::to_string(memo_arg_); return true;
      case Arg::uint2: out = std::to_string(le(2)); return true;
      case Arg::uint4: memo_arg_ = le(4); out = std::to_string(memo_arg_); return true;
      case Arg::uint8: out = std::to_string(le(8)); return true;
      case Arg::int4: out = std::to_string(static_cast<std::int32_t>(static_cast<std::uint32_t>(le(4)))); return true;
      case Arg::decimalnl_short: {
        std::string_view s = line();
        if (code == op::INT && s == "00") out = "False";
        else if (code == op::INT && s == "01") out = "True";
        else decimal(s, out);
        if (code != op::INT) {
          memo_arg_ = 0;
          for (char c : out) memo_arg_ = c == '-' ? ~std::uint64_t(0) : memo_arg_ * 10 + static_cast<std::uint64_t>(c - '0');
        }
        return true;
      }
      case Arg::decimalnl_long: {
        std::string_view s = line();
        if (!s.empty() && s.back() == 'L') s.remove_suffix(1);
        decimal(s, out);
        return true;
      }
      case Arg::long1:
      case Arg::long4: {
        std::int64_t k = info.arg == Arg::long1 ? static_cast<std::int64_t>(le(1))
                                                : static_cast<std::int32_t>(static_cast<std::uint32_t>(le(4)));
        if (k < 0) fail("long4 byte count < 0: " + std::to_string(k));
        std::string_view bytes = take(static_cast<std::uint64_t>(k));
        std::size_t m = bytes.size();
        auto b = [&](std::size_t i) { return static_cast<unsigned char>(bytes[i]); };
        while (m > 1 && ((b(m - 1) == 0 && !(b(m - 2) & 0x80)) || (b(m - 1) == 0xff && (b(m - 2) & 0x80)))) --m;
        detail::repr_int_le(out, bytes.substr(0, m));
        return true;
      }
      case Arg::stringnl: {
        std::string_view s = line();
        if (s.empty() || (s[0] != '"' && s[0] != '\'')) fail("no string quotes around " + std::string(s.substr(0, 64)));
        if (s.back() != s[0]) fail("string quote not found at both ends");
        // pickletools strips s[1:-1], which for a lone quote is empty.
        ascii_str(out, escaped_ascii(s.size() >= 2 ? s.substr(1, s.size() - 2) : std::string_view()));
        return true;
      }
      case Arg::stringnl_noescape:
        detail::repr_str(out, escaped_ascii(line()));
        return true;
      case Arg::stringnl_noescape_pair: {
        std::string a = escaped_ascii(line());
        std::string b = escaped_ascii(line());
        detail::repr_str(out, a + " " + b);
        return true;
      }
      case Arg::string1:
      case Arg::string4: {
        std::int64_t k = info.arg == Arg::string1 ? static_cast<std::int64_t>(le(1))
                                                  : static_cast<std::int32_t>(static_cast<std::uint32_t>(le(4)));
        if (k < 0) fail("string4 byte count < 0: " + std::to_string(k));
        latin1(take(static_cast<std::uint64_t>(k)), out);
        return true;
      }
      case Arg::bytes1: detail::repr_bytes(out, take(le(1))); return true;
      case Arg::bytes4: detail::repr_bytes(out, take(le(4))); return true;
      case Arg::bytes8: detail::repr_bytes(out, take(le(8))); return true;
      case Arg::bytearray8:
        out = "bytearray(";
        detail::repr_bytes(out, take(le(8)), true);
        out += ')';
        return true;
      case Arg::unicodestringnl: {
        std::string decoded, error;
        if (!raw_unicode_escape_decode(line(), decoded, error)) fail(error);
        detail::repr_str(out, decoded);
        return true;
      }
      case Arg::unicodestring1: text_utf8(take(le(1)), out); return true;
      case Arg::unicodestring4: text_utf8(take(le(4)), out); return true;
      case Arg::unicodestring8: text_utf8(take(le(8)), out); return true;
      case Arg::floatnl: {
        std::string_view s = line();
        double d;
        if (!parse_python_float(s, d)) fail("could not convert string to float: " + std::string(s.substr(0, 64)));
        detail::repr_float(out, d);
        return true;
      }
      case Arg::float8: {
        std::uint64_t be = le(8), bits = 0;
        for (int i = 0; i < 8; ++i) bits |= ((be >> (8 * i)) & 0xff) << (8 * (7 - i));
        double d;
        std::memcpy(&d, &bits, sizeof d);
        detail::repr_float(out, d);
        return true;
      }
    }
    return false;
  }

  const unsigned char* p_;
  std::size_t n_;
  std::size_t pos_ = 0, offset_ = 0;
  std::uint64_t memo_arg_ = 0;
  std::string& out_;  // the caller's: it keeps the lines written before an error
  std::vector<bool> stack_;  // true: a mark
  std::vector<std::size_t> marks_;
  std::unordered_set<std::uint64_t> memo_;
};

}  // namespace

void dis(const Buffer& stream, std::string& out) { Disassembler(stream, out).run(); }

std::string dis(const Buffer& stream) {
  std::string out;
  dis(stream, out);
  return out;
}

}  // namespace picklewire
