// Fused scaled-dot-product attention (FlashAttention-style forward and FlashAttention-2 backward).
//
// Letters: B batch, H heads, T query positions, S key positions, d query/key width, dv value
// width. Layout as PyTorch's: q (B, H, T, d), k (B, H, S, d), v (B, H, S, dv), out (B, H, T, dv),
// lse (B, H, T). All C-contiguous.
//
//   out = softmax(scale * q k^T + mask) v          (row-wise softmax over the S keys)
//   lse = log sum_j exp(scale * q_i . k_j + mask_ij)  (natural log; -inf for a fully masked row)
//
// Masks: none, boolean (uint8, nonzero = attend, as PyTorch's boolean attn_mask) or additive (the
// dtype of q), of shape (mB, mH, mT, mS) where each size is 1 (broadcast) or the full B, H, T, S.
// Causal (PyTorch's convention, top-left aligned): query i attends the keys j <= i; combined with a
// mask both apply. A row with no key left (fully masked) gives out = 0 and lse = -inf (its
// gradients are 0), not NaN.
// Dropout (training only) zeroes P_ij = softmax(...)_ij with probability p and scales the kept ones
// by 1 / (1 - p); the decision is a counter-based hash of (seed, b, h, i, j) (attn_dropout_keep
// below), so the backward regenerates it and nothing T x S is ever stored.
//
// Algorithm (forward): per (b, h), query rows in blocks of BQ, key columns in blocks of BK; for
// each block pair S_ij = Q_i K_j^T by a register tile, then per row the running max m and sum l are
// updated (online softmax) and O_i = exp(m_old - m_new) O_i + P_ij V_j by the same tile (the
// rescale fused into its load of O). Causal skips key blocks wholly above the diagonal.
// Backward (FlashAttention-2): D_i = rowsum(dO_i . O_i); per block pair recompute
// P = exp(S - lse), dP = dO V^T, dS = P . (dP - D); dV += P^T dO, dK += scale dS^T Q,
// dQ += scale dS K. Every sum has a fixed order (key blocks ascending for dQ, query blocks
// ascending for dK / dV), so results are bitwise the same for any thread count.
#pragma once

#include <cstdint>

#include "common.h"

namespace pydl {

enum class AttnMaskKind : int { none = 0, boolean = 1, additive = 2 };

struct AttnMask {
  AttnMaskKind kind = AttnMaskKind::none;
  const void* data = nullptr;  // uint8 (boolean) or F (additive), C-contiguous (mB, mH, mT, mS)
  index_t mB = 1, mH = 1, mT = 1, mS = 1;
};

struct AttnSizes {
  index_t B = 0, H = 0, T = 0, S = 0, d = 0, dv = 0;
  double scale = 1.0;
  bool causal = false;
  double dropout = 0.0;  // in [0, 1); 0 = no dropout
  std::uint64_t seed = 0;
};

// Checks the sizes, mask shape, scale and dropout; throws std::invalid_argument("[op] ...").
void attention_check(const AttnSizes& z, const AttnMask& mask, const char* op);

// Writes (=) out (B, H, T, dv) and lse (B, H, T).
template <typename F>
void attention_forward(F* out, F* lse, const F* q, const F* k, const F* v, const AttnMask& mask,
                       const AttnSizes& z);

// Writes (=) dq (B, H, T, d), dk (B, H, S, d), dv (B, H, S, dv) from the forward's out and lse.
template <typename F>
void attention_backward(F* dq, F* dk, F* dv, const F* q, const F* k, const F* v, const F* out, const F* lse,
                        const F* dout, const AttnMask& mask, const AttnSizes& z);

// Obvious twins for the tests: one query row at a time, the whole row of S scores in double
// (O(S) memory), a two-pass softmax, libm exp. Same arguments as above.
template <typename F>
void attention_forward_naive(F* out, F* lse, const F* q, const F* k, const F* v, const AttnMask& mask,
                             const AttnSizes& z);
template <typename F>
void attention_backward_naive(F* dq, F* dk, F* dv, const F* q, const F* k, const F* v, const AttnMask& mask,
                              const F* dout, const AttnSizes& z);

// ---- dropout decision: a counter-based hash ------------------------------------------------
// row key r = low 32 bits of splitmix64(splitmix64(seed) + ((b H + h) T + i) * golden64);
// u = lowbias32(r ^ (j * golden32)); keep the element when (u >> 8) >= round(p * 2^24).
inline std::uint64_t attn_splitmix64(std::uint64_t x) {
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}
inline std::uint32_t attn_row_key(std::uint64_t seed, index_t b, index_t h, index_t i, index_t H, index_t T) {
  const std::uint64_t idx = static_cast<std::uint64_t>((b * H + h) * T + i);
  return static_cast<std::uint32_t>(attn_splitmix64(attn_splitmix64(seed) + idx * 0x9E3779B97F4A7C15ull));
}
inline std::uint32_t attn_lowbias32(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}
inline std::int32_t attn_dropout_threshold(double p) {  // keep when (u >> 8) >= threshold
  return static_cast<std::int32_t>(p * 16777216.0 + 0.5);
}
inline bool attn_dropout_keep(std::uint32_t row_key, index_t j, std::int32_t threshold) {
  const std::uint32_t u = attn_lowbias32(row_key ^ (static_cast<std::uint32_t>(j) * 0x9E3779B9u));
  return static_cast<std::int32_t>(u >> 8) >= threshold;
}

namespace detail {
// Register tiles and blocks, one row per instruction set. The tile holds MR x NR accumulators,
// NR / lanes vectors of the B operand and one broadcast of A (each ISA's file static_asserts
// that they fit its register file). BQ (a multiple of MR) query rows x BK (a multiple of NR) key
// columns per block: the score block S_ij and P_ij (BQ x BK), Q_i and O_i stay in L1 / L2.
struct AttnTile {
  int MR, NR, BQ, BK;
};
//                                            MR  NR  BQ  BK
inline constexpr AttnTile kAttnTileAvx512  = {8, 32, 64, 64};  // 16 zmm accumulators + 2 + 1 of 32
inline constexpr AttnTile kAttnTileAvx2    = {6, 16, 48, 128};  // 12 ymm accumulators + 2 + 1 of 16
inline constexpr AttnTile kAttnTileGeneric = {4, 8, 32, 64};   // 8 xmm (SSE2) accumulators + 2 + 1 of 16
inline constexpr AttnTile kAttnTileDouble  = {4, 8, 32, 64};   // plain loops (the float64 check path)

struct AttnKernels {
  void (*forward)(float* out, float* lse, const float* q, const float* k, const float* v, const AttnMask& mask,
                  const AttnSizes& z);
  void (*backward)(float* dq, float* dk, float* dv, const float* q, const float* k, const float* v,
                   const float* out, const float* lse, const float* dout, const AttnMask& mask,
                   const AttnSizes& z);
};
#if defined(PYDL_X86)
const AttnKernels* attention_kernels_avx2();
const AttnKernels* attention_kernels_avx512();
#endif
}  // namespace detail

}  // namespace pydl
