// NDArray / DType unit tests, and numpy's reductions on graphs built by hand the way the
// unpickler builds them (the stream-level interop is tests/numpy_interop_test.cpp).
// numpy itself (Debian's /usr/bin/python3) is the oracle for dtype strings, float16 and reprs.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <numeric>
#include <sstream>

#include "graph.hpp"
#include "picklewire/ndarray.hpp"
#include "picklewire/value.hpp"
#include "numpy_reductions.hpp"
#include "support.hpp"

using namespace picklewire;

namespace {

std::vector<std::string> lines(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string l; std::getline(in, l);) out.push_back(l);
  return out;
}

// numpy.dtype(code, False, True) + BUILD state, exactly as numpy pickles a dtype.
Value numpy_dtype(Builder& b, const std::string& code, const std::string& order, std::int64_t elsize = -1,
                  std::int64_t alignment = -1, std::int64_t flags = 0) {
  Value d = b.object(ObjectForm::Reduce, b.global("numpy", "dtype"), b.tuple({b.str(code), false, true}));
  d.add_state(b.tuple({3, b.str(order), Value(), Value(), Value(), elsize, alignment, flags}));
  return d;
}

Value frombuffer_args(Builder& b, const Value& buffer, const Value& dtype, std::vector<Value> shape,
                      const std::string& order) {
  return b.tuple({buffer, dtype, b.tuple(std::move(shape)), b.str(order)});
}

const GlobalName kFrombuffer{"numpy.core.numeric", "_frombuffer"};

}  // namespace

// ---------------------------------------------------------------- DType

TEST(DType, StrMatchesNumpyForEverySupportedDescriptor) {
  const std::vector<std::string> inputs = {"?",      "b1",     "i1",        "u1",        ">i2",      "<u2",     "i4",
                                           "u4",     "i8",     ">u8",       "f2",        ">f4",      "f8",      "c8",
                                           ">c16",   "S5",     "S0",        "U3",        ">U3",      "M8",      "M8[ns]",
                                           ">m8[10ms]", "<M8[D]", "m8[us]", "V8",        "float64",  "int16",   "uint32",
                                           "complex128", "datetime64[s]", "=f8", "|u1", "bool"};
  std::string script = "import numpy as np\nfor s in " + [&] {
    std::string l = "[";
    for (auto& s : inputs) l += "'" + s + "',";
    return l + "]";
  }() + ":\n    print(np.dtype(s).str, np.dtype(s).itemsize, np.dtype(s).alignment)\n";
  auto expected = lines(test::run_python(script));
  ASSERT_EQ(expected.size(), inputs.size());
  for (std::size_t i = 0; i < inputs.size(); ++i) {
    DType d = DType::parse(inputs[i]);
    EXPECT_EQ(d.str() + " " + std::to_string(d.itemsize) + " " + std::to_string(d.alignment()), expected[i])
        << inputs[i];
    EXPECT_EQ(DType::parse(d.str()), d) << "str() parses back: " << inputs[i];
  }
}

TEST(DType, RefusesWhatItDoesNotModel) {
  for (const char* bad : {"", "O", "O8", "<f16", "c32", "i3", "M8[xx]", "M8[]", "f8x", "S", "[('a','<i4')]", "<M8[0ns]"})
    EXPECT_THROW(DType::parse(bad), Error) << bad;
}

TEST(DType, OfCppTypes) {
  EXPECT_EQ(DType::of<double>().str(), "<f8");
  EXPECT_EQ(DType::of<float>().str(), "<f4");
  EXPECT_EQ(DType::of<float16>().str(), "<f2");
  EXPECT_EQ(DType::of<bool>().str(), "|b1");
  EXPECT_EQ(DType::of<std::int8_t>().str(), "|i1");
  EXPECT_EQ(DType::of<std::uint16_t>().str(), "<u2");
  EXPECT_EQ(DType::of<std::int64_t>().str(), "<i8");
  EXPECT_EQ(DType::of<std::complex<float>>().str(), "<c8");
  EXPECT_EQ(DType::of<std::complex<double>>().str(), "<c16");
  EXPECT_EQ(DType::of<datetime64>("ns").str(), "<M8[ns]");
  EXPECT_EQ(DType::of<timedelta64>("10ms").str(), "<m8[10ms]");
  EXPECT_EQ(DType::bytes(5).str(), "|S5");
  EXPECT_EQ(DType::unicode(3).str(), "<U3");
  EXPECT_EQ(DType::unicode(3).itemsize, 12u);
}

