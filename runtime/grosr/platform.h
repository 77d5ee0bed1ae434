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

}  // namespace grosr

#endif  // GROSR_PLATFORM_H_
