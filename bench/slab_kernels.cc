#include "bench/slab_kernels.h"

#include <algorithm>
#include <atomic>
#include <numeric>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "host/device_code.h"

namespace grosr {
namespace {

// Device code. PatternWord must stay the same function as SlabPatternWord
// below (the GPU test compares a block read back with the host's).
constexpr char kSlabKernelSource[] = R"grosr_src(
#include <grosr/slab_allocator.h>

using grosr::SlabAllocator;
typedef unsigned long long u64;

namespace {

constexpr unsigned kBlock = 256;
// 4 blocks of 256 a SM by default: 64 registers, a task's budget in the
// scheduler, so the kernels allocate as tasks do (at 8 blocks, 32 registers,
// the churn kernel spilled 98% of its memory requests and ran 3x slower:
// ncu and bench/alloc --min-blocks 8, H200). A full-GPU grid then runs in
// two waves; at 8 every thread of it is resident at once.
#ifndef GROSR_BENCH_MIN_BLOCKS
#error "BuildSlabKernels defines GROSR_BENCH_MIN_BLOCKS (kSlabKernelsMinBlocks by default)"
#endif
constexpr unsigned kMinBlocks = GROSR_BENCH_MIN_BLOCKS;

__device__ __forceinline__ unsigned ThreadIndex() { return blockIdx.x * blockDim.x + threadIdx.x; }

// lowbias32: neighbouring owners and words get unrelated patterns.
__device__ __forceinline__ unsigned Mix(unsigned x) {
  x ^= x >> 16; x *= 0x7feb352du; x ^= x >> 15; x *= 0x846ca68bu; x ^= x >> 16;
  return x;
}
__device__ __forceinline__ unsigned PatternWord(unsigned owner, unsigned word, unsigned seed) {
  return Mix(owner * 0x9e3779b9u ^ Mix(word + seed * 0x85ebca6bu));
}
// Bytes past the last whole word get the low byte of a word far away.
__device__ __forceinline__ unsigned char TailByte(unsigned owner, unsigned byte, unsigned seed) {
  return static_cast<unsigned char>(PatternWord(owner, 0x40000000u + byte, seed));
}

// The pattern over all `bytes` of a 16-byte aligned block: 16-byte stores,
// then words, then bytes.
__device__ void FillBlock(unsigned char* p, unsigned bytes, unsigned owner, unsigned seed) {
  const unsigned words = bytes / 4;
  uint4* quads = reinterpret_cast<uint4*>(p);
  for (unsigned q = 0; q < words / 4; ++q) {
    quads[q] = make_uint4(PatternWord(owner, 4 * q, seed), PatternWord(owner, 4 * q + 1, seed),
                          PatternWord(owner, 4 * q + 2, seed), PatternWord(owner, 4 * q + 3, seed));
  }
  unsigned* w = reinterpret_cast<unsigned*>(p);
  for (unsigned k = words / 4 * 4; k < words; ++k) w[k] = PatternWord(owner, k, seed);
  for (unsigned b = words * 4; b < bytes; ++b) p[b] = TailByte(owner, b, seed);
}

__device__ bool CheckBlock(const unsigned char* p, unsigned bytes, unsigned owner, unsigned seed) {
  const unsigned words = bytes / 4;
  const uint4* quads = reinterpret_cast<const uint4*>(p);
  bool ok = true;
  for (unsigned q = 0; q < words / 4; ++q) {
    const uint4 v = quads[q];
    ok &= v.x == PatternWord(owner, 4 * q, seed) && v.y == PatternWord(owner, 4 * q + 1, seed) &&
          v.z == PatternWord(owner, 4 * q + 2, seed) && v.w == PatternWord(owner, 4 * q + 3, seed);
  }
  const unsigned* w = reinterpret_cast<const unsigned*>(p);
  for (unsigned k = words / 4 * 4; k < words; ++k) ok &= w[k] == PatternWord(owner, k, seed);
  for (unsigned b = words * 4; b < bytes; ++b) ok &= p[b] == TailByte(owner, b, seed);
  return ok;
}

// The two allocators behind one interface, for the churn loop.
struct SlabHeap {
  const SlabAllocator& heap;
  __device__ void* Allocate(unsigned bytes, unsigned thread) const {
    return heap.AllocateCoalesced(bytes, thread / 32);
  }
  __device__ bool Free(void* p) const { return heap.FreeCoalesced(p) == SlabAllocator::kFreeOk; }
};
struct CudaHeap {
  __device__ void* Allocate(unsigned bytes, unsigned) const { return malloc(bytes); }
  __device__ bool Free(void* p) const { free(p); return true; }
};

template <typename Heap>
__device__ void Churn(const Heap& heap, unsigned n, unsigned rounds, unsigned min_bytes,
                      unsigned max_bytes, unsigned seed, u64* nulls, u64* errors) {
  const unsigned i = ThreadIndex();
  if (i >= n) return;
  unsigned random = Mix(i ^ Mix(seed)) | 1u;  // xorshift32: never zero
  const unsigned span = max_bytes - min_bytes + 1;
  unsigned my_nulls = 0, my_errors = 0;
  for (unsigned r = 0; r < rounds; ++r) {
    random ^= random << 13; random ^= random >> 17; random ^= random << 5;
    const unsigned bytes = min_bytes + random % span;
    void* p = heap.Allocate(bytes, i);
    if (p == nullptr) { ++my_nulls; continue; }
    // volatile: the reads must come from memory, where another owner's
    // writes would show.
    volatile unsigned* w = static_cast<volatile unsigned*>(p);
    const unsigned last = bytes / 4 - 1;
    const unsigned tag = PatternWord(i, r, seed);
    w[0] = tag;
    w[last] = ~tag;
    if (w[0] != tag || w[last] != ~tag) ++my_errors;
    if (!heap.Free(p)) ++my_errors;
  }
  if (my_nulls != 0) atomicAdd(nulls, static_cast<u64>(my_nulls));
  if (my_errors != 0) atomicAdd(errors, static_cast<u64>(my_errors));
}

}  // namespace

extern "C" __global__ void __launch_bounds__(kBlock, kMinBlocks)
slab_alloc(const __grid_constant__ SlabAllocator heap, unsigned n, unsigned bytes,
           const unsigned* sizes, void** blocks) {
  const unsigned i = ThreadIndex();
  if (i >= n) return;
  // What a task's ctx.gpu_malloc does: lanes of a warp asking for the same
  // class together share one batch reservation.
  blocks[i] = heap.AllocateCoalesced(sizes != nullptr ? sizes[i] : bytes, i / 32);
}

extern "C" __global__ void __launch_bounds__(kBlock, kMinBlocks)
slab_free(const __grid_constant__ SlabAllocator heap, unsigned n, void* const* blocks,
          const unsigned* order, unsigned* codes, unsigned* refused) {
  const unsigned i = ThreadIndex();
  if (i >= n) return;
  const unsigned j = order != nullptr ? order[i] : i;
  // What a task's ctx.gpu_free does: lanes freeing into one bitmap word
  // together clear their bits with one atomic.
  const unsigned code = heap.FreeCoalesced(blocks[j]);
  if (codes != nullptr) codes[j] = code;
  if (code != SlabAllocator::kFreeOk && refused != nullptr) atomicAdd(refused, 1u);
}

extern "C" __global__ void __launch_bounds__(kBlock, kMinBlocks)
slab_churn(const __grid_constant__ SlabAllocator heap, unsigned n, unsigned rounds,
           unsigned min_bytes, unsigned max_bytes, unsigned seed, u64* nulls, u64* errors) {
  Churn(SlabHeap{heap}, n, rounds, min_bytes, max_bytes, seed, nulls, errors);
}

extern "C" __global__ void __launch_bounds__(kBlock, kMinBlocks)
slab_alloc_until_null(const __grid_constant__ SlabAllocator heap, unsigned bytes, unsigned max,
                      void** blocks, unsigned* count) {
  if (ThreadIndex() != 0) return;
  unsigned k = 0;
  for (; k < max; ++k) {
    void* p = heap.Allocate(bytes, 0, k);
    if (p == nullptr) break;
    blocks[k] = p;
  }
  *count = k;
}

extern "C" __global__ void __launch_bounds__(kBlock, kMinBlocks)
cuda_alloc(unsigned n, unsigned bytes, void** blocks) {
  const unsigned i = ThreadIndex();
  if (i >= n) return;
  blocks[i] = malloc(bytes);
}

extern "C" __global__ void __launch_bounds__(kBlock, kMinBlocks)
cuda_free(unsigned n, void* const* blocks, const unsigned* order) {
  const unsigned i = ThreadIndex();
  if (i >= n) return;
  free(blocks[order != nullptr ? order[i] : i]);
}

extern "C" __global__ void __launch_bounds__(kBlock, kMinBlocks)
cuda_churn(unsigned n, unsigned rounds, unsigned min_bytes, unsigned max_bytes, unsigned seed,
           u64* nulls, u64* errors) {
  Churn(CudaHeap{}, n, rounds, min_bytes, max_bytes, seed, nulls, errors);
}

extern "C" __global__ void __launch_bounds__(kBlock, kMinBlocks)
pattern_fill(unsigned n, void* const* blocks, unsigned bytes, const unsigned* sizes,
             unsigned seed) {
  const unsigned i = ThreadIndex();
  if (i >= n || blocks[i] == nullptr) return;
  FillBlock(static_cast<unsigned char*>(blocks[i]), sizes != nullptr ? sizes[i] : bytes, i, seed);
}

extern "C" __global__ void __launch_bounds__(kBlock, kMinBlocks)
pattern_verify(unsigned n, void* const* blocks, unsigned bytes, const unsigned* sizes,
               unsigned seed, unsigned* bad, unsigned* nulls) {
  const unsigned i = ThreadIndex();
  if (i >= n) return;
  if (blocks[i] == nullptr) {
    if (nulls != nullptr) atomicAdd(nulls, 1u);
    return;
  }
  if (!CheckBlock(static_cast<const unsigned char*>(blocks[i]), sizes != nullptr ? sizes[i] : bytes,
                  i, seed)) {
    atomicAdd(bad, 1u);
  }
}
)grosr_src";

uint32_t Mix(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352du;
  x ^= x >> 15;
  x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

uint64_t SplitMix64(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}


// Set once a session lost the GPU (a kernel past its deadline): the
// context is busy for good, later sessions would only block behind it.
std::atomic<bool> g_gpu_lost{false};

}  // namespace

const char* SlabKernelSource() { return kSlabKernelSource; }

const std::vector<std::string>& SlabKernelNames() {
  static const std::vector<std::string> names = {
      "slab_alloc", "slab_free",  "slab_churn", "slab_alloc_until_null", "cuda_alloc",
      "cuda_free",  "cuda_churn", "pattern_fill", "pattern_verify"};
  return names;
}

absl::StatusOr<LinkedImage> BuildSlabKernels(const Compiler& compiler, const std::string& arch,
                                             uint32_t min_blocks,
                                             const std::vector<std::string>& defines) {
  DeviceCodeTarget target;
  target.arch = arch;
  CompileOptions options = DeviceCompileOptions(target);
  // Standalone kernels, not tasks: no scheduler register budget.
  options.max_registers = 0;
  options.defines.push_back(absl::StrCat("GROSR_BENCH_MIN_BLOCKS=", min_blocks));
  for (const std::string& define : defines) {
    if (absl::StartsWith(define, "GROSR_BENCH_MIN_BLOCKS")) {
      return absl::InvalidArgumentError("GROSR_BENCH_MIN_BLOCKS is min_blocks' to set");
    }
    options.defines.push_back(define);
  }
  return compiler.CompileAndLink("bench/slab_kernels.cu", kSlabKernelSource, options);
}

uint32_t SlabPatternWord(uint32_t owner, uint32_t word, uint32_t seed) {
  return Mix(owner * 0x9e3779b9u ^ Mix(word + seed * 0x85ebca6bu));
}

std::vector<uint32_t> RandomPermutation(uint32_t n, uint64_t seed) {
  std::vector<uint32_t> order(n);
  std::iota(order.begin(), order.end(), 0u);
  uint64_t state = seed;
  for (uint32_t i = n; i > 1; --i) {
    const uint32_t j = static_cast<uint32_t>(SplitMix64(state) % i);
    std::swap(order[i - 1], order[j]);
  }
  return order;
}

std::vector<uint32_t> MixedSizes(uint32_t n, uint32_t max_bytes, uint64_t seed) {
  std::vector<uint32_t> sizes(n);
  uint32_t classes = 1;  // 1..16, 17..32, ... up to max_bytes
  while ((16u << (classes - 1)) < max_bytes) ++classes;
  uint64_t state = seed;
  for (uint32_t i = 0; i < n; ++i) {
    const uint64_t r = SplitMix64(state);
    const uint32_t top = std::min<uint32_t>(16u << (r % classes), max_bytes);
    const uint32_t bottom = top <= 16 ? 1 : top / 2 + 1;
    sizes[i] = bottom + static_cast<uint32_t>((r >> 32) % (top - bottom + 1));
  }
  return sizes;
}

absl::Status CheckDisjoint(absl::Span<const uint64_t> blocks, absl::Span<const uint32_t> sizes,
                           uint64_t lo, uint64_t hi) {
  if (blocks.size() != sizes.size()) {
    return absl::InvalidArgumentError("CheckDisjoint: blocks and sizes differ in length");
  }
  std::vector<uint32_t> by_address(blocks.size());
  std::iota(by_address.begin(), by_address.end(), 0u);
  for (uint32_t i : by_address) {
    const uint64_t p = blocks[i];
    if (p == 0) return absl::InternalError(absl::StrCat("block ", i, " is null"));
    if (p % 16 != 0) {
      return absl::InternalError(absl::StrCat("block ", i, " at 0x", absl::Hex(p),
                                              " is not 16-byte aligned"));
    }
    if (p < lo || p + sizes[i] > hi) {
      return absl::InternalError(absl::StrCat("block ", i, " at 0x", absl::Hex(p), " (",
                                              sizes[i], " B) is outside the arena [0x",
                                              absl::Hex(lo), ", 0x", absl::Hex(hi), ")"));
    }
  }
  std::sort(by_address.begin(), by_address.end(),
            [&](uint32_t a, uint32_t b) { return blocks[a] < blocks[b]; });
  for (size_t k = 1; k < by_address.size(); ++k) {
    const uint32_t a = by_address[k - 1], b = by_address[k];
    if (blocks[a] + sizes[a] > blocks[b]) {
      return absl::InternalError(absl::StrCat("blocks ", a, " (0x", absl::Hex(blocks[a]), ", ",
                                              sizes[a], " B) and ", b, " (0x",
                                              absl::Hex(blocks[b]), ") overlap"));
    }
  }
  return absl::OkStatus();
}

// --- SlabLayout ------------------------------------------------------------------

// --- GpuSession ------------------------------------------------------------------

absl::StatusOr<std::unique_ptr<GpuSession>> GpuSession::Open(const Options& options) {
  if (g_gpu_lost.load()) {
    return absl::FailedPreconditionError(
        "an earlier kernel did not finish within its deadline: the GPU context is busy for "
        "good; the process must exit to use the GPU again");
  }
  absl::StatusOr<const CudaDriver*> driver = CudaDriver::Get();
  if (!driver.ok()) {
    if (absl::StrContains(driver.status().message(), "CUDA GPU is required")) {
      return driver.status();
    }
    return absl::FailedPreconditionError(
        absl::StrCat("a CUDA GPU is required: ", driver.status().message()));
  }
  const CudaDriver& cu = **driver;
  if (CUresult r = cu.cuInit(0); r != CUDA_SUCCESS) {
    return absl::FailedPreconditionError(
        absl::StrCat("a CUDA GPU is required: cuInit failed: ", cu.ErrorText(r)));
  }
  int count = 0;
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (options.device < 0 || options.device >= count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a CUDA GPU is required: device ", options.device, " requested, ", count, " present"));
  }
  std::unique_ptr<GpuSession> gpu(new GpuSession());
  gpu->cu_ = &cu;
  gpu->deadline_ = options.deadline;
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuDeviceGet(&gpu->device_, options.device), "cuDeviceGet");
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuDevicePrimaryCtxRetain(&gpu->context_, gpu->device_),
                           "cuDevicePrimaryCtxRetain");
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuCtxSetCurrent(gpu->context_), "cuCtxSetCurrent");
  if (options.malloc_heap_bytes != 0) {
    GROSR_CU_RETURN_IF_ERROR(
        cu, cu.cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE, options.malloc_heap_bytes),
        "cuCtxSetLimit(CU_LIMIT_MALLOC_HEAP_SIZE)");
  }
  char name[256] = {};
  cu.cuDeviceGetName(name, sizeof(name), gpu->device_);
  auto attribute = [&](CUdevice_attribute a) {
    int value = 0;
    cu.cuDeviceGetAttribute(&value, a, gpu->device_);
    return value;
  };
  GpuInfo& info = gpu->info_;
  info.name = name;
  info.arch = absl::StrCat("sm_", attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR),
                           attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR));
  info.driver = cu.VersionString();
  info.sm_count = attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  info.max_threads_per_sm = attribute(CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_MULTIPROCESSOR);
  size_t total = 0;
  cu.cuDeviceTotalMem(&total, gpu->device_);
  info.total_memory = total;

  absl::StatusOr<Stream> stream = Stream::Create(cu);
  if (!stream.ok()) return stream.status();
  gpu->stream_ = std::move(*stream);
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuEventCreate(&gpu->start_, CU_EVENT_DEFAULT), "cuEventCreate");
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuEventCreate(&gpu->stop_, CU_EVENT_DEFAULT), "cuEventCreate");
  return gpu;
}

