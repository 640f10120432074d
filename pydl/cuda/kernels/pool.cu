// 2-D pooling over NCHW planes: max (with argmax), average, global average, and their gradients.
//
// Geometry (as the CPU kernels, csrc/pool2d.h): x (planes, H, W), y (planes, P, Q); the window of
// output (p, q) starts at row p*sh - pt and column q*sw - pl and covers R x S inputs, clipped to
// the input (padding never takes part in a maximum). argmax holds h*W + w inside the plane.
//
// - max forward: one thread per output element (consecutive threads along q read consecutive
//   columns); the running maximum starts at the clipped window's first element and is replaced
//   by a larger value or by the first NaN (a NaN stays), visiting the window row by row, so ties
//   keep the first element and the result and argmax are those of the CPU.
// - avg forward: one thread per output; the valid elements are added in row-major order starting
//   from 0 in the array type, then divided by R*S (count_include_pad) or the valid count.
// - max backward (gather, no atomics): one thread per input element walks the outputs whose
//   window covers it (at most one per axis when the windows do not overlap) in row-major order and
//   adds dy where argmax names this element: the same sum, in the same order, as the CPU's
//   scatter into a zeroed dx. The thread at the top-left element of each clipped window also
//   checks that the window's argmax lies inside it and raises *bad otherwise (the caller then
//   redoes the plane with maxpool2d_scatter, which adds dy at any in-plane argmax).
// - avg backward (gather): as max backward, adding dy / divisor of every covering output.
// - global average: one warp per plane (gap_forward_warp, small planes) or one block of 256
//   threads per plane (gap_forward_block), sums accumulated in double, combined with warp
//   shuffles (and shared memory across the block's warps) in a fixed order; backward broadcasts
//   dy / (H*W).
// - 2x2 windows with stride 2 and no padding tiling the plane exactly (H = 2P, W = 2Q, W a multiple
//   of 4): maxpool2d_fwd_22v / maxpool2d_bwd_22v give each thread two horizontally adjacent
//   outputs, so it reads (forward) or writes (backward) two rows of four inputs as 16-byte vectors
//   (two for double) and the outputs and argmaxes as pairs; same order, same ties, same sums.
// - 3x3 windows, stride 2, padding 1 with H = 2P, W = 2Q a multiple of 4: maxpool2d_fwd_32v gives
//   each thread two adjacent outputs, reading each of its three rows as one 16-byte vector plus
//   the column before it (6 loads for 18 window elements). Its backward, maxpool2d_bwd_32v, gives
//   each thread two adjacent inputs (2c, 2c + 1) of one row: an even row lies in one output row's
//   windows, an odd row in two; column 2c in window c only, 2c + 1 in windows c and c + 1, so a
//   thread reads at most four outputs and stores its pair as one vector.
// - global average backward with hw a multiple of 4: gap_backward4 writes four elements of one
//   plane per thread as a vector (one division per four elements).
// Indices: 64-bit element offsets; the per-element div/mod runs in 32-bit when the element count
// fits (`I` = unsigned), else in 64-bit. All loops are grid-stride. Launch with blockDim.x == 256.

#define PYDL_POOL_THREADS 256

template <typename T>
__device__ __forceinline__ bool pool_takes(T v, T m) {
  return (v > m) || ((v != v) && (m == m));
}

// ---- max forward ----------------------------------------------------------------------------------

