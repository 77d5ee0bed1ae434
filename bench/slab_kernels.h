// Standalone kernels and host helpers around grosr::SlabAllocator, shared by
// the GPU tests (tests/gpu_slab_allocator_test.cc) and the allocator
// benchmark (bench/alloc_bench.cc), so that both measure and check the same
// code.
//
// The device side is one CUDA source (SlabKernelSource) compiled at run time
// by the project's Compiler against the runtime's embedded headers. Every
// kernel takes one thread per object, 256 threads per block:
//   slab_alloc / cuda_alloc      thread i allocates sizes[i] (or `bytes`)
//   fill / verify                a pattern derived from (owner, seed) over
//                                the whole block; verify counts bad blocks
//   slab_free / cuda_free        thread i frees block order[i] (or i)
//   slab_churn / cuda_churn      rounds of allocate, write and check the
//                                first and last word, free
//   slab_alloc_until_null        one thread allocates until null
// slab_* use the allocator view passed by value; cuda_* use CUDA's in-kernel
// malloc/free (the baseline).
//
// The host side: GpuSession (driver, primary context, a stream, bounded
// waits), SlabKernels (the loaded module, typed launches) and DeviceSlab
// (arena and metadata in device memory, a host-built view, snapshots of the
// allocator's state).
//
// Every wait is bounded: a kernel that does not finish within the session's
// deadline makes the wait return DeadlineExceeded and the session "lost";
// nothing on a lost session touches the driver again (a stuck kernel would
// block cuMemFree and cuModuleUnload), and no later session opens in the
// process. The caller reports and exits.
//
// Example:
//   ASSIGN_OR_RETURN(auto gpu, GpuSession::Open({}));
//   ASSIGN_OR_RETURN(auto compiler, Compiler::Create({}));
//   ASSIGN_OR_RETURN(SlabKernels kernels, SlabKernels::Load(*gpu, *compiler));
//   ASSIGN_OR_RETURN(DeviceSlab slab, DeviceSlab::Create(*gpu, 1 << 30));
//   RETURN_IF_ERROR(slab.Reset());
//   RETURN_IF_ERROR(kernels.SlabAlloc(slab.view(), n, 64, 0, blocks));
//   RETURN_IF_ERROR(gpu->Wait());
#ifndef GROSR_BENCH_SLAB_KERNELS_H_
#define GROSR_BENCH_SLAB_KERNELS_H_

#include <cuda.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "absl/functional/function_ref.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "grosr/slab_allocator.h"
#include "host/cuda_resources.h"
#include "host/slab_layout.h"
#include "jit/compiler.h"
#include "jit/cuda_driver.h"

namespace grosr {

// Threads per block of every kernel of SlabKernelSource.
inline constexpr uint32_t kSlabKernelBlock = 256;

// The CUDA source of the kernels (includes <grosr/slab_allocator.h>).
const char* SlabKernelSource();
// The kernels' entry names.
const std::vector<std::string>& SlabKernelNames();

// Compiles and links SlabKernelSource for `arch` (no GPU needed).
// min_blocks: the kernels' __launch_bounds__ minimum of 256-thread blocks
// a SM (4: 64 registers, a task's budget; 8: 32 registers, a full grid
// resident at once). defines: NAME=VALUE for the allocator's tuning knobs
// (slab_allocator.h), experiments only.
constexpr uint32_t kSlabKernelsMinBlocks = 4;
absl::StatusOr<LinkedImage> BuildSlabKernels(const Compiler& compiler, const std::string& arch,
                                             uint32_t min_blocks = kSlabKernelsMinBlocks,
                                             const std::vector<std::string>& defines = {});

// --- host-side helpers (no GPU) -----------------------------------------------

// The word the fill kernel writes at 32-bit word `word` of `owner`'s block.
uint32_t SlabPatternWord(uint32_t owner, uint32_t word, uint32_t seed);

// A random permutation of 0..n-1 (Fisher-Yates, seeded).
std::vector<uint32_t> RandomPermutation(uint32_t n, uint64_t seed);

// Sizes spread over every class from 1 B to `max_bytes` (log-uniform class,
// uniform inside it), seeded.
std::vector<uint32_t> MixedSizes(uint32_t n, uint32_t max_bytes, uint64_t seed);

// Checks blocks[i] (non-null, 16-byte aligned, inside [lo, hi), sizes[i]
// bytes long) for overlaps. Returns the first problem found, or OK.
absl::Status CheckDisjoint(absl::Span<const uint64_t> blocks, absl::Span<const uint32_t> sizes,
                           uint64_t lo, uint64_t hi);

// --- GPU ------------------------------------------------------------------------

struct GpuInfo {
  std::string name;
  std::string arch;    // "sm_90"
  std::string driver;  // "13.0"
  int sm_count = 0;
  int max_threads_per_sm = 0;
  uint64_t total_memory = 0;
};

class GpuSession {
 public:
  struct Options {
    int device = 0;
    // Raised with cuCtxSetLimit before anything is loaded; 0 leaves it.
    uint64_t malloc_heap_bytes = 0;
    // How long any wait for the GPU may take.
    absl::Duration deadline = absl::Seconds(60);
  };
  // FailedPrecondition whose message starts "a CUDA GPU is required" when
  // there is no driver or device; also when an earlier session was lost.
  static absl::StatusOr<std::unique_ptr<GpuSession>> Open(const Options& options);
  ~GpuSession();
  GpuSession(const GpuSession&) = delete;
  GpuSession& operator=(const GpuSession&) = delete;

