// The pickler against CPython, run at test time: for every case, the Value built here and the
// object built by the Python snippet beside it must pickle to the same bytes at protocols 2-5,
// and CPython must load our bytes back (sharing, recursion, out-of-band buffers included).
#include <gtest/gtest.h>
#include <sys/mman.h>

#include <cmath>
#include <cstring>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "picklewire/errors.hpp"
#include "picklewire/pickler.hpp"
#include "picklewire/unpickler.hpp"
#include "picklewire/value.hpp"
#include "support.hpp"

using namespace picklewire;
using picklewire::test::run_python;

namespace {

struct Case {
  std::string name;
  std::string python;  // a Python block that sets `obj` (classes L and Pid are predefined)
  std::function<Value()> build;
};

// Length-prefixed records, as the Python side writes them.
std::vector<std::string> split_records(const std::string& out) {
  std::vector<std::string> records;
  std::size_t pos = 0;
  while (pos + 4 <= out.size()) {
    std::uint32_t n = 0;
    std::memcpy(&n, out.data() + pos, 4);
    pos += 4;
    records.push_back(out.substr(pos, n));
    pos += n;
  }
  return records;
}

const char* kPrelude = R"PY(
import pickle, struct, sys, collections, argparse
class L(list):
    pass
def emit(b):
    sys.stdout.buffer.write(struct.pack('<I', len(b)) + b)
)PY";

// CPython's pickle.dumps of every case at protocols 2..5, in order.
std::vector<std::string> cpython_dumps(const std::vector<Case>& cases) {
  std::string script = kPrelude;
  script += "CASES = []\n";
  for (const Case& c : cases) {
    script += "def case_" + std::to_string(&c - cases.data()) + "():\n";
    std::string body = c.python;
    std::size_t start = 0;
    while (start < body.size()) {
      std::size_t end = body.find('\n', start);
      if (end == std::string::npos) end = body.size();
      script += "    " + body.substr(start, end - start) + "\n";
      start = end + 1;
    }
    script += "    return obj\nCASES.append(case_" + std::to_string(&c - cases.data()) + ")\n";
  }
  script += "for make in CASES:\n    obj = make()\n    for p in (2, 3, 4, 5):\n        emit(pickle.dumps(obj, protocol=p))\n";
  return split_records(run_python(script));
}

std::vector<std::byte> le_bytes_of_power_of_two(int bit, bool negative) {
  // 2**bit (or -(2**bit)) as minimal little-endian two's complement.
  std::vector<std::byte> v(static_cast<std::size_t>(bit / 8 + 1), std::byte{0});
  v[static_cast<std::size_t>(bit / 8)] = std::byte(static_cast<unsigned char>(1u << (bit % 8)));
  if (negative) {  // two's complement negate
    bool carry = true;
    for (auto& b : v) {
      unsigned x = static_cast<unsigned char>(~std::to_integer<unsigned>(b)) + (carry ? 1u : 0u);
      carry = x > 0xff;
      b = std::byte(static_cast<unsigned char>(x & 0xff));
    }
  }
  return v;
}