GpuSession::~GpuSession() {
  if (context_ == nullptr) return;
  if (lost_) {
    // A kernel still runs: any of these calls could block behind it.
    stream_.Abandon();
    return;
  }
  cu_->cuCtxSetCurrent(context_);
  if (start_ != nullptr) cu_->cuEventDestroy(start_);
  if (stop_ != nullptr) cu_->cuEventDestroy(stop_);
  stream_.Reset();
  cu_->cuDevicePrimaryCtxRelease(device_);
}

absl::Status GpuSession::Fail(absl::Status status) {
  if (absl::IsInternal(status) || absl::IsDeadlineExceeded(status)) {
    lost_ = true;
    g_gpu_lost.store(true);
  }
  return status;
}

absl::Status GpuSession::Launch(CUfunction function, uint64_t threads, void** params,
                                const char* what) {
  if (lost_) return absl::FailedPreconditionError("the GPU session was lost earlier");
  if (threads == 0) return absl::OkStatus();
  const uint64_t blocks = (threads + kSlabKernelBlock - 1) / kSlabKernelBlock;
  return Fail(cu_->Check(cu_->cuLaunchKernel(function, static_cast<unsigned>(blocks), 1, 1,
                                             kSlabKernelBlock, 1, 1, 0, stream(), params, nullptr),
                         what));
}

