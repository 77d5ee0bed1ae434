// The persistent scheduler on a real GPU: every result is checked against a
// CPU reference in poisoned buffers, every task is counted exactly once.
// Skips where there is no GPU (see gpu_test_support.h).
#include <algorithm>
#include <utility>
#include <atomic>
#include <chrono>
#include <numeric>
#include <string>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "host/runtime.h"
#include "tests/gpu_test_support.h"

namespace grosr {
namespace {

using testing::DevicePointer;
using testing::PoisonedBuffer;
using testing::ReadBuffer;
using testing::Scaled;

constexpr uint32_t kPoison = 0xdeadbeefu;

constexpr char kTestTasks[] = R"grosr_src(
#include <grosr/task.h>

struct RecordArgs { unsigned index; unsigned value; unsigned* out; unsigned* hits; };
GROSR_TASK(record, RecordArgs) {
  if (ctx.lane() == 0) {
    args.out[args.index] = args.value * 2u + 1u;
    atomicAdd(&args.hits[args.index], 1u);
  }
}

struct FailArgs { unsigned code; };
GROSR_TASK(fail_with, FailArgs) {
  if (args.code != 0 && ctx.lane() == 5) ctx.fail(args.code);
}

// A chain: the plain increment proves the steps ran one after another.
struct ChainArgs { unsigned left; unsigned* steps; };
GROSR_TASK(chain, ChainArgs) {
  if (ctx.lane() == 0) *args.steps += 1;
  if (args.left > 1) ctx.then(ctx.self(), ChainArgs{args.left - 1, args.steps});
}

// A chain through the device queue: each step spawns its successor.
GROSR_TASK(spawn_chain, ChainArgs) {
  if (ctx.lane() == 0) {
    *args.steps += 1;  // plain: the steps must run one after another
    if (args.left > 1) {
      while (!ctx.spawn(ctx.self(), ChainArgs{args.left - 1, args.steps})) {}
    }
  }
}

// A tree numbered heap-style: node i's children are i*width+1+lane.
struct TreeArgs { unsigned depth; unsigned width; unsigned index; unsigned* hits; };
GROSR_TASK(tree, TreeArgs) {
  if (ctx.lane() == 0) atomicAdd(&args.hits[args.index], 1u);
  if (args.depth == 0) return;
  if (ctx.lane() < args.width) {
    TreeArgs child{args.depth - 1, args.width, args.index * args.width + 1 + ctx.lane(),
                   args.hits};
    while (!ctx.spawn(ctx.self(), child)) {}
  }
}

// Holds its warp until *flag becomes non-zero.
struct SpinArgs { unsigned* flag; unsigned* started; };
GROSR_TASK(spin_until, SpinArgs) {
  if (ctx.lane() == 0) atomicAdd(args.started, 1u);
  while (*(volatile unsigned*)args.flag == 0) __nanosleep(1000);
}

// Tries `rounds` warp-wide spawns of `mark`; records which were accepted.
struct SpawnArgs { unsigned rounds; unsigned mark_id; unsigned* accepted; unsigned* hits; };
struct MarkArgs { unsigned index; unsigned* hits; };
GROSR_TASK(spawn_many, SpawnArgs) {
  for (unsigned r = 0; r < args.rounds; ++r) {
    unsigned index = r * 32 + ctx.lane();
    bool ok = ctx.spawn(args.mark_id, MarkArgs{index, args.hits});
    args.accepted[index] = ok ? 1u : 0u;
  }
}
GROSR_TASK(mark, MarkArgs) {
  if (ctx.lane() == 0) atomicAdd(&args.hits[args.index], 1u);
}

// A chain of continuations to itself (run in place, in the task's own loop)
// that fails at two steps and goes on: the loop hands each failed step back
// to the scheduler, which reports it and runs the rest.
struct FailChainArgs { unsigned left; unsigned fail_at; unsigned* steps; };
GROSR_TASK(fail_chain, FailChainArgs) {
  if (ctx.lane() == 0) *args.steps += 1;
  // Two failures three steps apart: the loop leaves at the first, and the
  // second comes in the next dispatch's loop.
  if ((args.left == args.fail_at || args.left + 3 == args.fail_at) && ctx.lane() == 3) {
    ctx.fail(7);
  }
  if (args.left > 1) ctx.then(ctx.self(), FailChainArgs{args.left - 1, args.fail_at, args.steps});
}

// Two tasks continuing each other (each step dispatched by the scheduler),
// every third step of `alt_even` first continuing to itself: each checks
// that the count of steps so far has its parity, so the order holds.
struct AltArgs { unsigned left; unsigned other; unsigned self_next; unsigned* steps; unsigned* wrong; };
__device__ void AltStep(grosr::TaskContext& ctx, const AltArgs& args, unsigned parity) {
  if (ctx.lane() == 0) {
    if (*args.steps % 2 != parity) atomicAdd(args.wrong, 1u);
    *args.steps += 1;
  }
}
GROSR_TASK(alt_even, AltArgs) {
  AltStep(ctx, args, 0);
  if (args.left <= 1) return;
  if (args.self_next) {
    // A self-step that keeps the parity right: counts twice.
    if (ctx.lane() == 0) *args.steps += 1;
    ctx.then(ctx.self(), AltArgs{args.left - 1, args.other, 0, args.steps, args.wrong});
  } else {
    ctx.then(args.other, AltArgs{args.left - 1, ctx.self(), 0, args.steps, args.wrong});
  }
}
GROSR_TASK(alt_odd, AltArgs) {
  AltStep(ctx, args, 1);
  if (args.left <= 1) return;
  ctx.then(args.other, AltArgs{args.left - 1, ctx.self(), args.left % 3 == 0, args.steps,
                               args.wrong});
}

// A continuation to itself with arguments of another size: not run in
// place; the scheduler refuses it (kBadArguments).
struct ResizeArgs { unsigned* runs; };
struct BigArgs { unsigned long long a, b, c; };
GROSR_TASK(resize_self, ResizeArgs) {
  if (ctx.lane() == 0) *args.runs += 1;
  ctx.then(ctx.self(), BigArgs{1, 2, 3});
}

// A chain of one hop to `probe`, then `probe` continuing to itself; each
// probe step records the in-place budget it was dispatched with.
struct ProbeArgs { unsigned left; unsigned index; unsigned probe; unsigned* out; };
GROSR_TASK(budget_hop, ProbeArgs) { ctx.then(args.probe, args); }
GROSR_TASK(budget_probe, ProbeArgs) {
  if (ctx.lane() == 0) args.out[args.index] = ctx.self_step_budget;
  if (args.left > 1) {
    ctx.then(ctx.self(), ProbeArgs{args.left - 1, args.index + 1, args.probe, args.out});
  }
}
)grosr_src";

struct RecordArgs {
  uint32_t index, value;
  uint32_t* out;
  uint32_t* hits;
};
struct FailArgs {
  uint32_t code;
};
struct ChainArgs {
  uint32_t left;
  uint32_t* steps;
};
struct TreeArgs {
  uint32_t depth, width, index;
  uint32_t* hits;
};
struct SpinArgs {
  uint32_t* flag;
  uint32_t* started;
};
struct SpawnArgs {
  uint32_t rounds, mark_id;
  uint32_t* accepted;
  uint32_t* hits;
};
struct FailChainArgs {
  uint32_t left, fail_at;
  uint32_t* steps;
};
struct AltArgs {
  uint32_t left, other, self_next;
  uint32_t* steps;
  uint32_t* wrong;
};
struct ResizeArgs {
  uint32_t* runs;
};
struct ProbeArgs {
  uint32_t left, index, probe;
  uint32_t* out;
};

// The record task's arguments for index i; ExpectRecords checks its output.
RecordArgs RecordFor(uint32_t i, CUdeviceptr out, CUdeviceptr hits) {
  return RecordArgs{i, i ^ 0x5a5a5a5au, DevicePointer<uint32_t>(out), DevicePointer<uint32_t>(hits)};
}

// Requests for record tasks 0..n-1 (what ExpectRecords checks).
std::vector<TaskRequest> RecordRequests(TaskId record, uint32_t n, CUdeviceptr out,
                                        CUdeviceptr hits) {
  std::vector<TaskRequest> requests;
  requests.reserve(n);
  for (uint32_t i = 0; i < n; ++i) {
    requests.push_back(TaskRequest::Make(record, RecordFor(i, out, hits)));
  }
  return requests;
}

// One worker warp on one SM and a 64-slot queue: fullness is deterministic.
RuntimeOptions OneWorker() {
  RuntimeOptions options;
  options.max_sms = 1;
  options.blocks_per_sm = 1;
  options.warps_per_block = 2;
  options.queue_capacity = 64;
  return options;
}

struct Ids {
  TaskId record, fail_with, chain, tree, spin_until, spawn_many, mark, spawn_chain;
  TaskId fail_chain, alt_even, alt_odd, resize_self, budget_hop, budget_probe;
};

// Loads the test tasks into `runtime`. Tests allocate their buffers before
// Start(): compute-sanitizer only knows allocations made before a launch,
// and the scheduler is launched once.
Ids Load(Runtime& runtime) {
  absl::StatusOr<LoadReport> report = runtime.LoadSource("test_tasks.cu", kTestTasks);
  EXPECT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->tasks.size(), 14u);
  auto id = [&](const char* name) { return testing::IdOf(runtime, name); };
  return Ids{id("record"),     id("fail_with"), id("chain"),      id("tree"),
             id("spin_until"), id("spawn_many"), id("mark"),      id("spawn_chain"),
             id("fail_chain"), id("alt_even"),  id("alt_odd"),    id("resize_self"),
             id("budget_hop"), id("budget_probe")};
}

