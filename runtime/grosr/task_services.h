// The scheduler's services to tasks: spawning into the device queue and the
// task heap. Compiled into the scheduler's module only; tasks reach them
// through TaskContext's function pointers (task_context.h says why), which
// the scheduler sets with InstallTaskServices at launch.
#ifndef GROSR_TASK_SERVICES_H_
#define GROSR_TASK_SERVICES_H_

#include "grosr/scheduler_state.h"
#include "grosr/task_context.h"

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)

namespace grosr {

__device__ GROSR_INLINE const SchedulerState& StateOf(const TaskContext* ctx) {
  return *static_cast<const SchedulerState*>(ctx->state);
}

// One task per calling lane; the lanes that call together share one
// reservation, one tail claim and one publication.
__device__ __noinline__ bool SpawnService(TaskContext* ctx, const TaskDescriptor* item) {
  const unsigned lane = threadIdx.x & 31u;
  const unsigned mask = __activemask();
  const unsigned n = __popc(mask);
  const unsigned leader = __ffs(mask) - 1;
  const unsigned rank = __popc(mask & ((1u << lane) - 1u));
  const SchedulerState& s = StateOf(ctx);
  const uint32_t group = ctx->group;
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
  s.queue.Write(base + rank, *item);
  const TaskId id = item->task_id;
  const unsigned same_id = __match_any_sync(mask, id);
  if (lane == static_cast<unsigned>(__ffs(same_id) - 1) && id < s.table_capacity) {
    DeviceAtomic64(s.counters[id].spawned).fetch_add(__popc(same_id), kRelaxed);
  }
  __syncwarp(mask);
  if (rank == 0) s.queue.Publish(n);
  return true;
}

// Lanes that call together with the same size class share one batch.
__device__ __noinline__ void* AllocateService(TaskContext* ctx, uint64_t bytes) {
  return StateOf(ctx).heap.AllocateCoalesced(bytes, ctx->worker);
}

__device__ __noinline__ bool FreeService(TaskContext* ctx, void* pointer) {
  const SchedulerState& s = StateOf(ctx);
  // Lanes freeing into one bitmap word together share one fetch_and.
  const uint32_t result = s.heap.FreeCoalesced(pointer);
  if (result == SlabAllocator::kFreeOk) return true;
  const uint32_t code = result == SlabAllocator::kFreeForeign      ? kBadFreeForeign
                        : result == SlabAllocator::kFreeMisaligned ? kBadFreeMisaligned
                                                                   : kBadFreeDouble;
  s.ReportError(ctx->task_id, code, 0, ctx->worker);
  return false;
}

// Fills the launch-long part of a worker's context.
__device__ GROSR_INLINE void InstallTaskServices(TaskContext* ctx, const SchedulerState& s,
                                                 uint32_t worker) {
  ctx->state = &s;
  ctx->spawn_fn = SpawnService;
  ctx->allocate_fn = AllocateService;
  ctx->free_fn = FreeService;
  ctx->worker = worker;
  ctx->warps = s.num_warps;
}

}  // namespace grosr

#endif  // CUDA compilers

#endif  // GROSR_TASK_SERVICES_H_
