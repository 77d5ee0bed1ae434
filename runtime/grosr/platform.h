// What the runtime's shared headers need from the compiler they are built by.
//
// Every header under runtime/grosr/ is compiled three ways: by NVRTC for the
// GPU, by g++ for CPU stress tests of the concurrent structures, and by g++
// for the host, which allocates and inspects the same structures.
// platform_base.h hides the difference (annotations, types, spin pause,
// 16-byte copies); this file adds the atomics the concurrent structures are
// written on, with the scopes and orders the runtime uses. Task code sees
// only platform_base.h (see there why). Nothing here includes the C++ host
// library, so NVRTC needs no host headers.
#ifndef GROSR_PLATFORM_H_
#define GROSR_PLATFORM_H_

#include <cuda/atomic>

#include "grosr/platform_base.h"

// Host builds under ThreadSanitizer (GCC defines __SANITIZE_THREAD__, Clang
// reports the feature).
#if defined(__SANITIZE_THREAD__)
#define GROSR_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define GROSR_TSAN 1
#endif
#endif
#if defined(GROSR_TSAN) && !defined(__CUDA_ARCH__) && !defined(__CUDACC_RTC__)
#include <atomic>
#endif

namespace grosr {

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

// A sequentially consistent fence at device scope, for store-buffering
// patterns (each of two threads writes one word, then reads the other's).
// ThreadSanitizer does not model standalone fences (GCC refuses them under
// -fsanitize=thread), so such host builds use a seq_cst read-modify-write
// of one shared word instead: two threads' RMWs of it are ordered, and the
// later one sees what the earlier one wrote before it.
GROSR_HD GROSR_INLINE void SeqCstFence() {
#if defined(GROSR_TSAN) && !GROSR_ON_DEVICE && !defined(__CUDACC_RTC__)
  static std::atomic<int> word{0};
  word.fetch_add(0, std::memory_order_seq_cst);
#else
  cuda::atomic_thread_fence(cuda::std::memory_order_seq_cst, cuda::thread_scope_device);
#endif
}

}  // namespace grosr

#endif  // GROSR_PLATFORM_H_
