// The benchmark suite: GROSR against CUDA's own mechanisms, on the same GPU,
// in one process. Prints a table and writes JSON (--json FILE). Built as
// three programs that differ only in what runs by default (--only):
//
//   bazel run -c opt //bench:grosr_bench -- --json $PWD/r.json   # everything
//   bazel run -c opt //bench:pingpong                           # experiment A
//   bazel run -c opt //bench:throughput                         # experiment B
//
// A, dependent dispatch latency: an empty launch + synchronize, dependent
// kernels in one stream, the same chain as a static CUDA graph, CUDA's
// dynamic mechanisms (cuda_dynamic_baselines.h), then GROSR's host ping-pong
// and GPU-side chains (continuation on the warp, spawn through the queue),
// with per-step distributions from GPU time stamps. B, throughput of tiny
// tasks: throughput.h. Then hot-loading (pause as a task stream sees it).
// CUDA's baselines run before any Runtime exists (the persistent kernel
// would block module loads and share the GPU). Every GROSR run checks its
// result (a counter, node count or CPU reference).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "bench/bench_support.h"
#include "bench/cuda_dynamic_baselines.h"
#include "bench/run_info.h"
#include "bench/throughput.h"
#include "host/cuda_resources.h"
#include "host/runtime.h"
#include "jit/compiler.h"
#include "jit/cuda_driver.h"

