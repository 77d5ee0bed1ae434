// alloc: GROSR's slab allocator against CUDA's in-kernel malloc/free and
// the stream-ordered allocator driven from the host, on the same GPU in one
// run. Prints a table and writes JSON (--json FILE).
//
//   bazel run -c opt //bench:alloc -- --json $PWD/bench/alloc-results.json
//   bazel run -c opt //bench:alloc -- --quick     # smoke test, a few seconds
//   alloc --min-blocks 8   # kernels of 32 registers, not 64 (a task's budget)
//   alloc --threads 1048576 --sizes 16 --no-baselines  # one row (e.g. under ncu)
//   alloc --shard-factor 1   # no extra hint shards for classes of few blocks a page
//   alloc --define GROSR_SLAB_WAIT_MAX_NS=256   # a tuning knob (slab_allocator.h)
//
// Workload (issue 5, the shape published allocators report): N threads
// (65,536; every resident thread of the GPU; 1,048,576) each allocate S
// bytes (16, 64, 256, 1024, 4096) in one timed kernel (CUDA events around
// it); every block's pattern is written and verified over all S bytes,
// untimed; each thread frees its block in a second timed kernel. Per row:
// the first round on a fresh allocator (cold), one warm-up round, then the
// median of --rounds steady rounds (memory from the round before reused),
// and the median of as many rounds where thread i frees thread perm(i)'s
// block (random order: defeats warp aggregation). Churn: each thread does
// 100 rounds of malloc(random 16..1024 B), write and check the first and
// last word, free, in one kernel: pairs/s and null returns.
//
// Allocators:
//   grosr_slab         SlabAllocator over an 8 GiB arena (--pool-gib), 64 KiB
//                      pages
//   cuda_malloc        in-kernel malloc/free, heap raised to the same size
//                      with cuCtxSetLimit before any kernel is loaded. Each
//                      row runs in a child process: a kernel running past
//                      --deadline-s (10) is abandoned by killing the child,
//                      the row is reported "timed_out", and larger rows of
//                      that series are skipped.
//   cuda_malloc_async  cuMemAllocAsync / cuMemFreeAsync from the host, one
//                      call per object, the default pool keeping its memory
//                      (release threshold: max); host time around the calls
//                      and the stream's completion.
// M ops/s = N / the kernel's (or the host loop's) time. A row whose rounds
// take long stops after --row-budget-s (8) with at least 3 rounds (1 when
// the cold round took a third of it, none but the cold round when it took
// all of it); the JSON says how many ran.
//
// Never hangs: every wait for the GPU is bounded (--deadline-s); a GROSR
// kernel past it ends the run with what was measured (exit 1).
// Without a GPU it says so and exits 2.
//
// JSON: {"benchmark": "alloc", "device", "arch", "sms", "resident_threads",
// "driver", "commit" (GROSR_COMMIT, else git, else "unknown"), "date",
// "pool_bytes", "page_bytes", "rounds", "shard_factor", "min_blocks", "notes": [...], "rows": [{"allocator",
// "workload": "alloc_free"|"churn", "threads", "bytes", "status":
// "ok"|"errors"|"timed_out"|"skipped"|"failed", "rounds", "random_rounds",
// "alloc_mops", "free_mops", "free_random_mops", "cold_alloc_mops",
// "cold_free_mops", "alloc_ms", ..., "pairs_per_s", "nulls", "bad_blocks",
// "refused_frees", "churn_errors", "pages_held_after", "pages_high_water",
// "note"}]}.
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/match.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "bench/run_info.h"
#include "bench/slab_kernels.h"
#include "host/cuda_resources.h"
#include "jit/compiler.h"
#include "jit/cuda_driver.h"

extern char** environ;

namespace grosr {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;
constexpr uint32_t kPageShift = 16;
constexpr uint32_t kChurnRounds = 100, kChurnMin = 16, kChurnMax = 1024;
constexpr char kChildFlag[] = "--cuda-malloc-child";

using Clock = std::chrono::steady_clock;
double MsSince(Clock::time_point start) {
  return std::chrono::duration<double, std::milli>(Clock::now() - start).count();
}

double Median(std::vector<double> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  return v.size() % 2 == 1 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
}

struct Config {
  std::vector<uint32_t> threads;
  std::vector<uint32_t> sizes;
  int rounds = 7;
  double row_budget_s = 8;
  double deadline_s = 10;
  uint64_t pool_bytes = 8 * kGiB;
  uint32_t shard_factor = SlabAllocator::kDefaultShardFactor;
  uint32_t min_blocks = kSlabKernelsMinBlocks;  // the kernels' __launch_bounds__
  std::vector<std::string> defines;  // tuning knobs for the slab kernels
  bool quick = false;
  bool baselines = true;
  std::string json_path;
};

struct Row {
  std::string allocator;           // grosr_slab, cuda_malloc, cuda_malloc_async
  std::string workload;            // alloc_free, churn
  uint32_t threads = 0;
  uint32_t bytes = 0;              // 0 for churn (16..1024 B)
  std::string status = "ok";       // ok, errors, timed_out, skipped, failed
  int rounds = 0;                  // steady rounds (churn: timed runs)
  int random_rounds = 0;
  double cold_alloc_ms = 0, cold_free_ms = 0, alloc_ms = 0, free_ms = 0, free_random_ms = 0;
  double churn_ms = 0;             // median churn kernel
  uint64_t nulls = 0, bad_blocks = 0, refused_frees = 0, churn_errors = 0;
  int64_t pages_held_after = -1, pages_high_water = -1;  // grosr_slab only
  std::string note;

