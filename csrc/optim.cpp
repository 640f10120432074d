// Optimizer updates: ISA dispatch, the portable (SSE2 / scalar) vector path, the scalar
// *_naive twins and the sum-of-squares reduction. Formulas: optim.h; vector bodies: optim_impl.h.
#include "optim.h"

#include <cmath>
#include <vector>

#include "cpu_features.h"
#include "optim_impl.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace pydl {
namespace {

#if defined(__SSE2__)
struct F128 {
  using T = float;
  static constexpr index_t W = 4;
  __m128 r;
  static F128 load(const float* p) { return {_mm_loadu_ps(p)}; }
  void store(float* p) const { _mm_storeu_ps(p, r); }
  static F128 set1(float x) { return {_mm_set1_ps(x)}; }
};
inline F128 operator+(F128 a, F128 b) { return {_mm_add_ps(a.r, b.r)}; }
inline F128 operator-(F128 a, F128 b) { return {_mm_sub_ps(a.r, b.r)}; }
inline F128 operator*(F128 a, F128 b) { return {_mm_mul_ps(a.r, b.r)}; }
inline F128 operator/(F128 a, F128 b) { return {_mm_div_ps(a.r, b.r)}; }
inline F128 vsqrt(F128 a) { return {_mm_sqrt_ps(a.r)}; }
inline F128 vfma(F128 a, F128 b, F128 c) { return {_mm_add_ps(_mm_mul_ps(a.r, b.r), c.r)}; }
// minps/maxps return the second operand when either is NaN: x goes second.
inline F128 vmin(F128 bound, F128 x) { return {_mm_min_ps(bound.r, x.r)}; }
inline F128 vmax(F128 bound, F128 x) { return {_mm_max_ps(bound.r, x.r)}; }
// 0 where |x| < FLT_MIN (subnormal), x elsewhere; cmpltps is false for NaN, which is kept.
inline F128 vflush(F128 x) {
  const __m128 a = _mm_andnot_ps(_mm_set1_ps(-0.0f), x.r);
  return {_mm_andnot_ps(_mm_cmplt_ps(a, _mm_set1_ps(FLT_MIN)), x.r)};
}

struct D128 {
  using T = double;
  static constexpr index_t W = 2;
  __m128d r;
  static D128 load(const double* p) { return {_mm_loadu_pd(p)}; }
  void store(double* p) const { _mm_storeu_pd(p, r); }
  static D128 set1(double x) { return {_mm_set1_pd(x)}; }
};
inline D128 operator+(D128 a, D128 b) { return {_mm_add_pd(a.r, b.r)}; }
inline D128 operator-(D128 a, D128 b) { return {_mm_sub_pd(a.r, b.r)}; }
inline D128 operator*(D128 a, D128 b) { return {_mm_mul_pd(a.r, b.r)}; }
inline D128 operator/(D128 a, D128 b) { return {_mm_div_pd(a.r, b.r)}; }
inline D128 vsqrt(D128 a) { return {_mm_sqrt_pd(a.r)}; }
inline D128 vfma(D128 a, D128 b, D128 c) { return {_mm_add_pd(_mm_mul_pd(a.r, b.r), c.r)}; }
inline D128 vmin(D128 bound, D128 x) { return {_mm_min_pd(bound.r, x.r)}; }
inline D128 vmax(D128 bound, D128 x) { return {_mm_max_pd(bound.r, x.r)}; }
inline D128 vflush(D128 x) {
  const __m128d a = _mm_andnot_pd(_mm_set1_pd(-0.0), x.r);
  return {_mm_andnot_pd(_mm_cmplt_pd(a, _mm_set1_pd(DBL_MIN)), x.r)};
}
using GenericF = F128;
using GenericD = D128;
#else
// One-lane fallback for targets without SSE2.
template <typename TT>
struct Scalar {
  using T = TT;
  static constexpr index_t W = 1;
  TT r;
  static Scalar load(const TT* p) { return {*p}; }
  void store(TT* p) const { *p = r; }
  static Scalar set1(TT x) { return {x}; }
};
template <typename TT> inline Scalar<TT> operator+(Scalar<TT> a, Scalar<TT> b) { return {a.r + b.r}; }
template <typename TT> inline Scalar<TT> operator-(Scalar<TT> a, Scalar<TT> b) { return {a.r - b.r}; }
template <typename TT> inline Scalar<TT> operator*(Scalar<TT> a, Scalar<TT> b) { return {a.r * b.r}; }
template <typename TT> inline Scalar<TT> operator/(Scalar<TT> a, Scalar<TT> b) { return {a.r / b.r}; }
template <typename TT> inline Scalar<TT> vsqrt(Scalar<TT> a) { return {std::sqrt(a.r)}; }
template <typename TT> inline Scalar<TT> vfma(Scalar<TT> a, Scalar<TT> b, Scalar<TT> c) { return {a.r * b.r + c.r}; }
template <typename TT> inline Scalar<TT> vmin(Scalar<TT> bound, Scalar<TT> x) { return {x.r > bound.r ? bound.r : x.r}; }
template <typename TT> inline Scalar<TT> vmax(Scalar<TT> bound, Scalar<TT> x) { return {x.r < bound.r ? bound.r : x.r}; }
template <typename TT> inline Scalar<TT> vflush(Scalar<TT> x) { return {flush_subnormal(x.r)}; }
using GenericF = Scalar<float>;
using GenericD = Scalar<double>;
#endif

template <typename T>
void run(OptimKind kind, T* p, T* s0, T* s1, T* s2, const T* g, index_t n, const OptimHyper& h) {
  PYDL_CHECK(n >= 0, "optimizer", "negative size ", n);
  PYDL_CHECK(!h.clip || h.clip_value >= 0.0, "optimizer", "clip_value must be >= 0, got ", h.clip_value);
  if (n == 0) return;
#if defined(PYDL_X86)
  switch (selected_isa()) {
    case Isa::avx512: optim_avx512::optim_run(kind, p, s0, s1, s2, g, n, h); return;
    case Isa::avx2: optim_avx2::optim_run(kind, p, s0, s1, s2, g, n, h); return;
    default: break;
  }
#endif
  optim_generic::optim_run(kind, p, s0, s1, s2, g, n, h);
}

// Gradient preparation for the naive twins: the same order as the vector kernels.
template <typename T>
inline void prep_naive(T& g, T& p, const OptimHyper& h) {
  if (h.grad_scale != 1.0) g = g * static_cast<T>(h.grad_scale);
  if (h.clip) {
    const T hi = static_cast<T>(h.clip_value), lo = static_cast<T>(-h.clip_value);
    g = g > hi ? hi : (g < lo ? lo : g);
  }
  if (h.l2 != 0.0) g = g + static_cast<T>(h.l2) * p;
  if (h.decay != 0.0) p = p - static_cast<T>(h.decay) * p;
}

constexpr index_t kSumBlock = 4096;

template <typename T>
double sum_block(const T* x, index_t n) {
#if defined(PYDL_X86)
  switch (selected_isa()) {
    case Isa::avx512: return optim_avx512::sum_squares_block(x, n);
    case Isa::avx2: return optim_avx2::sum_squares_block(x, n);
    default: break;
  }
#endif
  return optim_generic::sum_squares_block(x, n);
}

}  // namespace

