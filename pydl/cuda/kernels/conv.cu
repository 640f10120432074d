// 2-D convolution (NCHW, cross-correlation) as implicit GEMMs: the im2col matrix is never stored,
// each block gathers the slice of it that it multiplies straight from the image.
//
//   y[n,k,p,q] = act(b[k] + sum_{c,r,s} w[k,c,r,s] * x[n, c, p*sh + r*dh - pt, q*sw + s*dw - pl])
//
// x (N, C, H, W), w (K, C, R, S), y / dy (N, K, P, Q); positions outside the image read as zero.
// Three products share one main loop (conv_mainloop), built for three block tiles of the output
// matrix, all with 256 threads and the reduction walked in slices of 8 that are double-buffered in
// shared memory (the next slice is gathered into registers while the current one is multiplied):
//   s  64 x 64,   4 x 4 results per thread (float and double);
//   l  128 x 128, 8 x 8 results per thread (float);
//   w  64 x 256,  8 x 8 results per thread (float; layers with 64 filters or channels).
// An 8 x 8 register tile is two 4-wide groups of rows BM/2 apart times two 4-wide groups of columns
// BN/2 apart, so every shared-memory read is a 16-byte vector and a warp's reads are conflict-free
// or broadcast. Each operand loader gathers BM*8/256 (or BN*8/256) elements per thread per slice
// and keeps the multi-digit index of its current element (c, r, s or n, p, q) as counters that it
// steps without dividing. Loads into shared memory are coalesced: along the image (N*P*Q, N*H*W
// or, for the weight gradient, N*P*Q along the reduction) consecutive threads read consecutive
// positions; weight rows are read along their contiguous C*R*S (or R*S) extent.
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
// conv_bwd_filter (tile s: _f32 and _f64; tiles l and w: conv_fwd_l_f32, conv_fwd_w_f32, ...),
// conv_split_sum, conv_bias_grad (_f32 and _f64).

#define CONV_THREADS 256
#define CONV_BM 64   // tile s
#define CONV_BN 64
#define CONV_BK 8
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

// A block tile: BM x BN outputs, TM x TN per thread (in 4 x 4 pieces), TX x TY threads.
template <int BM_, int BN_, int TM_, int TN_>
struct ConvTile {
    static constexpr int BM = BM_, BN = BN_, TM = TM_, TN = TN_;
    static constexpr int TX = BN / TN, TY = BM / TM;  // threads along columns / rows
    static constexpr int HM = TM / 4, HN = TN / 4;    // 4-wide pieces per thread
    static_assert(TX * TY == CONV_THREADS, "one register tile per thread");
    static_assert(TM % 4 == 0 && TN % 4 == 0, "register tiles are made of 4 x 4 pieces");
};
typedef ConvTile<CONV_BM, CONV_BN, 4, 4> ConvTileS;
typedef ConvTile<128, 128, 8, 8> ConvTileL;
typedef ConvTile<64, 256, 8, 8> ConvTileW;

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

// A flat index v = (a * B + b) * D + d held as its digits; step() adds a small count (at most a
// slice, 8) by carrying, without dividing: d < D and b < B hold after every step.
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
        while (d >= D) {
            d -= D;
            ++b;
        }
        while (b >= B) {
            b -= B;
            ++a;
        }
    }
};

