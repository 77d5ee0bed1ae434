// TaskContext: what a running task sees of the scheduler. Tasks use it
// through the methods documented in grosr/task.h.
//
// One TaskContext exists per worker warp, in the scheduler's shared memory.
// All 32 lanes of the warp run a task together and see the same context.
//
// What touches the scheduler's concurrent structures (spawning into the
// queue, the task heap) is a call into the scheduler's module through the
// function pointers below (grosr/task_services.h implements them): task
// modules then include no atomics header and stay small. A module that
// includes <cuda/atomic> carries ~550 CCCL globals that NVRTC emits, and
// loading one took ~2.6 ms against ~0.1 ms (see platform_base.h) -- time the
// scheduler spends paused. The call costs about what a same-module call
// does (../shared/GPU_FACTS.md); then() and fail() stay inline.
#ifndef GROSR_TASK_CONTEXT_H_
#define GROSR_TASK_CONTEXT_H_

#include "grosr/descriptor.h"
#include "grosr/platform_base.h"

namespace grosr {

struct TaskContext;
// A task's entry point, as the dispatch table holds it.
using TaskEntry = void (*)(TaskContext*, const void*);
// The scheduler's services, called by every active lane that asks.
// Spawn: one task per calling lane (warp-aggregated); false, spawning
// nothing for those lanes, when the queue lacks room.
using TaskSpawnFn = bool (*)(TaskContext* ctx, const TaskDescriptor* item);
// Heap: a block of `bytes` for the calling lane, or null when full.
using TaskAllocateFn = void* (*)(TaskContext* ctx, uint64_t bytes);
// Heap: frees a block; false (and an error reported for the task) when
// the pointer is refused.
using TaskFreeFn = bool (*)(TaskContext* ctx, void* pointer);

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

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
// The context and a warp's continuation slots live in the scheduler's
// shared memory (its WarpScratch), always: a task's module reaches them only
// through generic pointers, which it would access with generic loads and
// stores (LD.E/ST.E), so the hot paths (then(), the in-place loop) convert
// them to shared addresses once and use shared-space instructions.
__device__ GROSR_INLINE uint32_t SharedAddress(const void* p) {
  return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}
// 16 bytes at a 16-byte aligned shared address, loaded where the call
// stands: volatile, so that ptxas neither moves the load into a later
// branch nor narrows it (with plain loads it sank a slot's argument load
// behind its header check: two loads in series, ~250 SM cycles a step on
// an H200, A/B of 299a215).
__device__ GROSR_INLINE uint4 LoadSharedWord(uint32_t at) {
  uint4 v;
  asm volatile("ld.volatile.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "r"(at)
               : "memory");
  return v;
}
__device__ GROSR_INLINE void StoreSharedWord(uint32_t at, uint4 v) {
  asm volatile("st.shared.v4.u32 [%0], {%1, %2, %3, %4};" ::"r"(at), "r"(v.x), "r"(v.y),
               "r"(v.z), "r"(v.w)
               : "memory");
}
__device__ GROSR_INLINE uint32_t LoadShared32(uint32_t at) {
  uint32_t v;
  asm volatile("ld.volatile.shared.u32 %0, [%1];" : "=r"(v) : "r"(at) : "memory");
  return v;
}
// A context field the scheduler writes before it calls the task and not
// again until the task returns (task_id, group, next, the budget): a load
// the compiler may merge with others of the same field and hoist out of a
// loop (the asm is neither volatile nor clobbers memory), so that then()
// in the in-place loop loads nothing.
__device__ GROSR_INLINE uint32_t LoadInvariant32(uint32_t at) {
  uint32_t v;
  asm("ld.shared.u32 %0, [%1];" : "=r"(v) : "r"(at));
  return v;
}
__device__ GROSR_INLINE uint64_t LoadInvariant64(uint32_t at) {
  uint64_t v;
  asm("ld.shared.u64 %0, [%1];" : "=l"(v) : "r"(at));
  return v;
}
__device__ GROSR_INLINE void StoreShared16(uint32_t at, uint16_t v) {
  asm volatile("st.shared.u16 [%0], %1;" ::"r"(at), "h"(v) : "memory");
}
#endif  // CUDA compilers

// Tasks read the context through its methods and never write its fields:
// the scheduler sets them before it calls a task, and the task's code loads
// some of them once per call (LoadInvariant32/64).
struct TaskContext {
  // --- set by the scheduler once per launch ------------------------------
  const void* state;     // the scheduler's SchedulerState (for services)
  TaskSpawnFn spawn_fn;
  TaskAllocateFn allocate_fn;
  TaskFreeFn free_fn;
  uint32_t worker;       // global warp index
  uint32_t warps;        // warps of the grid, control warp included
  // --- set by the scheduler before each task -----------------------------
  uint32_t self_step_budget;  // most continuations to itself it may run in place
  TaskDescriptor* next;  // where then() writes the continuation
  TaskId task_id;
  uint32_t group;
  uint32_t status;       // first failure code reported, 0 if none
  // --- set by the task (RunWithSelfContinuations) ------------------------
  uint32_t self_steps;   // continuations to itself it ran in place

