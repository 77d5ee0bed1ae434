// Hot-loading on a real GPU: task code loaded into a running scheduler while
// work flows, checked for exactly-once execution and CPU-reference results.
// Skips where there is no GPU (see gpu_test_support.h).
#include <stdlib.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <functional>
#include <thread>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "host/runtime.h"
#include "host/task_directory.h"
#include "tests/gpu_test_support.h"

namespace grosr {
namespace {

using testing::DevicePointer;
using testing::IdOf;
using testing::PoisonedBuffer;
using testing::ReadBuffer;
using testing::Scaled;

constexpr uint32_t kPoison = 0xdeadbeefu;

// Work that flows while code loads: a record per index, and a long chain of
// continuations (a warp holds it across the pause).
constexpr char kStreamTasks[] = R"grosr_src(
#include <grosr/task.h>
struct RecordArgs { unsigned index; unsigned* out; unsigned* hits; };
GROSR_TASK(record, RecordArgs) {
  if (ctx.lane() == 0) {
    args.out[args.index] = args.index * 3u + 7u;
    atomicAdd(&args.hits[args.index], 1u);
  }
}
struct ChainArgs { unsigned left; unsigned* steps; };
GROSR_TASK(chain, ChainArgs) {
  if (ctx.lane() == 0) *args.steps += 1;  // plain: steps run one after another
  if (args.left > 1) ctx.then(ctx.self(), ChainArgs{args.left - 1, args.steps});
}
// Holds its warp until *flag becomes non-zero.
struct SpinArgs { unsigned* flag; };
GROSR_TASK(spin_until, SpinArgs) {
  while (*(volatile unsigned*)args.flag == 0) __nanosleep(1000);
}
)grosr_src";

// A task whose code is replaced: version N writes N.
std::string VersionSource(uint32_t version) {
  return absl::StrCat(R"grosr_src(
#include <grosr/task.h>
struct VersionArgs { unsigned index; unsigned* out; unsigned* hits; };
GROSR_TASK(version, VersionArgs) {
  if (ctx.lane() == 0) {
    args.out[args.index] = )grosr_src",
                      version, R"grosr_src(u;
    atomicAdd(&args.hits[args.index], 1u);
  }
}
)grosr_src");
}

constexpr char kSquareTask[] = R"grosr_src(
#include <grosr/task.h>
struct SquareArgs { unsigned index; unsigned* out; };
GROSR_TASK(square, SquareArgs) {
  if (ctx.lane() == 0) args.out[args.index] = args.index * args.index;
}
)grosr_src";

// A chain whose step `fail_at` (counted down by `left`) fails; the chain
// goes on to its end. Each step takes a few microseconds, so a pause lands
// inside it.
constexpr char kFailingChainTask[] = R"grosr_src(
#include <grosr/task.h>
struct FailingChainArgs { unsigned left; unsigned fail_at; unsigned* steps; };
GROSR_TASK(failing_chain, FailingChainArgs) {
  if (ctx.lane() == 0) {
    *(volatile unsigned*)args.steps += 1;
    __nanosleep(2000);
  }
  if (args.left == args.fail_at) ctx.fail(77);
  if (args.left > 1) {
    ctx.then(ctx.self(), FailingChainArgs{args.left - 1, args.fail_at, args.steps});
  }
}
)grosr_src";

struct FailingChainArgs {
  uint32_t left;
  uint32_t fail_at;
  uint32_t* steps;
};

struct IndexArgs {
  uint32_t index;
  uint32_t* out;
  uint32_t* hits;
};
struct ChainArgs {
  uint32_t left;
  uint32_t* steps;
};
struct SquareArgs {
  uint32_t index;
  uint32_t* out;
};
struct SpinArgs {
  uint32_t* flag;
};

uint64_t Pauses(Runtime& runtime) {
  absl::StatusOr<RuntimeStats> stats = runtime.Stats();
  EXPECT_TRUE(stats.ok()) << stats.status();
  return stats.ok() ? stats->pauses : 0;
}

