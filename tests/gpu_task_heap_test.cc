// The task heap on a real GPU: tasks (hot-loaded ones included) allocate
// with ctx.gpu_malloc, write and verify patterns, free on other warps; bad
// frees are refused and reported with the task's name; an exhausted heap
// returns null and recovers. Skips where there is no GPU.
#include <algorithm>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "host/runtime.h"
#include "tests/gpu_test_support.h"

namespace grosr {
namespace {

using testing::DevicePointer;
using testing::IdOf;
using testing::PoisonedBuffer;
using testing::ReadBuffer;
using testing::Scaled;

constexpr char kHeapTasks[] = R"grosr_src(
#include <grosr/task.h>

__device__ unsigned Pattern(unsigned seed, unsigned word) { return seed * 2654435761u + word; }

// Each lane: allocate, fill every word, verify, free.
struct RoundArgs { unsigned index; unsigned bytes; unsigned* failures; };
GROSR_TASK(heap_round, RoundArgs) {
  const unsigned seed = args.index * 32 + ctx.lane();
  const unsigned bytes = args.bytes + ctx.lane() * 16;
  unsigned* p = static_cast<unsigned*>(ctx.gpu_malloc(bytes));
  if (p == nullptr) { atomicAdd(args.failures, 1u); return; }
  if ((reinterpret_cast<unsigned long long>(p) & 15) != 0) atomicAdd(args.failures, 1u);
  for (unsigned w = 0; w < bytes / 4; ++w) p[w] = Pattern(seed, w);
  for (unsigned w = 0; w < bytes / 4; ++w) {
    if (p[w] != Pattern(seed, w)) { atomicAdd(args.failures, 1u); break; }
  }
  if (!ctx.gpu_free(p)) atomicAdd(args.failures, 1u);
}

// Keep: every lane allocates (warp form) and leaves the block for another
// task; release verifies and frees it, on whatever warp runs it.
struct KeepArgs { unsigned index; unsigned bytes; unsigned long long* slots; unsigned* failures; };
GROSR_TASK(heap_keep, KeepArgs) {
  const unsigned seed = args.index * 32 + ctx.lane();
  unsigned* p = static_cast<unsigned*>(ctx.gpu_malloc_warp(args.bytes));
  if (p == nullptr) atomicAdd(args.failures, 1u);
  else { p[0] = Pattern(seed, 0); p[args.bytes / 4 - 1] = Pattern(seed, 1); }
  args.slots[seed] = reinterpret_cast<unsigned long long>(p);
}
GROSR_TASK(heap_release, KeepArgs) {
  const unsigned seed = args.index * 32 + ctx.lane();
  unsigned* p = reinterpret_cast<unsigned*>(args.slots[seed]);
  if (p == nullptr) return;
  if (p[0] != Pattern(seed, 0) || p[args.bytes / 4 - 1] != Pattern(seed, 1)) atomicAdd(args.failures, 1u);
  if (!ctx.gpu_free(p)) atomicAdd(args.failures, 1u);
}

// Frees what it is given (lane 0): the bad-free cases.
struct FreeArgs { unsigned long long pointer; };
GROSR_TASK(heap_free_this, FreeArgs) {
  if (ctx.lane() == 0) ctx.gpu_free(reinterpret_cast<void*>(args.pointer));
}

// Lane 0 allocates `bytes` until null (at most `most`); frees them after.
struct FillArgs { unsigned bytes; unsigned most; unsigned long long* slots; unsigned* count; };
GROSR_TASK(heap_fill, FillArgs) {
  if (ctx.lane() != 0) return;
  unsigned n = 0;
  for (; n < args.most; ++n) {
    void* p = ctx.gpu_malloc(args.bytes);
    if (p == nullptr) break;
    args.slots[n] = reinterpret_cast<unsigned long long>(p);
  }
  *args.count = n;
}
GROSR_TASK(heap_unfill, FillArgs) {
  for (unsigned i = ctx.lane(); i < *args.count; i += 32) {
    ctx.gpu_free(reinterpret_cast<void*>(args.slots[i]));
  }
}
)grosr_src";

struct RoundArgs {
  uint32_t index, bytes;
  uint32_t* failures;
};
struct KeepArgs {
  uint32_t index, bytes;
  uint64_t* slots;
  uint32_t* failures;
};
struct FreeArgs {
  uint64_t pointer;
};
struct FillArgs {
  uint32_t bytes, most;
  uint64_t* slots;
  uint32_t* count;
};

HeapStats Heap(Runtime& runtime) {
  absl::StatusOr<RuntimeStats> stats = runtime.Stats();
  EXPECT_TRUE(stats.ok()) << stats.status();
  return stats.ok() ? stats->heap : HeapStats{};
}

template <typename Args>
absl::Status SubmitAll(Runtime& runtime, TaskId task, GroupId group, const std::vector<Args>& all) {
  std::vector<TaskRequest> requests;
  for (const Args& args : all) requests.push_back(TaskRequest::Make(task, args));
  return runtime.SubmitBatch(requests, group);
}

TEST(GpuTaskHeap, HotLoadedTasksAllocateWriteVerifyAndFree) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  CUdeviceptr failures = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<LoadReport> loaded = runtime->LoadSource("heap.cu", kHeapTasks);  // while running
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE(loaded->paused);
  const TaskId round = IdOf(*runtime, "heap_round");
  absl::StatusOr<GroupId> group = runtime->CreateGroup();
  ASSERT_TRUE(group.ok());
  const uint32_t n = static_cast<uint32_t>(Scaled(20000));
  std::vector<RoundArgs> all;
  for (uint32_t i = 0; i < n; ++i) {
    all.push_back(RoundArgs{i, 16u << (i % 9), DevicePointer<uint32_t>(failures)});  // 16 B..4 KiB
  }
  GROSR_ASSERT_OK(SubmitAll(*runtime, round, *group, all));
  GROSR_ASSERT_OK(runtime->WaitGroup(*group, absl::Seconds(60)));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, failures, 1)[0], 0u)
      << "null, misaligned, corrupted or refused blocks";
  const HeapStats heap = Heap(*runtime);
  EXPECT_EQ(heap.failed_allocations, 0u);
  EXPECT_EQ(heap.invalid_frees + heap.double_frees, 0u);
  EXPECT_EQ(heap.bytes_in_use, 0u) << "every block was freed";
  EXPECT_GT(heap.pages_high_water, 0u);
  EXPECT_GT(heap.arena_bytes, 0u);
  GROSR_ASSERT_OK(runtime->Shutdown());
}

