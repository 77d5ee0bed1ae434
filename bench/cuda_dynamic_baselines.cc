#include "bench/cuda_dynamic_baselines.h"

#include <algorithm>
#include <cstdio>

#include <cuda.h>
#include <driver_types.h>  // cudaError_t values reported by device-side launches

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <utility>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

#include "absl/strings/str_cat.h"
#include "bench/bench_support.h"
#include "host/cuda_resources.h"

namespace grosr {
namespace {

// Local helpers: absl has no public status macros.
#define BASELINE_RETURN_IF_ERROR(expr)                  \
  do {                                                  \
    ::absl::Status baseline_status_ = (expr);           \
    if (!baseline_status_.ok()) return baseline_status_; \
  } while (false)

#define BASELINE_CONCAT_INNER(a, b) a##b
#define BASELINE_CONCAT(a, b) BASELINE_CONCAT_INNER(a, b)
#define BASELINE_ASSIGN_OR_RETURN(lhs, expr)                                  \
  auto BASELINE_CONCAT(baseline_or_, __LINE__) = (expr);                      \
  if (!BASELINE_CONCAT(baseline_or_, __LINE__).ok()) {                        \
    return std::move(BASELINE_CONCAT(baseline_or_, __LINE__)).status();       \
  }                                                                           \
  lhs = std::move(*BASELINE_CONCAT(baseline_or_, __LINE__))

// A baseline's timed samples and what the host spent on them.
struct Samples {
  std::vector<double> us_per_step;
  double cpu_us_per_step = -1;   // user + system CPU time over the timed part, per step
  double syncs_per_step = -1;    // host waits (synchronize or spin on a word) per step
};

// ---------------------------------------------------------------------------
// Device sources. Every step kernel is launched with one warp and does its
// work in lane 0: the baselines measure control flow, not the step's work.
// ---------------------------------------------------------------------------

constexpr char kWhileNodeName[] = "cuda_while_node";
constexpr char kGraphRelaunchName[] = "cuda_graph_tail_relaunch";
constexpr char kCdpTailLaunchName[] = "cuda_cdp2_tail_launch";
constexpr char kPinnedRoundTripName[] = "pinned_round_trip";

// The body of a conditional WHILE node. The node runs the body once (its
// handle's default launch value is 1), then again for as long as the body
// sets the condition to non-zero: the data decides. A body that runs after it
// set the condition to 0 means cudaGraphSetConditional had no effect: the
// loop would never end and the host's cuStreamSynchronize would hang, so it
// traps instead (the synchronize then fails and the context is lost).
constexpr char kWhileNodeSource[] = R"grosr_src(
#include <cuda_device_runtime_api.h>

extern "C" __global__ void while_step(cudaGraphConditionalHandle handle, unsigned* counter,
                                      unsigned steps) {
  if (threadIdx.x != 0) return;
  const unsigned now = *counter + 1;
  if (now > steps) __trap();
  *counter = now;
  cudaGraphSetConditional(handle, now < steps ? 1u : 0u);
}
)grosr_src";
constexpr char kWhileNodeFailureHint[] =
    " (the step kernel traps when the WHILE node runs its body again after the body set the "
    "condition to 0, i.e. when cudaGraphSetConditional had no effect)";

// The only kernel of a device-launchable graph: after its step it launches
// the graph it runs in again, into the tail-launch stream (the relaunch
// starts when this launch has finished), while the data says so. A failed
// relaunch is recorded in *error (the first one wins) for the host to report.
constexpr char kGraphRelaunchSource[] = R"grosr_src(
#include <cuda_device_runtime_api.h>

extern "C" __global__ void graph_relaunch_step(unsigned* counter, unsigned steps, int* error) {
  if (threadIdx.x != 0) return;
  const unsigned now = *counter + 1;
  *counter = now;
  if (now < steps) {
    const cudaError_t launched =
        cudaGraphLaunch(cudaGetCurrentGraphExec(), cudaStreamGraphTailLaunch);
    if (launched != cudaSuccess) atomicCAS(error, 0, static_cast<int>(launched));
  }
}
)grosr_src";

// Dynamic parallelism (CDP2): the kernel tail-launches itself, so each launch
// starts after its parent grid finished and at most one is pending at a time
// (no pending-launch limit to raise, no nesting depth to grow).
constexpr char kCdpTailLaunchSource[] = R"grosr_src(
#include <cuda_device_runtime_api.h>

