// Dense (fully connected) layer: GEMM with a fused bias + activation epilogue.
//
// Shapes: x [N, C], W [C, K], b [K], y [N, K] (N batch, C input features, K units).
// Activations: the element-wise kinds of activations.h; alpha >= 0 for leaky_relu and elu (backward
// works from y). The kinds whose backward needs the pre-activation (act_needs_input: gelu,
// gelu_tanh, swish, softplus, softsign, hard_sigmoid) keep it in z = x @ W + b: the forward writes
// z and the backward reads it (z is required for them, optional otherwise).
#pragma once

#include "activations.h"
#include "common.h"

namespace pydl {

// y = act(x @ W + b)                 (y written; b may be null)
// One GEMM into y, then one pass over y adding b and applying act. With z: the GEMM and bias go
// into z (written), then y = act(z).
template <typename T>
void dense_forward(T* y, const T* x, const T* W, const T* b, index_t N, index_t C, index_t K, Act act, T alpha,
                   T* z = nullptr);

// dz = dy * act'(y or z)  (a scratch buffer; dz = dy when act is linear)
// dW = x^T dz        (written)
// db = sum_n dz      (written; skipped when db is null)
// dx = dz W^T        (written; skipped when dx is null)
template <typename T>
void dense_backward(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, const T* y, index_t N, index_t C,
                    index_t K, Act act, T alpha, const T* z = nullptr);

// The same with gemm_naive and the naive activations, for the tests.
template <typename T>
void dense_forward_naive(T* y, const T* x, const T* W, const T* b, index_t N, index_t C, index_t K, Act act,
                         T alpha, T* z = nullptr);
template <typename T>
void dense_backward_naive(T* dx, T* dW, T* db, const T* dy, const T* x, const T* W, const T* y, index_t N,
                          index_t C, index_t K, Act act, T alpha, const T* z = nullptr);

}  // namespace pydl
