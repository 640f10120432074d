// Activations: element-wise (linear, relu, sigmoid, tanh, leaky_relu, elu) and row-wise over the
// last axis (softmax, log_softmax), forward and backward, plus the fused Dense epilogue.
//
// Shapes: x, y, dy, dx are [R, D] row-major; row-wise kinds reduce over D, element-wise kinds see
// R*D independent elements. N, K name the Dense epilogue's [N, K] output.
// All outputs are written (=). Backward formulas use the forward output y (sigmoid y(1-y),
// tanh 1-y^2, relu/leaky_relu from the sign of y, elu y+alpha for y <= 0, softmax
// y*(dy - sum(dy*y)), log_softmax dy - exp(y)*sum(dy)), which needs alpha >= 0 for leaky_relu
// and elu (the callers check it).
//
// float32 runs vectorised loops with a polynomial exp; on AVX2 / AVX-512 machines the same loops
// are compiled for those ISAs (activations_avx2.cpp, activations_avx512.cpp) and picked at run
// time. float64 uses the C library's exp/expm1/tanh. NaN in -> NaN out for every kind.
#pragma once

#include <string>

#include "common.h"

namespace pydl {

enum class Act : int { linear = 0, relu, sigmoid, tanh, leaky_relu, elu, softmax, log_softmax };

// Throws std::invalid_argument("[op] unknown activation ...") for an unknown name.
Act parse_activation(const std::string& name, const char* op);
const char* activation_name(Act act);
inline bool act_is_rowwise(Act a) { return a == Act::softmax || a == Act::log_softmax; }

// y = act(x)                                                           (y written)
template <typename T>
void activation_forward(T* y, const T* x, index_t R, index_t D, Act act, T alpha);

// dx = dy * act'(x), computed from y = act(x)                          (dx written)
template <typename T>
void activation_backward(T* dx, const T* dy, const T* y, index_t R, index_t D, Act act, T alpha);

// Obvious scalar twins in double precision (std::exp etc.), for the tests.
template <typename T>
void activation_forward_naive(T* y, const T* x, index_t R, index_t D, Act act, T alpha);
template <typename T>
void activation_backward_naive(T* dx, const T* dy, const T* y, index_t R, index_t D, Act act, T alpha);

// Dense epilogue, in place: y[n,k] = act(y[n,k] + b[k]); b may be null.  (element-wise kinds only)
template <typename T>
void bias_activation_inplace(T* y, const T* b, index_t N, index_t K, Act act, T alpha);

}  // namespace pydl
