// Stress tests of the WorkQueue protocol on the CPU: the same header the GPU
// runs, compiled by g++, with threads standing in for warps. Run under TSan
// in CI (bazel test --config=tsan) to check the memory ordering too.
#include "grosr/work_queue.h"

#include <atomic>
#include <cstring>
#include <memory>
#include <random>
#include <thread>
#include <vector>

#include "gtest/gtest.h"

namespace grosr {
namespace {

// Owns host memory for a queue of `capacity` slots.
class HostQueue {
 public:
  explicit HostQueue(uint32_t capacity)
      : counters_(new WorkQueueCounters()),
        slots_(new TaskDescriptor[capacity]),
        sequence_(new uint64_t[capacity]) {
    queue_ = {counters_.get(), slots_.get(), sequence_.get(), capacity};
    queue_.Initialize();
  }
  const WorkQueue& queue() const { return queue_; }

 private:
  std::unique_ptr<WorkQueueCounters> counters_;
  std::unique_ptr<TaskDescriptor[]> slots_;
  std::unique_ptr<uint64_t[]> sequence_;
  WorkQueue queue_;
};

TaskDescriptor Item(uint32_t producer, uint32_t index) {
  TaskDescriptor item{};
  item.task_id = producer;
  item.arg_bytes = 8;
  std::memcpy(item.args, &index, 4);
  std::memcpy(item.args + 4, &producer, 4);
  return item;
}

// Pushes `n` items as one batch, as a warp would. False if full.
bool PushBatch(const WorkQueue& q, const TaskDescriptor* items, uint32_t n) {
  if (!q.TryReserveSpace(n)) return false;
  uint64_t base = q.ClaimTailTickets(n);
  for (uint32_t i = 0; i < n; ++i) q.Write(base + i, items[i]);
  q.Publish(n);
  return true;
}

uint32_t PopBatch(const WorkQueue& q, TaskDescriptor* items, uint32_t most) {
  uint32_t n = q.TryReserveItems(most);
  if (n == 0) return 0;
  uint64_t base = q.ClaimHeadTickets(n);
  for (uint32_t i = 0; i < n; ++i) q.Read(base + i, &items[i]);
  q.ReleaseSpace(n);
  return n;
}

TEST(WorkQueueTest, EmptyAndFullAreReportedWithoutBlocking) {
  HostQueue host(8);
  const WorkQueue& q = host.queue();
  TaskDescriptor out[8];
  EXPECT_EQ(PopBatch(q, out, 8), 0u);
  TaskDescriptor items[9];
  for (uint32_t i = 0; i < 9; ++i) items[i] = Item(1, i);
  EXPECT_FALSE(PushBatch(q, items, 9));  // more than capacity
  EXPECT_TRUE(PushBatch(q, items, 5));
  EXPECT_FALSE(PushBatch(q, items + 5, 4));  // only 3 free
  EXPECT_EQ(q.counters->free_slots, 3);      // the failed push changed nothing
  EXPECT_TRUE(PushBatch(q, items + 5, 3));
  EXPECT_EQ(q.ApproximateDepth(), 8);
  EXPECT_EQ(PopBatch(q, out, 3), 3u);
  EXPECT_EQ(PopBatch(q, out + 3, 8), 5u);
  for (uint32_t i = 0; i < 8; ++i) {
    uint32_t index;
    std::memcpy(&index, out[i].args, 4);
    EXPECT_EQ(index, i);  // FIFO with one producer and one consumer
  }
  EXPECT_EQ(PopBatch(q, out, 8), 0u);
}

TEST(WorkQueueTest, WrapsAroundManyLaps) {
  HostQueue host(4);
  const WorkQueue& q = host.queue();
  for (uint32_t lap = 0; lap < 1000; ++lap) {
    TaskDescriptor items[3] = {Item(0, 3 * lap), Item(0, 3 * lap + 1),
                               Item(0, 3 * lap + 2)};
    ASSERT_TRUE(PushBatch(q, items, 3));
    TaskDescriptor out[3];
    ASSERT_EQ(PopBatch(q, out, 3), 3u);
    for (uint32_t i = 0; i < 3; ++i) {
      uint32_t index;
      std::memcpy(&index, out[i].args, 4);
      ASSERT_EQ(index, 3 * lap + i);
    }
  }
}

// Many producers and consumers, batches of random sizes, a small queue so
// that it is often full and often empty: every item arrives exactly once,
// with the bytes its producer wrote.
void ExactlyOnce(uint32_t capacity, int producers, int consumers,
                 uint32_t items_per_producer) {
  HostQueue host(capacity);
  const WorkQueue& q = host.queue();
  const uint64_t total = uint64_t{items_per_producer} * producers;
  std::vector<std::atomic<uint32_t>> seen(total);
  std::atomic<uint64_t> consumed{0};
  std::atomic<bool> corrupt{false};

  std::vector<std::thread> threads;
  for (int p = 0; p < producers; ++p) {
    threads.emplace_back([&, p] {
      std::mt19937 random(p);
      uint32_t next = 0;
      TaskDescriptor batch[32];
      while (next < items_per_producer) {
        uint32_t n = std::min<uint32_t>(1 + random() % 32, items_per_producer - next);
        for (uint32_t i = 0; i < n; ++i) batch[i] = Item(p, next + i);
        if (PushBatch(q, batch, n)) next += n;
        else std::this_thread::yield();
      }
    });
  }
  for (int c = 0; c < consumers; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937 random(1000 + c);
      TaskDescriptor batch[32];
      while (consumed.load() < total) {
        uint32_t n = PopBatch(q, batch, 1 + random() % 32);
        if (n == 0) {
          std::this_thread::yield();
          continue;
        }
        for (uint32_t i = 0; i < n; ++i) {
          uint32_t index, producer;
          std::memcpy(&index, batch[i].args, 4);
          std::memcpy(&producer, batch[i].args + 4, 4);
          if (producer != batch[i].task_id || batch[i].arg_bytes != 8 ||
              index >= items_per_producer) {
            corrupt = true;
            continue;
          }
          seen[uint64_t{producer} * items_per_producer + index].fetch_add(1);
        }
        consumed.fetch_add(n);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_FALSE(corrupt.load());
  EXPECT_EQ(consumed.load(), total);
  uint64_t wrong = 0;
  for (uint64_t i = 0; i < total; ++i) wrong += seen[i].load() != 1;
  EXPECT_EQ(wrong, 0u) << "items delivered other than exactly once";
  EXPECT_EQ(q.ApproximateDepth(), 0);
  EXPECT_EQ(q.counters->free_slots, static_cast<int64_t>(capacity));
}

TEST(WorkQueueTest, ExactlyOnceUnderContentionSmallQueue) {
  ExactlyOnce(/*capacity=*/64, /*producers=*/4, /*consumers=*/4, 20000);
}

TEST(WorkQueueTest, ExactlyOnceUnderContentionManyThreads) {
  ExactlyOnce(/*capacity=*/256, /*producers=*/8, /*consumers=*/6, 8000);
}

TEST(WorkQueueTest, ExactlyOnceWhenConsumersAlsoProduce) {
  // Workers that push what they pop (tasks spawning tasks) until a budget of
  // generations is spent: every generation's item is seen once.
  HostQueue host(128);
  const WorkQueue& q = host.queue();
  constexpr uint32_t kRoots = 64, kGenerations = 200;
  std::vector<std::atomic<uint32_t>> seen(kRoots * kGenerations);
  TaskDescriptor roots[kRoots];
  for (uint32_t r = 0; r < kRoots; ++r) roots[r] = Item(r, 0);
  ASSERT_TRUE(PushBatch(q, roots, kRoots));
  std::atomic<uint64_t> done{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      TaskDescriptor batch[8];
      while (done.load() < kRoots * kGenerations) {
        uint32_t n = PopBatch(q, batch, 8);
        if (n == 0) {
          std::this_thread::yield();
          continue;
        }
        for (uint32_t i = 0; i < n; ++i) {
          uint32_t generation;
          std::memcpy(&generation, batch[i].args, 4);
          seen[batch[i].task_id * kGenerations + generation].fetch_add(1);
          if (generation + 1 < kGenerations) {
            TaskDescriptor child = Item(batch[i].task_id, generation + 1);
            while (!PushBatch(q, &child, 1)) std::this_thread::yield();
          }
        }
        done.fetch_add(n);
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  for (uint32_t i = 0; i < kRoots * kGenerations; ++i) {
    ASSERT_EQ(seen[i].load(), 1u) << "item " << i;
  }
}

// Consumers that claim future items when the queue is empty, as idle warps
// do: every item still arrives exactly once, claims and reservations mixed.
TEST(WorkQueueTest, ClaimsReceiveEveryItemExactlyOnce) {
  constexpr uint32_t kCapacity = 64, kProducers = 3, kConsumers = 5, kPerProducer = 20000;
  HostQueue host(kCapacity);
  const WorkQueue& q = host.queue();
  const uint64_t total = uint64_t{kPerProducer} * kProducers;
  std::vector<std::atomic<uint32_t>> seen(total);
  std::atomic<uint64_t> consumed{0};
  std::atomic<uint64_t> claims_served{0};
  std::vector<std::thread> threads;
  for (uint32_t p = 0; p < kProducers; ++p) {
    threads.emplace_back([&, p] {
      std::mt19937 random(p);
      TaskDescriptor batch[32];
      for (uint32_t next = 0; next < kPerProducer;) {
        uint32_t n = std::min<uint32_t>(1 + random() % 8, kPerProducer - next);
        for (uint32_t i = 0; i < n; ++i) batch[i] = Item(p, next + i);
        if (PushBatch(q, batch, n)) next += n;
        else std::this_thread::yield();
        if (random() % 16 == 0) std::this_thread::yield();  // let the queue run dry
      }
    });
  }
  auto record = [&](const TaskDescriptor& item) {
    uint32_t index, producer;
    std::memcpy(&index, item.args, 4);
    std::memcpy(&producer, item.args + 4, 4);
    seen[uint64_t{producer} * kPerProducer + index].fetch_add(1);
  };
  for (uint32_t c = 0; c < kConsumers; ++c) {
    threads.emplace_back([&, c] {
      std::mt19937 random(100 + c);
      TaskDescriptor batch[32];
      while (consumed.load() < total) {
        const bool empty = q.ApproximateDepth() <= 0;
        const uint32_t n = q.ReserveOrClaim(1 + random() % 32);
        const uint64_t base = q.ClaimHeadTickets(n);
        // Read the tickets as their items arrive, in any order; give up
        // only once everything arrived (an unserved claim at the end is an
        // idle warp at shutdown).
        std::vector<bool> done(n, false);
        for (uint32_t left = n; left > 0;) {
          uint32_t got = 0;
          for (uint32_t i = 0; i < n; ++i) {
            if (!done[i] && q.TryRead(base + i, &batch[0])) {
              done[i] = true;
              record(batch[0]);
              ++got;
            }
          }
          if (got > 0) {
            q.ReleaseSpace(got);
            consumed.fetch_add(got);
            if (empty) claims_served.fetch_add(got);
            left -= got;
            continue;
          }
          if (consumed.load() >= total) return;
          std::this_thread::yield();
        }
      }
    });
  }
  for (std::thread& thread : threads) thread.join();
  EXPECT_EQ(consumed.load(), total);
  uint64_t wrong = 0;
  for (uint64_t i = 0; i < total; ++i) wrong += seen[i].load() != 1;
  EXPECT_EQ(wrong, 0u) << "items delivered other than exactly once";
  EXPECT_GT(claims_served.load(), 0u) << "the test never exercised a claim";
  EXPECT_EQ(q.counters->free_slots, static_cast<int64_t>(kCapacity));
}

TEST(WorkQueueTest, AClaimIsServedByTheNextItem) {
  HostQueue host(8);
  const WorkQueue& q = host.queue();
  ASSERT_EQ(q.ReserveOrClaim(4), 1u);
  uint64_t ticket = q.ClaimHeadTickets(1);
  EXPECT_EQ(q.ApproximateDepth(), -1);
  TaskDescriptor out{};
  EXPECT_FALSE(q.TryRead(ticket, &out));
  EXPECT_EQ(q.ItemsAhead(ticket), 0u);
  TaskDescriptor item = Item(7, 42);
  ASSERT_TRUE(PushBatch(q, &item, 1));
  EXPECT_EQ(q.ApproximateDepth(), 0) << "the item is owed to the claim";
  EXPECT_EQ(PopBatch(q, &out, 1), 0u) << "nobody else may take it";
  ASSERT_TRUE(q.TryRead(ticket, &out));
  q.ReleaseSpace(1);
  EXPECT_EQ(out.task_id, 7u);
  // With items available, ReserveOrClaim reserves up to `most` of them.
  TaskDescriptor items[3] = {Item(1, 0), Item(1, 1), Item(1, 2)};
  ASSERT_TRUE(PushBatch(q, items, 3));
  EXPECT_EQ(q.ReserveOrClaim(8), 3u);
}

}  // namespace
}  // namespace grosr
