// Convolution loops compiled once per ISA. Included by conv2d.cpp (portable, float and double),
// conv2d_avx2.cpp and conv2d_avx512.cpp (float), each defining PYDL_KNS to its own namespace
// so the builds never merge. See conv2d.h for the formulas and conv2d_isa.h for the entries.
// Sizes are validated by the caller (conv2d.cpp) before any of this runs: nothing here throws
// inside a parallel region (buffers are allocated before each region).
#ifndef PYDL_KNS
#error "define PYDL_KNS before including conv2d_impl.h"
#endif

#include <cstring>

#if defined(__SSE2__)
#include <immintrin.h>
#endif

#include "conv2d.h"
#include "gemm.h"
#include "threading.h"

namespace pydl {
namespace PYDL_KNS {

#include "simd_vec.h"

namespace {

inline index_t imin(index_t a, index_t b) { return a < b ? a : b; }
inline index_t imax(index_t a, index_t b) { return a > b ? a : b; }
inline index_t ceil_div(index_t a, index_t b) { return (a + b - 1) / b; }

// A vector of s in every lane: one vbroadcastss from memory. (vset1's 0 + s is a real add
// without -ffast-math and pins a zero register, and a lane-by-lane fill compiles to inserts:
// in the avx2 direct tile either cost an extra instruction per broadcast and spills.)
template <typename T>
PYDL_VINLINE Vec<T> vdup(T s) {
#if defined(__SSE2__)
  if constexpr (sizeof(T) == 4 && kVecBytes == 64) {
#if defined(__AVX512F__)
    return reinterpret_cast<Vec<T>>(_mm512_set1_ps(s));
#endif
  } else if constexpr (sizeof(T) == 4 && kVecBytes == 32) {
#if defined(__AVX__)
    return reinterpret_cast<Vec<T>>(_mm256_set1_ps(s));
#endif
  } else if constexpr (sizeof(T) == 4 && kVecBytes == 16) {
    return reinterpret_cast<Vec<T>>(_mm_set1_ps(s));
  } else if constexpr (sizeof(T) == 8 && kVecBytes == 16) {
    return reinterpret_cast<Vec<T>>(_mm_set1_pd(s));
  }
#endif
  Vec<T> v = {};
  return v + s;
}

// ---------------------------------------------------------------------------------------------
// direct: y[n,k,p,q0:q0+QV*L] for KB output channels at once, KB x QV accumulators in registers.
// xp is one zero-padded image [C][Hp][Wp] whose (0,0) is input position (-pt, -pl).
// wpk holds the filters repacked per block of nk <= KB channels as [C][R][S][nk], so the
// broadcasts of one tap are adjacent.
//
// Register tile per ISA. Per filter tap: QV vector loads of x, KB broadcasts, KB*QV FMAs; the
// KB*QV accumulators cover the 4-cycle FMA latency of 2 pipes (>= 8 independent chains).
//   avx512: 8 ch x 2 zmm = 16 accumulators of 32 (tuned on AVX-512 hardware).
//   avx2:   6 ch x 2 ymm = 12 accumulators + 2 x + 1 broadcast = 15 of 16 ymm. The 8 x 1 tile it
//           replaced ran C1->32 28x28 N64 (1 thread) in 6.0 ms, slower than SSE2's 5.1 ms. Taps
//           not unrolled: unrolled 3 at a time, GCC rotated the accumulators through registers
//           and spilled 2 per filter row (tools/check_spills.py); rolled (or a 5 x 2 tile,
//           unrolled) there is no spill, and N64 K32 3x3 C1 28x28 / C3 32x32 / C16 14x14 on 2
//           threads took 0.96 / 2.08 / 2.23 ms against 0.985 / 2.12 / 2.23 unrolled (Zen 3,
//           medians of 4 alternated runs).
//   sse2:   6 ch x 2 xmm = 12 accumulators + 2 x + 1 broadcast + 1 product (no FMA) = 16 xmm,
//           with the tap loop not unrolled: unrolling 3 taps, GCC hoists their broadcasts (movss
//           + shufps) and spilled 14 accumulator accesses per filter row (4 x 2: 5; 3 x 3: 1, but
//           12-wide steps waste 10 of 24 lanes on Q = 14).
// K is cut into ceil(K / KB) blocks of nearly equal size (K = 32: 6,6,5,5,5,5 rather than
// 6,6,6,6,6,2, whose last block has too few accumulators to hide the FMA latency).
struct DirectTile {
  int KB, QV;
  bool unroll3;  // a 3-tap filter width unrolled at compile time
};
//                                            KB QV unroll3
inline constexpr DirectTile kDirectAvx512 = {8, 2, true};
inline constexpr DirectTile kDirectAvx2   = {6, 2, false};
inline constexpr DirectTile kDirectSse2   = {6, 2, false};
inline constexpr DirectTile kDirect = kVecBytes == 64 ? kDirectAvx512 : kVecBytes == 32 ? kDirectAvx2 : kDirectSse2;
#if defined(__FMA__) || defined(__AVX512F__)
inline constexpr int kFmaTemp = 0;
#else
inline constexpr int kFmaTemp = 1;  // a separate multiply needs a register for the product
#endif
static_assert(kDirect.KB * kDirect.QV + kDirect.QV + 1 + kFmaTemp <= kVecRegs,
              "direct conv tile: accumulators + x vectors + broadcast exceed the register file");

// UNIT: stride 1 and dilation 1 along the width (plain vector loads); SS > 0: the filter width
// is the compile-time constant SS, so the tap loop unrolls (the 3x3 case, where the per-row loop
// set-up would otherwise cost more than its 3 taps).
template <typename T, int KB, bool UNIT, int SS>
void direct_row(T* y_n, const T* xp, index_t Hp, index_t Wp, const T* wblk, const T* b, index_t k0,
                const Conv2dGeom& g, index_t p, ConvAct act) {
  constexpr int L = VecOf<T>::L, QV = kDirect.QV;
  const index_t C = g.C, R = g.R, S = SS > 0 ? SS : g.S, Q = g.Q, PQ = g.P * g.Q;
  const index_t sw = UNIT ? 1 : g.sw, dw = UNIT ? 1 : g.dw;
  for (index_t q0 = 0; q0 < Q; q0 += QV * L) {
    // Vector v covers output columns [qs[v], qs[v] + L): q0 + v * L, or Q - L where that would
    // run past the row (when Q >= L). Those columns are then computed twice, to the same values,
    // and every store is a whole vector: a masked store (vmaskmovps) costs AMD's Zen 3 and Zen 4
    // several times a plain one, and took a quarter of the C1->32 28x28 time on AVX2.
    index_t qs[QV];
    for (int v = 0; v < QV; ++v) qs[v] = Q >= L ? imin(q0 + v * L, Q - L) : q0 + v * L;
    Vec<T> acc[KB][QV];
    for (int kk = 0; kk < KB; ++kk)
      for (int v = 0; v < QV; ++v) acc[kk][v] = vdup<T>(b ? b[k0 + kk] : T(0));
    const T* wt = wblk;
    for (index_t c = 0; c < C; ++c) {
      for (index_t r = 0; r < R; ++r) {
        const T* xrow = xp + (c * Hp + p * g.sh + r * g.dh) * Wp;
        for (index_t s = 0; s < S; ++s, wt += KB) {
          Vec<T> xv[QV];
          for (int v = 0; v < QV; ++v) {
            if (UNIT) {
              xv[v] = vload<T>(xrow + s + qs[v]);
            } else {
              // Gathered lane by lane into a zeroed vector (writing lanes of xv[v] directly trips
              // GCC's -Wmaybe-uninitialized on aarch64).
              const T* xs = xrow + s * dw + qs[v] * sw;
              Vec<T> gathered = vdup<T>(T(0));
              for (int l = 0; l < L; ++l) gathered[l] = xs[l * sw];
              xv[v] = gathered;
            }
          }
          for (int kk = 0; kk < KB; ++kk) {
            const Vec<T> wv = vdup<T>(wt[kk]);
            for (int v = 0; v < QV; ++v) acc[kk][v] += wv * xv[v];
          }
        }
      }
    }
    // Straight-line code over constant indices, so the accumulators stay in registers (with a
    // loop exit per vector and the activation tested per store, GCC kept all of them on the
    // stack here: a quarter of the C1->32 28x28 time on AVX-512 went to spilling and reloading).
    if (act == ConvAct::relu)
      for (int kk = 0; kk < KB; ++kk)
        for (int v = 0; v < QV; ++v) acc[kk][v] = vrelu(acc[kk][v]);
    T* const y_row = y_n + k0 * PQ + p * Q;
    if (Q >= L) {
      // Every vector is whole and in the row: one past the row's end was moved back to Q - L,
      // so storing it again writes the same values.
      for (int kk = 0; kk < KB; ++kk)
        for (int v = 0; v < QV; ++v) vstore<T>(y_row + kk * PQ + qs[v], acc[kk][v]);
    } else {
      // A row narrower than one vector: q0 = 0, only vector 0 holds columns of the row.
      for (int kk = 0; kk < KB; ++kk) vstore_n<T>(y_row + kk * PQ, acc[kk][0], static_cast<int>(Q));
    }
  }
}

template <typename T, int KB>
void direct_row_kb(T* y_n, const T* xp, index_t Hp, index_t Wp, const T* wblk, const T* b, index_t k0,
                   const Conv2dGeom& g, index_t p, ConvAct act) {
  if (g.sw == 1 && g.dw == 1) {
    if (kDirect.unroll3 && g.S == 3) direct_row<T, KB, true, 3>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act);
    else direct_row<T, KB, true, 0>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act);
  } else {
    direct_row<T, KB, false, 0>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act);
  }
}