// ---- fast kernels -------------------------------------------------------------------------

template <typename T>
void sgd_update(T* p, const T* g, index_t n, const OptimHyper& h) {
  run<T>(OptimKind::sgd, p, nullptr, nullptr, nullptr, g, n, h);
}
template <typename T>
void momentum_update(T* p, T* v, const T* g, index_t n, const OptimHyper& h) {
  PYDL_CHECK(v || n == 0, "momentum_update", "velocity is missing");
  run<T>(OptimKind::momentum, p, v, nullptr, nullptr, g, n, h);
}
template <typename T>
void adagrad_update(T* p, T* acc, const T* g, index_t n, const OptimHyper& h) {
  PYDL_CHECK(acc || n == 0, "adagrad_update", "accumulator is missing");
  run<T>(OptimKind::adagrad, p, acc, nullptr, nullptr, g, n, h);
}
template <typename T>
void rmsprop_update(T* p, T* a, T* mom, T* mg, const T* g, index_t n, const OptimHyper& h) {
  PYDL_CHECK(a || n == 0, "rmsprop_update", "velocity is missing");
  run<T>(OptimKind::rmsprop, p, a, mom, mg, g, n, h);
}
template <typename T>
void adam_update(T* p, T* m, T* v, T* vhat, const T* g, index_t n, const OptimHyper& h) {
  PYDL_CHECK((m && v) || n == 0, "adam_update", "m or v is missing");
  run<T>(OptimKind::adam, p, m, v, vhat, g, n, h);
}

