// Runs pydl/cuda/kernels/conv.cu on the CPU, no GPU needed: each CUDA thread of a block is a
// ucontext fiber, __syncthreads switches back to a scheduler that runs every fiber of the block up
// to the same barrier (and fails when some finish while others wait: a divergent barrier),
// __shared__ arrays are statics (one block runs at a time). Every conv_* entry is checked against
// float64 loops on small geometries (strides, dilation, asymmetric padding, C = 1, K = 1, more
// than one tile per dimension, split weight-gradient reductions), in each block tile (64x64 for
// float and double, 128x128 and 64x256 for float), with NaN-poisoned outputs and guard zones. tests/test_cuda_conv_cpu.py builds and runs it:
//   g++ -std=c++17 -O1 -DCONV_CU='"pydl/cuda/kernels/conv.cu"' tests/conv_cu_on_cpu.cpp && ./a.out
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <random>
#include <string>
#include <vector>
#include <ucontext.h>
struct dim3 { unsigned x = 1, y = 1, z = 1; };
dim3 threadIdx, blockIdx, blockDim, gridDim;
void conv_emu_sync();
#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define __restrict__
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(...)
#define __syncthreads() conv_emu_sync()
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(16) double2 { double x, y; };
using std::fma;
#include CONV_CU

struct Pool {
    static constexpr int STACK = 1 << 16;
    int nt = 0;
    ucontext_t sched;
    std::vector<ucontext_t> ctx;
    std::vector<char> stacks;
    std::vector<char> finished;
    int current = -1;
    std::function<void()> body;
    static Pool* self;

    static void entry() {
        self->body();
        self->finished[self->current] = 1;
    }
    void sync() { swapcontext(&ctx[current], &sched); }
    void run(dim3 grid, int threads, std::function<void()> kernel_body) {
        body = std::move(kernel_body);
        self = this;
        nt = threads;
        ctx.resize(nt);
        stacks.resize((size_t)nt * STACK);
        finished.resize(nt);
        blockDim.x = nt; blockDim.y = blockDim.z = 1;
        gridDim = grid;
        for (unsigned bz = 0; bz < grid.z; ++bz)
            for (unsigned by = 0; by < grid.y; ++by)
                for (unsigned bx = 0; bx < grid.x; ++bx) {
                    blockIdx.x = bx; blockIdx.y = by; blockIdx.z = bz;
                    for (int t = 0; t < nt; ++t) {
                        getcontext(&ctx[t]);
                        ctx[t].uc_stack.ss_sp = &stacks[(size_t)t * STACK];
                        ctx[t].uc_stack.ss_size = STACK;
                        ctx[t].uc_link = &sched;
                        makecontext(&ctx[t], entry, 0);
                        finished[t] = 0;
                    }
                    for (;;) {
                        for (int t = 0; t < nt; ++t) {
                            current = t;
                            threadIdx.x = t;
                            swapcontext(&sched, &ctx[t]);
                        }
                        int done = 0;
                        for (int t = 0; t < nt; ++t) done += finished[t];
                        if (done == nt) break;
                        if (done) { printf("divergent __syncthreads: %d of %d threads returned\n", done, nt); std::exit(2); }
                    }
                }
    }
};
Pool* Pool::self;
void conv_emu_sync() { Pool::self->sync(); }

struct G { long long N, C, H, W, K, R, S, sh, sw, pt, pb, pl, pr, dh, dw, P, Q; };

static long long tiles(long long n, long long t) { return (n + t - 1) / t; }

// A buffer with 16 NaN guard elements on each side.
template <typename T>
struct Buf {
    std::vector<T> v;
    long long n;
    explicit Buf(long long n_) : v(n_ + 32, (T)NAN), n(n_) {}
    T* p() { return v.data() + 16; }
    bool guards_ok() const {
        for (int i = 0; i < 16; ++i) if (!std::isnan(v[i]) || !std::isnan(v[16 + n + i])) return false;
        return true;
    }
};

