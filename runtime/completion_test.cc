// The quiescence protocol on the CPU: threads play worker warps running a
// tree of tasks that spawn tasks, with batched decrements as the scheduler
// does, and one thread plays the control warp and the host. Whenever the
// protocol says "all done", every task of every submitted tree must have
// run: a premature zero would show as a short count.
#include "grosr/completion.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "grosr/work_queue.h"
#include "gtest/gtest.h"

namespace grosr {
namespace {

struct Tree {
  uint32_t depth;  // remaining levels below this task
};

constexpr uint32_t kFanOut = 3;

uint64_t TreeSize(uint32_t depth) {
  uint64_t size = 1, level = 1;
  for (uint32_t d = 0; d < depth; ++d) size += (level *= kFanOut);
  return size;
}

TEST(CompletionTest, QuiescenceIsNeverReportedEarly) {
  constexpr uint32_t kCapacity = 4096;
  auto counters = std::make_unique<WorkQueueCounters>();
  auto slots = std::make_unique<TaskDescriptor[]>(kCapacity);
  auto sequence = std::make_unique<uint64_t[]>(kCapacity);
  WorkQueue queue{counters.get(), slots.get(), sequence.get(), kCapacity};
  queue.Initialize();
  uint64_t group_words[32] = {};
  uint64_t total_word = 0;
  uint32_t dirty_groups[1] = {};
  uint32_t dirty_total = 0;
  CompletionCounters completion{group_words, &total_word, dirty_groups,
                                &dirty_total, 32};

  std::atomic<uint64_t> executed{0};
  std::atomic<bool> stop{false};
  std::vector<std::thread> workers;
  for (int w = 0; w < 4; ++w) {
    workers.emplace_back([&] {
      TaskDescriptor batch[4];
      while (!stop.load(std::memory_order_relaxed)) {
        uint32_t n = queue.TryReserveItems(4);
        if (n == 0) {
          std::this_thread::yield();
          continue;
        }
        uint64_t base = queue.ClaimHeadTickets(n);
        for (uint32_t i = 0; i < n; ++i) queue.Read(base + i, &batch[i]);
        queue.ReleaseSpace(n);
        uint32_t finished[32] = {};
        for (uint32_t i = 0; i < n; ++i) {
          Tree tree;
          std::memcpy(&tree, batch[i].args, sizeof(tree));
          if (tree.depth > 0) {
            TaskDescriptor children[kFanOut];
            for (uint32_t c = 0; c < kFanOut; ++c) {
              children[c] = batch[i];
              Tree child{tree.depth - 1};
              std::memcpy(children[c].args, &child, sizeof(child));
            }
            while (!queue.TryReserveSpace(kFanOut)) std::this_thread::yield();
            completion.Add(batch[i].group, kFanOut, 0);  // before they can run
            uint64_t tail = queue.ClaimTailTickets(kFanOut);
            for (uint32_t c = 0; c < kFanOut; ++c) queue.Write(tail + c, children[c]);
            queue.Publish(kFanOut);
          }
          executed.fetch_add(1, std::memory_order_relaxed);
          ++finished[batch[i].group];
        }
        // Batched, after the whole batch ran, as the scheduler does.
        for (uint32_t g = 0; g < 32; ++g) completion.Finish(g, finished[g]);
      }
    });
  }

  // Host + control warp: submit rounds of roots into groups, wait for each
  // group and for quiescence through the protocol alone, then check counts.
  std::vector<uint32_t> submitted(32, 0);
  uint64_t expected_total = 0;
  for (uint32_t round = 0; round < 60; ++round) {
    uint32_t group = 1 + round % 5;
    uint32_t roots = 1 + round % 4;
    uint32_t depth = round % 6;
    for (uint32_t r = 0; r < roots; ++r) {
      TaskDescriptor root{};
      root.group = group;
      Tree tree{depth};
      std::memcpy(root.args, &tree, sizeof(tree));
      while (!queue.TryReserveSpace(1)) std::this_thread::yield();
      completion.Add(group, 1, 1);
      queue.Write(queue.ClaimTailTickets(1), root);
      queue.Publish(1);
    }
    submitted[group] += roots;
    expected_total += roots * TreeSize(depth);
    // Wait as the host would: for the control warp's view of the total.
    for (;;) {
      if (DeviceAtomic32(dirty_total).exchange(0) != 0) {
        uint64_t word = DeviceAtomic64(total_word).load(kAcquire);
        if (PendingOf(word) == 0) {
          ASSERT_EQ(executed.load(), expected_total)
              << "quiescence reported before every task ran, round " << round;
          break;
        }
      }
      std::this_thread::yield();
    }
    uint64_t group_word = DeviceAtomic64(group_words[group]).load(kAcquire);
    EXPECT_EQ(PendingOf(group_word), 0u);
    EXPECT_EQ(RootsOf(group_word), submitted[group]);
  }
  stop = true;
  for (std::thread& worker : workers) worker.join();
  EXPECT_EQ(PendingOf(total_word), 0u);
}

TEST(CompletionTest, PackedWordsSeparateRootsAndPending) {
  uint64_t words[32] = {};
  uint64_t total = 0;
  uint32_t dirty[1] = {};
  uint32_t dirty_total = 0;
  CompletionCounters c{words, &total, dirty, &dirty_total, 32};
  c.Add(3, 5, 2);
  EXPECT_EQ(PendingOf(words[3]), 5u);
  EXPECT_EQ(RootsOf(words[3]), 2u);
  c.Finish(3, 4);
  EXPECT_EQ(dirty[0], 0u);
  c.Finish(3, 1);
  EXPECT_EQ(dirty[0], 1u << 3);
  EXPECT_EQ(dirty_total, 1u);
  EXPECT_EQ(PendingOf(total), 0u);
  EXPECT_EQ(RootsOf(total), 2u);
  c.Add(0, 1, 0);  // the default group counts only in the total
  EXPECT_EQ(words[0], 0u);
  EXPECT_EQ(PendingOf(total), 1u);
}

}  // namespace
}  // namespace grosr
