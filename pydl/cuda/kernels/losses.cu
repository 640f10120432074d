// Losses: mse, mae, binary / categorical / sparse categorical crossentropy (probabilities or logits).
//
// Shapes: E elements of y_pred (element losses); R rows of D classes (row losses: y_pred is
// (..., D) and R = size / D). Every kernel WRITES (=) the gradient d loss / d y_pred, scaled by
// `scale` (the 1/E or 1/R of the mean, 2/E for mse), and the sum of its block's element / row losses
// in double into partial[blockIdx.x]; reduce_partials then adds the partial sums in a fixed order
// (one block), so the loss value is deterministic for a given grid. The host divides by E or R.
// With write_values != 0 the kernels also write each element's (elementwise_loss) or row's
// (crossentropies) loss in double into values[E] / values[R] (sample weights and masks use them).
// Arithmetic is in double, as csrc/losses.cpp; probabilities are clipped to [eps, 1 - eps] with
// the bounds rounded to T, as Keras computes them in the tensor's dtype.

#define PYDL_LOSS_THREADS 256
#define PYDL_LOSS_WARPS (PYDL_LOSS_THREADS / 32)

template <typename T>
__device__ __forceinline__ double clip_lo() {
  return static_cast<double>(static_cast<T>(1e-7));
}

template <typename T>
__device__ __forceinline__ double clip_hi() {
  return static_cast<double>(static_cast<T>(1) - static_cast<T>(1e-7));
}

__device__ __forceinline__ double clip_keep_nan(double v, double lo, double hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

// d/dq of -(t log clip(q)): zero where the clip is active, NaN stays NaN.
__device__ __forceinline__ double clipped_grad(double q, double num, double qc, double lo, double hi) {
  return (q >= lo && q <= hi) ? num / qc : (q == q ? 0.0 : q);
}

__device__ __forceinline__ double warp_sum(double v) {
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// The max of the warp's values; a NaN anywhere makes every lane NaN.
__device__ __forceinline__ double warp_max(double v) {
  for (int o = 16; o > 0; o >>= 1) {
    const double w = __shfl_xor_sync(0xffffffffu, v, o);
    v = (w > v || w != w) ? w : v;
  }
  return v;
}

// Sum of one value per thread over the block (PYDL_LOSS_THREADS threads), valid in thread 0;
// the order of additions is fixed.
__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_part[PYDL_LOSS_WARPS];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  v = warp_sum(v);
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  double s = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < PYDL_LOSS_WARPS; ++w) s += warp_part[w];
  return s;
}

// kind 0 mse: (p - t)^2, grad 2 (p - t) / E;  kind 1 mae: |p - t|, grad sign(p - t) / E;
// kind 2 bce from probabilities (clipped); kind 3 bce from logits z:
// max(z, 0) - z t + log1p(exp(-|z|)), grad (sigmoid(z) - t) / E.
template <typename T>
__device__ void elementwise_loss(T* __restrict__ grad, double* __restrict__ partial, double* __restrict__ values,
                                 const T* __restrict__ t, const T* __restrict__ p, long long E, int kind,
                                 double scale, int write_values) {
  const double lo = clip_lo<T>(), hi = clip_hi<T>();
  double acc = 0.0;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < E; i += stride) {
    const double pv = static_cast<double>(p[i]), tv = static_cast<double>(t[i]);
    double g, l;
    if (kind == 0) {
      const double d = pv - tv;
      l = d * d;
      g = d;
    } else if (kind == 1) {
      const double d = pv - tv;
      l = d < 0 ? -d : d;
      g = d > 0 ? 1.0 : (d < 0 ? -1.0 : d * 0.0);
    } else if (kind == 2) {
      const double qc = clip_keep_nan(pv, lo, hi);
      l = -(tv * log(qc) + (1.0 - tv) * log(1.0 - qc));
      g = (pv >= lo && pv <= hi) ? (-tv / qc + (1.0 - tv) / (1.0 - qc)) : (pv == pv ? 0.0 : pv);
    } else {
      const double az = pv < 0 ? -pv : pv;
      const double ez = exp(-az);
      l = (pv > 0 ? pv : 0.0) - pv * tv + log1p(ez);
      const double sig = pv >= 0 ? 1.0 / (1.0 + ez) : ez / (1.0 + ez);
      g = sig - tv;
    }
    acc += l;
    if (write_values) values[i] = l;
    grad[i] = static_cast<T>(g * scale);
  }
  const double s = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// Row crossentropy, one warp per row. t == nullptr: the target is the class labels[r] (sparse).