// Channel block kb of nkb: [k0, k1) with sizes differing by at most one.
inline void direct_block(const Conv2dGeom& g, index_t nkb, index_t kb, index_t& k0, index_t& k1) {
  k0 = g.K * kb / nkb;
  k1 = g.K * (kb + 1) / nkb;
}

template <typename T, int NK>
void direct_rows_n(T* y_n, const T* xp, index_t Hp, index_t Wp, const T* wblk, const T* b, index_t k0, index_t nk,
                   const Conv2dGeom& g, index_t p, ConvAct act) {
  if constexpr (NK > 1) {
    if (nk < NK) return direct_rows_n<T, NK - 1>(y_n, xp, Hp, Wp, wblk, b, k0, nk, g, p, act);
  }
  direct_row_kb<T, NK>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act);
}

template <typename T>
void direct_rows(T* y_n, const T* xp, index_t Hp, index_t Wp, const T* wpk, const T* b, const Conv2dGeom& g,
                 index_t nkb, index_t kb, index_t p, ConvAct act) {
  index_t k0, k1;
  direct_block(g, nkb, kb, k0, k1);
  const T* wblk = wpk + k0 * g.C * g.R * g.S;  // block kb starts after the channels before it
  direct_rows_n<T, kDirect.KB>(y_n, xp, Hp, Wp, wblk, b, k0, k1 - k0, g, p, act);
}

