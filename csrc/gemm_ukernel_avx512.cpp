// AVX-512 SGEMM micro-kernel: a 12 x 32 tile of C in 24 zmm accumulators (two zmm per row).
//
//   C[i, j] = alpha * sum_p a(i, p) * b(p, j) + beta * C[i, j]      (beta == 0: C not read)
//
// Each step p loads one row of the B micro-panel (32 floats, two zmm) and broadcasts the 12 values
// of a(., p) into fused multiply-adds (the broadcast folds into the FMA's memory operand), so a step
// is 24 FMAs for 2 vector loads and 12 broadcasts. Operand layouts: see gemm_kernels.h.
// Only this file and gemm_ukernel_avx2.cpp use intrinsics; gemm.cpp calls these only when
// selected_isa() is avx512. Nothing here is inline-shared with other files (no ISA leaks via ODR).
#include <immintrin.h>

#include "gemm_kernels.h"

namespace pydl {
namespace gemm_detail {
namespace {

constexpr int MR = kSgemmAvx512.MR;
constexpr int NV = kSgemmAvx512.NR / 16;  // zmm per row of the tile
static_assert(kSgemmAvx512.NR % 16 == 0, "NR must be a multiple of the zmm width");

template <bool kPacked>
__attribute__((always_inline)) inline void tile(index_t k, const float* a, index_t rsa, index_t csa,
                                                const float* b, index_t rsb, float* c, index_t ldc, float alpha,
                                                float beta) {
  if constexpr (kPacked) {
    rsa = 1;
    csa = MR;
    rsb = 16 * NV;
  }
  for (int i = 0; i < MR; ++i) {  // C rows are needed at the end: start fetching them now
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 16 * NV - 1), _MM_HINT_T0);
  }
  __m512 acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();

#pragma GCC unroll 4
  for (index_t p = 0; p < k; ++p) {
    __m512 bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = _mm512_loadu_ps(b + 16 * v);
    for (int i = 0; i < MR; ++i) {
      const __m512 ai = _mm512_set1_ps(a[i * rsa]);
      for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
    }
    a += csa;
    b += rsb;
  }

  const __m512 va = _mm512_set1_ps(alpha);
  if (beta == 0.0f) {
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) _mm512_storeu_ps(c + i * ldc + 16 * v, _mm512_mul_ps(acc[i][v], va));
  } else {
    const __m512 vb = _mm512_set1_ps(beta);
    for (int i = 0; i < MR; ++i)
      for (int v = 0; v < NV; ++v) {
        float* ci = c + i * ldc + 16 * v;
        _mm512_storeu_ps(ci, _mm512_fmadd_ps(acc[i][v], va, _mm512_mul_ps(vb, _mm512_loadu_ps(ci))));
      }
  }
}

}  // namespace

void sgemm_packed_avx512(index_t k, const float* a, const float* b, float* c, index_t ldc, float alpha,
                         float beta) {
  tile<true>(k, a, 1, MR, b, 16 * NV, c, ldc, alpha, beta);
}

void sgemm_direct_avx512(index_t k, const float* a, index_t rsa, index_t csa, const float* b, index_t rsb,
                         float* c, index_t ldc, float alpha, float beta) {
  tile<false>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta);
}

}  // namespace gemm_detail
}  // namespace pydl
