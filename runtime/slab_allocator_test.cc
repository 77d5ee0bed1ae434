// CPU tests of the SlabAllocator: the same header the GPU runs, compiled by
// g++, threads standing in for warps. Run under TSan and ASan in CI.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstring>
#include <memory>
#include <mutex>
#include <random>
#include <thread>
#include <vector>

// Schedule fuzzing for the stress tests: at the allocator's schedule points
// a thread may yield or, now and then, stall past the waiters' patience.
namespace grosr_test {
std::atomic<bool> fuzz_schedule{false};
void SchedulePoint(int where) {
  if (!fuzz_schedule.load(std::memory_order_relaxed)) return;
  thread_local std::mt19937 random(
      static_cast<uint32_t>(std::hash<std::thread::id>{}(std::this_thread::get_id())));
  const uint32_t x = random();
  if (where == 1 && x % 150 == 0) {  // a claimant stalls: the others take over
    std::this_thread::sleep_for(std::chrono::microseconds(300 + x % 700));
  } else if (x % 4 == 0) {
    std::this_thread::yield();
  }
}
}  // namespace grosr_test
#define GROSR_SLAB_SCHEDULE_POINT(where) ::grosr_test::SchedulePoint(where)
#include "grosr/slab_allocator.h"

#include "gtest/gtest.h"

namespace grosr {
namespace {

// Owns an arena and zeroed metadata for `pages` pages of 2^shift bytes,
// with `shards` hints per class (64 unless said: tests of a few pages still
// give each shard a hint of its own).
class HostSlab {
 public:
  HostSlab(uint32_t pages, uint32_t shift, uint32_t shards = 64, uint32_t factor = 1)
      : arena_(new uint8_t[(uint64_t{pages} << shift) + 16]),
        words_per_page_(SlabAllocator::WordsPerPage(shift)),
        states_(pages, 0),
        bits_(uint64_t{pages} * words_per_page_, 0),
        pool_(SlabAllocator::PoolWords(pages), 0),
        hints_(SlabAllocator::kMaxClasses * shards * factor, 0),
        runs_(pages, 0) {
    // 16-byte aligned base, as cuMemAlloc gives.
    uint8_t* base = arena_.get();
    base += (16 - reinterpret_cast<uintptr_t>(base) % 16) % 16;
    a_ = SlabAllocator{base, states_.data(), bits_.data(), pool_.data(), hints_.data(),
                       &counters_, runs_.data(), pages, shift, words_per_page_,
                       SlabAllocator::PoolWords(pages), shards, factor};
    a_.Initialize();
  }
  const SlabAllocator& allocator() const { return a_; }
  uint64_t hint(uint32_t cls, uint32_t shard) const {
    return *a_.HintOf(cls, shard);
  }
  void set_hint(uint32_t cls, uint32_t shard, uint64_t value) {
    *a_.HintOf(cls, shard) = value;
  }
  const SlabCounters& counters() const { return counters_; }
  uint8_t* base() const { return a_.arena; }
  // Pages whose pool bit is clear, checking that the bit says what the
  // page's class does (invariant 1).
  uint32_t PagesOutOfPool() const {
    uint32_t out = 0;
    for (uint32_t page = 0; page < a_.page_count; ++page) {
      const bool in_pool = (pool_[page / 64] >> (page % 64)) & 1;
      EXPECT_EQ(in_pool, SlabAllocator::ClassOf(states_[page]) == SlabAllocator::kFreePage)
          << "page " << page;
      if (!in_pool) ++out;
    }
    return out;
  }
  SlabUsage usage() const { return MeasureSlabUsage(states_.data(), a_.page_count, a_.page_shift); }
  // Pages neither free nor an empty page a hint names: what leaked. Also
  // checks the replacement protocol at rest: every page with its hint bit
  // is named by a hint, and no hint is left claimed.
  uint32_t PagesHeld() const {
    std::vector<bool> named(a_.page_count, false);
    for (uint64_t h : hints_) {
      EXPECT_EQ(h & SlabAllocator::kReplacing, 0u) << "a hint left claimed";
      const uint64_t page_plus_one = h & ~SlabAllocator::kReplacing;
      EXPECT_LE(page_plus_one, a_.page_count) << "a hint names no page";
      if (page_plus_one != 0 && page_plus_one <= a_.page_count) {
        EXPECT_FALSE(named[page_plus_one - 1]) << "two hints name page " << page_plus_one - 1;
        named[page_plus_one - 1] = true;
      }
    }
    uint32_t held = 0;
    for (uint32_t page = 0; page < a_.page_count; ++page) {
      const uint64_t s = states_[page];
      const uint32_t cls = SlabAllocator::ClassOf(s);
      EXPECT_EQ(SlabAllocator::IsHintState(s), named[page]) << "page " << page;
      if (cls == SlabAllocator::kFreePage) continue;
      if (cls <= a_.class_count() && SlabAllocator::LiveOf(s) == 0 && named[page]) continue;
      ++held;
    }
    return held;
  }

