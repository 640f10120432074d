// The cache behind new_output (big_output.h).
#include "big_output.h"

#include <cstdlib>
#include <mutex>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace pydl {
namespace {

constexpr std::size_t kBlockAlign = std::size_t(2) << 20;  // a huge page

struct Cached {
  void* block;
  std::size_t capacity;
};

// Never destroyed: an array may be freed (and hand its block back) during interpreter shutdown,
// after static destructors would have run.
struct Cache {
  std::mutex mutex;
  std::vector<Cached> blocks;  // oldest first
  std::size_t bytes = 0;
};
Cache& cache() {
  static Cache* const c = new Cache;
  return *c;
}

}  // namespace

void* big_block_acquire(std::size_t bytes, std::size_t* capacity) {
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    // The smallest cached block that fits without wasting more than 1/8.
    std::size_t best = c.blocks.size();
    for (std::size_t i = 0; i < c.blocks.size(); ++i) {
      const std::size_t cap = c.blocks[i].capacity;
      if (cap >= bytes && cap - bytes <= bytes / 8 && (best == c.blocks.size() || cap < c.blocks[best].capacity))
        best = i;
    }
    if (best < c.blocks.size()) {
      const Cached hit = c.blocks[best];
      c.blocks.erase(c.blocks.begin() + static_cast<std::ptrdiff_t>(best));
      c.bytes -= hit.capacity;
      *capacity = hit.capacity;
      return hit.block;
    }
  }
  const std::size_t size = (bytes + kBlockAlign - 1) / kBlockAlign * kBlockAlign;
  void* block = std::aligned_alloc(kBlockAlign, size);
  if (block == nullptr) {
    big_output_cache_clear();  // cached blocks may be what stands in the way
    block = std::aligned_alloc(kBlockAlign, size);
    if (block == nullptr) throw std::bad_alloc();
  }
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  madvise(block, size, MADV_HUGEPAGE);  // advice only: failure changes nothing
#endif
  *capacity = size;
  return block;
}

void big_block_release(void* block, std::size_t capacity) noexcept {
  if (block == nullptr) return;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    if (capacity <= kBigCacheBytes) {
      while (!c.blocks.empty() &&
             (c.blocks.size() >= kBigCacheBlocks || c.bytes + capacity > kBigCacheBytes)) {
        std::free(c.blocks.front().block);
        c.bytes -= c.blocks.front().capacity;
        c.blocks.erase(c.blocks.begin());
      }
      try {
        c.blocks.push_back({block, capacity});
        c.bytes += capacity;
        return;
      } catch (...) {  // no room in the list: free the block instead
      }
    }
  }
  std::free(block);
}

std::size_t big_output_cache_clear() noexcept {
  std::vector<Cached> all;
  {
    Cache& c = cache();
    std::lock_guard<std::mutex> lock(c.mutex);
    all.swap(c.blocks);
    c.bytes = 0;
  }
  std::size_t freed = 0;
  for (const Cached& block : all) {
    freed += block.capacity;
    std::free(block.block);
  }
  return freed;
}

std::size_t big_output_cache_bytes() noexcept {
  Cache& c = cache();
  std::lock_guard<std::mutex> lock(c.mutex);
  return c.bytes;
}

}  // namespace pydl
