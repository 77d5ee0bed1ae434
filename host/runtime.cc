#include "host/runtime.h"

#include <dirent.h>
#include <immintrin.h>

#include <algorithm>
#include <cstdlib>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace grosr {
namespace {

constexpr const char* kKernelName = "grosr_scheduler";
constexpr const char* kScratchSymbol = "grosr_scratch_bytes_per_warp";
// Failures of reused completion slots remembered for late Wait() calls.
constexpr size_t kRetiredFailuresKept = 1 << 16;

// Runtimes of this process whose kernel could not be stopped (a task never
// returned). While one runs, loading any module blocks in the driver, so a
// new Runtime would hang: Create refuses instead.
std::atomic<int> g_stuck_kernels{0};

bool IsPowerOfTwo(uint64_t x) { return x != 0 && (x & (x - 1)) == 0; }

// Bump allocation of one memory block into 256-byte aligned pieces.
class Layout {
 public:
  size_t Take(size_t bytes) {
    size_t offset = size_;
    size_ += (bytes + 255) & ~size_t{255};
    return offset;
  }
  size_t size() const { return size_; }

 private:
  size_t size_ = 0;
};

template <typename T>
T* At(void* base, size_t offset) {
  return reinterpret_cast<T*>(static_cast<char*>(base) + offset);
}
template <typename T>
T* At(CUdeviceptr base, size_t offset) {
  return reinterpret_cast<T*>(base + offset);
}

absl::Status ValidateOptions(const RuntimeOptions& o) {
  auto bad = [](absl::string_view what) {
    return absl::InvalidArgumentError(absl::StrCat("RuntimeOptions: ", what));
  };
  if (o.warps_per_block < 1 || o.warps_per_block > 32) {
    return bad("warps_per_block must be in 1..32");
  }
  if (o.max_sms < 0 || o.blocks_per_sm < 0) return bad("max_sms and blocks_per_sm must be >= 0");
  if (!IsPowerOfTwo(o.queue_capacity) || o.queue_capacity > (1u << 30)) {
    return bad("queue_capacity must be a power of two, at most 2^30");
  }
  if (!IsPowerOfTwo(o.ring_capacity) || o.ring_capacity < 32) {
    return bad("ring_capacity must be a power of two, at least 32");
  }
  if (!IsPowerOfTwo(o.completion_capacity)) {
    return bad("completion_capacity must be a power of two");
  }
  if (!IsPowerOfTwo(o.error_capacity)) return bad("error_capacity must be a power of two");
  if (o.group_capacity < 32 || o.group_capacity % 32 != 0) {
    return bad("group_capacity must be a multiple of 32");
  }
  if (o.table_capacity < 2) return bad("table_capacity must be at least 2");
  if (o.register_budget < 32 || o.register_budget > 255) {
    return bad("register_budget must be in 32..255");
  }
  if (o.stop_check_interval == 0 || o.stop_check_interval > kMaxStopCheckInterval) {
    return bad(absl::StrCat("stop_check_interval must be 1 .. ", kMaxStopCheckInterval));
  }
  if (o.stack_bytes < 1024) return bad("stack_bytes must be at least 1024");
  return absl::OkStatus();
}

std::string Hex(uint32_t code) { return absl::StrCat("0x", absl::Hex(code)); }

}  // namespace

// Counts a thread that reads pinned memory while waiting.
class Runtime::WaiterScope {
 public:
  explicit WaiterScope(Runtime* runtime) : runtime_(runtime) {
    runtime_->waiters_.fetch_add(1, std::memory_order_acq_rel);
  }
  ~WaiterScope() { runtime_->waiters_.fetch_sub(1, std::memory_order_acq_rel); }

 private:
  Runtime* runtime_;
};

Runtime::Runtime(RuntimeOptions options) : options_(std::move(options)) {}

absl::StatusOr<std::unique_ptr<Runtime>> Runtime::Create(RuntimeOptions options) {
  // Environment overrides for options left at their defaults: a value
  // that is not a positive number is an error, not a silent default.
  if (const char* sms = std::getenv("GROSR_MAX_SMS"); sms != nullptr && options.max_sms == 0) {
    if (!absl::SimpleAtoi(sms, &options.max_sms) || options.max_sms <= 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("GROSR_MAX_SMS='", sms, "' is not a positive number of SMs"));
    }
  }
  if (const char* heap = std::getenv("GROSR_HEAP_BYTES");
      heap != nullptr && options.heap_bytes == 0) {
    if (!absl::SimpleAtoi(heap, &options.heap_bytes) || options.heap_bytes == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat("GROSR_HEAP_BYTES='", heap, "' is not a positive number of bytes"));
    }
  }
  if (absl::Status valid = ValidateOptions(options); !valid.ok()) return valid;
  if (g_stuck_kernels.load() > 0) {
    return absl::FailedPreconditionError(
        "an earlier Runtime's kernel could not be stopped (a task never returned; "
        "see its Shutdown error): the driver would block loading a new one. "
        "The process must exit to reclaim the GPU");
  }
  std::unique_ptr<Runtime> runtime(new Runtime(std::move(options)));
  if (absl::Status status = runtime->Initialize(); !status.ok()) return status;
  return runtime;
}

void Runtime::MakeCurrent() const {
  if (context_ != nullptr) cu_->cuCtxSetCurrent(context_);
}

absl::Status Runtime::Initialize() {
  absl::StatusOr<const CudaDriver*> driver = CudaDriver::Get();
  if (!driver.ok()) {
    if (absl::StrContains(driver.status().message(), "CUDA GPU is required")) {
      return driver.status();
    }
    return absl::FailedPreconditionError(absl::StrCat(
        "a CUDA GPU is required: ", driver.status().message()));
  }
  cu_ = *driver;
  CUresult init = cu_->cuInit(0);
  if (init != CUDA_SUCCESS) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a CUDA GPU is required: cuInit failed: ", cu_->ErrorText(init)));
  }
  int count = 0;
  GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuDeviceGetCount(&count), "cuDeviceGetCount");
  if (options_.device < 0 || options_.device >= count) {
    return absl::FailedPreconditionError(absl::StrCat(
        "a CUDA GPU is required: device ", options_.device, " requested, ",
        count, " present"));
  }
  GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuDeviceGet(&device_, options_.device), "cuDeviceGet");
  if (CUresult r = cu_->cuDevicePrimaryCtxRetain(&context_, device_); r != CUDA_SUCCESS) {
    if (IsContextLost(r) || r == CUDA_ERROR_LAUNCH_FAILED) {
      // Measured on driver 580: after a kernel fault the driver refuses a
      // new context for the rest of the process.
      return absl::FailedPreconditionError(absl::StrCat(
          "the GPU is unusable in this process after an earlier fault (",
          cu_->ErrorText(r), "); the process must exit to use it again"));
    }
    return cu_->Check(r, "cuDevicePrimaryCtxRetain");
  }
  context_retained_ = true;
  GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuCtxSetCurrent(context_), "cuCtxSetCurrent");

  char name[256] = {};
  cu_->cuDeviceGetName(name, sizeof(name), device_);
  info_.name = name;
  auto attribute = [&](CUdevice_attribute a) {
    int value = 0;
    cu_->cuDeviceGetAttribute(&value, a, device_);
    return value;
  };
  const int major = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR);
  const int minor = attribute(CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR);
  info_.arch = absl::StrCat("sm_", major, minor);
  info_.driver_version = cu_->VersionString();
  info_.sm_count = attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT);
  info_.clock_mhz = attribute(CU_DEVICE_ATTRIBUTE_CLOCK_RATE) / 1000;
  info_.memory_clock_mhz = attribute(CU_DEVICE_ATTRIBUTE_MEMORY_CLOCK_RATE) / 1000;
  if (major < 7) {
    return absl::FailedPreconditionError(absl::StrCat(
        "GROSR needs compute capability 7.0 or newer (__nanosleep, independent "
        "thread scheduling); ", info_.name, " is ", info_.arch));
  }

  Compiler::Options compiler_options;
  compiler_options.cache_dir = options_.cache_dir;
  absl::StatusOr<std::unique_ptr<Compiler>> compiler = Compiler::Create(compiler_options);
  if (!compiler.ok()) return compiler.status();
  compiler_ = std::move(*compiler);

  target_.arch = info_.arch;
  target_.register_budget = options_.register_budget;
  target_.warps_per_block = options_.warps_per_block;
  target_.stack_bytes = options_.stack_bytes;
  target_.include_dirs = options_.include_dirs;
  absl::StatusOr<SchedulerImage> image = BuildSchedulerImage(*compiler_, target_);
  if (!image.ok()) return image.status();
  info_.kernel_registers = image->kernel_registers;
  // Tasks' stack check: the scheduler's frames around a task count too.
  target_.scheduler_stack_bytes = image->StackAroundTask();
  absl::StatusOr<Module> module = Module::Load(*cu_, image->cubin);
  if (!module.ok()) return module.status();
  scheduler_module_ = std::move(*module);
  GROSR_CU_RETURN_IF_ERROR(
      *cu_, cu_->cuModuleGetFunction(&kernel_, scheduler_module_.get(), kKernelName),
      "cuModuleGetFunction(grosr_scheduler)");

  CUdeviceptr scratch_symbol = 0;
  size_t scratch_size = 0;
  GROSR_CU_RETURN_IF_ERROR(
      *cu_, cu_->cuModuleGetGlobal(&scratch_symbol, &scratch_size,
                                   scheduler_module_.get(), kScratchSymbol),
      "cuModuleGetGlobal(grosr_scratch_bytes_per_warp)");
  unsigned scratch_per_warp = 0;
  GROSR_CU_RETURN_IF_ERROR(
      *cu_, cu_->cuMemcpyDtoH(&scratch_per_warp, scratch_symbol, sizeof(scratch_per_warp)),
      "cuMemcpyDtoH");
  info_.shared_bytes_per_block = size_t{scratch_per_warp} * options_.warps_per_block;
  GROSR_CU_RETURN_IF_ERROR(
      *cu_, cu_->cuFuncSetAttribute(kernel_, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                    static_cast<int>(info_.shared_bytes_per_block)),
      "cuFuncSetAttribute(max dynamic shared memory)");

  // Indirect calls hide the tasks' frames from the launch: the limit covers
  // every task that may be loaded (the loader refuses bigger frames).
  GROSR_CU_RETURN_IF_ERROR(
      *cu_, cu_->cuCtxSetLimit(CU_LIMIT_STACK_SIZE, options_.stack_bytes),
      "cuCtxSetLimit(CU_LIMIT_STACK_SIZE)");

  const int threads = options_.warps_per_block * 32;
  int fit = 0;
  GROSR_CU_RETURN_IF_ERROR(
      *cu_, cu_->cuOccupancyMaxActiveBlocksPerMultiprocessor(
                &fit, kernel_, threads, info_.shared_bytes_per_block),
      "cuOccupancyMaxActiveBlocksPerMultiprocessor");
  if (fit < 1) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the scheduler kernel does not fit on an SM with ", options_.warps_per_block,
        " warps per block (", info_.kernel_registers, " registers, ",
        info_.shared_bytes_per_block, " B shared)"));
  }
  const int blocks_per_sm =
      options_.blocks_per_sm > 0 ? std::min(options_.blocks_per_sm, fit) : fit;
  const int sms = options_.max_sms > 0 ? std::min(options_.max_sms, info_.sm_count)
                                       : info_.sm_count;
  info_.blocks = sms * blocks_per_sm;
  info_.warps_per_block = options_.warps_per_block;
  info_.workers = info_.blocks * options_.warps_per_block - 1;
  if (info_.workers < 1) {
    return absl::InvalidArgumentError(
        "the grid has no worker warp: use warps_per_block >= 2 or more blocks");
  }

  absl::StatusOr<Stream> stream = Stream::Create(*cu_);
  if (!stream.ok()) return stream.status();
  kernel_stream_ = std::move(*stream);
  if (!(stream = Stream::Create(*cu_)).ok()) return stream.status();
  copy_stream_ = std::move(*stream);
  if (!(stream = Stream::Create(*cu_)).ok()) return stream.status();
  watchdog_stream_ = std::move(*stream);

  {
    absl::MutexLock lock(&mu_);
    tasks_.resize(1);  // id 0 is never a task
    group_in_use_.assign(options_.group_capacity, false);
    group_in_use_[0] = true;  // the default group
  }
  group_roots_ = std::make_unique<std::atomic<uint32_t>[]>(options_.group_capacity);
  slot_owner_ = std::make_unique<std::atomic<uint64_t>[]>(options_.completion_capacity);
  return AllocateState();
}