  const CudaDriver& cu() const { return *cu_; }
  CUdevice device() const { return device_; }
  const GpuInfo& info() const { return info_; }
  CUstream stream() const { return stream_.get(); }
  absl::Duration deadline() const { return deadline_; }
  void set_deadline(absl::Duration deadline) { deadline_ = deadline; }
  bool lost() const { return lost_; }

  // Launches `function` over `threads` threads (kSlabKernelBlock a block).
  absl::Status Launch(CUfunction function, uint64_t threads, void** params,
                      const char* what);
  // Waits for the stream, at most the deadline.
  absl::Status Wait(const char* what = "kernel");
  // Enqueues `work` between two events, waits, returns the GPU time in ms.
  absl::StatusOr<double> TimeMs(absl::FunctionRef<absl::Status()> work, const char* what);

  // Device memory; copies (synchronous, on the session's stream).
  absl::StatusOr<DeviceMemory> Allocate(size_t bytes);
  absl::Status Upload(CUdeviceptr to, const void* from, size_t bytes);
  absl::Status Download(void* to, CUdeviceptr from, size_t bytes);
  absl::Status Zero(CUdeviceptr to, size_t bytes);
  template <typename T>
  absl::Status Upload(CUdeviceptr to, const std::vector<T>& from) {
    return Upload(to, from.data(), from.size() * sizeof(T));
  }
  template <typename T>
  absl::StatusOr<std::vector<T>> Download(CUdeviceptr from, size_t count) {
    std::vector<T> out(count);
    absl::Status s = Download(out.data(), from, count * sizeof(T));
    if (!s.ok()) return s;
    return out;
  }

  // Threads of `function` resident on the whole GPU at `kSlabKernelBlock`
  // threads a block (occupancy API).
  absl::StatusOr<uint32_t> ResidentThreads(CUfunction function);

 private:
  GpuSession() = default;
  absl::Status Fail(absl::Status status);

  const CudaDriver* cu_ = nullptr;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  GpuInfo info_;
  Stream stream_;
  CUevent start_ = nullptr, stop_ = nullptr;
  absl::Duration deadline_ = absl::Seconds(60);
  bool lost_ = false;
};

// The loaded kernels. Launches are asynchronous on the session's stream;
// pointer arguments are device addresses (0 for "none").
class SlabKernels {
 public:
  static absl::StatusOr<SlabKernels> Load(GpuSession& gpu, const Compiler& compiler,
                                          uint32_t min_blocks = kSlabKernelsMinBlocks,
                                          const std::vector<std::string>& defines = {});
  SlabKernels() = default;
  SlabKernels(SlabKernels&&) = default;
  SlabKernels& operator=(SlabKernels&&) = default;
  ~SlabKernels();

