// What CPython makes of REDUCE / NEWOBJ / NEWOBJ_EX on builtins, without importing anything.
//
// Calling a builtin type with literal arguments runs no user code, so int('12'), set([1, 2]),
// tuple('ab'), bytes([1, 2]), int.__new__(int) ... load as the value CPython produces, and where
// CPython's call raises, the load fails with CPython's message. An argument form not handled here
// (an argument that is itself an inert object, a set iterated in hash order, a codec we do not
// ship, ...) keeps the inert Object node: undecided is never guessed.
#include "builtin_reductions.hpp"

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstring>
#include <string>

#include "picklewire/errors.hpp"
#include "repr_internal.hpp"
#include "unpickler_text.hpp"

namespace picklewire::builtin_reductions {

namespace {

using namespace std::literals;

// ---------------------------------------------------------------- what builtins.<name> is

// Python 3.11's builtins that are types (exceptions aside: those stay "unknown", which is safe).
constexpr std::array kBuiltinTypes = {
    "bool"sv,  "bytearray"sv, "bytes"sv,        "classmethod"sv, "complex"sv, "dict"sv,  "enumerate"sv,
    "filter"sv, "float"sv,    "frozenset"sv,    "int"sv,         "list"sv,    "map"sv,   "memoryview"sv,
    "object"sv, "property"sv, "range"sv,        "reversed"sv,    "set"sv,     "slice"sv, "staticmethod"sv,
    "str"sv,    "super"sv,    "tuple"sv,        "type"sv,        "zip"sv,
};
// ... and the ones that are builtin_function_or_method.
constexpr std::array kBuiltinFunctions = {
    "__build_class__"sv, "__import__"sv, "abs"sv,     "aiter"sv,    "all"sv,     "anext"sv,      "any"sv,
    "ascii"sv,           "bin"sv,        "breakpoint"sv, "callable"sv, "chr"sv,  "compile"sv,    "delattr"sv,
    "dir"sv,             "divmod"sv,     "eval"sv,    "exec"sv,     "format"sv,  "getattr"sv,    "globals"sv,
    "hasattr"sv,         "hash"sv,       "hex"sv,     "id"sv,       "input"sv,   "isinstance"sv, "issubclass"sv,
    "iter"sv,            "len"sv,        "locals"sv,  "max"sv,      "min"sv,     "next"sv,       "oct"sv,
    "open"sv,            "ord"sv,        "pow"sv,     "print"sv,    "repr"sv,    "round"sv,      "setattr"sv,
    "sorted"sv,          "sum"sv,        "vars"sv,
};

template <std::size_t N>
bool among(const std::array<std::string_view, N>& names, std::string_view name) {
  return std::find(names.begin(), names.end(), name) != names.end();
}

const GlobalName* global_of(const Slot& s) {
  const Node* n = node_of(s);
  return n && n->kind == Kind::Global ? &std::get<GlobalName>(n->payload) : nullptr;
}

}  // namespace

std::optional<std::string_view> python_type_name(const Slot& s) {
  switch (kind_of(s)) {
    case Kind::None: return "NoneType"sv;
    case Kind::PickleBuffer: return "PickleBuffer"sv;
    case Kind::NDArray: return "ndarray"sv;
    case Kind::Object: return std::nullopt;
    case Kind::Global: {
      const GlobalName& g = *global_of(s);
      if (g.module != "builtins") return std::nullopt;
      if (among(kBuiltinTypes, g.name)) return "type"sv;
      if (among(kBuiltinFunctions, g.name)) return "builtin_function_or_method"sv;
      if (g.name == "None") return "NoneType"sv;
      if (g.name == "True" || g.name == "False" || g.name == "__debug__") return "bool"sv;
      if (g.name == "Ellipsis") return "ellipsis"sv;
      if (g.name == "NotImplemented") return "NotImplementedType"sv;
      return std::nullopt;
    }
    default: return to_string(kind_of(s));
  }
}

namespace {

bool is_callable_type_name(std::string_view t) { return t == "type" || t == "builtin_function_or_method"; }

// Py_TYPE(x)->tp_name, which "'...' object is not callable" quotes: the module-qualified name for
// extension types.
std::string tp_name(const Slot& s, std::string_view type_name) {
  switch (kind_of(s)) {
    case Kind::PickleBuffer: return "pickle.PickleBuffer";
    case Kind::NDArray: return "numpy.ndarray";
    default: return std::string(type_name);
  }
}

std::optional<std::string_view> text_of(const Slot& s, Kind k) {
  const Node* n = node_of(s);
  if (n && n->kind == k) return std::get<Text>(n->payload).data;
  return std::nullopt;
}

// ---------------------------------------------------------------- calls

class Call {
 public:
  Call(Graph& graph, std::size_t offset) : graph_(graph), offset_(offset) {}

