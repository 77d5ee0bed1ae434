#include "host/device_code.h"

#include <algorithm>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "jit/cubin.h"
#include "runtime/device_sources.h"

namespace grosr {
namespace {

constexpr absl::string_view kEntryPrefix = "grosr_task_entry_";
constexpr absl::string_view kInfoPrefix = "grosr_task_info_";
constexpr absl::string_view kKernelName = "grosr_scheduler";
// More device variables than this in a task module earns a warning.
constexpr uint32_t kManyDeviceVariables = 64;

std::string SourceOf(absl::string_view name) {
  for (const EmbeddedSource& source : DeviceSources()) {
    if (name == source.name) return source.text;
  }
  return "";
}

// "file:line: " of the first line holding both `keyword` and `symbol`
// (or only `keyword` when the symbol is mangled beyond recognition).
std::string LocateInSource(const std::string& name, const std::string& source,
                           absl::string_view keyword, absl::string_view symbol) {
  int line_number = 0;
  int keyword_only = 0;
  for (absl::string_view line : absl::StrSplit(source, '\n')) {
    ++line_number;
    if (!absl::StrContains(line, keyword)) continue;
    if (!symbol.empty() && absl::StrContains(line, symbol)) {
      return absl::StrCat(name, ":", line_number, ": ");
    }
    if (keyword_only == 0) keyword_only = line_number;
  }
  if (keyword_only != 0) return absl::StrCat(name, ":", keyword_only, ": ");
  return absl::StrCat(name, ": ");
}

// A readable name for a shared-memory symbol such as "$___ZZ1fE1s__32"
// (variable s in function f): the last identifier of the mangled name.
std::string SharedVariableName(const std::string& symbol) {
  absl::string_view name = symbol;
  size_t end = name.rfind("__");
  if (end != absl::string_view::npos && end > 0) name = name.substr(0, end);
  size_t e = name.rfind('E');
  if (e != absl::string_view::npos) {
    absl::string_view tail = name.substr(e + 1);
    size_t digits = 0;
    while (digits < tail.size() && absl::ascii_isdigit(tail[digits])) ++digits;
    if (digits > 0 && digits < tail.size()) return std::string(tail.substr(digits));
  }
  return symbol;
}

absl::Status CheckRules(const std::string& name, const std::string& source,
                        const CubinContents& relocatable) {
  for (const CubinSymbol& symbol : relocatable.symbols) {
    if (!symbol.is_object) continue;
    if (absl::StartsWith(symbol.section, ".nv.constant") &&
        symbol.section != ".nv.constant0") {
      return absl::InvalidArgumentError(absl::StrCat(
          LocateInSource(name, source, "__constant__", symbol.name),
          "__constant__ variable '", symbol.name,
          "' is not allowed in a task: code called from the scheduler reads "
          "the scheduler kernel's constant bank, not its own. Use a "
          "__device__ const variable instead."));
    }
    if (absl::StartsWith(symbol.section, ".nv.shared") ||
        absl::StartsWith(symbol.section, ".nv_debug.shared")) {
      std::string variable = SharedVariableName(symbol.name);
      return absl::InvalidArgumentError(absl::StrCat(
          LocateInSource(name, source, "__shared__", variable),
          "__shared__ variable '", variable,
          "' is not allowed in a task: the scheduler owns shared memory and "
          "other warps of the block run other tasks. Use registers, warp "
          "shuffles, or global memory."));
    }
  }
  return absl::OkStatus();
}

}  // namespace

std::string TaskEntrySymbol(const std::string& name) {
  return absl::StrCat(kEntryPrefix, name);
}
std::string TaskInfoSymbol(const std::string& name) {
  return absl::StrCat(kInfoPrefix, name);
}

CompileOptions DeviceCompileOptions(const DeviceCodeTarget& target) {
  CompileOptions options;
  options.arch = target.arch;
  for (const EmbeddedSource& source : DeviceSources()) {
    if (absl::EndsWith(source.name, ".h")) {
      options.headers.push_back({source.name, source.text});
    }
  }
  options.include_dirs = target.include_dirs;
  options.max_registers = target.register_budget;
  options.defines.push_back(
      absl::StrCat("GROSR_REGISTER_BUDGET=", target.register_budget));
  options.defines.push_back(
      absl::StrCat("GROSR_WARPS_PER_BLOCK=", target.warps_per_block));
  return options;
}

absl::StatusOr<SchedulerImage> BuildSchedulerImage(
    const Compiler& compiler, const DeviceCodeTarget& target) {
  std::string source = SourceOf("scheduler_kernel.cu");
  if (source.empty()) {
    return absl::InternalError("scheduler_kernel.cu is not embedded");
  }
  LinkOptions link;
  link.arch = target.arch;
  // The link sums the call tree's registers into the kernel's count; the
  // budget has to hold there too.
  link.extra_options.push_back(absl::StrCat("-maxrregcount=", target.register_budget));
  absl::StatusOr<LinkedImage> image = compiler.CompileAndLink(
      "grosr/scheduler_kernel.cu", source, DeviceCompileOptions(target), link);
  if (!image.ok()) return image.status();
  absl::StatusOr<CubinContents> contents = InspectCubin(image->cubin);
  if (!contents.ok()) return contents.status();
  const FunctionResources* kernel = contents->FindFunction(kKernelName);
  if (kernel == nullptr || kernel->registers == 0) {
    return absl::InternalError("scheduler kernel has no register count");
  }
  SchedulerImage result;
  result.cubin = std::move(image->cubin);
  result.kernel_registers = kernel->registers;
  result.kernel_stack_bytes = kernel->stack_bytes;
  // Tasks call these through TaskContext: their frames sit on the task's.
  for (const FunctionResources& function : contents->functions) {
    if (absl::StrContains(function.name, "Service")) {
      result.service_stack_bytes = std::max(
          result.service_stack_bytes, std::max(function.stack_bytes, function.frame_bytes));
    }
  }
  return result;
}

absl::StatusOr<TaskModuleImage> BuildTaskModule(const Compiler& compiler,
                                                const DeviceCodeTarget& target,
                                                uint32_t kernel_registers,
                                                const std::string& name,
                                                const std::string& source) {
  TaskModuleImage result;
  result.source_name = name;
  CompileOptions options = DeviceCompileOptions(target);
  // Quoted includes next to the task file.
  size_t slash = name.rfind('/');
  if (slash != std::string::npos) {
    options.include_dirs.insert(options.include_dirs.begin(),
                                name.substr(0, slash));
  }
  absl::Time start = absl::Now();
  absl::StatusOr<CompiledUnit> unit = compiler.Compile(name, source, options);
  result.compile_time = absl::Now() - start;
  if (!unit.ok()) return unit.status();
  result.compile_log = unit->log;
  result.from_cache = unit->from_cache;

  absl::StatusOr<CubinContents> relocatable = InspectCubin(unit->cubin);
  if (!relocatable.ok()) return relocatable.status();
  if (absl::Status rules = CheckRules(name, source, *relocatable); !rules.ok()) {
    return rules;
  }

  start = absl::Now();
  LinkOptions link;
  link.arch = target.arch;
  absl::StatusOr<LinkedImage> image = compiler.Link({&*unit}, link);
  result.link_time = absl::Now() - start;
  if (!image.ok()) return image.status();
  absl::StatusOr<CubinContents> linked = InspectCubin(image->cubin);
  if (!linked.ok()) return linked.status();

  for (const CubinSymbol& symbol : linked->symbols) {
    if (symbol.is_object && symbol.is_global && !absl::StartsWith(symbol.name, ".nv.") &&
        !absl::StartsWith(symbol.name, kEntryPrefix) &&
        !absl::StartsWith(symbol.name, kInfoPrefix)) {
      ++result.device_variables;
    }
    if (!symbol.is_object || !absl::StartsWith(symbol.name, kEntryPrefix)) {
      continue;
    }
    std::string task = symbol.name.substr(kEntryPrefix.size());
    if (linked->FindSymbol(TaskInfoSymbol(task)) == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": task '", task, "' has an entry but no ", TaskInfoSymbol(task),
          "; define tasks with GROSR_TASK"));
    }
    result.task_names.push_back(task);
  }
  if (result.task_names.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(
        name, " defines no task: write GROSR_TASK(name, Args) { ... } after "
              "#include <grosr/task.h>"));
  }
  for (const FunctionResources& function : linked->functions) {
    result.max_registers = std::max(result.max_registers, function.registers);
    result.max_stack_bytes = std::max(
        result.max_stack_bytes, std::max(function.stack_bytes, function.frame_bytes));
    if (function.registers > kernel_registers) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": function '", function.name, "' needs ", function.registers,
          " registers but the scheduler kernel has ", kernel_registers,
          " (register budget ", target.register_budget,
          "); calling it would crash the GPU context. Raise the runtime's "
          "register_budget or simplify the task."));
    }
    // The task's frame sits between the kernel's and the services' it may
    // call (spawn, the heap).
    const uint32_t stack = std::max(function.stack_bytes, function.frame_bytes);
    if (stack + target.scheduler_stack_bytes > target.stack_bytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          name, ": function '", function.name, "' needs ", stack, " bytes of stack",
          target.scheduler_stack_bytes == 0
              ? std::string()
              : absl::StrCat(" and the scheduler ", target.scheduler_stack_bytes,
                             " around it (its kernel's frame and the services a task calls)"),
          ", but the stack limit is ", target.stack_bytes,
          "; raise RuntimeOptions::stack_bytes or move large local arrays to global memory."));
    }
  }
  if (result.device_variables > kManyDeviceVariables) {
    // Measured on an H200 (bench/load_probe): ~550 such variables, which
    // NVRTC emits for the numeric_limits members <cuda/atomic> and
    // <cuda/std/limits> pull in, made a load ~2.6 ms and an unload ~1.9 ms
    // slower, all of it inside the scheduler's pause.
    absl::StrAppend(&result.compile_log, result.compile_log.empty() ? "" : "\n", name,
                    ": warning: the module defines ", result.device_variables,
                    " device variables (NVRTC emits one per numeric_limits member when "
                    "<cuda/atomic> or <cuda/std/limits> is included); each adds ~8 us to the "
                    "scheduler's pause when the module loads and unloads. Use the atomic "
                    "builtins (atomicAdd, atomicCAS, ...) in task code to keep loads fast.");
  }
  result.cubin = std::move(image->cubin);
  return result;
}

}  // namespace grosr
