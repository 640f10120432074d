// Portable build of the Winograd loops (float and double) and the per-ISA dispatch.
#define PYDL_KNS generic
#include "winograd_impl.h"
#undef PYDL_KNS

#include "conv2d_isa.h"
#include "cpu_features.h"
#include "winograd.h"

namespace pydl {

template void generic::winograd_forward_impl<float>(float*, const float*, const float*, const float*,
                                                    const Conv2dGeom&, int, ConvAct, bool);
template void generic::winograd_forward_impl<double>(double*, const double*, const double*, const double*,
                                                     const Conv2dGeom&, int, ConvAct, bool);

bool winograd_applicable(const Conv2dGeom& g) {
  return g.R == 3 && g.S == 3 && g.sh == 1 && g.sw == 1 && g.dh == 1 && g.dw == 1;
}

namespace {

template <typename T>
void winograd_dispatch(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, int m, ConvAct act,
                       bool flip) {
  PYDL_CHECK(winograd_applicable(g), "conv2d", "winograd needs a 3x3 filter, stride 1 and dilation 1");
  PYDL_CHECK(m == 2 || m == 4, "conv2d", "winograd tile size must be 2 or 4, got ", m);
  if (g.N == 0) return;
  if constexpr (sizeof(T) == 4) {
#if defined(PYDL_X86)
    const Isa isa = selected_isa();
    if (isa == Isa::avx512) return avx512::winograd_forward_impl<float>(y, x, w, b, g, m, act, flip);
    if (isa == Isa::avx2) return avx2::winograd_forward_impl<float>(y, x, w, b, g, m, act, flip);
#endif
  }
  generic::winograd_forward_impl<T>(y, x, w, b, g, m, act, flip);
}

}  // namespace

template <typename T>
void conv2d_forward_winograd(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, int m, ConvAct act) {
  winograd_dispatch<T>(y, x, w, b, g, m, act, false);
}

template <typename T>
void conv2d_backward_input_winograd(T* dx, const T* dy, const T* w, const Conv2dGeom& g, int m) {
  PYDL_CHECK(winograd_applicable(g), "conv2d_backward", "winograd needs a 3x3 filter, stride 1 and dilation 1");
  const Conv2dGeom t = backward_input_as_forward(g);  // 3x3: padding 2 - p
  winograd_dispatch<T>(dx, dy, w, nullptr, t, m, ConvAct::none, true);
}

template void conv2d_forward_winograd<float>(float*, const float*, const float*, const float*, const Conv2dGeom&,
                                             int, ConvAct);
template void conv2d_forward_winograd<double>(double*, const double*, const double*, const double*,
                                              const Conv2dGeom&, int, ConvAct);
template void conv2d_backward_input_winograd<float>(float*, const float*, const float*, const Conv2dGeom&, int);
template void conv2d_backward_input_winograd<double>(double*, const double*, const double*, const Conv2dGeom&, int);

}  // namespace pydl
