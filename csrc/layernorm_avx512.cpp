// Layer normalisation rows (layernorm_impl.h) on 16-lane zmm vectors (AVX-512).
#include <immintrin.h>

#define PYDL_LN_NS ln_avx512
#include "layernorm_impl.h"

namespace pydl {
namespace detail {
const LayerNormKernels<float>* layernorm_kernels_avx512() { return ln_avx512::make_kernels<float>(); }
}  // namespace detail
}  // namespace pydl
