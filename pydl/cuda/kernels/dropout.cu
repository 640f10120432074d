// Inverted dropout. The keep decision of element i is a counter-based hash of (seed, i): the
// splitmix64 output mix of key + (i + 1) * golden, key = mix(seed), top 32 bits compared with
// threshold = floor(rate * 2^32). It depends on nothing else (not the launch shape), so a seed
// gives the same mask on every run, and the same mask as the CPU kernel.

__device__ __forceinline__ unsigned long long dropout_mix64(unsigned long long z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

template <typename T>
__device__ void dropout_forward_body(T* y, unsigned char* mask, const T* x, long long n, unsigned long long seed,
                                     unsigned int threshold, T scale) {
  const unsigned long long key = dropout_mix64(seed);
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    const unsigned int u =
        (unsigned int)(dropout_mix64(key + ((unsigned long long)i + 1ull) * 0x9E3779B97F4A7C15ull) >> 32);
    const unsigned char m = u >= threshold ? 1 : 0;
    mask[i] = m;
    y[i] = x[i] * ((T)m * scale);
  }
}

template <typename T>
__device__ void dropout_backward_body(T* dx, const T* dy, const unsigned char* mask, long long n, T scale) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    dx[i] = dy[i] * ((T)(mask[i] != 0) * scale);
}

extern "C" __global__ void dropout_forward_f32(float* y, unsigned char* mask, const float* x, long long n,
                                               unsigned long long seed, unsigned int threshold, float scale) {
  dropout_forward_body<float>(y, mask, x, n, seed, threshold, scale);
}
extern "C" __global__ void dropout_forward_f64(double* y, unsigned char* mask, const double* x, long long n,
                                               unsigned long long seed, unsigned int threshold, double scale) {
  dropout_forward_body<double>(y, mask, x, n, seed, threshold, scale);
}
extern "C" __global__ void dropout_backward_f32(float* dx, const float* dy, const unsigned char* mask, long long n,
                                                float scale) {
  dropout_backward_body<float>(dx, dy, mask, n, scale);
}
extern "C" __global__ void dropout_backward_f64(double* dx, const double* dy, const unsigned char* mask,
                                                long long n, double scale) {
  dropout_backward_body<double>(dx, dy, mask, n, scale);
}
