// Point-wise recurrent cells, one batch row of one time step at a time (internal to rnn.*).
//
// Included by rnn.cpp (baseline x86-64) and by rnn_avx2.cpp / rnn_avx512.cpp, each inside its
// own namespace PYDL_RNN_NS, so every translation unit gets its own, differently named copy of
// these functions compiled for its instruction set (nothing here may be an inline function of
// another namespace, or the linker could pick one ISA's copy for all). float runs on explicit
// vectors of this ISA's width (Vec<float>, simd_vec.h) with a polynomial exp; float64 (the
// gradient-check path) runs plain loops with the exact libm functions.
//
// Letters as in rnn.h: H units per row; gate blocks of H values each, in the order
//   SimpleRNN: a            LSTM: i f g o            GRU: r z n
// Pointers are restrict: no output aliases an input.
#ifndef PYDL_RNN_NS
#error "define PYDL_RNN_NS before including rnn_cell.h"
#endif

#include <cstdint>
#include <cstring>
#include <type_traits>
#include <utility>

#include "rnn.h"

namespace pydl {
namespace PYDL_RNN_NS {

#include "simd_vec.h"

#define PYDL_R __restrict__

// ---- float64 math: libm ---------------------------------------------------------------------

static inline double sigmoid(double x) { return 1.0 / (1.0 + __builtin_exp(-x)); }
static inline double tanh_f(double x) { return __builtin_tanh(x); }

// relu keeping NaN (x < 0 is false for NaN); its derivative from the output h = relu(a):
// 1 where h > 0, 0 where h == 0, NaN stays NaN.
template <typename F>
static inline F relu(F x) {
  return x < F(0) ? F(0) : x;
}
template <typename F>
static inline F relu_grad(F h, F d) {
  return h != h ? h : (h > F(0) ? d : F(0));
}

// ---- forward rows (scalar: float64) -----------------------------------------------------
// One batch row, n units (a slice of the H units). Gate q of a unit j lives at g[q * gs + j]
// in the gate cache and the bias (gs = H there) and at gx[q * hs + j] / hu[q * hs + j] in this
// slice's input product x_t W and recurrent product h_prev U. Each function adds the biases,
// applies the cell and writes the gate activations to g (read: gx, hu; written: g, h, ...).

// SimpleRNN: h = act(xW + hU + b); g <- h.
template <typename F>
static void rnn_fwd_row(F* PYDL_R h, F* PYDL_R g, const F* PYDL_R gx, const F* PYDL_R hu, const F* PYDL_R b,
                        bool use_relu, index_t n, index_t gs, index_t hs) {
  (void)gs, (void)hs;
  if (use_relu) {
    for (index_t j = 0; j < n; ++j) h[j] = g[j] = relu(gx[j] + hu[j] + b[j]);
  } else {
    for (index_t j = 0; j < n; ++j) h[j] = g[j] = tanh_f(gx[j] + hu[j] + b[j]);
  }
}

// LSTM: i f o = sigmoid, g = tanh of (xW + hU + b); c = f c_prev + i g; h = o tanh(c).
template <typename F>
static void lstm_fwd_row(F* PYDL_R h, F* PYDL_R c, F* PYDL_R g, const F* PYDL_R gx, const F* PYDL_R hu,
                         const F* PYDL_R b, const F* PYDL_R cp, index_t n, index_t gs, index_t hs) {
  F* PYDL_R gi = g;
  F* PYDL_R gf = g + gs;
  F* PYDL_R gg = g + 2 * gs;
  F* PYDL_R go = g + 3 * gs;
  for (index_t j = 0; j < n; ++j) {
    const F i = sigmoid(gx[j] + hu[j] + b[j]);
    const F f = sigmoid(gx[hs + j] + hu[hs + j] + b[gs + j]);
    const F u = tanh_f(gx[2 * hs + j] + hu[2 * hs + j] + b[2 * gs + j]);
    const F o = sigmoid(gx[3 * hs + j] + hu[3 * hs + j] + b[3 * gs + j]);
    const F cn = f * cp[j] + i * u;
    c[j] = cn;
    h[j] = o * tanh_f(cn);
    gi[j] = i;
    gf[j] = f;
    gg[j] = u;
    go[j] = o;
  }
}

// GRU (PyTorch form): with hu = h_prev U (no bias), q = hu_n + bh_n is kept for backward;
//   r = sigmoid(xW_r + b_r + hu_r + bh_r), z = sigmoid(xW_z + b_z + hu_z + bh_z),
//   n = tanh(xW_n + b_n + r q), h = (1 - z) n + z h_prev.
template <typename F>
static void gru_fwd_row(F* PYDL_R h, F* PYDL_R q, F* PYDL_R g, const F* PYDL_R gx, const F* PYDL_R hu,
                        const F* PYDL_R b, const F* PYDL_R bh, const F* PYDL_R hp, index_t n, index_t gs,
                        index_t hs) {
  F* PYDL_R gr = g;
  F* PYDL_R gz = g + gs;
  F* PYDL_R gn = g + 2 * gs;
  for (index_t j = 0; j < n; ++j) {
    const F r = sigmoid(gx[j] + b[j] + hu[j] + bh[j]);
    const F z = sigmoid(gx[hs + j] + b[gs + j] + hu[hs + j] + bh[gs + j]);
    const F qn = hu[2 * hs + j] + bh[2 * gs + j];
    const F nn = tanh_f(gx[2 * hs + j] + b[2 * gs + j] + r * qn);
    h[j] = (F(1) - z) * nn + z * hp[j];
    q[j] = qn;
    gr[j] = r;
    gz[j] = z;
    gn[j] = nn;
  }
}

// ---- backward rows (scalar: float64) ----------------------------------------------------
// dhr is the gradient reaching h_t through the recurrence (dG_{t+1} U^T); dout (may be null)
// the gradient of the output at step t. Each writes the pre-activation gradients dg (=), gate
// q of unit j at dg[q * gs + j] like the gate cache g.

// SimpleRNN: da = (dhr + dout) * act'(a), from the cached output h = act(a).
template <typename F>
static void rnn_bwd_row(F* PYDL_R dg, const F* PYDL_R dhr, const F* PYDL_R dout, const F* PYDL_R h,
                        bool use_relu, index_t n, index_t gs) {
  (void)gs;
  if (use_relu) {
    if (dout) for (index_t j = 0; j < n; ++j) dg[j] = relu_grad(h[j], dhr[j] + dout[j]);
    else for (index_t j = 0; j < n; ++j) dg[j] = relu_grad(h[j], dhr[j]);
  } else {
    if (dout) for (index_t j = 0; j < n; ++j) dg[j] = (dhr[j] + dout[j]) * (F(1) - h[j] * h[j]);
    else for (index_t j = 0; j < n; ++j) dg[j] = dhr[j] * (F(1) - h[j] * h[j]);
  }
}

// LSTM: with dh = dhr + dout and dc the running cell gradient (in: from step t+1, out: to t-1),
//   dct = dc + dh o (1 - tanh(c)^2); di = dct g; df = dct c_prev; dg = dct i; do = dh tanh(c);
//   pre-activation grads multiply by sigmoid' = s(1-s) or tanh' = 1-u^2; dc <- dct f.
template <typename F>
static void lstm_bwd_row(F* PYDL_R dg, F* PYDL_R dc, const F* PYDL_R dhr, const F* PYDL_R dout,
                         const F* PYDL_R g, const F* PYDL_R c, const F* PYDL_R cp, index_t n, index_t gs) {
  const F* PYDL_R gi = g;
  const F* PYDL_R gf = g + gs;
  const F* PYDL_R gg = g + 2 * gs;
  const F* PYDL_R go = g + 3 * gs;
  for (index_t j = 0; j < n; ++j) {
    const F dh = dout ? dhr[j] + dout[j] : dhr[j];
    const F i = gi[j], f = gf[j], u = gg[j], o = go[j];
    const F tc = tanh_f(c[j]);
    const F dct = dc[j] + dh * o * (F(1) - tc * tc);
    dg[j] = dct * u * i * (F(1) - i);
    dg[gs + j] = dct * cp[j] * f * (F(1) - f);
    dg[2 * gs + j] = dct * i * (F(1) - u * u);
    dg[3 * gs + j] = dh * tc * o * (F(1) - o);
    dc[j] = dct * f;
  }
}

// GRU: with dh = dhr + dout:
//   dn = dh (1 - z), dz = dh (h_prev - n), direct dh_prev = dh z;
//   dn_pre = dn (1 - n^2), dr_pre = dn_pre q r (1 - r), dz_pre = dz z (1 - z),
//   gradient of q = hu_n + b_hn: dq = dn_pre r.
// dgx = (dr_pre, dz_pre, dn_pre) feeds W, b and x; dgh = (dr_pre, dz_pre, dq) feeds U, b_h and
// h_prev. dhd <- dh z (=), to which the caller adds dgh U^T.
template <typename F>
static void gru_bwd_row(F* PYDL_R dgx, F* PYDL_R dgh, F* PYDL_R dhd, const F* PYDL_R dhr,
                        const F* PYDL_R dout, const F* PYDL_R g, const F* PYDL_R q, const F* PYDL_R hp,
                        index_t n, index_t gs) {
  const F* PYDL_R gr = g;
  const F* PYDL_R gz = g + gs;
  const F* PYDL_R gn = g + 2 * gs;
  for (index_t j = 0; j < n; ++j) {
    const F dh = dout ? dhr[j] + dout[j] : dhr[j];
    const F r = gr[j], z = gz[j], nn = gn[j];
    const F dn = dh * (F(1) - z) * (F(1) - nn * nn);
    const F dr = dn * q[j] * r * (F(1) - r);
    const F dz = dh * (hp[j] - nn) * z * (F(1) - z);
    dgx[j] = dr;
    dgx[gs + j] = dz;
    dgx[2 * gs + j] = dn;
    dgh[j] = dr;
    dgh[gs + j] = dz;
    dgh[2 * gs + j] = dn * r;
    dhd[j] = dh * z;
  }
}

// ---- float: math and rows on explicit SIMD vectors ---------------------------------------
// The same cells as above for float, on Vec<float> (one register of this file's ISA, simd_vec.h).
// Written with vector types rather than left to the auto-vectoriser: GCC keeps IEEE trapping
// semantics and will not if-convert the selects of exp / tanh, so the scalar loops above stayed
// scalar on AVX2 and AVX-512 (LSTM T50 N32 I128 H256 forward, 1 thread: the cell took as long
// as the h U product). The n % L tail goes through the same vector code with zero-padded loads
// and partial stores, so every unit sees the same instructions whatever the thread count.

using VF = Vec<float>;
typedef std::int32_t VI __attribute__((vector_size(sizeof(VF))));
constexpr int kL = VecOf<float>::L;

// All lanes = s. (simd_vec.h's vset1 adds s to a zero vector, which is not s for s = -0, so
// the compiler keeps the addition: an extra instruction per broadcast in the tile's loop.)
template <std::size_t... I>
PYDL_VINLINE VF vsplat_(float s, std::index_sequence<I...>) {
  return VF{((void)I, s)...};
}
PYDL_VINLINE VF vsplat(float s) { return vsplat_(s, std::make_index_sequence<kL>{}); }

// e^x: x = n ln2 + r, |r| <= ln2/2; e^r by its Taylor series to r^7 (truncation < 6e-9
// relative), 2^n assembled in the exponent bits. Max error ~2 ulp on [-87, 88]; inputs outside
// are clamped there (so +-inf give finite results that the callers turn into their limits), and
// NaN stays NaN (the clamps compare false and keep it).
PYDL_VINLINE VF vexp(VF x) {
  const VF lo = vset1(-87.0f), hi = vset1(88.0f);
  x = x < lo ? lo : x;
  x = x > hi ? hi : x;
  const VF magic = vset1(12582912.0f);  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const VF s = x * 1.44269504088896341f + magic;
  const VF n = s - magic;
  VF r = x - n * 0.693359375f;  // ln2 split in two so n * ln2_hi is exact
  r = r - n * -2.12194440e-4f;
  VF p = vset1(1.0f / 5040.0f);
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const VI k = (VI)s - 0x4B400000;  // vector casts reinterpret the bits
  const VI e = (k + 127) << 23;
  return p * (VF)e;
}

// 1 / d for d >= 1 (finite). On AVX-512 a vector division is the cell's slowest instruction (a
// zmm vdivps issues once per ~10 cycles on Intel cores, and the LSTM cell has five per vector of
// units), so there the 14-bit reciprocal estimate is refined by one Newton step,
// r + r (1 - d r), which squares its relative error (< 2^-28 before rounding) and gives exactly
// 1 for d = 1 (the saturated sigmoid(+inf) and tanh(+-inf) stay exactly 1). LSTM T50 N32 I128
// H256 forward, 2 threads, Intel Xeon: 5.12-5.24 -> 4.91-5.00 ms. AVX2's estimate has 12 bits
// and needs two steps for that, whose registers made the AVX2 cell spill; a ymm division is
// cheap enough there.
PYDL_VINLINE VF vrecip(VF d) {
#if defined(__AVX512F__)
  const VF r = (VF)_mm512_maskz_rcp14_ps(__mmask16(0xFFFF), (__m512)d);  // (maskz: no undefined source)
  return r + r * (1.0f - d * r);
#else
  return 1.0f / d;
#endif
}

// sigmoid(x) = 1 / (1 + e^-x).
PYDL_VINLINE VF vsigmoid(VF x) { return vrecip(1.0f + vexp(-x)); }

// tanh(x): for |x| >= 0.4, sign(x) (1 - e) / (1 + e) with e = e^{-2|x|} (no cancellation
// there); below, the odd Taylor series to x^13 (truncation < 5e-9 relative at 0.4).
PYDL_VINLINE VF vtanh(VF x) {
  const VF zero = {};
  const VF a = x < zero ? -x : x;
  const VF e = vexp(-2.0f * a);
  const VF big = (1.0f - e) * vrecip(1.0f + e);
  const VF x2 = x * x;
  VF p = vset1(21844.0f / 6081075.0f);
  p = p * x2 - 1382.0f / 155925.0f;
  p = p * x2 + 62.0f / 2835.0f;
  p = p * x2 - 17.0f / 315.0f;
  p = p * x2 + 2.0f / 15.0f;
  p = p * x2 - 1.0f / 3.0f;
  p = p * x2 + 1.0f;
  const VF small = x * p;
  const VF signed_big = x < zero ? -big : big;
  return a < 0.4f ? small : signed_big;
}

PYDL_VINLINE VF vrelu_grad(VF h, VF d) {
  const VF zero = {};
  return h != h ? h : (h > zero ? d : zero);
}

// Lanes [j, j + m) of p (m < kL: the rest of the vector is 0), and the store of the same lanes.
template <bool TAIL>
PYDL_VINLINE VF ld(const float* p, index_t m) {
  if (!TAIL) return vload(p);
  return vload_n<float>(p, static_cast<int>(m));
}
template <bool TAIL>
PYDL_VINLINE void st(float* p, VF v, index_t m) {
  if (!TAIL) vstore(p, v);
  else vstore_n(p, v, static_cast<int>(m));
}

// Runs body(j, m, tail) over [0, n) in vectors of kL lanes, the last partial one as a tail.
template <class B>
PYDL_VINLINE void lanes(index_t n, B&& body) {
  index_t j = 0;
  for (; j + kL <= n; j += kL) body(j, kL, std::false_type{});
  if (j < n) body(j, n - j, std::true_type{});
}

static void rnn_fwd_row_v(float* PYDL_R h, float* PYDL_R g, const float* PYDL_R gx, const float* PYDL_R hu,
                          const float* PYDL_R b, bool use_relu, index_t n, index_t gs, index_t hs) {
  (void)gs, (void)hs;
  lanes(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool T = decltype(tail)::value;
    const VF a = ld<T>(gx + j, m) + ld<T>(hu + j, m) + ld<T>(b + j, m);
    const VF v = use_relu ? vrelu(a) : vtanh(a);
    st<T>(h + j, v, m);
    st<T>(g + j, v, m);
  });
}

static void lstm_fwd_row_v(float* PYDL_R h, float* PYDL_R c, float* PYDL_R g, const float* PYDL_R gx,
                           const float* PYDL_R hu, const float* PYDL_R b, const float* PYDL_R cp, index_t n,
                           index_t gs, index_t hs) {
  lanes(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool T = decltype(tail)::value;
    const VF i = vsigmoid(ld<T>(gx + j, m) + ld<T>(hu + j, m) + ld<T>(b + j, m));
    const VF f = vsigmoid(ld<T>(gx + hs + j, m) + ld<T>(hu + hs + j, m) + ld<T>(b + gs + j, m));
    const VF u = vtanh(ld<T>(gx + 2 * hs + j, m) + ld<T>(hu + 2 * hs + j, m) + ld<T>(b + 2 * gs + j, m));
    const VF o = vsigmoid(ld<T>(gx + 3 * hs + j, m) + ld<T>(hu + 3 * hs + j, m) + ld<T>(b + 3 * gs + j, m));
    const VF cn = f * ld<T>(cp + j, m) + i * u;
    st<T>(c + j, cn, m);
    st<T>(h + j, o * vtanh(cn), m);
    st<T>(g + j, i, m);
    st<T>(g + gs + j, f, m);
    st<T>(g + 2 * gs + j, u, m);
    st<T>(g + 3 * gs + j, o, m);
  });
}

