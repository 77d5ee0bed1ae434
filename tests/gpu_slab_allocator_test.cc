// The SlabAllocator on a real GPU, from standalone kernels (bench/
// slab_kernels.h): a full GPU grid allocating, writing, verifying and
// freeing; exhaustion and recovery; bad frees from device code; frees by
// other threads; churn. Every test reads the allocator's state back
// (counters, page states) and checks it is clean afterwards: no live block,
// no page held but the empty hint pages.
//
// Skips where there is no GPU (see gpu_test_support.h); GROSR_TEST_SCALE
// scales the thread counts (the sanitizer run uses 0.01).
#include <algorithm>
#include <cstdint>
#include <memory>
#include <numeric>
#include <optional>
#include <vector>

#include "absl/strings/str_cat.h"
#include "bench/slab_kernels.h"
#include "gtest/gtest.h"
#include "tests/gpu_test_support.h"

namespace grosr {
namespace {

using testing::Scaled;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint32_t kPageShift = 16;  // 64 KiB pages
constexpr uint64_t kPage = uint64_t{1} << kPageShift;

// One session and one loaded module for the whole binary (never destroyed:
// the process exit releases the context).
struct SharedGpu {
  absl::Status status;
  std::unique_ptr<GpuSession> session;
  std::unique_ptr<Compiler> compiler;
  std::optional<SlabKernels> kernels;
};

SharedGpu& Gpu() {
  static SharedGpu* gpu = [] {
    auto* g = new SharedGpu;
    absl::StatusOr<std::unique_ptr<GpuSession>> session = GpuSession::Open({});
    if (!session.ok()) {
      g->status = session.status();
      return g;
    }
    g->session = std::move(*session);
    absl::StatusOr<std::unique_ptr<Compiler>> compiler = Compiler::Create({});
    if (!compiler.ok()) {
      g->status = compiler.status();
      return g;
    }
    g->compiler = std::move(*compiler);
    absl::StatusOr<SlabKernels> kernels = SlabKernels::Load(*g->session, *g->compiler);
    if (!kernels.ok()) {
      g->status = kernels.status();
      return g;
    }
    g->kernels = std::move(*kernels);
    return g;
  }();
  return *gpu;
}

#define GPU_OK(expr)                                       \
  do {                                                     \
    const ::absl::Status gpu_ok_ = (expr);                 \
    ASSERT_TRUE(gpu_ok_.ok()) << #expr << ": " << gpu_ok_; \
  } while (false)

#define GPU_ASSIGN(var, expr)                                       \
  auto var##_or = (expr);                                           \
  ASSERT_TRUE(var##_or.ok()) << #expr << ": " << var##_or.status(); \
  auto var = std::move(*var##_or)

class GpuSlabAllocatorTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const absl::Status& status = Gpu().status;
    if (!status.ok() && testing::IsNoGpu(status) && !testing::GpuRequired()) {
      GTEST_SKIP() << "no CUDA GPU here: " << status.message();
    }
    ASSERT_TRUE(status.ok()) << status;
    ASSERT_FALSE(gpu().lost()) << "an earlier test left a kernel running";
  }

  GpuSession& gpu() { return *Gpu().session; }
  SlabKernels& kernels() { return *Gpu().kernels; }

  // Every thread the GPU holds at once (SMs x resident threads), scaled.
  uint32_t FullGrid() {
    const GpuInfo& info = gpu().info();
    return static_cast<uint32_t>(
        Scaled(uint64_t(info.sm_count) * static_cast<uint64_t>(info.max_threads_per_sm)));
  }

  // What a request of `bytes` really takes: its class's block, or whole pages.
  static uint64_t Footprint(const SlabAllocator& heap, uint64_t bytes) {
    const uint32_t cls = heap.ClassFor(bytes);
    if (cls != 0) return SlabAllocator::BlockBytes(cls);
    return (bytes + heap.page_bytes() - 1) / heap.page_bytes() * heap.page_bytes();
  }

  // An arena for `demand` bytes of blocks with room to spare: twice the
  // demand plus 1 GiB (fresh pages taken by allocations racing for a hint
  // are out of the pool for a moment).
  static uint64_t ArenaFor(uint64_t demand) { return (2 * demand + 1024 * kMiB) / kPage * kPage; }

  template <typename T>
  std::vector<T> Read(CUdeviceptr from, size_t count) {
    absl::StatusOr<std::vector<T>> out = gpu().Download<T>(from, count);
    EXPECT_TRUE(out.ok()) << out.status();
    return out.ok() ? std::move(*out) : std::vector<T>(count);
  }
  uint32_t ReadU32(CUdeviceptr from) { return Read<uint32_t>(from, 1)[0]; }
  uint64_t ReadU64(CUdeviceptr from) { return Read<uint64_t>(from, 1)[0]; }

  // Nothing live, nothing leaked: every page is back in the pool but the
  // empty hint pages, and the counters say what the test expects.
  void ExpectClean(DeviceSlab& slab, uint64_t failed, uint64_t invalid, uint64_t doubles) {
    absl::StatusOr<SlabSnapshot> s = slab.Snapshot();
    ASSERT_TRUE(s.ok()) << s.status();
    EXPECT_EQ(s->pages_held, 0u) << "pages neither free nor an empty hint: leaked or live";
    EXPECT_EQ(s->usage.bytes_in_use, 0u);
    EXPECT_EQ(s->usage.large_pages, 0u);
    for (uint32_t cls = 0; cls < SlabAllocator::kMaxClasses; ++cls) {
      EXPECT_EQ(s->usage.blocks[cls], 0u) << "class " << cls;
    }
    EXPECT_EQ(s->counters.pages_in_use, s->hint_pages) << "pages_in_use disagrees with the pages";
    EXPECT_EQ(s->counters.failed, failed);
    EXPECT_EQ(s->counters.invalid_frees, invalid);
    EXPECT_EQ(s->counters.double_frees, doubles);
  }

  // Why allocations failed: the pool ran dry at some moment (fresh pages
  // taken by threads racing for a hint count too), or an allocation gave up
  // while pages were free (its attempts ran out).
  std::string WhyNulls(DeviceSlab& slab) {
    absl::StatusOr<SlabSnapshot> s = slab.Snapshot();
    if (!s.ok()) return s.status().ToString();
    const bool dry = s->counters.pages_high_water >= slab.layout().page_count;
    return absl::StrCat("failed counter ", s->counters.failed, ", pages high water ",
                        s->counters.pages_high_water, " of ", slab.layout().page_count, ": ",
                        dry ? "the pool ran dry at some moment"
                            : "pages were free, an allocation gave up");
  }

  // Block pointers read back: none null, each 16-byte aligned, inside the
  // arena, no two overlapping (at their classes' full block sizes).
  void ExpectDisjoint(DeviceSlab& slab, const std::vector<uint64_t>& blocks,
                      const std::vector<uint32_t>& requested) {
    std::vector<uint32_t> footprints(requested.size());
    for (size_t i = 0; i < requested.size(); ++i) {
      footprints[i] = static_cast<uint32_t>(Footprint(slab.view(), requested[i]));
    }
    const absl::Status disjoint =
        CheckDisjoint(blocks, footprints, slab.arena(), slab.arena() + slab.arena_bytes());
    EXPECT_TRUE(disjoint.ok()) << disjoint;
  }
};

// --- every thread of the GPU ----------------------------------------------------

class FullGridTest : public GpuSlabAllocatorTest,
                     public ::testing::WithParamInterface<uint32_t> {};

// Every thread of a full grid allocates (S bytes, or mixed sizes with some
// page runs when S = 0), writes its pattern over the whole block; a second
// kernel verifies every block; the host checks no two blocks overlap; all
// are freed. Twice: the second round reuses the first round's memory.
TEST_P(FullGridTest, EveryThreadAllocatesWritesVerifiesAndFrees) {
  const uint32_t bytes = GetParam();
  const uint32_t n = FullGrid();
  std::vector<uint32_t> sizes(n, bytes);
  if (bytes == 0) {
    sizes = MixedSizes(n, 4096, 11);
    for (uint32_t i = 0; i < n; i += 997) sizes[i] = 40000;      // one page
    for (uint32_t i = 0; i < n; i += 4999) sizes[i] = 200000;    // a run of 4
  }
  // Allocation footprint, to size the arena.
  const SlabLayout probe = SlabLayout::For(kPage, kPageShift);
  const SlabAllocator probe_view = probe.View(0, 0);
  uint64_t demand = 0;
  for (uint32_t s : sizes) demand += Footprint(probe_view, s);

  // Everything allocated before the first launch (compute-sanitizer).
  GPU_ASSIGN(slab, DeviceSlab::Create(gpu(), ArenaFor(demand), kPageShift));
  GPU_ASSIGN(blocks, gpu().Allocate(size_t{n} * 8));
  GPU_ASSIGN(sizes_dev, gpu().Allocate(size_t{n} * 4));
  GPU_ASSIGN(codes, gpu().Allocate(size_t{n} * 4));
  GPU_ASSIGN(counts, gpu().Allocate(16));  // bad, nulls, refused
  const CUdeviceptr bad = counts.get(), nulls = counts.get() + 4, refused = counts.get() + 8;
  GPU_OK(gpu().Upload(sizes_dev.get(), sizes));
  GPU_OK(slab.Reset());

  for (uint32_t round = 0; round < 2; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round, ", ", n, " threads, ",
                              bytes == 0 ? std::string("mixed sizes") : absl::StrCat(bytes, " B")));
    const uint32_t seed = 100 + round;
    GPU_OK(gpu().Zero(counts.get(), 16));
    GPU_OK(kernels().SlabAlloc(slab.view(), n, 0, sizes_dev.get(), blocks.get()));
    GPU_OK(kernels().Fill(n, blocks.get(), 0, sizes_dev.get(), seed));
    GPU_OK(kernels().Verify(n, blocks.get(), 0, sizes_dev.get(), seed, bad, nulls));
    GPU_OK(gpu().Wait("alloc, fill, verify"));
    const uint32_t failed = ReadU32(nulls);
    ASSERT_EQ(failed, 0u) << "allocations failed with the arena at most half full; "
                          << WhyNulls(slab);
    EXPECT_EQ(ReadU32(bad), 0u) << "blocks whose pattern was overwritten";
    const std::vector<uint64_t> pointers = Read<uint64_t>(blocks.get(), n);
    ExpectDisjoint(slab, pointers, sizes);