extern "C" __global__ void cdp_step(unsigned* counter, unsigned steps, int* error) {
  if (threadIdx.x != 0) return;
  const unsigned now = *counter + 1;
  *counter = now;
  if (now < steps) {
    cdp_step<<<1, 32, 0, cudaStreamTailLaunch>>>(counter, steps, error);
    const cudaError_t launched = cudaGetLastError();
    if (launched != cudaSuccess) atomicCAS(error, 0, static_cast<int>(launched));
  }
}
)grosr_src";

// The hardware floor for host <-> GPU ping-pong: lane 0 polls a word of
// pinned host memory with system-scope acquire loads and echoes every new
// value into a second word with a system-scope release store. It returns on
// `stop`, or by itself when the host has written nothing for idle_limit_ns
// (a host that gave up must not leave a kernel spinning forever). The clock
// is read only every 1024 polls to keep the poll loop what is measured.
// Memory ordering: the payload is the flag word itself, so relaxed accesses
// would do; acquire/release at system scope on both sides are what a real
// host <-> GPU handoff carrying data needs, and their cost is the floor.
constexpr char kPinnedEchoSource[] = R"grosr_src(
#include <cuda/atomic>

__device__ unsigned long long GlobalNanoseconds() {
  unsigned long long ns;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(ns));
  return ns;
}

extern "C" __global__ void pinned_echo(unsigned* request, unsigned* reply, unsigned stop,
                                       unsigned long long idle_limit_ns) {
  if (threadIdx.x != 0) return;
  cuda::atomic_ref<unsigned, cuda::thread_scope_system> in(*request);
  cuda::atomic_ref<unsigned, cuda::thread_scope_system> out(*reply);
  // The host's values start at 1 over a zeroed word; one it wrote before this
  // kernel started is still new to it.
  unsigned last = 0;
  bool heard_from_host = true;
  unsigned long long quiet_since = GlobalNanoseconds();
  for (unsigned polls = 1;; ++polls) {
    const unsigned value = in.load(cuda::std::memory_order_acquire);
    if (value == stop) return;
    if (value != last) {
      out.store(value, cuda::std::memory_order_release);
      last = value;
      heard_from_host = true;
    }
    if (polls % 1024 == 0) {
      const unsigned long long now = GlobalNanoseconds();
      if (heard_from_host) {
        quiet_since = now;
        heard_from_host = false;
      } else if (now - quiet_since > idle_limit_ns) {
        return;
      }
    }
  }
}
)grosr_src";

// ---------------------------------------------------------------------------
// Driver-side helpers
// ---------------------------------------------------------------------------

// A graph and, once instantiated, its executable graph; destroyed together.
class OwnedGraph {
 public:
  explicit OwnedGraph(const CudaDriver& cu) : cu_(cu) {}
  OwnedGraph(const OwnedGraph&) = delete;
  OwnedGraph& operator=(const OwnedGraph&) = delete;
  ~OwnedGraph() {
    if (exec != nullptr) cu_.cuGraphExecDestroy(exec);
    if (graph != nullptr) cu_.cuGraphDestroy(graph);
  }

  CUgraph graph = nullptr;
  CUgraphExec exec = nullptr;

 private:
  const CudaDriver& cu_;
};

// A baseline's module and its one kernel.
struct LoadedKernel {
  Module module;
  CUfunction function = nullptr;
};

const DynamicBaselineKernel* FindKernelSource(const std::string& baseline) {
  for (const DynamicBaselineKernel& kernel : DynamicBaselineKernels()) {
    if (kernel.baseline == baseline) return &kernel;
  }
  return nullptr;
}

absl::StatusOr<LoadedKernel> LoadBaselineKernel(const CudaDriver& cu, const Compiler& compiler,
                                                const std::string& arch,
                                                const std::string& baseline) {
  const DynamicBaselineKernel* source = FindKernelSource(baseline);
  if (source == nullptr || source->kernels.empty()) {
    return absl::InternalError(absl::StrCat("no device source for baseline ", baseline));
  }
  BASELINE_ASSIGN_OR_RETURN(LinkedImage image,
                            BuildDynamicBaselineKernel(compiler, arch, *source));
  LoadedKernel loaded;
  BASELINE_ASSIGN_OR_RETURN(loaded.module, Module::Load(cu, image.cubin));
  GROSR_CU_RETURN_IF_ERROR(
      cu, cu.cuModuleGetFunction(&loaded.function, loaded.module.get(), source->kernels[0].c_str()),
      absl::StrCat("cuModuleGetFunction(", source->kernels[0], ")"));
  return loaded;
}

