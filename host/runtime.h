// grosr::Runtime: the host side of GROSR.
//
// A Runtime owns one persistent scheduler kernel on one GPU. The host loads
// task files (compiled at run time), starts the kernel once, then submits
// tasks through a ring in pinned memory; tasks run on worker warps and spawn
// more tasks on the GPU with no host involvement. The host waits for one
// task, a group, or quiescence by reading pinned memory: no kernel launch
// per task and no cuCtxSynchronize.
//
// Example:
//   ASSIGN_OR_RETURN(auto runtime, grosr::Runtime::Create());
//   ASSIGN_OR_RETURN(auto report, runtime->LoadFile("tasks/add.cu"));
//   ASSIGN_OR_RETURN(grosr::TaskId add, runtime->Find("add"));
//   RETURN_IF_ERROR(runtime->Start());
//   ASSIGN_OR_RETURN(CUdeviceptr out, runtime->AllocateDeviceMemory(4));
//   struct { int a, b; int* out; } args{2, 3, reinterpret_cast<int*>(out)};
//   ASSIGN_OR_RETURN(grosr::TaskHandle handle, runtime->Submit(add, args));
//   RETURN_IF_ERROR(runtime->Wait(handle));   // 5 is now in *out
//   RETURN_IF_ERROR(runtime->Shutdown().status());
//
// Errors: every method returns absl::Status / StatusOr. A task that fails
// (its own ctx.fail, an unknown id, arguments of the wrong size) makes its
// Wait return an error naming the task; the scheduler goes on. A task that
// traps or faults loses the CUDA context: every later call returns the same
// error naming the task ids last dispatched. A task that runs past
// `watchdog_deadline` is reported by the watchdog (stderr, Stats().hung).
//
// Thread safety: all methods may be called from any thread. Submissions are
// serialised; waits do not block submissions.
#ifndef GROSR_HOST_RUNTIME_H_
#define GROSR_HOST_RUNTIME_H_

#include <cuda.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "grosr/descriptor.h"
#include "grosr/scheduler_state.h"
#include "grosr/task_context.h"
#include "host/cuda_resources.h"
#include "host/device_code.h"
#include "host/slab_layout.h"
#include "jit/compiler.h"
#include "jit/cuda_driver.h"

namespace grosr {

struct RuntimeOptions {
  int device = 0;
  // SMs the kernel covers; 0: all, or GROSR_MAX_SMS from the environment
  // (the sanitizer runs use a small grid). 1 reproduces a single-SM scheduler.
  int max_sms = 0;
  int warps_per_block = 8;
  // Resident blocks per SM; 0: as many as fit (occupancy API).
  int blocks_per_sm = 0;
  uint32_t queue_capacity = 1u << 20;      // device work queue slots
  uint32_t ring_capacity = 1u << 14;       // host submission ring slots
  uint32_t completion_capacity = 1u << 14; // tracked host tasks in flight
  uint32_t group_capacity = 1024;
  uint32_t table_capacity = 1024;          // task ids
  uint32_t error_capacity = 4096;          // failures kept for RecentErrors
  uint32_t stack_bytes = 4096;             // per thread, covers loaded tasks
  // The task heap (ctx.gpu_malloc), reserved at Create in 64 KiB pages.
  // 0: GROSR_HEAP_BYTES from the environment if set, else an eighth of the
  // free device memory, at most 4 GiB.
  uint64_t heap_bytes = 0;
  int register_budget = 64;                // -maxrregcount, kernel and tasks
  uint32_t idle_sleep_max_ns = 2000;       // idle worker backoff cap
  // Continuations between stop checks, per chain (continuations to a task
  // itself, run in place, count a quarter each: up to 4x as many of them);
  // between the tasks of a batch a warp looks every 8 tasks, so a pause
  // waits for at most about 8 such chains. 1 .. kMaxStopCheckInterval.
  uint32_t stop_check_interval = 64;
  // Control rounds without a submission after which the control warp polls
  // the host's ring one word a slot (256 B a round instead of 4 KiB) until
  // a submission shows; the first one after that pays one more PCIe round
  // trip. A round is ~2-3 us: 1,024 is a few milliseconds of quiet.
  uint32_t quiet_poll_after_rounds = 1024;
  // A task running longer than this is reported; zero disables the watchdog.
  absl::Duration watchdog_deadline = absl::Seconds(10);
  absl::Duration watchdog_interval = absl::Milliseconds(100);
  // How long Shutdown waits for the kernel to stop before giving up.
  absl::Duration stop_timeout = absl::Seconds(10);
  // How long a load while running waits for every worker to reach a task
  // boundary; past it the pause is undone and the load fails (the tasks
  // keep running; the watchdog names a task that does not return).
  absl::Duration pause_timeout = absl::Seconds(2);
  // Compile cache folder; empty: the default (see CompileCache).
  std::string cache_dir;
  // Extra include folders for tasks.
  std::vector<std::string> include_dirs;
};

// A tracked host submission.
struct TaskHandle {
  uint64_t ticket = 0;
  TaskId task = 0;
};

using GroupId = uint32_t;

struct SubmitOptions {
  // Completion group (from CreateGroup); 0: none.
  GroupId group = 0;
  // Track the task for Wait(handle). Untracked submissions are cheaper and
  // are waited for through groups or Drain.
  bool track = true;
  // When the ring (or the tracked-task table) is full: wait this long for
  // room, then return ResourceExhausted. Zero: fail at once.
  absl::Duration wait_for_room = absl::Seconds(10);
};

// A submission for SubmitBatch.
struct TaskRequest {
  TaskId task = 0;
  uint32_t arg_bytes = 0;
  alignas(16) uint8_t args[kMaxInlineArgBytes] = {};

