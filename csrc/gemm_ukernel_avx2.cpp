// AVX2 + FMA SGEMM micro-kernel: a 6 x 16 tile of C in 12 ymm accumulators (two ymm per row).
//
//   C[i, j] = alpha * sum_p a(i, p) * b(p, j) + beta * C[i, j]      (beta == 0: C not read)
//
// Each step p loads one row of the B micro-panel (two ymm) and broadcasts the 6 values of a(., p):
// 12 FMAs, 2 loads, 6 broadcasts; 12 accumulators + 2 B registers + 1 broadcast fit the 16 ymm.
// Operand layouts: see gemm_kernels.h. Called only when selected_isa() allows avx2.
#include <immintrin.h>

#include "gemm_kernels.h"

namespace pydl {
namespace gemm_detail {
namespace {

constexpr int MR = kSgemmAvx2.MR;
constexpr int NV = kSgemmAvx2.NR / 8;  // ymm per row of the tile
static_assert(kSgemmAvx2.NR % 8 == 0, "NR must be a multiple of the ymm width");

template <bool kPacked>
__attribute__((always_inline)) inline void tile(index_t k, const float* a, index_t rsa, index_t csa,
                                                const float* b, index_t rsb, float* c, index_t ldc, float alpha,
                                                float beta) {
  if constexpr (kPacked) {
    rsa = 1;
    csa = MR;
    rsb = 8 * NV;
  }
  for (int i = 0; i < MR; ++i) {
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 8 * NV - 1), _MM_HINT_T0);
  }
  __m256 acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_setzero_ps();

#pragma GCC unroll 4
  for (index_t p = 0; p < k; ++p) {
    __m256 bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = _mm256_loadu_ps(b + 8 * v);
    for (int i = 0; i < MR; ++i) {
      const __m256 ai = _mm256_broadcast_ss(a + i * rsa);
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
    }
    a += csa;
    b += rsb;
  }

  const __m256 va = _mm256_set1_ps(alpha);
  if (beta == 0.0f) {
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) _mm256_storeu_ps(c + i * ldc + 8 * v, _mm256_mul_ps(acc[i][v], va));
  } else {
    const __m256 vb = _mm256_set1_ps(beta);
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) {
        float* ci = c + i * ldc + 8 * v;
        _mm256_storeu_ps(ci, _mm256_fmadd_ps(acc[i][v], va, _mm256_mul_ps(vb, _mm256_loadu_ps(ci))));
      }
  }
}

}  // namespace

void sgemm_packed_avx2(index_t k, const float* a, const float* b, float* c, index_t ldc, float alpha,
                       float beta) {
  tile<true>(k, a, 1, MR, b, 8 * NV, c, ldc, alpha, beta);
}

void sgemm_direct_avx2(index_t k, const float* a, index_t rsa, index_t csa, const float* b, index_t rsb,
                       float* c, index_t ldc, float alpha, float beta) {
  tile<false>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta);
}

}  // namespace gemm_detail
}  // namespace pydl
