// Winograd convolution F(MO x MO, 3x3) for 3x3 filters, stride 1, dilation 1 (MO = 2 or 4; the
// transform size is A = MO + 2). The output is cut into TH x TW tiles of MO x MO per image
// (TH = ceil(P / MO), TW = ceil(Q / MO)); tile t = (n * TH + th) * TW + tw, t < T = N * TH * TW, and
// every tile-indexed array has TP >= T columns (TP a multiple of 4, so rows stay 16-byte aligned for
// the batched GEMM's vector loads; columns T..TP-1 are written as zeros).
//
//   wino_filter_f<MO>: U[xi][k][c] = (G g G^T)[a][b], xi = a * A + b, g = w[k][c] (3x3); in double.
//   wino_input_f<MO>:  V[xi][c][t] = (B^T d B)[a][b], d the A x A input patch at
//                      (th * MO - pad_top, tw * MO - pad_left), zero outside the image.
//   (the host then runs M[xi] = U[xi] @ V[xi], one batched SGEMM of K x C by C x TP products)
//   wino_output_f<MO>: y[n][k][th*MO + i][tw*MO + j] = act(b[k] + (A^T M[.][k][t] A)[i][j]), the
//                      positions inside P x Q only; rows of MO outputs stored as one vector when
//                      `vec` (Q a multiple of MO, y 16-byte aligned).
//
// Thread mapping: one thread per (k, c) filter, per (c, t) input tile, per (k, t) output tile, t the
// fastest index, so every store of V and every load of M by a warp covers consecutive addresses.
// The matrices are the usual ones (interpolation points 0, +-1 for F(2x2,3x3); 0, +-1, +-2 for
// F(4x4,3x3)), the same as the CPU kernels' (csrc/winograd_impl.h). Zero coefficients are skipped at
// compile time (the loops are unrolled over constant matrices), so no 0 * inf = NaN appears where
// the direct sum has none.

#define WINO_THREADS 256

template <int MO> struct WinoMat;

template <> struct WinoMat<2> {
    static constexpr int A = 4;
    static __device__ __forceinline__ double bt(int a, int i) {
        const double m[4][4] = {{1, 0, -1, 0}, {0, 1, 1, 0}, {0, -1, 1, 0}, {0, 1, 0, -1}};
        return m[a][i];
    }
    static __device__ __forceinline__ double g(int a, int r) {
        const double m[4][3] = {{1, 0, 0}, {0.5, 0.5, 0.5}, {0.5, -0.5, 0.5}, {0, 0, 1}};
        return m[a][r];
    }
    static __device__ __forceinline__ double at(int i, int a) {
        const double m[2][4] = {{1, 1, 1, 0}, {0, 1, -1, -1}};
        return m[i][a];
    }
};

template <> struct WinoMat<4> {
    static constexpr int A = 6;
    static __device__ __forceinline__ double bt(int a, int i) {
        const double m[6][6] = {{4, 0, -5, 0, 1, 0},  {0, -4, -4, 1, 1, 0}, {0, 4, -4, -1, 1, 0},
                                {0, -2, -1, 2, 1, 0}, {0, 2, -1, -2, 1, 0}, {0, 4, 0, -5, 0, 1}};
        return m[a][i];
    }
    static __device__ __forceinline__ double g(int a, int r) {
        const double m[6][3] = {{1.0 / 4, 0, 0},
                                {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                {0, 0, 1}};
        return m[a][r];
    }
    static __device__ __forceinline__ double at(int i, int a) {
        const double m[4][6] = {{1, 1, 1, 1, 1, 0}, {0, 1, -1, 2, -2, 0}, {0, 1, 1, 4, 4, 0}, {0, 1, -1, 8, -8, 1}};
        return m[i][a];
    }
};

// U (A*A, K, C) from w (K, C, 3, 3).
template <typename T, int MO>
__device__ __forceinline__ void wino_filter_body(const T* __restrict__ w, T* __restrict__ U, long long kc) {
    typedef WinoMat<MO> Mt;
    constexpr int A = Mt::A;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < kc; idx += step) {
        const T* src = w + idx * 9;
        double g[3][3];
#pragma unroll
        for (int r = 0; r < 3; ++r)
#pragma unroll
            for (int s = 0; s < 3; ++s) g[r][s] = (double)src[r * 3 + s];
        double t[A][3];  // G g
#pragma unroll
        for (int a = 0; a < A; ++a)
#pragma unroll
            for (int s = 0; s < 3; ++s) {
                double acc = 0.0;
#pragma unroll
                for (int r = 0; r < 3; ++r)
                    if (Mt::g(a, r) != 0.0) acc += Mt::g(a, r) * g[r][s];
                t[a][s] = acc;
            }
#pragma unroll
        for (int a = 0; a < A; ++a)
#pragma unroll
            for (int b = 0; b < A; ++b) {
                double acc = 0.0;
#pragma unroll
                for (int s = 0; s < 3; ++s)
                    if (Mt::g(b, s) != 0.0) acc += t[a][s] * Mt::g(b, s);
                U[(long long)(a * A + b) * kc + idx] = (T)acc;
            }
    }
}