  template <typename Args>
  static TaskRequest Make(TaskId task, const Args& args) {
    static_assert(sizeof(Args) <= kMaxInlineArgBytes, "arguments exceed 48 bytes");
    TaskRequest request;
    request.task = task;
    request.arg_bytes = ArgBytesOf<Args>();  // 0 for NoArgs
    std::memcpy(request.args, &args, request.arg_bytes);
    return request;
  }
};

struct LoadedTask {
  std::string name;
  TaskId id = 0;
};

struct LoadReport {
  std::string source;
  std::vector<LoadedTask> tasks;
  std::vector<std::string> replaced;  // names that had code before this load
  absl::Duration compile_time;
  absl::Duration link_time;
  absl::Duration install_time;  // module load + table writes
  // Loads into a running scheduler: how long the kernel was down (stop,
  // module load, table writes, relaunch), shared by every load of the pause.
  bool paused = false;
  absl::Duration pause_time;
  int loads_in_pause = 0;
  // The pause's parts: every worker parked at a task boundary; the kernel
  // exited; modules loaded, tables written, replaced modules unloaded; the
  // kernel relaunched and running.
  absl::Duration park_time, exit_time, install_time_in_pause, relaunch_time;
  absl::Duration unload_time;  // of install_time_in_pause: replaced modules unloaded
  bool from_cache = false;
  std::string warnings;
};

// A task source for LoadSources: a name for messages (the path) and its text.
struct TaskSource {
  std::string name;
  std::string text;
};

struct DirectoryLoad {
  std::vector<LoadReport> loaded;
  std::vector<std::pair<std::string, absl::Status>> failed;  // path, error
};

struct DeviceInfo {
  std::string name;
  std::string arch;
  std::string driver_version;
  int sm_count = 0;
  int clock_mhz = 0;
  int memory_clock_mhz = 0;
  int blocks = 0;
  int warps_per_block = 0;
  int workers = 0;  // worker warps (the control warp excluded)
  uint32_t kernel_registers = 0;
  size_t shared_bytes_per_block = 0;
};

struct TaskStats {
  std::string name;
  TaskId id = 0;
  uint64_t submitted = 0;  // by the host
  uint64_t spawned = 0;    // by other tasks
  uint64_t completed = 0;
  uint64_t failed = 0;
};

struct HungTask {
  TaskId task = 0;
  std::string name;
  uint32_t warp = 0;
  absl::Duration running_for;
};

// The task heap (ctx.gpu_malloc), from a copy of its page states.
struct HeapStats {
  uint64_t arena_bytes = 0;
  uint64_t page_bytes = 0;
  uint64_t bytes_in_use = 0;       // live blocks (and runs) at their class size
  uint64_t blocks_in_use[SlabAllocator::kMaxClasses] = {};  // [class]: 16 << (class-1) B
  uint64_t pages_in_use = 0;       // out of the pool
  uint64_t pages_high_water = 0;
  uint64_t failed_allocations = 0; // gpu_malloc returned null
  uint64_t invalid_frees = 0;      // foreign or misaligned pointers
  uint64_t double_frees = 0;
};

struct RuntimeStats {
  std::vector<TaskStats> tasks;   // one per loaded task
  uint64_t invalid_dispatches = 0;// tasks whose id was out of range
  int64_t queue_depth = 0;        // device queue
  uint64_t ring_depth = 0;        // submitted, not yet taken by the GPU
  uint32_t pending = 0;           // queued or running anywhere
  uint64_t errors_reported = 0;
  std::vector<HungTask> hung;     // running past the watchdog deadline
  uint64_t pauses = 0;            // kernel stops to load code while running
  uint64_t modules_loaded = 0;    // task modules in memory now
  uint64_t modules_unloaded = 0;  // replaced modules released so far
  uint64_t device_free_bytes = 0; // cuMemGetInfo, for leak checks
  HeapStats heap;
};

struct TaskError {
  TaskId task = 0;
  std::string name;
  uint32_t code = 0;
  uint64_t ticket = 0;  // low 32 bits of the handle's ticket; 0: untracked
  uint32_t warp = 0;
  std::string message;
};

struct ShutdownReport {
  // Tasks that were queued, saved or held when the kernel stopped.
  uint64_t tasks_abandoned = 0;
  // Submissions still in the ring, never taken by the GPU.
  uint64_t submissions_abandoned = 0;
};

class Runtime {
 public:
  // Compiles the scheduler kernel (cached on disk) and allocates its state.
  // FailedPrecondition when there is no driver or GPU.
  static absl::StatusOr<std::unique_ptr<Runtime>> Create(
      RuntimeOptions options = {});
  ~Runtime();
  Runtime(const Runtime&) = delete;
  Runtime& operator=(const Runtime&) = delete;