// ---------------------------------------------------------------- float16

TEST(Float16, EveryBitPatternConvertsAsNumpyDoes) {
  std::vector<std::uint16_t> bits(65536);
  std::iota(bits.begin(), bits.end(), 0);
  std::string in(reinterpret_cast<const char*>(bits.data()), bits.size() * 2);
  std::string out = test::run_python(
      "import sys, numpy as np\n"
      "h = np.frombuffer(sys.stdin.buffer.read(), '<f2')\n"
      "sys.stdout.buffer.write(h.astype('<f4').tobytes())\n",
      in);
  ASSERT_EQ(out.size(), 65536u * 4);
  for (std::size_t i = 0; i < 65536; ++i) {
    float expected;
    std::memcpy(&expected, out.data() + 4 * i, 4);
    float got = float16{static_cast<std::uint16_t>(i)}.to_float();
    if (std::isnan(expected)) {
      EXPECT_TRUE(std::isnan(got)) << i;
    } else {
      ASSERT_EQ(std::memcmp(&expected, &got, 4), 0) << "bits " << i;
    }
  }
}

TEST(Float16, FromFloatRoundsAsNumpyDoes) {
  std::vector<float> values = {0.f, -0.f, 1.f, -2.5f, 65504.f, 65519.f, 65520.f, 1e9f, 6e-8f, 3e-8f, 2.9802322e-08f,
                               5.9604645e-08f, 1e-5f, 6.1e-5f, 0.1f, 1.0009765625f, 1.00048828125f, 1.00146484375f,
                               INFINITY, -INFINITY};
  for (int i = 0; i < 2000; ++i) values.push_back(std::ldexp(static_cast<float>(i * 7919 % 10007) / 10007.f, i % 40 - 26));
  std::string in(reinterpret_cast<const char*>(values.data()), values.size() * 4);
  std::string out = test::run_python(
      "import sys, numpy as np\n"
      "f = np.frombuffer(sys.stdin.buffer.read(), '<f4')\n"
      "sys.stdout.buffer.write(f.astype('<f2').tobytes())\n",
      in);
  ASSERT_EQ(out.size(), values.size() * 2);
  for (std::size_t i = 0; i < values.size(); ++i) {
    std::uint16_t expected;
    std::memcpy(&expected, out.data() + 2 * i, 2);
    EXPECT_EQ(float16::from_float(values[i]).bits, expected) << values[i];
  }
}

// ---------------------------------------------------------------- NDArray

TEST(NDArray, AllocateZeroedInCAndFortranOrder) {
  NDArray c = NDArray::allocate(DType::of<double>(), {2, 3});
  EXPECT_EQ(c.strides, (std::vector<std::int64_t>{24, 8}));
  EXPECT_TRUE(c.is_c_contiguous());
  EXPECT_FALSE(c.is_f_contiguous());
  EXPECT_FALSE(c.readonly());
  EXPECT_EQ(c.size(), 6);
  EXPECT_EQ(c.nbytes(), 48u);
  for (double v : c.as<double>()) EXPECT_EQ(v, 0.0);

  NDArray f = NDArray::allocate(DType::of<std::int32_t>(), {2, 3, 4}, Order::F, Init::uninitialised);
  EXPECT_EQ(f.strides, (std::vector<std::int64_t>{4, 8, 24}));
  EXPECT_TRUE(f.is_f_contiguous());
  EXPECT_FALSE(f.is_c_contiguous());
  auto v = f.mutable_view<std::int32_t>();
  v(1, 2, 3) = 42;
  EXPECT_EQ(f.as<std::int32_t>()[1 + 2 * 2 + 3 * 6], 42);  // memory (Fortran) order
  EXPECT_EQ(f.view<std::int32_t>()[1 * 12 + 2 * 4 + 3], 42);  // flat index in C order

  NDArray zero_d = NDArray::allocate(DType::of<float>(), {});
  EXPECT_EQ(zero_d.size(), 1);
  EXPECT_TRUE(zero_d.is_c_contiguous() && zero_d.is_f_contiguous());
  NDArray empty = NDArray::allocate(DType::of<float>(), {3, 0});
  EXPECT_EQ(empty.size(), 0);
  EXPECT_TRUE(empty.as<float>().empty());
}