    // The device's pattern is the one the host computes.
    if (n > 1 && sizes[1] >= 16) {
      const std::vector<uint32_t> words = Read<uint32_t>(pointers[1], 4);
      for (uint32_t k = 0; k < 4; ++k) EXPECT_EQ(words[k], SlabPatternWord(1, k, seed)) << k;
    }
    // Every block counted in its class (no transient reservation is left).
    GPU_ASSIGN(live, slab.Snapshot());
    uint64_t class_blocks = 0;
    for (uint64_t b : live.usage.blocks) class_blocks += b;
    uint64_t expected_blocks = 0, expected_large_pages = 0;
    for (uint32_t s : sizes) {
      if (slab.view().ClassFor(s) != 0) {
        ++expected_blocks;
      } else {
        expected_large_pages += Footprint(slab.view(), s) / kPage;
      }
    }
    EXPECT_EQ(class_blocks, expected_blocks);
    EXPECT_EQ(live.usage.large_pages, expected_large_pages);
    EXPECT_EQ(live.counters.failed, 0u);

    GPU_OK(kernels().SlabFree(slab.view(), n, blocks.get(), 0, codes.get(), refused));
    GPU_OK(gpu().Wait("free"));
    EXPECT_EQ(ReadU32(refused), 0u) << "valid frees refused";
    const std::vector<uint32_t> results = Read<uint32_t>(codes.get(), n);
    EXPECT_EQ(std::count(results.begin(), results.end(), SlabAllocator::kFreeOk), n);
    ExpectClean(slab, 0, 0, 0);
  }
}