const TaskStats* StatsOf(const RuntimeStats& stats, TaskId id) {
  for (const TaskStats& t : stats.tasks) {
    if (t.id == id) return &t;
  }
  return nullptr;
}

void ExpectRecords(Runtime& runtime, CUdeviceptr out, CUdeviceptr hits, uint32_t n) {
  std::vector<uint32_t> values = ReadBuffer<uint32_t>(runtime, out, n);
  std::vector<uint32_t> counts = ReadBuffer<uint32_t>(runtime, hits, n);
  uint64_t wrong = 0, not_once = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (values[i] != (i ^ 0x5a5a5a5au) * 2u + 1u) ++wrong;
    if (counts[i] != 1) ++not_once;
  }
  EXPECT_EQ(wrong, 0u) << "tasks whose output differs from the CPU reference";
  EXPECT_EQ(not_once, 0u) << "tasks that did not run exactly once";
}

// Record tasks 0..n-1 as one batch into a new group of a started runtime:
// waits for the group, checks every record against the CPU reference, and
// copies out the record task's statistics.
void RunRecordGroup(Runtime& runtime, TaskId record, uint32_t n, CUdeviceptr out,
                    CUdeviceptr hits, TaskStats* stats_out) {
  absl::StatusOr<GroupId> group = runtime.CreateGroup();
  ASSERT_TRUE(group.ok());
  GROSR_ASSERT_OK(
      runtime.SubmitBatch(RecordRequests(record, n, out, hits), *group, absl::Seconds(60)));
  GROSR_ASSERT_OK(runtime.WaitGroup(*group, absl::Seconds(60)));
  ExpectRecords(runtime, out, hits, n);
  absl::StatusOr<RuntimeStats> stats = runtime.Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  const TaskStats* counted = StatsOf(*stats, record);
  ASSERT_NE(counted, nullptr);
  *stats_out = *counted;
}

