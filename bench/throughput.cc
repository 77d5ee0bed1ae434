#include "bench/throughput.h"

#include <algorithm>
#include <cstdio>
#include <memory>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "host/cuda_resources.h"
#include "host/device_code.h"
#include "host/runtime.h"

namespace grosr {
namespace {

constexpr uint32_t kPoison = 0xffffffffu;

// The tiny work, the same on both sides: a multiply and an add.
uint32_t Expected(uint32_t i) { return i * 2654435761u + 12345u; }

constexpr char kTinyKernel[] = R"grosr_src(
extern "C" __global__ void tiny(unsigned* out, unsigned i) {
  if (threadIdx.x == 0) out[i] = i * 2654435761u + 12345u;
}
)grosr_src";

constexpr char kTinyTasks[] = R"grosr_src(
#include <grosr/task.h>
struct TinyArgs { unsigned i; unsigned* out; };
GROSR_TASK(tput_tiny, TinyArgs) {
  if (ctx.lane() == 0) args.out[args.i] = args.i * 2654435761u + 12345u;
}
// Spawns `count` tiny tasks from `first` on: up to 1,024 directly (32 per
// warp-aggregated spawn), more through 32 smaller fans.
struct FanArgs { unsigned first; unsigned count; unsigned* out; unsigned tiny; unsigned fan; };
GROSR_TASK(tput_fan, FanArgs) {
  if (args.count <= 1024) {
    for (unsigned j = ctx.lane(); j < args.count; j += 32) {
      while (!ctx.spawn(args.tiny, TinyArgs{args.first + j, args.out})) {}
    }
    return;
  }
  const unsigned part = (args.count + 31) / 32;
  const unsigned first = args.first + ctx.lane() * part;
  const unsigned end = args.first + args.count;
  if (first < end) {
    const unsigned count = end - first < part ? end - first : part;
    while (!ctx.spawn(ctx.self(), FanArgs{first, count, args.out, args.tiny, args.fan})) {}
  }
}
)grosr_src";

struct TinyArgs {
  uint32_t i;
  uint32_t* out;
};
struct FanArgs {
  uint32_t first, count;
  uint32_t* out;
  uint32_t tiny, fan;
};

int Repetitions(uint64_t n) { return n <= 100000 ? 5 : (n <= 1000000 ? 3 : 2); }

// Checks out[0, n) against the reference; exits on a mismatch (a benchmark
// that computed the wrong thing measured nothing).
void Verify(const std::vector<uint32_t>& out, uint64_t n, const std::string& what) {
  for (uint64_t i = 0; i < n; ++i) {
    if (out[i] != Expected(static_cast<uint32_t>(i))) {
      std::fprintf(stderr, "throughput: %s: out[%llu] = %u, expected %u\n", what.c_str(),
                   static_cast<unsigned long long>(i), out[i], Expected(static_cast<uint32_t>(i)));
      std::exit(1);
    }
  }
}

// Wall and host CPU time (us) of each timed run.
struct Timed {
  std::vector<double> wall_us, cpu_us;
};

// `warmups` untimed runs, then `runs` timed ones, each: reset() (untimed),
// work() (timed), check() (untimed: reads back and verifies).
template <typename Reset, typename Work, typename Check>
Timed TimeRuns(int warmups, int runs, Reset reset, Work work, Check check) {
  Timed timed;
  for (int rep = -warmups; rep < runs; ++rep) {
    reset();
    const double cpu0 = ProcessCpuMicros();
    const auto start = Clock::now();
    work();
    if (rep >= 0) {
      timed.wall_us.push_back(MicrosSince(start));
      timed.cpu_us.push_back(ProcessCpuMicros() - cpu0);
    }
    check();
  }
  return timed;
}