template <typename T>
void nadam_update(T* p, T* m, T* v, const T* g, index_t n, const OptimHyper& h) {
  PYDL_CHECK((m && v) || n == 0, "nadam_update", "m or v is missing");
  run<T>(OptimKind::nadam, p, m, v, nullptr, g, n, h);
}

template <typename T>
double sum_squares(const T* x, index_t n) {
  PYDL_CHECK(n >= 0, "sum_squares", "negative size ", n);
  if (n == 0) return 0.0;
  const index_t nb = (n + kSumBlock - 1) / kSumBlock;
  if (nb == 1) return sum_block(x, n);
  std::vector<double> part(static_cast<std::size_t>(nb));
  const int nt = threads_for(static_cast<double>(n), 65536.0);
  parallel_for(nt, nb, [&](index_t b, int) {
    const index_t i0 = b * kSumBlock;
    part[static_cast<std::size_t>(b)] = sum_block(x + i0, std::min(kSumBlock, n - i0));
  });
  double total = 0.0;
  for (double v : part) total += v;
  return total;
}

// ---- naive twins ----------------------------------------------------------------------------

template <typename T>
void sgd_update_naive(T* p, const T* g, index_t n, const OptimHyper& h) {
  const T lr = static_cast<T>(h.lr);
  for (index_t i = 0; i < n; ++i) {
    T gi = g[i], pi = p[i];
    prep_naive(gi, pi, h);
    p[i] = pi - lr * gi;
  }
}

template <typename T>
void momentum_update_naive(T* p, T* v, const T* g, index_t n, const OptimHyper& h) {
  const T lr = static_cast<T>(h.lr), mu = static_cast<T>(h.momentum);
  for (index_t i = 0; i < n; ++i) {
    T gi = g[i], pi = p[i];
    prep_naive(gi, pi, h);
    v[i] = flush_subnormal(mu * v[i] - lr * gi);
    p[i] = h.nesterov ? pi + (mu * v[i] - lr * gi) : pi + v[i];
  }
}

template <typename T>
void adagrad_update_naive(T* p, T* acc, const T* g, index_t n, const OptimHyper& h) {
  const T lr = static_cast<T>(h.lr), ein = static_cast<T>(h.eps_in), eout = static_cast<T>(h.eps_out);
  for (index_t i = 0; i < n; ++i) {
    T gi = g[i], pi = p[i];
    prep_naive(gi, pi, h);
    acc[i] = acc[i] + gi * gi;
    p[i] = pi - lr * gi / (std::sqrt(acc[i] + ein) + eout);
  }
}

template <typename T>
void rmsprop_update_naive(T* p, T* a, T* mom, T* mg, const T* g, index_t n, const OptimHyper& h) {
  const T lr = static_cast<T>(h.lr), rho = static_cast<T>(h.rho), mu = static_cast<T>(h.momentum);
  const T ein = static_cast<T>(h.eps_in), eout = static_cast<T>(h.eps_out);
  for (index_t i = 0; i < n; ++i) {
    T gi = g[i], pi = p[i];
    prep_naive(gi, pi, h);
    a[i] = flush_subnormal(rho * a[i] + (T(1) - rho) * gi * gi);
    T d = a[i];
    if (mg) {
      mg[i] = flush_subnormal(rho * mg[i] + (T(1) - rho) * gi);
      d = a[i] - mg[i] * mg[i];
    }
    const T inc = lr * gi / (std::sqrt(d + ein) + eout);
    if (mom) {
      mom[i] = flush_subnormal(mu * mom[i] + inc);
      p[i] = pi - mom[i];
    } else {
      p[i] = pi - inc;
    }
  }
}

