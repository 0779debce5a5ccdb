/// \file picklewire/ndarray.hpp — a numpy-compatible n-dimensional array over a Buffer.
///
/// An NDArray is a dtype, a shape, byte strides and a Buffer holding the data. Loading a numpy
/// pickle whose data travelled out-of-band gives an NDArray whose data is the delivered Buffer
/// itself: no copy (`array.data.data() == delivered.data()`). Dumping an NDArray at protocol 5 hands
/// the pickler's buffer callback a Buffer that views the array's own memory.
///
/// Memory and lifetimes. `data` is a Buffer, so it keeps its memory alive exactly as Buffer does:
///   - NDArray::from_buffer / allocate / take: the array owns (or shares) its memory;
///   - NDArray::wrap / wrap_mutable: BORROWED memory, no owner. The caller keeps [data, data+nbytes)
///     valid for as long as the NDArray, any copy of it, or any Value / Message made from it lives;
///   - decoded from a pickle with an in-band payload (protocols 0-4, or protocol 5 without a buffer
///     callback): the data views the pickle stream (or the graph's own storage), which the loaded
///     Value's graph keeps alive. Keep the Value alive while you use the array, or call copy().
///
/// Typed access. as<T>() returns a std::span<const T> over a contiguous array in memory order (C
/// order for C-contiguous arrays, Fortran order for Fortran-contiguous ones); view<T>() returns a
/// StridedView for any layout. Both refuse (picklewire::Error, saying what was asked and what the
/// array holds) when T does not match the dtype exactly (kind and item size), when the dtype is not
/// in this machine's byte order (call to_native_byteorder()), or when the data is not aligned for T
/// (call copy()). Arrays decoded from pickles are always aligned: a misaligned in-band payload is
/// copied once at load (see docs/ndarray.md); out-of-band buffers are never copied.
///
/// C++ types for the dtypes:  bool |b1, int8_t..int64_t |i1 <i2 <i4 <i8, uint8_t..uint64_t,
/// float16 <f2, float <f4, double <f8, std::complex<float> <c8, std::complex<double> <c16,
/// datetime64 <M8[unit], timedelta64 <m8[unit]. Fixed-width bytes 'S' and unicode 'U' elements are
/// read with string_at() (numpy strips trailing NULs; so does string_at).
#pragma once

#include <complex>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "picklewire/buffer.hpp"
#include "picklewire/errors.hpp"

namespace picklewire {

/// IEEE 754 binary16 (numpy float16), stored as its bits.
struct float16 {
  std::uint16_t bits = 0;
  float to_float() const noexcept;
  static float16 from_float(float f) noexcept;
  friend bool operator==(float16 a, float16 b) noexcept { return a.bits == b.bits; }
};
/// numpy datetime64 / timedelta64: a count of the dtype's unit (NaT is INT64_MIN).
struct datetime64 {
  std::int64_t count = 0;
  friend bool operator==(datetime64 a, datetime64 b) noexcept { return a.count == b.count; }
};
struct timedelta64 {
  std::int64_t count = 0;
  friend bool operator==(timedelta64 a, timedelta64 b) noexcept { return a.count == b.count; }
};

/// numpy's type descriptor for the kinds picklewire decodes natively (what numpy's `dtype.str`
/// says). Always canonical: 1-byte kinds, 'S' and 'V' have byteorder '|'; every other kind has '<'
/// or '>' (never '=': parse() resolves it to this machine's order).
struct DType {
  char kind = 'f';         ///< numpy kind: b i u f c S U M m V  (V: raw void bytes, no fields)
  char byteorder = '<';    ///< '<' little, '>' big, '|' not applicable (1-byte and bytes-like)
  std::uint32_t itemsize = 8;  ///< bytes per element ('U': 4 per character)
  std::string unit;        ///< datetime64 / timedelta64 unit with its count, e.g. "ns", "D", "10ms";
                           // empty for numpy's generic unit and for every other kind

