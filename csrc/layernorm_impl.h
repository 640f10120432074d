// Layer normalisation kernels (layernorm.h), compiled once per instruction set: included by
// layernorm.cpp (baseline x86-64, float and float64) and layernorm_avx2.cpp / _avx512.cpp (float),
// each inside its own namespace PYDL_LN_NS. Rows are swept with Vec<F> (one register of the ISA)
// and a scalar tail; every sum has an order fixed by C alone.
#ifndef PYDL_LN_NS
#error "define PYDL_LN_NS before including layernorm_impl.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "layernorm.h"
#include "threading.h"

namespace pydl {
namespace PYDL_LN_NS {

#include "simd_vec.h"

#define PYDL_R __restrict__

// Accumulators per sum (independent FMA chains) and vectors per chunk (the part summed in F
// before it is added in double).
constexpr int kAcc = 4;
constexpr int kChunkVecs = 32;
constexpr index_t kRowsPerGroup = 32;  // dgamma / dbeta partial sums

// The lanes of one chunk's vector sum, added pairwise in F (a short tree, not a serial chain).
template <typename F>
PYDL_VINLINE double hsum_d(Vec<F> v) {
  constexpr int L = VecOf<F>::L;
  F t[L];
  std::memcpy(t, &v, sizeof(v));
  for (int w = L / 2; w >= 1; w /= 2)
    for (int l = 0; l < w; ++l) t[l] += t[l + w];
  return static_cast<double>(t[0]);
}

// Sum over c < n of a(c): as row_sums2 below, for one sum.
template <typename F, class VA, class SA>
PYDL_VINLINE double row_sum1(index_t n, VA va, SA a) {
  using V = Vec<F>;
  constexpr int L = VecOf<F>::L;
  const index_t nv = n / L * L;
  double ta = 0.0;
  for (index_t c0 = 0; c0 < nv; c0 += kChunkVecs * L) {
    const index_t c1 = std::min<index_t>(nv, c0 + kChunkVecs * L);
    V xa[kAcc] = {};
    index_t c = c0;
    for (; c + kAcc * L <= c1; c += kAcc * L)
      for (int u = 0; u < kAcc; ++u) xa[u] += va(c + u * L);
    for (int u = 0; c < c1; c += L, ++u) xa[u] += va(c);
    ta += hsum_d<F>((xa[0] + xa[1]) + (xa[2] + xa[3]));
  }
  for (index_t c = nv; c < n; ++c) ta += static_cast<double>(a(c));
  return ta;
}

// Sums over c < n of a(c) and b(c), where A(V, c) / B(V, c) give the vectors at c and a / b the
// scalars (tail); the vector part in chunks of kChunkVecs vectors, each chunk's total in double.
template <typename F, class VA, class VB, class SA, class SB>
PYDL_VINLINE void row_sums2(index_t n, double& sa, double& sb, VA va, VB vb, SA a, SB b) {
  using V = Vec<F>;
  constexpr int L = VecOf<F>::L;
  const index_t nv = n / L * L;
  double ta = 0.0, tb = 0.0;
  for (index_t c0 = 0; c0 < nv; c0 += kChunkVecs * L) {
    const index_t c1 = std::min<index_t>(nv, c0 + kChunkVecs * L);
    V xa[kAcc] = {}, xb[kAcc] = {};
    index_t c = c0;
    for (; c + kAcc * L <= c1; c += kAcc * L)
      for (int u = 0; u < kAcc; ++u) xa[u] += va(c + u * L), xb[u] += vb(c + u * L);
    for (int u = 0; c < c1; c += L, ++u) xa[u] += va(c), xb[u] += vb(c);
    ta += hsum_d<F>((xa[0] + xa[1]) + (xa[2] + xa[3]));
    tb += hsum_d<F>((xb[0] + xb[1]) + (xb[2] + xb[3]));
  }
  for (index_t c = nv; c < n; ++c) ta += static_cast<double>(a(c)), tb += static_cast<double>(b(c));
  sa = ta, sb = tb;
}

// Sums over the row of x - m0 and (x - m0)^2. A function of its own, so the register allocator
// sees only this loop: inlined into forward_rows, AVX2 kept one of its 8 accumulators on the
// stack (tools/check_spills.py), a store and a load on that sum's chain every iteration.
template <typename F>
__attribute__((noinline)) static void centered_sums(const F* PYDL_R xr, index_t C, F m0, double& s1, double& s2) {
  using V = Vec<F>;
  const V vm0 = vset1(m0);
  row_sums2<F>(
      C, s1, s2, [&](index_t c) { return vload(xr + c) - vm0; },
      [&](index_t c) {
        const V d = vload(xr + c) - vm0;
        return d * d;
      },
      [&](index_t c) { return xr[c] - m0; },
      [&](index_t c) {
        const F d = xr[c] - m0;
        return d * d;
      });
}

template <typename F>
static void forward_rows(F* PYDL_R y, F* PYDL_R mean, F* PYDL_R rstd, const F* PYDL_R x, const F* PYDL_R gamma,
                         const F* PYDL_R beta, index_t R, index_t C, double eps) {
  using V = Vec<F>;
  constexpr int L = VecOf<F>::L;
  const int nt = threads_for(static_cast<double>(R) * C, 32768);
  parallel_for(nt, R, [&](std::int64_t r, int) {
    const F* PYDL_R xr = x + r * C;
    F* PYDL_R yr = y + r * C;
    const double s0 = row_sum1<F>(
        C, [&](index_t c) { return vload(xr + c); }, [&](index_t c) { return xr[c]; });
    const F m0 = static_cast<F>(s0 / static_cast<double>(C));
    const V vm0 = vset1(m0);
    double s1, s2;
    centered_sums<F>(xr, C, m0, s1, s2);
    const double dm = s1 / static_cast<double>(C);
    const double var = std::max(0.0, s2 / static_cast<double>(C) - dm * dm);
    const double rs = 1.0 / std::sqrt(var + eps);
    const F delta = static_cast<F>(dm), rsf = static_cast<F>(rs);
    mean[r] = static_cast<F>(static_cast<double>(m0) + dm);
    rstd[r] = rsf;
    const V vd = vset1(delta), vr = vset1(rsf);
    index_t c = 0;
    for (; c + L <= C; c += L) {
      const V xh = ((vload(xr + c) - vm0) - vd) * vr;
      vstore(yr + c, xh * vload(gamma + c) + vload(beta + c));
    }
    for (; c < C; ++c) yr[c] = ((xr[c] - m0) - delta) * rsf * gamma[c] + beta[c];
  });
}

template <typename F>
static void backward_rows(F* PYDL_R dx, F* PYDL_R dgamma, F* PYDL_R dbeta, const F* PYDL_R dy, const F* PYDL_R x,
                          const F* PYDL_R gamma, const F* PYDL_R mean, const F* PYDL_R rstd, index_t R, index_t C) {
  using V = Vec<F>;
  constexpr int L = VecOf<F>::L;
  const index_t ng = (R + kRowsPerGroup - 1) / kRowsPerGroup;
  std::vector<F> part(static_cast<std::size_t>(std::max<index_t>(ng, 1) * 2 * C));
  const int nt = threads_for(static_cast<double>(R) * C, 32768);
  parallel_for(nt, ng, [&](std::int64_t gi, int) {
    F* PYDL_R pg = part.data() + gi * 2 * C;
    F* PYDL_R pb = pg + C;
    std::memset(pg, 0, sizeof(F) * 2 * C);
    const index_t r1 = std::min<index_t>(R, (gi + 1) * kRowsPerGroup);
    for (index_t r = gi * kRowsPerGroup; r < r1; ++r) {
      const F* PYDL_R xr = x + r * C;
      const F* PYDL_R dyr = dy + r * C;
      F* PYDL_R dxr = dx + r * C;
      const F mu = mean[r], rs = rstd[r];
      const V vmu = vset1(mu), vrs = vset1(rs);
      double sg, sgx;
      row_sums2<F>(
          C, sg, sgx, [&](index_t c) { return vload(dyr + c) * vload(gamma + c); },
          [&](index_t c) { return vload(dyr + c) * vload(gamma + c) * ((vload(xr + c) - vmu) * vrs); },
          [&](index_t c) { return dyr[c] * gamma[c]; },
          [&](index_t c) { return dyr[c] * gamma[c] * ((xr[c] - mu) * rs); });
      const F a = static_cast<F>(sg / static_cast<double>(C)), b = static_cast<F>(sgx / static_cast<double>(C));
      const V va = vset1(a), vb = vset1(b);
      index_t c = 0;
      for (; c + L <= C; c += L) {
        const V xh = (vload(xr + c) - vmu) * vrs;
        const V d = vload(dyr + c);
        vstore(dxr + c, vrs * (d * vload(gamma + c) - va - xh * vb));
        vstore(pg + c, vload(pg + c) + d * xh);
        vstore(pb + c, vload(pb + c) + d);
      }
      for (; c < C; ++c) {
        const F xh = (xr[c] - mu) * rs;
        dxr[c] = rs * (dyr[c] * gamma[c] - a - xh * b);
        pg[c] += dyr[c] * xh;
        pb[c] += dyr[c];
      }
    }
  });
  const index_t ncc = (C + 255) / 256;
  parallel_for(threads_for(static_cast<double>(ng) * C, 65536), ncc, [&](std::int64_t cc, int) {
    const index_t c0 = cc * 256, c1 = std::min<index_t>(C, c0 + 256);
    for (index_t c = c0; c < c1; ++c) {
      double sg = 0.0, sb = 0.0;
      for (index_t gi = 0; gi < ng; ++gi) {
        sg += static_cast<double>(part[gi * 2 * C + c]);
        sb += static_cast<double>(part[gi * 2 * C + C + c]);
      }
      dgamma[c] = static_cast<F>(sg);
      dbeta[c] = static_cast<F>(sb);
    }
  });
}

template <typename F>
static const detail::LayerNormKernels<F>* make_kernels() {
  static const detail::LayerNormKernels<F> table = {forward_rows<F>, backward_rows<F>};
  return &table;
}

#undef PYDL_R

}  // namespace PYDL_LN_NS
}  // namespace pydl
