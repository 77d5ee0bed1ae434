// The scheduler's state: everything the persistent kernel knows lives here,
// in device memory or in pinned host memory, never only in registers. The
// kernel can therefore stop at task boundaries and be launched again over
// the same queues, tables and counters (hot-loading depends on this).
//
// Ownership: the host allocates and initialises every array before the first
// launch and frees them after the kernel exited. While the kernel runs, the
// host touches only the HostShared block (pinned, mapped) and the dispatch
// table (between launches).
#ifndef GROSR_SCHEDULER_STATE_H_
#define GROSR_SCHEDULER_STATE_H_

#include "grosr/completion.h"
#include "grosr/descriptor.h"
#include "grosr/platform.h"
#include "grosr/slab_allocator.h"
#include "grosr/submission_ring.h"
#include "grosr/task_context.h"
#include "grosr/work_queue.h"

namespace grosr {

// Tasks a warp takes from the queue at once.
#ifndef GROSR_BATCH
#define GROSR_BATCH 32
#endif
constexpr uint32_t kBatch = GROSR_BATCH;

// Host commands, written by the host to HostShared::command.
//   Run:  serve (also: resume from a park).
//   Park: every worker stops at its next task boundary and waits, holding
//         its work; the control warp stops ingesting (a parked warp may
//         hold the queue slot an ingest would wait for) and reports Parked.
//         The host then says Stop (the kernel exits: a pause to load
//         modules) or Run (nothing happened: a pause that timed out on a
//         task that would not return is undone).
//   Stop: workers save their work to WorkerSave and the kernel exits.
enum : uint32_t { kCommandRun = 0, kCommandStop = 1, kCommandPark = 2 };

// Kernel states, written by the control warp to HostShared::kernel_state.
enum : uint32_t {
  kKernelNotStarted = 0,
  kKernelRunning = 1,
  kKernelStopping = 2,
  kKernelParked = 3,
};

// The command and kernel-state words carry a sequence number beside the
// value: the host numbers each command, and the control warp answers with
// the number of the command it followed. A host waiting for "Parked" or
// "Running" thus never mistakes a report made for an earlier command (a
// late Parked of an undone park) for the answer to its own.
GROSR_HD constexpr uint32_t SignalWord(uint32_t value, uint32_t sequence) {
  return (sequence << 8) | value;
}
GROSR_HD constexpr uint32_t SignalValue(uint32_t word) { return word & 0xffu; }
GROSR_HD constexpr uint32_t SignalSequence(uint32_t word) { return word >> 8; }

// Values of SchedulerState::stop, the device copy of the command that
// workers read.
enum : uint32_t { kWorkersRun = 0, kWorkersExit = 1, kWorkersPark = 2 };

// A host-submitted task's outcome, in pinned memory. `ticket` is written last
// (release, system scope): once the host reads its ticket there, `status` is
// that task's.
struct CompletionRecord {
  uint32_t ticket;
  uint32_t status;
};

// Worker state the host reads (device memory, copied out by the watchdog).
// No clock on the GPU side: the host watchdog times how long `sequence`
// stays the same while `busy` is set.
struct alignas(16) WorkerHeartbeat {
  TaskId task_id;        // task running, or last run
  uint32_t busy;         // 1 while running task_id
  uint64_t sequence;     // dispatches this warp has started, ever (steps run in place not counted)
};

// Work a warp held when the kernel stopped: restored by the next launch.
struct WorkerSave {
  uint32_t count;        // items held
  uint32_t tickets;      // queue head tickets taken, not read yet
  uint64_t first_ticket; // the first of them
  // When the warp stopped inside a chain, items[0] is the chain's pending
  // continuation and this its status so far (its first failure), which the
  // host's ticket gets when the chain ends; kTaskOk otherwise.
  uint32_t chain_status;
  TaskDescriptor items[kBatch + 1];
};

// Pinned, mapped host memory shared by the host and the control warp.
// Words written by different sides sit on different cache lines.
struct HostShared {
  // host -> GPU: SignalWord(kCommand*, sequence)
  alignas(128) uint32_t command;
  // GPU -> host
  alignas(128) uint64_t submissions_taken;   // ring entries ingested
  alignas(128) uint64_t total_snapshot;      // a CompletionCounters total word
  alignas(128) uint32_t kernel_state;         // SignalWord(kKernel*, sequence)
};

// A continuation run in place costs about a seventh of one the scheduler
// dispatches (0.13 vs 0.9 us on an H200, run U), so in-place steps count a
// quarter towards the stop check: a chain of either kind runs some tens of
// microseconds between looks (a pause waits no longer for one), and a pure
// in-place chain comes back to the scheduler -- about a dispatch's cost --
// a quarter as often (every 64 steps it was ~24 SM cycles a step).
constexpr uint32_t kInPlaceStepsPerCheckStep = 4;
// The in-place budget, kInPlaceStepsPerCheckStep times the interval, stays
// far from overflowing 32 bits.
constexpr uint32_t kMaxStopCheckInterval = 1u << 24;

struct SchedulerState {
  // Geometry.
  uint32_t num_warps;          // all warps of the grid (control warp included)
  uint32_t warps_per_block;
  uint32_t table_capacity;
  uint32_t completion_capacity;// power of two
  uint32_t error_capacity;     // power of two
  uint32_t idle_sleep_max_ns;
  uint32_t stop_check_interval;// continuations between looks at the stop flag
                               // (in-place ones count a quarter), 1..kMaxStopCheckInterval
  uint32_t quiet_poll_after_rounds;  // idle control rounds before quiet polling

  // Dispatch (device memory).
  TaskEntry* table;            // [table_capacity]; null: no task
  TaskInfo* info;              // [table_capacity]
  TaskCounters* counters;      // [table_capacity]
  uint64_t* invalid_dispatches;// tasks whose id was out of range

  WorkQueue queue;
  CompletionCounters completion;

  // Failures (device memory ring).
  ErrorRecord* errors;         // [error_capacity]
  uint64_t* error_count;       // total ever reported

  // Workers (device memory).
  WorkerHeartbeat* heartbeats; // [num_warps]
  WorkerSave* saves;           // [num_warps]
  uint32_t* stop;              // kWorkers*: the command as workers see it
  uint32_t* parked;            // workers waiting in a park

  // Shared with the host (pinned memory, device addresses).
  HostShared* host;
  SubmissionRing ring;         // the host's submissions
  CompletionRecord* completions;     // [completion_capacity]
  uint64_t* group_snapshots;   // [completion.group_capacity]
  uint32_t* last_task;         // [num_warps] id of each warp's latest task

  // Never set: makes the kernel reserve the register budget (see kernel).
  uint32_t* never;

  // The task heap (ctx.gpu_malloc): an arena the host reserved at Create.
  SlabAllocator heap;

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
  // Records a failure in the error ring, read by the host's RecentErrors.
  // Any thread; one record per call.
  __device__ void ReportError(TaskId task_id, uint32_t code, uint32_t ticket,
                              uint32_t worker) const {
    const uint64_t index = DeviceAtomic64(*error_count).fetch_add(1, kRelaxed);
    ErrorRecord& record = errors[index & (error_capacity - 1)];
    record.task_id = task_id;
    record.code = code;
    record.ticket = ticket;
    record.worker = worker;
    record.gpu_time_ns = GlobalTimerNs();
  }
#endif
};

}  // namespace grosr

#endif  // GROSR_SCHEDULER_STATE_H_