// One sweep point from the timed runs of `n` tasks.
Result Point(const std::string& series, uint64_t n, Timed timed, double syncs,
             const std::string& note) {
  std::vector<double>& wall_us = timed.wall_us;
  std::vector<double>& cpu_us = timed.cpu_us;
  std::sort(wall_us.begin(), wall_us.end());
  std::sort(cpu_us.begin(), cpu_us.end());
  const double median = wall_us[wall_us.size() / 2];
  Result r = Single(absl::StrCat("tput_", series, "_", n), "tasks/s",
                    static_cast<double>(n) / (median / 1e6), wall_us.size(), note);
  r.experiment = std::string(1, 'B');  // (= "B" trips GCC 12 -Wrestrict at -O2)
  r.group = series;
  r.items = static_cast<double>(n);
  r.total_us = median;
  r.min = static_cast<double>(n) / (wall_us.back() / 1e6);  // slowest repetition's rate
  r.cpu_us_per_item = cpu_us[cpu_us.size() / 2] / static_cast<double>(n);
  r.syncs_per_item = syncs / static_cast<double>(n);
  return r;
}

}  // namespace

absl::Status CompileThroughputCode(const Compiler& compiler, const std::string& arch) {
  CompileOptions options;
  options.arch = arch;
  if (absl::StatusOr<LinkedImage> image = compiler.CompileAndLink("tiny.cu", kTinyKernel, options);
      !image.ok()) {
    return image.status();
  }
  DeviceCodeTarget target;
  target.arch = arch;
  absl::StatusOr<TaskModuleImage> tasks =
      BuildTaskModule(compiler, target, /*kernel_registers=*/target.register_budget,
                      "tput_tasks.cu", kTinyTasks);
  return tasks.status();
}

