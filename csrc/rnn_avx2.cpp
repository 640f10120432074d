// The recurrent cells (rnn_cell.h) compiled for AVX2 + FMA, with a 6 x 16 register-blocked
// per-step product (12 ymm accumulators). Called only when pydl::selected_isa() allows it.
#include <immintrin.h>

#define PYDL_RNN_NS rnn_avx2
#include "rnn_cell.h"

namespace pydl {
namespace rnn_avx2 {

constexpr int kMR = 6, kNR = 16;

// C[M, 16] (= or +=) A[M, k] Bp[k, 16]: a row of A broadcast against two ymm of the panel.
template <int M>
static void tile_m(index_t k, const float* A, index_t lda, const float* Bp, float* C, index_t ldc,
                   bool accumulate) {
  __m256 c0[M], c1[M];
  for (int i = 0; i < M; ++i) c0[i] = c1[i] = _mm256_setzero_ps();
  for (index_t p = 0; p < k; ++p) {
    const __m256 b0 = _mm256_load_ps(Bp + p * kNR), b1 = _mm256_load_ps(Bp + p * kNR + 8);
    for (int i = 0; i < M; ++i) {
      const __m256 a = _mm256_set1_ps(A[i * lda + p]);
      c0[i] = _mm256_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm256_fmadd_ps(a, b1, c1[i]);
    }
  }
  for (int i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (accumulate) {
      c0[i] = _mm256_add_ps(_mm256_loadu_ps(c), c0[i]);
      c1[i] = _mm256_add_ps(_mm256_loadu_ps(c + 8), c1[i]);
    }
    _mm256_storeu_ps(c, c0[i]);
    _mm256_storeu_ps(c + 8, c1[i]);
  }
}

static void tile(index_t m, index_t k, const float* A, index_t lda, const float* Bp, float* C, index_t ldc,
                 bool accumulate) {
  switch (m) {
    case 6: tile_m<6>(k, A, lda, Bp, C, ldc, accumulate); break;
    case 5: tile_m<5>(k, A, lda, Bp, C, ldc, accumulate); break;
    case 4: tile_m<4>(k, A, lda, Bp, C, ldc, accumulate); break;
    case 3: tile_m<3>(k, A, lda, Bp, C, ldc, accumulate); break;
    case 2: tile_m<2>(k, A, lda, Bp, C, ldc, accumulate); break;
    case 1: tile_m<1>(k, A, lda, Bp, C, ldc, accumulate); break;
    default: break;
  }
}

}  // namespace rnn_avx2

namespace detail {

const RnnRowKernels<float>* rnn_rows_avx2() {
  return rnn_avx2::make_table<float, rnn_avx2::kMR, rnn_avx2::kNR>(rnn_avx2::tile);
}

}  // namespace detail
}  // namespace pydl
