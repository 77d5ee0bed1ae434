// Run-time compilation of CUDA C++ into loadable device code.
//
// Every piece of GROSR's device code (the scheduler kernel, tasks, benchmark
// kernels) goes through this typed chain:
//
//   source --Compile (NVRTC, -rdc)--> CompiledUnit (relocatable cubin)
//          --Link (nvJitLink)-------> LinkedImage  (cubin for cuModuleLoadData)
//
// Both steps are cached on disk by content (see CompileCache), so reloading an
// unchanged task costs a file read. Neither step touches the GPU or the
// driver: compiling never blocks a running kernel.
//
// Link-time optimisation is refused: code that is called through function
// pointers from another module (every task) came out with module-relative
// addresses under -dlto/-lto on the GPU machine (../shared/GPU_FACTS.md).
//
// Example:
//   ASSIGN_OR_RETURN(auto compiler, Compiler::Create({}));
//   CompileOptions options;
//   options.arch = "sm_90";
//   ASSIGN_OR_RETURN(CompiledUnit unit,
//                    compiler->CompileFile("tasks/add.cu", options));
//   ASSIGN_OR_RETURN(LinkedImage image, compiler->Link({&unit}, {"sm_90"}));
//   driver->cuModuleLoadData(&module, image.cubin.data());
//
// Errors: a source that does not compile gives InvalidArgument whose message
// holds NVRTC's log, in which every diagnostic names the source by the name
// it was given (the file's own path for CompileFile) and its line. A failed
// link gives InvalidArgument with nvJitLink's log.
//
// Thread safety: all methods may be called concurrently.
#ifndef GROSR_JIT_COMPILER_H_
#define GROSR_JIT_COMPILER_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/types/span.h"
#include "jit/compile_cache.h"

namespace grosr {

// A header served from memory, found by `#include "name"` or `<name>`.
struct InMemoryHeader {
  std::string name;
  std::string text;
};

struct CompileOptions {
  // Target, e.g. "sm_90". Empty: DefaultArchitecture().
  std::string arch;
  // Headers served from memory; they shadow files of the same name.
  std::vector<InMemoryHeader> headers;
  // Searched for quoted and angle includes after the including file's folder.
  // The toolkit's CCCL folder is always searched last.
  std::vector<std::string> include_dirs;
  // "NAME" or "NAME=VALUE".
  std::vector<std::string> defines;
  // -maxrregcount; 0 leaves the compiler's choice.
  int max_registers = 0;
  // -lineinfo: source lines in profiles and sanitizer reports.
  bool line_info = true;
  // Passed to NVRTC unchanged (after the LTO check).
  std::vector<std::string> extra_options;
};

// Relocatable device code of one translation unit.
struct CompiledUnit {
  std::string name;   // the source's name, as given
  std::string arch;   // the target it was compiled for
  std::string cubin;  // relocatable ELF
  std::string log;    // warnings, if any
  bool from_cache = false;
};

struct LinkOptions {
  std::string arch;  // empty: DefaultArchitecture()
  // Static device libraries (e.g. libcudadevrt.a) to link in.
  std::vector<std::string> libraries;
  std::vector<std::string> extra_options;
};

// A linked cubin, ready for cuModuleLoadData.
struct LinkedImage {
  std::string cubin;
  std::string log;
  bool from_cache = false;
};

class Compiler {
 public:
  struct Options {
    // Where compiled code is cached; empty: CompileCache::DefaultDirectory().
    std::string cache_dir;
    bool use_cache = true;
    // The CUDA toolkit (for CCCL headers and device libraries); empty:
    // $CUDA_HOME, else /usr/local/cuda.
    std::string cuda_home;
  };

  // What the compiler has done since it was created (observable in tests).
  struct Counters {
    uint64_t nvrtc_compiles = 0;  // NVRTC invocations
    uint64_t nvjitlink_links = 0; // nvJitLink invocations
    uint64_t cache_hits = 0;
    uint64_t cache_misses = 0;
  };

  // Fails when the toolkit's headers are missing.
  static absl::StatusOr<std::unique_ptr<Compiler>> Create(Options options);

  // `name` is what diagnostics call the source: pass a file's path.
  absl::StatusOr<CompiledUnit> Compile(const std::string& name,
                                       const std::string& source,
                                       const CompileOptions& options) const;
  // Reads and compiles `path`; its folder is searched for quoted includes.
  absl::StatusOr<CompiledUnit> CompileFile(const std::string& path,
                                           const CompileOptions& options) const;

  absl::StatusOr<LinkedImage> Link(absl::Span<const CompiledUnit* const> units,
                                   const LinkOptions& options) const;
  // One source compiled and linked alone (kernels, benchmarks, probes).
  // The link targets the unit's architecture unless `link` names one.
  absl::StatusOr<LinkedImage> CompileAndLink(const std::string& name, const std::string& source,
                                             const CompileOptions& compile,
                                             const LinkOptions& link = {}) const;

  Counters counters() const;
  const std::string& cuda_home() const { return cuda_home_; }
  // Folder holding CCCL (cuda/atomic, cuda/std/...).
  std::string cccl_include_dir() const;
  // "nvrtc 13.0, nvJitLink 13.0".
  const std::string& versions() const { return versions_; }

 private:
  Compiler(Options options, std::string cuda_home, std::string versions,
           std::string cccl_identity);

  absl::StatusOr<CompiledUnit> CompileUncached(
      const std::string& name, const std::string& source,
      const CompileOptions& options, const std::string& arch) const;

  Options options_;
  std::string cuda_home_;
  std::string versions_;
  std::string cccl_identity_;  // hash of CCCL's version header
  std::optional<CompileCache> cache_;
  mutable std::atomic<uint64_t> nvrtc_compiles_{0};
  mutable std::atomic<uint64_t> nvjitlink_links_{0};
  mutable std::atomic<uint64_t> cache_hits_{0};
  mutable std::atomic<uint64_t> cache_misses_{0};
};

// The architecture of device 0 ("sm_90"), or "sm_90" when there is no GPU or
// driver. Computed once per process.
const std::string& DefaultArchitecture();

}  // namespace grosr

#endif  // GROSR_JIT_COMPILER_H_