absl::Status GpuSession::Wait(const char* what) {
  if (lost_) return absl::FailedPreconditionError("the GPU session was lost earlier");
  const absl::Time end = absl::Now() + deadline_;
  for (int polls = 0;; ++polls) {
    const CUresult r = cu_->cuStreamQuery(stream());
    if (r == CUDA_SUCCESS) return absl::OkStatus();
    if (r != CUDA_ERROR_NOT_READY) return Fail(cu_->Check(r, what));
    if (absl::Now() > end) {
      return Fail(absl::DeadlineExceededError(absl::StrCat(
          what, " did not finish within ", absl::FormatDuration(deadline_),
          " (a livelock or deadlock on the GPU?); the context cannot be used again")));
    }
    // Poll tightly first (host-timed measurements), then back off.
    if (polls > 2000) absl::SleepFor(absl::Microseconds(50));
  }
}

absl::StatusOr<double> GpuSession::TimeMs(absl::FunctionRef<absl::Status()> work,
                                          const char* what) {
  if (lost_) return absl::FailedPreconditionError("the GPU session was lost earlier");
  GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuEventRecord(start_, stream()), "cuEventRecord");
  if (absl::Status s = work(); !s.ok()) return s;
  GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuEventRecord(stop_, stream()), "cuEventRecord");
  if (absl::Status s = Wait(what); !s.ok()) return s;
  float ms = 0;
  GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuEventElapsedTime(&ms, start_, stop_),
                           "cuEventElapsedTime");
  return static_cast<double>(ms);
}

