// pydl kernel conventions, shared by every csrc/ file.
//
// Shape letters (used in every kernel signature and comment):
//   N batch, C input channels / features, K output channels / units,
//   H W height and width, R S filter height and width, T time steps,
//   M N K also name the GEMM dimensions (C[M,N] = A[M,K] * B[K,N]) inside gemm.*.
// Layout: row-major (C order), images NCHW. Gradients carry a `d` prefix; each kernel says
// whether it writes (=) or accumulates (+=) them.
// Argument order: outputs, then caches, then inputs, then sizes.
//
// Errors: PYDL_CHECK throws std::invalid_argument("[op] message"), which pybind11 turns
// into ValueError. Kernels never abort on user input, and all checks run before any OpenMP
// region (an exception escaping a parallel region would terminate the process).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <new>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <type_traits>

namespace pydl {

using index_t = std::int64_t;

// Error messages are built by appending to a std::string: numbers through std::to_string
// (integers) and snprintf("%g") (floating point, what an ostream prints by default), so raising
// an error never touches iostream locale machinery. Other types fall back to an ostream.
namespace detail {
inline void append(std::string& s, const std::string& v) { s += v; }
inline void append(std::string& s, const char* v) { s += v; }
inline void append(std::string& s, char v) { s += v; }
inline void append(std::string& s, bool v) { s += v ? '1' : '0'; }
template <typename T>
void append(std::string& s, const T& v) {
  if constexpr (std::is_integral_v<T>) {
    s += std::to_string(v);
  } else if constexpr (std::is_floating_point_v<T>) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%g", static_cast<double>(v));
    s += buf;
  } else if constexpr (std::is_convertible_v<const T&, std::string_view>) {
    s += std::string_view(v);
  } else {
    std::ostringstream os;
    os << v;
    s += os.str();
  }
}
}  // namespace detail

template <typename... Args>
std::string str_cat(const Args&... args) {
  std::string s;
  (detail::append(s, args), ...);
  return s;
}

#define PYDL_CHECK(cond, op, ...)                                                   \
  do {                                                                              \
    if (!(cond)) throw std::invalid_argument(::pydl::str_cat("[", op, "] ", __VA_ARGS__)); \
  } while (0)

// 64-byte aligned buffers (one cache line, one zmm register).
constexpr std::size_t kAlign = 64;

struct AlignedFree {
  void operator()(void* p) const noexcept { std::free(p); }
};

template <typename T>
using aligned_ptr = std::unique_ptr<T[], AlignedFree>;

template <typename T>
aligned_ptr<T> aligned_alloc_array(std::size_t count) {
  std::size_t bytes = (count * sizeof(T) + kAlign - 1) / kAlign * kAlign;
  if (bytes == 0) bytes = kAlign;
  void* p = std::aligned_alloc(kAlign, bytes);
  if (!p) throw std::bad_alloc();
  return aligned_ptr<T>(static_cast<T*>(p));
}

}  // namespace pydl