  // name(*args) for the builtin type `name`; nullopt: not decided here.
  std::optional<Slot> builtin_type(std::string_view name, const Items& args) {
    if (name == "int") return int_(args);
    if (name == "float") return float_(args);
    if (name == "complex") return complex_(args);
    if (name == "str") return str_(args);
    if (name == "bytes") return bytes_(args, Kind::Bytes);
    if (name == "bytearray") return bytes_(args, Kind::ByteArray);
    if (name == "bool") return bool_(args);
    if (name == "tuple" || name == "list" || name == "set" || name == "frozenset") return sequence(name, args);
    if (name == "dict") return dict_(args);
    return std::nullopt;
  }

  [[noreturn]] void fail(const std::string& what) const { throw UnpicklingError(what, offset_); }

  Slot text(Kind k, std::string_view data) { return Slot(k, graph_.new_text_node(k, data)); }
  Slot stored(Kind k, std::string_view data) { return text(k, graph_.store(data)); }
  Node* make(Kind k) { return graph_.new_node(k); }

 private:
  static std::string quoted_type(const Slot& s) { return "'" + std::string(*python_type_name(s)) + "'"; }

  // Python's repr of a str / bytes / bytearray argument (error messages quote the argument).
  static std::string repr_of_text(const Slot& s) {
    std::string out;
    const std::string_view data = std::get<Text>(node_of(s)->payload).data;
    switch (kind_of(s)) {
      case Kind::Str: detail::repr_str(out, data); break;
      case Kind::Bytes: detail::repr_bytes(out, data); break;
      default:
        out = "bytearray(";
        detail::repr_bytes(out, data, /*bytearray_rules=*/true);
        out += ')';
    }
    return out;
  }

  // The text of a str / bytes / bytearray argument when it is plain ASCII, the only text parsed
  // here (str's non-ASCII digits and spaces, e.g. '\u0661' or '\xa0', stay undecided).
  static std::optional<std::string_view> ascii_text(const Slot& s) {
    const Kind k = kind_of(s);
    if (k != Kind::Str && k != Kind::Bytes && k != Kind::ByteArray) return std::nullopt;
    const std::string_view data = std::get<Text>(node_of(s)->payload).data;
    for (char c : data)
      if (static_cast<unsigned char>(c) >= 0x80) return std::nullopt;
    return data;
  }
  static std::string_view strip(std::string_view s) {
    constexpr std::string_view space = " \t\n\v\f\r";
    const std::size_t first = s.find_first_not_of(space);
    if (first == std::string_view::npos) return {};
    return s.substr(first, s.find_last_not_of(space) - first + 1);
  }

