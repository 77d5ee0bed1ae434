// Building the runtime's device code: the scheduler kernel and task modules.
//
// Everything here runs on the CPU (NVRTC, nvJitLink, cubin inspection), so a
// task that breaks a rule is refused before any GPU work, and CI tests it
// without a GPU. The Runtime loads what these functions return.
//
// The loader's rules, each from a measured hazard of code loaded into a
// running kernel (../shared/GPU_FACTS.md):
//  - no LTO (refused by the JIT itself);
//  - registers: tasks are compiled with the scheduler's -maxrregcount, and a
//    module whose functions still need more than the kernel was given is
//    refused (the kernel's count is fixed at its own link: a callee needing
//    more crashes);
//  - stack: a function whose stack need exceeds the stack limit set at
//    start-up is refused (indirect calls hide the callee's frame);
//  - no __constant__ data (it would read the calling kernel's bank) and no
//    __shared__ variables (the scheduler owns shared memory).
#ifndef GROSR_HOST_DEVICE_CODE_H_
#define GROSR_HOST_DEVICE_CODE_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "jit/compiler.h"

namespace grosr {

// What device code is compiled against.
struct DeviceCodeTarget {
  std::string arch = "sm_90";
  int register_budget = 64;    // -maxrregcount for the kernel and tasks
  int warps_per_block = 8;
  uint32_t stack_bytes = 4096; // CU_LIMIT_STACK_SIZE set before launch
  // Stack the scheduler uses around a task: its kernel's frame below the
  // task and the deepest service the task may call (spawn, the heap) above
  // it. SchedulerImage::StackAroundTask().
  uint32_t scheduler_stack_bytes = 0;
  std::vector<std::string> include_dirs;  // extra folders for tasks
};

// Compile options for any device source that includes the runtime's headers
// (served from memory: the binary carries them).
CompileOptions DeviceCompileOptions(const DeviceCodeTarget& target);

struct SchedulerImage {
  std::string cubin;
  uint32_t kernel_registers = 0;   // what ptxas gave the kernel
  uint32_t kernel_stack_bytes = 0; // the kernel's own frame
  uint32_t service_stack_bytes = 0; // the deepest task service (task_services.h)
  // DeviceCodeTarget::scheduler_stack_bytes for this image.
  uint32_t StackAroundTask() const { return kernel_stack_bytes + service_stack_bytes; }
};

// Compiles and links the persistent kernel for `target`.
absl::StatusOr<SchedulerImage> BuildSchedulerImage(const Compiler& compiler,
                                                   const DeviceCodeTarget& target);

struct TaskModuleImage {
  std::string source_name;
  std::string cubin;                    // linked, for cuModuleLoadData
  std::vector<std::string> task_names;  // in symbol-table order
  uint32_t max_registers = 0;
  uint32_t max_stack_bytes = 0;
  // Device variables the module defines beyond its tasks' entry and info
  // symbols. Each costs load and unload time during the pause.
  uint32_t device_variables = 0;
  std::string compile_log;              // warnings (the loader's too)
  bool from_cache = false;
  absl::Duration compile_time;
  absl::Duration link_time;
};

// Compiles, links and checks a task source against the loader's rules.
// `kernel_registers` is the scheduler kernel's register count.
absl::StatusOr<TaskModuleImage> BuildTaskModule(const Compiler& compiler,
                                                const DeviceCodeTarget& target,
                                                uint32_t kernel_registers,
                                                const std::string& name,
                                                const std::string& source);

// Names of the symbols the task ABI emits for task `name`.
std::string TaskEntrySymbol(const std::string& name);
std::string TaskInfoSymbol(const std::string& name);

}  // namespace grosr

#endif  // GROSR_HOST_DEVICE_CODE_H_
