// 2-D convolution (NCHW, cross-correlation) as implicit GEMMs: the im2col matrix is never stored,
// each block gathers the slice of it that it multiplies straight from the image.
//
//   y[n,k,p,q] = act(b[k] + sum_{c,r,s} w[k,c,r,s] * x[n, c, p*sh + r*dh - pt, q*sw + s*dw - pl])
//
// x (N, C, H, W), w (K, C, R, S), y / dy (N, K, P, Q); positions outside the image read as zero.
// Three products share one main loop (conv_mainloop): a 64 x 64 block tile of the output matrix,
// 256 threads with a 4 x 4 register tile each, the reduction walked in slices of 8 that are
// double-buffered in shared memory (the next slice is gathered into registers while the current
// one is multiplied). Each operand loader gathers 2 elements per thread per slice and keeps the
// multi-digit index of its elements (c, r, s or n, p, q) as counters it steps by 8, so the loop
// divides only when a digit wraps.
//
//   forward        out (K x N*P*Q)  = W (K x C*R*S)  . cols(x) (C*R*S x N*P*Q), bias + relu fused
//   backward data  dx (C x N*H*W)   = W^T (C x K*R*S) . taps(dy) (K*R*S x N*H*W): dx[n,c,h,v] takes
//                  dy[n,k,p,q] w[k,c,r,s] where h + pt - r*dh = p*sh and v + pl - s*dw = q*sw;
//                  with stride > 1 only the taps where both divide exactly contribute
//   backward filt  dw (K x C*R*S)   = dy (K x N*P*Q) . cols(x)^T (N*P*Q x C*R*S), the reduction
//                  split in fixed chunks over blockIdx.z into a scratch buffer when the output has
//                  too few tiles to fill the GPU, then summed in a fixed order (conv_split_sum):
//                  no atomics, the same bits on every run
//   bias gradient  db[k] = sum_{n,p,q} dy[n,k,p,q], one block per channel, double accumulation
//
// Sizes arrive as long long; the host guarantees every dimension, padded extent and dilated
// filter extent is below 2^31, so coordinates inside one image are ints and flat offsets are
// long long. Entry points: conv_fwd, conv_bwd_data_s1 (stride 1), conv_bwd_data (any stride),
// conv_bwd_filter, conv_split_sum, conv_bias_grad, each _f32 and _f64.

#define CONV_THREADS 256
#define CONV_BM 64
#define CONV_BN 64
#define CONV_BK 8
#define CONV_SLD 68  // padded shared-memory rows (16-byte multiple, conflict-free stores)
#define CONV_BIAS_THREADS 256

__device__ __forceinline__ void conv_ld4(const float* p, float* r) {
    const float4 v = *reinterpret_cast<const float4*>(p);
    r[0] = v.x; r[1] = v.y; r[2] = v.z; r[3] = v.w;
}
__device__ __forceinline__ void conv_ld4(const double* p, double* r) {
    const double2 u = *reinterpret_cast<const double2*>(p);
    const double2 v = *reinterpret_cast<const double2*>(p + 2);
    r[0] = u.x; r[1] = u.y; r[2] = v.x; r[3] = v.y;
}

struct ConvGeom {
    int N, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh, dw;
    long long HW, CHW, PQ, KPQ, RS, CRS;
};

__device__ __forceinline__ ConvGeom conv_geom(long long N, long long C, long long H, long long W, long long K,
                                              long long R, long long S, long long P, long long Q, long long sh,
                                              long long sw, long long pt, long long pl, long long dh,
                                              long long dw) {
    ConvGeom g;
    g.N = (int)N; g.C = (int)C; g.H = (int)H; g.W = (int)W; g.K = (int)K; g.R = (int)R; g.S = (int)S;
    g.P = (int)P; g.Q = (int)Q; g.sh = (int)sh; g.sw = (int)sw; g.pt = (int)pt; g.pl = (int)pl;
    g.dh = (int)dh; g.dw = (int)dw;
    g.HW = H * W; g.CHW = C * g.HW; g.PQ = P * Q; g.KPQ = K * g.PQ; g.RS = R * S; g.CRS = C * g.RS;
    return g;
}

