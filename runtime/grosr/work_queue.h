// WorkQueue: the bounded multi-producer, multi-consumer queue that carries
// tasks between warps.
//
// Every worker warp of the scheduler pushes (spawns) and pops (takes work)
// here, and the control warp pushes what the host submitted. Operations come
// in batches so that a warp's 32 lanes share each atomic: one warp spawning
// 32 children costs the same four counter updates as spawning one. That is
// the difference between saturating one contended counter near 1.3 G items/s
// and moving tens of G items/s (../shared/GPU_FACTS.md).
//
// Protocol. Slots are numbered by 64-bit tickets; ticket t lives in slot
// t % capacity, whose sequence word says whose turn it is:
//   sequence == t            slot empty, producer of ticket t may write
//   sequence == t + 1        item of ticket t published, its consumer may read
//   sequence == t + capacity slot empty again, for ticket t + capacity
// Producers first reserve room (`free_slots`), then claim tickets (`tail`),
// write, and publish each slot with a release store of its sequence; then
// they add to `available`. Consumers reserve items (`available`), claim
// tickets (`head`), wait for each slot's publication (polling relaxed, then
// one acquire load before reading), copy it, release the slot, then add to
// `free_slots`.
//
// What callers must guarantee:
//  - A reservation is followed by exactly as many claims, writes/reads and
//    the matching Publish/ReleaseSpace, without giving up in between (a warp
//    never stops halfway; the scheduler pauses only between tasks).
//  - capacity is a power of two, at most 2^31; Initialize ran before use.
// What they get:
//  - Every published item is read by exactly one consumer, once.
//  - TryReserveSpace fails (nothing changes) when the queue is full, and
//    TryReserveItems returns 0 when nothing is available: no operation blocks
//    on an empty or full queue. Once reserved, a write or read may wait
//    briefly for a producer or consumer that is mid-operation on that slot.
//  - Items are delivered in ticket order per slot, roughly FIFO overall.
//  - A claim (ReserveOrClaim) is served by the next item produced that no
//    earlier claim or reservation is owed: claims are served in the order
//    their head tickets were taken.
//
// Memory ordering: the sequence words carry all synchronisation (release on
// publish and on release of a slot, acquire before reading or reusing one):
// a consumer sees everything its producer wrote before publishing, which is
// what lets a spawning task pass data to its child. The counters are
// relaxed: they only ration reservations. All atomics are device scope; the
// queue lives in device memory and is never touched by the host while the
// scheduler runs.
#ifndef GROSR_WORK_QUEUE_H_
#define GROSR_WORK_QUEUE_H_

#include "grosr/descriptor.h"
#include "grosr/platform.h"

namespace grosr {

// The queue's counters, each on its own 128-byte line so that producers and
// consumers do not contend for one line.
struct WorkQueueCounters {
  alignas(128) uint64_t tail;      // next ticket to produce
  alignas(128) uint64_t head;      // next ticket to consume
  alignas(128) int64_t available;  // published items not yet reserved
  alignas(128) int64_t free_slots; // slots not reserved by producers
};

// A view of a queue: counters, slots and sequence words in device memory.
// Trivially copyable, so the host builds it and hands it to the kernel.
struct WorkQueue {
  WorkQueueCounters* counters;
  TaskDescriptor* slots;
  uint64_t* sequence;
  uint32_t capacity;  // power of two

  // Bytes of device memory a queue of `capacity` slots needs, beyond the
  // counters.
  static GROSR_HD constexpr size_t SlotBytes(uint32_t capacity) {
    return static_cast<size_t>(capacity) * sizeof(TaskDescriptor);
  }
  static GROSR_HD constexpr size_t SequenceBytes(uint32_t capacity) {
    return static_cast<size_t>(capacity) * sizeof(uint64_t);
  }

  // Single-threaded set-up: empty queue (sequence[i] = i).
  GROSR_HD void Initialize() const {
    counters->tail = 0;
    counters->head = 0;
    counters->available = 0;
    counters->free_slots = capacity;
    for (uint32_t i = 0; i < capacity; ++i) sequence[i] = i;
  }

  // --- producer side -------------------------------------------------------

  // Reserves room for `n` items. False (and no change) if fewer are free.
  GROSR_HD bool TryReserveSpace(uint32_t n) const {
    DeviceAtomicS64 free_slots(counters->free_slots);
    if (free_slots.load(kRelaxed) < static_cast<int64_t>(n)) return false;
    int64_t before = free_slots.fetch_sub(n, kRelaxed);
    if (before < static_cast<int64_t>(n)) {
      free_slots.fetch_add(n, kRelaxed);
      return false;
    }
    return true;
  }

  // Reserves room for up to `most` items; returns how many (0 when full).
  // For producers that can leave the rest where it is (the host's ring).
  GROSR_HD uint32_t TryReserveSpaceUpTo(uint32_t most) const {
    return TakeUpTo(&counters->free_slots, most);
  }

  // Claims `n` consecutive tickets after reserving room for n.
  GROSR_HD uint64_t ClaimTailTickets(uint32_t n) const {
    return DeviceAtomic64(counters->tail).fetch_add(n, kRelaxed);
  }

  // Writes and publishes the item of a claimed ticket.
  GROSR_HD void Write(uint64_t ticket, const TaskDescriptor& item) const {
    uint64_t slot = ticket & (capacity - 1);
    DeviceAtomic64 turn(sequence[slot]);
    // The consumer of ticket - capacity may still be copying this slot.
    for (uint32_t ns = 32; turn.load(kAcquire) != ticket; ns = ns < 512 ? 2 * ns : ns) {
      SpinPause(ns);
    }
    Copy16(&slots[slot], &item, sizeof(TaskDescriptor));
    turn.store(ticket + 1, kRelease);
  }

