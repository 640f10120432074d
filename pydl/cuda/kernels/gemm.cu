// GEMM: C (m, n) = alpha * op(A) @ op(B) + beta * C, every array row-major and C-contiguous.
// A is stored (m, k), or (k, m) when TA; B is stored (k, n), or (n, k) when TB; C has leading
// dimension n. One block computes a BM x BN tile of C, stepping through k in BK slices:
//   * each slice of op(A) and op(B) is staged in shared memory k-major (As[k][m], Bs[k][n]), so the
//     inner product reads both operands as 4-wide vectors, whichever way they are stored in memory;
//   * each thread owns a TM x TN register micro-tile, split into 4-wide halves spaced BM/2 (BN/2)
//     apart so the vector reads of a warp hit distinct banks or broadcast;
//   * shared memory is double-buffered: the next slice is fetched into registers while the current
//     one is multiplied, then written to the other buffer (one __syncthreads per slice);
//   * global loads are 16-byte vectors in the VEC variants (the host checks the pointers and the
//     leading dimensions) and bounds-checked scalars otherwise and on every edge: out-of-range
//     elements are read as zero, out-of-range outputs are not written;
//   * beta == 0 never reads C. Blocks are ordered in groups of GROUP_M tile rows so that blocks
//     running together share slices of A and B in L2.
// Entry points: gemm_<tile>_<ta><tb>_<v|x>_<f32|f64>, tile l = 128x128 (float), m = 128x64 (float),
// s = 64x64 (float and double); v = vector loads, x = scalar loads. gemm_scale: C = beta * C.
// Batched (C[z] = A[z] @ B[z] for z < gridDim.y, no transposes, alpha 1, beta 0; operand z at
// A + z * sa, B + z * sb, C + z * sc, leading dimensions k and n): gemmb_<tile>_<v|x>_<f32|f64>,
// tiles l, m, s and h = 64x128 (4x8 per thread, float) for products with 64 rows or fewer.

#define GEMM_THREADS 256
#define GEMM_GROUP_M 8

template <typename T, int V> struct GemmVec;

template <> struct GemmVec<float, 4> {
    static __device__ __forceinline__ void load(const float* p, float* r) {
        const float4 v = *reinterpret_cast<const float4*>(p);
        r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
    }
    static __device__ __forceinline__ void store(float* p, const float* r) {
        float4 v; v.x = r[0]; v.y = r[1]; v.z = r[2]; v.w = r[3];
        *reinterpret_cast<float4*>(p) = v;
    }
};

template <> struct GemmVec<float, 2> {
    static __device__ __forceinline__ void load(const float* p, float* r) {
        const float2 v = *reinterpret_cast<const float2*>(p);
        r[0] = v.x; r[1] = v.y;
    }
    static __device__ __forceinline__ void store(float* p, const float* r) {
        float2 v; v.x = r[0]; v.y = r[1];
        *reinterpret_cast<float2*>(p) = v;
    }
};

template <> struct GemmVec<double, 2> {
    static __device__ __forceinline__ void load(const double* p, double* r) {
        const double2 v = *reinterpret_cast<const double2*>(p);
        r[0] = v.x; r[1] = v.y;
    }
    static __device__ __forceinline__ void store(double* p, const double* r) {
        double2 v; v.x = r[0]; v.y = r[1];
        *reinterpret_cast<double2*>(p) = v;
    }
};

// Four consecutive elements at a 16-byte (float) or 16-byte-per-pair (double) aligned address.
__device__ __forceinline__ void gemm_ld4(const float* p, float* r) { GemmVec<float, 4>::load(p, r); }
__device__ __forceinline__ void gemm_ld4(const double* p, double* r) {
    GemmVec<double, 2>::load(p, r);
    GemmVec<double, 2>::load(p + 2, r + 2);
}
__device__ __forceinline__ void gemm_st4(float* p, const float* r) { GemmVec<float, 4>::store(p, r); }
__device__ __forceinline__ void gemm_st4(double* p, const double* r) {
    GemmVec<double, 2>::store(p, r);
    GemmVec<double, 2>::store(p + 2, r + 2);
}