// A flat index v = (a * B + b) * D + d held as its digits; step() adds a small count.
struct ConvDigits {
    int a, b, d;
    __device__ __forceinline__ void set(long long v, int B, int D) {
        const long long t = v / D;
        d = (int)(v - t * D);
        const long long u = t / B;
        b = (int)(t - u * B);
        a = (int)u;
    }
    __device__ __forceinline__ void step(int n, int B, int D) {
        d += n;
        if (d >= D) {
            int t = d / D;
            d -= t * D;
            b += t;
            if (b >= B) {
                t = b / B;
                b -= t * B;
                a += t;
            }
        }
    }
};

// Where a thread's two elements of a slice sit in the tile S[kk][i] (i along M or N, kk along
// the reduction). Row map: the two are adjacent along the reduction (kk = 2 (tid % 4) + e,
// i = tid / 4); column map: the two are 4 apart along it (kk = tid / 64 + 4 e, i = tid % 64).
struct ConvRowMap {
    static __device__ __forceinline__ int i(int tid) { return tid >> 2; }
    static __device__ __forceinline__ int kk(int tid, int e) { return ((tid & 3) << 1) + e; }
};
struct ConvColMap {
    static __device__ __forceinline__ int i(int tid) { return tid & 63; }
    static __device__ __forceinline__ int kk(int tid, int e) { return (tid >> 6) + (e << 2); }
};

template <typename T, class Map>
__device__ __forceinline__ void conv_stash(T (*S)[CONV_SLD], int tid, const T (&r)[2]) {
    S[Map::kk(tid, 0)][Map::i(tid)] = r[0];
    S[Map::kk(tid, 1)][Map::i(tid)] = r[1];
}

// acc (4 x 4, rows ty*4.., columns tx*4.. of the block tile) = A-tile . B-tile over k_len values of
// the reduction. LA / LB: fetch(k_left, r) gathers the thread's two elements of the slice whose
// first reduction index leaves k_left (> 0) values, zero beyond the end, and steps to the next.
template <typename T, class LA, class LB>
__device__ __forceinline__ void conv_mainloop(LA& la, LB& lb, long long k_len, T (&acc)[4][4]) {
    __shared__ __align__(16) T As[2][CONV_BK][CONV_SLD];
    __shared__ __align__(16) T Bs[2][CONV_BK][CONV_SLD];
    const int tid = threadIdx.x;
    const int tx = tid & 15, ty = tid >> 4;
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = T(0);
    T ra[2], rb[2];
    long long k_left = k_len;
    if (k_left > 0) {
        la.fetch(k_left, ra);
        lb.fetch(k_left, rb);
        conv_stash<T, typename LA::Map>(As[0], tid, ra);
        conv_stash<T, typename LB::Map>(Bs[0], tid, rb);
        __syncthreads();
    }
    int cur = 0;
    while (k_left > 0) {
        const long long next = k_left - CONV_BK;
        if (next > 0) {
            la.fetch(next, ra);
            lb.fetch(next, rb);
        }
#pragma unroll
        for (int kk = 0; kk < CONV_BK; ++kk) {
            T a[4], b[4];
            conv_ld4(&As[cur][kk][ty * 4], a);
            conv_ld4(&Bs[cur][kk][tx * 4], b);
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
        if (next > 0) {
            conv_stash<T, typename LA::Map>(As[cur ^ 1], tid, ra);
            conv_stash<T, typename LB::Map>(Bs[cur ^ 1], tid, rb);
        }
        __syncthreads();
        cur ^= 1;
        k_left = next;
    }
}

// ---- forward ------------------------------------------------------------------------------------

// A[k][crs] = w[k * CRS + crs]: rows are filters, read along the reduction.
template <typename T>
struct ConvFwdW {
    typedef ConvRowMap Map;
    const T* p;
    bool ok;
    int kk0;
    __device__ __forceinline__ ConvFwdW(const T* w, const ConvGeom& g, long long m0, int tid) {
        const long long m = m0 + Map::i(tid);
        kk0 = Map::kk(tid, 0);
        ok = m < g.K;
        p = ok ? w + m * g.CRS + kk0 : w;
    }
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[2]) {
        r[0] = (ok && kk0 < k_left) ? p[0] : T(0);
        r[1] = (ok && kk0 + 1 < k_left) ? p[1] : T(0);
        p += CONV_BK;
    }
};

