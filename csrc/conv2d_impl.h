// Convolution loops compiled once per ISA. Included by conv2d.cpp (portable, float and double),
// conv2d_avx2.cpp and conv2d_avx512.cpp (float), each defining PYDL_KNS to its own namespace
// so the builds never merge. See conv2d.h for the formulas and conv2d_isa.h for the entries.
// Sizes are validated by the caller (conv2d.cpp) before any of this runs: nothing here throws
// inside a parallel region (buffers are allocated before each region).
#ifndef PYDL_KNS
#error "define PYDL_KNS before including conv2d_impl.h"
#endif

#include <cstring>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#ifdef _OPENMP
#include <omp.h>
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

// ---------------------------------------------------------------------------------------------
// direct: y[n,k,p,q0:q0+L] for KB output channels at once, accumulators in registers.
// xp is one zero-padded image [C][Hp][Wp] whose (0,0) is input position (-pt, -pl).
// wpk holds the filters repacked as [K/KBmax blocks][C][R][S][KB] so the broadcasts of one tap
// are adjacent.
#ifndef PYDL_DIRECT_QV
#define PYDL_DIRECT_QV 1  // output vectors per step along the width (2 on AVX-512: 32 registers)
#endif
constexpr int kDirectQV = PYDL_DIRECT_QV;

// UNIT: stride 1 and dilation 1 along the width (plain vector loads); SS > 0: the filter width
// is the compile-time constant SS, so the tap loop unrolls (the 3x3 case, where the per-row loop
// set-up would otherwise cost more than its 3 taps).
template <typename T, int KB, bool UNIT, int SS>
void direct_row(T* y_n, const T* xp, index_t Hp, index_t Wp, const T* wblk, const T* b, index_t k0,
                const Conv2dGeom& g, index_t p, ConvAct act) {
  constexpr int L = VecOf<T>::L, QV = kDirectQV;
  const index_t C = g.C, R = g.R, S = SS > 0 ? SS : g.S, Q = g.Q, PQ = g.P * g.Q;
  const index_t sw = UNIT ? 1 : g.sw, dw = UNIT ? 1 : g.dw;
  for (index_t q0 = 0; q0 < Q; q0 += QV * L) {
    Vec<T> acc[KB][QV];
    for (int kk = 0; kk < KB; ++kk)
      for (int v = 0; v < QV; ++v) acc[kk][v] = vset1<T>(b ? b[k0 + kk] : T(0));
    const T* wt = wblk;
    for (index_t c = 0; c < C; ++c) {
      for (index_t r = 0; r < R; ++r) {
        const T* xrow = xp + (c * Hp + p * g.sh + r * g.dh) * Wp + q0 * sw;
        for (index_t s = 0; s < S; ++s, wt += KB) {
          Vec<T> xv[QV];
          for (int v = 0; v < QV; ++v) {
            if (UNIT) {
              xv[v] = vload<T>(xrow + s + v * L);
            } else {
              const T* xs = xrow + s * dw + v * L * sw;
              for (int l = 0; l < L; ++l) xv[v][l] = xs[l * sw];
            }
          }
          for (int kk = 0; kk < KB; ++kk)
            for (int v = 0; v < QV; ++v) acc[kk][v] += wt[kk] * xv[v];
        }
      }
    }
    for (int v = 0; v < QV; ++v) {
      const index_t nq = imin(L, Q - q0 - v * L);
      if (nq <= 0) break;
      for (int kk = 0; kk < KB; ++kk) {
        Vec<T> val = act == ConvAct::relu ? vrelu(acc[kk][v]) : acc[kk][v];
        T* dst = y_n + (k0 + kk) * PQ + p * Q + q0 + v * L;
        if (nq == L) vstore<T>(dst, val);
        else vstore_n<T>(dst, val, static_cast<int>(nq));
      }
    }
  }
}

constexpr int kDirectKB = 8;

template <typename T, int KB>
void direct_row_kb(T* y_n, const T* xp, index_t Hp, index_t Wp, const T* wblk, const T* b, index_t k0,
                   const Conv2dGeom& g, index_t p, ConvAct act) {
  if (g.sw == 1 && g.dw == 1) {
    if (g.S == 3) direct_row<T, KB, true, 3>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act);
    else direct_row<T, KB, true, 0>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act);
  } else {
    direct_row<T, KB, false, 0>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act);
  }
}

template <typename T>
void direct_rows(T* y_n, const T* xp, index_t Hp, index_t Wp, const T* wpk, const T* b, const Conv2dGeom& g,
                 index_t kb, index_t p, ConvAct act) {
  const index_t k0 = kb * kDirectKB;
  const index_t nk = imin(kDirectKB, g.K - k0);
  const T* wblk = wpk + k0 * g.C * g.R * g.S;  // block kb starts after kb full blocks
  switch (nk) {
    case 8: direct_row_kb<T, 8>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act); break;
    case 7: direct_row_kb<T, 7>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act); break;
    case 6: direct_row_kb<T, 6>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act); break;
    case 5: direct_row_kb<T, 5>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act); break;
    case 4: direct_row_kb<T, 4>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act); break;
    case 3: direct_row_kb<T, 3>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act); break;
    case 2: direct_row_kb<T, 2>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act); break;
    default: direct_row_kb<T, 1>(y_n, xp, Hp, Wp, wblk, b, k0, g, p, act); break;
  }
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

