// The task ABI: the one header a GROSR task includes.
//
// A task is a __device__ function run by one whole warp (32 lanes together),
// defined with GROSR_TASK and compiled at run time (file in tasks/, or a
// string handed to Runtime::Load). Example, a task that adds two numbers and
// a chain that counts down by continuing on its own warp:
//
//   #include <grosr/task.h>
//
//   struct AddArgs { int a, b; int* out; };
//   GROSR_TASK(add, AddArgs) {
//     if (ctx.lane() == 0) *args.out = args.a + args.b;
//   }
//
//   struct CountArgs { unsigned left; unsigned* done; };
//   GROSR_TASK(countdown, CountArgs) {
//     if (args.left == 0) {
//       if (ctx.lane() == 0) *args.done = 1;
//       return;
//     }
//     ctx.then(ctx.self(), CountArgs{args.left - 1, args.done});
//   }
//
// The task's parameters are `ctx` (grosr::TaskContext&) and `args` (const
// Args&, a copy in registers of the argument bytes carried in the
// descriptor; the scheduler checks their size matches sizeof(Args) first).
//
// What a task can do through ctx:
//   ctx.lane()              this thread's lane, 0..31
//   ctx.self()              this task's id
//   ctx.spawn(id, args)     one child per calling lane (warp-aggregated);
//                           false when the device queue is full
//   ctx.then(id, args)      run `id` next on this warp, no queue (fastest
//                           dependent dispatch); the continuation replaces
//                           the task: a host waiting for the task waits for
//                           the whole chain. then(ctx.self(), ...) is the
//                           fastest of all: it runs as a loop in the task's
//                           own code (RunWithSelfContinuations)
//   ctx.fail(code)          report failure, code in 1..0x7fffffff
//   ctx.gpu_malloc(bytes)   device memory from the runtime's heap, per lane,
//                           no host call; null when the heap is full; lanes
//                           calling together share one reservation
//   ctx.gpu_free(p)         gives it back (any task, any warp); a bad
//                           pointer or double free is refused and reported
//   ctx.gpu_malloc_warp(b)  the same from every active lane at once
//   ctx.worker_id()         this warp's index, for per-worker scratch
// Task ids come from the host (Runtime::Load returns them); pass them to
// tasks in their arguments.
//
// Rules for task code (the loader enforces what it can):
//   - Arguments: trivially copyable, at most 48 bytes, alignment <= 16. Use
//     grosr::NoArgs for none. Pass bulk data by device pointer.
//   - Width: a task runs on one warp. Lanes may diverge; ctx.spawn may be
//     called from any subset of lanes; ctx.then from the whole warp or one
//     lane; __syncwarp() is allowed, __syncthreads() is not (other warps of
//     the block run other tasks).
//   - No __constant__ variables and no static __shared__ arrays: code loaded
//     into a running scheduler would read the scheduler's banks instead.
//   - Registers and stack are bounded by the scheduler's budget (tasks are
//     compiled with its -maxrregcount; large local arrays count against the
//     stack limit set at start-up).
//   - A task must return: a task that never returns holds its warp, and the
//     host's watchdog reports it by id.
//   - Use the atomic builtins (atomicAdd, atomicCAS, ...) rather than
//     <cuda/atomic>: NVRTC emits ~550 device globals for it, and loading and
//     unloading them lengthens the scheduler's pause by milliseconds (the
//     loader warns). This header includes no atomics header for that reason;
//     ctx.spawn and the heap calls run in the scheduler's own module.
#ifndef GROSR_TASK_H_
#define GROSR_TASK_H_

#include <cuda/std/type_traits>

#include "grosr/task_context.h"

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)

// Defines task `name` taking `ArgsType`, and the symbols the loader finds it
// by: grosr_task_entry_<name> (a function pointer) and grosr_task_info_<name>
// (its argument size). The braces that follow are the task's body.
#define GROSR_TASK(name, ArgsType)                                            \
  static_assert(sizeof(ArgsType) <= ::grosr::kMaxInlineArgBytes,             \
                "arguments of task " #name " exceed 48 bytes");              \
  static_assert(alignof(ArgsType) <= 16,                                      \
                "arguments of task " #name " need more than 16-byte alignment"); \
  static_assert(::cuda::std::is_trivially_copyable<ArgsType>::value,         \
                "arguments of task " #name " must be trivially copyable");   \
  static __device__ void grosr_task_body_##name(::grosr::TaskContext& ctx,   \
                                                const ArgsType& args);        \
  /* Never inlined into the scheduler: the context fields a task loads    \
     once per call (LoadInvariant32/64) are rewritten between calls. */   \
  extern "C" __device__ __noinline__ void grosr_task_fn_##name(              \
      ::grosr::TaskContext* ctx, const void* args) {                          \
    ::grosr::RunWithSelfContinuations<ArgsType>(                              \
        *ctx, static_cast<const uint8_t*>(args), grosr_task_body_##name);     \
  }                                                                           \
  extern "C" __device__ ::grosr::TaskEntry grosr_task_entry_##name =         \
      grosr_task_fn_##name;                                                   \
  extern "C" __device__ ::grosr::TaskInfo grosr_task_info_##name = {         \
      ::grosr::ArgBytesOf<ArgsType>(), 0};                                    \
  static __device__ void grosr_task_body_##name(                              \
      [[maybe_unused]] ::grosr::TaskContext& ctx,                             \
      [[maybe_unused]] const ArgsType& args)

#endif  // CUDA compilers

#endif  // GROSR_TASK_H_
