// 2-D pooling over NCHW planes: max, average, global average.
//
//   max:  y[n,c,p,q] = max_{r<R,s<S} x[n,c,p*sh + r - pt, q*sw + s - pl]   (padding ignored)
//         argmax[n,c,p,q] = h*W + w of the maximum (first one on ties); a NaN in the window
//         makes y NaN and argmax points at a NaN.
//   avg:  y = sum over the window of the valid elements / divisor, divisor = R*S when
//         count_include_pad, else the number of valid elements.
//   global average: y[n,c] = mean_{h,w} x[n,c,h,w].
// x (N, C, H, W), y (N, C, P, Q), P = (H + pt + pb - R) / sh + 1. Padding must be smaller than
// the window (each window holds at least one input element). Backward kernels write dx (=).
// Threads over the N*C planes (parallel_for); results do not depend on the thread count.
#pragma once

#include <cstdint>

#include "common.h"

namespace pydl {

struct Pool2dGeom {
  index_t N = 0, C = 0, H = 0, W = 0;
  index_t R = 1, S = 1;                    // window
  index_t sh = 1, sw = 1;                  // stride
  index_t pt = 0, pb = 0, pl = 0, pr = 0;  // padding
  index_t P = 0, Q = 0;                    // output
};

// Fills P, Q; throws std::invalid_argument "[op] ..." on bad sizes.
void pool2d_geometry(Pool2dGeom& g, const char* op);

template <typename T>
void maxpool2d_forward(T* y, std::int32_t* argmax, const T* x, const Pool2dGeom& g);  // argmax may be null
template <typename T>
void maxpool2d_forward_naive(T* y, std::int32_t* argmax, const T* x, const Pool2dGeom& g);
// dx[n,c,argmax[n,c,p,q]] += dy[n,c,p,q] over a zeroed dx   (dx =); written densely when every
// argmax lies in its own 2x2 block (P = H/2, Q = W/2), gathered when `windows` (g holds the
// pooling's window, stride and padding, not just its sizes) says 3x3 / stride 2 windows with
// top / left padding <= 1 and every argmax lies in its window, else scattered.
// Returns false, with dx unspecified, when an argmax index lies outside [0, H*W) (nothing is
// written out of bounds: every scattered plane's indices are checked first).
template <typename T>
bool maxpool2d_backward(T* dx, const T* dy, const std::int32_t* argmax, const Pool2dGeom& g,
                        bool windows = false);

template <typename T>
void avgpool2d_forward(T* y, const T* x, const Pool2dGeom& g, bool count_include_pad);
template <typename T>
void avgpool2d_forward_naive(T* y, const T* x, const Pool2dGeom& g, bool count_include_pad);
// dx[window of (p,q)] += dy[p,q] / divisor(p,q)   (dx =)
template <typename T>
void avgpool2d_backward(T* dx, const T* dy, const Pool2dGeom& g, bool count_include_pad);
template <typename T>
void avgpool2d_backward_naive(T* dx, const T* dy, const Pool2dGeom& g, bool count_include_pad);

// y[i] = mean of plane i (planes = N*C, hw elements each); dx[i,:] = dy[i] / hw   (=)
template <typename T>
void global_avgpool2d_forward(T* y, const T* x, index_t planes, index_t hw);
template <typename T>
void global_avgpool2d_backward(T* dx, const T* dy, index_t planes, index_t hw);

}  // namespace pydl