template <typename T>
void conv2d_forward_direct_impl(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act) {
  constexpr int L = VecOf<T>::L;
  const index_t nqb = ceil_div(g.Q, L * kDirectQV) * kDirectQV;
  const index_t Hp = (g.P - 1) * g.sh + (g.R - 1) * g.dh + 1;
  const index_t Wp = (nqb * L - 1) * g.sw + (g.S - 1) * g.dw + 1;  // vector reads stay inside
  const index_t CRS = g.C * g.R * g.S;
  const index_t nkb = ceil_div(g.K, kDirectKB);
  // Repack w [K][C][R][S] -> per block of KB channels [C][R][S][KB].
  T* wpk = static_cast<T*>(conv_scratch(sizeof(T) * g.K * CRS, 0));
  for (index_t kb = 0; kb < nkb; ++kb) {
    const index_t k0 = kb * kDirectKB, nk = imin(kDirectKB, g.K - k0);
    for (index_t j = 0; j < CRS; ++j)
      for (index_t kk = 0; kk < nk; ++kk) wpk[k0 * CRS + j * nk + kk] = w[(k0 + kk) * CRS + j];
  }
  const index_t img = g.C * Hp * Wp;
  const double work = 2.0 * g.K * CRS * g.P * g.Q;  // flops per image
  const int nt = threads_for(work * g.N, 2e5);
  const index_t x_img = g.C * g.H * g.W, y_img = g.K * g.P * g.Q;
  if (g.N >= nt) {
    T* pads = static_cast<T*>(conv_scratch(sizeof(T) * img * nt, 1));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (index_t n = 0; n < g.N; ++n) {
#ifdef _OPENMP
      const int tid = omp_get_thread_num();
#else
      const int tid = 0;
#endif
      T* xp = pads + img * tid;
      pad_image(xp, x + n * x_img, g, Hp, Wp);
      for (index_t kb = 0; kb < nkb; ++kb)
        for (index_t p = 0; p < g.P; ++p) direct_rows(y + n * y_img, xp, Hp, Wp, wpk, b, g, kb, p, act);
    }
  } else {
    T* xp = static_cast<T*>(conv_scratch(sizeof(T) * img, 1));
    for (index_t n = 0; n < g.N; ++n) {
      pad_image(xp, x + n * x_img, g, Hp, Wp);
#pragma omp parallel for num_threads(nt) schedule(static) collapse(2)
      for (index_t kb = 0; kb < nkb; ++kb)
        for (index_t p = 0; p < g.P; ++p) direct_rows(y + n * y_img, xp, Hp, Wp, wpk, b, g, kb, p, act);
    }
  }
}

// direct backward to the input: scatter every dy[n,k,p,q] * w[k,c,r,s] into a padded dx plane.
//   dxp[p*sh + r*dh, q*sw + s*dw] += w[k,c,r,s] * dy[n,k,p,q];  dx = interior of dxp   (dx =)
template <typename T>
void conv2d_backward_input_direct_impl(T* dx, const T* dy, const T* w, const Conv2dGeom& g) {
  const index_t Hp = (g.P - 1) * g.sh + (g.R - 1) * g.dh + 1;
  const index_t Wp = (g.Q - 1) * g.sw + (g.S - 1) * g.dw + 1;
  const index_t planes = g.N * g.C;
  const int nt = threads_for(2.0 * planes * g.K * g.R * g.S * g.P * g.Q, 2e5);
  T* bufs = static_cast<T*>(conv_scratch(sizeof(T) * Hp * Wp * nt, 0));
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (index_t nc = 0; nc < planes; ++nc) {
#ifdef _OPENMP
    const int tid = omp_get_thread_num();
#else
    const int tid = 0;
#endif
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
  }
}

// ---------------------------------------------------------------------------------------------
// im2col for output rows [p0, p0+np) of one image:
//   col[(c*R + r)*S + s][(p-p0)*Q + q] = x_n[c, p*sh + r*dh - pt, q*sw + s*dw - pl]  (0 outside)
template <typename T>
void im2col_rows(T* col, const T* x_n, const Conv2dGeom& g, index_t p0, index_t np) {
  const index_t Q = g.Q, ld = np * Q;
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
            if (qhi > qlo) std::memcpy(d + qlo, src + qlo, sizeof(T) * (qhi - qlo));
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

inline int omp_tid() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
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
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (index_t n = 0; n < g.N; ++n) {
      T* col = cols + colsz * omp_tid();
      for (index_t p0 = 0; p0 < g.P; p0 += rows)
        im2col_forward_chunk(y + n * y_img, col, x + n * x_img, w, b, g, p0, imin(rows, g.P - p0), act);
    }
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
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (index_t n = 0; n < g.N; ++n) one_image(n, cols + colsz * omp_tid());
  } else {
    T* col = static_cast<T*>(conv_scratch(sizeof(T) * colsz, 0));
    for (index_t n = 0; n < g.N; ++n) one_image(n, col);
  }
}

