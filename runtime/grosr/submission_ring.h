// SubmissionRing: the host's ring of task descriptors in pinned memory,
// read by the scheduler's control warp over PCIe.
//
// Every read of host memory is a PCIe round trip (1-3 us on an H200). A ring
// with a sequence word per slot costs a round two of them in series: the
// sequence word (acquire), then the descriptor it guards. Here a slot
// validates itself instead: the 64-byte descriptor travels as 16 words of 64
// bits, each holding 32 bits of the descriptor and a 32-bit tag naming the
// ticket (ticket + 1, truncated). A reader that finds every word's tag equal
// to its ticket's holds that ticket's whole descriptor: one round trip, and
// no torn read can pass, since each word is read atomically and a word left
// from another ticket carries another tag.
//
// Layout, for coalesced reads: slots come in blocks of 32 consecutive ones,
// stored word-major: word w of slot j of a block sits at block * 512 +
// w * 32 + j (in words). A warp whose lane j reads ticket base + j then loads
// each word w for all its lanes from one 256-byte run (two when the round
// straddles a block).
//
// What callers must guarantee:
//  - One producer (the host, under its submit lock) writes tickets in order;
//    it writes ticket t only once the reader has taken ticket t - capacity
//    (the host waits for `submissions_taken`, as with any ring).
//  - capacity is a power of two, at least 32 and at most 2^31.
//  - The ring's memory starts zeroed (a zero tag matches no ticket below
//    2^32 - 1, and by then every slot has been written).
// What they get:
//  - TryRead returns true only with the whole descriptor of that ticket, as
//    the producer wrote it; false while any word is missing.
// Platform assumption: an aligned 8-byte word the host stores with one
// instruction is never read half old, half new by the GPU over PCIe (the
// root complex serves a read from a coherent copy of the cache line). CUDA
// does not promise it for pinned memory (hostNativeAtomicSupported is 0 on
// a PCIe x86 host); a word torn between tag and payload would pass. The
// GPU suite checks every descriptor of tiny rings rewritten while read
// (SmallRingTest, 200,000 tasks through 32 slots among them).
// Memory ordering: each word is stored with release and loaded relaxed,
// except the last one loaded, with acquire: a reader that takes a ticket
// synchronizes with the producer, so whatever the host wrote before it
// submitted (pinned data a task will read) happens before what the reader
// does next. The descriptor itself needs no more: it is inside the words.
#ifndef GROSR_SUBMISSION_RING_H_
#define GROSR_SUBMISSION_RING_H_

#include "grosr/descriptor.h"
#include "grosr/platform.h"

namespace grosr {

struct SubmissionRing {
  static constexpr uint32_t kSlotWords = sizeof(TaskDescriptor) / 4;  // 16
  static constexpr uint32_t kBlockSlots = 32;

  uint64_t* words;    // [capacity * kSlotWords], zeroed before first use
  uint32_t capacity;  // power of two, 32 .. 2^31

  static GROSR_HD constexpr size_t Bytes(uint32_t capacity) {
    return static_cast<size_t>(capacity) * kSlotWords * sizeof(uint64_t);
  }
  static GROSR_HD GROSR_INLINE uint32_t TagOf(uint64_t ticket) {
    return static_cast<uint32_t>(ticket + 1);
  }
  // Index into `words` of word w of the slot holding `ticket`.
  GROSR_HD GROSR_INLINE size_t WordIndex(uint64_t ticket, uint32_t w) const {
    const uint32_t slot = static_cast<uint32_t>(ticket) & (capacity - 1);
    return (static_cast<size_t>(slot / kBlockSlots) * kSlotWords + w) * kBlockSlots +
           slot % kBlockSlots;
  }

  // Producer: writes ticket's descriptor.
  GROSR_HD void Write(uint64_t ticket, const TaskDescriptor& descriptor) const {
    alignas(16) uint32_t payload[kSlotWords];
    Copy16(payload, &descriptor, sizeof(TaskDescriptor));
    const uint64_t tag = uint64_t{TagOf(ticket)} << 32;
    GROSR_UNROLL
    for (uint32_t w = 0; w < kSlotWords; ++w) {
      SystemAtomic64(words[WordIndex(ticket, w)]).store(tag | payload[w], kRelease);
    }
  }

  // Reader, a cheap look: true when the word a descriptor's producer stores
  // last (the highest) already carries ticket's tag -- the whole slot may
  // follow it (TryRead decides). One relaxed load: a warp whose lanes look
  // at 32 consecutive tickets reads 256 bytes, not a round's 4 KiB.
  GROSR_HD bool LastWordArrived(uint64_t ticket) const {
    const uint64_t last = SystemAtomic64(words[WordIndex(ticket, kSlotWords - 1)]).load(kRelaxed);
    return static_cast<uint32_t>(last >> 32) == TagOf(ticket);
  }

  // Reader: true, with *out filled, once every word of ticket's descriptor
  // is there; *out is written either way (garbage when false). The loads
  // have no dependences among them, so they can be in flight together (one
  // round trip); the acquire one is issued last.
  GROSR_HD bool TryRead(uint64_t ticket, TaskDescriptor* out) const {
    uint64_t raw[kSlotWords];
    GROSR_UNROLL
    for (uint32_t w = 0; w + 1 < kSlotWords; ++w) {
      raw[w] = SystemAtomic64(words[WordIndex(ticket, w)]).load(kRelaxed);
    }
    raw[kSlotWords - 1] = SystemAtomic64(words[WordIndex(ticket, kSlotWords - 1)]).load(kAcquire);
    const uint32_t tag = TagOf(ticket);
    uint32_t mismatch = 0;
    alignas(16) uint32_t payload[kSlotWords];
    GROSR_UNROLL
    for (uint32_t w = 0; w < kSlotWords; ++w) {
      mismatch |= static_cast<uint32_t>(raw[w] >> 32) ^ tag;
      payload[w] = static_cast<uint32_t>(raw[w]);
    }
    Copy16(out, payload, sizeof(TaskDescriptor));
    return mismatch == 0;
  }
};

}  // namespace grosr

#endif  // GROSR_SUBMISSION_RING_H_
