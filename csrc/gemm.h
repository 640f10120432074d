// General matrix multiply, row-major (C order).
//
//   C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C      (C written; beta = 0 ignores C's contents,
//                                                             so NaN in an unwritten C never leaks)
// op(X) = X, or X^T when trans_x: A is stored [M,K] with row stride lda (or [K,M] when trans_a),
// B is stored [K,N] with row stride ldb (or [N,K] when trans_b), C is [M,N] with row stride ldc.
//
// sgemm is the fast float32 kernel every other family calls (Dense, im2col and Winograd
// convolution, recurrent cells). Inside an enclosing OpenMP region it runs serially.
// gemm_naive is the obvious triple loop the tests compare against; dgemm serves the float64
// (gradient-check) path.
#pragma once

#include "common.h"

namespace pydl {

void sgemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, float alpha, const float* A,
           index_t lda, const float* B, index_t ldb, float beta, float* C, index_t ldc);

void dgemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, double alpha, const double* A,
           index_t lda, const double* B, index_t ldb, double beta, double* C, index_t ldc);

template <typename T>
void gemm_naive(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A,
                index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  for (index_t i = 0; i < M; ++i)
    for (index_t j = 0; j < N; ++j) {
      double acc = 0.0;
      for (index_t p = 0; p < K; ++p) {
        const T a = trans_a ? A[p * lda + i] : A[i * lda + p];
        const T b = trans_b ? B[j * ldb + p] : B[p * ldb + j];
        acc += static_cast<double>(a) * static_cast<double>(b);
      }
      T& c = C[i * ldc + j];
      c = static_cast<T>(alpha * acc + (beta == T(0) ? T(0) : beta * c));
    }
}

// Overloaded front door for templated kernels: gemm<float> -> sgemm, gemm<double> -> dgemm.
inline void gemm(bool ta, bool tb, index_t M, index_t N, index_t K, float alpha, const float* A, index_t lda,
                 const float* B, index_t ldb, float beta, float* C, index_t ldc) {
  sgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}
inline void gemm(bool ta, bool tb, index_t M, index_t N, index_t K, double alpha, const double* A, index_t lda,
                 const double* B, index_t ldb, double beta, double* C, index_t ldc) {
  dgemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace pydl