  /// numpy's `dtype.str`: '<f8', '|b1', '|S5', '<U3', '<M8[ns]', '>m8[10ms]', '|V16'.
  std::string str() const;
  /// Parses numpy's descriptor strings: dtype.str forms ('<f8', '|S5', '>U3', '<M8[ns]'), with '='
  /// or no byte-order character meaning this machine ('f8', 'i4', 'M8[D]'), and numpy's
  /// one-letter/sized codes as `np.dtype` accepts them ('?', 'b1', 'S5', 'U3', 'c16', 'V8').
  /// Throws picklewire::Error for anything else (structured, object, long double, bad units).
  static DType parse(std::string_view descr);

  /// The dtype matching C++ type T in this machine's byte order (see the table above).
  template <class T>
  static DType of(std::string_view unit = {});
  static DType bytes(std::uint32_t length);    ///< `|S<length>`
  static DType unicode(std::uint32_t chars);   ///< `<U<chars>` (itemsize 4*chars)

  std::size_t alignment() const noexcept;      ///< numpy's dtype.alignment for these kinds
  bool is_native_byteorder() const noexcept;   ///< '|' or this machine's order
  /// This dtype with the machine's byte order (for to_native_byteorder()).
  DType native() const;
  friend bool operator==(const DType&, const DType&) = default;

  /// Throws picklewire::Error when the fields are not a canonical dtype this library supports.
  void validate() const;
};

enum class Order : char { C = 'C', F = 'F' };
enum class Init { zeroed, uninitialised };

template <class T>
class StridedView;

struct NDArray {
  static constexpr std::size_t kMaxDims = 64;  ///< numpy 2's NPY_MAXDIMS (numpy 1.x: 32)

  DType dtype;
  std::vector<std::int64_t> shape;
  std::vector<std::int64_t> strides;  ///< in bytes, one per dimension (may be negative or zero)
  Buffer data;                        ///< data.readonly() is the array's readonly flag
  std::int64_t offset = 0;            ///< byte offset in `data` of element (0, ..., 0)

  /// ---- construction
  /// Borrow: the caller keeps [data, data + nbytes) valid for as long as the NDArray or anything
  /// made from it is alive. wrap() is readonly, wrap_mutable() writable.
  static NDArray wrap(const void* data, DType dtype, std::vector<std::int64_t> shape, Order order = Order::C);
  static NDArray wrap_mutable(void* data, DType dtype, std::vector<std::int64_t> shape, Order order = Order::C);
  /// Share a Buffer (its owner keeps the memory alive). Use Buffer::take / with_free_function to
  /// hand over memory you allocated. The buffer must hold exactly nbytes (contiguous layout).
  static NDArray from_buffer(Buffer data, DType dtype, std::vector<std::int64_t> shape, Order order = Order::C);
  /// Any strided view of `data`; throws if an element would lie outside it.
  static NDArray from_buffer_strided(Buffer data, DType dtype, std::vector<std::int64_t> shape,
                                     std::vector<std::int64_t> strides, std::int64_t offset = 0);
  /// Take ownership of a vector (moved, not copied): writable, dtype DType::of<T>().
  template <class T>
  static NDArray take(std::vector<T>&& values, std::vector<std::int64_t> shape, Order order = Order::C);
  /// New heap memory, writable, aligned for the dtype.
  static NDArray allocate(DType dtype, std::vector<std::int64_t> shape, Order order = Order::C,
                          Init init = Init::zeroed);

  /// Byte strides of a contiguous array of this shape and item size.
  static std::vector<std::int64_t> contiguous_strides(const std::vector<std::int64_t>& shape,
                                                      std::size_t itemsize, Order order);

  /// ---- queries
  std::size_t ndim() const noexcept { return shape.size(); }
  std::int64_t size() const noexcept;                 ///< element count (1 for 0-d)
  std::size_t nbytes() const noexcept { return static_cast<std::size_t>(size()) * dtype.itemsize; }
  bool readonly() const noexcept { return data.readonly(); }
  bool is_c_contiguous() const noexcept;              ///< numpy's rules: size-1 dims may have any stride
  bool is_f_contiguous() const noexcept;
  bool is_contiguous() const noexcept { return is_c_contiguous() || is_f_contiguous(); }
  const std::byte* first_element() const noexcept { return data.data() + offset; }
  /// Throws picklewire::Error when shape/strides/offset/dtype do not describe memory inside `data`.
  void validate() const;