// dW [K, CRS] = sum_n dy_n [K, PQ] * col_n^T [PQ, CRS];  db[k] = sum_{n,p,q} dy[n,k,p,q]   (=)
// dw (K, CRS) from the weight-gradient accumulator: acc itself, or its transpose when it is (CRS, K).
template <typename T>
inline void finish_dw(T* dw, const T* acc, index_t crs, index_t kk, bool transposed) {
  if (!transposed) {
    std::memcpy(dw, acc, sizeof(T) * crs * kk);
    return;
  }
  for (index_t k = 0; k < kk; ++k)
    for (index_t j = 0; j < crs; ++j) dw[k * crs + j] = acc[j * kk + k];
}

// sum_i d[i] in L interleaved partial sums (a scalar running sum is one dependent add per
// element; these vectorise), then the lanes and the tail.
template <typename T>
inline T plane_sum(const T* d, index_t n) {
  constexpr int L = VecOf<T>::L;
  Vec<T> acc = {};
  index_t i = 0;
  for (; i + L <= n; i += L) acc += vload<T>(d + i);
  T s = T(0);
  for (int l = 0; l < L; ++l) s += acc[l];
  for (; i < n; ++i) s += d[i];
  return s;
}

template <typename T>
void conv2d_backward_weight_im2col_impl(T* dw, T* db, const T* dy, const T* x, const Conv2dGeom& g) {
  const index_t rows = im2col_chunk_rows(g, sizeof(T));
  const index_t CRS = g.C * g.R * g.S, PQ = g.P * g.Q;
  // Per image (and chunk of output rows) the accumulator gets dy_n cols^T, as dW (K, CRS), or
  // cols dy_n^T, as dW^T (CRS, K), whichever puts the longer side on the GEMM's rows: 1 thread,
  // N128 C32 14x14 K64 (CRS 288) 8.7 -> 7.1 ms transposed, while C1 28x28 K32 (CRS 9) is
  // faster as dW (2.1 vs 2.8 ms). The transposed accumulator is turned into dw at the end.
  const bool tr = CRS > g.K;
  const index_t colsz = CRS * rows * g.Q;
  const index_t x_img = g.C * g.H * g.W, y_img = g.K * PQ;
  const index_t wsz = g.K * CRS;
  const int nt = threads_for(2.0 * g.K * CRS * PQ * g.N, 4e5);
  const bool ident = im2col_is_identity(g);
  auto one_image = [&](index_t n, T* col, T* acc) {
    const T* x_n = x + n * x_img;
    const T* dy_n = dy + n * y_img;
    for (index_t p0 = 0; p0 < g.P; p0 += rows) {
      const index_t np = imin(rows, g.P - p0), cols = np * g.Q;
      const T* B = col;
      index_t ldb = cols;
      if (ident) {
        B = x_n + p0 * g.Q;
        ldb = PQ;
      } else {
        im2col_rows(col, x_n, g, p0, np);
      }
      if (tr)
        gemm(false, true, CRS, g.K, cols, T(1), B, ldb, dy_n + p0 * g.Q, PQ, T(1), acc, g.K);
      else
        gemm(false, true, g.K, CRS, cols, T(1), dy_n + p0 * g.Q, PQ, B, ldb, T(1), acc, CRS);
    }
  };
  if (g.N >= nt && nt > 1) {
    T* cols = static_cast<T*>(conv_scratch(sizeof(T) * colsz * nt, 0));
    T* accs = static_cast<T*>(conv_scratch(sizeof(T) * wsz * nt, 1));
    std::memset(accs, 0, sizeof(T) * wsz * nt);
#pragma omp parallel num_threads(nt)
    {
      const int tid = omp_tid();
      T* col = cols + colsz * tid;
      T* acc = accs + wsz * tid;
#pragma omp for schedule(dynamic, 1)
      for (index_t n = 0; n < g.N; ++n) one_image(n, col, acc);
    }
    for (int t = 1; t < nt; ++t)
      for (index_t i = 0; i < wsz; ++i) accs[i] += accs[wsz * t + i];
    finish_dw(dw, accs, CRS, g.K, tr);
  } else {
    T* col = static_cast<T*>(conv_scratch(sizeof(T) * colsz, 0));
    T* acc = static_cast<T*>(conv_scratch(sizeof(T) * wsz, 1));
    std::memset(acc, 0, sizeof(T) * wsz);
    for (index_t n = 0; n < g.N; ++n) one_image(n, col, acc);
    finish_dw(dw, acc, CRS, g.K, tr);
  }
  if (db) {
    for (index_t k = 0; k < g.K; ++k) db[k] = T(0);
    const int nt2 = threads_for(static_cast<double>(g.K) * PQ * g.N, 1e5);
#pragma omp parallel for num_threads(nt2) schedule(static)
    for (index_t k = 0; k < g.K; ++k) {
      T s = T(0);
      for (index_t n = 0; n < g.N; ++n) s += plane_sum(dy + n * y_img + k * PQ, PQ);
      db[k] = s;
    }
  }
}

}  // namespace PYDL_KNS
}  // namespace pydl