absl::StatusOr<DeviceMemory> GpuSession::Allocate(size_t bytes) {
  if (lost_) return absl::FailedPreconditionError("the GPU session was lost earlier");
  return DeviceMemory::Allocate(*cu_, std::max<size_t>(bytes, 16));
}

// Copies wait for the stream first: a copy to pageable memory behind a
// stuck kernel would block inside the driver, past any deadline.
absl::Status GpuSession::Upload(CUdeviceptr to, const void* from, size_t bytes) {
  if (absl::Status s = Wait("work before an upload"); !s.ok()) return s;
  if (bytes == 0) return absl::OkStatus();
  GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuMemcpyHtoDAsync(to, from, bytes, stream()),
                           "cuMemcpyHtoDAsync");
  return Wait("upload");
}

absl::Status GpuSession::Download(void* to, CUdeviceptr from, size_t bytes) {
  if (absl::Status s = Wait("work before a download"); !s.ok()) return s;
  if (bytes == 0) return absl::OkStatus();
  GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuMemcpyDtoHAsync(to, from, bytes, stream()),
                           "cuMemcpyDtoHAsync");
  return Wait("download");
}

absl::Status GpuSession::Zero(CUdeviceptr to, size_t bytes) {
  if (lost_) return absl::FailedPreconditionError("the GPU session was lost earlier");
  GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuMemsetD8Async(to, 0, bytes, stream()), "cuMemsetD8Async");
  return Wait("memset");
}

