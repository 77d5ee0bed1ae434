// The persistent scheduler kernel: launched once, its warps loop over the
// work queue and call tasks through the dispatch table until the host says
// stop. Compiled at run time by the JIT with:
//   -DGROSR_WARPS_PER_BLOCK=<warps>    (launch bounds)
//   -DGROSR_REGISTER_BUDGET=<regs>     (with -maxrregcount=<regs>)
//
// Roles, decided once at entry: warp 0 of block 0 is the control warp (it
// alone reads the host's submission ring and command word and writes the
// host-visible snapshots); every other warp is a worker.
//
// A worker's loop, per task: look up table[task_id] (cached in registers
// for the id run last), check the argument size, call the task with all 32
// lanes, then
//   - if the task called ctx.then(): run the continuation at once, on this
//     warp, from shared memory: no queue, no atomic. A continuation to the
//     task itself does not even come back here: the task's entry runs it in
//     place (RunWithSelfContinuations, grosr/task_context.h) and reports how
//     many steps it ran;
//   - otherwise count it finished (batched: one atomic per batch and group).
// Tasks come from the queue in batches of up to kBatch, copied to shared
// memory with one reservation, so a tiny task costs a dispatch, not a
// round of atomics; batches shrink to one task when the queue is shallow,
// so that a long task delays few others. Idle workers back off with __nanosleep.
//
// Parking and stopping (hot-loading needs the kernel gone: the driver loads
// no module while it runs): the control warp copies the host's command to
// device memory; workers look at it between batches, while idle, every 8
// tasks of a batch and every stop_check_interval continuations (those run
// in place count a quarter: kInPlaceStepsPerCheckStep). On Park a
// worker waits in place, holding its work; once all are parked the host
// says Stop (each saves what it holds -- the rest of a batch, a pending
// continuation, unread tickets -- to its WorkerSave slot, which the next
// launch restores, and exits) or Run (each goes on; a park that could not
// complete, e.g. behind a task that never returns, is undone). Nothing is
// lost or run twice across a stop and relaunch.
#include "grosr/scheduler_state.h"
#include "grosr/task_context.h"
#include "grosr/task_services.h"

#ifndef GROSR_WARPS_PER_BLOCK
#define GROSR_WARPS_PER_BLOCK 8
#endif
#ifndef GROSR_REGISTER_BUDGET
#define GROSR_REGISTER_BUDGET 64
#endif