// A name for a cudaError_t a device-side launch returned (the device runtime
// reports runtime-API codes, which the driver's ErrorText cannot name).
std::string DeviceErrorText(int error) {
  switch (error) {
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorMemoryAllocation: return "cudaErrorMemoryAllocation";
    case cudaErrorLaunchPendingCountExceeded:
      return "cudaErrorLaunchPendingCountExceeded (raise CU_LIMIT_DEV_RUNTIME_PENDING_LAUNCH_COUNT)";
    case cudaErrorInvalidDeviceFunction: return "cudaErrorInvalidDeviceFunction";
    case cudaErrorDeviceUninitialized: return "cudaErrorDeviceUninitialized";
    case cudaErrorIllegalState: return "cudaErrorIllegalState";
    case cudaErrorLaunchOutOfResources: return "cudaErrorLaunchOutOfResources";
    case cudaErrorLaunchFailure: return "cudaErrorLaunchFailure";
    case cudaErrorNotPermitted: return "cudaErrorNotPermitted";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    default: return absl::StrCat("cudaError_t ", error, " (see driver_types.h)");
  }
}

// ---------------------------------------------------------------------------
// Chains of dependent steps (baselines 1-3)
// ---------------------------------------------------------------------------

// The device words of a chain: the step counter, and the first error a
// device-side launch returned (0: none).
struct ChainWords {
  DeviceMemory memory;
  CUdeviceptr counter() const { return memory.get(); }
  CUdeviceptr error() const { return memory.get() + sizeof(uint32_t); }
};

absl::StatusOr<ChainWords> AllocateChainWords(const CudaDriver& cu) {
  ChainWords words;
  BASELINE_ASSIGN_OR_RETURN(words.memory, DeviceMemory::Allocate(cu, 2 * sizeof(uint32_t)));
  return words;
}

// Zeroes the counter and the error word on the chain's stream and waits,
// before the (timed) launch. (Not cuCtxSynchronize: the 13.0 header declares
// it without arguments while the H200's driver resolves the name to
// cuCtxSynchronize_v2(CUcontext): called so, it read a garbage context.)
absl::Status ResetChain(const CudaDriver& cu, CUstream stream, const ChainWords& words) {
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuMemsetD32Async(words.counter(), 0, 2, stream),
                           "cuMemsetD32Async (chain reset)");
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuStreamSynchronize(stream), "cuStreamSynchronize (chain reset)");
  return absl::OkStatus();
}

// A chain that ran must have stepped exactly `steps` times with no failed
// device-side launch: anything else is a failure, never a number.
absl::Status VerifyChain(const CudaDriver& cu, const ChainWords& words, uint32_t steps,
                         const std::string& baseline) {
  uint32_t host[2] = {0, 0};
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuMemcpyDtoH(host, words.counter(), sizeof(host)),
                           "cuMemcpyDtoH (chain counter)");
  const uint32_t counter = host[0];
  const int error = static_cast<int>(host[1]);
  if (error != 0) {
    return absl::InternalError(absl::StrCat(baseline, ": a device-side launch failed with ",
                                            DeviceErrorText(error), " after step ", counter, " of ",
                                            steps));
  }
  if (counter != steps) {
    return absl::InternalError(absl::StrCat(
        baseline, ": the device counter is ", counter, " after the chain, expected ", steps,
        " (the chain stopped early, or the stream synchronized before it finished)"));
  }
  return absl::OkStatus();
}

// What a chain baseline needs to launch and explain one chain.
struct ChainLaunch {
  std::string baseline;
  std::function<CUresult()> launch;  // starts one chain on the stream
  std::string failure_hint;          // appended to a failed synchronize
};