static void gru_fwd_row_v(float* PYDL_R h, float* PYDL_R q, float* PYDL_R g, const float* PYDL_R gx,
                          const float* PYDL_R hu, const float* PYDL_R b, const float* PYDL_R bh,
                          const float* PYDL_R hp, index_t n, index_t gs, index_t hs) {
  lanes(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool T = decltype(tail)::value;
    const VF r = vsigmoid(ld<T>(gx + j, m) + ld<T>(b + j, m) + ld<T>(hu + j, m) + ld<T>(bh + j, m));
    const VF z = vsigmoid(ld<T>(gx + hs + j, m) + ld<T>(b + gs + j, m) + ld<T>(hu + hs + j, m) +
                          ld<T>(bh + gs + j, m));
    const VF qn = ld<T>(hu + 2 * hs + j, m) + ld<T>(bh + 2 * gs + j, m);
    const VF nn = vtanh(ld<T>(gx + 2 * hs + j, m) + ld<T>(b + 2 * gs + j, m) + r * qn);
    st<T>(h + j, (1.0f - z) * nn + z * ld<T>(hp + j, m), m);
    st<T>(q + j, qn, m);
    st<T>(g + j, r, m);
    st<T>(g + gs + j, z, m);
    st<T>(g + 2 * gs + j, nn, m);
  });
}