  double Mops(double ms) const { return ms > 0 ? threads / (ms * 1e3) : 0; }
  double PairsPerS() const { return churn_ms > 0 ? double(threads) * kChurnRounds / (churn_ms / 1e3) : 0; }
  bool measured() const { return status == "ok" || status == "errors"; }
};

Row MakeRow(std::string allocator, std::string workload, uint32_t threads, uint32_t bytes) {
  Row row;
  row.allocator = std::move(allocator);
  row.workload = std::move(workload);
  row.threads = threads;
  row.bytes = bytes;
  return row;
}

// A row on one line, for the child process's report: every field but the
// note has no spaces; the note is the rest of the line.
std::string EncodeRow(const Row& r) {
  return absl::StrFormat("%s %s %u %u %s %d %d %.9g %.9g %.9g %.9g %.9g %.9g %u %u %u %u %s",
                         r.allocator, r.workload, r.threads, r.bytes, r.status, r.rounds,
                         r.random_rounds, r.cold_alloc_ms, r.cold_free_ms, r.alloc_ms, r.free_ms,
                         r.free_random_ms, r.churn_ms, r.nulls, r.bad_blocks, r.refused_frees,
                         r.churn_errors, r.note);
}

bool DecodeRow(absl::string_view line, Row* r) {
  std::vector<std::string> f = absl::StrSplit(line, absl::MaxSplits(' ', 17));
  if (f.size() < 17) return false;
  r->allocator = f[0];
  r->workload = f[1];
  r->status = f[4];
  r->note = f.size() > 17 ? f[17] : "";
  return absl::SimpleAtoi(f[2], &r->threads) && absl::SimpleAtoi(f[3], &r->bytes) &&
         absl::SimpleAtoi(f[5], &r->rounds) && absl::SimpleAtoi(f[6], &r->random_rounds) &&
         absl::SimpleAtod(f[7], &r->cold_alloc_ms) && absl::SimpleAtod(f[8], &r->cold_free_ms) &&
         absl::SimpleAtod(f[9], &r->alloc_ms) && absl::SimpleAtod(f[10], &r->free_ms) &&
         absl::SimpleAtod(f[11], &r->free_random_ms) && absl::SimpleAtod(f[12], &r->churn_ms) &&
         absl::SimpleAtoi(f[13], &r->nulls) && absl::SimpleAtoi(f[14], &r->bad_blocks) &&
         absl::SimpleAtoi(f[15], &r->refused_frees) && absl::SimpleAtoi(f[16], &r->churn_errors);
}

std::string JsonString(absl::string_view s) {
  std::string out = "\"";
  for (char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += c;
    } else if (static_cast<unsigned char>(c) < 0x20) {
      out += absl::StrFormat("\\u%04x", c);
    } else {
      out += c;
    }
  }
  return out + "\"";
}

// --- the measurement, shared by every allocator ----------------------------------

// What one allocator does to the blocks buffer; times in ms.
struct Allocator {
  std::string name;
  std::function<absl::StatusOr<double>(uint32_t n, uint32_t bytes)> alloc;
  // Thread/call i frees block order[i] when `random`, else block i.
  std::function<absl::StatusOr<double>(uint32_t n, bool random)> free;
  // Makes the next round the first on a fresh allocator.
  std::function<absl::Status()> make_cold;
  // The churn kernel, adding to the nulls/errors counters; empty: none.
  std::function<absl::StatusOr<double>(uint32_t n, uint32_t seed)> churn;
};

// The device buffers every allocator writes its blocks to, allocated once
// for the largest N before any kernel runs.
struct Workspace {
  GpuSession* gpu = nullptr;
  SlabKernels* kernels = nullptr;
  DeviceMemory blocks;   // N x 8: block pointers
  DeviceMemory order;    // N x 4: the random-order permutation
  DeviceMemory counts;   // bad, nulls (uint32), refused (uint32), churn nulls, errors (uint64)
  std::vector<uint32_t> host_order;
  std::function<void()> heartbeat = [] {};
  CUdeviceptr bad() const { return counts.get(); }
  CUdeviceptr nulls() const { return counts.get() + 4; }
  CUdeviceptr refused() const { return counts.get() + 8; }
  CUdeviceptr churn_nulls() const { return counts.get() + 16; }
  CUdeviceptr churn_errors() const { return counts.get() + 24; }
};

absl::StatusOr<Workspace> MakeWorkspace(GpuSession& gpu, SlabKernels& kernels, uint32_t max_n) {
  Workspace w;
  w.gpu = &gpu;
  w.kernels = &kernels;
  absl::StatusOr<DeviceMemory> m = gpu.Allocate(size_t{max_n} * 8);
  if (!m.ok()) return m.status();
  w.blocks = std::move(*m);
  m = gpu.Allocate(size_t{max_n} * 4);
  if (!m.ok()) return m.status();
  w.order = std::move(*m);
  m = gpu.Allocate(32);
  if (!m.ok()) return m.status();
  w.counts = std::move(*m);
  return w;
}

#define RETURN_IF_ERROR_(expr)                  \
  do {                                          \
    if (absl::Status s_ = (expr); !s_.ok()) return s_; \
  } while (false)