// Submits `task` for indices [first, first + count) into `group`, in
// batches, each IndexArgs{i, out, hits}.
absl::Status SubmitIndexed(Runtime& runtime, TaskId task, GroupId group, uint32_t first,
                           uint32_t count, CUdeviceptr out, CUdeviceptr hits) {
  std::vector<TaskRequest> requests;
  for (uint32_t i = first; i < first + count; ++i) {
    requests.push_back(TaskRequest::Make(
        task, IndexArgs{i, DevicePointer<uint32_t>(out), DevicePointer<uint32_t>(hits)}));
  }
  return runtime.SubmitBatch(requests, group);
}

// Submits the indexed tasks [first, n) in batches from a thread of its own
// while the test loads code; `before_batch(first)` runs before each batch.
class BackgroundSubmitter {
 public:
  BackgroundSubmitter(Runtime& runtime, TaskId task, GroupId group, uint32_t first, uint32_t n,
                      uint32_t batch, CUdeviceptr out, CUdeviceptr hits,
                      std::function<void(uint32_t)> before_batch = nullptr)
      : thread_([=, &runtime, this] {
          for (uint32_t at = first; at < n && status_.ok(); at += batch) {
            if (before_batch) before_batch(at);
            status_ = SubmitIndexed(runtime, task, group, at, std::min(batch, n - at), out, hits);
          }
          done_ = true;
        }) {}
  ~BackgroundSubmitter() {
    if (thread_.joinable()) thread_.join();
  }
  bool done() const { return done_; }
  absl::Status Join() {
    thread_.join();
    return status_;
  }

 private:
  std::atomic<bool> done_{false};
  absl::Status status_;
  std::thread thread_;  // last: it starts once the fields above exist
};

TEST(GpuHotLoad, NewTaskLoadsWhileHundredThousandTasksFlow) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  GROSR_ASSERT_OK(runtime->LoadSource("stream.cu", kStreamTasks));
  const TaskId record = IdOf(*runtime, "record");
  const TaskId chain = IdOf(*runtime, "chain");
  const uint32_t n = static_cast<uint32_t>(Scaled(100000));
  const uint32_t chain_steps = static_cast<uint32_t>(Scaled(200000));
  const uint32_t squares = 1000;
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, n, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, n, 0);
  CUdeviceptr steps = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  CUdeviceptr square_out = PoisonedBuffer<uint32_t>(*runtime, squares, kPoison);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<GroupId> group = runtime->CreateGroup();
  ASSERT_TRUE(group.ok());

  // A chain long enough to be running during the load.
  absl::StatusOr<TaskHandle> chain_handle =
      runtime->Submit(chain, ChainArgs{chain_steps, DevicePointer<uint32_t>(steps)});
  ASSERT_TRUE(chain_handle.ok()) << chain_handle.status();
  // Records flow from another thread before, during and after the load.
  BackgroundSubmitter submitter(*runtime, record, *group, 0, n, 1000, out, hits);
  while (Pauses(*runtime) == 0 && !submitter.done()) {
    // Load once some records went through.
    absl::StatusOr<RuntimeStats> stats = runtime->Stats();
    ASSERT_TRUE(stats.ok());
    if (stats->tasks[record - 1].completed > n / 4 || submitter.done()) break;
  }
  absl::StatusOr<LoadReport> report = runtime->LoadSource("square.cu", kSquareTask);
  const bool loaded_while_submitting = !submitter.done();
  GROSR_ASSERT_OK(submitter.Join());
  ASSERT_TRUE(report.ok()) << report.status();
  EXPECT_TRUE(report->paused);
  EXPECT_GT(report->pause_time, absl::ZeroDuration());
  std::printf("load while running: compile %s, link %s, pause %s (%s)\n",
              absl::FormatDuration(report->compile_time).c_str(),
              absl::FormatDuration(report->link_time).c_str(),
              absl::FormatDuration(report->pause_time).c_str(),
              loaded_while_submitting ? "records still being submitted" : "after submission");

  const TaskId square = IdOf(*runtime, "square");
  std::vector<TaskRequest> requests;
  for (uint32_t i = 0; i < squares; ++i) {
    requests.push_back(
        TaskRequest::Make(square, SquareArgs{i, DevicePointer<uint32_t>(square_out)}));
  }
  GROSR_ASSERT_OK(runtime->SubmitBatch(requests, *group));
  GROSR_ASSERT_OK(runtime->WaitGroup(*group, absl::Seconds(60)));
  GROSR_ASSERT_OK(runtime->Wait(*chain_handle, absl::Seconds(60)));

  std::vector<uint32_t> values = ReadBuffer<uint32_t>(*runtime, out, n);
  std::vector<uint32_t> counts = ReadBuffer<uint32_t>(*runtime, hits, n);
  uint64_t wrong = 0, not_once = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (values[i] != i * 3u + 7u) ++wrong;
    if (counts[i] != 1) ++not_once;
  }
  EXPECT_EQ(wrong, 0u) << "records whose output differs from the CPU reference";
  EXPECT_EQ(not_once, 0u) << "records that did not run exactly once";
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, steps, 1)[0], chain_steps)
      << "a continuation chain lost or repeated steps across the pause";
  std::vector<uint32_t> squared = ReadBuffer<uint32_t>(*runtime, square_out, squares);
  for (uint32_t i = 0; i < squares; ++i) ASSERT_EQ(squared[i], i * i) << "square " << i;
  absl::StatusOr<RuntimeStats> stats = runtime->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->pauses, 1u);
  EXPECT_EQ(stats->tasks[record - 1].completed, n);
  GROSR_ASSERT_OK(runtime->Shutdown());
}