namespace grosr {
namespace {

#define BENCH_CHECK(expr) CheckOrExit((expr), #expr)

// Marks `r` as experiment A with the host's CPU time and synchronizations
// per step.
Result& ExperimentA(Result& r, double cpu_us_per_step, double syncs_per_step) {
  r.experiment = "A";
  r.cpu_us_per_item = cpu_us_per_step;
  r.syncs_per_item = syncs_per_step;
  return r;
}


// ---------------------------------------------------------------------------
// Baselines: plain CUDA on the driver API.
// ---------------------------------------------------------------------------

constexpr char kBaselineKernels[] = R"grosr_src(
extern "C" __global__ void empty_kernel() {}
extern "C" __global__ void step_kernel(unsigned* counter) {
  if (threadIdx.x == 0) *counter += 1;
}
)grosr_src";

struct BaselinePlan {
  int launches = 10000;
  bool static_baselines = true;   // launch+sync, stream chain, graph chain
  bool dynamic_baselines = true;  // WHILE node, tail relaunch, CDP2, pinned round trip
  std::vector<std::string> only_dynamic;
};

void RunBaselines(const CudaDriver& cu, const Compiler& compiler, const std::string& arch,
                  const BaselinePlan& plan, std::vector<Result>* results) {
  const int launches = plan.launches;
  CUdevice device;
  CUcontext context;
  BENCH_CHECK(cu.Check(cu.cuDeviceGet(&device, 0), "cuDeviceGet"));
  BENCH_CHECK(cu.Check(cu.cuDevicePrimaryCtxRetain(&context, device), "retain"));
  BENCH_CHECK(cu.Check(cu.cuCtxSetCurrent(context), "cuCtxSetCurrent"));
  if (plan.static_baselines) {
    CompileOptions options;
    options.arch = arch;
    LinkedImage image =
        Value(compiler.CompileAndLink("baseline.cu", kBaselineKernels, options), "build baselines");
    Module module = Value(Module::Load(cu, image.cubin), "load");
    CUfunction empty, step;
    BENCH_CHECK(cu.Check(cu.cuModuleGetFunction(&empty, module.get(), "empty_kernel"), "fn"));
    BENCH_CHECK(cu.Check(cu.cuModuleGetFunction(&step, module.get(), "step_kernel"), "fn"));
    Stream stream = Value(Stream::Create(cu), "stream");
    DeviceMemory counter = Value(DeviceMemory::Allocate(cu, 4), "alloc");
    CUdeviceptr counter_ptr = counter.get();
    void* step_params[] = {&counter_ptr};

    // Launch + synchronize: the host's round trip per data-dependent step.
    std::vector<double> us;
    double cpu0 = 0;
    for (int i = 0; i < launches + 100; ++i) {
      if (i == 100) cpu0 = ProcessCpuMicros();
      auto start = Clock::now();
      cu.cuLaunchKernel(empty, 1, 1, 1, 32, 1, 1, 0, stream.get(), nullptr, nullptr);
      cu.cuStreamSynchronize(stream.get());
      if (i >= 100) us.push_back(MicrosSince(start));
    }
    Result launch_sync = Summarize("cuda_launch_sync", us,
                                   "empty kernel: cuLaunchKernel + cuStreamSynchronize");
    results->push_back(ExperimentA(launch_sync, (ProcessCpuMicros() - cpu0) / launches, 1));

    // Dependent kernels in one stream, one synchronize at the end.
    const int chain = 10000;
    // On the stream: the legacy stream does not order with a non-blocking one.
    cu.cuMemsetD32Async(counter_ptr, 0, 1, stream.get());
    us.clear();
    cpu0 = ProcessCpuMicros();
    for (int rep = 0; rep < 5; ++rep) {
      auto start = Clock::now();
      for (int i = 0; i < chain; ++i) {
        cu.cuLaunchKernel(step, 1, 1, 1, 32, 1, 1, 0, stream.get(), step_params, nullptr);
      }
      cu.cuStreamSynchronize(stream.get());
      us.push_back(MicrosSince(start) / chain);
    }
    Result stream_chain = Summarize(
        "cuda_stream_chain", us, absl::StrCat(chain, " dependent kernels, one stream, per kernel"));
    results->push_back(
        ExperimentA(stream_chain, (ProcessCpuMicros() - cpu0) / (5.0 * chain), 1.0 / chain));

    // The same chain captured as a static graph (cannot branch on data).
    const int nodes = 1000;
    CUgraph graph;
    BENCH_CHECK(cu.Check(cu.cuStreamBeginCapture(stream.get(), CU_STREAM_CAPTURE_MODE_GLOBAL),
                         "capture"));
    for (int i = 0; i < nodes; ++i) {
      cu.cuLaunchKernel(step, 1, 1, 1, 32, 1, 1, 0, stream.get(), step_params, nullptr);
    }
    BENCH_CHECK(cu.Check(cu.cuStreamEndCapture(stream.get(), &graph), "end capture"));
    CUgraphExec exec;
    auto instantiate_start = Clock::now();
    BENCH_CHECK(cu.Check(cu.cuGraphInstantiateWithFlags(&exec, graph, 0), "instantiate"));
    const double instantiate_us = MicrosSince(instantiate_start);
    cu.cuGraphUpload(exec, stream.get());
    cu.cuGraphLaunch(exec, stream.get());
    cu.cuStreamSynchronize(stream.get());
    us.clear();
    cpu0 = ProcessCpuMicros();
    for (int rep = 0; rep < 20; ++rep) {
      auto start = Clock::now();
      cu.cuGraphLaunch(exec, stream.get());
      cu.cuStreamSynchronize(stream.get());
      us.push_back(MicrosSince(start) / nodes);
    }
    Result graph_chain = Summarize(
        "cuda_graph_chain", us,
        absl::StrFormat("%d-node captured graph, per node (instantiate %.1f ms)", nodes,
                        instantiate_us / 1000));
    results->push_back(
        ExperimentA(graph_chain, (ProcessCpuMicros() - cpu0) / (20.0 * nodes), 1.0 / nodes));
    uint32_t count = 0;
    cu.cuMemcpyDtoH(&count, counter_ptr, 4);
    const uint32_t expected = 5u * chain + 21u * nodes;
    if (count != expected) {
      std::fprintf(stderr, "grosr_bench: baseline counter %u, expected %u\n", count, expected);
      std::exit(1);
    }
    cu.cuGraphExecDestroy(exec);
    cu.cuGraphDestroy(graph);
  }
  // CUDA's own dynamic control flow (the GPU decides each step) and the
  // host<->GPU floor for a ping-pong.
  DynamicBaselineOptions dynamic;
  dynamic.round_trips = launches;
  dynamic.only = plan.only_dynamic;
  std::vector<BaselineSeries> measured;
  if (plan.dynamic_baselines) measured = RunDynamicBaselines(cu, compiler, arch, dynamic);
  for (BaselineSeries& series : measured) {
    if (absl::IsCancelled(series.status)) continue;  // not selected
    if (!series.status.ok()) {
      std::fprintf(stderr, "grosr_bench: baseline %s not measured: %s\n", series.name.c_str(),
                   std::string(series.status.message()).c_str());
      continue;
    }
    Result r = Summarize(series.name, std::move(series.us_per_step), series.note);
    results->push_back(ExperimentA(r, series.cpu_us_per_step, series.syncs_per_step));
  }
  cu.cuDevicePrimaryCtxRelease(device);
}

// ---------------------------------------------------------------------------
// GROSR
// ---------------------------------------------------------------------------

constexpr char kBenchTasks[] = R"grosr_src(
#include <grosr/task.h>

GROSR_TASK(noop, grosr::NoArgs) {}

struct StepArgs { unsigned left; unsigned* steps; };
// Dependent chain that stays on its warp.
GROSR_TASK(chain_then, StepArgs) {
  if (ctx.lane() == 0) *args.steps += 1;
  if (args.left > 1) ctx.then(ctx.self(), StepArgs{args.left - 1, args.steps});
}
// The same chain with no memory traffic: the count travels in the
// arguments and only the last step stores it. Measures dispatch alone.
struct PureArgs { unsigned left; unsigned done; unsigned* steps; };
GROSR_TASK(chain_pure, PureArgs) {
  if (args.left > 1) {
    ctx.then(ctx.self(), PureArgs{args.left - 1, args.done + 1, args.steps});
  } else if (ctx.lane() == 0) {
    *args.steps = args.done + 1;
  }
}
// The pure chain alternating between two tasks: every step is a
// continuation to another task id, which the scheduler dispatches (a
// continuation to the task itself runs in place, in the task's own loop).
struct AltArgs { unsigned left; unsigned done; unsigned other; unsigned pad; unsigned* steps; };
#define GROSR_BENCH_ALT_BODY                                                           \
  if (args.left > 1) {                                                                 \
    ctx.then(args.other, AltArgs{args.left - 1, args.done + 1, ctx.self(), 0, args.steps}); \
  } else if (ctx.lane() == 0) {                                                        \
    *args.steps = args.done + 1;                                                       \
  }
GROSR_TASK(chain_alt_a, AltArgs) { GROSR_BENCH_ALT_BODY }
GROSR_TASK(chain_alt_b, AltArgs) { GROSR_BENCH_ALT_BODY }
// The pure chain, timed on the GPU: SM cycles and global-timer ns between
// the first and the last step (the chain stays on one warp, so one SM).
struct ClockArgs { unsigned left; unsigned pad; unsigned long long cycles0; unsigned long long ns0;
                   unsigned long long* out; };
__device__ unsigned long long GlobalNs() {
  unsigned long long t; asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t)); return t;
}
GROSR_TASK(chain_clock, ClockArgs) {
  ClockArgs next = args;
  if (args.cycles0 == 0) { next.cycles0 = clock64(); next.ns0 = GlobalNs(); }
  if (args.left > 1) {
    next.left = args.left - 1;
    ctx.then(ctx.self(), next);
  } else if (ctx.lane() == 0) {
    args.out[0] = clock64() - args.cycles0;
    args.out[1] = GlobalNs() - args.ns0;
  }
}
// Dependent chain through the device queue: each step is picked up by
// whichever warp gets there first, usually on another SM.
GROSR_TASK(chain_spawn, StepArgs) {
  if (ctx.lane() == 0) {
    atomicAdd(args.steps, 1u);
    if (args.left > 1) {
      while (!ctx.spawn(ctx.self(), StepArgs{args.left - 1, args.steps})) {}
    }
  }
}
// Per-step time stamps for the latency distributions: the then-chain in SM
// cycles (it stays on one warp, so on one SM's clock), the spawn chain in
// global-timer ns (its steps move between SMs).
struct StampArgs { unsigned step; unsigned steps; unsigned long long* stamps; };
GROSR_TASK(then_stamp, StampArgs) {
  if (ctx.lane() == 0) args.stamps[args.step] = clock64();
  if (args.step + 1 < args.steps) {
    ctx.then(ctx.self(), StampArgs{args.step + 1, args.steps, args.stamps});
  }
}
GROSR_TASK(spawn_stamp, StampArgs) {
  if (ctx.lane() == 0) {
    args.stamps[args.step] = GlobalNs();
    if (args.step + 1 < args.steps) {
      while (!ctx.spawn(ctx.self(), StampArgs{args.step + 1, args.steps, args.stamps})) {}
    }
  }
}
struct TreeArgs { unsigned depth; unsigned width; unsigned long long* nodes; };
GROSR_TASK(tree, TreeArgs) {
  if (ctx.lane() == 0) atomicAdd(args.nodes, 1ull);
  if (args.depth > 0 && ctx.lane() < args.width) {
    while (!ctx.spawn(ctx.self(), TreeArgs{args.depth - 1, args.width, args.nodes})) {}
  }
}
)grosr_src";

