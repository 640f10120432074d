// Activations on the GPU: element-wise kinds (one thread per element, grid-stride), softmax and
// log_softmax (one block per row, shared-memory tree reductions), and the two fused passes of the
// Dense layer: the epilogue y = act(acc + b) (optionally keeping z = acc + b) and dz = dy * act'.
//
// kind numbers follow pydl.ops.nn.ACTIVATIONS: 0 linear, 1 relu, 2 sigmoid, 3 tanh, 4 leaky_relu,
// 5 elu, 6 softmax, 7 log_softmax, 8 gelu, 9 gelu_tanh, 10 swish, 11 softplus, 12 selu,
// 13 softsign, 14 hard_sigmoid, 15 exponential. Formulas and NaN behaviour match the CPU kernels.
// Row kernels need blockDim.x == 256 (a power of two).

#define PYDL_RED_THREADS 256

__device__ __forceinline__ float act_exp(float x) { return expf(x); }
__device__ __forceinline__ double act_exp(double x) { return exp(x); }
__device__ __forceinline__ float act_expm1(float x) { return expm1f(x); }
__device__ __forceinline__ double act_expm1(double x) { return expm1(x); }
__device__ __forceinline__ float act_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double act_tanh(double x) { return tanh(x); }
__device__ __forceinline__ float act_erfc(float x) { return erfcf(x); }
__device__ __forceinline__ double act_erfc(double x) { return erfc(x); }
__device__ __forceinline__ float act_log1p(float x) { return log1pf(x); }
__device__ __forceinline__ double act_log1p(double x) { return log1p(x); }
__device__ __forceinline__ float act_fabs(float x) { return fabsf(x); }
__device__ __forceinline__ double act_fabs(double x) { return fabs(x); }

// sigmoid from e = exp(-|x|) <= 1: never overflows.
template <typename T>
__device__ __forceinline__ T sigmoid_e(T x) {
  const T e = act_exp(-act_fabs(x));
  const T r = T(1) / (T(1) + e);
  return x < T(0) ? e * r : r;
}

template <typename T>
__device__ __forceinline__ T elu_e(T x, T alpha) {
  return x <= T(0) ? alpha * act_expm1(x) : x;  // NaN takes x
}

template <typename T>
__device__ __forceinline__ T gelu_tanh_u2(T x) {
  return T(2 * 0.79788456080286535588) * (x + T(0.044715) * x * x * x);
}

// y = act(x) for the element-wise kinds.
template <typename T>
__device__ __forceinline__ T act_forward(T x, int kind, T alpha) {
  switch (kind) {
    case 1: return x < T(0) ? T(0) : x;
    case 2: return sigmoid_e(x);
    case 3: return act_tanh(x);
    case 4: return x < T(0) ? alpha * x : x;
    case 5: return elu_e(x, alpha);
    case 8: return x * (T(0.5) * act_erfc(x * T(-0.70710678118654752440)));
    case 9: return x * sigmoid_e(gelu_tanh_u2(x));
    case 10: return x * sigmoid_e(x);
    case 11: return (x < T(0) ? T(0) : x) + act_log1p(act_exp(-act_fabs(x)));
    case 12: return T(1.0507009873554804934193349852946) * elu_e(x, T(1.6732632423543772848170429916717));
    case 13: return x / (T(1) + act_fabs(x));
    case 14: {
      T t = x + T(3);
      t = t < T(0) ? T(0) : t;
      t = t > T(6) ? T(6) : t;
      return t / T(6);
    }
    case 15: return act_exp(x);
    default: return x;
  }
}