  /// ---- typed access (see the header comment for what is refused)
  template <class T> std::span<const T> as() const;
  template <class T> std::span<T> as_mutable() const;
  template <class T> StridedView<const T> view() const;
  template <class T> StridedView<T> mutable_view() const;
  /// The raw bytes of a contiguous array, in memory order.
  std::span<const std::byte> raw_bytes() const;
  /// 'S': the element's bytes; 'U': the element as UTF-8. Trailing NULs stripped, as numpy does.
  /// `flat_index` counts in C order.
  std::string string_at(std::int64_t flat_index) const;

  /// ---- copies
  /// A new, owned, writable, contiguous array in `order` with the same dtype and values.
  NDArray copy(Order order = Order::C) const;
  /// This array if its dtype is already in machine byte order, else a byte-swapped C-order copy.
  NDArray to_native_byteorder() const;

  /// Internal: throws the Error typed access raises when T (described by `wanted`) does not fit.
  void check_access(char kind, std::size_t itemsize, std::size_t type_alignment, bool need_contiguous,
                    bool need_writable) const;
};

/// numpy-like text form, as `picklewire repr` prints an array:
///   array([1.0, 2.0, 3.0], dtype='<f8', shape=(3,), order='C')
///   array([[1, 2], [3, 4]], dtype='<i8', shape=(2, 2), order='F')
///   array(7, dtype='<i4', shape=(), order='C')
/// Values are nested in C order whatever the memory layout; order is 'C', 'F' (F-contiguous only)
/// or 'strided'. Floats print as Python's repr (shortest round trip: 1.0, nan, inf), complex as
/// Python's (1+2j), bool as True/False, 'S' as b'...', 'U' as '...', datetime64/timedelta64 as their
/// integer count (NaT for INT64_MIN) with the unit in the dtype. Arrays of more than 1000 elements
/// are summarised as numpy does: the first and last 3 entries of each axis around "...".
/// A ", readonly" suffix is not printed: readonly-ness is a property of the buffer, not the value.
std::string format_ndarray(const NDArray& array);

// ---------------------------------------------------------------- StridedView

/// A typed view of any layout: indexing by N indices, by a C-order flat index, or for_each in C
/// order. Holds a pointer, not the buffer: valid while the NDArray's memory is.
template <class T>
class StridedView {
 public:
  using byte_pointer = std::conditional_t<std::is_const_v<T>, const std::byte*, std::byte*>;
  StridedView(byte_pointer first, std::vector<std::int64_t> shape, std::vector<std::int64_t> strides)
      : first_(first), shape_(std::move(shape)), strides_(std::move(strides)) {}