#define ASSIGN_OR_RETURN_(var, expr)               \
  auto var##_or = (expr);                          \
  if (!var##_or.ok()) return var##_or.status();    \
  auto var = *var##_or

// Writes and verifies every block's pattern (untimed); adds what it found.
absl::Status CheckRound(Workspace& w, uint32_t n, uint32_t bytes, uint32_t seed, Row* row) {
  RETURN_IF_ERROR_(w.gpu->Zero(w.counts.get(), 8));
  RETURN_IF_ERROR_(w.kernels->Fill(n, w.blocks.get(), bytes, 0, seed));
  RETURN_IF_ERROR_(w.kernels->Verify(n, w.blocks.get(), bytes, 0, seed, w.bad(), w.nulls()));
  ASSIGN_OR_RETURN_(found, w.gpu->Download<uint32_t>(w.counts.get(), 2));
  w.heartbeat();
  row->bad_blocks += found[0];
  row->nulls += found[1];
  return absl::OkStatus();
}

absl::Status MeasureRounds(Workspace& w, const Config& cfg, const Allocator& a, uint32_t n,
                           uint32_t bytes, Row* row) {
  const double budget_ms = cfg.row_budget_s * 1e3;
  uint32_t seed = 1;
  RETURN_IF_ERROR_(w.gpu->Zero(w.counts.get(), 16));
  RETURN_IF_ERROR_(a.make_cold());
  // Cold, then one warm-up round.
  const Clock::time_point cold_start = Clock::now();
  ASSIGN_OR_RETURN_(cold_alloc, a.alloc(n, bytes));
  w.heartbeat();
  RETURN_IF_ERROR_(CheckRound(w, n, bytes, seed++, row));
  ASSIGN_OR_RETURN_(cold_free, a.free(n, false));
  w.heartbeat();
  row->cold_alloc_ms = cold_alloc;
  row->cold_free_ms = cold_free;
  const double cold_ms = MsSince(cold_start);
  if (cold_ms > budget_ms) {
    row->note = absl::StrFormat("only the cold round: it alone took %.1f s (row budget %.0f s)",
                                cold_ms / 1e3, cfg.row_budget_s);
    return absl::OkStatus();
  }
  const bool slow = cold_ms > budget_ms / 3;
  const size_t min_rounds = slow ? 1 : static_cast<size_t>(std::min(3, cfg.rounds));
  if (!slow) {
    RETURN_IF_ERROR_(a.alloc(n, bytes).status());
    RETURN_IF_ERROR_(CheckRound(w, n, bytes, seed++, row));
    RETURN_IF_ERROR_(a.free(n, false).status());
    w.heartbeat();
  }
  for (int random = 0; random < 2; ++random) {
    if (random == 1) {
      w.host_order = RandomPermutation(n, 1000 + n);
      RETURN_IF_ERROR_(w.gpu->Upload(w.order.get(), w.host_order));
    }
    std::vector<double> allocs, frees;
    const Clock::time_point start = Clock::now();
    while (frees.size() < static_cast<size_t>(cfg.rounds) &&
           (frees.size() < min_rounds || MsSince(start) < budget_ms)) {
      ASSIGN_OR_RETURN_(alloc_ms, a.alloc(n, bytes));
      w.heartbeat();
      RETURN_IF_ERROR_(CheckRound(w, n, bytes, seed++, row));
      ASSIGN_OR_RETURN_(free_ms, a.free(n, random == 1));
      w.heartbeat();
      allocs.push_back(alloc_ms);
      frees.push_back(free_ms);
    }
    if (random == 0) {
      row->alloc_ms = Median(allocs);
      row->free_ms = Median(frees);
      row->rounds = static_cast<int>(frees.size());
    } else {
      row->free_random_ms = Median(frees);
      row->random_rounds = static_cast<int>(frees.size());
    }
  }
  if (row->rounds < cfg.rounds || row->random_rounds < cfg.rounds) {
    row->note = absl::StrFormat("slow: %d + %d rounds within the %.0f s row budget", row->rounds,
                                row->random_rounds, cfg.row_budget_s);
  }
  return absl::OkStatus();
}

// After a row every block is free again: records the pages the slab still
// holds (an error if any) and its high-water mark.
absl::Status RecordPagesHeld(DeviceSlab& slab, Row* row) {
  absl::StatusOr<SlabSnapshot> s = slab.Snapshot();
  if (!s.ok()) return s.status();
  row->pages_held_after = s->pages_held;
  row->pages_high_water = static_cast<int64_t>(s->counters.pages_high_water);
  if (s->pages_held != 0) {
    row->status = "errors";
    row->note += absl::StrCat(row->note.empty() ? "" : "; ", s->pages_held,
                              " pages held after every block was freed");
  }
  return absl::OkStatus();
}

// The row's alloc/free rounds, then whether any block was bad or any free
// refused.
absl::Status MeasureAllocFree(Workspace& w, const Config& cfg, const Allocator& a, uint32_t n,
                              uint32_t bytes, Row* row) {
  RETURN_IF_ERROR_(MeasureRounds(w, cfg, a, n, bytes, row));
  ASSIGN_OR_RETURN_(refused, w.gpu->Download<uint32_t>(w.refused(), 1));
  row->refused_frees = refused[0];
  if (row->bad_blocks != 0 || row->refused_frees != 0) row->status = "errors";
  return absl::OkStatus();
}

absl::Status MeasureChurn(Workspace& w, const Config& cfg, const Allocator& a, uint32_t n,
                          Row* row) {
  const double budget_ms = cfg.row_budget_s * 1e3;
  const Clock::time_point warm = Clock::now();
  RETURN_IF_ERROR_(a.make_cold());
  RETURN_IF_ERROR_(a.churn(n, 99).status());  // warm-up
  w.heartbeat();
  const size_t min_runs = MsSince(warm) > budget_ms / 3 ? 1 : std::min(3, cfg.rounds);
  RETURN_IF_ERROR_(w.gpu->Zero(w.churn_nulls(), 16));
  std::vector<double> runs;
  const Clock::time_point start = Clock::now();
  while (runs.size() < static_cast<size_t>(cfg.rounds) &&
         (runs.size() < min_runs || MsSince(start) < budget_ms)) {
    ASSIGN_OR_RETURN_(ms, a.churn(n, static_cast<uint32_t>(runs.size() + 1)));
    w.heartbeat();
    runs.push_back(ms);
  }
  ASSIGN_OR_RETURN_(counts, w.gpu->Download<uint64_t>(w.churn_nulls(), 2));
  row->churn_ms = Median(runs);
  row->rounds = static_cast<int>(runs.size());
  row->nulls = counts[0];
  row->churn_errors = counts[1];
  if (row->churn_errors != 0) row->status = "errors";
  row->note = absl::StrFormat("%u rounds of %u..%u B per thread; nulls over %d runs (%.3g per M)",
                              kChurnRounds, kChurnMin, kChurnMax, row->rounds,
                              1e6 * double(row->nulls) /
                                  (double(n) * kChurnRounds * std::max(1, row->rounds)));
  return absl::OkStatus();
}

// --- the allocators --------------------------------------------------------------

Allocator SlabAllocatorUnder(Workspace& w, DeviceSlab& slab) {
  Allocator a;
  a.name = "grosr_slab";
  a.alloc = [&w, &slab](uint32_t n, uint32_t bytes) {
    return w.gpu->TimeMs(
        [&] { return w.kernels->SlabAlloc(slab.view(), n, bytes, 0, w.blocks.get()); },
        "slab_alloc");
  };
  a.free = [&w, &slab](uint32_t n, bool random) {
    return w.gpu->TimeMs(
        [&] {
          return w.kernels->SlabFree(slab.view(), n, w.blocks.get(), random ? w.order.get() : 0, 0,
                                     w.refused());
        },
        "slab_free");
  };
  a.make_cold = [&slab] { return slab.Reset(); };
  a.churn = [&w, &slab](uint32_t n, uint32_t seed) {
    return w.gpu->TimeMs(
        [&] {
          return w.kernels->SlabChurn(slab.view(), n, kChurnRounds, kChurnMin, kChurnMax, seed,
                                      w.churn_nulls(), w.churn_errors());
        },
        "slab_churn");
  };
  return a;
}

Allocator CudaMallocAllocator(Workspace& w) {
  Allocator a;
  a.name = "cuda_malloc";
  a.alloc = [&w](uint32_t n, uint32_t bytes) {
    return w.gpu->TimeMs([&] { return w.kernels->CudaAlloc(n, bytes, w.blocks.get()); },
                         "cuda_alloc (in-kernel malloc)");
  };
  a.free = [&w](uint32_t n, bool random) {
    return w.gpu->TimeMs(
        [&] { return w.kernels->CudaFree(n, w.blocks.get(), random ? w.order.get() : 0); },
        "cuda_free (in-kernel free)");
  };
  a.make_cold = [] { return absl::OkStatus(); };  // each row runs in a fresh process
  a.churn = [&w](uint32_t n, uint32_t seed) {
    return w.gpu->TimeMs(
        [&] {
          return w.kernels->CudaChurn(n, kChurnRounds, kChurnMin, kChurnMax, seed,
                                      w.churn_nulls(), w.churn_errors());
        },
        "cuda_churn");
  };
  return a;
}

// cuMemAllocAsync / cuMemFreeAsync from the host, one call per object, on
// the session's stream; the pool keeps freed memory for the next round.
absl::StatusOr<Allocator> AsyncAllocator(Workspace& w, std::vector<CUdeviceptr>* pointers) {
  const CudaDriver& cu = w.gpu->cu();
  CUmemoryPool pool;
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuDeviceGetDefaultMemPool(&pool, w.gpu->device()),
                           "cuDeviceGetDefaultMemPool");
  cuuint64_t keep = ~cuuint64_t{0};
  GROSR_CU_RETURN_IF_ERROR(
      cu, cu.cuMemPoolSetAttribute(pool, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &keep),
      "cuMemPoolSetAttribute(RELEASE_THRESHOLD)");
  Allocator a;
  a.name = "cuda_malloc_async";
  a.alloc = [&w, pointers](uint32_t n, uint32_t bytes) -> absl::StatusOr<double> {
    const CudaDriver& cu = w.gpu->cu();
    const Clock::time_point start = Clock::now();
    for (uint32_t i = 0; i < n; ++i) {
      GROSR_CU_RETURN_IF_ERROR(cu, cu.cuMemAllocAsync(&(*pointers)[i], bytes, w.gpu->stream()),
                               "cuMemAllocAsync");
    }
    RETURN_IF_ERROR_(w.gpu->Wait("cuMemAllocAsync"));
    const double ms = MsSince(start);
    static_assert(sizeof(CUdeviceptr) == 8);
    RETURN_IF_ERROR_(w.gpu->Upload(w.blocks.get(), pointers->data(), size_t{n} * 8));
    return ms;
  };
  a.free = [&w, pointers](uint32_t n, bool random) -> absl::StatusOr<double> {
    const CudaDriver& cu = w.gpu->cu();
    const Clock::time_point start = Clock::now();
    for (uint32_t i = 0; i < n; ++i) {
      const CUdeviceptr p = (*pointers)[random ? w.host_order[i] : i];
      GROSR_CU_RETURN_IF_ERROR(cu, cu.cuMemFreeAsync(p, w.gpu->stream()), "cuMemFreeAsync");
    }
    RETURN_IF_ERROR_(w.gpu->Wait("cuMemFreeAsync"));
    return MsSince(start);
  };
  a.make_cold = [&w, pool] {
    RETURN_IF_ERROR_(w.gpu->Wait("before cuMemPoolTrimTo"));
    return w.gpu->cu().Check(w.gpu->cu().cuMemPoolTrimTo(pool, 0), "cuMemPoolTrimTo");
  };
  return a;
}

