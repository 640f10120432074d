// Layer normalisation rows (layernorm_impl.h) on 8-lane ymm vectors (AVX2 + FMA).
#include <immintrin.h>

#define PYDL_LN_NS ln_avx2
#include "layernorm_impl.h"

namespace pydl {
namespace detail {
const LayerNormKernels<float>* layernorm_kernels_avx2() { return ln_avx2::make_kernels<float>(); }
}  // namespace detail
}  // namespace pydl
