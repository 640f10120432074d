// Runs pydl/cuda/kernels/gemm.cu on the CPU, no GPU needed: each CUDA thread of a block is a
// ucontext fiber, __syncthreads switches back to a scheduler that runs every fiber of the block up
// to the same barrier (and fails when some finish while others wait: a divergent barrier),
// __shared__ arrays are statics (one block runs at a time). Every gemm_* entry is checked against a float64 product on edge shapes, alpha/beta,
// NaN-poisoned C with beta == 0, pointers off a 16-byte boundary for the scalar-load kernels and
// guard zones around C. tests/test_cuda_gemm_cpu.py builds and runs it:
//   g++ -std=c++17 -O1 -DGEMM_CU='"pydl/cuda/kernels/gemm.cu"' tests/gemm_cu_on_cpu.cpp
//   ./a.out [quick]
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <random>
#include <string>
#include <vector>
#include <ucontext.h>
struct dim3 { unsigned x = 1, y = 1, z = 1; };
dim3 threadIdx, blockIdx, blockDim, gridDim;
void gemm_emu_sync();
#define __device__
#define __global__
#define __forceinline__ inline
#define __shared__ static
#define __align__(n) __attribute__((aligned(n)))
#define __launch_bounds__(a, b)
#define __syncthreads() gemm_emu_sync()
struct alignas(16) float4 { float x, y, z, w; };
struct alignas(8) float2 { float x, y; };
struct alignas(16) double2 { double x, y; };
using std::fma;
#include GEMM_CU

template <typename T>
using Kern = void (*)(const T*, const T*, T*, long long, long long, long long, long long, long long, T, T);

// One block at a time: 256 fibers, each run until it reaches __syncthreads or returns.
struct Pool {
    static constexpr int NT = 256, STACK = 1 << 16;
    ucontext_t sched, ctx[NT];
    std::vector<char> stacks = std::vector<char>((size_t)NT * STACK);
    bool finished[NT];
    int current = -1;
    std::function<void()> body;
    static Pool* self;

    static void entry() {
        self->body();
        self->finished[self->current] = true;
    }
    void sync() { swapcontext(&ctx[current], &sched); }
    void run(long long grid, std::function<void()> kernel_body) {
        body = std::move(kernel_body);
        self = this;
        blockDim.x = NT; gridDim.x = (unsigned)grid;
        for (long long b = 0; b < grid; ++b) {
            blockIdx.x = (unsigned)b;
            for (int t = 0; t < NT; ++t) {
                getcontext(&ctx[t]);
                ctx[t].uc_stack.ss_sp = &stacks[(size_t)t * STACK];
                ctx[t].uc_stack.ss_size = STACK;
                ctx[t].uc_link = &sched;
                makecontext(&ctx[t], entry, 0);
                finished[t] = false;
            }
            for (;;) {  // one pass: every fiber runs to its next barrier (or to its end)
                for (int t = 0; t < NT; ++t) {
                    current = t;
                    threadIdx.x = t;
                    swapcontext(&sched, &ctx[t]);
                }
                int done = 0;
                for (int t = 0; t < NT; ++t) done += finished[t];
                if (done == NT) break;
                if (done) { printf("divergent __syncthreads: %d of %d threads returned\n", done, NT); std::exit(2); }
            }
        }
    }
};
Pool* Pool::self;
void gemm_emu_sync() { Pool::self->sync(); }
Pool* g_pool;

template <typename T>
void launch(Kern<T> f, long long grid, const T* A, const T* B, T* C, long long m, long long n, long long k,
            long long lda, long long ldb, T alpha, T beta) {
    g_pool->run(grid, [=] { f(A, B, C, m, n, k, lda, ldb, alpha, beta); });
}

