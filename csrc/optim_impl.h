// The vectorised optimizer updates, written once over a small SIMD vector type V and included
// by optim.cpp (SSE2 / scalar), optim_avx2.cpp and optim_avx512.cpp, each of which defines its
// own V for float and double and instantiates optim_run in its own namespace. Formulas: optim.h.
//
// V provides: V::T, V::W (lanes), V::load(const T*), v.store(T*), V::set1(T), + - * /,
// vsqrt(v), vfma(a, b, c) = a * b + c, vmin(bound, x) and vmax(bound, x) that return x when x is
// NaN (so clipping never hides a NaN gradient), and vflush(x): 0 where x is subnormal (optim.h).
//
// Determinism: the n / W full vectors are split among threads and the n % W tail is copied to a
// padded buffer and run through the SAME block function, so every element sees the same
// instructions whatever the thread count.
#pragma once

#include <algorithm>
#include <cstring>

#include "optim.h"
#include "threading.h"

#ifdef _OPENMP
#include <omp.h>
#endif

namespace pydl {
namespace {

// Elements per thread below which a step runs serially (~40 us of memory traffic).
constexpr double kOptimMinPerThread = 32768.0;

template <class V>
struct Prep {
  using T = typename V::T;
  bool scale_on, clip_on, l2_on, decay_on;
  V scale, lo, hi, l2, decay;
  explicit Prep(const OptimHyper& h)
      : scale_on(h.grad_scale != 1.0),
        clip_on(h.clip),
        l2_on(h.l2 != 0.0),
        decay_on(h.decay != 0.0),
        scale(V::set1(static_cast<T>(h.grad_scale))),
        lo(V::set1(static_cast<T>(-h.clip_value))),
        hi(V::set1(static_cast<T>(h.clip_value))),
        l2(V::set1(static_cast<T>(h.l2))),
        decay(V::set1(static_cast<T>(h.decay))) {}