// 8 KiB and up: a warp's batch is whole pages, past the two runs a warp's
// leader keeps in registers (AllocateCoalesced's BlockRuns overflow).
INSTANTIATE_TEST_SUITE_P(Sizes, FullGridTest,
                         ::testing::Values(16u, 64u, 256u, 1024u, 4096u, 8192u, 32768u, 0u),
                         [](const ::testing::TestParamInfo<uint32_t>& info) {
                           return info.param == 0 ? std::string("Mixed")
                                                  : absl::StrCat(info.param, "B");
                         });

// --- exhaustion and recovery ----------------------------------------------------

// A 16-page arena: one thread allocates until null (exactly the arena's
// blocks), the failure is counted; all threads of a grid twice too big
// allocate at once (nulls counted, the rest intact); after everything is
// freed another class gets every page not held as an empty hint.
TEST_F(GpuSlabAllocatorTest, ExhaustionReturnsNullAndFreedMemoryComesBack) {
  constexpr uint32_t kPages = 16;
  constexpr uint32_t kBig = 1024, kSmall = 256;
  constexpr uint32_t kBigCapacity = kPages * (kPage / kBig);      // 1024
  constexpr uint32_t kSmallCapacity = kPages * (kPage / kSmall);  // 4096
  constexpr uint32_t kContended = 2 * kBigCapacity;
  GPU_ASSIGN(slab, DeviceSlab::Create(gpu(), kPages * kPage, kPageShift));
  GPU_ASSIGN(blocks, gpu().Allocate(size_t{kSmallCapacity + 1} * 8));
  GPU_ASSIGN(other, gpu().Allocate(16 * 8));
  GPU_ASSIGN(codes, gpu().Allocate(size_t{kSmallCapacity + 1} * 4));
  GPU_ASSIGN(counts, gpu().Allocate(16));  // count, bad, nulls, refused
  const CUdeviceptr count = counts.get(), bad = counts.get() + 4, nulls = counts.get() + 8,
                    refused = counts.get() + 12;
  GPU_OK(slab.Reset());
  GPU_OK(gpu().Zero(counts.get(), 16));

  // 1. One thread until null: every block of every page, then one failure.
  GPU_OK(kernels().SlabAllocUntilNull(slab.view(), kBig, kSmallCapacity + 1, blocks.get(), count));
  GPU_OK(gpu().Wait("until null"));
  const uint32_t got = ReadU32(count);
  ASSERT_EQ(got, kBigCapacity) << "the arena's 1 KiB blocks";
  GPU_OK(kernels().Fill(got, blocks.get(), kBig, 0, 1));
  GPU_OK(kernels().Verify(got, blocks.get(), kBig, 0, 1, bad, 0));
  // No page is left for another class either.
  GPU_OK(kernels().SlabAllocUntilNull(slab.view(), 16, 16, other.get(), count));
  GPU_OK(gpu().Wait("fill, verify, other class"));
  EXPECT_EQ(ReadU32(count), 0u) << "a 16 B block from a full arena";
  EXPECT_EQ(ReadU32(bad), 0u);
  ExpectDisjoint(slab, Read<uint64_t>(blocks.get(), got), std::vector<uint32_t>(got, kBig));
  {
    GPU_ASSIGN(full, slab.Snapshot());
    EXPECT_EQ(full.counters.failed, 2u) << "each null counted";
    EXPECT_EQ(full.counters.pages_in_use, kPages);
    EXPECT_EQ(full.counters.pages_high_water, kPages);
  }
  GPU_OK(kernels().SlabFree(slab.view(), got, blocks.get(), 0, codes.get(), refused));
  GPU_OK(gpu().Wait("free"));
  EXPECT_EQ(ReadU32(refused), 0u);
  ExpectClean(slab, 2, 0, 0);

  // 2. Twice as many threads as blocks, all at once.
  GPU_OK(gpu().Zero(counts.get(), 16));
  GPU_OK(kernels().SlabAlloc(slab.view(), kContended, kBig, 0, blocks.get()));
  GPU_OK(kernels().Fill(kContended, blocks.get(), kBig, 0, 2));
  GPU_OK(kernels().Verify(kContended, blocks.get(), kBig, 0, 2, bad, nulls));
  GPU_OK(gpu().Wait("contended alloc"));
  const uint32_t contended_nulls = ReadU32(nulls);
  EXPECT_EQ(ReadU32(bad), 0u);
  EXPECT_GE(contended_nulls, kContended - kBigCapacity) << "more blocks than the arena holds";
  EXPECT_LT(contended_nulls, kContended) << "nothing allocated from an empty arena";
  std::vector<uint64_t> pointers = Read<uint64_t>(blocks.get(), kContended);
  pointers.erase(std::remove(pointers.begin(), pointers.end(), 0u), pointers.end());
  ExpectDisjoint(slab, pointers, std::vector<uint32_t>(pointers.size(), kBig));
  std::printf("contended: %u of %u threads got a block (arena holds %u)\n",
              kContended - contended_nulls, kContended, kBigCapacity);
  {
    GPU_ASSIGN(state, slab.Snapshot());
    EXPECT_EQ(state.counters.failed, 2u + contended_nulls) << "every null counted once";
  }
  // Free(nullptr) is a no-op: the null entries free fine.
  GPU_OK(kernels().SlabFree(slab.view(), kContended, blocks.get(), 0, codes.get(), refused));
  GPU_OK(gpu().Wait("free"));
  EXPECT_EQ(ReadU32(refused), 0u);
  ExpectClean(slab, 2u + contended_nulls, 0, 0);

  // 3. Recovery: another class gets every page but the empty 1 KiB hints.
  GPU_ASSIGN(before, slab.Snapshot());
  const uint32_t expected = (kPages - before.hint_pages) * (kPage / kSmall);
  GPU_OK(kernels().SlabAllocUntilNull(slab.view(), kSmall, kSmallCapacity + 1, blocks.get(), count));
  GPU_OK(gpu().Wait("until null, another class"));
  const uint32_t small = ReadU32(count);
  EXPECT_EQ(small, expected) << before.hint_pages << " pages held as empty 1 KiB hints";
  GPU_OK(kernels().Fill(small, blocks.get(), kSmall, 0, 3));
  GPU_OK(kernels().Verify(small, blocks.get(), kSmall, 0, 3, bad, 0));
  GPU_OK(kernels().SlabFree(slab.view(), small, blocks.get(), 0, codes.get(), refused));
  GPU_OK(gpu().Wait("fill, verify, free"));
  EXPECT_EQ(ReadU32(bad), 0u);
  EXPECT_EQ(ReadU32(refused), 0u);
  ExpectClean(slab, 3u + contended_nulls, 0, 0);
}