std::vector<Case> builtin_cases() {
  std::vector<Case> cases;
  cases.push_back({"scalars",
                   "obj = [None, True, False, 0, 1, 255, 256, 65535, 65536, -1, -256, 2**31-1, -2**31, 2**31,\n"
                   "       -2**31-1, 2**63-1, -2**63, 2**64, -(2**64), 2**1000, -(2**2100), 0.0, -0.0, 1.5,\n"
                   "       float('inf'), float('-inf'), float('nan'), 1e300]",
                   [] {
                     Builder b;
                     std::vector<Value> v{Value(), true, false, 0, 1, 255, 256, 65535, 65536, -1, -256,
                                          2147483647LL, -2147483648LL, 2147483648LL, -2147483649LL,
                                          std::numeric_limits<long long>::max(), std::numeric_limits<long long>::min()};
                     v.push_back(b.big_int(le_bytes_of_power_of_two(64, false)));
                     v.push_back(b.big_int(le_bytes_of_power_of_two(64, true)));
                     v.push_back(b.big_int(le_bytes_of_power_of_two(1000, false)));
                     v.push_back(b.big_int(le_bytes_of_power_of_two(2100, true)));
                     for (double d : std::initializer_list<double>{0.0, -0.0, 1.5, INFINITY, -INFINITY, std::numeric_limits<double>::quiet_NaN(), 1e300})
                       v.push_back(d);
                     return b.list(v);
                   }});
  // Every int64 around a byte-width boundary (LONG1 of 5..8 bytes is sized from the bit count).
  cases.push_back({"int64_widths",
                   "obj = [s * (2**k + d) for k in range(31, 63) for d in (-1, 0, 1) for s in (1, -1)]\n"
                   "obj += [2**63 - 1, -2**63, -2**63 + 1]",
                   [] {
                     Builder b;
                     std::vector<Value> v;
                     for (int k = 31; k < 63; ++k)
                       for (long long d : {-1LL, 0LL, 1LL})
                         for (long long sign : {1LL, -1LL}) v.push_back(sign * ((1LL << k) + d));
                     for (long long x : {std::numeric_limits<long long>::max(), std::numeric_limits<long long>::min(),
                                         std::numeric_limits<long long>::min() + 1})
                       v.push_back(x);
                     return b.list(v);
                   }});
  cases.push_back({"strings",
                   "obj = ['', 'a', 'h\\u00e9llo', '\\u20ac' * 100, 'x' * 255, 'y' * 256, 'z' * 70000, '\\U0001F600', 'w' * 65536]",
                   [] {
                     Builder b;
                     std::string euro;
                     for (int i = 0; i < 100; ++i) euro += "\xe2\x82\xac";
                     return b.list({b.str(""), b.str("a"), b.str("h\xc3\xa9llo"), b.str(euro), b.str(std::string(255, 'x')),
                                    b.str(std::string(256, 'y')), b.str(std::string(70000, 'z')), b.str("\xf0\x9f\x98\x80"),
                                    b.str(std::string(65536, 'w'))});
                   }});
  // Every short str length (a str of up to 16 bytes is copied with overlapping 4- and 8-byte moves).
  cases.push_back({"str_lengths",
                   "obj = ['abcdefghijklmnopqrstuvwxyz0123456789ABCD'[:n] for n in range(41)]",
                   [] {
                     Builder b;
                     const std::string text = "abcdefghijklmnopqrstuvwxyz0123456789ABCD";
                     std::vector<Value> v;
                     for (std::size_t n = 0; n <= 40; ++n) v.push_back(b.str(text.substr(0, n)));
                     return b.list(v);
                   }});
  cases.push_back({"bytes",
                   "obj = [b'', b'\\x00\\xff\\x80' * 3, b'a' * 256, b'b' * 70000, bytearray(), bytearray(b'abc\\xfe'),\n"
                   "       bytearray(b'q' * 70000)]",
                   [] {
                     Builder b;
                     std::string mixed;
                     for (int i = 0; i < 3; ++i) mixed += std::string("\x00\xff\x80", 3);
                     return b.list({b.bytes(""), b.bytes(mixed), b.bytes(std::string(256, 'a')), b.bytes(std::string(70000, 'b')),
                                    b.bytearray(""), b.bytearray("abc\xfe"), b.bytearray(std::string(70000, 'q'))});
                   }});
  cases.push_back({"tuples",
                   "obj = ((), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4), ((), ()), (None,) * 7)",
                   [] {
                     Builder b;
                     std::vector<Value> nones(7, Value());
                     return b.tuple({b.tuple(), b.tuple({1}), b.tuple({1, 2}), b.tuple({1, 2, 3}), b.tuple({1, 2, 3, 4}),
                                     b.tuple({b.tuple(), b.tuple()}), b.tuple(nones)});
                   }});
  cases.push_back({"containers",
                   "obj = {'a': [1, 2], 'b': {3}, 'c': frozenset({4, 5}), 'd': set(), 'e': frozenset(), 'f': [],\n"
                   "       'g': {}, 'h': {1: 2}, 'i': [7]}",
                   [] {
                     Builder b;
                     return b.dict({{b.str("a"), b.list({1, 2})}, {b.str("b"), b.set({3})}, {b.str("c"), b.frozenset({4, 5})},
                                    {b.str("d"), b.set()}, {b.str("e"), b.frozenset()}, {b.str("f"), b.list()},
                                    {b.str("g"), b.dict()}, {b.str("h"), b.dict({{1, 2}})}, {b.str("i"), b.list({7})}});
                   }});
  cases.push_back({"complex_and_builtins_globals",
                   "obj = [1+2j, complex(-0.0, float('inf')), bytearray(b'x'), frozenset([1]), {2}]",
                   [] {
                     Builder b;
                     return b.list({b.complex(1, 2), b.complex(-0.0, INFINITY), b.bytearray("x"), b.frozenset({1}), b.set({2})});
                   }});
  cases.push_back({"sharing",
                   "x = [1]\ns = 'shared'\nt = (x, s)\nobj = [x, x, (x,), s, s, t, t, b'bb' * 2, bytearray(b'ba')]\n"
                   "obj.append(obj[7])\nobj.append(obj[8])",
                   [] {
                     Builder b;
                     Value x = b.list({1}), s = b.str("shared"), t = b.tuple({x, s}), bb = b.bytes("bbbb"), ba = b.bytearray("ba");
                     return b.list({x, x, b.tuple({x}), s, s, t, t, bb, ba, bb, ba});
                   }});
  // Shared strs (short, long, past memo index 255) and dicts, fetched with BINGET / LONG_BINGET.
  cases.push_back({"sharing_strs_and_dicts",
                   "d = {'k': 1}\ns = 'short'\nlong_s = 'L' * 300\nmany = ['m%d' % i for i in range(300)]\n"
                   "obj = [d, d, s, long_s, long_s, s] + many + [many[299], many[0], d, long_s]",
                   [] {
                     Builder b;
                     Value d = b.dict({{b.str("k"), 1}}), s = b.str("short"), long_s = b.str(std::string(300, 'L'));
                     std::vector<Value> many;
                     for (int i = 0; i < 300; ++i) many.push_back(b.str("m" + std::to_string(i)));
                     std::vector<Value> v{d, d, s, long_s, long_s, s};
                     v.insert(v.end(), many.begin(), many.end());
                     for (const Value& x : {many[299], many[0], d, long_s}) v.push_back(x);
                     return b.list(v);
                   }});
  cases.push_back({"recursive_list", "obj = []\nobj.append(obj)\nobj.append([obj])", [] {
                     Builder b;
                     Value l = b.list();
                     l.append(l);
                     l.append(b.list({l}));
                     return l;
                   }});
  cases.push_back({"recursive_dict", "obj = {}\nobj['self'] = obj", [] {
                     Builder b;
                     Value d = b.dict();
                     d.set_item(b.str("self"), d);
                     return d;
                   }});
  cases.push_back({"recursive_tuple_short", "l = []\nobj = (l,)\nl.append(obj)", [] {
                     Builder b;
                     Value l = b.list();
                     Value t = b.tuple({l});
                     l.append(t);
                     return t;
                   }});
  cases.push_back({"recursive_tuple_long", "l = []\nobj = (l, 1, 2, 3, 4)\nl.append(obj)\nobj = [obj, l]", [] {
                     Builder b;
                     Value l = b.list();
                     Value t = b.tuple({l, 1, 2, 3, 4});
                     l.append(t);
                     return b.list({t, l});
                   }});
  cases.push_back({"batches",
                   "obj = [list(range(1000)), list(range(1001)), list(range(2500)), {i: i for i in range(1000)},\n"
                   "       {i: -i for i in range(2001)}, set(range(1000)), set(range(2500)), frozenset(range(1500)), [5, 6]]",
                   [] {
                     Builder b;
                     auto range_list = [&](int n) {
                       std::vector<Value> v;
                       for (int i = 0; i < n; ++i) v.push_back(i);
                       return v;
                     };
                     auto range_dict = [&](int n, int sign) {
                       std::vector<std::pair<Value, Value>> v;
                       for (int i = 0; i < n; ++i) v.emplace_back(i, sign * i);
                       return b.dict(v);
                     };
                     return b.list({b.list(range_list(1000)), b.list(range_list(1001)), b.list(range_list(2500)),
                                    range_dict(1000, 1), range_dict(2001, -1), b.set(range_list(1000)), b.set(range_list(2500)),
                                    b.frozenset(range_list(1500)), b.list({5, 6})});
                   }});
  // Sizes >= 2: CPython caches empty and one-byte bytes objects (shared, so memoised once).
  cases.push_back({"many_frames",
                   "obj = [('s%d' % i, i * 1000003, [b'p' * (2 + i % 300)]) for i in range(30000)]\n"
                   "obj.insert(7000, b'B' * 100000)\nobj.insert(15000, 'S' * 66000)",
                   [] {
                     Builder b;
                     std::vector<Value> v;
                     for (int i = 0; i < 30000; ++i)
                       v.push_back(b.tuple({b.str("s" + std::to_string(i)), static_cast<long long>(i) * 1000003,
                                            b.list({b.bytes(std::string(static_cast<std::size_t>(2 + i % 300), 'p'))})}));
                     v.insert(v.begin() + 7000, b.bytes(std::string(100000, 'B')));
                     v.insert(v.begin() + 15000, b.str(std::string(66000, 'S')));
                     return b.list(v);
                   }});
  cases.push_back({"globals",
                   "import argparse\nobj = [collections.OrderedDict, range, argparse._SubParsersAction._ChoicesPseudoAction,\n"
                   "       collections.OrderedDict, argparse.Namespace]",
                   [] {
                     Builder b;
                     return b.list({b.global("collections", "OrderedDict"), b.global("builtins", "range"),
                                    b.global("argparse", "_SubParsersAction._ChoicesPseudoAction"),
                                    b.global("collections", "OrderedDict"), b.global("argparse", "Namespace")});
                   }});
  cases.push_back({"objects",
                   "obj = [collections.OrderedDict([(1, 2)]), collections.OrderedDict([(1, 2), (3, 4)]),\n"
                   "       argparse.Namespace(a=1), L([1, 2, 3]), L([9])]",
                   [] {
                     Builder b;
                     Value od1 = b.object(ObjectForm::Reduce, b.global("collections", "OrderedDict"), b.tuple());
                     od1.set_item(1, 2);
                     Value od2 = b.object(ObjectForm::Reduce, b.global("collections", "OrderedDict"), b.tuple());
                     od2.set_item(1, 2);
                     od2.set_item(3, 4);
                     Value ns = b.object(ObjectForm::NewObj, b.global("argparse", "Namespace"), b.tuple());
                     ns.add_state(b.dict({{b.str("a"), 1}}));
                     Value l = b.object(ObjectForm::NewObj, b.global("__main__", "L"), b.tuple());
                     for (int i : {1, 2, 3}) l.append(i);
                     Value l1 = b.object(ObjectForm::NewObj, b.global("__main__", "L"), b.tuple());
                     l1.append(9);
                     return b.list({od1, od2, ns, l, l1});
                   }});
  return cases;
}

}  // namespace

