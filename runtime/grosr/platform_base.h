// The part of platform.h that task code needs: function annotations, fixed-
// width types, a spin-wait pause, 16-byte copies and the GPU timer. It
// includes no atomics header on purpose: NVRTC emits every
// cuda::std::numeric_limits member that <cuda/atomic> pulls in as a device
// global (~550 symbols), and a module carrying them takes ~2.6 ms to load
// and ~1.9 ms to unload where a bare one takes ~0.1 ms (bench/load_probe on
// the H200). Task modules include only this; the scheduler's concurrent
// structures include platform.h.
#ifndef GROSR_PLATFORM_BASE_H_
#define GROSR_PLATFORM_BASE_H_

#include <cuda/std/cstddef>
#include <cuda/std/cstdint>

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define GROSR_HD __host__ __device__
#define GROSR_DEVICE __device__
#define GROSR_INLINE __forceinline__
#else
#define GROSR_HD
#define GROSR_DEVICE
#define GROSR_INLINE inline
#endif

// True while compiling code that runs on the GPU.
#if defined(__CUDA_ARCH__)
#define GROSR_ON_DEVICE 1
#else
#define GROSR_ON_DEVICE 0
#endif

// Unrolls the loop that follows where a CUDA compiler builds it (g++ warns
// of the unknown pragma): unrolled, independent loads can be issued before
// any of them is used.
#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define GROSR_UNROLL _Pragma("unroll")
#else
#define GROSR_UNROLL
#endif

#if !GROSR_ON_DEVICE && !defined(__CUDACC_RTC__)
#include <cstring>
#include <thread>
#endif

namespace grosr {

using cuda::std::int32_t;
using cuda::std::int64_t;
using cuda::std::size_t;
using cuda::std::uint16_t;
using cuda::std::uint32_t;
using cuda::std::uint64_t;
using cuda::std::uint8_t;

// Back off inside a spin loop. On the GPU the warp sleeps for about `ns`
// nanoseconds, freeing issue slots; on the CPU the thread yields, so a
// stress test with more threads than cores still makes progress.
GROSR_HD GROSR_INLINE void SpinPause(uint32_t ns) {
#if GROSR_ON_DEVICE
  __nanosleep(ns);
#elif defined(__CUDACC_RTC__)
  (void)ns;
#else
  (void)ns;
  std::this_thread::yield();
#endif
}

// Copies `bytes` (a multiple of 16, both pointers 16-byte aligned) with
// 16-byte accesses on the GPU.
GROSR_HD GROSR_INLINE void Copy16(void* destination, const void* source,
                                  size_t bytes) {
#if GROSR_ON_DEVICE
  auto* to = static_cast<uint4*>(destination);
  const auto* from = static_cast<const uint4*>(source);
#pragma unroll
  for (size_t i = 0; i < bytes / 16; ++i) to[i] = from[i];
#elif defined(__CUDACC_RTC__)
  (void)destination; (void)source; (void)bytes;
#else
  std::memcpy(destination, source, bytes);
#endif
}

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
// The calling thread's lane in its warp as the hardware numbers it (what
// __activemask and __ffs of a lane mask refer to), whatever the block shape.
__device__ GROSR_INLINE unsigned LaneId() {
  unsigned lane;
  asm volatile("mov.u32 %0, %%laneid;" : "=r"(lane));
  return lane;
}
#endif

// Nanoseconds on the GPU's global timer (the host's clock domain differs).
GROSR_DEVICE GROSR_INLINE uint64_t GlobalTimerNs() {
#if GROSR_ON_DEVICE
  uint64_t now;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(now));
  return now;
#else
  return 0;
#endif
}

}  // namespace grosr

#endif  // GROSR_PLATFORM_BASE_H_