  // ---- int
  std::optional<Slot> int_(const Items& args) {
    if (args.size() > 2) fail("int() takes at most 2 arguments (" + std::to_string(args.size()) + " given)");
    if (args.empty()) return int_slot(0);
    const Slot& x = args[0];
    const Kind k = kind_of(x);
    if (args.size() == 2) {
      const Kind bk = kind_of(args[1]);
      if (!args[1].is_inline || (bk != Kind::Int && bk != Kind::Bool)) return std::nullopt;
      const std::int64_t base = bk == Kind::Bool ? args[1].b : args[1].i;
      if ((base != 0 && base < 2) || base > 36) fail("int() base must be >= 2 and <= 36, or 0");
      if (k != Kind::Str && k != Kind::Bytes && k != Kind::ByteArray) {
        if (!python_type_name(x)) return std::nullopt;
        fail("int() can't convert non-string with explicit base");
      }
      return parse_int(x, static_cast<unsigned>(base));
    }
    switch (k) {
      case Kind::Int: return x;
      case Kind::Bool: return int_slot(x.b);
      case Kind::Float: return int_of_double(x.f);
      case Kind::Str:
      case Kind::Bytes:
      case Kind::ByteArray: return parse_int(x, 10);
      case Kind::PickleBuffer:  // a buffer converts through its bytes, an array through numpy: not here
      case Kind::NDArray: return std::nullopt;
      default:
        if (!python_type_name(x)) return std::nullopt;
        fail("int() argument must be a string, a bytes-like object or a real number, not " + quoted_type(x));
    }
  }

  // int(text, base): PyLong_FromString's grammar (whitespace, sign, 0x/0o/0b prefix, single
  // underscores between digits; base 0: the prefix decides, and a decimal may not start with 0).
  std::optional<Slot> parse_int(const Slot& x, unsigned base) {
    const std::optional<std::string_view> raw = ascii_text(x);
    if (!raw) return std::nullopt;
    const unsigned shown_base = base;
    std::string_view s = strip(*raw);
    bool negative = false;
    if (!s.empty() && (s[0] == '+' || s[0] == '-')) {
      negative = s[0] == '-';
      s.remove_prefix(1);
    }
    auto prefix_of = [](std::string_view t) -> unsigned {
      if (t.size() < 2 || t[0] != '0') return 0;
      const char p = static_cast<char>(t[1] | 0x20);
      return p == 'x' ? 16 : p == 'o' ? 8 : p == 'b' ? 2 : 0;
    };
    bool prefixed = false;
    const unsigned prefix = prefix_of(s);
    if (base == 0) {
      base = prefix ? prefix : 10;
      prefixed = prefix != 0;
    } else if (prefix != 0 && prefix == base) {
      prefixed = true;
    }
    bool ok = !s.empty();
    if (prefixed) {
      s.remove_prefix(2);
      if (!s.empty() && s[0] == '_') s.remove_prefix(1);  // "0x_1f"
    }
    std::string digits;
    digits.reserve(s.size());
    for (std::size_t i = 0; ok && i < s.size(); ++i) {
      const char c = s[i];
      if (c == '_') {
        ok = i > 0 && i + 1 < s.size() && s[i - 1] != '_' && s[i + 1] != '_';
        continue;
      }
      const char lower = static_cast<char>(c | 0x20);
      const unsigned d = c >= '0' && c <= '9' ? static_cast<unsigned>(c - '0')
                         : lower >= 'a' && lower <= 'z' ? static_cast<unsigned>(lower - 'a' + 10)
                                                        : 99;
      ok = d < base;
      digits += c;
    }
    ok = ok && !digits.empty();
    // Base 0 without a prefix: "0", "00", "0_0" but not "012" (that would be octal in Python 2).
    if (ok && shown_base == 0 && !prefixed && digits.size() > 1 && digits[0] == '0')
      ok = digits.find_first_not_of('0') == std::string::npos;
    if (!ok) fail("invalid literal for int() with base " + std::to_string(shown_base) + ": " + repr_of_text(x));
    // CPython's limit on decimal (non power-of-two base) conversions; the error names
    // sys.set_int_max_str_digits, a setting of the caller's process: left to it.
    if (digits.size() > 4300) return std::nullopt;
    return int_from_le(graph_, digits_to_le_twos_complement(digits, base, negative), /*viewable=*/false);
  }