template <typename T, int KR, int KS, bool IDX, typename I>
__device__ __forceinline__ void maxpool_fwd_body(T* __restrict__ y, int* __restrict__ am, const T* __restrict__ x,
                                                 long long total, int H, int W, int P, int Q, int R, int S, int sh,
                                                 int sw, int pt, int pl) {
  const long long hw = (long long)H * W;
  const long long step = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
    const I ii = (I)i;
    const I t = ii / (I)Q;
    const int q = (int)(ii - t * (I)Q);
    const I plane = t / (I)P;
    const int p = (int)(t - plane * (I)P);
    const int hs = p * sh - pt, ws = q * sw - pl;
    const int h0 = hs > 0 ? hs : 0, w0 = ws > 0 ? ws : 0;
    const T* xp = x + (long long)plane * hw;
    int mi = h0 * W + w0;
    T m = xp[mi];
    if constexpr (KR > 0 && KS > 0) {
#pragma unroll
      for (int r = 0; r < KR; ++r) {
        const int h = hs + r;
        if (h < 0 || h >= H) continue;
#pragma unroll
        for (int s = 0; s < KS; ++s) {
          const int w = ws + s;
          if (w < 0 || w >= W) continue;
          const int k = h * W + w;
          const T v = xp[k];
          if (pool_takes(v, m)) {
            m = v;
            mi = k;
          }
        }
      }
    } else {
      const int h1 = hs + R < H ? hs + R : H, w1 = ws + S < W ? ws + S : W;
#pragma unroll 1
      for (int h = h0; h < h1; ++h) {
        const T* row = xp + h * W;
        for (int w = w0; w < w1; ++w) {
          const T v = row[w];
          if (pool_takes(v, m)) {
            m = v;
            mi = h * W + w;
          }
        }
      }
    }
    y[i] = m;
    if (IDX) am[i] = mi;
  }
}

template <typename T, int KR, int KS, bool IDX>
__device__ __forceinline__ void maxpool_fwd(T* y, int* am, const T* x, long long total, int H, int W, int P, int Q,
                                            int R, int S, int sh, int sw, int pt, int pl) {
  if (total <= 0xffffffffLL)
    maxpool_fwd_body<T, KR, KS, IDX, unsigned>(y, am, x, total, H, W, P, Q, R, S, sh, sw, pt, pl);
  else
    maxpool_fwd_body<T, KR, KS, IDX, unsigned long long>(y, am, x, total, H, W, P, Q, R, S, sh, sw, pt, pl);
}

#define PYDL_POOL_GEOM_PARAMS long long total, int H, int W, int P, int Q, int R, int S, int sh, int sw, int pt, int pl
#define PYDL_POOL_GEOM_ARGS total, H, W, P, Q, R, S, sh, sw, pt, pl

#define PYDL_MAXPOOL_FWD(NAME, KR, KS, T, SUF)                                                               \
  extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)                                              \
      NAME##_argmax_##SUF(T* __restrict__ y, int* __restrict__ am, const T* __restrict__ x,                   \
                          PYDL_POOL_GEOM_PARAMS) {                                                             \
    maxpool_fwd<T, KR, KS, true>(y, am, x, PYDL_POOL_GEOM_ARGS);                                               \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)                                              \
      NAME##_##SUF(T* __restrict__ y, const T* __restrict__ x, PYDL_POOL_GEOM_PARAMS) {                        \
    maxpool_fwd<T, KR, KS, false>(y, nullptr, x, PYDL_POOL_GEOM_ARGS);                                         \
  }

PYDL_MAXPOOL_FWD(maxpool2d_fwd, 0, 0, float, f32)
PYDL_MAXPOOL_FWD(maxpool2d_fwd, 0, 0, double, f64)
PYDL_MAXPOOL_FWD(maxpool2d_fwd_k2, 2, 2, float, f32)
PYDL_MAXPOOL_FWD(maxpool2d_fwd_k2, 2, 2, double, f64)
PYDL_MAXPOOL_FWD(maxpool2d_fwd_k3, 3, 3, float, f32)
PYDL_MAXPOOL_FWD(maxpool2d_fwd_k3, 3, 3, double, f64)

// ---- 2x2 / stride 2 / no padding, W = 2Q a multiple of 4: two outputs per thread -------------------