// B[crs][npq] = x[n, c, p*sh + r*dh - pt, q*sw + s*dw - pl] (zero outside the image).
template <typename T>
struct ConvFwdX {
    typedef ConvColMap Map;
    const T* xn;
    int h0, w0;
    bool ok;
    ConvDigits d[2];  // (c, r, s) of the two elements
    const ConvGeom& g;
    __device__ __forceinline__ ConvFwdX(const T* x, const ConvGeom& g_, long long n0, long long ncols, int tid)
        : g(g_) {
        const long long col = n0 + Map::i(tid);
        ok = col < ncols;
        const long long n = ok ? col / g.PQ : 0;
        const int pq = ok ? (int)(col - n * g.PQ) : 0;
        const int p = pq / g.Q, q = pq - p * g.Q;
        h0 = p * g.sh - g.pt;
        w0 = q * g.sw - g.pl;
        xn = x + n * g.CHW;
        d[0].set(Map::kk(tid, 0), g.R, g.S);
        d[1].set(Map::kk(tid, 1), g.R, g.S);
    }
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[2]) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int kk = Map::kk(threadIdx.x, e);
            T v = T(0);
            if (ok && kk < k_left) {
                const int h = h0 + d[e].b * g.dh, w = w0 + d[e].d * g.dw;
                if ((unsigned)h < (unsigned)g.H && (unsigned)w < (unsigned)g.W)
                    v = xn[d[e].a * g.HW + (long long)h * g.W + w];
            }
            r[e] = v;
            d[e].step(CONV_BK, g.R, g.S);
        }
    }
};

template <typename T>
__device__ __forceinline__ void conv_fwd_body(const T* __restrict__ x, const T* __restrict__ w,
                                              const T* __restrict__ b, T* __restrict__ y, const ConvGeom& g,
                                              int has_bias, int act) {
    const long long ncols = (long long)g.N * g.PQ;
    const long long n0 = (long long)blockIdx.x * CONV_BN;
    const long long m0 = (long long)blockIdx.y * CONV_BM;
    const int tid = threadIdx.x;
    ConvFwdW<T> la(w, g, m0, tid);
    ConvFwdX<T> lb(x, g, n0, ncols, tid);
    T acc[4][4];
    conv_mainloop<T>(la, lb, g.CRS, acc);
    const int tx = tid & 15, ty = tid >> 4;
    long long ofs[4];
    bool cok[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const long long col = n0 + tx * 4 + j;
        cok[j] = col < ncols;
        const long long n = cok[j] ? col / g.PQ : 0;
        ofs[j] = n * g.KPQ + (col - n * g.PQ);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const long long m = m0 + ty * 4 + i;
        if (m >= g.K) continue;
        const T bias = has_bias ? b[m] : T(0);
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            if (!cok[j]) continue;
            T v = acc[i][j] + bias;
            if (act == 1) v = v > T(0) ? v : T(0);
            y[ofs[j] + m * g.PQ] = v;
        }
    }
}

// ---- backward data ------------------------------------------------------------------------------

