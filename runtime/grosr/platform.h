// What the runtime's shared headers need from the compiler they are built by.
//
// Every header under runtime/grosr/ is compiled three ways: by NVRTC for the
// GPU (the scheduler kernel and every task), by g++ for CPU stress tests of
// the concurrent structures, and by g++ for the host, which allocates and
// inspects the same structures. This file hides the difference: function
// annotations, a spin-wait pause, 16-byte copies, and the lane mask helpers.
// It includes nothing from the C++ host library, so NVRTC needs no host
// headers.
#ifndef GROSR_PLATFORM_H_
#define GROSR_PLATFORM_H_

#include <cuda/atomic>
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

// Scopes used by the runtime. Device scope for everything only the GPU
// touches; system scope only for words the host reads or writes.
using DeviceAtomic64 = cuda::atomic_ref<uint64_t, cuda::thread_scope_device>;
using DeviceAtomicS64 = cuda::atomic_ref<int64_t, cuda::thread_scope_device>;
using DeviceAtomic32 = cuda::atomic_ref<uint32_t, cuda::thread_scope_device>;
using SystemAtomic64 = cuda::atomic_ref<uint64_t, cuda::thread_scope_system>;
using SystemAtomic32 = cuda::atomic_ref<uint32_t, cuda::thread_scope_system>;

constexpr cuda::std::memory_order kRelaxed = cuda::std::memory_order_relaxed;
constexpr cuda::std::memory_order kAcquire = cuda::std::memory_order_acquire;
constexpr cuda::std::memory_order kRelease = cuda::std::memory_order_release;
constexpr cuda::std::memory_order kAcqRel = cuda::std::memory_order_acq_rel;

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

#endif  // GROSR_PLATFORM_H_
