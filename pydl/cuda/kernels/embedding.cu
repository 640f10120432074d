// Embedding: rows of a table W (V, D) looked up by integer ids (n ids, any shape, flattened).
//
// embedding_gather:      y[r, j] = W[ids[r], j]                    (y written, =)
// embedding_scatter_add: dW[ids[r], j] += dy[r, j] for every r     (dW accumulated, +=)
// The ids are int64 and already checked to lie in [0, V) by pydl.ops.embedding. The scatter adds
// with atomicAdd (float and double, sm_60+), so repeated ids add up correctly but in no fixed
// order: a float32 dW can differ in the last bits from run to run.

template <typename T>
__device__ void embedding_gather(T* __restrict__ y, const T* __restrict__ W, const long long* __restrict__ ids,
                                 long long n, long long D) {
  const long long total = n * D;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const long long r = i / D, j = i - r * D;
    y[i] = W[ids[r] * D + j];
  }
}

template <typename T>
__device__ void embedding_scatter_add(T* __restrict__ dW, const T* __restrict__ dy, const long long* __restrict__ ids,
                                      long long n, long long D) {
  const long long total = n * D;
  const long long stride = static_cast<long long>(gridDim.x) * blockDim.x;
  for (long long i = static_cast<long long>(blockIdx.x) * blockDim.x + threadIdx.x; i < total; i += stride) {
    const long long r = i / D, j = i - r * D;
    atomicAdd(dW + ids[r] * D + j, dy[i]);
  }
}

#define PYDL_EMBEDDING_ENTRIES(T, SUF)                                                                      \
  extern "C" __global__ void embedding_gather_##SUF(T* y, const T* W, const long long* ids, long long n,    \
                                                    long long D) {                                         \
    embedding_gather<T>(y, W, ids, n, D);                                                                   \
  }                                                                                                         \
  extern "C" __global__ void embedding_scatter_add_##SUF(T* dW, const T* dy, const long long* ids,          \
                                                         long long n, long long D) {                       \
    embedding_scatter_add<T>(dW, dy, ids, n, D);                                                            \
  }

PYDL_EMBEDDING_ENTRIES(float, f32)
PYDL_EMBEDDING_ENTRIES(double, f64)