TEST(GpuScheduler, DeviceInfoDescribesTheGrid) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  const DeviceInfo& info = runtime->device_info();
  EXPECT_GT(info.sm_count, 0);
  EXPECT_GE(info.blocks, info.sm_count);
  EXPECT_EQ(info.workers, info.blocks * info.warps_per_block - 1);
  EXPECT_LE(info.kernel_registers, 64u);
  std::printf("device: %s (%s), %d SMs; grid %d blocks x %d warps, kernel %u registers, "
              "%zu B shared per block\n",
              info.name.c_str(), info.arch.c_str(), info.sm_count, info.blocks,
              info.warps_per_block, info.kernel_registers, info.shared_bytes_per_block);
}

TEST(GpuScheduler, HundredThousandSubmittedTasksMatchTheCpuReference) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  Ids ids = Load(*runtime);
  const uint32_t n = static_cast<uint32_t>(Scaled(100000));
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, n, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, n, 0);
  GROSR_ASSERT_OK(runtime->Start());
  TaskStats record;
  ASSERT_NO_FATAL_FAILURE(RunRecordGroup(*runtime, ids.record, n, out, hits, &record));
  EXPECT_EQ(record.submitted, n);
  EXPECT_EQ(record.completed, n);
  EXPECT_EQ(record.failed, 0u);
  absl::StatusOr<ShutdownReport> report = runtime->Shutdown();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_EQ(report->tasks_abandoned, 0u);
  EXPECT_EQ(report->submissions_abandoned, 0u);
}

// The control warp moves host submissions in rounds of up to 32, one ring
// slot a lane, each lane reading ahead of what the host has written. Rings
// of 32 and 64 slots, and device queues as small as a round or smaller (the
// queue's room ends inside one); and a 32-slot ring rewritten while it is
// read, for thousands of laps, with a queue that never stalls the reads:
// the ring's slots validate themselves word by word (SubmissionRing), which
// relies on the GPU never reading a host word half written. Every task runs
// once with its whole descriptor (CPU reference), and the group completes.
// The last case polls quietly after every idle round (one word a slot).
struct RingCase {
  uint32_t ring, queue, tasks, min_tasks;  // min_tasks: at the smallest scale
  uint32_t quiet_after = 1024;             // RuntimeOptions::quiet_poll_after_rounds
};
class SmallRingTest : public ::testing::TestWithParam<RingCase> {};
INSTANTIATE_TEST_SUITE_P(RingAndQueue, SmallRingTest,
                         ::testing::Values(RingCase{32, 16, 5000, 500}, RingCase{64, 32, 5000, 500},
                                           RingCase{64, 1024, 5000, 500},
                                           RingCase{1024, 64, 5000, 500},
                                           RingCase{32, 1u << 20, 200000, 2000},
                                           RingCase{32, 16, 5000, 500, 1}));

TEST_P(SmallRingTest, BatchesThroughASmallRingAndQueueRunEveryTaskOnce) {
  RuntimeOptions options;
  options.ring_capacity = GetParam().ring;
  options.queue_capacity = GetParam().queue;
  options.quiet_poll_after_rounds = GetParam().quiet_after;
  GROSR_RUNTIME_OR_SKIP(runtime, options);
  Ids ids = Load(*runtime);
  const uint32_t n =
      static_cast<uint32_t>(std::max<uint64_t>(Scaled(GetParam().tasks), GetParam().min_tasks));
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, n, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, n, 0);
  GROSR_ASSERT_OK(runtime->Start());
  TaskStats record;
  ASSERT_NO_FATAL_FAILURE(RunRecordGroup(*runtime, ids.record, n, out, hits, &record));
  EXPECT_EQ(record.completed, n);
  GROSR_ASSERT_OK(runtime->Drain(absl::Seconds(10)));
}

// 300 tasks loaded from one file, each writing its own number, submitted in
// one batch of 300 runs of one id: every task runs the code installed under
// its id (ids past 255 included), and each id is counted once.
struct NumberArgs {
  uint32_t* out;
};
TEST(GpuScheduler, ThreeHundredTaskIdsEachRunTheirOwnCodeAndCountOnce) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  constexpr uint32_t kTasks = 300;
  std::string source = "#include <grosr/task.h>\nstruct NumberArgs { unsigned* out; };\n";
  for (uint32_t i = 0; i < kTasks; ++i) {
    absl::StrAppend(&source, "GROSR_TASK(number_", i, ", NumberArgs) { if (ctx.lane() == 0) ",
                    "args.out[", i, "] = ", i, " + 1; }\n");
  }
  absl::StatusOr<LoadReport> report = runtime->LoadSource("numbers.cu", source);
  ASSERT_TRUE(report.ok()) << report.status();
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, kTasks, kPoison);
  GROSR_ASSERT_OK(runtime->Start());
  std::vector<TaskRequest> requests;
  TaskId highest = 0;
  for (uint32_t i = 0; i < kTasks; ++i) {
    absl::StatusOr<TaskId> id = runtime->Find(absl::StrCat("number_", i));
    ASSERT_TRUE(id.ok()) << id.status();
    highest = std::max(highest, *id);
    requests.push_back(TaskRequest::Make(*id, NumberArgs{DevicePointer<uint32_t>(out)}));
  }
  ASSERT_GE(highest, 256u) << "no task id past 255";
  GROSR_ASSERT_OK(runtime->SubmitBatch(requests));
  GROSR_ASSERT_OK(runtime->Drain(absl::Seconds(30)));
  std::vector<uint32_t> got = ReadBuffer<uint32_t>(*runtime, out, kTasks);
  for (uint32_t i = 0; i < kTasks; ++i) EXPECT_EQ(got[i], i + 1) << "task number_" << i;
  // A batch of 300 ids, each a run of one: each counted once.
  absl::StatusOr<RuntimeStats> stats = runtime->Stats();
  ASSERT_TRUE(stats.ok()) << stats.status();
  for (const TaskRequest& request : requests) {
    const TaskStats* task = StatsOf(*stats, request.task);
    ASSERT_NE(task, nullptr);
    EXPECT_EQ(task->submitted, 1u) << "task id " << request.task;
    EXPECT_EQ(task->completed, 1u) << "task id " << request.task;
  }
}

