// The pickler on its own: opcodes chosen, framing, memo, errors, dump_message and its ledger.
// (Byte-for-byte agreement with CPython is pickler_interop_test.cpp.)
#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <thread>

#include "graph.hpp"
#include "opcodes.hpp"
#include "picklewire/errors.hpp"
#include "picklewire/pickler.hpp"
#include "picklewire/repr.hpp"
#include "picklewire/unpickler.hpp"
#include "picklewire/value.hpp"

using namespace picklewire;

namespace {
std::string dumps(const Value& v, int protocol = 5) {
  PicklerOptions o;
  o.protocol = protocol;
  return std::string(dump(v, o).chars());
}
}  // namespace

TEST(Pickler, SmallPicklesHaveNoFrameAndProtoHeader) {
  EXPECT_EQ(dumps(Value()), std::string("\x80\x05N.", 4));
  EXPECT_EQ(dumps(Value::list()), std::string("\x80\x05]\x94.", 5));  // a 3-byte frame loses its header
  EXPECT_EQ(dumps(Value(true), 2), std::string("\x80\x02\x88.", 4));
}

TEST(Pickler, FramesAtProtocol4) {
  std::string s = dumps(Value::list({1}), 4);
  ASSERT_GE(s.size(), 11u);
  EXPECT_EQ(static_cast<unsigned char>(s[2]), op::FRAME);
  EXPECT_EQ(static_cast<unsigned char>(s[3]), s.size() - 11);  // frame length excludes PROTO and header
}

TEST(Pickler, LargePayloadIsWrittenOutsideFrames) {
  std::string big(100000, 'x');
  std::string s = dumps(Value::list({Value::bytes(big), 1}));
  // PROTO, "] MEMOIZE (" (3 bytes: too small to keep its frame header), BINBYTES + payload
  // unframed, then a new frame for "MEMOIZE K\x01 e .".
  std::size_t at = s.find(std::string("B\xa0\x86\x01\x00", 5));
  ASSERT_NE(at, std::string::npos);
  EXPECT_EQ(s.compare(at + 5, big.size(), big), 0);
  EXPECT_EQ(s.substr(0, 5), std::string("\x80\x05]\x94(", 5));
  EXPECT_EQ(static_cast<unsigned char>(s[at + 5 + big.size()]), op::FRAME);
  EXPECT_EQ(s.substr(at + 5 + big.size() + 9), std::string("\x94K\x01" "e.", 5));
}

TEST(Pickler, RejectsUnsupportedProtocols) {
  EXPECT_THROW(dumps(Value(), 1), PicklingError);
  EXPECT_THROW(dumps(Value(), 6), PicklingError);
}

TEST(Pickler, NewObjExNeedsProtocol4) {
  Value o = Value::object(ObjectForm::NewObjEx, Value::global("m", "C"), Value::tuple(), Value::dict());
  EXPECT_THROW(dumps(o, 3), PicklingError);
  std::string s = dumps(o, 4);
  EXPECT_NE(s.find(static_cast<char>(op::NEWOBJ_EX)), std::string::npos);
}

TEST(Pickler, CycleThroughTuplesOnlyIsRefusedNotLooped) {
  // No Python object graph (nor the public API) can make a tuple contain itself; a graph built
  // through the internals can, and must fail cleanly instead of looping forever.
  Builder b;
  Value t = b.tuple({1});
  t.slot().node->items().push_back(t.slot());
  EXPECT_THROW(dumps(t), PicklingError);
}

TEST(Pickler, MemoIndicesGrowToLongBinput) {
  Builder b;
  std::vector<Value> strs;
  for (int i = 0; i < 300; ++i) strs.push_back(b.str("s" + std::to_string(i)));
  Value l = b.list(strs);
  l.append(strs[299]);
  std::string s = dumps(l, 3);
  EXPECT_NE(s.find(std::string("r\x00\x01\x00\x00", 5)), std::string::npos);  // LONG_BINPUT 256
  EXPECT_NE(s.find(std::string("j\x2c\x01\x00\x00", 5)), std::string::npos);  // LONG_BINGET 300
}

TEST(Pickler, DumpMessageSplitsByThresholdAndRecordsInbandCopies) {
  std::string small(100, 's'), large(5000, 'L');
  Buffer sb = Buffer::wrap(small.data(), small.size());
  Buffer lb = Buffer::wrap(large.data(), large.size());
  Value v = Value::list({Value::pickle_buffer(sb), Value::pickle_buffer(lb), Value::pickle_buffer(lb)});
  CopyLedger ledger;
  Message m = dump_message(v, 1000, &ledger);
  ASSERT_EQ(m.buffers.size(), 2u);  // an out-of-band buffer is not memoised: offered each time
  EXPECT_EQ(m.buffers[0].data(), lb.data());
  EXPECT_EQ(m.buffers[1].data(), lb.data());
  EXPECT_EQ(ledger.copied(CopyReason::inband_below_threshold), small.size());
  EXPECT_EQ(ledger.total_copied_bytes(), small.size());
  EXPECT_NE(m.stream.chars().find(small), std::string_view::npos);
  EXPECT_EQ(m.stream.chars().find(large), std::string_view::npos);
}


