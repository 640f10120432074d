// Fused attention kernels (attention.h), compiled once per instruction set.
//
// Included by attention.cpp (baseline x86-64: float with SSE2 vectors and float64 with plain loops)
// and by attention_avx2.cpp / attention_avx512.cpp (float), each inside its own namespace
// PYDL_ATTN_NS with its own register tile PYDL_ATTN_TILE (a row of detail::kAttnTile*), so every
// translation unit gets its own, differently named copy compiled for its ISA.
//
// Scores are kept in log2 units: Q is packed pre-multiplied by scale * log2(e), so the softmax
// uses 2^x (one polynomial, no extra multiply per score); lse is converted back to natural log.
#ifndef PYDL_ATTN_NS
#error "define PYDL_ATTN_NS and PYDL_ATTN_TILE before including attention_impl.h"
#endif

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "attention.h"
#include "threading.h"

namespace pydl {
namespace PYDL_ATTN_NS {

#include "simd_vec.h"

#define PYDL_R __restrict__

using VF = Vec<float>;
constexpr int kL = VecOf<float>::L;
typedef std::int32_t VI __attribute__((vector_size(sizeof(VF))));
typedef std::uint32_t VU __attribute__((vector_size(sizeof(VF))));
typedef std::uint8_t VB __attribute__((vector_size(kL)));

constexpr double kLog2e = 1.4426950408889634;
constexpr double kLn2 = 0.6931471805599453;

template <typename V, typename S, std::size_t... I>
PYDL_VINLINE V splat_(S s, std::index_sequence<I...>) {
  return V{((void)I, s)...};
}
// All lanes = s, as one broadcast (see rnn_cell.h's vsplat).
template <typename V, typename S>
PYDL_VINLINE V splat(S s) {
  return splat_<V>(s, std::make_index_sequence<kL>{});
}
PYDL_VINLINE VF vf(float s) { return splat<VF>(s); }
template <std::size_t... I>
PYDL_VINLINE VI iota_(std::index_sequence<I...>) {
  return VI{static_cast<std::int32_t>(I)...};
}
PYDL_VINLINE VI viota() { return iota_(std::make_index_sequence<kL>{}); }

// Maxima that keep NaN (a NaN score must make its row NaN, not vanish from the max).
template <typename T>
static inline T max_nan(T a, T b) {
  return (a > b || a != a) ? a : b;
}
PYDL_VINLINE float hmax(VF v) {
  float m = v[0];
  for (int l = 1; l < kL; ++l) m = max_nan(v[l], m);
  return m;
}
PYDL_VINLINE float hsum(VF v) {
  float s = 0.0f;
  for (int l = 0; l < kL; ++l) s += v[l];
  return s;
}

// 2^x: x = n + r, |r| <= 1/2, 2^r by a degree-6 polynomial (a least-squares fit of the relative
// error at Chebyshev nodes: < 1e-7 relative in float, ~1.5 ulp), 2^n put in the exponent bits.
// Exactly 0 below -126 (so masked scores, -inf, give exactly 0); NaN stays NaN. Arguments are
// <= 0 up to rounding (scores minus their row maximum or log-sum-exp), so there is no upper clamp.
PYDL_VINLINE VF vexp2(VF x) {
  const VF lo = vf(-126.0f);
  const VI under = x < lo;
  x = x < lo ? lo : x;
  const VF magic = vf(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const VF s = x + magic;
  const VF r = x - (s - magic);
  VF p = vf(1.5337577497120947e-04f);
  p = p * r + 1.3399859890341759e-03f;
  p = p * r + 9.618519805371761e-03f;
  p = p * r + 5.550329014658928e-02f;
  p = p * r + 2.4022646248340607e-01f;
  p = p * r + 6.931471824645996e-01f;
  p = p * r + 1.0f;
  const VI e = ((VI)s - 0x4B400000 + 127) << 23;
  const VF y = p * (VF)e;
  return (VF)((VI)y & ~under);
}

// ---- blocks and register tiles -------------------------------------------------------------
template <typename F>
struct Blk;
template <>
struct Blk<float> {
  static constexpr detail::AttnTile t = PYDL_ATTN_TILE;
};
template <>
struct Blk<double> {
  static constexpr detail::AttnTile t = detail::kAttnTileDouble;
};

enum : int { kStore = 0, kAdd = 1, kScale = 2 };

// C[i, 0:NR] (kStore: =; kAdd: +=; kScale: = alpha[i] C +) sum_{p<k} a(i, p) b(p, 0:NR), i < M,
// with a(i, p) = A[i RSA + p CSA] (a packed panel, a row-major block or its transpose) and
// b(p, :) = B[p rsb + 0:NR] (a packed panel or rows of a padded row-major matrix). Every element is
// one sequential sum over p, whatever m and whichever thread.
template <int M, int NV, int RSA, int CSA>
static inline void tile_fm(index_t k, const float* PYDL_R A, const float* PYDL_R B, index_t rsb, float* PYDL_R C,
                           index_t ldc, int mode, const float* PYDL_R alpha) {
  static_assert(M * NV + NV + 1 <= kVecRegs, "register tile larger than the register file");
  VF c[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) c[i][v] = VF{};
  for (index_t p = 0; p < k; ++p) {
    VF bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = vload(B + p * rsb + v * kL);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      const VF a = vf(A[i * RSA + p * CSA]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[i][v] += a * bv[v];
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i) {
    const VF al = mode == kScale ? vf(alpha[i]) : VF{};
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* dst = C + i * ldc + v * kL;
      if (mode == kStore) vstore(dst, c[i][v]);
      else if (mode == kAdd) vstore(dst, vload(dst) + c[i][v]);
      else vstore(dst, vload(dst) * al + c[i][v]);
    }
  }
}

template <int MR, int NV, int RSA, int CSA, int M = MR>
static inline void tile_f(index_t m, index_t k, const float* A, const float* B, index_t rsb, float* C, index_t ldc,
                          int mode, const float* alpha) {
  if constexpr (M >= 1) {
    if (m == M) return tile_fm<M, NV, RSA, CSA>(k, A, B, rsb, C, ldc, mode, alpha);
    return tile_f<MR, NV, RSA, CSA, M - 1>(m, k, A, B, rsb, C, ldc, mode, alpha);
  }
}

// float64 (the gradient-check path): the same contract in plain loops.
template <int MR, int NR, int RSA, int CSA>
static void tile_d(index_t m, index_t k, const double* PYDL_R A, const double* PYDL_R B, index_t rsb,
                   double* PYDL_R C, index_t ldc, int mode, const double* PYDL_R alpha) {
  double acc[MR][NR] = {};
  for (index_t p = 0; p < k; ++p) {
    const double* PYDL_R b = B + p * rsb;
    for (index_t i = 0; i < m; ++i) {
      const double a = A[i * RSA + p * CSA];
      for (int j = 0; j < NR; ++j) acc[i][j] += a * b[j];
    }
  }
  for (index_t i = 0; i < m; ++i)
    for (int j = 0; j < NR; ++j) {
      double& dst = C[i * ldc + j];
      dst = mode == kStore ? acc[i][j] : mode == kAdd ? dst + acc[i][j] : alpha[i] * dst + acc[i][j];
    }
}

// C[m, ncols] (mode) A[m, k] B[k, ncols], ncols a multiple of NR: row panels of MR (A panel r at
// A + r * a_step), column panels of NR (B panel c at B + c * b_step, its rows rsb apart).
template <typename F, int RSA, int CSA>
static void block_mm(index_t m, index_t ncols, index_t k, const F* A, index_t a_step, const F* B, index_t b_step,
                     index_t rsb, F* C, index_t ldc, int mode, const F* alpha) {
  constexpr int MR = Blk<F>::t.MR, NR = Blk<F>::t.NR;
  for (index_t c0 = 0, c = 0; c0 < ncols; c0 += NR, ++c)
    for (index_t r0 = 0, r = 0; r0 < m; r0 += MR, ++r) {
      const index_t mr = std::min<index_t>(MR, m - r0);
      const F* al = alpha ? alpha + r0 : nullptr;
      if constexpr (std::is_same<F, float>::value)
        tile_f<MR, NR / kL, RSA, CSA>(mr, k, A + r * a_step, B + c * b_step, rsb, C + r0 * ldc + c0, ldc, mode, al);
      else
        tile_d<MR, NR, RSA, CSA>(mr, k, A + r * a_step, B + c * b_step, rsb, C + r0 * ldc + c0, ldc, mode, al);
    }
}

// ---- packing ------------------------------------------------------------------------------
// Rows [0, n) of X (row length w) into MR-row panels, each [w][MR]: x(r, p) at
// P[(r / MR) * w * MR + p * MR + r % MR], times `mul`. Rows past n in the last panel are not read.
template <typename F>
static void pack_rows_panels(F* PYDL_R P, const F* PYDL_R X, index_t n, index_t w, F mul) {
  constexpr int MR = Blk<F>::t.MR;
  for (index_t r0 = 0; r0 < n; r0 += MR) {
    F* dst = P + r0 * w;
    const index_t mr = std::min<index_t>(MR, n - r0);
    for (index_t i = 0; i < mr; ++i) {
      const F* src = X + (r0 + i) * w;
      for (index_t p = 0; p < w; ++p) dst[p * MR + i] = src[p] * mul;
    }
  }
}

// Rows [0, n) of X (row length w) transposed into NR-column panels, each [w][NR]: x(j, p) at
// P[(j / NR) * w * NR + p * NR + j % NR]; the last panel is zero-padded.
template <typename F>
static void pack_cols_panels(F* PYDL_R P, const F* PYDL_R X, index_t n, index_t w) {
  constexpr int NR = Blk<F>::t.NR;
  for (index_t j0 = 0; j0 < n; j0 += NR) {
    F* dst = P + j0 * w;
    const index_t nr = std::min<index_t>(NR, n - j0);
    if (nr < NR) std::memset(dst, 0, sizeof(F) * w * NR);
    for (index_t j = 0; j < nr; ++j) {
      const F* src = X + (j0 + j) * w;
      for (index_t p = 0; p < w; ++p) dst[p * NR + j] = src[p];
    }
  }
}

// Rows [0, n) of X (row length w) into rows of length wp >= w, zero-padded.
template <typename F>
static void pack_rows_padded(F* PYDL_R P, const F* PYDL_R X, index_t n, index_t w, index_t wp) {
  for (index_t r = 0; r < n; ++r) {
    std::memcpy(P + r * wp, X + r * w, sizeof(F) * w);
    for (index_t c = w; c < wp; ++c) P[r * wp + c] = F(0);
  }
}

static inline index_t round_up(index_t x, index_t m) { return (x + m - 1) / m * m; }

// ---- one row of a score block ---------------------------------------------------------------
// The mask of one query row: kind, and its values from key 0 (or one value when mS == 1).
template <typename F>
struct RowMask {
  AttnMaskKind kind = AttnMaskKind::none;
  const std::uint8_t* b = nullptr;
  const F* a = nullptr;
  bool scalar = false;
};

template <typename F>
static RowMask<F> row_mask(const AttnMask& mk, index_t b, index_t h, index_t i) {
  RowMask<F> r;
  r.kind = mk.kind;
  if (mk.kind == AttnMaskKind::none) return r;
  const index_t off = (((mk.mB > 1 ? b : 0) * mk.mH + (mk.mH > 1 ? h : 0)) * mk.mT + (mk.mT > 1 ? i : 0)) * mk.mS;
  r.scalar = mk.mS == 1;
  if (mk.kind == AttnMaskKind::boolean) r.b = static_cast<const std::uint8_t*>(mk.data) + off;
  else r.a = static_cast<const F*>(mk.data) + off;
  return r;
}

struct Drop {
  bool on = false;
  std::int32_t thr = 0;
  float inv = 1.0f;    // 1 / (1 - p)
  double inv_d = 1.0;  // the same in double (float64 path)
};

// Scores of keys j0 + [0, len) of one row in log2 units with the mask applied (masked: -inf);
// lanes at or past n (causal / block end) are -inf. TAIL: the vector at j may reach past n (the
// row's last partial vector, or one wholly past it); without it, j + kL <= n. The partial reads
// of the mask are kept out of the loops over full vectors (the callers run the tail after them):
// a copy of n - j bytes is a memcpy call, around which the loop's registers were spilled
// (tools/check_spills.py).
template <bool TAIL>
PYDL_VINLINE VF masked_scores(const float* PYDL_R s, index_t j, index_t n, index_t j0, const RowMask<float>& rm) {
  VF x = vload(s + j);
  VI ok = ~VI{};
  if constexpr (TAIL) ok = (viota() + static_cast<std::int32_t>(j)) < static_cast<std::int32_t>(n);
  if (rm.kind == AttnMaskKind::boolean) {
    if (rm.scalar) {
      if (!rm.b[0]) ok = VI{};
    } else {
      VB mb = {};
      if (!TAIL || j + kL <= n) std::memcpy(&mb, rm.b + j0 + j, kL);
      else if (j < n) std::memcpy(&mb, rm.b + j0 + j, static_cast<std::size_t>(n - j));
      ok &= __builtin_convertvector(mb, VI) != 0;
    }
  } else if (rm.kind == AttnMaskKind::additive) {
    if (rm.scalar) {
      x += vf(static_cast<float>(kLog2e) * rm.a[0]);
    } else {
      VF a = {};
      if (!TAIL || j + kL <= n) a = vload(rm.a + j0 + j);
      else if (j < n) a = vload_n<float>(rm.a + j0 + j, static_cast<int>(n - j));
      x += static_cast<float>(kLog2e) * a;
    }
  }
  return ok ? x : vf(-std::numeric_limits<float>::infinity());
}

// Runs step(j, part) for j = 0, kL, ... below `end`, part a std::integral_constant: kFull for the
// vectors wholly below n, then kPartial for the one that straddles n (if any), then kPast for
// those wholly at or past n (all their scores are -inf, no mask is read).
enum RowPart { kFull, kPartial, kPast };
template <class Step>
PYDL_VINLINE void row_vectors(index_t n, index_t end, Step&& step) {
  index_t j = 0;
  for (; j + kL <= n && j < end; j += kL) step(j, std::integral_constant<int, kFull>{});
  if (j < n && j < end) {
    step(j, std::integral_constant<int, kPartial>{});
    j += kL;
  }
  for (; j < end; j += kL) step(j, std::integral_constant<int, kPast>{});
}

PYDL_VINLINE VI dropout_keep(std::uint32_t rk, index_t jglob, std::int32_t thr) {
  VU u = splat<VU>(rk) ^ (((VU)viota() + static_cast<std::uint32_t>(jglob)) * 0x9E3779B9u);
  u ^= u >> 16;
  u *= 0x7FEB352Du;
  u ^= u >> 15;
  u *= 0x846CA68Bu;
  u ^= u >> 16;
  return (VI)(u >> 8) >= splat<VI>(thr);
}

template <typename F>
static F masked_score_s(F s, index_t j, index_t n, index_t j0, const RowMask<F>& rm) {
  if (j >= n) return -std::numeric_limits<F>::infinity();
  if (rm.kind == AttnMaskKind::boolean) {
    if (!rm.b[rm.scalar ? 0 : j0 + j]) return -std::numeric_limits<F>::infinity();
  } else if (rm.kind == AttnMaskKind::additive) {
    s += static_cast<F>(kLog2e) * rm.a[rm.scalar ? 0 : j0 + j];
  }
  return s;
}

// Forward: s[0, bk) holds the row's scores for keys j0 + [0, bk) (log2 units), of which the first
// n are visible. Updates the running max m and the running sum (kept as a vector lv, reduced once
// at the end of the row), overwrites s with P (dropout applied; 0 past n) and returns
// alpha = 2^(m_old - m_new), the factor for the row's partial output. kMasked / kDrop select the
// mask and dropout code at compile time.
template <bool kMasked, bool kDrop>
static float fwd_row(float* PYDL_R s, index_t n, index_t bk, index_t j0, const RowMask<float>& rm, float& m,
                     VF& lv, const Drop& dr, std::uint32_t rk) {
  const index_t nb = round_up(bk, kL);
  if (n == 0) {
    std::memset(s, 0, sizeof(float) * nb);
    return 1.0f;
  }
  const float ninf = -std::numeric_limits<float>::infinity();
  VF vm = vf(ninf);
  row_vectors(n, n, [&](index_t j, auto part) {  // (no kPast vector below n)
    constexpr bool T = decltype(part)::value != kFull;
    VF x;
    if constexpr (kMasked) {
      x = masked_scores<T>(s, j, n, j0, rm);
      vstore(s + j, x);
    } else {  // the second pass drops lanes >= n itself
      x = vload(s + j);
      if constexpr (T) {
        const VI ok = (viota() + static_cast<std::int32_t>(j)) < static_cast<std::int32_t>(n);
        x = ok ? x : vf(ninf);
      }
    }
    vm = ((x > vm) | (x != x)) ? x : vm;
  });
  const float mb = hmax(vm);
  const float mn = max_nan(mb, m);
  if (mn == ninf) {  // nothing visible yet: P = 0, O and l stay 0
    std::memset(s, 0, sizeof(float) * nb);
    return 1.0f;
  }
  const float alpha = mn == m ? 1.0f : std::exp2(m - mn);
  const VF vmn = vf(mn);
  VF acc = {};
  for (index_t j = 0; j < nb; j += kL) {
    VF p = vexp2(vload(s + j) - vmn);
    if (j + kL > n) {
      const VI ok = (viota() + static_cast<std::int32_t>(j)) < static_cast<std::int32_t>(n);
      p = ok ? p : VF{};
    }
    acc += p;
    if constexpr (kDrop) p = dropout_keep(rk, j0 + j, dr.thr) ? p * dr.inv : VF{};
    vstore(s + j, p);
  }
  lv = lv * alpha + acc;
  m = mn;
  return alpha;
}

template <typename F>
static F fwd_row_s(F* PYDL_R s, index_t n, index_t bk, index_t j0, const RowMask<F>& rm, F& m, F& l, const Drop& dr,
                   std::uint32_t rk) {
  const F ninf = -std::numeric_limits<F>::infinity();
  F mb = ninf;
  for (index_t j = 0; j < n; ++j) {
    s[j] = masked_score_s(s[j], j, n, j0, rm);
    mb = max_nan(s[j], mb);
  }
  const F mn = max_nan(mb, m);
  if (n == 0 || mn == ninf) {
    for (index_t j = 0; j < bk; ++j) s[j] = F(0);
    return F(1);
  }
  const F alpha = std::exp2(m - mn);
  F acc = 0;
  for (index_t j = 0; j < bk; ++j) {
    F p = j < n ? std::exp2(s[j] - mn) : F(0);
    acc += p;
    if (dr.on) p = attn_dropout_keep(rk, j0 + j, dr.thr) ? p * static_cast<F>(dr.inv_d) : F(0);
    s[j] = p;
  }
  l = l * alpha + acc;
  m = mn;
  return alpha;
}

// Backward: s[0, bk) the recomputed scores (log2 units), g[0, bk) = dO_i . v_j. Overwrites s with
// the dropped-out P (for dV) and g with dS = scale * P . (Z dP - D) (for dQ and dK).
template <bool kMasked, bool kDrop>
static void bwd_row(float* PYDL_R s, float* PYDL_R g, index_t n, index_t bk, index_t j0, const RowMask<float>& rm,
                    float lse2, float Di, float scale, const Drop& dr, std::uint32_t rk) {
  const index_t nb = round_up(bk, kL);
  if (n == 0) {
    std::memset(s, 0, sizeof(float) * nb);
    std::memset(g, 0, sizeof(float) * nb);
    return;
  }
  const VF vl = vf(lse2), vd = vf(Di), vs = vf(scale);
  row_vectors(n, nb, [&](index_t j, auto part) {
    constexpr int Part = decltype(part)::value;
    constexpr bool T = Part != kFull;
    VF x;
    if constexpr (Part == kPast) {
      x = vf(-std::numeric_limits<float>::infinity());
    } else if constexpr (kMasked) {
      x = masked_scores<T>(s, j, n, j0, rm);
    } else {
      x = vload(s + j);
      if constexpr (T) {
        const VI ok = (viota() + static_cast<std::int32_t>(j)) < static_cast<std::int32_t>(n);
        x = ok ? x : vf(-std::numeric_limits<float>::infinity());
      }
    }
    const VF p = vexp2(x - vl);
    VF dp = vload(g + j), pd = p;
    if constexpr (kDrop) {
      const VI keep = dropout_keep(rk, j0 + j, dr.thr);
      pd = keep ? p * dr.inv : VF{};
      dp = keep ? dp * dr.inv : VF{};
    }
    vstore(s + j, pd);
    vstore(g + j, p * (dp - vd) * vs);
  });
}

template <typename F>
static void bwd_row_s(F* PYDL_R s, F* PYDL_R g, index_t n, index_t bk, index_t j0, const RowMask<F>& rm, F lse2,
                      F Di, F scale, const Drop& dr, std::uint32_t rk) {
  for (index_t j = 0; j < bk; ++j) {
    const F x = masked_score_s(s[j], j, n, j0, rm);
    const F p = x == -std::numeric_limits<F>::infinity() ? F(0) : std::exp2(x - lse2);
    F dp = g[j], pd = p;
    if (dr.on) {
      const bool keep = attn_dropout_keep(rk, j0 + j, dr.thr);
      pd = keep ? p * static_cast<F>(dr.inv_d) : F(0);
      dp = keep ? dp * static_cast<F>(dr.inv_d) : F(0);
    }
    s[j] = pd;
    g[j] = p * (dp - Di) * scale;
  }
}

static Drop make_drop(const AttnSizes& z) {
  Drop d;
  d.on = z.dropout > 0.0;
  if (d.on) {
    d.thr = attn_dropout_threshold(z.dropout);
    d.inv_d = 1.0 / (1.0 - z.dropout);
    d.inv = static_cast<float>(d.inv_d);
  }
  return d;
}

// Work in FLOP below which extra threads do not pay for their region.
constexpr double kMinFlopPerThread = 2e6;

// ---- forward --------------------------------------------------------------------------------
// Tasks: (b, h, a run of query blocks). The blocks are fixed (BQ rows) and each row's arithmetic
// depends only on the key blocks, so how blocks are grouped into tasks, and which thread runs
// them, never changes a bit. Each task packs the K^T panels and the (padded) V rows it needs.
template <typename F>
void forward_impl(F* out, F* lse, const F* q, const F* k, const F* v, const AttnMask& mask, const AttnSizes& z) {
  constexpr int MR = Blk<F>::t.MR, NR = Blk<F>::t.NR, BQ = Blk<F>::t.BQ, BK = Blk<F>::t.BK;
  static_assert(BQ % MR == 0 && BK % NR == 0, "blocks must be whole tiles");
  const index_t B = z.B, H = z.H, T = z.T, S = z.S, d = z.d, dv = z.dv;
  if (B * H * T == 0) return;
  const index_t dvp = round_up(dv, NR), Sp = round_up(S, BK);
  const bool v_in_place = dvp == dv;
  const index_t nqb = (T + BQ - 1) / BQ;
  const int nt = threads_for(4.0 * B * H * T * S * (d + dv) / 2, kMinFlopPerThread);
  const index_t cpb = nt > 1 ? std::min<index_t>(nqb, std::max<index_t>(1, (4 * nt + B * H - 1) / (B * H))) : 1;
  const index_t per_thread = Sp * d + (v_in_place ? 0 : Sp * dvp) + BQ * d + BQ * BK + BQ * dvp + 2 * BQ + BQ * kL;
  std::vector<aligned_ptr<F>> scratch;
  for (int t = 0; t < std::max(nt, 1); ++t) scratch.push_back(aligned_alloc_array<F>(per_thread));
  const F qs = static_cast<F>(z.scale * kLog2e);
  const Drop dr = make_drop(z);
  const F ninf = -std::numeric_limits<F>::infinity();

  parallel_for(nt, B * H * cpb, [&](std::int64_t task, int tid) {
    const index_t bh = task / cpb, chunk = task % cpb;
    const index_t b = bh / H, h = bh % H;
    const index_t qb0 = nqb * chunk / cpb, qb1 = nqb * (chunk + 1) / cpb;
    if (qb0 >= qb1) return;
    F* Kp = scratch[tid].get();
    F* Vr = Kp + Sp * d;
    F* Qp = Vr + (v_in_place ? 0 : Sp * dvp);
    F* Sb = Qp + BQ * d;
    F* O = Sb + BQ * BK;
    F* mrow = O + BQ * dvp;
    F* arow = mrow + BQ;
    F* lrow = arow + BQ;  // the running sums: one vector (float) or one value (double) per row
    const F* qbh = q + bh * T * d;
    const F* kbh = k + bh * S * d;
    const F* vbh = v + bh * S * dv;
    const index_t kneed = z.causal ? std::min(S, std::min(T, qb1 * BQ)) : S;
    pack_cols_panels(Kp, kbh, kneed, d);
    const F* Vrows = vbh;
    if (!v_in_place) {
      pack_rows_padded(Vr, vbh, kneed, dv, dvp);
      Vrows = Vr;
    }
    for (index_t qb = qb0; qb < qb1; ++qb) {
      const index_t i0 = qb * BQ, bq = std::min<index_t>(BQ, T - i0);
      pack_rows_panels(Qp, qbh + i0 * d, bq, d, qs);
      std::memset(O, 0, sizeof(F) * bq * dvp);
      for (index_t r = 0; r < bq; ++r) mrow[r] = ninf;
      std::memset(lrow, 0, sizeof(F) * bq * kL);
      const bool masked = mask.kind != AttnMaskKind::none;
      const index_t jend = z.causal ? std::min(S, i0 + bq) : S;
      for (index_t j0 = 0; j0 < jend; j0 += BK) {
        // Causal: keys past jend are invisible to every row of the block, and were not packed.
        const index_t bk = std::min<index_t>(BK, jend - j0);
        block_mm<F, 1, MR>(bq, round_up(bk, NR), d, Qp, d * MR, Kp + j0 * d, d * NR, NR, Sb, BK, kStore, nullptr);
        for (index_t r = 0; r < bq; ++r) {
          const index_t i = i0 + r;
          const index_t n = z.causal ? std::max<index_t>(0, std::min<index_t>(bk, i - j0 + 1)) : bk;
          const RowMask<F> rm = row_mask<F>(mask, b, h, i);
          const std::uint32_t rk = dr.on ? attn_row_key(z.seed, b, h, i, H, T) : 0u;
          if constexpr (std::is_same<F, float>::value) {
            F* sr = Sb + r * BK;
            VF lv = vload(lrow + r * kL);
            if (masked) {
              arow[r] = dr.on ? fwd_row<true, true>(sr, n, bk, j0, rm, mrow[r], lv, dr, rk)
                              : fwd_row<true, false>(sr, n, bk, j0, rm, mrow[r], lv, dr, rk);
            } else {
              arow[r] = dr.on ? fwd_row<false, true>(sr, n, bk, j0, rm, mrow[r], lv, dr, rk)
                              : fwd_row<false, false>(sr, n, bk, j0, rm, mrow[r], lv, dr, rk);
            }
            vstore(lrow + r * kL, lv);
          } else {
            arow[r] = fwd_row_s<F>(Sb + r * BK, n, bk, j0, rm, mrow[r], lrow[r * kL], dr, rk);
          }
        }
        block_mm<F, BK, 1>(bq, dvp, bk, Sb, MR * BK, Vrows + j0 * dvp, NR, dvp, O, dvp, kScale, arow);
      }
      for (index_t r = 0; r < bq; ++r) {
        const index_t i = i0 + r;
        F l;
        if constexpr (std::is_same<F, float>::value) l = hsum(vload(lrow + r * kL));
        else l = lrow[r * kL];
        const F inv = l == F(0) ? F(0) : F(1) / l;
        F* dst = out + (bh * T + i) * dv;
        for (index_t c = 0; c < dv; ++c) dst[c] = O[r * dvp + c] * inv;
        lse[bh * T + i] = mrow[r] == ninf ? ninf
                                          : static_cast<F>((static_cast<double>(mrow[r]) +
                                                            std::log2(static_cast<double>(l))) * kLn2);
      }
    }
  }, 1);
}

// ---- backward -------------------------------------------------------------------------------
// Per (b, h): the packed operands every block pair reads.
template <typename F>
struct BwdPacks {
  F* Qp;    // Q * scale * log2e in MR-row panels [T'][d]    (S = Q K^T)
  F* dOp;   // dO in MR-row panels [T'][dv]                   (dP = dO V^T)
  F* Kp;    // K^T in NR-column panels [S'][d]
  F* Vtp;   // V^T in NR-column panels [S'][dv]
  const F* Qr;   // Q rows padded to dp   (dK += dS^T Q)
  const F* dOr;  // dO rows padded to dvp (dV += P^T dO)
  const F* Kr;   // K rows padded to dp   (dQ += dS K)
  F* lse2;  // lse in log2 units (+inf for a fully masked row, so its P is 0)
  F* D;     // rowsum(dO . O)
};

template <typename F>
struct BwdLayout {
  index_t T, S, d, dv, dp, dvp, Tp, Sp;
  bool q_in_place, do_in_place, k_in_place;
  index_t pack_size() const {
    return Tp * d + Tp * dv + Sp * d + Sp * dv + (q_in_place ? 0 : T * dp) + (do_in_place ? 0 : T * dvp) +
           (k_in_place ? 0 : S * dp) + 2 * round_up(T, 16);
  }
};

template <typename F>
static BwdLayout<F> bwd_layout(const AttnSizes& z) {
  constexpr int MR = Blk<F>::t.MR, NR = Blk<F>::t.NR, BK = Blk<F>::t.BK;
  BwdLayout<F> L;
  L.T = z.T, L.S = z.S, L.d = z.d, L.dv = z.dv;
  L.dp = round_up(z.d, NR), L.dvp = round_up(z.dv, NR);
  L.Tp = round_up(z.T, MR), L.Sp = round_up(z.S, BK);
  L.q_in_place = L.dp == z.d, L.k_in_place = L.dp == z.d, L.do_in_place = L.dvp == z.dv;
  return L;
}

template <typename F>
static BwdPacks<F> make_packs(F* buf, const BwdLayout<F>& L, index_t bh, const F* q, const F* k, const F* v,
                              const F* out, const F* lse, const F* dout, F qs) {
  const index_t T = L.T, S = L.S, d = L.d, dv = L.dv;
  BwdPacks<F> P;
  P.Qp = buf;
  P.dOp = P.Qp + L.Tp * d;
  P.Kp = P.dOp + L.Tp * dv;
  P.Vtp = P.Kp + L.Sp * d;
  F* rest = P.Vtp + L.Sp * dv;
  const F* qbh = q + bh * T * d;
  const F* kbh = k + bh * S * d;
  const F* vbh = v + bh * S * dv;
  const F* obh = out + bh * T * dv;
  const F* dobh = dout + bh * T * dv;
  const F* lbh = lse + bh * T;
  pack_rows_panels(P.Qp, qbh, T, d, qs);
  pack_rows_panels(P.dOp, dobh, T, dv, F(1));
  pack_cols_panels(P.Kp, kbh, S, d);
  pack_cols_panels(P.Vtp, vbh, S, dv);
  if (L.q_in_place) {
    P.Qr = qbh;
  } else {
    pack_rows_padded(rest, qbh, T, d, L.dp);
    P.Qr = rest;
    rest += T * L.dp;
  }
  if (L.do_in_place) {
    P.dOr = dobh;
  } else {
    pack_rows_padded(rest, dobh, T, dv, L.dvp);
    P.dOr = rest;
    rest += T * L.dvp;
  }
  if (L.k_in_place) {
    P.Kr = kbh;
  } else {
    pack_rows_padded(rest, kbh, S, d, L.dp);
    P.Kr = rest;
    rest += S * L.dp;
  }
  P.lse2 = rest;
  P.D = rest + round_up(T, 16);
  for (index_t i = 0; i < T; ++i) {
    const F l = lbh[i];
    P.lse2[i] = l == -std::numeric_limits<F>::infinity() ? std::numeric_limits<F>::infinity()
                                                         : static_cast<F>(static_cast<double>(l) * kLog2e);
    double s = 0.0;
    for (index_t c = 0; c < dv; ++c) s += static_cast<double>(dobh[i * dv + c]) * obh[i * dv + c];
    P.D[i] = static_cast<F>(s);
  }
  return P;
}

// dS (into g) and the dropped-out P (into s) of block pair (query block at i0, key block at j0).
template <typename F>
static void ds_block(F* Sb, F* Gb, const BwdPacks<F>& P, const BwdLayout<F>& L, const AttnMask& mask,
                     const AttnSizes& z, const Drop& dr, index_t b, index_t h, index_t i0, index_t bq, index_t j0,
                     index_t bk) {
  constexpr int MR = Blk<F>::t.MR, NR = Blk<F>::t.NR, BK = Blk<F>::t.BK;
  const index_t d = L.d, dv = L.dv;
  const index_t nc = round_up(bk, NR);
  block_mm<F, 1, MR>(bq, nc, d, P.Qp + i0 * d, d * MR, P.Kp + j0 * d, d * NR, NR, Sb, BK, kStore, nullptr);
  block_mm<F, 1, MR>(bq, nc, dv, P.dOp + i0 * dv, dv * MR, P.Vtp + j0 * dv, dv * NR, NR, Gb, BK, kStore, nullptr);
  const F scale = static_cast<F>(z.scale);
  for (index_t r = 0; r < bq; ++r) {
    const index_t i = i0 + r;
    const index_t n = z.causal ? std::max<index_t>(0, std::min<index_t>(bk, i - j0 + 1)) : bk;
    const RowMask<F> rm = row_mask<F>(mask, b, h, i);
    const std::uint32_t rk = dr.on ? attn_row_key(z.seed, b, h, i, z.H, z.T) : 0u;
    if constexpr (std::is_same<F, float>::value) {
      float* sr = Sb + r * BK;
      float* gr = Gb + r * BK;
      if (mask.kind != AttnMaskKind::none) {
        if (dr.on) bwd_row<true, true>(sr, gr, n, bk, j0, rm, P.lse2[i], P.D[i], scale, dr, rk);
        else bwd_row<true, false>(sr, gr, n, bk, j0, rm, P.lse2[i], P.D[i], scale, dr, rk);
      } else {
        if (dr.on) bwd_row<false, true>(sr, gr, n, bk, j0, rm, P.lse2[i], P.D[i], scale, dr, rk);
        else bwd_row<false, false>(sr, gr, n, bk, j0, rm, P.lse2[i], P.D[i], scale, dr, rk);
      }
    }
    else
      bwd_row_s<F>(Sb + r * BK, Gb + r * BK, n, bk, j0, rm, P.lse2[i], P.D[i], scale, dr, rk);
  }
}

// dK_j, dV_j (+=, into Kacc [bk][dp], Vacc [bk][dvp]) from one block pair.
template <typename F>
static void dkdv_block(F* Kacc, F* Vacc, const F* Sb, const F* Gb, const BwdPacks<F>& P, const BwdLayout<F>& L,
                       index_t i0, index_t bq, index_t bk) {
  constexpr int MR = Blk<F>::t.MR, NR = Blk<F>::t.NR, BK = Blk<F>::t.BK;
  block_mm<F, 1, BK>(bk, L.dvp, bq, Sb, MR, P.dOr + i0 * L.dvp, NR, L.dvp, Vacc, L.dvp, kAdd, nullptr);
  block_mm<F, 1, BK>(bk, L.dp, bq, Gb, MR, P.Qr + i0 * L.dp, NR, L.dp, Kacc, L.dp, kAdd, nullptr);
}

// dQ_i (+=, into Qacc [bq][dp]) from one block pair.
template <typename F>
static void dq_block(F* Qacc, const F* Gb, const BwdPacks<F>& P, const BwdLayout<F>& L, index_t bq, index_t j0,
                     index_t bk) {
  constexpr int MR = Blk<F>::t.MR, NR = Blk<F>::t.NR, BK = Blk<F>::t.BK;
  block_mm<F, BK, 1>(bq, L.dp, bk, Gb, MR * BK, P.Kr + j0 * L.dp, NR, L.dp, Qacc, L.dp, kAdd, nullptr);
}

template <typename F>
static void copy_rows_out(F* dst, const F* src, index_t n, index_t w, index_t wp) {
  for (index_t r = 0; r < n; ++r) std::memcpy(dst + r * w, src + r * wp, sizeof(F) * w);
}

// Two schedules with the same arithmetic (so the same bits):
//  - per (b, h) task, when there are enough of them: key blocks outer, query blocks inner, dQ
//    accumulated for the whole sequence, 5 block products per pair;
//  - otherwise two passes over block pairs: key blocks in parallel (dK, dV), then query blocks
//    in parallel (dQ, recomputing dS), with the packs built once per (b, h) and shared.
// Either way dQ_i sums over key blocks in ascending order and dK_j, dV_j over query blocks in
// ascending order, from the same tiles.
template <typename F>
void backward_impl(F* dq, F* dk, F* dv, const F* q, const F* k, const F* v, const F* out, const F* lse,
                   const F* dout, const AttnMask& mask, const AttnSizes& z) {
  constexpr int BQ = Blk<F>::t.BQ, BK = Blk<F>::t.BK;
  const index_t B = z.B, H = z.H, T = z.T, S = z.S, d = z.d, dvw = z.dv;
  const index_t BH = B * H;
  if (BH == 0) return;
  if (T == 0 || S == 0) {
    std::fill(dq, dq + BH * T * d, F(0));
    std::fill(dk, dk + BH * S * d, F(0));
    std::fill(dv, dv + BH * S * dvw, F(0));
    return;
  }
  const BwdLayout<F> L = bwd_layout<F>(z);
  const index_t nqb = (T + BQ - 1) / BQ, nkb = (S + BK - 1) / BK;
  const int nt = threads_for(10.0 * BH * T * S * (d + dvw) / 2, kMinFlopPerThread);
  const F qs = static_cast<F>(z.scale * kLog2e);
  const Drop dr = make_drop(z);
  const index_t blk = 2 * BQ * BK + BK * L.dp + BK * L.dvp;  // Sb, Gb, Kacc, Vacc

  auto first_qb = [&](index_t j0) { return z.causal ? j0 / BQ : index_t(0); };
  auto key_end = [&](index_t i0, index_t bq) { return z.causal ? std::min(S, i0 + bq) : S; };

  if (nt <= 1 || BH >= 4 * nt) {
    const index_t per_thread = L.pack_size() + blk + T * L.dp;
    std::vector<aligned_ptr<F>> scratch;
    for (int t = 0; t < std::max(nt, 1); ++t) scratch.push_back(aligned_alloc_array<F>(per_thread));
    parallel_for(nt, BH, [&](std::int64_t bh, int tid) {
      const index_t b = bh / H, h = bh % H;
      F* buf = scratch[tid].get();
      const BwdPacks<F> P = make_packs(buf, L, bh, q, k, v, out, lse, dout, qs);
      F* Sb = buf + L.pack_size();
      F* Gb = Sb + BQ * BK;
      F* Kacc = Gb + BQ * BK;
      F* Vacc = Kacc + BK * L.dp;
      F* Qacc = Vacc + BK * L.dvp;
      std::memset(Qacc, 0, sizeof(F) * T * L.dp);
      for (index_t jb = 0; jb < nkb; ++jb) {
        const index_t j0 = jb * BK, bk = std::min<index_t>(BK, S - j0);
        std::memset(Kacc, 0, sizeof(F) * bk * L.dp);
        std::memset(Vacc, 0, sizeof(F) * bk * L.dvp);
        for (index_t qb = first_qb(j0); qb < nqb; ++qb) {
          const index_t i0 = qb * BQ, bq = std::min<index_t>(BQ, T - i0);
          if (key_end(i0, bq) <= j0) continue;
          ds_block(Sb, Gb, P, L, mask, z, dr, b, h, i0, bq, j0, bk);
          dkdv_block(Kacc, Vacc, Sb, Gb, P, L, i0, bq, bk);
          dq_block(Qacc + i0 * L.dp, Gb, P, L, bq, j0, bk);
        }
        copy_rows_out(dk + (bh * S + j0) * d, Kacc, bk, d, L.dp);
        copy_rows_out(dv + (bh * S + j0) * dvw, Vacc, bk, dvw, L.dvp);
      }
      copy_rows_out(dq + bh * T * d, Qacc, T, d, L.dp);
    }, 1);
    return;
  }

  // Few (b, h): shared packs, then key-block tasks, then query-block tasks.
  const index_t psz = round_up(L.pack_size(), 16);
  aligned_ptr<F> packs = aligned_alloc_array<F>(psz * BH);
  std::vector<BwdPacks<F>> P(static_cast<std::size_t>(BH));
  std::vector<aligned_ptr<F>> scratch;
  for (int t = 0; t < nt; ++t) scratch.push_back(aligned_alloc_array<F>(blk + BQ * L.dp));
  parallel_for(nt, BH, [&](std::int64_t bh, int) {
    P[bh] = make_packs(packs.get() + bh * psz, L, bh, q, k, v, out, lse, dout, qs);
  }, 1);
  parallel_for(nt, BH * nkb, [&](std::int64_t task, int tid) {
    const index_t bh = task / nkb, jb = task % nkb, b = bh / H, h = bh % H;
    const index_t j0 = jb * BK, bk = std::min<index_t>(BK, S - j0);
    F* Sb = scratch[tid].get();
    F* Gb = Sb + BQ * BK;
    F* Kacc = Gb + BQ * BK;
    F* Vacc = Kacc + BK * L.dp;
    std::memset(Kacc, 0, sizeof(F) * bk * L.dp);
    std::memset(Vacc, 0, sizeof(F) * bk * L.dvp);
    for (index_t qb = first_qb(j0); qb < nqb; ++qb) {
      const index_t i0 = qb * BQ, bq = std::min<index_t>(BQ, T - i0);
      if (key_end(i0, bq) <= j0) continue;
      ds_block(Sb, Gb, P[bh], L, mask, z, dr, b, h, i0, bq, j0, bk);
      dkdv_block(Kacc, Vacc, Sb, Gb, P[bh], L, i0, bq, bk);
    }
    copy_rows_out(dk + (bh * S + j0) * d, Kacc, bk, d, L.dp);
    copy_rows_out(dv + (bh * S + j0) * dvw, Vacc, bk, dvw, L.dvp);
  }, 1);
  parallel_for(nt, BH * nqb, [&](std::int64_t task, int tid) {
    const index_t bh = task / nqb, qb = task % nqb, b = bh / H, h = bh % H;
    const index_t i0 = qb * BQ, bq = std::min<index_t>(BQ, T - i0);
    F* Sb = scratch[tid].get();
    F* Gb = Sb + BQ * BK;
    F* Qacc = Gb + BQ * BK + BK * L.dp + BK * L.dvp;
    std::memset(Qacc, 0, sizeof(F) * bq * L.dp);
    const index_t jend = key_end(i0, bq);
    for (index_t j0 = 0; j0 < jend; j0 += BK) {
      const index_t bk = std::min<index_t>(BK, S - j0);
      ds_block(Sb, Gb, P[bh], L, mask, z, dr, b, h, i0, bq, j0, bk);
      dq_block(Qacc, Gb, P[bh], L, bq, j0, bk);
    }
    copy_rows_out(dq + (bh * T + i0) * d, Qacc, bq, d, L.dp);
  }, 1);
}

static const detail::AttnKernels* make_kernels() {
  static const detail::AttnKernels table = {forward_impl<float>, backward_impl<float>};
  return &table;
}

#undef PYDL_R

}  // namespace PYDL_ATTN_NS
}  // namespace pydl
