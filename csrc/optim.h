// Fused, in-place optimizer updates: one pass over a parameter and its slots per step.
//
// Sizes: n = number of elements of the parameter. Every array is contiguous with n elements.
// Argument order: the parameter p and its slots (written in place, `=`), then the gradient g
// (read only), then n, then the hyper-parameters.
//
// Every kernel first prepares the gradient and the parameter, element by element, in this order:
//   g <- g * grad_scale                      (global-norm / per-tensor clipping scale; 1 = off)
//   g <- min(max(g, -clip_value), clip_value) (clip by value, when clip is set; NaN stays NaN)
//   g <- g + l2 * p                          (coupled L2 weight decay; 0 = off)
//   p <- p - decay * p                       (decoupled weight decay, decay = lr * wd; 0 = off)
// then applies its own rule (the formulas sit above each kernel). Slots hold the optimizer's
// running state and are updated in the same pass.
//
// float32 is the fast path (AVX-512 / AVX2 / SSE2 by pydl::selected_isa()); float64 runs the
// same vectorised code on doubles. Results do not depend on the thread count: every element goes
// through the same instruction sequence whichever thread (or the tail) processes it.
// The *_naive twins are plain scalar loops the tests compare against.
//
// Decaying state is flushed: a momentum, RMSprop average or Adam moment whose magnitude falls below
// the smallest normal number (FLT_MIN ~1.2e-38, DBL_MIN) is stored as 0. Without it, the moments of
// a parameter whose gradient stays 0 (a weight fed by an always-zero input pixel, a dead unit) decay
// into subnormals, where m <- 0.9 m has a fixed point, and every later step pays the CPU's subnormal
// penalty on them (measured: an MLP step 1.2 -> 1.9 ms once 22% of m had got stuck there).
#pragma once

#include <cfloat>
#include <cmath>
#include <limits>

#include "common.h"