// Where a thread's E elements of a slice sit in the shared tile S[kk][i] (i along M or N, kk along
// the reduction): element e at kk(tid) + e * GAP, column i(tid); E * GAP + REST = 8.
// Row map: the E elements are adjacent along the reduction (for operands read along it).
// Column map: consecutive threads take consecutive i (for operands read along M or N).
template <int BMN>
struct ConvRowMap {
    static constexpr int E = BMN * CONV_BK / CONV_THREADS, GAP = 1, REST = CONV_BK - E, SLD = BMN + 4;
    static_assert(E >= 1 && CONV_BK % E == 0, "whole elements per thread");
    static __device__ __forceinline__ int i(int tid) { return tid / (CONV_BK / E); }
    static __device__ __forceinline__ int kk(int tid) { return (tid % (CONV_BK / E)) * E; }
};
template <int BMN>
struct ConvColMap {
    static constexpr int E = BMN * CONV_BK / CONV_THREADS, GAP = CONV_THREADS / BMN, REST = 0, SLD = BMN + 4;
    static_assert(E >= 1 && E * GAP == CONV_BK, "whole elements per thread");
    static __device__ __forceinline__ int i(int tid) { return tid % BMN; }
    static __device__ __forceinline__ int kk(int tid) { return tid / BMN; }
};

// Padded rows (SLD = BMN + 4, a 16-byte multiple): the stores of both maps are conflict-free.
template <typename T, class Map>
__device__ __forceinline__ void conv_stash(T (*S)[Map::SLD], int tid, const T (&r)[Map::E]) {
    const int i = Map::i(tid), k0 = Map::kk(tid);
#pragma unroll
    for (int e = 0; e < Map::E; ++e) S[k0 + e * Map::GAP][i] = r[e];
}

// acc (TM x TN) = A-tile . B-tile over k_len values of the reduction; the thread's rows are
// hi * BM/HM + ty * 4 + i and its columns hj * BN/HN + tx * 4 + j (acc[hi*4 + i][hj*4 + j]).
// LA / LB: fetch(k_left, r) gathers the thread's elements of the slice whose first reduction index
// leaves k_left (> 0) values, zero beyond the end, and steps to the next slice.
template <typename T, class Tile, class LA, class LB>
__device__ __forceinline__ void conv_mainloop(LA& la, LB& lb, long long k_len, T (&acc)[Tile::TM][Tile::TN]) {
    typedef typename LA::Map MA;
    typedef typename LB::Map MB;
    static_assert(MA::SLD == Tile::BM + 4 && MB::SLD == Tile::BN + 4, "operand maps match the tile");
    __shared__ __align__(16) T As[2][CONV_BK][Tile::BM + 4];
    __shared__ __align__(16) T Bs[2][CONV_BK][Tile::BN + 4];
    const int tid = threadIdx.x;
    const int tx = tid % Tile::TX, ty = tid / Tile::TX;
#pragma unroll
    for (int i = 0; i < Tile::TM; ++i)
#pragma unroll
        for (int j = 0; j < Tile::TN; ++j) acc[i][j] = T(0);
    T ra[MA::E], rb[MB::E];
    long long k_left = k_len;
    if (k_left > 0) {
        la.fetch(k_left, ra);
        lb.fetch(k_left, rb);
        conv_stash<T, MA>(As[0], tid, ra);
        conv_stash<T, MB>(Bs[0], tid, rb);
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
            T a[Tile::TM], b[Tile::TN];
#pragma unroll
            for (int h = 0; h < Tile::HM; ++h) conv_ld4(&As[cur][kk][h * (Tile::BM / Tile::HM) + ty * 4], &a[h * 4]);
#pragma unroll
            for (int h = 0; h < Tile::HN; ++h) conv_ld4(&Bs[cur][kk][h * (Tile::BN / Tile::HN) + tx * 4], &b[h * 4]);
#pragma unroll
            for (int i = 0; i < Tile::TM; ++i)
#pragma unroll
                for (int j = 0; j < Tile::TN; ++j) acc[i][j] = fma(a[i], b[j], acc[i][j]);
        }
        if (next > 0) {
            conv_stash<T, MA>(As[cur ^ 1], tid, ra);
            conv_stash<T, MB>(Bs[cur ^ 1], tid, rb);
        }
        __syncthreads();
        cur ^= 1;
        k_left = next;
    }
}

