// Metric reductions: row argmax, label-equality counts, thresholded binary hits, and sums of
// absolute / squared differences (the accuracy family and the MSE / MAE metrics).
//
// Shapes: R rows of D columns (argmax over the last axis); n compared elements. Counts are
// accumulated (+=) into a zeroed unsigned 64-bit counter with one atomicAdd per block (integer
// sums: the result does not depend on the order). diff_sum writes (=) one double partial sum per
// block; reduce_partials adds them in a fixed order (one block), so the MSE / MAE values are
// deterministic.

#define PYDL_METRIC_THREADS 256
#define PYDL_METRIC_WARPS (PYDL_METRIC_THREADS / 32)

// (v, i) beats (w, k) as the first maximum in NumPy's sense: a NaN is the maximum (the first NaN
// wins), then the larger value, then the smaller index.
__device__ __forceinline__ bool argmax_better(double v, long long i, double w, long long k) {
  const bool vn = v != v, wn = w != w;
  if (vn || wn) return vn && (!wn || i < k);
  return v > w || (v == w && i < k);
}

// out[r] = the first index of the maximum of row r (NaN counts as the maximum); one warp per row.
template <typename T>
__device__ void argmax_rows(long long* __restrict__ out, const T* __restrict__ x, long long R, long long D) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const long long row_stride = static_cast<long long>(gridDim.x) * PYDL_METRIC_WARPS;
  for (long long r = static_cast<long long>(blockIdx.x) * PYDL_METRIC_WARPS + warp; r < R; r += row_stride) {
    const T* xr = x + r * D;
    double best = 0.0;
    long long bi = -1;  // -1: this lane saw no column (D < 32)
    for (long long j = lane; j < D; j += 32) {
      const double v = static_cast<double>(xr[j]);
      if (bi < 0 || argmax_better(v, j, best, bi)) {
        best = v;
        bi = j;
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const double w = __shfl_xor_sync(0xffffffffu, best, o);
      const long long k = __shfl_xor_sync(0xffffffffu, bi, o);
      if (k >= 0 && (bi < 0 || argmax_better(w, k, best, bi))) {
        best = w;
        bi = k;
      }
    }
    if (lane == 0) out[r] = bi;
  }
}

__device__ __forceinline__ void block_count_add(unsigned long long* count, unsigned long long c) {
  __shared__ unsigned long long warp_part[PYDL_METRIC_WARPS];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) c += __shfl_xor_sync(0xffffffffu, c, o);
  if (lane == 0) warp_part[warp] = c;
  __syncthreads();
  if (threadIdx.x == 0) {
    unsigned long long s = 0;
    for (int w = 0; w < PYDL_METRIC_WARPS; ++w) s += warp_part[w];
    if (s) atomicAdd(count, s);
  }
}

__device__ __forceinline__ double block_sum(double v) {
  __shared__ double warp_part[PYDL_METRIC_WARPS];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (lane == 0) warp_part[warp] = v;
  __syncthreads();
  double s = 0.0;
  if (threadIdx.x == 0)
    for (int w = 0; w < PYDL_METRIC_WARPS; ++w) s += warp_part[w];
  return s;
}

// count += #{i : a[i] == b[i]}
extern "C" __global__ void __launch_bounds__(PYDL_METRIC_THREADS, 1)
    count_equal(unsigned long long* __restrict__ count, const long long* __restrict__ a,
                const long long* __restrict__ b, long long n) {
  unsigned long long c = 0;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    c += a[i] == b[i] ? 1ull : 0ull;
  block_count_add(count, c);
}

// count += #{i : t[i] == (p[i] > threshold ? 1 : 0)}   (t in double, p and threshold in T)
template <typename T>
__device__ void binary_hits(unsigned long long* __restrict__ count, const double* __restrict__ t,
                            const T* __restrict__ p, long long n, T threshold) {
  unsigned long long c = 0;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride)
    c += t[i] == (p[i] > threshold ? 1.0 : 0.0) ? 1ull : 0ull;
  block_count_add(count, c);
}

// partial[block] = sum over the block's elements of (t - p)^2 (squared) or |t - p|.
template <typename T>
__device__ void diff_sum(double* __restrict__ partial, const T* __restrict__ t, const T* __restrict__ p,
                         long long n, int squared) {
  double acc = 0.0;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < n; i += stride) {
    const double d = static_cast<double>(t[i]) - static_cast<double>(p[i]);
    acc += squared ? d * d : (d < 0 ? -d : d);
  }
  const double s = block_sum(acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// out[0] = sum of partial[0 .. n) in a fixed order; one block.
extern "C" __global__ void __launch_bounds__(PYDL_METRIC_THREADS, 1)
    metric_reduce_partials(double* __restrict__ out, const double* __restrict__ partial, long long n) {
  double acc = 0.0;
  for (long long i = threadIdx.x; i < n; i += blockDim.x) acc += partial[i];
  const double s = block_sum(acc);
  if (threadIdx.x == 0) out[0] = s;
}

#define PYDL_METRIC_ENTRIES(T, SUF)                                                                       \
  extern "C" __global__ void __launch_bounds__(PYDL_METRIC_THREADS, 1)                                   \
      argmax_rows_##SUF(long long* out, const T* x, long long R, long long D) {                           \
    argmax_rows<T>(out, x, R, D);                                                                         \
  }                                                                                                       \
  extern "C" __global__ void __launch_bounds__(PYDL_METRIC_THREADS, 1)                                   \
      binary_hits_##SUF(unsigned long long* count, const double* t, const T* p, long long n, T threshold) { \
    binary_hits<T>(count, t, p, n, threshold);                                                            \
  }                                                                                                       \
  extern "C" __global__ void __launch_bounds__(PYDL_METRIC_THREADS, 1)                                   \
      diff_sum_##SUF(double* partial, const T* t, const T* p, long long n, int squared) {                 \
    diff_sum<T>(partial, t, p, n, squared);                                                               \
  }

PYDL_METRIC_ENTRIES(float, f32)
PYDL_METRIC_ENTRIES(double, f64)