TEST(GpuTaskHeap, BlocksFreedByOtherTasksAndBadFreesAreRefusedAndReported) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  GROSR_ASSERT_OK(runtime->LoadSource("heap.cu", kHeapTasks));
  const uint32_t tasks = static_cast<uint32_t>(std::max<uint64_t>(Scaled(256), 2));
  // One more task's worth of slots: the block kept alive for the
  // misaligned free (index `tasks`).
  CUdeviceptr slots = PoisonedBuffer<uint64_t>(*runtime, (tasks + 1) * 32, 0);
  CUdeviceptr failures = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  CUdeviceptr foreign = PoisonedBuffer<uint32_t>(*runtime, 64, 0);
  GROSR_ASSERT_OK(runtime->Start());
  const TaskId keep = IdOf(*runtime, "heap_keep");
  const TaskId release = IdOf(*runtime, "heap_release");
  const TaskId free_this = IdOf(*runtime, "heap_free_this");
  absl::StatusOr<GroupId> group = runtime->CreateGroup();
  ASSERT_TRUE(group.ok());
  std::vector<KeepArgs> all;
  for (uint32_t i = 0; i < tasks; ++i) {
    all.push_back(KeepArgs{i, 100, DevicePointer<uint64_t>(slots), DevicePointer<uint32_t>(failures)});
  }
  GROSR_ASSERT_OK(SubmitAll(*runtime, keep, *group, all));
  GROSR_ASSERT_OK(runtime->WaitGroup(*group, absl::Seconds(60)));
  HeapStats heap = Heap(*runtime);
  EXPECT_EQ(heap.blocks_in_use[4], tasks * 32u) << "100 B requests live in the 128 B class";
  EXPECT_EQ(heap.bytes_in_use, tasks * 32u * 128u);
  std::vector<uint64_t> pointers = ReadBuffer<uint64_t>(*runtime, slots, tasks * 32);
  std::vector<uint64_t> sorted = pointers;
  std::sort(sorted.begin(), sorted.end());
  for (size_t i = 1; i < sorted.size(); ++i) {
    ASSERT_GE(sorted[i] - sorted[i - 1], 128u) << "two live blocks overlap";
  }

  // Blocks kept alive for the misaligned case, taken while every other
  // block is live: nothing is allocated between the release below and the
  // bad frees, so the block freed twice cannot have been handed out again
  // (a double free of a block reused by its class is a valid free; with
  // these blocks taken after the release, it happened under memcheck).
  std::vector<KeepArgs> one = {KeepArgs{tasks, 100, DevicePointer<uint64_t>(slots),
                                        DevicePointer<uint32_t>(failures)}};
  GROSR_ASSERT_OK(SubmitAll(*runtime, keep, *group, one));
  GROSR_ASSERT_OK(runtime->WaitGroup(*group, absl::Seconds(10)));
  const uint64_t live = ReadBuffer<uint64_t>(*runtime, slots + uint64_t{tasks} * 32 * 8, 1)[0];

  // Freed by other tasks, in reverse order, on whatever warps run them.
  std::reverse(all.begin(), all.end());
  GROSR_ASSERT_OK(SubmitAll(*runtime, release, *group, all));
  GROSR_ASSERT_OK(runtime->WaitGroup(*group, absl::Seconds(60)));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, failures, 1)[0], 0u);
  heap = Heap(*runtime);
  EXPECT_EQ(heap.bytes_in_use, 32u * 128u) << "only the kept blocks";

  for (uint64_t bad : {pointers[5] /* freed above: double */, live + 16 /* misaligned */,
                       static_cast<uint64_t>(foreign) /* not from the heap */}) {
    absl::StatusOr<TaskHandle> handle = runtime->Submit(free_this, FreeArgs{bad});
    ASSERT_TRUE(handle.ok());
    GROSR_ASSERT_OK(runtime->Wait(*handle, absl::Seconds(10)));  // the task itself goes on
  }
  heap = Heap(*runtime);
  EXPECT_EQ(heap.double_frees, 1u);
  EXPECT_EQ(heap.invalid_frees, 2u);
  absl::StatusOr<std::vector<TaskError>> errors = runtime->RecentErrors();
  ASSERT_TRUE(errors.ok());
  std::vector<uint32_t> codes;
  for (const TaskError& e : *errors) {
    EXPECT_EQ(e.name, "heap_free_this");
    codes.push_back(e.code);
  }
  EXPECT_EQ(codes, (std::vector<uint32_t>{kBadFreeDouble, kBadFreeMisaligned, kBadFreeForeign}));
  ASSERT_FALSE(errors->empty());
  EXPECT_TRUE(absl::StrContains(errors->front().message, "double free")) << errors->front().message;
  EXPECT_EQ(heap.bytes_in_use, 32u * 128u) << "refused frees changed nothing";

  // Still serving: a fresh batch, then every block freed.
  GROSR_ASSERT_OK(SubmitAll(*runtime, keep, *group, all));
  GROSR_ASSERT_OK(runtime->WaitGroup(*group, absl::Seconds(60)));
  EXPECT_EQ(Heap(*runtime).blocks_in_use[4], (tasks + 1) * 32u);
  GROSR_ASSERT_OK(SubmitAll(*runtime, release, *group, all));
  GROSR_ASSERT_OK(SubmitAll(*runtime, release, *group, one));
  GROSR_ASSERT_OK(runtime->WaitGroup(*group, absl::Seconds(60)));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, failures, 1)[0], 0u);
  EXPECT_EQ(Heap(*runtime).bytes_in_use, 0u);
  GROSR_ASSERT_OK(runtime->Shutdown());
}