// One operand's slice loader. The operand is an MN x K matrix (MN = m for A, n for B) stored either
// K-contiguous (row i of MN at X + i * ld: A plain, B transposed) or MN-contiguous (row kk of K at
// X + kk * ld: A transposed, B plain). Each thread moves L chunks of V elements that are adjacent in
// memory; the slice lands in shared memory as S[kk][i] (k-major) either way. The per-thread pointer
// is set once and advanced one slice per fetch, so the loop carries no 64-bit index arithmetic.
template <typename T, int BMN, int BK, int V, int L, bool KCONTIG, bool VEC>
struct GemmLoader {
    const T* p[L];      // this thread's chunk of the next slice
    int mn_left[L];     // rows (KCONTIG) or columns (else) of MN left from the chunk's start, at most V
    int kofs[L];        // the chunk's k offset inside a slice
    long long step;     // elements from one slice to the next

    __device__ __forceinline__ GemmLoader(const T* X, long long ld, long long MN, long long mn0, int tid) {
#pragma unroll
        for (int l = 0; l < L; ++l) {
            const int c = tid + l * GEMM_THREADS;
            int i, kk;
            if (KCONTIG) {
                i = c / (BK / V);
                kk = (c % (BK / V)) * V;
                p[l] = X + (mn0 + i) * ld + kk;
            } else {
                kk = c / (BMN / V);
                i = (c % (BMN / V)) * V;
                p[l] = X + (long long)kk * ld + mn0 + i;
            }
            const long long left = MN - mn0 - i;
            mn_left[l] = left < V ? (int)left : V;
            kofs[l] = kk;
        }
        step = KCONTIG ? (long long)BK : BK * ld;
    }

    // The slice whose first k index leaves k_left (> 0) values of k; then step to the next slice.
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[L][V]) {
#pragma unroll
        for (int l = 0; l < L; ++l) {
            const long long kl = k_left - kofs[l];  // k values left from the chunk's k
            if (KCONTIG) {
                if (VEC && mn_left[l] > 0 && kl >= V) {
                    GemmVec<T, V>::load(p[l], r[l]);
                } else {
#pragma unroll
                    for (int j = 0; j < V; ++j) r[l][j] = (mn_left[l] > 0 && j < kl) ? p[l][j] : T(0);
                }
            } else {
                if (VEC && kl > 0 && mn_left[l] >= V) {
                    GemmVec<T, V>::load(p[l], r[l]);
                } else {
#pragma unroll
                    for (int j = 0; j < V; ++j) r[l][j] = (kl > 0 && j < mn_left[l]) ? p[l][j] : T(0);
                }
            }
            p[l] += step;
        }
    }

    template <int SLD>
    static __device__ __forceinline__ void stash(T (*S)[SLD], int tid, const T (&r)[L][V]) {
#pragma unroll
        for (int l = 0; l < L; ++l) {
            const int c = tid + l * GEMM_THREADS;
            if (KCONTIG) {
                const int i = c / (BK / V);
                const int kk = (c % (BK / V)) * V;
#pragma unroll
                for (int j = 0; j < V; ++j) S[kk + j][i] = r[l][j];
            } else {
                const int kk = c / (BMN / V);
                const int i = (c % (BMN / V)) * V;
                GemmVec<T, V>::store(&S[kk][i], r[l]);
            }
        }
    }
};

