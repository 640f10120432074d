// Dense backward: db[k] = sum over rows n of dz[n, k], in double.
//
// A block of 32 x 8 threads owns a strip of 32 adjacent columns (grid-stride over strips): each
// threadIdx.y walks rows y, y + 8, ... (coalesced 32-wide row segments), then the 8 partial sums
// of a column meet in a shared-memory tree. No atomics: the result is the same on every run.
// Launch with blockDim (32, 8).

#define PYDL_CS_X 32
#define PYDL_CS_Y 8

template <typename T>
__device__ void column_sums_body(T* db, const T* dz, long long N, long long K) {
  __shared__ double sh[PYDL_CS_Y][PYDL_CS_X];
  const long long strips = (K + PYDL_CS_X - 1) / PYDL_CS_X;
  for (long long strip = blockIdx.x; strip < strips; strip += gridDim.x) {
    const long long k = strip * PYDL_CS_X + threadIdx.x;
    double acc = 0.0;
    if (k < K)
      for (long long n = threadIdx.y; n < N; n += PYDL_CS_Y) acc += (double)dz[n * K + k];
    sh[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    for (int s = PYDL_CS_Y / 2; s > 0; s >>= 1) {
      if (threadIdx.y < s) sh[threadIdx.y][threadIdx.x] += sh[threadIdx.y + s][threadIdx.x];
      __syncthreads();
    }
    if (threadIdx.y == 0 && k < K) db[k] = (T)sh[0][threadIdx.x];
    __syncthreads();
  }
}

extern "C" __global__ void __launch_bounds__(PYDL_CS_X * PYDL_CS_Y)
    column_sums_f32(float* db, const float* dz, long long N, long long K) {
  column_sums_body<float>(db, dz, N, K);
}
extern "C" __global__ void __launch_bounds__(PYDL_CS_X * PYDL_CS_Y)
    column_sums_f64(double* db, const double* dz, long long N, long long K) {
  column_sums_body<double>(db, dz, N, K);
}