TEST(GpuHotLoad, ReplacedTaskSwitchesToTheNewCodeUnderLoad) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  GROSR_ASSERT_OK(runtime->LoadSource("version.cu", VersionSource(1)));
  const TaskId version = IdOf(*runtime, "version");
  const uint32_t n = static_cast<uint32_t>(Scaled(100000));
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, n, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, n, 0);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<GroupId> group = runtime->CreateGroup();
  ASSERT_TRUE(group.ok());

  // A first part runs on version 1 for sure.
  const uint32_t first_part = std::max<uint32_t>(n / 10, 1);
  GROSR_ASSERT_OK(SubmitIndexed(*runtime, version, *group, 0, first_part, out, hits));
  GROSR_ASSERT_OK(runtime->WaitGroup(*group, absl::Seconds(60)));
  std::atomic<bool> loaded{false};
  std::atomic<uint32_t> first_after_load{n};
  BackgroundSubmitter submitter(*runtime, version, *group, first_part, n, 500, out, hits,
                                [&](uint32_t first) {
                                  if (loaded && first_after_load == n) first_after_load = first;
                                });
  absl::StatusOr<LoadReport> report = runtime->LoadSource("version.cu", VersionSource(2));
  loaded = true;
  GROSR_ASSERT_OK(submitter.Join());
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_EQ(report->replaced, std::vector<std::string>{"version"});
  ASSERT_EQ(report->tasks.size(), 1u);
  EXPECT_EQ(report->tasks[0].id, version) << "a replaced task keeps its id";
  GROSR_ASSERT_OK(runtime->WaitGroup(*group, absl::Seconds(60)));

  std::vector<uint32_t> values = ReadBuffer<uint32_t>(*runtime, out, n);
  std::vector<uint32_t> counts = ReadBuffer<uint32_t>(*runtime, hits, n);
  uint64_t ones = 0, twos = 0, other = 0, not_once = 0, old_after_load = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (values[i] == 1) ++ones; else if (values[i] == 2) ++twos; else ++other;
    if (counts[i] != 1) ++not_once;
    if (i >= first_after_load && values[i] != 2) ++old_after_load;
  }
  EXPECT_EQ(other, 0u) << "tasks that saw neither version (a half-installed entry?)";
  EXPECT_EQ(not_once, 0u);
  EXPECT_GE(ones, first_part);
  EXPECT_EQ(old_after_load, 0u) << "submitted after Load returned, yet ran the old code";
  if (first_after_load < n) {
    EXPECT_GT(twos, 0u);
  }
  absl::StatusOr<RuntimeStats> stats = runtime->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->modules_loaded, 1u) << "the old version's module is unloaded";
  EXPECT_EQ(stats->modules_unloaded, 1u);
  GROSR_ASSERT_OK(runtime->Shutdown());
}

