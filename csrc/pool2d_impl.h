// Max pooling 2x2 / stride 2 (float), compiled once per ISA (pool2d.cpp, pool2d_avx2.cpp,
// pool2d_avx512.cpp each define PYDL_KNS). One output row at a time, L outputs per step:
// load 2L inputs of each of the two rows, split even / odd columns with shuffles, then take the
// running maximum with a NaN-aware compare and select (no branches), tracking the index.
#ifndef PYDL_KNS
#error "define PYDL_KNS before including pool2d_impl.h"
#endif

#include <cstdint>

#if defined(__AVX512F__)
#include <immintrin.h>
#endif

#include "common.h"

namespace pydl {
namespace PYDL_KNS {

#include "simd_vec.h"

typedef std::int32_t vi32 __attribute__((vector_size(64)));

// L outputs of one output row from 2L inputs of each of its two input rows (r0, r1 point at
// column 2q); the first n results are stored (n = L: a plain store).
// takes(v, m) = v > m, or v is the first NaN; masks are -1 where true.
PYDL_VINLINE void maxpool2x2_block_f32(float* yq, std::int32_t* amq, const float* r0, const float* r1,
                                       std::int32_t idx0, std::int32_t W, int n) {
  constexpr int L = 16;
  const vi32 even = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
  const vi32 odd = even + 1;
  const Vec64<float> a0 = vload64<float>(r0), a1 = vload64<float>(r0 + L);
  const Vec64<float> b0 = vload64<float>(r1), b1 = vload64<float>(r1 + L);
  const Vec64<float> a = __builtin_shuffle(a0, a1, even), b = __builtin_shuffle(a0, a1, odd);
  const Vec64<float> c = __builtin_shuffle(b0, b1, even), d = __builtin_shuffle(b0, b1, odd);
  const vi32 u = (b > a) | ((b != b) & (a == a));
  const vi32 v = (d > c) | ((d != d) & (c == c));
  const Vec64<float> m1 = u ? b : a, m2 = v ? d : c;
  const vi32 t = (m2 > m1) | ((m2 != m2) & (m1 == m1));
  const Vec64<float> m = t ? m2 : m1;
  vi32 r = {};
  if (amq) {
    const vi32 i0 = even + idx0;  // index of each window's top-left element in the plane
    const vi32 i1 = i0 - u;
    const vi32 i2 = i0 + W - v;
    r = t ? i2 : i1;
  }
  if (n == L) {
    vstore<float>(yq, m);
    if (amq) __builtin_memcpy(amq, &r, sizeof(r));
  } else {
    vstore_n<float>(yq, m, n);
    if (amq) __builtin_memcpy(amq, &r, sizeof(std::int32_t) * static_cast<unsigned>(n));
  }
}

// Rows [p0, p1) of one plane; am may be null. Requires 2*Q <= W and 2*P <= H. Rows of at
// least L outputs run in full vectors (the last one may overlap the previous: recomputing a
// few outputs is harmless); shorter rows (e.g. 14 or 7 outputs) go through the same vector
// code on a zero-padded copy of their inputs, so no output takes a data-dependent branch.
inline void maxpool2x2_rows_f32(float* y, std::int32_t* am, const float* x, index_t W, index_t Q, index_t p0,
                                index_t p1) {
  constexpr int L = 16;
  alignas(64) float t0[2 * L] = {}, t1[2 * L] = {};
  for (index_t p = p0; p < p1; ++p) {
    const float* r0 = x + 2 * p * W;
    const float* r1 = r0 + W;
    const std::int32_t base = static_cast<std::int32_t>(2 * p * W);
    std::int32_t* ar = am ? am + p * Q : nullptr;
    if (Q >= L) {
      for (index_t qn = 0; qn < Q; qn += L) {
        const index_t q = qn + L <= Q ? qn : Q - L;
        maxpool2x2_block_f32(y + p * Q + q, ar ? ar + q : nullptr, r0 + 2 * q, r1 + 2 * q,
                             base + static_cast<std::int32_t>(2 * q), static_cast<std::int32_t>(W), L);
      }
    } else if (Q > 0) {
      __builtin_memcpy(t0, r0, sizeof(float) * static_cast<unsigned>(2 * Q));
      __builtin_memcpy(t1, r1, sizeof(float) * static_cast<unsigned>(2 * Q));
      maxpool2x2_block_f32(y + p * Q, ar, t0, t1, base, static_cast<std::int32_t>(W), static_cast<int>(Q));
    }
  }
}

void maxpool2x2_plane_f32(float* y, std::int32_t* am, const float* x, index_t W, index_t P, index_t Q);

}  // namespace PYDL_KNS
}  // namespace pydl