// V (A*A, C, TP) from x (N, C, H, W).
template <typename T, int MO>
__device__ __forceinline__ void wino_input_body(const T* __restrict__ x, T* __restrict__ V, int C, int H, int W,
                                                int TH, int TW, int pt, int pl, long long tiles, long long tp) {
    typedef WinoMat<MO> Mt;
    constexpr int A = Mt::A;
    const long long plane = (long long)C * tp;  // elements of one V[xi]
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < plane; idx += step) {
        const long long c = idx / tp;
        const long long t = idx - c * tp;
        T* dst = V + idx;
        if (t >= tiles) {
#pragma unroll
            for (int xi = 0; xi < A * A; ++xi) dst[xi * plane] = T(0);
            continue;
        }
        const int tw = (int)(t % TW);
        const long long rest = t / TW;
        const int th = (int)(rest % TH);
        const long long n = rest / TH;
        const T* src = x + (n * C + c) * (long long)H * W;
        const int h0 = th * MO - pt, w0 = tw * MO - pl;
        T d[A][A];
#pragma unroll
        for (int i = 0; i < A; ++i) {
            const int h = h0 + i;
            const bool row_in = h >= 0 && h < H;
#pragma unroll
            for (int j = 0; j < A; ++j) {
                const int wc = w0 + j;
                d[i][j] = (row_in && wc >= 0 && wc < W) ? src[(long long)h * W + wc] : T(0);
            }
        }
        T u[A][A];  // B^T d
#pragma unroll
        for (int a = 0; a < A; ++a)
#pragma unroll
            for (int j = 0; j < A; ++j) {
                T acc = T(0);
#pragma unroll
                for (int i = 0; i < A; ++i)
                    if (Mt::bt(a, i) != 0.0) acc += (T)Mt::bt(a, i) * d[i][j];
                u[a][j] = acc;
            }
#pragma unroll
        for (int a = 0; a < A; ++a)
#pragma unroll
            for (int b = 0; b < A; ++b) {
                T acc = T(0);
#pragma unroll
                for (int j = 0; j < A; ++j)
                    if (Mt::bt(b, j) != 0.0) acc += u[a][j] * (T)Mt::bt(b, j);
                dst[(a * A + b) * plane] = acc;
            }
    }
}

template <typename T, int MO> struct WinoRow;
template <> struct WinoRow<float, 4> {
    static __device__ __forceinline__ void store(float* p, const float (&v)[4]) {
        *reinterpret_cast<float4*>(p) = make_float4(v[0], v[1], v[2], v[3]);
    }
};
template <> struct WinoRow<float, 2> {
    static __device__ __forceinline__ void store(float* p, const float (&v)[2]) {
        *reinterpret_cast<float2*>(p) = make_float2(v[0], v[1]);
    }
};
template <> struct WinoRow<double, 4> {
    static __device__ __forceinline__ void store(double* p, const double (&v)[4]) {
        *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]);
        *reinterpret_cast<double2*>(p + 2) = make_double2(v[2], v[3]);
    }
};
template <> struct WinoRow<double, 2> {
    static __device__ __forceinline__ void store(double* p, const double (&v)[2]) {
        *reinterpret_cast<double2*>(p) = make_double2(v[0], v[1]);
    }
};

