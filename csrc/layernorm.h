// Layer normalisation over the last axis: x viewed as [R, C] (R rows = the product of the leading
// dims, C = the last dim). gamma, beta, dgamma, dbeta are [C]; mean and rstd are [R].
//
//   mean_r = sum_c x_rc / C;  var_r = sum_c (x_rc - mean_r)^2 / C;  rstd_r = 1 / sqrt(var_r + eps)
//   y_rc = (x_rc - mean_r) rstd_r gamma_c + beta_c
// Backward, with xhat = (x - mean) rstd and g = dy gamma:
//   dx_rc = rstd_r (g_rc - sum_c g_rc / C - xhat_rc sum_c g_rc xhat_rc / C)
//   dgamma_c = sum_r dy_rc xhat_rc;  dbeta_c = sum_r dy_rc
//
// Statistics: two passes per row (a sum for a first mean m0, then the sums of x - m0 and of its
// squares, which give the exact shift); float sums are accumulated in vector registers over
// chunks of 256 values and the chunks added in double, so a row of 1e6 values of 1e4 + noise keeps
// its variance to ~1e-7. dgamma / dbeta: rows in fixed groups of 32, each group's partial sums in
// row order, the partials added in group order in double: the same bits for any thread count.
#pragma once

#include "common.h"

namespace pydl {

// y [R, C], mean [R], rstd [R] written; gamma / beta may be null (1 / 0).
template <typename F>
void layernorm_forward(F* y, F* mean, F* rstd, const F* x, const F* gamma, const F* beta, index_t R, index_t C,
                       double eps);

// dx [R, C], dgamma [C], dbeta [C] written; gamma may be null (1).
template <typename F>
void layernorm_backward(F* dx, F* dgamma, F* dbeta, const F* dy, const F* x, const F* gamma, const F* mean,
                        const F* rstd, index_t R, index_t C);

namespace detail {
template <typename F>
struct LayerNormKernels {
  void (*forward)(F*, F*, F*, const F*, const F*, const F*, index_t, index_t, double);
  void (*backward)(F*, F*, F*, const F*, const F*, const F*, const F*, const F*, index_t, index_t);
};
#if defined(PYDL_X86)
const LayerNormKernels<float>* layernorm_kernels_avx2();
const LayerNormKernels<float>* layernorm_kernels_avx512();
#endif
}  // namespace detail

}  // namespace pydl