namespace grosr {
namespace {

constexpr unsigned kFullMask = 0xffffffffu;

// Per-warp state in shared memory: the task's context, the queue tickets,
// the continuation slots and the batch (what tasks and SaveWork read by
// address). The worker loop's own state is in registers (Dispatcher).
struct WarpScratch {
  TaskContext ctx;
  uint64_t next_ticket;      // queue head tickets taken, not read yet:
  uint32_t tickets;          //   [next_ticket, next_ticket + tickets)
  uint32_t ahead;            // while waiting: tasks to be produced before ours
  uint32_t waits;            //   and polls since `ahead` was read
  // Lane 0's, touched once per task or chain: here rather than in registers
  // (the worker loop's registers live across the task call; more of them
  // spilled to local memory, which an acquire load's L1 invalidation then
  // sends to L2).
  uint64_t sequence;         // dispatches started (heartbeat)
  uint32_t chain_ticket;     // the running chain's host ticket (0: none)
  uint32_t chain_group;      //   its group
  uint32_t chain_status;     //   its first failure (kTaskOk between chains)
  TaskDescriptor continuation[2];
  TaskDescriptor batch[kBatch];
};

__device__ GROSR_INLINE unsigned Lane() { return threadIdx.x & 31u; }

// True when the host asked workers to park or exit (one relaxed load: this
// is checked between tasks).
__device__ GROSR_INLINE bool Interrupted(const SchedulerState& s) {
  return DeviceAtomic32(*s.stop).load(kRelaxed) != kWorkersRun;
}

// Indirect calls hide the callee from the kernel's register allocation: a
// loaded task that uses more registers than the kernel was given crashes.
// This function, called on a path never taken, needs the whole budget, so
// the linker gives the kernel the budget that tasks are compiled against.
__device__ __noinline__ void ReserveRegisterBudget(uint32_t* sink) {
  constexpr int kValues = GROSR_REGISTER_BUDGET + 32;
  uint32_t v[kValues];
#pragma unroll
  for (int i = 0; i < kValues; ++i) v[i] = sink[i * 33];
#pragma unroll
  for (int round = 0; round < 4; ++round) {
#pragma unroll
    for (int i = 0; i < kValues; ++i) v[i] = v[i] * v[(i + 5) % kValues] + round;
  }
  uint32_t folded = 0;
#pragma unroll
  for (int i = 0; i < kValues; ++i) folded ^= v[i];
  sink[0] = folded;
}

// ---------------------------------------------------------------------------
// Control warp
// ---------------------------------------------------------------------------

// Moves up to 32 ready submissions from the host's ring to the work queue,
// in ticket order: lane i looks at ticket taken + i. Returns how many.
// Leaves them in the ring when the queue is full. Each lane's read ends with
// an acquire load (SubmissionRing::TryRead): what the host wrote before it
// submitted reaches the task through the device queue's release/acquire.
// A round reads host memory once (a PCIe round trip, 1-3 us): the ring's
// slots validate themselves (SubmissionRing). With a sequence word per slot,
// read with acquire before the descriptor, a round was two round trips in
// series (three for 64 a round), which bounded host-submitted tasks (6.5 M/s
// with 32 a round, 9.0 M/s with 64; runs L and N) and the ping-pong.
// The price: an idle round reads 32 whole slots (4 KiB of pinned memory),
// not 32 sequence words (256 B); after s.quiet_poll_after_rounds idle rounds
// the control warp looks at one word a slot until a tag shows up.
__device__ uint32_t IngestSubmissions(const SchedulerState& s, uint64_t* taken) {
  const unsigned lane = Lane();
  TaskDescriptor item;
  const bool ready = s.ring.TryRead(*taken + lane, &item);
  const unsigned ready_mask = __ballot_sync(kFullMask, ready);
  uint32_t n = ready_mask == kFullMask ? 32u : __ffs(~ready_mask) - 1u;
  if (n == 0) return 0;
  // As many as the queue has room for; the rest wait in the ring.
  uint32_t room = 0;
  unsigned long long base = 0;
  if (lane == 0) {
    room = s.queue.TryReserveSpaceUpTo(n);
    if (room > 0) s.completion.Add(/*group=*/0, room, /*roots=*/room);
  }
  room = __shfl_sync(kFullMask, room, 0);
  if (room == 0) return 0;  // device queue full: the host's ring holds them
  n = room;
  if (lane < n && item.group != 0 && item.group < s.completion.group_capacity) {
    DeviceAtomic64(s.completion.group_words[item.group]).fetch_add(1 + kRootUnit, kRelaxed);
  }
  if (lane == 0) base = s.queue.ClaimTailTickets(n);
  base = __shfl_sync(kFullMask, base, 0);
  __syncwarp();
  if (lane < n) s.queue.Write(base + lane, item);
  __syncwarp();
  *taken += n;
  if (lane == 0) {
    s.queue.Publish(n);
    // The ring slots may be reused once we stopped reading them.
    SystemAtomic64(s.host->submissions_taken).store(*taken, kRelease);
  }
  return n;
}

// The dirty flags of the completion words, loaded at the start of a control
// round so that their latency overlaps the round's read of the host ring.
struct DirtyFlags {
  uint32_t total;       // lane 0: *dirty_total
  uint32_t first_word;  // lane i: dirty_groups[i], for i < group_capacity / 32
};

__device__ GROSR_INLINE DirtyFlags LoadDirtyFlags(const SchedulerState& s) {
  const unsigned lane = Lane();
  const CompletionCounters& c = s.completion;
  DirtyFlags flags{0, 0};
  if (lane == 0) flags.total = DeviceAtomic32(*c.dirty_total).load(kRelaxed);
  if (lane < c.group_capacity / 32) {
    flags.first_word = DeviceAtomic32(c.dirty_groups[lane]).load(kRelaxed);
  }
  return flags;
}

// Publishes the completion words that reached zero since the last look.
__device__ void PublishFinishedGroups(const SchedulerState& s, DirtyFlags flags) {
  const unsigned lane = Lane();
  const CompletionCounters& c = s.completion;
  if (lane == 0 && flags.total != 0) {
    DeviceAtomic32(*c.dirty_total).store(0, kRelaxed);
    uint64_t word = DeviceAtomic64(*c.total_word).load(kAcquire);
    SystemAtomic64(s.host->total_snapshot).store(word, kRelease);
  }
  for (uint32_t w = lane; w < c.group_capacity / 32; w += 32) {
    const uint32_t seen =
        w < 32 ? flags.first_word : DeviceAtomic32(c.dirty_groups[w]).load(kRelaxed);
    if (seen == 0) continue;
    uint32_t bits = DeviceAtomic32(c.dirty_groups[w]).exchange(0, kRelaxed);
    while (bits != 0) {
      uint32_t group = w * 32 + __ffs(bits) - 1;
      bits &= bits - 1;
      uint64_t word = DeviceAtomic64(c.group_words[group]).load(kAcquire);
      SystemAtomic64(s.group_snapshots[group]).store(word, kRelease);
    }
  }
}

// Lane 0 of the control warp: what it has told the workers and reported to
// the host, so that each changes only when the command does.
struct ControlState {
  uint32_t told_workers;  // kWorkers*
  uint32_t reported;      // the kernel-state word last written
};

__device__ GROSR_INLINE void Report(const SchedulerState& s, ControlState* c, uint32_t state,
                                    uint32_t sequence) {
  const uint32_t word = SignalWord(state, sequence);
  if (c->reported == word) return;
  // Release: for Parked, what the workers wrote before parking (acquired
  // from `parked`) is visible to the host that reads this.
  SystemAtomic32(s.host->kernel_state).store(word, kRelease);
  c->reported = word;
}

// Lane 0 of the control warp: passes a Park or Run command on to the
// workers and reports to the host once every worker is parked, or once
// they were told to run again.
__device__ void FollowCommand(const SchedulerState& s, uint32_t command, ControlState* c) {
  const uint32_t sequence = SignalSequence(command);
  if (SignalValue(command) == kCommandPark) {
    if (c->told_workers != kWorkersPark) {
      DeviceAtomic32(*s.stop).store(kWorkersPark, kRelaxed);
      c->told_workers = kWorkersPark;
    }
    // Acquire: the parked workers' last writes (counts, saves) come first.
    if (DeviceAtomic32(*s.parked).load(kAcquire) == s.num_warps - 1) {
      Report(s, c, kKernelParked, sequence);
    }
  } else if (SignalValue(command) == kCommandRun) {
    if (c->told_workers != kWorkersRun) {
      DeviceAtomic32(*s.stop).store(kWorkersRun, kRelaxed);
      c->told_workers = kWorkersRun;
    }
    Report(s, c, kKernelRunning, sequence);
  }
}

// After s.quiet_poll_after_rounds rounds without a submission
// (RuntimeOptions) the control warp polls the ring with one word a slot
// (SubmissionRing::LastWordArrived: 256 B a round) instead of whole slots
// (4 KiB), and reads whole slots again once a tag shows up: a long-idle
// runtime keeps the PCIe link quieter, and the first submission after the
// quiet pays one more round trip. A ping-pong or a stream of batches never
// idles that long at the default (a round is ~2-3 us).
__device__ void RunControl(const SchedulerState& s) {
  const unsigned lane = Lane();
  uint32_t idle_rounds = 0;
  uint64_t taken = SystemAtomic64(s.host->submissions_taken).load(kRelaxed);
  ControlState control{kWorkersRun, 0};
  uint32_t command = 0;
  if (lane == 0) {
    command = SystemAtomic32(s.host->command).load(kRelaxed);
    FollowCommand(s, command, &control);  // the launch's Run: report Running
  }
  for (;;) {
    // A look at host memory is a PCIe round trip (~1 us). The round's loads
    // (command word, dirty flags, then the ring in IngestSubmissions) are
    // issued together, so their latencies overlap.
    if (lane == 0) command = SystemAtomic32(s.host->command).load(kRelaxed);
    const DirtyFlags dirty = LoadDirtyFlags(s);
    // While workers park, submissions wait in the host's ring: a parked
    // warp may hold an unread ticket whose slot an ingest would wait for
    // (WorkQueue::Write), and a control warp stuck there would never see
    // the host's Stop or Run.
    const bool parking = __shfl_sync(kFullMask, control.told_workers, 0) == kWorkersPark;
    if (!parking) {
      const bool quiet = idle_rounds >= s.quiet_poll_after_rounds &&
                         __ballot_sync(kFullMask, s.ring.LastWordArrived(taken + lane)) == 0;
      uint32_t moved = 0;
      if (!quiet) {
        uint32_t n;
        while ((n = IngestSubmissions(s, &taken)) == 32) moved += n;
        moved += n;
      }
      idle_rounds = moved != 0 ? 0 : idle_rounds + (idle_rounds < s.quiet_poll_after_rounds);
    }
    PublishFinishedGroups(s, dirty);
    command = __shfl_sync(kFullMask, command, 0);
    if (SignalValue(command) == kCommandStop) break;
    if (lane == 0) FollowCommand(s, command, &control);
    __syncwarp();
  }
  if (lane == 0) {
    DeviceAtomic32(*s.stop).store(kWorkersExit, kRelaxed);
    Report(s, &control, kKernelStopping, SignalSequence(command));
  }
}

// ---------------------------------------------------------------------------
// Workers
// ---------------------------------------------------------------------------

// Per-warp tallies, kept in registers (the same in every lane: called by
// the whole warp, only lane 0 does the atomics) and flushed in batches.
struct Tally {
  uint32_t finished_group = 0;  // group of the finished tasks counted below
  uint32_t finished = 0;
  TaskId stats_id = 0xffffffffu;
  uint32_t completed = 0;
  uint32_t failed = 0;