TEST(PicklerInterop, BytesEqualCPythonAtProtocols2To5) {
  std::vector<Case> cases = builtin_cases();
  std::vector<std::string> expected = cpython_dumps(cases);
  ASSERT_EQ(expected.size(), cases.size() * 4);
  for (std::size_t i = 0; i < cases.size(); ++i) {
    Value v = cases[i].build();
    for (int p = 2; p <= 5; ++p) {
      PicklerOptions o;
      o.protocol = p;
      const std::string& theirs = expected[i * 4 + static_cast<std::size_t>(p - 2)];
      // dump() and dump_to() (the stream in pieces) write the same bytes.
      std::string streamed;
      std::size_t pieces = 0;
      dump_to(
          v,
          [&](const void* data, std::size_t size) {
            streamed.append(static_cast<const char*>(data), size);
            ++pieces;
          },
          o);
      if (theirs.size() > 1024 * 1024) {
        EXPECT_GT(pieces, 1u) << cases[i].name << " protocol " << p;
      }
      for (const auto& [how, ours] : {std::pair{"dump", std::string(dump(v, o).chars())}, std::pair{"dump_to", streamed}}) {
        if (ours == theirs) continue;
        std::size_t at = 0;
        while (at < ours.size() && at < theirs.size() && ours[at] == theirs[at]) ++at;
        ADD_FAILURE() << cases[i].name << " protocol " << p << " (" << how << "): differs at byte " << at << " (ours "
                      << ours.size() << " bytes, CPython " << theirs.size() << ")";
      }
    }
  }
}