// Zero-padded copy of image x_n into xp [C][Hp][Wp]; xp(0,0) = x(-pt, -pl).
template <typename T>
void pad_image(T* xp, const T* x_n, const Conv2dGeom& g, index_t Hp, index_t Wp) {
  for (index_t c = 0; c < g.C; ++c)
    for (index_t i = 0; i < Hp; ++i) {
      T* dst = xp + (c * Hp + i) * Wp;
      const index_t h = i - g.pt;
      if (h < 0 || h >= g.H) {
        std::memset(dst, 0, sizeof(T) * Wp);
        continue;
      }
      const T* src = x_n + (c * g.H + h) * g.W;
      const index_t lo = imin(imax(g.pl, 0), Wp);               // dst columns before the data
      const index_t w0 = imax(-g.pl, 0);                         // first source column used
      const index_t cnt = imax(0, imin(g.W - w0, Wp - lo));
      std::memset(dst, 0, sizeof(T) * lo);
      if (cnt > 0) std::memcpy(dst + lo, src + w0, sizeof(T) * cnt);
      if (lo + cnt < Wp) std::memset(dst + lo + cnt, 0, sizeof(T) * (Wp - lo - cnt));
    }
}

}  // namespace

namespace {

// Repack filters for direct_row: per channel block [k0, k1), [C][R][S][k1 - k0] at wpk + k0*CRS.
// flip: w holds (C, K, R, S) filters of the convolution this one is the transpose of; use
// w[c, k, R-1-r, S-1-s] as filter (k, c, r, s) (backward to the input as a forward convolution).
template <typename T>
void direct_pack(T* wpk, const T* w, const Conv2dGeom& g, index_t nkb, bool flip) {
  const index_t RS = g.R * g.S, CRS = g.C * RS;
  for (index_t kb = 0; kb < nkb; ++kb) {
    index_t k0, k1;
    direct_block(g, nkb, kb, k0, k1);
    const index_t nk = k1 - k0;
    for (index_t c = 0; c < g.C; ++c)
      for (index_t j = 0; j < RS; ++j)
        for (index_t kk = 0; kk < nk; ++kk) {
          const index_t k = k0 + kk;
          wpk[k0 * CRS + (c * RS + j) * nk + kk] = flip ? w[(c * g.K + k) * RS + (RS - 1 - j)] : w[(k * g.C + c) * RS + j];
        }
  }
}

// y = act(direct(x, w) + b) for the geometry g (stride, dilation and padding of any sign).
template <typename T>
void direct_forward(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act, bool flip) {
  constexpr int L = VecOf<T>::L, QV = kDirect.QV;
  const index_t nqb = ceil_div(g.Q, L * QV) * QV;
  const index_t Hp = (g.P - 1) * g.sh + (g.R - 1) * g.dh + 1;
  const index_t Wp = (nqb * L - 1) * g.sw + (g.S - 1) * g.dw + 1;  // vector reads stay inside
  const index_t CRS = g.C * g.R * g.S;
  const index_t nkb = ceil_div(g.K, kDirect.KB);
  T* wpk = static_cast<T*>(conv_scratch(sizeof(T) * g.K * CRS, 0));
  direct_pack(wpk, w, g, nkb, flip);
  const index_t img = g.C * Hp * Wp;
  const double work = 2.0 * g.K * CRS * g.P * g.Q;  // flops per image
  const int nt = threads_for(work * g.N, 2e5);
  const index_t x_img = g.C * g.H * g.W, y_img = g.K * g.P * g.Q;
  if (g.N >= nt) {
    T* pads = static_cast<T*>(conv_scratch(sizeof(T) * img * nt, 1));
    parallel_for(
        nt, g.N,
        [&](index_t n, int tid) {
          T* xp = pads + img * tid;
          pad_image(xp, x + n * x_img, g, Hp, Wp);
          for (index_t kb = 0; kb < nkb; ++kb)
            for (index_t p = 0; p < g.P; ++p) direct_rows(y + n * y_img, xp, Hp, Wp, wpk, b, g, nkb, kb, p, act);
        },
        1);
  } else {
    // Few images: the (channel block, output row) pairs of one image in parallel.
    T* xp = static_cast<T*>(conv_scratch(sizeof(T) * img, 1));
    for (index_t n = 0; n < g.N; ++n) {
      pad_image(xp, x + n * x_img, g, Hp, Wp);
      parallel_for(nt, nkb * g.P, [&](index_t i, int) {
        direct_rows(y + n * y_img, xp, Hp, Wp, wpk, b, g, nkb, i / g.P, i % g.P, act);
      });
    }
  }
}

}  // namespace

template <typename T>
void conv2d_forward_direct_impl(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act) {
  direct_forward(y, x, w, b, g, act, false);
}