template <typename T, int BM, int BN, int BK, int TM, int TN, bool TA, bool TB, bool VEC>
__device__ __forceinline__ void gemm_tile(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C,
                                          long long m, long long n, long long k, long long lda, long long ldb,
                                          T alpha, T beta) {
    constexpr int TX = BN / TN;                 // threads along n
    constexpr int TY = BM / TM;                 // threads along m
    static_assert(TX * TY == GEMM_THREADS, "one micro-tile per thread");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "micro-tiles are made of 4-wide pieces");
    constexpr int HM = TM / 4, HN = TN / 4;     // 4-wide pieces per thread along m and n
    constexpr int VMAX = 16 / (int)sizeof(T);  // elements per 16-byte load
    constexpr int EA = BM * BK / GEMM_THREADS, EB = BN * BK / GEMM_THREADS;
    constexpr int VA = EA < VMAX ? EA : VMAX, VB = EB < VMAX ? EB : VMAX;
    constexpr int LA = EA / VA, LB = EB / VB;
    static_assert(LA * VA * GEMM_THREADS == BM * BK && LB * VB * GEMM_THREADS == BN * BK, "even split");
    static_assert(BK % VA == 0 && BK % VB == 0 && BM % VA == 0 && BN % VB == 0, "chunks inside rows");
    constexpr int SA = BM + 4, SB = BN + 4;     // padded rows: conflict-free transposed stores
    typedef GemmLoader<T, BM, BK, VA, LA, !TA, VEC> LoadA;
    typedef GemmLoader<T, BN, BK, VB, LB, TB, VEC> LoadB;

    __shared__ __align__(16) T As[2][BK][SA];
    __shared__ __align__(16) T Bs[2][BK][SB];

    const int tid = threadIdx.x;
    const int tx = tid % TX, ty = tid / TX;

    // Block -> tile, grouped GEMM_GROUP_M tile rows at a time.
    const long long tiles_m = (m + BM - 1) / BM, tiles_n = (n + BN - 1) / BN;
    const long long bid = blockIdx.x;
    const long long per_group = (long long)GEMM_GROUP_M * tiles_n;
    const long long first = (bid / per_group) * GEMM_GROUP_M;
    const long long rows = (tiles_m - first) < GEMM_GROUP_M ? (tiles_m - first) : GEMM_GROUP_M;
    const long long in_group = bid % per_group;
    const long long m0 = (first + in_group % rows) * BM;
    const long long n0 = (in_group / rows) * BN;

    T acc[TM][TN];
#pragma unroll
    for (int i = 0; i < TM; ++i)
#pragma unroll
        for (int j = 0; j < TN; ++j) acc[i][j] = T(0);

    T ra[LA][VA], rb[LB][VB];
    LoadA la(A, lda, m, m0, tid);
    LoadB lb(B, ldb, n, n0, tid);
    long long k_left = k;  // values of k from the current slice on
    if (k_left > 0) {
        la.fetch(k_left, ra);
        lb.fetch(k_left, rb);
        LoadA::stash(As[0], tid, ra);
        LoadB::stash(Bs[0], tid, rb);
        __syncthreads();
    }
    int cur = 0;
    while (k_left > 0) {
        const long long next = k_left - BK;
        if (next > 0) {
            la.fetch(next, ra);
            lb.fetch(next, rb);
        }
#pragma unroll
        for (int kk = 0; kk < BK; ++kk) {
            T a[TM], b[TN];
#pragma unroll
            for (int h = 0; h < HM; ++h) gemm_ld4(&As[cur][kk][h * (BM / HM) + ty * 4], &a[h * 4]);
#pragma unroll
            for (int h = 0; h < HN; ++h) gemm_ld4(&Bs[cur][kk][h * (BN / HN) + tx * 4], &b[h * 4]);
#pragma unroll
            for (int i = 0; i < TM; ++i)
#pragma unroll
                for (int j = 0; j < TN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
        if (next > 0) {
            LoadA::stash(As[cur ^ 1], tid, ra);
            LoadB::stash(Bs[cur ^ 1], tid, rb);
        }
        __syncthreads();
        cur ^= 1;
        k_left = next;
    }

    const bool read_c = beta != T(0);
#pragma unroll
    for (int hi = 0; hi < HM; ++hi) {
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const long long r = m0 + hi * (BM / HM) + ty * 4 + i;
            if (r >= m) continue;
#pragma unroll
            for (int hj = 0; hj < HN; ++hj) {
                const long long c = n0 + hj * (BN / HN) + tx * 4;
                if (c >= n) continue;
                T* p = C + r * n + c;
                T v[4];
#pragma unroll
                for (int j = 0; j < 4; ++j) v[j] = alpha * acc[hi * 4 + i][hj * 4 + j];
                if (VEC && c + 4 <= n) {
                    if (read_c) {
                        T o[4];
                        gemm_ld4(p, o);
#pragma unroll
                        for (int j = 0; j < 4; ++j) v[j] = fma(beta, o[j], v[j]);
                    }
                    gemm_st4(p, v);
                } else {
#pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        if (c + j < n) p[j] = read_c ? fma(beta, p[j], v[j]) : v[j];
                    }
                }
            }
        }
    }
}

// C = beta * C over `total` elements (alpha == 0 or k == 0); beta == 0 writes zeros without reading.
template <typename T>
__device__ __forceinline__ void gemm_scale_body(T* __restrict__ C, long long total, T beta) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step)
        C[i] = beta == T(0) ? T(0) : beta * C[i];
}