// --- output -----------------------------------------------------------------------

struct RunInfo {
  GpuInfo gpu;
  uint32_t resident_threads = 0;
  uint32_t slab_alloc_resident = 0;  // the slab_alloc kernel's occupancy
  uint64_t pool_bytes = 0;
  std::string commit, date;
  std::vector<std::string> notes;
};

void PrintTable(const RunInfo& info, const Config& cfg, const std::vector<Row>& rows) {
  std::printf("\n%s (%s, %d SMs, %u resident threads), driver %s, commit %s, %s\n",
              info.gpu.name.c_str(), info.gpu.arch.c_str(), info.gpu.sm_count,
              info.resident_threads, info.gpu.driver.c_str(), info.commit.c_str(),
              info.date.c_str());
  std::printf(
      "pool %.2f GiB in %u KiB pages, shard factor up to %u; kernels of %u blocks of 256 a SM at "
      "least; median of %d steady rounds after a warm-up\n",
      double(info.pool_bytes) / kGiB, (1u << kPageShift) / 1024, cfg.shard_factor, cfg.min_blocks,
      cfg.rounds);
  for (const std::string& note : info.notes) std::printf("note: %s\n", note.c_str());
  std::printf("\nM ops/s (alloc / free; free in random order; first round cold)\n");
  std::printf("%-18s %8s %6s %10s %10s %10s %10s %10s %6s %8s  %s\n", "allocator", "threads",
              "bytes", "alloc", "free", "free-rand", "cold-alloc", "cold-free", "rounds", "nulls",
              "status");
  for (const Row& r : rows) {
    if (r.workload != "alloc_free") continue;
    if (!r.measured()) {
      std::printf("%-18s %8u %6u %10s %10s %10s %10s %10s %6s %8s  %s: %s\n", r.allocator.c_str(),
                  r.threads, r.bytes, "-", "-", "-", "-", "-", "-", "-", r.status.c_str(),
                  r.note.c_str());
      continue;
    }
    std::printf("%-18s %8u %6u %10.1f %10.1f %10.1f %10.1f %10.1f %3d+%-2d %8llu  %s%s%s\n",
                r.allocator.c_str(), r.threads, r.bytes, r.Mops(r.alloc_ms), r.Mops(r.free_ms),
                r.Mops(r.free_random_ms), r.Mops(r.cold_alloc_ms), r.Mops(r.cold_free_ms),
                r.rounds, r.random_rounds, static_cast<unsigned long long>(r.nulls),
                r.status.c_str(), r.note.empty() ? "" : ": ", r.note.c_str());
  }
  std::printf("\nchurn: %u rounds of malloc(%u..%u B), write/check, free per thread\n",
              kChurnRounds, kChurnMin, kChurnMax);
  std::printf("%-18s %8s %14s %8s %10s %8s  %s\n", "allocator", "threads", "M pairs/s", "runs",
              "nulls", "errors", "status");
  for (const Row& r : rows) {
    if (r.workload != "churn") continue;
    if (!r.measured()) {
      std::printf("%-18s %8u %14s %8s %10s %8s  %s: %s\n", r.allocator.c_str(), r.threads, "-",
                  "-", "-", "-", r.status.c_str(), r.note.c_str());
      continue;
    }
    std::printf("%-18s %8u %14.1f %8d %10llu %8llu  %s\n", r.allocator.c_str(), r.threads,
                r.PairsPerS() / 1e6, r.rounds, static_cast<unsigned long long>(r.nulls),
                static_cast<unsigned long long>(r.churn_errors), r.status.c_str());
  }
  std::fflush(stdout);
}