TEST(GpuHotLoad, HundredConsecutiveLoadsLeakNoModuleOrMemory) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  GROSR_ASSERT_OK(runtime->LoadSource("version.cu", VersionSource(0)));
  const TaskId version = IdOf(*runtime, "version");
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, 1, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  const int loads = static_cast<int>(std::max<uint64_t>(Scaled(100), 4));
  uint64_t free_after_warmup = 0;
  absl::Duration longest_pause;
  for (int i = 1; i <= loads; ++i) {
    const uint32_t v = 1 + i % 2;  // alternates 2, 1, 2, ...: the cache serves it
    absl::StatusOr<LoadReport> report = runtime->LoadSource("version.cu", VersionSource(v));
    ASSERT_TRUE(report.ok()) << "load " << i << ": " << report.status();
    longest_pause = std::max(longest_pause, report->pause_time);
    IndexArgs args{0, DevicePointer<uint32_t>(out), DevicePointer<uint32_t>(hits)};
    absl::StatusOr<TaskHandle> handle = runtime->Submit(version, args);
    ASSERT_TRUE(handle.ok());
    GROSR_ASSERT_OK(runtime->Wait(*handle, absl::Seconds(10)));
    ASSERT_EQ(ReadBuffer<uint32_t>(*runtime, out, 1)[0], v) << "load " << i;
    if (i == 2) free_after_warmup = runtime->Stats()->device_free_bytes;
  }
  absl::StatusOr<RuntimeStats> stats = runtime->Stats();
  ASSERT_TRUE(stats.ok());
  EXPECT_EQ(stats->pauses, static_cast<uint64_t>(loads));
  EXPECT_EQ(stats->modules_loaded, 1u);
  EXPECT_EQ(stats->modules_unloaded, static_cast<uint64_t>(loads));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, hits, 1)[0], static_cast<uint32_t>(loads));
  const int64_t lost = static_cast<int64_t>(free_after_warmup) -
                       static_cast<int64_t>(stats->device_free_bytes);
  EXPECT_LT(lost, 4 << 20) << "device memory lost over " << loads << " loads";
  std::printf("%d loads: longest pause %s, device memory change %lld bytes\n", loads,
              absl::FormatDuration(longest_pause).c_str(), static_cast<long long>(lost));
  GROSR_ASSERT_OK(runtime->Shutdown());
}

TEST(GpuHotLoad, BadSourcesWhileRunningFailWithoutAPause) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  GROSR_ASSERT_OK(runtime->LoadSource("version.cu", VersionSource(1)));
  const TaskId version = IdOf(*runtime, "version");
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, 1, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());

  absl::StatusOr<LoadReport> broken = runtime->LoadSource(
      "broken.cu", "#include <grosr/task.h>\nGROSR_TASK(version, grosr::NoArgs) {\n  undeclared();\n}\n");
  ASSERT_FALSE(broken.ok());
  EXPECT_TRUE(absl::StrContains(broken.status().message(), "broken.cu(3)") ||
              absl::StrContains(broken.status().message(), "broken.cu:3"))
      << broken.status();
  absl::StatusOr<LoadReport> constant = runtime->LoadSource(
      "constant.cu",
      "#include <grosr/task.h>\n__constant__ unsigned table_c[4];\n"
      "GROSR_TASK(uses_constant, grosr::NoArgs) { if (table_c[0]) ctx.fail(1); }\n");
  ASSERT_FALSE(constant.ok());
  EXPECT_TRUE(absl::StrContains(constant.status().message(), "table_c")) << constant.status();
  EXPECT_EQ(Pauses(*runtime), 0u) << "a bad source paused the scheduler";

  // The previous version keeps serving.
  absl::StatusOr<TaskHandle> handle = runtime->Submit(
      version, IndexArgs{0, DevicePointer<uint32_t>(out), DevicePointer<uint32_t>(hits)});
  ASSERT_TRUE(handle.ok());
  GROSR_ASSERT_OK(runtime->Wait(*handle, absl::Seconds(10)));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, out, 1)[0], 1u);
  GROSR_ASSERT_OK(runtime->health());
  GROSR_ASSERT_OK(runtime->Shutdown());
}