template <typename T>
void adam_update_naive(T* p, T* m, T* v, T* vhat, const T* g, index_t n, const OptimHyper& h) {
  const T lr = static_cast<T>(h.lr), eps = static_cast<T>(h.eps_out);
  const T b1 = static_cast<T>(h.beta1), b2 = static_cast<T>(h.beta2);
  for (index_t i = 0; i < n; ++i) {
    T gi = g[i], pi = p[i];
    prep_naive(gi, pi, h);
    m[i] = flush_subnormal(m[i] + (T(1) - b1) * (gi - m[i]));
    v[i] = flush_subnormal(v[i] + (T(1) - b2) * (gi * gi - v[i]));
    T den = v[i];
    if (vhat) {
      vhat[i] = flush_subnormal((v[i] > vhat[i] || std::isnan(v[i])) ? v[i] : vhat[i]);
      den = vhat[i];
    }
    p[i] = pi - lr * m[i] / (std::sqrt(den) + eps);
  }
}

template <typename T>
void nadam_update_naive(T* p, T* m, T* v, const T* g, index_t n, const OptimHyper& h) {
  const T cm = static_cast<T>(h.mcoef), cg = static_cast<T>(h.gcoef), vs = static_cast<T>(h.vscale);
  const T eps = static_cast<T>(h.eps_out), b1 = static_cast<T>(h.beta1), b2 = static_cast<T>(h.beta2);
  for (index_t i = 0; i < n; ++i) {
    T gi = g[i], pi = p[i];
    prep_naive(gi, pi, h);
    m[i] = flush_subnormal(m[i] + (T(1) - b1) * (gi - m[i]));
    v[i] = flush_subnormal(v[i] + (T(1) - b2) * (gi * gi - v[i]));
    p[i] = pi - (cm * m[i] + cg * gi) / (std::sqrt(v[i] * vs) + eps);
  }
}

template <typename T>
double sum_squares_naive(const T* x, index_t n) {
  double s = 0.0;
  for (index_t i = 0; i < n; ++i) s += static_cast<double>(x[i]) * static_cast<double>(x[i]);
  return s;
}

#define PYDL_OPTIM_INSTANTIATE(T)                                                            \
  template void sgd_update<T>(T*, const T*, index_t, const OptimHyper&);                     \
  template void momentum_update<T>(T*, T*, const T*, index_t, const OptimHyper&);            \
  template void adagrad_update<T>(T*, T*, const T*, index_t, const OptimHyper&);             \
  template void rmsprop_update<T>(T*, T*, T*, T*, const T*, index_t, const OptimHyper&);     \
  template void adam_update<T>(T*, T*, T*, T*, const T*, index_t, const OptimHyper&);        \
  template void nadam_update<T>(T*, T*, T*, const T*, index_t, const OptimHyper&);           \
  template double sum_squares<T>(const T*, index_t);                                         \
  template void sgd_update_naive<T>(T*, const T*, index_t, const OptimHyper&);               \
  template void momentum_update_naive<T>(T*, T*, const T*, index_t, const OptimHyper&);      \
  template void adagrad_update_naive<T>(T*, T*, const T*, index_t, const OptimHyper&);       \
  template void rmsprop_update_naive<T>(T*, T*, T*, T*, const T*, index_t, const OptimHyper&); \
  template void adam_update_naive<T>(T*, T*, T*, T*, const T*, index_t, const OptimHyper&);  \
  template void nadam_update_naive<T>(T*, T*, T*, const T*, index_t, const OptimHyper&);     \
  template double sum_squares_naive<T>(const T*, index_t);
PYDL_OPTIM_INSTANTIATE(float)
PYDL_OPTIM_INSTANTIATE(double)
#undef PYDL_OPTIM_INSTANTIATE

}  // namespace pydl

PYDL_OPTIM_DEFINE_ISA(optim_generic, GenericF, GenericD)
