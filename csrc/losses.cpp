#include "losses.h"

#include <cmath>

#include "nn_parallel.h"

namespace pydl {

namespace {

constexpr double kEps = 1e-7;
constexpr double kMinPerThread = 16384.0;

// Clip bounds in T's precision, as Keras computes them in the tensor's dtype.
template <typename T>
double clip_lo() {
  return static_cast<double>(static_cast<T>(kEps));
}
template <typename T>
double clip_hi() {
  return static_cast<double>(T(1) - static_cast<T>(kEps));
}

inline double clip(double v, double lo, double hi) { return v < lo ? lo : (v > hi ? hi : v); }  // keeps NaN

// Row-wise cross entropy from logits with soft targets t (or a label when t is null).
template <typename T>
double ce_logits_row(T* dp, const T* t, std::int64_t label, const T* z, index_t D, double scale) {
  double m = z[0];
  for (index_t j = 1; j < D; ++j) m = z[j] > m ? z[j] : m;
  double s = 0.0;
  for (index_t j = 0; j < D; ++j) s += std::exp(static_cast<double>(z[j]) - m);
  const double lse = m + std::log(s);
  double st = 0.0, stz = 0.0;
  if (t) {
    for (index_t j = 0; j < D; ++j) {
      st += t[j];
      stz += static_cast<double>(t[j]) * z[j];
    }
  } else {
    st = 1.0;
    stz = z[label];
  }
  const double inv_s = 1.0 / s;
  for (index_t j = 0; j < D; ++j) {
    const double sm = std::exp(static_cast<double>(z[j]) - m) * inv_s;
    const double tj = t ? static_cast<double>(t[j]) : (j == label ? 1.0 : 0.0);
    dp[j] = static_cast<T>((sm * st - tj) * scale);
  }
  return lse * st - stz;  // a NaN logit makes s, and so lse, NaN
}

// Row-wise cross entropy from probabilities (Keras: normalise the row, clip, log).
template <typename T>
double ce_probs_row(T* dp, const T* t, std::int64_t label, const T* p, index_t D, double scale) {
  const double lo = clip_lo<T>(), hi = clip_hi<T>();
  double s = 0.0;
  for (index_t j = 0; j < D; ++j) s += p[j];
  const double inv_s = 1.0 / s;
  double loss = 0.0, gp = 0.0;  // gp = sum_i g_i * p_i / s
  for (index_t j = 0; j < D; ++j) {
    const double tj = t ? static_cast<double>(t[j]) : (j == label ? 1.0 : 0.0);
    const double q = p[j] * inv_s;
    const double qc = clip(q, lo, hi);
    loss -= tj * std::log(qc);  // qc >= eps, so log(qc) is finite (or NaN from a NaN input)
    const double g = (q >= lo && q <= hi) ? -tj / qc : (q == q ? 0.0 : q);
    gp += g * q;
  }
  for (index_t j = 0; j < D; ++j) {
    const double tj = t ? static_cast<double>(t[j]) : (j == label ? 1.0 : 0.0);
    const double q = p[j] * inv_s;
    const double qc = clip(q, lo, hi);
    const double g = (q >= lo && q <= hi) ? -tj / qc : (q == q ? 0.0 : q);
    dp[j] = static_cast<T>((g - gp) * inv_s * scale);
  }
  return loss;
}

}  // namespace

template <typename T>
double mse_loss(T* dp, const T* t, const T* p, index_t E) {
  PYDL_CHECK(E > 0, "mse", "y_pred is empty");
  const double scale = 2.0 / static_cast<double>(E);
  const int nt = threads_for(static_cast<double>(E), kMinPerThread);
  const double total = sum_pieces(E, nt, [&](index_t b, index_t e) {
    double acc = 0.0;
    for (index_t i = b; i < e; ++i) {
      const double d = static_cast<double>(p[i]) - static_cast<double>(t[i]);
      acc += d * d;
      dp[i] = static_cast<T>(d * scale);
    }
    return acc;
  });
  return total / static_cast<double>(E);
}

template <typename T>
double mae_loss(T* dp, const T* t, const T* p, index_t E) {
  PYDL_CHECK(E > 0, "mae", "y_pred is empty");
  const double scale = 1.0 / static_cast<double>(E);
  const int nt = threads_for(static_cast<double>(E), kMinPerThread);
  const double total = sum_pieces(E, nt, [&](index_t b, index_t e) {
    double acc = 0.0;
    for (index_t i = b; i < e; ++i) {
      const double d = static_cast<double>(p[i]) - static_cast<double>(t[i]);
      acc += d < 0 ? -d : d;
      const double sg = d > 0 ? 1.0 : (d < 0 ? -1.0 : d * 0.0);  // NaN stays NaN
      dp[i] = static_cast<T>(sg * scale);
    }
    return acc;
  });
  return total / static_cast<double>(E);
}

template <typename T>
double binary_crossentropy_loss(T* dp, const T* t, const T* p, index_t E, bool from_logits) {
  PYDL_CHECK(E > 0, "binary_crossentropy", "y_pred is empty");
  const double scale = 1.0 / static_cast<double>(E);
  const double lo = clip_lo<T>(), hi = clip_hi<T>();
  const int nt = threads_for(static_cast<double>(E), kMinPerThread / 4);
  const double total = sum_pieces(E, nt, [&](index_t b, index_t e) {
    double acc = 0.0;
    if (from_logits) {
      for (index_t i = b; i < e; ++i) {
        const double z = p[i], y = t[i];
        const double az = z < 0 ? -z : z;
        const double ez = std::exp(-az);
        acc += (z > 0 ? z : 0.0) - z * y + std::log1p(ez);
        const double sig = z >= 0 ? 1.0 / (1.0 + ez) : ez / (1.0 + ez);
        dp[i] = static_cast<T>((sig - y) * scale);
      }
    } else {
      for (index_t i = b; i < e; ++i) {
        const double q = p[i], y = t[i];
        const double qc = clip(q, lo, hi);
        acc -= y * std::log(qc) + (1.0 - y) * std::log(1.0 - qc);
        const double g = (q >= lo && q <= hi) ? (-y / qc + (1.0 - y) / (1.0 - qc)) : (q == q ? 0.0 : q);
        dp[i] = static_cast<T>(g * scale);
      }
    }
    return acc;
  });
  return total / static_cast<double>(E);
}

template <typename T>
double categorical_crossentropy_loss(T* dp, const T* t, const T* p, index_t R, index_t D, bool from_logits) {
  PYDL_CHECK(R > 0 && D > 0, "categorical_crossentropy", "y_pred is empty");
  const double scale = 1.0 / static_cast<double>(R);
  const int nt = threads_for(static_cast<double>(R) * D, kMinPerThread / 4);
  const double total = sum_pieces(R, nt, [&](index_t b, index_t e) {
    double acc = 0.0;
    for (index_t r = b; r < e; ++r)
      acc += from_logits ? ce_logits_row(dp + r * D, t + r * D, 0, p + r * D, D, scale)
                         : ce_probs_row(dp + r * D, t + r * D, 0, p + r * D, D, scale);
    return acc;
  });
  return total / static_cast<double>(R);
}

template <typename T>
double sparse_categorical_crossentropy_loss(T* dp, const std::int64_t* labels, const T* p, index_t R, index_t D,
                                            bool from_logits) {
  const char* op = "sparse_categorical_crossentropy";
  PYDL_CHECK(R > 0 && D > 0, op, "y_pred is empty");
  for (index_t r = 0; r < R; ++r)
    PYDL_CHECK(labels[r] >= 0 && labels[r] < D, op, "y_true[", r, "] = ", labels[r],
               " is not a class index in [0, ", D, ") for y_pred with ", D, " classes");
  const double scale = 1.0 / static_cast<double>(R);
  const int nt = threads_for(static_cast<double>(R) * D, kMinPerThread / 4);
  const double total = sum_pieces(R, nt, [&](index_t b, index_t e) {
    double acc = 0.0;
    for (index_t r = b; r < e; ++r)
      acc += from_logits ? ce_logits_row<T>(dp + r * D, nullptr, labels[r], p + r * D, D, scale)
                         : ce_probs_row<T>(dp + r * D, nullptr, labels[r], p + r * D, D, scale);
    return acc;
  });
  return total / static_cast<double>(R);
}

#define PYDL_INSTANTIATE_LOSSES(T)                                                                   \
  template double mse_loss<T>(T*, const T*, const T*, index_t);                                      \
  template double mae_loss<T>(T*, const T*, const T*, index_t);                                      \
  template double binary_crossentropy_loss<T>(T*, const T*, const T*, index_t, bool);                \
  template double categorical_crossentropy_loss<T>(T*, const T*, const T*, index_t, index_t, bool);  \
  template double sparse_categorical_crossentropy_loss<T>(T*, const std::int64_t*, const T*, index_t, \
                                                          index_t, bool);
PYDL_INSTANTIATE_LOSSES(float)
PYDL_INSTANTIATE_LOSSES(double)
#undef PYDL_INSTANTIATE_LOSSES

}  // namespace pydl
