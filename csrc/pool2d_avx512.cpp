// avx512 build of the 2x2 max-pooling loop (float); called only when selected_isa() allows it.
#define PYDL_KNS avx512
#include "pool2d_impl.h"

namespace pydl {
namespace avx512 {
void maxpool2x2_plane_f32(float* y, std::int32_t* am, const float* x, index_t W, index_t P, index_t Q) {
  maxpool2x2_rows_f32(y, am, x, W, Q, 0, P);
}
}  // namespace avx512
}  // namespace pydl