// dx = dy * act'(.), from y, or from the forward input x for the NEEDS_INPUT kinds.
template <typename T>
__device__ __forceinline__ T act_backward(T dy, T x, T y, int kind, T alpha) {
  switch (kind) {
    case 1: return y > T(0) ? dy : (y == y ? T(0) : y);
    case 2: return dy * (y * (T(1) - y));
    case 3: return dy * (T(1) - y * y);
    case 4: return y > T(0) ? dy : (y == y ? alpha * dy : y);
    case 5: return y > T(0) ? dy : dy * (y + alpha);
    case 8: {
      const T pdf = act_exp(T(-0.5) * x * x) * T(0.39894228040143267794);
      return dy * (T(0.5) * act_erfc(x * T(-0.70710678118654752440)) + x * pdf);
    }
    case 9: {
      const T s = sigmoid_e(gelu_tanh_u2(x));
      const T du2 = T(2 * 0.79788456080286535588) * (T(1) + T(3 * 0.044715) * x * x);
      const T tail = act_fabs(x) < T(10) ? x * s * (T(1) - s) * du2 : T(0);
      return dy * (s + tail);
    }
    case 10: {
      const T s = sigmoid_e(x);
      return dy * (s * (T(1) + x * (T(1) - s)));
    }
    case 11: return dy * sigmoid_e(x);
    case 12: {
      const T scale = T(1.0507009873554804934193349852946);
      const T sa = T(1.0507009873554804934193349852946 * 1.6732632423543772848170429916717);
      return y > T(0) ? dy * scale : dy * (y + sa);
    }
    case 13: {
      const T d = T(1) + act_fabs(x);
      return dy / (d * d);
    }
    case 14: return act_fabs(x) < T(3) ? dy / T(6) : (x == x ? T(0) : x);
    case 15: return dy * y;
    default: return dy;
  }
}

// Kinds whose backward reads the forward input x (the others read only y, linear neither).
__device__ __forceinline__ bool act_uses_x(int kind) {
  return kind == 8 || kind == 9 || kind == 10 || kind == 11 || kind == 13 || kind == 14;
}
__device__ __forceinline__ bool act_uses_y(int kind) { return kind != 0 && !act_uses_x(kind); }

template <typename T>
__device__ void act_forward_body(T* y, const T* x, long long n, int kind, T alpha) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    y[i] = act_forward(x[i], kind, alpha);
}

template <typename T>
__device__ void act_backward_body(T* dx, const T* dy, const T* x, const T* y, long long n, int kind, T alpha) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  const bool ux = act_uses_x(kind), uy = act_uses_y(kind);
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride)
    dx[i] = act_backward(dy[i], ux ? x[i] : T(0), uy ? y[i] : T(0), kind, alpha);
}

// 16-byte vector access: float4 / double2. The pointers must be 16-byte aligned (the host checks).
template <typename T> struct ActVec;
template <> struct ActVec<float> { static constexpr int N = 4; };
template <> struct ActVec<double> { static constexpr int N = 2; };

__device__ __forceinline__ void vec_load(const float* p, long long i, float (&a)[4]) {
  const float4 v = reinterpret_cast<const float4*>(p)[i];
  a[0] = v.x; a[1] = v.y; a[2] = v.z; a[3] = v.w;
}
__device__ __forceinline__ void vec_load(const double* p, long long i, double (&a)[2]) {
  const double2 v = reinterpret_cast<const double2*>(p)[i];
  a[0] = v.x; a[1] = v.y;
}
__device__ __forceinline__ void vec_store(float* p, long long i, const float (&a)[4]) {
  reinterpret_cast<float4*>(p)[i] = make_float4(a[0], a[1], a[2], a[3]);
}
__device__ __forceinline__ void vec_store(double* p, long long i, const double (&a)[2]) {
  reinterpret_cast<double2*>(p)[i] = make_double2(a[0], a[1]);
}

// Vector i covers elements [i*N, i*N + N) for i < n / N (grid-stride); the last n % N elements
// (fewer than N) go to the global threads 0 .. n % N - 1, one each.
template <typename T>
__device__ void act_forward_vec_body(T* __restrict__ y, const T* __restrict__ x, long long n, int kind, T alpha) {
  constexpr int N = ActVec<T>::N;
  const long long nv = n / N;
  const long long t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = t0; i < nv; i += stride) {
    T a[N];
    vec_load(x, i, a);
#pragma unroll
    for (int k = 0; k < N; ++k) a[k] = act_forward(a[k], kind, alpha);
    vec_store(y, i, a);
  }
  const long long j = nv * N + t0;
  if (j < n) y[j] = act_forward(x[j], kind, alpha);
}