  // Loading, before Start() or while the scheduler runs. Each new task name
  // gets a new id; a name already loaded is replaced: its id stays, queued
  // and later dispatches run the new code, a task already running finishes
  // on the old code, and the old module is unloaded once none of its tasks
  // is left in the table. Compiling runs while the scheduler keeps serving;
  // then, if it runs, the kernel pauses at task boundaries (workers park,
  // holding their work), exits, the module loads, and the kernel relaunches
  // over the same queues: nothing queued is lost or run twice, and
  // submissions made meanwhile run after the pause. A source that does not
  // compile or breaks a loader rule fails before any pause. Loads requested
  // together (LoadSources, or from several threads at once) share a pause.
  absl::StatusOr<LoadReport> LoadFile(const std::string& path);
  absl::StatusOr<LoadReport> LoadSource(const std::string& name,
                                        const std::string& source);
  // One result per source, in order; successful ones share one pause.
  std::vector<absl::StatusOr<LoadReport>> LoadSources(absl::Span<const TaskSource> sources);
  std::vector<absl::StatusOr<LoadReport>> LoadFiles(absl::Span<const std::string> paths);
  // Every *.cu in `directory`, in name order. A file that fails is listed
  // with its error and the others still load; an unreadable directory is an
  // error.
  absl::StatusOr<DirectoryLoad> LoadDirectory(const std::string& directory);
  absl::StatusOr<TaskId> Find(absl::string_view name) const;
  std::string NameOf(TaskId id) const;

  // Launches the persistent kernel; returns once it is running.
  absl::Status Start();

  // Queues task `task` with `bytes` (<= 48) of arguments. The id and the
  // argument size are checked on the GPU: a wrong one completes the task
  // with an error that Wait() reports.
  absl::StatusOr<TaskHandle> Submit(TaskId task, const void* args, size_t bytes,
                                    const SubmitOptions& options = {});
  template <typename Args>
  absl::StatusOr<TaskHandle> Submit(TaskId task, const Args& args,
                                    const SubmitOptions& options = {}) {
    static_assert(sizeof(Args) <= kMaxInlineArgBytes, "arguments exceed 48 bytes");
    return Submit(task, &args, ArgBytesOf<Args>(), options);
  }
  // Queues untracked submissions (wait with a group or Drain) at ring speed.
  absl::Status SubmitBatch(absl::Span<const TaskRequest> requests,
                           GroupId group = 0,
                           absl::Duration wait_for_room = absl::Seconds(10));

