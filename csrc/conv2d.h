// 2-D convolution (cross-correlation, as in every deep-learning library), NCHW.
//
//   y[n,k,p,q] = b[k] + sum_{c,r,s} w[k,c,r,s] * x[n, c, p*sh + r*dh - pt, q*sw + s*dw - pl]
//
// x (N, C, H, W), w (K, C, R, S), b (K,), y (N, K, P, Q); input positions outside [0,H)x[0,W)
// read as zero (padding). P = (H + pt + pb - ((R-1)*dh + 1)) / sh + 1, likewise Q.
// Algorithms (all compute the same function):
//   naive   - seven nested loops, double accumulation; the reference.
//   direct  - loops over output rows, vectorised over the output width, several output channels
//             held in registers; best for few input channels (a first layer with C = 1..3).
//   im2col  - per image (chunked by output rows) unfold the receptive fields into a
//             [C*R*S, rows*Q] matrix and multiply by W [K, C*R*S] with sgemm: the general path.
//   winograd (winograd.h) - F(2x2,3x3) / F(4x4,3x3) for 3x3 filters, stride 1, dilation 1.
// Backward: dx (written, =), dW (written, =), db (written, =).
// The float path dispatches to per-ISA builds of the same loops (conv2d_avx2.cpp,
// conv2d_avx512.cpp); float64 runs the portable build.
#pragma once

#include "common.h"

namespace pydl {

// Geometry of one convolution. pb / pr only enter through P and Q; kernels read pt, pl.
// Internal callers (Winograd backward) may use negative pt / pl: reads stay bounds-checked.
struct Conv2dGeom {
  index_t N = 0, C = 0, H = 0, W = 0;  // input
  index_t K = 0, R = 0, S = 0;         // filters
  index_t P = 0, Q = 0;                // output height, width
  index_t sh = 1, sw = 1;              // stride
  index_t pt = 0, pb = 0, pl = 0, pr = 0;  // padding top, bottom, left, right
  index_t dh = 1, dw = 1;              // dilation
};

enum class ConvAct { none = 0, relu = 1 };

// Fills P and Q and validates every size (throws std::invalid_argument "[op] ...").
void conv2d_geometry(Conv2dGeom& g, const char* op);

// With stride 1, the backward to the input is a forward convolution of dy with the filters
// flipped 180 degrees and C and K swapped:
//   dx[n,c,h,v] = sum_{k,r',s'} w[k,c,R-1-r',S-1-s'] * dy[n,k, h + r'*dh - ((R-1)*dh - pt), ...]
// This is its geometry: input dy (N, K, P, Q), output dx (N, C, H, W), padding (R-1)*dh - pt
// (may be negative) before, and what makes the output H x W after.
inline Conv2dGeom backward_input_as_forward(const Conv2dGeom& g) {
  Conv2dGeom t;
  t.N = g.N;
  t.C = g.K;
  t.H = g.P;
  t.W = g.Q;
  t.K = g.C;
  t.R = g.R;
  t.S = g.S;
  t.P = g.H;
  t.Q = g.W;
  t.dh = g.dh;
  t.dw = g.dw;
  t.pt = (g.R - 1) * g.dh - g.pt;
  t.pl = (g.S - 1) * g.dw - g.pl;
  t.pb = g.H + (g.R - 1) * g.dh - g.P - t.pt;
  t.pr = g.W + (g.S - 1) * g.dw - g.Q - t.pl;
  return t;
}

// --- naive references -------------------------------------------------------------------
// y = conv(x, w) + b   (b may be null)
template <typename T>
void conv2d_forward_naive(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g);
// dx[n,c,h,w] = sum_{k,p,q,r,s : h = p*sh + r*dh - pt, w = q*sw + s*dw - pl} dy[n,k,p,q] w[k,c,r,s]
template <typename T>
void conv2d_backward_input_naive(T* dx, const T* dy, const T* w, const Conv2dGeom& g);
// dw[k,c,r,s] = sum_{n,p,q} dy[n,k,p,q] x[n,c,p*sh+r*dh-pt,q*sw+s*dw-pl];  db[k] = sum dy[n,k,:,:]
template <typename T>
void conv2d_backward_weight_naive(T* dw, T* db, const T* dy, const T* x, const Conv2dGeom& g);

// --- fast paths (float32 uses the selected ISA; float64 the portable build) ---------------
template <typename T>
void conv2d_forward_direct(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act);
template <typename T>
void conv2d_forward_im2col(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, ConvAct act);
template <typename T>
void conv2d_backward_input_direct(T* dx, const T* dy, const T* w, const Conv2dGeom& g);
template <typename T>
void conv2d_backward_input_im2col(T* dx, const T* dy, const T* w, const Conv2dGeom& g);
// dW (and db when not null) by im2col GEMMs, dW = sum_n dy_n [K, PQ] * col_n^T [PQ, CRS].
template <typename T>
void conv2d_backward_weight_im2col(T* dw, T* db, const T* dy, const T* x, const Conv2dGeom& g);

// Scratch memory for the convolution kernels: one buffer per (calling thread, slot), kept and
// grown across calls so repeated layers do not pay page faults for fresh allocations.
// Call before any parallel region; the pointer stays valid until the next call with that slot.
void* conv_scratch(std::size_t bytes, int slot);

// Applies the fused epilogue y = act(y) in place (used after the naive forward).
template <typename T>
void conv2d_apply_act(T* y, index_t count, ConvAct act);

}  // namespace pydl