#define GEMM_ENTRY(NAME, T, BM, BN, BK, TM, TN, TA, TB, VEC, MINB)                                      \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS, MINB)                                   \
    NAME(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C, long long m, long long n,  \
         long long k, long long lda, long long ldb, T alpha, T beta) {                                 \
        gemm_tile<T, BM, BN, BK, TM, TN, TA, TB, VEC>(A, B, C, m, n, k, lda, ldb, alpha, beta);         \
    }

#define GEMM_TRANSPOSES(TILE, SFX, T, BM, BN, BK, TM, TN, MINB)                                              \
    GEMM_ENTRY(gemm_##TILE##_nn_v_##SFX, T, BM, BN, BK, TM, TN, false, false, true, MINB)                      \
    GEMM_ENTRY(gemm_##TILE##_nn_x_##SFX, T, BM, BN, BK, TM, TN, false, false, false, MINB)                     \
    GEMM_ENTRY(gemm_##TILE##_nt_v_##SFX, T, BM, BN, BK, TM, TN, false, true, true, MINB)                       \
    GEMM_ENTRY(gemm_##TILE##_nt_x_##SFX, T, BM, BN, BK, TM, TN, false, true, false, MINB)                      \
    GEMM_ENTRY(gemm_##TILE##_tn_v_##SFX, T, BM, BN, BK, TM, TN, true, false, true, MINB)                       \
    GEMM_ENTRY(gemm_##TILE##_tn_x_##SFX, T, BM, BN, BK, TM, TN, true, false, false, MINB)                      \
    GEMM_ENTRY(gemm_##TILE##_tt_v_##SFX, T, BM, BN, BK, TM, TN, true, true, true, MINB)                        \
    GEMM_ENTRY(gemm_##TILE##_tt_x_##SFX, T, BM, BN, BK, TM, TN, true, true, false, MINB)

// The 128x128 tile needs ~130 registers per thread (64 accumulators, two 8-wide operand
// fragments, the next slice's loads, addresses): capping it at 128 for two resident blocks made
// some NVRTC versions spill, so it asks for one block of 256 threads per SM (the others, two).
GEMM_TRANSPOSES(l, f32, float, 128, 128, 8, 8, 8, 1)
GEMM_TRANSPOSES(m, f32, float, 128, 64, 8, 8, 4, 2)
GEMM_TRANSPOSES(s, f32, float, 64, 64, 8, 4, 4, 2)
GEMM_TRANSPOSES(s, f64, double, 64, 64, 8, 4, 4, 2)

#define GEMM_BATCHED_ENTRY(NAME, T, BM, BN, BK, TM, TN, VEC, MINB)                                      \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS, MINB)                                   \
    NAME(const T* __restrict__ A, const T* __restrict__ B, T* __restrict__ C, long long m, long long n,  \
         long long k, long long sa, long long sb, long long sc) {                                     \
        const long long z = blockIdx.y;                                                                \
        gemm_tile<T, BM, BN, BK, TM, TN, false, false, VEC>(A + z * sa, B + z * sb, C + z * sc, m, n, k,  \
                                                            k, n, T(1), T(0));                         \
    }

#define GEMM_BATCHED(TILE, SFX, T, BM, BN, BK, TM, TN, MINB)                                           \
    GEMM_BATCHED_ENTRY(gemmb_##TILE##_v_##SFX, T, BM, BN, BK, TM, TN, true, MINB)                       \
    GEMM_BATCHED_ENTRY(gemmb_##TILE##_x_##SFX, T, BM, BN, BK, TM, TN, false, MINB)

GEMM_BATCHED(l, f32, float, 128, 128, 8, 8, 8, 1)
GEMM_BATCHED(m, f32, float, 128, 64, 8, 8, 4, 2)
GEMM_BATCHED(h, f32, float, 64, 128, 8, 4, 8, 2)
GEMM_BATCHED(s, f32, float, 64, 64, 8, 4, 4, 2)
GEMM_BATCHED(s, f64, double, 64, 64, 8, 4, 4, 2)

extern "C" __global__ void gemm_scale_f32(float* __restrict__ C, long long total, float beta) {
    gemm_scale_body<float>(C, total, beta);
}
extern "C" __global__ void gemm_scale_f64(double* __restrict__ C, long long total, double beta) {
    gemm_scale_body<double>(C, total, beta);
}