  std::size_t ndim() const noexcept { return shape_.size(); }
  std::int64_t extent(std::size_t axis) const { return shape_.at(axis); }
  std::int64_t size() const noexcept {
    std::int64_t n = 1;
    for (auto d : shape_) n *= d;
    return n;
  }
  template <class... I>
  T& operator()(I... index) const {
    static_assert((std::is_integral_v<I> && ...), "indices are integers");
    const std::int64_t idx[] = {static_cast<std::int64_t>(index)..., 0};
    if (sizeof...(I) != shape_.size()) throw Error("StridedView: wrong number of indices");
    return at(std::span<const std::int64_t>(idx, sizeof...(I)));
  }
  T& at(std::span<const std::int64_t> index) const {
    if (index.size() != shape_.size()) throw Error("StridedView: wrong number of indices");
    std::int64_t off = 0;
    for (std::size_t a = 0; a < index.size(); ++a) {
      if (index[a] < 0 || index[a] >= shape_[a]) throw Error("StridedView: index out of range");
      off += index[a] * strides_[a];
    }
    return *reinterpret_cast<T*>(first_ + off);
  }
  /// Element `flat` in C order.
  T& operator[](std::int64_t flat) const {
    if (flat < 0 || flat >= size()) throw Error("StridedView: flat index out of range");
    std::int64_t off = 0;
    for (std::size_t a = shape_.size(); a-- > 0;) {
      off += (flat % shape_[a]) * strides_[a];
      flat /= shape_[a];
    }
    return *reinterpret_cast<T*>(first_ + off);
  }
  /// Calls f(T&) for every element in C order.
  template <class F>
  void for_each(F&& f) const {
    if (size() == 0) return;
    const std::size_t nd = shape_.size();
    if (nd == 0) { f(*reinterpret_cast<T*>(first_)); return; }
    std::vector<std::int64_t> idx(nd, 0);
    byte_pointer p = first_;
    const std::int64_t inner = shape_[nd - 1], inner_stride = strides_[nd - 1];
    while (true) {
      byte_pointer q = p;
      for (std::int64_t i = 0; i < inner; ++i, q += inner_stride) f(*reinterpret_cast<T*>(q));
      std::size_t a = nd - 1;
      while (true) {
        if (a == 0) return;
        --a;
        p += strides_[a];
        if (++idx[a] < shape_[a]) break;
        p -= strides_[a] * shape_[a];
        idx[a] = 0;
      }
    }
  }

 private:
  byte_pointer first_;
  std::vector<std::int64_t> shape_, strides_;
};

// ---------------------------------------------------------------- templates

namespace detail {
template <class>
inline constexpr bool unsupported_element_type = false;
/// numpy kind of each supported C++ element type.
template <class Element>
constexpr char kind_of() {
  using T = std::remove_cv_t<Element>;
  if constexpr (std::is_same_v<T, bool>) return 'b';
  else if constexpr (std::is_integral_v<T>) return std::is_signed_v<T> ? 'i' : 'u';
  else if constexpr (std::is_same_v<T, float16> || std::is_same_v<T, float> || std::is_same_v<T, double>) return 'f';
  else if constexpr (std::is_same_v<T, std::complex<float>> || std::is_same_v<T, std::complex<double>>) return 'c';
  else if constexpr (std::is_same_v<T, datetime64>) return 'M';
  else if constexpr (std::is_same_v<T, timedelta64>) return 'm';
  else static_assert(unsupported_element_type<T>, "no numpy dtype for this C++ type");
}
DType make_dtype(char kind, std::uint32_t itemsize, std::string_view unit);
}  // namespace detail

template <class T>
DType DType::of(std::string_view unit) {
  using U = std::remove_cv_t<T>;
  return detail::make_dtype(detail::kind_of<U>(), sizeof(U), unit);
}

template <class T>
NDArray NDArray::take(std::vector<T>&& values, std::vector<std::int64_t> shape, Order order) {
  auto owner = std::make_shared<std::vector<T>>(std::move(values));
  void* p = owner->data();
  std::size_t n = owner->size() * sizeof(T);
  return from_buffer(Buffer::take(std::move(owner), p, n, /*readonly=*/false), DType::of<T>(), std::move(shape), order);
}

template <class T>
std::span<const T> NDArray::as() const {
  check_access(detail::kind_of<T>(), sizeof(T), alignof(T), /*need_contiguous=*/true, /*need_writable=*/false);
  return {reinterpret_cast<const T*>(first_element()), static_cast<std::size_t>(size())};
}
template <class T>
std::span<T> NDArray::as_mutable() const {
  check_access(detail::kind_of<T>(), sizeof(T), alignof(T), true, true);
  return {reinterpret_cast<T*>(data.mutable_data() + offset), static_cast<std::size_t>(size())};
}
template <class T>
StridedView<const T> NDArray::view() const {
  check_access(detail::kind_of<T>(), sizeof(T), alignof(T), false, false);
  return StridedView<const T>(first_element(), shape, strides);
}
template <class T>
StridedView<T> NDArray::mutable_view() const {
  check_access(detail::kind_of<T>(), sizeof(T), alignof(T), false, true);
  return StridedView<T>(data.mutable_data() + offset, shape, strides);
}

}  // namespace picklewire
