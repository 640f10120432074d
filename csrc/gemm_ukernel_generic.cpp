// Portable micro-kernels (baseline x86-64, i.e. SSE2; any C++17 compiler elsewhere):
// float 6 x 8 and double 6 x 4 tiles.
//
//   C[i, j] = alpha * sum_p a(i, p) * b(p, j) + beta * C[i, j]      (beta == 0: C not read)
//
// Written as plain loops over a small accumulator array with compile-time bounds, so GCC keeps the
// array in registers and vectorises the j loop (two SSE registers per row: 12 accumulators of 16).
// Operand layouts: see gemm_kernels.h.
#include "gemm_kernels.h"

namespace pydl {
namespace gemm_detail {
namespace {

template <typename T, int MR, int NR, bool kPacked>
inline void tile(index_t k, const T* __restrict a, index_t rsa, index_t csa, const T* __restrict b, index_t rsb,
                 T* __restrict c, index_t ldc, T alpha, T beta) {
  if constexpr (kPacked) {
    rsa = 1;
    csa = MR;
    rsb = NR;
  }
  T acc[MR][NR] = {};
  for (index_t p = 0; p < k; ++p) {
    T bp[NR];
#pragma GCC unroll 16
    for (int j = 0; j < NR; ++j) bp[j] = b[j];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) {
      const T ai = a[i * rsa];
#pragma GCC unroll 16
      for (int j = 0; j < NR; ++j) acc[i][j] += ai * bp[j];
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

constexpr int SMR = kSgemmGeneric.MR, SNR = kSgemmGeneric.NR;
constexpr int DMR = kDgemmGeneric.MR, DNR = kDgemmGeneric.NR;

}  // namespace

void sgemm_packed_generic(index_t k, const float* a, const float* b, float* c, index_t ldc, float alpha,
                          float beta) {
  tile<float, SMR, SNR, true>(k, a, 1, SMR, b, SNR, c, ldc, alpha, beta);
}

void sgemm_direct_generic(index_t k, const float* a, index_t rsa, index_t csa, const float* b, index_t rsb,
                          float* c, index_t ldc, float alpha, float beta) {
  tile<float, SMR, SNR, false>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta);
}

void dgemm_packed_generic(index_t k, const double* a, const double* b, double* c, index_t ldc, double alpha,
                          double beta) {
  tile<double, DMR, DNR, true>(k, a, 1, DMR, b, DNR, c, ldc, alpha, beta);
}

void dgemm_direct_generic(index_t k, const double* a, index_t rsa, index_t csa, const double* b,
                          index_t rsb, double* c, index_t ldc, double alpha, double beta) {
  tile<double, DMR, DNR, false>(k, a, rsa, csa, b, rsb, c, ldc, alpha, beta);
}

}  // namespace gemm_detail
}  // namespace pydl