  // blocks[i] = Allocate(sizes ? sizes[i] : bytes).
  absl::Status SlabAlloc(const SlabAllocator& heap, uint32_t n, uint32_t bytes,
                         CUdeviceptr sizes, CUdeviceptr blocks);
  // Thread i frees blocks[order ? order[i] : i]; codes[j] = Free's result for
  // block j (if codes); refused counts results other than kFreeOk (if set).
  absl::Status SlabFree(const SlabAllocator& heap, uint32_t n, CUdeviceptr blocks,
                        CUdeviceptr order, CUdeviceptr codes, CUdeviceptr refused);
  // `rounds` of Allocate(min..max bytes, random), write and check the first
  // and last 32-bit word, Free. Adds to nulls and errors (uint64 counters).
  absl::Status SlabChurn(const SlabAllocator& heap, uint32_t n, uint32_t rounds,
                         uint32_t min_bytes, uint32_t max_bytes, uint32_t seed,
                         CUdeviceptr nulls, CUdeviceptr errors);
  // One thread allocates `bytes` until null or `max` blocks; *count = blocks.
  absl::Status SlabAllocUntilNull(const SlabAllocator& heap, uint32_t bytes, uint32_t max,
                                  CUdeviceptr blocks, CUdeviceptr count);

  // The same with CUDA's in-kernel malloc/free.
  absl::Status CudaAlloc(uint32_t n, uint32_t bytes, CUdeviceptr blocks);
  absl::Status CudaFree(uint32_t n, CUdeviceptr blocks, CUdeviceptr order);
  absl::Status CudaChurn(uint32_t n, uint32_t rounds, uint32_t min_bytes, uint32_t max_bytes,
                         uint32_t seed, CUdeviceptr nulls, CUdeviceptr errors);

  // Writes the pattern of (owner i, seed) over block i (null blocks skipped).
  absl::Status Fill(uint32_t n, CUdeviceptr blocks, uint32_t bytes, CUdeviceptr sizes,
                    uint32_t seed);
  // Counts (uint32 at bad) non-null blocks whose pattern differs, and nulls
  // (uint32 at nulls, if set).
  absl::Status Verify(uint32_t n, CUdeviceptr blocks, uint32_t bytes, CUdeviceptr sizes,
                      uint32_t seed, CUdeviceptr bad, CUdeviceptr nulls);

  CUfunction slab_alloc() const { return slab_alloc_; }
  CUfunction cuda_alloc() const { return cuda_alloc_; }

 private:
  GpuSession* gpu_ = nullptr;
  Module module_;
  CUfunction slab_alloc_ = nullptr, slab_free_ = nullptr, slab_churn_ = nullptr,
             slab_until_null_ = nullptr, cuda_alloc_ = nullptr, cuda_free_ = nullptr,
             cuda_churn_ = nullptr, fill_ = nullptr, verify_ = nullptr;
};

// What the allocator holds, read from the device between kernels.
struct SlabSnapshot {
  SlabCounters counters{};
  SlabUsage usage{};
  // Pages out of the pool that are not an empty hint page: blocks still
  // live, or leaked. Zero once everything was freed.
  uint32_t pages_held = 0;
  uint32_t hint_pages = 0;  // empty pages kept as hints
  std::vector<uint64_t> states;  // every page's state word
};

// An arena with its metadata in device memory (cuMemAlloc).
class DeviceSlab {
 public:
  static absl::StatusOr<DeviceSlab> Create(GpuSession& gpu, uint64_t arena_bytes,
                                           uint32_t page_shift = 16,
                                           uint32_t max_shard_factor = SlabAllocator::kDefaultShardFactor);
  DeviceSlab() = default;
  DeviceSlab(DeviceSlab&&) = default;
  DeviceSlab& operator=(DeviceSlab&&) = default;
  ~DeviceSlab();
  // Every page free, counters zero (synchronous).
  absl::Status Reset();
  absl::StatusOr<SlabSnapshot> Snapshot();

  // The view kernels take (device addresses).
  const SlabAllocator& view() const { return view_; }
  const SlabLayout& layout() const { return layout_; }
  CUdeviceptr arena() const { return arena_.get(); }
  uint64_t arena_bytes() const { return layout_.arena_bytes(); }
  // Abandons the memory without freeing it (the session was lost).
  void Abandon();

 private:
  GpuSession* gpu_ = nullptr;
  SlabLayout layout_;
  DeviceMemory arena_;
  DeviceMemory metadata_;
  SlabAllocator view_{};
};

}  // namespace grosr

#endif  // GROSR_BENCH_SLAB_KERNELS_H_