  // g <- g * scale; g <- clip(g); g <- g + l2 * p; p <- p - decay * p
  inline void apply(V& g, V& p) const {
    if (scale_on) g = g * scale;
    if (clip_on) g = vmax(lo, vmin(hi, g));
    if (l2_on) g = vfma(l2, p, g);
    if (decay_on) p = p - decay * p;
  }
};

// SGD: p <- p - lr * g
template <class V>
__attribute__((noinline)) void sgd_block(typename V::T* p, typename V::T*, typename V::T*, typename V::T*,
                                         const typename V::T* g, index_t nvec, const OptimHyper& h) {
  using T = typename V::T;
  const Prep<V> pre(h);
  const V lr = V::set1(static_cast<T>(h.lr));
  for (index_t i = 0; i < nvec * V::W; i += V::W) {
    V gi = V::load(g + i), pi = V::load(p + i);
    pre.apply(gi, pi);
    (pi - lr * gi).store(p + i);
  }
}

// Momentum: v <- mu * v - lr * g; p <- p + v  (Nesterov: p <- p + mu * v - lr * g)
template <class V>
__attribute__((noinline)) void momentum_block(typename V::T* p, typename V::T* v, typename V::T*,
                                              typename V::T*, const typename V::T* g, index_t nvec,
                                              const OptimHyper& h) {
  using T = typename V::T;
  const Prep<V> pre(h);
  const V lr = V::set1(static_cast<T>(h.lr)), mu = V::set1(static_cast<T>(h.momentum));
  const bool nesterov = h.nesterov;
  for (index_t i = 0; i < nvec * V::W; i += V::W) {
    V gi = V::load(g + i), pi = V::load(p + i);
    pre.apply(gi, pi);
    const V step = lr * gi;
    const V vi = vflush(mu * V::load(v + i) - step);
    vi.store(v + i);
    (nesterov ? pi + (mu * vi - step) : pi + vi).store(p + i);
  }
}

// Adagrad: acc <- acc + g^2; p <- p - lr * g / (sqrt(acc + eps_in) + eps_out)
template <class V>
__attribute__((noinline)) void adagrad_block(typename V::T* p, typename V::T* acc, typename V::T*,
                                             typename V::T*, const typename V::T* g, index_t nvec,
                                             const OptimHyper& h) {
  using T = typename V::T;
  const Prep<V> pre(h);
  const V lr = V::set1(static_cast<T>(h.lr));
  const V ein = V::set1(static_cast<T>(h.eps_in)), eout = V::set1(static_cast<T>(h.eps_out));
  for (index_t i = 0; i < nvec * V::W; i += V::W) {
    V gi = V::load(g + i), pi = V::load(p + i);
    pre.apply(gi, pi);
    const V ai = vfma(gi, gi, V::load(acc + i));
    ai.store(acc + i);
    (pi - (lr * gi) / (vsqrt(ai + ein) + eout)).store(p + i);
  }
}

// RMSprop: a <- rho a + (1-rho) g^2; [mg <- rho mg + (1-rho) g; d = a - mg^2]; inc = lr g / (sqrt(d + eps_in)
// + eps_out); [mom <- mu mom + inc; p <- p - mom] or p <- p - inc
template <class V>
__attribute__((noinline)) void rmsprop_block(typename V::T* p, typename V::T* a, typename V::T* mom,
                                             typename V::T* mg, const typename V::T* g, index_t nvec,
                                             const OptimHyper& h) {
  using T = typename V::T;
  const Prep<V> pre(h);
  const V lr = V::set1(static_cast<T>(h.lr)), rho = V::set1(static_cast<T>(h.rho));
  const V one_m_rho = V::set1(static_cast<T>(1.0 - h.rho)), mu = V::set1(static_cast<T>(h.momentum));
  const V ein = V::set1(static_cast<T>(h.eps_in)), eout = V::set1(static_cast<T>(h.eps_out));
  for (index_t i = 0; i < nvec * V::W; i += V::W) {
    V gi = V::load(g + i), pi = V::load(p + i);
    pre.apply(gi, pi);
    const V ai = vflush(rho * V::load(a + i) + one_m_rho * (gi * gi));
    ai.store(a + i);
    V d = ai;
    if (mg) {
      const V mgi = vflush(rho * V::load(mg + i) + one_m_rho * gi);
      mgi.store(mg + i);
      d = ai - mgi * mgi;
    }
    const V inc = (lr * gi) / (vsqrt(d + ein) + eout);
    if (mom) {
      const V mi = vflush(mu * V::load(mom + i) + inc);
      mi.store(mom + i);
      (pi - mi).store(p + i);
    } else {
      (pi - inc).store(p + i);
    }
  }
}

// Adam: m <- m + (1-b1)(g - m); v <- v + (1-b2)(g^2 - v); [vhat <- max(vhat, v)];
// p <- p - lr_t * m / (sqrt(v or vhat) + eps_out)
template <class V>
__attribute__((noinline)) void adam_block(typename V::T* p, typename V::T* m, typename V::T* v,
                                          typename V::T* vhat, const typename V::T* g, index_t nvec,
                                          const OptimHyper& h) {
  using T = typename V::T;
  const Prep<V> pre(h);
  const V lr = V::set1(static_cast<T>(h.lr)), eps = V::set1(static_cast<T>(h.eps_out));
  const V c1 = V::set1(static_cast<T>(1.0 - h.beta1)), c2 = V::set1(static_cast<T>(1.0 - h.beta2));
  for (index_t i = 0; i < nvec * V::W; i += V::W) {
    V gi = V::load(g + i), pi = V::load(p + i);
    pre.apply(gi, pi);
    const V mi0 = V::load(m + i), vi0 = V::load(v + i);
    const V mi = vflush(vfma(gi - mi0, c1, mi0));
    const V vi = vflush(vfma(gi * gi - vi0, c2, vi0));
    mi.store(m + i);
    vi.store(v + i);
    V den = vi;
    if (vhat) {
      den = vflush(vmax(V::load(vhat + i), vi));
      den.store(vhat + i);
    }
    (pi - (mi * lr) / (vsqrt(den) + eps)).store(p + i);
  }
}

// Nadam: m <- m + (1-b1)(g - m); v <- v + (1-b2)(g^2 - v);
// p <- p - (mcoef * m + gcoef * g) / (sqrt(v * vscale) + eps_out)
template <class V>
__attribute__((noinline)) void nadam_block(typename V::T* p, typename V::T* m, typename V::T* v, typename V::T*,
                                           const typename V::T* g, index_t nvec, const OptimHyper& h) {
  using T = typename V::T;
  const Prep<V> pre(h);
  const V cm = V::set1(static_cast<T>(h.mcoef)), cg = V::set1(static_cast<T>(h.gcoef));
  const V vs = V::set1(static_cast<T>(h.vscale)), eps = V::set1(static_cast<T>(h.eps_out));
  const V c1 = V::set1(static_cast<T>(1.0 - h.beta1)), c2 = V::set1(static_cast<T>(1.0 - h.beta2));
  for (index_t i = 0; i < nvec * V::W; i += V::W) {
    V gi = V::load(g + i), pi = V::load(p + i);
    pre.apply(gi, pi);
    const V mi0 = V::load(m + i), vi0 = V::load(v + i);
    const V mi = vflush(vfma(gi - mi0, c1, mi0));
    const V vi = vflush(vfma(gi * gi - vi0, c2, vi0));
    mi.store(m + i);
    vi.store(v + i);
    (pi - vfma(cm, mi, cg * gi) / (vsqrt(vi * vs) + eps)).store(p + i);
  }
}

template <class T>
inline T* offset(T* ptr, index_t off) {
  return ptr ? ptr + off : nullptr;
}

template <class V>
using BlockFn = void (*)(typename V::T*, typename V::T*, typename V::T*, typename V::T*, const typename V::T*,
                         index_t, const OptimHyper&);

// Runs `block` over n elements: full vectors split among threads, then the tail through a padded buffer.
template <class V>
void drive(BlockFn<V> block, typename V::T* p, typename V::T* s0, typename V::T* s1, typename V::T* s2,
           const typename V::T* g, index_t n, const OptimHyper& h) {
  using T = typename V::T;
  constexpr index_t W = V::W;
  const index_t nvec = n / W;
  if (nvec > 0) {
    const int nt = threads_for(static_cast<double>(n), kOptimMinPerThread);
    if (nt <= 1) {
      block(p, s0, s1, s2, g, nvec, h);
    } else {
      parallel_team(nt, [&](int rank, int team) {
        const index_t tid = rank, nth = team;
        // Chunks of whole 64-byte lines so threads never share a cache line.
        constexpr index_t line = (64 / static_cast<index_t>(sizeof(T)) + W - 1) / W;
        const index_t per = (nvec + nth - 1) / nth;
        const index_t chunk = (per + line - 1) / line * line;
        const index_t v0 = std::min(nvec, tid * chunk), v1 = std::min(nvec, v0 + chunk);
        if (v1 > v0) {
          const index_t off = v0 * W;
          block(p + off, offset(s0, off), offset(s1, off), offset(s2, off), g + off, v1 - v0, h);
        }
      });
    }
  }
  const index_t done = nvec * W, rem = n - done;
  if (rem > 0) {
    alignas(64) T buf[5][W];
    std::memset(buf, 0, sizeof(buf));
    T* w[4] = {p, s0, s1, s2};
    T* bw[4] = {buf[0], s0 ? buf[1] : nullptr, s1 ? buf[2] : nullptr, s2 ? buf[3] : nullptr};
    for (int k = 0; k < 4; ++k)
      if (w[k]) std::memcpy(bw[k], w[k] + done, static_cast<std::size_t>(rem) * sizeof(T));
    std::memcpy(buf[4], g + done, static_cast<std::size_t>(rem) * sizeof(T));
    block(bw[0], bw[1], bw[2], bw[3], buf[4], 1, h);
    for (int k = 0; k < 4; ++k)
      if (w[k]) std::memcpy(w[k] + done, bw[k], static_cast<std::size_t>(rem) * sizeof(T));
  }
}

// sum(x^2) over one block in double, with 32 independent per-lane accumulators combined in a fixed
// order (the compiler vectorises the lanes; no reassociation, so the result is reproducible).
// The full groups of 32 are summed in two passes of 16 accumulators each: all 32 in one loop (8
// ymm of doubles, plus the float -> double conversions) did not fit AVX2's 16 registers and
// spilled (tools/check_spills.py). Each acc[j] still sees the same values in the same order, and
// a block (kSumBlock elements, optim.cpp) is still in L1 for the second pass.
template <typename T>
double sum_squares_block_impl(const T* x, index_t n) {
  constexpr int L = 32, H = L / 2;
  double acc[L] = {};
  const index_t full = n / L * L;
  auto pass = [&](auto first) {
    constexpr int o = decltype(first)::value;
    for (index_t i = 0; i < full; i += L)
      for (int j = 0; j < H; ++j) {
        const double v = static_cast<double>(x[i + o + j]);
        acc[o + j] += v * v;
      }
  };
  pass(std::integral_constant<int, 0>{});
  pass(std::integral_constant<int, H>{});
  if (full < n) {  // the last n % L, zero-padded: acc[j] + 0 is acc[j] (a sum of squares is never -0)
    T t[L] = {};
    std::memcpy(t, x + full, static_cast<std::size_t>(n - full) * sizeof(T));
    for (int j = 0; j < L; ++j) {
      const double v = static_cast<double>(t[j]);
      acc[j] += v * v;
    }
  }
#pragma GCC unroll 8  // constant bounds, so acc stays in registers
  for (int w = L / 2; w >= 1; w /= 2)
#pragma GCC unroll 16
    for (int j = 0; j < w; ++j) acc[j] += acc[j + w];
  return acc[0];
}

template <class V>
void optim_run_impl(OptimKind kind, typename V::T* p, typename V::T* s0, typename V::T* s1, typename V::T* s2,
                    const typename V::T* g, index_t n, const OptimHyper& h) {
  switch (kind) {
    case OptimKind::sgd: drive<V>(&sgd_block<V>, p, nullptr, nullptr, nullptr, g, n, h); break;
    case OptimKind::momentum: drive<V>(&momentum_block<V>, p, s0, nullptr, nullptr, g, n, h); break;
    case OptimKind::adagrad: drive<V>(&adagrad_block<V>, p, s0, nullptr, nullptr, g, n, h); break;
    case OptimKind::rmsprop: drive<V>(&rmsprop_block<V>, p, s0, s1, s2, g, n, h); break;
    case OptimKind::adam: drive<V>(&adam_block<V>, p, s0, s1, s2, g, n, h); break;
    case OptimKind::nadam: drive<V>(&nadam_block<V>, p, s0, s1, nullptr, g, n, h); break;
  }
}

}  // namespace
}  // namespace pydl

// Defines ns::optim_run for float and double with the vector types VF and VD.
#define PYDL_OPTIM_DEFINE_ISA(ns, VF, VD)                                                              \
  namespace pydl {                                                                                     \
  namespace ns {                                                                                       \
  void optim_run(OptimKind kind, float* p, float* s0, float* s1, float* s2, const float* g, index_t n, \
                 const OptimHyper& h) {                                                                \
    optim_run_impl<VF>(kind, p, s0, s1, s2, g, n, h);                                                  \
  }                                                                                                    \
  void optim_run(OptimKind kind, double* p, double* s0, double* s1, double* s2, const double* g,       \
                 index_t n, const OptimHyper& h) {                                                     \
    optim_run_impl<VD>(kind, p, s0, s1, s2, g, n, h);                                                  \
  }                                                                                                    \
  double sum_squares_block(const float* x, index_t n) { return sum_squares_block_impl(x, n); }         \
  double sum_squares_block(const double* x, index_t n) { return sum_squares_block_impl(x, n); }        \
  }                                                                                                    \
  }