absl::StatusOr<uint32_t> GpuSession::ResidentThreads(CUfunction function) {
  int blocks = 0;
  GROSR_CU_RETURN_IF_ERROR(
      *cu_, cu_->cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks, function, kSlabKernelBlock, 0),
      "cuOccupancyMaxActiveBlocksPerMultiprocessor");
  return static_cast<uint32_t>(blocks) * kSlabKernelBlock * static_cast<uint32_t>(info_.sm_count);
}

// --- SlabKernels ------------------------------------------------------------------

absl::StatusOr<SlabKernels> SlabKernels::Load(GpuSession& gpu, const Compiler& compiler,
                                              uint32_t min_blocks,
                                              const std::vector<std::string>& defines) {
  absl::StatusOr<LinkedImage> image =
      BuildSlabKernels(compiler, gpu.info().arch, min_blocks, defines);
  if (!image.ok()) return image.status();
  SlabKernels k;
  k.gpu_ = &gpu;
  absl::StatusOr<Module> module = Module::Load(gpu.cu(), image->cubin);
  if (!module.ok()) return module.status();
  k.module_ = std::move(*module);
  const std::pair<const char*, CUfunction*> functions[] = {
      {"slab_alloc", &k.slab_alloc_},      {"slab_free", &k.slab_free_},
      {"slab_churn", &k.slab_churn_},      {"slab_alloc_until_null", &k.slab_until_null_},
      {"cuda_alloc", &k.cuda_alloc_},      {"cuda_free", &k.cuda_free_},
      {"cuda_churn", &k.cuda_churn_},      {"pattern_fill", &k.fill_},
      {"pattern_verify", &k.verify_}};
  for (const auto& [name, function] : functions) {
    GROSR_CU_RETURN_IF_ERROR(gpu.cu(),
                             gpu.cu().cuModuleGetFunction(function, k.module_.get(), name),
                             absl::StrCat("cuModuleGetFunction(", name, ")"));
  }
  return k;
}