// Row / column of the block tile held in acc[r][.] / acc[.][c].
template <class Tile>
__device__ __forceinline__ int conv_row(int ty, int r) {
    return (r >> 2) * (Tile::BM / Tile::HM) + ty * 4 + (r & 3);
}
template <class Tile>
__device__ __forceinline__ int conv_col(int tx, int c) {
    return (c >> 2) * (Tile::BN / Tile::HN) + tx * 4 + (c & 3);
}

// ---- forward ------------------------------------------------------------------------------------

// A[k][crs] = w[k * CRS + crs]: rows are filters, read along the reduction.
template <typename T, int BM>
struct ConvFwdW {
    typedef ConvRowMap<BM> Map;
    const T* p;
    bool ok;
    int kk0;
    __device__ __forceinline__ ConvFwdW(const T* w, const ConvGeom& g, long long m0, int tid) {
        const long long m = m0 + Map::i(tid);
        kk0 = Map::kk(tid);
        ok = m < g.K;
        p = ok ? w + m * g.CRS + kk0 : w;
    }
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[Map::E]) {
#pragma unroll
        for (int e = 0; e < Map::E; ++e) r[e] = (ok && kk0 + e < k_left) ? p[e] : T(0);
        p += CONV_BK;
    }
};

// B[crs][npq] = x[n, c, p*sh + r*dh - pt, q*sw + s*dw - pl] (zero outside the image); consecutive
// threads take consecutive (n, p, q).
template <typename T, int BN>
struct ConvFwdX {
    typedef ConvColMap<BN> Map;
    const T* xn;
    int h0, w0, kk0;
    bool ok;
    ConvDigits d;  // (c, r, s) of the thread's next element
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
        kk0 = Map::kk(tid);
        d.set(kk0, g.R, g.S);
    }
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[Map::E]) {
#pragma unroll
        for (int e = 0; e < Map::E; ++e) {
            T v = T(0);
            if (ok && kk0 + e * Map::GAP < k_left) {
                const int h = h0 + d.b * g.dh, w = w0 + d.d * g.dw;
                if ((unsigned)h < (unsigned)g.H && (unsigned)w < (unsigned)g.W)
                    v = xn[d.a * g.HW + (long long)h * g.W + w];
            }
            r[e] = v;
            d.step(Map::GAP, g.R, g.S);
        }
        if (Map::REST) d.step(Map::REST, g.R, g.S);
    }
};

template <typename T, class Tile>
__device__ __forceinline__ void conv_fwd_body(const T* __restrict__ x, const T* __restrict__ w,
                                              const T* __restrict__ b, T* __restrict__ y, const ConvGeom& g,
                                              int has_bias, int act) {
    const long long ncols = (long long)g.N * g.PQ;
    const long long n0 = (long long)blockIdx.x * Tile::BN;
    const long long m0 = (long long)blockIdx.y * Tile::BM;
    const int tid = threadIdx.x;
    T acc[Tile::TM][Tile::TN];
    {
        ConvFwdW<T, Tile::BM> la(w, g, m0, tid);
        ConvFwdX<T, Tile::BN> lb(x, g, n0, ncols, tid);
        conv_mainloop<T, Tile>(la, lb, g.CRS, acc);
    }
    const int tx = tid % Tile::TX, ty = tid / Tile::TX;
    long long ofs[Tile::TN];
    bool cok[Tile::TN];
#pragma unroll
    for (int j = 0; j < Tile::TN; ++j) {
        const long long col = n0 + conv_col<Tile>(tx, j);
        cok[j] = col < ncols;
        const long long n = cok[j] ? col / g.PQ : 0;
        ofs[j] = n * g.KPQ + (col - n * g.PQ);
    }
#pragma unroll
    for (int i = 0; i < Tile::TM; ++i) {
        const long long m = m0 + conv_row<Tile>(ty, i);
        if (m >= g.K) continue;
        const T bias = has_bias ? b[m] : T(0);
#pragma unroll
        for (int j = 0; j < Tile::TN; ++j) {
            if (!cok[j]) continue;
            T v = acc[i][j] + bias;
            if (act == 1) v = v > T(0) ? v : T(0);
            y[ofs[j] + m * g.PQ] = v;
        }
    }
}