TEST(NDArray, WrapBorrowsAndTakeOwnsWithoutCopying) {
  std::vector<double> memory = {1, 2, 3, 4, 5, 6};
  NDArray w = NDArray::wrap(memory.data(), DType::of<double>(), {2, 3});
  EXPECT_EQ(static_cast<const void*>(w.first_element()), static_cast<const void*>(memory.data()));
  EXPECT_TRUE(w.readonly());
  EXPECT_THROW(w.as_mutable<double>(), Error);
  NDArray wm = NDArray::wrap_mutable(memory.data(), DType::of<double>(), {3, 2}, Order::F);
  wm.mutable_view<double>()(2, 1) = 60;
  EXPECT_EQ(memory[5], 60);

  std::vector<std::uint16_t> owned(1000, 7);
  const void* p = owned.data();
  NDArray t = NDArray::take(std::move(owned), {10, 100});
  EXPECT_EQ(static_cast<const void*>(t.first_element()), p);
  EXPECT_EQ(t.dtype.str(), "<u2");
  EXPECT_EQ(t.as<std::uint16_t>()[999], 7);

  EXPECT_THROW(NDArray::from_buffer(Buffer::allocate(10), DType::of<double>(), {2}), Error);
  EXPECT_THROW(NDArray::allocate(DType::of<double>(), {-1}), Error);
  EXPECT_THROW(NDArray::allocate(DType::of<double>(), {1LL << 40, 1LL << 40}), Error);
}

TEST(NDArray, TypedAccessRefusesWrongDtypeByteOrderLayoutAndAlignment) {
  NDArray a = NDArray::allocate(DType::of<double>(), {4});
  try {
    a.as<float>();
    FAIL() << "as<float> on <f8";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("<f4"), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find("<f8"), std::string::npos) << e.what();
  }
  EXPECT_THROW(a.as<std::int64_t>(), Error);  // same size, other kind
  EXPECT_THROW(a.view<std::uint64_t>(), Error);

  NDArray big = NDArray::allocate(DType::parse(">i4"), {3});
  EXPECT_THROW(big.as<std::int32_t>(), Error);
  std::memcpy(big.data.mutable_data(), "\x00\x00\x00\x01\x00\x00\x01\x00\xff\xff\xff\xfe", 12);
  NDArray native = big.to_native_byteorder();
  EXPECT_EQ(native.dtype.str(), "<i4");
  EXPECT_EQ(std::vector<std::int32_t>(native.as<std::int32_t>().begin(), native.as<std::int32_t>().end()),
            (std::vector<std::int32_t>{1, 256, -2}));

  // Every other element: not contiguous for spans, fine for views.
  NDArray strided = NDArray::from_buffer_strided(a.data, a.dtype, {2}, {16});
  EXPECT_THROW(strided.as<double>(), Error);
  EXPECT_EQ(strided.view<double>().size(), 2);

  // Misaligned by one byte.
  Buffer raw = Buffer::allocate(8 * 4 + 1);
  NDArray misaligned = NDArray::from_buffer(raw.slice(1, 32), DType::of<double>(), {4});
  EXPECT_THROW(misaligned.as<double>(), Error);
  EXPECT_NO_THROW(misaligned.copy().as<double>());
}

TEST(NDArray, ValidateRefusesMemoryOutsideTheBuffer) {
  Buffer b = Buffer::allocate(64);
  EXPECT_THROW(NDArray::from_buffer_strided(b, DType::of<double>(), {9}, {8}), Error);
  EXPECT_THROW(NDArray::from_buffer_strided(b, DType::of<double>(), {2}, {-8}), Error);
  EXPECT_NO_THROW(NDArray::from_buffer_strided(b, DType::of<double>(), {2}, {-8}, 8));
  EXPECT_THROW(NDArray::from_buffer_strided(b, DType::of<double>(), {2, 2}, {8}), Error);
  EXPECT_THROW(NDArray::from_buffer_strided(b, DType::of<double>(), {3}, {std::numeric_limits<std::int64_t>::max()}),
               Error);
  EXPECT_NO_THROW(NDArray::from_buffer_strided(b, DType::of<double>(), {1000000}, {0}));  // broadcast
}