std::string ToJson(const RunInfo& info, const Config& cfg, const std::vector<Row>& rows) {
  std::vector<std::string> items;
  for (const Row& r : rows) {
    items.push_back(absl::StrFormat(
        "    {\"allocator\": %s, \"workload\": %s, \"threads\": %u, \"bytes\": %u, "
        "\"status\": %s, \"rounds\": %d, \"random_rounds\": %d,\n"
        "     \"alloc_mops\": %.6g, \"free_mops\": %.6g, \"free_random_mops\": %.6g, "
        "\"cold_alloc_mops\": %.6g, \"cold_free_mops\": %.6g,\n"
        "     \"alloc_ms\": %.6g, \"free_ms\": %.6g, \"free_random_ms\": %.6g, "
        "\"cold_alloc_ms\": %.6g, \"cold_free_ms\": %.6g, \"churn_ms\": %.6g, "
        "\"pairs_per_s\": %.6g,\n"
        "     \"nulls\": %u, \"bad_blocks\": %u, \"refused_frees\": %u, \"churn_errors\": %u, "
        "\"pages_held_after\": %d, \"pages_high_water\": %d, \"note\": %s}",
        JsonString(r.allocator), JsonString(r.workload), r.threads, r.bytes,
        JsonString(r.status), r.rounds, r.random_rounds, r.Mops(r.alloc_ms), r.Mops(r.free_ms),
        r.Mops(r.free_random_ms), r.Mops(r.cold_alloc_ms), r.Mops(r.cold_free_ms), r.alloc_ms,
        r.free_ms, r.free_random_ms, r.cold_alloc_ms, r.cold_free_ms, r.churn_ms, r.PairsPerS(),
        r.nulls, r.bad_blocks, r.refused_frees, r.churn_errors, r.pages_held_after,
        r.pages_high_water, JsonString(r.note)));
  }
  std::vector<std::string> notes;
  for (const std::string& n : info.notes) notes.push_back(JsonString(n));
  return absl::StrFormat(
      "{\n  \"benchmark\": \"alloc\", \"device\": %s, \"arch\": %s, \"sms\": %d, "
      "\"resident_threads\": %u, \"slab_alloc_resident_threads\": %u,\n"
      "  \"driver\": %s, \"commit\": %s, \"date\": %s, \"pool_bytes\": %u, \"page_bytes\": %u, "
      "\"rounds\": %d, \"quick\": %s, \"deadline_s\": %.6g, \"row_budget_s\": %.6g, "
      "\"shard_factor\": %u, \"min_blocks\": %u,\n"
      "  \"notes\": [%s],\n  \"rows\": [\n%s\n  ]\n}\n",
      JsonString(info.gpu.name), JsonString(info.gpu.arch), info.gpu.sm_count,
      info.resident_threads, info.slab_alloc_resident, JsonString(info.gpu.driver),
      JsonString(info.commit), JsonString(info.date), info.pool_bytes, 1u << kPageShift,
      cfg.rounds, cfg.quick ? "true" : "false", cfg.deadline_s, cfg.row_budget_s, cfg.shard_factor,
      cfg.min_blocks,
      absl::StrJoin(notes, ", "), absl::StrJoin(items, ",\n"));
}

void Report(const RunInfo& info, const Config& cfg, const std::vector<Row>& rows) {
  PrintTable(info, cfg, rows);
  if (!cfg.json_path.empty()) {
    std::ofstream(cfg.json_path) << ToJson(info, cfg, rows);
    std::printf("wrote %s\n", cfg.json_path.c_str());
  }
  std::fflush(stdout);
}