// ---- backward data ------------------------------------------------------------------------------

// A[c][krs] = w[k, c, r, s]: rows are input channels, read along (r, s), contiguous in memory.
template <typename T, int BM>
struct ConvBwdW {
    typedef ConvRowMap<BM> Map;
    const T* wc;
    bool ok;
    int kk0;
    ConvDigits d;  // (k, r, s) of the thread's next element
    const ConvGeom& g;
    __device__ __forceinline__ ConvBwdW(const T* w, const ConvGeom& g_, long long m0, int tid) : g(g_) {
        const long long c = m0 + Map::i(tid);
        ok = c < g.C;
        wc = ok ? w + c * g.RS : w;
        kk0 = Map::kk(tid);
        d.set(kk0, g.R, g.S);
    }
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[Map::E]) {
#pragma unroll
        for (int e = 0; e < Map::E; ++e) {
            r[e] = (ok && kk0 + e < k_left) ? wc[d.a * g.CRS + d.b * g.S + d.d] : T(0);
            d.step(1, g.R, g.S);
        }
        if (Map::REST) d.step(Map::REST, g.R, g.S);
    }
};

// B[krs][nhw] = dy[n, k, p, q] where h + pt - r*dh = p*sh and v + pl - s*dw = q*sw, else zero;
// consecutive threads take consecutive (n, h, v).
template <typename T, bool UNIT, int BN>
struct ConvBwdDy {
    typedef ConvColMap<BN> Map;
    const T* dyn;
    int hh, ww, kk0;
    bool ok;
    ConvDigits d;  // (k, r, s) of the thread's next element
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
        kk0 = Map::kk(tid);
        d.set(kk0, g.R, g.S);
    }
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[Map::E]) {
#pragma unroll
        for (int e = 0; e < Map::E; ++e) {
            T val = T(0);
            if (ok && kk0 + e * Map::GAP < k_left) {
                int p = hh - d.b * g.dh, q = ww - d.d * g.dw;
                bool hit = p >= 0 && q >= 0;
                if (!UNIT && hit) {
                    const int pd = p / g.sh, qd = q / g.sw;
                    hit = pd * g.sh == p && qd * g.sw == q;
                    p = pd;
                    q = qd;
                }
                if (hit && p < g.P && q < g.Q) val = dyn[d.a * g.PQ + (long long)p * g.Q + q];
            }
            r[e] = val;
            d.step(Map::GAP, g.R, g.S);
        }
        if (Map::REST) d.step(Map::REST, g.R, g.S);
    }
};

template <typename T, bool UNIT, class Tile>
__device__ __forceinline__ void conv_bwd_data_body(const T* __restrict__ dy, const T* __restrict__ w,
                                                   T* __restrict__ dx, const ConvGeom& g) {
    const long long ncols = (long long)g.N * g.HW;
    const long long n0 = (long long)blockIdx.x * Tile::BN;
    const long long m0 = (long long)blockIdx.y * Tile::BM;
    const int tid = threadIdx.x;
    T acc[Tile::TM][Tile::TN];
    {
        ConvBwdW<T, Tile::BM> la(w, g, m0, tid);
        ConvBwdDy<T, UNIT, Tile::BN> lb(dy, g, n0, ncols, tid);
        conv_mainloop<T, Tile>(la, lb, (long long)g.K * g.RS, acc);
    }
    const int tx = tid % Tile::TX, ty = tid / Tile::TX;
    long long ofs[Tile::TN];
    bool cok[Tile::TN];
#pragma unroll
    for (int j = 0; j < Tile::TN; ++j) {
        const long long col = n0 + conv_col<Tile>(tx, j);
        cok[j] = col < ncols;
        const long long n = cok[j] ? col / g.HW : 0;
        ofs[j] = n * g.CHW + (col - n * g.HW);
    }
#pragma unroll
    for (int i = 0; i < Tile::TM; ++i) {
        const long long c = m0 + conv_row<Tile>(ty, i);
        if (c >= g.C) continue;
#pragma unroll
        for (int j = 0; j < Tile::TN; ++j)
            if (cok[j]) dx[ofs[j] + c * g.HW] = acc[i][j];
    }
}

