// AVX2 + FMA SGEMM micro-kernel: a 6 x 16 tile of C in 12 ymm accumulators (two ymm per row).
//
//   C[i, j] = alpha * sum_p a(i, p) * b(p, j) + beta * C[i, j]      (beta == 0: C not read)
//
// Each step p loads one row of the B micro-panel (two ymm) and broadcasts the 6 values of a(., p):
// 12 FMAs, 2 loads, 6 broadcasts; 12 accumulators + 2 B registers + 1 broadcast fit the 16 ymm.
// Operand strides: see gemm_kernels.h. Called only when selected_isa() allows avx2.
#include <immintrin.h>

#include "gemm_kernels.h"

namespace pydl {
namespace gemm_detail {
namespace {

constexpr int MR = kSgemmAvx2.MR;
constexpr int NV = kSgemmAvx2.NR / 8;  // ymm per row of the tile
static_assert(kSgemmAvx2.NR % 8 == 0, "NR must be a multiple of the ymm width");

// The 12 accumulators are named variables rather than an array: with only 16 ymm registers GCC
// otherwise keeps an accumulator array in memory. ROWS < MR computes only the first ROWS rows
// (the other accumulators are dead code): the last row panel of M = 64 has 4 rows, and computing
// 6 there wasted 3% of the product's FMAs.
template <int ROWS>
__attribute__((always_inline)) inline void tile(index_t k, const float* a, index_t rsa, index_t csa,
                                                const float* b, index_t rsb, float* c, index_t ldc, float alpha,
                                                float beta) {
  static_assert(MR == 6 && NV == 2, "this kernel is written out for a 6 x 16 tile");
  static_assert(ROWS >= 1 && ROWS <= MR, "rows of the tile");
  for (int i = 0; i < ROWS; ++i) {  // C rows are needed at the end: start fetching them now
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + 15), _MM_HINT_T0);
  }
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00;
  __m256 c30 = c00, c31 = c00, c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  for (index_t p = 0; p < k; ++p) {
    const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
    __m256 ai = _mm256_broadcast_ss(a);
    c00 = _mm256_fmadd_ps(ai, b0, c00);
    c01 = _mm256_fmadd_ps(ai, b1, c01);
    if constexpr (ROWS > 1) {
      ai = _mm256_broadcast_ss(a + rsa);
      c10 = _mm256_fmadd_ps(ai, b0, c10);
      c11 = _mm256_fmadd_ps(ai, b1, c11);
    }
    if constexpr (ROWS > 2) {
      ai = _mm256_broadcast_ss(a + 2 * rsa);
      c20 = _mm256_fmadd_ps(ai, b0, c20);
      c21 = _mm256_fmadd_ps(ai, b1, c21);
    }
    if constexpr (ROWS > 3) {
      ai = _mm256_broadcast_ss(a + 3 * rsa);
      c30 = _mm256_fmadd_ps(ai, b0, c30);
      c31 = _mm256_fmadd_ps(ai, b1, c31);
    }
    if constexpr (ROWS > 4) {
      ai = _mm256_broadcast_ss(a + 4 * rsa);
      c40 = _mm256_fmadd_ps(ai, b0, c40);
      c41 = _mm256_fmadd_ps(ai, b1, c41);
    }
    if constexpr (ROWS > 5) {
      ai = _mm256_broadcast_ss(a + 5 * rsa);
      c50 = _mm256_fmadd_ps(ai, b0, c50);
      c51 = _mm256_fmadd_ps(ai, b1, c51);
    }
    a += csa;
    b += rsb;
  }

  const __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
  const bool read_c = beta != 0.0f;
  auto store = [&](float* ci, __m256 acc) {
    const __m256 r = _mm256_mul_ps(acc, va);
    _mm256_storeu_ps(ci, read_c ? _mm256_fmadd_ps(vb, _mm256_loadu_ps(ci), r) : r);
  };
  store(c, c00);
  store(c + 8, c01);
  if constexpr (ROWS > 1) {
    store(c + ldc, c10);
    store(c + ldc + 8, c11);
  }
  if constexpr (ROWS > 2) {
    store(c + 2 * ldc, c20);
    store(c + 2 * ldc + 8, c21);
  }
  if constexpr (ROWS > 3) {
    store(c + 3 * ldc, c30);
    store(c + 3 * ldc + 8, c31);
  }
  if constexpr (ROWS > 4) {
    store(c + 4 * ldc, c40);
    store(c + 4 * ldc + 8, c41);
  }
  if constexpr (ROWS > 5) {
    store(c + 5 * ldc, c50);
    store(c + 5 * ldc + 8, c51);
  }
}

}  // namespace

// Tiles with all 16 columns go straight to C, computing only their mr rows; an edge tile with
// fewer columns is computed into a scratch tile, then its valid mr x nr part is merged into C
// with masked loads and stores.
void sgemm_kernel_avx2(index_t k, const float* a, index_t rsa, index_t csa, const float* b, index_t rsb,
                       float* c, index_t ldc, float alpha, float beta, int mr, int nr) {
  if (nr == 16) {
    switch (mr) {
      case 6: tile<6>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta); return;
      case 5: tile<5>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta); return;
      case 4: tile<4>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta); return;
      case 3: tile<3>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta); return;
      case 2: tile<2>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta); return;
      default: tile<1>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta); return;
    }
  }
  alignas(32) float t[MR * 16];
  tile<MR>(k, a, rsa, csa, b, rsb, t, 16, alpha, 0.0f);
  // Columns [0, nr) of each row, as masked loads and stores of the row's two halves.
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr), lane);
  const __m256i m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(nr - 8), lane);
  const __m256 vb = _mm256_set1_ps(beta);
  for (int i = 0; i < mr; ++i) {
    float* ci = c + i * ldc;
    __m256 r0 = _mm256_load_ps(t + i * 16), r1 = _mm256_load_ps(t + i * 16 + 8);
    if (beta != 0.0f) {
      r0 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(ci, m0), r0);
      r1 = _mm256_fmadd_ps(vb, _mm256_maskload_ps(ci + 8, m1), r1);
    }
    _mm256_maskstore_ps(ci, m0, r0);
    _mm256_maskstore_ps(ci + 8, m1, r1);
  }
}

}  // namespace gemm_detail
}  // namespace pydl