TEST(GpuHotLoad, LoadsRequestedTogetherShareOnePause) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  GROSR_ASSERT_OK(runtime->LoadSource("stream.cu", kStreamTasks));
  CUdeviceptr square_out = PoisonedBuffer<uint32_t>(*runtime, 4, kPoison);
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, 1, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  std::vector<TaskSource> sources = {{"square.cu", kSquareTask},
                                     {"version.cu", VersionSource(5)},
                                     {"broken.cu", "this is not CUDA"}};
  std::vector<absl::StatusOr<LoadReport>> reports = runtime->LoadSources(sources);
  ASSERT_EQ(reports.size(), 3u);
  ASSERT_TRUE(reports[0].ok()) << reports[0].status();
  ASSERT_TRUE(reports[1].ok()) << reports[1].status();
  EXPECT_FALSE(reports[2].ok());
  EXPECT_EQ(reports[0]->loads_in_pause, 2);
  EXPECT_EQ(reports[0]->pause_time, reports[1]->pause_time);
  EXPECT_EQ(Pauses(*runtime), 1u);
  absl::StatusOr<TaskHandle> a = runtime->Submit(
      IdOf(*runtime, "square"), SquareArgs{3, DevicePointer<uint32_t>(square_out)});
  absl::StatusOr<TaskHandle> b = runtime->Submit(
      IdOf(*runtime, "version"),
      IndexArgs{0, DevicePointer<uint32_t>(out), DevicePointer<uint32_t>(hits)});
  ASSERT_TRUE(a.ok() && b.ok());
  GROSR_ASSERT_OK(runtime->Wait(*a, absl::Seconds(10)));
  GROSR_ASSERT_OK(runtime->Wait(*b, absl::Seconds(10)));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, square_out, 4)[3], 9u);
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, out, 1)[0], 5u);
  GROSR_ASSERT_OK(runtime->Shutdown());
}

TEST(GpuHotLoad, APauseBlockedByAHungTaskIsUndoneAndServingGoesOn) {
  RuntimeOptions options;
  options.pause_timeout = absl::Milliseconds(300);
  GROSR_RUNTIME_OR_SKIP(runtime, options);
  GROSR_ASSERT_OK(runtime->LoadSource("stream.cu", kStreamTasks));
  const TaskId record = IdOf(*runtime, "record");
  const TaskId spin = IdOf(*runtime, "spin_until");
  CUdeviceptr flag = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, 1, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  testing::ReleaseOnExit release(*runtime, flag);
  absl::StatusOr<TaskHandle> spinning =
      runtime->Submit(spin, SpinArgs{DevicePointer<uint32_t>(flag)});
  ASSERT_TRUE(spinning.ok());
  absl::SleepFor(absl::Milliseconds(20));  // let it start

  absl::StatusOr<LoadReport> report = runtime->LoadSource("square.cu", kSquareTask);
  ASSERT_FALSE(report.ok());
  EXPECT_TRUE(absl::IsUnavailable(report.status())) << report.status();
  EXPECT_TRUE(absl::StrContains(report.status().message(), "could not pause")) << report.status();
  EXPECT_FALSE(runtime->Find("square").ok());

  // Still serving, with the spinning task still holding its warp.
  absl::StatusOr<TaskHandle> handle = runtime->Submit(
      record, IndexArgs{0, DevicePointer<uint32_t>(out), DevicePointer<uint32_t>(hits)});
  ASSERT_TRUE(handle.ok());
  GROSR_ASSERT_OK(runtime->Wait(*handle, absl::Seconds(10)));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, out, 1)[0], 7u);

  uint32_t one = 1;
  GROSR_ASSERT_OK(runtime->CopyToDevice(flag, &one, sizeof(one)));
  GROSR_ASSERT_OK(runtime->Wait(*spinning, absl::Seconds(10)));
  absl::StatusOr<LoadReport> again = runtime->LoadSource("square.cu", kSquareTask);
  ASSERT_TRUE(again.ok()) << again.status();
  EXPECT_TRUE(again->paused);
  GROSR_ASSERT_OK(runtime->Shutdown());
}