TEST(NDArray, CopyOfStridedAndReversedViewsInBothOrders) {
  std::vector<std::int64_t> values(24);
  std::iota(values.begin(), values.end(), 0);
  NDArray base = NDArray::take(std::move(values), {2, 3, 4});
  // a[:, ::-1, ::2]  -> shape (2, 3, 2)
  NDArray view = NDArray::from_buffer_strided(base.data, base.dtype, {2, 3, 2}, {96, -32, 16}, 64);
  EXPECT_FALSE(view.is_contiguous());
  std::vector<std::int64_t> expected;
  for (int i = 0; i < 2; ++i)
    for (int j = 2; j >= 0; --j)
      for (int k = 0; k < 4; k += 2) expected.push_back(i * 12 + j * 4 + k);
  NDArray c = view.copy(Order::C);
  EXPECT_TRUE(c.is_c_contiguous());
  EXPECT_EQ(std::vector<std::int64_t>(c.as<std::int64_t>().begin(), c.as<std::int64_t>().end()), expected);
  NDArray f = view.copy(Order::F);
  EXPECT_TRUE(f.is_f_contiguous());
  auto fv = f.view<std::int64_t>();
  for (std::int64_t i = 0; i < 12; ++i) EXPECT_EQ(fv[i], expected[i]);
  std::vector<std::int64_t> visited;
  view.view<std::int64_t>().for_each([&](std::int64_t x) { visited.push_back(x); });
  EXPECT_EQ(visited, expected);
}

TEST(NDArray, StringElements) {
  NDArray s = NDArray::allocate(DType::bytes(4), {2});
  std::memcpy(s.data.mutable_data(), "ab\0\0wxyz", 8);
  EXPECT_EQ(s.string_at(0), "ab");
  EXPECT_EQ(s.string_at(1), "wxyz");
  NDArray u = NDArray::allocate(DType::parse(">U2"), {1});
  std::memcpy(u.data.mutable_data(), "\x00\x00\x00\x68\x00\x01\xf6\x00", 8);  // 'h', U+1F600
  EXPECT_EQ(u.string_at(0), "h\xf0\x9f\x98\x80");
  EXPECT_THROW(NDArray::allocate(DType::of<float>(), {1}).string_at(0), Error);
}

// ---------------------------------------------------------------- format_ndarray

TEST(FormatNdarray, DocumentedForms) {
  std::vector<double> v = {1.0, 2.5, -0.0};
  EXPECT_EQ(format_ndarray(NDArray::take(std::vector<double>(v), {3})),
            "array([1.0, 2.5, -0.0], dtype='<f8', shape=(3,), order='C')");
  EXPECT_EQ(format_ndarray(NDArray::take(std::vector<std::int64_t>{1, 2, 3, 4}, {2, 2}, Order::F)),
            "array([[1, 3], [2, 4]], dtype='<i8', shape=(2, 2), order='F')");
  EXPECT_EQ(format_ndarray(NDArray::take(std::vector<std::int32_t>{7}, {})),
            "array(7, dtype='<i4', shape=(), order='C')");
  EXPECT_EQ(format_ndarray(NDArray::allocate(DType::of<float>(), {2, 0})),
            "array([], dtype='<f4', shape=(2, 0), order='C')");
  EXPECT_EQ(format_ndarray(NDArray::take(std::vector<std::uint8_t>{1, 0}, {2})),
            "array([1, 0], dtype='|u1', shape=(2,), order='C')");
  NDArray b = NDArray::allocate(DType::of<bool>(), {2});
  b.as_mutable<bool>()[0] = true;
  EXPECT_EQ(format_ndarray(b), "array([True, False], dtype='|b1', shape=(2,), order='C')");
  EXPECT_EQ(format_ndarray(NDArray::take(std::vector<std::complex<double>>{{1, 2}, {0.5, -1}}, {2})),
            "array([(1+2j), (0.5-1j)], dtype='<c16', shape=(2,), order='C')");
  NDArray s = NDArray::allocate(DType::bytes(3), {1});
  std::memcpy(s.data.mutable_data(), "a'\n", 3);
  EXPECT_EQ(format_ndarray(s), "array([b\"a'\\n\"], dtype='|S3', shape=(1,), order='C')");  // Python's repr(b"a'\n")
  NDArray u = NDArray::allocate(DType::parse("<U2"), {1});
  const char32_t u_chars[] = {U'\x7f', U'\u00e9'};
  std::memcpy(u.data.mutable_data(), u_chars, sizeof u_chars);
  EXPECT_EQ(format_ndarray(u), "array(['\\x7f\u00e9'], dtype='<U2', shape=(1,), order='C')");  // repr('\x7fé')
  EXPECT_EQ(format_ndarray(NDArray::take(std::vector<std::complex<float>>{{0, 0.1f}}, {1})),
            "array([0.1j], dtype='<c8', shape=(1,), order='C')");  // float32 digits, Python's complex repr
  NDArray t = NDArray::take(std::vector<datetime64>{{5}, {std::numeric_limits<std::int64_t>::min()}}, {2});
  EXPECT_EQ(format_ndarray(t), "array([5, NaT], dtype='<M8', shape=(2,), order='C')");

  std::vector<std::int64_t> many(2000);
  std::iota(many.begin(), many.end(), 0);
  EXPECT_EQ(format_ndarray(NDArray::take(std::move(many), {2, 1000})),
            "array([[0, 1, 2, ..., 997, 998, 999], [1000, 1001, 1002, ..., 1997, 1998, 1999]], dtype='<i8', "
            "shape=(2, 1000), order='C')");
}