 private:
  std::unique_ptr<uint8_t[]> arena_;
  uint32_t words_per_page_;
  std::vector<uint64_t> states_, bits_, pool_, hints_;
  std::vector<uint32_t> runs_;
  SlabCounters counters_{};
  SlabAllocator a_{};
};

void Fill(void* block, uint64_t bytes, uint64_t tag) {
  auto* words = static_cast<uint64_t*>(block);
  for (uint64_t i = 0; i < bytes / 8; ++i) words[i] = tag ^ (i * 0x9e3779b97f4a7c15ull);
}
bool Check(const void* block, uint64_t bytes, uint64_t tag) {
  const auto* words = static_cast<const uint64_t*>(block);
  for (uint64_t i = 0; i < bytes / 8; ++i) {
    if (words[i] != (tag ^ (i * 0x9e3779b97f4a7c15ull))) return false;
  }
  return true;
}

TEST(SlabAllocatorTest, SizeClassesAlignmentAndReuse) {
  HostSlab slab(64, 16);  // 64 pages of 64 KiB
  const SlabAllocator& a = slab.allocator();
  EXPECT_EQ(a.class_count(), 12u);  // 16 B .. 32 KiB
  EXPECT_EQ(a.ClassFor(1), 1u);
  EXPECT_EQ(a.ClassFor(16), 1u);
  EXPECT_EQ(a.ClassFor(17), 2u);
  EXPECT_EQ(a.ClassFor(1024), 7u);
  EXPECT_EQ(a.ClassFor(32768), 12u);
  EXPECT_EQ(a.ClassFor(32769), 0u);  // whole pages
  for (uint64_t bytes : {1, 16, 32, 64, 100, 128, 256, 512, 1024, 4000, 32768, 70000}) {
    void* p = a.Allocate(bytes, 0, 0);
    ASSERT_NE(p, nullptr) << bytes;
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 16, 0u) << bytes;
    std::memset(p, 0xab, bytes);
    EXPECT_EQ(a.Free(p), SlabAllocator::kFreeOk) << bytes;
  }
  // Freed memory comes back: the same block, first in its page.
  void* first = a.Allocate(64, 0, 0);
  ASSERT_EQ(a.Free(first), SlabAllocator::kFreeOk);
  EXPECT_EQ(a.Allocate(64, 0, 0), first);
  EXPECT_EQ(slab.counters().failed, 0u);
}

TEST(SlabAllocatorTest, BadFreesAreCountedAndChangeNothing) {
  HostSlab slab(16, 14);
  const SlabAllocator& a = slab.allocator();
  void* block = a.Allocate(256, 0, 0);
  ASSERT_NE(block, nullptr);
  Fill(block, 256, 7);
  int local = 0;
  EXPECT_EQ(a.Free(&local), SlabAllocator::kFreeForeign);
  EXPECT_EQ(a.Free(static_cast<uint8_t*>(block) + 8), SlabAllocator::kFreeMisaligned);
  EXPECT_EQ(a.Free(nullptr), SlabAllocator::kFreeOk);
  EXPECT_TRUE(Check(block, 256, 7)) << "a refused free touched the block";
  EXPECT_EQ(slab.usage().blocks[a.ClassFor(256)], 1u);
  EXPECT_EQ(a.Free(block), SlabAllocator::kFreeOk);
  EXPECT_EQ(a.Free(block), SlabAllocator::kFreeDouble);
  EXPECT_EQ(slab.counters().invalid_frees, 2u);
  EXPECT_EQ(slab.counters().double_frees, 1u);
  // Large runs: a double free and a free inside the run are refused.
  void* large = a.Allocate(3 << 14, 0, 0);
  ASSERT_NE(large, nullptr);
  EXPECT_EQ(slab.usage().large_pages, 3u);
  EXPECT_EQ(a.Free(static_cast<uint8_t*>(large) + (1 << 14)), SlabAllocator::kFreeMisaligned);
  EXPECT_EQ(a.Free(large), SlabAllocator::kFreeOk);
  EXPECT_EQ(a.Free(large), SlabAllocator::kFreeDouble);
  EXPECT_EQ(slab.usage().large_pages, 0u);
  EXPECT_EQ(slab.PagesHeld(), 0u);
}

TEST(SlabAllocatorTest, ExhaustionReturnsNullAndFreedMemoryIsUsableAgain) {
  HostSlab slab(8, 12);  // 8 pages of 4 KiB = 32 blocks of 1 KiB
  const SlabAllocator& a = slab.allocator();
  std::vector<void*> blocks;
  for (void* p; (p = a.Allocate(1024, 0, 0)) != nullptr;) blocks.push_back(p);
  EXPECT_EQ(blocks.size(), 32u);
  EXPECT_EQ(slab.counters().failed, 1u);
  EXPECT_EQ(a.Allocate(16, 1, 0), nullptr) << "no page left for another class";
  EXPECT_EQ(slab.counters().pages_high_water, 8u);
  for (void* p : blocks) ASSERT_EQ(a.Free(p), SlabAllocator::kFreeOk);
  // Emptied pages went back to the pool: another class can have them.
  std::vector<void*> small;
  for (void* p; (p = a.Allocate(16, 1, 0)) != nullptr;) small.push_back(p);
  EXPECT_GE(small.size(), 7u * 256u) << "all but the 1 KiB hint page reusable";
  for (void* p : small) ASSERT_EQ(a.Free(p), SlabAllocator::kFreeOk);
  EXPECT_EQ(slab.PagesHeld(), 0u);
}

// With the pool empty, a caller whose shard's hint page is full takes what
// other shards' hint pages of its class still hold: a short batch only when
// no hint page of the class has room, each missing block counted.
TEST(SlabAllocatorTest, WithThePoolEmptyOtherShardsHintPagesServe) {
  HostSlab slab(2, 12);  // 2 pages of 4 KiB: 4 blocks of 1 KiB each
  const SlabAllocator& a = slab.allocator();
  std::vector<void*> blocks;
  blocks.push_back(a.Allocate(1024, 0, 0));  // shard 0's hint page: 3 left
  blocks.push_back(a.Allocate(1024, 1, 0));  // shard 1's: 3 left, pool empty
  ASSERT_NE(blocks[0], nullptr);
  ASSERT_NE(blocks[1], nullptr);
  ASSERT_NE(slab.hint(a.ClassFor(1024), 0), slab.hint(a.ClassFor(1024), 1));
  void* got[8];
  ASSERT_EQ(a.AllocateBatch(1024, 8, 0, 0, got), 6u) << "3 from shard 0's page, 3 from shard 1's";
  EXPECT_EQ(slab.counters().failed, 2u);
  blocks.insert(blocks.end(), got, got + 6);
  EXPECT_EQ(a.Allocate(1024, 1, 0), nullptr) << "every hint page full";
  EXPECT_EQ(slab.counters().failed, 3u);
  std::vector<void*> sorted = blocks;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "a block twice";
  for (void* p : blocks) ASSERT_EQ(a.Free(p), SlabAllocator::kFreeOk);
  EXPECT_EQ(slab.PagesHeld(), 0u);
}

// The bit helpers of the bitmap search against a bit-by-bit reference:
// LowestBits keeps the n lowest set bits, NthSetBit finds set bit number n.
TEST(SlabAllocatorTest, LowestBitsAndNthSetBitMatchABitByBitReference) {
  std::mt19937_64 random(7);
  for (int trial = 0; trial < 2000; ++trial) {
    uint64_t bits = random();
    if (trial % 4 == 1) bits &= random();  // sparser
    if (trial % 4 == 2) bits |= random();  // denser
    if (trial == 0) bits = 0;
    if (trial == 3) bits = ~uint64_t{0};
    std::vector<uint32_t> positions;
    for (uint32_t i = 0; i < 64; ++i) {
      if ((bits >> i) & 1) positions.push_back(i);
    }
    for (uint32_t n = 0; n <= 65; ++n) {
      uint64_t lowest = 0;
      for (uint32_t k = 0; k < n && k < positions.size(); ++k) lowest |= uint64_t{1} << positions[k];
      ASSERT_EQ(SlabAllocator::LowestBits(bits, n), lowest) << std::hex << bits << " n " << std::dec << n;
      if (n < positions.size()) {
        ASSERT_EQ(SlabAllocator::NthSetBit(bits, n), positions[n]) << std::hex << bits << " n " << n;
      }
    }
  }
}

// Classes whose pages hold fewer than kFactorBlocks blocks and more than a
// warp's batch get up to max_shard_factor times the shards, each its own
// hint word, no two classes sharing one.
TEST(SlabAllocatorTest, ClassesOfFewBlocksAPageGetMoreShards) {
  HostSlab slab(64, 16, 4, 4);  // 64 KiB pages, 4 shards, factor up to 4
  const SlabAllocator& a = slab.allocator();
  EXPECT_EQ(a.ShardsOf(a.ClassFor(16)), 4u);     // 4,096 blocks a page
  EXPECT_EQ(a.ShardsOf(a.ClassFor(256)), 4u);    // 256
  EXPECT_EQ(a.ShardsOf(a.ClassFor(512)), 8u);    // 128
  EXPECT_EQ(a.ShardsOf(a.ClassFor(1024)), 16u);  // 64
  EXPECT_EQ(a.ShardsOf(a.ClassFor(2048)), 4u);   // 32: a warp's batch takes whole pages
  EXPECT_EQ(a.ShardsOf(a.ClassFor(4096)), 4u);   // 16
  std::vector<const uint64_t*> words;
  for (uint32_t cls = 1; cls <= a.class_count(); ++cls) {
    EXPECT_EQ(a.ShardsOf(cls), 4 * SlabAllocator::ShardFactorOf(a.BlocksPerPage(cls), 4))
        << "ShardsOf and ShardsFor's count disagree, class " << cls;
    EXPECT_EQ(a.BlocksPerPage(cls), (uint64_t{1} << 16) / SlabAllocator::BlockBytes(cls));
    for (uint32_t shard = 0; shard < a.ShardsOf(cls); ++shard) words.push_back(a.HintOf(cls, shard));
    EXPECT_EQ(a.HintOf(cls, a.ShardsOf(cls)), a.HintOf(cls, 0)) << "shards wrap, class " << cls;
  }
  std::vector<const uint64_t*> sorted = words;
  std::sort(sorted.begin(), sorted.end());
  EXPECT_EQ(std::adjacent_find(sorted.begin(), sorted.end()), sorted.end()) << "a hint word shared";
  const uint64_t* first = a.hints;
  for (const uint64_t* w : words) {
    EXPECT_LT(static_cast<size_t>(w - first), size_t{SlabAllocator::kMaxClasses} * 4 * 4);
  }
  // 1 KiB from shards 1 and 5 (distinct shards of that class) take two
  // pages; 16 B from them (one shard) shares one.
  void* k1 = a.Allocate(1024, 1, 0);
  void* k5 = a.Allocate(1024, 5, 0);
  void* s1 = a.Allocate(16, 1, 0);
  void* s5 = a.Allocate(16, 5, 0);
  ASSERT_TRUE(k1 && k5 && s1 && s5);
  const auto page = [&](void* p) { return (static_cast<uint8_t*>(p) - slab.base()) >> 16; };
  EXPECT_NE(page(k1), page(k5));
  EXPECT_EQ(page(s1), page(s5));
  for (void* p : {k1, k5, s1, s5}) ASSERT_EQ(a.Free(p), SlabAllocator::kFreeOk);
  EXPECT_EQ(slab.PagesHeld(), 0u);
}

// Shards per arena: hint pages of every class in every shard at most an
// eighth of the pages, a power of two from 1 to kMaxShards.
TEST(SlabAllocatorTest, ShardsKeepHintPagesWithinAnEighthOfTheArena) {
  EXPECT_EQ(SlabAllocator::ShardsFor(131072, 16), 1024u);  // 8 GiB of 64 KiB pages
  EXPECT_EQ(SlabAllocator::ShardsFor(65536, 16), 512u);    // 4 GiB
  EXPECT_EQ(SlabAllocator::ShardsFor(4096, 16), 32u);      // 256 MiB
  EXPECT_EQ(SlabAllocator::ShardsFor(1u << 31, 16), SlabAllocator::kMaxShards);
  // A shard factor adds hint pages for classes of few blocks a page: 64 KiB
  // pages, factor 4: 5 classes of 256 blocks or more, 2 for 512 B (128
  // blocks), 4 for 1 KiB (64), 5 classes of 32 blocks or fewer: 16 a shard
  // instead of 12. ShardsFor counts them: still an eighth of the arena.
  EXPECT_EQ(SlabAllocator::HintPagesAtMost(1024, 16, 1), 1024u * 12);
  EXPECT_EQ(SlabAllocator::HintPagesAtMost(1024, 16, 4), 1024u * 16);
  EXPECT_EQ(SlabAllocator::HintPagesAtMost(1024, 16, 8), 1024u * 16) << "no class wants more";
  EXPECT_EQ(SlabAllocator::HintPagesAtMost(1024, 16, 0), 1024u * 12) << "0 means 1";
  for (uint32_t factor = 0; factor <= 64; ++factor) {
    const bool power_of_two_to_8 = factor == 1 || factor == 2 || factor == 4 || factor == 8;
    EXPECT_EQ(SlabAllocator::IsShardFactor(factor), power_of_two_to_8) << factor;
  }
  EXPECT_EQ(SlabAllocator::ShardsFor(131072, 16, 4), 1024u);
  EXPECT_EQ(SlabAllocator::ShardsFor(65536, 16, 4), 512u);
  EXPECT_EQ(SlabAllocator::ShardsFor(98304, 16, 1), 1024u);  // 6 GiB: 12 hint pages a shard
  EXPECT_EQ(SlabAllocator::ShardsFor(98304, 16, 4), 512u);   // 16
  for (uint32_t pages : {1u, 2u, 95u, 96u, 191u, 192u, 1000u, 12345u, 100000u}) {
    for (uint32_t shift : {12u, 16u, 20u}) {
      for (uint32_t factor : {1u, 4u}) {
        const uint32_t shards = SlabAllocator::ShardsFor(pages, shift, factor);
        const uint64_t hinted = SlabAllocator::HintPagesAtMost(shards, shift, factor);
        EXPECT_EQ(shards & (shards - 1), 0u) << pages << " pages";
        EXPECT_GE(shards, 1u);
        if (shards > 1) {
          EXPECT_LE(hinted * 8, pages) << pages << " pages, factor " << factor;
        }
        if (shards < SlabAllocator::kMaxShards) {
          EXPECT_GT(2 * hinted * 8, pages) << "not the most: " << pages << ", factor " << factor;
        }
      }
    }
  }
}

// A batch takes many blocks with one reservation: all distinct, aligned,
// in the class asked for, spilling onto further pages when one fills; the
// arena running dry gives a short batch and counts each missing block.
TEST(SlabAllocatorTest, BatchesAreDistinctSpanPagesAndCountShortfalls) {
  HostSlab slab(8, 12);  // 8 pages of 4 KiB: 4 blocks of 1 KiB each
  const SlabAllocator& a = slab.allocator();
  void* got[32];
  ASSERT_EQ(a.AllocateBatch(1000, 10, 0, 0, got), 10u);
  std::vector<void*> blocks(got, got + 10);
  std::sort(blocks.begin(), blocks.end());
  EXPECT_EQ(std::adjacent_find(blocks.begin(), blocks.end()), blocks.end()) << "a block twice";
  for (void* p : blocks) {
    EXPECT_EQ(reinterpret_cast<uintptr_t>(p) % 1024, reinterpret_cast<uintptr_t>(blocks[0]) % 1024);
    Fill(p, 1024, reinterpret_cast<uintptr_t>(p));
  }
  EXPECT_EQ(slab.usage().blocks[a.ClassFor(1000)], 10u);
  EXPECT_GE(slab.counters().pages_in_use, 3u) << "10 blocks of 1 KiB need 3 pages";
  // 22 blocks remain; ask for 30.
  EXPECT_EQ(a.AllocateBatch(1024, 30, 0, 5, got), 22u);  // same shard: its hint page has 2
  EXPECT_EQ(slab.counters().failed, 8u) << "each missing block counted";
  for (size_t k = 0; k < 10; ++k) {
    EXPECT_TRUE(Check(blocks[k], 1024, reinterpret_cast<uintptr_t>(blocks[k]))) << "overwritten";
  }
  for (uint32_t k = 0; k < 22; ++k) blocks.push_back(got[k]);
  std::sort(blocks.begin(), blocks.end());
  EXPECT_EQ(std::adjacent_find(blocks.begin(), blocks.end()), blocks.end()) << "a block twice";
  for (void* p : blocks) ASSERT_EQ(a.Free(p), SlabAllocator::kFreeOk);
  EXPECT_EQ(slab.PagesHeld(), 0u);
  // Page runs (above half a page) come one run per block; a short batch
  // counts every missing run.
  const uint64_t failed_before = slab.counters().failed;
  // Seven pages are free (the eighth is the empty hint page, wherever it
  // is): three runs of two fit, whatever the gap.
  ASSERT_EQ(a.AllocateBatch(2 << 12, 5, 0, 0, got), 3u) << "7 free pages hold three runs of 2";
  EXPECT_EQ(slab.counters().failed, failed_before + 2);
  EXPECT_EQ(slab.usage().large_pages, 6u);
  for (int k = 0; k < 3; ++k) EXPECT_EQ(a.Free(got[k]), SlabAllocator::kFreeOk);
  EXPECT_EQ(slab.PagesHeld(), 0u);
}

// A batch of at least a page's blocks takes whole pages from the pool for
// itself: every block of those pages, the shard's hint untouched; freed,
// the pages go back to the pool.
TEST(SlabAllocatorTest, BatchesOfWholePagesBypassTheHint) {
  HostSlab slab(8, 16);  // 64 KiB pages: 16 blocks of 4 KiB
  const SlabAllocator& a = slab.allocator();
  const uint32_t cls = a.ClassFor(4096);
  void* got[64];
  ASSERT_EQ(a.AllocateBatch(4096, 32, 3, 0, got), 32u);
  EXPECT_EQ(slab.hint(cls, 3), 0u) << "two whole pages need no hint";
  EXPECT_EQ(slab.counters().pages_in_use, 2u);
  EXPECT_EQ(slab.usage().blocks[cls], 32u);
  const std::vector<void*> first(got, got + 32);
  for (void* p : first) Fill(p, 4096, reinterpret_cast<uintptr_t>(p));
  // 40 more: two whole pages and 8 blocks through the hint.
  ASSERT_EQ(a.AllocateBatch(4096, 40, 3, 0, got), 40u);
  EXPECT_NE(slab.hint(cls, 3), 0u);
  EXPECT_EQ(slab.counters().pages_in_use, 5u);
  for (void* p : first) EXPECT_TRUE(Check(p, 4096, reinterpret_cast<uintptr_t>(p))) << "overwritten";
  std::vector<void*> blocks = first;
  blocks.insert(blocks.end(), got, got + 40);
  std::sort(blocks.begin(), blocks.end());
  EXPECT_EQ(std::adjacent_find(blocks.begin(), blocks.end()), blocks.end()) << "a block twice";
  for (void* p : blocks) ASSERT_EQ(a.Free(p), SlabAllocator::kFreeOk);
  EXPECT_EQ(slab.PagesHeld(), 0u);
  EXPECT_EQ(slab.counters().pages_in_use, 1u) << "only the empty hint page stays out of the pool";
}

// A caller that claimed a hint's replacement and never finished (a stalled
// warp) holds the others back only for a bounded wait: then one of them
// replaces the page itself, and the old page is released as usual.
TEST(SlabAllocatorTest, AStalledReplacementIsTakenOver) {
  HostSlab slab(8, 12);  // 4 KiB pages: 4 blocks of 1 KiB
  const SlabAllocator& a = slab.allocator();
  const uint32_t cls = a.ClassFor(1024);
  void* first[3];
  ASSERT_EQ(a.AllocateBatch(1024, 3, 0, 0, first), 3u);  // through the hint: 3 of 4
  void* last = a.Allocate(1024, 0, 0);                    // fills the hint page
  ASSERT_NE(last, nullptr);
  const uint64_t named = slab.hint(cls, 0);
  ASSERT_NE(named, 0u);
  slab.set_hint(cls, 0, named | SlabAllocator::kReplacing);  // claimed, then stalled
  void* next = a.Allocate(1024, 0, 0);
  ASSERT_NE(next, nullptr) << "waited on the stalled claim for ever";
  EXPECT_NE(slab.hint(cls, 0), named) << "not replaced";
  EXPECT_EQ(slab.hint(cls, 0) & SlabAllocator::kReplacing, 0u);
  // The replaced page lost its hint bit: freeing its blocks retires it.
  for (void* p : first) ASSERT_EQ(a.Free(p), SlabAllocator::kFreeOk);
  ASSERT_EQ(a.Free(last), SlabAllocator::kFreeOk);
  ASSERT_EQ(a.Free(next), SlabAllocator::kFreeOk);
  EXPECT_EQ(slab.PagesHeld(), 0u);
  EXPECT_EQ(slab.counters().pages_in_use, 1u) << "only the new, empty hint page";
}

// Several blocks of one bitmap word freed with one fetch_and (what a warp's
// coalesced free does): each is released once; a bit already clear shows
// in the returned word (the caller refuses it as a double free).
TEST(SlabAllocatorTest, FreeBitsReleasesEachSetBitOnce) {
  HostSlab slab(8, 12);  // 4 KiB pages: 64 blocks of 64 B, one bitmap word
  const SlabAllocator& a = slab.allocator();
  void* got[32];
  ASSERT_EQ(a.AllocateBatch(64, 5, 0, 0, got), 5u);
  SlabAllocator::Located at[5];
  uint64_t bits = 0;
  for (int k = 0; k < 5; ++k) {
    at[k] = a.Locate(got[k]);
    ASSERT_EQ(at[k].status, SlabAllocator::kFreeOk);
    ASSERT_EQ(at[k].word, at[0].word) << "one page, one word";
    bits |= at[k].bit;
  }
  EXPECT_EQ(a.Free(got[4]), SlabAllocator::kFreeOk);  // freed alone first
  const uint64_t before = a.FreeBits(at[0].page, at[0].word, bits);
  EXPECT_EQ(before & bits, bits & ~at[4].bit) << "the bit freed before was clear";
  EXPECT_EQ(slab.usage().blocks[a.ClassFor(64)], 0u);
  EXPECT_EQ(slab.PagesHeld(), 0u);
  // Again: nothing set, nothing released (the caller refuses each).
  EXPECT_EQ(a.FreeBits(at[0].page, at[0].word, bits) & bits, 0u);
  EXPECT_EQ(slab.PagesHeld(), 0u);
  EXPECT_EQ(a.Locate(nullptr).status, SlabAllocator::kFreeForeign);
}

// Many threads taking batches (a warp's worth) and freeing them as a warp's
// coalesced free does -- the blocks of one bitmap word with one FreeBits --
// while others free single blocks: no overlap, every block back, no page
// leaked, no free refused.
TEST(SlabAllocatorTest, ConcurrentBatchesFreedByWordNeverOverlap) {
  HostSlab slab(256, 14);  // 4 MiB in 16 KiB pages
  const SlabAllocator& a = slab.allocator();
  constexpr int kThreads = 8;
  constexpr int kRounds = 3000;
  std::atomic<uint64_t> corrupt{0}, short_batches{0}, refused{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 random(100 + t);
      for (int round = 0; round < kRounds; ++round) {
        const uint64_t bytes = uint64_t{16} << (random() % 7);  // 16 B .. 1 KiB
        const uint32_t want = 1 + random() % 32;
        void* got[32];
        const uint32_t n = a.AllocateBatch(bytes, want, t, static_cast<uint32_t>(random()), got);
        if (n != want) ++short_batches;
        for (uint32_t k = 0; k < n; ++k) Fill(got[k], bytes, (uint64_t(t) << 48) ^ (uint64_t(round) << 8) ^ k);
        for (uint32_t k = 0; k < n; ++k) {
          if (!Check(got[k], bytes, (uint64_t(t) << 48) ^ (uint64_t(round) << 8) ^ k)) ++corrupt;
        }
        if (random() % 2 == 0) {
          for (uint32_t k = 0; k < n; ++k) {
            if (a.Free(got[k]) != SlabAllocator::kFreeOk) ++refused;
          }
          continue;
        }
        // Group by bitmap word, as FreeCoalesced does for a warp.
        bool done[32] = {};
        for (uint32_t k = 0; k < n; ++k) {
          if (done[k]) continue;
          const SlabAllocator::Located first = a.Locate(got[k]);
          if (first.status != SlabAllocator::kFreeOk) {
            ++refused;
            continue;
          }
          uint64_t bits = 0;
          for (uint32_t j = k; j < n; ++j) {
            const SlabAllocator::Located at = a.Locate(got[j]);
            if (!done[j] && at.status == SlabAllocator::kFreeOk && at.word == first.word) {
              bits |= at.bit;
              done[j] = true;
            }
          }
          const uint64_t before = a.FreeBits(first.page, first.word, bits);
          if ((before & bits) != bits) ++refused;
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(corrupt.load(), 0u) << "blocks overlapped";
  EXPECT_EQ(refused.load(), 0u) << "valid frees refused";
  EXPECT_EQ(short_batches.load(), 0u) << "the arena had room";
  EXPECT_EQ(slab.counters().double_frees + slab.counters().invalid_frees, 0u);
  EXPECT_EQ(slab.PagesHeld(), 0u) << "pages leaked";
  EXPECT_EQ(slab.usage().bytes_in_use, 0u);
}

// A free that looked its block up, then lost the race with the block's
// page being freed, retired and reused as the head of a page run (a double
// free of a stale pointer): refused, and the run is untouched -- its length
// is not in the head's bitmap for such a free to clear, and nothing is
// released from the head's state word.
TEST(SlabAllocatorTest, AStaleFreeRacingWithPageReuseIsRefusedHarmlessly) {
  HostSlab slab(1, 12);  // one page: it must be the one reused
  const SlabAllocator& a = slab.allocator();
  void* block = a.Allocate(16, 0, 0);
  ASSERT_EQ(block, slab.base()) << "block 0: its bit is the one a run length of 1 sets";
  const SlabAllocator::Located stale = a.Locate(block);  // looked up ...
  ASSERT_EQ(stale.status, SlabAllocator::kFreeOk);
  ASSERT_EQ(a.Free(block), SlabAllocator::kFreeOk);
  // ... the page empties; it is a hint, so it stays in its class until a
  // run needs it: take the hint away as a replacement would.
  slab.set_hint(a.ClassFor(16), 0, 0);
  a.UnmarkHintPage(0);
  ASSERT_EQ(slab.PagesOutOfPool(), 0u) << "the emptied page went back to the pool";
  void* run = a.Allocate(4096, 0, 0);  // a whole page: a run of one
  ASSERT_EQ(run, slab.base());
  const SlabUsage before = slab.usage();
  EXPECT_EQ(a.FreeLocated(stale), SlabAllocator::kFreeDouble) << "the stale free went through";
  const SlabUsage after = slab.usage();
  EXPECT_EQ(after.large_pages, before.large_pages) << "the run's page changed class";
  EXPECT_EQ(a.Free(run), SlabAllocator::kFreeOk) << "the run could not be freed";
  EXPECT_EQ(slab.PagesOutOfPool(), 0u);
  EXPECT_EQ(slab.counters().double_frees, 1u);
}

// Requests no run of pages can serve get null and a failure count, up to the
// largest size a caller can pass: neither the class search nor the page
// rounding may wrap around to a small size.
TEST(SlabAllocatorTest, HugeRequestsReturnNull) {
  HostSlab slab(128, 12);  // 128 pages of 4 KiB: runs of up to 64 pages
  const SlabAllocator& a = slab.allocator();
  EXPECT_EQ(a.ClassFor(~uint64_t{0}), 0u);
  EXPECT_EQ(a.ClassFor(uint64_t{1} << 63), 0u);
  EXPECT_EQ(a.ClassFor((uint64_t{1} << 63) + 1), 0u);
  const uint64_t huge[] = {~uint64_t{0}, ~uint64_t{0} - 4094, uint64_t{1} << 63,
                           (uint64_t{1} << 63) + 1, (uint64_t{64} << 12) + 1};
  uint64_t failed = 0;
  for (uint64_t bytes : huge) {
    EXPECT_EQ(a.Allocate(bytes, 0, 0), nullptr) << bytes;
    EXPECT_EQ(slab.counters().failed, ++failed) << bytes;
  }
  EXPECT_EQ(slab.usage().large_pages, 0u);
  void* largest = a.Allocate(uint64_t{64} << 12, 0, 0);  // exactly 64 pages
  ASSERT_NE(largest, nullptr);
  EXPECT_EQ(slab.usage().large_pages, 64u);
  EXPECT_EQ(a.Free(largest), SlabAllocator::kFreeOk);
  EXPECT_EQ(slab.PagesHeld(), 0u);
}

// Many threads allocating and freeing mixed sizes, some freeing blocks
// other threads allocated: no two live blocks overlap (each block's pattern
// is intact when it is freed), and every page comes back.
// With a shard factor of 4, classes of few blocks a page (here, with 16 KiB
// pages, 128 B: 2x, 256 B: 4x) spread over more hints than the others.
class ConcurrentMixedSizes : public ::testing::TestWithParam<uint32_t> {};
INSTANTIATE_TEST_SUITE_P(ShardFactor, ConcurrentMixedSizes, ::testing::Values(1u, 4u));
TEST_P(ConcurrentMixedSizes, NeverOverlap) {
  HostSlab slab(512, 14, 64, GetParam());  // 8 MiB in 16 KiB pages
  const SlabAllocator& a = slab.allocator();
  constexpr int kThreads = 8;
  constexpr int kOps = 20000;
  std::mutex exchange_mu;
  std::vector<std::pair<void*, std::pair<uint64_t, uint64_t>>> exchange;  // block, (bytes, tag)
  std::atomic<uint64_t> corrupt{0}, refused{0}, nulls{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 random(t + 1);
      std::vector<std::pair<void*, std::pair<uint64_t, uint64_t>>> live;
      auto release = [&](std::pair<void*, std::pair<uint64_t, uint64_t>> b) {
        if (!Check(b.first, b.second.first, b.second.second)) ++corrupt;
        if (a.Free(b.first) != SlabAllocator::kFreeOk) ++refused;
      };
      for (int op = 0; op < kOps; ++op) {
        // Up to 64 live blocks per thread, plus one batch (at most about
        // 3 MB in all): the arena is never exhausted, so no allocation may fail.
        const int r = live.size() >= 64 ? 60 : static_cast<int>(random() % 100);
        if (r < 55 || live.empty()) {
          // Mostly small, some up to a few pages; a third of the small
          // requests come as a batch of up to 32 (a warp's worth).
          uint64_t bytes = random() % 10 == 0 ? 1 + random() % 40000 : 1 + random() % 1024;
          const uint32_t want = bytes <= 1024 && random() % 3 == 0 ? 1 + random() % 32 : 1;
          void* got[32];
          uint32_t n = 0;
          if (want == 1) {
            got[0] = a.Allocate(bytes, static_cast<uint32_t>(t), static_cast<uint32_t>(random()));
            n = got[0] != nullptr ? 1 : 0;
          } else {
            n = a.AllocateBatch(bytes, want, static_cast<uint32_t>(t),
                                static_cast<uint32_t>(random()), got);
          }
          nulls += want - n;
          for (uint32_t k = 0; k < n; ++k) {
            const uint64_t tag = (uint64_t(t) << 56) ^ (uint64_t(op) << 8) ^ k ^ random();
            const uint64_t rounded = bytes / 8 * 8;
            Fill(got[k], rounded, tag);
            live.push_back({got[k], {rounded, tag}});
          }
        } else if (r < 85) {
          size_t i = random() % live.size();
          release(live[i]);
          live[i] = live.back();
          live.pop_back();
        } else {
          // Hand a block to another thread, free one from another thread.
          std::lock_guard<std::mutex> lock(exchange_mu);
          size_t i = random() % live.size();
          exchange.push_back(live[i]);
          live[i] = live.back();
          live.pop_back();
          if (exchange.size() > 1) {
            auto b = exchange[random() % exchange.size()];
            exchange.erase(std::find(exchange.begin(), exchange.end(), b));
            release(b);
          }
        }
      }
      for (auto& b : live) release(b);
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (auto& b : exchange) {
    if (!Check(b.first, b.second.first, b.second.second)) ++corrupt;
    if (a.Free(b.first) != SlabAllocator::kFreeOk) ++refused;
  }
  EXPECT_EQ(corrupt.load(), 0u) << "blocks overlapped";
  EXPECT_EQ(refused.load(), 0u) << "valid frees refused";
  EXPECT_EQ(slab.counters().double_frees + slab.counters().invalid_frees, 0u);
  EXPECT_EQ(slab.PagesHeld(), 0u) << "pages leaked";
  EXPECT_EQ(slab.usage().bytes_in_use, 0u);
  EXPECT_EQ(nulls.load(), 0u) << "allocations failed while the arena had room";
}

// Many threads on a pool small enough to run dry, sharing three shards:
// hint replacements are claimed, withdrawn (empty pool), lost to a faster
// publisher and taken over; whole-page batches and page runs take pages
// beside them; blocks are freed by other threads. Every 16-byte granule is
// owned by at most one live block at a time (a shadow count), patterns
// survive, and at rest no page is lost, no hint is left claimed, every
// failure was counted, and the page count matches the pool.
TEST(SlabAllocatorTest, ConcurrentReplacementsOnASmallPoolLoseNothing) {
  constexpr uint32_t kPages = 24, kShift = 12;  // 96 KiB in 4 KiB pages
  HostSlab slab(kPages, kShift);
  const SlabAllocator& a = slab.allocator();
  constexpr int kThreads = 12, kOps = 3000;
  const uint64_t granules = (uint64_t{kPages} << kShift) / 16;
  std::unique_ptr<std::atomic<uint32_t>[]> owners(new std::atomic<uint32_t>[granules]);
  for (uint64_t g = 0; g < granules; ++g) owners[g] = 0;
  struct Held {
    void* p;
    uint64_t span;  // bytes the block owns
    uint64_t tag;
  };
  std::atomic<uint64_t> overlaps{0}, corrupt{0}, refused{0}, nulls{0}, whole_batches{0};
  auto own = [&](const Held& b, int delta) {
    const uint64_t first = (static_cast<uint8_t*>(b.p) - slab.base()) / 16;
    for (uint64_t g = first; g < first + b.span / 16; ++g) {
      const uint32_t was = owners[g].fetch_add(static_cast<uint32_t>(delta));
      if (delta > 0 ? was != 0 : was != 1) ++overlaps;
    }
  };
  std::mutex exchange_mu;
  std::vector<Held> exchange;
  auto release = [&](const Held& b) {
    if (!Check(b.p, std::min<uint64_t>(b.span, 512), b.tag)) ++corrupt;
    own(b, -1);
    if (a.Free(b.p) != SlabAllocator::kFreeOk) ++refused;
  };
  grosr_test::fuzz_schedule = true;
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::mt19937_64 random(t + 101);
      std::vector<Held> live;
      const uint32_t shard = static_cast<uint32_t>(t % 3);
      for (int op = 0; op < kOps; ++op) {
        const int r = static_cast<int>(random() % 100);
        if (r < 50 || live.empty()) {
          const int kind = static_cast<int>(random() % 10);
          uint64_t bytes = 1 + random() % (1u << (kShift - 1));
          uint32_t want = 1;
          if (kind == 0) {
            bytes = (uint64_t{1} << kShift) * (1 + random() % 2);  // a run of pages
          } else if (kind <= 3 && a.BlocksPerPage(a.ClassFor(bytes)) <= 64) {
            const uint32_t capacity = a.BlocksPerPage(a.ClassFor(bytes));
            want = capacity + static_cast<uint32_t>(random() % (65 - capacity));  // whole pages
            ++whole_batches;
          } else if (kind <= 6) {
            want = 1 + static_cast<uint32_t>(random() % 32);
          }
          void* got[64];
          const uint32_t n = a.AllocateBatch(bytes, want, shard, static_cast<uint32_t>(random()), got);
          nulls += want - n;
          const uint32_t cls = a.ClassFor(bytes);
          const uint64_t span = cls == 0 ? bytes : SlabAllocator::BlockBytes(cls);
          for (uint32_t k = 0; k < n; ++k) {
            const Held b{got[k], span, (uint64_t(t) << 56) ^ (uint64_t(op) << 8) ^ k};
            own(b, +1);
            Fill(b.p, std::min<uint64_t>(b.span, 512), b.tag);
            live.push_back(b);
          }
          while (live.size() > 48) {  // keep the pool churning, not just full
            const size_t i = random() % live.size();
            release(live[i]);
            live[i] = live.back();
            live.pop_back();
          }
        } else if (r < 80) {
          for (int k = 1 + static_cast<int>(random() % 8); k > 0 && !live.empty(); --k) {
            const size_t i = random() % live.size();
            release(live[i]);
            live[i] = live.back();
            live.pop_back();
          }
        } else {
          std::vector<Held> theirs;
          {
            std::lock_guard<std::mutex> lock(exchange_mu);
            for (int k = 1 + static_cast<int>(random() % 4); k > 0 && !live.empty(); --k) {
              const size_t i = random() % live.size();
              exchange.push_back(live[i]);
              live[i] = live.back();
              live.pop_back();
            }
            for (int k = 1 + static_cast<int>(random() % 4); k > 0 && exchange.size() > 1; --k) {
              const size_t i = random() % exchange.size();
              theirs.push_back(exchange[i]);
              exchange[i] = exchange.back();
              exchange.pop_back();
            }
          }
          for (const Held& b : theirs) release(b);
        }
      }
      for (const Held& b : live) release(b);
    });
  }
  for (std::thread& thread : threads) thread.join();
  grosr_test::fuzz_schedule = false;
  for (const Held& b : exchange) release(b);
  EXPECT_GT(whole_batches.load(), 0u);
  EXPECT_GT(nulls.load(), 0u) << "the pool never ran dry: the test lost its point";
  EXPECT_EQ(overlaps.load(), 0u) << "a granule had two owners";
  EXPECT_EQ(corrupt.load(), 0u) << "a block's pattern changed";
  EXPECT_EQ(refused.load(), 0u) << "valid frees refused";
  EXPECT_EQ(slab.counters().failed, nulls.load()) << "every missing block counted, once";
  EXPECT_EQ(slab.PagesHeld(), 0u) << "pages lost";
  EXPECT_EQ(slab.usage().bytes_in_use, 0u);
  EXPECT_EQ(slab.counters().pages_in_use, slab.PagesOutOfPool()) << "the count drifted";
  EXPECT_LE(slab.counters().pages_in_use, 3u * a.class_count()) << "only empty hint pages remain";
}

}  // namespace
}  // namespace grosr