  std::optional<Slot> int_of_double(double d) {
    if (std::isnan(d)) fail("cannot convert float NaN to integer");
    if (std::isinf(d)) fail("cannot convert float infinity to integer");
    const double t = std::trunc(d);
    if (std::fabs(t) < 0x1p63) return int_slot(static_cast<std::int64_t>(t));
    // |t| >= 2^63: its 53-bit mantissa shifted left, as LE two's complement.
    int exponent = 0;
    const double m = std::frexp(std::fabs(t), &exponent);  // |t| = m * 2^exponent, m in [0.5, 1)
    const std::uint64_t mantissa = static_cast<std::uint64_t>(std::ldexp(m, 53));
    const int shift = exponent - 53;
    std::string le(static_cast<std::size_t>(shift / 8 + 10), '\0');
    for (int bit = 0; bit < 53; ++bit)
      if (mantissa >> bit & 1) le[static_cast<std::size_t>((bit + shift) / 8)] |= static_cast<char>(1 << ((bit + shift) % 8));
    if (t < 0) {
      unsigned carry = 1;
      for (char& b : le) {
        const unsigned v = (~static_cast<unsigned char>(b) & 0xffu) + carry;
        b = static_cast<char>(v & 0xff);
        carry = v >> 8;
      }
    }
    return int_from_le(graph_, le, /*viewable=*/false);
  }

  // ---- float
  std::optional<Slot> float_(const Items& args) {
    if (args.size() > 1) fail("float expected at most 1 argument, got " + std::to_string(args.size()));
    if (args.empty()) return float_slot(0.0);
    const Slot& x = args[0];
    switch (kind_of(x)) {
      case Kind::Float: return x;
      case Kind::Bool: return float_slot(x.b ? 1.0 : 0.0);
      case Kind::Int:
        if (x.is_inline) return float_slot(static_cast<double>(x.i));  // rounds to nearest even, as CPython
        return std::nullopt;  // a big int: CPython's rounding (or OverflowError) is not reproduced here
      case Kind::Str:
      case Kind::Bytes:
      case Kind::ByteArray: {
        const std::optional<std::string_view> raw = ascii_text(x);
        if (!raw) return std::nullopt;
        // _Py_string_to_number_with_underscores: an underscore only between two digits.
        const std::string_view s = strip(*raw);
        std::string plain;
        bool ok = !s.empty();
        for (std::size_t i = 0; ok && i < s.size(); ++i) {
          if (s[i] != '_') {
            plain += s[i];
            continue;
          }
          ok = i > 0 && i + 1 < s.size() && std::isdigit(static_cast<unsigned char>(s[i - 1])) &&
               std::isdigit(static_cast<unsigned char>(s[i + 1]));
        }
        double d = 0;
        if (!ok || !parse_python_float(plain, d, /*overflow_is_inf=*/true))
          fail("could not convert string to float: " + repr_of_text(x));
        return float_slot(d);
      }
      case Kind::PickleBuffer:
      case Kind::NDArray: return std::nullopt;
      default:
        if (!python_type_name(x)) return std::nullopt;
        fail("float() argument must be a string or a real number, not " + quoted_type(x));
    }
  }

  // ---- complex: complex(real, imag) of numbers (the form pickle writes for complex before
  // protocol 2 and for complex subclasses' base)
  std::optional<Slot> complex_(const Items& args) {
    if (args.size() > 2) fail("complex() takes at most 2 arguments (" + std::to_string(args.size()) + " given)");
    auto number = [](const Slot& s) -> std::optional<double> {
      if (!s.is_inline) return std::nullopt;  // big ints, complex parts: not decided here
      switch (s.kind) {
        case Kind::Float: return s.f;
        case Kind::Bool: return s.b ? 1.0 : 0.0;
        case Kind::Int: return static_cast<double>(s.i);
        default: return std::nullopt;
      }
    };
    double parts[2] = {0.0, 0.0};
    for (std::size_t i = 0; i < args.size(); ++i) {
      const std::optional<double> v = number(args[i]);
      if (!v) return std::nullopt;
      parts[i] = *v;
    }
    Node* n = make(Kind::Complex);
    std::get<ComplexNumber>(n->payload) = {parts[0], parts[1]};
    return node_slot(n);
  }