// After a long idle spell the control warp polls the ring one word a slot
// (RuntimeOptions::quiet_poll_after_rounds): submissions after quiet spells
// of a few milliseconds -- one task, then a batch spanning several rounds
// -- each still run once, and are seen within the wait's deadline; at the
// default threshold, and at 1 (every idle round quiet).
class QuietPollTest : public ::testing::TestWithParam<uint32_t> {};
INSTANTIATE_TEST_SUITE_P(Threshold, QuietPollTest, ::testing::Values(1024u, 1u));
TEST_P(QuietPollTest, SubmissionsAfterQuietSpellsRunOnce) {
  RuntimeOptions options;
  options.quiet_poll_after_rounds = GetParam();
  GROSR_RUNTIME_OR_SKIP(runtime, options);
  Ids ids = Load(*runtime);
  constexpr uint32_t kSpells = 5, kBatch = 100;
  constexpr uint32_t n = kSpells * (1 + kBatch);
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, n, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, n, 0);
  GROSR_ASSERT_OK(runtime->Start());
  uint32_t next = 0;
  for (uint32_t spell = 0; spell < kSpells; ++spell) {
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    absl::StatusOr<TaskHandle> one = runtime->Submit(ids.record, RecordFor(next++, out, hits));
    ASSERT_TRUE(one.ok()) << one.status();
    GROSR_ASSERT_OK(runtime->Wait(*one, absl::Seconds(10)));
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    std::vector<TaskRequest> batch;
    for (uint32_t k = 0; k < kBatch; ++k) {
      batch.push_back(TaskRequest::Make(ids.record, RecordFor(next++, out, hits)));
    }
    GROSR_ASSERT_OK(runtime->SubmitBatch(batch));
    GROSR_ASSERT_OK(runtime->Drain(absl::Seconds(10)));
  }
  ExpectRecords(*runtime, out, hits, n);
}

TEST(GpuScheduler, TrackedSubmissionsFromManyThreadsEachRunOnce) {
  RuntimeOptions options;
  options.completion_capacity = 1024;  // forces slot reuse
  GROSR_RUNTIME_OR_SKIP(runtime, options);
  Ids ids = Load(*runtime);
  constexpr int kThreads = 4;
  const uint32_t per_thread = static_cast<uint32_t>(Scaled(5000));
  const uint32_t n = per_thread * kThreads;
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, n, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, n, 0);
  GROSR_ASSERT_OK(runtime->Start());
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::vector<TaskHandle> handles;
      for (uint32_t k = 0; k < per_thread; ++k) {
        const uint32_t i = t * per_thread + k;
        absl::StatusOr<TaskHandle> h = runtime->Submit(
            ids.record, RecordFor(i, out, hits));
        if (!h.ok()) { ++failures; continue; }
        handles.push_back(*h);
        // Every 16th waits at once (the ping-pong path); the others later,
        // many after their slot was reused.
        if (k % 16 == 0 && !runtime->Wait(*h, absl::Seconds(30)).ok()) ++failures;
      }
      for (const TaskHandle& h : handles) {
        if (!runtime->Wait(h, absl::Seconds(30)).ok()) ++failures;
      }
    });
  }
  for (std::thread& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
  GROSR_ASSERT_OK(runtime->Drain(absl::Seconds(30)));
  ExpectRecords(*runtime, out, hits, n);
}

TEST(GpuScheduler, ContinuationChainRunsEveryStepInOrder) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  Ids ids = Load(*runtime);
  const uint32_t steps = static_cast<uint32_t>(Scaled(100000));
  CUdeviceptr counter = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<TaskHandle> h =
      runtime->Submit(ids.chain, ChainArgs{steps, DevicePointer<uint32_t>(counter)});
  ASSERT_TRUE(h.ok()) << h.status();
  // Waiting for the task waits for its whole chain of continuations.
  GROSR_ASSERT_OK(runtime->Wait(*h, absl::Seconds(60)));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, counter, 1)[0], steps);
  // Back-to-back chains on a shared plain counter: each Wait covers its
  // chain, so no increments race and none are lost.
  const uint32_t runs = static_cast<uint32_t>(Scaled(200));
  for (uint32_t r = 0; r < runs; ++r) {
    absl::StatusOr<TaskHandle> next =
        runtime->Submit(ids.chain, ChainArgs{100, DevicePointer<uint32_t>(counter)});
    ASSERT_TRUE(next.ok());
    GROSR_ASSERT_OK(runtime->Wait(*next, absl::Seconds(10)));
  }
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, counter, 1)[0], steps + runs * 100);
  absl::StatusOr<RuntimeStats> stats = runtime->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(StatsOf(*stats, ids.chain)->completed, steps + runs * 100);
  EXPECT_EQ(StatsOf(*stats, ids.chain)->submitted, 1u + runs);
}

// In-place chains under several stop-check intervals: 64 (the default), 3
// and 1 (nothing runs in place).
class InPlaceChainTest : public ::testing::TestWithParam<uint32_t> {
 protected:
  RuntimeOptions Options() const {
    RuntimeOptions options;
    options.stop_check_interval = GetParam();
    return options;
  }
};
INSTANTIATE_TEST_SUITE_P(StopCheckIntervals, InPlaceChainTest, ::testing::Values(64u, 3u, 1u));