absl::Status Runtime::AllocateState() {
  const uint32_t num_warps = static_cast<uint32_t>(info_.blocks) * options_.warps_per_block;
  const RuntimeOptions& o = options_;

  Layout device;
  const size_t state_at = device.Take(sizeof(SchedulerState));
  const size_t table_at = device.Take(sizeof(TaskEntry) * o.table_capacity);
  const size_t info_at = device.Take(sizeof(TaskInfo) * o.table_capacity);
  const size_t counters_at = device.Take(sizeof(TaskCounters) * o.table_capacity);
  const size_t invalid_at = device.Take(sizeof(uint64_t));
  const size_t queue_counters_at = device.Take(sizeof(WorkQueueCounters));
  const size_t slots_at = device.Take(WorkQueue::SlotBytes(o.queue_capacity));
  const size_t sequence_at = device.Take(WorkQueue::SequenceBytes(o.queue_capacity));
  const size_t group_words_at = device.Take(sizeof(uint64_t) * o.group_capacity);
  const size_t total_word_at = device.Take(sizeof(uint64_t));
  const size_t dirty_groups_at = device.Take(sizeof(uint32_t) * (o.group_capacity / 32));
  const size_t dirty_total_at = device.Take(sizeof(uint32_t));
  const size_t errors_at = device.Take(sizeof(ErrorRecord) * o.error_capacity);
  const size_t error_count_at = device.Take(sizeof(uint64_t));
  const size_t heartbeats_at = device.Take(sizeof(WorkerHeartbeat) * num_warps);
  const size_t saves_at = device.Take(sizeof(WorkerSave) * num_warps);
  const size_t stop_at = device.Take(sizeof(uint32_t));
  const size_t parked_at = device.Take(sizeof(uint32_t));
  const size_t never_at = device.Take(sizeof(uint32_t) * 64 * 33);
  // The task heap: its pages in their own allocation, metadata here.
  uint64_t heap_bytes = o.heap_bytes;
  if (heap_bytes == 0) {  // neither the option nor GROSR_HEAP_BYTES (see Create)
    size_t free_bytes = 0, total_bytes = 0;
    cu_->cuMemGetInfo(&free_bytes, &total_bytes);
    heap_bytes = std::min<uint64_t>(uint64_t{4} << 30, free_bytes / 8);
  }
  heap_layout_ = SlabLayout::For(std::max<uint64_t>(heap_bytes, 1), /*page_shift=*/16);
  const size_t heap_metadata_at = device.Take(heap_layout_.metadata_bytes);

  Layout pinned;
  const size_t host_at = pinned.Take(sizeof(HostShared));
  const size_t ring_at = pinned.Take(SubmissionRing::Bytes(o.ring_capacity));
  const size_t completions_at = pinned.Take(sizeof(CompletionRecord) * o.completion_capacity);
  const size_t snapshots_at = pinned.Take(sizeof(uint64_t) * o.group_capacity);
  const size_t last_task_at = pinned.Take(sizeof(uint32_t) * num_warps);

  absl::StatusOr<DeviceMemory> arena = DeviceMemory::Allocate(*cu_, device.size());
  if (!arena.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "scheduler state needs ", device.size(), " bytes of device memory: ",
        arena.status().message(), " (lower queue_capacity?)"));
  }
  arena_ = std::move(*arena);
  absl::StatusOr<DeviceMemory> heap = DeviceMemory::Allocate(*cu_, heap_layout_.arena_bytes());
  if (!heap.ok()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the task heap needs ", heap_layout_.arena_bytes(), " bytes of device memory: ",
        heap.status().message(), " (lower RuntimeOptions::heap_bytes)"));
  }
  heap_arena_ = std::move(*heap);
  absl::StatusOr<PinnedMemory> block = PinnedMemory::Allocate(*cu_, pinned.size());
  if (!block.ok()) return block.status();
  pinned_ = std::move(*block);

  const CUdeviceptr d = arena_.get();
  void* h = pinned_.host();
  const CUdeviceptr hd = pinned_.device();
  SchedulerState& s = state_;
  s.num_warps = num_warps;
  s.warps_per_block = o.warps_per_block;
  s.table_capacity = o.table_capacity;
  s.completion_capacity = o.completion_capacity;
  s.error_capacity = o.error_capacity;
  s.idle_sleep_max_ns = std::max<uint32_t>(o.idle_sleep_max_ns, 32);
  s.stop_check_interval = o.stop_check_interval;
  s.quiet_poll_after_rounds = o.quiet_poll_after_rounds;
  s.table = At<TaskEntry>(d, table_at);
  s.info = At<TaskInfo>(d, info_at);
  s.counters = At<TaskCounters>(d, counters_at);
  s.invalid_dispatches = At<uint64_t>(d, invalid_at);
  s.queue.counters = At<WorkQueueCounters>(d, queue_counters_at);
  s.queue.slots = At<TaskDescriptor>(d, slots_at);
  s.queue.sequence = At<uint64_t>(d, sequence_at);
  s.queue.capacity = o.queue_capacity;
  s.completion.group_words = At<uint64_t>(d, group_words_at);
  s.completion.total_word = At<uint64_t>(d, total_word_at);
  s.completion.dirty_groups = At<uint32_t>(d, dirty_groups_at);
  s.completion.dirty_total = At<uint32_t>(d, dirty_total_at);
  s.completion.group_capacity = o.group_capacity;
  s.errors = At<ErrorRecord>(d, errors_at);
  s.error_count = At<uint64_t>(d, error_count_at);
  s.heartbeats = At<WorkerHeartbeat>(d, heartbeats_at);
  s.saves = At<WorkerSave>(d, saves_at);
  s.stop = At<uint32_t>(d, stop_at);
  s.parked = At<uint32_t>(d, parked_at);
  s.host = At<HostShared>(hd, host_at);
  s.ring = SubmissionRing{At<uint64_t>(hd, ring_at), o.ring_capacity};
  s.completions = At<CompletionRecord>(hd, completions_at);
  s.group_snapshots = At<uint64_t>(hd, snapshots_at);
  s.last_task = At<uint32_t>(hd, last_task_at);
  s.never = At<uint32_t>(d, never_at);
  s.heap = heap_layout_.View(heap_arena_.get(), d + heap_metadata_at);
  state_device_ = d + state_at;

  host_ = At<HostShared>(h, host_at);
  ring_ = SubmissionRing{At<uint64_t>(h, ring_at), o.ring_capacity};  // zeroed, as it must be
  completions_ = At<CompletionRecord>(h, completions_at);
  group_snapshots_ = At<uint64_t>(h, snapshots_at);
  last_task_ = At<uint32_t>(h, last_task_at);
  for (uint32_t w = 0; w < num_warps; ++w) last_task_[w] = 0xffffffffu;

  // Everything starts at zero except the queue (empty: sequence[i] = i,
  // all slots free) and the state block itself.
  GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuMemsetD8(d, 0, device.size()), "cuMemsetD8");
  std::vector<uint64_t> sequence(o.queue_capacity);
  for (uint32_t i = 0; i < o.queue_capacity; ++i) sequence[i] = i;
  GROSR_CU_RETURN_IF_ERROR(
      *cu_, cu_->cuMemcpyHtoD(d + sequence_at, sequence.data(), sequence.size() * 8),
      "cuMemcpyHtoD(queue)");
  WorkQueueCounters counters{};
  counters.free_slots = o.queue_capacity;
  GROSR_CU_RETURN_IF_ERROR(
      *cu_, cu_->cuMemcpyHtoD(d + queue_counters_at, &counters, sizeof(counters)),
      "cuMemcpyHtoD(queue counters)");
  const std::vector<uint64_t> pool = heap_layout_.InitialPool();  // every page free
  GROSR_CU_RETURN_IF_ERROR(
      *cu_,
      cu_->cuMemcpyHtoD(d + heap_metadata_at + heap_layout_.pool_offset, pool.data(),
                        pool.size() * sizeof(uint64_t)),
      "cuMemcpyHtoD(heap pool)");
  GROSR_CU_RETURN_IF_ERROR(
      *cu_, cu_->cuMemcpyHtoD(state_device_, &state_, sizeof(state_)),
      "cuMemcpyHtoD(state)");
  return absl::OkStatus();
}