TEST(FormatNdarray, FloatsPrintAsPythonRepr) {
  std::vector<double> v = {0.1, 1e16, 1e15, 123456.789, 1e-4, 1e-5, 1.5e-7, 3.141592653589793, -2.0, 1e300,
                           5e-324, NAN, INFINITY, -INFINITY, 100.0, 0.0};
  std::string expected = test::run_python(
      "import numpy as np\nv=[0.1, 1e16, 1e15, 123456.789, 1e-4, 1e-5, 1.5e-7, 3.141592653589793, -2.0, 1e300,"
      " 5e-324, float('nan'), float('inf'), float('-inf'), 100.0, 0.0]\n"
      "print('array([' + ', '.join(repr(x) for x in v) + \"], dtype='<f8', shape=(16,), order='C')\")\n");
  EXPECT_EQ(format_ndarray(NDArray::take(std::move(v), {16})) + "\n", expected);
}

// ---------------------------------------------------------------- decode: _frombuffer

TEST(DecodeFrombuffer, OutOfBandBufferIsTheArrayDataPointer) {
  Builder b;
  Buffer delivered = Buffer::allocate(3 * 8);
  double three[] = {1, 2, 3};
  std::memcpy(delivered.mutable_data(), three, 24);
  Value args = frombuffer_args(b, b.pickle_buffer(delivered), numpy_dtype(b, "f8", "<"), {3}, "C");
  auto slot = numpy::decode_reduce(*b.graph(), kFrombuffer, args.slot(), 0);
  ASSERT_TRUE(slot);
  Value arr(*slot, b.graph());
  ASSERT_EQ(arr.kind(), Kind::NDArray);
  const NDArray& a = arr.as_ndarray();
  EXPECT_EQ(a.data.data(), delivered.data());  // zero copy
  EXPECT_FALSE(a.readonly());
  EXPECT_EQ(a.as<double>()[2], 3.0);
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{3}));
}

TEST(DecodeFrombuffer, NumpyTwoModuleFortranAndAxisOrder) {
  Builder b;
  std::vector<std::int32_t> v(24);
  std::iota(v.begin(), v.end(), 0);
  Buffer buf = Buffer::copy(v.data(), v.size() * 4);
  const GlobalName numpy2{"numpy._core.numeric", "_frombuffer"};

  auto f = numpy::decode_reduce(*b.graph(), numpy2,
                                frombuffer_args(b, b.pickle_buffer(buf), numpy_dtype(b, "i4", "<"), {4, 6}, "F").slot(), 0);
  ASSERT_TRUE(f);
  EXPECT_TRUE(f->node->array().is_f_contiguous());
  EXPECT_EQ(f->node->array().view<std::int32_t>()(1, 2), 9);  // Fortran: 1 + 2*4

  // numpy 2: frombuffer(buf).reshape((2,3,4), 'C').transpose((2,0,1))
  Value args = b.tuple({b.pickle_buffer(buf), numpy_dtype(b, "i4", "<"), b.tuple({2, 3, 4}), b.str("K"), b.tuple({2, 0, 1})});
  auto k = numpy::decode_reduce(*b.graph(), numpy2, args.slot(), 0);
  ASSERT_TRUE(k);
  const NDArray& a = k->node->array();
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{4, 2, 3}));
  EXPECT_EQ(a.data.data(), buf.data());
  EXPECT_EQ(a.view<std::int32_t>()(3, 1, 2), 1 * 12 + 2 * 4 + 3);

  Value bad_axes = b.tuple({b.pickle_buffer(buf), numpy_dtype(b, "i4", "<"), b.tuple({2, 3, 4}), b.str("K"), b.tuple({0, 0, 1})});
  EXPECT_THROW(numpy::decode_reduce(*b.graph(), numpy2, bad_axes.slot(), 77), UnpicklingError);
}

