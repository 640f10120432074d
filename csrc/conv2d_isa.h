// Entry points of the per-ISA builds of conv2d_impl.h and winograd_impl.h (internal).
// `generic` is compiled for baseline x86-64 (float and double); `avx2` and `avx512` hold float
// builds that may only be called when pydl::selected_isa() allows them.
#pragma once

#include "conv2d.h"

namespace pydl {

#define PYDL_DECLARE_CONV_ISA(NS)                                                                          \
  namespace NS {                                                                                          \
  template <typename T>                                                                                   \
  void conv2d_forward_direct_impl(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act); \
  template <typename T>                                                                                   \
  void conv2d_forward_im2col_impl(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act); \
  template <typename T>                                                                                   \
  void conv2d_backward_input_direct_impl(T* dx, const T* dy, const T* w, const Conv2dGeom& g);            \
  template <typename T>                                                                                   \
  void conv2d_backward_input_im2col_impl(T* dx, const T* dy, const T* w, const Conv2dGeom& g);            \
  template <typename T>                                                                                   \
  void conv2d_backward_weight_im2col_impl(T* dw, T* db, const T* dy, const T* x, const Conv2dGeom& g);    \
  template <typename T>                                                                                   \
  void winograd_forward_impl(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, int m,         \
                             ConvAct act, bool flip_transpose);                                          \
  }

PYDL_DECLARE_CONV_ISA(generic)
PYDL_DECLARE_CONV_ISA(avx2)
PYDL_DECLARE_CONV_ISA(avx512)

#undef PYDL_DECLARE_CONV_ISA

}  // namespace pydl