template <typename T>
__device__ void act_backward_vec_body(T* __restrict__ dx, const T* __restrict__ dy, const T* __restrict__ x,
                                      const T* __restrict__ y, long long n, int kind, T alpha) {
  constexpr int N = ActVec<T>::N;
  const long long nv = n / N;
  const long long t0 = (long long)blockIdx.x * blockDim.x + threadIdx.x;
  const long long stride = (long long)gridDim.x * blockDim.x;
  const bool ux = act_uses_x(kind), uy = act_uses_y(kind);
  for (long long i = t0; i < nv; i += stride) {
    T g[N], a[N], b[N];
    vec_load(dy, i, g);
#pragma unroll
    for (int k = 0; k < N; ++k) { a[k] = T(0); b[k] = T(0); }
    if (ux) vec_load(x, i, a);
    if (uy) vec_load(y, i, b);
#pragma unroll
    for (int k = 0; k < N; ++k) g[k] = act_backward(g[k], a[k], b[k], kind, alpha);
    vec_store(dx, i, g);
  }
  const long long j = nv * N + t0;
  if (j < n) dx[j] = act_backward(dy[j], ux ? x[j] : T(0), uy ? y[j] : T(0), kind, alpha);
}

// Dense epilogue over acc [N, K] (acc may be y or z): v = acc + b[col]; z = v when has_z; y = act(v).
template <typename T>
__device__ void bias_act_body(T* y, T* z, const T* acc, const T* b, long long n, long long K, int has_bias,
                              int has_z, int kind, T alpha) {
  const long long stride = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
    T v = acc[i];
    if (has_bias) v += b[i % K];
    if (has_z) z[i] = v;
    y[i] = act_forward(v, kind, alpha);
  }
}

// Shared-memory tree reductions over one block (blockDim.x == PYDL_RED_THREADS); every thread
// gets the result. Deterministic: the pairing depends only on the thread index.
__device__ double block_sum(double v, double* sh) {
  const int t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (int s = PYDL_RED_THREADS / 2; s > 0; s >>= 1) {
    if (t < s) sh[t] = sh[t] + sh[t + s];
    __syncthreads();
  }
  const double r = sh[0];
  __syncthreads();
  return r;
}

// Maximum as the CPU takes it: a NaN candidate never replaces the running maximum (it reaches the
// output through exp(NaN - m) anyway).
__device__ double block_max(double v, double* sh) {
  const int t = threadIdx.x;
  sh[t] = v;
  __syncthreads();
  for (int s = PYDL_RED_THREADS / 2; s > 0; s >>= 1) {
    if (t < s) {
      const double o = sh[t + s];
      const double m = sh[t];
      sh[t] = (o > m || m != m) ? o : m;
    }
    __syncthreads();
  }
  const double r = sh[0];
  __syncthreads();
  return r;
}

// softmax / log_softmax over rows of D; one block per row (grid-stride over rows).
template <typename T>
__device__ void softmax_body(T* y, const T* x, long long R, long long D, int log_form) {
  __shared__ double sh[PYDL_RED_THREADS];
  for (long long r = blockIdx.x; r < R; r += gridDim.x) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    double m = __longlong_as_double((long long)0xfff0000000000000ull);  // -inf
    for (long long j = threadIdx.x; j < D; j += blockDim.x) {
      const double v = (double)xr[j];
      m = (v > m || m != m) ? v : m;
    }
    const T mt = (T)block_max(m, sh);
    double s = 0.0;
    for (long long j = threadIdx.x; j < D; j += blockDim.x) {
      const T e = act_exp(xr[j] - mt);
      if (!log_form) yr[j] = e;
      s += (double)e;
    }
    s = block_sum(s, sh);
    if (log_form) {
      const T ls = (T)log(s);
      for (long long j = threadIdx.x; j < D; j += blockDim.x) yr[j] = (xr[j] - mt) - ls;
    } else {
      const T inv = (T)(1.0 / s);
      for (long long j = threadIdx.x; j < D; j += blockDim.x) yr[j] *= inv;
    }
  }
}

