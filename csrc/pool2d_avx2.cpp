// avx2 build of the pooling micro-kernels (float); called only when selected_isa() allows it.
#define PYDL_KNS avx2
#include "pool2d_impl.h"

namespace pydl {
namespace avx2 {
PYDL_POOL_DEFINE_ENTRY_POINTS
}  // namespace avx2
}  // namespace pydl
