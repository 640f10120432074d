// Point-wise recurrent cells, one batch row of one time step at a time (internal to rnn.*).
//
// Included by rnn.cpp (baseline x86-64) and by rnn_avx2.cpp / rnn_avx512.cpp, each inside its
// own namespace PYDL_RNN_NS, so every translation unit gets its own, differently named copy of
// these functions compiled for its instruction set (nothing here may be an inline function of
// another namespace, or the linker could pick one ISA's copy for all). The loops are written
// branch-free so the compiler vectorises them; the float math below is therefore a polynomial
// exp, not a libm call. float64 uses the exact libm functions (the gradient-check path).
//
// Letters as in rnn.h: H units per row; gate blocks of H values each, in the order
//   SimpleRNN: a            LSTM: i f g o            GRU: r z n
// Pointers are restrict: no output aliases an input.
#ifndef PYDL_RNN_NS
#error "define PYDL_RNN_NS before including rnn_cell.h"
#endif

#include <cstdint>
#include <cstring>

#include "rnn.h"

namespace pydl {
namespace PYDL_RNN_NS {

#define PYDL_R __restrict__

// ---- scalar math that vectorises --------------------------------------------------------

static inline float bits_to_float(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
static inline std::uint32_t float_to_bits(float f) {
  std::uint32_t u;
  std::memcpy(&u, &f, 4);
  return u;
}

// e^x for float: x = n ln2 + r, |r| <= ln2/2; e^r by its Taylor series to r^7 (truncation
// < 6e-9 relative), 2^n assembled in the exponent bits. Max error ~2 ulp on [-87, 88]; inputs
// outside are clamped there (so +-inf give finite results that the callers turn into their
// limits), and NaN stays NaN (the clamps compare false and keep it).
static inline float exp_f(float x) {
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float magic = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer in the low bits
  const float s = x * 1.44269504088896341f + magic;
  const float n = s - magic;
  float r = x - n * 0.693359375f;       // ln2 split in two so n * ln2_hi is exact
  r = r - n * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const std::uint32_t k = float_to_bits(s) - 0x4B400000u;  // n as a two's-complement integer
  return p * bits_to_float((k + 127u) << 23);
}

// sigmoid(x) = 1 / (1 + e^-x).
static inline float sigmoid(float x) { return 1.0f / (1.0f + exp_f(-x)); }

// tanh(x): for |x| >= 0.4, sign(x) (1 - e) / (1 + e) with e = e^{-2|x|} (no cancellation
// there); below, the odd Taylor series to x^13 (truncation < 5e-9 relative at 0.4).
static inline float tanh_f(float x) {
  const float a = x < 0.0f ? -x : x;
  const float e = exp_f(-2.0f * a);
  const float big = (1.0f - e) / (1.0f + e);
  const float x2 = x * x;
  float p = 21844.0f / 6081075.0f;
  p = p * x2 - 1382.0f / 155925.0f;
  p = p * x2 + 62.0f / 2835.0f;
  p = p * x2 - 17.0f / 315.0f;
  p = p * x2 + 2.0f / 15.0f;
  p = p * x2 - 1.0f / 3.0f;
  p = p * x2 + 1.0f;
  const float small = x * p;
  const float signed_big = x < 0.0f ? -big : big;
  return a < 0.4f ? small : signed_big;
}

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

// ---- forward rows ----------------------------------------------------------------------
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

// ---- backward rows ---------------------------------------------------------------------
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

// ---- the per-step product ----------------------------------------------------------------
// C[m, NR] = A[m, k] Bp[k, NR]   (=, or += when accumulate), m <= MR.
// A is read in place (rows at stride lda); Bp is a packed panel, row p at Bp + p * NR.
// Every element is one sequential sum over p, so the result does not depend on how rows and
// panels are shared among threads. Plain loops here (float64, and float without SIMD); the
// AVX2 / AVX-512 files have register-blocked versions with the same contract.
template <typename F, int MR, int NR>
static void tile_generic(index_t m, index_t k, const F* PYDL_R A, index_t lda, const F* PYDL_R Bp, F* PYDL_R C,
                         index_t ldc, bool accumulate) {
  F acc[MR][NR];
  for (int i = 0; i < MR; ++i)
    for (int j = 0; j < NR; ++j) acc[i][j] = F(0);
  for (index_t p = 0; p < k; ++p) {
    const F* PYDL_R b = Bp + p * NR;
    for (int i = 0; i < MR; ++i) {
      if (i >= m) break;
      const F a = A[i * lda + p];
      for (int j = 0; j < NR; ++j) acc[i][j] += a * b[j];
    }
  }
  for (index_t i = 0; i < m; ++i)
    for (int j = 0; j < NR; ++j) C[i * ldc + j] = accumulate ? C[i * ldc + j] + acc[i][j] : acc[i][j];
}

#undef PYDL_R

// ---- dispatch table --------------------------------------------------------------------

template <typename F, int MR, int NR>
static const detail::RnnRowKernels<F>* make_table(
    void (*tile)(index_t, index_t, const F*, index_t, const F*, F*, index_t, bool)) {
  static const detail::RnnRowKernels<F> table = {rnn_fwd_row<F>, lstm_fwd_row<F>, gru_fwd_row<F>,
                                                 rnn_bwd_row<F>, lstm_bwd_row<F>, gru_bwd_row<F>,
                                                 tile, MR, NR};
  return &table;
}

}  // namespace PYDL_RNN_NS
}  // namespace pydl