// Runs one untimed warm-up and `repetitions` timed chains. A sample is the
// wall time from the launch to the end of cuStreamSynchronize, divided by
// `steps`. Every chain, the warm-up included, is verified.
absl::StatusOr<Samples> TimeChains(const CudaDriver& cu, CUstream stream,
                                               const ChainWords& words, uint32_t steps,
                                               int repetitions, const ChainLaunch& chain) {
  const std::string& baseline = chain.baseline;
  Samples samples;
  double cpu_us = 0;
  for (int rep = -1; rep < repetitions; ++rep) {  // -1: the warm-up
    BASELINE_RETURN_IF_ERROR(ResetChain(cu, stream, words));
    const double cpu_start = ProcessCpuMicros();
    const Clock::time_point start = Clock::now();
    GROSR_CU_RETURN_IF_ERROR(cu, chain.launch(), absl::StrCat(baseline, ": launch"));
    const absl::Status synchronized =
        cu.Check(cu.cuStreamSynchronize(stream),
                 absl::StrCat(baseline, ": cuStreamSynchronize after the chain"));
    const double us = MicrosSince(start);
    if (rep >= 0) cpu_us += ProcessCpuMicros() - cpu_start;
    if (!synchronized.ok()) {
      return absl::Status(synchronized.code(),
                          absl::StrCat(synchronized.message(), chain.failure_hint));
    }
    BASELINE_RETURN_IF_ERROR(VerifyChain(cu, words, steps, baseline));
    if (rep >= 0) samples.us_per_step.push_back(us / steps);
  }
  samples.cpu_us_per_step = cpu_us / (static_cast<double>(repetitions) * steps);
  samples.syncs_per_step = 1.0 / steps;  // one cuStreamSynchronize per chain
  return samples;
}

CUDA_KERNEL_NODE_PARAMS OneWarpKernelNode(CUfunction function, void** params) {
  CUDA_KERNEL_NODE_PARAMS node = {};
  node.func = function;
  node.gridDimX = node.gridDimY = node.gridDimZ = 1;
  node.blockDimX = 32;
  node.blockDimY = node.blockDimZ = 1;
  node.kernelParams = params;
  return node;
}

// graph: one conditional WHILE node whose body graph holds the step kernel.
absl::Status BuildWhileGraph(const CudaDriver& cu, CUcontext context, CUfunction step,
                             CUdeviceptr counter, uint32_t steps, OwnedGraph* graph) {
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuGraphCreate(&graph->graph, 0), "cuGraphCreate");
  // Default launch value 1, applied at every launch of the graph: the body
  // runs at least once, and a relaunch starts the loop afresh.
  CUgraphConditionalHandle handle = 0;
  GROSR_CU_RETURN_IF_ERROR(cu,
                           cu.cuGraphConditionalHandleCreate(&handle, graph->graph, context, 1,
                                                             CU_GRAPH_COND_ASSIGN_DEFAULT),
                           "cuGraphConditionalHandleCreate");
  CUgraphNodeParams params = {};
  params.type = CU_GRAPH_NODE_TYPE_CONDITIONAL;
  params.conditional.handle = handle;
  params.conditional.type = CU_GRAPH_COND_TYPE_WHILE;
  params.conditional.size = 1;
  params.conditional.ctx = context;
  CUgraphNode while_node = nullptr;
  GROSR_CU_RETURN_IF_ERROR(
      cu, cu.cuGraphAddNode(&while_node, graph->graph, nullptr, nullptr, 0, &params),
      "cuGraphAddNode (conditional WHILE)");
  CUgraph body = params.conditional.phGraph_out[0];  // owned by the node

  CUdeviceptr counter_arg = counter;
  uint32_t steps_arg = steps;
  void* kernel_params[] = {&handle, &counter_arg, &steps_arg};  // copied by the driver
  const CUDA_KERNEL_NODE_PARAMS node = OneWarpKernelNode(step, kernel_params);
  CUgraphNode step_node = nullptr;
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuGraphAddKernelNode(&step_node, body, nullptr, 0, &node),
                           "cuGraphAddKernelNode (WHILE body)");
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuGraphInstantiateWithFlags(&graph->exec, graph->graph, 0),
                           "cuGraphInstantiateWithFlags (WHILE graph)");
  return absl::OkStatus();
}

absl::StatusOr<Samples> RunWhileNode(const CudaDriver& cu, const Compiler& compiler,
                                                 const std::string& arch, CUcontext context,
                                                 const DynamicBaselineOptions& options) {
  BASELINE_ASSIGN_OR_RETURN(LoadedKernel kernel,
                            LoadBaselineKernel(cu, compiler, arch, kWhileNodeName));
  BASELINE_ASSIGN_OR_RETURN(Stream stream, Stream::Create(cu));
  BASELINE_ASSIGN_OR_RETURN(ChainWords words, AllocateChainWords(cu));
  const uint32_t steps = static_cast<uint32_t>(options.steps);
  OwnedGraph graph(cu);
  BASELINE_RETURN_IF_ERROR(
      BuildWhileGraph(cu, context, kernel.function, words.counter(), steps, &graph));
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuGraphUpload(graph.exec, stream.get()), "cuGraphUpload");
  return TimeChains(cu, stream.get(), words, steps, options.repetitions,
                    {kWhileNodeName, [&] { return cu.cuGraphLaunch(graph.exec, stream.get()); },
                     kWhileNodeFailureHint});
}