static void rnn_bwd_row_v(float* PYDL_R dg, const float* PYDL_R dhr, const float* PYDL_R dout,
                          const float* PYDL_R h, bool use_relu, index_t n, index_t gs) {
  (void)gs;
  lanes(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool T = decltype(tail)::value;
    const VF d = dout ? ld<T>(dhr + j, m) + ld<T>(dout + j, m) : ld<T>(dhr + j, m);
    const VF hv = ld<T>(h + j, m);
    st<T>(dg + j, use_relu ? vrelu_grad(hv, d) : d * (1.0f - hv * hv), m);
  });
}

static void lstm_bwd_row_v(float* PYDL_R dg, float* PYDL_R dc, const float* PYDL_R dhr,
                           const float* PYDL_R dout, const float* PYDL_R g, const float* PYDL_R c,
                           const float* PYDL_R cp, index_t n, index_t gs) {
  lanes(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool T = decltype(tail)::value;
    const VF dh = dout ? ld<T>(dhr + j, m) + ld<T>(dout + j, m) : ld<T>(dhr + j, m);
    const VF i = ld<T>(g + j, m), f = ld<T>(g + gs + j, m), u = ld<T>(g + 2 * gs + j, m),
             o = ld<T>(g + 3 * gs + j, m);
    const VF tc = vtanh(ld<T>(c + j, m));
    const VF dct = ld<T>(dc + j, m) + dh * o * (1.0f - tc * tc);
    st<T>(dg + j, dct * u * i * (1.0f - i), m);
    st<T>(dg + gs + j, dct * ld<T>(cp + j, m) * f * (1.0f - f), m);
    st<T>(dg + 2 * gs + j, dct * i * (1.0f - u * u), m);
    st<T>(dg + 3 * gs + j, dh * tc * o * (1.0f - o), m);
    st<T>(dc + j, dct * f, m);
  });
}

