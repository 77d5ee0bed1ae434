// Where a slab allocator's arena and metadata live (host side): the
// runtime's task heap and the allocator benchmarks and tests lay out the
// same structures the same way.
#ifndef GROSR_HOST_SLAB_LAYOUT_H_
#define GROSR_HOST_SLAB_LAYOUT_H_

#include <cuda.h>

#include <cstdint>
#include <vector>

#include "grosr/slab_allocator.h"

namespace grosr {

// Arena geometry: pages of 2^page_shift bytes and the metadata they need,
// all in one device buffer (offsets 256-byte aligned).
struct SlabLayout {
  uint32_t page_shift = 16;
  uint32_t page_count = 0;
  uint32_t words_per_page = 0;
  uint32_t pool_words = 0;
  uint32_t shard_count = 1;  // SlabAllocator::ShardsFor(page_count, page_shift, factor)
  uint32_t max_shard_factor = 1;
  uint64_t states_offset = 0, bits_offset = 0, pool_offset = 0, hints_offset = 0,
           counters_offset = 0, runs_offset = 0, metadata_bytes = 0;

  // The largest whole number of pages in `arena_bytes` (at least one).
  // max_shard_factor: SlabAllocator::max_shard_factor, a power of two 1..8
  // (DeviceSlab::Create checks it; the runtime's heap takes the default).
  static SlabLayout For(uint64_t arena_bytes, uint32_t page_shift = 16,
                        uint32_t max_shard_factor = SlabAllocator::kDefaultShardFactor);
  uint64_t hint_words() const {
    return uint64_t{SlabAllocator::kMaxClasses} * shard_count * max_shard_factor;
  }
  uint64_t arena_bytes() const { return uint64_t{page_count} << page_shift; }
  // The allocator view over an arena and metadata at these device addresses.
  SlabAllocator View(CUdeviceptr arena, CUdeviceptr metadata) const;
  // The pool words of a fresh allocator (every page free).
  std::vector<uint64_t> InitialPool() const;
};

}  // namespace grosr

#endif  // GROSR_HOST_SLAB_LAYOUT_H_
