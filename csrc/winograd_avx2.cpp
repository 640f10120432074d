// avx2 build of the Winograd loops (float); called only when selected_isa() allows it.
// Register tiles: the table in winograd_impl.h (wg_tile).
#define PYDL_KNS avx2
#include "winograd_impl.h"

namespace pydl {
template void avx2::winograd_forward_impl<float>(float*, const float*, const float*, const float*,
                                                  const Conv2dGeom&, int, ConvAct, bool);
}  // namespace pydl