  // ---- str: str() of a scalar (its repr), str(bytes, encoding[, 'strict'])
  std::optional<Slot> str_(const Items& args) {
    if (args.size() > 3) fail("str() takes at most 3 arguments (" + std::to_string(args.size()) + " given)");
    if (args.empty()) return text(Kind::Str, {});
    const Slot& x = args[0];
    if (args.size() > 1) return decode(args);
    std::string out;
    switch (kind_of(x)) {
      case Kind::Str: return x;
      case Kind::None: return text(Kind::Str, "None");
      case Kind::Bool: return text(Kind::Str, x.b ? "True"sv : "False"sv);
      case Kind::Int:
        if (x.is_inline) return stored(Kind::Str, std::to_string(x.i));
        // Beyond 4300 digits CPython refuses (sys.set_int_max_str_digits): not decided here.
        if (std::get<Text>(x.node->payload).data.size() > 1700) return std::nullopt;
        detail::repr_int_le(out, std::get<Text>(x.node->payload).data);
        return stored(Kind::Str, out);
      case Kind::Float: detail::repr_float(out, x.f); return stored(Kind::Str, out);
      case Kind::Complex: {
        const ComplexNumber& c = std::get<ComplexNumber>(x.node->payload);
        detail::repr_complex(out, c.real, c.imag);
        return stored(Kind::Str, out);
      }
      case Kind::Bytes:
      case Kind::ByteArray: return stored(Kind::Str, repr_of_text(x));
      default: return std::nullopt;  // containers print their items' reprs (sets in hash order): not here
    }
  }
  static std::optional<std::string_view> codec_of(std::string_view name) {
    std::string n;
    for (char c : name) n += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c == '_' ? '-' : c);
    if (n == "utf-8" || n == "utf8") return "utf-8"sv;
    if (n == "ascii" || n == "us-ascii") return "ascii"sv;
    if (n == "latin-1" || n == "latin1" || n == "iso-8859-1" || n == "iso8859-1") return "latin-1"sv;
    return std::nullopt;
  }
  // str(bytes, encoding[, errors]) for the codecs every Python has, strict errors, input that
  // decodes (a decode error's message is left to CPython: undecided).
  std::optional<Slot> decode(const Items& args) {
    const std::optional<std::string_view> encoding = text_of(args[1], Kind::Str);
    if (!encoding || (args.size() == 3 && text_of(args[2], Kind::Str) != "strict"sv)) return std::nullopt;
    const std::optional<std::string_view> codec = codec_of(*encoding);
    const Kind k = kind_of(args[0]);
    if (!codec || (k != Kind::Bytes && k != Kind::ByteArray)) return std::nullopt;
    const std::string_view data = std::get<Text>(args[0].node->payload).data;
    std::size_t bad = 0;
    if (*codec == "latin-1") {
      if (is_ascii(data, &bad)) return text(Kind::Str, data);
      std::string utf8;
      for (char c : data) append_utf8(utf8, static_cast<unsigned char>(c));
      return stored(Kind::Str, utf8);
    }
    const bool decodes = *codec == "ascii" ? is_ascii(data, &bad) : valid_utf8(data, /*surrogates=*/false, &bad);
    if (!decodes) return std::nullopt;
    return text(Kind::Str, data);
  }