template <typename T> struct PoolVec4;
template <> struct PoolVec4<float> {
  static __device__ __forceinline__ void load(const float* p, float (&r)[4]) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
  }
  static __device__ __forceinline__ void store(float* p, const float (&r)[4]) {
    *reinterpret_cast<float4*>(p) = make_float4(r[0], r[1], r[2], r[3]);
  }
  static __device__ __forceinline__ void load2(const float* p, float (&r)[2]) {
    const float2 v = *reinterpret_cast<const float2*>(p);
    r[0] = v.x; r[1] = v.y;
  }
  static __device__ __forceinline__ void store2(float* p, const float (&r)[2]) {
    *reinterpret_cast<float2*>(p) = make_float2(r[0], r[1]);
  }
};
template <> struct PoolVec4<double> {
  static __device__ __forceinline__ void load(const double* p, double (&r)[4]) {
    const double2 a = *reinterpret_cast<const double2*>(p), b = *reinterpret_cast<const double2*>(p + 2);
    r[0] = a.x; r[1] = a.y; r[2] = b.x; r[3] = b.y;
  }
  static __device__ __forceinline__ void store(double* p, const double (&r)[4]) {
    *reinterpret_cast<double2*>(p) = make_double2(r[0], r[1]);
    *reinterpret_cast<double2*>(p + 2) = make_double2(r[2], r[3]);
  }
  static __device__ __forceinline__ void load2(const double* p, double (&r)[2]) {
    const double2 v = *reinterpret_cast<const double2*>(p);
    r[0] = v.x; r[1] = v.y;
  }
  static __device__ __forceinline__ void store2(double* p, const double (&r)[2]) {
    *reinterpret_cast<double2*>(p) = make_double2(r[0], r[1]);
  }
};

// Outputs o, o + 1 (o even) and, with IDX, their argmaxes, each pair as one vector store.
template <typename T, bool IDX>
__device__ __forceinline__ void pool_store_pair(T* __restrict__ y, int* __restrict__ am, long long o,
                                                const T (&out)[2], const int (&idx)[2]) {
  PoolVec4<T>::store2(y + o, out);
  if (IDX) *reinterpret_cast<int2*>(am + o) = make_int2(idx[0], idx[1]);
}

// pairs = planes * P * Q / 2; output pair j holds outputs 2j, 2j + 1 (same row: Q is even).
template <typename T, bool IDX>
__device__ __forceinline__ void maxpool_fwd_22v_body(T* __restrict__ y, int* __restrict__ am,
                                                     const T* __restrict__ x, long long pairs, int P, int Q) {
  const int W = 2 * Q, half = Q / 2;
  const long long step = (long long)gridDim.x * blockDim.x;
  for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < pairs; j += step) {
    const long long t = j / half;                  // plane * P + p
    const int q = 2 * (int)(j - t * half);
    const int p = (int)(t % P);
    const long long o = 2 * j;
    const T* row0 = x + (2 * t) * (long long)W + 2 * q;  // (plane * 2P + 2p) * W
    T a[4], b[4];
    PoolVec4<T>::load(row0, a);
    PoolVec4<T>::load(row0 + W, b);
    T out[2];
    int idx[2];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int k0 = (2 * p) * W + 2 * q + 2 * u;
      T m = a[2 * u];
      int mi = k0;
      if (pool_takes(a[2 * u + 1], m)) { m = a[2 * u + 1]; mi = k0 + 1; }
      if (pool_takes(b[2 * u], m)) { m = b[2 * u]; mi = k0 + W; }
      if (pool_takes(b[2 * u + 1], m)) { m = b[2 * u + 1]; mi = k0 + W + 1; }
      out[u] = m;
      idx[u] = mi;
    }
    pool_store_pair<T, IDX>(y, am, o, out, idx);
  }
}

// dx of the same geometry: each input lies in exactly one window, so dx = 0 + dy of its window where
// the argmax names it, else 0 (the CPU's scatter into zeros). An argmax outside its window sets *bad.
template <typename T>
__device__ __forceinline__ void maxpool_bwd_22v_body(T* __restrict__ dx, const T* __restrict__ dy,
                                                     const int* __restrict__ am, int* __restrict__ bad,
                                                     long long pairs, int P, int Q) {
  const int W = 2 * Q, half = Q / 2;
  const long long step = (long long)gridDim.x * blockDim.x;
  for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < pairs; j += step) {
    const long long t = j / half;
    const int q = 2 * (int)(j - t * half);
    const int p = (int)(t % P);
    const long long o = 2 * j;
    T g[2];
    PoolVec4<T>::load2(dy + o, g);
    const int2 ai = *reinterpret_cast<const int2*>(am + o);
    const int idx[2] = {ai.x, ai.y};
    T r0[4], r1[4];
    bool wrong = false;
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      const int k0 = (2 * p) * W + 2 * q + 2 * u;
      const int v = idx[u];
      const T z = T(0), d = T(0) + g[u];
      r0[2 * u] = v == k0 ? d : z;
      r0[2 * u + 1] = v == k0 + 1 ? d : z;
      r1[2 * u] = v == k0 + W ? d : z;
      r1[2 * u + 1] = v == k0 + W + 1 ? d : z;
      if (v != k0 && v != k0 + 1 && v != k0 + W && v != k0 + W + 1) wrong = true;
    }
    T* row0 = dx + (2 * t) * (long long)W + 2 * q;
    PoolVec4<T>::store(row0, r0);
    PoolVec4<T>::store(row0 + W, r1);
    if (wrong) *bad = 1;
  }
}

