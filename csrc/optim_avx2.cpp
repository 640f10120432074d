// AVX2 + FMA vector types for the optimizer updates (optim_impl.h). Called only when
// pydl::selected_isa() is avx2.
#include <immintrin.h>

#include "optim_impl.h"

namespace pydl {
namespace {

struct F256 {
  using T = float;
  static constexpr index_t W = 8;
  __m256 r;
  static F256 load(const float* p) { return {_mm256_loadu_ps(p)}; }
  void store(float* p) const { _mm256_storeu_ps(p, r); }
  static F256 set1(float x) { return {_mm256_set1_ps(x)}; }
};
inline F256 operator+(F256 a, F256 b) { return {_mm256_add_ps(a.r, b.r)}; }
inline F256 operator-(F256 a, F256 b) { return {_mm256_sub_ps(a.r, b.r)}; }
inline F256 operator*(F256 a, F256 b) { return {_mm256_mul_ps(a.r, b.r)}; }
inline F256 operator/(F256 a, F256 b) { return {_mm256_div_ps(a.r, b.r)}; }
inline F256 vsqrt(F256 a) { return {_mm256_sqrt_ps(a.r)}; }
inline F256 vfma(F256 a, F256 b, F256 c) { return {_mm256_fmadd_ps(a.r, b.r, c.r)}; }
// vminps/vmaxps return the second operand when either is NaN: x goes second.
inline F256 vmin(F256 bound, F256 x) { return {_mm256_min_ps(bound.r, x.r)}; }
inline F256 vmax(F256 bound, F256 x) { return {_mm256_max_ps(bound.r, x.r)}; }
// 0 where |x| < FLT_MIN (subnormal), x elsewhere; NaN compares false and is kept.
inline F256 vflush(F256 x) {
  const __m256 a = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), x.r);
  return {_mm256_andnot_ps(_mm256_cmp_ps(a, _mm256_set1_ps(FLT_MIN), _CMP_LT_OQ), x.r)};
}

struct D256 {
  using T = double;
  static constexpr index_t W = 4;
  __m256d r;
  static D256 load(const double* p) { return {_mm256_loadu_pd(p)}; }
  void store(double* p) const { _mm256_storeu_pd(p, r); }
  static D256 set1(double x) { return {_mm256_set1_pd(x)}; }
};
inline D256 operator+(D256 a, D256 b) { return {_mm256_add_pd(a.r, b.r)}; }
inline D256 operator-(D256 a, D256 b) { return {_mm256_sub_pd(a.r, b.r)}; }
inline D256 operator*(D256 a, D256 b) { return {_mm256_mul_pd(a.r, b.r)}; }
inline D256 operator/(D256 a, D256 b) { return {_mm256_div_pd(a.r, b.r)}; }
inline D256 vsqrt(D256 a) { return {_mm256_sqrt_pd(a.r)}; }
inline D256 vfma(D256 a, D256 b, D256 c) { return {_mm256_fmadd_pd(a.r, b.r, c.r)}; }
inline D256 vmin(D256 bound, D256 x) { return {_mm256_min_pd(bound.r, x.r)}; }
inline D256 vmax(D256 bound, D256 x) { return {_mm256_max_pd(bound.r, x.r)}; }
inline D256 vflush(D256 x) {
  const __m256d a = _mm256_andnot_pd(_mm256_set1_pd(-0.0), x.r);
  return {_mm256_andnot_pd(_mm256_cmp_pd(a, _mm256_set1_pd(DBL_MIN), _CMP_LT_OQ), x.r)};
}

}  // namespace
}  // namespace pydl

PYDL_OPTIM_DEFINE_ISA(optim_avx2, F256, D256)
