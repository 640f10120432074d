// Portable micro-kernels (baseline x86-64, i.e. SSE2; any C++17 compiler elsewhere):
// float 4 x 8 and double 4 x 4 tiles.
//
//   C[i, j] = alpha * sum_p a(i, p) * b(p, j) + beta * C[i, j]      (beta == 0: C not read)
//
// Written as plain loops over a small accumulator array with compile-time bounds, so GCC keeps the
// array in registers and vectorises it (two SSE registers per row: 8 accumulators of the 16).
// Larger tiles measured slower: GCC then keeps part of the array in memory.
// Operand strides: see gemm_kernels.h.
#include <algorithm>

#include "gemm_kernels.h"

namespace pydl {
namespace gemm_detail {
namespace {

// kUnitRows: rsa == 1 (packed A~, or transposed A in place), so a(., p) is one short vector load.
template <typename T, int MR, int NR, bool kUnitRows>
inline void tile(index_t k, const T* __restrict a, index_t rsa, index_t csa, const T* __restrict b, index_t rsb,
                 T* __restrict c, index_t ldc, T alpha, T beta) {
  if constexpr (kUnitRows) rsa = 1;
  T acc[MR][NR] = {};
  for (index_t p = 0; p < k; ++p) {
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const T ai = a[i * rsa];
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * b[j];
    }
    a += csa;
    b += rsb;
  }
  for (int i = 0; i < MR; ++i) {
    T* ci = c + i * ldc;
    if (beta == T(0)) {
      for (int j = 0; j < NR; ++j) ci[j] = alpha * acc[i][j];
    } else {
      for (int j = 0; j < NR; ++j) ci[j] = alpha * acc[i][j] + beta * ci[j];
    }
  }
}

// Full tiles go straight to C; an edge tile is computed into a scratch tile, then its valid
// mr x nr part is merged into C.
template <typename T, int MR, int NR, bool kUnitRows>
inline void tile_or_edge(index_t k, const T* a, index_t rsa, index_t csa, const T* b, index_t rsb, T* c,
                         index_t ldc, T alpha, T beta, int mr, int nr) {
  if (mr == MR && nr == NR) {
    tile<T, MR, NR, kUnitRows>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta);
    return;
  }
  alignas(64) T t[MR * NR];
  tile<T, MR, NR, kUnitRows>(k, a, rsa, csa, b, rsb, t, NR, alpha, T(0));
  for (int i = 0; i < mr; ++i)
    for (int j = 0; j < nr; ++j) {
      T& cij = c[i * ldc + j];
      cij = beta == T(0) ? t[i * NR + j] : t[i * NR + j] + beta * cij;
    }
}

// Rows of A far apart in memory (A read in place, untransposed) defeat the SSE loads, so the
// MR x k micro-panel is first copied into unit-stride order, a chunk of k at a time.
template <typename T, int MR, int NR>
inline void kernel(index_t k, const T* a, index_t rsa, index_t csa, const T* b, index_t rsb, T* c, index_t ldc,
                   T alpha, T beta, int mr, int nr) {
  if (rsa == 1) {
    tile_or_edge<T, MR, NR, true>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta, mr, nr);
    return;
  }
  constexpr index_t kChunk = 256;
  alignas(64) T panel[MR * kChunk];
  for (index_t p0 = 0; p0 < k; p0 += kChunk) {
    const index_t kk = std::min(kChunk, k - p0);
    for (index_t p = 0; p < kk; ++p)
      for (int i = 0; i < MR; ++i) panel[p * MR + i] = a[i * rsa + (p0 + p) * csa];
    tile_or_edge<T, MR, NR, true>(kk, panel, 1, MR, b + p0 * rsb, rsb, c, ldc, alpha, p0 == 0 ? beta : T(1), mr, nr);
  }
}

constexpr int SMR = kSgemmGeneric.MR, SNR = kSgemmGeneric.NR;
constexpr int DMR = kDgemmGeneric.MR, DNR = kDgemmGeneric.NR;

}  // namespace

void sgemm_kernel_generic(index_t k, const float* a, index_t rsa, index_t csa, const float* b, index_t rsb,
                          float* c, index_t ldc, float alpha, float beta, int mr, int nr) {
  kernel<float, SMR, SNR>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta, mr, nr);
}

void dgemm_kernel_generic(index_t k, const double* a, index_t rsa, index_t csa, const double* b, index_t rsb,
                          double* c, index_t ldc, double alpha, double beta, int mr, int nr) {
  kernel<double, DMR, DNR>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta, mr, nr);
}

}  // namespace gemm_detail
}  // namespace pydl