// direct backward to the input.
// Stride 1: dx is the forward convolution of dy (K channels) with the flipped, transposed filters
//   dx[n,c,h,v] = sum_{k,r',s'} w[k,c,R-1-r',S-1-s'] * dy[n,k, h + r'*dh - ((R-1)*dh - pt), ...]
// so it runs the direct forward tile (padding (R-1)*dh - pt, which may be negative).
// Other strides scatter every dy[n,k,p,q] * w[k,c,r,s] into a padded dx plane:
//   dxp[p*sh + r*dh, q*sw + s*dw] += w[k,c,r,s] * dy[n,k,p,q];  dx = interior of dxp   (dx =)
template <typename T>
void conv2d_backward_input_direct_impl(T* dx, const T* dy, const T* w, const Conv2dGeom& g) {
  if (g.sh == 1 && g.sw == 1) {
    const Conv2dGeom t = backward_input_as_forward(g);
    direct_forward<T>(dx, dy, w, nullptr, t, ConvAct::none, true);
    return;
  }
  const index_t Hp = (g.P - 1) * g.sh + (g.R - 1) * g.dh + 1;
  const index_t Wp = (g.Q - 1) * g.sw + (g.S - 1) * g.dw + 1;
  const index_t planes = g.N * g.C;
  const int nt = threads_for(2.0 * planes * g.K * g.R * g.S * g.P * g.Q, 2e5);
  T* bufs = static_cast<T*>(conv_scratch(sizeof(T) * Hp * Wp * nt, 0));
  parallel_for(
      nt, planes,
      [&](index_t nc, int tid) {
        const index_t n = nc / g.C, c = nc % g.C;
        T* dxp = bufs + Hp * Wp * tid;
        std::memset(dxp, 0, sizeof(T) * Hp * Wp);
        for (index_t k = 0; k < g.K; ++k) {
          const T* dyk = dy + (n * g.K + k) * g.P * g.Q;
          const T* wk = w + (k * g.C + c) * g.R * g.S;
          for (index_t p = 0; p < g.P; ++p) {
            const T* dyrow = dyk + p * g.Q;
            for (index_t r = 0; r < g.R; ++r) {
              T* drow = dxp + (p * g.sh + r * g.dh) * Wp;
              for (index_t s = 0; s < g.S; ++s) {
                const T wv = wk[r * g.S + s];
                T* d = drow + s * g.dw;
                if (g.sw == 1) {
                  for (index_t q = 0; q < g.Q; ++q) d[q] += wv * dyrow[q];
                } else {
                  for (index_t q = 0; q < g.Q; ++q) d[q * g.sw] += wv * dyrow[q];
                }
              }
            }
          }
        }
        T* dxc = dx + nc * g.H * g.W;
        for (index_t h = 0; h < g.H; ++h) {
          const index_t i = h + g.pt;
          for (index_t ww = 0; ww < g.W; ++ww) {
            const index_t j = ww + g.pl;
            dxc[h * g.W + ww] = (i >= 0 && i < Hp && j >= 0 && j < Wp) ? dxp[i * Wp + j] : T(0);
          }
        }
      },
      1);
}

// ---------------------------------------------------------------------------------------------
// im2col for output rows [p0, p0+np) of one image:
//   col[(c*R + r)*S + s][(p-p0)*Q + q] = x_n[c, p*sh + r*dh - pt, q*sw + s*dw - pl]  (0 outside)
// ld: the row stride of col (np*Q when 0).
// d[0, n) = s[0, n) by vectors: the runs im2col copies are a row of the output, often shorter
// than a cache line (Q = 14 on the documents' CNN), where a memcpy call cost more than the copy
// (~7% of that CNN's training step went to im2col's memcpy calls on Zen 4). A run of at least one
// vector ends with a vector moved back to end at n (its first lanes copied twice, the same
// values); a shorter one is one masked load and store.
template <typename T>
PYDL_VINLINE void copy_run(T* d, const T* s, index_t n) {
  constexpr index_t L = VecOf<T>::L;
  if (n >= L) {
    index_t i = 0;
    for (; i + L <= n; i += L) vstore<T>(d + i, vload<T>(s + i));
    if (i < n) vstore<T>(d + n - L, vload<T>(s + n - L));
  } else if (n > 0) {
    vstore_n<T>(d, vload_n<T>(s, static_cast<int>(n)), static_cast<int>(n));
  }
}

template <typename T>
void im2col_rows(T* col, const T* x_n, const Conv2dGeom& g, index_t p0, index_t np, index_t ld = 0) {
  const index_t Q = g.Q;
  if (ld == 0) ld = np * Q;
  for (index_t c = 0; c < g.C; ++c)
    for (index_t r = 0; r < g.R; ++r)
      for (index_t s = 0; s < g.S; ++s) {
        T* dst = col + ((c * g.R + r) * g.S + s) * ld;
        const index_t woff = s * g.dw - g.pl;
        // valid q: 0 <= q*sw + woff < W
        const index_t qlo = woff >= 0 ? 0 : imin(Q, ceil_div(-woff, g.sw));
        const index_t qhi = imax(qlo, imin(Q, woff < g.W ? (g.W - 1 - woff) / g.sw + 1 : 0));
        for (index_t p = p0; p < p0 + np; ++p) {
          T* d = dst + (p - p0) * Q;
          const index_t h = p * g.sh + r * g.dh - g.pt;
          if (h < 0 || h >= g.H) {
            std::memset(d, 0, sizeof(T) * Q);
            continue;
          }
          const T* src = x_n + (c * g.H + h) * g.W + woff;
          for (index_t q = 0; q < qlo; ++q) d[q] = T(0);
          if (g.sw == 1) {
            copy_run(d + qlo, src + qlo, qhi - qlo);
          } else {
            for (index_t q = qlo; q < qhi; ++q) d[q] = src[q * g.sw];
          }
          for (index_t q = qhi; q < Q; ++q) d[q] = T(0);
        }
      }
}