Runtime::~Runtime() {
  bool shut_down;
  {
    absl::MutexLock lock(&mu_);
    shut_down = phase_ == Phase::kShutDown;
  }
  if (!shut_down && cu_ != nullptr) {
    absl::StatusOr<ShutdownReport> report = Shutdown();
    if (!report.ok()) {
      std::fprintf(stderr, "grosr: shutdown in destructor: %s\n",
                   std::string(report.status().message()).c_str());
    }
  }
  // A kernel that could not be stopped still uses the context and its
  // memory: freeing (the members' destructors) or releasing the last
  // reference would wait for it forever, or pull memory from under it.
  // Leave all of it to process exit.
  if (kernel_stuck_.load()) {
    AbandonResources();
    return;
  }
  if (context_retained_) cu_->cuDevicePrimaryCtxRelease(device_);
}

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

absl::StatusOr<LoadReport> Runtime::LoadFile(const std::string& path) {
  return std::move(LoadFiles(absl::MakeConstSpan(&path, 1))[0]);
}

absl::StatusOr<LoadReport> Runtime::LoadSource(const std::string& name,
                                               const std::string& source) {
  const TaskSource one{name, source};
  return std::move(LoadSources(absl::MakeConstSpan(&one, 1))[0]);
}

std::vector<absl::StatusOr<LoadReport>> Runtime::LoadFiles(
    absl::Span<const std::string> paths) {
  std::vector<TaskSource> sources;
  std::vector<absl::StatusOr<LoadReport>> results(paths.size(), absl::UnknownError(""));
  std::vector<size_t> readable;
  for (size_t i = 0; i < paths.size(); ++i) {
    std::ifstream in(paths[i], std::ios::binary);
    if (!in) {
      results[i] = absl::NotFoundError(absl::StrCat("cannot read task file ", paths[i]));
      continue;
    }
    std::stringstream buffer;
    buffer << in.rdbuf();
    sources.push_back(TaskSource{paths[i], buffer.str()});
    readable.push_back(i);
  }
  std::vector<absl::StatusOr<LoadReport>> loaded = LoadSources(sources);
  for (size_t k = 0; k < readable.size(); ++k) results[readable[k]] = std::move(loaded[k]);
  return results;
}

std::vector<absl::StatusOr<LoadReport>> Runtime::LoadSources(
    absl::Span<const TaskSource> sources) {
  std::vector<absl::StatusOr<LoadReport>> results(sources.size(), absl::UnknownError(""));
  {
    absl::MutexLock lock(&mu_);
    if (phase_ == Phase::kShutDown) {
      for (size_t i = 0; i < sources.size(); ++i) {
        results[i] = absl::FailedPreconditionError(
            absl::StrCat("cannot load ", sources[i].name, ": the runtime was shut down"));
      }
      return results;
    }
  }
  // Compiling takes no lock and no pause: the scheduler keeps serving, and
  // a source that fails here (compile error, loader rule) never pauses it.
  std::vector<std::unique_ptr<PendingLoad>> pending(sources.size());
  std::vector<PendingLoad*> to_install;
  for (size_t i = 0; i < sources.size(); ++i) {
    absl::StatusOr<TaskModuleImage> image = BuildTaskModule(
        *compiler_, target_, info_.kernel_registers, sources[i].name, sources[i].text);
    if (!image.ok()) {
      results[i] = image.status();
      continue;
    }
    pending[i] = std::make_unique<PendingLoad>();
    pending[i]->image = std::move(*image);
    to_install.push_back(pending[i].get());
  }
  if (!to_install.empty()) ApplyLoads(to_install);
  for (size_t i = 0; i < sources.size(); ++i) {
    if (pending[i] != nullptr) results[i] = std::move(pending[i]->result);
  }
  return results;
}

void Runtime::ApplyLoads(absl::Span<PendingLoad* const> loads) {
  {
    absl::MutexLock queue(&load_mu_);
    queued_loads_.insert(queued_loads_.end(), loads.begin(), loads.end());
  }
  // Whoever holds the pause next installs everything queued by then, ours
  // included; if an earlier holder took ours, they are done when we get it.
  absl::MutexLock pause(&pause_mu_);
  std::vector<PendingLoad*> batch;
  {
    absl::MutexLock queue(&load_mu_);
    batch.swap(queued_loads_);
  }
  if (!batch.empty()) InstallBatch(batch);
}

void Runtime::InstallBatch(absl::Span<PendingLoad* const> batch) {
  Phase phase;
  {
    absl::MutexLock lock(&mu_);
    phase = phase_;
  }
  if (phase == Phase::kShutDown || failed_.load(std::memory_order_acquire)) {
    absl::Status why = failed_.load() ? PollKernel()
                                      : absl::FailedPreconditionError("the runtime was shut down");
    for (PendingLoad* load : batch) load->result = why;
    return;
  }
  MakeCurrent();
  const bool pause = phase == Phase::kRunning;
  const absl::Time pause_start = absl::Now();
  absl::Time parked_at = pause_start;
  if (pause) {
    if (absl::Status stopped = StopForPause(&parked_at); !stopped.ok()) {
      for (PendingLoad* load : batch) {
        load->result = absl::Status(stopped.code(), absl::StrCat("cannot load ",
                                                                  load->image.source_name, ": ",
                                                                  stopped.message()));
      }
      return;
    }
  }
  const absl::Time exited_at = absl::Now();
  int installed = 0;
  for (PendingLoad* load : batch) {
    const absl::Time start = absl::Now();
    absl::StatusOr<Module> module = Module::Load(*cu_, load->image.cubin);
    if (!module.ok()) {
      load->result = module.status();
      continue;
    }
    LoadReport report;
    report.source = load->image.source_name;
    report.compile_time = load->image.compile_time;
    report.link_time = load->image.link_time;
    report.from_cache = load->image.from_cache;
    report.warnings = load->image.compile_log;
    absl::MutexLock lock(&mu_);
    if (absl::Status done = InstallTasks(load->image, std::move(*module), &report); !done.ok()) {
      load->result = done;
      continue;
    }
    report.install_time = absl::Now() - start;
    load->result = std::move(report);
    ++installed;
  }
  std::vector<CUdeviceptr> frees;
  const absl::Time unload_start = absl::Now();
  {
    absl::MutexLock lock(&mu_);
    UnloadUnusedModules();
    if (pause) frees.swap(deferred_frees_);  // cuMemFree works while the kernel is down
  }
  for (CUdeviceptr p : frees) cu_->cuMemFree(p);
  const absl::Duration unload_time = absl::Now() - unload_start;
  if (!pause) return;
  const absl::Time installed_at = absl::Now();
  absl::Status relaunched = LaunchKernel();
  const absl::Time running_at = absl::Now();
  const absl::Duration pause_time = running_at - pause_start;
  pauses_.fetch_add(1, std::memory_order_relaxed);
  for (PendingLoad* load : batch) {
    if (!load->result.ok()) continue;
    if (!relaunched.ok()) {
      load->result = relaunched;
      continue;
    }
    load->result->paused = true;
    load->result->pause_time = pause_time;
    load->result->park_time = parked_at - pause_start;
    load->result->exit_time = exited_at - parked_at;
    load->result->install_time_in_pause = installed_at - exited_at;
    load->result->relaunch_time = running_at - installed_at;
    load->result->unload_time = unload_time;
    load->result->loads_in_pause = installed;
  }
}

uint32_t Runtime::IssueCommand(uint32_t command) {
  command_sequence_ = (command_sequence_ + 1) & 0xffffffu;
  SystemAtomic32(host_->command).store(SignalWord(command, command_sequence_), kRelease);
  return command_sequence_;
}

bool Runtime::KernelReported(uint32_t state, uint32_t sequence) const {
  return SystemAtomic32(host_->kernel_state).load(kAcquire) == SignalWord(state, sequence);
}