  // ---- bytes / bytearray
  std::optional<Slot> bytes_(const Items& args, Kind out) {
    const std::string what = out == Kind::Bytes ? "bytes" : "bytearray";
    if (args.size() > 3) fail(what + "() takes at most 3 arguments (" + std::to_string(args.size()) + " given)");
    if (args.empty()) return text(out, {});
    const Slot& x = args[0];
    if (args.size() > 1) {
      // bytes(str, 'latin-1' | 'latin1'): what protocols 0-2 write for a bytearray
      const std::optional<std::string_view> s = text_of(x, Kind::Str);
      const std::optional<std::string_view> encoding = text_of(args[1], Kind::Str);
      if (args.size() != 2 || !s || !encoding || codec_of(*encoding) != "latin-1"sv) return std::nullopt;
      return latin1(*s, out);
    }
    switch (kind_of(x)) {
      case Kind::Bytes:
      case Kind::ByteArray: return text(out, std::get<Text>(x.node->payload).data);
      case Kind::Bool:
      case Kind::Int: {
        if (!x.is_inline) return std::nullopt;  // a big count: MemoryError or OverflowError
        const std::int64_t n = x.kind == Kind::Bool ? x.b : x.i;
        if (n < 0) fail("negative count");
        if (n > (std::int64_t(1) << 24)) return std::nullopt;  // a size to allocate: left to CPython
        return stored(out, std::string(static_cast<std::size_t>(n), '\0'));
      }
      case Kind::List:
      case Kind::Tuple: {
        std::string bytes;
        for (const Slot& item : x.node->items()) {
          if (!item.is_inline || (item.kind != Kind::Int && item.kind != Kind::Bool)) return std::nullopt;
          const std::int64_t v = item.kind == Kind::Bool ? item.b : item.i;
          if (v < 0 || v > 255) fail(out == Kind::Bytes ? "bytes must be in range(0, 256)" : "byte must be in range(0, 256)");
          bytes += static_cast<char>(v);
        }
        return stored(out, bytes);
      }
      case Kind::Str: fail("string argument without an encoding");
      case Kind::None:
      case Kind::Float:
      case Kind::Complex: fail("cannot convert " + quoted_type(x) + " object to " + what);
      default: return std::nullopt;
    }
  }

 public:
  Slot latin1(std::string_view utf8, Kind out) {
    std::string bytes;
    if (!utf8_to_latin1(utf8, bytes)) fail("'latin-1' codec can't encode character");
    return stored(out, bytes);
  }

 private:
  // ---- bool
  std::optional<Slot> bool_(const Items& args) {
    if (args.size() > 1) fail("bool expected at most 1 argument, got " + std::to_string(args.size()));
    if (args.empty()) return bool_slot(false);
    const Slot& x = args[0];
    switch (kind_of(x)) {
      case Kind::None: return bool_slot(false);
      case Kind::Bool: return x;
      case Kind::Int: return bool_slot(!x.is_inline || x.i != 0);  // a big int is never 0
      case Kind::Float: return bool_slot(x.f != 0.0);              // nan is true, as in Python
      case Kind::Complex: {
        const ComplexNumber& c = std::get<ComplexNumber>(x.node->payload);
        return bool_slot(c.real != 0.0 || c.imag != 0.0);
      }
      case Kind::Str:
      case Kind::Bytes:
      case Kind::ByteArray: return bool_slot(!std::get<Text>(x.node->payload).data.empty());
      case Kind::Tuple:
      case Kind::List:
      case Kind::Set:
      case Kind::FrozenSet: return bool_slot(!x.node->items().empty());
      case Kind::Dict: return bool_slot(!x.node->entries().empty());
      default: return std::nullopt;
    }
  }