// dx_n[c, p*sh + r*dh - pt, q*sw + s*dw - pl] += col[(c*R + r)*S + s][(p-p0)*Q + q]   (dx +=)
template <typename T>
void col2im_rows(T* dx_n, const T* col, const Conv2dGeom& g, index_t p0, index_t np) {
  const index_t Q = g.Q, ld = np * Q;
  for (index_t c = 0; c < g.C; ++c)
    for (index_t r = 0; r < g.R; ++r)
      for (index_t s = 0; s < g.S; ++s) {
        const T* srcc = col + ((c * g.R + r) * g.S + s) * ld;
        const index_t woff = s * g.dw - g.pl;
        const index_t qlo = woff >= 0 ? 0 : imin(Q, ceil_div(-woff, g.sw));
        const index_t qhi = imax(qlo, imin(Q, woff < g.W ? (g.W - 1 - woff) / g.sw + 1 : 0));
        for (index_t p = p0; p < p0 + np; ++p) {
          const index_t h = p * g.sh + r * g.dh - g.pt;
          if (h < 0 || h >= g.H) continue;
          const T* sr = srcc + (p - p0) * Q;
          T* d = dx_n + (c * g.H + h) * g.W + woff;
          if (g.sw == 1) {
            for (index_t q = qlo; q < qhi; ++q) d[q] += sr[q];
          } else {
            for (index_t q = qlo; q < qhi; ++q) d[q * g.sw] += sr[q];
          }
        }
      }
}

namespace {

// Output rows per im2col chunk: the [C*R*S, rows*Q] buffer stays around 1 MiB.
inline index_t im2col_chunk_rows(const Conv2dGeom& g, std::size_t elem) {
  const index_t crs = g.C * g.R * g.S;
  const index_t target = static_cast<index_t>((std::size_t(1) << 20) / elem);
  return imax(1, imin(g.P, target / imax(1, crs * g.Q)));
}

inline bool im2col_is_identity(const Conv2dGeom& g) {
  return g.R == 1 && g.S == 1 && g.sh == 1 && g.sw == 1 && g.pt == 0 && g.pl == 0 && g.P == g.H && g.Q == g.W;
}

template <typename T>
void bias_act_rows(T* y_n, const T* b, const Conv2dGeom& g, index_t off, index_t cnt, ConvAct act) {
  if (!b && act == ConvAct::none) return;
  const index_t PQ = g.P * g.Q;
  for (index_t k = 0; k < g.K; ++k) {
    T* yk = y_n + k * PQ + off;
    const T bk = b ? b[k] : T(0);
    if (act == ConvAct::relu) {
      for (index_t i = 0; i < cnt; ++i) {
        const T v = yk[i] + bk;
        yk[i] = v < T(0) ? T(0) : v;
      }
    } else {
      for (index_t i = 0; i < cnt; ++i) yk[i] += bk;
    }
  }
}

// y_n rows [p0, p0+np) = W [K, CRS] * col [CRS, np*Q], then bias and activation.
template <typename T>
void im2col_forward_chunk(T* y_n, T* col, const T* x_n, const T* w, const T* b, const Conv2dGeom& g, index_t p0,
                          index_t np, ConvAct act) {
  const index_t CRS = g.C * g.R * g.S, PQ = g.P * g.Q, cols = np * g.Q;
  const T* B = col;
  index_t ldb = cols;
  if (im2col_is_identity(g)) {
    B = x_n + p0 * g.Q;
    ldb = PQ;
  } else {
    im2col_rows(col, x_n, g, p0, np);
  }
  gemm(false, false, g.K, cols, CRS, T(1), w, CRS, B, ldb, T(0), y_n + p0 * g.Q, PQ);
  bias_act_rows(y_n, b, g, p0 * g.Q, cols, act);
}

}  // namespace

template <typename T>
void conv2d_forward_im2col_impl(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act) {
  const index_t rows = im2col_chunk_rows(g, sizeof(T));
  const index_t CRS = g.C * g.R * g.S;
  const index_t colsz = CRS * rows * g.Q;
  const index_t x_img = g.C * g.H * g.W, y_img = g.K * g.P * g.Q;
  const double flops = 2.0 * g.K * CRS * g.P * g.Q;
  const int nt = threads_for(flops * g.N, 4e5);
  if (g.N >= nt && nt > 1) {
    // Images in parallel, one serial GEMM per chunk.
    T* cols = static_cast<T*>(conv_scratch(sizeof(T) * colsz * nt, 0));
    parallel_for(
        nt, g.N,
        [&](index_t n, int tid) {
          T* col = cols + colsz * tid;
          for (index_t p0 = 0; p0 < g.P; p0 += rows)
            im2col_forward_chunk(y + n * y_img, col, x + n * x_img, w, b, g, p0, imin(rows, g.P - p0), act);
        },
        1);
  } else {
    // Few images: the GEMM itself uses the threads.
    T* col = static_cast<T*>(conv_scratch(sizeof(T) * colsz, 0));
    for (index_t n = 0; n < g.N; ++n)
      for (index_t p0 = 0; p0 < g.P; p0 += rows)
        im2col_forward_chunk(y + n * y_img, col, x + n * x_img, w, b, g, p0, imin(rows, g.P - p0), act);
  }
}

