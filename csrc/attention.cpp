#include "attention.h"

#include <cmath>
#include <limits>
#include <vector>

#include "cpu_features.h"

#define PYDL_ATTN_NS attn_generic
#define PYDL_ATTN_TILE detail::kAttnTileGeneric
#include "attention_impl.h"

namespace pydl {

void attention_check(const AttnSizes& z, const AttnMask& mk, const char* op) {
  PYDL_CHECK(z.B >= 0 && z.H >= 0 && z.T >= 0 && z.S >= 0 && z.dv >= 0, op, "negative size");
  PYDL_CHECK(z.d >= 1, op, "q and k need d >= 1 features, got d = ", z.d);
  PYDL_CHECK(std::isfinite(z.scale), op, "scale must be finite, got ", z.scale);
  PYDL_CHECK(z.dropout >= 0.0 && z.dropout < 1.0, op, "dropout must be in [0, 1), got ", z.dropout);
  PYDL_CHECK(z.T < (index_t(1) << 31) && z.S < (index_t(1) << 31), op, "T and S must be below 2^31");
  if (mk.kind != AttnMaskKind::none) {
    PYDL_CHECK(mk.data != nullptr, op, "mask data is null");
    const index_t full[4] = {z.B, z.H, z.T, z.S};
    const index_t got[4] = {mk.mB, mk.mH, mk.mT, mk.mS};
    for (int a = 0; a < 4; ++a)
      PYDL_CHECK(got[a] == 1 || got[a] == full[a], op, "mask has shape (", mk.mB, ", ", mk.mH, ", ", mk.mT, ", ",
                 mk.mS, "), not broadcastable to (B, H, T, S) = (", z.B, ", ", z.H, ", ", z.T, ", ", z.S, ")");
  }
}

namespace {

template <typename F>
struct Dispatch;

template <>
struct Dispatch<double> {
  static void forward(double* out, double* lse, const double* q, const double* k, const double* v,
                      const AttnMask& mask, const AttnSizes& z) {
    attn_generic::forward_impl<double>(out, lse, q, k, v, mask, z);
  }
  static void backward(double* dq, double* dk, double* dv, const double* q, const double* k, const double* v,
                       const double* out, const double* lse, const double* dout, const AttnMask& mask,
                       const AttnSizes& z) {
    attn_generic::backward_impl<double>(dq, dk, dv, q, k, v, out, lse, dout, mask, z);
  }
};

const detail::AttnKernels* float_kernels() {
#if defined(PYDL_X86)
  switch (selected_isa()) {
    case Isa::avx512: return detail::attention_kernels_avx512();
    case Isa::avx2: return detail::attention_kernels_avx2();
    default: break;
  }
#endif
  return attn_generic::make_kernels();
}

template <>
struct Dispatch<float> {
  static void forward(float* out, float* lse, const float* q, const float* k, const float* v, const AttnMask& mask,
                      const AttnSizes& z) {
    float_kernels()->forward(out, lse, q, k, v, mask, z);
  }
  static void backward(float* dq, float* dk, float* dv, const float* q, const float* k, const float* v,
                       const float* out, const float* lse, const float* dout, const AttnMask& mask,
                       const AttnSizes& z) {
    float_kernels()->backward(dq, dk, dv, q, k, v, out, lse, dout, mask, z);
  }
};

// Row i of (b, h): the raw scores s_j = scale q_i . k_j + mask (natural-log units, -inf where
// masked or j > i under causal), in double.
template <typename F>
void naive_scores(std::vector<double>& s, const F* q, const F* k, const AttnMask& mk, const AttnSizes& z,
                  index_t b, index_t h, index_t i) {
  const index_t bh = b * z.H + h;
  const F* qi = q + (bh * z.T + i) * z.d;
  const double ninf = -std::numeric_limits<double>::infinity();
  const index_t moff = mk.kind == AttnMaskKind::none
                           ? 0
                           : (((mk.mB > 1 ? b : 0) * mk.mH + (mk.mH > 1 ? h : 0)) * mk.mT + (mk.mT > 1 ? i : 0)) *
                                 mk.mS;
  for (index_t j = 0; j < z.S; ++j) {
    const F* kj = k + (bh * z.S + j) * z.d;
    double acc = 0.0;
    for (index_t p = 0; p < z.d; ++p) acc += static_cast<double>(qi[p]) * kj[p];
    double x = z.scale * acc;
    const index_t mj = moff + (mk.mS > 1 ? j : 0);
    if (mk.kind == AttnMaskKind::boolean && !static_cast<const std::uint8_t*>(mk.data)[mj]) x = ninf;
    if (mk.kind == AttnMaskKind::additive) x += static_cast<const F*>(mk.data)[mj];
    if (z.causal && j > i) x = ninf;
    s[j] = x;
  }
}

// Softmax of a row in place; returns lse (-inf and all zeros for a fully masked row).
double naive_softmax(std::vector<double>& s, index_t S) {
  const double ninf = -std::numeric_limits<double>::infinity();
  double m = ninf;
  for (index_t j = 0; j < S; ++j) m = s[j] > m ? s[j] : m;
  if (m == ninf) {
    for (index_t j = 0; j < S; ++j) s[j] = 0.0;
    return ninf;
  }
  double l = 0.0;
  for (index_t j = 0; j < S; ++j) l += (s[j] = std::exp(s[j] - m));
  for (index_t j = 0; j < S; ++j) s[j] /= l;
  return m + std::log(l);
}

double naive_drop(const AttnSizes& z, std::uint32_t rk, index_t j, std::int32_t thr) {
  if (z.dropout <= 0.0) return 1.0;
  return attn_dropout_keep(rk, j, thr) ? 1.0 / (1.0 - z.dropout) : 0.0;
}

}  // namespace

template <typename F>
void attention_forward(F* out, F* lse, const F* q, const F* k, const F* v, const AttnMask& mask,
                       const AttnSizes& z) {
  attention_check(z, mask, "attention_forward");
  Dispatch<F>::forward(out, lse, q, k, v, mask, z);
}

template <typename F>
void attention_backward(F* dq, F* dk, F* dv, const F* q, const F* k, const F* v, const F* out, const F* lse,
                        const F* dout, const AttnMask& mask, const AttnSizes& z) {
  attention_check(z, mask, "attention_backward");
  Dispatch<F>::backward(dq, dk, dv, q, k, v, out, lse, dout, mask, z);
}

// out_i = sum_j softmax(s)_j Z_ij v_j;  lse_i = log sum_j exp(s_j).
template <typename F>
void attention_forward_naive(F* out, F* lse, const F* q, const F* k, const F* v, const AttnMask& mask,
                             const AttnSizes& z) {
  attention_check(z, mask, "attention_forward_naive");
  std::vector<double> s(static_cast<std::size_t>(z.S)), o(static_cast<std::size_t>(z.dv));
  const std::int32_t thr = attn_dropout_threshold(z.dropout);
  for (index_t b = 0; b < z.B; ++b)
    for (index_t h = 0; h < z.H; ++h)
      for (index_t i = 0; i < z.T; ++i) {
        const index_t bh = b * z.H + h;
        naive_scores(s, q, k, mask, z, b, h, i);
        lse[bh * z.T + i] = static_cast<F>(naive_softmax(s, z.S));
        const std::uint32_t rk = attn_row_key(z.seed, b, h, i, z.H, z.T);
        for (auto& x : o) x = 0.0;
        for (index_t j = 0; j < z.S; ++j) {
          const double p = s[j] * naive_drop(z, rk, j, thr);
          const F* vj = v + (bh * z.S + j) * z.dv;
          for (index_t c = 0; c < z.dv; ++c) o[c] += p * vj[c];
        }
        for (index_t c = 0; c < z.dv; ++c) out[(bh * z.T + i) * z.dv + c] = static_cast<F>(o[c]);
      }
}

// With P the softmax, Z the dropout factors: dV_j += P_ij Z_ij dO_i; dP_ij = Z_ij dO_i . v_j;
// D_i = sum_j P_ij dP_ij; dS = P (dP - D); dq_i = scale sum_j dS_ij k_j; dk_j += scale dS_ij q_i.
template <typename F>
void attention_backward_naive(F* dq, F* dk, F* dv, const F* q, const F* k, const F* v, const AttnMask& mask,
                              const F* dout, const AttnSizes& z) {
  attention_check(z, mask, "attention_backward_naive");
  const index_t BH = z.B * z.H;
  std::vector<double> s(static_cast<std::size_t>(z.S)), dp(static_cast<std::size_t>(z.S));
  std::vector<double> adk(static_cast<std::size_t>(BH * z.S * z.d)), adv(static_cast<std::size_t>(BH * z.S * z.dv));
  const std::int32_t thr = attn_dropout_threshold(z.dropout);
  for (index_t b = 0; b < z.B; ++b)
    for (index_t h = 0; h < z.H; ++h)
      for (index_t i = 0; i < z.T; ++i) {
        const index_t bh = b * z.H + h;
        naive_scores(s, q, k, mask, z, b, h, i);
        naive_softmax(s, z.S);
        const std::uint32_t rk = attn_row_key(z.seed, b, h, i, z.H, z.T);
        const F* doi = dout + (bh * z.T + i) * z.dv;
        double D = 0.0;
        for (index_t j = 0; j < z.S; ++j) {
          const double zf = naive_drop(z, rk, j, thr);
          const F* vj = v + (bh * z.S + j) * z.dv;
          double acc = 0.0;
          for (index_t c = 0; c < z.dv; ++c) {
            acc += static_cast<double>(doi[c]) * vj[c];
            adv[(bh * z.S + j) * z.dv + c] += s[j] * zf * doi[c];
          }
          dp[j] = acc * zf;
          D += s[j] * dp[j];
        }
        const F* qi = q + (bh * z.T + i) * z.d;
        for (index_t p = 0; p < z.d; ++p) {
          double acc = 0.0;
          for (index_t j = 0; j < z.S; ++j) {
            const double ds = s[j] * (dp[j] - D);
            acc += ds * k[(bh * z.S + j) * z.d + p];
            adk[(bh * z.S + j) * z.d + p] += z.scale * ds * qi[p];
          }
          dq[(bh * z.T + i) * z.d + p] = static_cast<F>(z.scale * acc);
        }
      }
  for (std::size_t n = 0; n < adk.size(); ++n) dk[n] = static_cast<F>(adk[n]);
  for (std::size_t n = 0; n < adv.size(); ++n) dv[n] = static_cast<F>(adv[n]);
}

#define PYDL_ATTN_INSTANTIATE(F)                                                                              \
  template void attention_forward<F>(F*, F*, const F*, const F*, const F*, const AttnMask&, const AttnSizes&); \
  template void attention_backward<F>(F*, F*, F*, const F*, const F*, const F*, const F*, const F*, const F*,  \
                                      const AttnMask&, const AttnSizes&);                                     \
  template void attention_forward_naive<F>(F*, F*, const F*, const F*, const F*, const AttnMask&,             \
                                           const AttnSizes&);                                                 \
  template void attention_backward_naive<F>(F*, F*, F*, const F*, const F*, const F*, const AttnMask&,        \
                                            const F*, const AttnSizes&);

PYDL_ATTN_INSTANTIATE(float)
PYDL_ATTN_INSTANTIATE(double)

}  // namespace pydl