// Continuations to the task itself run in place (the task's own loop, up
// to 4 * (stop_check_interval - 1) per dispatch): a failed step leaves the loop,
// is reported once, and the chain goes on (a second failure a few steps
// later is reported too); the host's ticket gets the first failure; every
// step is counted.
TEST_P(InPlaceChainTest, AChainRunInPlaceReportsEachFailedStepAndGoesOn) {
  GROSR_RUNTIME_OR_SKIP(runtime, Options());
  Ids ids = Load(*runtime);
  // Failures at 43.7% and three steps later: the first ends a dispatch's
  // loop, the second comes in the next one. Scaled: compute-sanitizer runs
  // it at 1%.
  const uint32_t kSteps = static_cast<uint32_t>(std::max<uint64_t>(100, Scaled(1000)));
  const uint32_t kFailAt = kSteps * 437 / 1000;
  CUdeviceptr counter = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<TaskHandle> h = runtime->Submit(
      ids.fail_chain, FailChainArgs{kSteps, kFailAt, DevicePointer<uint32_t>(counter)});
  ASSERT_TRUE(h.ok()) << h.status();
  absl::Status s = runtime->Wait(*h, absl::Seconds(10));
  EXPECT_TRUE(absl::IsAborted(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "code 7")) << s;
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, counter, 1)[0], kSteps);
  absl::StatusOr<RuntimeStats> stats = runtime->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(StatsOf(*stats, ids.fail_chain)->completed, kSteps - 2);
  EXPECT_EQ(StatsOf(*stats, ids.fail_chain)->failed, 2u);
  absl::StatusOr<std::vector<TaskError>> errors = runtime->RecentErrors();
  ASSERT_TRUE(errors.ok());
  ASSERT_EQ(errors->size(), 2u);
  for (const TaskError& e : *errors) {
    EXPECT_EQ(e.code, 7u);
    EXPECT_EQ(e.name, "fail_chain");
  }
  // The next chain on the same warps starts clean.
  absl::StatusOr<TaskHandle> again = runtime->Submit(
      ids.fail_chain, FailChainArgs{kSteps, 0, DevicePointer<uint32_t>(counter)});
  ASSERT_TRUE(again.ok());
  GROSR_ASSERT_OK(runtime->Wait(*again, absl::Seconds(10)));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, counter, 1)[0], 2 * kSteps);
}

// Continuations to other tasks (dispatched by the scheduler) mixed with
// continuations to the task itself (run in place): every step runs, in
// order, and is counted under its own task.
TEST_P(InPlaceChainTest, ChainsBetweenTasksAndInPlaceRunInOrder) {
  GROSR_RUNTIME_OR_SKIP(runtime, Options());
  Ids ids = Load(*runtime);
  // Odd: alt_even first and last. Scaled: compute-sanitizer runs it at 1%.
  const uint32_t kDispatches = static_cast<uint32_t>(std::max<uint64_t>(301, Scaled(30000))) | 1u;
  CUdeviceptr counter = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  CUdeviceptr wrong = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<TaskHandle> h = runtime->Submit(
      ids.alt_even, AltArgs{kDispatches, ids.alt_odd, 0, DevicePointer<uint32_t>(counter),
                            DevicePointer<uint32_t>(wrong)});
  ASSERT_TRUE(h.ok()) << h.status();
  GROSR_ASSERT_OK(runtime->Wait(*h, absl::Seconds(60)));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, wrong, 1)[0], 0u) << "steps out of order";
  // alt_odd asks alt_even for a self-step when its `left` is a multiple of
  // 3: count those (a self-step adds two to the counter and runs in place,
  // counted as a task of alt_even).
  uint64_t even = 0, odd = 0, self_steps = 0, counted = 0;
  uint32_t left = kDispatches;
  bool at_even = true, self_next = false;
  while (true) {
    if (at_even) {
      ++even;
      counted += 1;
      if (left <= 1) break;
      if (self_next) {
        counted += 1;
        ++self_steps;
        self_next = false;
        --left;
        continue;  // alt_even again
      }
    } else {
      ++odd;
      counted += 1;
      if (left <= 1) break;
      self_next = left % 3 == 0;
    }
    --left;
    at_even = !at_even;
  }
  EXPECT_GT(self_steps, kDispatches / 20);
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, counter, 1)[0], counted);
  absl::StatusOr<RuntimeStats> stats = runtime->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(StatsOf(*stats, ids.alt_even)->completed, even);
  EXPECT_EQ(StatsOf(*stats, ids.alt_odd)->completed, odd);
}

// The in-place budget is what keeps a chain within stop_check_interval
// steps of a stop check, in-place steps counting a quarter: at interval 3,
// a self-chain entered one step after a check may run 4 steps in place
// (counted as one), a dispatch right after a check 8.
TEST(GpuScheduler, InPlaceBudgetKeepsAChainWithinTheStopCheckInterval) {
  RuntimeOptions options;
  options.stop_check_interval = 3;
  GROSR_RUNTIME_OR_SKIP(runtime, options);
  Ids ids = Load(*runtime);
  constexpr uint32_t kSteps = 8;
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, kSteps, kPoison);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<TaskHandle> h = runtime->Submit(
      ids.budget_hop, ProbeArgs{kSteps, 0, ids.budget_probe, DevicePointer<uint32_t>(out)});
  ASSERT_TRUE(h.ok()) << h.status();
  GROSR_ASSERT_OK(runtime->Wait(*h, absl::Seconds(10)));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, out, kSteps),
            (std::vector<uint32_t>{4, 4, 4, 4, 4, 8, 8, 8}));
}

