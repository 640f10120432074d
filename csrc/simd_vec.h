// Portable SIMD vectors (GCC/Clang vector extensions) for kernels compiled once per ISA.
//
// `Vec<T>` is ONE register of the ISA the including file is compiled for: 64 bytes (zmm, 16
// floats) under -mavx512f, 32 bytes (ymm, 8 floats) under -mavx2, 16 bytes (xmm, 4 floats) on
// baseline x86-64. `VecOf<T>::L` is its lane count; register tiles are written in terms of it and
// sized per ISA (each family's table), so a tile never needs more registers than the ISA has
// (32 zmm, 16 ymm, 16 xmm).
// `Vec64<T>` is a fixed 64-byte group (1 zmm, 2 ymm, 4 xmm) for code whose shuffles are written
// for 16 lanes; keep the number of live Vec64 values within the register file / (64 / register
// bytes).
// Comparisons follow IEEE: NaN < 0 is false, so `v < 0 ? 0 : v` keeps NaN.
// Include this only from inside a per-ISA namespace block and keep every function inline:
// vector values never cross a call boundary between differently compiled files.
#pragma once

// Vector values only live inside always-inline helpers, so the ABI note does not apply.
#pragma GCC diagnostic ignored "-Wpsabi"
// (The includer brings <immintrin.h> in at global scope when __AVX2__ or __AVX512F__ is defined.)

#if defined(__AVX512F__)
inline constexpr int kVecBytes = 64;
inline constexpr int kVecRegs = 32;
#elif defined(__AVX__)
inline constexpr int kVecBytes = 32;
inline constexpr int kVecRegs = 16;
#else
inline constexpr int kVecBytes = 16;
inline constexpr int kVecRegs = 16;
#endif

template <typename T, int BYTES>
struct VecOfBytes {
  typedef T type __attribute__((vector_size(BYTES)));
  static constexpr int L = BYTES / static_cast<int>(sizeof(T));
};

template <typename T>
struct VecOf : VecOfBytes<T, kVecBytes> {};

template <typename T>
using Vec = typename VecOf<T>::type;

template <typename T>
using Vec64 = typename VecOfBytes<T, 64>::type;

#define PYDL_VINLINE static inline __attribute__((always_inline))

template <typename T>
PYDL_VINLINE Vec<T> vload(const T* p) {
  Vec<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T>
PYDL_VINLINE Vec64<T> vload64(const T* p) {
  Vec64<T> v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

template <typename T, typename V>
PYDL_VINLINE void vstore(T* p, V v) {
  static_assert(sizeof(V) % sizeof(T) == 0, "vector of T expected");
  __builtin_memcpy(p, &v, sizeof(v));
}

// Broadcasts written lane by lane, which GCC turns into one vbroadcastss (`Vec<T>{} + s` is an
// IEEE add of 0 that it must keep: an extra instruction and a register per broadcast).
template <typename T>
PYDL_VINLINE Vec<T> vset1(T s) {
  Vec<T> v;
  for (int l = 0; l < VecOf<T>::L; ++l) v[l] = s;
  return v;
}

template <typename T>
PYDL_VINLINE Vec64<T> vset1_64(T s) {
  Vec64<T> v;
  for (int l = 0; l < VecOfBytes<T, 64>::L; ++l) v[l] = s;
  return v;
}

// The first n (0 <= n <= lanes) lanes of p, the rest 0; nothing past p[n - 1] is read. A masked
// load on AVX2 and AVX-512: element by element, GCC builds the vector in a stack slot (or calls
// memcpy for the variable count), and a loop with such a tail then spills the registers it holds.
template <typename T, typename V = Vec<T>>
PYDL_VINLINE V vload_n(const T* p, int n) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64 && sizeof(T) == 4) {
    return reinterpret_cast<V>(_mm512_maskz_loadu_ps(static_cast<__mmask16>((1u << n) - 1u), p));
  } else if constexpr (sizeof(V) == 64 && sizeof(T) == 8) {
    return reinterpret_cast<V>(_mm512_maskz_loadu_pd(static_cast<__mmask8>((1u << n) - 1u), p));
  }
#endif
#if defined(__AVX2__)
  if constexpr (sizeof(V) == 32 && sizeof(T) == 4) {
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    return reinterpret_cast<V>(_mm256_maskload_ps(reinterpret_cast<const float*>(p), mask));
  } else if constexpr (sizeof(V) == 32 && sizeof(T) == 8) {
    const __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    return reinterpret_cast<V>(_mm256_maskload_pd(reinterpret_cast<const double*>(p), mask));
  }
#endif
  V v = {};
  for (int l = 0; l < n; ++l) v[l] = p[l];
  return v;
}

// Store the first n (0 <= n <= lanes) lanes; nothing past them is touched (a masked store on
// AVX2 and AVX-512).
template <typename T, typename V>
PYDL_VINLINE void vstore_n(T* p, V v, int n) {
#if defined(__AVX512F__)
  if constexpr (sizeof(V) == 64 && sizeof(T) == 4) {
    _mm512_mask_storeu_ps(p, static_cast<__mmask16>((1u << n) - 1u), reinterpret_cast<__m512>(v));
    return;
  } else if constexpr (sizeof(V) == 64 && sizeof(T) == 8) {
    _mm512_mask_storeu_pd(p, static_cast<__mmask8>((1u << n) - 1u), reinterpret_cast<__m512d>(v));
    return;
  }
#endif
#if defined(__AVX2__)
  if constexpr (sizeof(V) == 32 && sizeof(T) == 4) {
    const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    _mm256_maskstore_ps(reinterpret_cast<float*>(p), mask, reinterpret_cast<__m256>(v));
    return;
  } else if constexpr (sizeof(V) == 32 && sizeof(T) == 8) {
    const __m256i mask = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    _mm256_maskstore_pd(reinterpret_cast<double*>(p), mask, reinterpret_cast<__m256d>(v));
    return;
  }
#endif
  for (int l = 0; l < n; ++l) p[l] = v[l];
}

template <typename V>
PYDL_VINLINE V vrelu(V v) {
  const V z = {};
  return v < z ? z : v;  // NaN stays NaN
}
