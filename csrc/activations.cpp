// Activation forward/backward: ISA dispatch, threading, and the naive twins.
#define PYDL_ACT_NS act_generic
#include "activations_kernels.inc"
#undef PYDL_ACT_NS

#include <cmath>

#include "cpu_features.h"
#include "nn_parallel.h"

namespace pydl {

#ifdef PYDL_X86
// Defined by the same loops compiled for AVX2+FMA / AVX-512 (activations_avx2.cpp, _avx512.cpp).
#define PYDL_DECLARE_ACT_NS(ns)                                                                        \
  namespace ns {                                                                                       \
  template <typename T>                                                                                \
  void forward_range(T* y, const T* x, index_t r0, index_t r1, index_t D, Act act, T alpha);           \
  template <typename T>                                                                                \
  void backward_range(T* dx, const T* dy, const T* x, const T* y, index_t r0, index_t r1, index_t D, Act act, \
                      T a);                                                                            \
  template <typename T>                                                                                \
  void bias_act_rows(T* y, const T* b, index_t n0, index_t n1, index_t K, Act act, T alpha);           \
  }
PYDL_DECLARE_ACT_NS(act_avx2)
PYDL_DECLARE_ACT_NS(act_avx512)
#undef PYDL_DECLARE_ACT_NS
#endif

namespace {

const char* const kActNames[kNumActs] = {"linear",    "relu",      "sigmoid", "tanh",     "leaky_relu", "elu",
                                         "softmax",   "log_softmax", "gelu",  "gelu_tanh", "swish",      "softplus",
                                         "selu",      "softsign",  "hard_sigmoid", "exponential"};

// Minimum elements per thread: memory-bound kinds need more work before a second thread pays.
double min_per_thread(Act act) {
  return (act == Act::linear || act == Act::relu || act == Act::leaky_relu) ? 32768.0 : 4096.0;
}

template <typename T>
void fwd(T* y, const T* x, index_t r0, index_t r1, index_t D, Act act, T alpha, Isa isa) {
#ifdef PYDL_X86
  if (isa == Isa::avx512) return act_avx512::forward_range<T>(y, x, r0, r1, D, act, alpha);
  if (isa == Isa::avx2) return act_avx2::forward_range<T>(y, x, r0, r1, D, act, alpha);
#endif
  act_generic::forward_range<T>(y, x, r0, r1, D, act, alpha);
}

template <typename T>
void bwd(T* dx, const T* dy, const T* x, const T* y, index_t r0, index_t r1, index_t D, Act act, T alpha, Isa isa) {
#ifdef PYDL_X86
  if (isa == Isa::avx512) return act_avx512::backward_range<T>(dx, dy, x, y, r0, r1, D, act, alpha);
  if (isa == Isa::avx2) return act_avx2::backward_range<T>(dx, dy, x, y, r0, r1, D, act, alpha);
#endif
  act_generic::backward_range<T>(dx, dy, x, y, r0, r1, D, act, alpha);
}

template <typename T>
void bias_act(T* y, const T* b, index_t n0, index_t n1, index_t K, Act act, T alpha, Isa isa) {
#ifdef PYDL_X86
  if (isa == Isa::avx512) return act_avx512::bias_act_rows<T>(y, b, n0, n1, K, act, alpha);
  if (isa == Isa::avx2) return act_avx2::bias_act_rows<T>(y, b, n0, n1, K, act, alpha);
#endif
  act_generic::bias_act_rows<T>(y, b, n0, n1, K, act, alpha);
}

}  // namespace

Act parse_activation(const std::string& name, const char* op) {
  for (int i = 0; i < kNumActs; ++i)
    if (name == kActNames[i]) return static_cast<Act>(i);
  PYDL_CHECK(false, op, "unknown activation '", name,
             "', expected one of linear, relu, sigmoid, tanh, leaky_relu, elu, softmax, log_softmax, gelu, "
             "gelu_tanh, swish, softplus, selu, softsign, hard_sigmoid, exponential");
  return Act::linear;
}

const char* activation_name(Act act) { return kActNames[static_cast<int>(act)]; }

template <typename T>
void activation_forward(T* y, const T* x, index_t R, index_t D, Act act, T alpha) {
  if (!act_is_rowwise(act)) {
    R *= D;
    D = 1;
  }
  if (R <= 0 || D <= 0) return;
  const Isa isa = selected_isa();
  const int nt = threads_for(static_cast<double>(R) * D, min_per_thread(act));
  run_pieces(R, nt, D == 1 ? 64 : 1, [&](index_t r0, index_t r1) { fwd<T>(y, x, r0, r1, D, act, alpha, isa); });
}

template <typename T>
void activation_backward(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t D, Act act, T alpha) {
  PYDL_CHECK(x || !act_needs_input(act), "activation_backward", activation_name(act),
             " needs the forward input x");
  if (!act_is_rowwise(act)) {
    R *= D;
    D = 1;
  }
  if (R <= 0 || D <= 0) return;
  const Isa isa = selected_isa();
  const int nt = threads_for(static_cast<double>(R) * D, min_per_thread(act));
  run_pieces(R, nt, D == 1 ? 64 : 1,
             [&](index_t r0, index_t r1) { bwd<T>(dx, dy, x, y, r0, r1, D, act, alpha, isa); });
}

template <typename T>
void bias_activation_inplace(T* y, const T* b, index_t N, index_t K, Act act, T alpha) {
  if (N <= 0 || K <= 0 || (act == Act::linear && !b)) return;
  const Isa isa = selected_isa();
  const int nt = threads_for(static_cast<double>(N) * K, min_per_thread(act));
  run_pieces(N, nt, 1, [&](index_t n0, index_t n1) { bias_act<T>(y, b, n0, n1, K, act, alpha, isa); });
}

// ---- naive twins: one element or row at a time, in double, with the C library's functions ----

namespace {

constexpr double kPi = 3.14159265358979323846;

double act_naive(double x, Act act, double alpha) {
  switch (act) {
    case Act::relu: return std::isnan(x) ? x : (x > 0 ? x : 0.0);
    case Act::leaky_relu: return std::isnan(x) ? x : (x > 0 ? x : alpha * x);
    case Act::sigmoid: return x >= 0 ? 1.0 / (1.0 + std::exp(-x)) : std::exp(x) / (1.0 + std::exp(x));
    case Act::tanh: return std::tanh(x);
    case Act::elu: return std::isnan(x) ? x : (x > 0 ? x : alpha * std::expm1(x));
    case Act::gelu: return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
    case Act::gelu_tanh: {
      const double u = std::sqrt(2.0 / kPi) * (x + 0.044715 * x * x * x);
      return 0.5 * x * (1.0 + std::tanh(u));
    }
    case Act::swish: return x * act_naive(x, Act::sigmoid, 0.0);
    case Act::softplus: return std::isnan(x) ? x : (x > 0 ? x : 0.0) + std::log1p(std::exp(-std::fabs(x)));
    case Act::selu: return std::isnan(x) ? x : kSeluScale * (x > 0 ? x : kSeluAlpha * std::expm1(x));
    case Act::softsign: return x / (1.0 + std::fabs(x));
    case Act::hard_sigmoid: return std::isnan(x) ? x : std::fmin(std::fmax(x + 3.0, 0.0), 6.0) / 6.0;
    case Act::exponential: return std::exp(x);
    default: return x;
  }
}

double act_grad_naive(double dy, double x, double y, Act act, double alpha) {
  switch (act) {
    case Act::relu: return std::isnan(y) ? y : (y > 0 ? dy : 0.0);
    case Act::leaky_relu: return std::isnan(y) ? y : (y > 0 ? dy : alpha * dy);
    case Act::sigmoid: return dy * y * (1.0 - y);
    case Act::tanh: return dy * (1.0 - y * y);
    case Act::elu: return y > 0 ? dy : dy * (y + alpha);
    case Act::gelu: {
      const double pdf = std::exp(-0.5 * x * x) / std::sqrt(2.0 * kPi);
      return dy * (0.5 * std::erfc(-x / std::sqrt(2.0)) + x * pdf);
    }
    case Act::gelu_tanh: {
      const double k = std::sqrt(2.0 / kPi);
      const double t = std::tanh(k * (x + 0.044715 * x * x * x));
      const double tail = std::fabs(x) < 10.0 ? 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x) : 0.0;
      return dy * (0.5 * (1.0 + t) + tail);
    }
    case Act::swish: {
      const double s = act_naive(x, Act::sigmoid, 0.0);
      return dy * s * (1.0 + x * (1.0 - s));
    }
    case Act::softplus: return dy * act_naive(x, Act::sigmoid, 0.0);
    case Act::selu: return y > 0 ? dy * kSeluScale : dy * (y + kSeluScale * kSeluAlpha);
    case Act::softsign: {
      const double d = 1.0 + std::fabs(x);
      return dy / (d * d);
    }
    case Act::hard_sigmoid: return std::isnan(x) ? x : (std::fabs(x) < 3.0 ? dy / 6.0 : 0.0);
    case Act::exponential: return dy * y;
    default: return dy;
  }
}

}  // namespace