// A[c][krs] = w[k, c, r, s]: rows are input channels.
template <typename T>
struct ConvBwdW {
    typedef ConvColMap Map;
    const T* wc;
    bool ok;
    ConvDigits d[2];  // (k, r, s)
    const ConvGeom& g;
    __device__ __forceinline__ ConvBwdW(const T* w, const ConvGeom& g_, long long m0, int tid) : g(g_) {
        const long long c = m0 + Map::i(tid);
        ok = c < g.C;
        wc = ok ? w + c * g.RS : w;
        d[0].set(Map::kk(tid, 0), g.R, g.S);
        d[1].set(Map::kk(tid, 1), g.R, g.S);
    }
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[2]) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int kk = Map::kk(threadIdx.x, e);
            r[e] = (ok && kk < k_left) ? wc[d[e].a * g.CRS + d[e].b * g.S + d[e].d] : T(0);
            d[e].step(CONV_BK, g.R, g.S);
        }
    }
};

// B[krs][nhw] = dy[n, k, p, q] where h + pt - r*dh = p*sh and v + pl - s*dw = q*sw, else zero.
template <typename T, bool UNIT>
struct ConvBwdDy {
    typedef ConvColMap Map;
    const T* dyn;
    int hh, ww;
    bool ok;
    ConvDigits d[2];  // (k, r, s)
    const ConvGeom& g;
    __device__ __forceinline__ ConvBwdDy(const T* dy, const ConvGeom& g_, long long n0, long long ncols, int tid)
        : g(g_) {
        const long long col = n0 + Map::i(tid);
        ok = col < ncols;
        const long long n = ok ? col / g.HW : 0;
        const long long hw = ok ? col - n * g.HW : 0;
        const int h = (int)(hw / g.W);
        const int v = (int)(hw - (long long)h * g.W);
        hh = h + g.pt;
        ww = v + g.pl;
        dyn = dy + n * g.KPQ;
        d[0].set(Map::kk(tid, 0), g.R, g.S);
        d[1].set(Map::kk(tid, 1), g.R, g.S);
    }
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[2]) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int kk = Map::kk(threadIdx.x, e);
            T val = T(0);
            if (ok && kk < k_left) {
                int p = hh - d[e].b * g.dh, q = ww - d[e].d * g.dw;
                bool hit = p >= 0 && q >= 0;
                if (!UNIT && hit) {
                    const int pd = p / g.sh, qd = q / g.sw;
                    hit = pd * g.sh == p && qd * g.sw == q;
                    p = pd;
                    q = qd;
                }
                if (hit && p < g.P && q < g.Q) val = dyn[d[e].a * g.PQ + (long long)p * g.Q + q];
            }
            r[e] = val;
            d[e].step(CONV_BK, g.R, g.S);
        }
    }
};

template <typename T, bool UNIT>
__device__ __forceinline__ void conv_bwd_data_body(const T* __restrict__ dy, const T* __restrict__ w,
                                                   T* __restrict__ dx, const ConvGeom& g) {
    const long long ncols = (long long)g.N * g.HW;
    const long long n0 = (long long)blockIdx.x * CONV_BN;
    const long long m0 = (long long)blockIdx.y * CONV_BM;
    const int tid = threadIdx.x;
    ConvBwdW<T> la(w, g, m0, tid);
    ConvBwdDy<T, UNIT> lb(dy, g, n0, ncols, tid);
    T acc[4][4];
    conv_mainloop<T>(la, lb, (long long)g.K * g.RS, acc);
    const int tx = tid & 15, ty = tid >> 4;
    long long ofs[4];
    bool cok[4];
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const long long col = n0 + tx * 4 + j;
        cok[j] = col < ncols;
        const long long n = cok[j] ? col / g.HW : 0;
        ofs[j] = n * g.CHW + (col - n * g.HW);
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const long long c = m0 + ty * 4 + i;
        if (c >= g.C) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j)
            if (cok[j]) dx[ofs[j] + c * g.HW] = acc[i][j];
    }
}

// ---- backward filter ----------------------------------------------------------------------------