// ---- backward filter ----------------------------------------------------------------------------

// A[k][npq] = dy[n, k, p, q]: rows are filters, read along the reduction (consecutive p, q).
template <typename T, int BM>
struct ConvFiltDy {
    typedef ConvRowMap<BM> Map;
    const T* dyk;
    bool ok;
    int kk0;
    ConvDigits d;  // (n, p, q) of the thread's next element
    const ConvGeom& g;
    __device__ __forceinline__ ConvFiltDy(const T* dy, const ConvGeom& g_, long long m0, long long k0, int tid)
        : g(g_) {
        const long long k = m0 + Map::i(tid);
        ok = k < g.K;
        dyk = ok ? dy + k * g.PQ : dy;
        kk0 = Map::kk(tid);
        d.set(k0 + kk0, g.P, g.Q);
    }
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[Map::E]) {
#pragma unroll
        for (int e = 0; e < Map::E; ++e) {
            r[e] = (ok && kk0 + e < k_left) ? dyk[d.a * g.KPQ + (long long)d.b * g.Q + d.d] : T(0);
            d.step(1, g.P, g.Q);
        }
        if (Map::REST) d.step(Map::REST, g.P, g.Q);
    }
};

// B[npq][crs] = x[n, c, p*sh + r*dh - pt, q*sw + s*dw - pl] (zero outside the image), read along
// the reduction: consecutive threads take consecutive (n, p, q).
template <typename T, int BN>
struct ConvFiltX {
    typedef ConvRowMap<BN> Map;
    const T* xc;
    int roff, soff, kk0;
    bool ok;
    ConvDigits d;  // (n, p, q) of the thread's next element
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
        kk0 = Map::kk(tid);
        d.set(k0 + kk0, g.P, g.Q);
    }
    __device__ __forceinline__ void fetch(long long k_left, T (&r)[Map::E]) {
#pragma unroll
        for (int e = 0; e < Map::E; ++e) {
            T v = T(0);
            if (ok && kk0 + e < k_left) {
                const int h = d.b * g.sh + roff, w = d.d * g.sw + soff;
                if ((unsigned)h < (unsigned)g.H && (unsigned)w < (unsigned)g.W)
                    v = xc[d.a * g.CHW + (long long)h * g.W + w];
            }
            r[e] = v;
            d.step(1, g.P, g.Q);
        }
        if (Map::REST) d.step(Map::REST, g.P, g.Q);
    }
};