template <typename T>
int compare(const char* what, const G& g, const T* got, const std::vector<double>& want, const std::vector<double>& mag,
            bool guards) {
    const double tol = sizeof(T) == 4 ? 2e-5 : 1e-12;
    int bad = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        if (!(std::fabs(got[i] - want[i]) <= tol * (mag[i] + 1e-30))) {
            if (bad < 3)
                printf("  %s (%s) N%lld C%lld %lldx%lld K%lld %lldx%lld s%lld,%lld d%lld,%lld pad %lld,%lld,%lld,%lld: "
                       "[%zu] = %g want %g\n", what, sizeof(T) == 4 ? "f32" : "f64", g.N, g.C, g.H, g.W, g.K, g.R, g.S,
                       g.sh, g.sw, g.dh, g.dw, g.pt, g.pb, g.pl, g.pr, i, (double)got[i], want[i]);
            ++bad;
        }
    }
    if (!guards) { printf("  %s wrote outside its output\n", what); ++bad; }
    return bad;
}

template <typename T, class Fwd, class BwdD, class BwdD1, class BwdF, class Sum, class Bias>
int run_case(G g, int splits, int act, long long bm, long long bn, Fwd fwd, BwdD bwd_d, BwdD1 bwd_d1, BwdF bwd_f, Sum ssum, Bias bias,
             std::mt19937& rng) {
    g.P = (g.H + g.pt + g.pb - ((g.R - 1) * g.dh + 1)) / g.sh + 1;
    g.Q = (g.W + g.pl + g.pr - ((g.S - 1) * g.dw + 1)) / g.sw + 1;
    const long long nx = g.N * g.C * g.H * g.W, nw = g.K * g.C * g.R * g.S, ny = g.N * g.K * g.P * g.Q;
    std::normal_distribution<double> nd;
    std::vector<T> x(nx), w(nw), b(g.K), dy(ny);
    for (auto& v : x) v = (T)nd(rng);
    for (auto& v : w) v = (T)nd(rng);
    for (auto& v : b) v = (T)nd(rng);
    for (auto& v : dy) v = (T)nd(rng);
    auto X = [&](long long n, long long c, long long h, long long v) { return (double)x[((n * g.C + c) * g.H + h) * g.W + v]; };
    std::vector<double> y_ref(ny), y_mag(ny), dx_ref(nx, 0.0), dx_mag(nx, 0.0), dw_ref(nw, 0.0), dw_mag(nw, 0.0),
        db_ref(g.K, 0.0), db_mag(g.K, 0.0);
    for (long long n = 0; n < g.N; ++n)
        for (long long k = 0; k < g.K; ++k)
            for (long long p = 0; p < g.P; ++p)
                for (long long q = 0; q < g.Q; ++q) {
                    const long long yi = ((n * g.K + k) * g.P + p) * g.Q + q;
                    double s = b[k], m = std::fabs((double)b[k]);
                    const double d = dy[yi];
                    db_ref[k] += d; db_mag[k] += std::fabs(d);
                    for (long long c = 0; c < g.C; ++c)
                        for (long long r = 0; r < g.R; ++r)
                            for (long long t = 0; t < g.S; ++t) {
                                const long long h = p * g.sh + r * g.dh - g.pt, v = q * g.sw + t * g.dw - g.pl;
                                if (h < 0 || h >= g.H || v < 0 || v >= g.W) continue;
                                const long long wi = ((k * g.C + c) * g.R + r) * g.S + t;
                                const double xv = X(n, c, h, v), wv = w[wi];
                                s += wv * xv; m += std::fabs(wv * xv);
                                const long long xi = ((n * g.C + c) * g.H + h) * g.W + v;
                                dx_ref[xi] += d * wv; dx_mag[xi] += std::fabs(d * wv);
                                dw_ref[wi] += d * xv; dw_mag[wi] += std::fabs(d * xv);
                            }
                    y_ref[yi] = act == 1 ? (s > 0 ? s : 0) : s;
                    y_mag[yi] = m;
                }
    int bad = 0;
    const long long crs = g.C * g.R * g.S;
    // forward, with and without bias
    for (int has_bias = 0; has_bias < 2; ++has_bias) {
        Buf<T> y(ny);
        Pool pool;
        dim3 grid; grid.x = (unsigned)tiles(g.N * g.P * g.Q, bn); grid.y = (unsigned)tiles(g.K, bm);
        pool.run(grid, CONV_THREADS, [&] {
            fwd(x.data(), w.data(), b.data(), y.p(), g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.P, g.Q, g.sh, g.sw, g.pt, g.pl,
                g.dh, g.dw, has_bias, act);
        });
        std::vector<double> want = y_ref;
        if (!has_bias) {  // y_ref holds act(s + b): rebuild without the bias
            for (long long n = 0; n < g.N; ++n)
                for (long long k = 0; k < g.K; ++k)
                    for (long long i = 0; i < g.P * g.Q; ++i) {
                        const long long yi = (n * g.K + k) * g.P * g.Q + i;
                        double s = 0;
                        for (long long c = 0; c < g.C; ++c)
                            for (long long r = 0; r < g.R; ++r)
                                for (long long t = 0; t < g.S; ++t) {
                                    const long long p = i / g.Q, q = i % g.Q;
                                    const long long h = p * g.sh + r * g.dh - g.pt, v = q * g.sw + t * g.dw - g.pl;
                                    if (h < 0 || h >= g.H || v < 0 || v >= g.W) continue;
                                    s += (double)w[((k * g.C + c) * g.R + r) * g.S + t] * X(n, c, h, v);
                                }
                        want[yi] = act == 1 ? (s > 0 ? s : 0) : s;
                    }
        }
        bad += compare<T>(has_bias ? "conv_fwd+bias" : "conv_fwd", g, y.p(), want, y_mag, y.guards_ok());
    }
    // backward data (the strided kernel always; the stride-1 one when it applies)
    for (int unit = 0; unit < 2; ++unit) {
        if (unit && (g.sh != 1 || g.sw != 1)) continue;
        Buf<T> dx(nx);
        Pool pool;
        dim3 grid; grid.x = (unsigned)tiles(g.N * g.H * g.W, bn); grid.y = (unsigned)tiles(g.C, bm);
        pool.run(grid, CONV_THREADS, [&] {
            if (unit)
                bwd_d1(dy.data(), w.data(), dx.p(), g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.P, g.Q, g.sh, g.sw, g.pt,
                       g.pl, g.dh, g.dw);
            else
                bwd_d(dy.data(), w.data(), dx.p(), g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.P, g.Q, g.sh, g.sw, g.pt, g.pl,
                      g.dh, g.dw);
        });
        bad += compare<T>(unit ? "conv_bwd_data_s1" : "conv_bwd_data", g, dx.p(), dx_ref, dx_mag, dx.guards_ok());
    }
    // backward filter: `splits` chunks of a multiple of 8, then the ordered sum
    {
        const long long npq = g.N * g.P * g.Q;
        long long chunk = tiles(tiles(npq, splits), 8) * 8;
        if (chunk < 8) chunk = 8;
        const long long nsplit = npq > 0 ? tiles(npq, chunk) : 1;
        Buf<T> part(nsplit * nw), dw(nw);
        Pool pool;
        dim3 grid; grid.x = (unsigned)tiles(crs, bn); grid.y = (unsigned)tiles(g.K, bm);
        grid.z = (unsigned)nsplit;
        T* target = nsplit == 1 ? dw.p() : part.p();
        pool.run(grid, CONV_THREADS, [&] {
            bwd_f(dy.data(), x.data(), target, g.N, g.C, g.H, g.W, g.K, g.R, g.S, g.P, g.Q, g.sh, g.sw, g.pt, g.pl,
                  g.dh, g.dw, chunk);
        });
        if (nsplit > 1) {
            Pool p2;
            dim3 g2; g2.x = 2;
            p2.run(g2, 64, [&] { ssum(dw.p(), part.p(), nw, nsplit); });
        }
        bad += compare<T>(nsplit > 1 ? "conv_bwd_filter+split_sum" : "conv_bwd_filter", g, dw.p(), dw_ref, dw_mag,
                          dw.guards_ok() && part.guards_ok());
    }
    {
        Buf<T> db(g.K);
        Pool pool;
        dim3 grid; grid.x = (unsigned)(g.K < 3 ? g.K : 3);
        pool.run(grid, CONV_BIAS_THREADS, [&] { bias(db.p(), dy.data(), g.N, g.K, g.P * g.Q); });
        bad += compare<T>("conv_bias_grad", g, db.p(), db_ref, db_mag, db.guards_ok());
    }
    return bad;
}

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "quick";
    std::mt19937 rng(1234);
    //            N  C  H  W  K  R  S sh sw pt pb pl pr dh dw
    std::vector<G> cases = {
        {2, 3, 7, 6, 5, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
        {1, 1, 9, 11, 1, 2, 3, 2, 3, 0, 1, 2, 0, 1, 1},
        {2, 4, 8, 9, 3, 3, 2, 3, 2, 1, 2, 0, 1, 2, 2},
        {1, 5, 10, 7, 70, 1, 1, 1, 1, 0, 0, 0, 0, 1, 1},
        {3, 9, 6, 5, 4, 3, 3, 1, 2, 2, 0, 1, 1, 2, 1},
        {1, 2, 13, 12, 66, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1},
        {0, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    };
    if (!quick) cases.push_back({2, 70, 5, 5, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1});
    int bad = 0, runs = 0;
    for (size_t i = 0; i < cases.size(); ++i) {
        const int splits = 1 + (int)(i % 3);
        const int act = (int)(i % 2);
        bad += run_case<float>(cases[i], splits, act, CONV_BM, CONV_BN, conv_fwd_f32, conv_bwd_data_f32,
                               conv_bwd_data_s1_f32, conv_bwd_filter_f32, conv_split_sum_f32, conv_bias_grad_f32, rng);
        bad += run_case<double>(cases[i], splits, act, CONV_BM, CONV_BN, conv_fwd_f64, conv_bwd_data_f64,
                                conv_bwd_data_s1_f64, conv_bwd_filter_f64, conv_split_sum_f64, conv_bias_grad_f64, rng);
        runs += 2;
    }
    // the float32 128x128 (l) and 64x256 (w) tiles: partial tiles along both dimensions, K and C
    // past one tile, odd C*R*S, strides, dilation, split weight gradients, relu
    std::vector<G> big = {
        {2, 29, 9, 8, 131, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
        {1, 130, 7, 6, 70, 3, 3, 2, 1, 1, 1, 0, 2, 1, 2},
        {3, 9, 11, 10, 67, 3, 2, 1, 2, 2, 1, 1, 0, 2, 1},
        {0, 3, 5, 5, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1, 1},
    };
    for (size_t i = 0; i < big.size(); ++i) {
        const int splits = 1 + (int)(i % 3);
        const int act = (int)((i + 1) % 2);
        bad += run_case<float>(big[i], splits, act, 128, 128, conv_fwd_l_f32, conv_bwd_data_l_f32,
                               conv_bwd_data_s1_l_f32, conv_bwd_filter_l_f32, conv_split_sum_f32, conv_bias_grad_f32, rng);
        bad += run_case<float>(big[i], splits, act, 64, 256, conv_fwd_w_f32, conv_bwd_data_w_f32,
                               conv_bwd_data_s1_w_f32, conv_bwd_filter_w_f32, conv_split_sum_f32, conv_bias_grad_f32, rng);
        runs += 2;
    }
    printf("%d cases, %d bad elements\n", runs, bad);
    return bad ? 1 : 0;
}
