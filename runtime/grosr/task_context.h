// TaskContext: what a running task sees of the scheduler. Tasks use it
// through the methods documented in grosr/task.h; this file holds the
// implementation, which is compiled into every task module (it is header
// code), so spawning is a few atomics, not a call back into the scheduler.
//
// One TaskContext exists per worker warp, in the scheduler's shared memory.
// All 32 lanes of the warp run a task together and see the same context.
#ifndef GROSR_TASK_CONTEXT_H_
#define GROSR_TASK_CONTEXT_H_

#include "grosr/descriptor.h"
#include "grosr/platform.h"
#include "grosr/scheduler_state.h"

namespace grosr {

// Argument bytes a task declares: sizeof(T), and 0 for NoArgs.
struct NoArgs {};
template <typename T>
GROSR_HD constexpr uint32_t ArgBytesOf() {
  return sizeof(T);
}
template <>
GROSR_HD constexpr uint32_t ArgBytesOf<NoArgs>() {
  return 0;
}

struct TaskContext {
  // --- set by the scheduler before each task ---------------------------
  const SchedulerState* state;
  TaskDescriptor* next;  // where then() writes the continuation
  uint32_t worker;       // global warp index
  TaskId task_id;
  uint32_t group;
  uint32_t status;       // first failure code reported, 0 if none
  uint32_t has_next;     // then() was called
  uint32_t reserved;

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
  // Lane of the calling thread within the warp, 0..31.
  __device__ GROSR_INLINE unsigned lane() const { return threadIdx.x & 31u; }
  // The id of the running task (to spawn more of itself).
  __device__ GROSR_INLINE TaskId self() const { return task_id; }
  // Index of the warp running this task, 1..num_workers-1 (0 is the control
  // warp); stable while the runtime runs, handy for per-worker scratch.
  __device__ GROSR_INLINE uint32_t worker_id() const { return worker; }
  __device__ GROSR_INLINE uint32_t num_warps() const { return state->num_warps; }

  // Marks the running task failed with `code` (1 .. 0x7fffffff). Any lane
  // may call it; the first code reported wins. The task still runs to its
  // end; its continuation, if any, still runs.
  __device__ GROSR_INLINE void fail(uint32_t code) {
    if (code == 0 || code >= kFirstRuntimeCode) code = kFirstRuntimeCode - 1;
    cuda::atomic_ref<uint32_t, cuda::thread_scope_block> ref(status);
    uint32_t expected = 0;
    ref.compare_exchange_strong(expected, code, kRelaxed, kRelaxed);
  }

  // Spawns one task per calling lane: lanes that call together share the
  // queue's atomics. Returns false, spawning nothing for the lanes that
  // called together, if the device queue lacks room for all of them; the
  // caller may retry, do the work inline, or fail().
  template <typename Args>
  __device__ GROSR_INLINE bool spawn(TaskId id, const Args& args) {
    static_assert(sizeof(Args) <= kMaxInlineArgBytes,
                  "task arguments are at most kMaxInlineArgBytes (48) bytes; "
                  "pass larger data by device pointer");
    TaskDescriptor item;
    Fill(&item, id, args);
    return SpawnItem(item);
  }
  __device__ GROSR_INLINE bool spawn(TaskId id) { return spawn(id, NoArgs{}); }

  // Makes `id` this warp's next task, run as soon as the current one
  // returns, without a trip through the queue. Call it from the whole warp
  // with the same arguments (or from one lane); a second call replaces the
  // first. The continuation belongs to the same group, and the task it
  // replaces counts as done only when the chain ends.
  template <typename Args>
  __device__ GROSR_INLINE void then(TaskId id, const Args& args) {
    static_assert(sizeof(Args) <= kMaxInlineArgBytes,
                  "task arguments are at most kMaxInlineArgBytes (48) bytes");
    unsigned mask = __activemask();
    if (lane() == static_cast<unsigned>(__ffs(mask) - 1)) {
      TaskDescriptor item;
      Fill(&item, id, args);
      Copy16(next, &item, sizeof(TaskDescriptor));
      has_next = 1;
    }
    __syncwarp(mask);
  }
  __device__ GROSR_INLINE void then(TaskId id) { then(id, NoArgs{}); }

