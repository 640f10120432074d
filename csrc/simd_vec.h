// Portable 64-byte vectors (GCC/Clang vector extensions) for kernels compiled once per ISA.
//
// `Vec<T>` holds 64 bytes (16 floats or 8 doubles). The compiler lowers its arithmetic to one
// zmm register under -mavx512f, two ymm under -mavx2, four xmm on baseline x86-64, so one
// source serves every build of a kernel file (conv2d_avx512.cpp includes the same loops as
// conv2d.cpp). Comparisons follow IEEE: NaN < 0 is false, so `v < 0 ? 0 : v` keeps NaN.
// Include this only from inside a per-ISA namespace block and keep every function inline:
// vector values never cross a call boundary between differently compiled files.
#pragma once

// Vector values only live inside always-inline helpers, so the ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
// (The includer brings <immintrin.h> in at global scope when __AVX512F__ is defined.)

template <typename T>
struct VecOf {
  typedef T type __attribute__((vector_size(64)));
  static constexpr int L = 64 / static_cast<int>(sizeof(T));
};

template <typename T>
using Vec = typename VecOf<T>::type;

#define PYDL_VINLINE static inline __attribute__((always_inline))

template <typename T>
PYDL_VINLINE Vec<T> vload(const T* p) {
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
PYDL_VINLINE void vstore(T* p, Vec<T> v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

template <typename T>
PYDL_VINLINE Vec<T> vset1(T s) {
  Vec<T> v = {};
  return v + s;
}

// Store the first n (0 <= n <= L) lanes; nothing past them is touched (masked store on AVX-512).
template <typename T>
PYDL_VINLINE void vstore_n(T* p, Vec<T> v, int n) {
#if defined(__AVX512F__)
  if constexpr (sizeof(T) == 4) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), reinterpret_cast<__m512>(v));
    return;
  } else {
    _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1u), reinterpret_cast<__m512d>(v));
    return;
  }
#endif
  for (int l = 0; l < n; ++l) p[l] = v[l];
}

template <typename T>
PYDL_VINLINE Vec<T> vrelu(Vec<T> v) {
  const Vec<T> z = {};
  return v < z ? z : v;  // NaN stays NaN
}
