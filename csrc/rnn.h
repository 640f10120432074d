// Recurrent layers over whole sequences: SimpleRNN (tanh / relu), LSTM and GRU.
//
// Letters: N batch, T time steps, C input features, H units, G gates per cell
// (SimpleRNN 1; LSTM 4 in the order i f g o; GRU 3 in the order r z n), GH = G*H.
// Layout: batch-major like the layer's input: x (N, T, C), out (N, T, H), every cache
// (N, T, X). Time step t of an (N, T, X) array is the strided matrix [N, X] with row stride
// T*X, which the GEMMs read and write in place, so nothing is ever transposed; all time steps
// together are the contiguous matrix [N*T, X].
// Weights: W [C, GH] input kernel, U [H, GH] recurrent kernel, b [GH]; the GRU also has the
// recurrent bias b_h [GH], kept apart because its n block is multiplied by r.
//
// Cells (s = sigmoid; "." products are element-wise):
//   SimpleRNN  h' = act(x W + h U + b)
//   LSTM       [i f g o] = [s s tanh s](x W + h U + b);  c' = f.c + i.g;  h' = o.tanh(c')
//   GRU        [r z] = s(x W + b + h U + b_h)[r z];  q = (h U + b_h)[n];
//              n = tanh((x W + b)[n] + r.q);  h' = (1 - z).n + z.h
//
// Algorithm (forward): per step, for each thread's block of units, x_t W and h_{t-1} U into all
// gates at once (packed panels of W and U kept per thread) and one fused point-wise cell.
// Backward (one reverse pass): per step the fused point-wise backward gives the
// pre-activation gradients dG_t, and dh_{t-1} = dG_t U^T (one GEMM); after the pass
// dW = X^T dG and dU = H_prev^T dG are single GEMMs over all N*T rows, db the column sums of dG,
// dX = dG W^T one GEMM.
#pragma once

#include <cstdint>

#include "common.h"

