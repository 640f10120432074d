#include "batchnorm.h"

#include <cmath>

#include "nn_parallel.h"

namespace pydl {

namespace {

// Channels split over threads; each thread walks all N rows for its own channel range, so the
// per-channel accumulators are never shared. For 2-D input (S = 1) the inner loop runs along a
// row's channels instead, so both layouts stream contiguous memory in vectorised loops.
int bn_threads(index_t N, index_t C, index_t S) {
  return threads_for(static_cast<double>(N) * C * S, 32768.0);
}

// sum[c] += sum over (n, s) of f(x) for channels [c0, c1).
template <typename T, class F>
void channel_sums(double* sum, const T* x, index_t N, index_t C, index_t S, index_t c0, index_t c1, F f) {
  if (S == 1) {
    for (index_t n = 0; n < N; ++n) {
      const T* row = x + n * C;
#pragma omp simd
      for (index_t c = c0; c < c1; ++c) sum[c] += f(static_cast<double>(row[c]), c);
    }
    return;
  }
  for (index_t n = 0; n < N; ++n)
    for (index_t c = c0; c < c1; ++c) {
      const T* p = x + (n * C + c) * S;
      double a = 0.0;
#pragma omp simd reduction(+ : a)
      for (index_t s = 0; s < S; ++s) a += f(static_cast<double>(p[s]), c);
      sum[c] += a;
    }
}

// out = ((x - m[c]) * k[c] + b[c]) over channels [c0, c1); with dy: out = k * (dy - b - (x - m) * k3).
template <typename T>
void affine(T* out, const T* x, const T* m, const T* k, const T* b, index_t N, index_t C, index_t S, index_t c0,
            index_t c1) {
  for (index_t n = 0; n < N; ++n) {
    if (S == 1) {
      const T* p = x + n * C;
      T* q = out + n * C;
#pragma omp simd
      for (index_t c = c0; c < c1; ++c) q[c] = (p[c] - m[c]) * k[c] + b[c];
      continue;
    }
    for (index_t c = c0; c < c1; ++c) {
      const T* p = x + (n * C + c) * S;
      T* q = out + (n * C + c) * S;
      const T mc = m[c], kc = k[c], bc = b[c];
#pragma omp simd
      for (index_t s = 0; s < S; ++s) q[s] = (p[s] - mc) * kc + bc;
    }
  }
}

}  // namespace

template <typename T>
void batchnorm_forward_train(T* y, double* mean, double* inv_std, T* running_mean, T* running_var, const T* x,
                             const T* gamma, const T* beta, index_t N, index_t C, index_t S, double momentum,
                             double eps) {
  const char* op = "batchnorm_forward";
  PYDL_CHECK(N * S > 0, op, "training needs at least one value per channel, got N = ", N, " and H*W = ", S);
  PYDL_CHECK(eps > 0.0, op, "epsilon must be > 0, got ", eps);
  PYDL_CHECK(momentum >= 0.0 && momentum <= 1.0, op, "momentum must be in [0, 1], got ", momentum);
  if (C <= 0) return;
  aligned_ptr<T> buf = aligned_alloc_array<T>(3 * static_cast<std::size_t>(C));  // before the region
  T *m = buf.get(), *k = buf.get() + C, *b = buf.get() + 2 * C;
  const double inv_count = 1.0 / static_cast<double>(N * S);
  const int nt = bn_threads(N, C, S);
  run_pieces(C, nt, S == 1 ? 16 : 1, [&](index_t c0, index_t c1) {
    // pass 1: mean; pass 2: biased variance about it (kept in inv_std until the update below)
    for (index_t c = c0; c < c1; ++c) mean[c] = inv_std[c] = 0.0;
    channel_sums(mean, x, N, C, S, c0, c1, [](double v, index_t) { return v; });
    for (index_t c = c0; c < c1; ++c) mean[c] *= inv_count;
    channel_sums(inv_std, x, N, C, S, c0, c1, [mean](double v, index_t c) {
      const double d = v - mean[c];
      return d * d;
    });
    for (index_t c = c0; c < c1; ++c) {
      const double var = inv_std[c] * inv_count;
      running_mean[c] = static_cast<T>(momentum * running_mean[c] + (1.0 - momentum) * mean[c]);
      running_var[c] = static_cast<T>(momentum * running_var[c] + (1.0 - momentum) * var);
      inv_std[c] = 1.0 / std::sqrt(var + eps);
      m[c] = static_cast<T>(mean[c]);
      k[c] = static_cast<T>(static_cast<double>(gamma[c]) * inv_std[c]);
      b[c] = beta[c];
    }
    affine(y, x, m, k, b, N, C, S, c0, c1);
  });
}

template <typename T>
void batchnorm_forward_infer(T* y, double* mean, double* inv_std, const T* x, const T* gamma, const T* beta,
                             const T* running_mean, const T* running_var, index_t N, index_t C, index_t S,
                             double eps) {
  PYDL_CHECK(eps > 0.0, "batchnorm_forward", "epsilon must be > 0, got ", eps);
  if (C <= 0) return;
  aligned_ptr<T> buf = aligned_alloc_array<T>(2 * static_cast<std::size_t>(C));
  T *m = buf.get(), *k = buf.get() + C;
  for (index_t c = 0; c < C; ++c) {
    mean[c] = running_mean[c];
    inv_std[c] = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps);
    m[c] = running_mean[c];
    k[c] = static_cast<T>(static_cast<double>(gamma[c]) * inv_std[c]);
  }
  if (N * S <= 0) return;
  const int nt = bn_threads(N, C, S);
  run_pieces(C, nt, S == 1 ? 16 : 1, [&](index_t c0, index_t c1) { affine(y, x, m, k, beta, N, C, S, c0, c1); });
}

