// avx2 build of the Winograd loops (float); called only when selected_isa() allows it.
#define PYDL_KNS avx2
#define PYDL_WG_KB 4  // register block: 4 output channels x 1 vector(s) of tiles
#define PYDL_WG_VECTOR_TRANSFORMS 1  // shuffle-based float transforms
#define PYDL_WG_TV 1
#include "winograd_impl.h"

namespace pydl {
template void avx2::winograd_forward_impl<float>(float*, const float*, const float*, const float*,
                                                  const Conv2dGeom&, int, ConvAct, bool);
}  // namespace pydl
