// Winograd convolution F(m x m, 3x3), m = 2 or 4, for 3x3 filters, stride 1, dilation 1.
//
//   U = G g G^T (filters, once per call)   V = B^T d B (A x A input tiles, A = m + 2)
//   M[a,b] = U[a,b] (K x C) * V[a,b] (C x tiles)   -- A*A small GEMMs (register-tiled, per ISA)
//   Y = A^T M A (m x m output tiles, edge tiles clipped), + bias, activation
// Tiles are processed in chunks of whole tile rows so V and M stay in cache; chunks run in
// parallel. Multiplies per output: 9 direct, 4 for F(2x2,3x3), 2.25 for F(4x4,3x3).
// Backward to the input is the same algorithm on dy with the flipped, transposed filters
// (w'[c,k,r,s] = w[k,c,2-r,2-s]) and padding 2 - pt, 2 - pl (which may be negative: reads are
// bounds-checked). Backward to the weights uses the im2col GEMMs (conv2d.h).
#pragma once

#include "conv2d.h"

namespace pydl {

// True when Winograd computes this convolution (3x3, stride 1, dilation 1).
bool winograd_applicable(const Conv2dGeom& g);

// y = conv(x, w) + b for a validated geometry g with winograd_applicable(g).   (y =)
template <typename T>
void conv2d_forward_winograd(T* y, const T* x, const T* w, const T* b, const Conv2dGeom& g, int m, ConvAct act);

// dx = conv(pad(dy), flip(w)^T): the gradient of conv2d_forward for the same g.   (dx =)
template <typename T>
void conv2d_backward_input_winograd(T* dx, const T* dy, const T* w, const Conv2dGeom& g, int m);

}  // namespace pydl