// A[k][npq] = dy[n, k, p, q]: rows are filters, read along the reduction (adjacent p, q).
template <typename T>
struct ConvFiltDy {
    typedef ConvRowMap Map;
    const T* dyk;
    bool ok;
    ConvDigits d[2];  // (n, p, q)
    const ConvGeom& g;
    __device__ __forceinline__ ConvFiltDy(const T* dy, const ConvGeom& g_, long long m0, long long k0, int tid)
        : g(g_) {
        const long long k = m0 + Map::i(tid);
        ok = k < g.K;
        dyk = ok ? dy + k * g.PQ : dy;
        d[0].set(k0 + Map::kk(tid, 0), g.P, g.Q);
        d[1].set(k0 + Map::kk(tid, 1), g.P, g.Q);
    }
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[2]) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int kk = Map::kk(threadIdx.x, e);
            r[e] = (ok && kk < k_left) ? dyk[d[e].a * g.KPQ + (long long)d[e].b * g.Q + d[e].d] : T(0);
            d[e].step(CONV_BK, g.P, g.Q);
        }
    }
};

// B[npq][crs] = x[n, c, p*sh + r*dh - pt, q*sw + s*dw - pl] (zero outside the image).
template <typename T>
struct ConvFiltX {
    typedef ConvColMap Map;
    const T* xc;
    int roff, soff;
    bool ok;
    ConvDigits d[2];  // (n, p, q)
    const ConvGeom& g;
    __device__ __forceinline__ ConvFiltX(const T* x, const ConvGeom& g_, long long n0, long long k0, int tid)
        : g(g_) {
        const long long col = n0 + Map::i(tid);
        ok = col < g.CRS;
        const long long c = ok ? col / g.RS : 0;
        const int rs = ok ? (int)(col - c * g.RS) : 0;
        const int r = rs / g.S, s = rs - r * g.S;
        roff = r * g.dh - g.pt;
        soff = s * g.dw - g.pl;
        xc = x + c * g.HW;
        d[0].set(k0 + Map::kk(tid, 0), g.P, g.Q);
        d[1].set(k0 + Map::kk(tid, 1), g.P, g.Q);
    }
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[2]) {
#pragma unroll
        for (int e = 0; e < 2; ++e) {
            const int kk = Map::kk(threadIdx.x, e);
            T v = T(0);
            if (ok && kk < k_left) {
                const int h = d[e].b * g.sh + roff, w = d[e].d * g.sw + soff;
                if ((unsigned)h < (unsigned)g.H && (unsigned)w < (unsigned)g.W)
                    v = xc[d[e].a * g.CHW + (long long)h * g.W + w];
            }
            r[e] = v;
            d[e].step(CONV_BK, g.P, g.Q);
        }
    }
};

// Split blockIdx.z reduces n*p*q in [z * chunk, min((z + 1) * chunk, N*P*Q)) into out + z * K * CRS.
template <typename T>
__device__ __forceinline__ void conv_bwd_filter_body(const T* __restrict__ dy, const T* __restrict__ x,
                                                     T* __restrict__ out, const ConvGeom& g, long long chunk) {
    const long long npq = (long long)g.N * g.PQ;
    const long long k0 = (long long)blockIdx.z * chunk;
    const long long k1 = k0 + chunk < npq ? k0 + chunk : npq;
    const long long k_len = k1 > k0 ? k1 - k0 : 0;
    const long long n0 = (long long)blockIdx.x * CONV_BN;
    const long long m0 = (long long)blockIdx.y * CONV_BM;
    const int tid = threadIdx.x;
    ConvFiltDy<T> la(dy, g, m0, k0, tid);
    ConvFiltX<T> lb(x, g, n0, k0, tid);
    T acc[4][4];
    conv_mainloop<T>(la, lb, k_len, acc);
    const int tx = tid & 15, ty = tid >> 4;
    T* o = out + (long long)blockIdx.z * g.K * g.CRS;
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        const long long k = m0 + ty * 4 + i;
        if (k >= g.K) continue;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const long long col = n0 + tx * 4 + j;
            if (col < g.CRS) o[k * g.CRS + col] = acc[i][j];
        }
    }
}