// Entries of the two-outputs-per-thread geometries (GEO = 22v, 32v): forward with and without the
// argmax, and the backward gather.
#define PYDL_MAXPOOL_PAIRS(GEO, T, SUF)                                                                       \
  extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)                                              \
      maxpool2d_fwd_##GEO##_argmax_##SUF(T* __restrict__ y, int* __restrict__ am, const T* __restrict__ x,     \
                                         long long pairs, int P, int Q) {                                      \
    maxpool_fwd_##GEO##_body<T, true>(y, am, x, pairs, P, Q);                                                  \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)                                              \
      maxpool2d_fwd_##GEO##_##SUF(T* __restrict__ y, const T* __restrict__ x, long long pairs, int P, int Q) { \
    maxpool_fwd_##GEO##_body<T, false>(y, nullptr, x, pairs, P, Q);                                            \
  }                                                                                                            \
  extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)                                              \
      maxpool2d_bwd_##GEO##_##SUF(T* __restrict__ dx, const T* __restrict__ dy, const int* __restrict__ am,    \
                                  int* __restrict__ bad, long long pairs, int P, int Q) {                      \
    maxpool_bwd_##GEO##_body<T>(dx, dy, am, bad, pairs, P, Q);                                                 \
  }

PYDL_MAXPOOL_PAIRS(22v, float, f32)
PYDL_MAXPOOL_PAIRS(22v, double, f64)

// ---- 3x3 / stride 2 / padding 1, H = 2P, W = 2Q a multiple of 4: two outputs per thread ------------
// Output pair (p, q), (p, q + 1) covers rows 2p-1 .. 2p+1 and columns 2q-1 .. 2q+3 (2q a multiple of
// 4): per row one vector load of columns 2q .. 2q+3 and a scalar of column 2q-1 (none at q = 0, none
// for row -1 at p = 0). Each window is visited row by row from its first element inside the plane,
// as maxpool_fwd_body does, so the maximum, ties and NaN give the same result and argmax.
template <typename T, bool IDX>
__device__ __forceinline__ void maxpool_fwd_32v_body(T* __restrict__ y, int* __restrict__ am,
                                                     const T* __restrict__ x, long long pairs, int P, int Q) {
  const int W = 2 * Q, half = Q / 2;
  const long long step = (long long)gridDim.x * blockDim.x;
  for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < pairs; j += step) {
    const long long t = j / half;  // plane * P + p
    const int q = 2 * (int)(j - t * half);
    const long long plane = t / P;
    const int p = (int)(t - plane * P);
    const T* xp = x + plane * (2LL * P) * W;
    const int c0 = 2 * q;          // columns c0 - 1 .. c0 + 3
    T v[3][5];                     // v[r][s]: row 2p - 1 + r, column c0 - 1 + s
    bool row_ok[3];
#pragma unroll
    for (int r = 0; r < 3; ++r) {
      const int h = 2 * p - 1 + r;
      row_ok[r] = h >= 0;
      const int hh = h >= 0 ? h : 0;  // row -1 is never read: its loads go to row 0, then ignored
      T a[4];
      PoolVec4<T>::load(xp + (long long)hh * W + c0, a);
      v[r][0] = c0 > 0 ? xp[(long long)hh * W + c0 - 1] : a[0];
#pragma unroll
      for (int s = 0; s < 4; ++s) v[r][s + 1] = a[s];
    }
    T out[2];
    int idx[2];
#pragma unroll
    for (int u = 0; u < 2; ++u) {
      // window u: columns c0 - 1 + 2u .. c0 + 1 + 2u, i.e. v[.][2u .. 2u + 2]
      const bool first_col_ok = (c0 + 2 * u - 1) >= 0;
      T m = T(0);
      int mi = -1;
#pragma unroll
      for (int r = 0; r < 3; ++r) {
        if (!row_ok[r]) continue;
        const int h = 2 * p - 1 + r;
#pragma unroll
        for (int s = 0; s < 3; ++s) {
          if (s == 0 && !first_col_ok) continue;
          const T val = v[r][2 * u + s];
          const int k = h * W + c0 - 1 + 2 * u + s;
          if (mi < 0 || pool_takes(val, m)) {
            m = val;
            mi = k;
          }
        }
      }
      out[u] = m;
      idx[u] = mi;
    }
    const long long o = 2 * j;
    pool_store_pair<T, IDX>(y, am, o, out, idx);
  }
}