  // Groups: CreateGroup gives an id for SubmitOptions::group; every task a
  // member spawns joins its group.
  absl::StatusOr<GroupId> CreateGroup();
  absl::Status ReleaseGroup(GroupId group);

  // Waits until the task returned and so did the chain of continuations it
  // handed its warp with ctx.then(); the status is the chain's first
  // failure. Tasks it spawned are not waited for (use a group).
  absl::Status Wait(const TaskHandle& handle,
                    absl::Duration timeout = absl::InfiniteDuration());
  // Waits until every task submitted to `group`, and all they spawned, ran.
  absl::Status WaitGroup(GroupId group,
                         absl::Duration timeout = absl::InfiniteDuration());
  // Waits for quiescence: nothing queued or running anywhere.
  absl::Status Drain(absl::Duration timeout = absl::InfiniteDuration());

  absl::StatusOr<RuntimeStats> Stats();
  // The most recent failures (up to error_capacity), oldest first.
  absl::StatusOr<std::vector<TaskError>> RecentErrors();

  // Waits up to `drain_timeout` for quiescence, stops the kernel at task
  // boundaries and releases every resource. The report counts what never
  // ran. A second call returns FailedPrecondition.
  absl::StatusOr<ShutdownReport> Shutdown(
      absl::Duration drain_timeout = absl::ZeroDuration());

  // Device memory for task data. Allocation works while the kernel runs;
  // freeing is deferred to Shutdown while it runs (the driver would block
  // until the kernel exits).
  absl::StatusOr<CUdeviceptr> AllocateDeviceMemory(size_t bytes);
  absl::Status FreeDeviceMemory(CUdeviceptr pointer);
  absl::Status CopyToDevice(CUdeviceptr to, const void* from, size_t bytes);
  absl::Status CopyFromDevice(void* to, CUdeviceptr from, size_t bytes);

  const DeviceInfo& device_info() const { return info_; }
  const Compiler& compiler() const { return *compiler_; }
  // OK, or the error that made the runtime unusable (context lost).
  absl::Status health();

 private:
  enum class Phase { kCreated, kRunning, kShutDown };
  // A loaded task module and how many table entries still point into it.
  struct ModuleRecord {
    Module module;
    std::string source;
    int live_entries = 0;
  };
  struct TaskRecord {
    std::string name;
    TaskId id = 0;
    uint32_t arg_bytes = 0;
    ModuleRecord* module = nullptr;
    std::atomic<uint64_t> submitted{0};
  };
  // A compiled source waiting for its install (and, if running, a pause).
  struct PendingLoad {
    TaskModuleImage image;
    absl::StatusOr<LoadReport> result = absl::UnknownError("not installed");
  };
  // Keeps Shutdown from freeing pinned memory under a waiting thread.
  class WaiterScope;

