// avx512 build of the Winograd loops (float); called only when selected_isa() allows it.
#define PYDL_KNS avx512
#define PYDL_WG_KB 8  // register block: 8 output channels x 2 vector(s) of tiles
#define PYDL_WG_VECTOR_TRANSFORMS 1  // shuffle-based float transforms
#define PYDL_WG_TV 2
// F(4x4) (large images): 4 output channels x 6 vectors, 24 zmm accumulators and 6 tile vectors
// loaded per 4 broadcasts (N32 C64 56x56: 1.1-1.3x faster than 8 x 2; on 14x14 F(2x2) 8 x 2 is
// 6% faster).
#define PYDL_WG_KB_F4 4
#define PYDL_WG_TV_F4 6
#include "winograd_impl.h"

namespace pydl {
template void avx512::winograd_forward_impl<float>(float*, const float*, const float*, const float*,
                                                  const Conv2dGeom&, int, ConvAct, bool);
}  // namespace pydl
