// Internal to gemm.cpp and the gemm_ukernel_*.cpp files: block sizes and register micro-kernels.
//
// A micro-kernel computes one MR x NR tile of C, holding it in registers for k rank-1 updates:
//
//   C[i, j] = alpha * sum_p a(i, p) * b(p, j) + beta * C[i, j]     (0 <= i < mr, 0 <= j < nr;
//                                                                   beta == 0: C is not read)
// with its operands addressed through strides:
//   a(i, p) = a[i * rsa + p * csa]   packed A~ micro-panel: rsa = 1, csa = MR;
//                                    A in place: (lda, 1), or (1, lda) when transposed
//   b(p, j) = b[p * rsb + j]         packed B~ micro-panel: rsb = NR; rows of B in place: ldb
// Kernels read all MR rows of a and all NR columns of b (the caller zero-pads partial panels) but
// write only the top-left mr x nr part of the C tile (1 <= mr <= MR, 1 <= nr <= NR); how an ISA
// does that (masks, a row variant, a scratch tile) is its own business.
#pragma once

#include "common.h"
#include "cpu_features.h"

namespace pydl {
namespace gemm_detail {

// Block sizes, one row per ISA. The five loops of gemm.cpp and where their blocks live:
//   NR, MR: the register tile, MR x NR accumulators                       -> registers
//   KC: depth of one rank-KC update. Each C tile is loaded and stored K / KC times, so KC is long;
//       the kernel then streams both micro-panels (A~: MR x KC, B~: KC x NR, 48 + 128 KiB for
//       avx512) from L2, at ~15 bytes/cycle, a quarter of what the L2 delivers        -> L2 -> L1
//   MC: A~ = MC x KC packed rows of op(A), one per thread, reused by every NR panel  -> L2 (1 MiB)
//   NC: B~ = KC x NC packed columns of op(B), shared by the threads                  -> L3 (32 MiB)
// Measured on the target (AMD EPYC, 48 KiB L1d, 1 MiB L2 per core, 32 MiB L3): keeping a B~
// micro-panel in L1 (KC = 256) ran 8-12% slower at 1024^3 and 2048^3 than KC = 1024, where fewer
// passes over C win; MC from 96 to 384 made no difference at that KC. The driver cuts K, M and N
// into equal blocks no larger than these (no thin remainder block), so they are upper bounds.
//   pack_b_rows: B is also packed, whatever its row stride, once C has at least this many rows
//       (0: only by the stride rule in gemm.cpp). AVX2 (Zen 3, 32 KiB 8-way L1): B's micro-panel
//       read in place takes 64 bytes from each of KC rows, which for the usual power-of-two
//       strides fall into a few L1 sets; packed, it is reused by M / MR row panels. 256x3136x128
//       on 1 thread, best of 25, four runs: 49-73 -> 63-80 GFLOP/s; 64x784x128 (M = 64) was 10%
//       faster with B in place, hence the row threshold. AVX-512 (Zen 4, 2 threads, both settings
//       interleaved in one process, either order): packing B was 2-18% slower on 256x3136x128,
//       64x784x128, 128x784x256 and 512x256x128, so it is off there.
//   own_kc: KC cap (0: none) when C is one row block with B packed per thread and A read in place
//       (the own-columns path of gemm.cpp): B~'s micro-panel (own_kc x NR) then fits L1 and is
//       reused by every row panel from there. AVX-512 (Intel Xeon, 48 KiB L1, 2 threads, both
//       settings interleaved in one process): 64x512x2048 233 -> 254 GFLOP/s, A^T shapes
//       128x1600x1024 (an LSTM's dW) 262 -> 286, 96x2048x1024 244 -> 256, 128x800x2048 260 ->
//       278; with A packed, or C in several row blocks, KC 256 was 1-4% slower (160x1024x1024,
//       128x2048x1024). AVX2's panel (KC 512 x 16) already fits.
struct GemmBlocks {
  int MR, NR;
  index_t MC, KC, NC;
  index_t pack_b_rows;
  index_t own_kc;
};

//                                           MR  NR   MC    KC    NC  pack_b_rows  own_kc
inline constexpr GemmBlocks kSgemmAvx512  = {12, 32, 192, 1024, 2048,   0,  256};  // 24 zmm accumulators
inline constexpr GemmBlocks kSgemmAvx2    = { 6, 16, 192,  512, 2048, 192,    0};  // 12 ymm accumulators
inline constexpr GemmBlocks kSgemmGeneric = { 4,  8, 192,  512, 2048,   0,    0};  // 8 xmm (SSE2) accumulators
inline constexpr GemmBlocks kDgemmGeneric = { 4,  4, 192,  512, 1024,   0,    0};  // 8 xmm (SSE2) accumulators

template <typename T>
using Kernel = void (*)(index_t k, const T* a, index_t rsa, index_t csa, const T* b, index_t rsb, T* c, index_t ldc,
                        T alpha, T beta, int mr, int nr);

// Per-ISA kernels, each for the MR x NR of its row above.
void sgemm_kernel_avx512(index_t k, const float* a, index_t rsa, index_t csa, const float* b, index_t rsb,
                         float* c, index_t ldc, float alpha, float beta, int mr, int nr);
void sgemm_kernel_avx2(index_t k, const float* a, index_t rsa, index_t csa, const float* b, index_t rsb,
                       float* c, index_t ldc, float alpha, float beta, int mr, int nr);
void sgemm_kernel_generic(index_t k, const float* a, index_t rsa, index_t csa, const float* b, index_t rsb,
                          float* c, index_t ldc, float alpha, float beta, int mr, int nr);
void dgemm_kernel_generic(index_t k, const double* a, index_t rsa, index_t csa, const double* b, index_t rsb,
                          double* c, index_t ldc, double alpha, double beta, int mr, int nr);

}  // namespace gemm_detail
}  // namespace pydl