// With the pool empty, an allocation takes what other shards' hint pages
// hold: no block is stranded on a page another shard's hint names. 768
// pages give 8 shards (ShardsFor; shard factor 1). Warps 0..7 (shards 0..7) each take 32
// blocks of 1 KiB, leaving 32 free on each shard's hint page; one thread of
// shard 0 takes all but 16 of what its hint and the pool hold; a warp of
// shard 0 asking for 32 then gets 16 from its own hint page and 16 from
// shard 1's (a coalesced batch through the pool-empty path); one thread of
// shard 0 then takes every block left, and one failure.
TEST_F(GpuSlabAllocatorTest, ARunDryShardTakesWhatOtherShardsHintPagesHold) {
  constexpr uint32_t kPages = 768, kBytes = 1024, kPerPage = kPage / kBytes;
  constexpr uint32_t kShards = 8, kFirst = kShards * 32;
  constexpr uint32_t kCapacity = kPages * kPerPage;                    // 49,152
  constexpr uint32_t kSecond = 32 + (kPages - kShards) * kPerPage - 16;  // 48,656
  constexpr uint32_t kThird = 32;
  constexpr uint32_t kLast = kCapacity - kFirst - kSecond - kThird;    // 208
  GPU_ASSIGN(slab,
             DeviceSlab::Create(gpu(), uint64_t{kPages} * kPage, kPageShift, /*max_shard_factor=*/1));
  ASSERT_EQ(slab.layout().shard_count, kShards) << "ShardsFor changed: pick another arena";
  GPU_ASSIGN(blocks, gpu().Allocate(size_t{kCapacity + 1} * 8));
  GPU_ASSIGN(codes, gpu().Allocate(size_t{kCapacity + 1} * 4));
  GPU_ASSIGN(counts, gpu().Allocate(16));  // count, bad, refused, nulls
  const CUdeviceptr count = counts.get(), bad = counts.get() + 4, refused = counts.get() + 8,
                    nulls = counts.get() + 12;
  auto at = [&](uint32_t i) { return blocks.get() + uint64_t{i} * 8; };
  GPU_OK(slab.Reset());
  GPU_OK(gpu().Zero(counts.get(), 16));
  GPU_OK(kernels().SlabAlloc(slab.view(), kFirst, kBytes, 0, blocks.get()));
  GPU_OK(gpu().Wait("a batch per shard"));
  {
    GPU_ASSIGN(state, slab.Snapshot());
    ASSERT_EQ(state.counters.pages_in_use, kShards) << "one hint page per shard";
  }
  GPU_OK(kernels().SlabAllocUntilNull(slab.view(), kBytes, kSecond, at(kFirst), count));
  GPU_OK(gpu().Wait("shard 0 takes the pool"));
  ASSERT_EQ(ReadU32(count), kSecond);
  GPU_OK(kernels().SlabAlloc(slab.view(), kThird, kBytes, 0, at(kFirst + kSecond)));
  GPU_OK(kernels().Fill(kThird, at(kFirst + kSecond), kBytes, 0, 8));
  GPU_OK(kernels().Verify(kThird, at(kFirst + kSecond), kBytes, 0, 8, bad, nulls));
  GPU_OK(gpu().Wait("a warp of shard 0 with the pool empty"));
  EXPECT_EQ(ReadU32(nulls), 0u) << "a lane of the warp went short while shard 1's page had room";
  GPU_OK(gpu().Zero(counts.get(), 16));
  GPU_OK(kernels().SlabAllocUntilNull(slab.view(), kBytes, kLast + 1, at(kCapacity - kLast), count));
  GPU_OK(gpu().Wait("until null"));
  EXPECT_EQ(ReadU32(count), kLast) << "blocks left on other shards' hint pages were not taken";
  GPU_OK(kernels().Fill(kCapacity, blocks.get(), kBytes, 0, 9));
  GPU_OK(kernels().Verify(kCapacity, blocks.get(), kBytes, 0, 9, bad, nulls));
  GPU_OK(gpu().Wait("fill, verify"));
  EXPECT_EQ(ReadU32(bad), 0u);
  EXPECT_EQ(ReadU32(nulls), 0u);
  ExpectDisjoint(slab, Read<uint64_t>(blocks.get(), kCapacity),
                 std::vector<uint32_t>(kCapacity, kBytes));
  GPU_OK(kernels().SlabFree(slab.view(), kCapacity, blocks.get(), 0, codes.get(), refused));
  GPU_OK(gpu().Wait("free"));
  EXPECT_EQ(ReadU32(refused), 0u);
  ExpectClean(slab, 1, 0, 0);
}