// CPython loads what we wrote and finds the same object, shared and recursive references included.
TEST(PicklerInterop, CPythonLoadsOurBytes) {
  Builder b;
  Value x = b.list({1, b.str("x")});
  Value rec = b.list();
  rec.append(rec);
  Value d = b.dict();
  for (int i = 0; i < 1500; ++i) d.set_item(i, b.str(std::string(static_cast<std::size_t>(i % 50), 'v')));
  std::vector<Value> many;
  for (int i = 0; i < 3000; ++i) many.push_back(i * 7);
  Value root = b.tuple({x, x, rec, d, b.set(many), b.str(std::string(200000, 'L')), b.bytes(std::string(70000, '\x01')),
                        b.big_int(le_bytes_of_power_of_two(4000, true))});
  std::string streams;
  for (int p = 2; p <= 5; ++p) {
    PicklerOptions o;
    o.protocol = p;
    std::string s(dump(root, o).chars());
    std::uint32_t n = static_cast<std::uint32_t>(s.size());
    streams.append(reinterpret_cast<const char*>(&n), 4).append(s);
  }
  std::string out = run_python(R"PY(
import pickle, struct, sys
data = sys.stdin.buffer.read()
pos = 0
while pos < len(data):
    n, = struct.unpack_from('<I', data, pos); pos += 4
    t = pickle.loads(data[pos:pos + n]); pos += n
    assert t[0] is t[1] and t[0] == [1, 'x'], t[0]
    assert t[2][0] is t[2] and len(t[2]) == 1
    assert t[3] == {i: 'v' * (i % 50) for i in range(1500)}
    assert t[4] == {i * 7 for i in range(3000)}
    assert t[5] == 'L' * 200000 and t[6] == b'\x01' * 70000
    assert t[7] == -(2 ** 4000)
    print('ok')
)PY",
                               streams);
  EXPECT_EQ(out, "ok\nok\nok\nok\n");
}

