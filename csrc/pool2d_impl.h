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
#include <type_traits>

#if defined(__AVX2__)
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
// loop does. NANS = false when no row holds a NaN: `takes` is then the one compare v > m (same
// result), where the NaN-aware test costs three instructions on the loop's dependent chain.
template <int SW, int NB, bool NANS>
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
        VI t;
        if constexpr (NANS) t = takes(v, m[b]);
        else t = v > m[b];
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
template <int SW, bool NANS>
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
      case 4: maxpool_blocks_f32<SW, 4, NANS>(yr, ar, rows, q0, h0, nr, S, W, pl, Q); break;
      case 3: maxpool_blocks_f32<SW, 3, NANS>(yr, ar, rows, q0, h0, nr, S, W, pl, Q); break;
      case 2: maxpool_blocks_f32<SW, 2, NANS>(yr, ar, rows, q0, h0, nr, S, W, pl, Q); break;
      default: maxpool_blocks_f32<SW, 1, NANS>(yr, ar, rows, q0, h0, nr, S, W, pl, Q); break;
    }
  }
}

// Copies n floats and says whether any of them is a NaN.
PYDL_VINLINE bool copy_row_nan(float* dst, const float* src, index_t n) {
  using namespace poolk;
  VI nan = {};
  index_t i = 0;
  for (; i + L <= n; i += L) {
    const VF v = vload<float>(src + i);
    vstore<float>(dst + i, v);
    nan |= v != v;
  }
  bool any = false;
  for (int l = 0; l < L; ++l) any |= nan[l] != 0;
  for (; i < n; ++i) {
    dst[i] = src[i];
    any |= src[i] != src[i];
  }
  return any;
}