TEST(GpuTaskHeap, ExhaustedHeapReturnsNullAndRecovers) {
  RuntimeOptions options;
  options.heap_bytes = 1u << 20;  // 16 pages of 64 KiB
  GROSR_RUNTIME_OR_SKIP(runtime, options);
  GROSR_ASSERT_OK(runtime->LoadSource("heap.cu", kHeapTasks));
  const uint32_t most = 4096;
  CUdeviceptr slots = PoisonedBuffer<uint64_t>(*runtime, most, 0);
  CUdeviceptr count = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  const TaskId fill = IdOf(*runtime, "heap_fill");
  const TaskId unfill = IdOf(*runtime, "heap_unfill");
  const FillArgs args{1024, most, DevicePointer<uint64_t>(slots), DevicePointer<uint32_t>(count)};
  uint32_t first = 0;
  for (int round = 0; round < 2; ++round) {
    // An emptied page that a hint names stays with its class (fragmentation
    // bound: one page per class per shard); with the pool empty a later
    // round takes what any shard's hint page holds. (A 1 MiB heap has one
    // shard, SlabAllocator::ShardsFor, and 1 KiB four hints of it: the
    // default shard factor.)
    const uint64_t held = Heap(*runtime).pages_in_use;
    EXPECT_LE(held, 8u) << "at most one empty hint page per shard";
    absl::StatusOr<TaskHandle> filled = runtime->Submit(fill, args);
    ASSERT_TRUE(filled.ok());
    GROSR_ASSERT_OK(runtime->Wait(*filled, absl::Seconds(10)));
    const uint32_t got = ReadBuffer<uint32_t>(*runtime, count, 1)[0];
    EXPECT_GE(got, 1024u - 64u * held) << "16 pages of 64 blocks of 1 KiB, round " << round;
    EXPECT_LE(got, 1024u);
    if (round == 0) first = got;
    HeapStats heap = Heap(*runtime);
    EXPECT_EQ(heap.failed_allocations, static_cast<uint64_t>(round + 1)) << "one null per round";
    EXPECT_EQ(heap.bytes_in_use, uint64_t{got} * 1024);
    absl::StatusOr<TaskHandle> emptied = runtime->Submit(unfill, args);
    ASSERT_TRUE(emptied.ok());
    GROSR_ASSERT_OK(runtime->Wait(*emptied, absl::Seconds(10)));
    EXPECT_EQ(Heap(*runtime).bytes_in_use, 0u);
  }
  EXPECT_EQ(first, 1024u);
  GROSR_ASSERT_OK(runtime->Shutdown());
}

}  // namespace
}  // namespace grosr
