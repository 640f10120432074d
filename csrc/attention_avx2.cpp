// The attention kernels (attention_impl.h) compiled for AVX2 + FMA: the 6 x 16 register tile
// (kAttnTileAvx2: 12 ymm accumulators, 2 ymm of the B panel, 1 broadcast) and 8-lane softmax rows.
// Called only when pydl::selected_isa() allows it.
#include <immintrin.h>

#define PYDL_ATTN_NS attn_avx2
#define PYDL_ATTN_TILE detail::kAttnTileAvx2
#include "attention_impl.h"

namespace pydl {
namespace detail {

const AttnKernels* attention_kernels_avx2() { return attn_avx2::make_kernels(); }

}  // namespace detail
}  // namespace pydl