// dx_n = col2im(W^T [CRS, K] * dy_n [K, PQ])   (dx =)
template <typename T>
void conv2d_backward_input_im2col_impl(T* dx, const T* dy, const T* w, const Conv2dGeom& g) {
  const index_t rows = im2col_chunk_rows(g, sizeof(T));
  const index_t CRS = g.C * g.R * g.S, PQ = g.P * g.Q;
  const index_t colsz = CRS * rows * g.Q;
  const index_t x_img = g.C * g.H * g.W, y_img = g.K * PQ;
  const int nt = threads_for(2.0 * g.K * CRS * PQ * g.N, 4e5);
  const bool ident = im2col_is_identity(g);
  auto one_image = [&](index_t n, T* col) {
    T* dx_n = dx + n * x_img;
    const T* dy_n = dy + n * y_img;
    if (ident) {  // 1x1, stride 1, no padding: dx_n [C, HW] = W^T [C, K] * dy_n [K, HW]
      gemm(true, false, g.C, PQ, g.K, T(1), w, CRS, dy_n, PQ, T(0), dx_n, PQ);
      return;
    }
    std::memset(dx_n, 0, sizeof(T) * x_img);
    for (index_t p0 = 0; p0 < g.P; p0 += rows) {
      const index_t np = imin(rows, g.P - p0);
      gemm(true, false, CRS, np * g.Q, g.K, T(1), w, CRS, dy_n + p0 * g.Q, PQ, T(0), col, np * g.Q);
      col2im_rows(dx_n, col, g, p0, np);
    }
  };
  if (g.N >= nt && nt > 1) {
    T* cols = static_cast<T*>(conv_scratch(sizeof(T) * colsz * nt, 0));
    parallel_for(nt, g.N, [&](index_t n, int tid) { one_image(n, cols + colsz * tid); }, 1);
  } else {
    T* col = static_cast<T*>(conv_scratch(sizeof(T) * colsz, 0));
    for (index_t n = 0; n < g.N; ++n) one_image(n, col);
  }
}

// ---------------------------------------------------------------------------------------------
// Weight gradient
//   dW[k, j] = sum_n sum_{pq} dy_n[k, pq] * col_n[j, pq],  j = (c*R + r)*S + s;
//   db[k] = sum_{n,p,q} dy[n,k,p,q]                                                       (=)
// Fixed reduction order, whatever the thread count: the images are cut into dw_groups(N) groups
// of consecutive images (a function of N alone); each group sums its images in order into its own
// partial, then dW = ((part_0 + part_1) + part_2) + ... . Threads take whole groups.

// Groups of images with their own partial dW: 8 keep 2..8 threads busy (4 groups each on 2) and
// cost 8 partials of K*CRS to add up (N32 C64 K64 3x3: 1.2 MB, ~0.1 ms of a ~100 ms dW).
inline index_t dw_groups(index_t N) { return imin(N, 8); }

// sum_i d[i] in 4 x L interleaved partial sums (a scalar running sum is one dependent add per
// element; one vector is one dependent add per L), then the vectors, the lanes and the tail.
template <typename T>
inline T plane_sum(const T* d, index_t n) {
  constexpr int L = VecOf<T>::L;
  Vec<T> a0 = {}, a1 = {}, a2 = {}, a3 = {};
  index_t i = 0;
  for (; i + 4 * L <= n; i += 4 * L) {
    a0 += vload<T>(d + i);
    a1 += vload<T>(d + i + L);
    a2 += vload<T>(d + i + 2 * L);
    a3 += vload<T>(d + i + 3 * L);
  }
  for (; i + L <= n; i += L) a0 += vload<T>(d + i);
  const Vec<T> acc = (a0 + a1) + (a2 + a3);
  T s = T(0);
  for (int l = 0; l < L; ++l) s += acc[l];
  for (; i < n; ++i) s += d[i];
  return s;
}

// Small C*R*S (a first layer: C1 3x3 has 9 columns): dW is a K x CRS grid of long dot products
// (depth PQ per image), too thin for the GEMM (packing dy costs as much as the multiply: N128
// C1 28x28 K32 ~5 ms either way). Here a KD x JD tile of dot products stays in vector accumulators
// over one image's depth: per depth vector JD col loads, KD dy loads, KD*JD FMAs.
//   avx512: 8 x 3 = 24 accumulators + 3 col + 1 dy = 28 of 32 zmm
//   avx2:   4 x 3 = 12 accumulators + 3 col + 1 dy = 16 of 16 ymm
//   sse2:   3 x 3 =  9 accumulators + 3 col + 1 dy + 1 product = 14 of 16 xmm
struct DwTile {
  int KD, JD;
};
//                                        KD JD
inline constexpr DwTile kDwAvx512 = {8, 3};
inline constexpr DwTile kDwAvx2   = {4, 3};
inline constexpr DwTile kDwSse2   = {3, 3};
inline constexpr DwTile kDw = kVecBytes == 64 ? kDwAvx512 : kVecBytes == 32 ? kDwAvx2 : kDwSse2;
static_assert(kDw.KD * kDw.JD + kDw.JD + 1 + kFmaTemp <= kVecRegs,
              "dW tile: accumulators + operands exceed the register file");
inline constexpr index_t kDwSmallCRS = 32;  // the tile path for C*R*S up to this