  // ---- tuple, list, set, frozenset of an iterable whose order is known
  // The items of iterating `x` (str: its characters, bytes: ints, dict: keys); nullopt where the
  // order is CPython's hash order (sets) or unknown (objects). Throws for a known non-iterable.
  std::optional<Items> iterate(const Slot& x) {
    Items out(&memory_);
    switch (kind_of(x)) {
      case Kind::Tuple:
      case Kind::List: out = x.node->items(); return out;
      case Kind::Dict:
        for (const auto& [k, v] : x.node->entries()) out.push_back(k);
        return out;
      case Kind::Str: {
        const std::string_view s = std::get<Text>(x.node->payload).data;
        for (std::size_t i = 0; i < s.size();) {
          const std::size_t start = i;
          (void)next_code_point(s, i);
          out.push_back(text(Kind::Str, s.substr(start, i - start)));
        }
        return out;
      }
      case Kind::Bytes:
      case Kind::ByteArray:
        for (char c : std::get<Text>(x.node->payload).data) out.push_back(int_slot(static_cast<unsigned char>(c)));
        return out;
      case Kind::None:
      case Kind::Bool:
      case Kind::Int:
      case Kind::Float:
      case Kind::Complex: fail(quoted_type(x) + " object is not iterable");
      default: return std::nullopt;
    }
  }
  std::optional<Slot> sequence(std::string_view name, const Items& args) {
    if (args.size() > 1) fail(std::string(name) + " expected at most 1 argument, got " + std::to_string(args.size()));
    const Kind k = name == "tuple" ? Kind::Tuple : name == "list" ? Kind::List : name == "set" ? Kind::Set : Kind::FrozenSet;
    if (args.empty()) return node_slot(make(k));
    const Slot& x = args[0];
    if (k == Kind::Tuple && kind_of(x) == Kind::Tuple) return x;  // tuple(t) is t
    // set(s) / frozenset(s) of a set: its items in the order the graph holds them, as ADDITEMS
    // keeps them (only the iteration order is CPython's hash order, and a set has no order).
    std::optional<Items> items;
    if ((k == Kind::Set || k == Kind::FrozenSet) && (kind_of(x) == Kind::Set || kind_of(x) == Kind::FrozenSet))
      items = Items(x.node->items(), &memory_);
    else
      items = iterate(x);
    if (!items) return std::nullopt;
    Node* n = make(k);
    n->items().assign(items->begin(), items->end());
    return node_slot(n);
  }

  // ---- dict(mapping or iterable of pairs)
  std::optional<Slot> dict_(const Items& args) {
    if (args.size() > 1) fail("dict expected at most 1 argument, got " + std::to_string(args.size()));
    Node* n = make(Kind::Dict);
    if (args.empty()) return node_slot(n);
    const Slot& x = args[0];
    if (kind_of(x) == Kind::Dict) {
      n->entries() = x.node->entries();
      return node_slot(n);
    }
    const std::optional<Items> elements = iterate(x);
    if (!elements) return std::nullopt;
    Entries& out = n->entries();
    for (std::size_t i = 0; i < elements->size(); ++i) {
      const Slot& e = (*elements)[i];
      const Kind ek = kind_of(e);
      std::optional<Items> pair;
      if (ek == Kind::Tuple || ek == Kind::List || ek == Kind::Str || ek == Kind::Bytes || ek == Kind::ByteArray ||
          ek == Kind::Dict)
        pair = iterate(e);
      else if (ek == Kind::None || ek == Kind::Bool || ek == Kind::Int || ek == Kind::Float || ek == Kind::Complex)
        fail("cannot convert dictionary update sequence element #" + std::to_string(i) + " to a sequence");
      if (!pair) return std::nullopt;
      if (pair->size() != 2)
        fail("dictionary update sequence element #" + std::to_string(i) + " has length " +
             std::to_string(pair->size()) + "; 2 is required");
      out.emplace_back((*pair)[0], (*pair)[1]);
    }
    return node_slot(n);
  }

  Graph& graph_;
  std::size_t offset_;
  std::pmr::unsynchronized_pool_resource memory_{large_blocks()};  // iterate()'s temporaries
};

Slot object_node(Graph& graph, ObjectForm form, const Slot& callable, const Slot& args) {
  Node* n = graph.new_node(Kind::Object);
  ObjectData& o = n->object();
  o.form = form;
  o.callable = callable;
  o.args = args;
  return node_slot(n);
}

bool is_global(const Slot& s, std::string_view module, std::string_view name) {
  const GlobalName* g = global_of(s);
  return g && g->module == module && g->name == name;
}

}  // namespace