template <typename T>
void batchnorm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma, const double* mean,
                        const double* inv_std, index_t N, index_t C, index_t S, bool batch_stats) {
  if (C <= 0) return;
  const index_t M = N * S;
  if (M <= 0) {
    for (index_t c = 0; c < C; ++c) dgamma[c] = dbeta[c] = T(0);
    return;
  }
  // before the region: per-channel sums and coefficients
  aligned_ptr<double> acc = aligned_alloc_array<double>(2 * static_cast<std::size_t>(C));
  double* sdy = acc.get();       // sum(dy)
  double* sdyx = acc.get() + C;  // sum(dy * (x - mean))
  aligned_ptr<T> buf = aligned_alloc_array<T>(4 * static_cast<std::size_t>(C));
  T *m = buf.get(), *k1 = buf.get() + C, *k2 = buf.get() + 2 * C, *k3 = buf.get() + 3 * C;
  const int nt = bn_threads(N, C, S);
  run_pieces(C, nt, S == 1 ? 16 : 1, [&](index_t c0, index_t c1) {
    for (index_t c = c0; c < c1; ++c) sdy[c] = sdyx[c] = 0.0;
    if (S == 1) {
      for (index_t n = 0; n < N; ++n) {
        const T* g = dy + n * C;
        const T* p = x + n * C;
#pragma omp simd
        for (index_t c = c0; c < c1; ++c) {
          sdy[c] += static_cast<double>(g[c]);
          sdyx[c] += static_cast<double>(g[c]) * (static_cast<double>(p[c]) - mean[c]);
        }
      }
    } else {
      for (index_t n = 0; n < N; ++n)
        for (index_t c = c0; c < c1; ++c) {
          const T* g = dy + (n * C + c) * S;
          const T* p = x + (n * C + c) * S;
          const double mc = mean[c];
          double a = 0.0, b = 0.0;
#pragma omp simd reduction(+ : a, b)
          for (index_t s = 0; s < S; ++s) {
            a += static_cast<double>(g[s]);
            b += static_cast<double>(g[s]) * (static_cast<double>(p[s]) - mc);
          }
          sdy[c] += a;
          sdyx[c] += b;
        }
    }
    // dx = k1 * (dy - k2 - (x - mean) * k3), k1 = gamma*inv_std, k2 = sum(dy)/M,
    // k3 = inv_std^2 * sum(dy*(x-mean)) / M  (k2 = k3 = 0 when the statistics were constants).
    for (index_t c = c0; c < c1; ++c) {
      const double is = inv_std[c];
      dbeta[c] = static_cast<T>(sdy[c]);
      dgamma[c] = static_cast<T>(sdyx[c] * is);
      m[c] = static_cast<T>(mean[c]);
      k1[c] = static_cast<T>(static_cast<double>(gamma[c]) * is);
      k2[c] = batch_stats ? static_cast<T>(sdy[c] / M) : T(0);
      k3[c] = batch_stats ? static_cast<T>(is * is * sdyx[c] / M) : T(0);
    }
    for (index_t n = 0; n < N; ++n) {
      if (S == 1) {
        const T* g = dy + n * C;
        const T* p = x + n * C;
        T* q = dx + n * C;
#pragma omp simd
        for (index_t c = c0; c < c1; ++c) q[c] = k1[c] * (g[c] - k2[c] - (p[c] - m[c]) * k3[c]);
        continue;
      }
      for (index_t c = c0; c < c1; ++c) {
        const T* g = dy + (n * C + c) * S;
        const T* p = x + (n * C + c) * S;
        T* q = dx + (n * C + c) * S;
        const T mc = m[c], a = k1[c], b = k2[c], d = k3[c];
#pragma omp simd
        for (index_t s = 0; s < S; ++s) q[s] = a * (g[s] - b - (p[s] - mc) * d);
      }
    }
  });
}

#define PYDL_INSTANTIATE_BN(T)                                                                                 \
  template void batchnorm_forward_train<T>(T*, double*, double*, T*, T*, const T*, const T*, const T*, index_t, \
                                           index_t, index_t, double, double);                                  \
  template void batchnorm_forward_infer<T>(T*, double*, double*, const T*, const T*, const T*, const T*,        \
                                           const T*, index_t, index_t, index_t, double);                       \
  template void batchnorm_backward<T>(T*, T*, T*, const T*, const T*, const T*, const double*, const double*,   \
                                      index_t, index_t, index_t, bool);
PYDL_INSTANTIATE_BN(float)
PYDL_INSTANTIATE_BN(double)
#undef PYDL_INSTANTIATE_BN

}  // namespace pydl