// dx of the 3x3 / stride-2 / padding-1 geometry above: thread (h, c) writes dx[h][2c], dx[h][2c + 1]
// as sums over the outputs covering them, in the outputs' row-major order (the CPU scatter's order).
// The thread at row 2p, pair q checks output (p, q)'s argmax lies in its clipped window.
template <typename T>
__device__ __forceinline__ void maxpool_bwd_32v_body(T* __restrict__ dx, const T* __restrict__ dy,
                                                     const int* __restrict__ am, int* __restrict__ bad,
                                                     long long pairs, int P, int Q) {
  const int W = 2 * Q, H = 2 * P;
  const long long step = (long long)gridDim.x * blockDim.x;
  for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < pairs; j += step) {
    const long long t = j / Q;     // plane * H + h
    const int c = (int)(j - t * Q);
    const long long plane = t / H;
    const int h = (int)(t - plane * H);
    const int p_lo = h >> 1;       // even h: output row h / 2; odd h: rows (h - 1) / 2 and (h + 1) / 2
    const int p_hi = (h & 1) && p_lo + 1 < P ? p_lo + 1 : p_lo;
    const long long base = plane * (long long)P * Q;
    const int e0 = h * W + 2 * c, e1 = e0 + 1;
    T acc0 = T(0), acc1 = T(0);
    bool wrong = false;
    for (int p = p_lo; p <= p_hi; ++p) {
      const long long o = base + (long long)p * Q + c;
      const int a0 = am[o];
      const T g0 = dy[o];
      if (a0 == e0) acc0 += g0;
      if (a0 == e1) acc1 += g0;
      if (c + 1 < Q) {
        const int a1 = am[o + 1];
        if (a1 == e1) acc1 += dy[o + 1];
      }
      if (p == p_lo && !(h & 1)) {  // owner of output (p, c): its window rows 2p-1..2p+1, cols 2c-1..2c+1
        const int vh = a0 / W, vw = a0 - vh * W;
        if (a0 < 0 || vh < h - 1 || vh > h + 1 || vh >= H || vw < 2 * c - 1 || vw > 2 * c + 1) wrong = true;
      }
    }
    const T r[2] = {acc0, acc1};
    PoolVec4<T>::store2(dx + 2 * j, r);
    if (wrong) *bad = 1;
  }
}

PYDL_MAXPOOL_PAIRS(32v, float, f32)
PYDL_MAXPOOL_PAIRS(32v, double, f64)

// ---- avg forward ----------------------------------------------------------------------------------

template <typename T, typename I>
__device__ __forceinline__ void avgpool_fwd_body(T* __restrict__ y, const T* __restrict__ x, PYDL_POOL_GEOM_PARAMS,
                                                 int count_include_pad) {
  const long long hw = (long long)H * W;
  const long long step = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
    const I ii = (I)i;
    const I t = ii / (I)Q;
    const int q = (int)(ii - t * (I)Q);
    const I plane = t / (I)P;
    const int p = (int)(t - plane * (I)P);
    const int hs = p * sh - pt, ws = q * sw - pl;
    const int h0 = hs > 0 ? hs : 0, w0 = ws > 0 ? ws : 0;
    const int h1 = hs + R < H ? hs + R : H, w1 = ws + S < W ? ws + S : W;
    const T* xp = x + (long long)plane * hw;
    T acc = T(0);
    for (int h = h0; h < h1; ++h)
      for (int w = w0; w < w1; ++w) acc += xp[h * W + w];
    const T div = count_include_pad ? (T)((long long)R * S) : (T)((h1 - h0) * (w1 - w0));
    y[i] = acc / div;
  }
}