TEST(DecodeFrombuffer, SizeMismatchIsAnUnpicklingErrorWithTheOffset) {
  Builder b;
  Value args = frombuffer_args(b, b.pickle_buffer(Buffer::allocate(20)), numpy_dtype(b, "f8", "<"), {3}, "C");
  try {
    numpy::decode_reduce(*b.graph(), kFrombuffer, args.slot(), 114);
    FAIL();
  } catch (const UnpicklingError& e) {
    EXPECT_EQ(e.offset(), 114u);
    EXPECT_NE(e.reason().find("20 bytes"), std::string::npos) << e.what();
  }
  Value negative = frombuffer_args(b, b.pickle_buffer(Buffer::allocate(0)), numpy_dtype(b, "f8", "<"), {-1}, "C");
  EXPECT_THROW(numpy::decode_reduce(*b.graph(), kFrombuffer, negative.slot(), 0), UnpicklingError);
  Value huge = frombuffer_args(b, b.pickle_buffer(Buffer::allocate(8)), numpy_dtype(b, "f8", "<"),
                               {Value(1LL << 40), Value(1LL << 40)}, "C");
  EXPECT_THROW(numpy::decode_reduce(*b.graph(), kFrombuffer, huge.slot(), 0), UnpicklingError);
}

TEST(DecodeFrombuffer, WhatWeDoNotModelStaysInert) {
  Builder b;
  Buffer buf = Buffer::allocate(16);
  // structured dtype: names/fields set
  Value structured = b.object(ObjectForm::Reduce, b.global("numpy", "dtype"), b.tuple({b.str("V8"), false, true}));
  structured.add_state(b.tuple({3, b.str("|"), Value(), b.tuple({b.str("a")}), b.dict({}), 8, 1, 16}));
  EXPECT_FALSE(numpy::decode_reduce(*b.graph(), kFrombuffer, frombuffer_args(b, b.pickle_buffer(buf), structured, {2}, "C").slot(), 0));
  // subarray dtype
  Value sub = b.object(ObjectForm::Reduce, b.global("numpy", "dtype"), b.tuple({b.str("V16"), false, true}));
  sub.add_state(b.tuple({3, b.str("|"), b.tuple({numpy_dtype(b, "f8", "<"), b.tuple({2})}), Value(), Value(), 16, 8, 0}));
  EXPECT_FALSE(numpy::decode_reduce(*b.graph(), kFrombuffer, frombuffer_args(b, b.pickle_buffer(buf), sub, {1}, "C").slot(), 0));
  // object dtype, long double
  EXPECT_FALSE(numpy::decode_reduce(*b.graph(), kFrombuffer,
                                    frombuffer_args(b, b.pickle_buffer(buf), numpy_dtype(b, "O8", "|", -1, -1, 63), {2}, "C").slot(), 0));
  EXPECT_FALSE(numpy::decode_reduce(*b.graph(), kFrombuffer,
                                    frombuffer_args(b, b.pickle_buffer(buf), numpy_dtype(b, "f16", "<"), {1}, "C").slot(), 0));
  // unknown callable, wrong arity, unknown order
  EXPECT_FALSE(numpy::decode_reduce(*b.graph(), GlobalName{"numpy.core.multiarray", "scalar"}, b.tuple({}).slot(), 0));
  EXPECT_FALSE(numpy::decode_reduce(*b.graph(), kFrombuffer, b.tuple({b.pickle_buffer(buf)}).slot(), 0));
  EXPECT_FALSE(numpy::decode_reduce(*b.graph(), kFrombuffer,
                                    frombuffer_args(b, b.pickle_buffer(buf), numpy_dtype(b, "f8", "<"), {2}, "Z").slot(), 0));
}