// accv[k][j] (vectors) += lane-wise sum over one image of dy_n[k, :] * col[j, :] for the tile
// k in [k0, k0+KD), j in [j0, j0+JD). col rows have stride ld >= PQ rounded up to L, zero past
// PQ, so the last partial vector of dy (read lane by lane) multiplies zeros.
template <typename T, int KD, int JD>
void dw_tile(Vec<T>* accv, const T* dy_n, const T* col, index_t ld, index_t PQ, index_t CRS, index_t k0,
             index_t j0) {
  constexpr int L = VecOf<T>::L;
  Vec<T> acc[KD][JD];
  for (int a = 0; a < KD; ++a)
    for (int j = 0; j < JD; ++j) acc[a][j] = Vec<T>{};
  const T* cb = col + j0 * ld;
  const T* db = dy_n + k0 * PQ;
  const index_t full = PQ / L * L;
  index_t d = 0;
  for (; d < full; d += L) {
    Vec<T> cv[JD];
    for (int j = 0; j < JD; ++j) cv[j] = vload<T>(cb + j * ld + d);
    for (int a = 0; a < KD; ++a) {
      const Vec<T> dv = vload<T>(db + a * PQ + d);
      for (int j = 0; j < JD; ++j) acc[a][j] += dv * cv[j];
    }
  }
  if (d < PQ) {
    Vec<T> cv[JD];
    for (int j = 0; j < JD; ++j) cv[j] = vload<T>(cb + j * ld + d);
    for (int a = 0; a < KD; ++a) {
      const Vec<T> dv = vload_n<T>(db + a * PQ + d, static_cast<int>(PQ - d));
      for (int j = 0; j < JD; ++j) acc[a][j] += dv * cv[j];
    }
  }
  for (int a = 0; a < KD; ++a)
    for (int j = 0; j < JD; ++j) accv[(k0 + a) * CRS + j0 + j] += acc[a][j];
}

template <typename T, int KD, int JD>
void dw_tile_n(Vec<T>* accv, const T* dy_n, const T* col, index_t ld, index_t PQ, index_t CRS, index_t k0,
               index_t j0, index_t nk, index_t nj) {
  if constexpr (KD > 1) {
    if (nk < KD) return dw_tile_n<T, KD - 1, JD>(accv, dy_n, col, ld, PQ, CRS, k0, j0, nk, nj);
  }
  if constexpr (JD > 1) {
    if (nj < JD) return dw_tile_n<T, KD, JD - 1>(accv, dy_n, col, ld, PQ, CRS, k0, j0, nk, nj);
  }
  dw_tile<T, KD, JD>(accv, dy_n, col, ld, PQ, CRS, k0, j0);
}

// One group of images [n0, n1) by the tile path: part (K, CRS) = sum over the group.
template <typename T>
void dw_small_group(T* part, Vec<T>* accv, T* col, const T* dy, const T* x, const Conv2dGeom& g, index_t n0,
                    index_t n1) {
  constexpr int L = VecOf<T>::L;
  const index_t CRS = g.C * g.R * g.S, PQ = g.P * g.Q, ld = ceil_div(PQ, L) * L;
  const index_t x_img = g.C * g.H * g.W, y_img = g.K * PQ;
  for (index_t i = 0; i < g.K * CRS; ++i) accv[i] = Vec<T>{};
  for (index_t n = n0; n < n1; ++n) {
    im2col_rows(col, x + n * x_img, g, 0, g.P, ld);
    for (index_t j = 0; j < CRS; ++j)
      for (index_t i = PQ; i < ld; ++i) col[j * ld + i] = T(0);
    for (index_t k0 = 0; k0 < g.K; k0 += kDw.KD)
      for (index_t j0 = 0; j0 < CRS; j0 += kDw.JD)
        dw_tile_n<T, kDw.KD, kDw.JD>(accv, dy + n * y_img, col, ld, PQ, CRS, k0, j0, imin(kDw.KD, g.K - k0),
                                     imin(kDw.JD, CRS - j0));
  }
  for (index_t i = 0; i < g.K * CRS; ++i) {
    T s = T(0);
    for (int l = 0; l < L; ++l) s += accv[i][l];
    part[i] = s;
  }
}

