#include "host/slab_layout.h"

#include <algorithm>

namespace grosr {
namespace {

uint64_t AlignUp(uint64_t x, uint64_t to) { return (x + to - 1) / to * to; }

}  // namespace

SlabLayout SlabLayout::For(uint64_t arena_bytes, uint32_t page_shift, uint32_t max_shard_factor) {
  SlabLayout l;
  l.page_shift = page_shift;
  l.page_count = static_cast<uint32_t>(std::max<uint64_t>(1, arena_bytes >> page_shift));
  l.words_per_page = SlabAllocator::WordsPerPage(page_shift);
  l.pool_words = SlabAllocator::PoolWords(l.page_count);
  l.max_shard_factor = max_shard_factor > 1 ? max_shard_factor : 1;
  l.shard_count = SlabAllocator::ShardsFor(l.page_count, page_shift, l.max_shard_factor);
  uint64_t at = 0;
  auto take = [&](uint64_t bytes) {
    const uint64_t offset = at;
    at = AlignUp(at + bytes, 256);
    return offset;
  };
  l.states_offset = take(uint64_t{l.page_count} * 8);
  l.bits_offset = take(uint64_t{l.page_count} * l.words_per_page * 8);
  l.pool_offset = take(uint64_t{l.pool_words} * 8);
  l.hints_offset = take(l.hint_words() * 8);
  l.counters_offset = take(sizeof(SlabCounters));
  l.runs_offset = take(uint64_t{l.page_count} * 4);
  l.metadata_bytes = at;
  return l;
}

SlabAllocator SlabLayout::View(CUdeviceptr arena, CUdeviceptr metadata) const {
  auto at = [&](uint64_t offset) { return metadata + offset; };
  SlabAllocator view{};
  view.arena = reinterpret_cast<uint8_t*>(arena);
  view.page_state = reinterpret_cast<uint64_t*>(at(states_offset));
  view.page_bits = reinterpret_cast<uint64_t*>(at(bits_offset));
  view.pool = reinterpret_cast<uint64_t*>(at(pool_offset));
  view.hints = reinterpret_cast<uint64_t*>(at(hints_offset));
  view.counters = reinterpret_cast<SlabCounters*>(at(counters_offset));
  view.run_pages = reinterpret_cast<uint32_t*>(at(runs_offset));
  view.page_count = page_count;
  view.page_shift = page_shift;
  view.words_per_page = words_per_page;
  view.pool_words = pool_words;
  view.shard_count = shard_count;
  view.max_shard_factor = max_shard_factor;
  return view;
}

std::vector<uint64_t> SlabLayout::InitialPool() const {
  std::vector<uint64_t> pool(pool_words, 0);
  SlabAllocator host{};
  host.pool = pool.data();
  host.page_count = page_count;
  host.pool_words = pool_words;
  host.Initialize();  // touches only the pool words
  return pool;
}

}  // namespace grosr