TEST(DecodeFrombuffer, InBandBytesViewWhenAlignedCopyWhenNot) {
  Builder b;
  // Graph-stored text: at offset 0 of a fresh allocation aligned; offset by one byte misaligned.
  std::string payload(17, '\0');
  double one = 1.0, two = 2.0;
  std::memcpy(payload.data() + 1, &one, 8);
  std::memcpy(payload.data() + 9, &two, 8);
  Buffer stream = Buffer::copy(payload);  // pretend this is the pickle stream
  b.graph()->keep_alive(stream);
  auto bytes_node = [&](std::size_t off) {
    Node* n = b.graph()->new_node(Kind::Bytes);
    n->text().data = std::string_view(stream.chars()).substr(off, 16);
    Slot s;
    s.kind = Kind::Bytes;
    s.is_inline = false;
    s.node = n;
    return Value(s, b.graph());
  };
  auto misaligned = numpy::decode_reduce(*b.graph(), kFrombuffer,
                                         frombuffer_args(b, bytes_node(1), numpy_dtype(b, "f8", "<"), {2}, "C").slot(), 0);
  ASSERT_TRUE(misaligned);
  const NDArray& m = misaligned->node->array();
  EXPECT_NE(m.data.data(), stream.data() + 1);  // copied to aligned memory
  EXPECT_EQ(m.as<double>()[1], 2.0);

  Buffer aligned_stream = Buffer::copy(payload.substr(1));
  b.graph()->keep_alive(aligned_stream);
  Node* n = b.graph()->new_node(Kind::Bytes);
  n->text().data = aligned_stream.chars();
  Slot s;
  s.kind = Kind::Bytes;
  s.is_inline = false;
  s.node = n;
  auto viewed = numpy::decode_reduce(*b.graph(), kFrombuffer,
                                     frombuffer_args(b, Value(s, b.graph()), numpy_dtype(b, "f8", "<"), {2}, "C").slot(), 0);
  ASSERT_TRUE(viewed);
  EXPECT_EQ(viewed->node->array().data.data(), aligned_stream.data());  // a view of the stream
  EXPECT_TRUE(viewed->node->array().readonly());
  EXPECT_EQ(viewed->node->array().as<double>()[0], 1.0);
}

TEST(DecodeDtype, DatetimeUnitsAndByteOrders) {
  Builder b;
  Value dt = b.object(ObjectForm::Reduce, b.global("numpy", "dtype"), b.tuple({b.str("m8"), false, true}));
  dt.add_state(b.tuple({4, b.str(">"), Value(), Value(), Value(), -1, -1, 0,
                        b.tuple({b.dict({}), b.tuple({b.bytes("ms"), 10, 1, 1})})}));
  auto d = numpy::decode_dtype(dt.slot());
  ASSERT_TRUE(d);
  EXPECT_EQ(d->str(), ">m8[10ms]");
  Value generic = b.object(ObjectForm::Reduce, b.global("numpy", "dtype"), b.tuple({b.str("M8"), false, true}));
  generic.add_state(b.tuple({4, b.str("<"), Value(), Value(), Value(), -1, -1, 0,
                             b.tuple({b.dict({}), b.tuple({b.bytes("generic"), 1, 1, 1})})}));
  EXPECT_EQ(numpy::decode_dtype(generic.slot())->str(), "<M8");
  EXPECT_EQ(numpy::decode_dtype(numpy_dtype(b, "U3", ">", 12, 4, 8).slot())->str(), ">U3");
  EXPECT_EQ(numpy::decode_dtype(numpy_dtype(b, "S5", "|", 5, 1, 0).slot())->str(), "|S5");
  EXPECT_FALSE(numpy::decode_dtype(numpy_dtype(b, "S5", "|", 6, 1, 0).slot()));  // inconsistent: inert
  EXPECT_EQ(numpy::decode_dtype(b.str(">i2").slot())->str(), ">i2");
}

// ---------------------------------------------------------------- decode: _reconstruct + BUILD

TEST(DecodeReconstruct, BuildConvertsThePlaceholderInPlace) {
  Builder b;
  Value placeholder = b.object(ObjectForm::Reduce, b.global("numpy.core.multiarray", "_reconstruct"),
                               b.tuple({b.global("numpy", "ndarray"), b.tuple({0}), b.bytes("b")}));
  std::int16_t data[6] = {1, 2, 3, 4, 5, 6};
  Value state = b.tuple({1, b.tuple({3, 2}), numpy_dtype(b, "i2", ">"), true,
                         b.bytes(std::string_view(reinterpret_cast<const char*>(data), sizeof data))});
  Node* node = placeholder.slot().node;
  ASSERT_TRUE(numpy::decode_build(*b.graph(), *node, state.slot(), 0));
  EXPECT_EQ(node->kind, Kind::NDArray);
  const NDArray& a = node->array();
  EXPECT_EQ(a.dtype.str(), ">i2");
  EXPECT_TRUE(a.is_f_contiguous());
  EXPECT_EQ(a.shape, (std::vector<std::int64_t>{3, 2}));

  Value short_state = b.tuple({1, b.tuple({4}), numpy_dtype(b, "i2", "<"), false, b.bytes("abc")});
  Value p2 = b.object(ObjectForm::Reduce, b.global("numpy._core.multiarray", "_reconstruct"),
                      b.tuple({b.global("numpy", "ndarray"), b.tuple({0}), b.bytes("b")}));
  EXPECT_THROW(numpy::decode_build(*b.graph(), *p2.slot().node, short_state.slot(), 9), UnpicklingError);
}