// softmax / log_softmax with the row held in registers: one read and one write per element.
// G threads own a row (G = 32: one warp per row, 8 rows per 256-thread block; G = 256: the whole
// block); thread t of the group holds elements t, t + G, ..., t + (K-1) G (K G >= D, coalesced).
// The same arithmetic as softmax_body: maximum with the same NaN rule, e = exp(x - m) in T, the
// sum of e in double, y = e * (T)(1/s) or (x - m) - (T)log(s).
__device__ __forceinline__ double max_nan_rule(double m, double o) { return (o > m || m != m) ? o : m; }

template <int G>
__device__ __forceinline__ double group_max(double v, double* sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max_nan_rule(v, __shfl_xor_sync(0xffffffffu, v, o));
  if (G == 32) return v;
  const int w = threadIdx.x >> 5;
  if ((threadIdx.x & 31) == 0) sh[w] = v;
  __syncthreads();
  double r = sh[0];
#pragma unroll
  for (int k = 1; k < G / 32; ++k) r = max_nan_rule(r, sh[k]);
  __syncthreads();
  return r;
}

template <int G>
__device__ __forceinline__ double group_sum(double v, double* sh) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  if (G == 32) return v;
  const int w = threadIdx.x >> 5;
  if ((threadIdx.x & 31) == 0) sh[w] = v;
  __syncthreads();
  double r = sh[0];
#pragma unroll
  for (int k = 1; k < G / 32; ++k) r += sh[k];
  __syncthreads();
  return r;
}

template <typename T, int G, int K>
__device__ void softmax_regs_body(T* __restrict__ y, const T* __restrict__ x, long long R, long long D,
                                  int log_form) {
  __shared__ double sh[PYDL_RED_THREADS / 32];
  constexpr int ROWS = PYDL_RED_THREADS / G;  // rows per block
  const int lane = G == 32 ? (threadIdx.x & 31) : threadIdx.x;
  const long long first = (long long)blockIdx.x * ROWS + (G == 32 ? (threadIdx.x >> 5) : 0);
  for (long long r = first; r < R; r += (long long)gridDim.x * ROWS) {
    const T* xr = x + r * D;
    T* yr = y + r * D;
    T v[K];
    double m = __longlong_as_double((long long)0xfff0000000000000ull);  // -inf
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const long long j = lane + (long long)k * G;
      v[k] = j < D ? xr[j] : T(0);
      if (j < D) m = max_nan_rule(m, (double)v[k]);
    }
    const T mt = (T)group_max<G>(m, sh);
    double s = 0.0;
#pragma unroll
    for (int k = 0; k < K; ++k) {
      const long long j = lane + (long long)k * G;
      if (j < D) {
        const T e = act_exp(v[k] - mt);
        s += (double)e;
        if (!log_form) v[k] = e;
      }
    }
    s = group_sum<G>(s, sh);
    if (log_form) {
      const T ls = (T)log(s);
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const long long j = lane + (long long)k * G;
        if (j < D) yr[j] = (v[k] - mt) - ls;
      }
    } else {
      const T inv = (T)(1.0 / s);
#pragma unroll
      for (int k = 0; k < K; ++k) {
        const long long j = lane + (long long)k * G;
        if (j < D) yr[j] = v[k] * inv;
      }
    }
  }
}

// float32 rows whose length D is a multiple of 4 on 16-byte aligned rows, up to 128 K4 elements:
// one warp per row, lane t holding the float4s t, t + 32, ..., t + 32 (K4-1) (coalesced 512-byte
// warp loads). The maximum is taken in float (exact, same NaN rule), e = exp(x - m) in float, each
// lane adds its 4 K4 values of e in float and the lanes' partial sums are added in double; the
// guards are per float4 and uniform across the warp when D is a multiple of 128. The maximum uses
// fmaxf, which skips NaN: a NaN element still makes its e, the row's sum and so every output NaN,
// as the NaN-propagating maximum of softmax_regs_body does. Against softmax_regs_body this drops
// the per-element bounds checks, double conversions and NaN selects (sm_90 SASS: 99 -> 11 F2F,
// 96 -> 32 loads/stores, 2160 -> ~1600 instructions for rows of 1024, both log forms included).