template <typename T>
__device__ __forceinline__ void avgpool_fwd(T* y, const T* x, PYDL_POOL_GEOM_PARAMS, int cip) {
  if (total <= 0xffffffffLL) avgpool_fwd_body<T, unsigned>(y, x, PYDL_POOL_GEOM_ARGS, cip);
  else avgpool_fwd_body<T, unsigned long long>(y, x, PYDL_POOL_GEOM_ARGS, cip);
}

extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    avgpool2d_fwd_f32(float* __restrict__ y, const float* __restrict__ x, PYDL_POOL_GEOM_PARAMS, int cip) {
  avgpool_fwd<float>(y, x, PYDL_POOL_GEOM_ARGS, cip);
}
extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    avgpool2d_fwd_f64(double* __restrict__ y, const double* __restrict__ x, PYDL_POOL_GEOM_PARAMS, int cip) {
  avgpool_fwd<double>(y, x, PYDL_POOL_GEOM_ARGS, cip);
}

// ---- backward gathers -----------------------------------------------------------------------------

// The outputs whose window covers input row h: [lo, hi] (empty when lo > hi).
__device__ __forceinline__ void pool_cover(int h, int pad, int K, int st, int P, int& lo, int& hi) {
  const int a = h + pad - K + 1;
  lo = a <= 0 ? 0 : (a + st - 1) / st;
  const int b = (h + pad) / st;
  hi = b < P - 1 ? b : P - 1;
}

// Input element i (here: total = planes*H*W elements). The input grid is walked with one thread
// per element; for avg (MAX == false) `am` and `bad` are unused.
template <typename T, bool MAX, typename I>
__device__ __forceinline__ void pool_bwd_body(T* __restrict__ dx, const T* __restrict__ dy,
                                              const int* __restrict__ am, int* __restrict__ bad,
                                              PYDL_POOL_GEOM_PARAMS, int cip) {
  const long long pq = (long long)P * Q;
  const long long step = (long long)gridDim.x * blockDim.x;
  const T area = (T)((long long)R * S);
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
    const I ii = (I)i;
    const I t = ii / (I)W;
    const int w = (int)(ii - t * (I)W);
    const I plane = t / (I)H;
    const int h = (int)(t - plane * (I)H);
    int plo, phi, qlo, qhi;
    pool_cover(h, pt, R, sh, P, plo, phi);
    pool_cover(w, pl, S, sw, Q, qlo, qhi);
    const T* g = dy + (long long)plane * pq;
    const int* a = MAX ? am + (long long)plane * pq : nullptr;
    const int self = h * W + w;
    T acc = T(0);
    bool wrong = false;
    for (int p = plo; p <= phi; ++p) {
      const int hs = p * sh - pt;
      const int h0 = hs > 0 ? hs : 0;
      for (int q = qlo; q <= qhi; ++q) {
        const long long j = (long long)p * Q + q;
        const int ws = q * sw - pl;
        const int w0 = ws > 0 ? ws : 0;
        if (MAX) {
          const int v = a[j];
          if (v == self) acc += g[j];
          if (h == h0 && w == w0) {  // this thread checks output (p, q)'s argmax
            const int h1 = hs + R < H ? hs + R : H, w1 = ws + S < W ? ws + S : W;
            if (v < h0 * W || v >= h1 * W) {
              wrong = true;
            } else {
              const int vh = v / W, vw = v - vh * W;
              if (vh < h0 || vh >= h1 || vw < w0 || vw >= w1) wrong = true;
            }
          }
        } else {
          T div = area;
          if (!cip) {
            const int h1 = hs + R < H ? hs + R : H, w1 = ws + S < W ? ws + S : W;
            div = (T)((h1 - h0) * (w1 - w0));
          }
          acc += g[j] / div;
        }
      }
    }
    dx[i] = acc;
    if (MAX && wrong) *bad = 1;
  }
}

