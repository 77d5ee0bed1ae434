// Experiment B: throughput of tiny tasks (a few arithmetic operations
// each), swept from 1,000 to 10,000,000 tasks, against CUDA's launch paths.
//
// Series (results named "tput_<series>_<N>", group = series):
//   cuda_launch_sync    a kernel launch and a synchronize per task
//   cuda_launch_stream  a launch per task, one synchronize at the end
//   cuda_graph_replay   a graph of min(N, graph_nodes) independent kernel
//                       nodes, replayed until N kernels ran (instantiation
//                       excluded)
//   cuda_graph_chain_replay  the same nodes chained one after another
//   grosr_host_submit   N tasks through the ring (SubmitBatch), one Drain
//   grosr_gpu_spawn     one root task whose spawned fan-out runs N tasks
// Each reports tasks/s (median over repetitions), the run's wall time, host
// CPU time per task (getrusage) and host synchronizations per task. Every
// run's output is checked against a CPU reference (poisoned first).
#ifndef GROSR_BENCH_THROUGHPUT_H_
#define GROSR_BENCH_THROUGHPUT_H_

#include <string>
#include <vector>

#include "bench/bench_support.h"
#include "jit/compiler.h"
#include "jit/cuda_driver.h"

namespace grosr {

struct ThroughputPlan {
  std::vector<uint64_t> sizes = {1000, 10000, 100000, 1000000, 10000000};
  // Series whose cost is linear in host work stop here (time, not memory):
  uint64_t launch_sync_max = 100000;  // ~9 us a task
  uint64_t launch_max = 1000000;      // ~3 us a task
  uint32_t graph_nodes = 10000;
};

// Compiles and links the experiment's kernel and task module for `arch`
// (no GPU needed): CI's check that the sources stay valid.
absl::Status CompileThroughputCode(const Compiler& compiler, const std::string& arch);

// The CUDA series, in a context of their own (run before any Runtime).
void RunThroughputBaselines(const CudaDriver& cu, const Compiler& compiler,
                            const std::string& arch, const ThroughputPlan& plan,
                            std::vector<Result>* results);

// The GROSR series: creates, uses and shuts down a Runtime sized for the
// largest N. Fills `header` from it.
void RunThroughputGrosr(const ThroughputPlan& plan, std::vector<Result>* results,
                        RunHeader* header);

}  // namespace grosr

#endif  // GROSR_BENCH_THROUGHPUT_H_