// From logits z: loss = lse(z) sum(t) - sum(t z), grad (softmax(z) sum(t) - t) * scale.
// From probabilities p: q = p / sum(p), loss = -sum t log clip(q); with g_j = -t_j / clip(q_j)
// (0 where clipped) the gradient is (g_j - sum_i g_i q_i) / sum(p) * scale.
template <typename T, bool FROM_LOGITS>
__device__ void crossentropy_rows(T* __restrict__ grad, double* __restrict__ partial, double* __restrict__ values,
                                  const T* __restrict__ t, const long long* __restrict__ labels,
                                  const T* __restrict__ p, long long R, long long D, double scale,
                                  int write_values) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const double lo = clip_lo<T>(), hi = clip_hi<T>();
  double acc = 0.0;  // lane 0's sum of its warp's row losses
  const long long row_stride = static_cast<long long>(gridDim.x) * PYDL_LOSS_WARPS;
  for (long long r = static_cast<long long>(blockIdx.x) * PYDL_LOSS_WARPS + warp; r < R; r += row_stride) {
    const T* z = p + r * D;
    const T* tr = t ? t + r * D : nullptr;
    T* dr = grad + r * D;
    const long long label = t ? -1 : labels[r];
    double row_loss;
    if (FROM_LOGITS) {
      double m = static_cast<double>(z[0]);
      for (long long j = lane; j < D; j += 32) {
        const double v = static_cast<double>(z[j]);
        m = (v > m || v != v) ? v : m;
      }
      m = warp_max(m);
      double s = 0.0, st = 0.0, stz = 0.0;
      for (long long j = lane; j < D; j += 32) {
        const double v = static_cast<double>(z[j]);
        s += exp(v - m);
        if (tr) {
          const double tj = static_cast<double>(tr[j]);
          st += tj;
          stz += tj * v;
        }
      }
      s = warp_sum(s);
      if (tr) {
        st = warp_sum(st);
        stz = warp_sum(stz);
      } else {
        st = 1.0;
        stz = static_cast<double>(z[label]);
      }
      const double inv_s = 1.0 / s;
      for (long long j = lane; j < D; j += 32) {
        const double sm = exp(static_cast<double>(z[j]) - m) * inv_s;
        const double tj = tr ? static_cast<double>(tr[j]) : (j == label ? 1.0 : 0.0);
        dr[j] = static_cast<T>((sm * st - tj) * scale);
      }
      row_loss = (m + log(s)) * st - stz;
    } else {
      double s = 0.0;
      for (long long j = lane; j < D; j += 32) s += static_cast<double>(z[j]);
      s = warp_sum(s);
      const double inv_s = 1.0 / s;
      double loss = 0.0, gp = 0.0;
      for (long long j = lane; j < D; j += 32) {
        const double tj = tr ? static_cast<double>(tr[j]) : (j == label ? 1.0 : 0.0);
        const double q = static_cast<double>(z[j]) * inv_s;
        const double qc = clip_keep_nan(q, lo, hi);
        loss -= tj * log(qc);
        gp += clipped_grad(q, -tj, qc, lo, hi) * q;
      }
      loss = warp_sum(loss);
      gp = warp_sum(gp);
      for (long long j = lane; j < D; j += 32) {
        const double tj = tr ? static_cast<double>(tr[j]) : (j == label ? 1.0 : 0.0);
        const double q = static_cast<double>(z[j]) * inv_s;
        const double qc = clip_keep_nan(q, lo, hi);
        dr[j] = static_cast<T>((clipped_grad(q, -tj, qc, lo, hi) - gp) * inv_s * scale);
      }
      row_loss = loss;
    }
    if (lane == 0) {
      acc += row_loss;
      if (write_values) values[r] = row_loss;
    }
  }
  const double s = block_sum(lane == 0 ? acc : 0.0);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// out[0] = sum of partial[0 .. n) in a fixed order; one block of PYDL_LOSS_THREADS threads.
extern "C" __global__ void __launch_bounds__(PYDL_LOSS_THREADS, 1) reduce_partials(double* __restrict__ out,
                                                                               const double* __restrict__ partial,
                                                                               long long n) {
  double acc = 0.0;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  const double s = block_sum(acc);
  if (threadIdx.x == 0) out[0] = s;
}

#define PYDL_LOSS_ENTRIES(T, SUF)                                                                          \
  extern "C" __global__ void __launch_bounds__(PYDL_LOSS_THREADS, 1)                                       \
      elementwise_loss_##SUF(T* grad, double* partial, double* values, const T* t, const T* p, long long E, \
                             int kind, double scale, int write_values) {                                  \
    elementwise_loss<T>(grad, partial, values, t, p, E, kind, scale, write_values);                        \
  }                                                                                                        \
  extern "C" __global__ void __launch_bounds__(PYDL_LOSS_THREADS, 1)                                       \
      categorical_crossentropy_probs_##SUF(T* grad, double* partial, double* values, const T* t,           \
                                           const T* p, long long R, long long D, double scale,             \
                                           int write_values) {                                            \
    crossentropy_rows<T, false>(grad, partial, values, t, nullptr, p, R, D, scale, write_values);          \
  }                                                                                                        \
  extern "C" __global__ void __launch_bounds__(PYDL_LOSS_THREADS, 1)                                       \
      categorical_crossentropy_logits_##SUF(T* grad, double* partial, double* values, const T* t,          \
                                            const T* p, long long R, long long D, double scale,            \
                                            int write_values) {                                           \
    crossentropy_rows<T, true>(grad, partial, values, t, nullptr, p, R, D, scale, write_values);           \
  }                                                                                                        \
  extern "C" __global__ void __launch_bounds__(PYDL_LOSS_THREADS, 1)                                       \
      sparse_crossentropy_probs_##SUF(T* grad, double* partial, double* values, const long long* labels,   \
                                      const T* p, long long R, long long D, double scale,                 \
                                      int write_values) {                                                 \
    crossentropy_rows<T, false>(grad, partial, values, nullptr, labels, p, R, D, scale, write_values);     \
  }                                                                                                        \
  extern "C" __global__ void __launch_bounds__(PYDL_LOSS_THREADS, 1)                                       \
      sparse_crossentropy_logits_##SUF(T* grad, double* partial, double* values, const long long* labels,  \
                                       const T* p, long long R, long long D, double scale,                \
                                       int write_values) {                                                \
    crossentropy_rows<T, true>(grad, partial, values, nullptr, labels, p, R, D, scale, write_values);      \
  }

PYDL_LOSS_ENTRIES(float, f32)
PYDL_LOSS_ENTRIES(double, f64)