  explicit Runtime(RuntimeOptions options);
  absl::Status Initialize();
  absl::Status AllocateState();
  absl::Status InstallTasks(const TaskModuleImage& image, Module module,
                            LoadReport* report) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Queues `loads` and installs them, with whatever else is queued, under
  // one pause (or none before Start).
  void ApplyLoads(absl::Span<PendingLoad* const> loads);
  void InstallBatch(absl::Span<PendingLoad* const> batch)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(pause_mu_);
  // Parks every worker, then lets the kernel exit. On a timeout the park is
  // undone and the kernel keeps running.
  absl::Status StopForPause(absl::Time* parked_at) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pause_mu_);
  // Launches the kernel over the current state; returns once it runs. A
  // failure is fatal (SetFatal): without the kernel nothing serves.
  absl::Status LaunchKernel() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pause_mu_);
  absl::Status LaunchKernelOnce() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pause_mu_);
  // Writes the next numbered command for the control warp; returns its
  // sequence number, which the kernel's answer carries.
  uint32_t IssueCommand(uint32_t command) ABSL_EXCLUSIVE_LOCKS_REQUIRED(pause_mu_);
  // True once the control warp reported `state` for command `sequence`.
  bool KernelReported(uint32_t state, uint32_t sequence) const;
  // Tells the kernel to stop and waits up to stop_timeout for its stream:
  // CUDA_SUCCESS, the error the kernel ended with, or CUDA_ERROR_NOT_READY
  // when it still runs (the caller decides what a stuck kernel means).
  CUresult StopKernel() ABSL_EXCLUSIVE_LOCKS_REQUIRED(pause_mu_);
  // Call before a command that makes the kernel exit (see PollKernel).
  void ExpectKernelExit();
  // Polls the kernel's stream until it finishes or `timeout` passes
  // (then CUDA_ERROR_NOT_READY).
  CUresult WaitForKernelExit(absl::Duration timeout);
  // A kernel that cannot be stopped holds the context: nothing may free
  // under it or release it, and no later Runtime may load one.
  void MarkKernelStuck();
  // Unloads modules none of whose tasks is in the table (kernel stopped).
  void UnloadUnusedModules() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // OK while the kernel runs (or before Start); the fatal error otherwise.
  absl::Status PollKernel();
  absl::Status SetFatal(absl::Status status);
  // The fatal error for a lost context, naming the tasks last run; marks
  // the context lost (Shutdown then abandons rather than frees).
  absl::Status ContextLostError(CUresult result, absl::string_view what);
  absl::Status TaskOutcome(uint32_t status, TaskId task, uint64_t ticket) const;
  // Submission: waits hold submit_mu_ only; commits hold both locks.
  absl::Status WaitForRingRoom(uint64_t needed, absl::Duration wait_for_room)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(submit_mu_);
  uint64_t NextTicket() const ABSL_EXCLUSIVE_LOCKS_REQUIRED(submit_mu_);
  // Waits until the completion slot of the next ticket is free.
  absl::Status WaitForTicketSlot(absl::Duration wait_for_room)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(submit_mu_);
  // Takes the next ticket (after WaitForTicketSlot).
  uint64_t CommitTicket() ABSL_EXCLUSIVE_LOCKS_REQUIRED(submit_mu_, mu_);
  void WriteRing(const TaskDescriptor& descriptor) ABSL_EXCLUSIVE_LOCKS_REQUIRED(submit_mu_, mu_);
  absl::Status CheckGroup(GroupId group) ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  absl::Status CheckCanSubmit(absl::string_view what, GroupId group)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_);
  // Polls `done` (tight, then yielding, then sleeping) until it holds or the
  // timeout passes; checks the kernel's health about every millisecond.
  // `what` (a callable giving a string) is only called on a timeout: the
  // wait itself builds no message.
  template <typename Done, typename What>
  absl::Status SpinUntil(Done done, absl::Duration timeout, What what);
  template <typename What>
  absl::Status WaitForWord(const uint64_t* snapshot, uint32_t roots,
                           absl::Duration timeout, What what);
  void WatchdogLoop();
  // Warps busy with the same task (same heartbeat sequence) for at least
  // `deadline` of host time across calls.
  absl::StatusOr<std::vector<HungTask>> FindHungTasks(absl::Duration deadline)
      ABSL_EXCLUSIVE_LOCKS_REQUIRED(watchdog_mu_);
  std::string DescribeHung();
  absl::Status CopyOut(void* to, CUdeviceptr from, size_t bytes, CUstream stream);
  absl::Status ReadHeapStats(HeapStats* heap);
  void ReleaseResources(bool context_lost);
  // Drops every device handle without freeing it (a lost context, or a
  // kernel that still runs in it).
  void AbandonResources();
  void MakeCurrent() const;

  const RuntimeOptions options_;
  const CudaDriver* cu_ = nullptr;
  CUdevice device_ = 0;
  CUcontext context_ = nullptr;
  bool context_retained_ = false;
  DeviceInfo info_;
  std::unique_ptr<Compiler> compiler_;
  DeviceCodeTarget target_;
  Module scheduler_module_;
  CUfunction kernel_ = nullptr;
  std::vector<std::unique_ptr<ModuleRecord>> task_modules_ ABSL_GUARDED_BY(mu_);
  uint64_t modules_unloaded_ ABSL_GUARDED_BY(mu_) = 0;
  // Held for a whole install (and its pause), by Start and by Shutdown.
  absl::Mutex pause_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  absl::Mutex load_mu_;
  std::vector<PendingLoad*> queued_loads_ ABSL_GUARDED_BY(load_mu_);
  std::atomic<uint64_t> pauses_{0};
  Stream kernel_stream_;
  Stream copy_stream_;
  Stream watchdog_stream_;
  DeviceMemory arena_;
  DeviceMemory heap_arena_;      // the task heap's pages
  SlabLayout heap_layout_;
  PinnedMemory pinned_;
  SchedulerState state_{};       // host copy, device addresses
  CUdeviceptr state_device_ = 0;

  // Host views of pinned memory.
  HostShared* host_ = nullptr;
  SubmissionRing ring_{};  // host view of the pinned submission ring
  CompletionRecord* completions_ = nullptr;
  uint64_t* group_snapshots_ = nullptr;
  uint32_t* last_task_ = nullptr;

  // Serializes submitters, also while they wait for room; taken before mu_.
  absl::Mutex submit_mu_ ABSL_ACQUIRED_BEFORE(mu_);
  uint64_t next_ticket_ ABSL_GUARDED_BY(submit_mu_) = 1;
  // Written under submit_mu_ and mu_; read without (Stats, Shutdown).
  std::atomic<uint64_t> ring_tail_{0};
  uint32_t command_sequence_ ABSL_GUARDED_BY(pause_mu_) = 0;
  // Bumped whenever the host is about to make the kernel exit.
  std::atomic<uint64_t> kernel_epoch_{0};

  mutable absl::Mutex mu_;
  Phase phase_ ABSL_GUARDED_BY(mu_) = Phase::kCreated;
  std::vector<std::unique_ptr<TaskRecord>> tasks_ ABSL_GUARDED_BY(mu_);  // [id]
  absl::flat_hash_map<std::string, TaskId> by_name_ ABSL_GUARDED_BY(mu_);
  std::atomic<uint64_t> tickets_issued_{1};   // next_ticket_, for Wait's check
  std::atomic<uint32_t> submitted_total_{0};  // wrapping, like the GPU's roots
  std::unique_ptr<std::atomic<uint32_t>[]> group_roots_;   // [group_capacity]
  std::unique_ptr<std::atomic<uint64_t>[]> slot_owner_;    // [completion_capacity]
  std::vector<bool> group_in_use_ ABSL_GUARDED_BY(mu_);
  std::vector<CUdeviceptr> user_allocations_ ABSL_GUARDED_BY(mu_);
  std::vector<CUdeviceptr> deferred_frees_ ABSL_GUARDED_BY(mu_);

  // Task names and argument sizes by id, for messages. Its own lock: error
  // paths that name tasks run while mu_ is held.
  mutable absl::Mutex names_mu_;
  std::vector<std::string> names_ ABSL_GUARDED_BY(names_mu_);
  std::vector<uint32_t> arg_bytes_ ABSL_GUARDED_BY(names_mu_);

  // Failures of tracked tasks whose completion slot was reused, by ticket.
  absl::Mutex retired_mu_;
  std::map<uint64_t, uint32_t> retired_failures_ ABSL_GUARDED_BY(retired_mu_);

  std::atomic<bool> running_{false};   // kernel launched and not stopping
  std::atomic<bool> kernel_stuck_{false};  // a stop timed out: the kernel runs on
  std::atomic<bool> shut_down_{false};
  std::atomic<int> waiters_{0};

  absl::Mutex fatal_mu_;
  absl::Status fatal_ ABSL_GUARDED_BY(fatal_mu_);
  std::atomic<bool> failed_{false};
  std::atomic<bool> context_lost_{false};  // set by ContextLostError

  absl::Mutex watchdog_mu_;
  std::vector<HungTask> hung_ ABSL_GUARDED_BY(watchdog_mu_);
  struct WarpWatch {
    uint64_t sequence = 0;
    absl::Time since = absl::InfinitePast();  // InfinitePast: not seen busy
  };
  std::vector<WarpWatch> watch_ ABSL_GUARDED_BY(watchdog_mu_);
  absl::Notification watchdog_stop_;
  std::thread watchdog_;
};

}  // namespace grosr

#endif  // GROSR_HOST_RUNTIME_H_
