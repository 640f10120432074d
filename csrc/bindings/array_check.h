// Strict array access for bindings.
//
// Bindings take plain py::array and check dtype, layout and shape here instead of using
// py::array_t<..., forcecast>: a forcecast silently copies a float64 or strided argument, and
// an in-place update (an optimizer step, an `out=` argument) would then land in the copy and
// be lost. The Python layer (pydl/ops) converts inputs on purpose; the C++ side only accepts
// exactly what it will read or write. Every check throws std::invalid_argument -> ValueError.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "common.h"

namespace pydl {
namespace py = pybind11;

inline std::string shape_str(const py::array& a) {
  std::string s = "(";
  for (py::ssize_t i = 0; i < a.ndim(); ++i) s += (i ? ", " : "") + std::to_string(a.shape(i));
  if (a.ndim() == 1) s += ",";
  return s + ")";
}

template <typename T>
inline const char* dtype_name() {
  return sizeof(T) == 4 ? "float32" : "float64";
}

template <typename T>
inline void check_array(const py::array& a, const char* op, const char* name, py::ssize_t ndim = -1) {
  PYDL_CHECK(py::isinstance<py::array_t<T>>(a) && a.dtype().is(py::dtype::of<T>()), op, name,
             " must have dtype ", dtype_name<T>(), ", got ", std::string(py::str(a.dtype())));
  PYDL_CHECK(a.flags() & py::array::c_style, op, name, " must be C-contiguous");
  PYDL_CHECK(reinterpret_cast<std::uintptr_t>(a.data()) % alignof(T) == 0, op, name,
             " must be aligned to its item size (", sizeof(T), " bytes)");
  if (ndim >= 0)
    PYDL_CHECK(a.ndim() == ndim, op, name, " has ", a.ndim(), " dims ", shape_str(a), ", expected ", ndim);
}

template <typename T>
inline const T* in_ptr(const py::array& a, const char* op, const char* name, py::ssize_t ndim = -1) {
  check_array<T>(a, op, name, ndim);
  return static_cast<const T*>(a.data());
}

template <typename T>
inline T* out_ptr(py::array& a, const char* op, const char* name, py::ssize_t ndim = -1) {
  check_array<T>(a, op, name, ndim);
  PYDL_CHECK(a.writeable(), op, name, " must be writeable");
  return static_cast<T*>(a.mutable_data());
}

inline void check_shape(const py::array& a, const std::vector<py::ssize_t>& shape, const char* op,
                        const char* name) {
  bool ok = a.ndim() == static_cast<py::ssize_t>(shape.size());
  for (std::size_t i = 0; ok && i < shape.size(); ++i) ok = a.shape(i) == shape[i];
  if (!ok) {
    std::string want = "(";
    for (std::size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
    if (shape.size() == 1) want += ",";
    want += ")";
    PYDL_CHECK(false, op, name, " has shape ", shape_str(a), ", expected ", want);
  }
}

inline bool is_float32(const py::array& a) { return a.dtype().is(py::dtype::of<float>()); }
inline bool is_float64(const py::array& a) { return a.dtype().is(py::dtype::of<double>()); }

}  // namespace pydl