// One plane, any window with sw in {1, 2}. buf: R rows of Wb floats (maxpool_padded_width),
// per calling thread. Each padded row slot holds input row h in slot h % R, copied once while
// consecutive output rows share it; an output row none of whose input rows holds a NaN takes the
// one-compare kernel (3x3 / stride 2, Zen 3: see the architecture notes).
inline void maxpool_plane_f32(float* y, std::int32_t* am, const float* x, float* buf, index_t Wb, index_t H,
                              index_t W, index_t R, index_t S, index_t sh, index_t sw, index_t pt, index_t pl,
                              index_t P, index_t Q) {
  const float ninf = -std::numeric_limits<float>::infinity();
  for (index_t i = 0; i < R * Wb; ++i) buf[i] = ninf;
  constexpr int kMaxR = 64;
  index_t slot_h[kMaxR];
  bool slot_nan[kMaxR];
  const float* rows[kMaxR];
  for (index_t r = 0; r < R; ++r) slot_h[r] = -1;
  for (index_t p = 0; p < P; ++p) {
    const index_t hs = p * sh - pt;
    const index_t h0 = hs > 0 ? hs : 0, h1 = hs + R < H ? hs + R : H;
    bool nans = false;
    for (index_t h = h0; h < h1; ++h) {
      const index_t k = h % R;
      float* dst = buf + k * Wb;
      if (slot_h[k] != h) {
        slot_nan[k] = copy_row_nan(dst + pl, x + h * W, W);
        slot_h[k] = h;
      }
      nans |= slot_nan[k];
      rows[h - h0] = dst;
    }
    float* yr = y + p * Q;
    std::int32_t* ar = am ? am + p * Q : nullptr;
    if (sw == 1) {
      if (nans) maxpool_row_f32<1, true>(yr, ar, rows, h0, h1 - h0, S, W, pl, Q);
      else maxpool_row_f32<1, false>(yr, ar, rows, h0, h1 - h0, S, W, pl, Q);
    } else {
      if (nans) maxpool_row_f32<2, true>(yr, ar, rows, h0, h1 - h0, S, W, pl, Q);
      else maxpool_row_f32<2, false>(yr, ar, rows, h0, h1 - h0, S, W, pl, Q);
    }
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
  const VI col = affine(0, 0) + (affine(1, 0) & 1);  // 0 1 0 1 ...
  const VI colW = col + Wi;
  const VI lo = affine(0, 0) + (affine(1, 0) >> 1), hi = lo + L / 2;  // 0 0 1 1 ..., L/2 L/2 ...
  const VF z = {};
  // Windows q0 .. q0 + L - 1 (FULL), or the first n of a row narrower than one vector (28x28 and
  // 14x14 maps on AVX-512) through masked loads and stores: element by element, the backward of
  // the documents' CNN's pools took 3.0 + 1.4 ms of a 22 ms training step (Intel Xeon, 2
  // threads). Returns the lanes whose argmax lies outside its block.
  auto step = [&](index_t q0, int n, auto full) {
    constexpr bool FULL = decltype(full)::value;
    VF gv;
    VI av;
    if constexpr (FULL) {
      gv = vload<float>(g + q0);
      av = vload_i(a + q0);
    } else {
      gv = vload_n<float, VF>(g + q0, n);
      av = vload_n<std::int32_t, VI>(a + q0, n);
    }
    gv = gv + z;
    const VI rel = av - (affine(2, 0) + static_cast<std::int32_t>(base + 2 * q0));
    const VI rlo = __builtin_shuffle(rel, lo), rhi = __builtin_shuffle(rel, hi);
    const VF glo = __builtin_shuffle(gv, lo), ghi = __builtin_shuffle(gv, hi);
    float* o0 = d0 + 2 * q0;
    float* o1 = d1 + 2 * q0;
    if constexpr (FULL) {
      vstore<float>(o0, rlo == col ? glo : z);
      vstore<float>(o0 + L, rhi == col ? ghi : z);
      vstore<float>(o1, rlo == colW ? glo : z);
      vstore<float>(o1 + L, rhi == colW ? ghi : z);
    } else {
      const int n0 = 2 * n < L ? 2 * n : L, n1 = 2 * n - n0;
      vstore_n<float>(o0, rlo == col ? glo : z, n0);
      vstore_n<float>(o1, rlo == colW ? glo : z, n0);
      if (n1 > 0) {
        vstore_n<float>(o0 + L, rhi == col ? ghi : z, n1);
        vstore_n<float>(o1 + L, rhi == colW ? ghi : z, n1);
      }
    }
    const VI bad = ~((rel == 0) | (rel == 1) | (rel == Wi) | (rel == Wi + 1));
    return FULL ? bad : bad & (affine(1, 0) < n);
  };
  index_t q = 0;
  if (Q > 0) {
    VI bad = {};
    if (Q >= L) {
      for (index_t qn = 0; qn < Q; qn += L) bad |= step(qn + L <= Q ? qn : Q - L, L, std::true_type{});
    } else {
      bad = step(0, static_cast<int>(Q), std::false_type{});
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

// ---- max 3x3 / stride 2 backward, gathered ------------------------------------------------------
// 3x3 windows with stride 2 and top / left padding pt, pl in {0, 1} (PyTorch's and ResNet's
// 3x3 / s2 / p1; Keras's "same" on even sizes pads bottom / right only). Window (p, q) covers
// input rows 2p - pt + {0, 1, 2} and columns 2q - pl + {0, 1, 2}, so an input element lies in at
// most two windows along each axis and dx is written densely: each element sums the dy of the
// windows whose argmax is that element, in the scatter's order (window rows ascending, then
// columns) starting from +0, so the bits are the scatter's (adding the +0 of a window that does
// not match changes nothing: the running sum is never -0).
// The work runs in window space: for L windows q = k0 + j of one window row and one input row h,
// rel = argmax - (h*W + 2q - pl) says which of the window's three columns in row h holds its
// maximum (0, 1, 2; anything else: none). With pl = 1, input column 2k gets window k's rel == 1,
// and column 2k + 1 window k's rel == 2, then window k + 1's rel == 0; with pl = 0, column 2k gets
// window k - 1's rel == 2, then window k's rel == 0, and 2k + 1 window k's rel == 1. So one vector
// of windows and the one beside it (q + 1 or q - 1) give 2L inputs, interleaved once. The kernel
// walks window rows p and writes input rows s = 2p - pt + 1 (window row p only) and t = s + 1
// (p, then p + 1) from the same loads.
// Window rows are copied into three row slots padded with dy 0 / argmax -1 one column before and
// >= L + 1 after, so every load is a plain vector load; a slot is filled one step before it is
// read (a load straddling a just-written row would wait for the stores to retire).
// Every match is counted; the kernel returns false when the count is not the number of outputs
// (some argmax lies outside its window): the caller then scatters that plane, which checks the
// indices. (With W < 3 a window's columns reach into the next row, so elements there match too and
// the count comes out high: such planes always scatter, and the caller does not gather them.)
namespace poolk {
// The first n lanes of v (0 < n <= L) without a round trip through the stack: vmaskmovps on
// AVX2, vstore_n's masked store on AVX-512; SSE2 keeps vstore_n's scalar loop.
PYDL_VINLINE void store_first(float* p, VF v, int n) {
#if defined(__AVX2__) && !defined(__AVX512F__)
  const VI m = affine(1, 0) < n;
  _mm256_maskstore_ps(p, reinterpret_cast<__m256i>(m), reinterpret_cast<__m256>(v));
#else
  vstore_n<float>(p, v, n);
#endif
}

template <int PL>
struct Unpool3 {
  static constexpr int D = PL ? 1 : -1;  // the neighbouring window that shares the double column
  // Lanes of the first and second half of the 2L inputs: input 2j (even) and 2j + 1 (odd).
  template <int... I>
  PYDL_VINLINE VI lo_(std::integer_sequence<int, I...>) {
    return VI{((I & 1) ? L + I / 2 : I / 2)...};
  }
  template <int... I>
  PYDL_VINLINE VI hi_(std::integer_sequence<int, I...>) {
    return VI{((I & 1) ? L + L / 2 + I / 2 : L / 2 + I / 2)...};
  }
  // even / odd inputs of L windows -> 2L inputs in order
  PYDL_VINLINE void interleave(VF e, VF o, VF& a, VF& b) {
    a = __builtin_shuffle(e, o, lo_(std::make_integer_sequence<int, L>{}));
    b = __builtin_shuffle(e, o, hi_(std::make_integer_sequence<int, L>{}));
  }
  // ev / od (even / odd inputs of row h) += what windows g, a (and their neighbours gd, ad) give to
  // row h, with bq = h*W + 2q - pl per lane; cnt counts every match added (each window's argmax is
  // one element, so it is counted once, whichever lane adds it).
  PYDL_VINLINE void visit(VF& ev, VF& od, VI& cnt, VF g, VI a, VF gd, VI ad, VI bq) {
    const VF z = {};
    const VI rel = a - bq;
    const VI reld = ad - (bq + 2 * D);
    if constexpr (PL == 1) {
      const VI m1 = rel == 1, m2 = rel == 2, m0 = reld == 0;
      ev += m1 ? g : z;
      cnt -= m1;
      od += m2 ? g : z;
      cnt -= m2;
      od += m0 ? gd : z;
      cnt -= m0;
    } else {
      const VI m2 = reld == 2, m0 = rel == 0, m1 = rel == 1;
      ev += m2 ? gd : z;
      cnt -= m2;
      ev += m0 ? g : z;
      cnt -= m0;
      od += m1 ? g : z;
      cnt -= m1;
    }
  }
};
}  // namespace poolk

// Row slot width for maxunpool3x3s2_f32, for the widest ISA (16 lanes): the caller sizes its
// buffers once whatever build runs.
inline index_t maxunpool3x3s2_slot_width(index_t W, index_t Q) {
  constexpr int L = 16;
  static_assert(poolk::L <= L, "wider than the widest ISA");
  const index_t need = (W + 1) / 2 > Q ? (W + 1) / 2 : Q;
  return (need + L + 3 + 15) / 16 * 16;
}

// Inputs [2 k0, 2 k0 + 2L) of row s (from window row p) and, when T, of row t = s + 1 (from p,
// then p + 1 when N), the first n of them when TAIL (the row's last block). gp / ap and gn / an:
// slot rows of p and p + 1 (window q at [q + 1]). Row s is finished before row t starts, so p's
// four vectors serve both rows and at most 14 registers are live (no spills on AVX2's 16).
template <int PL, bool TAIL, bool T, bool N>
PYDL_VINLINE void maxunpool3x3s2_block(float* ds, float* dt, const float* gp, const std::int32_t* ap,
                                       const float* gn, const std::int32_t* an, index_t k0, std::int32_t sW,
                                       std::int32_t Wi, poolk::VI& cnt) {
  using namespace poolk;
  using U = Unpool3<PL>;
  const index_t c = k0 + 1, cd = c + U::D;  // slot columns of windows k0 + j and their neighbours
  const VI bs = affine(2, 0) + static_cast<std::int32_t>(sW + 2 * k0 - PL);
  const index_t w0 = 2 * k0, n = TAIL ? Wi - w0 : 2 * L;
  auto store = [&](float* d, VF e, VF o) {
    VF lo, hi;
    U::interleave(e, o, lo, hi);
    if (!TAIL || n >= 2 * L) {
      vstore<float>(d + w0, lo);
      vstore<float>(d + w0 + L, hi);
    } else if (n > L) {
      vstore<float>(d + w0, lo);
      store_first(d + w0 + L, hi, static_cast<int>(n - L));
    } else {
      store_first(d + w0, lo, static_cast<int>(n));
    }
  };
  const VF g = vload<float>(gp + c), gd = vload<float>(gp + cd);
  const VI a = vload_i(ap + c), ad = vload_i(ap + cd);
  VF e = {}, o = {};
  U::visit(e, o, cnt, g, a, gd, ad, bs);
  store(ds, e, o);
  if constexpr (T) {
    // (from the scalar, not bs + a broadcast W: one register fewer)
    const VI bt = affine(2, 0) + static_cast<std::int32_t>(sW + Wi + 2 * k0 - PL);
    e = VF{};
    o = VF{};
    U::visit(e, o, cnt, g, a, gd, ad, bt);
    if constexpr (N)
      U::visit(e, o, cnt, vload<float>(gn + c), vload_i(an + c), vload<float>(gn + cd), vload_i(an + cd), bt);
    store(dt, e, o);
  }
}

// Rows s and (T) t of dx: whole blocks of 2L inputs, then the last partial one.
template <int PL, bool T, bool N>
inline void maxunpool3x3s2_rows(float* ds, float* dt, const float* gp, const std::int32_t* ap, const float* gn,
                                const std::int32_t* an, index_t s, index_t W, poolk::VI& cnt) {
  constexpr int L = poolk::L;
  const std::int32_t Wi = static_cast<std::int32_t>(W), sW = static_cast<std::int32_t>(s) * Wi;
  index_t k0 = 0;
  for (; 2 * (k0 + L) <= W; k0 += L) maxunpool3x3s2_block<PL, false, T, N>(ds, dt, gp, ap, gn, an, k0, sW, Wi, cnt);
  if (2 * k0 < W) maxunpool3x3s2_block<PL, true, T, N>(ds, dt, gp, ap, gn, an, k0, sW, Wi, cnt);
}

// gbuf, abuf: 3 slots of Wb = maxunpool3x3s2_slot_width(W, Q) elements each, per calling thread.
template <int PL>
inline bool maxunpool3x3s2_f32(float* dx, const float* dy, const std::int32_t* am, float* gbuf,
                               std::int32_t* abuf, index_t Wb, index_t H, index_t W, index_t P, index_t Q,
                               index_t pt) {
  using namespace poolk;
  VI cnt = {};
  for (index_t j = 0; j < 3 * Wb; ++j) {  // the pads; rows are copied into [1, Q + 1) of each slot
    gbuf[j] = 0.0f;
    abuf[j] = -1;
  }
  // Windows whose columns 2q - pl + {0, 1, 2} leave [0, W) (the first when pl = 1, the last one or
  // two) would see an argmax in the row above or below (or -1, or H*W) as rel 0 or 2: theirs are
  // checked here, and one outside its window is replaced by -2, below every h*W + 2q - pl >= -1, so
  // it matches nothing and the plane is scattered. (Elsewhere rel in 0..2 puts the element in row h.
  // The slots' pads hold -1, which no window reaches either: a pad q >= Q has h*W + 2q - pl >= 1,
  // and the left pad is read only as pl = 0's left neighbour, whose rel 2 it never gives.)
  const index_t q_right = (W + PL - 1) / 2;  // first q with 2q - pl + 2 >= W
  auto fill = [&](index_t p) {
    float* gs = gbuf + (p % 3) * Wb + 1;
    std::int32_t* as = abuf + (p % 3) * Wb + 1;
    const float* gr = dy + p * Q;
    const std::int32_t* ar = am + p * Q;
    index_t q = 0;
    for (; q + L <= Q; q += L) {  // (no memcpy call: it would push cnt to the stack)
      vstore<float>(gs + q, vload<float>(gr + q));
      vstore<std::int32_t>(as + q, vload_i(ar + q));
    }
    for (; q < Q; ++q) {
      gs[q] = gr[q];
      as[q] = ar[q];
    }
    auto check = [&](index_t q) {
      const std::int64_t v = as[q], r = v / W - (2 * p - pt), col = v % W - (2 * q - PL);
      if (v < 0 || v >= H * W || r < 0 || r > 2 || col < 0 || col > 2) as[q] = -2;
    };
    if (PL == 1) check(0);
    for (index_t q = q_right > PL ? q_right : PL; q < Q; ++q) check(q);
  };
  auto g_of = [&](index_t p) { return gbuf + (p % 3) * Wb; };
  auto a_of = [&](index_t p) { return abuf + (p % 3) * Wb; };
  fill(0);
  if (P > 1) fill(1);
  if (pt == 0)  // row 0: the first row of window row 0 only
    maxunpool3x3s2_rows<PL, false, false>(dx, nullptr, g_of(0), a_of(0), nullptr, nullptr, 0, W, cnt);
  index_t h_end = pt == 0 ? 1 : 0;  // rows [0, h_end) written
  for (index_t p = 0; p < P; ++p) {
    if (p + 2 < P) fill(p + 2);  // read from the next step on
    const index_t s = 2 * p - pt + 1, t = s + 1;
    if (s >= H) break;
    float* ds = dx + s * W;
    if (t >= H) {
      maxunpool3x3s2_rows<PL, false, false>(ds, nullptr, g_of(p), a_of(p), nullptr, nullptr, s, W, cnt);
      h_end = s + 1;
    } else {
      if (p + 1 < P)
        maxunpool3x3s2_rows<PL, true, true>(ds, ds + W, g_of(p), a_of(p), g_of(p + 1), a_of(p + 1), s, W, cnt);
      else
        maxunpool3x3s2_rows<PL, true, false>(ds, ds + W, g_of(p), a_of(p), nullptr, nullptr, s, W, cnt);
      h_end = t + 1;
    }
  }
  if (h_end < H) std::memset(dx + h_end * W, 0, sizeof(float) * static_cast<std::size_t>((H - h_end) * W));
  index_t matched = 0;
  for (int l = 0; l < L; ++l) matched += cnt[l];
  return matched == P * Q;
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
bool maxunpool3x3s2_plane_f32(float* dx, const float* dy, const std::int32_t* am, float* gbuf, std::int32_t* abuf,
                              index_t Wb, index_t H, index_t W, index_t P, index_t Q, index_t pt, index_t pl);
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
  bool maxunpool3x3s2_plane_f32(float* dx, const float* dy, const std::int32_t* am, float* gbuf,                \
                                std::int32_t* abuf, index_t Wb, index_t H, index_t W, index_t P, index_t Q,     \
                                index_t pt, index_t pl) {                                                       \
    return pl ? maxunpool3x3s2_f32<1>(dx, dy, am, gbuf, abuf, Wb, H, W, P, Q, pt)                               \
              : maxunpool3x3s2_f32<0>(dx, dy, am, gbuf, abuf, Wb, H, W, P, Q, pt);                              \
  }                                                                                                             \
  double sum_f32(const float* x, index_t n) { return sum_f32_f64(x, n); }

}  // namespace PYDL_KNS
}  // namespace pydl