SlabKernels::~SlabKernels() {
  if (gpu_ != nullptr && gpu_->lost()) module_.Abandon();
}

namespace {
// Kernel parameters point at these host copies until cuLaunchKernel returns.
void* Param(const void* p) { return const_cast<void*>(p); }
}  // namespace

absl::Status SlabKernels::SlabAlloc(const SlabAllocator& heap, uint32_t n, uint32_t bytes,
                                    CUdeviceptr sizes, CUdeviceptr blocks) {
  void* params[] = {Param(&heap), &n, &bytes, &sizes, &blocks};
  return gpu_->Launch(slab_alloc_, n, params, "slab_alloc");
}

absl::Status SlabKernels::SlabFree(const SlabAllocator& heap, uint32_t n, CUdeviceptr blocks,
                                   CUdeviceptr order, CUdeviceptr codes, CUdeviceptr refused) {
  void* params[] = {Param(&heap), &n, &blocks, &order, &codes, &refused};
  return gpu_->Launch(slab_free_, n, params, "slab_free");
}

absl::Status SlabKernels::SlabChurn(const SlabAllocator& heap, uint32_t n, uint32_t rounds,
                                    uint32_t min_bytes, uint32_t max_bytes, uint32_t seed,
                                    CUdeviceptr nulls, CUdeviceptr errors) {
  if (min_bytes < 8 || max_bytes < min_bytes) {
    return absl::InvalidArgumentError("churn sizes need 8 <= min_bytes <= max_bytes");
  }
  void* params[] = {Param(&heap), &n, &rounds, &min_bytes, &max_bytes, &seed, &nulls, &errors};
  return gpu_->Launch(slab_churn_, n, params, "slab_churn");
}