// The GPU context is gone or a kernel will not stop: report what was
// measured and leave without touching the driver again.
[[noreturn]] void Abort(const RunInfo& info, const Config& cfg, std::vector<Row> rows,
                        const absl::Status& status) {
  RunInfo aborted = info;
  aborted.notes.push_back(absl::StrCat("aborted: ", status.ToString()));
  std::fprintf(stderr, "alloc: %s\n", status.ToString().c_str());
  Report(aborted, cfg, rows);
  std::fflush(nullptr);
  std::_Exit(1);
}

void Progress(const Row& r) {
  std::fprintf(stderr, "alloc: %s %s N=%u%s: %s\n", r.allocator.c_str(), r.workload.c_str(),
               r.threads, r.bytes ? absl::StrCat(" S=", r.bytes).c_str() : "", r.status.c_str());
}

// --- cuda_malloc rows in a child process -------------------------------------------

// The child: one row (bytes = 0: churn) with in-kernel malloc, heap raised
// before anything is loaded. Prints "tick" after every kernel and one
// "result ..." or "error ..." line.
int ChildMain(const Config& cfg, uint32_t n, uint32_t bytes) {
  auto fail = [](const absl::Status& s) {
    std::printf("error %s\n", std::string(s.message()).c_str());
    std::fflush(stdout);
    std::_Exit(3);  // the context may be busy for good: no cleanup
  };
  GpuSession::Options options;
  options.malloc_heap_bytes = cfg.pool_bytes;
  options.deadline = absl::Seconds(cfg.deadline_s + 10);  // the parent's deadline comes first
  absl::StatusOr<std::unique_ptr<GpuSession>> gpu = GpuSession::Open(options);
  if (!gpu.ok()) fail(gpu.status());
  absl::StatusOr<std::unique_ptr<Compiler>> compiler = Compiler::Create({});
  if (!compiler.ok()) fail(compiler.status());
  absl::StatusOr<SlabKernels> kernels = SlabKernels::Load(**gpu, **compiler, cfg.min_blocks);
  if (!kernels.ok()) fail(kernels.status());
  absl::StatusOr<Workspace> w = MakeWorkspace(**gpu, *kernels, n);
  if (!w.ok()) fail(w.status());
  w->heartbeat = [] {
    std::printf("tick\n");
    std::fflush(stdout);
  };
  Allocator a = CudaMallocAllocator(*w);
  Row row = MakeRow(a.name, bytes == 0 ? "churn" : "alloc_free", n, bytes);
  absl::Status s = bytes == 0 ? MeasureChurn(*w, cfg, a, n, &row)
                              : MeasureAllocFree(*w, cfg, a, n, bytes, &row);
  if (!s.ok()) fail(s);
  std::printf("result %s\n", EncodeRow(row).c_str());
  std::fflush(stdout);
  std::_Exit(0);
}

// Runs one cuda_malloc row in a child; a child silent for longer than the
// deadline (one kernel) is killed and the row reported as timed out.
Row RunChildRow(const Config& cfg, uint32_t n, uint32_t bytes) {
  Row row = MakeRow("cuda_malloc", bytes == 0 ? "churn" : "alloc_free", n, bytes);
  int out[2];
  if (pipe(out) != 0) {
    row.status = "failed";
    row.note = "pipe() failed";
    return row;
  }
  std::vector<std::string> args = {
      "/proc/self/exe",  kChildFlag,
      "--n",             absl::StrCat(n),
      "--bytes",         absl::StrCat(bytes),
      "--rounds",        absl::StrCat(cfg.rounds),
      "--row-budget-s",  absl::StrCat(cfg.row_budget_s),
      "--deadline-s",    absl::StrCat(cfg.deadline_s),
      "--pool-bytes",    absl::StrCat(cfg.pool_bytes),
      "--min-blocks",    absl::StrCat(cfg.min_blocks)};
  std::vector<char*> argv;
  for (std::string& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  posix_spawn_file_actions_addclose(&actions, out[0]);
  posix_spawn_file_actions_addclose(&actions, out[1]);
  pid_t pid = 0;
  const int spawned = posix_spawn(&pid, "/proc/self/exe", &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  if (spawned != 0) {
    close(out[0]);
    row.status = "failed";
    row.note = absl::StrCat("posix_spawn failed: ", spawned);
    return row;
  }
  std::string pending;
  bool have_result = false;
  for (;;) {
    pollfd p{out[0], POLLIN, 0};
    const int ready = poll(&p, 1, static_cast<int>(cfg.deadline_s * 1000));
    if (ready < 0 && errno == EINTR) continue;
    if (ready <= 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      close(out[0]);
      row.status = ready == 0 ? "timed_out" : "failed";
      row.note = ready == 0 ? absl::StrFormat(
                                  "a kernel ran longer than %.0f s; abandoned (child killed)",
                                  cfg.deadline_s)
                            : "poll() failed";
      return row;
    }
    char buffer[4096];
    const ssize_t got = read(out[0], buffer, sizeof(buffer));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;  // the child exited
    pending.append(buffer, static_cast<size_t>(got));
    for (size_t eol; (eol = pending.find('\n')) != std::string::npos;) {
      const std::string line = pending.substr(0, eol);
      pending.erase(0, eol + 1);
      if (absl::StartsWith(line, "result ")) {
        have_result = DecodeRow(absl::string_view(line).substr(7), &row);
      } else if (absl::StartsWith(line, "error ")) {
        row.status = "failed";
        row.note = line.substr(6);
      }
    }
  }
  close(out[0]);
  int wstatus = 0;
  waitpid(pid, &wstatus, 0);
  if (!have_result && row.status == "ok") {
    row.status = "failed";
    row.note = WIFSIGNALED(wstatus)
                   ? absl::StrCat("the child died of signal ", WTERMSIG(wstatus), " without a result")
                   : absl::StrCat("the child exited with code ", WEXITSTATUS(wstatus),
                                  " without a result");
  }
  return row;
}

// --- main ---------------------------------------------------------------------------

bool ParseFlags(int argc, char** argv, Config* cfg, bool* child, uint32_t* child_n,
                uint32_t* child_bytes) {
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&](auto* value) {
      if (i + 1 >= argc) return false;
      const std::string v = argv[++i];
      if constexpr (std::is_same_v<std::remove_pointer_t<decltype(value)>, std::string>) {
        *value = v;
        return true;
      } else if constexpr (std::is_floating_point_v<std::remove_pointer_t<decltype(value)>>) {
        return absl::SimpleAtod(v, value);
      } else {
        return absl::SimpleAtoi(v, value);
      }
    };
    double pool_gib = 0;
    if (a == "--json") {
      if (!next(&cfg->json_path)) return false;
    } else if (a == "--quick") {
      cfg->quick = true;
    } else if (a == "--no-baselines") {
      cfg->baselines = false;
    } else if (a == "--rounds") {
      if (!next(&cfg->rounds) || cfg->rounds < 1) return false;
    } else if (a == "--deadline-s") {
      if (!next(&cfg->deadline_s) || cfg->deadline_s <= 0) return false;
    } else if (a == "--row-budget-s") {
      if (!next(&cfg->row_budget_s) || cfg->row_budget_s < 0) return false;
    } else if (a == "--threads" || a == "--sizes") {
      std::string list;
      if (!next(&list)) return false;
      std::vector<uint32_t>& into = a == "--threads" ? cfg->threads : cfg->sizes;
      into.clear();
      for (absl::string_view item : absl::StrSplit(list, ',')) {
        uint32_t v = 0;
        if (!absl::SimpleAtoi(item, &v) || v == 0) return false;
        into.push_back(v);
      }
    } else if (a == "--shard-factor") {
      if (!next(&cfg->shard_factor) || !SlabAllocator::IsShardFactor(cfg->shard_factor)) {
        return false;
      }
    } else if (a == "--define") {
      std::string define;
      // BuildSlabKernels refuses GROSR_BENCH_MIN_BLOCKS (--min-blocks').
      if (!next(&define) || !absl::StrContains(define, '=')) return false;
      cfg->defines.push_back(define);
    } else if (a == "--min-blocks") {
      if (!next(&cfg->min_blocks) || (cfg->min_blocks != 4 && cfg->min_blocks != 8)) return false;
    } else if (a == "--pool-gib") {
      if (!next(&pool_gib) || pool_gib <= 0) return false;
      cfg->pool_bytes = static_cast<uint64_t>(pool_gib * double(kGiB));
    } else if (a == "--pool-bytes") {
      if (!next(&cfg->pool_bytes)) return false;
    } else if (a == kChildFlag) {
      *child = true;
    } else if (a == "--n") {
      if (!next(child_n)) return false;
    } else if (a == "--bytes") {
      if (!next(child_bytes)) return false;
    } else {
      return false;
    }
  }
  return true;
}