template <int K4, bool LOG>
__device__ __forceinline__ void softmax_vec_row(float* __restrict__ yr, const float* __restrict__ xr, int n4,
                                                int lane) {
  const float4* x4 = reinterpret_cast<const float4*>(xr);
  float4* y4 = reinterpret_cast<float4*>(yr);
  float4 v[K4];
  float m = __int_as_float(0xff800000);  // -inf
#pragma unroll
  for (int k = 0; k < K4; ++k) {
    const int j = lane + 32 * k;
    if (j < n4) {
      v[k] = x4[j];
      m = fmaxf(fmaxf(m, v[k].x), fmaxf(v[k].y, fmaxf(v[k].z, v[k].w)));
    }
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  float part = 0.0f;
#pragma unroll
  for (int k = 0; k < K4; ++k) {
    if (lane + 32 * k < n4) {
      const float4 e = make_float4(expf(v[k].x - m), expf(v[k].y - m), expf(v[k].z - m), expf(v[k].w - m));
      part += (e.x + e.y) + (e.z + e.w);
      if (!LOG) v[k] = e;
    }
  }
  double s = (double)part;
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) s += __shfl_xor_sync(0xffffffffu, s, o);
  if (LOG) {
    const float ls = (float)log(s);
#pragma unroll
    for (int k = 0; k < K4; ++k) {
      const int j = lane + 32 * k;
      if (j < n4) y4[j] = make_float4((v[k].x - m) - ls, (v[k].y - m) - ls, (v[k].z - m) - ls, (v[k].w - m) - ls);
    }
  } else {
    const float inv = (float)(1.0 / s);
#pragma unroll
    for (int k = 0; k < K4; ++k) {
      const int j = lane + 32 * k;
      if (j < n4) y4[j] = make_float4(v[k].x * inv, v[k].y * inv, v[k].z * inv, v[k].w * inv);
    }
  }
}

template <int K4>
__device__ void softmax_vec_body(float* __restrict__ y, const float* __restrict__ x, long long R, long long D,
                                 int log_form) {
  constexpr int ROWS = PYDL_RED_THREADS / 32;
  const int lane = threadIdx.x & 31;
  const int n4 = (int)(D >> 2);
  for (long long r = (long long)blockIdx.x * ROWS + (threadIdx.x >> 5); r < R; r += (long long)gridDim.x * ROWS) {
    if (log_form) softmax_vec_row<K4, true>(y + r * D, x + r * D, n4, lane);
    else softmax_vec_row<K4, false>(y + r * D, x + r * D, n4, lane);
  }
}

#define PYDL_SOFTMAX_VEC(K4)                                                                                 \
  extern "C" __global__ void __launch_bounds__(PYDL_RED_THREADS)                                             \
      softmax_warpv##K4##_f32(float* y, const float* x, long long R, long long D, int log_form) {             \
    softmax_vec_body<K4>(y, x, R, D, log_form);                                                              \
  }
PYDL_SOFTMAX_VEC(1)
PYDL_SOFTMAX_VEC(2)
PYDL_SOFTMAX_VEC(4)
PYDL_SOFTMAX_VEC(8)

