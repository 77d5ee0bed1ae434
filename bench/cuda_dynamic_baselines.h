// CUDA's own mechanisms for dynamic, data-dependent control flow on the GPU,
// measured as baselines for GROSR's benchmarks.
//
// Each of the first three baselines is a chain of `steps` dependent steps in
// which the GPU itself decides, on data, whether to continue: a one-warp step
// kernel increments a device counter and asks for another step while
// counter < steps.
//   cuda_while_node          a CUDA graph with a conditional WHILE node whose
//                            body is the step kernel (cudaGraphSetConditional)
//   cuda_graph_tail_relaunch a device-launchable one-kernel graph that
//                            tail-relaunches itself (cudaGraphLaunch from the
//                            device into cudaStreamGraphTailLaunch)
//   cuda_cdp2_tail_launch    dynamic parallelism: the kernel tail-launches
//                            itself (<<<..., cudaStreamTailLaunch>>>)
// The fourth is the hardware floor for a host <-> GPU ping-pong:
//   pinned_round_trip        a resident one-warp kernel echoes a word the host
//                            writes into pinned mapped memory
//
// Every device source is compiled at run time through grosr::Compiler (NVRTC
// -rdc, nvJitLink) and loaded as its own module, so a baseline the driver
// refuses fails alone. Only the CDP2 source links libcudadevrt.a: its launch
// needs the library's entry points, while cudaGraphSetConditional and device
// cudaGraphLaunch stay undefined with or without it (the driver resolves them
// at load) and the library would only add its own memcpy/memset kernels
// (4 KB -> 200 KB images, measured with CUDA 13.0).
//
// Example (the caller owns the context):
//   cu.cuDevicePrimaryCtxRetain(&context, device);
//   cu.cuCtxSetCurrent(context);
//   for (const BaselineSeries& s : RunDynamicBaselines(cu, compiler, "sm_90", {}))
//     if (s.status.ok()) Summarize(s.name, s.us_per_step, s.note);
#ifndef GROSR_BENCH_CUDA_DYNAMIC_BASELINES_H_
#define GROSR_BENCH_CUDA_DYNAMIC_BASELINES_H_

#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "jit/compiler.h"
#include "jit/cuda_driver.h"

namespace grosr {

struct BaselineSeries {
  std::string name;              // e.g. "cuda_while_node"
  std::string note;              // one line: what one sample is
  absl::Status status;           // not OK: this baseline could not run (message says why); samples empty
  std::vector<double> us_per_step;  // one sample per repetition: wall time of the repetition / steps
  double cpu_us_per_step = -1;      // host CPU time (getrusage) over the timed part, per step
  double syncs_per_step = -1;       // host waits per step (a synchronize per chain; a spin per echo)
};

struct DynamicBaselineOptions {
  int steps = 10000;        // dependent steps per repetition (>= 1)
  int repetitions = 7;      // timed repetitions after one warm-up (>= 1)
  int round_trips = 10000;  // timed pinned round trips after a warm-up (>= 1)
  // Names of the baselines to run; empty: all. The others come back with a
  // "not selected" status. (A baseline that crashes the driver takes the
  // process with it: run them one per process to isolate them.)
  std::vector<std::string> only;
};

// Runs the four baselines in the order above, one series each (always four
// series, in that order). For pinned_round_trip a sample is one round trip.
//
// Needs a current CUDA context (the caller retained the primary context and
// made it current). Never exits or aborts: a baseline that fails reports it
// in its status and the others still run; after a baseline loses the context
// the later ones report that instead of running.
std::vector<BaselineSeries> RunDynamicBaselines(const CudaDriver& cu, const Compiler& compiler,
                                                const std::string& arch,
                                                const DynamicBaselineOptions& options);

// One baseline's device code, for compile checks without a GPU.
struct DynamicBaselineKernel {
  std::string baseline;              // the series it serves, e.g. "cuda_while_node"
  std::string file_name;             // what compile diagnostics call the source
  std::string source;                // CUDA C++ for NVRTC
  std::vector<std::string> kernels;  // extern "C" __global__ entry points it defines
  bool uses_device_runtime = false;  // links libcudadevrt.a (device-side <<<>>> launches)
};

// The device sources of all four baselines.
const std::vector<DynamicBaselineKernel>& DynamicBaselineKernels();

// Compiles and links one baseline's source for `arch` ("sm_90"), adding the
// toolkit's libcudadevrt.a when `kernel.uses_device_runtime`.
absl::StatusOr<LinkedImage> BuildDynamicBaselineKernel(const Compiler& compiler,
                                                       const std::string& arch,
                                                       const DynamicBaselineKernel& kernel);

// Compiles and links every baseline's source; the first failure names the
// baseline and carries NVRTC's or nvJitLink's log. Needs no GPU.
absl::Status CompileDynamicBaselineKernels(const Compiler& compiler, const std::string& arch);

}  // namespace grosr

#endif  // GROSR_BENCH_CUDA_DYNAMIC_BASELINES_H_