void RunThroughputBaselines(const CudaDriver& cu, const Compiler& compiler,
                            const std::string& arch, const ThroughputPlan& plan,
                            std::vector<Result>* results) {
  CUdevice device;
  CUcontext context;
  CheckOrExit(cu.Check(cu.cuDeviceGet(&device, 0), "cuDeviceGet"), "device");
  CheckOrExit(cu.Check(cu.cuDevicePrimaryCtxRetain(&context, device), "retain"), "context");
  CheckOrExit(cu.Check(cu.cuCtxSetCurrent(context), "cuCtxSetCurrent"), "context");
  {
    CompileOptions options;
    options.arch = arch;
    LinkedImage image = Value(compiler.CompileAndLink("tiny.cu", kTinyKernel, options), "build tiny");
    Module module = Value(Module::Load(cu, image.cubin), "load tiny");
    CUfunction tiny;
    CheckOrExit(cu.Check(cu.cuModuleGetFunction(&tiny, module.get(), "tiny"), "tiny"), "tiny");
    Stream stream = Value(Stream::Create(cu), "stream");
    const uint64_t largest = *std::max_element(plan.sizes.begin(), plan.sizes.end());
    DeviceMemory out = Value(DeviceMemory::Allocate(cu, largest * 4), "out");
    CUdeviceptr out_ptr = out.get();
    std::vector<uint32_t> host(largest);
    auto poison = [&] {
      cu.cuMemsetD32Async(out_ptr, kPoison, largest, stream.get());
      cu.cuStreamSynchronize(stream.get());
    };
    auto read_back = [&](uint64_t n) { cu.cuMemcpyDtoH(host.data(), out_ptr, n * 4); };
    uint32_t index = 0;
    void* params[] = {&out_ptr, &index};
    auto launch = [&](uint32_t i) {
      index = i;
      cu.cuLaunchKernel(tiny, 1, 1, 1, 32, 1, 1, 0, stream.get(), params, nullptr);
    };
    for (int i = 0; i < 1000; ++i) launch(0);  // warm-up
    cu.cuStreamSynchronize(stream.get());

    for (uint64_t n : plan.sizes) {
      if (n <= plan.launch_sync_max) {
        const Timed timed = TimeRuns(
            0, Repetitions(n), poison,
            [&] {
              for (uint64_t i = 0; i < n; ++i) {
                launch(static_cast<uint32_t>(i));
                cu.cuStreamSynchronize(stream.get());
              }
            },
            [&] {
              read_back(n);
              Verify(host, n, "cuda_launch_sync");
            });
        results->push_back(Point("cuda_launch_sync", n, timed, static_cast<double>(n),
                                 "a launch + cuStreamSynchronize per task"));
      }
      if (n <= plan.launch_max) {
        const Timed timed = TimeRuns(
            0, Repetitions(n), poison,
            [&] {
              for (uint64_t i = 0; i < n; ++i) launch(static_cast<uint32_t>(i));
              cu.cuStreamSynchronize(stream.get());
            },
            [&] {
              read_back(n);
              Verify(host, n, "cuda_launch_stream");
            });
        results->push_back(Point("cuda_launch_stream", n, timed, 1,
                                 "a launch per task into one stream, one synchronize"));
      }
      // A graph of `nodes` kernel nodes (distinct indices), replayed to run
      // n: independent nodes (no edges: the GPU may run them concurrently)
      // and a chain (each node after the previous, as stream capture makes
      // it). The chain replays faster on an H200; both are reported.
      for (const bool chained : {false, true}) {
        const char* series = chained ? "cuda_graph_chain_replay" : "cuda_graph_replay";
        const uint32_t nodes = static_cast<uint32_t>(std::min<uint64_t>(n, plan.graph_nodes));
        const uint64_t replays = (n + nodes - 1) / nodes;
        CUgraph graph;
        CheckOrExit(cu.Check(cu.cuGraphCreate(&graph, 0), "cuGraphCreate"), "graph");
        std::vector<uint32_t> indices(nodes);
        std::vector<void*> node_params(2 * nodes);
        CUgraphNode previous = nullptr;
        for (uint32_t i = 0; i < nodes; ++i) {
          indices[i] = i;
          node_params[2 * i] = &out_ptr;
          node_params[2 * i + 1] = &indices[i];
          CUDA_KERNEL_NODE_PARAMS node = {};
          node.func = tiny;
          node.gridDimX = node.gridDimY = node.gridDimZ = 1;
          node.blockDimX = 32;
          node.blockDimY = node.blockDimZ = 1;
          node.kernelParams = &node_params[2 * i];
          CUgraphNode added;
          CheckOrExit(cu.Check(cu.cuGraphAddKernelNode(&added, graph, chained && i > 0 ? &previous : nullptr,
                                                       chained && i > 0 ? 1 : 0, &node),
                               "cuGraphAddKernelNode"),
                      "graph");
          previous = added;
        }
        CUgraphExec exec;
        const auto instantiate_start = Clock::now();
        CheckOrExit(cu.Check(cu.cuGraphInstantiateWithFlags(&exec, graph, 0), "instantiate"),
                    "instantiate");
        const double instantiate_us = MicrosSince(instantiate_start);
        cu.cuGraphUpload(exec, stream.get());
        cu.cuGraphLaunch(exec, stream.get());  // warm-up
        cu.cuStreamSynchronize(stream.get());
        const Timed timed = TimeRuns(
            0, Repetitions(n), poison,
            [&] {
              for (uint64_t k = 0; k < replays; ++k) cu.cuGraphLaunch(exec, stream.get());
              cu.cuStreamSynchronize(stream.get());
            },
            [&] {
              read_back(nodes);
              Verify(host, nodes, series);
            });
        results->push_back(Point(
            series, replays * nodes, timed, 1,
            absl::StrFormat("graph of %u %s kernel nodes replayed %llu times, one "
                            "synchronize (instantiate %.1f ms, not counted)",
                            nodes, chained ? "chained" : "independent",
                            static_cast<unsigned long long>(replays), instantiate_us / 1000)));
        cu.cuGraphExecDestroy(exec);
        cu.cuGraphDestroy(graph);
      }
    }
  }
  cu.cuDevicePrimaryCtxRelease(device);
}