void check_reduce(const Slot& callable, const Slot& args, std::size_t offset) {
  // PyObject_CallObject: the argument tuple is checked before the callable.
  const std::optional<std::string_view> args_type = python_type_name(args);
  if (args_type && kind_of(args) != Kind::Tuple) throw UnpicklingError("argument list must be a tuple", offset);
  const std::optional<std::string_view> callable_type = python_type_name(callable);
  if (callable_type && !is_callable_type_name(*callable_type))
    throw UnpicklingError("'" + tp_name(callable, *callable_type) + "' object is not callable", offset);
}

void check_newobj(ObjectForm form, const Slot& cls, const Slot& args, const Slot& kwargs, std::size_t offset) {
  const std::string op = form == ObjectForm::NewObjEx ? "NEWOBJ_EX" : "NEWOBJ";
  const std::optional<std::string_view> cls_type = python_type_name(cls);
  if (cls_type && *cls_type != "type")
    throw UnpicklingError(op + " class argument must be a type, not " + std::string(*cls_type), offset);
  const std::optional<std::string_view> args_type = python_type_name(args);
  if (args_type && kind_of(args) != Kind::Tuple)
    throw UnpicklingError(op + " args argument must be a tuple, not " + std::string(*args_type), offset);
  if (form != ObjectForm::NewObjEx) return;
  const std::optional<std::string_view> kwargs_type = python_type_name(kwargs);
  if (kwargs_type && kind_of(kwargs) != Kind::Dict)
    throw UnpicklingError(op + " kwargs argument must be a dict, not " + std::string(*kwargs_type), offset);
}

std::optional<Slot> decode_reduce(Graph& graph, const GlobalName& callable, const Slot& args, std::size_t offset) {
  if (kind_of(args) != Kind::Tuple) return std::nullopt;
  const Items& argv = args.node->items();
  Call call(graph, offset);
  if (callable.module == "builtins" && among(kBuiltinTypes, callable.name)) return call.builtin_type(callable.name, argv);
  // _codecs.encode(str, 'latin1'): how protocols 0-2 write bytes.
  if (callable.module == "_codecs" && callable.name == "encode" && argv.size() == 2 &&
      kind_of(argv[0]) == Kind::Str && kind_of(argv[1]) == Kind::Str) {
    const std::string_view encoding = argv[1].node->text().data;
    if (encoding == "latin1" || encoding == "latin-1") return call.latin1(argv[0].node->text().data, Kind::Bytes);
  }
  // copyreg._reconstructor(cls, object, None) is how protocols 0 and 1 create a plain instance:
  // cls.__new__(cls). It becomes the NEWOBJ form, which writes back as protocol 2+ would.
  if (callable.module == "copyreg" && callable.name == "_reconstructor" && argv.size() == 3 &&
      is_global(argv[1], "builtins", "object") && kind_of(argv[2]) == Kind::None)
    return object_node(graph, ObjectForm::NewObj, argv[0], node_slot(graph.new_node(Kind::Tuple)));
  return std::nullopt;
}

std::optional<Slot> decode_newobj(Graph& graph, const GlobalName& cls, const Slot& args, const Slot& kwargs,
                                  std::size_t offset) {
  if (cls.module != "builtins" || kind_of(args) != Kind::Tuple) return std::nullopt;
  // Keyword arguments: each type's own rules (set.__new__ refuses them, int's are positional): not here.
  if (kind_of(kwargs) != Kind::None && (kind_of(kwargs) != Kind::Dict || !kwargs.node->entries().empty()))
    return std::nullopt;
  Call call(graph, offset);
  // Their __new__ makes the empty container; __init__ (not called by NEWOBJ) would fill it.
  if (cls.name == "list") return node_slot(graph.new_node(Kind::List));
  if (cls.name == "dict") return node_slot(graph.new_node(Kind::Dict));
  if (cls.name == "set") return node_slot(graph.new_node(Kind::Set));
  if (cls.name == "bytearray") return call.text(Kind::ByteArray, {});
  if (!among(kBuiltinTypes, cls.name)) return std::nullopt;
  return call.builtin_type(cls.name, args.node->items());
}

}  // namespace picklewire::builtin_reductions
