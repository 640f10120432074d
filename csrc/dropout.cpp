#include "dropout.h"

#include "nn_parallel.h"

namespace pydl {

namespace {

constexpr std::uint64_t kGolden = 0x9E3779B97F4A7C15ull;

// splitmix64's output function: a bijective 64-bit mix.
inline std::uint64_t mix64(std::uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

inline std::uint32_t draw(std::uint64_t key, index_t i) {
  return static_cast<std::uint32_t>(mix64(key + (static_cast<std::uint64_t>(i) + 1) * kGolden) >> 32);
}

void check_rate(double rate, const char* op) {
  PYDL_CHECK(rate >= 0.0 && rate < 1.0, op, "rate must be in [0, 1), got ", rate);
}

}  // namespace

void dropout_bits(std::uint32_t* u, index_t count, std::uint64_t seed) {
  const std::uint64_t key = mix64(seed);
  for (index_t i = 0; i < count; ++i) u[i] = draw(key, i);
}

template <typename T>
void dropout_forward(T* y, std::uint8_t* mask, const T* x, index_t count, double rate, std::uint64_t seed) {
  check_rate(rate, "dropout_forward");
  const std::uint64_t key = mix64(seed);
  const std::uint32_t threshold = static_cast<std::uint32_t>(rate * 4294967296.0);
  const T scale = static_cast<T>(1.0 / (1.0 - rate));
  const int nt = threads_for(static_cast<double>(count), 16384.0);
  run_pieces(count, nt, 64, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) {
      const std::uint8_t m = draw(key, i) >= threshold ? 1 : 0;
      mask[i] = m;
      y[i] = x[i] * (static_cast<T>(m) * scale);
    }
  });
}

template <typename T>
void dropout_backward(T* dx, const T* dy, const std::uint8_t* mask, index_t count, double rate) {
  check_rate(rate, "dropout_backward");
  const T scale = static_cast<T>(1.0 / (1.0 - rate));
  const int nt = threads_for(static_cast<double>(count), 32768.0);
  run_pieces(count, nt, 64, [&](index_t b, index_t e) {
    for (index_t i = b; i < e; ++i) dx[i] = dy[i] * (static_cast<T>(mask[i] != 0) * scale);
  });
}

template void dropout_forward<float>(float*, std::uint8_t*, const float*, index_t, double, std::uint64_t);
template void dropout_forward<double>(double*, std::uint8_t*, const double*, index_t, double, std::uint64_t);
template void dropout_backward<float>(float*, const float*, const std::uint8_t*, index_t, double);
template void dropout_backward<double>(double*, const double*, const std::uint8_t*, index_t, double);

}  // namespace pydl