// A small device queue stays full while records flood in and code loads
// again and again: a parked warp may hold the slot an ingest would need, so
// the control warp must not ingest while workers park. Every record runs
// exactly once, on one of the versions.
TEST(GpuHotLoad, LoadsWhileASmallQueueIsFullLoseNothing) {
  RuntimeOptions options;
  options.queue_capacity = 256;
  GROSR_RUNTIME_OR_SKIP(runtime, options);
  GROSR_ASSERT_OK(runtime->LoadSource("version.cu", VersionSource(1)));
  const TaskId version = IdOf(*runtime, "version");
  const uint32_t n = static_cast<uint32_t>(Scaled(200000));
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, n, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, n, 0);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<GroupId> group = runtime->CreateGroup();
  ASSERT_TRUE(group.ok());
  BackgroundSubmitter submitter(*runtime, version, *group, 0, n, 2000, out, hits);
  int loads = 0;
  for (; loads < 8 && (loads < 2 || !submitter.done()); ++loads) {
    absl::StatusOr<LoadReport> report =
        runtime->LoadSource("version.cu", VersionSource(2 + loads % 2));
    EXPECT_TRUE(report.ok()) << "load " << loads << ": " << report.status();
    if (!report.ok()) break;
  }
  GROSR_ASSERT_OK(submitter.Join());
  GROSR_ASSERT_OK(runtime->WaitGroup(*group, absl::Seconds(120)));
  std::vector<uint32_t> values = ReadBuffer<uint32_t>(*runtime, out, n);
  std::vector<uint32_t> counts = ReadBuffer<uint32_t>(*runtime, hits, n);
  uint64_t not_once = 0, bad_value = 0;
  for (uint32_t i = 0; i < n; ++i) {
    if (counts[i] != 1) ++not_once;
    if (values[i] < 1 || values[i] > 3) ++bad_value;
  }
  EXPECT_EQ(not_once, 0u);
  EXPECT_EQ(bad_value, 0u);
  EXPECT_EQ(Pauses(*runtime), static_cast<uint64_t>(loads));
  std::printf("%u records through a 256-slot queue across %d loads\n", n, loads);
  GROSR_ASSERT_OK(runtime->Shutdown());
}

void WriteFile(const std::string& path, const std::string& text) {
  const std::string temp = path + ".tmp";  // rename-over, as editors save
  std::ofstream(temp) << text;
  ASSERT_EQ(std::rename(temp.c_str(), path.c_str()), 0);
}

// Polls `done` up to 20 s (a debounce, a compile and a pause on a loaded CI
// machine take well under that).
template <typename Done>
bool Eventually(Done done) {
  const absl::Time deadline = absl::Now() + absl::Seconds(20);
  while (absl::Now() < deadline) {
    if (done()) return true;
    absl::SleepFor(absl::Milliseconds(20));
  }
  return done();
}

