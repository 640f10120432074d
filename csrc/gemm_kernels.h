// Internal to gemm.cpp and the gemm_ukernel_*.cpp files: block sizes and register micro-kernels.
//
// A micro-kernel computes one MR x NR tile of C, holding it in registers for k rank-1 updates:
//
//   C[i, j] = alpha * sum_p a(i, p) * b(p, j) + beta * C[i, j]     (0 <= i < MR, 0 <= j < NR;
//                                                                   beta == 0: C is not read)
//
// Two operand layouts share one kernel body:
//   packed: a(i, p) = a[p * MR + i]     (an MR-row micro-panel of A~, column after column)
//           b(p, j) = b[p * NR + j]     (an NR-column micro-panel of B~, row after row)
//   direct: a(i, p) = a[i * rsa + p * csa]   (A read in place, either orientation)
//           b(p, j) = b[p * rsb + j]         (rows of op(B) read in place; NR valid columns)
// Both always read and write a whole MR x NR tile; the caller pads or redirects edge tiles.
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
inline constexpr GemmBlocks kSgemmGeneric = { 6,  8, 192, 256, 4096};  // 12 xmm (SSE2) accumulators
inline constexpr GemmBlocks kDgemmGeneric = { 6,  4, 192, 256, 2048};  // 12 xmm (SSE2) accumulators

template <typename T>
using PackedKernel = void (*)(index_t k, const T* a, const T* b, T* c, index_t ldc, T alpha, T beta);
template <typename T>
using DirectKernel = void (*)(index_t k, const T* a, index_t rsa, index_t csa, const T* b, index_t rsb, T* c,
                              index_t ldc, T alpha, T beta);

// Per-ISA kernels, each for the MR x NR of its row above.
void sgemm_packed_avx512(index_t k, const float* a, const float* b, float* c, index_t ldc, float alpha,
                         float beta);
void sgemm_direct_avx512(index_t k, const float* a, index_t rsa, index_t csa, const float* b, index_t rsb,
                         float* c, index_t ldc, float alpha, float beta);
void sgemm_packed_avx2(index_t k, const float* a, const float* b, float* c, index_t ldc, float alpha,
                       float beta);
void sgemm_direct_avx2(index_t k, const float* a, index_t rsa, index_t csa, const float* b, index_t rsb,
                       float* c, index_t ldc, float alpha, float beta);
void sgemm_packed_generic(index_t k, const float* a, const float* b, float* c, index_t ldc, float alpha,
                          float beta);
void sgemm_direct_generic(index_t k, const float* a, index_t rsa, index_t csa, const float* b, index_t rsb,
                          float* c, index_t ldc, float alpha, float beta);
void dgemm_packed_generic(index_t k, const double* a, const double* b, double* c, index_t ldc, double alpha,
                          double beta);
void dgemm_direct_generic(index_t k, const double* a, index_t rsa, index_t csa, const double* b,
                          index_t rsb, double* c, index_t ldc, double alpha, double beta);

}  // namespace gemm_detail
}  // namespace pydl