static void gru_bwd_row_v(float* PYDL_R dgx, float* PYDL_R dgh, float* PYDL_R dhd, const float* PYDL_R dhr,
                          const float* PYDL_R dout, const float* PYDL_R g, const float* PYDL_R q,
                          const float* PYDL_R hp, index_t n, index_t gs) {
  lanes(n, [&](index_t j, index_t m, auto tail) {
    constexpr bool T = decltype(tail)::value;
    const VF dh = dout ? ld<T>(dhr + j, m) + ld<T>(dout + j, m) : ld<T>(dhr + j, m);
    const VF r = ld<T>(g + j, m), z = ld<T>(g + gs + j, m), nn = ld<T>(g + 2 * gs + j, m);
    const VF dn = dh * (1.0f - z) * (1.0f - nn * nn);
    const VF dr = dn * ld<T>(q + j, m) * r * (1.0f - r);
    const VF dz = dh * (ld<T>(hp + j, m) - nn) * z * (1.0f - z);
    st<T>(dgx + j, dr, m);
    st<T>(dgx + gs + j, dz, m);
    st<T>(dgx + 2 * gs + j, dn, m);
    st<T>(dgh + j, dr, m);
    st<T>(dgh + gs + j, dz, m);
    st<T>(dgh + 2 * gs + j, dn * r, m);
    st<T>(dhd + j, dh * z, m);
  });
}

