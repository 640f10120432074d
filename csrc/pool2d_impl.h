// Pooling micro-kernels (float), compiled once per ISA (pool2d.cpp, pool2d_avx2.cpp,
// pool2d_avx512.cpp each define PYDL_KNS). Everything is written over the file's native vector
// Vec<float> of L = 4 / 8 / 16 lanes (SSE2 / AVX2 / AVX-512): the 2x2 path used to be written
// for a fixed 16-lane group, and on AVX2 and SSE2 GCC lowered its two-input 16-lane shuffles to
// scalar moves through the stack (1300 stack operands in the AVX2 object; 0.3 GB/s).
//
// Register use (all ISAs, far below kVecRegs): 2x2 forward 4 inputs + 4 split + 2 maxima +
// 3 index vectors; general forward 1 maximum + 1 index + 2 loads per tap; 2x2 backward 4
// output vectors + 4 interleaved dy / argmax.
//
// takes(v, m) = v > m, or v is the first NaN (once m is NaN it stays): masks are -1 where true.
#ifndef PYDL_KNS
#error "define PYDL_KNS before including pool2d_impl.h"
#endif

#include <cstdint>
#include <cstring>
#include <limits>
#include <utility>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "common.h"

namespace pydl {
namespace PYDL_KNS {

#include "simd_vec.h"

namespace poolk {

constexpr int L = VecOf<float>::L;
using VF = Vec<float>;
using VI = Vec<std::int32_t>;
using VD = Vec<double>;
typedef float VFH __attribute__((vector_size(kVecBytes / 2)));  // half a register of floats
static_assert(sizeof(VI) == sizeof(VF) && VecOf<std::int32_t>::L == L, "int32 and float lanes must match");

// Lane order of the two-register even / odd split. On AVX2, vshufps picks the even (odd) floats
// of two registers within each 128-bit half (1 uop, where an in-order split costs 2 vpermd + a
// blend), so lane k holds element perm(k) = 0 1 4 5 2 3 6 7 (bits 1 and 2 swapped); kernels
// compute in that order and put results back in order once per block (vpermpd, perm is its own
// inverse). SSE2 (shufps) and AVX-512 (vpermt2ps) split in order in one instruction already.
constexpr int split_perm(int k) { return L == 8 ? ((k & 1) | ((k & 2) << 1) | ((k & 4) >> 1)) : k; }

template <int... I>
PYDL_VINLINE VI affine_(std::integer_sequence<int, I...>, int a, int b, bool perm) {
  return VI{(a * (perm ? split_perm(I) : I) + b)...};
}
// Lanes a*l + b, or a*perm(l) + b (constant after inlining, so shuffles by them compile to
// immediate permutes).
PYDL_VINLINE VI affine(int a, int b) { return affine_(std::make_integer_sequence<int, L>{}, a, b, false); }
PYDL_VINLINE VI paffine(int a, int b) { return affine_(std::make_integer_sequence<int, L>{}, a, b, true); }

// takes(v, m): not (v <= m) is v > m or v NaN or m NaN; the m == m term keeps a NaN maximum.
PYDL_VINLINE VI takes(VF v, VF m) { return ~(v <= m) & (m == m); }

PYDL_VINLINE VI vload_i(const std::int32_t* p) {
  VI v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

// Even / odd floats of a0:a1 in split order (lane k: element 2 perm(k) (+1) of the pair).
PYDL_VINLINE VF even_of(VF a0, VF a1) { return __builtin_shuffle(a0, a1, paffine(2, 0)); }
PYDL_VINLINE VF odd_of(VF a0, VF a1) { return __builtin_shuffle(a0, a1, paffine(2, 1)); }
// Split order back to element order.
template <typename V>
PYDL_VINLINE V in_order(V v) {
  if constexpr (L == 8) return __builtin_shuffle(v, paffine(1, 0));
  else return v;
}

}  // namespace poolk

// ---- max 2x2 / stride 2, no padding ------------------------------------------------------------
// L outputs of one output row from 2L inputs of each of its two input rows (r0, r1 point at
// column 2q); the first n results are stored (n = L: a plain store).
PYDL_VINLINE void maxpool2x2_block_f32(float* yq, std::int32_t* amq, const float* r0, const float* r1,
                                       std::int32_t idx0, std::int32_t W, int n) {
  using namespace poolk;
  const VF a0 = vload<float>(r0), a1 = vload<float>(r0 + L);
  const VF b0 = vload<float>(r1), b1 = vload<float>(r1 + L);
  const VF a = even_of(a0, a1), b = odd_of(a0, a1);
  const VF c = even_of(b0, b1), d = odd_of(b0, b1);
  const VI u = takes(b, a), v = takes(d, c);
  const VF m1 = u ? b : a, m2 = v ? d : c;
  const VI t = takes(m2, m1);
  const VF m = in_order(t ? m2 : m1);
  VI r = {};
  if (amq) {
    const VI i0 = paffine(2, 0) + idx0;  // index of each window's top-left element in the plane
    const VI i1 = i0 - u;
    const VI i2 = i0 + W - v;
    r = in_order(t ? i2 : i1);
  }
  if (n == L) {
    vstore<float>(yq, m);
    if (amq) vstore<std::int32_t>(amq, r);
  } else {
    vstore_n<float>(yq, m, n);
    if (amq)
      for (int l = 0; l < n; ++l) amq[l] = r[l];
  }
}

// Rows [p0, p1) of one plane; am may be null. Requires 2*Q <= W and 2*P <= H. Rows of at
// least L outputs run in full vectors (the last one may overlap the previous: recomputing a
// few outputs is harmless); shorter rows go through the same vector code on a zero-padded copy
// of their inputs, so no output takes a data-dependent branch.
inline void maxpool2x2_rows_f32(float* y, std::int32_t* am, const float* x, index_t W, index_t Q, index_t p0,
                                index_t p1) {
  constexpr int L = poolk::L;
  alignas(64) float t0[2 * L] = {}, t1[2 * L] = {};
  for (index_t p = p0; p < p1; ++p) {
    const float* r0 = x + 2 * p * W;
    const float* r1 = r0 + W;
    const std::int32_t base = static_cast<std::int32_t>(2 * p * W);
    std::int32_t* ar = am ? am + p * Q : nullptr;
    if (Q >= L) {
      for (index_t qn = 0; qn < Q; qn += L) {
        const index_t q = qn + L <= Q ? qn : Q - L;
        maxpool2x2_block_f32(y + p * Q + q, ar ? ar + q : nullptr, r0 + 2 * q, r1 + 2 * q,
                             base + static_cast<std::int32_t>(2 * q), static_cast<std::int32_t>(W), L);
      }
    } else if (Q > 0) {
      std::memcpy(t0, r0, sizeof(float) * static_cast<std::size_t>(2 * Q));
      std::memcpy(t1, r1, sizeof(float) * static_cast<std::size_t>(2 * Q));
      maxpool2x2_block_f32(y + p * Q, ar, t0, t1, base, static_cast<std::int32_t>(W), static_cast<int>(Q));
    }
  }
}

// ---- max, any window, column stride SW = 1 or 2, any padding ------------------------------------
// Row width the padded row buffer needs (see maxpool_row_f32), for the widest ISA (16 lanes), so
// the caller can size it once whatever build runs.
inline index_t maxpool_padded_width(index_t W, index_t S, index_t sw, index_t pl, index_t Q) {
  constexpr int L = 16;
  static_assert(poolk::L <= L, "wider than the widest ISA");
  const index_t need = sw * (Q > L ? Q : L) + S + 2 * L;
  const index_t w = W + pl > need ? W + pl : need;
  return (w + 15) / 16 * 16;
}

// Blocks of L outputs updated together in the general max kernel: each block's running maximum
// is a dependent chain of compare + blend per tap (~6 cycles), so a block alone is latency-bound
// (3x3 / stride 2 ran at 0.26x copy bandwidth); NB independent chains fill the pipes. Registers:
// NB maxima + NB indices, 3 temporaries, the lane / all-ones constants and (AVX2) the two
// vpermd index vectors of the even-lane shuffle.
constexpr int kMaxBlocks = 4;
static_assert(2 * kMaxBlocks + 7 <= kVecRegs, "max-pool blocks exceed the register file");

// NB blocks of one output row starting at outputs q0[0..NB) (each < Q, L outputs; n = Q < L
// outputs stored when the row is shorter than a vector):
//   y[q] = max over rows h in [h0, h0 + nr), taps s < S of row_h[q*SW + s]
// where rows[r] is input row h0 + r laid out padded: column c holds x[h, c - pl], -inf outside
// [0, W). The running maximum starts at -inf with the index of the window's first input element
// (h0, max(q*SW - pl, 0)); a padded -inf never takes (strictly greater), so ties keep the first
// element in row-major order and an all -inf window points at its first element, as the naive
// loop does.
template <int SW, int NB>
PYDL_VINLINE void maxpool_blocks_f32(float* yr, std::int32_t* ar, const float* const* rows, const index_t* q0,
                                     index_t h0, index_t nr, index_t S, index_t W, index_t pl, index_t Q) {
  using namespace poolk;
  // ix[b] holds the index minus q0[b]*SW, so one candidate vector per tap serves every block.
  const VI lane = SW == 2 ? paffine(2, 0) : affine(1, 0);
  const VI zero = {};
  VF m[NB];
  VI ix[NB];
  for (int b = 0; b < NB; ++b) {
    m[b] = vset1<float>(-std::numeric_limits<float>::infinity());
    const VI first = lane + static_cast<std::int32_t>(q0[b] * SW - pl);
    ix[b] = (first < zero ? zero : first) + static_cast<std::int32_t>(h0 * W - q0[b] * SW);
  }
  for (index_t r = 0; r < nr; ++r) {
    VI cand = lane + static_cast<std::int32_t>((h0 + r) * W - pl);
    for (index_t s = 0; s < S; ++s) {
      const float* row = rows[r] + s;
      for (int b = 0; b < NB; ++b) {
        VF v;
        if constexpr (SW == 1) {
          v = vload<float>(row + q0[b]);
        } else {
          v = even_of(vload<float>(row + 2 * q0[b]), vload<float>(row + 2 * q0[b] + L));
        }
        const VI t = takes(v, m[b]);
        m[b] = t ? v : m[b];
        ix[b] = t ? cand : ix[b];
      }
      cand += 1;
    }
  }
  for (int b = 0; b < NB; ++b) {
    VF mb = m[b];
    VI ib = ix[b] + static_cast<std::int32_t>(q0[b] * SW);
    if constexpr (SW == 2) {
      mb = in_order(mb);
      ib = in_order(ib);
    }
    if (Q >= L) {
      vstore<float>(yr + q0[b], mb);
      if (ar) vstore<std::int32_t>(ar + q0[b], ib);
    } else {
      vstore_n<float>(yr, mb, static_cast<int>(Q));
      if (ar)
        for (index_t l = 0; l < Q; ++l) ar[l] = ib[l];
    }
  }
}

// One output row: blocks at 0, L, 2L, ... (the last one overlapping when Q is not a multiple of L),
// in groups of at most kMaxBlocks, as even as possible (4 blocks: 2 + 2, not 3 + a lone
// latency-bound one).
template <int SW>
inline void maxpool_row_f32(float* yr, std::int32_t* ar, const float* const* rows, index_t h0, index_t nr,
                            index_t S, index_t W, index_t pl, index_t Q) {
  constexpr int L = poolk::L;
  const index_t nblk = Q > L ? (Q + L - 1) / L : 1;
  index_t groups = (nblk + kMaxBlocks - 1) / kMaxBlocks;
  for (index_t b0 = 0; b0 < nblk; --groups) {
    index_t q0[kMaxBlocks];
    const int nb = static_cast<int>((nblk - b0 + groups - 1) / groups);
    for (int b = 0; b < nb; ++b) {
      const index_t q = (b0 + b) * L;
      q0[b] = Q >= L ? (q + L <= Q ? q : Q - L) : 0;
    }
    b0 += nb;
    switch (nb) {
      case 4: maxpool_blocks_f32<SW, 4>(yr, ar, rows, q0, h0, nr, S, W, pl, Q); break;
      case 3: maxpool_blocks_f32<SW, 3>(yr, ar, rows, q0, h0, nr, S, W, pl, Q); break;
      case 2: maxpool_blocks_f32<SW, 2>(yr, ar, rows, q0, h0, nr, S, W, pl, Q); break;
      default: maxpool_blocks_f32<SW, 1>(yr, ar, rows, q0, h0, nr, S, W, pl, Q); break;
    }
  }
}

// One plane, any window with sw in {1, 2}. buf: R rows of Wb floats (maxpool_padded_width),
// per calling thread. Each padded row slot holds input row h in slot h % R, copied once while
// consecutive output rows share it.
inline void maxpool_plane_f32(float* y, std::int32_t* am, const float* x, float* buf, index_t Wb, index_t H,
                              index_t W, index_t R, index_t S, index_t sh, index_t sw, index_t pt, index_t pl,
                              index_t P, index_t Q) {
  const float ninf = -std::numeric_limits<float>::infinity();
  for (index_t i = 0; i < R * Wb; ++i) buf[i] = ninf;
  constexpr int kMaxR = 64;
  index_t slot_h[kMaxR];
  const float* rows[kMaxR];
  for (index_t r = 0; r < R; ++r) slot_h[r] = -1;
  for (index_t p = 0; p < P; ++p) {
    const index_t hs = p * sh - pt;
    const index_t h0 = hs > 0 ? hs : 0, h1 = hs + R < H ? hs + R : H;
    for (index_t h = h0; h < h1; ++h) {
      const index_t k = h % R;
      float* dst = buf + k * Wb;
      if (slot_h[k] != h) {
        std::memcpy(dst + pl, x + h * W, sizeof(float) * static_cast<std::size_t>(W));
        slot_h[k] = h;
      }
      rows[h - h0] = dst;
    }
    float* yr = y + p * Q;
    std::int32_t* ar = am ? am + p * Q : nullptr;
    if (sw == 1) maxpool_row_f32<1>(yr, ar, rows, h0, h1 - h0, S, W, pl, Q);
    else maxpool_row_f32<2>(yr, ar, rows, h0, h1 - h0, S, W, pl, Q);
  }
}

// ---- max 2x2 backward, dense ---------------------------------------------------------------------
// dx rows 2p, 2p+1 of one plane, written densely (=): dx[h, w] = dy[p, w/2] if argmax[p, w/2] ==
// h*W + w, else 0 (columns >= 2Q: 0). This equals the scatter dx[argmax] += dy over a zeroed
// dx exactly when every argmax of the row lies in its own 2x2 block (blocks are disjoint, so no
// element gets two contributions; 0 + g is computed as g + 0, the same value, -0 -> +0 included).
// Returns false (dx rows partly written) when some argmax of the row lies outside its block.
inline bool maxunpool2x2_row_f32(float* d0, const float* g, const std::int32_t* a, index_t p, index_t W,
                                 index_t Q) {
  using namespace poolk;
  float* d1 = d0 + W;
  const std::int32_t Wi = static_cast<std::int32_t>(W);
  const std::int32_t base = static_cast<std::int32_t>(2 * p * W);
  index_t q = 0;
  if (Q >= L) {
    const VI col = affine(0, 0) + (affine(1, 0) & 1);  // 0 1 0 1 ...
    const VI colW = col + Wi;
    const VF z = {};
    VI bad = {};
    for (index_t qn = 0; qn < Q; qn += L) {
      const index_t q0 = qn + L <= Q ? qn : Q - L;
      const VF gv = vload<float>(g + q0) + z;
      const VI rel = vload_i(a + q0) - (affine(2, 0) + static_cast<std::int32_t>(base + 2 * q0));
      bad |= ~((rel == 0) | (rel == 1) | (rel == Wi) | (rel == Wi + 1));
      const VI lo = affine(0, 0) + (affine(1, 0) >> 1), hi = lo + L / 2;  // 0 0 1 1 ..., L/2 L/2 ...
      const VI rlo = __builtin_shuffle(rel, lo), rhi = __builtin_shuffle(rel, hi);
      const VF glo = __builtin_shuffle(gv, lo), ghi = __builtin_shuffle(gv, hi);
      float* o0 = d0 + 2 * q0;
      float* o1 = d1 + 2 * q0;
      vstore<float>(o0, rlo == col ? glo : z);
      vstore<float>(o0 + L, rhi == col ? ghi : z);
      vstore<float>(o1, rlo == colW ? glo : z);
      vstore<float>(o1 + L, rhi == colW ? ghi : z);
    }
    std::int32_t any = 0;
    for (int l = 0; l < L; ++l) any |= bad[l];
    if (any) return false;
    q = Q;
  }
  for (; q < Q; ++q) {
    const std::int32_t rel = a[q] - (base + static_cast<std::int32_t>(2 * q));
    if (!(rel == 0 || rel == 1 || rel == Wi || rel == Wi + 1)) return false;
    const float v = g[q] + 0.0f;
    d0[2 * q] = rel == 0 ? v : 0.0f;
    d0[2 * q + 1] = rel == 1 ? v : 0.0f;
    d1[2 * q] = rel == Wi ? v : 0.0f;
    d1[2 * q + 1] = rel == Wi + 1 ? v : 0.0f;
  }
  for (index_t w = 2 * Q; w < W; ++w) d0[w] = d1[w] = 0.0f;
  return true;
}

// ---- sum of floats in double --------------------------------------------------------------------
// sum x[0..n) accumulated in double (4 vectors of partial sums, then a fixed lane order): exact
// enough that the mean of 16M equal values is off by ~1e-16, not the ~1e-3 of float partials.
inline double sum_f32_f64(const float* x, index_t n) {
  using namespace poolk;
  constexpr int H = L / 2;  // floats per half register = doubles per register
  VD s0 = {}, s1 = {}, s2 = {}, s3 = {};
  index_t j = 0;
  for (; j + 2 * L <= n; j += 2 * L) {
    VFH h0, h1, h2, h3;
    __builtin_memcpy(&h0, x + j, sizeof(h0));
    __builtin_memcpy(&h1, x + j + H, sizeof(h1));
    __builtin_memcpy(&h2, x + j + 2 * H, sizeof(h2));
    __builtin_memcpy(&h3, x + j + 3 * H, sizeof(h3));
    s0 += __builtin_convertvector(h0, VD);
    s1 += __builtin_convertvector(h1, VD);
    s2 += __builtin_convertvector(h2, VD);
    s3 += __builtin_convertvector(h3, VD);
  }
  const VD s = (s0 + s1) + (s2 + s3);
  double t = 0.0;
  for (int l = 0; l < H; ++l) t += s[l];
  for (; j < n; ++j) t += static_cast<double>(x[j]);
  return t;
}

// Entry points of this ISA's build (defined in pool2d.cpp / pool2d_avx2.cpp / pool2d_avx512.cpp).
void maxpool2x2_plane_f32(float* y, std::int32_t* am, const float* x, index_t W, index_t P, index_t Q);
void maxpool_plane_any_f32(float* y, std::int32_t* am, const float* x, float* buf, index_t Wb, index_t H,
                           index_t W, index_t R, index_t S, index_t sh, index_t sw, index_t pt, index_t pl,
                           index_t P, index_t Q);
bool maxunpool2x2_plane_f32(float* dx, const float* dy, const std::int32_t* am, index_t H, index_t W, index_t P,
                            index_t Q);
double sum_f32(const float* x, index_t n);

// The definitions, shared by the three builds.
#define PYDL_POOL_DEFINE_ENTRY_POINTS                                                                           \
  void maxpool2x2_plane_f32(float* y, std::int32_t* am, const float* x, index_t W, index_t P, index_t Q) {     \
    maxpool2x2_rows_f32(y, am, x, W, Q, 0, P);                                                                  \
  }                                                                                                             \
  void maxpool_plane_any_f32(float* y, std::int32_t* am, const float* x, float* buf, index_t Wb, index_t H,    \
                             index_t W, index_t R, index_t S, index_t sh, index_t sw, index_t pt, index_t pl,  \
                             index_t P, index_t Q) {                                                            \
    maxpool_plane_f32(y, am, x, buf, Wb, H, W, R, S, sh, sw, pt, pl, P, Q);                                     \
  }                                                                                                             \
  bool maxunpool2x2_plane_f32(float* dx, const float* dy, const std::int32_t* am, index_t H, index_t W,        \
                              index_t P, index_t Q) {                                                           \
    for (index_t p = 0; p < P; ++p)                                                                             \
      if (!maxunpool2x2_row_f32(dx + 2 * p * W, dy + p * Q, am + p * Q, p, W, Q)) return false;               \
    if (2 * P < H) std::memset(dx + 2 * P * W, 0, sizeof(float) * static_cast<std::size_t>((H - 2 * P) * W));  \
    return true;                                                                                                \
  }                                                                                                             \
  double sum_f32(const float* x, index_t n) { return sum_f32_f64(x, n); }

}  // namespace PYDL_KNS
}  // namespace pydl