namespace pydl {

template <typename T>
inline T flush_subnormal(T x) {
  return std::fabs(x) < std::numeric_limits<T>::min() ? T(0) : x;  // NaN compares false: kept
}

struct OptimHyper {
  double lr = 0.0;          // step size (Adam: the bias-corrected lr_t)
  double grad_scale = 1.0;  // g *= grad_scale
  bool clip = false;        // clip g to [-clip_value, clip_value]
  double clip_value = 0.0;
  double l2 = 0.0;          // g += l2 * p
  double decay = 0.0;       // p -= decay * p (before the step)
  double momentum = 0.0;    // SGD momentum / RMSprop momentum
  bool nesterov = false;
  double rho = 0.9;         // RMSprop
  double beta1 = 0.9;       // Adam
  double beta2 = 0.999;     // Adam
  double eps_in = 0.0;      // added inside the square root  (Keras Adagrad / RMSprop)
  double eps_out = 0.0;     // added after the square root   (Adam; PyTorch Adagrad / RMSprop)
  double mcoef = 0.0;       // Nadam: step coefficient of the new first moment m
  double gcoef = 0.0;       // Nadam: step coefficient of the gradient g
  double vscale = 1.0;      // Nadam: 1 / (1 - beta2^t), the second moment's bias correction
};

// SGD:       p <- p - lr * g
template <typename T>
void sgd_update(T* p, const T* g, index_t n, const OptimHyper& h);

// Momentum:  v <- momentum * v - lr * g;  p <- p + v
// Nesterov:  v <- momentum * v - lr * g;  p <- p + momentum * v - lr * g
template <typename T>
void momentum_update(T* p, T* v, const T* g, index_t n, const OptimHyper& h);

// Adagrad:   acc <- acc + g^2;  p <- p - lr * g / (sqrt(acc + eps_in) + eps_out)
template <typename T>
void adagrad_update(T* p, T* acc, const T* g, index_t n, const OptimHyper& h);

// RMSprop:   a <- rho * a + (1 - rho) * g^2
//            centered (mg != nullptr): mg <- rho * mg + (1 - rho) * g;  d = a - mg^2
//            otherwise d = a
//            inc = lr * g / (sqrt(d + eps_in) + eps_out)
//            with momentum (mom != nullptr): mom <- momentum * mom + inc;  p <- p - mom
//            otherwise p <- p - inc
template <typename T>
void rmsprop_update(T* p, T* a, T* mom, T* mg, const T* g, index_t n, const OptimHyper& h);

// Adam:      m <- m + (1 - beta1) * (g - m);  v <- v + (1 - beta2) * (g^2 - v)
//            amsgrad (vhat != nullptr): vhat <- max(vhat, v), and vhat replaces v below
//            p <- p - lr * m / (sqrt(v) + eps_out)
// with lr = lr0 * sqrt(1 - beta2^t) / (1 - beta1^t) (bias correction folded into the step size
// by the caller, as Keras does). AdamW is this kernel with decay = lr0 * weight_decay.
template <typename T>
void adam_update(T* p, T* m, T* v, T* vhat, const T* g, index_t n, const OptimHyper& h);

// Nadam:     m <- m + (1 - beta1) * (g - m);  v <- v + (1 - beta2) * (g^2 - v)
//            p <- p - (mcoef * m + gcoef * g) / (sqrt(v * vscale) + eps_out)
// with Keras's momentum schedule folded into the coefficients by the caller:
// u_t = beta1 * (1 - 0.5 * 0.96^t), U_t = u_1 * ... * u_t, mcoef = lr * u_{t+1} / (1 - U_{t+1}),
// gcoef = lr * (1 - u_t) / (1 - U_t), vscale = 1 / (1 - beta2^t).
template <typename T>
void nadam_update(T* p, T* m, T* v, const T* g, index_t n, const OptimHyper& h);

// sum(x^2) accumulated in double, over fixed blocks summed in a fixed order (so the result does
// not depend on the thread count). Used for clip-by-norm and clip-by-global-norm.
template <typename T>
double sum_squares(const T* x, index_t n);

// Scalar twins: the same formulas as plain loops in T, serial.
template <typename T>
void sgd_update_naive(T* p, const T* g, index_t n, const OptimHyper& h);
template <typename T>
void momentum_update_naive(T* p, T* v, const T* g, index_t n, const OptimHyper& h);
template <typename T>
void adagrad_update_naive(T* p, T* acc, const T* g, index_t n, const OptimHyper& h);
template <typename T>
void rmsprop_update_naive(T* p, T* a, T* mom, T* mg, const T* g, index_t n, const OptimHyper& h);
template <typename T>
void adam_update_naive(T* p, T* m, T* v, T* vhat, const T* g, index_t n, const OptimHyper& h);
template <typename T>
void nadam_update_naive(T* p, T* m, T* v, const T* g, index_t n, const OptimHyper& h);
template <typename T>
double sum_squares_naive(const T* x, index_t n);

// --- internal: one vectorised implementation per instruction set (optim_impl.h) ---------------
enum class OptimKind { sgd, momentum, adagrad, rmsprop, adam, nadam };

#define PYDL_OPTIM_DECLARE_ISA(ns)                                                                 \
  namespace ns {                                                                                   \
  void optim_run(OptimKind kind, float* p, float* s0, float* s1, float* s2, const float* g, index_t n, \
                 const OptimHyper& h);                                                             \
  void optim_run(OptimKind kind, double* p, double* s0, double* s1, double* s2, const double* g,    \
                 index_t n, const OptimHyper& h);                                                  \
  double sum_squares_block(const float* x, index_t n);                                             \
  double sum_squares_block(const double* x, index_t n);                                            \
  }
PYDL_OPTIM_DECLARE_ISA(optim_generic)
PYDL_OPTIM_DECLARE_ISA(optim_avx2)
PYDL_OPTIM_DECLARE_ISA(optim_avx512)
#undef PYDL_OPTIM_DECLARE_ISA

}  // namespace pydl
