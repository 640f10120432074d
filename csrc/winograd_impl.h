// Winograd F(m x m, 3x3) loops compiled once per ISA (see winograd.h for the algorithm).
// Included by winograd.cpp (portable, float and double), winograd_avx2.cpp and
// winograd_avx512.cpp (float), each defining PYDL_KNS. Sizes are validated by the caller.
#ifndef PYDL_KNS
#error "define PYDL_KNS before including winograd_impl.h"
#endif

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#if defined(__AVX2__) || defined(__AVX512F__)
#include <immintrin.h>
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

// U[a*A + b][c][k] = (G g G^T)[a][b] with g = w[k,c] (or w[c,k] flipped 180 degrees).
template <typename T, int M>
void filter_transform(T* U, const T* w, index_t K, index_t C, index_t Kp, bool flip_transpose) {
  using Mt = WinoMats<M>;
  constexpr int A = Mt::A;
  for (index_t i = 0; i < A * A * C * Kp; ++i) U[i] = T(0);  // K..Kp padding stays zero
  const int nt = threads_for(static_cast<double>(K) * C * A * A * 12, 1e5);
  parallel_for(nt, K, [&](std::int64_t k, int) {
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
  });
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

// ---- float transforms vectorised over groups of L tiles ---------------------------------------
// Both transforms are split into a pass along the strip, vectorised over contiguous columns, and
// a pass across the tiles' columns, so no more than ~A + M vectors are live at once (the earlier
// 16-tile version held A*A 64-byte values: 72 ymm on AVX2, spilled on every group):
//   input   t = B^T d over the input rows (contiguous columns), then per row a of t:
//           gather the A columns of L tiles, V[a][b] = sum_j t[a][j] B[j][b];
//   output  h[a] = M[a] A per row a of the L tiles, interleaved back into strip columns, then
//           Y = A^T h + bias over the strip's contiguous columns, written to the output rows.
// The column gathers and interleaves use only shuffles within 128-bit lanes (shufps, unpcklps,
// unpcklpd: one uop on every x86 ISA), so one formulation serves L = 4 (SSE2), 8 (AVX2) and
// 16 (AVX-512). The price is a fixed permutation of the L tiles of a group over the vector's
// lanes (identity for L = 4); the element-wise stage does not care, and the output transform
// undoes it. So groups must never straddle two segments: segments start at multiples of L.
// Where the time goes (AVX2, Zen 3, one thread, CPU time, N32 C64 56x56 K64, F(4x4)): filter
// transform 0.3 ms, input 11, element-wise 28, output 7.5 ms, ~47 ms in all (156 GFLOP/s counted
// as direct); the input transform's cost is mostly its stores of V missing L2 (the same pass
// storing to one place: 19 -> 11 ms before the row-by-row order).

template <int L>
using WgVf = typename VecOfBytes<float, 4 * L>::type;
template <int L>
using WgVi = typename VecOfBytes<std::int32_t, 4 * L>::type;

template <int L, int P0, int P1, int P2, int P3, int... I>
constexpr WgVi<L> wg_lane_mask(std::integer_sequence<int, I...>) {
  // position p of 128-bit lane h takes a[4h + P] (P < 4) or b[4h + P - 4] (P >= 4)
  constexpr int P[4] = {P0, P1, P2, P3};
  return WgVi<L>{((P[I & 3] < 4 ? 0 : L - 4) + (I & ~3) + P[I & 3])...};
}

template <int L, int P0, int P1, int P2, int P3>
PYDL_VINLINE WgVf<L> lane_shuffle(WgVf<L> a, WgVf<L> b) {
  constexpr WgVi<L> m = wg_lane_mask<L, P0, P1, P2, P3>(std::make_integer_sequence<int, L>{});
  return __builtin_shuffle(a, b, m);
}

template <int L>
PYDL_VINLINE WgVf<L> wg_load(const float* p) {
  WgVf<L> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// d[j] = column j (j < A) of the group's L tiles, read from a strip s at column (first tile)*M.
// M = 2: lane 4h + p holds tile 2h + p (p < 2) or L/2 + 2h + p - 2; loads at 0, L (columns 0, 1)
// and 2, L + 2 (columns 2, 3), even/odd split by one shufps each.
// M = 4: lane 4h + q holds tile q*L/4 + h; the loads at q*L (q < 4) hold 4 columns of 4 tiles per
// 128-bit lane: a 4x4 transpose per lane gives columns 0-3; columns 4, 5 are columns 0, 1 of the
// next tile, the same transpose of the loads at q*L + 4.
template <int M, int L>
PYDL_VINLINE void gather_cols(WgVf<L>* d, const float* s) {
  using V = WgVf<L>;
  if constexpr (M == 2) {
    const V x0 = wg_load<L>(s), x1 = wg_load<L>(s + L);
    const V y0 = wg_load<L>(s + 2), y1 = wg_load<L>(s + L + 2);
    d[0] = lane_shuffle<L, 0, 2, 4, 6>(x0, x1);
    d[1] = lane_shuffle<L, 1, 3, 5, 7>(x0, x1);
    d[2] = lane_shuffle<L, 0, 2, 4, 6>(y0, y1);
    d[3] = lane_shuffle<L, 1, 3, 5, 7>(y0, y1);
  } else {
    const V x0 = wg_load<L>(s), x1 = wg_load<L>(s + L), x2 = wg_load<L>(s + 2 * L), x3 = wg_load<L>(s + 3 * L);
    const V t0 = lane_shuffle<L, 0, 4, 1, 5>(x0, x1), t1 = lane_shuffle<L, 2, 6, 3, 7>(x0, x1);
    const V t2 = lane_shuffle<L, 0, 4, 1, 5>(x2, x3), t3 = lane_shuffle<L, 2, 6, 3, 7>(x2, x3);
    d[0] = lane_shuffle<L, 0, 1, 4, 5>(t0, t2);
    d[1] = lane_shuffle<L, 2, 3, 6, 7>(t0, t2);
    d[2] = lane_shuffle<L, 0, 1, 4, 5>(t1, t3);
    d[3] = lane_shuffle<L, 2, 3, 6, 7>(t1, t3);
    const V y0 = wg_load<L>(s + 4), y1 = wg_load<L>(s + L + 4), y2 = wg_load<L>(s + 2 * L + 4),
            y3 = wg_load<L>(s + 3 * L + 4);
    const V u0 = lane_shuffle<L, 0, 4, 1, 5>(y0, y1), u1 = lane_shuffle<L, 0, 4, 1, 5>(y2, y3);
    d[4] = lane_shuffle<L, 0, 1, 4, 5>(u0, u1);
    d[5] = lane_shuffle<L, 2, 3, 6, 7>(u0, u1);
  }
}

// Inverse of gather_cols for the M output columns: strip[tile*M + j] = Y[j][lane of tile], for
// the group's L tiles, as M contiguous vectors at o, o + L, ...
template <int M, int L>
PYDL_VINLINE void interleave_cols(float* o, const WgVf<L>* Y) {
  using V = WgVf<L>;
  if constexpr (M == 2) {
    vstore<float>(o, lane_shuffle<L, 0, 4, 1, 5>(Y[0], Y[1]));
    vstore<float>(o + L, lane_shuffle<L, 2, 6, 3, 7>(Y[0], Y[1]));
  } else {
    const V t0 = lane_shuffle<L, 0, 4, 1, 5>(Y[0], Y[1]), t1 = lane_shuffle<L, 2, 6, 3, 7>(Y[0], Y[1]);
    const V t2 = lane_shuffle<L, 0, 4, 1, 5>(Y[2], Y[3]), t3 = lane_shuffle<L, 2, 6, 3, 7>(Y[2], Y[3]);
    vstore<float>(o, lane_shuffle<L, 0, 1, 4, 5>(t0, t2));
    vstore<float>(o + L, lane_shuffle<L, 2, 3, 6, 7>(t0, t2));
    vstore<float>(o + 2 * L, lane_shuffle<L, 0, 1, 4, 5>(t1, t3));
    vstore<float>(o + 3 * L, lane_shuffle<L, 2, 3, 6, 7>(t1, t3));
  }
}

// Strip row stride for a segment of nT tiles: whole groups of M columns per tile, plus room for
// the gathers' reads past the last group.
template <int M, int L>
constexpr index_t wg_strip_width(index_t nT) {
  return (nT + L - 1) / L * L * M + 16;
}

// AVX-512: V and M hold only the real tiles of a segment, in lane order ("compact"): the phantom
// tiles and those padding the segment to whole groups are dropped when the input transform stores
// a group (vcompressps: the real lanes to consecutive columns) and put back when the output
// transform loads one (vexpandps), so the element-wise stage multiplies no phantom tile (one in
// S: 1/8 of the work of F(2x2) on 14x14). AVX2 and SSE2 have no compress / expand and keep the
// phantoms.
#if defined(__AVX512F__)
constexpr bool kWgCompact = true;
#else
constexpr bool kWgCompact = false;
#endif

// The strip tile (0 <= tile < L, within its group) that lane l of a gathered group holds (see
// gather_cols).
template <int M, int L>
constexpr int wg_tile_of_lane(int l) {
  if constexpr (M == 2) return l % 4 < 2 ? 2 * (l / 4) + l % 4 : L / 2 + 2 * (l / 4) + l % 4 - 2;
  else return (l % 4) * (L / 4) + l / 4;
}

// Per group gi of a segment of nrows tile rows: mask[gi] the lanes holding real tiles (tile t of
// the strip is real when t % S < nTw), first[gi] the compact column of its first real lane.
template <int M, int L>
void wg_group_masks(std::uint32_t* mask, index_t* first, index_t nrows, index_t S, index_t nTw) {
  const index_t nT = nrows * S, nG = (nT + L - 1) / L;
  index_t pos = 0;
  for (index_t gi = 0; gi < nG; ++gi) {
    std::uint32_t m = 0;
    for (int l = 0; l < L; ++l) {
      const index_t t = gi * L + wg_tile_of_lane<M, L>(l);
      if (t < nT && t % S < nTw) m |= 1u << l;
    }
    mask[gi] = m;
    first[gi] = pos;
    pos += __builtin_popcount(m);
  }
}

#if defined(__AVX512F__)
// The lanes of v in mask m, to cnt = popcount(m) consecutive floats at p (nothing else written).
PYDL_VINLINE void wg_store_compact(float* p, WgVf<16> v, std::uint32_t m) {
  const __m512 c = _mm512_maskz_compress_ps(static_cast<__mmask16>(m), reinterpret_cast<__m512>(v));
  vstore_n<float>(p, reinterpret_cast<WgVf<16>>(c), __builtin_popcount(m));
}
// Inverse: popcount(m) floats at p to the lanes in m, the others 0 (nothing past them read).
PYDL_VINLINE WgVf<16> wg_load_expand(const float* p, std::uint32_t m) {
  const WgVf<16> c = vload_n<float, WgVf<16>>(p, __builtin_popcount(m));
  return reinterpret_cast<WgVf<16>>(_mm512_maskz_expand_ps(static_cast<__mmask16>(m), reinterpret_cast<__m512>(c)));
}
#endif

// Segment layout of the vector path: tile row rr of the segment owns strip columns
// [rr*S*M, (rr + 1)*S*M) with S = nTw + 1; the extra "phantom" tile of each row keeps the rows'
// strips from overlapping, so the tiles of all rows sit at one stride M and every group of L
// tiles is a full vector even when a row has only a few tiles. Phantom tiles (and the tiles that
// pad the segment to whole groups) are transformed and never written to the output; on AVX-512
// they are also left out of V and M (kWgCompact above), elsewhere the element-wise stage
// multiplies them too.

// V[(a*A + b) * ldv + t] for the segment's tiles t < ceil(nrows*S / L) * L, one channel.
// zrow: at least W zeros (stands in for rows above and below the image).
template <int M, int L>
void input_transform_vec(float* V, index_t ldv, const float* xc, const Conv2dGeom& g, index_t th0, index_t nrows,
                         index_t nTw, index_t S, float* t, const float* zrow, const std::uint32_t* gmask,
                         const index_t* gfirst) {
  using Mt = WinoMats<M>;
  using Vf = WgVf<L>;
  constexpr int A = Mt::A;
  (void)gmask;  // used by the compact (AVX-512) layout only
  (void)gfirst;
  const index_t nT = nrows * S, nG = (nT + L - 1) / L;
  const index_t Wt = wg_strip_width<M, L>(nT);
  const index_t lo = wg_max(g.pl, 0);  // strip columns before the data
  const index_t w0 = wg_max(-g.pl, 0);  // first input column used
  const index_t cnt = wg_max(0, wg_min(g.W - w0, nTw * M + 2 - lo));
  const index_t SM = S * M;
  Vf zv = {};
  __asm__("" : "+x"(zv));  // a zero the compiler cannot see, so the zeroing loops stay stores
  for (index_t rr = 0; rr < nrows; ++rr) {
    const float* r[A];
    for (int i = 0; i < A; ++i) {
      const index_t h = (th0 + rr) * M - g.pt + i;
      r[i] = h >= 0 && h < g.H ? xc + h * g.W + w0 : zrow;
    }
    float* dst = t + rr * SM;
    // Zeros before and after the row's data go in as whole vectors that may run on into the next
    // row's columns (written after this row) or into the strips' end (zeroed below): as loops of
    // one or two floats per row and channel, GCC made them memset calls (perf: ~4% of F(2x2) on
    // N64 C32 14x14, Intel Xeon, in memset; the A/B after was within that machine's noise), and it
    // does the same with loops of vector stores of a known zero.
    for (int a = 0; a < A; ++a)
      for (index_t j = 0; j < lo; j += L) vstore<float>(dst + a * Wt + j, zv);
    // t[a][lo + j] = sum_i BT[a][i] x[h0 + i][w0 + j]; a row of at least L columns ends with one
    // vector overlapping the previous one (same values stored twice), shorter rows are scalar
    const index_t jv = cnt >= L ? (cnt + L - 1) / L * L : 0;
    index_t j = 0;
    for (index_t j0 = 0; j0 < jv; j0 += L) {
      j = j0 + L > cnt ? cnt - L : j0;
      Vf d[A];
#pragma GCC unroll 8
      for (int i = 0; i < A; ++i) d[i] = wg_load<L>(r[i] + j);
#pragma GCC unroll 8
      for (int a = 0; a < A; ++a) {
        Vf acc = {};
#pragma GCC unroll 8
        for (int i = 0; i < A; ++i)
          if (Mt::BT[a][i] != 0.0) acc += static_cast<float>(Mt::BT[a][i]) * d[i];
        vstore<float>(dst + a * Wt + lo + j, acc);
      }
    }
    for (j = jv; j < cnt; ++j)
#pragma GCC unroll 8
      for (int a = 0; a < A; ++a) {
        float acc = 0.0f;
#pragma GCC unroll 8
        for (int i = 0; i < A; ++i)
          if (Mt::BT[a][i] != 0.0) acc += static_cast<float>(Mt::BT[a][i]) * r[i][j];
        dst[a * Wt + lo + j] = acc;
      }
    for (int a = 0; a < A; ++a)
      for (index_t jj = lo + cnt; jj < SM; jj += L) vstore<float>(dst + a * Wt + jj, zv);
  }
  for (int a = 0; a < A; ++a) {
    index_t jj = nT * M;
    for (; jj + L <= Wt; jj += L) vstore<float>(t + a * Wt + jj, Vf{});
    vstore<float>(t + a * Wt + Wt - L, Vf{});  // the last < L floats (Wt >= nT*M + 16 >= nT*M + L)
  }
  // row by row (A output rows of V live, rather than A*A with the groups outermost)
#pragma GCC unroll 1
  for (int a = 0; a < A; ++a) {
    const float* ta = t + a * Wt;
    float* va = V + a * A * ldv;
    for (index_t gi = 0; gi < nG; ++gi) {
      Vf d[A];
      gather_cols<M, L>(d, ta + gi * L * M);
#pragma GCC unroll 8
      for (int b = 0; b < A; ++b) {
        Vf acc = {};
#pragma GCC unroll 8
        for (int j = 0; j < A; ++j)
          if (Mt::BT[b][j] != 0.0) acc += static_cast<float>(Mt::BT[b][j]) * d[j];
#if defined(__AVX512F__)
        if constexpr (kWgCompact && L == 16) wg_store_compact(va + b * ldv + gfirst[gi], acc, gmask[gi]);
        else
#endif
          vstore<float>(va + b * ldv + gi * L, acc);
      }
    }
  }
}

// Output transform of one channel over a segment: Y = A^T Mt A + bias, activation, written to
// the output plane yk (edge tiles clipped). Mk[(a*A + b) * ldm + t] holds tile t of the segment
// (t < ceil(nrows*S / L) * L); h: scratch strips.
template <int M, int L>
void output_transform_vec(float* yk, const float* Mk, index_t ldm, float bias, ConvAct act, const Conv2dGeom& g,
                          index_t th0, index_t nrows, index_t S, float* h, const std::uint32_t* gmask,
                          const index_t* gfirst) {
  using Mt = WinoMats<M>;
  using Vf = WgVf<L>;
  constexpr int A = Mt::A;
  (void)gmask;  // used by the compact (AVX-512) layout only
  (void)gfirst;
  const index_t nT = nrows * S, nG = (nT + L - 1) / L;
  const index_t Wt = wg_strip_width<M, L>(nT);
#pragma GCC unroll 1
  for (int a = 0; a < A; ++a) {
    const float* ma = Mk + a * A * ldm;
    for (index_t gi = 0; gi < nG; ++gi) {
      Vf m[A];
#pragma GCC unroll 8
      for (int b = 0; b < A; ++b) {
#if defined(__AVX512F__)
        if constexpr (kWgCompact && L == 16) m[b] = wg_load_expand(ma + b * ldm + gfirst[gi], gmask[gi]);
        else
#endif
          m[b] = wg_load<L>(ma + b * ldm + gi * L);
      }
      Vf Y[M];
#pragma GCC unroll 8
      for (int j = 0; j < M; ++j) {
        Vf acc = {};
#pragma GCC unroll 8
        for (int b = 0; b < A; ++b)
          if (Mt::AT[j][b] != 0.0) acc += static_cast<float>(Mt::AT[j][b]) * m[b];
        Y[j] = acc;
      }
      interleave_cols<M, L>(h + a * Wt + gi * L * M, Y);
    }
  }
  // y[p0 + i][q] = act(bias + sum_a AT[i][a] h[a][rr*S*M + q]). Rows of at least L columns end
  // with an overlapping vector (same values stored twice); narrower planes take the masked path.
  const index_t SM = S * M;
  const Vf vb = Vf{} + bias;
  const bool relu = act == ConvAct::relu;
  auto rows_pass = [&](auto full) {
    for (index_t rr = 0; rr < nrows; ++rr) {
      const index_t p0 = (th0 + rr) * M;
      const index_t rows = wg_min(M, g.P - p0);
      const float* hr = h + rr * SM;
      float* yr = yk + p0 * g.Q;
      for (index_t q0 = 0; q0 < g.Q; q0 += L) {
        const index_t q = full && q0 + L > g.Q ? g.Q - L : q0;
        Vf v[A];
#pragma GCC unroll 8
        for (int a = 0; a < A; ++a) v[a] = wg_load<L>(hr + a * Wt + q);
#pragma GCC unroll 4
        for (int i = 0; i < M; ++i) {
          Vf acc = vb;
#pragma GCC unroll 8
          for (int a = 0; a < A; ++a)
            if (Mt::AT[i][a] != 0.0) acc += static_cast<float>(Mt::AT[i][a]) * v[a];
          if (relu) acc = vrelu(acc);
          if (i < rows) {
            if constexpr (decltype(full)::value) vstore<float>(yr + i * g.Q + q, acc);
            else vstore_n<float>(yr + i * g.Q + q, acc, static_cast<int>(g.Q - q));
          }
        }
      }
    }
  };
  if (g.Q >= L) rows_pass(std::true_type{});
  else rows_pass(std::false_type{});
}

// ---- element-wise stage ------------------------------------------------------------------------
// Mx [Kp][ld] = Ux^T * Vx for one transform point, Ux [C][Kp], Vx [C][ld]; ld a multiple of TV
// vectors, Kp of KB. A register tile of KB output channels x TV vectors of tiles accumulates over
// C: TV vector loads of V and KB broadcasts of U per step.
// One tile per ISA and tile size m; accumulators + TV loaded vectors + 1 broadcast must fit
// the register file.
//   avx512 (32 zmm): F(2x2) 8 x 2; F(4x4) 4 x 6, 24 zmm with 6 tile vectors loaded per 4
//     broadcasts (N32 C64 56x56: 1.1-1.3x faster than 8 x 2; on 14x14 F(2x2) 8 x 2 is 6% faster).
//   avx2 (16 ymm): 5 x 2 for both sizes, 10 accumulators + 2 + 1. Zen 3, C64 K64, one point's
//     product in cache: 5 x 2 56-76 GFLOP/s, 4 x 2 47-66, 6 x 2 45-65, 4 x 3 52, 8 x 1 57-60
//     (4 x 3 and 8 x 1 issue more loads per FMA: 2 vector loads + 1 broadcast per cycle is the
//     load limit; 4 x 2 has only as many accumulators as FMAs in flight).
//   SSE2 (16 xmm, no FMA: one more register for the product): 4 x 2.
struct WgTile {
  int KB, TV;
};
template <int M>
constexpr WgTile wg_tile() {
  if constexpr (kVecBytes == 64) return M == 2 ? WgTile{8, 2} : WgTile{4, 6};
  else if constexpr (kVecBytes == 32) return WgTile{5, 2};
  else return WgTile{4, 2};
}
template <int M>
struct WgBlock {
  static constexpr int KB = wg_tile<M>().KB, TV = wg_tile<M>().TV;
  static_assert(KB * TV + TV + 1 <= kVecRegs, "Winograd register tile does not fit the register file");
};

template <typename T, int KB, int TV>
void wg_gemm(T* Mx, const T* Ux, const T* Vx, index_t Kp, index_t C, index_t ld) {
  constexpr int L = VecOf<T>::L;
  for (index_t t0 = 0; t0 < ld; t0 += TV * L)
    for (index_t k0 = 0; k0 < Kp; k0 += KB) {
      Vec<T> acc[KB][TV];
#pragma GCC unroll 8
      for (int kk = 0; kk < KB; ++kk)
#pragma GCC unroll 8
        for (int tv = 0; tv < TV; ++tv) acc[kk][tv] = Vec<T>{};
      const T* u = Ux + k0;
      const T* v = Vx + t0;
      for (index_t c = 0; c < C; ++c, u += Kp, v += ld) {
        Vec<T> vv[TV];
#pragma GCC unroll 8
        for (int tv = 0; tv < TV; ++tv) vv[tv] = vload<T>(v + tv * L);
#pragma GCC unroll 8
        for (int kk = 0; kk < KB; ++kk) {
          const T uk = u[kk];  // scalar * vector: a broadcast load (vset1's 0 + s costs an add)
#pragma GCC unroll 8
          for (int tv = 0; tv < TV; ++tv) acc[kk][tv] += uk * vv[tv];
        }
      }
#pragma GCC unroll 8
      for (int kk = 0; kk < KB; ++kk)
#pragma GCC unroll 8
        for (int tv = 0; tv < TV; ++tv) vstore<T>(Mx + (k0 + kk) * ld + t0 + tv * L, acc[kk][tv]);
    }
}

// Non-finite inputs. The transforms mix every input of a tile into every output of the tile,
// so one Inf or NaN would reach outputs whose receptive fields are all finite (Inf - Inf = NaN),
// and an Inf would become NaN where the exact sum is Inf. A chunk whose input rows hold a
// non-finite value is patched after its output transform: each tile whose input patch holds one
// is recomputed by the direct formula, so every output is what the direct convolution gives.
// The check is a linear scan of rows the input transform has just read (x - x is 0 only for
// finite x); the patch is scalar and runs only on such tiles.
template <typename T>
bool all_finite(const T* p, index_t n) {
  constexpr index_t L = VecOf<T>::L;
  Vec<T> acc0 = {}, acc1 = {};
  index_t i = 0;
  for (; i + 2 * L <= n; i += 2 * L) {
    const Vec<T> a = vload(p + i), b = vload(p + i + L);
    acc0 += a - a;
    acc1 += b - b;
  }
  acc0 += acc1;
  T tail = 0;
  for (; i < n; ++i) tail += p[i] - p[i];
  for (int l = 0; l < L; ++l) tail += acc0[l];
  return tail == T(0);
}

// Filter tap (k, c, r, s) of the convolution being computed: w (K, C, 3, 3), or for the input
// gradient (flip_transpose) w (C, K, 3, 3) read transposed and rotated by 180 degrees.
template <typename T>
inline T wg_tap(const T* w, const Conv2dGeom& g, bool flip_transpose, index_t k, index_t c, int r, int s) {
  return flip_transpose ? w[(c * g.K + k) * 9 + (2 - r) * 3 + (2 - s)] : w[(k * g.C + c) * 9 + r * 3 + s];
}

// Recompute, by the direct formula, the outputs of image n's tiles in tile rows [th0, th0 + nrows)
// whose A x A input patch (all channels) holds a non-finite value.
template <typename T, int M>
void patch_nonfinite_tiles(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act,
                           bool flip_transpose, index_t n, index_t th0, index_t nrows) {
  constexpr int A = M + 2;
  const index_t nTw = (g.Q + M - 1) / M;
  const T* xn = x + n * g.C * g.H * g.W;
  for (index_t th = th0; th < th0 + nrows; ++th) {
    const index_t h0 = th * M - g.pt, ha = wg_max(h0, 0), hb = wg_min(h0 + A, g.H);
    for (index_t tw = 0; tw < nTw; ++tw) {
      const index_t v0 = tw * M - g.pl, va = wg_max(v0, 0), vb = wg_min(v0 + A, g.W);
      bool finite = true;
      for (index_t c = 0; c < g.C && finite; ++c)
        for (index_t h = ha; h < hb && finite; ++h) finite = all_finite(xn + (c * g.H + h) * g.W + va, vb - va);
      if (finite) continue;
      const index_t pa = th * M, pb = wg_min(pa + M, g.P), qa = tw * M, qb = wg_min(qa + M, g.Q);
      for (index_t k = 0; k < g.K; ++k)
        for (index_t p = pa; p < pb; ++p)
          for (index_t q = qa; q < qb; ++q) {
            T acc = b ? b[k] : T(0);
            for (index_t c = 0; c < g.C; ++c)
              for (int r = 0; r < 3; ++r) {
                const index_t h = p - g.pt + r;
                if (h < 0 || h >= g.H) continue;
                for (int s = 0; s < 3; ++s) {
                  const index_t v = q - g.pl + s;
                  if (v < 0 || v >= g.W) continue;
                  acc += wg_tap(w, g, flip_transpose, k, c, r, s) * xn[(c * g.H + h) * g.W + v];
                }
              }
            if (act == ConvAct::relu && acc < T(0)) acc = T(0);
            y[((n * g.K + k) * g.P + p) * g.Q + q] = acc;
          }
    }
  }
}

template <typename T, int M>
void winograd_run(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act, bool flip_transpose) {
  constexpr int A = M + 2, A2 = A * A;
  constexpr int KB = WgBlock<M>::KB, TV = WgBlock<M>::TV;
  constexpr index_t TB = TV * VecOf<T>::L;
  // float: vector transforms over groups of GL tiles (segments start at multiples of GL);
  // double: the plain-loop transforms
  constexpr bool vec_path = sizeof(T) == 4;
  constexpr int GL = vec_path ? VecOf<float>::L : 1;
  const index_t C = g.C, K = g.K;
  const index_t Kp = (K + KB - 1) / KB * KB;
  const index_t nTh = (g.P + M - 1) / M, nTw = (g.Q + M - 1) / M;
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
  if (nt > 1) rows_per_chunk = wg_max(1, wg_min(rows_per_chunk, (total_rows + 8 * nt - 1) / (8 * nt)));
  {
    // Phantom tiles and the padding of segments to groups and of chunks to TB make the tiles
    // computed per real tile depend on the chunk height: take the height in [r/2, r] with the
    // fewest (F(4x4) 56x56 on AVX2: 5 rows compute 96 tiles for 70, 8 rows 120 for 112).
    auto computed = [&](index_t r) {
      if (kWgCompact && vec_path)  // only the real tiles, padded to whole TB blocks
        return static_cast<double>((r * nTw + TB - 1) / TB * TB) / static_cast<double>(r);
      const index_t seg = (nTh * S + GL - 1) / GL * GL, part = ((r % nTh) * S + GL - 1) / GL * GL;
      const index_t tiles = r < nTh ? (r * S + GL - 1) / GL * GL : r / nTh * seg + part;
      return static_cast<double>((tiles + TB - 1) / TB * TB) / static_cast<double>(r);
    };
    index_t best = rows_per_chunk;
    for (index_t r = rows_per_chunk; r >= wg_max(1, rows_per_chunk / 2); --r)
      if (computed(r) < computed(best) * 0.98) best = r;
    rows_per_chunk = best;
  }
  const index_t nchunks = (total_rows + rows_per_chunk - 1) / rows_per_chunk;
  // a chunk holds at most rows_per_chunk / nTh + 2 segments, each padded to whole groups
  const index_t Tmax = rows_per_chunk * S + (rows_per_chunk / nTh + 2) * (GL - 1);
  const index_t ldmax = (Tmax + TB - 1) / TB * TB;
  const index_t seg_max = wg_min(rows_per_chunk, nTh) * S;
  // strip buffers: A strips of a segment (vector path) or of one tile row (loop path)
  const index_t Wb = vec_path ? wg_strip_width<M, GL>(seg_max) : nTw * M + 2;
  const index_t zlen = g.W + 16;
  // V, M (+32 of slack for full-vector reads past the last tile), strips, zero row, loop-path scratch
  // compact layout: per group of a segment its lane mask and first compact column
  const index_t ngmax = (Tmax + GL - 1) / GL + 2;
  const index_t gm_elems = kWgCompact && vec_path ? (ngmax * (sizeof(std::uint32_t) + sizeof(index_t))) / sizeof(T) + 4 : 0;
  const index_t per_thread =
      A2 * (C + Kp) * ldmax + 32 + 2 * A * Wb + zlen + A2 * Tmax + M * A * Tmax + M * M * Tmax + 64 + gm_elems;
  T* scratch = static_cast<T*>(conv_scratch(sizeof(T) * per_thread * nt, 3));
  const index_t x_img = C * g.H * g.W, y_img = K * g.P * g.Q;

  // One chunk: input transform per segment and channel, A2 element-wise products, output
  // transform per segment and output channel.
  auto chunk = [&](std::int64_t ch, int tid) {
    T* V = scratch + per_thread * tid;
    T* Mm = V + A2 * C * ldmax;
    T* buf = Mm + A2 * Kp * ldmax + 32;
    T* t = buf + A * Wb;
    T* zrow = t + A * Wb;
    T* ph = zrow + zlen;
    T* z = ph + A2 * Tmax;
    T* yt = z + M * A * Tmax;
    // (8-byte aligned: the scratch starts on a cache line, per_thread may be odd)
    index_t* gfirst = reinterpret_cast<index_t*>((reinterpret_cast<std::uintptr_t>(yt + M * M * Tmax + 64) + 7) &
                                                 ~std::uintptr_t(7));
    std::uint32_t* gmask = reinterpret_cast<std::uint32_t*>(gfirst + ngmax);
    // Columns a segment of nrows tile rows takes in V and M: whole groups of strip tiles, phantoms
    // included, or (compact) only its real tiles.
    auto seg_cols = [&](index_t nrows) {
      return kWgCompact && vec_path ? nrows * nTw : (nrows * S + GL - 1) / GL * GL;
    };
    const index_t r0 = ch * rows_per_chunk, r1 = wg_min(total_rows, r0 + rows_per_chunk);
    // segments: maximal runs of tile rows of one image; segment s starts at tile column offs[s]
    index_t Tc = 0;
    for (index_t rr = r0; rr < r1;) {
      const index_t nrows = wg_min(r1 - rr, nTh - rr % nTh);
      Tc += seg_cols(nrows);
      rr += nrows;
    }
    const index_t ld = (Tc + TB - 1) / TB * TB;
    for (index_t j = 0; j < zlen; ++j) zrow[j] = T(0);
    for (index_t rr = r0, off = 0; rr < r1;) {
      const index_t n = rr / nTh, th0 = rr % nTh;
      const index_t nrows = wg_min(r1 - rr, nTh - th0);
      if constexpr (kWgCompact && vec_path) wg_group_masks<M, GL>(gmask, gfirst, nrows, S, nTw);
      for (index_t c = 0; c < C; ++c) {
        const T* xc = x + n * x_img + c * g.H * g.W;
        if constexpr (vec_path)
          input_transform_vec<M, GL>(V + c * ld + off, C * ld, xc, g, th0, nrows, nTw, S, buf, zrow, gmask, gfirst);
        else
          input_transform_seg<T, M>(V + c * ld + off, C * ld, xc, g, th0, nrows, nTw, buf, t, ph);
      }
      off += seg_cols(nrows);
      rr += nrows;
    }
    if (ld > Tc) {
      if constexpr (vec_path) {  // whole vectors where they fit: stores, not a memset call per row
        Vec<T> zv = {};
        __asm__("" : "+x"(zv));
        const index_t Tv = wg_min(ld, (Tc + GL - 1) / GL * GL);  // ld is whole vectors
        for (index_t i = 0; i < A2 * C; ++i) {
          for (index_t j = Tc; j < Tv; ++j) V[i * ld + j] = T(0);
          for (index_t j = Tv; j < ld; j += GL) vstore<T>(V + i * ld + j, zv);
        }
      } else {
        for (index_t i = 0; i < A2 * C; ++i)
          for (index_t j = Tc; j < ld; ++j) V[i * ld + j] = T(0);
      }
    }
    for (int xi = 0; xi < A2; ++xi)
      wg_gemm<T, KB, TV>(Mm + xi * Kp * ld, U + xi * C * Kp, V + xi * C * ld, Kp, C, ld);
    for (index_t rr = r0, off = 0; rr < r1;) {
      const index_t n = rr / nTh, th0 = rr % nTh;
      const index_t nrows = wg_min(r1 - rr, nTh - th0);
      if constexpr (kWgCompact && vec_path) wg_group_masks<M, GL>(gmask, gfirst, nrows, S, nTw);
      for (index_t k = 0; k < K; ++k) {
        T* yk = y + n * y_img + k * g.P * g.Q;
        const T bk = b ? b[k] : T(0);
        if constexpr (vec_path)
          output_transform_vec<M, GL>(yk, Mm + k * ld + off, Kp * ld, bk, act, g, th0, nrows, S, buf, gmask, gfirst);
        else
          output_transform_seg<T, M>(yk, Mm + k * ld + off, Kp * ld, bk, act, g, th0, nrows, nTw, z, yt);
      }
      off += seg_cols(nrows);
      rr += nrows;
    }
    for (index_t rr = r0; rr < r1;) {
      const index_t n = rr / nTh, th0 = rr % nTh;
      const index_t nrows = wg_min(r1 - rr, nTh - th0);
      const index_t ha = wg_max(th0 * M - g.pt, 0), hb = wg_min((th0 + nrows) * M - g.pt + 2, g.H);
      bool finite = true;
      for (index_t c = 0; c < C && finite && hb > ha; ++c)
        finite = all_finite(x + n * x_img + (c * g.H + ha) * g.W, (hb - ha) * g.W);
      if (!finite) patch_nonfinite_tiles<T, M>(y, x, w, b, g, act, flip_transpose, n, th0, nrows);
      rr += nrows;
    }
  };
  parallel_for(nt, nchunks, chunk, 1);
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