// then(self(), args of another size) is not run in place: the scheduler
// refuses the continuation with kBadArguments, once.
TEST(GpuScheduler, ASelfContinuationOfAnotherSizeIsRefused) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  Ids ids = Load(*runtime);
  CUdeviceptr runs = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<TaskHandle> h =
      runtime->Submit(ids.resize_self, ResizeArgs{DevicePointer<uint32_t>(runs)});
  ASSERT_TRUE(h.ok()) << h.status();
  absl::Status s = runtime->Wait(*h, absl::Seconds(10));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "resize_self")) << s;
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, runs, 1)[0], 1u);
  absl::StatusOr<RuntimeStats> stats = runtime->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(StatsOf(*stats, ids.resize_self)->completed, 1u);
  EXPECT_EQ(StatsOf(*stats, ids.resize_self)->failed, 1u);
}

TEST(GpuScheduler, HundredThousandStepChainThroughTheQueue) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  Ids ids = Load(*runtime);
  const uint32_t steps = static_cast<uint32_t>(Scaled(100000));
  CUdeviceptr counter = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<GroupId> group = runtime->CreateGroup();
  ASSERT_TRUE(group.ok());
  ASSERT_TRUE(runtime->Submit(ids.spawn_chain,
                              ChainArgs{steps, DevicePointer<uint32_t>(counter)},
                              SubmitOptions{.group = *group, .track = false}).ok());
  // Spawned successors join the group: waiting for it waits for the chain.
  GROSR_ASSERT_OK(runtime->WaitGroup(*group, absl::Seconds(60)));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, counter, 1)[0], steps);
  absl::StatusOr<RuntimeStats> stats = runtime->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(StatsOf(*stats, ids.spawn_chain)->completed, steps);
  EXPECT_EQ(StatsOf(*stats, ids.spawn_chain)->spawned, steps - 1);
}

TEST(GpuScheduler, DrainSeesEveryNodeOfASpawnedTree) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  Ids ids = Load(*runtime);
  // 8-ary tree, depth 6 (about 300k nodes); smaller when scaled down.
  const uint32_t width = 8;
  const uint32_t depth = Scaled(100) >= 100 ? 6 : 3;
  uint64_t nodes = 0;
  for (uint64_t level = 0, count = 1; level <= depth; ++level, count *= width) nodes += count;
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, nodes, 0);
  GROSR_ASSERT_OK(runtime->Start());
  for (int round = 0; round < 3; ++round) {
    absl::StatusOr<TaskHandle> root = runtime->Submit(
        ids.tree, TreeArgs{depth, width, 0, DevicePointer<uint32_t>(hits)},
        SubmitOptions{.track = false});
    ASSERT_TRUE(root.ok()) << root.status();
    // Drain must not return while tasks still spawn tasks: read at once.
    GROSR_ASSERT_OK(runtime->Drain(absl::Seconds(60)));
    std::vector<uint32_t> counts = ReadBuffer<uint32_t>(*runtime, hits, nodes);
    uint64_t wrong = 0;
    for (uint32_t c : counts) wrong += c != static_cast<uint32_t>(round + 1);
    ASSERT_EQ(wrong, 0u) << "round " << round << ": nodes not run exactly once before Drain";
  }
  absl::StatusOr<RuntimeStats> stats = runtime->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(StatsOf(*stats, ids.tree)->completed, 3 * nodes);
  EXPECT_EQ(StatsOf(*stats, ids.tree)->spawned, 3 * (nodes - 1));
  EXPECT_EQ(stats->pending, 0u);
  EXPECT_EQ(stats->queue_depth, 0);
}

TEST(GpuScheduler, GroupsFinishIndependently) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  Ids ids = Load(*runtime);
  CUdeviceptr flag = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  testing::ReleaseOnExit release_flag(*runtime, flag);
  CUdeviceptr started = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  const uint32_t n = 1000;
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, n, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, n, 0);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<GroupId> slow = runtime->CreateGroup();
  absl::StatusOr<GroupId> fast = runtime->CreateGroup();
  ASSERT_TRUE(slow.ok() && fast.ok());
  ASSERT_NE(*slow, *fast);
  ASSERT_TRUE(runtime->Submit(ids.spin_until,
                              SpinArgs{DevicePointer<uint32_t>(flag),
                                       DevicePointer<uint32_t>(started)},
                              SubmitOptions{.group = *slow, .track = false}).ok());
  for (uint32_t i = 0; i < n; ++i) {
    ASSERT_TRUE(runtime->Submit(ids.record,
                                RecordFor(i, out, hits),
                                SubmitOptions{.group = *fast, .track = false}).ok());
  }
  GROSR_ASSERT_OK(runtime->WaitGroup(*fast, absl::Seconds(30)));
  ExpectRecords(*runtime, out, hits, n);
  absl::Status slow_wait = runtime->WaitGroup(*slow, absl::Milliseconds(50));
  EXPECT_TRUE(absl::IsDeadlineExceeded(slow_wait)) << slow_wait;
  EXPECT_TRUE(absl::IsDeadlineExceeded(runtime->Drain(absl::Milliseconds(20))));
  uint32_t one = 1;
  GROSR_ASSERT_OK(runtime->CopyToDevice(flag, &one, sizeof(one)));
  GROSR_ASSERT_OK(runtime->WaitGroup(*slow, absl::Seconds(30)));
  GROSR_ASSERT_OK(runtime->Drain(absl::Seconds(30)));
  GROSR_ASSERT_OK(runtime->ReleaseGroup(*slow));
  EXPECT_TRUE(absl::IsInvalidArgument(runtime->WaitGroup(*slow)));
}