// ---- the per-step product ----------------------------------------------------------------
// C[m, NR] = A[m, k] Bp[k, NR]   (=, or += when accumulate), m <= MR.
// A is packed by the caller into row blocks: a(i, p) at Ap[p * MR + i] (rows i >= m unused),
// so the tile's broadcasts come from one sequential stream (read in place, the rows of a time
// step lie T * X floats apart and, for the power-of-two strides of the usual shapes, all fall
// into a few L1 sets). Bp is a packed panel, row p at Bp + p * NR.
// Every element is one sequential sum over p, so the result does not depend on how rows and
// panels are shared among threads.

// Register tile: M rows x NV vectors of accumulators, one vector of B per column group and one
// broadcast of A live besides them.
template <int MR, int M, int NV>
static void tile_vm(index_t k, const float* PYDL_R Ap, const float* PYDL_R Bp, float* PYDL_R C, index_t ldc,
                    bool accumulate) {
  static_assert(M <= MR && M * NV + NV + 1 <= kVecRegs, "register tile larger than the register file");
  constexpr int NR = NV * kL;
  VF c[M][NV];
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) c[i][v] = VF{};
  for (index_t p = 0; p < k; ++p) {
    VF bv[NV];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) bv[v] = vload(Bp + p * NR + v * kL);
