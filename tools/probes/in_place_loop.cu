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

// The context and first descriptor of a pure chain of `steps` (one lane).
__device__ void SetUpChain(unsigned steps, unsigned* result) {
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
  if (lane == 0) SetUpChain(steps, result);
  __syncwarp();
  const long long t0 = clock64();
  grosr_task_fn_chain_pure(&g_ctx, g_first.args);
  const long long t1 = clock64();
  if (lane == 0) { *cycles = t1 - t0; g_done = 1; }
}


// Variants of the loop, to find where its cycles go: the same protocol as
// RunWithSelfContinuations with one part left out or changed at a time
// (not all of them correct in general: cost measurements only).
//   kMark: lane 0 marks the slot empty after every lane read it
//   kVote: then()'s writer is the lowest active lane by __ffs (1), by
//          %lanemask_lt (2: no active lane below), or lane 0 (0)
//   kThenSync: then() ends with __syncwarp(mask)
//   kSync: the __syncwarp()s of then() and the loop
//   kVolatile: the slot's loads are ld.volatile (else plain ld.shared)
//   kStatus: the loop loads ctx.status each step
__device__ __forceinline__ unsigned LaneMaskLt() {
  unsigned m;
  asm("mov.u32 %0, %%lanemask_lt;" : "=r"(m));
  return m;
}
template <bool kMark, int kVote, bool kSync, bool kVolatile, bool kStatus, bool kThenSync = true>
__device__ __noinline__ void variant_loop(grosr::TaskContext& ctx, const uint8_t* first) {
  using grosr::SharedAddress;
  const unsigned lane = threadIdx.x & 31;
  auto load_word = [](uint32_t at) {
    uint4 v;
    if (kVolatile) {
      v = grosr::LoadSharedWord(at);
    } else {
      asm("ld.shared.v4.u32 {%0, %1, %2, %3}, [%4];"
          : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(at) : "memory");
    }
    return v;
  };
  const uint32_t slot = SharedAddress(g_ctx.next);
  const uint32_t budget = g_ctx.self_step_budget;
  const uint32_t self = g_ctx.task_id;
  grosr::ArgWords<PureArgs> current;
  current.Load(SharedAddress(first));
  uint32_t steps = 0;
  for (;;) {
    const PureArgs args = current.args();
    if (args.left > 1) {
      const unsigned mask = __activemask();
      const bool writer = kVote == 1   ? lane == unsigned(__ffs(mask) - 1)
                          : kVote == 2 ? (mask & LaneMaskLt()) == 0
                                       : lane == 0;
      if (writer) {
        grosr::TaskDescriptor item{};
        item.task_id = self;
        item.arg_bytes = sizeof(PureArgs);
        const PureArgs next{args.left - 1, args.done + 1, args.steps};
        memcpy(item.args, &next, sizeof next);
        const uint4* words = reinterpret_cast<const uint4*>(&item);
        grosr::StoreSharedWord(slot, words[0]);
        grosr::StoreSharedWord(slot + 16, words[1]);
      }
      if (kSync && kThenSync) __syncwarp(mask);
    } else if (lane == 0) {
      *args.steps = args.done + 1;
    }
    if (kSync) __syncwarp();
    const uint4 head = load_word(slot);
    grosr::ArgWords<PureArgs> next;
    next.words.w[0] = load_word(slot + grosr::kDescriptorArgsOffset);
    const uint32_t status = kStatus ? grosr::LoadShared32(SharedAddress(&ctx.status)) : 0;
    if ((steps == budget) | (head.x != self) | (head.y != sizeof(PureArgs)) | (status != 0)) {
      break;
    }
    current = next;
    ++steps;
    if (kSync) __syncwarp();
    if (kMark && lane == 0) grosr::StoreShared16(slot + grosr::kDescriptorFlagsOffset,
                                                 grosr::kContinuationEmpty);
    if (kSync) __syncwarp();
  }
}

template <bool kMark, int kVote, bool kSync, bool kVolatile, bool kStatus, bool kThenSync = true>
__global__ void probe_variant(unsigned steps, unsigned* result, unsigned long long* cycles) {
  const unsigned lane = threadIdx.x & 31;
  if (lane == 0) SetUpChain(steps, result);
  __syncwarp();
  const long long t0 = clock64();
  variant_loop<kMark, kVote, kSync, kVolatile, kStatus, kThenSync>(g_ctx, g_first.args);
  const long long t1 = clock64();
  if (lane == 0) *cycles = t1 - t0;
}

// Floor: the continuation's words stay in registers; the lowest calling
// lane's words are broadcast with shuffles and a vote says who called.
// kOwnWhenAll: a whole warp that called keeps its own registers (shuffles
// only when some lanes did not call).
template <bool kOwnWhenAll>
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
    if (!kOwnWhenAll || who != ~0u) {
      const int leader = __ffs(who) - 1;
      nl = __shfl_sync(~0u, nl, leader);
      nd = __shfl_sync(~0u, nd, leader);
      np = __shfl_sync(~0u, np, leader);
    }
    left = nl; done = nd; out = (unsigned*)np;
  }
}
template <bool kOwnWhenAll>
__global__ void probe_floor(unsigned steps, unsigned* result, unsigned long long* cycles) {
  const long long t0 = clock64();
  floor_loop<kOwnWhenAll>(steps, result);
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
  struct Variant {
    const char* name;
    void (*kernel)(unsigned, unsigned*, unsigned long long*);
  } variants[] = {
      {"variant: all parts (header before a75e8d2)", probe_variant<true, 1, true, true, true>},
      {"variant: no mark", probe_variant<false, 1, true, true, true>},
      {"variant: writer lane 0, no vote", probe_variant<true, 0, true, true, true>},
      {"variant: writer by lanemask_lt", probe_variant<true, 2, true, true, true>},
      {"variant: lanemask_lt, then() unsynced", probe_variant<true, 2, true, true, true, false>},
      {"variant: ffs, then() unsynced", probe_variant<true, 1, true, true, true, false>},
      {"variant: no __syncwarp", probe_variant<true, 1, false, true, true>},
      {"variant: plain loads", probe_variant<true, 1, true, false, true>},
      {"variant: no status load", probe_variant<true, 1, true, true, false>},
      {"variant: none of mark/vote/sync/status", probe_variant<false, 0, false, true, false>},
      {"registers, own words when all lanes call", probe_floor<true>},
  };
  for (const Variant& v : variants) {
    cudaMemset(result, 0, 4);
    v.kernel<<<1, 32>>>(steps, result, cycles);
    cudaError_t e = cudaDeviceSynchronize();
    unsigned r = 0; unsigned long long cy = 0;
    cudaMemcpy(&r, result, 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(&cy, cycles, 8, cudaMemcpyDeviceToHost);
    std::printf("%-42s %7.1f cycles/step (result %u%s) %s\n", v.name, double(cy) / steps, r,
                r == steps ? " ok" : " WRONG", cudaGetErrorString(e));
  }
  for (int rep = 0; rep < 3; ++rep) {
    cudaMemset(result, 0, 4);
    probe_floor<false><<<1, 32>>>(steps, result, cycles);
    cudaDeviceSynchronize();
    unsigned r = 0; unsigned long long cy = 0;
    cudaMemcpy(&r, result, 4, cudaMemcpyDeviceToHost);
    cudaMemcpy(&cy, cycles, 8, cudaMemcpyDeviceToHost);
    std::printf("register floor                           %7.1f cycles/step (result %u%s)\n",
                double(cy) / steps, r, r == steps ? " ok" : " WRONG");
  }
}
