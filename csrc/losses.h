// Losses: each returns the scalar loss and writes its gradient w.r.t. the prediction in the same
// pass. Reduction as Keras: mean over the last axis, then mean over the batch, so element-wise
// losses divide by E = all elements and row losses by R = rows.
//
// Shapes: t (targets) and p (predictions) hold E elements, or [R, D] rows for the categorical
// losses (D classes); labels [R] hold class indices in [0, D). dp has p's shape and is written (=).
// The loss is accumulated in double. eps = 1e-7 (Keras's epsilon), taken in T's precision.
#pragma once

#include <cstdint>

#include "common.h"

namespace pydl {

// L = mean((p - t)^2);                     dp = 2 (p - t) / E
template <typename T>
double mse_loss(T* dp, const T* t, const T* p, index_t E);

// L = mean(|p - t|);                       dp = sign(p - t) / E   (0 where p == t)
template <typename T>
double mae_loss(T* dp, const T* t, const T* p, index_t E);

// probabilities: q = clip(p, eps, 1-eps); L = -mean(t log q + (1-t) log(1-q));
//                dp = (-t/q + (1-t)/(1-q)) / E inside the clip range, 0 outside
// logits z:      L = mean(max(z,0) - z t + log1p(exp(-|z|)));  dp = (sigmoid(z) - t) / E
template <typename T>
double binary_crossentropy_loss(T* dp, const T* t, const T* p, index_t E, bool from_logits);

// probabilities: s = sum_j p_j, q = clip(p / s, eps, 1-eps), L = -mean_rows sum_j t_j log q_j;
//                with g_j = -t_j / q_j inside the clip range (else 0):
//                dp_j = (g_j - sum_i g_i p_i / s) / s / R
// logits z:      L = mean_rows (lse(z) sum_j t_j - sum_j t_j z_j);  dp_j = (softmax_j sum(t) - t_j) / R
template <typename T>
double categorical_crossentropy_loss(T* dp, const T* t, const T* p, index_t R, index_t D, bool from_logits);

// The same with t = one_hot(labels). Labels outside [0, D) throw before any work.
template <typename T>
double sparse_categorical_crossentropy_loss(T* dp, const std::int64_t* labels, const T* p, index_t R, index_t D,
                                            bool from_logits);

}  // namespace pydl