template <typename T, bool MAX>
__device__ __forceinline__ void pool_bwd(T* dx, const T* dy, const int* am, int* bad, PYDL_POOL_GEOM_PARAMS, int cip) {
  if (total <= 0xffffffffLL) pool_bwd_body<T, MAX, unsigned>(dx, dy, am, bad, PYDL_POOL_GEOM_ARGS, cip);
  else pool_bwd_body<T, MAX, unsigned long long>(dx, dy, am, bad, PYDL_POOL_GEOM_ARGS, cip);
}

extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    maxpool2d_bwd_f32(float* __restrict__ dx, const float* __restrict__ dy, const int* __restrict__ am,
                      int* __restrict__ bad, PYDL_POOL_GEOM_PARAMS) {
  pool_bwd<float, true>(dx, dy, am, bad, PYDL_POOL_GEOM_ARGS, 0);
}
extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    maxpool2d_bwd_f64(double* __restrict__ dx, const double* __restrict__ dy, const int* __restrict__ am,
                      int* __restrict__ bad, PYDL_POOL_GEOM_PARAMS) {
  pool_bwd<double, true>(dx, dy, am, bad, PYDL_POOL_GEOM_ARGS, 0);
}
extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    avgpool2d_bwd_f32(float* __restrict__ dx, const float* __restrict__ dy, PYDL_POOL_GEOM_PARAMS, int cip) {
  pool_bwd<float, false>(dx, dy, nullptr, nullptr, PYDL_POOL_GEOM_ARGS, cip);
}
extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    avgpool2d_bwd_f64(double* __restrict__ dx, const double* __restrict__ dy, PYDL_POOL_GEOM_PARAMS, int cip) {
  pool_bwd<double, false>(dx, dy, nullptr, nullptr, PYDL_POOL_GEOM_ARGS, cip);
}

// ---- max backward by scatter (argmax not known to lie in its window) ------------------------------
// dx must be zeroed. One thread per output j (total = planes*out): dx[plane, am[j]] += dy[j] with
// atomicAdd; an index outside [0, hw) is not written and sets *bad. The sums are those of the
// CPU wherever at most two outputs name one input (addition is commutative); with three or more
// the order, hence the last bits, may vary between runs.
template <typename T>
__device__ __forceinline__ void maxpool_scatter_body(T* dx, const T* __restrict__ dy, const int* __restrict__ am,
                                                     int* __restrict__ bad, long long total, long long out,
                                                     long long hw) {
  const long long step = (long long)gridDim.x * blockDim.x;
  for (long long j = (long long)blockIdx.x * blockDim.x + threadIdx.x; j < total; j += step) {
    const long long plane = j / out;
    const int v = am[j];
    if (v < 0 || (long long)v >= hw) {
      *bad = 1;
    } else {
      atomicAdd(dx + plane * hw + v, dy[j]);
    }
  }
}

extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    maxpool2d_scatter_f32(float* dx, const float* __restrict__ dy, const int* __restrict__ am, int* __restrict__ bad,
                          long long total, long long out, long long hw) {
  maxpool_scatter_body<float>(dx, dy, am, bad, total, out, hw);
}
extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    maxpool2d_scatter_f64(double* dx, const double* __restrict__ dy, const int* __restrict__ am,
                          int* __restrict__ bad, long long total, long long out, long long hw) {
  maxpool_scatter_body<double>(dx, dy, am, bad, total, out, hw);
}

// ---- global average -------------------------------------------------------------------------------

__device__ __forceinline__ double pool_warp_sum(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;  // lane 0 holds the sum
}

// One warp per plane; grid-stride over planes by warps (every lane of a warp runs the same trips).
template <typename T>
__device__ __forceinline__ void gap_warp_body(T* __restrict__ y, const T* __restrict__ x, long long planes,
                                              long long hw) {
  const int lane = threadIdx.x & 31;
  const long long warps = (long long)gridDim.x * (blockDim.x >> 5);
  for (long long c = (long long)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); c < planes; c += warps) {
    const T* xp = x + c * hw;
    double s = 0.0;
    for (long long j = lane; j < hw; j += 32) s += (double)xp[j];
    s = pool_warp_sum(s);
    if (lane == 0) y[c] = (T)(s / (double)hw);
  }
}