// softmax: dx = y * (dy - sum(dy*y)); log_softmax: dx = dy - exp(y) * sum(dy).
template <typename T>
__device__ void softmax_backward_body(T* dx, const T* dy, const T* y, long long R, long long D, int log_form) {
  __shared__ double sh[PYDL_RED_THREADS];
  for (long long r = blockIdx.x; r < R; r += gridDim.x) {
    const T* gr = dy + r * D;
    const T* yr = y + r * D;
    T* dr = dx + r * D;
    double s = 0.0;
    for (long long j = threadIdx.x; j < D; j += blockDim.x)
      s += log_form ? (double)gr[j] : (double)gr[j] * (double)yr[j];
    const T st = (T)block_sum(s, sh);
    for (long long j = threadIdx.x; j < D; j += blockDim.x)
      dr[j] = log_form ? gr[j] - act_exp(yr[j]) * st : yr[j] * (gr[j] - st);
  }
}

// softmax_warp<K>_f32 ...: rows of D <= 32 K, one warp each; softmax_block<K>_f32: D <= 256 K.
#define PYDL_SOFTMAX_REGS(T, SUF, KIND, G, K)                                                               \
  extern "C" __global__ void __launch_bounds__(PYDL_RED_THREADS)                                             \
      softmax_##KIND##K##_##SUF(T* y, const T* x, long long R, long long D, int log_form) {                  \
    softmax_regs_body<T, G, K>(y, x, R, D, log_form);                                                        \
  }

#define PYDL_ACT_EXPORT(T, SUF)                                                                              \
  extern "C" __global__ void act_forward_##SUF(T* y, const T* x, long long n, int kind, T alpha) {            \
    act_forward_body<T>(y, x, n, kind, alpha);                                                               \
  }                                                                                                          \
  extern "C" __global__ void act_backward_##SUF(T* dx, const T* dy, const T* x, const T* y, long long n,     \
                                                int kind, T alpha) {                                         \
    act_backward_body<T>(dx, dy, x, y, n, kind, alpha);                                                      \
  }                                                                                                          \
  extern "C" __global__ void bias_act_##SUF(T* y, T* z, const T* acc, const T* b, long long n, long long K,  \
                                            int has_bias, int has_z, int kind, T alpha) {                    \
    bias_act_body<T>(y, z, acc, b, n, K, has_bias, has_z, kind, alpha);                                      \
  }                                                                                                          \
  extern "C" __global__ void __launch_bounds__(PYDL_RED_THREADS)                                             \
      softmax_forward_##SUF(T* y, const T* x, long long R, long long D, int log_form) {                      \
    softmax_body<T>(y, x, R, D, log_form);                                                                   \
  }                                                                                                          \
  extern "C" __global__ void __launch_bounds__(PYDL_RED_THREADS)                                             \
      softmax_backward_##SUF(T* dx, const T* dy, const T* y, long long R, long long D, int log_form) {       \
    softmax_backward_body<T>(dx, dy, y, R, D, log_form);                                                     \
  }                                                                                                          \
  extern "C" __global__ void act_forward_vec_##SUF(T* y, const T* x, long long n, int kind, T alpha) {        \
    act_forward_vec_body<T>(y, x, n, kind, alpha);                                                           \
  }                                                                                                          \
  extern "C" __global__ void act_backward_vec_##SUF(T* dx, const T* dy, const T* x, const T* y, long long n, \
                                                    int kind, T alpha) {                                     \
    act_backward_vec_body<T>(dx, dy, x, y, n, kind, alpha);                                                  \
  }                                                                                                          \
  PYDL_SOFTMAX_REGS(T, SUF, warp, 32, 1)                                                                     \
  PYDL_SOFTMAX_REGS(T, SUF, warp, 32, 2)                                                                     \
  PYDL_SOFTMAX_REGS(T, SUF, warp, 32, 4)                                                                     \
  PYDL_SOFTMAX_REGS(T, SUF, warp, 32, 8)                                                                     \
  PYDL_SOFTMAX_REGS(T, SUF, warp, 32, 16)                                                                    \
  PYDL_SOFTMAX_REGS(T, SUF, warp, 32, 32)                                                                    \
  PYDL_SOFTMAX_REGS(T, SUF, block, 256, 8)                                                                   \
  PYDL_SOFTMAX_REGS(T, SUF, block, 256, 16)

PYDL_ACT_EXPORT(float, f32)
PYDL_ACT_EXPORT(double, f64)