int Main(int argc, char** argv) {
  Config cfg;
  bool child = false;
  uint32_t child_n = 0, child_bytes = 0;
  if (!ParseFlags(argc, argv, &cfg, &child, &child_n, &child_bytes)) {
    std::fprintf(stderr,
                 "usage: alloc [--json FILE] [--quick] [--threads N,..] [--sizes S,..] "
                 "[--rounds R] [--pool-gib G] [--shard-factor 1|2|4|8] [--min-blocks 4|8] "
                 "[--define NAME=VALUE] "
                 "[--deadline-s S] [--row-budget-s S] [--no-baselines]\n");
    return 2;
  }
  if (child) return ChildMain(cfg, child_n, child_bytes);
  if (cfg.quick && cfg.rounds == 7) cfg.rounds = 3;
  if (const char* dir = std::getenv("BUILD_WORKING_DIRECTORY");
      dir != nullptr && !cfg.json_path.empty() && cfg.json_path[0] != '/') {
    cfg.json_path = absl::StrCat(dir, "/", cfg.json_path);  // bazel run: the caller's folder
  }

  GpuSession::Options options;
  options.deadline = absl::Seconds(cfg.deadline_s);
  absl::StatusOr<std::unique_ptr<GpuSession>> opened = GpuSession::Open(options);
  if (!opened.ok()) {
    if (absl::IsFailedPrecondition(opened.status())) {
      std::fprintf(stderr, "alloc: a CUDA GPU is required to run the benchmark: %s\n",
                   std::string(opened.status().message()).c_str());
      return 2;
    }
    std::fprintf(stderr, "alloc: %s\n", opened.status().ToString().c_str());
    return 1;
  }
  GpuSession& gpu = **opened;
  RunInfo info;
  info.gpu = gpu.info();
  info.commit = BuildCommit();
  info.date = UtcNow();
  info.resident_threads = static_cast<uint32_t>(info.gpu.sm_count * info.gpu.max_threads_per_sm);
  std::vector<Row> rows;
  auto check = [&](const absl::Status& s) {
    if (!s.ok()) Abort(info, cfg, rows, s);
  };

  absl::StatusOr<std::unique_ptr<Compiler>> compiler = Compiler::Create({});
  check(compiler.status());
  absl::StatusOr<SlabKernels> kernels =
      SlabKernels::Load(gpu, **compiler, cfg.min_blocks, cfg.defines);
  check(kernels.status());
  absl::StatusOr<uint32_t> occupancy = gpu.ResidentThreads(kernels->slab_alloc());
  check(occupancy.status());
  info.slab_alloc_resident = *occupancy;
  if (!cfg.defines.empty()) {
    info.notes.push_back(absl::StrCat("slab kernels built with ", absl::StrJoin(cfg.defines, " ")));
  }
  if (*occupancy < info.resident_threads) {
    info.notes.push_back(absl::StrCat("slab_alloc holds ", *occupancy, " of ",
                                      info.resident_threads, " threads resident at once"));
  }

  // --threads / --sizes replace the workload's rows (and so the churn's
  // thread counts).
  if (cfg.threads.empty()) {
    cfg.threads = cfg.quick ? std::vector<uint32_t>{65536}
                            : std::vector<uint32_t>{65536, info.resident_threads, 1048576};
  }
  std::sort(cfg.threads.begin(), cfg.threads.end());
  cfg.threads.erase(std::unique(cfg.threads.begin(), cfg.threads.end()), cfg.threads.end());
  if (cfg.sizes.empty()) {
    cfg.sizes = cfg.quick ? std::vector<uint32_t>{64} : std::vector<uint32_t>{16, 64, 256, 1024, 4096};
  }
  const uint32_t max_n = cfg.threads.back();

  // The pool: 8 GiB, or what fits with 1 GiB to spare.
  {
    size_t free_bytes = 0, total_bytes = 0;
    check(gpu.cu().Check(gpu.cu().cuMemGetInfo(&free_bytes, &total_bytes), "cuMemGetInfo"));
    const uint64_t requested = cfg.pool_bytes;
    const uint64_t fits = free_bytes > 2 * kGiB ? free_bytes - kGiB : free_bytes / 2;
    if (cfg.pool_bytes > fits) {
      cfg.pool_bytes = fits >> kPageShift << kPageShift;
      info.notes.push_back(absl::StrFormat("pool %.2f GiB instead of %.2f GiB: %.2f GiB free",
                                           double(cfg.pool_bytes) / kGiB, double(requested) / kGiB,
                                           double(free_bytes) / kGiB));
    }
  }
  absl::StatusOr<Workspace> workspace = MakeWorkspace(gpu, *kernels, max_n);
  check(workspace.status());
  Workspace& w = *workspace;

  // 1. GROSR's slab allocator.
  {
    absl::StatusOr<DeviceSlab> slab =
        DeviceSlab::Create(gpu, cfg.pool_bytes, kPageShift, cfg.shard_factor);
    while (!slab.ok() && absl::IsResourceExhausted(slab.status()) && cfg.pool_bytes > kGiB) {
      cfg.pool_bytes /= 2;
      info.notes.push_back(absl::StrFormat("cuMemAlloc refused the pool: fell back to %.2f GiB",
                                           double(cfg.pool_bytes) / kGiB));
      slab = DeviceSlab::Create(gpu, cfg.pool_bytes, kPageShift, cfg.shard_factor);
    }
    check(slab.status());
    info.pool_bytes = slab->arena_bytes();
    {
      const SlabAllocator& v = slab->view();
      info.notes.push_back(absl::StrFormat(
          "hint shards a class: %u at 16 B, %u at 256 B, %u at 1 KiB (shard factor up to %u; "
          "the host's count: a --define of GROSR_SLAB_FACTOR_BLOCKS_LOG changes the kernels')",
          v.ShardsOf(v.ClassFor(16)), v.ShardsOf(v.ClassFor(256)), v.ShardsOf(v.ClassFor(1024)),
          cfg.shard_factor));
    }
    Allocator a = SlabAllocatorUnder(w, *slab);
    for (uint32_t n : cfg.threads) {
      for (uint32_t bytes : cfg.sizes) {
        Row row = MakeRow(a.name, "alloc_free", n, bytes);
        if (uint64_t{n} * bytes > slab->arena_bytes() / 2) {
          row.status = "skipped";
          row.note = "the demand exceeds half the pool";
        } else {
          check(MeasureAllocFree(w, cfg, a, n, bytes, &row));
          check(RecordPagesHeld(*slab, &row));
        }
        Progress(row);
        rows.push_back(row);
      }
    }
    for (uint32_t n : cfg.threads) {
      Row row = MakeRow(a.name, "churn", n, 0);
      check(MeasureChurn(w, cfg, a, n, &row));
      check(RecordPagesHeld(*slab, &row));
      Progress(row);
      rows.push_back(row);
    }
  }  // the arena goes back before the baselines run

  if (cfg.baselines) {
    // 2. cuMemAllocAsync from the host.
    std::vector<CUdeviceptr> pointers(max_n);
    absl::StatusOr<Allocator> async = AsyncAllocator(w, &pointers);
    check(async.status());
    for (uint32_t n : cfg.threads) {
      for (uint32_t bytes : cfg.sizes) {
        Row row = MakeRow(async->name, "alloc_free", n, bytes);
        absl::Status s = MeasureAllocFree(w, cfg, *async, n, bytes, &row);
        if (gpu.lost()) check(s);
        if (!s.ok()) {
          row.status = "failed";
          row.note = s.ToString();
        }
        Progress(row);
        rows.push_back(row);
      }
    }
    check(async->make_cold());  // give the pool's memory back

    // 3. In-kernel malloc, one child process per row. After a timeout,
    // larger rows of the series (more threads or more bytes) are skipped.
    std::vector<std::pair<uint32_t, uint32_t>> timed_out;  // (n, bytes)
    auto dominated = [&](uint32_t n, uint32_t bytes) {
      for (const auto& [tn, tb] : timed_out) {
        if (n >= tn && bytes >= tb) return true;
      }
      return false;
    };
    for (uint32_t n : cfg.threads) {
      for (uint32_t bytes : cfg.sizes) {
        Row row = MakeRow("cuda_malloc", "alloc_free", n, bytes);
        if (dominated(n, bytes)) {
          row.status = "skipped";
          row.note = "a smaller row timed out";
        } else {
          row = RunChildRow(cfg, n, bytes);
          if (row.status == "timed_out") timed_out.push_back({n, bytes});
        }
        Progress(row);
        rows.push_back(row);
      }
    }
    bool churn_timed_out = false;
    for (uint32_t n : cfg.threads) {
      Row row = MakeRow("cuda_malloc", "churn", n, 0);
      if (churn_timed_out) {
        row.status = "skipped";
        row.note = "a smaller churn timed out";
      } else {
        row = RunChildRow(cfg, n, 0);
        churn_timed_out = row.status == "timed_out";
      }
      Progress(row);
      rows.push_back(row);
    }
  }
  Report(info, cfg, rows);
  return 0;
}

}  // namespace
}  // namespace grosr

int main(int argc, char** argv) { return grosr::Main(argc, argv); }
