// Activations: element-wise (linear, relu, sigmoid, tanh, leaky_relu, elu, gelu, gelu_tanh, swish,
// softplus, selu, softsign, hard_sigmoid, exponential) and row-wise over the last axis (softmax,
// log_softmax), forward and backward, plus the fused Dense epilogue.
//
// The Keras formulas of the later kinds:
//   gelu        x * Phi(x) = 0.5 x erfc(-x / sqrt(2))        (Phi: the standard normal CDF)
//   gelu_tanh   0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))   computed as x * sigmoid(2 u)
//   swish       x * sigmoid(x)   (also called silu)
//   softplus    log(1 + e^x) = max(x, 0) + log1p(e^-|x|)     (no overflow for any x)
//   selu        scale * elu(x, alpha), alpha = 1.67326324235437728, scale = 1.05070098735548049
//   softsign    x / (1 + |x|)
//   hard_sigmoid relu6(x + 3) / 6   (Keras 3)
//   exponential e^x
//
// Shapes: x, y, dy, dx are [R, D] row-major; row-wise kinds reduce over D, element-wise kinds see
// R*D independent elements. N, K name the Dense epilogue's [N, K] output.
// All outputs are written (=). Backward formulas use the forward output y (sigmoid y(1-y),
// tanh 1-y^2, relu/leaky_relu from the sign of y, elu y+alpha for y <= 0, selu scale or
// y + scale*alpha, exponential y, softmax y*(dy - sum(dy*y)), log_softmax dy - exp(y)*sum(dy)),
// which needs alpha >= 0 for leaky_relu and elu (the callers check it). The kinds for which
// act_needs_input() is true (gelu, gelu_tanh, swish, softplus, softsign, hard_sigmoid) are not
// functions of y alone and read the forward input x instead: gelu Phi(x) + x phi(x), gelu_tanh
// s + 2 x s (1-s) u'(x), swish s (1 + x (1-s)), softplus sigmoid(x), softsign 1/(1+|x|)^2,
// hard_sigmoid 1/6 on -3 < x < 3 (else 0).
//
// float32 runs vectorised loops with a polynomial exp; on AVX2 / AVX-512 machines the same loops
// are compiled for those ISAs (activations_avx2.cpp, activations_avx512.cpp) and picked at run
// time. float64 uses the C library's exp/expm1/tanh. NaN in -> NaN out for every kind.
#pragma once

#include <string>

#include "common.h"

namespace pydl {

enum class Act : int {
  linear = 0, relu, sigmoid, tanh, leaky_relu, elu, softmax, log_softmax,
  gelu, gelu_tanh, swish, softplus, selu, softsign, hard_sigmoid, exponential
};
constexpr int kNumActs = 16;

// SELU's constants (Klambauer et al. 2017, as Keras).
constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;

// Throws std::invalid_argument("[op] unknown activation ...") for an unknown name.
Act parse_activation(const std::string& name, const char* op);
const char* activation_name(Act act);
inline bool act_is_rowwise(Act a) { return a == Act::softmax || a == Act::log_softmax; }
// Kinds whose backward needs the forward input x (not computable from y).
inline bool act_needs_input(Act a) {
  return a == Act::gelu || a == Act::gelu_tanh || a == Act::swish || a == Act::softplus || a == Act::softsign ||
         a == Act::hard_sigmoid;
}

// y = act(x)                                                           (y written)
template <typename T>
void activation_forward(T* y, const T* x, index_t R, index_t D, Act act, T alpha);

// dx = dy * act'(x), computed from y = act(x), or from x where act_needs_input(act)
// (x may be null otherwise)                                            (dx written)
template <typename T>
void activation_backward(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t D, Act act, T alpha);

// Obvious scalar twins in double precision (std::exp etc.), for the tests.
template <typename T>
void activation_forward_naive(T* y, const T* x, index_t R, index_t D, Act act, T alpha);
template <typename T>
void activation_backward_naive(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t D, Act act,
                               T alpha);

// Dense epilogue, in place: y[n,k] = act(y[n,k] + b[k]); b may be null.  (element-wise kinds only)
template <typename T>
void bias_activation_inplace(T* y, const T* b, index_t N, index_t K, Act act, T alpha);

}  // namespace pydl