// --- bad frees from device code ---------------------------------------------------

// Misaligned, foreign and never-allocated pointers are refused with the
// right code and counted, and touch nothing; a block freed by 32 threads at
// once is freed exactly once; the allocator works normally afterwards.
TEST_F(GpuSlabAllocatorTest, BadFreesAreRefusedCountedAndHarmless) {
  constexpr uint32_t kBlocks = 64, kBytes = 256;
  constexpr uint32_t kLargeBytes = 3 * kPage - 100;  // a run of three pages
  constexpr uint32_t kDistinct = kBlocks + 1;
  constexpr uint32_t kCopies = 32;
  const uint32_t after_n = static_cast<uint32_t>(std::max<uint64_t>(256, Scaled(8192)));
  GPU_ASSIGN(slab, DeviceSlab::Create(gpu(), ArenaFor(0), kPageShift));
  GPU_ASSIGN(blocks, gpu().Allocate(size_t{std::max(kDistinct, after_n)} * 8));
  GPU_ASSIGN(list, gpu().Allocate(size_t{kDistinct} * kCopies * 8));
  GPU_ASSIGN(codes, gpu().Allocate(size_t{std::max(kDistinct * kCopies, after_n)} * 4));
  GPU_ASSIGN(counts, gpu().Allocate(16));  // bad, refused
  const CUdeviceptr bad = counts.get(), refused = counts.get() + 4;
  const CUdeviceptr large_slot = blocks.get() + kBlocks * 8;
  GPU_OK(slab.Reset());
  GPU_OK(gpu().Zero(counts.get(), 16));

  GPU_OK(kernels().SlabAlloc(slab.view(), kBlocks, kBytes, 0, blocks.get()));
  GPU_OK(kernels().SlabAlloc(slab.view(), 1, kLargeBytes, 0, large_slot));
  GPU_OK(kernels().Fill(kBlocks, blocks.get(), kBytes, 0, 7));
  GPU_OK(kernels().Fill(1, large_slot, kLargeBytes, 0, 8));
  const std::vector<uint64_t> p = Read<uint64_t>(blocks.get(), kDistinct);
  for (uint64_t b : p) ASSERT_NE(b, 0u);
  const uint64_t a0 = p[0], a1 = p[1], large = p[kBlocks];
  const uint64_t arena = slab.arena(), end = arena + slab.arena_bytes();
  // A page in the pool (never handed out, or given back).
  uint64_t free_page = 0;
  {
    GPU_ASSIGN(s, slab.Snapshot());
    for (uint32_t page = 0; page < s.states.size(); ++page) {
      if (SlabAllocator::ClassOf(s.states[page]) == SlabAllocator::kFreePage) {
        free_page = arena + uint64_t{page} * kPage;
      }
    }
    ASSERT_NE(free_page, 0u) << "no free page";
  }

  // 1. Refused frees, one of each kind.
  struct Case {
    uint64_t pointer;
    uint32_t code;
    const char* what;
  };
  const std::vector<Case> cases = {
      {a0 + 8, SlabAllocator::kFreeMisaligned, "8 B into a block"},
      {a0 + 16, SlabAllocator::kFreeMisaligned, "16 B into a 256 B block"},
      {a1 + 128, SlabAllocator::kFreeMisaligned, "the middle of a block"},
      {large + 16, SlabAllocator::kFreeMisaligned, "16 B into a page run"},
      {large + kPage, SlabAllocator::kFreeMisaligned, "the second page of a run"},
      {end, SlabAllocator::kFreeForeign, "one past the arena"},
      {arena - 16, SlabAllocator::kFreeForeign, "before the arena"},
      {list.get(), SlabAllocator::kFreeForeign, "other device memory"},
      {free_page, SlabAllocator::kFreeDouble, "a page in the pool"},
      {0, SlabAllocator::kFreeOk, "nullptr (a no-op)"},
  };
  std::vector<uint64_t> pointers;
  for (const Case& c : cases) pointers.push_back(c.pointer);
  GPU_OK(gpu().Upload(list.get(), pointers));
  const uint32_t n_cases = static_cast<uint32_t>(cases.size());
  GPU_OK(kernels().SlabFree(slab.view(), n_cases, list.get(), 0, codes.get(), refused));
  GPU_OK(gpu().Wait("bad frees"));
  const std::vector<uint32_t> got = Read<uint32_t>(codes.get(), n_cases);
  for (uint32_t i = 0; i < n_cases; ++i) EXPECT_EQ(got[i], cases[i].code) << cases[i].what;
  EXPECT_EQ(ReadU32(refused), n_cases - 1);
  // Nothing was touched: patterns intact, every block still counted.
  GPU_OK(kernels().Verify(kBlocks, blocks.get(), kBytes, 0, 7, bad, 0));
  GPU_OK(kernels().Verify(1, large_slot, kLargeBytes, 0, 8, bad, 0));
  EXPECT_EQ(ReadU32(bad), 0u) << "a refused free changed a live block";
  {
    GPU_ASSIGN(s, slab.Snapshot());
    EXPECT_EQ(s.counters.invalid_frees, 8u);
    EXPECT_EQ(s.counters.double_frees, 1u);
    EXPECT_EQ(s.usage.blocks[slab.view().ClassFor(kBytes)], kBlocks);
    EXPECT_EQ(s.usage.large_pages, 3u);
  }

  // 2. Each block freed by 32 threads at once: 16 copies spread over warps,
  // 16 side by side in one warp. Exactly one free succeeds per block.
  std::vector<uint64_t> copies;
  std::vector<uint32_t> owner;
  for (uint32_t i = 0; i < kDistinct * kCopies / 2; ++i) owner.push_back(i % kDistinct);
  for (uint32_t b = 0; b < kDistinct; ++b) owner.insert(owner.end(), kCopies / 2, b);
  for (uint32_t b : owner) copies.push_back(p[b]);
  GPU_OK(gpu().Upload(list.get(), copies));
  GPU_OK(gpu().Zero(counts.get(), 16));
  const uint32_t n_copies = kDistinct * kCopies;
  GPU_OK(kernels().SlabFree(slab.view(), n_copies, list.get(), 0, codes.get(), refused));
  GPU_OK(gpu().Wait("racing double frees"));
  const std::vector<uint32_t> raced = Read<uint32_t>(codes.get(), n_copies);
  std::vector<uint32_t> ok_per_block(kDistinct, 0);
  uint32_t doubles = 0;
  for (uint32_t i = 0; i < n_copies; ++i) {
    if (raced[i] == SlabAllocator::kFreeOk) ++ok_per_block[owner[i]];
    if (raced[i] == SlabAllocator::kFreeDouble) ++doubles;
  }
  for (uint32_t b = 0; b < kDistinct; ++b) EXPECT_EQ(ok_per_block[b], 1u) << "block " << b;
  EXPECT_EQ(doubles, kDistinct * (kCopies - 1)) << "every other free is a double free";
  EXPECT_EQ(ReadU32(refused), kDistinct * (kCopies - 1));

  // 3. The same blocks once more, one thread each: all double frees.
  GPU_OK(kernels().SlabFree(slab.view(), kDistinct, blocks.get(), 0, codes.get(), 0));
  const std::vector<uint32_t> again = Read<uint32_t>(codes.get(), kDistinct);
  EXPECT_EQ(std::count(again.begin(), again.end(), SlabAllocator::kFreeDouble), kDistinct);
  const uint64_t total_doubles = 1 + kDistinct * (kCopies - 1) + kDistinct;
  ExpectClean(slab, 0, 8, total_doubles);

  // 4. The allocator works as before.
  GPU_OK(gpu().Zero(counts.get(), 16));
  GPU_OK(kernels().SlabAlloc(slab.view(), after_n, kBytes, 0, blocks.get()));
  GPU_OK(kernels().Fill(after_n, blocks.get(), kBytes, 0, 9));
  GPU_OK(kernels().Verify(after_n, blocks.get(), kBytes, 0, 9, bad, 0));
  GPU_OK(gpu().Wait("alloc after bad frees"));
  EXPECT_EQ(ReadU32(bad), 0u);
  {
    GPU_ASSIGN(s, slab.Snapshot());
    ASSERT_EQ(s.counters.failed, 0u) << WhyNulls(slab);
  }
  ExpectDisjoint(slab, Read<uint64_t>(blocks.get(), after_n),
                 std::vector<uint32_t>(after_n, kBytes));
  GPU_OK(kernels().SlabFree(slab.view(), after_n, blocks.get(), 0, codes.get(), refused));
  GPU_OK(gpu().Wait("free"));
  EXPECT_EQ(ReadU32(refused), 0u);
  ExpectClean(slab, 0, 8, total_doubles);
}