TEST(PicklerInterop, OutOfBandBuffersLoadWithBuffersAndKeepReadonlyness) {
  std::string ro_data = "readonly payload", rw_data = "writable payload";
  Buffer ro = Buffer::wrap(ro_data.data(), ro_data.size());
  Buffer rw = Buffer::wrap_mutable(rw_data.data(), rw_data.size());
  Builder b;
  Value root = b.list({b.pickle_buffer(ro), b.pickle_buffer(rw), b.str("tail")});
  std::vector<Buffer> taken;
  PicklerOptions o;
  o.buffer_callback = [&](const Buffer& buf, const BufferInfo&) {
    taken.push_back(buf);
    return BufferPlacement::out_of_band;
  };
  std::string stream(dump(root, o).chars());
  ASSERT_EQ(taken.size(), 2u);
  EXPECT_EQ(taken[0].data(), ro.data());  // the callback saw the original memory, not a copy
  EXPECT_EQ(taken[1].data(), rw.data());
  EXPECT_TRUE(taken[0].readonly());
  EXPECT_FALSE(taken[1].readonly());

  // CPython writes the same stream for the same objects (its callback returns falsy: out-of-band).
  std::string theirs = run_python(R"PY(
import pickle, sys
bufs = []
obj = [pickle.PickleBuffer(b'readonly payload'), pickle.PickleBuffer(bytearray(b'writable payload')), 'tail']
sys.stdout.buffer.write(pickle.dumps(obj, protocol=5, buffer_callback=bufs.append))
)PY");
  EXPECT_EQ(stream, theirs);

  std::string out = run_python(R"PY(
import pickle, sys
stream = sys.stdin.buffer.read()
b0 = pickle.PickleBuffer(b'readonly payload')
b1 = pickle.PickleBuffer(bytearray(b'writable payload'))
obj = pickle.loads(stream, buffers=[b0, b1])
m0, m1 = memoryview(obj[0]), memoryview(obj[1])
print(bytes(m0).decode(), m0.readonly, bytes(m1).decode(), m1.readonly, obj[2])
)PY",
                               stream);
  EXPECT_EQ(out, "readonly payload True writable payload False tail\n");
}

TEST(PicklerInterop, InBandBuffersAndOldProtocolsMatchCPythonBytesAndBytearray) {
  Builder b;
  Value root = b.list({b.pickle_buffer(Buffer::copy(std::string_view("ro"), true)), b.pickle_buffer(Buffer::copy(std::string_view("rw"), false))});
  std::string expected = run_python(R"PY(
import pickle, struct, sys
out = sys.stdout.buffer
pbs = [pickle.PickleBuffer(b'ro'), pickle.PickleBuffer(bytearray(b'rw'))]
b = pickle.dumps(pbs, protocol=5, buffer_callback=lambda pb: True)  # truthy: in-band
out.write(struct.pack('<I', len(b)) + b)
for p in (2, 3, 4):
    b = pickle.dumps([b'ro', bytearray(b'rw')], protocol=p)
    out.write(struct.pack('<I', len(b)) + b)
)PY");
  auto records = split_records(expected);
  ASSERT_EQ(records.size(), 4u);
  PicklerOptions in_band;
  in_band.buffer_callback = [](const Buffer&, const BufferInfo&) { return BufferPlacement::in_band; };
  EXPECT_EQ(std::string(dump(root, in_band).chars()), records[0]);
  EXPECT_EQ(std::string(dump(root).chars()), records[0]);  // no callback: in-band
  for (int p = 2; p <= 4; ++p) {
    PicklerOptions o;
    o.protocol = p;
    EXPECT_EQ(std::string(dump(root, o).chars()), records[static_cast<std::size_t>(p - 1)]) << "protocol " << p;
  }
}