// One block of PYDL_POOL_THREADS threads per plane; grid-stride over planes by blocks.
template <typename T>
__device__ __forceinline__ void gap_block_body(T* __restrict__ y, const T* __restrict__ x, long long planes,
                                               long long hw) {
  __shared__ double part[PYDL_POOL_THREADS / 32];
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (long long c = blockIdx.x; c < planes; c += gridDim.x) {
    const T* xp = x + c * hw;
    double s = 0.0;
    for (long long j = threadIdx.x; j < hw; j += PYDL_POOL_THREADS) s += (double)xp[j];
    s = pool_warp_sum(s);
    if (lane == 0) part[warp] = s;
    __syncthreads();
    if (warp == 0) {
      double v = lane < PYDL_POOL_THREADS / 32 ? part[lane] : 0.0;
      v = pool_warp_sum(v);
      if (lane == 0) y[c] = (T)(v / (double)hw);
    }
    __syncthreads();  // part is reused by the next plane
  }
}

extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    gap_forward_warp_f32(float* __restrict__ y, const float* __restrict__ x, long long planes, long long hw) {
  gap_warp_body<float>(y, x, planes, hw);
}
extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    gap_forward_warp_f64(double* __restrict__ y, const double* __restrict__ x, long long planes, long long hw) {
  gap_warp_body<double>(y, x, planes, hw);
}
extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    gap_forward_block_f32(float* __restrict__ y, const float* __restrict__ x, long long planes, long long hw) {
  gap_block_body<float>(y, x, planes, hw);
}
extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    gap_forward_block_f64(double* __restrict__ y, const double* __restrict__ x, long long planes, long long hw) {
  gap_block_body<double>(y, x, planes, hw);
}

// dx[c, j] = dy[c] / hw over total = planes*hw elements.
template <typename T>
__device__ __forceinline__ void gap_backward_body(T* __restrict__ dx, const T* __restrict__ dy, long long total,
                                                  long long hw) {
  const T n = (T)hw;
  const long long step = (long long)gridDim.x * blockDim.x;
  if (total <= 0xffffffffLL) {
    const unsigned uhw = (unsigned)hw;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step)
      dx[i] = dy[(unsigned)i / uhw] / n;
  } else {
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) dx[i] = dy[i / hw] / n;
  }
}

// hw a multiple of 4: quad i covers elements 4i..4i+3 of one plane.
template <typename T>
__device__ __forceinline__ void gap_backward4_body(T* __restrict__ dx, const T* __restrict__ dy, long long quads,
                                                   long long hw) {
  const T n = (T)hw;
  const long long qpp = hw / 4;  // quads per plane
  const long long step = (long long)gridDim.x * blockDim.x;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < quads; i += step) {
    const long long plane = quads <= 0xffffffffLL ? (long long)((unsigned)i / (unsigned)qpp) : i / qpp;
    const T v = dy[plane] / n;
    const T r[4] = {v, v, v, v};
    PoolVec4<T>::store(dx + 4 * i, r);
  }
}

extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    gap_backward4_f32(float* __restrict__ dx, const float* __restrict__ dy, long long quads, long long hw) {
  gap_backward4_body<float>(dx, dy, quads, hw);
}
extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    gap_backward4_f64(double* __restrict__ dx, const double* __restrict__ dy, long long quads, long long hw) {
  gap_backward4_body<double>(dx, dy, quads, hw);
}

extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    gap_backward_f32(float* __restrict__ dx, const float* __restrict__ dy, long long total, long long hw) {
  gap_backward_body<float>(dx, dy, total, hw);
}
extern "C" __global__ void __launch_bounds__(PYDL_POOL_THREADS)
    gap_backward_f64(double* __restrict__ dx, const double* __restrict__ dy, long long total, long long hw) {
  gap_backward_body<double>(dx, dy, total, hw);
}