  // --- device memory: the task heap -------------------------------------
  // An arena the host reserved when the runtime was created
  // (RuntimeOptions::heap_bytes); allocation and free are a few atomics, no
  // host call. Blocks are 16-byte aligned; sizes up to half a page (32 KiB)
  // come from size classes, larger ones from runs of whole 64 KiB pages (at
  // most 64). A block outlives the task: another task (on any warp) may free
  // it. Host-visible usage and failures: Runtime::Stats().heap.

  // Any lane, each lane for itself. Null when the heap has no room (counted
  // in Stats().heap.failed_allocations); memory freed later is usable again.
  __device__ GROSR_INLINE void* gpu_malloc(size_t bytes) {
    return state->heap.Allocate(bytes, worker, lane());
  }

  // Frees a block from gpu_malloc; nullptr is a no-op. A pointer the heap did
  // not give out, not the start of a block, or already free is refused: the
  // heap is unchanged, the refusal is counted (Stats().heap) and reported to
  // the host as an error of this task (RecentErrors: kBadFree*). Returns
  // true when the block was freed.
  __device__ GROSR_INLINE bool gpu_free(void* pointer) {
    const uint32_t result = state->heap.Free(pointer);
    if (result == SlabAllocator::kFreeOk) return true;
    const uint32_t code = result == SlabAllocator::kFreeForeign      ? kBadFreeForeign
                          : result == SlabAllocator::kFreeMisaligned ? kBadFreeMisaligned
                                                                     : kBadFreeDouble;
    state->ReportError(task_id, code, 0, worker);
    return false;
  }

  // The warp-wide form: every active lane calls it with its own size and
  // gets its own block (or null). Lanes are spread over the page's bitmap
  // words by lane index; today each lane still takes its block with its own
  // atomics (a batched path that takes a warp's blocks with one reservation
  // is planned), so it is as fast as gpu_malloc from every lane.
  __device__ GROSR_INLINE void* gpu_malloc_warp(size_t bytes) {
    void* block = gpu_malloc(bytes);
    __syncwarp(__activemask());
    return block;
  }

  // --- implementation ----------------------------------------------------
  template <typename Args>
  __device__ GROSR_INLINE void Fill(TaskDescriptor* item, TaskId id,
                                    const Args& args) const {
    *item = TaskDescriptor{};
    item->task_id = id;
    item->arg_bytes = static_cast<uint16_t>(ArgBytesOf<Args>());
    item->group = group;
    if constexpr (ArgBytesOf<Args>() > 0) {
      memcpy(item->args, &args, sizeof(Args));
    }
  }

  __device__ GROSR_INLINE bool SpawnItem(const TaskDescriptor& item) {
    const unsigned mask = __activemask();
    const unsigned n = __popc(mask);
    const unsigned leader = __ffs(mask) - 1;
    const unsigned rank = __popc(mask & ((1u << lane()) - 1u));
    const SchedulerState& s = *state;
    int ok = 0;
    unsigned long long base = 0;
    if (rank == 0) {
      ok = s.queue.TryReserveSpace(n);
      if (ok) {
        // Counted before it can run, so the group cannot look finished.
        s.completion.Add(group, n, 0);
        base = s.queue.ClaimTailTickets(n);
      }
    }
    ok = __shfl_sync(mask, ok, leader);
    if (!ok) return false;
    base = __shfl_sync(mask, base, leader);
    __syncwarp(mask);  // orders the leader's count before the publications
    s.queue.Write(base + rank, item);
    const unsigned same_id = __match_any_sync(mask, item.task_id);
    if (lane() == static_cast<unsigned>(__ffs(same_id) - 1) &&
        item.task_id < s.table_capacity) {
      DeviceAtomic64(s.counters[item.task_id].spawned)
          .fetch_add(__popc(same_id), kRelaxed);
    }
    __syncwarp(mask);
    if (rank == 0) s.queue.Publish(n);
    return true;
  }
#endif  // CUDA compilers
};

}  // namespace grosr

#endif  // GROSR_TASK_CONTEXT_H_
