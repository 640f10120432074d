// avx512 build of the pooling micro-kernels (float); called only when selected_isa() allows it.
#define PYDL_KNS avx512
#include "pool2d_impl.h"

namespace pydl {
namespace avx512 {
PYDL_POOL_DEFINE_ENTRY_POINTS
}  // namespace avx512
}  // namespace pydl