// --- frees by other threads -------------------------------------------------------

// Thread i frees the block thread perm(i) allocated (another warp, usually
// another SM), for mixed sizes; twice, with different permutations.
TEST_F(GpuSlabAllocatorTest, ThreadsFreeOtherThreadsBlocks) {
  const uint32_t n = FullGrid();
  const std::vector<uint32_t> sizes = MixedSizes(n, 1024, 21);
  GPU_ASSIGN(slab, DeviceSlab::Create(gpu(), ArenaFor(uint64_t{n} * 1024), kPageShift));
  GPU_ASSIGN(blocks, gpu().Allocate(size_t{n} * 8));
  GPU_ASSIGN(sizes_dev, gpu().Allocate(size_t{n} * 4));
  GPU_ASSIGN(order, gpu().Allocate(size_t{n} * 4));
  GPU_ASSIGN(codes, gpu().Allocate(size_t{n} * 4));
  GPU_ASSIGN(counts, gpu().Allocate(16));
  const CUdeviceptr bad = counts.get(), nulls = counts.get() + 4, refused = counts.get() + 8;
  GPU_OK(gpu().Upload(sizes_dev.get(), sizes));
  GPU_OK(slab.Reset());
  for (uint32_t round = 0; round < 2; ++round) {
    SCOPED_TRACE(absl::StrCat("round ", round, ", ", n, " threads"));
    const std::vector<uint32_t> perm = RandomPermutation(n, 31 + round);
    GPU_OK(gpu().Upload(order.get(), perm));
    GPU_OK(gpu().Zero(counts.get(), 16));
    GPU_OK(gpu().Zero(codes.get(), size_t{n} * 4));
    GPU_OK(kernels().SlabAlloc(slab.view(), n, 0, sizes_dev.get(), blocks.get()));
    GPU_OK(kernels().Fill(n, blocks.get(), 0, sizes_dev.get(), 40 + round));
    GPU_OK(kernels().Verify(n, blocks.get(), 0, sizes_dev.get(), 40 + round, bad, nulls));
    GPU_OK(gpu().Wait("alloc, fill, verify"));
    const uint32_t failed = ReadU32(nulls);
    ASSERT_EQ(failed, 0u) << WhyNulls(slab);
    EXPECT_EQ(ReadU32(bad), 0u);
    ExpectDisjoint(slab, Read<uint64_t>(blocks.get(), n), sizes);
    GPU_OK(kernels().SlabFree(slab.view(), n, blocks.get(), order.get(), codes.get(), refused));
    GPU_OK(gpu().Wait("free in random order"));
    EXPECT_EQ(ReadU32(refused), 0u);
    // codes[j] is the result for block j: each block freed once, fine.
    const std::vector<uint32_t> results = Read<uint32_t>(codes.get(), n);
    EXPECT_EQ(std::count(results.begin(), results.end(), SlabAllocator::kFreeOk), n);
    ExpectClean(slab, 0, 0, 0);
  }
}