TEST(PicklerInterop, PersistentIdMatchesCPython) {
  Builder b;
  Value root = b.list({b.str("keep"), b.str("external:1"), 5, b.tuple({b.str("external:2")})});
  PicklerOptions o;
  o.persistent_id = [](const Value& v) -> std::optional<Value> {
    if (v.is(Kind::Str) && v.as_str().starts_with("external:")) return Value::tuple({"ext", std::string(v.as_str().substr(9))});
    return std::nullopt;
  };
  std::string expected = run_python(R"PY(
import io, pickle, struct, sys
class P(pickle.Pickler):
    def persistent_id(self, obj):
        if isinstance(obj, str) and obj.startswith('external:'):
            return (''.join(['ex', 't']), obj[9:])  # a fresh str per id, like the C++ side
        return None
for p in (2, 3, 4, 5):
    f = io.BytesIO()
    P(f, protocol=p).dump(['keep', 'external:1', 5, ('external:2',)])
    b = f.getvalue()
    sys.stdout.buffer.write(struct.pack('<I', len(b)) + b)
)PY");
  auto records = split_records(expected);
  ASSERT_EQ(records.size(), 4u);
  for (int p = 2; p <= 5; ++p) {
    o.protocol = p;
    EXPECT_EQ(std::string(dump(root, o).chars()), records[static_cast<std::size_t>(p - 2)]) << "protocol " << p;
  }
}

TEST(PicklerInterop, MillionDeepListDumpsIterativelyAndCPythonLoadsIt) {
  Builder b;
  Value v = b.list();
  constexpr int kDepth = 1'000'000;
  for (int i = 0; i < kDepth; ++i) v = b.list({v});
  std::string stream(dump(v).chars());
  std::string out = run_python(R"PY(
import pickle, sys
x = pickle.loads(sys.stdin.buffer.read())
depth = 0
while x:
    x = x[0]
    depth += 1
print(depth)
)PY",
                               stream);
  EXPECT_EQ(out, std::to_string(kDepth) + "\n");
}