TEST(DecodeReconstruct, SubclassesAndObjectArraysStayInert) {
  Builder b;
  Value masked = b.object(ObjectForm::Reduce, b.global("numpy.core.multiarray", "_reconstruct"),
                          b.tuple({b.global("numpy.ma.core", "MaskedArray"), b.tuple({0}), b.bytes("b")}));
  Value state = b.tuple({1, b.tuple({1}), numpy_dtype(b, "f8", "<"), false, b.bytes(std::string(8, '\0'))});
  EXPECT_FALSE(numpy::decode_build(*b.graph(), *masked.slot().node, state.slot(), 0));
  EXPECT_EQ(masked.slot().node->kind, Kind::Object);

  Value objects = b.object(ObjectForm::Reduce, b.global("numpy.core.multiarray", "_reconstruct"),
                           b.tuple({b.global("numpy", "ndarray"), b.tuple({0}), b.bytes("b")}));
  Value ostate = b.tuple({1, b.tuple({2}), numpy_dtype(b, "O8", "|", -1, -1, 63), false, b.list({1, Value("x")})});
  EXPECT_FALSE(numpy::decode_build(*b.graph(), *objects.slot().node, ostate.slot(), 0));
}

// ---------------------------------------------------------------- lower

TEST(LowerNdarray, Protocol5HandsTheOriginalMemoryToThePickleBuffer) {
  std::vector<float> v(12, 1.5f);
  const void* p = v.data();
  NDArray a = NDArray::take(std::move(v), {3, 4}, Order::F);
  Graph scratch;
  CopyLedger ledger;
  Slot s = numpy::lower_ndarray(scratch, a, 5, &ledger);
  ASSERT_EQ(s.node->kind, Kind::Object);
  const ObjectData& o = s.node->object();
  EXPECT_EQ(o.callable.node->global().module, "numpy.core.numeric");
  EXPECT_EQ(o.callable.node->global().name, "_frombuffer");
  const Items& args = o.args.node->items();
  ASSERT_EQ(args.size(), 4u);
  EXPECT_EQ(static_cast<const void*>(args[0].node->buffer().data()), p);
  EXPECT_EQ(args[3].node->text().data, "F");
  EXPECT_EQ(numpy::decode_dtype(args[1])->str(), "<f4");
  EXPECT_EQ(ledger.total_copied_bytes(), 0u);
}

TEST(LowerNdarray, NonContiguousIsCopiedAndRecorded) {
  std::vector<std::int64_t> v(20);
  std::iota(v.begin(), v.end(), 0);
  NDArray base = NDArray::take(std::move(v), {4, 5});
  NDArray view = NDArray::from_buffer_strided(base.data, base.dtype, {4, 2}, {40, 16}, 8);  // a[:, 1::2]
  Graph scratch;
  CopyLedger ledger;
  Slot s = numpy::lower_ndarray(scratch, view, 5, &ledger);
  EXPECT_EQ(ledger.copied(CopyReason::non_contiguous), 64u);
  EXPECT_EQ(ledger.copies[static_cast<std::size_t>(CopyReason::non_contiguous)], 1u);
  const Buffer& sent = s.node->object().args.node->items()[0].node->buffer();
  std::int64_t got[8];
  std::memcpy(got, sent.data(), 64);
  EXPECT_EQ(std::vector<std::int64_t>(got, got + 8), (std::vector<std::int64_t>{1, 3, 6, 8, 11, 13, 16, 18}));

  // Protocol 2: _reconstruct, the data bytes view the array's own memory when contiguous.
  Slot r = numpy::lower_ndarray(scratch, base, 2, &ledger);
  const ObjectData& o = r.node->object();
  EXPECT_EQ(o.callable.node->global().name, "_reconstruct");
  ASSERT_EQ(o.states.size(), 1u);
  const Items& st = o.states[0].node->items();
  EXPECT_EQ(st[4].node->text().data.data(), reinterpret_cast<const char*>(base.data.data()));
  EXPECT_EQ(ledger.copied(CopyReason::non_contiguous), 64u);  // unchanged
  // And decoding what we lowered gives the array back (BUILD applies the state to a fresh placeholder).
  Slot state = o.states[0];
  r.node->object().states.clear();
  ASSERT_TRUE(numpy::decode_build(scratch, *r.node, state, 0));
  EXPECT_EQ(r.node->array().as<std::int64_t>()[19], 19);
}