  // Statistics go first: a host that sees the group finish (the release in
  // Finish) then reads statistics that count every task of it.
  __device__ void FlushFinished(const SchedulerState& s) {
    FlushStats(s);
    if (Lane() == 0) s.completion.Finish(finished_group, finished);
    finished = 0;
  }
  __device__ void FlushStats(const SchedulerState& s) {
    if (Lane() == 0) {
      if (stats_id < s.table_capacity) {
        if (completed) DeviceAtomic64(s.counters[stats_id].completed).fetch_add(completed, kRelaxed);
        if (failed) DeviceAtomic64(s.counters[stats_id].failed).fetch_add(failed, kRelaxed);
      } else if (completed + failed > 0) {
        DeviceAtomic64(*s.invalid_dispatches).fetch_add(completed + failed, kRelaxed);
      }
    }
    completed = failed = 0;
  }
  __device__ void Flush(const SchedulerState& s) { FlushFinished(s); }
  // A dispatch of `id`: its last step ended with `status`; `self_steps`
  // steps before it ran in place and completed.
  __device__ GROSR_INLINE void CountOutcome(const SchedulerState& s, TaskId id, uint32_t status,
                                            uint32_t self_steps) {
    if (id != stats_id) {
      FlushStats(s);
      stats_id = id;
    }
    completed += self_steps;
    if (status == kTaskOk) ++completed; else ++failed;
  }
  __device__ GROSR_INLINE void CountFinished(const SchedulerState& s, uint32_t group) {
    if (group != finished_group) {
      FlushFinished(s);
      finished_group = group;
    }
    ++finished;
  }
};

// Takes queue head tickets for up to kBatch tasks, or, when the queue is
// empty, a claim on the next task to come (one ticket). The warp then reads
// the tickets as their tasks are published (ReadTickets): only it polls
// those slots, so idle warps do not hammer the queue's counters.
__device__ void TakeTickets(const SchedulerState& s, WarpScratch* w) {
  if (Lane() == 0) {
    // A full batch only when there are at least kBatch tasks per warp: a
    // shallow queue is spread one or two tasks per warp, so a long task
    // holds few others behind it (a batch runs in order on its warp).
    const int64_t depth = s.queue.ApproximateDepth();
    const int64_t share = depth / static_cast<int64_t>(s.num_warps);
    const uint32_t most = share >= kBatch ? kBatch : (share < 1 ? 1u : static_cast<uint32_t>(share));
    const uint32_t n = s.queue.ReserveOrClaim(most);
    w->next_ticket = s.queue.ClaimHeadTickets(n);
    w->tickets = n;
    w->ahead = 0;  // read at the first wait
    w->waits = 0;
  }
  __syncwarp();
}

// Copies the published prefix of the warp's tickets into batch[]; returns
// how many (0: the first is not published yet).
__device__ uint32_t ReadTickets(const SchedulerState& s, WarpScratch* w) {
  const unsigned lane = Lane();
  const uint64_t first = w->next_ticket;
  const uint32_t held = w->tickets;
  const bool ready = lane < held && s.queue.IsReady(first + lane);
  const unsigned mask = __ballot_sync(kFullMask, ready);
  const uint32_t n = mask == kFullMask ? 32u : __ffs(~mask) - 1u;
  if (lane < n) s.queue.TakeReady(first + lane, &w->batch[lane]);
  __syncwarp();
  if (n > 0 && lane == 0) {
    s.queue.ReleaseSpace(n);
    w->next_ticket = first + n;
    w->tickets = held - n;
  }
  __syncwarp();
  return n;
}

// How long a waiting warp sleeps: in proportion to the tasks that must be
// produced before its ticket, so the next in line polls every few tens of
// nanoseconds and the rest of the idle grid stays quiet. Reading how far
// the queue's tail is costs a load of the one line every producer updates:
// a warp far back in line reads it only every 16th poll (thousands of idle
// warps reading it each poll would saturate that line's L2 slice and slow
// every producer).
__device__ uint32_t WaitBackoffNs(const SchedulerState& s, WarpScratch* w) {
  uint32_t ns = 0;
  if (Lane() == 0) {
    if (w->ahead < 8 || ++w->waits % 16 == 0) {
      const uint64_t ahead = s.queue.ItemsAhead(w->next_ticket);
      w->ahead = ahead < 0xffffu ? static_cast<uint32_t>(ahead) : 0xffffu;
    }
    const uint64_t want = 32 + uint64_t{w->ahead} * 64;
    ns = want < s.idle_sleep_max_ns ? static_cast<uint32_t>(want) : s.idle_sleep_max_ns;
  }
  return __shfl_sync(kFullMask, ns, 0);
}

// Saves held work for the next launch: a pending continuation (`chain`,
// with the chain's status so far) first, then `count` items from `first`.
// Both are in shared memory. The warp's unread queue tickets go along: the
// next launch reads them.
__device__ void SaveWork(const SchedulerState& s, uint32_t worker, const WarpScratch* w,
                         const TaskDescriptor* first, uint32_t count,
                         const TaskDescriptor* chain) {
  WorkerSave& save = s.saves[worker];
  const unsigned lane = Lane();
  const uint32_t at = chain != nullptr ? 1 : 0;
  for (uint32_t i = lane; i < count; i += 32) save.items[at + i] = first[i];
  if (lane == 0) {
    if (chain != nullptr) {
      save.items[0] = *chain;
      save.items[0].ticket = w->chain_ticket;  // continuations carry none
    }
    save.chain_status = chain != nullptr ? w->chain_status : kTaskOk;
    save.count = count + at;
    save.tickets = w->tickets;
    save.first_ticket = w->next_ticket;
  }
  __syncwarp();
}

// Called when Interrupted(): parks the warp until the host decides. Returns
// true when the warp must exit (the caller saves what it holds first), false
// when it goes on where it was. A parked warp holds its work (batch,
// continuation, tickets) in shared memory, untouched.
__device__ __noinline__ bool ParkOrExit(const SchedulerState& s, uint32_t worker) {
  const unsigned lane = Lane();
  uint32_t order = 0;
  if (lane == 0) order = DeviceAtomic32(*s.stop).load(kRelaxed);
  order = __shfl_sync(kFullMask, order, 0);
  if (order != kWorkersPark) return order == kWorkersExit;
  if (lane == 0) {
    s.heartbeats[worker].busy = 0;
    // Release: what this warp wrote comes before the count that says it
    // stopped writing.
    DeviceAtomic32(*s.parked).fetch_add(1, kRelease);
    do {
      SpinPause(1000);
      order = DeviceAtomic32(*s.stop).load(kRelaxed);
    } while (order == kWorkersPark);
    DeviceAtomic32(*s.parked).fetch_sub(1, kRelaxed);
  }
  order = __shfl_sync(kFullMask, order, 0);
  return order == kWorkersExit;
}

// Tells a waiting host that its task (and the chain of continuations that
// replaced it) finished with `status`.
__device__ void CompleteTicket(const SchedulerState& s, uint32_t ticket, uint32_t status) {
  CompletionRecord& record = s.completions[ticket & (s.completion_capacity - 1)];
  SystemAtomic32(record.status).store(status, kRelaxed);
  // Everything the chain wrote (all lanes: __syncwarp before) comes first.
  SystemAtomic32(record.ticket).store(ticket, kRelease);
}

// What a worker keeps in registers from task to task, the same in every
// lane (no lane-0 branch and no shared-memory round trip per task: a chain
// step is a few tens of instructions of one warp, and each dependent load
// or reconvergence shows in its latency).
struct Dispatcher {
  // The dispatch table entry of the id run last. The table changes only
  // while no kernel runs (tasks load between launches), so an entry read
  // once stays valid for the launch: a chain of one task id costs no table
  // or info load per step.
  TaskEntry entry = nullptr;
  TaskId entry_id = 0xffffffffu;  // none yet
  uint32_t entry_arg_bytes = 0;
};

// Makes `id` the dispatcher's entry; kUnknownTask when nothing is installed
// under it (the previous entry stays). Between tasks only: it rewrites the
// context's task id.
__device__ GROSR_INLINE uint32_t LookUp(const SchedulerState& s, WarpScratch* w, Dispatcher* d,
                                        TaskId id, uint32_t worker) {
  // Read-only while the kernel runs (tasks load between launches): through
  // the SM's read-only cache, so that a chain alternating between task ids
  // finds its entries there.
  const TaskEntry entry =
      id < s.table_capacity ? reinterpret_cast<TaskEntry>(__ldg(
                                  reinterpret_cast<const unsigned long long*>(&s.table[id])))
                            : nullptr;
  if (entry == nullptr) return kUnknownTask;
  d->entry = entry;
  d->entry_id = id;
  d->entry_arg_bytes = __ldg(&s.info[id].arg_bytes);
  if (Lane() == 0) {
    w->ctx.task_id = id;
    // Pinned: readable by the host even after a fault kills the context.
    SystemAtomic32(s.last_task[worker]).store(id, kRelaxed);
  }
  return kTaskOk;
}

// What running a task gave.
// Small on purpose: what is live across the task call costs registers the
// loop cannot spare (SchedulerKernelDoesNotSpill).
struct Ran {
  uint32_t status;          // the completion code of its last step
  uint32_t self_steps;      // continuations to itself it ran in place, all fine
  TaskId id;                // the task (its last step's id)
  int32_t next_slot;        // continuation[] holding its continuation, or -1
};

// Runs one task (not its continuation) with the whole warp: its then() goes
// to continuation[next_slot] (ctx.next; the other slot may hold this task's
// arguments), marked kContinuationEmpty until then() overwrites it. The
// slot is read back through ctx.next after the call, so that nothing of it
// stays live in registers across the call.
// A task refused before running (unknown id, wrong argument size) makes no
// continuation.
__device__ GROSR_INLINE Ran RunTask(const SchedulerState& s, WarpScratch* w, Dispatcher* d,
                                    const TaskDescriptor* task, uint32_t next_slot,
                                    uint32_t self_step_budget, uint32_t worker) {
  const TaskId id = task->task_id;
  const uint32_t arg_bytes = task->arg_bytes;
  // No entry yet (a fresh launch): every id is looked up, 0xffffffff too.
  if (id != d->entry_id || d->entry == nullptr) {
    const uint32_t code = LookUp(s, w, d, id, worker);
    if (code != kTaskOk) return Ran{code, 0, id, -1};
  }
  if (d->entry_arg_bytes != kAnyArgBytes && d->entry_arg_bytes != arg_bytes) {
    return Ran{kBadArguments, 0, id, -1};
  }
  TaskDescriptor* const next = &w->continuation[next_slot];
  if (Lane() == 0) {
    next->flags = kContinuationEmpty;
    w->ctx.next = next;
    w->ctx.self_steps = 0;  // an entry not made by GROSR_TASK leaves it
    w->ctx.self_step_budget = self_step_budget;
    s.heartbeats[worker] = WorkerHeartbeat{id, 1, ++w->sequence};
  }
  __syncwarp();  // the context and the slot are written before any lane runs
  d->entry(&w->ctx, task->args);
  __syncwarp();  // every lane has returned: its writes (fail, then) are seen
  // After the call the id is the dispatcher's (id is not kept across it).
  const TaskDescriptor* const made = w->ctx.next;
  Ran ran{w->ctx.status, w->ctx.self_steps, d->entry_id,
          made->flags == kContinuationEmpty ? -1 : static_cast<int32_t>(made - w->continuation)};
  // Every lane has read the context before lane 0 writes it again (here,
  // or for the next task).
  __syncwarp();
  if (ran.status != kTaskOk && Lane() == 0) w->ctx.status = kTaskOk;
  return ran;
}

__device__ void RunWorker(const SchedulerState& s, WarpScratch* w, uint32_t worker) {
  const unsigned lane = Lane();
  if (lane == 0) {
    InstallTaskServices(&w->ctx, s, worker);
    w->ctx.status = kTaskOk;
    w->ctx.task_id = 0xffffffffu;
    w->ctx.self_steps = 0;
    w->ctx.self_step_budget = 0;  // set per dispatch (RunTask)
  }
  // Work saved by the previous launch comes first.
  WorkerSave& save = s.saves[worker];
  uint32_t count = save.count;
  for (uint32_t i = lane; i < count; i += 32) w->batch[i] = save.items[i];
  Dispatcher d;
  __syncwarp();  // every lane has read the save before lane 0 clears it
  if (lane == 0) {
    // The status of the chain running (its first failure), which the
    // host's ticket gets when the chain ends: of batch[0], if that is a
    // saved continuation, and kTaskOk between chains.
    w->chain_status = save.chain_status;
    w->sequence = s.heartbeats[worker].sequence;
    w->next_ticket = save.first_ticket;
    w->tickets = save.tickets;
    w->ahead = 0;
    w->waits = 0;
    save.count = 0;
    save.tickets = 0;
    save.chain_status = kTaskOk;
  }
  __syncwarp();

  Tally tally;
  uint32_t position = 0;
  bool idle_marked = false;
  for (;;) {
    if (position == count) {
      tally.Flush(s);
      position = 0;
      const bool need_tickets = w->tickets == 0;
      __syncwarp();  // every lane has read w before lane 0 rewrites it
      if (need_tickets) {
        if (Interrupted(s) && ParkOrExit(s, worker)) break;
        TakeTickets(s, w);
      }
      count = ReadTickets(s, w);
      if (count == 0) {
        // Waiting for tasks owed to this warp's tickets.
        if (Interrupted(s) && ParkOrExit(s, worker)) {
          SaveWork(s, worker, w, nullptr, 0, /*chain=*/nullptr);
          break;
        }
        if (lane == 0 && !idle_marked) s.heartbeats[worker].busy = 0;
        idle_marked = true;
        SpinPause(WaitBackoffNs(s, w));
        continue;
      }
      idle_marked = false;
    }
    const TaskDescriptor* current = &w->batch[position++];
    // A continuation replaces its task: the host's ticket moves along the
    // chain and completes when the chain ends, with its first failure. The
    // group stays too (then() copies the context's).
    if (lane == 0) {
      w->chain_ticket = current->ticket;
      w->chain_group = current->group;
      w->ctx.group = current->group;
    }
    // The continuation slot the next task writes; the other one may hold
    // the current task's arguments.
    uint32_t next_slot = 0;
    for (uint32_t steps_since_check = 0;;) {
      // In-place steps count towards the stop check, a quarter each
      // (kInPlaceStepsPerCheckStep): the task may run as many as keep the
      // chain within stop_check_interval steps of a check.
      const Ran ran = RunTask(
          s, w, &d, current, next_slot,
          (s.stop_check_interval - 1 - steps_since_check) * kInPlaceStepsPerCheckStep, worker);
      if (ran.status != kTaskOk && lane == 0) {
        s.ReportError(ran.id, ran.status, w->chain_ticket, worker);
        if (w->chain_status == kTaskOk) w->chain_status = ran.status;
      }
      tally.CountOutcome(s, ran.id, ran.status, ran.self_steps);
      if (ran.next_slot < 0) {
        // Lane 0's chain fields, to every lane (only lane 0 touches them).
        const uint32_t ticket = __shfl_sync(0xffffffffu, lane == 0 ? w->chain_ticket : 0u, 0);
        const uint32_t group = __shfl_sync(0xffffffffu, lane == 0 ? w->chain_group : 0u, 0);
        if (ticket != 0) {
          tally.FlushStats(s);  // Stats() after Wait() counts this task
          if (lane == 0) CompleteTicket(s, ticket, w->chain_status);
        }
        if (lane == 0) w->chain_status = kTaskOk;
        tally.CountFinished(s, group);
        break;
      }
      current = &w->continuation[ran.next_slot];
      next_slot = static_cast<uint32_t>(ran.next_slot) ^ 1u;
      steps_since_check += 1 + (ran.self_steps + kInPlaceStepsPerCheckStep - 1) /
                                   kInPlaceStepsPerCheckStep;
      if (steps_since_check < s.stop_check_interval) continue;
      steps_since_check = 0;
      if (Interrupted(s) && ParkOrExit(s, worker)) {
        SaveWork(s, worker, w, &w->batch[position], count - position, /*chain=*/current);
        tally.Flush(s);
        if (lane == 0) s.heartbeats[worker].busy = 0;
        return;
      }
    }
    if (position < count && position % 8 == 0 && Interrupted(s) && ParkOrExit(s, worker)) {
      SaveWork(s, worker, w, &w->batch[position], count - position, /*chain=*/nullptr);
      break;
    }
  }
  tally.Flush(s);
  if (lane == 0) s.heartbeats[worker].busy = 0;
}

}  // namespace
}  // namespace grosr

