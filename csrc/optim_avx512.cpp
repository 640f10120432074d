// AVX-512 vector types for the optimizer updates (optim_impl.h). Called only when
// pydl::selected_isa() is avx512.
#include <immintrin.h>

#include "optim_impl.h"

namespace pydl {
namespace {

struct F512 {
  using T = float;
  static constexpr index_t W = 16;
  __m512 r;
  static F512 load(const float* p) { return {_mm512_loadu_ps(p)}; }
  void store(float* p) const { _mm512_storeu_ps(p, r); }
  static F512 set1(float x) { return {_mm512_set1_ps(x)}; }
};
inline F512 operator+(F512 a, F512 b) { return {_mm512_add_ps(a.r, b.r)}; }
inline F512 operator-(F512 a, F512 b) { return {_mm512_sub_ps(a.r, b.r)}; }
inline F512 operator*(F512 a, F512 b) { return {_mm512_mul_ps(a.r, b.r)}; }
inline F512 operator/(F512 a, F512 b) { return {_mm512_div_ps(a.r, b.r)}; }
inline F512 vsqrt(F512 a) { return {_mm512_sqrt_ps(a.r)}; }
inline F512 vfma(F512 a, F512 b, F512 c) { return {_mm512_fmadd_ps(a.r, b.r, c.r)}; }
// vminps/vmaxps return the second operand when either is NaN: x goes second.
inline F512 vmin(F512 bound, F512 x) { return {_mm512_min_ps(bound.r, x.r)}; }
inline F512 vmax(F512 bound, F512 x) { return {_mm512_max_ps(bound.r, x.r)}; }
// 0 where |x| < FLT_MIN (subnormal), x elsewhere; NaN compares false and is kept.
inline F512 vflush(F512 x) {
  const __mmask16 tiny = _mm512_cmp_ps_mask(_mm512_abs_ps(x.r), _mm512_set1_ps(FLT_MIN), _CMP_LT_OQ);
  return {_mm512_mask_blend_ps(tiny, x.r, _mm512_setzero_ps())};
}

struct D512 {
  using T = double;
  static constexpr index_t W = 8;
  __m512d r;
  static D512 load(const double* p) { return {_mm512_loadu_pd(p)}; }
  void store(double* p) const { _mm512_storeu_pd(p, r); }
  static D512 set1(double x) { return {_mm512_set1_pd(x)}; }
};
inline D512 operator+(D512 a, D512 b) { return {_mm512_add_pd(a.r, b.r)}; }
inline D512 operator-(D512 a, D512 b) { return {_mm512_sub_pd(a.r, b.r)}; }
inline D512 operator*(D512 a, D512 b) { return {_mm512_mul_pd(a.r, b.r)}; }
inline D512 operator/(D512 a, D512 b) { return {_mm512_div_pd(a.r, b.r)}; }
inline D512 vsqrt(D512 a) { return {_mm512_sqrt_pd(a.r)}; }
inline D512 vfma(D512 a, D512 b, D512 c) { return {_mm512_fmadd_pd(a.r, b.r, c.r)}; }
inline D512 vmin(D512 bound, D512 x) { return {_mm512_min_pd(bound.r, x.r)}; }
inline D512 vmax(D512 bound, D512 x) { return {_mm512_max_pd(bound.r, x.r)}; }
inline D512 vflush(D512 x) {
  const __mmask8 tiny = _mm512_cmp_pd_mask(_mm512_abs_pd(x.r), _mm512_set1_pd(DBL_MIN), _CMP_LT_OQ);
  return {_mm512_mask_blend_pd(tiny, x.r, _mm512_setzero_pd())};
}

}  // namespace
}  // namespace pydl

PYDL_OPTIM_DEFINE_ISA(optim_avx512, F512, D512)