absl::Status SlabKernels::SlabAllocUntilNull(const SlabAllocator& heap, uint32_t bytes,
                                             uint32_t max, CUdeviceptr blocks, CUdeviceptr count) {
  void* params[] = {Param(&heap), &bytes, &max, &blocks, &count};
  return gpu_->Launch(slab_until_null_, 1, params, "slab_alloc_until_null");
}

absl::Status SlabKernels::CudaAlloc(uint32_t n, uint32_t bytes, CUdeviceptr blocks) {
  void* params[] = {&n, &bytes, &blocks};
  return gpu_->Launch(cuda_alloc_, n, params, "cuda_alloc");
}

absl::Status SlabKernels::CudaFree(uint32_t n, CUdeviceptr blocks, CUdeviceptr order) {
  void* params[] = {&n, &blocks, &order};
  return gpu_->Launch(cuda_free_, n, params, "cuda_free");
}

absl::Status SlabKernels::CudaChurn(uint32_t n, uint32_t rounds, uint32_t min_bytes,
                                    uint32_t max_bytes, uint32_t seed, CUdeviceptr nulls,
                                    CUdeviceptr errors) {
  if (min_bytes < 8 || max_bytes < min_bytes) {
    return absl::InvalidArgumentError("churn sizes need 8 <= min_bytes <= max_bytes");
  }
  void* params[] = {&n, &rounds, &min_bytes, &max_bytes, &seed, &nulls, &errors};
  return gpu_->Launch(cuda_churn_, n, params, "cuda_churn");
}

absl::Status SlabKernels::Fill(uint32_t n, CUdeviceptr blocks, uint32_t bytes, CUdeviceptr sizes,
                               uint32_t seed) {
  void* params[] = {&n, &blocks, &bytes, &sizes, &seed};
  return gpu_->Launch(fill_, n, params, "pattern_fill");
}

absl::Status SlabKernels::Verify(uint32_t n, CUdeviceptr blocks, uint32_t bytes,
                                 CUdeviceptr sizes, uint32_t seed, CUdeviceptr bad,
                                 CUdeviceptr nulls) {
  void* params[] = {&n, &blocks, &bytes, &sizes, &seed, &bad, &nulls};
  return gpu_->Launch(verify_, n, params, "pattern_verify");
}