// With launch bounds ptxas ignores -maxrregcount for the kernel; a minimum
// of blocks per SM is how the register budget reaches it (65,536 registers
// per SM shared by those blocks).
#define GROSR_MIN_BLOCKS_PER_SM \
  (65536 / (GROSR_WARPS_PER_BLOCK * 32 * GROSR_REGISTER_BUDGET) > 0   \
       ? 65536 / (GROSR_WARPS_PER_BLOCK * 32 * GROSR_REGISTER_BUDGET) \
       : 1)

extern "C" __global__ void __launch_bounds__(GROSR_WARPS_PER_BLOCK * 32, GROSR_MIN_BLOCKS_PER_SM)
    grosr_scheduler(const grosr::SchedulerState* __restrict__ state) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  // The block's copy of the (immutable) state: the scheduler and its tasks
  // read these fields on every step, and shared memory answers in tens of
  // cycles where a global load that misses L1 (acquire loads elsewhere on
  // the SM invalidate it) costs hundreds.
  __shared__ grosr::SchedulerState block_state;
  if (threadIdx.x == 0) block_state = *state;
  __syncthreads();
  const grosr::SchedulerState& s = block_state;
  if (*s.never != 0) grosr::ReserveRegisterBudget(s.never);
  const uint32_t warp_in_block = threadIdx.x / 32;
  const uint32_t warp = blockIdx.x * GROSR_WARPS_PER_BLOCK + warp_in_block;
  auto* scratch = reinterpret_cast<grosr::WarpScratch*>(shared_bytes) + warp_in_block;
  if (warp == 0) {
    grosr::RunControl(s);
  } else {
    grosr::RunWorker(s, scratch, warp);
  }
}

// Shared memory the kernel needs per block, for the host's launch.
extern "C" __device__ const unsigned grosr_scratch_bytes_per_warp =
    sizeof(grosr::WarpScratch);
