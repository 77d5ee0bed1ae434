// Tests of the SubmissionRing protocol on the CPU: the header the control
// warp runs, compiled by g++, a thread standing in for the host and one for
// the control warp. Run under TSan in CI (bazel test --config=tsan).
#include "grosr/submission_ring.h"

#include <atomic>
#include <cstring>
#include <set>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace grosr {
namespace {

// Owns zeroed host memory for a ring of `capacity` slots.
class HostRing {
 public:
  explicit HostRing(uint32_t capacity)
      : words_(SubmissionRing::Bytes(capacity) / 8, 0), ring_{words_.data(), capacity} {}
  const SubmissionRing& ring() const { return ring_; }
  uint64_t* words() { return words_.data(); }

 private:
  std::vector<uint64_t> words_;
  SubmissionRing ring_;
};

// A descriptor whose every byte depends on the ticket, so that any word of
// another ticket's shows.
TaskDescriptor DescriptorFor(uint64_t ticket) {
  TaskDescriptor d{};
  d.task_id = static_cast<uint32_t>(ticket * 2654435761u);
  d.arg_bytes = static_cast<uint16_t>(ticket % 49);
  d.group = static_cast<uint32_t>(ticket >> 3);
  d.ticket = static_cast<uint32_t>(ticket ^ 0x5a5a5a5au);
  for (uint32_t i = 0; i < kMaxInlineArgBytes; ++i) {
    d.args[i] = static_cast<uint8_t>(ticket * 31 + i * 7);
  }
  return d;
}

bool Same(const TaskDescriptor& a, const TaskDescriptor& b) {
  return std::memcmp(&a, &b, sizeof(TaskDescriptor)) == 0;
}

TEST(SubmissionRingTest, EverySlotWordHasItsOwnPlace) {
  HostRing host(64);
  const SubmissionRing& ring = host.ring();
  std::set<size_t> seen;
  for (uint64_t ticket = 0; ticket < 64; ++ticket) {
    for (uint32_t w = 0; w < SubmissionRing::kSlotWords; ++w) {
      const size_t index = ring.WordIndex(ticket, w);
      ASSERT_LT(index, 64u * SubmissionRing::kSlotWords);
      EXPECT_TRUE(seen.insert(index).second) << ticket << " " << w;
      EXPECT_EQ(ring.WordIndex(ticket + 64, w), index) << "a ticket a lap later shares the slot";
    }
  }
  // Word-major blocks: word w of 32 consecutive slots is one run of 32.
  for (uint32_t w = 0; w < SubmissionRing::kSlotWords; ++w) {
    for (uint64_t ticket = 1; ticket < 32; ++ticket) {
      EXPECT_EQ(ring.WordIndex(ticket, w), ring.WordIndex(0, w) + ticket);
    }
  }
}

TEST(SubmissionRingTest, ReadsWhatWasWrittenLapAfterLap) {
  HostRing host(32);
  const SubmissionRing& ring = host.ring();
  TaskDescriptor out{};
  for (uint64_t ticket = 0; ticket < 32 * 5; ++ticket) {
    EXPECT_FALSE(ring.TryRead(ticket, &out)) << "ticket " << ticket << " before it was written";
    ring.Write(ticket, DescriptorFor(ticket));
    ASSERT_TRUE(ring.TryRead(ticket, &out)) << ticket;
    EXPECT_TRUE(Same(out, DescriptorFor(ticket))) << ticket;
    if (ticket >= 32) {
      EXPECT_FALSE(ring.TryRead(ticket - 32, &out)) << "the previous lap's ticket still reads";
    }
  }
}

// A slot the producer has half rewritten for the next lap: neither ticket
// reads.
TEST(SubmissionRingTest, AHalfWrittenSlotReadsAsNotThere) {
  HostRing host(32);
  const SubmissionRing& ring = host.ring();
  ring.Write(7, DescriptorFor(7));
  const TaskDescriptor next = DescriptorFor(7 + 32);
  uint32_t payload[SubmissionRing::kSlotWords];
  std::memcpy(payload, &next, sizeof(next));
  for (uint32_t w = 0; w < SubmissionRing::kSlotWords; ++w) {
    host.words()[ring.WordIndex(39, w)] = (uint64_t{SubmissionRing::TagOf(39)} << 32) | payload[w];
    TaskDescriptor out{};
    const bool whole = w + 1 == SubmissionRing::kSlotWords;
    EXPECT_EQ(ring.TryRead(39, &out), whole) << "words written: " << w + 1;
    if (whole) {
      EXPECT_TRUE(Same(out, next));
    }
    EXPECT_FALSE(ring.TryRead(7, &out)) << "words written: " << w + 1;
  }
}

// The quiet poll's look at one word: it sees a ticket once the word its
// producer stores last carries the ticket's tag -- not before, not for the
// previous lap's ticket of the slot, and not for a ticket not yet written.
TEST(SubmissionRingTest, TheLastWordShowsATicketOnlyOnceItIsWritten) {
  HostRing host(32);
  const SubmissionRing& ring = host.ring();
  EXPECT_FALSE(ring.LastWordArrived(0)) << "a zeroed ring";
  ring.Write(7, DescriptorFor(7));
  EXPECT_TRUE(ring.LastWordArrived(7));
  EXPECT_FALSE(ring.LastWordArrived(8));
  EXPECT_FALSE(ring.LastWordArrived(7 + 32)) << "the slot's next lap";
  const TaskDescriptor next = DescriptorFor(7 + 32);
  uint32_t payload[SubmissionRing::kSlotWords];
  std::memcpy(payload, &next, sizeof(next));
  for (uint32_t w = 0; w < SubmissionRing::kSlotWords; ++w) {
    host.words()[ring.WordIndex(39, w)] = (uint64_t{SubmissionRing::TagOf(39)} << 32) | payload[w];
    EXPECT_EQ(ring.LastWordArrived(39), w + 1 == SubmissionRing::kSlotWords) << "words: " << w + 1;
  }
}

// A slot holding ticket T in every word but one, which still holds the
// previous lap's ticket: neither ticket reads, whichever word it is.
TEST(SubmissionRingTest, OneStaleWordAnywhereKeepsTheSlotUnread) {
  HostRing host(32);
  const SubmissionRing& ring = host.ring();
  const uint64_t old_ticket = 5, ticket = 5 + 32;
  for (uint32_t stale = 0; stale < SubmissionRing::kSlotWords; ++stale) {
    ring.Write(old_ticket, DescriptorFor(old_ticket));
    const size_t kept = ring.WordIndex(old_ticket, stale);
    const uint64_t old_word = host.words()[kept];
    ring.Write(ticket, DescriptorFor(ticket));
    host.words()[kept] = old_word;
    TaskDescriptor out{};
    EXPECT_FALSE(ring.TryRead(ticket, &out)) << "stale word " << stale;
    EXPECT_FALSE(ring.TryRead(old_ticket, &out)) << "stale word " << stale;
  }
}

// Tickets across 2^32, where the 32-bit tag wraps: TagOf(2^32 - 1) is 0 and
// the zeroed ring is long gone; a lap still tells tickets apart.
TEST(SubmissionRingTest, TagsWrapAroundTwoToTheThirtyTwo) {
  HostRing host(32);
  const SubmissionRing& ring = host.ring();
  TaskDescriptor out{};
  const uint64_t first = (uint64_t{1} << 32) - 64;
  for (uint64_t ticket = first; ticket < first + 128; ++ticket) {
    ring.Write(ticket, DescriptorFor(ticket));
    ASSERT_TRUE(ring.TryRead(ticket, &out)) << ticket;
    EXPECT_TRUE(Same(out, DescriptorFor(ticket))) << ticket;
    EXPECT_FALSE(ring.TryRead(ticket - 32, &out)) << ticket;
    EXPECT_FALSE(ring.TryRead(ticket + 32, &out)) << ticket;
  }
}

// The zeroed ring matches no ticket of the first lap (tag 0 is ticket
// 2^32 - 1's, and TagOf never gives 0 below it).
TEST(SubmissionRingTest, AZeroedRingHoldsNoTicket) {
  HostRing host(1024);
  TaskDescriptor out{};
  for (uint64_t ticket = 0; ticket < 1024; ++ticket) EXPECT_FALSE(host.ring().TryRead(ticket, &out));
  EXPECT_EQ(SubmissionRing::TagOf((uint64_t{1} << 32) - 1), 0u);
  EXPECT_NE(SubmissionRing::TagOf(0), 0u);
}

// One producer and one reader, as the host and the control warp: a small
// ring wraps thousands of times; the reader takes every ticket in order,
// whole and exactly as written, and hands slots back through `taken`. The
// producer also writes plain (non-atomic) data before each submission, as a
// host fills pinned memory a task will read: under TSan the reader's read of
// it after TryRead is a race unless the ring orders it.
TEST(SubmissionRingTest, AProducerAndAReaderAgreeOnEveryTicket) {
  constexpr uint32_t kCapacity = 32;
  constexpr uint64_t kTickets = 200000;
  HostRing host(kCapacity);
  const SubmissionRing& ring = host.ring();
  std::atomic<uint64_t> taken{0};
  std::vector<uint64_t> side(kCapacity, 0);  // plain data, written before submitting
  std::thread producer([&] {
    for (uint64_t ticket = 0; ticket < kTickets; ++ticket) {
      while (ticket - taken.load(std::memory_order_acquire) >= kCapacity) std::this_thread::yield();
      side[ticket % kCapacity] = ticket * 3 + 1;
      ring.Write(ticket, DescriptorFor(ticket));
    }
  });
  uint64_t wrong = 0, wrong_side = 0, misses = 0;
  TaskDescriptor out{};
  for (uint64_t ticket = 0; ticket < kTickets; ++ticket) {
    while (!ring.TryRead(ticket, &out)) ++misses;
    if (!Same(out, DescriptorFor(ticket))) ++wrong;
    if (side[ticket % kCapacity] != ticket * 3 + 1) ++wrong_side;
    taken.store(ticket + 1, std::memory_order_release);
  }
  producer.join();
  EXPECT_EQ(wrong, 0u) << "descriptors that differ from what was written";
  EXPECT_EQ(wrong_side, 0u) << "data written before a submission not seen after taking it";
  std::printf("reads that found the slot not (wholly) written yet: %llu\n",
              static_cast<unsigned long long>(misses));
}

}  // namespace
}  // namespace grosr
