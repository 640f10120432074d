// Inverted dropout with a counter-based generator.
//
// Element i is kept when the high 32 bits of h(seed, i) are >= floor(rate * 2^32), where h is
// the splitmix64 output function applied to mix(seed) + (i + 1) * golden-ratio increment: each
// element's draw depends only on (seed, i), so the mask is the same for any thread count.
// Shapes: x, y, dy, dx, mask all hold `count` elements. Outputs are written (=).
#pragma once

#include <cstdint>

#include "common.h"

namespace pydl {

// mask[i] = keep(seed, i) ? 1 : 0;  y = x * mask / (1 - rate)        (y, mask written)
template <typename T>
void dropout_forward(T* y, std::uint8_t* mask, const T* x, index_t count, double rate, std::uint64_t seed);

// dx = dy * mask / (1 - rate)                                         (dx written)
template <typename T>
void dropout_backward(T* dx, const T* dy, const std::uint8_t* mask, index_t count, double rate);

// The generator alone, for tests: u[i] = high 32 bits of h(seed, i).
void dropout_bits(std::uint32_t* u, index_t count, std::uint64_t seed);

}  // namespace pydl