struct StepArgs {
  uint32_t left;
  uint32_t* steps;
};
struct PureArgs {
  uint32_t left, done;
  uint32_t* steps;
};
struct AltArgs {
  uint32_t left, done, other, pad;
  uint32_t* steps;
};
struct TreeArgs {
  uint32_t depth, width;
  uint64_t* nodes;
};
struct StampArgs {
  uint32_t step, steps;
  uint64_t* stamps;
};
struct ClockArgs {
  uint32_t left, pad;
  uint64_t cycles0, ns0;
  uint64_t* out;
};

// A task whose code is replaced: version N writes N.
std::string HotTaskSource(int version) {
  return absl::StrCat("#include <grosr/task.h>\nstruct HotArgs { unsigned* out; };\n",
                      "GROSR_TASK(hot, HotArgs) { if (ctx.lane() == 0) *args.out = ", version,
                      "u; }\n");
}

// Loads while a host stream of tiny tasks runs: the pause each load caused,
// as the stream saw it (the largest gap between its completions during the
// load), and the load's own split into compile, link and pause.
void RunHotLoad(Runtime& runtime, TaskId noop, std::vector<Result>* results) {
  // A cold load first: a source no cache has seen.
  LoadReport cold = Value(
      runtime.LoadSource("hot.cu", absl::StrCat(HotTaskSource(0), "// ", Clock::now().time_since_epoch().count(), "\n")),
      "cold load");
  // Both versions the loop alternates between are compiled once here: the
  // loop then measures cached loads.
  Value(runtime.LoadSource("hot.cu", HotTaskSource(2)), "warm load");
  Value(runtime.LoadSource("hot.cu", HotTaskSource(1)), "warm load");
  std::atomic<bool> stop{false};
  std::vector<double> completions;  // us since `origin`
  const Clock::time_point origin = Clock::now();
  std::thread stream([&] {
    while (!stop.load()) {
      TaskHandle h = Value(runtime.Submit(noop, NoArgs{}), "submit");
      BENCH_CHECK(runtime.Wait(h));
      completions.push_back(MicrosSince(origin));
    }
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  const int loads = 20;
  // The parts of each load's report that become a result each.
  struct Part {
    const char* name;
    absl::Duration LoadReport::*time;
    const char* note;
    std::vector<double> us;
  };
  std::vector<Part> parts = {
      {"grosr_load_pause", &LoadReport::pause_time,
       "kernel down per load: park, exit, module load, table, relaunch", {}},
      {"grosr_load_pause_park", &LoadReport::park_time,
       "part of the pause: every worker parked at a task boundary", {}},
      {"grosr_load_pause_exit", &LoadReport::exit_time,
       "part of the pause: parked kernel saved its work and exited", {}},
      {"grosr_load_pause_install", &LoadReport::install_time_in_pause,
       "part of the pause: cuModuleLoadData, table writes, old module unloaded", {}},
      {"grosr_load_pause_module", &LoadReport::install_time,
       "of install: cuModuleLoadData + symbol lookups + table writes", {}},
      {"grosr_load_pause_unload", &LoadReport::unload_time,
       "of install: cuModuleUnload of the replaced module", {}},
      {"grosr_load_pause_relaunch", &LoadReport::relaunch_time,
       "part of the pause: relaunch until the control warp runs", {}},
      {"grosr_load_compile_cached", &LoadReport::compile_time,
       "compile time of a cached task source", {}},
      {"grosr_load_link_cached", &LoadReport::link_time, "link time, cached", {}},
  };
  std::vector<std::pair<double, double>> windows;
  for (int i = 0; i < loads; ++i) {
    const double begin = MicrosSince(origin);
    LoadReport report = Value(runtime.LoadSource("hot.cu", HotTaskSource(1 + i % 2)), "hot load");
    windows.emplace_back(begin, MicrosSince(origin));
    for (Part& part : parts) part.us.push_back(absl::ToDoubleMicroseconds(report.*part.time));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  stop = true;
  stream.join();
  std::vector<double> gaps;
  for (const auto& [begin, end] : windows) {
    double widest = 0;
    for (size_t k = 1; k < completions.size(); ++k) {
      if (completions[k] < begin || completions[k - 1] > end) continue;
      widest = std::max(widest, completions[k] - completions[k - 1]);
    }
    gaps.push_back(widest);
  }
  const size_t first = results->size();
  results->push_back(Summarize("grosr_load_gap_seen", gaps,
                               "largest gap in a host Submit+Wait stream during a load (cached task)"));
  for (Part& part : parts) results->push_back(Summarize(part.name, std::move(part.us), part.note));
  results->push_back(Summarize(
      "grosr_load_cold", {absl::ToDoubleMicroseconds(cold.compile_time + cold.link_time)},
      absl::StrFormat("compile + link of an uncached task (compile %.1f ms, link %.1f ms)",
                      absl::ToDoubleMilliseconds(cold.compile_time),
                      absl::ToDoubleMilliseconds(cold.link_time))));
  for (size_t i = first; i < results->size(); ++i) (*results)[i].experiment = "load";
}

// The distribution of single dependent steps: a 10,000-step chain stamps
// each step; consecutive stamps give one latency sample each.
void RunStepDistributions(Runtime& runtime, double sm_mhz, std::vector<Result>* results) {
  const uint32_t steps = 10000;
  const CUdeviceptr stamps = Value(runtime.AllocateDeviceMemory(steps * 8), "stamps");
  auto run = [&](const char* task, double units_per_us, const char* name, const char* note) {
    const TaskId id = Value(runtime.Find(task), "find");
    TaskHandle h = Value(runtime.Submit(id, StampArgs{0, steps, reinterpret_cast<uint64_t*>(stamps)}),
                         "submit");
    BENCH_CHECK(runtime.Wait(h));
    BENCH_CHECK(runtime.Drain());
    std::vector<uint64_t> t(steps);
    BENCH_CHECK(runtime.CopyFromDevice(t.data(), stamps, steps * 8));
    std::vector<double> us;
    double finest = 1e30;
    for (uint32_t i = 1; i < steps; ++i) {
      const double d = static_cast<double>(t[i] - t[i - 1]);
      if (d > 0) finest = std::min(finest, d);
      us.push_back(d / units_per_us);
    }
    Result r = Summarize(name, us, absl::StrFormat("%s (finest stamp step %.0f)", note, finest));
    r.experiment = "A";
    results->push_back(r);
  };
  if (sm_mhz > 0) {
    run("then_stamp", sm_mhz, "grosr_then_step",
        "single ctx.then steps of a 10,000-step chain, SM clock64 stamps (cycles at the "
        "measured SM clock)");
  }
  run("spawn_stamp", 1000.0, "grosr_spawn_step",
      "single ctx.spawn steps of a 10,000-step chain, %globaltimer stamps in ns");
}

// Host-to-device and device-to-host copy bandwidth (GB/s, median of 5
// copies of 256 MiB between pinned and device memory) on a non-blocking
// stream of the primary context, the one the runtime uses. An idle
// runtime's control warp reads the submission ring over PCIe every round
// (32 whole slots, 4 KiB: SubmissionRing): compared before Start and while
// the runtime idles, this shows what that polling takes from the link.
// The buffers are made before Start and freed after Shutdown: cuMemFree
// waits for every kernel of the context, the persistent one included.
class CopyProbe {
 public:
  static constexpr size_t kBytes = size_t{256} << 20;
  CopyProbe() : cu_(*Value(CudaDriver::Get(), "driver")) {
    BENCH_CHECK(cu_.Check(cu_.cuDeviceGet(&device_, 0), "cuDeviceGet"));
    BENCH_CHECK(cu_.Check(cu_.cuDevicePrimaryCtxRetain(&context_, device_), "retain"));
    BENCH_CHECK(cu_.Check(cu_.cuCtxSetCurrent(context_), "cuCtxSetCurrent"));
    host_ = Value(PinnedMemory::Allocate(cu_, kBytes), "pinned");
    device_memory_ = Value(DeviceMemory::Allocate(cu_, kBytes), "device");
    stream_ = Value(Stream::Create(cu_), "stream");
  }
  ~CopyProbe() {
    stream_.Reset();
    device_memory_.Reset();
    host_.Reset();
    cu_.cuDevicePrimaryCtxRelease(device_);
  }
  // Median GB/s of 5 copies after a warm-up; allocates nothing.
  double MedianGBps(bool to_device) {
    BENCH_CHECK(cu_.Check(cu_.cuCtxSetCurrent(context_), "cuCtxSetCurrent"));
    std::vector<double> gbps;
    for (int rep = 0; rep < 6; ++rep) {
      auto start = Clock::now();
      if (to_device) {
        BENCH_CHECK(cu_.Check(
            cu_.cuMemcpyHtoDAsync(device_memory_.get(), host_.host(), kBytes, stream_.get()),
            "cuMemcpyHtoDAsync"));
      } else {
        BENCH_CHECK(cu_.Check(
            cu_.cuMemcpyDtoHAsync(host_.host(), device_memory_.get(), kBytes, stream_.get()),
            "cuMemcpyDtoHAsync"));
      }
      BENCH_CHECK(cu_.Check(cu_.cuStreamSynchronize(stream_.get()), "cuStreamSynchronize"));
      if (rep > 0) gbps.push_back(double(kBytes) / 1e3 / MicrosSince(start));
    }
    std::sort(gbps.begin(), gbps.end());
    return gbps[gbps.size() / 2];
  }

 private:
  const CudaDriver& cu_;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  PinnedMemory host_;
  DeviceMemory device_memory_;
  Stream stream_;
};

// `chains_only`: the dependent chains and their step distributions alone
// (a quick look at the dispatch path, e.g. to compare scheduler builds).
void RunGrosr(const RuntimeOptions& options, int pings, bool pingpong, bool hotload,
              bool chains_only, std::vector<Result>* results, DeviceInfo* info_out) {
  std::unique_ptr<Runtime> runtime = Value(Runtime::Create(options), "Runtime::Create");
  *info_out = runtime->device_info();
  Value(runtime->LoadSource("bench_tasks.cu", kBenchTasks), "load bench tasks");
  const TaskId noop = Value(runtime->Find("noop"), "find");
  const TaskId chain_then = Value(runtime->Find("chain_then"), "find");
  const TaskId chain_spawn = Value(runtime->Find("chain_spawn"), "find");
  const TaskId chain_pure = Value(runtime->Find("chain_pure"), "find");
  const TaskId tree = Value(runtime->Find("tree"), "find");
  CUdeviceptr counter = Value(runtime->AllocateDeviceMemory(16), "alloc");
  // Freed at the end of this function, after the runtime's Shutdown.
  std::unique_ptr<CopyProbe> copy_probe;
  double h2d_before = 0, d2h_before = 0;
  const bool probe_copies = pingpong && !chains_only;
  if (probe_copies) {
    copy_probe = std::make_unique<CopyProbe>();
    h2d_before = copy_probe->MedianGBps(true);
    d2h_before = copy_probe->MedianGBps(false);
  }
  BENCH_CHECK(runtime->Start());
  if (probe_copies) {
    const double h2d_idle = copy_probe->MedianGBps(true);
    const double d2h_idle = copy_probe->MedianGBps(false);
    const std::pair<const char*, double> copies[] = {
        {"pcie_h2d_copy_no_kernel", h2d_before}, {"pcie_h2d_copy_runtime_idle", h2d_idle},
        {"pcie_d2h_copy_no_kernel", d2h_before}, {"pcie_d2h_copy_runtime_idle", d2h_idle}};
    for (const auto& [name, gbps] : copies) {
      Result r = Single(name, "GB/s", gbps, 5,
                        absl::StrCat("256 MiB pinned <-> device copy, median of 5: before Start, "
                                     "or with the runtime started and idle (its control warp "
                                     "polling the ring; quiet polling after ",
                                     options.quiet_poll_after_rounds, " idle rounds)"));
      r.experiment = "extra";
      results->push_back(r);
    }
  }
  if (!pingpong) {
    if (hotload) RunHotLoad(*runtime, noop, results);
    Value(runtime->Shutdown(), "shutdown");
    return;
  }

  // Host ping-pong: submit an empty task, wait for its completion record.
  std::vector<double> us;
  double cpu0 = 0;
  for (int i = 0; i < (chains_only ? 0 : pings + 1000); ++i) {
    if (i == 1000) cpu0 = ProcessCpuMicros();
    auto start = Clock::now();
    TaskHandle h = Value(runtime->Submit(noop, NoArgs{}), "submit");
    BENCH_CHECK(runtime->Wait(h));
    if (i >= 1000) us.push_back(MicrosSince(start));
  }
  if (!chains_only) {
    Result ping = Summarize("grosr_pingpong", us,
                            "host Submit + Wait of an empty task (pinned ring, no launch)");
    results->push_back(ExperimentA(ping, (ProcessCpuMicros() - cpu0) / pings, 1));
  }

  // The argument shape each chain task takes.
  enum class Shape { kStep, kPure, kAlternating };
  const TaskId alt_b = Value(runtime->Find("chain_alt_b"), "find");
  auto run_chain = [&](TaskId task, uint32_t steps, const char* name, const char* note,
                       Shape shape = Shape::kStep) {
    std::vector<double> per_step, cpu;
    for (int rep = 0; rep < 5; ++rep) {
      uint32_t zero = 0;
      BENCH_CHECK(runtime->CopyToDevice(counter, &zero, 4));
      const double cpu_start = ProcessCpuMicros();
      auto start = Clock::now();
      auto* out = reinterpret_cast<uint32_t*>(counter);
      TaskHandle h = Value(shape == Shape::kPure ? runtime->Submit(task, PureArgs{steps, 0, out})
                           : shape == Shape::kAlternating
                               ? runtime->Submit(task, AltArgs{steps, 0, alt_b, 0, out})
                               : runtime->Submit(task, StepArgs{steps, out}),
                           "submit");
      BENCH_CHECK(runtime->Wait(h));
      BENCH_CHECK(runtime->Drain());
      per_step.push_back(MicrosSince(start) / steps);
      cpu.push_back((ProcessCpuMicros() - cpu_start) / steps);
      uint32_t done = 0;
      BENCH_CHECK(runtime->CopyFromDevice(&done, counter, 4));
      if (done != steps) {
        std::fprintf(stderr, "grosr_bench: %s ran %u of %u steps\n", name, done, steps);
        std::exit(1);
      }
    }
    std::sort(cpu.begin(), cpu.end());
    Result r = Summarize(name, per_step, note);
    results->push_back(ExperimentA(r, cpu[cpu.size() / 2], 2.0 / steps));  // Wait + Drain
  };
  run_chain(chain_then, 1000000, "grosr_chain_then",
            "1M dependent steps, ctx.then(self) (continuation on the warp, in place), per step");
  run_chain(chain_pure, 1000000, "grosr_chain_pure",
            "1M dependent steps, ctx.then(self), no memory traffic in the task, per step",
            Shape::kPure);
  run_chain(Value(runtime->Find("chain_alt_a"), "find"), 1000000, "grosr_chain_alternating",
            "1M dependent steps alternating between two tasks (ctx.then(other), each step "
            "dispatched by the scheduler on the warp), no memory traffic, per step",
            Shape::kAlternating);
  double sm_mhz = 0;
  {
    // Cycles per dependent step, measured on the SM, and the clock it ran at.
    const TaskId chain_clock = Value(runtime->Find("chain_clock"), "find");
    const uint32_t steps = 1000000;
    std::vector<double> cycles, mhz;
    for (int rep = 0; rep < 5; ++rep) {
      TaskHandle h = Value(runtime->Submit(chain_clock, ClockArgs{steps, 0, 0, 0,
                                                                  reinterpret_cast<uint64_t*>(counter)}),
                           "submit");
      BENCH_CHECK(runtime->Wait(h));
      uint64_t out[2] = {};
      BENCH_CHECK(runtime->CopyFromDevice(out, counter, sizeof(out)));
      cycles.push_back(static_cast<double>(out[0]) / (steps - 1));
      mhz.push_back(out[1] > 0 ? static_cast<double>(out[0]) * 1e3 / static_cast<double>(out[1]) : 0);
    }
    Result c = Summarize("grosr_chain_cycles", cycles,
                         "SM cycles per ctx.then(self) step (clock64 on the chain's SM)");
    c.unit = "cycles";
    c.experiment = "A";
    results->push_back(c);
    Result m = Summarize("grosr_chain_sm_mhz", mhz, "SM clock during the chain (cycles / globaltimer)");
    m.unit = "MHz";
    m.experiment = "A";
    results->push_back(m);
    sm_mhz = m.median;
  }
  run_chain(chain_spawn, 100000, "grosr_chain_spawn",
            "100k dependent steps, ctx.spawn through the device queue, per step");

  // A spawned tree: width 32, depth 4 = 1 + 32 + 1024 + 32768 + 1048576.
  if (!chains_only) {
    const uint64_t expected = 1 + 32 + 1024 + 32768 + 1048576;
    std::vector<double> rates;
    for (int rep = 0; rep < 5; ++rep) {
      uint64_t zero = 0;
      BENCH_CHECK(runtime->CopyToDevice(counter, &zero, 8));
      auto start = Clock::now();
      Value(runtime->Submit(tree, TreeArgs{4, 32, reinterpret_cast<uint64_t*>(counter)},
                            SubmitOptions{.track = false}),
            "submit");
      BENCH_CHECK(runtime->Drain());
      const double seconds = MicrosSince(start) / 1e6;
      uint64_t nodes = 0;
      BENCH_CHECK(runtime->CopyFromDevice(&nodes, counter, 8));
      if (nodes != expected) {
        std::fprintf(stderr, "grosr_bench: tree ran %llu of %llu nodes\n",
                     static_cast<unsigned long long>(nodes),
                     static_cast<unsigned long long>(expected));
        std::exit(1);
      }
      rates.push_back(static_cast<double>(expected) / seconds);
    }
    std::sort(rates.begin(), rates.end());
    Result tree_rate = Single("grosr_spawn_tree", "tasks/s", rates[rates.size() / 2],
                              rates.size(), "1.08M tasks spawned on the GPU (32-ary tree), median of 5");
    tree_rate.experiment = "extra";
    results->push_back(tree_rate);
  }

  // Host batch submission: untracked empty tasks through the ring.
  if (!chains_only) {
    const size_t n = 1 << 20;
    std::vector<TaskRequest> requests(n, TaskRequest::Make(noop, NoArgs{}));
    std::vector<double> rates;
    for (int rep = 0; rep < 3; ++rep) {
      auto start = Clock::now();
      BENCH_CHECK(runtime->SubmitBatch(requests));
      BENCH_CHECK(runtime->Drain());
      rates.push_back(static_cast<double>(n) / (MicrosSince(start) / 1e6));
    }
    std::sort(rates.begin(), rates.end());
    Result batch_rate = Single("grosr_host_batch", "tasks/s", rates[rates.size() / 2],
                               rates.size(), "1M empty tasks via SubmitBatch + Drain, median of 3");
    batch_rate.experiment = "extra";
    results->push_back(batch_rate);
    RuntimeStats stats = Value(runtime->Stats(), "stats");
    for (const TaskStats& t : stats.tasks) {
      if (t.id == noop && t.completed != t.submitted) {
        std::fprintf(stderr, "grosr_bench: noop completed %llu of %llu\n",
                     static_cast<unsigned long long>(t.completed),
                     static_cast<unsigned long long>(t.submitted));
        std::exit(1);
      }
    }
  }
  RunStepDistributions(*runtime, sm_mhz, results);
  if (hotload) RunHotLoad(*runtime, noop, results);
  Value(runtime->Shutdown(), "shutdown");
}

RunHeader HeaderOf(const DeviceInfo& info, const std::string& driver) {
  RunHeader h;
  h.device = info.name;
  h.arch = info.arch;
  h.driver = driver;
  h.sms = info.sm_count;
  h.sm_clock_mhz = info.clock_mhz;
  h.memory_clock_mhz = info.memory_clock_mhz;
  h.grid = absl::StrCat(info.blocks, " blocks x ", info.warps_per_block, " warps");
  return h;
}

}  // namespace

// The suite's entry point; `selection` is what runs without --only:
// "all", "pingpong" (experiment A), "throughput" (B) or "hotload".
int BenchMain(int argc, char** argv, const std::string& program, std::string selection) {
  std::setvbuf(stdout, nullptr, _IOLBF, 0);  // a crash keeps what was printed
  std::string json_path;
  int pings = 20000;
  bool dynamic_baselines = true;
  bool skip_all_but_dynamic = false;
  std::vector<std::string> only_dynamic;
  ThroughputPlan throughput;
  // The ping-pong runtime's options; --quiet-poll-after-rounds 4294967295
  // never polls quietly (whole slots every idle round), for comparing.
  RuntimeOptions grosr_options;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--json" && i + 1 < argc) {
      json_path = argv[++i];
    } else if (a == "--only" && i + 1 < argc) {
      selection = argv[++i];
    } else if (a == "--quick") {
      pings = 2000;
      throughput.sizes = {1000, 10000, 100000};
    } else if (a == "--no-dynamic") {
      dynamic_baselines = false;
    } else if (a == "--dynamic" && i + 1 < argc) {
      only_dynamic = absl::StrSplit(argv[++i], ',');
    } else if (a == "--only-dynamic") {
      skip_all_but_dynamic = true;
    } else if (a == "--quiet-poll-after-rounds" && i + 1 < argc &&
               absl::SimpleAtoi(argv[i + 1], &grosr_options.quiet_poll_after_rounds)) {
      ++i;
    } else {
      std::fprintf(stderr,
                   "usage: %s [--json FILE] [--only all|pingpong|throughput|hotload|chains]\n"
                   "       [--quick] [--no-dynamic] [--dynamic NAME,...] [--only-dynamic]\n"
                   "       [--quiet-poll-after-rounds N]   (the ping-pong runtime's)\n",
                   program.c_str());
      return 2;
    }
  }
  if (selection != "all" && selection != "pingpong" && selection != "throughput" &&
      selection != "hotload" && selection != "chains") {
    std::fprintf(stderr, "%s: --only takes all, pingpong, throughput, hotload or chains\n",
                 program.c_str());
    return 2;
  }
  absl::StatusOr<const CudaDriver*> driver = CudaDriver::Get();
  int devices = 0;
  if (!driver.ok() || (*driver)->cuInit(0) != CUDA_SUCCESS ||
      (*driver)->cuDeviceGetCount(&devices) != CUDA_SUCCESS || devices == 0) {
    std::fprintf(stderr, "%s: %s\n", program.c_str(),
                 driver.ok() ? "a CUDA GPU is required to run the benchmarks: no device found"
                             : std::string(driver.status().message()).c_str());
    return 2;
  }
  const bool pingpong = selection == "all" || selection == "pingpong";
  const bool tput = selection == "all" || selection == "throughput";
  const bool hotload = selection == "all" || selection == "hotload";
  // GROSR's chains alone, no baselines: seconds, for comparing builds.
  const bool chains_only = selection == "chains";
  std::unique_ptr<Compiler> compiler = Value(Compiler::Create({}), "compiler");
  std::vector<Result> results;
  // CUDA's baselines first, before any Runtime: the persistent kernel
  // would block their module loads and share the GPU with them.
  if (pingpong) {
    BaselinePlan plan;
    plan.launches = pings / 2;
    plan.static_baselines = !skip_all_but_dynamic;
    plan.dynamic_baselines = dynamic_baselines;
    plan.only_dynamic = only_dynamic;
    RunBaselines(**driver, *compiler, DefaultArchitecture(), plan, &results);
  }
  if (tput && !skip_all_but_dynamic) {
    RunThroughputBaselines(**driver, *compiler, DefaultArchitecture(), throughput, &results);
  }
  RunHeader header;
  DeviceInfo info;
  if ((pingpong || hotload || chains_only) && !skip_all_but_dynamic) {
    RunGrosr(grosr_options, pings, pingpong || chains_only, hotload, chains_only, &results, &info);
    header = HeaderOf(info, (*driver)->VersionString());
  }
  if (tput && !skip_all_but_dynamic) {
    RunThroughputGrosr(throughput, &results, &header);
    header.driver = (*driver)->VersionString();
  }
  PrintResults(results, header);
  // Without --json, `bazel run` writes into the workspace's bench/results/
  // (and plots there); elsewhere into ./bench-results/.
  const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");
  if (json_path.empty()) {
    const std::string folder = workspace != nullptr ? absl::StrCat(workspace, "/bench/results")
                                                    : std::string("bench-results");
    std::filesystem::create_directories(folder);
    json_path = absl::StrCat(folder, "/", program, ".json");
  }
  std::ofstream(json_path) << ToJson(results, header);
  std::printf("wrote %s\n", json_path.c_str());
  if (workspace != nullptr && absl::EndsWith(json_path, ".json")) {
    const std::string png = absl::StrCat(json_path.substr(0, json_path.size() - 5), ".png");
    const std::string plot = absl::StrCat("/usr/bin/python3 '", workspace, "/bench/plot.py' '",
                                          json_path, "' '", png, "'");
    if (std::system(plot.c_str()) != 0) {
      std::fprintf(stderr, "%s: plotting failed (python3-matplotlib missing? tools/setup.sh "
                   "installs it): %s\n", program.c_str(), plot.c_str());
    }
  }
  return 0;
}

}  // namespace grosr

#ifndef GROSR_BENCH_PROGRAM
#define GROSR_BENCH_PROGRAM "grosr_bench"
#define GROSR_BENCH_SELECTION "all"
#endif

int main(int argc, char** argv) {
  return grosr::BenchMain(argc, argv, GROSR_BENCH_PROGRAM, GROSR_BENCH_SELECTION);
}