TEST(GpuHotLoad, WatchedDirectoryLoadsNewAndChangedFiles) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/grosr_watch_XXXXXX");
  ASSERT_NE(mkdtemp(pattern.data()), nullptr);
  const std::string dir = pattern;
  WriteFile(dir + "/version.cu", VersionSource(1));
  CUdeviceptr out = PoisonedBuffer<uint32_t>(*runtime, 4, kPoison);
  CUdeviceptr hits = PoisonedBuffer<uint32_t>(*runtime, 4, 0);
  GROSR_ASSERT_OK(runtime->Start());
  std::vector<std::string> log;
  absl::Mutex log_mu;
  TaskDirectory::Options options;
  options.log = [&](const std::string& line) {
    absl::MutexLock lock(&log_mu);
    log.push_back(line);
  };
  absl::StatusOr<std::unique_ptr<TaskDirectory>> served =
      TaskDirectory::Serve(*runtime, dir, options);
  ASSERT_TRUE(served.ok()) << served.status();
  ASSERT_EQ((*served)->initial().loaded.size(), 1u);
  const TaskId version = IdOf(*runtime, "version");
  auto run_version = [&](uint32_t index) -> uint32_t {
    absl::StatusOr<TaskHandle> handle = runtime->Submit(
        version, IndexArgs{index, DevicePointer<uint32_t>(out), DevicePointer<uint32_t>(hits)});
    EXPECT_TRUE(handle.ok());
    EXPECT_TRUE(runtime->Wait(*handle, absl::Seconds(10)).ok());
    return ReadBuffer<uint32_t>(*runtime, out, 4)[index];
  };
  EXPECT_EQ(run_version(0), 1u);

  WriteFile(dir + "/square.cu", kSquareTask);  // a new file: a new task
  EXPECT_TRUE(Eventually([&] { return runtime->Find("square").ok(); }));
  WriteFile(dir + "/version.cu", VersionSource(2));  // a changed file: new code
  EXPECT_TRUE(Eventually([&] { return (*served)->loads() >= 2; }));
  EXPECT_EQ(run_version(1), 2u);
  const uint64_t pauses_before_broken = runtime->Stats()->pauses;
  WriteFile(dir + "/broken.cu", "not CUDA at all");  // fails, logged, nothing paused
  EXPECT_TRUE(Eventually([&] { return (*served)->loads() >= 3; }));
  EXPECT_EQ(runtime->Stats()->pauses, pauses_before_broken) << "the broken file paused";
  ASSERT_EQ(std::remove((dir + "/version.cu").c_str()), 0);  // stays loaded
  EXPECT_TRUE(Eventually([&] {
    absl::MutexLock lock(&log_mu);
    return !log.empty() && absl::StrContains(log.back(), "removed");
  }));
  EXPECT_EQ(run_version(2), 2u);
  (*served)->Stop();
  absl::MutexLock lock(&log_mu);
  std::string all;
  for (const std::string& line : log) all += line + "\n";
  std::printf("%s", all.c_str());
  EXPECT_TRUE(absl::StrContains(all, "replacing version")) << all;
  EXPECT_TRUE(absl::StrContains(all, "pause ")) << all;
  EXPECT_TRUE(absl::StrContains(all, "load " + dir + "/broken.cu failed")) << all;
  // The initial load (the runtime was already running), square, version 2.
  EXPECT_EQ(runtime->Stats()->pauses, 3u);
}