TEST(GpuScheduler, BadSubmissionsFailClearlyAndTheRuntimeKeepsServing) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  Ids ids = Load(*runtime);
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, 1, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  // Unknown ids: the largest (with no arguments, first on fresh warps: no
  // entry is cached yet), out of the table, and in it but empty.
  absl::StatusOr<TaskHandle> largest = runtime->Submit(0xffffffffu, nullptr, 0);
  absl::StatusOr<TaskHandle> unknown = runtime->Submit(100000, FailArgs{0});
  absl::StatusOr<TaskHandle> empty = runtime->Submit(500, FailArgs{0});
  // Wrong argument size for `record`.
  absl::StatusOr<TaskHandle> bad_size = runtime->Submit(ids.record, FailArgs{0});
  // A task's own failure.
  absl::StatusOr<TaskHandle> failed = runtime->Submit(ids.fail_with, FailArgs{7});
  absl::StatusOr<TaskHandle> fine = runtime->Submit(ids.fail_with, FailArgs{0});
  ASSERT_TRUE(largest.ok() && unknown.ok() && empty.ok() && bad_size.ok() && failed.ok() &&
              fine.ok());

  absl::Status s = runtime->Wait(*largest, absl::Seconds(10));
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  s = runtime->Wait(*unknown, absl::Seconds(10));
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "100000")) << s;
  s = runtime->Wait(*empty, absl::Seconds(10));
  EXPECT_TRUE(absl::IsNotFound(s)) << s;
  s = runtime->Wait(*bad_size, absl::Seconds(10));
  EXPECT_TRUE(absl::IsInvalidArgument(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "record")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "24 bytes")) << s;
  s = runtime->Wait(*failed, absl::Seconds(10));
  EXPECT_TRUE(absl::IsAborted(s)) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "fail_with")) << s;
  EXPECT_TRUE(absl::StrContains(s.message(), "code 7")) << s;
  GROSR_ASSERT_OK(runtime->Wait(*fine, absl::Seconds(10)));

  // Oversized arguments never reach the GPU.
  char big[64] = {};
  EXPECT_TRUE(absl::IsInvalidArgument(runtime->Submit(ids.record, big, sizeof(big)).status()));
  // A source that does not compile, loaded while running: refused, nothing paused.
  EXPECT_FALSE(runtime->LoadSource("late.cu", "not CUDA").ok());
  EXPECT_EQ(runtime->Stats()->pauses, 0u);

  // Still serving.
  absl::StatusOr<TaskHandle> ok = runtime->Submit(
      ids.record, RecordFor(0, out, hits));
  ASSERT_TRUE(ok.ok());
  GROSR_ASSERT_OK(runtime->Wait(*ok, absl::Seconds(10)));
  ExpectRecords(*runtime, out, hits, 1);

  absl::StatusOr<std::vector<TaskError>> errors = runtime->RecentErrors();
  ASSERT_TRUE(errors.ok());
  ASSERT_EQ(errors->size(), 5u);
  int unknown_errors = 0, size_errors = 0, own_errors = 0;
  for (const TaskError& e : *errors) {
    unknown_errors += e.code == kUnknownTask;
    size_errors += e.code == kBadArguments;
    own_errors += e.code == 7 && e.name == "fail_with";
  }
  EXPECT_EQ(unknown_errors, 3);
  EXPECT_EQ(size_errors, 1);
  EXPECT_EQ(own_errors, 1);
  absl::StatusOr<RuntimeStats> stats = runtime->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->invalid_dispatches, 2u);
  EXPECT_EQ(StatsOf(*stats, ids.fail_with)->failed, 1u);
  EXPECT_EQ(StatsOf(*stats, ids.fail_with)->completed, 1u);
  EXPECT_EQ(StatsOf(*stats, ids.record)->failed, 1u);
}

// One worker warp, a 64-slot queue: spawns beyond the queue's room fail and
// say so; every accepted spawn runs exactly once, no refused one runs.
TEST(GpuScheduler, SpawnIntoAFullQueueIsRefusedNotDropped) {
  RuntimeOptions options = OneWorker();
  GROSR_RUNTIME_OR_SKIP(runtime, options);
  ASSERT_EQ(runtime->device_info().workers, 1);
  Ids ids = Load(*runtime);
  const uint32_t rounds = 8, n = rounds * 32;
  CUdeviceptr accepted = PoisonedBuffer<uint32_t>(*runtime, n, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, n, 0);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<TaskHandle> h = runtime->Submit(
      ids.spawn_many, SpawnArgs{rounds, ids.mark, DevicePointer<uint32_t>(accepted),
                                DevicePointer<uint32_t>(hits)});
  ASSERT_TRUE(h.ok());
  GROSR_ASSERT_OK(runtime->Wait(*h, absl::Seconds(10)));
  GROSR_ASSERT_OK(runtime->Drain(absl::Seconds(10)));
  std::vector<uint32_t> a = ReadBuffer<uint32_t>(*runtime, accepted, n);
  std::vector<uint32_t> c = ReadBuffer<uint32_t>(*runtime, hits, n);
  uint32_t accepted_count = 0, mismatches = 0;
  for (uint32_t i = 0; i < n; ++i) {
    ASSERT_NE(a[i], kPoison) << "spawn attempt " << i << " never reported";
    accepted_count += a[i];
    mismatches += a[i] != c[i];
  }
  EXPECT_EQ(accepted_count, 64u) << "the queue holds 64";
  EXPECT_EQ(mismatches, 0u);
}

