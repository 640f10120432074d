#include "batchnorm.h"

#include <cmath>

#include "nn_parallel.h"

namespace pydl {

namespace {

// Channels split over threads; each thread walks all N rows for its own channel range, so the
// per-channel accumulators are never shared.
int bn_threads(index_t N, index_t C, index_t S) {
  return threads_for(static_cast<double>(N) * C * S, 32768.0);
}

// mean[c] and biased var[c] over (n, s), two passes in double, for channels [c0, c1).
template <typename T>
void channel_moments(double* mean, double* var, const T* x, index_t N, index_t C, index_t S, index_t c0,
                     index_t c1) {
  const double inv_m = 1.0 / static_cast<double>(N * S);
  for (index_t c = c0; c < c1; ++c) mean[c] = var[c] = 0.0;
  for (index_t n = 0; n < N; ++n)
    for (index_t c = c0; c < c1; ++c) {
      const T* p = x + (n * C + c) * S;
      double a = 0.0;
      for (index_t s = 0; s < S; ++s) a += static_cast<double>(p[s]);
      mean[c] += a;
    }
  for (index_t c = c0; c < c1; ++c) mean[c] *= inv_m;
  for (index_t n = 0; n < N; ++n)
    for (index_t c = c0; c < c1; ++c) {
      const T* p = x + (n * C + c) * S;
      const double m = mean[c];
      double a = 0.0;
      for (index_t s = 0; s < S; ++s) {
        const double d = static_cast<double>(p[s]) - m;
        a += d * d;
      }
      var[c] += a;
    }
  for (index_t c = c0; c < c1; ++c) var[c] *= inv_m;
}

// y = (x - mean) * (gamma * inv_std) + beta, for channels [c0, c1).
template <typename T>
void normalize(T* y, const T* x, const double* mean, const double* inv_std, const T* gamma, const T* beta,
               index_t N, index_t C, index_t S, index_t c0, index_t c1) {
  for (index_t n = 0; n < N; ++n)
    for (index_t c = c0; c < c1; ++c) {
      const T m = static_cast<T>(mean[c]);
      const T k = static_cast<T>(static_cast<double>(gamma[c]) * inv_std[c]);
      const T b = beta[c];
      const T* p = x + (n * C + c) * S;
      T* q = y + (n * C + c) * S;
      for (index_t s = 0; s < S; ++s) q[s] = (p[s] - m) * k + b;
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
  const int nt = bn_threads(N, C, S);
  run_pieces(C, nt, 1, [&](index_t c0, index_t c1) {
    // var is kept in inv_std until the running update has read it.
    channel_moments(mean, inv_std, x, N, C, S, c0, c1);
    for (index_t c = c0; c < c1; ++c) {
      const double v = inv_std[c];
      running_mean[c] = static_cast<T>(momentum * running_mean[c] + (1.0 - momentum) * mean[c]);
      running_var[c] = static_cast<T>(momentum * running_var[c] + (1.0 - momentum) * v);
      inv_std[c] = 1.0 / std::sqrt(v + eps);
    }
    normalize(y, x, mean, inv_std, gamma, beta, N, C, S, c0, c1);
  });
}

template <typename T>
void batchnorm_forward_infer(T* y, double* mean, double* inv_std, const T* x, const T* gamma, const T* beta,
                             const T* running_mean, const T* running_var, index_t N, index_t C, index_t S,
                             double eps) {
  PYDL_CHECK(eps > 0.0, "batchnorm_forward", "epsilon must be > 0, got ", eps);
  for (index_t c = 0; c < C; ++c) {
    mean[c] = running_mean[c];
    inv_std[c] = 1.0 / std::sqrt(static_cast<double>(running_var[c]) + eps);
  }
  if (C <= 0 || N * S <= 0) return;
  const int nt = bn_threads(N, C, S);
  run_pieces(C, nt, 1, [&](index_t c0, index_t c1) { normalize(y, x, mean, inv_std, gamma, beta, N, C, S, c0, c1); });
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
  aligned_ptr<double> acc = aligned_alloc_array<double>(2 * static_cast<std::size_t>(C));  // before the region
  double* sdy = acc.get();       // sum(dy) per channel
  double* sdyx = acc.get() + C;  // sum(dy * (x - mean)) per channel
  const int nt = bn_threads(N, C, S);
  run_pieces(C, nt, 1, [&](index_t c0, index_t c1) {
    for (index_t c = c0; c < c1; ++c) sdy[c] = sdyx[c] = 0.0;
    for (index_t n = 0; n < N; ++n)
      for (index_t c = c0; c < c1; ++c) {
        const T* g = dy + (n * C + c) * S;
        const T* p = x + (n * C + c) * S;
        const double m = mean[c];
        double a = 0.0, b = 0.0;
        for (index_t s = 0; s < S; ++s) {
          a += static_cast<double>(g[s]);
          b += static_cast<double>(g[s]) * (static_cast<double>(p[s]) - m);
        }
        sdy[c] += a;
        sdyx[c] += b;
      }
    for (index_t c = c0; c < c1; ++c) {
      dbeta[c] = static_cast<T>(sdy[c]);
      dgamma[c] = static_cast<T>(sdyx[c] * inv_std[c]);
    }
    // dx = k1 * (dy - k2 - (x - mean) * k3), k1 = gamma*inv_std, k2 = sum(dy)/M,
    // k3 = inv_std^2 * sum(dy*(x-mean)) / M  (k2 = k3 = 0 when the statistics were constants).
    for (index_t n = 0; n < N; ++n)
      for (index_t c = c0; c < c1; ++c) {
        const double is = inv_std[c];
        const T k1 = static_cast<T>(static_cast<double>(gamma[c]) * is);
        const T k2 = batch_stats ? static_cast<T>(sdy[c] / M) : T(0);
        const T k3 = batch_stats ? static_cast<T>(is * is * sdyx[c] / M) : T(0);
        const T m = static_cast<T>(mean[c]);
        const T* g = dy + (n * C + c) * S;
        const T* p = x + (n * C + c) * S;
        T* q = dx + (n * C + c) * S;
        for (index_t s = 0; s < S; ++s) q[s] = k1 * (g[s] - k2 - (p[s] - m) * k3);
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
