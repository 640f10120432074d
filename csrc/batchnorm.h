// Batch normalisation over axis 1 (channels) of x [N, C] or [N, C, H, W].
//
// Shapes: x, y, dy, dx are [N, C, S] with S = H*W (S = 1 for 2-D input); gamma, beta, running_mean,
// running_var, dgamma, dbeta are [C]; the caches mean and inv_std are [C] in double.
// M = N*S values per channel. Statistics are computed in double with two passes.
#pragma once

#include "common.h"

namespace pydl {

// Training: mean_c, var_c = batch mean and biased variance over (N, S); inv_std = 1/sqrt(var + eps);
// y = gamma * (x - mean) * inv_std + beta;
// running_mean = momentum*running_mean + (1-momentum)*mean, likewise running_var with var (Keras).
// (y, mean, inv_std written; running_* updated in place)
template <typename T>
void batchnorm_forward_train(T* y, double* mean, double* inv_std, T* running_mean, T* running_var, const T* x,
                             const T* gamma, const T* beta, index_t N, index_t C, index_t S, double momentum,
                             double eps);

// Inference: the same with mean = running_mean, var = running_var.  (y, mean, inv_std written)
template <typename T>
void batchnorm_forward_infer(T* y, double* mean, double* inv_std, const T* x, const T* gamma, const T* beta,
                             const T* running_mean, const T* running_var, index_t N, index_t C, index_t S,
                             double eps);

// xhat = (x - mean) * inv_std;  dgamma = sum(dy * xhat);  dbeta = sum(dy)       (written)
// batch_stats (training forward): dx = gamma*inv_std/M * (M*dy - sum(dy) - xhat*sum(dy*xhat))
// otherwise (statistics were constants):  dx = gamma * inv_std * dy            (written)
template <typename T>
void batchnorm_backward(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma, const double* mean,
                        const double* inv_std, index_t N, index_t C, index_t S, bool batch_stats);

}  // namespace pydl
