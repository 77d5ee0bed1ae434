// Probe: SM cycles per step of a task's in-place self-continuation loop
// (RunWithSelfContinuations, the real header), alone on one warp, with
// other warps of the block idling as scheduler workers do, and a floor
// that keeps the continuation in registers (one shuffle per word).
// Build here, run on the GPU machine (bundle/bin/in_place_loop):
//   nvcc -arch=sm_90 -rdc=true -std=c++20 -I runtime -o bundle/bin/in_place_loop tools/probes/in_place_loop.cu
#include <cstdio>
#include <grosr/task.h>

struct PureArgs { unsigned left; unsigned done; unsigned* steps; };
// GROSR_TASK(chain_pure, PureArgs) without the loader's symbols (the
// host stubs of its extern "C" variables do not link in a whole program).
static __device__ void chain_pure_body(grosr::TaskContext& ctx, const PureArgs& args) {
  if (args.left > 1) {
    ctx.then(ctx.self(), PureArgs{args.left - 1, args.done + 1, args.steps});
  } else if (ctx.lane() == 0) {
    *args.steps = args.done + 1;
  }
}
extern "C" __device__ __noinline__ void grosr_task_fn_chain_pure(grosr::TaskContext* ctx,
                                                                 const void* args) {
  grosr::RunWithSelfContinuations<PureArgs>(*ctx, static_cast<const uint8_t*>(args),
                                            chain_pure_body);
}

__shared__ grosr::TaskContext g_ctx;
__shared__ grosr::TaskDescriptor g_slot;
__shared__ grosr::TaskDescriptor g_first;
__shared__ volatile unsigned g_done;

// idle: 0 none, 1 others __nanosleep(ns) on a shared flag, 2 others poll a
// global word with __nanosleep(ns)
__global__ void probe(unsigned steps, int idle, unsigned ns, unsigned* result,
                      unsigned long long* cycles, volatile unsigned* global_flag) {
  const unsigned warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (threadIdx.x == 0) g_done = 0;
  __syncthreads();
  if (warp != 0) {
    if (idle == 0) return;
    while (g_done == 0) {
      if (idle == 2) (void)*global_flag;
      __nanosleep(ns);
    }
    return;
  }
  if (lane == 0) {
    g_ctx.self_step_budget = steps;
    g_ctx.next = &g_slot;
    g_ctx.task_id = 7;
    g_ctx.group = 0;
    g_ctx.status = 0;
    g_first = grosr::TaskDescriptor{};
    g_first.task_id = 7;
    g_first.arg_bytes = sizeof(PureArgs);
    PureArgs a{steps, 0, result};
    memcpy(g_first.args, &a, sizeof a);
    g_slot.flags = grosr::kContinuationEmpty;
  }
  __syncwarp();
  const long long t0 = clock64();
  grosr_task_fn_chain_pure(&g_ctx, g_first.args);
  const long long t1 = clock64();
  if (lane == 0) { *cycles = t1 - t0; g_done = 1; }
}

// Floor: the continuation's words stay in registers; the lowest calling
// lane's words are broadcast with shuffles and a vote says who called.
__device__ __noinline__ void floor_loop(unsigned steps, unsigned* result) {
  unsigned left = steps, done = 0;
  unsigned* out = result;
  for (;;) {
    bool called = false;
    unsigned nl = 0, nd = 0; unsigned long long np = 0;
    if (left > 1) { called = true; nl = left - 1; nd = done + 1; np = (unsigned long long)out; }
    else if ((threadIdx.x & 31) == 0) *out = done + 1;
    const unsigned who = __ballot_sync(~0u, called);
    if (who == 0) break;
    const int leader = __ffs(who) - 1;
    left = __shfl_sync(~0u, nl, leader);
    done = __shfl_sync(~0u, nd, leader);
    out = (unsigned*)__shfl_sync(~0u, np, leader);
  }
}
__global__ void probe_floor(unsigned steps, unsigned* result, unsigned long long* cycles) {
  const long long t0 = clock64();
  floor_loop(steps, result);
  const long long t1 = clock64();
  if (threadIdx.x == 0) *cycles = t1 - t0;
}

int main() {
  unsigned* result; unsigned long long* cycles; unsigned* flag;
  cudaMalloc(&result, 4); cudaMalloc(&cycles, 8); cudaMalloc(&flag, 4); cudaMemset(flag, 0, 4);
  const unsigned steps = 1000000;
  struct Case { const char* name; int warps; int idle; unsigned ns; } cases[] = {
      {"alone", 1, 0, 0},          {"7 idle, sleep 2000", 8, 1, 2000},
      {"7 idle, sleep 100", 8, 1, 100}, {"7 idle, global poll 100", 8, 2, 100},
      {"31 idle, global poll 100", 32, 2, 100}};
  for (const Case& c : cases) {
    for (int rep = 0; rep < 3; ++rep) {
      cudaMemset(result, 0, 4);
      probe<<<1, 32 * c.warps>>>(steps, c.idle, c.ns, result, cycles, flag);
      cudaError_t e = cudaDeviceSynchronize();
      unsigned r = 0; unsigned long long cy = 0;
      cudaMemcpy(&r, result, 4, cudaMemcpyDeviceToHost);
      cudaMemcpy(&cy, cycles, 8, cudaMemcpyDeviceToHost);
      std::printf("in-place loop, %-26s %7.1f cycles/step (result %u%s) %s\n", c.name,
                  double(cy) / steps, r, r == steps ? " ok" : " WRONG", cudaGetErrorString(e));
    }
  }
  for (int rep = 0; rep < 3; ++rep) {
    cudaMemset(result, 0, 4);
    probe_floor<<<1, 32>>>(steps, result, cycles);
    cudaDeviceSynchronize();
    unsigned r = 0; unsigned long long cy = 0;
    cudaMemcpy(&r, result, 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(&cy, cycles, 8, cudaMemcpyDeviceToHost);
    std::printf("register floor                           %7.1f cycles/step (result %u%s)\n",
                double(cy) / steps, r, r == steps ? " ok" : " WRONG");
  }
}
