// AVX-512 SGEMM micro-kernel: a 12 x 32 tile of C in 24 zmm accumulators (two zmm per row).
//
//   C[i, j] = alpha * sum_p a(i, p) * b(p, j) + beta * C[i, j]      (beta == 0: C not read)
//
// Each step p loads one row of the B micro-panel (32 floats, two zmm) and broadcasts the 12 values
// of a(., p) into fused multiply-adds, so a step is 24 FMAs for 2 vector loads and 12 broadcasts.
// Edge tiles need no scratch tile: a partial column count is written through AVX-512 masks, and a
// partial row count runs a 4- or 8-row variant of the same loop (rows are padded to 4 at most).
// Operand strides (packed panels or A and B in place): see gemm_kernels.h. With strides known
// only at run time the loop measured within 1% of one specialised for packed panels.
// Only this file and gemm_ukernel_avx2.cpp use intrinsics; gemm.cpp calls these only when
// selected_isa() is avx512. Everything here has internal linkage, so no function compiled with
// AVX-512 can be picked by the linker for a baseline caller.
#include <immintrin.h>

#include "gemm_kernels.h"

namespace pydl {
namespace gemm_detail {
namespace {

constexpr int MR = kSgemmAvx512.MR;
constexpr int NR = kSgemmAvx512.NR;
// B rows fetched this many steps ahead (4 KiB in a packed panel): the hardware prefetchers alone
// left the B micro-panel stream short (measured: 2048^3 139 -> 150 GFLOP/s on 1 thread, 512^3
// 122 -> 143).
constexpr int PF = 32;
static_assert(NR == 32 && MR % 4 == 0, "the kernel holds a tile row in two zmm; row variants step by 4");

__mmask16 lane_mask(int count) {  // the first `count` of 16 lanes (count may be <= 0 or >= 16)
  return count >= 16 ? __mmask16(0xFFFF) : count <= 0 ? __mmask16(0) : __mmask16((1u << count) - 1);
}

// ROWS (4, 8 or 12) rows of the tile are computed; rows [mr, ROWS) are computed but not stored.
// PACKED: a is a packed A~ micro-panel (rsa = 1, csa = MR), so every a(i, p) is a fixed offset from
// one pointer.
template <int ROWS, bool PACKED>
__attribute__((always_inline)) inline void tile(index_t k, const float* a, index_t rsa, index_t csa,
                                                const float* b, index_t rsb, float* c, index_t ldc, float alpha,
                                                float beta, int mr, int nr) {
  for (int i = 0; i < ROWS; ++i) {  // C rows are needed at the end: start fetching them now
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(c + i * ldc + NR - 1), _MM_HINT_T0);
  }
  __m512 acc0[ROWS], acc1[ROWS];  // columns 0-15 and 16-31 of each row
  for (int i = 0; i < ROWS; ++i) acc0[i] = acc1[i] = _mm512_setzero_ps();

#pragma GCC unroll 4
  for (index_t p = 0; p < k; ++p) {
    const __m512 b0 = _mm512_loadu_ps(b), b1 = _mm512_loadu_ps(b + 16);
    _mm_prefetch(reinterpret_cast<const char*>(b + PF * rsb), _MM_HINT_T0);
    _mm_prefetch(reinterpret_cast<const char*>(b + PF * rsb + 16), _MM_HINT_T0);
    for (int i = 0; i < ROWS; ++i) {
      const __m512 ai = _mm512_set1_ps(PACKED ? a[i] : a[i * rsa]);
      acc0[i] = _mm512_fmadd_ps(ai, b0, acc0[i]);
      acc1[i] = _mm512_fmadd_ps(ai, b1, acc1[i]);
    }
    a += PACKED ? MR : csa;
    b += rsb;
  }

  const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
  const __mmask16 m0 = lane_mask(nr), m1 = lane_mask(nr - 16);
  const bool read_c = beta != 0.0f;
  for (int i = 0; i < ROWS; ++i) {
    if (i >= mr) break;
    float* ci = c + i * ldc;
    __m512 r0 = _mm512_mul_ps(acc0[i], va), r1 = _mm512_mul_ps(acc1[i], va);
    if (read_c) {
      r0 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, ci), r0);
      r1 = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, ci + 16), r1);
    }
    _mm512_mask_storeu_ps(ci, m0, r0);
    _mm512_mask_storeu_ps(ci + 16, m1, r1);
  }
}

}  // namespace

void sgemm_kernel_avx512(index_t k, const float* a, index_t rsa, index_t csa, const float* b, index_t rsb,
                         float* c, index_t ldc, float alpha, float beta, int mr, int nr) {
  if (rsa == 1 && csa == MR) {
    if (mr > 8) tile<12, true>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta, mr, nr);
    else if (mr > 4) tile<8, true>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta, mr, nr);
    else tile<4, true>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta, mr, nr);
    return;
  }
  if (mr > 8) tile<12, false>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta, mr, nr);
  else if (mr > 4) tile<8, false>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta, mr, nr);
  else tile<4, false>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta, mr, nr);
}

}  // namespace gemm_detail
}  // namespace pydl
