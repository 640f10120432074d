#include "layernorm.h"

#include <vector>

#include "cpu_features.h"

#define PYDL_LN_NS ln_generic
#include "layernorm_impl.h"

namespace pydl {

namespace {

template <typename F>
const detail::LayerNormKernels<F>* ln_kernels() {
  if constexpr (std::is_same<F, float>::value) {
#if defined(PYDL_X86)
    switch (selected_isa()) {
      case Isa::avx512: return detail::layernorm_kernels_avx512();
      case Isa::avx2: return detail::layernorm_kernels_avx2();
      default: break;
    }
#endif
  }
  return ln_generic::make_kernels<F>();
}

}  // namespace

template <typename F>
void layernorm_forward(F* y, F* mean, F* rstd, const F* x, const F* gamma, const F* beta, index_t R, index_t C,
                       double eps) {
  PYDL_CHECK(R >= 0 && C >= 1, "layer_norm", "x needs at least one value in its last axis, got C = ", C);
  PYDL_CHECK(eps >= 0.0 && std::isfinite(eps), "layer_norm", "eps must be finite and >= 0, got ", eps);
  std::vector<F> ones, zeros;
  if (!gamma) ones.assign(static_cast<std::size_t>(C), F(1)), gamma = ones.data();
  if (!beta) zeros.assign(static_cast<std::size_t>(C), F(0)), beta = zeros.data();
  ln_kernels<F>()->forward(y, mean, rstd, x, gamma, beta, R, C, eps);
}

template <typename F>
void layernorm_backward(F* dx, F* dgamma, F* dbeta, const F* dy, const F* x, const F* gamma, const F* mean,
                        const F* rstd, index_t R, index_t C) {
  PYDL_CHECK(R >= 0 && C >= 1, "layer_norm_backward", "x needs at least one value in its last axis, got C = ", C);
  std::vector<F> ones;
  if (!gamma) ones.assign(static_cast<std::size_t>(C), F(1)), gamma = ones.data();
  ln_kernels<F>()->backward(dx, dgamma, dbeta, dy, x, gamma, mean, rstd, R, C);
}

template void layernorm_forward<float>(float*, float*, float*, const float*, const float*, const float*, index_t,
                                       index_t, double);
template void layernorm_forward<double>(double*, double*, double*, const double*, const double*, const double*,
                                        index_t, index_t, double);
template void layernorm_backward<float>(float*, float*, float*, const float*, const float*, const float*,
                                        const float*, const float*, index_t, index_t);
template void layernorm_backward<double>(double*, double*, double*, const double*, const double*, const double*,
                                         const double*, const double*, index_t, index_t);

}  // namespace pydl