TEST(PicklerInterop, GigabyteOutOfBandBufferIsNotCopied) {
  constexpr std::size_t kSize = std::size_t(1) << 30;
  // Reserved, never touched: if the pickler read or copied it, RSS (and time) would show it.
  void* mem = mmap(nullptr, kSize, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(mem, MAP_FAILED);
  {
    Value root = Value::tuple({Value::pickle_buffer(Buffer::wrap(mem, kSize)), "meta"});
    Message m = dump_message(root, 1024);
    ASSERT_EQ(m.buffers.size(), 1u);
    EXPECT_EQ(m.buffers[0].data(), static_cast<const std::byte*>(mem));
    EXPECT_EQ(m.buffers[0].size(), kSize);
    EXPECT_LT(m.stream.size(), 64u);
  }
  munmap(mem, kSize);
}

// dump(load(b)) == b: CPython's C pickler writes a matrix of builtin-type graphs (protocols 2-5;
// at 5 some with out-of-band buffers), the C++ side loads each and writes it back.
TEST(PicklerInterop, RoundTripReproducesCPythonBytes) {
  std::string out = run_python(R"PY(
import pickle, struct, sys, collections, argparse
def emit(b):
    sys.stdout.buffer.write(struct.pack('<I', len(b)) + b)
rec = []; rec.append(rec)
d = {}; d['me'] = d
l = []; t = (l, 1, 2, 3, 4); l.append(t)
shared = [1, 'two']
objs = [
    None, True, 0, -1, 255, 65536, 2**31, -2**63, 2**70, -(2**5000), 1.5, float('nan'), -0.0, 3+4j,
    '', 'x' * 300, 'caf\u00e9 \U0001F600', 'w' * 70000, '\ud800 lone surrogate',
    b'', b'\x00\xff', b'b' * 70000, bytearray(b'ba'), bytearray(),
    (), (1,), (1, 2, 3), tuple(range(10)), [], [1], list(range(2500)), {}, {1: 2},
    {i: str(i) for i in range(1000)}, {i: [i] for i in range(2345)}, set(), set(range(1000)),
    set(range(1001)), frozenset(), frozenset(range(3000)),
    [shared, shared, (shared,)], rec, d, t, [t, l],
    collections.OrderedDict, argparse._SubParsersAction._ChoicesPseudoAction,
    collections.OrderedDict([(1, 2), (3, 4)]), argparse.Namespace(a=1, b=[2]),
    [('s%d' % i, i * 1000003, [b'p' * (2 + i % 300)]) for i in range(20000)],
    {'mixed': [1.25, 'a', (None, False), {b'kk': bytearray(b'vv')}, frozenset({9})]},
]
for obj in objs:
    for p in (2, 3, 4, 5):
        emit(b'%d' % p)
        emit(b'')  # no buffers
        emit(pickle.dumps(obj, protocol=p))
bufs = []
obj = [pickle.PickleBuffer(b'read only'), pickle.PickleBuffer(bytearray(b'writable')), 'x',
       pickle.PickleBuffer(b'R' * 100000)]
emit(b'5')
stream = pickle.dumps(obj, protocol=5, buffer_callback=bufs.append)
emit(b''.join(struct.pack('<I', len(b.raw())) + bytes(b.raw()) + (b'r' if b.raw().readonly else b'w') for b in bufs))
emit(stream)
)PY");
  auto records = split_records(out);
  ASSERT_EQ(records.size() % 3, 0u);
  ASSERT_GT(records.size(), 200u);
  int checked = 0;
  for (std::size_t i = 0; i < records.size(); i += 3) {
    const int protocol = std::stoi(records[i]);
    std::vector<Buffer> buffers;
    const std::string& packed = records[i + 1];
    for (std::size_t pos = 0; pos < packed.size();) {
      std::uint32_t n = 0;
      std::memcpy(&n, packed.data() + pos, 4);
      const bool readonly = packed[pos + 4 + n] == 'r';
      buffers.push_back(Buffer::copy(packed.data() + pos + 4, n, readonly));
      pos += 4 + n + 1;
    }
    const std::string& original = records[i + 2];
    Value v = load(Buffer::copy(original), buffers);
    PicklerOptions o;
    o.protocol = protocol;
    std::vector<Buffer> taken;
    if (!buffers.empty())
      o.buffer_callback = [&](const Buffer& b, const BufferInfo&) {
        taken.push_back(b);
        return BufferPlacement::out_of_band;
      };
    std::string again(dump(v, o).chars());
    EXPECT_EQ(again, original) << "record " << i / 3 << " protocol " << protocol;
    ASSERT_EQ(taken.size(), buffers.size());
    for (std::size_t k = 0; k < taken.size(); ++k) {
      EXPECT_EQ(taken[k].data(), buffers[k].data()) << "out-of-band buffer " << k << " was copied";
      EXPECT_EQ(taken[k].readonly(), buffers[k].readonly());
    }
    ++checked;
  }
  EXPECT_EQ(checked, static_cast<int>(records.size() / 3));
}

#include "pickler_compat_names.hpp"

// The generated protocol-2 name tables are the interpreter's own.
TEST(PicklerInterop, CompatNameTablesMatchCPython) {
  std::string theirs = run_python(R"PY(
import _compat_pickle as c
for (m3, n3), (m2, n2) in sorted(c.REVERSE_NAME_MAPPING.items()): print(m3, n3, m2, n2)
for m3, m2 in sorted(c.REVERSE_IMPORT_MAPPING.items()): print(m3, m2)
)PY");
  std::string ours;
  for (const auto& m : compat::kReverseNameMapping)
    ours += std::string(m.module3) + " " + std::string(m.name3) + " " + std::string(m.module2) + " " + std::string(m.name2) + "\n";
  for (const auto& m : compat::kReverseImportMapping) ours += std::string(m.module3) + " " + std::string(m.module2) + "\n";
  EXPECT_EQ(ours, theirs);
}
