// The runtime's data model: what a task is while it waits to run.
//
// A TaskDescriptor is 64 bytes, 16-byte aligned: a 16-byte header and up to
// kMaxInlineArgBytes of argument bytes copied inline. Larger inputs are passed
// by device pointer inside the arguments. The same layout travels through the
// host's submission ring, the device work queue and a warp's continuation
// slot, so a task costs at most one 64-byte copy wherever it goes (then()
// writes only the header and the argument words in use).
#ifndef GROSR_DESCRIPTOR_H_
#define GROSR_DESCRIPTOR_H_

#include "grosr/platform_base.h"

#if !defined(__CUDACC_RTC__)
#include <cstddef>  // offsetof, for the layout checks below
#endif

namespace grosr {

using TaskId = uint32_t;

// Argument bytes carried inline in a descriptor.
constexpr uint32_t kMaxInlineArgBytes = 48;

// Completion codes. 0 is success; a task reports its own failure with any
// code in [1, kFirstRuntimeCode); codes from kFirstRuntimeCode up are the
// runtime's.
enum : uint32_t {
  kTaskOk = 0,
  kFirstRuntimeCode = 0x80000000u,
  kUnknownTask = 0x80000001u,     // no task is installed under this id
  kBadArguments = 0x80000002u,    // argument size does not match the task's
  kQueueFull = 0x80000003u,       // a spawn found the device queue full
  kAbandoned = 0x80000004u,       // the runtime shut down before it ran
  // A task's gpu_free was refused (reported in RecentErrors; the task goes
  // on and is not marked failed): the pointer was not from the heap, ...
  kBadFreeForeign = 0x80000005u,
  kBadFreeMisaligned = 0x80000006u,  // ... not the start of a block, ...
  kBadFreeDouble = 0x80000007u,      // ... or not allocated (a double free).
};

struct alignas(16) TaskDescriptor {
  TaskId task_id;
  uint16_t arg_bytes;   // how many bytes of `args` are meaningful
  uint16_t flags;       // zero, but see kContinuationEmpty
  uint32_t group;       // completion group; 0 is the default group
  uint32_t ticket;      // low 32 bits of the host's ticket; 0: not tracked
  uint8_t args[kMaxInlineArgBytes];
};
static_assert(sizeof(TaskDescriptor) == 64, "descriptor must stay 64 bytes");
// Where its flags and arguments sit, for code that addresses a slot in
// shared memory by offset (task_context.h); checked where offsetof exists.
constexpr uint32_t kDescriptorFlagsOffset = 6;
constexpr uint32_t kDescriptorArgsOffset = 16;
#if !defined(__CUDACC_RTC__)
static_assert(offsetof(TaskDescriptor, flags) == kDescriptorFlagsOffset, "descriptor layout");
static_assert(offsetof(TaskDescriptor, args) == kDescriptorArgsOffset, "descriptor layout");
#endif

// The scheduler marks a warp's continuation slot with this flag before a
// task runs; then() overwrites the slot's header (flags 0). A slot still
// marked when the task returns holds no continuation.
constexpr uint16_t kContinuationEmpty = 1;

// What the loader knows of each installed task.
struct TaskInfo {
  // Exact argument size the task expects; kAnyArgBytes accepts any size.
  uint32_t arg_bytes;
  uint32_t reserved;
};
constexpr uint32_t kAnyArgBytes = 0xffffffffu;

// Per task id, in device memory; the host reads it for Stats().
struct TaskCounters {
  uint64_t spawned;    // created on the GPU by other tasks
  uint64_t completed;  // returned without failing
  uint64_t failed;     // failed, or refused by the dispatcher
};

// One reported failure, kept in a ring in device memory.
struct ErrorRecord {
  TaskId task_id;
  uint32_t code;
  uint32_t ticket;
  uint32_t worker;
  uint64_t gpu_time_ns;
};

}  // namespace grosr

#endif  // GROSR_DESCRIPTOR_H_
