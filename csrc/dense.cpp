#include "dense.h"

#include <vector>

#include "gemm.h"
#include "nn_parallel.h"

namespace pydl {

namespace {

void check_dense_act(Act act, const char* op) {
  PYDL_CHECK(!act_is_rowwise(act), op, "activation '", activation_name(act),
             "' cannot be fused into Dense; use linear and a separate activation");
}

// db[k] = sum_n dz[n, k], accumulated in double, rows split over threads by column blocks.
template <typename T>
void column_sums(T* db, const T* dz, index_t N, index_t K) {
  const index_t block = 256;
  const index_t nblocks = (K + block - 1) / block;
  const int nt = threads_for(static_cast<double>(N) * K, 65536.0);
  run_pieces(nblocks, nt, 1, [&](index_t b0, index_t b1) {
    double acc[256];
    for (index_t blk = b0; blk < b1; ++blk) {
      const index_t k0 = blk * block, kn = (K - k0) < block ? (K - k0) : block;
      for (index_t k = 0; k < kn; ++k) acc[k] = 0.0;
      for (index_t n = 0; n < N; ++n) {
        const T* row = dz + n * K + k0;
        for (index_t k = 0; k < kn; ++k) acc[k] += static_cast<double>(row[k]);
      }
      for (index_t k = 0; k < kn; ++k) db[k0 + k] = static_cast<T>(acc[k]);
    }
  });
}

}  // namespace

template <typename T>
void dense_forward(T* y, const T* x, const T* W, const T* b, index_t N, index_t C, index_t K, Act act, T alpha) {
  check_dense_act(act, "dense_forward");
  if (N <= 0 || K <= 0) return;
  if (C == 0) {
    for (index_t i = 0; i < N * K; ++i) y[i] = T(0);
  } else {
    gemm(false, false, N, K, C, T(1), x, C, W, K, T(0), y, K);
  }
  bias_activation_inplace<T>(y, b, N, K, act, alpha);
}

template <typename T>
void dense_backward(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, const T* y, index_t N, index_t C,
                    index_t K, Act act, T alpha) {
  check_dense_act(act, "dense_backward");
  aligned_ptr<T> scratch;
  const T* dz = dy;
  if (act != Act::linear && N > 0 && K > 0) {
    scratch = aligned_alloc_array<T>(static_cast<std::size_t>(N) * K);
    activation_backward<T>(scratch.get(), dy, y, N, K, act, alpha);
    dz = scratch.get();
  }
  if (N == 0 || K == 0) {
    for (index_t i = 0; i < C * K; ++i) dW[i] = T(0);
    if (dx)
      for (index_t i = 0; i < N * C; ++i) dx[i] = T(0);
    if (db)
      for (index_t k = 0; k < K; ++k) db[k] = T(0);
    return;
  }
  // dW[C, K] = x^T [C, N] * dz [N, K]
  gemm(true, false, C, K, N, T(1), x, C, dz, K, T(0), dW, K);
  if (db) column_sums(db, dz, N, K);
  // dx[N, C] = dz [N, K] * W^T [K, C]
  if (dx && C > 0) gemm(false, true, N, C, K, T(1), dz, K, W, K, T(0), dx, C);
}

template <typename T>
void dense_forward_naive(T* y, const T* x, const T* W, const T* b, index_t N, index_t C, index_t K, Act act,
                         T alpha) {
  check_dense_act(act, "dense_forward_naive");
  if (N <= 0 || K <= 0) return;
  gemm_naive<T>(false, false, N, K, C, T(1), x, C, W, K, T(0), y, K);
  for (index_t n = 0; n < N; ++n)
    for (index_t k = 0; k < K; ++k) y[n * K + k] += b ? b[k] : T(0);
  activation_forward_naive<T>(y, y, N, K, act, alpha);
}

template <typename T>
void dense_backward_naive(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, const T* y, index_t N,
                          index_t C, index_t K, Act act, T alpha) {
  check_dense_act(act, "dense_backward_naive");
  std::vector<T> dz(static_cast<std::size_t>(N) * K);
  activation_backward_naive<T>(dz.data(), dy, y, N, K, act, alpha);
  for (index_t c = 0; c < C; ++c)
    for (index_t k = 0; k < K; ++k) {
      double s = 0.0;
      for (index_t n = 0; n < N; ++n) s += double(x[n * C + c]) * dz[n * K + k];
      dW[c * K + k] = static_cast<T>(s);
    }
  if (db)
    for (index_t k = 0; k < K; ++k) {
      double s = 0.0;
      for (index_t n = 0; n < N; ++n) s += dz[n * K + k];
      db[k] = static_cast<T>(s);
    }
  if (dx)
    for (index_t n = 0; n < N; ++n)
      for (index_t c = 0; c < C; ++c) {
        double s = 0.0;
        for (index_t k = 0; k < K; ++k) s += double(dz[n * K + k]) * W[c * K + k];
        dx[n * C + c] = static_cast<T>(s);
      }
}

#define PYDL_INSTANTIATE_DENSE(T)                                                                              \
  template void dense_forward<T>(T*, const T*, const T*, const T*, index_t, index_t, index_t, Act, T);         \
  template void dense_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, index_t, index_t, index_t, \
                                  Act, T);                                                                     \
  template void dense_forward_naive<T>(T*, const T*, const T*, const T*, index_t, index_t, index_t, Act, T);   \
  template void dense_backward_naive<T>(T*, T*, T*, const T*, const T*, const T*, const T*, index_t, index_t,   \
                                        index_t, Act, T);
PYDL_INSTANTIATE_DENSE(float)
PYDL_INSTANTIATE_DENSE(double)
#undef PYDL_INSTANTIATE_DENSE

}  // namespace pydl
