// Reads the symbol table of a cubin (an ELF file) without the driver.
//
// The loader finds a module's tasks by symbol name (the task ABI's macro
// emits `grosr_task_entry_<name>`), and the loader's rules (no __constant__,
// no static __shared__ in loaded code) are checked on section names, all
// before anything is loaded on the GPU.
#ifndef GROSR_JIT_CUBIN_H_
#define GROSR_JIT_CUBIN_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace grosr {

struct CubinSymbol {
  std::string name;
  std::string section;  // name of the section it is defined in; "" if none
  uint64_t size = 0;
  bool is_function = false;
  bool is_object = false;
  bool is_global = false;  // global or weak binding
};

// Per-function resources from the cubin's .nv.info attributes (what ptxas
// decided): the loader checks them against the scheduler kernel's budget.
struct FunctionResources {
  std::string name;
  uint32_t registers = 0;     // EIATTR_REGCOUNT
  uint32_t frame_bytes = 0;   // EIATTR_FRAME_SIZE (own stack frame)
  uint32_t stack_bytes = 0;   // EIATTR_MAX_STACK_SIZE / MIN_STACK_SIZE (with callees)
};

struct CubinContents {
  std::vector<std::string> sections;
  std::vector<CubinSymbol> symbols;
  std::vector<FunctionResources> functions;

  // The entry for `name`, or nullptr.
  const FunctionResources* FindFunction(absl::string_view name) const;
  const CubinSymbol* FindSymbol(absl::string_view name) const;
};

// InvalidArgument if `cubin` is not a well-formed 64-bit ELF file.
absl::StatusOr<CubinContents> InspectCubin(absl::string_view cubin);

}  // namespace grosr

#endif  // GROSR_JIT_CUBIN_H_