void Runtime::ExpectKernelExit() {
  // The epoch first: a PollKernel that finds the kernel gone and the epoch
  // unchanged since before its query knows the exit was not asked for.
  kernel_epoch_.fetch_add(1);
  running_.store(false);
}

CUresult Runtime::StopKernel() {
  ExpectKernelExit();
  IssueCommand(kCommandStop);
  return WaitForKernelExit(options_.stop_timeout);
}

CUresult Runtime::WaitForKernelExit(absl::Duration timeout) {
  const absl::Time start = absl::Now();
  CUresult query;
  while ((query = cu_->cuStreamQuery(kernel_stream_.get())) == CUDA_ERROR_NOT_READY) {
    const absl::Duration waited = absl::Now() - start;
    if (waited >= timeout) break;
    // An exit after a park takes microseconds: poll tightly at first.
    if (waited < absl::Milliseconds(1)) {
      std::this_thread::yield();
    } else {
      absl::SleepFor(absl::Microseconds(100));
    }
  }
  return query;
}

void Runtime::MarkKernelStuck() {
  if (!kernel_stuck_.exchange(true)) g_stuck_kernels.fetch_add(1);
}

absl::Status Runtime::StopForPause(absl::Time* parked_at) {
  const uint32_t park = IssueCommand(kCommandPark);
  absl::Status parked = SpinUntil(
      [&] { return KernelReported(kKernelParked, park); }, options_.pause_timeout,
      [] { return std::string("every worker to reach a task boundary"); });
  if (!parked.ok()) {
    // Undo: the workers that parked go on where they were, and the control
    // warp takes submissions again.
    const uint32_t resume = IssueCommand(kCommandRun);
    if (failed_.load()) return parked;
    absl::Status resumed =
        SpinUntil([&] { return KernelReported(kKernelRunning, resume); }, absl::Seconds(5),
                  [] { return std::string("the scheduler to resume after an undone park"); });
    if (!resumed.ok()) return resumed;
    return absl::UnavailableError(absl::StrCat(
        "the scheduler could not pause to load code (", parked.message(),
        "); nothing was loaded and the scheduler keeps running"));
  }
  *parked_at = absl::Now();
  // Every worker holds its work at a task boundary: let them save it and exit.
  const CUresult query = StopKernel();
  if (query == CUDA_ERROR_NOT_READY) {
    // Every worker had parked, yet the kernel runs on: it holds the context,
    // which cannot be released under it (Shutdown leaves it to process exit).
    MarkKernelStuck();
    return SetFatal(absl::InternalError(absl::StrCat(
        "the scheduler kernel did not exit within ", absl::FormatDuration(options_.stop_timeout),
        " after every worker parked; the runtime cannot continue and the process must exit to "
        "reclaim the GPU")));
  }
  if (query != CUDA_SUCCESS) return SetFatal(ContextLostError(query, "the scheduler kernel"));
  return absl::OkStatus();
}

absl::Status Runtime::LaunchKernel() {
  absl::Status launched = LaunchKernelOnce();
  // No kernel, or one that did not start: nothing would serve the queues.
  if (!launched.ok()) {
    if (failed_.load()) return PollKernel();  // already fatal (e.g. the context was lost)
    if (const CUresult query = cu_->cuStreamQuery(kernel_stream_.get()); IsContextLost(query)) {
      return SetFatal(ContextLostError(query, "the scheduler kernel's launch"));
    }
    return SetFatal(absl::Status(
        launched.code(), absl::StrCat("the scheduler kernel could not be (re)launched: ",
                                      launched.message(), "; the runtime cannot continue")));
  }
  return launched;
}

absl::Status Runtime::LaunchKernelOnce() {
  // Table and state writes went through the legacy stream (cuMemcpyHtoD),
  // which does not order against the non-blocking kernel stream: finish
  // them first. The device's copy of the command and the park count are
  // reset in the kernel's stream, ahead of it.
  GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuStreamSynchronize(CU_STREAM_LEGACY),
                           "cuStreamSynchronize(legacy stream)");
  GROSR_CU_RETURN_IF_ERROR(
      *cu_,
      cu_->cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(state_.stop), kWorkersRun, 1,
                            kernel_stream_.get()),
      "cuMemsetD32Async(stop)");
  GROSR_CU_RETURN_IF_ERROR(
      *cu_,
      cu_->cuMemsetD32Async(reinterpret_cast<CUdeviceptr>(state_.parked), 0, 1,
                            kernel_stream_.get()),
      "cuMemsetD32Async(parked)");
  SystemAtomic32(host_->kernel_state).store(SignalWord(kKernelNotStarted, 0), kRelaxed);
  const uint32_t run = IssueCommand(kCommandRun);
  CUdeviceptr state = state_device_;
  void* params[] = {&state};
  GROSR_CU_RETURN_IF_ERROR(
      *cu_,
      cu_->cuLaunchKernel(kernel_, info_.blocks, 1, 1, options_.warps_per_block * 32, 1, 1,
                          static_cast<unsigned>(info_.shared_bytes_per_block),
                          kernel_stream_.get(), params, nullptr),
      "cuLaunchKernel(grosr_scheduler)");
  // A new epoch before `running_`: a PollKernel that saw the previous
  // kernel's exit (and `running_` still set) cannot blame this launch for it.
  kernel_epoch_.fetch_add(1);
  running_.store(true);
  absl::Status started =
      SpinUntil([&] { return KernelReported(kKernelRunning, run); }, absl::Seconds(30),
                [] { return std::string("the scheduler kernel to start"); });
  if (!started.ok() && !failed_.load()) {
    // Launched but silent: stop it, or mark it stuck so that nothing is
    // freed (or the context released) under it.
    if (StopKernel() == CUDA_ERROR_NOT_READY) MarkKernelStuck();
  }
  return started;
}

void Runtime::UnloadUnusedModules() {
  for (auto it = task_modules_.begin(); it != task_modules_.end();) {
    if ((*it)->live_entries > 0) {
      ++it;
      continue;
    }
    it = task_modules_.erase(it);  // ~Module unloads it
    ++modules_unloaded_;
  }
}

absl::Status Runtime::InstallTasks(const TaskModuleImage& image, Module module,
                                   LoadReport* report) {
  struct Found {
    std::string name;
    CUdeviceptr entry = 0;
    TaskInfo info{};
  };
  std::vector<Found> found;
  size_t new_names = 0;
  for (const std::string& task : image.task_names) {
    Found f;
    f.name = task;
    CUdeviceptr symbol = 0;
    size_t bytes = 0;
    GROSR_CU_RETURN_IF_ERROR(
        *cu_, cu_->cuModuleGetGlobal(&symbol, &bytes, module.get(), TaskEntrySymbol(task).c_str()),
        absl::StrCat("cuModuleGetGlobal(", TaskEntrySymbol(task), ")"));
    GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuMemcpyDtoH(&f.entry, symbol, sizeof(f.entry)),
                             "cuMemcpyDtoH(task entry)");
    GROSR_CU_RETURN_IF_ERROR(
        *cu_, cu_->cuModuleGetGlobal(&symbol, &bytes, module.get(), TaskInfoSymbol(task).c_str()),
        absl::StrCat("cuModuleGetGlobal(", TaskInfoSymbol(task), ")"));
    GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuMemcpyDtoH(&f.info, symbol, sizeof(f.info)),
                             "cuMemcpyDtoH(task info)");
    if (f.entry == 0) {
      return absl::InternalError(absl::StrCat(image.source_name, ": task ", task,
                                              " has a null entry point"));
    }
    if (!by_name_.contains(task)) ++new_names;
    found.push_back(f);
  }
  if (tasks_.size() + new_names > options_.table_capacity) {
    return absl::ResourceExhaustedError(absl::StrCat(
        image.source_name, ": the dispatch table is full (table_capacity ",
        options_.table_capacity, ")"));
  }
  auto record = std::make_unique<ModuleRecord>();
  record->module = std::move(module);
  record->source = image.source_name;
  for (const Found& f : found) {
    auto existing = by_name_.find(f.name);
    const bool replacing = existing != by_name_.end();
    const TaskId id = replacing ? existing->second : static_cast<TaskId>(tasks_.size());
    // The table changes only while no kernel runs (before Start or in a
    // pause): workers cache entries for a whole launch.
    GROSR_CU_RETURN_IF_ERROR(
        *cu_,
        cu_->cuMemcpyHtoD(reinterpret_cast<CUdeviceptr>(state_.info + id), &f.info,
                          sizeof(TaskInfo)),
        "cuMemcpyHtoD(task info)");
    GROSR_CU_RETURN_IF_ERROR(
        *cu_,
        cu_->cuMemcpyHtoD(reinterpret_cast<CUdeviceptr>(state_.table + id), &f.entry,
                          sizeof(f.entry)),
        "cuMemcpyHtoD(dispatch table)");
    if (replacing) {
      TaskRecord& task = *tasks_[id];
      --task.module->live_entries;
      task.module = record.get();
      task.arg_bytes = f.info.arg_bytes;
      report->replaced.push_back(f.name);
    } else {
      auto task = std::make_unique<TaskRecord>();
      task->name = f.name;
      task->id = id;
      task->arg_bytes = f.info.arg_bytes;
      task->module = record.get();
      tasks_.push_back(std::move(task));
      by_name_[f.name] = id;
    }
    ++record->live_entries;
    {
      absl::MutexLock names(&names_mu_);
      if (names_.size() <= id) {
        names_.resize(id + 1);
        arg_bytes_.resize(id + 1);
      }
      names_[id] = f.name;
      arg_bytes_[id] = f.info.arg_bytes;
    }
    report->tasks.push_back(LoadedTask{f.name, id});
  }
  task_modules_.push_back(std::move(record));
  return absl::OkStatus();
}