// y (N, K, P, Q) from M (A*A, K, TP).
template <typename T, int MO>
__device__ __forceinline__ void wino_output_body(const T* __restrict__ M, const T* __restrict__ bias,
                                                 T* __restrict__ y, int K, int P, int Q, int TH, int TW,
                                                 long long tiles, long long tp, int has_bias, int act, int vec) {
    typedef WinoMat<MO> Mt;
    constexpr int A = Mt::A;
    const long long plane = (long long)K * tp;
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long idx = (long long)blockIdx.x * blockDim.x + threadIdx.x; idx < plane; idx += step) {
        const long long k = idx / tp;
        const long long t = idx - k * tp;
        if (t >= tiles) continue;
        const int tw = (int)(t % TW);
        const long long rest = t / TW;
        const int th = (int)(rest % TH);
        const long long n = rest / TH;
        T m[A][A];
#pragma unroll
        for (int a = 0; a < A; ++a)
#pragma unroll
            for (int b = 0; b < A; ++b) m[a][b] = M[(a * A + b) * plane + idx];
        T u[MO][A];  // A^T m
#pragma unroll
        for (int i = 0; i < MO; ++i)
#pragma unroll
            for (int b = 0; b < A; ++b) {
                T acc = T(0);
#pragma unroll
                for (int a = 0; a < A; ++a)
                    if (Mt::at(i, a) != 0.0) acc += (T)Mt::at(i, a) * m[a][b];
                u[i][b] = acc;
            }
        const T b0 = has_bias ? bias[k] : T(0);
        const int p0 = th * MO, q0 = tw * MO;
        T* dst = y + ((n * K + k) * (long long)P + p0) * Q + q0;
#pragma unroll
        for (int i = 0; i < MO; ++i) {
            if (p0 + i >= P) break;
            T row[MO];
#pragma unroll
            for (int j = 0; j < MO; ++j) {
                T acc = b0;
#pragma unroll
                for (int b = 0; b < A; ++b)
                    if (Mt::at(j, b) != 0.0) acc += u[i][b] * (T)Mt::at(j, b);
                row[j] = (act == 1 && !(acc > T(0))) ? T(0) : acc;  // relu as conv.cu's epilogue
            }
            T* r = dst + (long long)i * Q;
            if (vec && q0 + MO <= Q) {
                WinoRow<T, MO>::store(r, row);
            } else {
#pragma unroll
                for (int j = 0; j < MO; ++j)
                    if (q0 + j < Q) r[j] = row[j];
            }
        }
    }
}

#define WINO_ENTRIES(MO, T, SFX)                                                                             \
    extern "C" __global__ void __launch_bounds__(WINO_THREADS)                                              \
    wino_filter_f##MO##_##SFX(const T* __restrict__ w, T* __restrict__ U, long long kc) {                    \
        wino_filter_body<T, MO>(w, U, kc);                                                                   \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(WINO_THREADS)                                              \
    wino_input_f##MO##_##SFX(const T* __restrict__ x, T* __restrict__ V, int C, int H, int W, int TH, int TW, \
                             int pt, int pl, long long tiles, long long tp) {                                \
        wino_input_body<T, MO>(x, V, C, H, W, TH, TW, pt, pl, tiles, tp);                                    \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(WINO_THREADS)                                              \
    wino_output_f##MO##_##SFX(const T* __restrict__ M, const T* __restrict__ bias, T* __restrict__ y, int K,   \
                              int P, int Q, int TH, int TW, long long tiles, long long tp, int has_bias,     \
                              int act, int vec) {                                                            \
        wino_output_body<T, MO>(M, bias, y, K, P, Q, TH, TW, tiles, tp, has_bias, act, vec);                 \
    }

WINO_ENTRIES(2, float, f32)
WINO_ENTRIES(4, float, f32)
WINO_ENTRIES(2, double, f64)
WINO_ENTRIES(4, double, f64)