// dw[i] = sum over s = 0 .. splits-1 (in order) of part[s * count + i].
template <typename T>
__device__ __forceinline__ void conv_split_sum_body(T* __restrict__ dw, const T* __restrict__ part, long long count,
                                                    long long splits) {
    const long long step = (long long)gridDim.x * blockDim.x;
    for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < count; i += step) {
        T acc = part[i];
        for (long long s = 1; s < splits; ++s) acc += part[s * count + i];
        dw[i] = acc;
    }
}

// db[k] = sum_{n, p, q} dy[n, k, p, q]; block b handles channels b, b + gridDim.x, ...
template <typename T>
__device__ __forceinline__ void conv_bias_grad_body(T* __restrict__ db, const T* __restrict__ dy, long long N,
                                                    long long K, long long PQ) {
    __shared__ double part[CONV_BIAS_THREADS];
    for (long long k = blockIdx.x; k < K; k += gridDim.x) {
        double acc = 0.0;
        for (long long n = 0; n < N; ++n) {
            const T* row = dy + (n * K + k) * PQ;
            for (long long i = threadIdx.x; i < PQ; i += CONV_BIAS_THREADS) acc += (double)row[i];
        }
        part[threadIdx.x] = acc;
        __syncthreads();
        for (int h = CONV_BIAS_THREADS / 2; h > 0; h >>= 1) {
            if ((int)threadIdx.x < h) part[threadIdx.x] += part[threadIdx.x + h];
            __syncthreads();
        }
        if (threadIdx.x == 0) db[k] = (T)part[0];
        __syncthreads();
    }
}

// ---- entry points -------------------------------------------------------------------------------

#define CONV_GEOM_PARAMS                                                                                 \
    long long N, long long C, long long H, long long W, long long K, long long R, long long S, long long P, \
        long long Q, long long sh, long long sw, long long pt, long long pl, long long dh, long long dw
#define CONV_GEOM_ARGS N, C, H, W, K, R, S, P, Q, sh, sw, pt, pl, dh, dw

#define CONV_ENTRIES(SFX, T)                                                                                  \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS, 2)                                           \
    conv_fwd_##SFX(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,              \
                   T* __restrict__ y, CONV_GEOM_PARAMS, int has_bias, int act) {                            \
        const ConvGeom g = conv_geom(CONV_GEOM_ARGS);                                                       \
        conv_fwd_body<T>(x, w, b, y, g, has_bias, act);                                                     \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS, 2)                                           \
    conv_bwd_data_s1_##SFX(const T* __restrict__ dy, const T* __restrict__ w, T* __restrict__ dx,          \
                           CONV_GEOM_PARAMS) {                                                               \
        const ConvGeom g = conv_geom(CONV_GEOM_ARGS);                                                       \
        conv_bwd_data_body<T, true>(dy, w, dx, g);                                                          \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS, 2)                                           \
    conv_bwd_data_##SFX(const T* __restrict__ dy, const T* __restrict__ w, T* __restrict__ dx,             \
                        CONV_GEOM_PARAMS) {                                                                  \
        const ConvGeom g = conv_geom(CONV_GEOM_ARGS);                                                       \
        conv_bwd_data_body<T, false>(dy, w, dx, g);                                                         \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS, 2)                                           \
    conv_bwd_filter_##SFX(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ out,          \
                          CONV_GEOM_PARAMS, long long chunk) {                                               \
        const ConvGeom g = conv_geom(CONV_GEOM_ARGS);                                                       \
        conv_bwd_filter_body<T>(dy, x, out, g, chunk);                                                      \
    }                                                                                                        \
    extern "C" __global__ void conv_split_sum_##SFX(T* __restrict__ dw, const T* __restrict__ part,        \
                                                    long long count, long long splits) {                     \
        conv_split_sum_body<T>(dw, part, count, splits);                                                    \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(CONV_BIAS_THREADS)                                         \
    conv_bias_grad_##SFX(T* __restrict__ db, const T* __restrict__ dy, long long N, long long K,           \
                         long long PQ) {                                                                     \
        conv_bias_grad_body<T>(db, dy, N, K, PQ);                                                           \
    }

CONV_ENTRIES(f32, float)
CONV_ENTRIES(f64, double)