absl::StatusOr<DirectoryLoad> Runtime::LoadDirectory(const std::string& directory) {
  DIR* dir = opendir(directory.c_str());
  if (dir == nullptr) {
    return absl::NotFoundError(absl::StrCat("cannot open task directory ", directory));
  }
  std::vector<std::string> files;
  while (dirent* entry = readdir(dir)) {
    std::string name = entry->d_name;
    if (absl::EndsWith(name, ".cu")) files.push_back(absl::StrCat(directory, "/", name));
  }
  closedir(dir);
  std::sort(files.begin(), files.end());
  DirectoryLoad result;
  std::vector<absl::StatusOr<LoadReport>> reports = LoadFiles(files);  // one pause
  for (size_t i = 0; i < files.size(); ++i) {
    if (reports[i].ok()) {
      result.loaded.push_back(std::move(*reports[i]));
    } else {
      result.failed.emplace_back(files[i], reports[i].status());
    }
  }
  return result;
}

absl::StatusOr<TaskId> Runtime::Find(absl::string_view name) const {
  absl::MutexLock lock(&mu_);
  auto it = by_name_.find(std::string(name));
  if (it == by_name_.end()) {
    return absl::NotFoundError(absl::StrCat("no task named '", name, "' is loaded"));
  }
  return it->second;
}

std::string Runtime::NameOf(TaskId id) const {
  absl::MutexLock lock(&names_mu_);
  if (id == 0 || id >= names_.size()) return absl::StrCat("<unknown task ", id, ">");
  return names_[id];
}

// ---------------------------------------------------------------------------
// Start and health
// ---------------------------------------------------------------------------

absl::Status Runtime::Start() {
  MakeCurrent();
  {
    absl::MutexLock pause(&pause_mu_);  // no install half done
    {
      absl::MutexLock lock(&mu_);
      if (phase_ != Phase::kCreated) {
        return absl::FailedPreconditionError(
            phase_ == Phase::kRunning ? "Start(): already running"
                                      : "Start(): the runtime was shut down");
      }
      phase_ = Phase::kRunning;
    }
    if (absl::Status started = LaunchKernel(); !started.ok()) return started;
  }
  if (options_.watchdog_deadline > absl::ZeroDuration()) {
    watchdog_ = std::thread([this] { WatchdogLoop(); });
  }
  return absl::OkStatus();
}

absl::Status Runtime::SetFatal(absl::Status status) {
  absl::MutexLock lock(&fatal_mu_);
  if (fatal_.ok()) {
    fatal_ = std::move(status);
    failed_.store(true);
    std::fprintf(stderr, "grosr: %s\n", std::string(fatal_.message()).c_str());
  }
  return fatal_;
}

absl::Status Runtime::ContextLostError(CUresult result, absl::string_view what) {
  context_lost_.store(true);
  // The faulting task was the latest on its warp; last_task is pinned, so
  // it is still readable now that device memory is not.
  std::map<TaskId, int> latest;
  for (uint32_t w = 1; w < state_.num_warps; ++w) {
    TaskId id = SystemAtomic32(last_task_[w]).load(kRelaxed);
    if (id != 0xffffffffu) ++latest[id];
  }
  std::vector<std::string> names;
  for (const auto& [id, warps] : latest) {
    names.push_back(absl::StrCat(NameOf(id), " (id ", id, ", latest on ", warps, " warp",
                                 warps == 1 ? "" : "s", ")"));
  }
  return absl::InternalError(absl::StrCat(
      "the CUDA context was lost (", what, ": ", cu_->ErrorText(result),
      "); a task trapped or faulted. Tasks running or last run: ",
      names.empty() ? "none" : absl::StrJoin(names, ", "),
      ". The runtime cannot continue; Shutdown() releases it"));
}

absl::Status Runtime::PollKernel() {
  if (failed_.load(std::memory_order_acquire)) {
    absl::MutexLock lock(&fatal_mu_);
    return fatal_;
  }
  if (shut_down_.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("the runtime was shut down");
  }
  const uint64_t epoch = kernel_epoch_.load();
  if (!running_.load()) return absl::OkStatus();
  MakeCurrent();
  CUresult result = cu_->cuStreamQuery(kernel_stream_.get());
  if (result == CUDA_ERROR_NOT_READY) return absl::OkStatus();
  if (result == CUDA_SUCCESS) {
    // An exit the host asked for (a pause or Shutdown, perhaps already
    // relaunched) changed the epoch first.
    if (kernel_epoch_.load() != epoch || !running_.load()) return absl::OkStatus();
    return SetFatal(absl::InternalError("the scheduler kernel exited unexpectedly"));
  }
  return SetFatal(ContextLostError(result, "the scheduler kernel"));
}

absl::Status Runtime::health() { return PollKernel(); }

template <typename Done, typename What>
absl::Status Runtime::SpinUntil(Done done, absl::Duration timeout, What what) {
  const absl::Time start = absl::Now();
  const absl::Time deadline =
      timeout == absl::InfiniteDuration() ? absl::InfiniteFuture() : start + timeout;
  absl::Time next_health = start + absl::Milliseconds(1);
  for (uint64_t spin = 0;; ++spin) {
    if (done()) return absl::OkStatus();
    if (spin < 4096) {
      _mm_pause();
      continue;
    }
    const absl::Time now = absl::Now();
    if (now >= next_health) {
      if (absl::Status health = PollKernel(); !health.ok()) {
        if (done()) return absl::OkStatus();
        return health;
      }
      next_health = now + absl::Milliseconds(1);
    }
    if (now >= deadline) {
      if (done()) return absl::OkStatus();
      std::string hung = DescribeHung();
      return absl::DeadlineExceededError(absl::StrCat(
          "timed out after ", absl::FormatDuration(timeout), " waiting for ", what(),
          hung.empty() ? "" : "; ", hung));
    }
    if (now - start < absl::Milliseconds(2)) {
      std::this_thread::yield();
    } else {
      absl::SleepFor(absl::Microseconds(50));
    }
  }
}

// ---------------------------------------------------------------------------
// Submission
// ---------------------------------------------------------------------------

absl::Status Runtime::WaitForRingRoom(uint64_t needed, absl::Duration wait_for_room) {
  auto room = [&] {
    uint64_t taken = SystemAtomic64(host_->submissions_taken).load(kAcquire);
    return ring_tail_.load(std::memory_order_relaxed) + needed - taken <= options_.ring_capacity;
  };
  if (room()) return absl::OkStatus();
  if (wait_for_room <= absl::ZeroDuration()) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the submission ring is full (ring_capacity ", options_.ring_capacity,
        "): the GPU has not taken earlier submissions yet"));
  }
  absl::Status status = SpinUntil(room, wait_for_room,
                                  [] { return std::string("room in the submission ring"); });
  if (absl::IsDeadlineExceeded(status)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "the submission ring stayed full (ring_capacity ", options_.ring_capacity, ") for ",
        absl::FormatDuration(wait_for_room), ": ", status.message()));
  }
  return status;
}

uint64_t Runtime::NextTicket() const {
  uint64_t ticket = next_ticket_;
  if (static_cast<uint32_t>(ticket) == 0) ++ticket;  // 0 means "untracked"
  return ticket;
}

absl::Status Runtime::WaitForTicketSlot(absl::Duration wait_for_room) {
  const uint64_t ticket = NextTicket();
  const uint32_t slot = static_cast<uint32_t>(ticket) & (options_.completion_capacity - 1);
  const uint64_t previous = slot_owner_[slot].load(std::memory_order_relaxed);
  CompletionRecord* record = &completions_[slot];
  auto finished = [&] {
    return previous == 0 ||
           SystemAtomic32(record->ticket).load(kAcquire) == static_cast<uint32_t>(previous);
  };
  if (finished()) return absl::OkStatus();
  absl::Status status = wait_for_room <= absl::ZeroDuration()
                            ? absl::DeadlineExceededError("no wait")
                            : SpinUntil(finished, wait_for_room,
                                        [] { return std::string("a tracked task to finish"); });
  if (absl::IsDeadlineExceeded(status)) {
    return absl::ResourceExhaustedError(absl::StrCat(
        "too many tracked tasks in flight (completion_capacity ", options_.completion_capacity,
        "): ticket ", previous,
        " has not finished; submit untracked work or raise completion_capacity"));
  }
  return status;
}

uint64_t Runtime::CommitTicket() {
  const uint64_t ticket = NextTicket();
  const uint32_t slot = static_cast<uint32_t>(ticket) & (options_.completion_capacity - 1);
  const uint64_t previous = slot_owner_[slot].load(std::memory_order_relaxed);
  if (previous != 0) {
    // WaitForTicketSlot saw it finish; keep a failure for a late Wait.
    const uint32_t status = SystemAtomic32(completions_[slot].status).load(kRelaxed);
    if (status != kTaskOk) {
      absl::MutexLock lock(&retired_mu_);
      retired_failures_[previous] = status;
      if (retired_failures_.size() > kRetiredFailuresKept) {
        retired_failures_.erase(retired_failures_.begin());
      }
    }
  }
  slot_owner_[slot].store(ticket, std::memory_order_release);
  next_ticket_ = ticket + 1;
  tickets_issued_.store(next_ticket_, std::memory_order_release);
  return ticket;
}