// A file whose load could not pause the scheduler (a task that does not
// return) is retried until it loads, with no further save.
TEST(GpuHotLoad, WatchedFileBlockedByAHungTaskIsRetried) {
  RuntimeOptions runtime_options;
  runtime_options.pause_timeout = absl::Milliseconds(300);
  GROSR_RUNTIME_OR_SKIP(runtime, runtime_options);
  GROSR_ASSERT_OK(runtime->LoadSource("stream.cu", kStreamTasks));
  const char* tmp = std::getenv("TEST_TMPDIR");
  std::string pattern = absl::StrCat(tmp != nullptr ? tmp : "/tmp", "/grosr_retry_XXXXXX");
  ASSERT_NE(mkdtemp(pattern.data()), nullptr);
  const std::string dir = pattern;
  CUdeviceptr flag = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  CUdeviceptr square_out = PoisonedBuffer<uint32_t>(*runtime, 8, kPoison);
  GROSR_ASSERT_OK(runtime->Start());
  testing::ReleaseOnExit release(*runtime, flag);
  absl::StatusOr<TaskHandle> spinning =
      runtime->Submit(IdOf(*runtime, "spin_until"), SpinArgs{DevicePointer<uint32_t>(flag)});
  ASSERT_TRUE(spinning.ok());
  std::vector<std::string> log;
  absl::Mutex log_mu;
  auto logged = [&](const std::string& text) {
    absl::MutexLock lock(&log_mu);
    for (const std::string& line : log) {
      if (absl::StrContains(line, text)) return true;
    }
    return false;
  };
  TaskDirectory::Options options;
  options.retry_delay = absl::Milliseconds(200);
  options.log = [&](const std::string& line) {
    absl::MutexLock lock(&log_mu);
    log.push_back(line);
  };
  absl::StatusOr<std::unique_ptr<TaskDirectory>> served =
      TaskDirectory::Serve(*runtime, dir, options);
  ASSERT_TRUE(served.ok()) << served.status();
  WriteFile(dir + "/square.cu", kSquareTask);
  EXPECT_TRUE(Eventually([&] { return logged("will be retried"); }));
  EXPECT_FALSE(runtime->Find("square").ok()) << "loaded while a task held a warp?";
  uint32_t one = 1;
  GROSR_ASSERT_OK(runtime->CopyToDevice(flag, &one, sizeof(one)));
  GROSR_ASSERT_OK(runtime->Wait(*spinning, absl::Seconds(10)));
  ASSERT_TRUE(Eventually([&] { return runtime->Find("square").ok(); }))
      << "the blocked load was not retried";
  EXPECT_TRUE(logged("retrying " + dir + "/square.cu"));
  (*served)->Stop();
  absl::StatusOr<TaskHandle> square = runtime->Submit(
      IdOf(*runtime, "square"), SquareArgs{5, DevicePointer<uint32_t>(square_out)});
  ASSERT_TRUE(square.ok());
  GROSR_ASSERT_OK(runtime->Wait(*square, absl::Seconds(10)));
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, square_out, 8)[5], 25u);
  GROSR_ASSERT_OK(runtime->Shutdown());
}

// A chain's ticket reports its first failure even when a pause (the kernel
// exits and relaunches) lands between the failing step and the chain's end:
// the chain's status travels with its saved continuation.
TEST(GpuHotLoad, AChainThatFailedBeforeAPauseStillReportsTheFailure) {
  GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
  GROSR_ASSERT_OK(runtime->LoadSource("failing_chain.cu", kFailingChainTask));
  const TaskId chain = IdOf(*runtime, "failing_chain");
  const uint32_t n = static_cast<uint32_t>(std::max<uint64_t>(Scaled(100000), 5000));
  const uint32_t fail_at = n - 10;  // the 11th step fails
  CUdeviceptr steps = PoisonedBuffer<uint32_t>(*runtime, 1, 0);
  GROSR_ASSERT_OK(runtime->Start());
  absl::StatusOr<TaskHandle> handle = runtime->Submit(
      chain, FailingChainArgs{n, fail_at, DevicePointer<uint32_t>(steps)});
  ASSERT_TRUE(handle.ok()) << handle.status();
  ASSERT_TRUE(Eventually([&] { return ReadBuffer<uint32_t>(*runtime, steps, 1)[0] > 20; }))
      << "the chain did not get past its failing step";
  absl::StatusOr<LoadReport> report = runtime->LoadSource("square.cu", kSquareTask);
  ASSERT_TRUE(report.ok()) << report.status();
  ASSERT_TRUE(report->paused);
  const uint32_t after_pause = ReadBuffer<uint32_t>(*runtime, steps, 1)[0];
  ASSERT_LT(after_pause, n) << "the chain ended before the pause; lengthen it";
  absl::Status outcome = runtime->Wait(*handle, absl::Seconds(120));
  EXPECT_TRUE(absl::IsAborted(outcome)) << outcome;
  EXPECT_TRUE(absl::StrContains(outcome.message(), "code 77")) << outcome;
  EXPECT_EQ(ReadBuffer<uint32_t>(*runtime, steps, 1)[0], n) << "every step ran once";
  std::printf("pause after step %u of %u\n", after_pause, n);
  GROSR_ASSERT_OK(runtime->Shutdown());
}

}  // namespace
}  // namespace grosr