// The memo table's array is reused by the next dump on the same thread (entries tagged with the
// dump that wrote them). Graphs loaded one after another reuse the same node addresses, so a stale
// entry would turn a fresh str into a GET of an index the new stream never stored: every dump must
// equal a dump on a new thread, including one made inside another (persistent_id calls dump while
// the outer dump holds its table).
TEST(Pickler, ConsecutiveAndNestedDumpsShareNoMemoEntries) {
  // CPython: pickle.dumps([a, a, 'b', 'b', 'c'], 5) with a = 'a' and 'b' one object; ['x', 'y', 1].
  const std::string shared("\x80\x05\x95\x15\x00\x00\x00\x00\x00\x00\x00]\x94(\x8c\x01" "a\x94h\x01\x8c\x01" "b\x94h\x02"
                           "\x8c\x01" "c\x94" "e.", 32);
  const std::string other("\x80\x05\x95\x0f\x00\x00\x00\x00\x00\x00\x00]\x94(\x8c\x01x\x94\x8c\x01y\x94K\x01" "e.", 26);
  std::string expected[2];
  std::thread([&] {
    for (int k = 0; k < 2; ++k) expected[k] = dumps(load(Buffer::copy(k ? other : shared, true)));
  }).join();
  EXPECT_EQ(expected[0], shared);
  EXPECT_EQ(expected[1], other);
  for (int round = 0; round < 200; ++round) {
    const int k = round % 2;
    Value v = load(Buffer::copy(k ? other : shared, true));
    PicklerOptions nested;
    std::string inner;
    if (round % 7 == 0)
      nested.persistent_id = [&](const Value& x) -> std::optional<Value> {
        if (inner.empty() && x.kind() == Kind::Str) inner = std::string(dump(load(Buffer::copy(other, true))).chars());
        return std::nullopt;
      };
    EXPECT_EQ(std::string(dump(v, nested).chars()), expected[k]) << round;
    if (!inner.empty()) {
      EXPECT_EQ(inner, expected[1]) << round;
    }
  }
}

// OBJ / INST without arguments is cls.__new__(cls) only for a class: a callable known not to be
// one (builtins.len) is called, so it is written as REDUCE, which loads back (NEWOBJ of len is
// refused by the unpickler, as by CPython).
TEST(Pickler, InstOfANonClassIsWrittenAsReduce) {
  Value v = load(Buffer::copy(std::string_view("(cbuiltins\nlen\no."), true));
  ASSERT_EQ(v.kind(), Kind::Object);
  const std::string s = dumps(v, 2);
  // CPython: pickle.dumps of an object whose __reduce__ is (len, ()), protocol 2.
  EXPECT_EQ(s, std::string("\x80\x02" "c__builtin__\nlen\nq\x00)Rq\x01.", 26));
  EXPECT_EQ(load(Buffer::copy(s, true)).kind(), Kind::Object);
  // A class (or an unknown global) keeps the NEWOBJ form.
  EXPECT_EQ(dumps(load(Buffer::copy(std::string_view("(cmod\nC\no."), true)), 2),
            std::string("\x80\x02" "cmod\nC\nq\x00)\x81q\x01.", 16));
}

// Found by the repr fuzz target: a protocol-4 stream naming '__builtin__.bytearray' loads as an
// inert global of an unknown module, but written at protocol 2 it would read back as
// builtins.bytearray (a reader below protocol 3 renames Python 2 names, fix_imports), whose
// reduction with a str and no encoding CPython refuses: the round trip changed what the graph
// is. Such a global is refused below protocol 3 (CPython cannot import '__builtin__' to write one);
// at protocol 3+ it is written as is, and a global the pickler itself renames stays writable.
TEST(Pickler, AGlobalCarryingAPython2NameIsRefusedBelowProtocol3) {
  UnpicklerOptions options;
  options.decode_reductions = true;
  const std::string stream("\x80\x04" "c__builtin__\nbytearray\n" "X\x06\x00\x00\x00latin2\x85R.", 40);
  Value v = load(Buffer::copy(stream, true), {}, options);
  PicklerOptions protocol2;
  protocol2.protocol = 2;  // the pickler writes protocols 2..5
  try {
    dump(v, protocol2);
    ADD_FAILURE() << "protocol 2 wrote a global its reader would rename";
  } catch (const PicklingError& e) {
    EXPECT_NE(std::string(e.what()).find("'__builtin__.bytearray' cannot be written at protocol 2"), std::string::npos)
        << e.what();
  }
  for (int protocol : {3, 4, 5}) {
    PicklerOptions p;
    p.protocol = protocol;
    Value again = load(dump(v, p), {}, options);  // the same inert reduction
    EXPECT_TRUE(equal(again, v)) << "protocol " << protocol;
  }
  // builtins.len is renamed to __builtin__.len by the pickler itself: written, and read back as builtins.len.
  EXPECT_EQ(dumps(load(Buffer::copy(std::string_view("\x80\x04" "cbuiltins\nlen\n."), true)), 2),
            std::string("\x80\x02" "c__builtin__\nlen\nq\x00.", 22));
}