  // Lives in the scheduler's shared memory and is addressed as such (see
  // SharedAddress): a copy elsewhere would be read at a wrong address.
  TaskContext() = default;
  TaskContext(const TaskContext&) = delete;
  TaskContext& operator=(const TaskContext&) = delete;

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
  // Lane of the calling thread within the warp, 0..31.
  __device__ GROSR_INLINE unsigned lane() const { return threadIdx.x & 31u; }
  // The id of the running task (to spawn more of itself).
  __device__ GROSR_INLINE TaskId self() const {
    return LoadInvariant32(SharedAddress(&task_id));
  }
  // Index of the warp running this task, 1..num_workers-1 (0 is the control
  // warp); stable while the runtime runs, handy for per-worker scratch.
  __device__ GROSR_INLINE uint32_t worker_id() const { return worker; }
  __device__ GROSR_INLINE uint32_t num_warps() const { return warps; }

  // Marks the running task failed with `code` (1 .. 0x7fffffff). Any lane
  // may call it; the first code reported wins. The task still runs to its
  // end; its continuation, if any, still runs.
  __device__ GROSR_INLINE void fail(uint32_t code) {
    if (code == 0 || code >= kFirstRuntimeCode) code = kFirstRuntimeCode - 1;
    // Relaxed, block scope is enough: the scheduler reads it after the
    // warp's __syncwarp. (A builtin, not cuda::atomic_ref: see the top.)
    atomicCAS_block(&status, 0u, code);
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
    return spawn_fn(this, &item);
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
    const unsigned mask = __activemask();
    // The lowest calling lane writes: no calling lane below it, tested with
    // a shift of the lane's bit. (lane() == __ffs(mask) - 1 put a bit
    // reverse and a find-first on every step's path before the stores: an
    // in-place step took 262 SM cycles, 228 this way; tools/probes/
    // in_place_loop.cu, H200.)
    if ((mask & ((1u << lane()) - 1u)) == 0) {
      TaskDescriptor item;
      Fill(&item, id, args);
      item.group = LoadInvariant32(SharedAddress(&group));
      // The header (flags 0: the slot is taken) and the argument words in
      // use: a reader loads only as many as its arguments have.
      const uint32_t slot =
          SharedAddress(reinterpret_cast<const void*>(LoadInvariant64(SharedAddress(&next))));
      const uint4* words = reinterpret_cast<const uint4*>(&item);
#pragma unroll
      for (uint32_t i = 0; i < 1 + (ArgBytesOf<Args>() + 15) / 16; ++i) {
        StoreSharedWord(slot + 16 * i, words[i]);
      }
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

  // Any lane, each lane for its own size. Null when the heap has no room
  // (counted in Stats().heap.failed_allocations); memory freed later is
  // usable again. Lanes that call together and need the same size class
  // share one reservation (a warp of 32 same-size requests costs about two
  // atomics), so calling it from the whole warp is the fast way.
  __device__ GROSR_INLINE void* gpu_malloc(size_t bytes) { return allocate_fn(this, bytes); }

  // Frees a block from gpu_malloc; nullptr is a no-op. A pointer the heap did
  // not give out, not the start of a block, or already free is refused: the
  // heap is unchanged, the refusal is counted (Stats().heap) and reported to
  // the host as an error of this task (RecentErrors: kBadFree*). Returns
  // true when the block was freed.
  __device__ GROSR_INLINE bool gpu_free(void* pointer) { return free_fn(this, pointer); }

  // The warp-wide form: every active lane calls it with its own size and
  // gets its own block (or null), and the lanes leave together
  // (__syncwarp). Same cost as gpu_malloc from those lanes.
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

#endif  // CUDA compilers
};

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
// Args and padding up to a whole number of 16-byte words (what a bit cast
// from those words needs: the same size).
template <typename Args, size_t kPad>
struct PaddedArgs {
  Args args;
  unsigned char pad[kPad];
};
template <typename Args>
struct PaddedArgs<Args, 0> {
  Args args;
};

// A task's arguments in registers, as the 16-byte words they were loaded
// in. Args is only trivially copyable (GROSR_TASK checks): it may have no
// default constructor or assignment, so the words are what is kept and
// assigned, and args() makes an Args from them with a bit cast -- a
// renaming of registers. (Byte storage with a memcpy, the other way that
// needs neither, made the compiler rebuild every word from its bytes.)
template <typename Args>
struct ArgWords {
  static constexpr size_t kChunks = (sizeof(Args) + 15) / 16;
  using Padded = PaddedArgs<Args, kChunks * 16 - sizeof(Args)>;
  struct Words {
    uint4 w[kChunks];
  };
  static_assert(sizeof(Padded) == sizeof(Words), "arguments must pad to whole 16-byte words");
  Words words;

  // From 16-byte aligned argument bytes at shared address `at` (a batch
  // entry or a continuation slot of the warp's scratch), in place.
  __device__ GROSR_INLINE void Load(uint32_t at) {
#pragma unroll
    for (size_t i = 0; i < kChunks; ++i) words.w[i] = LoadSharedWord(at + 16 * i);
  }
  __device__ GROSR_INLINE Args args() const { return __builtin_bit_cast(Padded, words).args; }
};

// A task's entry (GROSR_TASK): runs the body, then the task's continuations
// to itself (then(self(), ...)) right here, in the task's module, without a
// return to the scheduler and a dispatch per step. A self-continuation is a
// loop iteration of the task's own code: 359 SM cycles a step on an H200,
// where the same chain dispatched by the scheduler took ~1,000 (bench/
// RESULTS.md, run K, A/B P).
// At most ctx.self_step_budget of them per dispatch, and only while no step
// failed and the continuation has this task's argument size; whatever is left
// (a continuation to another task, a failed step's, the next one past the
// budget) goes back to the scheduler in ctx.next, which handles it as before.
// ctx.self_steps tells the scheduler how many ran (each counts as a task
// that completed, in the statistics). The heartbeat does not move during
// the loop: the watchdog sees its steps as one task.
//
// Every step's continuation goes to the same slot, ctx.next: a step's
// arguments are in registers before its body runs, and lane 0 marks the
// slot empty once every lane has read it. (Two slots alternated before, and
// the loop rewrote ctx.next each step: a store that then()'s load of
// ctx.next waited for, and the S2R that made the pointer generic.)
template <typename Args, typename Body>
__device__ GROSR_INLINE void RunWithSelfContinuations(TaskContext& ctx, const uint8_t* first,
                                                      Body body) {
  ArgWords<Args> current;
  current.Load(SharedAddress(first));
  // Little lives across the body (the slot, the budget, the task id, the
  // step count, the argument words): a body that calls out (spawn, the heap) saves and restores what
  // is live around that call, in local memory. Of the context, the loop
  // writes only the slot's flags (lane 0, after every lane's last read in
  // the step) and, at the end, ctx.self_steps: a context field that lanes
  // read after the body and lane 0 then rewrote raced when the lanes had
  // diverged in the body (racecheck; a chain whose lanes took different
  // slots never ended).
  const uint32_t slot =
      SharedAddress(reinterpret_cast<const void*>(LoadInvariant64(SharedAddress(&ctx.next))));
  // Fixed while the task runs: loaded once.
  const uint32_t budget = LoadInvariant32(SharedAddress(&ctx.self_step_budget));
  const TaskId self = LoadInvariant32(SharedAddress(&ctx.task_id));
  uint32_t steps = 0;  // run in place so far (the body appears once: code size)
  for (;;) {
    body(ctx, current.args());
    __syncwarp();  // every lane's writes of the step (then, fail) are seen
    // Everything the decision needs, loaded together: the slot's header and
    // arguments (used only if it holds this task's continuation) and the
    // status.
    const uint4 head = LoadSharedWord(slot);
    ArgWords<Args> next;
    next.Load(slot + kDescriptorArgsOffset);
    const uint32_t status = LoadShared32(SharedAddress(&ctx.status));
    const uint32_t size_and_flags = head.y;  // arg_bytes | flags << 16
    if ((steps == budget) | (head.x != self) | (size_and_flags != ArgBytesOf<Args>()) |
        (status != kTaskOk)) {
      break;
    }
    current = next;
    ++steps;
    __syncwarp();  // every lane has read the slot before lane 0 marks it
    if (ctx.lane() == 0) StoreShared16(slot + kDescriptorFlagsOffset, kContinuationEmpty);
    __syncwarp();  // the step's then() comes after the mark
  }
  if (ctx.lane() == 0) ctx.self_steps = steps;
}
#endif  // CUDA compilers

}  // namespace grosr

#endif  // GROSR_TASK_CONTEXT_H_