struct Entry { const char* name; void* fn; int bm, bn; bool ta, tb, vec, dbl; };
#define E(TILE, BM, BN, SFX, DBL) \
  {"gemm_" #TILE "_nn_v_" #SFX, (void*)gemm_##TILE##_nn_v_##SFX, BM, BN, 0, 0, 1, DBL}, \
  {"gemm_" #TILE "_nn_x_" #SFX, (void*)gemm_##TILE##_nn_x_##SFX, BM, BN, 0, 0, 0, DBL}, \
  {"gemm_" #TILE "_nt_v_" #SFX, (void*)gemm_##TILE##_nt_v_##SFX, BM, BN, 0, 1, 1, DBL}, \
  {"gemm_" #TILE "_nt_x_" #SFX, (void*)gemm_##TILE##_nt_x_##SFX, BM, BN, 0, 1, 0, DBL}, \
  {"gemm_" #TILE "_tn_v_" #SFX, (void*)gemm_##TILE##_tn_v_##SFX, BM, BN, 1, 0, 1, DBL}, \
  {"gemm_" #TILE "_tn_x_" #SFX, (void*)gemm_##TILE##_tn_x_##SFX, BM, BN, 1, 0, 0, DBL}, \
  {"gemm_" #TILE "_tt_v_" #SFX, (void*)gemm_##TILE##_tt_v_##SFX, BM, BN, 1, 1, 1, DBL}, \
  {"gemm_" #TILE "_tt_x_" #SFX, (void*)gemm_##TILE##_tt_x_##SFX, BM, BN, 1, 1, 0, DBL}

template <typename T>
int run_case(const Entry& e, long long m, long long n, long long k, int shift, double alpha, double beta, std::mt19937& rng) {
    long long ar = e.ta ? k : m, ac = e.ta ? m : k, br = e.tb ? n : k, bc = e.tb ? k : n;
    std::normal_distribution<double> nd;
    // over-allocate so a shifted pointer stays in bounds; guard zone of NaN around data
    std::vector<T> abuf(ar * ac + 64, NAN), bbuf(br * bc + 64, NAN), cbuf(m * n + 64, NAN);
    T* A = abuf.data() + 16 + shift; T* B = bbuf.data() + 16 + shift; T* C = cbuf.data() + 16 + shift;
    for (long long i = 0; i < ar * ac; ++i) A[i] = (T)nd(rng);
    for (long long i = 0; i < br * bc; ++i) B[i] = (T)nd(rng);
    std::vector<double> c0(m * n);
    for (long long i = 0; i < m * n; ++i) { c0[i] = (T)nd(rng); C[i] = beta == 0 ? (T)NAN : (T)c0[i]; }
    long long tiles = ((m + e.bm - 1) / e.bm) * ((n + e.bn - 1) / e.bn);
    launch<T>((Kern<T>)e.fn, tiles, A, B, C, m, n, k, ac, bc, (T)alpha, (T)beta);
    int bad = 0;
    for (long long i = 0; i < m; ++i)
        for (long long j = 0; j < n; ++j) {
            double s = 0, mag = 0;
            for (long long p = 0; p < k; ++p) {
                double a = e.ta ? A[p * m + i] : A[i * k + p];
                double b = e.tb ? B[j * k + p] : B[p * n + j];
                s += a * b; mag += std::fabs(a * b);
            }
            double want = alpha * s + (beta != 0 ? beta * c0[i * n + j] : 0.0);
            mag = std::fabs(alpha) * mag + std::fabs(beta * c0[i * n + j]) + 1e-30;
            double got = C[i * n + j];
            double tol = sizeof(T) == 4 ? 1e-5 : 1e-13;
            if (!(std::fabs(got - want) <= tol * mag)) {
                if (bad < 3) printf("  %s %lldx%lldx%lld shift=%d a=%g b=%g: C[%lld,%lld]=%g want %g\n", e.name, m, n, k, shift, alpha, beta, i, j, got, want);
                ++bad;
            }
        }
    // guard zones around C untouched
    for (int g = 0; g < 16 + shift; ++g) if (!std::isnan(cbuf[g])) { printf("  %s wrote before C\n", e.name); ++bad; break; }
    for (size_t g = 16 + shift + m * n; g < cbuf.size(); ++g) if (!std::isnan(cbuf[g])) { printf("  %s wrote past C\n", e.name); ++bad; break; }
    return bad;
}

template <typename T>
int scale_case(void (*f)(T*, long long, T), long long total, double beta, std::mt19937& rng) {
    std::normal_distribution<double> nd;
    std::vector<T> c(total + 32, NAN), c0(total);
    for (long long i = 0; i < total; ++i) c[16 + i] = c0[i] = beta == 0 ? (T)NAN : (T)nd(rng);
    T* cp = c.data() + 16;
    g_pool->run(3, [=] { f(cp, total, (T)beta); });
    int bad = 0;
    for (long long i = 0; i < total; ++i)
        if (!(c[16 + i] == (beta == 0 ? T(0) : (T)(T(beta) * c0[i])))) ++bad;
    for (int g = 0; g < 16; ++g) bad += !std::isnan(c[g]) + !std::isnan(c[16 + total + g]);
    return bad;
}

int main(int argc, char** argv) {
    const bool quick = argc > 1 && std::string(argv[1]) == "quick";
    static Pool pool;
    g_pool = &pool;
    Entry entries[] = {E(l, 128, 128, f32, 0), E(m, 128, 64, f32, 0), E(s, 64, 64, f32, 0), E(s, 64, 64, f64, 1)};
    std::mt19937 rng(1);
    struct S { long long m, n, k; };
    std::vector<S> shapes = {{1, 1, 1}, {37, 129, 71}, {130, 67, 9}, {256, 192, 64}, {3, 260, 4}};
    if (!quick) {
        std::vector<S> more = {{128, 128, 128}, {257, 131, 100}, {5, 3, 1}, {64, 64, 8}, {200, 300, 17}, {1100, 3, 12}};
        shapes.insert(shapes.end(), more.begin(), more.end());
    }
    const double ab[][2] = {{1.0, 0.0}, {-1.5, 0.5}};
    int total_bad = 0, runs = 0;
    for (auto& e : entries) {
        int bad = 0, which = 0;
        for (auto& s : shapes) {
            for (int shift : {0, 1}) {
                if (e.vec && shift) continue;  // the host never picks a vector kernel for a shifted pointer
                if (e.vec) {  // vector kernels need every leading dimension a multiple of 16 bytes
                    int w = e.dbl ? 2 : 4;
                    long long lda = e.ta ? s.m : s.k, ldb = e.tb ? s.k : s.n;
                    if (lda % w || ldb % w || s.n % w) continue;
                }
                for (int x = 0; x < 2; ++x) {
                    if (quick && x != (which++ & 1)) continue;
                    bad += e.dbl ? run_case<double>(e, s.m, s.n, s.k, shift, ab[x][0], ab[x][1], rng)
                                 : run_case<float>(e, s.m, s.n, s.k, shift, ab[x][0], ab[x][1], rng);
                    ++runs;
                }
            }
        }
        printf("%-18s %s\n", e.name, bad ? "FAIL" : "ok");
        total_bad += bad;
    }
    for (long long total : {1LL, 1000LL, 5000LL}) {
        for (double beta : {0.0, -0.5}) {
            int bad = scale_case<float>(gemm_scale_f32, total, beta, rng) + scale_case<double>(gemm_scale_f64, total, beta, rng);
            if (bad) printf("gemm_scale total=%lld beta=%g FAIL\n", total, beta);
            total_bad += bad;
            runs += 2;
        }
    }
    printf("%d runs, %d bad elements\n", runs, total_bad);
    return total_bad != 0;
}