// The ring is full when the GPU cannot take more: a held worker, a full
// queue. Waiting submits fill queue and ring exactly; then a zero-wait
// submit says the ring is full. Nothing accepted is lost.
TEST(GpuScheduler, FullSubmissionRingIsReportedAndNothingIsLost) {
  RuntimeOptions options = OneWorker();
  options.ring_capacity = 64;
  GROSR_RUNTIME_OR_SKIP(runtime, options);
  Ids ids = Load(*runtime);
  CUdeviceptr flag = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  testing::ReleaseOnExit release_flag(*runtime, flag);
  CUdeviceptr started = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  const uint32_t limit = 1000;
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, limit, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, limit, 0);
  GROSR_ASSERT_OK(runtime->Start());
  ASSERT_TRUE(runtime->Submit(ids.spin_until, SpinArgs{DevicePointer<uint32_t>(flag),
                                                      DevicePointer<uint32_t>(started)},
                              SubmitOptions{.track = false}).ok());
  while (ReadBuffer<uint32_t>(*runtime, started, 1)[0] == 0) std::this_thread::yield();
  auto submit = [&](uint32_t i, absl::Duration wait) {
    return runtime->Submit(ids.record,
                           RecordFor(i, out, hits),
                           SubmitOptions{.track = false, .wait_for_room = wait})
        .status();
  };
  uint32_t accepted = 0;
  absl::Status refused;
  for (; accepted < limit; ++accepted) {
    // Long enough for the control warp to move what fits into the queue.
    refused = submit(accepted, absl::Milliseconds(100));
    if (!refused.ok()) break;
  }
  EXPECT_TRUE(absl::IsResourceExhausted(refused)) << refused;
  EXPECT_TRUE(absl::StrContains(refused.message(), "ring")) << refused;
  EXPECT_EQ(accepted, 64u + 64u) << "queue plus ring";
  absl::Status at_once = submit(accepted, absl::ZeroDuration());
  EXPECT_TRUE(absl::IsResourceExhausted(at_once)) << at_once;
  uint32_t one = 1;
  GROSR_ASSERT_OK(runtime->CopyToDevice(flag, &one, sizeof(one)));
  GROSR_ASSERT_OK(runtime->Drain(absl::Seconds(10)));
  ExpectRecords(*runtime, out, hits, accepted);
}

TEST(GpuScheduler, WatchdogNamesAHungTask) {
  RuntimeOptions options;
  options.watchdog_deadline = absl::Milliseconds(200);
  options.watchdog_interval = absl::Milliseconds(20);
  GROSR_RUNTIME_OR_SKIP(runtime, options);
  Ids ids = Load(*runtime);
  CUdeviceptr flag = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  testing::ReleaseOnExit release_flag(*runtime, flag);
  CUdeviceptr started = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<TaskHandle> h = runtime->Submit(
      ids.spin_until,
      SpinArgs{DevicePointer<uint32_t>(flag), DevicePointer<uint32_t>(started)});
  ASSERT_TRUE(h.ok());
  absl::SleepFor(absl::Milliseconds(500));
  absl::StatusOr<RuntimeStats> stats = runtime->Stats();
  ASSERT_TRUE(stats.ok());
  ASSERT_EQ(stats->hung.size(), 1u);
  EXPECT_EQ(stats->hung[0].name, "spin_until");
  EXPECT_GE(stats->hung[0].running_for, absl::Milliseconds(200));
  absl::Status waited = runtime->Wait(*h, absl::Milliseconds(100));
  EXPECT_TRUE(absl::IsDeadlineExceeded(waited)) << waited;
  EXPECT_TRUE(absl::StrContains(waited.message(), "spin_until")) << waited;
  uint32_t one = 1;
  GROSR_ASSERT_OK(runtime->CopyToDevice(flag, &one, sizeof(one)));
  GROSR_ASSERT_OK(runtime->Wait(*h, absl::Seconds(10)));
  absl::SleepFor(absl::Milliseconds(100));
  stats = runtime->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_TRUE(stats->hung.empty());
}

TEST(GpuScheduler, ShutdownStopsEndlessWorkAndReportsWhatNeverRan) {
  RuntimeOptions options;
  options.stop_timeout = absl::Seconds(5);
  GROSR_RUNTIME_OR_SKIP(runtime, options);
  Ids ids = Load(*runtime);
  CUdeviceptr counter = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  // An endless chain: it stops only because the scheduler saves it.
  absl::StatusOr<TaskHandle> h = runtime->Submit(
      ids.chain, ChainArgs{0xffffffffu, DevicePointer<uint32_t>(counter)});
  ASSERT_TRUE(h.ok());
  absl::SleepFor(absl::Milliseconds(20));
  const absl::Time start = absl::Now();
  absl::StatusOr<ShutdownReport> report = runtime->Shutdown();
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_LT(absl::Now() - start, absl::Seconds(5));
  EXPECT_EQ(report->tasks_abandoned, 1u);
  EXPECT_TRUE(absl::IsFailedPrecondition(runtime->Shutdown().status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(runtime->Submit(ids.chain, ChainArgs{}).status()));
  EXPECT_TRUE(absl::IsFailedPrecondition(runtime->Wait(*h)));
}

TEST(GpuScheduler, DestructorShutsDownARunningRuntime) {
  for (int i = 0; i < 3; ++i) {
    GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
    Ids ids = Load(*runtime);
    CUdeviceptr counter = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
    GROSR_ASSERT_OK(runtime->Start());
    ASSERT_TRUE(runtime->Submit(ids.chain, ChainArgs{1000, DevicePointer<uint32_t>(counter)})
                    .ok());
    // No Shutdown: the destructor stops the kernel and frees everything.
  }
}

TEST(GpuScheduler, SingleSmRuntimeServes) {
  RuntimeOptions options;
  options.max_sms = 1;
  GROSR_RUNTIME_OR_SKIP(runtime, options);
  EXPECT_LE(runtime->device_info().blocks, 32);
  Ids ids = Load(*runtime);
  const uint32_t n = static_cast<uint32_t>(Scaled(20000));
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, n, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, n, 0);
  GROSR_ASSERT_OK(runtime->Start());
  GROSR_ASSERT_OK(runtime->SubmitBatch(RecordRequests(ids.record, n, out, hits)));
  GROSR_ASSERT_OK(runtime->Drain(absl::Seconds(60)));
  ExpectRecords(*runtime, out, hits, n);
}

}  // namespace
}  // namespace grosr