void Runtime::WriteRing(const TaskDescriptor& descriptor) {
  const uint64_t position = ring_tail_.load(std::memory_order_relaxed);
  ring_tail_.store(position + 1, std::memory_order_relaxed);
  // The control warp takes it once every word of it is there
  // (SubmissionRing): no sequence word to publish it. Each word is stored
  // with release, so what this thread wrote before (pinned data a task
  // will read) is visible to the task.
  ring_.Write(position, descriptor);
}

absl::Status Runtime::CheckGroup(GroupId group) {
  if (group >= options_.group_capacity || !group_in_use_[group]) {
    return absl::InvalidArgumentError(absl::StrCat("group ", group, " was not created"));
  }
  return absl::OkStatus();
}

absl::Status Runtime::CheckCanSubmit(absl::string_view what, GroupId group) {
  if (phase_ != Phase::kRunning) {
    return absl::FailedPreconditionError(absl::StrCat(
        what, phase_ == Phase::kCreated ? ": call Start() first" : ": the runtime was shut down"));
  }
  return CheckGroup(group);
}

// Submitters queue on submit_mu_ and wait for room (ring slots, completion
// slots) holding only it: mu_, which a load's pause needs, is held just for
// the final checks and ring writes, which never wait.
absl::StatusOr<TaskHandle> Runtime::Submit(TaskId task, const void* args, size_t bytes,
                                           const SubmitOptions& options) {
  if (bytes > kMaxInlineArgBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "task arguments are ", bytes, " bytes; at most ", kMaxInlineArgBytes,
        " travel inline (pass larger data by device pointer)"));
  }
  if (failed_.load(std::memory_order_acquire)) return PollKernel();
  absl::MutexLock submit(&submit_mu_);
  WaiterScope scope(this);  // pinned memory stays while we look at it
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status valid = CheckCanSubmit("Submit()", options.group); !valid.ok()) return valid;
  }
  if (absl::Status room = WaitForRingRoom(1, options.wait_for_room); !room.ok()) return room;
  if (options.track) {
    if (absl::Status slot = WaitForTicketSlot(options.wait_for_room); !slot.ok()) return slot;
  }
  TaskDescriptor descriptor{};
  descriptor.task_id = task;
  descriptor.arg_bytes = static_cast<uint16_t>(bytes);
  descriptor.group = options.group;
  if (bytes > 0) std::memcpy(descriptor.args, args, bytes);
  TaskHandle handle;
  handle.task = task;
  absl::MutexLock lock(&mu_);
  // Shutdown may have begun while we waited.
  if (absl::Status valid = CheckCanSubmit("Submit()", options.group); !valid.ok()) return valid;
  if (options.track) {
    handle.ticket = CommitTicket();
    descriptor.ticket = static_cast<uint32_t>(handle.ticket);
  }
  if (task < tasks_.size() && task != 0) {
    tasks_[task]->submitted.fetch_add(1, std::memory_order_relaxed);
  }
  // Counted before the GPU can see it, so a waiter never misses it.
  group_roots_[options.group].fetch_add(1, std::memory_order_acq_rel);
  submitted_total_.fetch_add(1, std::memory_order_acq_rel);
  WriteRing(descriptor);
  return handle;
}

absl::Status Runtime::SubmitBatch(absl::Span<const TaskRequest> requests, GroupId group,
                                  absl::Duration wait_for_room) {
  for (const TaskRequest& request : requests) {
    if (request.arg_bytes > kMaxInlineArgBytes) {
      return absl::InvalidArgumentError(absl::StrCat(
          "a request has ", request.arg_bytes, " argument bytes; at most ",
          kMaxInlineArgBytes, " travel inline; nothing was submitted"));
    }
  }
  if (failed_.load(std::memory_order_acquire)) return PollKernel();
  absl::MutexLock submit(&submit_mu_);
  WaiterScope scope(this);
  {
    absl::MutexLock lock(&mu_);
    if (absl::Status valid = CheckCanSubmit("SubmitBatch()", group); !valid.ok()) return valid;
  }
  size_t done = 0;
  while (done < requests.size()) {
    const uint64_t chunk =
        std::min<uint64_t>(requests.size() - done, options_.ring_capacity / 2);
    absl::Status room = WaitForRingRoom(chunk, wait_for_room);
    absl::MutexLock lock(&mu_);
    if (room.ok()) room = CheckCanSubmit("SubmitBatch()", group);
    if (!room.ok()) {
      return absl::Status(room.code(), absl::StrCat(room.message(), " (", done, " of ",
                                                    requests.size(), " submitted)"));
    }
    group_roots_[group].fetch_add(static_cast<uint32_t>(chunk), std::memory_order_acq_rel);
    submitted_total_.fetch_add(static_cast<uint32_t>(chunk), std::memory_order_acq_rel);
    for (uint64_t i = 0; i < chunk;) {
      // A run of one task id (a batch is mostly one) is counted with one
      // atomic add, before any of it reaches the ring: Stats() never shows
      // more completed than submitted.
      const TaskId task = requests[done + i].task;
      uint64_t end = i + 1;
      while (end < chunk && requests[done + end].task == task) ++end;
      if (task < tasks_.size() && task != 0) {
        tasks_[task]->submitted.fetch_add(end - i, std::memory_order_relaxed);
      }
      for (; i < end; ++i) {
        const TaskRequest& request = requests[done + i];
        TaskDescriptor descriptor{};
        descriptor.task_id = task;
        descriptor.arg_bytes = static_cast<uint16_t>(request.arg_bytes);
        descriptor.group = group;
        std::memcpy(descriptor.args, request.args, request.arg_bytes);
        WriteRing(descriptor);
      }
    }
    done += chunk;
  }
  return absl::OkStatus();
}

absl::StatusOr<GroupId> Runtime::CreateGroup() {
  absl::MutexLock lock(&mu_);
  for (GroupId g = 1; g < options_.group_capacity; ++g) {
    if (!group_in_use_[g]) {
      group_in_use_[g] = true;
      return g;
    }
  }
  return absl::ResourceExhaustedError(absl::StrCat(
      "all ", options_.group_capacity - 1, " groups are in use (group_capacity)"));
}

absl::Status Runtime::ReleaseGroup(GroupId group) {
  absl::MutexLock lock(&mu_);
  if (group == 0) return absl::InvalidArgumentError("group 0 is the default group");
  if (absl::Status valid = CheckGroup(group); !valid.ok()) return valid;
  // The group's counters keep running: a reused id continues from them.
  group_in_use_[group] = false;
  return absl::OkStatus();
}

// ---------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------

absl::Status Runtime::TaskOutcome(uint32_t status, TaskId task, uint64_t ticket) const {
  if (status == kTaskOk) return absl::OkStatus();
  const std::string who = absl::StrCat("task ", NameOf(task), " (id ", task, ", ticket ",
                                       ticket, ")");
  switch (status) {
    case kUnknownTask:
      return absl::NotFoundError(absl::StrCat(who, ": no task is installed under id ", task));
    case kBadArguments: {
      std::string expected;
      {
        absl::MutexLock lock(&names_mu_);
        if (task != 0 && task < arg_bytes_.size()) {
          expected = arg_bytes_[task] == kAnyArgBytes
                         ? ""
                         : absl::StrCat("; it takes ", arg_bytes_[task], " bytes");
        }
      }
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": argument size does not match the task's", expected));
    }
    case kQueueFull:
      return absl::ResourceExhaustedError(absl::StrCat(who, ": the device queue was full"));
    case kAbandoned:
      return absl::AbortedError(absl::StrCat(who, ": abandoned at shutdown"));
    case kBadFreeForeign:
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": gpu_free of a pointer the task heap did not give out; refused"));
    case kBadFreeMisaligned:
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": gpu_free of a pointer inside a block, not its start; refused"));
    case kBadFreeDouble:
      return absl::InvalidArgumentError(
          absl::StrCat(who, ": gpu_free of a block that is not allocated (double free); refused"));
    default:
      return absl::AbortedError(absl::StrCat(who, " failed with code ", status, " (",
                                             Hex(status), ")"));
  }
}

absl::Status Runtime::Wait(const TaskHandle& handle, absl::Duration timeout) {
  if (handle.ticket == 0) {
    return absl::InvalidArgumentError(
        "Wait(): the task was submitted untracked; wait with a group or Drain()");
  }
  if (handle.ticket >= tickets_issued_.load(std::memory_order_acquire)) {
    return absl::InvalidArgumentError(
        absl::StrCat("Wait(): ticket ", handle.ticket, " was never issued"));
  }
  WaiterScope scope(this);
  if (shut_down_.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("Wait(): the runtime was shut down");
  }
  const uint32_t low = static_cast<uint32_t>(handle.ticket);
  const uint32_t slot = low & (options_.completion_capacity - 1);
  CompletionRecord* record = &completions_[slot];
  auto reused = [&] {
    return slot_owner_[slot].load(std::memory_order_acquire) != handle.ticket;
  };
  absl::Status waited = SpinUntil(
      [&] { return SystemAtomic32(record->ticket).load(kAcquire) == low || reused(); },
      timeout,
      [&] { return absl::StrCat("task ", NameOf(handle.task), " (ticket ", handle.ticket, ")"); });
  if (!waited.ok()) return waited;
  if (!reused()) {
    const uint32_t status = SystemAtomic32(record->status).load(kRelaxed);
    // Re-checked: a Submit may have reused the slot after we read it.
    if (!reused()) return TaskOutcome(status, handle.task, handle.ticket);
  }
  uint32_t status = kTaskOk;
  {
    absl::MutexLock lock(&retired_mu_);
    auto it = retired_failures_.find(handle.ticket);
    if (it != retired_failures_.end()) status = it->second;
  }
  return TaskOutcome(status, handle.task, handle.ticket);
}

