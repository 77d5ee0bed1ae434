// Counting what is still to do, so that the host can wait for a group of
// tasks, or for the whole runtime to fall quiet, while tasks spawn tasks.
//
// Each completion group (group 0 is the default one) has a 64-bit word in
// device memory:
//     high 32 bits: roots, host-submitted tasks of the group taken in so far
//                   (wrapping);
//     low 32 bits:  pending, tasks of the group queued, running, or held by a
//                   warp as its next task.
// The total word counts all groups the same way. A task's pending unit is
// added before it can run (at spawn or at ingestion) and removed after it
// returned without a continuation; a continuation inherits its parent's unit.
// So pending never reads 0 while any task of the group can still run or
// spawn, and a word showing pending == 0 and roots == R proves the R first
// host submissions of the group and all their descendants finished.
//
// Workers batch their decrements; whoever brings pending to 0 marks the
// group dirty; the control warp, the only writer of host-visible snapshots,
// publishes the words of dirty groups to pinned memory for the host.
//
// Memory ordering: decrements are release (the work of the finished tasks
// happens before the count that reports it); the control warp reads words
// with acquire and publishes with a release at system scope, so a host that
// sees a finished group also sees the tasks' writes to device memory.
#ifndef GROSR_COMPLETION_H_
#define GROSR_COMPLETION_H_

#include "grosr/platform.h"

namespace grosr {

constexpr uint64_t kRootUnit = uint64_t{1} << 32;
constexpr uint64_t kPendingMask = 0xffffffffu;

GROSR_HD GROSR_INLINE uint32_t PendingOf(uint64_t word) {
  return static_cast<uint32_t>(word & kPendingMask);
}
GROSR_HD GROSR_INLINE uint32_t RootsOf(uint64_t word) {
  return static_cast<uint32_t>(word >> 32);
}

struct CompletionCounters {
  uint64_t* group_words;   // [group_capacity]; [0] is the default group
  uint64_t* total_word;
  uint32_t* dirty_groups;  // bitmap, group_capacity bits
  uint32_t* dirty_total;
  uint32_t group_capacity; // multiple of 32

  // Adds `n` pending tasks to `group` (and the total) before they can run.
  // `roots` of them are host submissions.
  GROSR_HD void Add(uint32_t group, uint32_t n, uint32_t roots) const {
    uint64_t delta = uint64_t{n} + uint64_t{roots} * kRootUnit;
    DeviceAtomic64(*total_word).fetch_add(delta, kRelaxed);
    if (group != 0) DeviceAtomic64(group_words[group]).fetch_add(delta, kRelaxed);
  }

  // Removes `n` finished tasks of `group`; marks words that reach 0 dirty.
  // The group word goes first: whoever sees the total reach 0 (acquire)
  // also sees every group at 0.
  GROSR_HD void Finish(uint32_t group, uint32_t n) const {
    if (n == 0) return;
    if (group != 0) {
      uint64_t before = DeviceAtomic64(group_words[group]).fetch_sub(n, kRelease);
      if (PendingOf(before) == n) {
        DeviceAtomic32(dirty_groups[group / 32]).fetch_or(1u << (group % 32), kRelaxed);
      }
    }
    uint64_t before = DeviceAtomic64(*total_word).fetch_sub(n, kRelease);
    if (PendingOf(before) == n) DeviceAtomic32(*dirty_total).store(1, kRelaxed);
  }
};

}  // namespace grosr

#endif  // GROSR_COMPLETION_H_