// --- DeviceSlab -------------------------------------------------------------------

absl::StatusOr<DeviceSlab> DeviceSlab::Create(GpuSession& gpu, uint64_t arena_bytes,
                                              uint32_t page_shift, uint32_t max_shard_factor) {
  // Classes run up to page/2, and the hints hold kMaxClasses classes.
  if (page_shift < 12 || page_shift - 4 >= SlabAllocator::kMaxClasses) {
    return absl::InvalidArgumentError(
        absl::StrCat("page_shift ", page_shift, " outside 12..", SlabAllocator::kMaxClasses + 3));
  }
  if (!SlabAllocator::IsShardFactor(max_shard_factor)) {
    return absl::InvalidArgumentError("the shard factor is a power of two from 1 to 8");
  }
  if ((arena_bytes >> page_shift) >= (uint64_t{1} << 32)) {
    return absl::InvalidArgumentError("arena has more than 2^32 pages");
  }
  DeviceSlab slab;
  slab.gpu_ = &gpu;
  slab.layout_ = SlabLayout::For(arena_bytes, page_shift, max_shard_factor);
  absl::StatusOr<DeviceMemory> arena = gpu.Allocate(slab.layout_.arena_bytes());
  if (!arena.ok()) return arena.status();
  slab.arena_ = std::move(*arena);
  absl::StatusOr<DeviceMemory> metadata = gpu.Allocate(slab.layout_.metadata_bytes);
  if (!metadata.ok()) return metadata.status();
  slab.metadata_ = std::move(*metadata);
  slab.view_ = slab.layout_.View(slab.arena_.get(), slab.metadata_.get());
  return slab;
}

DeviceSlab::~DeviceSlab() {
  if (gpu_ != nullptr && gpu_->lost()) Abandon();
}

void DeviceSlab::Abandon() {
  arena_.Abandon();
  metadata_.Abandon();
}

absl::Status DeviceSlab::Reset() {
  if (absl::Status s = gpu_->Zero(metadata_.get(), layout_.metadata_bytes); !s.ok()) return s;
  return gpu_->Upload(metadata_.get() + layout_.pool_offset, layout_.InitialPool());
}

absl::StatusOr<SlabSnapshot> DeviceSlab::Snapshot() {
  absl::StatusOr<std::vector<uint64_t>> states =
      gpu_->Download<uint64_t>(metadata_.get() + layout_.states_offset, layout_.page_count);
  if (!states.ok()) return states.status();
  absl::StatusOr<std::vector<uint64_t>> hints = gpu_->Download<uint64_t>(
      metadata_.get() + layout_.hints_offset,
      layout_.hint_words());
  if (!hints.ok()) return hints.status();
  SlabSnapshot snapshot;
  if (absl::Status s = gpu_->Download(&snapshot.counters, metadata_.get() + layout_.counters_offset,
                                      sizeof(SlabCounters));
      !s.ok()) {
    return s;
  }
  snapshot.usage = MeasureSlabUsage(states->data(), layout_.page_count, layout_.page_shift);
  // Pages the hints name (at rest, none is being replaced). A page with its
  // hint bit that no hint names was lost by the replacement protocol: held.
  std::vector<bool> named(layout_.page_count, false);
  for (uint64_t h : *hints) {
    const uint64_t page_plus_one = h & ~SlabAllocator::kReplacing;
    if (page_plus_one != 0 && page_plus_one <= layout_.page_count) named[page_plus_one - 1] = true;
  }
  for (uint32_t page = 0; page < layout_.page_count; ++page) {
    const uint64_t s = (*states)[page];
    const uint32_t cls = SlabAllocator::ClassOf(s);
    if (cls == SlabAllocator::kFreePage) continue;
    if (cls <= view_.class_count() && SlabAllocator::LiveOf(s) == 0 &&
        SlabAllocator::IsHintState(s) && named[page]) {
      ++snapshot.hint_pages;
    } else {
      ++snapshot.pages_held;
    }
  }
  snapshot.states = std::move(*states);
  return snapshot;
}

}  // namespace grosr