template <typename What>
absl::Status Runtime::WaitForWord(const uint64_t* snapshot, uint32_t roots,
                                  absl::Duration timeout, What what) {
  return SpinUntil(
      [&] {
        const uint64_t word = SystemAtomic64(*const_cast<uint64_t*>(snapshot)).load(kAcquire);
        // Wrapping compare: the first `roots` submissions were taken in.
        return PendingOf(word) == 0 && static_cast<int32_t>(RootsOf(word) - roots) >= 0;
      },
      timeout, what);
}

absl::Status Runtime::WaitGroup(GroupId group, absl::Duration timeout) {
  {
    absl::MutexLock lock(&mu_);
    if (group == 0) return absl::InvalidArgumentError("WaitGroup(0): use Drain()");
    if (absl::Status valid = CheckGroup(group); !valid.ok()) return valid;
  }
  WaiterScope scope(this);
  if (shut_down_.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("WaitGroup(): the runtime was shut down");
  }
  const uint32_t roots = group_roots_[group].load(std::memory_order_acquire);
  return WaitForWord(&group_snapshots_[group], roots, timeout,
                     [group] { return absl::StrCat("group ", group); });
}

absl::Status Runtime::Drain(absl::Duration timeout) {
  WaiterScope scope(this);
  if (shut_down_.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError("Drain(): the runtime was shut down");
  }
  const uint32_t roots = submitted_total_.load(std::memory_order_acquire);
  if (roots == 0) return PollKernel();
  return WaitForWord(&host_->total_snapshot, roots, timeout,
                     [] { return std::string("quiescence"); });
}

// ---------------------------------------------------------------------------
// Introspection
// ---------------------------------------------------------------------------

absl::Status Runtime::CopyOut(void* to, CUdeviceptr from, size_t bytes, CUstream stream) {
  MakeCurrent();
  CUresult result = cu_->cuMemcpyDtoHAsync(to, from, bytes, stream);
  if (result == CUDA_SUCCESS) result = cu_->cuStreamSynchronize(stream);
  if (result == CUDA_SUCCESS) return absl::OkStatus();
  if (IsContextLost(result)) return SetFatal(ContextLostError(result, "a copy"));
  return cu_->Check(result, "cuMemcpyDtoHAsync");
}

absl::StatusOr<RuntimeStats> Runtime::Stats() {
  if (absl::Status health = PollKernel(); !health.ok()) return health;
  RuntimeStats stats;
  std::vector<TaskCounters> counters;
  {
    absl::MutexLock lock(&mu_);
    if (phase_ == Phase::kShutDown) {
      return absl::FailedPreconditionError("Stats(): the runtime was shut down");
    }
    counters.resize(tasks_.size());
    if (absl::Status copied =
            CopyOut(counters.data(), reinterpret_cast<CUdeviceptr>(state_.counters),
                    counters.size() * sizeof(TaskCounters), copy_stream_.get());
        !copied.ok()) {
      return copied;
    }
    for (size_t id = 1; id < tasks_.size(); ++id) {
      TaskStats t;
      t.name = tasks_[id]->name;
      t.id = static_cast<TaskId>(id);
      t.submitted = tasks_[id]->submitted.load(std::memory_order_relaxed);
      t.spawned = counters[id].spawned;
      t.completed = counters[id].completed;
      t.failed = counters[id].failed;
      stats.tasks.push_back(std::move(t));
    }
    stats.ring_depth = ring_tail_.load() - SystemAtomic64(host_->submissions_taken).load(kAcquire);
    stats.modules_loaded = task_modules_.size();
    stats.modules_unloaded = modules_unloaded_;
  }
  stats.pauses = pauses_.load(std::memory_order_relaxed);
  if (absl::Status heap = ReadHeapStats(&stats.heap); !heap.ok()) return heap;
  {
    MakeCurrent();
    size_t free_bytes = 0, total_bytes = 0;
    if (cu_->cuMemGetInfo(&free_bytes, &total_bytes) == CUDA_SUCCESS) {
      stats.device_free_bytes = free_bytes;
    }
  }
  WorkQueueCounters queue{};
  uint64_t scalars[3] = {};
  absl::Status copied = CopyOut(&queue, reinterpret_cast<CUdeviceptr>(state_.queue.counters),
                                sizeof(queue), copy_stream_.get());
  if (copied.ok()) {
    copied = CopyOut(&scalars[0], reinterpret_cast<CUdeviceptr>(state_.invalid_dispatches), 8,
                     copy_stream_.get());
  }
  if (copied.ok()) {
    copied = CopyOut(&scalars[1], reinterpret_cast<CUdeviceptr>(state_.completion.total_word),
                     8, copy_stream_.get());
  }
  if (copied.ok()) {
    copied = CopyOut(&scalars[2], reinterpret_cast<CUdeviceptr>(state_.error_count), 8,
                     copy_stream_.get());
  }
  if (!copied.ok()) return copied;
  stats.queue_depth = std::max<int64_t>(queue.available, 0);  // negative: idle warps' claims
  stats.invalid_dispatches = scalars[0];
  stats.pending = PendingOf(scalars[1]);
  stats.errors_reported = scalars[2];
  absl::MutexLock lock(&watchdog_mu_);
  stats.hung = hung_;
  return stats;
}

absl::Status Runtime::ReadHeapStats(HeapStats* heap) {
  const SlabAllocator& view = state_.heap;
  std::vector<uint64_t> states(view.page_count);
  SlabCounters counters{};
  absl::Status copied =
      CopyOut(states.data(), reinterpret_cast<CUdeviceptr>(view.page_state),
              states.size() * sizeof(uint64_t), copy_stream_.get());
  if (copied.ok()) {
    copied = CopyOut(&counters, reinterpret_cast<CUdeviceptr>(view.counters), sizeof(counters),
                     copy_stream_.get());
  }
  if (!copied.ok()) return copied;
  const SlabUsage usage = MeasureSlabUsage(states.data(), view.page_count, view.page_shift);
  heap->arena_bytes = heap_layout_.arena_bytes();
  heap->page_bytes = view.page_bytes();
  heap->bytes_in_use = usage.bytes_in_use;
  for (uint32_t c = 0; c < SlabAllocator::kMaxClasses; ++c) heap->blocks_in_use[c] = usage.blocks[c];
  heap->pages_in_use = counters.pages_in_use;
  heap->pages_high_water = counters.pages_high_water;
  heap->failed_allocations = counters.failed;
  heap->invalid_frees = counters.invalid_frees;
  heap->double_frees = counters.double_frees;
  return absl::OkStatus();
}

absl::StatusOr<std::vector<TaskError>> Runtime::RecentErrors() {
  if (absl::Status health = PollKernel(); !health.ok()) return health;
  uint64_t count = 0;
  if (absl::Status s = CopyOut(&count, reinterpret_cast<CUdeviceptr>(state_.error_count), 8,
                               copy_stream_.get());
      !s.ok()) {
    return s;
  }
  const uint64_t kept = std::min<uint64_t>(count, options_.error_capacity);
  std::vector<ErrorRecord> records(options_.error_capacity);
  if (kept > 0) {
    if (absl::Status s = CopyOut(records.data(), reinterpret_cast<CUdeviceptr>(state_.errors),
                                 records.size() * sizeof(ErrorRecord), copy_stream_.get());
        !s.ok()) {
      return s;
    }
  }
  std::vector<TaskError> errors;
  for (uint64_t i = count - kept; i < count; ++i) {
    const ErrorRecord& r = records[i & (options_.error_capacity - 1)];
    TaskError e;
    e.task = r.task_id;
    e.name = NameOf(r.task_id);
    e.code = r.code;
    e.ticket = r.ticket;
    e.warp = r.worker;
    e.message = std::string(TaskOutcome(r.code, r.task_id, r.ticket).message());
    errors.push_back(std::move(e));
  }
  return errors;
}

// ---------------------------------------------------------------------------
// Watchdog
// ---------------------------------------------------------------------------

absl::StatusOr<std::vector<HungTask>> Runtime::FindHungTasks(absl::Duration deadline) {
  std::vector<WorkerHeartbeat> beats(state_.num_warps);
  if (absl::Status s = CopyOut(beats.data(), reinterpret_cast<CUdeviceptr>(state_.heartbeats),
                               beats.size() * sizeof(WorkerHeartbeat),
                               watchdog_stream_.get());
      !s.ok()) {
    return s;
  }
  // The GPU keeps no clock for this: a warp is hung when it stays busy
  // with the same task (same sequence number) across host observations.
  const absl::Time now = absl::Now();
  watch_.resize(beats.size());
  std::vector<HungTask> hung;
  for (uint32_t w = 1; w < beats.size(); ++w) {
    const WorkerHeartbeat& b = beats[w];
    WarpWatch& watch = watch_[w];
    if (b.busy == 0) {
      watch.since = absl::InfinitePast();
      continue;
    }
    if (watch.since == absl::InfinitePast() || watch.sequence != b.sequence) {
      watch.sequence = b.sequence;
      watch.since = now;
      continue;
    }
    const absl::Duration running = now - watch.since;
    if (running < deadline) continue;
    HungTask h;
    h.task = b.task_id;
    h.name = NameOf(b.task_id);
    h.warp = w;
    h.running_for = running;
    hung.push_back(std::move(h));
  }
  return hung;
}

