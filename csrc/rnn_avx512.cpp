// The recurrent cells (rnn_cell.h) compiled for AVX-512, with an 8 x 32 register-blocked
// per-step product (16 zmm accumulators). Called only when pydl::selected_isa() allows it.
#include <immintrin.h>

#define PYDL_RNN_NS rnn_avx512
#include "rnn_cell.h"

namespace pydl {
namespace rnn_avx512 {

constexpr int kMR = 8, kNR = 32;

// C[M, 32] (= or +=) A[M, k] Bp[k, 32]: a row of A broadcast against two zmm of the panel.
template <int M>
static void tile_m(index_t k, const float* A, index_t lda, const float* Bp, float* C, index_t ldc,
                   bool accumulate) {
  __m512 c0[M], c1[M];
  for (int i = 0; i < M; ++i) c0[i] = c1[i] = _mm512_setzero_ps();
  for (index_t p = 0; p < k; ++p) {
    const __m512 b0 = _mm512_load_ps(Bp + p * kNR), b1 = _mm512_load_ps(Bp + p * kNR + 16);
    for (int i = 0; i < M; ++i) {
      const __m512 a = _mm512_set1_ps(A[i * lda + p]);
      c0[i] = _mm512_fmadd_ps(a, b0, c0[i]);
      c1[i] = _mm512_fmadd_ps(a, b1, c1[i]);
    }
  }
  for (int i = 0; i < M; ++i) {
    float* c = C + i * ldc;
    if (accumulate) {
      c0[i] = _mm512_add_ps(_mm512_loadu_ps(c), c0[i]);
      c1[i] = _mm512_add_ps(_mm512_loadu_ps(c + 16), c1[i]);
    }
    _mm512_storeu_ps(c, c0[i]);
    _mm512_storeu_ps(c + 16, c1[i]);
  }
}

static void tile(index_t m, index_t k, const float* A, index_t lda, const float* Bp, float* C, index_t ldc,
                 bool accumulate) {
  switch (m) {
    case 8: tile_m<8>(k, A, lda, Bp, C, ldc, accumulate); break;
    case 7: tile_m<7>(k, A, lda, Bp, C, ldc, accumulate); break;
    case 6: tile_m<6>(k, A, lda, Bp, C, ldc, accumulate); break;
    case 5: tile_m<5>(k, A, lda, Bp, C, ldc, accumulate); break;
    case 4: tile_m<4>(k, A, lda, Bp, C, ldc, accumulate); break;
    case 3: tile_m<3>(k, A, lda, Bp, C, ldc, accumulate); break;
    case 2: tile_m<2>(k, A, lda, Bp, C, ldc, accumulate); break;
    case 1: tile_m<1>(k, A, lda, Bp, C, ldc, accumulate); break;
    default: break;
  }
}

}  // namespace rnn_avx512

namespace detail {

const RnnRowKernels<float>* rnn_rows_avx512() {
  return rnn_avx512::make_table<float, rnn_avx512::kMR, rnn_avx512::kNR>(rnn_avx512::tile);
}

}  // namespace detail
}  // namespace pydl
