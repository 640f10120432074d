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

// Rows [p0, p1) of one plane; am may be null. Requires 2*Q <= W and 2*P <= H.
inline void maxpool2x2_rows_f32(float* y, std::int32_t* am, const float* x, index_t W, index_t Q, index_t p0,
                                index_t p1) {
  constexpr int L = 16;
  const vi32 even = {0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30};
  const vi32 odd = even + 1;
  const vi32 lane2 = even;  // 2 * lane
  for (index_t p = p0; p < p1; ++p) {
    const float* r0 = x + 2 * p * W;
    const float* r1 = r0 + W;
    float* yr = y + p * Q;
    const std::int32_t base = static_cast<std::int32_t>(2 * p * W);
    index_t q = 0;
    // full vectors; the last one may overlap the previous (recomputing a few outputs is harmless)
    for (index_t qn = 0; qn < Q && Q >= L; qn += L) {
      q = qn + L <= Q ? qn : Q - L;
      const Vec<float> a0 = vload<float>(r0 + 2 * q), a1 = vload<float>(r0 + 2 * q + L);
      const Vec<float> b0 = vload<float>(r1 + 2 * q), b1 = vload<float>(r1 + 2 * q + L);
      const Vec<float> a = __builtin_shuffle(a0, a1, even), b = __builtin_shuffle(a0, a1, odd);
      const Vec<float> c = __builtin_shuffle(b0, b1, even), d = __builtin_shuffle(b0, b1, odd);
      // takes(v, m) = v > m, or v is the first NaN
      const vi32 u = (b > a) | ((b != b) & (a == a));
      const vi32 v = (d > c) | ((d != d) & (c == c));
      const Vec<float> m1 = u ? b : a, m2 = v ? d : c;
      const vi32 t = (m2 > m1) | ((m2 != m2) & (m1 == m1));
      vstore<float>(yr + q, t ? m2 : m1);
      if (am) {
        const vi32 i0 = lane2 + static_cast<std::int32_t>(base + 2 * q);
        const vi32 i1 = i0 - u;  // masks are -1 where true
        const vi32 i2 = i0 + static_cast<std::int32_t>(W) - v;
        const vi32 r = t ? i2 : i1;
        __builtin_memcpy(am + p * Q + q, &r, sizeof(r));
      }
    }
    for (q = Q >= L ? Q : 0; q < Q; ++q) {
      const float a = r0[2 * q], b = r0[2 * q + 1], c = r1[2 * q], d = r1[2 * q + 1];
      const bool u = (b > a) | ((b != b) & (a == a)), v = (d > c) | ((d != d) & (c == c));
      const float m1 = u ? b : a, m2 = v ? d : c;
      const bool t = (m2 > m1) | ((m2 != m2) & (m1 == m1));
      yr[q] = t ? m2 : m1;
      if (am) {
        const std::int32_t i0 = base + static_cast<std::int32_t>(2 * q);
        am[p * Q + q] = t ? i0 + static_cast<std::int32_t>(W) + (v ? 1 : 0) : i0 + (u ? 1 : 0);
      }
    }
  }
}

void maxpool2x2_plane_f32(float* y, std::int32_t* am, const float* x, index_t W, index_t P, index_t Q);

}  // namespace PYDL_KNS
}  // namespace pydl