// --- churn --------------------------------------------------------------------------

// Every thread of a full grid: 100 rounds of allocate (16..1024 B, random),
// write and check the first and last word, free. Hint pages are replaced
// all the time while blocks are freed under them: no null while the arena
// has room, no block shared, and no page left behind.
TEST_F(GpuSlabAllocatorTest, ChurnLeavesNoPageBehind) {
  const uint32_t n = FullGrid();
  constexpr uint32_t kRounds = 100;
  GPU_ASSIGN(slab, DeviceSlab::Create(gpu(), ArenaFor(uint64_t{n} * 1024), kPageShift));
  GPU_ASSIGN(counts, gpu().Allocate(16));  // nulls, errors (uint64)
  GPU_OK(slab.Reset());
  GPU_OK(gpu().Zero(counts.get(), 16));
  GPU_OK(kernels().SlabChurn(slab.view(), n, kRounds, 16, 1024, 5, counts.get(), counts.get() + 8));
  GPU_OK(gpu().Wait("churn"));
  EXPECT_EQ(ReadU64(counts.get()), 0u) << "nulls with the arena at most half full; "
                                       << WhyNulls(slab);
  EXPECT_EQ(ReadU64(counts.get() + 8), 0u) << "blocks shared or frees refused";
  ExpectClean(slab, 0, 0, 0);
}

}  // namespace
}  // namespace grosr
