// Splitting a contiguous range over pydl's threads, shared by the nn kernel families
// (activations, dense, losses, dropout, batchnorm).
#pragma once

#include "common.h"
#include "threading.h"

namespace pydl {

// Calls f(begin, end) on nt disjoint pieces of [0, n) (piece boundaries on multiples of `align`),
// in parallel when nt > 1. f must not throw: validate before calling.
template <class F>
void run_pieces(index_t n, int nt, index_t align, F&& f) {
  if (n <= 0) return;
  if (nt <= 1) {
    f(index_t(0), n);
    return;
  }
  const index_t pieces = nt;
  parallel_for(nt, pieces, [&](index_t t, int) {
    index_t b = static_cast<index_t>(static_cast<double>(n) * t / pieces) / align * align;
    index_t e = t + 1 == pieces ? n : static_cast<index_t>(static_cast<double>(n) * (t + 1) / pieces) / align * align;
    if (b < e) f(b, e);
  });
}

// Sum of f(begin, end) -> double over nt pieces of [0, n); partial sums are added in piece order,
// so a given thread count always gives the same result.
template <class F>
double sum_pieces(index_t n, int nt, F&& f) {
  if (n <= 0) return 0.0;
  if (nt <= 1) return f(index_t(0), n);
  double partial[256];
  const index_t pieces = nt < 256 ? nt : 256;
  parallel_for(nt, pieces, [&](index_t t, int) {
    const index_t b = static_cast<index_t>(static_cast<double>(n) * t / pieces);
    const index_t e = t + 1 == pieces ? n : static_cast<index_t>(static_cast<double>(n) * (t + 1) / pieces);
    partial[t] = b < e ? f(b, e) : 0.0;
  });
  double total = 0.0;
  for (index_t t = 0; t < pieces; ++t) total += partial[t];
  return total;
}

}  // namespace pydl