template <typename T>
void activation_forward_naive(T* y, const T* x, index_t R, index_t D, Act act, T alpha) {
  if (!act_is_rowwise(act)) {
    for (index_t i = 0; i < R * D; ++i) y[i] = static_cast<T>(act_naive(x[i], act, alpha));
    return;
  }
  for (index_t r = 0; r < R; ++r) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    double m = -INFINITY;
    bool nan = false;
    for (index_t j = 0; j < D; ++j) {
      nan = nan || std::isnan(xr[j]);
      if (xr[j] > m) m = xr[j];
    }
    double s = 0.0;
    for (index_t j = 0; j < D; ++j) s += std::exp(xr[j] - m);
    for (index_t j = 0; j < D; ++j) {
      const double v = act == Act::softmax ? std::exp(xr[j] - m) / s : xr[j] - m - std::log(s);
      yr[j] = static_cast<T>(nan ? NAN : v);
    }
  }
}

template <typename T>
void activation_backward_naive(T* dx, const T* dy, const T* x, const T* y, index_t R, index_t D, Act act,
                               T alpha) {
  PYDL_CHECK(x || !act_needs_input(act), "activation_backward_naive", activation_name(act),
             " needs the forward input x");
  if (!act_is_rowwise(act)) {
    for (index_t i = 0; i < R * D; ++i)
      dx[i] = static_cast<T>(act_grad_naive(dy[i], x ? double(x[i]) : 0.0, y[i], act, alpha));
    return;
  }
  for (index_t r = 0; r < R; ++r) {
    const T *dyr = dy + r * D, *yr = y + r * D;
    double s = 0.0;
    for (index_t j = 0; j < D; ++j) s += act == Act::softmax ? double(dyr[j]) * yr[j] : double(dyr[j]);
    for (index_t j = 0; j < D; ++j)
      dx[r * D + j] = static_cast<T>(act == Act::softmax ? yr[j] * (dyr[j] - s) : dyr[j] - std::exp(double(yr[j])) * s);
  }
}

#define PYDL_INSTANTIATE_ACT(T)                                                                        \
  template void activation_forward<T>(T*, const T*, index_t, index_t, Act, T);                         \
  template void activation_backward<T>(T*, const T*, const T*, const T*, index_t, index_t, Act, T);    \
  template void activation_forward_naive<T>(T*, const T*, index_t, index_t, Act, T);                   \
  template void activation_backward_naive<T>(T*, const T*, const T*, const T*, index_t, index_t, Act, T); \
  template void bias_activation_inplace<T>(T*, const T*, index_t, index_t, Act, T);
PYDL_INSTANTIATE_ACT(float)
PYDL_INSTANTIATE_ACT(double)
#undef PYDL_INSTANTIATE_ACT

}  // namespace pydl