// Split blockIdx.z reduces n*p*q in [z * chunk, min((z + 1) * chunk, N*P*Q)) into out + z * K * CRS.
template <typename T, class Tile>
__device__ __forceinline__ void conv_bwd_filter_body(const T* __restrict__ dy, const T* __restrict__ x,
                                                     T* __restrict__ out, const ConvGeom& g, long long chunk) {
    const long long npq = (long long)g.N * g.PQ;
    const long long k0 = (long long)blockIdx.z * chunk;
    const long long k1 = k0 + chunk < npq ? k0 + chunk : npq;
    const long long k_len = k1 > k0 ? k1 - k0 : 0;
    const long long n0 = (long long)blockIdx.x * Tile::BN;
    const long long m0 = (long long)blockIdx.y * Tile::BM;
    const int tid = threadIdx.x;
    T acc[Tile::TM][Tile::TN];
    {
        ConvFiltDy<T, Tile::BM> la(dy, g, m0, k0, tid);
        ConvFiltX<T, Tile::BN> lb(x, g, n0, k0, tid);
        conv_mainloop<T, Tile>(la, lb, k_len, acc);
    }
    const int tx = tid % Tile::TX, ty = tid / Tile::TX;
    T* o = out + (long long)blockIdx.z * g.K * g.CRS;
#pragma unroll
    for (int i = 0; i < Tile::TM; ++i) {
        const long long k = m0 + conv_row<Tile>(ty, i);
        if (k >= g.K) continue;
#pragma unroll
        for (int j = 0; j < Tile::TN; ++j) {
            const long long col = n0 + conv_col<Tile>(tx, j);
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

// The four implicit-GEMM kernels of one tile and dtype: conv_fwd<TAG>, conv_bwd_data_s1<TAG>,
// conv_bwd_data<TAG>, conv_bwd_filter<TAG>; MINB resident blocks per SM bound the registers.
#define CONV_GEMM_ENTRIES(TAG, T, TILE, MINB)                                                               \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS, MINB)                                        \
    conv_fwd##TAG(const T* __restrict__ x, const T* __restrict__ w, const T* __restrict__ b,               \
                  T* __restrict__ y, CONV_GEOM_PARAMS, int has_bias, int act) {                             \
        const ConvGeom g = conv_geom(CONV_GEOM_ARGS);                                                       \
        conv_fwd_body<T, TILE>(x, w, b, y, g, has_bias, act);                                               \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS, MINB)                                        \
    conv_bwd_data_s1##TAG(const T* __restrict__ dy, const T* __restrict__ w, T* __restrict__ dx,           \
                          CONV_GEOM_PARAMS) {                                                                \
        const ConvGeom g = conv_geom(CONV_GEOM_ARGS);                                                       \
        conv_bwd_data_body<T, true, TILE>(dy, w, dx, g);                                                    \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS, MINB)                                        \
    conv_bwd_data##TAG(const T* __restrict__ dy, const T* __restrict__ w, T* __restrict__ dx,              \
                       CONV_GEOM_PARAMS) {                                                                   \
        const ConvGeom g = conv_geom(CONV_GEOM_ARGS);                                                       \
        conv_bwd_data_body<T, false, TILE>(dy, w, dx, g);                                                   \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(CONV_THREADS, MINB)                                        \
    conv_bwd_filter##TAG(const T* __restrict__ dy, const T* __restrict__ x, T* __restrict__ out,           \
                         CONV_GEOM_PARAMS, long long chunk) {                                                \
        const ConvGeom g = conv_geom(CONV_GEOM_ARGS);                                                       \
        conv_bwd_filter_body<T, TILE>(dy, x, out, g, chunk);                                                \
    }

#define CONV_ENTRIES(SFX, T)                                                                                  \
    extern "C" __global__ void conv_split_sum_##SFX(T* __restrict__ dw, const T* __restrict__ part,        \
                                                    long long count, long long splits) {                     \
        conv_split_sum_body<T>(dw, part, count, splits);                                                    \
    }                                                                                                        \
    extern "C" __global__ void __launch_bounds__(CONV_BIAS_THREADS)                                         \
    conv_bias_grad_##SFX(T* __restrict__ db, const T* __restrict__ dy, long long N, long long K,           \
                         long long PQ) {                                                                     \
        conv_bias_grad_body<T>(db, dy, N, K, PQ);                                                           \
    }

CONV_GEMM_ENTRIES(_f32, float, ConvTileS, 2)
CONV_GEMM_ENTRIES(_f64, double, ConvTileS, 2)
CONV_GEMM_ENTRIES(_l_f32, float, ConvTileL, 1)
CONV_GEMM_ENTRIES(_w_f32, float, ConvTileW, 1)
CONV_ENTRIES(f32, float)
CONV_ENTRIES(f64, double)
