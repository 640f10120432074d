// Batch normalisation over axis 1 of x viewed as [N, C, S] (S = H*W, 1 for 2-D input).
//
// One block per channel (grid-stride over channels), 256 threads walking the M = N*S values of
// the channel; per-channel sums are accumulated in double and combined by a shared-memory tree
// (deterministic). Training: mean, then the biased variance about it (two passes), running
// statistics updated by thread 0 as Keras, running = momentum * running + (1 - momentum) * batch;
// then y = (x - mean) * gamma * inv_std + beta in the same block. Inference uses the running
// statistics. mean and inv_std (float64) are written for batchnorm_backward.
// Launch with blockDim.x == 256.

#define PYDL_BN_THREADS 256

__device__ double bn_block_sum(double v, double* sh) {
  const int t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (int s = PYDL_BN_THREADS / 2; s > 0; s >>= 1) {
    if (t < s) sh[t] += sh[t + s];
    __syncthreads();
  }
  const double r = sh[0];
  __syncthreads();
  return r;
}

__device__ __forceinline__ long long bn_index(long long j, long long c, long long C, long long S) {
  const long long n = j / S;
  return (n * C + c) * S + (j - n * S);
}

template <typename T>
__device__ void bn_forward_body(T* y, double* mean, double* inv_std, T* running_mean, T* running_var, const T* x,
                                const T* gamma, const T* beta, long long N, long long C, long long S,
                                double momentum, double eps, int training) {
  __shared__ double sh[PYDL_BN_THREADS];
  const long long M = N * S;
  for (long long c = blockIdx.x; c < C; c += gridDim.x) {
    double mu, is;
    if (training) {
      double s = 0.0;
      for (long long j = threadIdx.x; j < M; j += blockDim.x) s += (double)x[bn_index(j, c, C, S)];
      mu = bn_block_sum(s, sh) / (double)M;
      double q = 0.0;
      for (long long j = threadIdx.x; j < M; j += blockDim.x) {
        const double d = (double)x[bn_index(j, c, C, S)] - mu;
        q += d * d;
      }
      const double var = bn_block_sum(q, sh) / (double)M;
      is = 1.0 / sqrt(var + eps);
      if (threadIdx.x == 0) {
        running_mean[c] = (T)(momentum * (double)running_mean[c] + (1.0 - momentum) * mu);
        running_var[c] = (T)(momentum * (double)running_var[c] + (1.0 - momentum) * var);
      }
    } else {
      mu = (double)running_mean[c];
      is = 1.0 / sqrt((double)running_var[c] + eps);
    }
    if (threadIdx.x == 0) {
      mean[c] = mu;
      inv_std[c] = is;
    }
    const T m = (T)mu;
    const T k = (T)((double)gamma[c] * is);
    const T b = beta[c];
    for (long long j = threadIdx.x; j < M; j += blockDim.x) {
      const long long i = bn_index(j, c, C, S);
      y[i] = (x[i] - m) * k + b;
    }
  }
}

// dbeta = sum(dy), dgamma = inv_std * sum(dy * (x - mean)); dx = k1 * (dy - k2 - (x - mean) * k3) with
// k1 = gamma * inv_std, k2 = sum(dy) / M, k3 = inv_std^2 * sum(dy * (x - mean)) / M (k2 = k3 = 0 after an
// inference forward: the statistics were constants).
template <typename T>
__device__ void bn_backward_body(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,
                                 const double* mean, const double* inv_std, long long N, long long C, long long S,
                                 int batch_stats) {
  __shared__ double sh[PYDL_BN_THREADS];
  const long long M = N * S;
  for (long long c = blockIdx.x; c < C; c += gridDim.x) {
    const double mc = mean[c];
    const double is = inv_std[c];
    double a = 0.0, b = 0.0;
    for (long long j = threadIdx.x; j < M; j += blockDim.x) {
      const long long i = bn_index(j, c, C, S);
      const double g = (double)dy[i];
      a += g;
      b += g * ((double)x[i] - mc);
    }
    const double sdy = bn_block_sum(a, sh);
    const double sdyx = bn_block_sum(b, sh);
    if (threadIdx.x == 0) {
      dbeta[c] = (T)sdy;
      dgamma[c] = (T)(sdyx * is);
    }
    if (M > 0) {
      const T m = (T)mc;
      const T k1 = (T)((double)gamma[c] * is);
      const T k2 = batch_stats ? (T)(sdy / (double)M) : T(0);
      const T k3 = batch_stats ? (T)(is * is * sdyx / (double)M) : T(0);
      for (long long j = threadIdx.x; j < M; j += blockDim.x) {
        const long long i = bn_index(j, c, C, S);
        dx[i] = k1 * (dy[i] - k2 - (x[i] - m) * k3);
      }
    }
  }
}

#define PYDL_BN_EXPORT(T, SUF)                                                                                 \
  extern "C" __global__ void __launch_bounds__(PYDL_BN_THREADS)                                                \
      batchnorm_forward_##SUF(T* y, double* mean, double* inv_std, T* running_mean, T* running_var,             \
                              const T* x, const T* gamma, const T* beta, long long N, long long C, long long S,  \
                              double momentum, double eps, int training) {                                      \
    bn_forward_body<T>(y, mean, inv_std, running_mean, running_var, x, gamma, beta, N, C, S, momentum, eps,     \
                       training);                                                                               \
  }                                                                                                             \
  extern "C" __global__ void __launch_bounds__(PYDL_BN_THREADS)                                                \
      batchnorm_backward_##SUF(T* dx, T* dgamma, T* dbeta, const T* dy, const T* x, const T* gamma,             \
                               const double* mean, const double* inv_std, long long N, long long C,             \
                               long long S, int batch_stats) {                                                   \
    bn_backward_body<T>(dx, dgamma, dbeta, dy, x, gamma, mean, inv_std, N, C, S, batch_stats);                  \
  }

PYDL_BN_EXPORT(float, f32)
PYDL_BN_EXPORT(double, f64)