void RunThroughputGrosr(const ThroughputPlan& plan, std::vector<Result>* results,
                        RunHeader* header) {
  const uint64_t largest = *std::max_element(plan.sizes.begin(), plan.sizes.end());
  RuntimeOptions options;
  // Room for every task of the largest fan-out at once: spawners never wait.
  uint32_t capacity = 1u << 20;
  while (capacity < largest + largest / 512 + 1024) capacity <<= 1;
  options.queue_capacity = capacity;
  std::unique_ptr<Runtime> runtime = Value(Runtime::Create(options), "Runtime::Create");
  const DeviceInfo& info = runtime->device_info();
  header->device = info.name;
  header->arch = info.arch;
  header->sms = info.sm_count;
  header->sm_clock_mhz = info.clock_mhz;
  header->memory_clock_mhz = info.memory_clock_mhz;
  header->grid = absl::StrCat(info.blocks, " blocks x ", info.warps_per_block, " warps");
  Value(runtime->LoadSource("tput_tasks.cu", kTinyTasks), "load tiny tasks");
  const TaskId tiny = Value(runtime->Find("tput_tiny"), "find");
  const TaskId fan = Value(runtime->Find("tput_fan"), "find");
  const CUdeviceptr out = Value(runtime->AllocateDeviceMemory(largest * 4), "out");
  auto* out_ptr = reinterpret_cast<uint32_t*>(out);
  CheckOrExit(runtime->Start(), "start");
  std::vector<uint32_t> host(largest);
  const std::vector<uint32_t> poison(largest, kPoison);
  auto reset = [&] { CheckOrExit(runtime->CopyToDevice(out, poison.data(), largest * 4), "poison"); };
  auto verify = [&](uint64_t n, const char* what) {
    CheckOrExit(runtime->CopyFromDevice(host.data(), out, n * 4), "read back");
    Verify(host, n, what);
  };
  std::vector<TaskRequest> requests;
  for (uint64_t n : plan.sizes) {
    requests.clear();
    for (uint64_t i = 0; i < n; ++i) {
      requests.push_back(TaskRequest::Make(tiny, TinyArgs{static_cast<uint32_t>(i), out_ptr}));
    }
    // One untimed run first (a warm-up).
    const Timed submitted = TimeRuns(
        1, Repetitions(n), reset,
        [&] {
          CheckOrExit(runtime->SubmitBatch(requests), "SubmitBatch");
          CheckOrExit(runtime->Drain(), "Drain");
        },
        [&] { verify(n, "grosr_host_submit"); });
    results->push_back(Point("grosr_host_submit", n, submitted, 1,
                             "SubmitBatch of N tasks through the pinned ring, one Drain "
                             "(building the requests not counted)"));
    const Timed spawned = TimeRuns(
        1, Repetitions(n), reset,
        [&] {
          Value(runtime->Submit(fan, FanArgs{0, static_cast<uint32_t>(n), out_ptr, tiny, fan},
                                SubmitOptions{.track = false}),
                "submit root");
          CheckOrExit(runtime->Drain(), "Drain");
        },
        [&] { verify(n, "grosr_gpu_spawn"); });
    results->push_back(Point("grosr_gpu_spawn", n, spawned, 1,
                             "one root task; fan tasks (at most ~1% of N, not counted) "
                             "spawn the N tasks, 32 per warp-aggregated spawn; one Drain"));
  }
  RuntimeStats stats = Value(runtime->Stats(), "stats");
  for (const TaskStats& t : stats.tasks) {
    if (t.failed != 0 || t.completed != t.submitted + t.spawned) {
      std::fprintf(stderr, "throughput: task %s completed %llu, failed %llu, of %llu\n",
                   t.name.c_str(), static_cast<unsigned long long>(t.completed),
                   static_cast<unsigned long long>(t.failed),
                   static_cast<unsigned long long>(t.submitted + t.spawned));
      std::exit(1);
    }
  }
  Value(runtime->Shutdown(), "shutdown");
}

}  // namespace grosr
