// Winograd F(m x m, 3x3) loops compiled once per ISA (see winograd.h for the algorithm).
// Included by winograd.cpp (portable, float and double), winograd_avx2.cpp and
// winograd_avx512.cpp (float), each defining PYDL_KNS. Sizes are validated by the caller.
#ifndef PYDL_KNS
#error "define PYDL_KNS before including winograd_impl.h"
#endif

#include <cstdint>
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

inline index_t wg_min(index_t a, index_t b) { return a < b ? a : b; }
inline index_t wg_max(index_t a, index_t b) { return a > b ? a : b; }

// Transform matrices (Lavin & Gray). alpha = m + 2 points: F(2,3) uses 0, 1, -1;
// F(4,3) uses 0, 1, -1, 2, -2 (and infinity).
template <int M>
struct WinoMats;

template <>
struct WinoMats<2> {
  static constexpr int A = 4;
  static constexpr double BT[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
  static constexpr double G[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
  static constexpr double AT[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
};

template <>
struct WinoMats<4> {
  static constexpr int A = 6;
  static constexpr double BT[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                      {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
  static constexpr double G[6][3] = {{1.0 / 4, 0, 0},
                                     {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                     {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                     {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                     {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                     {0, 0, 1}};
  static constexpr double AT[4][6] = {
      {1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
};

#ifndef PYDL_WG_CHUNK_BYTES
#define PYDL_WG_CHUNK_BYTES (3 << 19)
#endif
constexpr index_t kWgChunkBytes = PYDL_WG_CHUNK_BYTES;

inline int wg_tid() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

// U[a*A + b][c][k] = (G g G^T)[a][b] with g = w[k,c] (or w[c,k] flipped 180 degrees).
template <typename T, int M>
void filter_transform(T* U, const T* w, index_t K, index_t C, index_t Kp, bool flip_transpose) {
  using Mt = WinoMats<M>;
  constexpr int A = Mt::A;
  for (index_t i = 0; i < A * A * C * Kp; ++i) U[i] = T(0);  // K..Kp padding stays zero
  const int nt = threads_for(static_cast<double>(K) * C * A * A * 12, 1e5);
#pragma omp parallel for num_threads(nt) schedule(static)
  for (index_t k = 0; k < K; ++k)
    for (index_t c = 0; c < C; ++c) {
      double gk[3][3];
      for (int r = 0; r < 3; ++r)
        for (int s = 0; s < 3; ++s)
          gk[r][s] = flip_transpose ? static_cast<double>(w[(c * K + k) * 9 + (2 - r) * 3 + (2 - s)])
                                    : static_cast<double>(w[(k * C + c) * 9 + r * 3 + s]);
      double t[A][3];
      for (int a = 0; a < A; ++a)
        for (int s = 0; s < 3; ++s) t[a][s] = Mt::G[a][0] * gk[0][s] + Mt::G[a][1] * gk[1][s] + Mt::G[a][2] * gk[2][s];
      for (int a = 0; a < A; ++a)
        for (int b = 0; b < A; ++b) {
          const double u = t[a][0] * Mt::G[b][0] + t[a][1] * Mt::G[b][1] + t[a][2] * Mt::G[b][2];
          U[((a * A + b) * C + c) * Kp + k] = static_cast<T>(u);
        }
    }
}

// Input transform of one channel over a segment of `nrows` tile rows (th0 ..) of one image:
//   d = A x A input tile at rows th*m - pt .., columns u*m - pl ..;  V = B^T d B
// V[(a*A + b) * ldv + i] for tiles i = (th - th0) * nTw + u of the segment.
// Per tile row: gather the A input rows (zero outside the image) into `buf`, transform the rows
// (t = B^T buf, unit stride), then de-interleave the tiles' columns into ph[a][j][i]; finally
// V = ph B for the whole segment, vectorised over its tiles.
template <typename T, int M>
void input_transform_seg(T* V, index_t ldv, const T* xc, const Conv2dGeom& g, index_t th0, index_t nrows,
                         index_t nTw, T* buf, T* t, T* ph) {
  using Mt = WinoMats<M>;
  constexpr int A = Mt::A;
  const index_t Wb = nTw * M + 2;  // strip width
  const index_t nseg = nrows * nTw;
  const index_t lo = wg_min(wg_max(g.pl, 0), Wb);
  const index_t w0 = wg_max(-g.pl, 0);
  const index_t cnt = wg_max(0, wg_min(g.W - w0, Wb - lo));
  for (index_t rr = 0; rr < nrows; ++rr) {
    const index_t h0 = (th0 + rr) * M - g.pt;
    for (int i = 0; i < A; ++i) {
      T* dst = buf + i * Wb;
      const index_t h = h0 + i;
      if (h < 0 || h >= g.H) {
        for (index_t j = 0; j < Wb; ++j) dst[j] = T(0);
        continue;
      }
      const T* src = xc + h * g.W;
      for (index_t j = 0; j < lo; ++j) dst[j] = T(0);
      if (cnt > 0) std::memcpy(dst + lo, src + w0, sizeof(T) * cnt);
      for (index_t j = lo + cnt; j < Wb; ++j) dst[j] = T(0);
    }
#pragma GCC unroll 8
    for (int a = 0; a < A; ++a) {
      T* ta = t + a * Wb;
      bool first = true;
#pragma GCC unroll 8
      for (int i = 0; i < A; ++i) {
        const double cf = Mt::BT[a][i];
        if (cf == 0.0) continue;
        const T c = static_cast<T>(cf);
        const T* bi = buf + i * Wb;
        if (first) {
          for (index_t j = 0; j < Wb; ++j) ta[j] = c * bi[j];
          first = false;
        } else {
          for (index_t j = 0; j < Wb; ++j) ta[j] += c * bi[j];
        }
      }
    }
    for (int a = 0; a < A; ++a) {
      const T* ta = t + a * Wb;
      T* pa = ph + a * A * nseg + rr * nTw;
#pragma GCC unroll 8
      for (int j = 0; j < A; ++j) {
        T* pj = pa + j * nseg;
        for (index_t u = 0; u < nTw; ++u) pj[u] = ta[u * M + j];
      }
    }
  }
  for (int a = 0; a < A; ++a) {
    const T* pa = ph + a * A * nseg;
#pragma GCC unroll 8
    for (int b = 0; b < A; ++b) {
      T* v = V + (a * A + b) * ldv;
      bool first = true;
#pragma GCC unroll 8
      for (int j = 0; j < A; ++j) {
        const double cf = Mt::BT[b][j];
        if (cf == 0.0) continue;
        const T c = static_cast<T>(cf);
        const T* pj = pa + j * nseg;
        if (first) {
          for (index_t i = 0; i < nseg; ++i) v[i] = c * pj[i];
          first = false;
        } else {
          for (index_t i = 0; i < nseg; ++i) v[i] += c * pj[i];
        }
      }
    }
  }
}

// Output transform of one channel over a segment: Y = A^T Mt A (+ bias, activation), clipped to
// the output plane yk. Mk[(a*A + b) * ldm + i] holds tile i of the segment.
template <typename T, int M>
void output_transform_seg(T* yk, const T* Mk, index_t ldm, T bias, ConvAct act, const Conv2dGeom& g, index_t th0,
                          index_t nrows, index_t nTw, T* z, T* yt) {
  using Mt = WinoMats<M>;
  constexpr int A = Mt::A;
  const index_t nseg = nrows * nTw;
  // z[i][b][t] = sum_a AT[i][a] Mk[(a*A + b)][t]
#pragma GCC unroll 8
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
    for (int b = 0; b < A; ++b) {
      T* zz = z + (i * A + b) * nseg;
      bool first = true;
#pragma GCC unroll 8
      for (int a = 0; a < A; ++a) {
        const double cf = Mt::AT[i][a];
        if (cf == 0.0) continue;
        const T c = static_cast<T>(cf);
        const T* mm = Mk + (a * A + b) * ldm;
        if (first) {
          for (index_t u = 0; u < nseg; ++u) zz[u] = c * mm[u];
          first = false;
        } else {
          for (index_t u = 0; u < nseg; ++u) zz[u] += c * mm[u];
        }
      }
    }
  // yt[i][j][t] = act(bias + sum_b AT[j][b] z[i][b][t])
#pragma GCC unroll 8
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 8
    for (int j = 0; j < M; ++j) {
      T* yy = yt + (i * M + j) * nseg;
      for (index_t u = 0; u < nseg; ++u) yy[u] = bias;
#pragma GCC unroll 8
      for (int b = 0; b < A; ++b) {
        const double cf = Mt::AT[j][b];
        if (cf == 0.0) continue;
        const T c = static_cast<T>(cf);
        const T* zz = z + (i * A + b) * nseg;
        for (index_t u = 0; u < nseg; ++u) yy[u] += c * zz[u];
      }
      if (act == ConvAct::relu)
        for (index_t u = 0; u < nseg; ++u) yy[u] = yy[u] < T(0) ? T(0) : yy[u];
    }
  // interleave into the output plane, clipping the edge tiles
  const index_t full = g.Q / M;  // tiles whose M columns are all inside
  for (index_t rr = 0; rr < nrows; ++rr) {
    const index_t p0 = (th0 + rr) * M;
    const index_t rows = wg_min(M, g.P - p0);
    const index_t base = rr * nTw;
    for (index_t i = 0; i < rows; ++i) {
      T* row = yk + (p0 + i) * g.Q;
      const T* src = yt + i * M * nseg + base;
      for (index_t u = 0; u < full; ++u)
#pragma GCC unroll 4
        for (int j = 0; j < M; ++j) row[u * M + j] = src[j * nseg + u];
      for (index_t u = full; u < nTw; ++u)
        for (int j = 0; j < M && u * M + j < g.Q; ++j) row[u * M + j] = src[j * nseg + u];
    }
  }
}

// ---- float transforms vectorised over 16 tiles of a tile row --------------------------------
// Tiles u0 .. u0+15 of a row start at strip columns u*M; column j of those tiles is a stride-M
// gather, done with two levels of shuffles from contiguous loads. Partial groups (the row's last
// tiles) use masked stores, so nothing past the row's tiles is written.

typedef std::int32_t wg_vi32 __attribute__((vector_size(64)));

PYDL_VINLINE void vstore_f32_n(float* p, Vec64<float> v, int n) {
  if (n >= 16) vstore<float>(p, v);
  else vstore_n<float>(p, v, n);
}

// Row copies and clears of a few dozen floats, inline: a libc call per image row cost more than
// the transform arithmetic on small planes (14x14).
PYDL_VINLINE void copy_f32(float* d, const float* s, index_t n) {
  index_t i = 0;
  for (; i + 16 <= n; i += 16) vstore<float>(d + i, vload64<float>(s + i));
#if defined(__AVX512F__)
  if (i < n) {
    const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1u);
    _mm512_mask_storeu_ps(d + i, m, _mm512_maskz_loadu_ps(m, s + i));
  }
#else
  for (; i < n; ++i) d[i] = s[i];
#endif
}

PYDL_VINLINE void zero_f32(float* d, index_t n) {
  index_t i = 0;
  for (; i + 16 <= n; i += 16) vstore<float>(d + i, Vec64<float>{});
  for (; i < n; ++i) d[i] = 0.0f;
}

// out[j][l] = s[(u0 + l) * M + j] for j < A, l < 16 (s points at column u0*M).
template <int M>
PYDL_VINLINE void gather_cols(Vec64<float>* out, const float* s) {
  if constexpr (M == 2) {
    const wg_vi32 ev = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
    const wg_vi32 od = ev + 1;
    const Vec64<float> x0 = vload64<float>(s), x1 = vload64<float>(s + 16);
    const Vec64<float> y0 = vload64<float>(s + 2), y1 = vload64<float>(s + 18);
    out[0] = __builtin_shuffle(x0, x1, ev);
    out[1] = __builtin_shuffle(x0, x1, od);
    out[2] = __builtin_shuffle(y0, y1, ev);
    out[3] = __builtin_shuffle(y0, y1, od);
  } else {
    const wg_vi32 q01 = {0, 4, 8, 12, 16, 20, 24, 28, 1, 5, 9, 13, 17, 21, 25, 29};
    const wg_vi32 q23 = q01 + 2;
    const wg_vi32 lo = {0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23};
    const wg_vi32 hi = lo + 8;
    const Vec64<float> x0 = vload64<float>(s), x1 = vload64<float>(s + 16), x2 = vload64<float>(s + 32),
                     x3 = vload64<float>(s + 48);
    const Vec64<float> a01 = __builtin_shuffle(x0, x1, q01), a23 = __builtin_shuffle(x2, x3, q01);
    const Vec64<float> b01 = __builtin_shuffle(x0, x1, q23), b23 = __builtin_shuffle(x2, x3, q23);
    out[0] = __builtin_shuffle(a01, a23, lo);
    out[1] = __builtin_shuffle(a01, a23, hi);
    out[2] = __builtin_shuffle(b01, b23, lo);
    out[3] = __builtin_shuffle(b01, b23, hi);
    const Vec64<float> y0 = vload64<float>(s + 4), y1 = vload64<float>(s + 20), y2 = vload64<float>(s + 36),
                     y3 = vload64<float>(s + 52);
    const Vec64<float> c01 = __builtin_shuffle(y0, y1, q01), c23 = __builtin_shuffle(y2, y3, q01);
    out[4] = __builtin_shuffle(c01, c23, lo);
    out[5] = __builtin_shuffle(c01, c23, hi);
  }
}

// d[l * M + j] = Y[j][l] for l < 16, j < M (inverse of gather_cols), written to o[0 .. M).
template <int M>
PYDL_VINLINE void interleave_cols(Vec64<float>* o, const Vec64<float>* Y) {
  const wg_vi32 zl = {0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23};
  const wg_vi32 zh = zl + 8;
  if constexpr (M == 2) {
    o[0] = __builtin_shuffle(Y[0], Y[1], zl);
    o[1] = __builtin_shuffle(Y[0], Y[1], zh);
  } else {
    const Vec64<float> l02 = __builtin_shuffle(Y[0], Y[2], zl), l13 = __builtin_shuffle(Y[1], Y[3], zl);
    const Vec64<float> h02 = __builtin_shuffle(Y[0], Y[2], zh), h13 = __builtin_shuffle(Y[1], Y[3], zh);
    o[0] = __builtin_shuffle(l02, l13, zl);
    o[1] = __builtin_shuffle(l02, l13, zh);
    o[2] = __builtin_shuffle(h02, h13, zl);
    o[3] = __builtin_shuffle(h02, h13, zh);
  }
}

// Segment layout of the vector path: tile row rr of the segment owns columns [rr*S, rr*S + S)
// with S = nTw + 1; the extra "phantom" tile of each row lets the tiles of all rows sit at one
// stride M in a "super strip" (the rows' input strips laid end to end, S*M columns each), so
// every group of 16 tiles is a full vector even when a row has only a few tiles. Phantom tiles
// are computed and never written to the output.

// V[(a*A + b) * ldv + t] for the segment's tiles t < nrows*S, one channel (float only).
template <int M>
void input_transform_seg_vec(float* V, index_t ldv, const float* xc, const Conv2dGeom& g, index_t th0,
                             index_t nrows, index_t nTw, index_t S, float* buf) {
  using Mt = WinoMats<M>;
  constexpr int A = Mt::A;
  const index_t nT = nrows * S;
  const index_t Wsup = (nT + 15) / 16 * 16 * M + 16;  // super strip width, zero past the data
  const index_t lo = wg_max(g.pl, 0);                 // strip columns before the data
  const index_t w0 = wg_max(-g.pl, 0);                // first input column used
  const index_t cnt = wg_max(0, wg_min(g.W - w0, nTw * M + 2 - lo));
  for (int i = 0; i < A; ++i) {
    float* sup = buf + i * Wsup;
    zero_f32(sup, Wsup);
    if (cnt <= 0) continue;
    for (index_t rr = 0; rr < nrows; ++rr) {
      const index_t h = (th0 + rr) * M - g.pt + i;
      if (h >= 0 && h < g.H) copy_f32(sup + rr * S * M + lo, xc + h * g.W + w0, cnt);
    }
  }
  for (index_t t0 = 0; t0 < nT; t0 += 16) {
    const int nl = static_cast<int>(wg_min(16, nT - t0));
    Vec64<float> tmp[A][A];  // tmp[i][b] = (row i of d) * B
#pragma GCC unroll 8
    for (int i = 0; i < A; ++i) {
      Vec64<float> d[A];
      gather_cols<M>(d, buf + i * Wsup + t0 * M);
#pragma GCC unroll 8
      for (int bb = 0; bb < A; ++bb) {
        Vec64<float> acc = {};
#pragma GCC unroll 8
        for (int j = 0; j < A; ++j)
          if (Mt::BT[bb][j] != 0.0) acc += static_cast<float>(Mt::BT[bb][j]) * d[j];
        tmp[i][bb] = acc;
      }
    }
#pragma GCC unroll 8
    for (int aa = 0; aa < A; ++aa)
#pragma GCC unroll 8
      for (int bb = 0; bb < A; ++bb) {
        Vec64<float> acc = {};
#pragma GCC unroll 8
        for (int i = 0; i < A; ++i)
          if (Mt::BT[aa][i] != 0.0) acc += static_cast<float>(Mt::BT[aa][i]) * tmp[i][bb];
        vstore_f32_n(V + (aa * A + bb) * ldv + t0, acc, nl);
      }
  }
}

// Output transform of one channel over a segment (float): Y = A^T Mt A + bias, activation,
// interleaved into M super strips (obuf), then copied row by row into the output plane.
// Mk rows must be readable 16 floats past the segment's last tile.
template <int M>
void output_transform_seg_vec(float* yk, const float* Mk, index_t ldm, float bias, ConvAct act, const Conv2dGeom& g,
                              index_t th0, index_t nrows, index_t S, float* obuf) {
  using Mt = WinoMats<M>;
  constexpr int A = Mt::A;
  const index_t nT = nrows * S;
  const index_t Wsup = (nT + 15) / 16 * 16 * M + 16;
  for (index_t t0 = 0; t0 < nT; t0 += 16) {
    const float* mrow = Mk + t0;
    Vec64<float> z[M][A];  // z[i][b] = sum_a AT[i][a] M[a][b]
#pragma GCC unroll 8
    for (int bb = 0; bb < A; ++bb) {
      Vec64<float> m[A];
#pragma GCC unroll 8
      for (int aa = 0; aa < A; ++aa) m[aa] = vload64<float>(mrow + (aa * A + bb) * ldm);
#pragma GCC unroll 8
      for (int i = 0; i < M; ++i) {
        Vec64<float> acc = {};
#pragma GCC unroll 8
        for (int aa = 0; aa < A; ++aa)
          if (Mt::AT[i][aa] != 0.0) acc += static_cast<float>(Mt::AT[i][aa]) * m[aa];
        z[i][bb] = acc;
      }
    }
#pragma GCC unroll 8
    for (int i = 0; i < M; ++i) {
      Vec64<float> Y[M];
#pragma GCC unroll 8
      for (int j = 0; j < M; ++j) {
        Vec64<float> acc = vset1_64<float>(bias);
#pragma GCC unroll 8
        for (int bb = 0; bb < A; ++bb)
          if (Mt::AT[j][bb] != 0.0) acc += static_cast<float>(Mt::AT[j][bb]) * z[i][bb];
        Y[j] = act == ConvAct::relu ? vrelu(acc) : acc;
      }
      Vec64<float> o[M];
      interleave_cols<M>(o, Y);
      float* out = obuf + i * Wsup + t0 * M;
#pragma GCC unroll 4
      for (int k = 0; k < M; ++k) vstore<float>(out + 16 * k, o[k]);
    }
  }
  for (index_t rr = 0; rr < nrows; ++rr) {
    const index_t p0 = (th0 + rr) * M;
    const index_t rows = wg_min(M, g.P - p0);
    for (index_t i = 0; i < rows; ++i)
      copy_f32(yk + (p0 + i) * g.Q, obuf + i * Wsup + rr * S * M, g.Q);
  }
}

// The element-wise stage of one transform point: Mx [Kp][ld] = Ux^T * Vx with Ux [C][Kp] and
// Vx [C][ld]; ld is a multiple of TV vectors and Kp of KB. A register block of KB output channels
// by TV vectors of tiles accumulates over C: one vector load of V per TV, one broadcast of U per
// output channel. The block may differ per tile size: PYDL_WG_KB / PYDL_WG_TV, and for F(4x4)
// PYDL_WG_KB_F4 / PYDL_WG_TV_F4 where the ISA file sets them.
#ifndef PYDL_WG_KB
#define PYDL_WG_KB 2
#define PYDL_WG_TV 1
#endif
#ifndef PYDL_WG_KB_F4
#define PYDL_WG_KB_F4 PYDL_WG_KB
#define PYDL_WG_TV_F4 PYDL_WG_TV
#endif
#ifndef PYDL_WG_VECTOR_TRANSFORMS
#define PYDL_WG_VECTOR_TRANSFORMS 0
#endif
constexpr bool kWgVectorTransforms = PYDL_WG_VECTOR_TRANSFORMS;

template <int M>
struct WgBlock {
  static constexpr int KB = PYDL_WG_KB, TV = PYDL_WG_TV;
};
template <>
struct WgBlock<4> {
  static constexpr int KB = PYDL_WG_KB_F4, TV = PYDL_WG_TV_F4;
};

template <typename T, int KB, int TV>
void wg_gemm(T* Mx, const T* Ux, const T* Vx, index_t Kp, index_t C, index_t ld) {
  constexpr int L = VecOf<T>::L;
  for (index_t t0 = 0; t0 < ld; t0 += TV * L)
    for (index_t k0 = 0; k0 < Kp; k0 += KB) {
      Vec<T> acc[KB][TV];
      for (int kk = 0; kk < KB; ++kk)
        for (int tv = 0; tv < TV; ++tv) acc[kk][tv] = Vec<T>{};
      const T* u = Ux + k0;
      const T* v = Vx + t0;
      for (index_t c = 0; c < C; ++c, u += Kp, v += ld) {
        Vec<T> vv[TV];
        for (int tv = 0; tv < TV; ++tv) vv[tv] = vload<T>(v + tv * L);
        for (int kk = 0; kk < KB; ++kk) {
          const T uk = u[kk];
          for (int tv = 0; tv < TV; ++tv) acc[kk][tv] += uk * vv[tv];
        }
      }
      for (int kk = 0; kk < KB; ++kk)
        for (int tv = 0; tv < TV; ++tv) vstore<T>(Mx + (k0 + kk) * ld + t0 + tv * L, acc[kk][tv]);
    }
}

template <typename T, int M>
void winograd_run(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act, bool flip_transpose) {
  constexpr int A = M + 2, A2 = A * A;
  constexpr int KB = WgBlock<M>::KB, TV = WgBlock<M>::TV;
  constexpr index_t TB = TV * VecOf<T>::L;
  const index_t C = g.C, K = g.K;
  const index_t Kp = (K + KB - 1) / KB * KB;
  const index_t nTh = (g.P + M - 1) / M, nTw = (g.Q + M - 1) / M;
  constexpr bool vec_path = sizeof(T) == 4 && kWgVectorTransforms;
  const index_t S = vec_path ? nTw + 1 : nTw;  // tile columns per tile row (see the segment layout)
  T* U = static_cast<T*>(conv_scratch(sizeof(T) * A2 * Kp * C, 2));
  filter_transform<T, M>(U, w, K, C, Kp, flip_transpose);

  // Chunks of whole tile rows, V [A2][C][ld] and M [A2][Kp][ld] per thread.
  const index_t total_rows = g.N * nTh;
  const index_t bytes_per_tile = static_cast<index_t>(sizeof(T)) * A2 * (C + Kp);
  const index_t target_tiles = wg_max(TB, kWgChunkBytes / bytes_per_tile);
  const double flops_per_row = 2.0 * A2 * C * K * nTw + 40.0 * A2 * (C + K) * nTw;
  const int nt = threads_for(flops_per_row * total_rows, 4e5);
  index_t rows_per_chunk = wg_max(1, target_tiles / S);
  if (nt > 1) rows_per_chunk = wg_max(1, wg_min(rows_per_chunk, (total_rows + 2 * nt - 1) / (2 * nt)));
  const index_t nchunks = (total_rows + rows_per_chunk - 1) / rows_per_chunk;
  const index_t Tmax = rows_per_chunk * S;
  const index_t ldmax = (Tmax + TB - 1) / TB * TB;
  // strip buffers: A super strips (vector path) or A strips (loop path)
  const index_t Wb = vec_path ? (Tmax + 15) / 16 * 16 * M + 16 : nTw * M + 2;
  // V, M (+16 floats of slack for full-vector reads past the last tile), strip buffers, loop-path scratch
  const index_t per_thread = A2 * (C + Kp) * ldmax + 32 + 2 * A * Wb + A2 * Tmax + M * A * Tmax + M * M * Tmax + 64;
  T* scratch = static_cast<T*>(conv_scratch(sizeof(T) * per_thread * nt, 3));
  const index_t x_img = C * g.H * g.W, y_img = K * g.P * g.Q;

#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
  for (index_t ch = 0; ch < nchunks; ++ch) {
    T* V = scratch + per_thread * wg_tid();
    T* Mm = V + A2 * C * ldmax;
    T* buf = Mm + A2 * Kp * ldmax + 32;
    T* t = buf + A * Wb;
    T* ph = t + A * Wb;
    T* z = ph + A2 * Tmax;
    T* yt = z + M * A * Tmax;
    const index_t r0 = ch * rows_per_chunk, r1 = wg_min(total_rows, r0 + rows_per_chunk);
    const index_t Tc = (r1 - r0) * S;
    const index_t ld = (Tc + TB - 1) / TB * TB;
    // segments: maximal runs of tile rows of one image
    for (index_t rr = r0; rr < r1;) {
      const index_t n = rr / nTh, th0 = rr % nTh;
      const index_t nrows = wg_min(r1 - rr, nTh - th0), off = (rr - r0) * S;
      for (index_t c = 0; c < C; ++c) {
        if constexpr (vec_path)
          input_transform_seg_vec<M>(V + c * ld + off, C * ld, x + n * x_img + c * g.H * g.W, g, th0, nrows, nTw, S,
                                     buf);
        else
          input_transform_seg<T, M>(V + c * ld + off, C * ld, x + n * x_img + c * g.H * g.W, g, th0, nrows, nTw,
                                    buf, t, ph);
      }
      rr += nrows;
    }
    if (ld > Tc)
      for (index_t i = 0; i < A2 * C; ++i)
        for (index_t j = Tc; j < ld; ++j) V[i * ld + j] = T(0);
    for (int xi = 0; xi < A2; ++xi)
      wg_gemm<T, KB, TV>(Mm + xi * Kp * ld, U + xi * C * Kp, V + xi * C * ld, Kp, C, ld);
    for (index_t rr = r0; rr < r1;) {
      const index_t n = rr / nTh, th0 = rr % nTh;
      const index_t nrows = wg_min(r1 - rr, nTh - th0), off = (rr - r0) * S;
      for (index_t k = 0; k < K; ++k) {
        if constexpr (vec_path)
          output_transform_seg_vec<M>(y + n * y_img + k * g.P * g.Q, Mm + k * ld + off, Kp * ld, b ? b[k] : T(0),
                                      act, g, th0, nrows, S, buf);
        else
          output_transform_seg<T, M>(y + n * y_img + k * g.P * g.Q, Mm + k * ld + off, Kp * ld, b ? b[k] : T(0), act,
                                     g, th0, nrows, nTw, z, yt);
      }
      rr += nrows;
    }
  }
}

}  // namespace

template <typename T>
void winograd_forward_impl(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, int m, ConvAct act,
                           bool flip_transpose) {
  if (m == 2) winograd_run<T, 2>(y, x, w, b, g, act, flip_transpose);
  else winograd_run<T, 4>(y, x, w, b, g, act, flip_transpose);
}

}  // namespace PYDL_KNS
}  // namespace pydl