template <typename T>
void conv2d_backward_weight_im2col_impl(T* dw, T* db, const T* dy, const T* x, const Conv2dGeom& g) {
  constexpr int L = VecOf<T>::L;
  const index_t CRS = g.C * g.R * g.S, PQ = g.P * g.Q;
  const index_t x_img = g.C * g.H * g.W, y_img = g.K * PQ;
  const index_t wsz = g.K * CRS;
  if (g.N == 0) {  // empty batch: the sums are zero
    std::memset(dw, 0, sizeof(T) * wsz);
    if (db) std::memset(db, 0, sizeof(T) * g.K);
    return;
  }
  const index_t ngr = dw_groups(g.N);
  const int nt = threads_for(2.0 * g.K * CRS * PQ * g.N, 4e5);
  // Threads over groups with serial kernels, or (fewer groups than threads) groups in turn with
  // the GEMM using the threads: the same sums in the same order either way.
  const bool outer = nt > 1 && ngr >= nt;
  const int nto = outer ? nt : 1;
  // Partial dW per group, then (db) the group's partial db: dy_n is summed right after the
  // group used it, while it is still in cache (a separate pass over dy took 1.8 of the 4.5 ms
  // of N128 C1 28x28 K32, 1 thread).
  T* parts = static_cast<T*>(conv_scratch(sizeof(T) * (wsz + g.K) * ngr, 2));
  T* dbparts = parts + wsz * ngr;
  auto group_db = [&](index_t gi) {
    if (!db) return;
    T* dbp = dbparts + gi * g.K;
    for (index_t k = 0; k < g.K; ++k) dbp[k] = T(0);
    for (index_t n = g.N * gi / ngr; n < g.N * (gi + 1) / ngr; ++n)
      for (index_t k = 0; k < g.K; ++k) dbp[k] += plane_sum(dy + n * y_img + k * PQ, PQ);
  };
  const bool small = CRS <= kDwSmallCRS;
  // Per image (and chunk of output rows) the partial gets dy cols^T, as dW (K, CRS), or
  // cols dy^T, as dW^T (CRS, K), whichever puts the longer side on the GEMM's rows: 1 thread,
  // N128 C32 14x14 K64 (CRS 288) 8.7 -> 7.1 ms transposed. The result is transposed at the end.
  const bool tr = !small && CRS > g.K;
  if (small) {
    const index_t ld = ceil_div(PQ, L) * L;
    const index_t colsz = CRS * ld, accsz = wsz * L;
    T* cols = static_cast<T*>(conv_scratch(sizeof(T) * (colsz + accsz) * nto, 0));
    parallel_for(
        nto, ngr,
        [&](index_t gi, int tid) {
          T* base = cols + (colsz + accsz) * tid;
          Vec<T>* accv = reinterpret_cast<Vec<T>*>(base);  // accsz is a whole number of vectors
          dw_small_group(parts + gi * wsz, accv, base + accsz, dy, x, g, g.N * gi / ngr, g.N * (gi + 1) / ngr);
          group_db(gi);
        },
        1);
  } else {
    // GEMM depth per call: one image cut into chunks of output rows (col ~1 MiB), or, for small
    // images, m whole images side by side in col [CRS][m*PQ] with their dy rows copied next to
    // each other in dyb [K][m*PQ], so each call multiplies over ~1024 columns rather than PQ.
    const index_t rows = im2col_chunk_rows(g, sizeof(T));
    const index_t m = PQ >= 512 ? 1 : imax(1, imin(g.N, 1024 / PQ));
    const index_t depth = m > 1 ? m * PQ : rows * g.Q;
    const index_t colsz = CRS * depth, dybsz = m > 1 ? g.K * depth : 0;
    const bool ident = im2col_is_identity(g);
    T* cols = static_cast<T*>(conv_scratch(sizeof(T) * (colsz + dybsz) * nto, 0));
    auto group_dw = [&](index_t gi, int tid) {
      T* col = cols + (colsz + dybsz) * tid;
      T* dyb = col + colsz;
      T* acc = parts + gi * wsz;
      std::memset(acc, 0, sizeof(T) * wsz);
      const index_t n0 = g.N * gi / ngr, n1 = g.N * (gi + 1) / ngr;
      auto mul = [&](const T* dyp, index_t ldd, const T* B, index_t ldb, index_t cnt) {
        if (tr) gemm(false, true, CRS, g.K, cnt, T(1), B, ldb, dyp, ldd, T(1), acc, g.K);
        else gemm(false, true, g.K, CRS, cnt, T(1), dyp, ldd, B, ldb, T(1), acc, CRS);
      };
      if (m > 1) {
        for (index_t nb = n0; nb < n1; nb += m) {
          const index_t mm = imin(m, n1 - nb), cnt = mm * PQ;
          for (index_t i = 0; i < mm; ++i) {
            im2col_rows(col + i * PQ, x + (nb + i) * x_img, g, 0, g.P, cnt);
            for (index_t k = 0; k < g.K; ++k)
              std::memcpy(dyb + k * cnt + i * PQ, dy + (nb + i) * y_img + k * PQ, sizeof(T) * PQ);
          }
          mul(dyb, cnt, col, cnt, cnt);
        }
        return;
      }
      for (index_t n = n0; n < n1; ++n) {
        const T* x_n = x + n * x_img;
        const T* dy_n = dy + n * y_img;
        for (index_t p0 = 0; p0 < g.P; p0 += rows) {
          const index_t np = imin(rows, g.P - p0), cnt = np * g.Q;
          if (ident) {
            mul(dy_n + p0 * g.Q, PQ, x_n + p0 * g.Q, PQ, cnt);
          } else {
            im2col_rows(col, x_n, g, p0, np);
            mul(dy_n + p0 * g.Q, PQ, col, cnt, cnt);
          }
        }
      }
    };
    parallel_for(
        nto, ngr,
        [&](index_t gi, int tid) {
          group_dw(gi, tid);
          group_db(gi);
        },
        1);
  }
  // dw = sum of the partials in group order (transposed back when they are (CRS, K)).
  const int ntr = threads_for(static_cast<double>(wsz) * ngr, 1e5);
  parallel_for(ntr, g.K, [&](index_t k, int) {
    for (index_t j = 0; j < CRS; ++j) {
      const index_t e = tr ? j * g.K + k : k * CRS + j;
      T s = parts[e];
      for (index_t gi = 1; gi < ngr; ++gi) s += parts[gi * wsz + e];
      dw[k * CRS + j] = s;
    }
  });
  if (db) {
    for (index_t k = 0; k < g.K; ++k) {
      T t = dbparts[k];
      for (index_t gi = 1; gi < ngr; ++gi) t += dbparts[gi * g.K + k];
      db[k] = t;
    }
  }
}

}  // namespace PYDL_KNS
}  // namespace pydl
