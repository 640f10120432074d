#include "gemm.h"

#include <algorithm>
#include <vector>

#include "threading.h"

namespace pydl {
namespace {

// Simple row-panel kernel: for each row i of C, C[i,:] = beta*C[i,:] + alpha * sum_p op(A)[i,p] * op(B)[p,:].
// op(B) rows are made contiguous first when trans_b, so the inner loop is a unit-stride axpy.
template <typename T>
void gemm_rows(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, T alpha, const T* A,
               index_t lda, const T* B, index_t ldb, T beta, T* C, index_t ldc) {
  std::vector<T> bt;
  const T* Bp = B;
  index_t ldbp = ldb;
  if (trans_b) {
    bt.resize(static_cast<std::size_t>(K) * N);
    for (index_t j = 0; j < N; ++j)
      for (index_t p = 0; p < K; ++p) bt[p * N + j] = B[j * ldb + p];
    Bp = bt.data();
    ldbp = N;
  }
  const int nt = threads_for(2.0 * M * N * K, 2e5);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (index_t i = 0; i < M; ++i) {
    T* c = C + i * ldc;
    if (beta == T(0)) std::fill(c, c + N, T(0));
    else if (beta != T(1)) for (index_t j = 0; j < N; ++j) c[j] *= beta;
    for (index_t p = 0; p < K; ++p) {
      const T a = alpha * (trans_a ? A[p * lda + i] : A[i * lda + p]);
      const T* b = Bp + p * ldbp;
      for (index_t j = 0; j < N; ++j) c[j] += a * b[j];
    }
  }
}

}  // namespace

void sgemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, float alpha, const float* A,
           index_t lda, const float* B, index_t ldb, float beta, float* C, index_t ldc) {
  if (M <= 0 || N <= 0) return;
  gemm_rows<float>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void dgemm(bool trans_a, bool trans_b, index_t M, index_t N, index_t K, double alpha, const double* A,
           index_t lda, const double* B, index_t ldb, double beta, double* C, index_t ldc) {
  if (M <= 0 || N <= 0) return;
  gemm_rows<double>(trans_a, trans_b, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

}  // namespace pydl
