// Output arrays of 32 MiB and more, on recycled memory.
//
// glibc's malloc serves a request below 32 MiB from its heap once a block of that size has been
// freed (its mmap threshold adapts upwards, to at most 32 MiB), so the outputs of a training loop,
// the same shapes every step, reuse memory. Anything larger is a fresh mmap every time, whose pages
// the kernel faults in and zeroes on first touch: for the 51 MB dx of a max-pool backward
// (N64 C64 56x56) that is ~10 ms of a ~12 ms call on Zen 3, more than the kernel itself.
//
// new_output<T>(shape) returns an array of that shape (uninitialised, like np.empty). Below
// kBigOutputBytes it is an ordinary NumPy allocation. From there on the memory is a block owned by
// the array (through a capsule); when the array is freed the block goes to a small cache instead
// of back to the system, and the next big output of about the same size (at most 1/8 larger) takes
// it. The cache holds at most kBigCacheBlocks blocks and kBigCacheBytes in all; beyond that the
// oldest are freed. Blocks are 2 MiB aligned and advised for huge pages (as NumPy does for its own
// large arrays). Thread-safe; `big_output_cache_clear()` (Python: `_core.output_cache_clear()`)
// frees every cached block. Such arrays do not own their data (flags.owndata is False, so
// ndarray.resize refuses them) and tracemalloc does not count them.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstddef>
#include <vector>

namespace pydl {
namespace py = pybind11;

constexpr std::size_t kBigOutputBytes = std::size_t(32) << 20;
constexpr std::size_t kBigCacheBlocks = 4;
constexpr std::size_t kBigCacheBytes = std::size_t(1) << 30;

// A block of at least `bytes` (from the cache or newly allocated); throws std::bad_alloc.
// `*capacity` receives its real size, which big_block_release needs.
void* big_block_acquire(std::size_t bytes, std::size_t* capacity);
// Hands a block back: kept in the cache, or freed when the cache is full or it is too large.
void big_block_release(void* block, std::size_t capacity) noexcept;
// Frees every cached block; returns the bytes freed.
std::size_t big_output_cache_clear() noexcept;
// Bytes held by the cache now.
std::size_t big_output_cache_bytes() noexcept;

template <typename T>
py::array_t<T> new_output(const std::vector<py::ssize_t>& shape) {
  // Size in bytes; a negative dimension or an overflow goes to NumPy, which raises its own error.
  std::size_t bytes = sizeof(T);
  bool plain = false;
  for (py::ssize_t d : shape)
    plain = plain || d < 0 || __builtin_mul_overflow(bytes, static_cast<std::size_t>(d), &bytes);
  if (plain || bytes < kBigOutputBytes) return py::array_t<T>(shape);
  struct Owned {
    void* block;
    std::size_t capacity;
  };
  auto* owned = new Owned{nullptr, 0};
  try {
    owned->block = big_block_acquire(bytes, &owned->capacity);
  } catch (...) {
    delete owned;
    throw;
  }
  py::capsule owner;
  try {
    owner = py::capsule(owned, [](void* p) {
      auto* o = static_cast<Owned*>(p);
      big_block_release(o->block, o->capacity);
      delete o;
    });
  } catch (...) {
    big_block_release(owned->block, owned->capacity);
    delete owned;
    throw;
  }
  return py::array_t<T>(shape, static_cast<T*>(owned->block), owner);
}

}  // namespace pydl
