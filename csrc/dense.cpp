#include "dense.h"

#include <vector>

#include "gemm.h"
#include "nn_parallel.h"

#ifdef _OPENMP
#include <omp.h>
#endif

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

// Few rows and many inputs (an MLP's first layer, 128 x 784 -> 256): x W is formed as two halves
// over the inputs, x[:, :C/2] W[:C/2] + x[:, C/2:] W[C/2:], one thread each, then added. A thread
// thus reads only its half of W: the rows that the optimizer step, which splits W's elements the
// same way over two threads, left in that thread's cache. Read whole by both threads, half of a
// freshly updated W comes from the other core's cache, which measured slower than from memory
// (this layer's forward after an Adam step: 305 us whole, 225 us with W warm). The halves are
// fixed, so the result does not depend on the thread count.
constexpr index_t kSplitMinC = 512;   // inputs
constexpr index_t kSplitMaxN = 256;   // rows
constexpr index_t kSplitMinK = 64;    // units

template <typename T>
bool split_forward(T* y, const T* x, const T* W, index_t N, index_t C, index_t K) {
  if (N > kSplitMaxN || C < kSplitMinC || K < kSplitMinK) return false;
  const index_t C0 = C / 2;
  aligned_ptr<T> part = aligned_alloc_array<T>(static_cast<std::size_t>(N) * K);
  T* p1 = part.get();
  const int nt = threads_for(static_cast<double>(N) * K * C, 2e6) >= 2 ? 2 : 1;
  // Halves: h = 0 -> y, h = 1 -> p1 (serial sgemm calls: threads_for is 1 inside the region).
  auto half = [&](int h) {
    const index_t c0 = h == 0 ? 0 : C0, cn = h == 0 ? C0 : C - C0;
    gemm(false, false, N, K, cn, T(1), x + c0, C, W + c0 * K, K, T(0), h == 0 ? y : p1, K);
  };
  auto add_rows = [&](index_t r0, index_t r1) {
    for (index_t i = r0 * K; i < r1 * K; ++i) y[i] += p1[i];
  };
  if (nt == 1) {
    half(0);
    half(1);
    add_rows(0, N);
    return true;
  }
  parallel_team(2, [&](int rank, int team) {
    half(rank);
    team_barrier(team);
    add_rows(rank == 0 ? 0 : N / 2, rank == 0 ? N / 2 : N);
  });
  return true;
}

}  // namespace

template <typename T>
void dense_forward(T* y, const T* x, const T* W, const T* b, index_t N, index_t C, index_t K, Act act, T alpha,
                   T* z) {
  check_dense_act(act, "dense_forward");
  PYDL_CHECK(z || !act_needs_input(act), "dense_forward", activation_name(act), " needs the z buffer");
  if (N <= 0 || K <= 0) return;
  T* acc = z ? z : y;
  if (C == 0) {
    for (index_t i = 0; i < N * K; ++i) acc[i] = T(0);
  } else if (!split_forward(acc, x, W, N, C, K)) {
    gemm(false, false, N, K, C, T(1), x, C, W, K, T(0), acc, K);
  }
  if (!z) {
    bias_activation_inplace<T>(y, b, N, K, act, alpha);
    return;
  }
  bias_activation_inplace<T>(z, b, N, K, Act::linear, T(0));
  activation_forward<T>(y, z, N, K, act, alpha);
}

template <typename T>
void dense_backward(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, const T* y, index_t N, index_t C,
                    index_t K, Act act, T alpha, const T* z) {
  check_dense_act(act, "dense_backward");
  PYDL_CHECK(z || !act_needs_input(act), "dense_backward", activation_name(act), " needs z = x @ W + b");
  aligned_ptr<T> scratch;
  const T* dz = dy;
  if (act != Act::linear && N > 0 && K > 0) {
    scratch = aligned_alloc_array<T>(static_cast<std::size_t>(N) * K);
    activation_backward<T>(scratch.get(), dy, z, y, N, K, act, alpha);
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
                         T alpha, T* z) {
  check_dense_act(act, "dense_forward_naive");
  PYDL_CHECK(z || !act_needs_input(act), "dense_forward_naive", activation_name(act), " needs the z buffer");
  if (N <= 0 || K <= 0) return;
  T* acc = z ? z : y;
  gemm_naive<T>(false, false, N, K, C, T(1), x, C, W, K, T(0), acc, K);
  for (index_t n = 0; n < N; ++n)
    for (index_t k = 0; k < K; ++k) acc[n * K + k] += b ? b[k] : T(0);
  activation_forward_naive<T>(y, acc, N, K, act, alpha);
}

template <typename T>
void dense_backward_naive(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, const T* y, index_t N,
                          index_t C, index_t K, Act act, T alpha, const T* z) {
  check_dense_act(act, "dense_backward_naive");
  PYDL_CHECK(z || !act_needs_input(act), "dense_backward_naive", activation_name(act), " needs z = x @ W + b");
  std::vector<T> dz(static_cast<std::size_t>(N) * K);
  activation_backward_naive<T>(dz.data(), dy, z, y, N, K, act, alpha);
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
  template void dense_forward<T>(T*, const T*, const T*, const T*, index_t, index_t, index_t, Act, T, T*);     \
  template void dense_backward<T>(T*, T*, T*, const T*, const T*, const T*, const T*, index_t, index_t, index_t, \
                                  Act, T, const T*);                                                           \
  template void dense_forward_naive<T>(T*, const T*, const T*, const T*, index_t, index_t, index_t, Act, T, T*); \
  template void dense_backward_naive<T>(T*, T*, T*, const T*, const T*, const T*, const T*, index_t, index_t,   \
                                        index_t, Act, T, const T*);
PYDL_INSTANTIATE_DENSE(float)
PYDL_INSTANTIATE_DENSE(double)
#undef PYDL_INSTANTIATE_DENSE

}  // namespace pydl