const char* InstantiateResultText(CUgraphInstantiateResult result) {
  switch (result) {
    case CUDA_GRAPH_INSTANTIATE_SUCCESS: return "success";
    case CUDA_GRAPH_INSTANTIATE_ERROR: return "error";
    case CUDA_GRAPH_INSTANTIATE_INVALID_STRUCTURE: return "invalid structure";
    case CUDA_GRAPH_INSTANTIATE_NODE_OPERATION_NOT_SUPPORTED:
      return "a node operation is not supported for device launch";
    case CUDA_GRAPH_INSTANTIATE_MULTIPLE_CTXS_NOT_SUPPORTED:
      return "nodes of several contexts are not supported for device launch";
    default: return "unknown result";
  }
}

// graph: one step-kernel node, instantiated so that the device can launch it
// and uploaded so that a device-side launch finds it resident.
absl::Status BuildRelaunchGraph(const CudaDriver& cu, CUfunction step, const ChainWords& words,
                                uint32_t steps, CUstream stream, OwnedGraph* graph) {
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuGraphCreate(&graph->graph, 0), "cuGraphCreate");
  CUdeviceptr counter_arg = words.counter();
  uint32_t steps_arg = steps;
  CUdeviceptr error_arg = words.error();
  void* kernel_params[] = {&counter_arg, &steps_arg, &error_arg};
  const CUDA_KERNEL_NODE_PARAMS node = OneWarpKernelNode(step, kernel_params);
  CUgraphNode step_node = nullptr;
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuGraphAddKernelNode(&step_node, graph->graph, nullptr, 0, &node),
                           "cuGraphAddKernelNode");
  CUDA_GRAPH_INSTANTIATE_PARAMS instantiate = {};
  instantiate.flags = CUDA_GRAPH_INSTANTIATE_FLAG_DEVICE_LAUNCH;
  const CUresult result = cu.cuGraphInstantiateWithParams(&graph->exec, graph->graph, &instantiate);
  if (result != CUDA_SUCCESS) {
    graph->exec = nullptr;
    return absl::InternalError(
        absl::StrCat("cuGraphInstantiateWithParams (device launch) failed: ", cu.ErrorText(result),
                     "; instantiate result: ", InstantiateResultText(instantiate.result_out)));
  }
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuGraphUpload(graph->exec, stream), "cuGraphUpload");
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuStreamSynchronize(stream), "cuStreamSynchronize (upload)");
  return absl::OkStatus();
}

absl::StatusOr<Samples> RunGraphTailRelaunch(const CudaDriver& cu,
                                                         const Compiler& compiler,
                                                         const std::string& arch,
                                                         const DynamicBaselineOptions& options) {
  BASELINE_ASSIGN_OR_RETURN(LoadedKernel kernel,
                            LoadBaselineKernel(cu, compiler, arch, kGraphRelaunchName));
  BASELINE_ASSIGN_OR_RETURN(Stream stream, Stream::Create(cu));
  BASELINE_ASSIGN_OR_RETURN(ChainWords words, AllocateChainWords(cu));
  const uint32_t steps = static_cast<uint32_t>(options.steps);
  OwnedGraph graph(cu);
  BASELINE_RETURN_IF_ERROR(
      BuildRelaunchGraph(cu, kernel.function, words, steps, stream.get(), &graph));
  return TimeChains(cu, stream.get(), words, steps, options.repetitions,
                    {kGraphRelaunchName,
                     [&] { return cu.cuGraphLaunch(graph.exec, stream.get()); }, ""});
}

absl::StatusOr<Samples> RunCdpTailLaunch(const CudaDriver& cu,
                                                     const Compiler& compiler,
                                                     const std::string& arch,
                                                     const DynamicBaselineOptions& options) {
  BASELINE_ASSIGN_OR_RETURN(LoadedKernel kernel,
                            LoadBaselineKernel(cu, compiler, arch, kCdpTailLaunchName));
  BASELINE_ASSIGN_OR_RETURN(Stream stream, Stream::Create(cu));
  BASELINE_ASSIGN_OR_RETURN(ChainWords words, AllocateChainWords(cu));
  const uint32_t steps = static_cast<uint32_t>(options.steps);
  CUdeviceptr counter_arg = words.counter();
  uint32_t steps_arg = steps;
  CUdeviceptr error_arg = words.error();
  void* params[] = {&counter_arg, &steps_arg, &error_arg};
  const auto launch = [&] {
    return cu.cuLaunchKernel(kernel.function, 1, 1, 1, 32, 1, 1, 0, stream.get(), params, nullptr);
  };
  return TimeChains(cu, stream.get(), words, steps, options.repetitions,
                    {kCdpTailLaunchName, launch, ""});
}