#pragma GCC unroll 16
    for (int i = 0; i < M; ++i) {
      const VF a = vsplat(Ap[p * MR + i]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) c[i][v] += a * bv[v];
    }
  }
#pragma GCC unroll 16
  for (int i = 0; i < M; ++i)
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      float* dst = C + i * ldc + v * kL;
      vstore(dst, accumulate ? vload(dst) + c[i][v] : c[i][v]);
    }
}

template <int MR, int NV, int M = MR>
static void tile_v(index_t m, index_t k, const float* PYDL_R Ap, const float* PYDL_R Bp, float* PYDL_R C,
                   index_t ldc, bool accumulate) {
  if constexpr (M >= 1) {
    if (m == M) return tile_vm<MR, M, NV>(k, Ap, Bp, C, ldc, accumulate);
    return tile_v<MR, NV, M - 1>(m, k, Ap, Bp, C, ldc, accumulate);
  }
}

// float64 (the gradient-check path): plain loops.
template <typename F, int MR, int NR>
static void tile_generic(index_t m, index_t k, const F* PYDL_R Ap, const F* PYDL_R Bp, F* PYDL_R C, index_t ldc,
                         bool accumulate) {
  F acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = F(0);
  for (index_t p = 0; p < k; ++p) {
    const F* PYDL_R b = Bp + p * NR;
    for (int i = 0; i < MR; ++i) {
      if (i >= m) break;
      const F a = Ap[p * MR + i];
      for (int j = 0; j < NR; ++j) acc[i][j] += a * b[j];
    }
  }
  for (index_t i = 0; i < m; ++i)
    for (int j = 0; j < NR; ++j) C[i * ldc + j] = accumulate ? C[i * ldc + j] + acc[i][j] : acc[i][j];
}

#undef PYDL_R

// ---- dispatch table --------------------------------------------------------------------

// float: the vector rows and the MR x NR register tile (a row of detail::kRnnTile*); double:
// the scalar rows with libm and plain-loop products.
template <typename F, int MR, int NR>
static const detail::RnnRowKernels<F>* make_table() {
  if constexpr (std::is_same<F, float>::value) {
    static_assert(NR % kL == 0 && NR <= 64, "tile width must be whole vectors");
    static const detail::RnnRowKernels<float> table = {rnn_fwd_row_v, lstm_fwd_row_v, gru_fwd_row_v,
                                                       rnn_bwd_row_v, lstm_bwd_row_v, gru_bwd_row_v,
                                                       tile_v<MR, NR / kL>, MR, NR};
    return &table;
  } else {
    static const detail::RnnRowKernels<F> table = {rnn_fwd_row<F>, lstm_fwd_row<F>, gru_fwd_row<F>,
                                                   rnn_bwd_row<F>, lstm_bwd_row<F>, gru_bwd_row<F>,
                                                   tile_generic<F, MR, NR>, MR, NR};
    return &table;
  }
}

}  // namespace PYDL_RNN_NS
}  // namespace pydl