  // Makes `n` written items available to consumers.
  GROSR_HD void Publish(uint32_t n) const {
    DeviceAtomicS64(counters->available).fetch_add(n, kRelaxed);
  }

  // --- consumer side -------------------------------------------------------

  // Reserves up to `most` items; returns how many (0 when none available).
  GROSR_HD uint32_t TryReserveItems(uint32_t most) const {
    return TakeUpTo(&counters->available, most);
  }

  // Claims `n` consecutive tickets after TryReserveItems returned n.
  GROSR_HD uint64_t ClaimHeadTickets(uint32_t n) const {
    return DeviceAtomic64(counters->head).fetch_add(n, kRelaxed);
  }

  // Copies out the item of a claimed ticket and frees its slot.
  GROSR_HD void Read(uint64_t ticket, TaskDescriptor* item) const {
    uint64_t slot = ticket & (capacity - 1);
    DeviceAtomic64 turn(sequence[slot]);
    // Its producer may still be writing.
    for (uint32_t ns = 32; turn.load(kAcquire) != ticket + 1; ns = ns < 512 ? 2 * ns : ns) {
      SpinPause(ns);
    }
    Copy16(item, &slots[slot], sizeof(TaskDescriptor));
    turn.store(ticket + capacity, kRelease);
  }

  // --- consumers that wait: claims ---------------------------------------
  // A consumer that finds the queue empty can claim the next item to come
  // instead of polling the counters: `available` then goes below zero (minus
  // the claims waiting), the claimant takes one head ticket and polls that
  // slot alone. Each produced item thus goes to exactly one waiting
  // consumer, with no contended atomic on the way: no thundering herd of
  // idle warps on one counter when a single task is spawned.
  //
  // Reserves up to `most` available items, or, when none are available, one
  // future item; returns how many (>= 1). The caller then takes that many
  // head tickets with ClaimHeadTickets. Because reservations and claims race
  // for head tickets, any ticket so taken may belong to an item not yet
  // produced: read them with IsReady/TakeReady (never blocking), in any
  // order, each exactly once, then ReleaseSpace.
  GROSR_HD uint32_t ReserveOrClaim(uint32_t most) const {
    // Nothing to take: keep one unit anyway, a claim on the next item.
    return TakeUpTo(&counters->available, most, /*keep_at_least=*/1);
  }

  // True when the item of a taken ticket has been published. A relaxed
  // load: waiters poll this, and on the GPU an acquire load invalidates the
  // SM's L1 cache, slowing every busy warp of the SM; TakeReady acquires
  // once, when there is something to take.
  GROSR_HD bool IsReady(uint64_t ticket) const {
    return DeviceAtomic64(sequence[ticket & (capacity - 1)]).load(kRelaxed) == ticket + 1;
  }

  // Copies out the item of a taken ticket that IsReady said is published,
  // and frees its slot for the producer of ticket + capacity.
  GROSR_HD void TakeReady(uint64_t ticket, TaskDescriptor* item) const {
    uint64_t slot = ticket & (capacity - 1);
    // Synchronizes with the producer's release of this publication (the
    // word cannot move on before we free the slot), so its writes are seen.
    (void)DeviceAtomic64(sequence[slot]).load(kAcquire);
    Copy16(item, &slots[slot], sizeof(TaskDescriptor));
    DeviceAtomic64(sequence[slot]).store(ticket + capacity, kRelease);
  }

  // IsReady then TakeReady: false (nothing changed) if not yet published.
  GROSR_HD bool TryRead(uint64_t ticket, TaskDescriptor* item) const {
    if (!IsReady(ticket)) return false;
    TakeReady(ticket, item);
    return true;
  }

  // How many items must be produced before `ticket`'s (0: it is next or
  // being written). Waiters sleep in proportion.
  GROSR_HD uint64_t ItemsAhead(uint64_t ticket) const {
    uint64_t tail = DeviceAtomic64(counters->tail).load(kRelaxed);
    return ticket > tail ? ticket - tail : 0;
  }

  // Returns `n` read slots to producers.
  GROSR_HD void ReleaseSpace(uint32_t n) const {
    DeviceAtomicS64(counters->free_slots).fetch_add(n, kRelaxed);
  }

  // Takes up to `most` units of a counter that others take from and add to
  // concurrently: one fetch_sub of what the counter seemed to hold, then
  // the part that was not there is given back. Never keeps fewer than
  // `keep_at_least` (the counter may then go negative). Returns the units
  // kept.
  static GROSR_HD uint32_t TakeUpTo(int64_t* counter, uint32_t most, uint32_t keep_at_least = 0) {
    DeviceAtomicS64 units(*counter);
    const int64_t seen = units.load(kRelaxed);
    int64_t want = seen < static_cast<int64_t>(most) ? seen : most;
    if (want < static_cast<int64_t>(keep_at_least)) want = keep_at_least;
    if (want <= 0) return 0;
    const int64_t before = units.fetch_sub(want, kRelaxed);
    int64_t got = before >= want ? want : (before > 0 ? before : 0);
    if (got < static_cast<int64_t>(keep_at_least)) got = keep_at_least;
    if (got < want) units.fetch_add(want - got, kRelaxed);
    return static_cast<uint32_t>(got);
  }

  // Items published or being published and not yet taken (a snapshot);
  // negative: that many consumers hold claims and wait.
  GROSR_HD int64_t ApproximateDepth() const {
    return DeviceAtomicS64(counters->available).load(kRelaxed);
  }
};

}  // namespace grosr

#endif  // GROSR_WORK_QUEUE_H_