// ---------------------------------------------------------------------------
// Pinned round trip (baseline 4)
// ---------------------------------------------------------------------------

constexpr uint32_t kEchoStop = 0xFFFFFFFFu;
constexpr int kEchoWarmupRoundTrips = 100;
// Every host wait is bounded: no echo within this long is a failure.
constexpr std::chrono::seconds kHostWaitLimit(5);
// The kernel quits by itself after this long without a new value; longer
// than any host wait, so it never quits under a host that is still waiting.
constexpr unsigned long long kKernelIdleLimitNs = 10'000'000'000ull;
// The request and reply words sit on separate 128-byte lines so that the
// host's write of one does not disturb its spin on the other.
constexpr size_t kReplyOffset = 128;

void CpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#endif
}

// Spins until *reply == value; false at the deadline. The clock is read only
// every 256 spins so that the spin itself stays what is measured.
bool SpinForEcho(uint32_t* reply, uint32_t value, Clock::time_point deadline) {
  std::atomic_ref<uint32_t> echo(*reply);
  for (uint32_t spins = 1;; ++spins) {
    if (echo.load(std::memory_order_acquire) == value) return true;
    CpuRelax();
    if (spins % 256 == 0 && Clock::now() > deadline) return false;
  }
}

absl::StatusOr<Samples> PingPong(uint32_t* request, uint32_t* reply, int round_trips) {
  std::atomic_ref<uint32_t> ask(*request);
  Samples samples;
  samples.us_per_step.reserve(round_trips);
  const uint32_t total = static_cast<uint32_t>(kEchoWarmupRoundTrips + round_trips);
  double cpu_start = 0;
  for (uint32_t value = 1; value <= total; ++value) {
    if (value == static_cast<uint32_t>(kEchoWarmupRoundTrips) + 1) cpu_start = ProcessCpuMicros();
    const Clock::time_point start = Clock::now();
    ask.store(value, std::memory_order_release);
    if (!SpinForEcho(reply, value, start + kHostWaitLimit)) {
      return absl::DeadlineExceededError(absl::StrCat(
          kPinnedRoundTripName, ": no echo of round trip ", value, " within ",
          kHostWaitLimit.count(), " s (last echo ",
          std::atomic_ref<uint32_t>(*reply).load(std::memory_order_acquire),
          "); did the echo kernel start?"));
    }
    const double us = MicrosSince(start);
    if (value > static_cast<uint32_t>(kEchoWarmupRoundTrips)) samples.us_per_step.push_back(us);
  }
  samples.cpu_us_per_step = (ProcessCpuMicros() - cpu_start) / round_trips;
  samples.syncs_per_step = 1;  // the host spins on the echo word each round trip
  return samples;
}

// Tells the echo kernel to return and waits, bounded, for its stream to
// drain. Not OK when the kernel failed or is still running at the deadline.
absl::Status StopEchoKernel(const CudaDriver& cu, CUstream stream, uint32_t* request) {
  std::atomic_ref<uint32_t>(*request).store(kEchoStop, std::memory_order_release);
  const Clock::time_point deadline = Clock::now() + kHostWaitLimit;
  for (;;) {
    const CUresult state = cu.cuStreamQuery(stream);
    if (state != CUDA_ERROR_NOT_READY) return cu.Check(state, "echo kernel (cuStreamQuery)");
    if (Clock::now() > deadline) {
      return absl::DeadlineExceededError(absl::StrCat(
          kPinnedRoundTripName, ": the echo kernel did not return within ", kHostWaitLimit.count(),
          " s of the stop word (it quits by itself after ", kKernelIdleLimitNs / 1'000'000'000ull,
          " s without host writes)"));
    }
    CpuRelax();
  }
}

