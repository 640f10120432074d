// avx512 build of the convolution loops (float); called only when selected_isa() allows it.
#define PYDL_KNS avx512
#include "conv2d_impl.h"

namespace pydl {
namespace avx512 {
template void conv2d_forward_direct_impl<float>(float*, const float*, const float*, const float*, const Conv2dGeom&,
                                                ConvAct);
template void conv2d_forward_im2col_impl<float>(float*, const float*, const float*, const float*, const Conv2dGeom&,
                                                ConvAct);
template void conv2d_backward_input_direct_impl<float>(float*, const float*, const float*, const Conv2dGeom&);
template void conv2d_backward_input_im2col_impl<float>(float*, const float*, const float*, const Conv2dGeom&);
template void conv2d_backward_weight_im2col_impl<float>(float*, float*, const float*, const float*,
                                                        const Conv2dGeom&);
}  // namespace avx512
}  // namespace pydl