namespace pydl {

enum class RnnCell : int { rnn_tanh = 0, rnn_relu = 1, lstm = 2, gru = 3 };

int rnn_gates(RnnCell cell);  // G: 1, 1, 4, 3
const char* rnn_cell_name(RnnCell cell);

// Forward over a sequence. Writes (=):
//   out (N, T, H) every h_t; hT, cT (N, H) the final states (cT only for the LSTM, else null);
//   caches for rnn_backward:
//     gates (N, T, GH): the gate activations (SimpleRNN: h_t itself)
//     hprev (N, T, H):  h_{t-1} of every step (hprev[:, 0] = h0)
//     cs    (N, T, H):  LSTM c_t (null otherwise)
//     q     (N, T, H):  GRU (h_{t-1} U + b_h)[n block] (null otherwise)
//   Inference: gates, hprev, cs and q all null: no cache is written (the cell's gate values and
//   the LSTM's c_t go to per-thread scratch, c_{T-1} straight to cT), so the forward stores only
//   out, hT and cT.
// Inputs: x (N, T, C), W, U, b, b_h (GRU; null = zeros), h0, c0 ((N, H); null = zeros).
// Optional (null = none, the unmasked path):
//   mask (N, T) uint8: step t of row n runs only where mask != 0; at a masked step the state is
//     kept, h_t = h_{t-1}, c_t = c_{t-1} (out[n, t] = h_{t-1}), and the step's gates cache is 0.
//   rscale (N, H): recurrent dropout; h_{t-1} enters the product h U as h_{t-1} . rscale (one
//     scale per row and unit, the same at every step); everything else (the GRU's z h_{t-1},
//     the kept state, hprev) uses the unscaled h_{t-1}.
// T = 0 is defined: hT = h0, cT = c0.
template <typename F>
void rnn_forward(RnnCell cell, F* out, F* hT, F* cT, F* gates, F* hprev, F* cs, F* q, const F* x, const F* W,
                 const F* U, const F* b, const F* b_h, const F* h0, const F* c0, const std::uint8_t* mask,
                 const F* rscale, index_t N, index_t T, index_t C, index_t H);

// Backward through time. Writes (=): dx (N, T, C) (may be null: not computed), dh0 (N, H),
// dc0 (N, H) (LSTM), dW [C, GH], dU [H, GH], db [GH], db_h [GH] (GRU).
// Caches as written by rnn_forward; x, W, U, c0 (null = zeros), mask and rscale as given to it.
// Incoming gradients: dout (N, T, H) for every output (null = none), dhT, dcT (N, H) (null = zero).
// A masked step contributes nothing to dW, dU, db, db_h and gets dx = 0; the gradients of its
// state pass straight to the previous step (dh_{t-1} = dh_t + dout_t, dc_{t-1} = dc_t).
template <typename F>
void rnn_backward(RnnCell cell, F* dx, F* dh0, F* dc0, F* dW, F* dU, F* db, F* db_h, const F* gates,
                  const F* hprev, const F* cs, const F* q, const F* x, const F* W, const F* U, const F* c0,
                  const std::uint8_t* mask, const F* rscale, const F* dout, const F* dhT, const F* dcT, index_t N,
                  index_t T, index_t C, index_t H);

// Obvious twins for the tests: per-sample, per-step plain loops with libm math and no caches
// (the backward recomputes the forward itself). Same meaning of every argument as above.
template <typename F>
void rnn_forward_naive(RnnCell cell, F* out, F* hT, F* cT, const F* x, const F* W, const F* U, const F* b,
                       const F* b_h, const F* h0, const F* c0, const std::uint8_t* mask, const F* rscale, index_t N,
                       index_t T, index_t C, index_t H);

template <typename F>
void rnn_backward_naive(RnnCell cell, F* dx, F* dh0, F* dc0, F* dW, F* dU, F* db, F* db_h, const F* x,
                        const F* W, const F* U, const F* b, const F* b_h, const F* h0, const F* c0,
                        const std::uint8_t* mask, const F* rscale, const F* dout, const F* dhT, const F* dcT,
                        index_t N, index_t T, index_t C, index_t H);

namespace detail {
// Point-wise cells of one batch row (rnn_cell.h); float has one table per instruction set.
template <typename F>
struct RnnRowKernels {
  // Point-wise cells of one batch row over n units; gate stride gs in g / dg / b, hs in hu.
  void (*rnn_fwd)(F* h, F* g, const F* gx, const F* hu, const F* b, bool use_relu, index_t n, index_t gs,
                  index_t hs);
  void (*lstm_fwd)(F* h, F* c, F* g, const F* gx, const F* hu, const F* b, const F* cp, index_t n, index_t gs,
                   index_t hs);
  void (*gru_fwd)(F* h, F* q, F* g, const F* gx, const F* hu, const F* b, const F* bh, const F* hp, index_t n,
                  index_t gs, index_t hs);
  void (*rnn_bwd)(F* dg, const F* dhr, const F* dout, const F* h, bool use_relu, index_t n, index_t gs);
  void (*lstm_bwd)(F* dg, F* dc, const F* dhr, const F* dout, const F* g, const F* c, const F* cp, index_t n,
                   index_t gs);
  void (*gru_bwd)(F* dgx, F* dgh, F* dhd, const F* dhr, const F* dout, const F* g, const F* q, const F* hp,
                  index_t n, index_t gs);
  // C[m, NR] (= or +=) A[m, k] * Bp[k, NR], m <= MR; both packed: a(i, p) = Ap[p * MR + i],
  // b(p, j) = Bp[p * NR + j].
  void (*tile)(index_t m, index_t k, const F* Ap, const F* Bp, F* C, index_t ldc, bool accumulate);
  int MR, NR;  // NR <= 64
};

// Register tiles of the per-step products, one row per instruction set: MR rows x NR columns of
// accumulators, plus NR / lanes vectors of the B panel and one broadcast of A (each ISA's file
// static_asserts that they fit its register file).
struct RnnTile {
  int MR, NR;
};
//                                           MR  NR
inline constexpr RnnTile kRnnTileAvx512  = {8, 32};  // 16 zmm accumulators + 2 + 1 of 32
inline constexpr RnnTile kRnnTileAvx2    = {6, 16};  // 12 ymm accumulators + 2 + 1 of 16
inline constexpr RnnTile kRnnTileGeneric = {4, 8};   // 8 xmm (SSE2) accumulators + 2 + 1 of 16
inline constexpr RnnTile kRnnTileDouble  = {4, 8};   // plain loops (the float64 check path)

#if defined(PYDL_X86)
const RnnRowKernels<float>* rnn_rows_avx2();
const RnnRowKernels<float>* rnn_rows_avx512();
#endif
}  // namespace detail

}  // namespace pydl
