// The slab kernels without a GPU: the device source compiles and links for
// sm_90 through the project's Compiler (runs in CI), and the host helpers
// the GPU tests and the benchmark rely on check what they claim.
#include "bench/slab_kernels.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <set>

#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "gtest/gtest.h"
#include "jit/cubin.h"

namespace grosr {
namespace {

// A compiler whose disk cache is this test's own (nothing cached before).
absl::StatusOr<std::unique_ptr<Compiler>> TestCompiler(absl::string_view cache_name) {
  Compiler::Options options;
  const char* tmp = std::getenv("TEST_TMPDIR");
  options.cache_dir = absl::StrCat(tmp ? tmp : "/tmp", "/", cache_name, "-", getpid());
  return Compiler::Create(options);
}

TEST(SlabKernelsTest, CompilesAndLinksForSm90) {
  absl::StatusOr<std::unique_ptr<Compiler>> compiler = TestCompiler("slab-kernels-cache");
  ASSERT_TRUE(compiler.ok()) << compiler.status();
  // 8 blocks of 256 a SM or 4 (the default): at most 32 or 64 registers.
  for (uint32_t min_blocks : {8u, 4u}) {
    SCOPED_TRACE(absl::StrCat(min_blocks, " blocks a SM"));
    absl::StatusOr<LinkedImage> image = BuildSlabKernels(**compiler, "sm_90", min_blocks);
    ASSERT_TRUE(image.ok()) << image.status();
    absl::StatusOr<CubinContents> contents = InspectCubin(image->cubin);
    ASSERT_TRUE(contents.ok()) << contents.status();
    for (const std::string& name : SlabKernelNames()) {
      const CubinSymbol* symbol = contents->FindSymbol(name);
      ASSERT_NE(symbol, nullptr) << name << " missing from the linked cubin";
      EXPECT_TRUE(symbol->is_function) << name;
      const FunctionResources* resources = contents->FindFunction(name);
      ASSERT_NE(resources, nullptr) << name;
      // The launch bounds hold, and the kernels keep no big frames
      // (AllocateCoalesced's leader may spill a warp's 32 block pointers,
      // 256 B, past BlockRuns' two runs).
      EXPECT_GT(resources->registers, 0u) << name;
      EXPECT_LE(resources->registers, 65536u / (kSlabKernelBlock * min_blocks)) << name;
      EXPECT_LE(resources->frame_bytes, 512u) << name;
      std::printf("%u blocks a SM: %-22s %3u registers, %u B frame, %u B stack\n", min_blocks,
                  name.c_str(), resources->registers, resources->frame_bytes,
                  resources->stack_bytes);
    }
  }
}

// The allocator's tuning knobs (bench/alloc --define) compile.
TEST(SlabKernelsTest, TuningKnobsCompile) {
  absl::StatusOr<std::unique_ptr<Compiler>> compiler = TestCompiler("slab-knobs-cache");
  ASSERT_TRUE(compiler.ok()) << compiler.status();
  absl::StatusOr<LinkedImage> image =
      BuildSlabKernels(**compiler, "sm_90", kSlabKernelsMinBlocks,
                       {"GROSR_SLAB_FACTOR_BLOCKS_LOG=9", "GROSR_SLAB_WAIT_MAX_NS=256"});
  ASSERT_TRUE(image.ok()) << image.status();
  absl::StatusOr<LinkedImage> broken =
      BuildSlabKernels(**compiler, "sm_90", kSlabKernelsMinBlocks, {"GROSR_SLAB_WAIT_MAX_NS=x"});
  EXPECT_FALSE(broken.ok()) << "a bad value reaches the compiler";
  absl::StatusOr<LinkedImage> bounds = BuildSlabKernels(
      **compiler, "sm_90", kSlabKernelsMinBlocks, {"GROSR_BENCH_MIN_BLOCKS=8"});
  EXPECT_TRUE(absl::IsInvalidArgument(bounds.status())) << "min_blocks is the argument's";
}

TEST(SlabKernelsTest, CheckDisjointFindsEveryKindOfBadBlock) {
  const uint64_t lo = 0x10000, hi = 0x20000;
  const std::vector<uint32_t> sizes = {64, 16, 128};
  EXPECT_TRUE(CheckDisjoint({0x10000, 0x10040, 0x10100}, sizes, lo, hi).ok());
  EXPECT_TRUE(CheckDisjoint({0x10100, 0x10000, 0x10040}, sizes, lo, hi).ok()) << "order-free";
  EXPECT_FALSE(CheckDisjoint({0x10000, 0x10030, 0x10100}, sizes, lo, hi).ok()) << "overlap";
  EXPECT_FALSE(CheckDisjoint({0x10000, 0x10048, 0x10108}, sizes, lo, hi).ok()) << "misaligned";
  EXPECT_FALSE(CheckDisjoint({0x10000, 0, 0x10100}, sizes, lo, hi).ok()) << "null";
  EXPECT_FALSE(CheckDisjoint({0x10000, 0x10040, 0x1ffc0}, sizes, lo, hi).ok()) << "past the end";
  EXPECT_FALSE(CheckDisjoint({0xff00, 0x10040, 0x10100}, sizes, lo, hi).ok()) << "before";
  EXPECT_FALSE(CheckDisjoint({0x10000, 0x10000, 0x10100}, sizes, lo, hi).ok()) << "same block";
}

TEST(SlabKernelsTest, RandomPermutationIsASeededPermutation) {
  const std::vector<uint32_t> a = RandomPermutation(10000, 7);
  EXPECT_EQ(std::set<uint32_t>(a.begin(), a.end()).size(), 10000u);
  EXPECT_EQ(*std::max_element(a.begin(), a.end()), 9999u);
  EXPECT_EQ(a, RandomPermutation(10000, 7));
  EXPECT_NE(a, RandomPermutation(10000, 8));
  uint32_t fixed = 0;
  for (uint32_t i = 0; i < a.size(); ++i) fixed += a[i] == i;
  EXPECT_LT(fixed, 20u) << "a shuffle leaves about one element in place";
}

TEST(SlabKernelsTest, MixedSizesCoverEveryClassUpToTheMaximum) {
  const std::vector<uint32_t> sizes = MixedSizes(20000, 4096, 3);
  std::set<uint32_t> classes;
  for (uint32_t s : sizes) {
    ASSERT_GE(s, 1u);
    ASSERT_LE(s, 4096u);
    uint32_t cls = 0;
    while ((16u << cls) < s) ++cls;
    classes.insert(cls);
  }
  EXPECT_EQ(classes.size(), 9u) << "16 B .. 4 KiB";
  EXPECT_EQ(sizes, MixedSizes(20000, 4096, 3));
  for (uint32_t s : MixedSizes(1000, 1000, 1)) EXPECT_LE(s, 1000u);
}

TEST(SlabKernelsTest, PatternWordsDifferBetweenOwnersAndSeeds) {
  std::set<uint32_t> seen;
  for (uint32_t owner = 0; owner < 64; ++owner) {
    for (uint32_t word = 0; word < 64; ++word) seen.insert(SlabPatternWord(owner, word, 1));
  }
  EXPECT_GT(seen.size(), 4090u);
  EXPECT_NE(SlabPatternWord(5, 0, 1), SlabPatternWord(5, 0, 2));
}

// The layout's regions are big enough: the allocator run on the CPU over
// host memory laid out the same way fills every page and empties it again.
TEST(SlabKernelsTest, LayoutHoldsEveryPagesMetadata) {
  const SlabLayout layout = SlabLayout::For(100u << 14, 14);  // 100 pages of 16 KiB
  EXPECT_EQ(layout.page_count, 100u);
  EXPECT_EQ(layout.arena_bytes(), 100u << 14);
  EXPECT_EQ(layout.states_offset % 256, 0u);
  EXPECT_EQ(layout.bits_offset % 256, 0u);
  EXPECT_EQ(layout.pool_offset % 256, 0u);
  EXPECT_EQ(layout.hints_offset % 256, 0u);
  EXPECT_EQ(layout.counters_offset % 256, 0u);
  EXPECT_EQ(layout.runs_offset % 256, 0u);
  EXPECT_GE(layout.runs_offset, layout.counters_offset + sizeof(SlabCounters));
  EXPECT_GE(layout.metadata_bytes, layout.runs_offset + uint64_t{4} * layout.page_count);
  uint32_t free_pages = 0;
  for (uint64_t w : layout.InitialPool()) free_pages += __builtin_popcountll(w);
  EXPECT_EQ(free_pages, 100u);

  std::vector<uint64_t> metadata(layout.metadata_bytes / 8, 0);
  std::vector<uint64_t> arena(layout.arena_bytes() / 8, 0);
  auto address = [](const void* p) { return static_cast<CUdeviceptr>(reinterpret_cast<uintptr_t>(p)); };
  const SlabAllocator heap = layout.View(address(arena.data()), address(metadata.data()));
  std::vector<uint64_t> pool = layout.InitialPool();
  std::memcpy(heap.pool, pool.data(), pool.size() * 8);
  std::vector<void*> blocks;
  for (void* p; (p = heap.Allocate(16, 0, 0)) != nullptr;) blocks.push_back(p);
  EXPECT_EQ(blocks.size(), 100u * 1024u);
  for (void* p : blocks) ASSERT_EQ(heap.Free(p), SlabAllocator::kFreeOk);
  EXPECT_EQ(heap.counters->failed, 1u);
  EXPECT_EQ(heap.counters->pages_high_water, 100u);
  EXPECT_EQ(heap.counters->pages_in_use, 1u) << "the hint page";
}

}  // namespace
}  // namespace grosr
