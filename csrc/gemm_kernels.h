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

// Block sizes, one row per ISA. The five loops of gemm.cpp:
//   NC: B~ = KC x NC packed panel of op(B), shared by all threads      -> L3 (32 MiB, shared)
//   KC: depth of one rank-KC update; a B~ micro-panel KC x NR         -> L1 (48 KiB here, 32 KiB on Zen 4)
//   MC: A~ = MC x KC packed block of op(A), one per thread            -> L2 (1 MiB per core)
//   NR, MR: register tile (MR x NR accumulators)                      -> registers
// MC and NC must be multiples of MR and NR. The driver shrinks KC, MC and NC to equal-sized blocks
// (no thin remainder block), so these are upper bounds.
struct GemmBlocks {
  int MR, NR;
  index_t MC, KC, NC;
};

//                                           MR  NR   MC   KC    NC
inline constexpr GemmBlocks kSgemmAvx512  = {12, 32, 384, 256, 4096};  // 24 zmm accumulators
inline constexpr GemmBlocks kSgemmAvx2    = { 6, 16, 192, 256, 4096};  // 12 ymm accumulators
inline constexpr GemmBlocks kSgemmGeneric = { 4,  8, 192, 256, 4096};  // 8 xmm (SSE2) accumulators
inline constexpr GemmBlocks kDgemmGeneric = { 4,  4, 192, 256, 2048};  // 8 xmm (SSE2) accumulators

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