absl::StatusOr<Samples> RunPinnedRoundTrip(const CudaDriver& cu,
                                                       const Compiler& compiler,
                                                       const std::string& arch,
                                                       const DynamicBaselineOptions& options) {
  BASELINE_ASSIGN_OR_RETURN(LoadedKernel kernel,
                            LoadBaselineKernel(cu, compiler, arch, kPinnedRoundTripName));
  BASELINE_ASSIGN_OR_RETURN(Stream stream, Stream::Create(cu));  // CU_STREAM_NON_BLOCKING
  BASELINE_ASSIGN_OR_RETURN(PinnedMemory words, PinnedMemory::Allocate(cu, 2 * kReplyOffset));
  auto* request = static_cast<uint32_t*>(words.host());
  auto* reply = reinterpret_cast<uint32_t*>(static_cast<char*>(words.host()) + kReplyOffset);

  CUdeviceptr request_arg = words.device();
  CUdeviceptr reply_arg = words.device() + kReplyOffset;
  uint32_t stop_arg = kEchoStop;
  unsigned long long idle_arg = kKernelIdleLimitNs;
  void* params[] = {&request_arg, &reply_arg, &stop_arg, &idle_arg};
  GROSR_CU_RETURN_IF_ERROR(cu,
                           cu.cuLaunchKernel(kernel.function, 1, 1, 1, 32, 1, 1, 0, stream.get(),
                                             params, nullptr),
                           "cuLaunchKernel (echo kernel)");

  absl::StatusOr<Samples> samples = PingPong(request, reply, options.round_trips);
  const absl::Status stopped = StopEchoKernel(cu, stream.get(), request);
  if (absl::IsDeadlineExceeded(stopped)) {
    // The kernel may still read these words: freeing them (or unloading its
    // module) would block until it quits, so they are left to the process.
    words.Abandon();
    stream.Abandon();
    kernel.module.Abandon();
  }
  if (!samples.ok()) {
    if (stopped.ok()) return samples.status();
    return absl::Status(samples.status().code(),
                        absl::StrCat(samples.status().message(), "; then ", stopped.message()));
  }
  if (!stopped.ok()) return stopped;
  return samples;
}

// ---------------------------------------------------------------------------
// Running the series
// ---------------------------------------------------------------------------

absl::Status ValidateOptions(const DynamicBaselineOptions& options) {
  constexpr int kMaxCount = 1 << 30;  // far below the echo's stop word and uint32 wrap
  if (options.steps < 1 || options.steps > kMaxCount || options.repetitions < 1 ||
      options.repetitions > kMaxCount || options.round_trips < 1 ||
      options.round_trips > kMaxCount) {
    return absl::InvalidArgumentError(absl::StrCat(
        "dynamic baselines need 1 <= steps, repetitions, round_trips <= ", kMaxCount,
        "; got steps=", options.steps, " repetitions=", options.repetitions,
        " round_trips=", options.round_trips));
  }
  return absl::OkStatus();
}

std::vector<std::string> SeriesNotes(const DynamicBaselineOptions& options) {
  const std::string chain = absl::StrCat(options.steps, " dependent steps decided on the GPU, ");
  const std::string sample = absl::StrCat("; a sample: launch to cuStreamSynchronize / steps, ",
                                          options.repetitions, " repetitions after a warm-up");
  return {
      absl::StrCat(chain, "CUDA graph with a conditional WHILE node, 1-kernel body setting the "
                          "condition",
                   sample),
      absl::StrCat(chain, "device-launchable 1-kernel graph that tail-relaunches itself",
                   sample),
      absl::StrCat(chain, "CDP2 kernel that tail-launches itself (cudaStreamTailLaunch)", sample),
      absl::StrCat("host writes a pinned mapped word, a resident one-warp kernel echoes it "
                   "(system-scope acquire/release); a sample: one round trip, ",
                   options.round_trips, " after ", kEchoWarmupRoundTrips, " warm-up"),
  };
}

BaselineSeries MakeSeries(std::string name, std::string note,
                          absl::StatusOr<Samples> samples) {
  BaselineSeries series;
  series.name = std::move(name);
  series.note = std::move(note);
  if (samples.ok()) {
    series.us_per_step = std::move(samples->us_per_step);
    series.cpu_us_per_step = samples->cpu_us_per_step;
    series.syncs_per_step = samples->syncs_per_step;
  } else {
    series.status = std::move(samples).status();
  }
  return series;
}

}  // namespace