std::string Runtime::DescribeHung() {
  absl::MutexLock lock(&watchdog_mu_);
  if (hung_.empty()) return "";
  std::map<std::string, int> by_task;
  absl::Duration longest;
  for (const HungTask& h : hung_) {
    ++by_task[absl::StrCat(h.name, " (id ", h.task, ")")];
    longest = std::max(longest, h.running_for);
  }
  std::vector<std::string> parts;
  for (const auto& [name, warps] : by_task) {
    parts.push_back(absl::StrCat(name, " on ", warps, " warp", warps == 1 ? "" : "s"));
  }
  return absl::StrCat("tasks that have not returned: ", absl::StrJoin(parts, ", "),
                      ", the longest for ", absl::FormatDuration(longest));
}

void Runtime::WatchdogLoop() {
  MakeCurrent();
  std::map<std::pair<uint32_t, TaskId>, bool> reported;
  while (!watchdog_stop_.WaitForNotificationWithTimeout(options_.watchdog_interval)) {
    if (failed_.load()) return;
    if (!PollKernel().ok()) return;
    absl::MutexLock lock(&watchdog_mu_);
    absl::StatusOr<std::vector<HungTask>> hung = FindHungTasks(options_.watchdog_deadline);
    if (!hung.ok()) return;
    for (const HungTask& h : *hung) {
      if (reported.emplace(std::make_pair(h.warp, h.task), true).second) {
        std::fprintf(stderr,
                     "grosr: watchdog: task %s (id %u) has run for %s on warp %u "
                     "(deadline %s)\n",
                     h.name.c_str(), h.task, absl::FormatDuration(h.running_for).c_str(),
                     h.warp, absl::FormatDuration(options_.watchdog_deadline).c_str());
      }
    }
    if (hung->empty()) reported.clear();
    hung_ = std::move(*hung);
  }
}

// ---------------------------------------------------------------------------
// Device memory for tasks
// ---------------------------------------------------------------------------

absl::StatusOr<CUdeviceptr> Runtime::AllocateDeviceMemory(size_t bytes) {
  if (absl::Status health = PollKernel(); !health.ok()) return health;
  MakeCurrent();
  CUdeviceptr pointer = 0;
  GROSR_CU_RETURN_IF_ERROR(*cu_, cu_->cuMemAlloc(&pointer, std::max<size_t>(bytes, 1)),
                           absl::StrCat("cuMemAlloc(", bytes, " bytes)"));
  absl::MutexLock lock(&mu_);
  user_allocations_.push_back(pointer);
  return pointer;
}

absl::Status Runtime::FreeDeviceMemory(CUdeviceptr pointer) {
  absl::MutexLock lock(&mu_);
  auto it = std::find(user_allocations_.begin(), user_allocations_.end(), pointer);
  if (it == user_allocations_.end()) {
    return absl::InvalidArgumentError("FreeDeviceMemory(): not allocated by this runtime");
  }
  user_allocations_.erase(it);
  if (phase_ == Phase::kRunning) {
    deferred_frees_.push_back(pointer);  // cuMemFree would wait for the kernel
    return absl::OkStatus();
  }
  MakeCurrent();
  return cu_->Check(cu_->cuMemFree(pointer), "cuMemFree");
}

absl::Status Runtime::CopyToDevice(CUdeviceptr to, const void* from, size_t bytes) {
  if (absl::Status health = PollKernel(); !health.ok()) return health;
  MakeCurrent();
  CUresult result = cu_->cuMemcpyHtoDAsync(to, from, bytes, copy_stream_.get());
  if (result == CUDA_SUCCESS) result = cu_->cuStreamSynchronize(copy_stream_.get());
  if (IsContextLost(result)) return SetFatal(ContextLostError(result, "a copy"));
  return cu_->Check(result, "cuMemcpyHtoDAsync");
}

absl::Status Runtime::CopyFromDevice(void* to, CUdeviceptr from, size_t bytes) {
  if (absl::Status health = PollKernel(); !health.ok()) return health;
  return CopyOut(to, from, bytes, copy_stream_.get());
}

// ---------------------------------------------------------------------------
// Shutdown
// ---------------------------------------------------------------------------

absl::StatusOr<ShutdownReport> Runtime::Shutdown(absl::Duration drain_timeout) {
  absl::MutexLock pause(&pause_mu_);  // waits for a load's pause to finish
  Phase phase;
  {
    absl::MutexLock lock(&mu_);
    phase = phase_;
    if (phase == Phase::kShutDown) {
      return absl::FailedPreconditionError("Shutdown(): already shut down");
    }
  }
  MakeCurrent();
  ShutdownReport report;
  absl::Status result;
  // A fatal error other than a lost context (a failed relaunch, a kernel
  // that exited by itself) leaves no kernel to stop but memory to free.
  bool context_lost = context_lost_.load();
  if (phase == Phase::kRunning && !failed_.load()) {
    if (drain_timeout > absl::ZeroDuration()) {
      (void)Drain(drain_timeout);  // what did not finish is reported below
    }
    const CUresult query = StopKernel();
    if (query == CUDA_ERROR_NOT_READY) {
      // A task that never returns holds its warp: the kernel cannot stop.
      {
        absl::MutexLock lock(&watchdog_mu_);
        if (hung_.empty()) {
          // No watchdog report yet: two looks 20 ms apart find the warps
          // that stayed on one task.
          (void)FindHungTasks(absl::ZeroDuration());
          absl::SleepFor(absl::Milliseconds(20));
          absl::StatusOr<std::vector<HungTask>> hung = FindHungTasks(absl::Milliseconds(20));
          if (hung.ok()) hung_ = *hung;
        }
      }
      result = absl::DeadlineExceededError(absl::StrCat(
          "Shutdown(): the scheduler kernel did not stop within ",
          absl::FormatDuration(options_.stop_timeout), "; ", DescribeHung(),
          ". Its memory is left allocated; the process must exit to reclaim the GPU"));
    } else if (query != CUDA_SUCCESS) {
      result = SetFatal(ContextLostError(query, "the scheduler kernel"));
      context_lost = true;
    }
    running_.store(false);
    if (result.ok()) {
      const uint64_t taken = SystemAtomic64(host_->submissions_taken).load(kAcquire);
      uint64_t total = 0;
      cu_->cuMemcpyDtoH(&total, reinterpret_cast<CUdeviceptr>(state_.completion.total_word), 8);
      report.tasks_abandoned = PendingOf(total);
      report.submissions_abandoned = ring_tail_.load() - taken;
    }
  }
  watchdog_stop_.Notify();
  if (watchdog_.joinable()) watchdog_.join();
  shut_down_.store(true, std::memory_order_release);
  running_.store(false);
  {
    absl::MutexLock lock(&mu_);
    phase_ = Phase::kShutDown;
  }
  // Waiting threads read pinned memory: let them see shut_down_ and leave.
  while (waiters_.load(std::memory_order_acquire) != 0) absl::SleepFor(absl::Microseconds(50));
  if (absl::IsDeadlineExceeded(result)) MarkKernelStuck();
  if (kernel_stuck_.load()) {
    // A kernel still runs in the context (this Shutdown's or a pause's stop
    // timed out): freeing under it, or releasing the context, would wait
    // for it forever. Its memory stays; the process must exit.
    if (result.ok()) result = PollKernel();
  } else {
    ReleaseResources(context_lost);
  }
  if (!result.ok()) return result;
  if (report.tasks_abandoned + report.submissions_abandoned > 0 &&
      drain_timeout > absl::ZeroDuration()) {
    std::fprintf(stderr, "grosr: shutdown abandoned %llu queued tasks and %llu submissions\n",
                 static_cast<unsigned long long>(report.tasks_abandoned),
                 static_cast<unsigned long long>(report.submissions_abandoned));
  }
  return report;
}

void Runtime::AbandonResources() {
  {
    absl::MutexLock lock(&mu_);
    for (auto& record : task_modules_) record->module.Abandon();
    task_modules_.clear();
  }
  scheduler_module_.Abandon();
  arena_.Abandon();
  heap_arena_.Abandon();
  pinned_.Abandon();
  kernel_stream_.Abandon();
  copy_stream_.Abandon();
  watchdog_stream_.Abandon();
}

void Runtime::ReleaseResources(bool context_lost) {
  MakeCurrent();
  std::vector<CUdeviceptr> frees;
  {
    absl::MutexLock lock(&mu_);
    frees = std::move(deferred_frees_);
    frees.insert(frees.end(), user_allocations_.begin(), user_allocations_.end());
    user_allocations_.clear();
    deferred_frees_.clear();
  }
  host_ = nullptr;
  if (context_lost) {
    // Every call on a lost context fails: drop the handles and let go of
    // the primary context, which the driver destroys when its last user
    // releases it. The next Runtime retains a fresh one. (Resetting it
    // instead makes the driver ignore later releases.)
    AbandonResources();
    if (context_retained_) {
      cu_->cuCtxSetCurrent(nullptr);
      cu_->cuDevicePrimaryCtxRelease(device_);
      context_retained_ = false;
    }
    return;
  }
  for (CUdeviceptr p : frees) cu_->cuMemFree(p);
  {
    absl::MutexLock lock(&mu_);
    task_modules_.clear();
  }
  scheduler_module_.Reset();
  arena_.Reset();
  heap_arena_.Reset();
  pinned_.Reset();
  kernel_stream_.Reset();
  copy_stream_.Reset();
  watchdog_stream_.Reset();
}

}  // namespace grosr
