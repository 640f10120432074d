// The attention kernels (attention_impl.h) compiled for AVX-512: the 8 x 32 register tile
// (kAttnTileAvx512: 16 zmm accumulators, 2 zmm of the B panel, 1 broadcast) and 16-lane softmax
// rows. Called only when pydl::selected_isa() allows it.
#include <immintrin.h>

#define PYDL_ATTN_NS attn_avx512
#define PYDL_ATTN_TILE detail::kAttnTileAvx512
#include "attention_impl.h"

namespace pydl {
namespace detail {

const AttnKernels* attention_kernels_avx512() { return attn_avx512::make_kernels(); }

}  // namespace detail
}  // namespace pydl