const std::vector<DynamicBaselineKernel>& DynamicBaselineKernels() {
  static const std::vector<DynamicBaselineKernel>* const kernels =
      new std::vector<DynamicBaselineKernel>{
          {kWhileNodeName, "cuda_while_node.cu", kWhileNodeSource, {"while_step"}, false},
          {kGraphRelaunchName, "cuda_graph_tail_relaunch.cu", kGraphRelaunchSource,
           {"graph_relaunch_step"}, false},
          {kCdpTailLaunchName, "cuda_cdp2_tail_launch.cu", kCdpTailLaunchSource, {"cdp_step"},
           true},
          {kPinnedRoundTripName, "pinned_round_trip.cu", kPinnedEchoSource, {"pinned_echo"},
           false},
      };
  return *kernels;
}

absl::StatusOr<LinkedImage> BuildDynamicBaselineKernel(const Compiler& compiler,
                                                       const std::string& arch,
                                                       const DynamicBaselineKernel& kernel) {
  CompileOptions compile;
  compile.arch = arch;
  LinkOptions link;
  // Device-side <<<>>> launches call the device runtime's entry points
  // (__cudaCDP2LaunchDeviceV2, ...): without the library the link fails.
  if (kernel.uses_device_runtime) {
    link.libraries.push_back(absl::StrCat(compiler.cuda_home(), "/lib64/libcudadevrt.a"));
  }
  absl::StatusOr<LinkedImage> image =
      compiler.CompileAndLink(kernel.file_name, kernel.source, compile, link);
  if (!image.ok()) {
    return absl::Status(image.status().code(), absl::StrCat(kernel.baseline, ": ",
                                                            image.status().message()));
  }
  return image;
}

absl::Status CompileDynamicBaselineKernels(const Compiler& compiler, const std::string& arch) {
  for (const DynamicBaselineKernel& kernel : DynamicBaselineKernels()) {
    absl::StatusOr<LinkedImage> image = BuildDynamicBaselineKernel(compiler, arch, kernel);
    if (!image.ok()) return image.status();
  }
  return absl::OkStatus();
}

std::vector<BaselineSeries> RunDynamicBaselines(const CudaDriver& cu, const Compiler& compiler,
                                                const std::string& arch,
                                                const DynamicBaselineOptions& options) {
  const std::vector<std::string> names = {kWhileNodeName, kGraphRelaunchName, kCdpTailLaunchName,
                                          kPinnedRoundTripName};
  const std::vector<std::string> notes = SeriesNotes(options);

  // A problem every baseline shares is reported by every series.
  CUcontext context = nullptr;
  absl::Status shared = ValidateOptions(options);
  if (shared.ok()) shared = cu.Check(cu.cuCtxGetCurrent(&context), "cuCtxGetCurrent");
  if (shared.ok() && context == nullptr) {
    shared = absl::FailedPreconditionError(
        "no current CUDA context: retain the primary context and make it current first");
  }

  const std::vector<std::function<absl::StatusOr<Samples>()>> runs = {
      [&] { return RunWhileNode(cu, compiler, arch, context, options); },
      [&] { return RunGraphTailRelaunch(cu, compiler, arch, options); },
      [&] { return RunCdpTailLaunch(cu, compiler, arch, options); },
      [&] { return RunPinnedRoundTrip(cu, compiler, arch, options); },
  };
  std::vector<BaselineSeries> series;
  for (size_t i = 0; i < runs.size(); ++i) {
    if (!shared.ok()) {
      series.push_back(MakeSeries(names[i], notes[i], shared));
      continue;
    }
    if (!options.only.empty() &&
        std::find(options.only.begin(), options.only.end(), names[i]) == options.only.end()) {
      series.push_back(MakeSeries(names[i], notes[i], absl::CancelledError("not selected")));
      continue;
    }
    series.push_back(MakeSeries(names[i], notes[i], runs[i]()));
    if (!series.back().status.ok()) {
      // Said at once: a later baseline may take the process down.
      std::fprintf(stderr, "%s failed: %s\n", names[i].c_str(),
                   std::string(series.back().status.message()).c_str());
      // A baseline that lost the context takes every later one with it: say
      // so once, instead of four confusing driver errors.
      if (IsContextLost(cu.cuStreamQuery(nullptr))) {
        shared = absl::FailedPreconditionError(
            absl::StrCat("not run: the CUDA context was lost during ", names[i]));
      }
    }
  }
  return series;
}

#undef BASELINE_ASSIGN_OR_RETURN
#undef BASELINE_CONCAT
#undef BASELINE_CONCAT_INNER
#undef BASELINE_RETURN_IF_ERROR

}  // namespace grosr
