// SlabAllocator: lock-free allocation of device memory by tasks, from one
// arena the host reserved, with no host call.
//
// Design. The arena is cut into pages (64 KiB by default). A page serves one
// size class at a time (16 B .. page/2, powers of two) as an array of equal
// blocks with one bit per block; bigger requests take a run of whole pages.
// Metadata lives outside the arena, so a task overrunning its block cannot
// corrupt the allocator.
//
//   page state word (64 bits):  generation:23 | hint:1 | class:8 | live:32
//     class: kFreePage (in the pool), a size class, kLargeHead/kLargeTail
//     hint:  a hint names the page (or is about to, or just stopped)
//     live:  blocks allocated or reserved on the page (a run's head: only
//            transient reservations; its length is in run_pages)
//   page bitmap: one bit per block, 1 = allocated
//   pool bitmap: one bit per page, 1 = free page
//   run_pages: a run's length, at its head page (not in the head's bitmap:
//     a stale free that raced with the page's reuse would clear bits of it)
//   hints[class][shard]: page + 1 that allocations of a class try first,
//     and kReplacing while one caller replaces that page
//
// AllocateBatch(class, n) (Allocate is a batch of one): read a hint page
// and its generation; reserve up to n blocks by fetch_add(n) on the page's
// state word; if the word's generation or class is not the expected one, or
// the page is full, undo (Release) and move on; otherwise give back what
// the page could not hold, and that many clear bits are certain to exist
// (invariant 2): set them, as many per fetch_or as a bitmap word has. A
// full hint page is replaced by one caller: it claims the hint (sets
// kReplacing), takes a fresh page from the pool, sets the page's class and
// hint bit, and publishes it (CAS on the hint); the shard's other callers
// wait for the new page instead of each taking one (a GPU's worth of them
// did, and gave all but one back: 1.3 G allocations/s at 16 B, run K). A
// claim that takes too long is taken over, so no caller waits on another
// without bound. The one who replaced a page clears its hint bit, and
// retires it if it emptied meanwhile. A batch that fills whole pages (32
// blocks of 4 KiB, 16 a page) takes them from the pool for itself.
// Free(p) / FreeBits(word, bits): find the page, check class and alignment,
// clear the blocks' bits with one fetch_and (a bit already clear is a
// double free: counted, nothing changes), then Release: fetch_sub(k) on the
// state word. Whoever brings `live` to 0 on a page without its hint bit
// retires it: CAS to {generation + 1, kFreePage, 0} and set its pool bit.
// Clearing the hint bit and the last release are read-modify-writes of one
// word: whichever comes second sees the other, and retires the page.
// A stale reserver still holding a unit makes that CAS fail; its own undo
// then retires the page. Because retiring bumps the generation, a reserver
// that read the page before it was retired and reused can never take a
// block from the page's next life. On the GPU, AllocateCoalesced and
// FreeCoalesced let the lanes of a warp that ask together share one batch
// or one fetch_and.
//
// Invariants:
//   1. A page's pool bit is 1 only while its class is kFreePage, its hint
//      bit is clear and its live count holds no block (transient
//      reservations only, each undone).
//   2. Set bits on a page <= live (bits are set after the reservation and
//      cleared before the release), so a reservation with live <= capacity
//      always finds a clear bit.
//   3. A page a hint names has its hint bit set and stays in its class.
//   4. Pages stay in their class only while they hold blocks or are hints:
//      memory freed in one class is reusable by any class once its page
//      empties. Fragmentation is bounded by one partly used page per class
//      per shard, times the class's shard factor (ShardsFor: an eighth of
//      the arena at most) plus pages
//      kept alive by their last live block. Hint pages are not stranded:
//      with the pool empty, a caller takes what every shard's hint page of
//      its class has left before it comes back short.
//
// What callers must guarantee: Initialize ran (single-threaded, host) over
// zeroed metadata; a pointer passed to Free came from Allocate and is freed
// once (violations are detected and counted as far as the metadata can
// tell; a double free that arrives after the page was emptied and reused
// by the same size class cannot be told from a valid free -- always so when
// the page came back whole to one batch, which sets every bit).
// What they get: Allocate returns a 16-byte aligned block of at least the
// requested size, not overlapping any live block, or null when the arena
// has no room (counted in `failed`); memory freed is reusable.
//
// Memory ordering: device scope throughout (the host reads statistics only
// through copies). A block's bit is set and cleared with acq_rel so that
// the previous owner's writes to the block happen before the next owner's;
// page state words use acq_rel for the same reason across page reuse; the
// hint and pool words are acq_rel (a page's metadata is written before it
// is published). No fences: every decision to retire a page is made by a
// read-modify-write of its state word.
#ifndef GROSR_SLAB_ALLOCATOR_H_
#define GROSR_SLAB_ALLOCATOR_H_

#include "grosr/platform.h"

// Where a CPU stress test may stall or yield a thread, to force the races
// the protocol must survive (a claimant stalled past the waiters' patience,
// a page retired between two steps of its replacement). Nothing elsewhere.
#ifndef GROSR_SLAB_SCHEDULE_POINT
#define GROSR_SLAB_SCHEDULE_POINT(where) ((void)0)
#endif

// Tuning knobs, for experiments only (bench/alloc --define NAME=VALUE
// compiles the benchmark's kernels with another value; the host's layout
// keeps the defaults, which are the measured choices):
//   GROSR_SLAB_FACTOR_BLOCKS_LOG  log2 of SlabAllocator::kFactorBlocks
//   GROSR_SLAB_WAIT_MAX_NS        longest pause of a caller waiting for a
//                                 replacement (kWaitMaxNs)
#ifndef GROSR_SLAB_FACTOR_BLOCKS_LOG
#define GROSR_SLAB_FACTOR_BLOCKS_LOG 8
#endif
#ifndef GROSR_SLAB_WAIT_MAX_NS
#define GROSR_SLAB_WAIT_MAX_NS 1024
#endif

namespace grosr {

struct SlabCounters {
  uint64_t failed;          // allocations that returned null
  uint64_t invalid_frees;   // frees of foreign, misaligned or free blocks
  uint64_t double_frees;    // frees of blocks that were not allocated
  uint64_t pages_in_use;    // pages out of the pool
  uint64_t pages_high_water;
};

struct SlabAllocator {
  static constexpr uint32_t kMinBlock = 16;
  static constexpr uint32_t kMaxClasses = 16;
  // Hint pages per class, at most. Each shard's hint is where its callers
  // contend, and one caller at a time replaces a full one: at 1 KiB a page
  // serves two warps' batches, so a full H200 (32,768 warps) waited on
  // 32,768 / (2 * shards) replacements in series per shard -- 1 KiB blocks
  // at 33 M/s with 8 shards, 360 M/s with 64, 4.4 G/s with 1,024 (H200,
  // 8 GiB pool). The price is one partly used page per class per shard:
  // ShardsFor keeps that within an eighth of the arena. (Classes of few
  // blocks a page get more shards: ShardFactorOf.)
  static constexpr uint32_t kMaxShards = 1024;
  static constexpr uint32_t kFreePage = 0;
  static constexpr uint32_t kLargeHead = 0xfe;
  static constexpr uint32_t kLargeTail = 0xff;
  static constexpr uint64_t kHintBit = uint64_t{1} << 40;
  static constexpr uint32_t kGenerationMask = (1u << 23) - 1;
  // In a hint word: one caller is replacing the page it names.
  static constexpr uint64_t kReplacing = uint64_t{1} << 63;
  // Polls of a claimed hint before a caller takes the replacement over
  // (backing off from 128 ns, or kWaitMaxNs if less, to kWaitMaxNs, 1 us:
  // ~35 us in all, whatever kWaitMaxNs; a replacement takes a few
  // microseconds).
  static constexpr uint32_t kWaitMaxNs = GROSR_SLAB_WAIT_MAX_NS;
  static_assert(kWaitMaxNs >= 1 && kWaitMaxNs <= 32768, "GROSR_SLAB_WAIT_MAX_NS: 1 .. 32768");
  static constexpr uint32_t kReplacementWaits = 4 + 32 * 1024 / kWaitMaxNs;
  static constexpr uint32_t kNotScanning = ~0u;
  // Reasons recorded for a rejected free.
  enum : uint32_t { kFreeOk = 0, kFreeForeign = 1, kFreeMisaligned = 2, kFreeDouble = 3 };

  // Set by the host.
  uint8_t* arena;           // page_count * page_bytes
  uint64_t* page_state;     // [page_count]
  uint64_t* page_bits;      // [page_count * words_per_page]
  uint64_t* pool;           // [pool_words], 1 = free page
  uint64_t* hints;          // [kMaxClasses * shard_count * MaxShardFactor()]
  SlabCounters* counters;
  uint32_t* run_pages;      // [page_count]: a run's length, at its head
  uint32_t page_count;
  uint32_t page_shift;      // log2(page bytes), 12..19 (kMaxClasses)
  uint32_t words_per_page;  // bitmap words per page: blocks of 16 B / 64
  uint32_t pool_words;      // ceil(page_count / 64)
  uint32_t shard_count;     // hints per class: a power of two, 1 .. kMaxShards
  uint32_t max_shard_factor;  // classes of few blocks a page: up to this many
                              // times shard_count hints (power of two; 0 = 1)

  // --- sizes ---------------------------------------------------------------
  GROSR_HD uint64_t page_bytes() const { return uint64_t{1} << page_shift; }
  // Size classes 1.. : block = 16 << (class - 1), up to half a page.
  GROSR_HD uint32_t class_count() const { return page_shift - 4; }
  GROSR_HD static uint64_t BlockBytes(uint32_t cls) { return uint64_t{kMinBlock} << (cls - 1); }
  // A shift, not a 64-bit division (a software routine on the GPU).
  GROSR_HD uint32_t BlocksPerPage(uint32_t cls) const { return 1u << (page_shift - 3 - cls); }
  // The class serving `bytes`, or 0 when it needs whole pages.
  // Bounded by the class count: a huge request (up to 2^64 - 1) cannot make
  // `block` overflow.
  GROSR_HD uint32_t ClassFor(uint64_t bytes) const {
    uint32_t cls = 1;
    for (uint64_t block = kMinBlock; block < bytes; block <<= 1) {
      if (++cls > class_count()) return 0;
    }
    return cls;
  }

  // --- metadata sizes and set-up (host) -------------------------------------
  static GROSR_HD uint32_t WordsPerPage(uint32_t page_shift) {
    return static_cast<uint32_t>((uint64_t{1} << page_shift) / kMinBlock / 64);
  }
  static GROSR_HD uint32_t PoolWords(uint32_t page_count) { return (page_count + 63) / 64; }
  // A class whose page holds fewer than kFactorBlocks blocks fills its hint
  // page after a few warps' batches (a 1 KiB page: two), so its shard's
  // replacements run in series; it gets kFactorBlocks / blocks-a-page times
  // the shards, up to max_shard_factor. Not a class of kWarpBatch blocks a
  // page or fewer (2 KiB and up at 64 KiB pages): a warp's whole batch
  // there takes pages of its own from the pool, past the hint.
  // kDefaultShardFactor is a measured choice (bench/alloc --shard-factor,
  // H200, 1 M threads allocating 1 KiB: 7.2 G/s at 1, 10.2 at 2, 12.4 at 4).
  static constexpr uint32_t kFactorBlocksLog = GROSR_SLAB_FACTOR_BLOCKS_LOG;
  static constexpr uint32_t kFactorBlocks = 1u << kFactorBlocksLog;  // 256
  static constexpr uint32_t kWarpBatchLog = 5;
  static constexpr uint32_t kWarpBatch = 1u << kWarpBatchLog;
  static constexpr uint32_t kDefaultShardFactor = 4;
  static GROSR_HD uint32_t ShardFactorOf(uint32_t blocks_per_page, uint32_t max_factor) {
    const uint32_t most = max_factor > 1 ? max_factor : 1;
    const uint32_t want = blocks_per_page >= kFactorBlocks || blocks_per_page <= kWarpBatch
                              ? 1
                              : kFactorBlocks / blocks_per_page;
    return want < most ? want : most;
  }
  // The max_shard_factor values a layout takes (DeviceSlab, bench/alloc).
  static GROSR_HD constexpr bool IsShardFactor(uint32_t factor) {
    return factor >= 1 && factor <= 8 && (factor & (factor - 1)) == 0;
  }
  GROSR_HD uint32_t MaxShardFactor() const { return max_shard_factor > 1 ? max_shard_factor : 1; }
  GROSR_HD uint32_t ShardsOf(uint32_t cls) const {
    // ShardFactorOf by shifts: kFactorBlocks, kWarpBatch and the blocks a
    // page (2^(page_shift - 3 - cls)) are powers of two, and so is the
    // factor.
    const int32_t blocks_log = static_cast<int32_t>(page_shift - 3 - cls);
    uint32_t factor = blocks_log > int32_t{kWarpBatchLog} && blocks_log < int32_t{kFactorBlocksLog}
                          ? 1u << (kFactorBlocksLog - blocks_log)
                          : 1u;
    if (factor > MaxShardFactor()) factor = MaxShardFactor();
    return shard_count * factor;
  }
  // Shards for an arena: the most (a power of two, up to kMaxShards) whose
  // hint pages, one per class per shard times the class's shard factor
  // (HintPagesAtMost), fill at most an eighth of the pages (8 GiB of 64 KiB
  // pages: 1,024 at factor 1 or 4; 4 GiB: 512; 256 MiB: 32), at least one.
  static GROSR_HD uint32_t ShardsFor(uint32_t page_count, uint32_t page_shift,
                                     uint32_t max_factor = 1) {
    const uint64_t limit = page_count / (8 * HintPagesAtMost(1, page_shift, max_factor));
    uint32_t shards = 1;
    while (shards < kMaxShards && 2 * uint64_t{shards} <= limit) shards *= 2;
    return shards;
  }
  // The most pages hints can name (the fragmentation bound): one per shard
  // of every class, times the class's shard factor.
  static GROSR_HD uint64_t HintPagesAtMost(uint32_t shard_count, uint32_t page_shift,
                                           uint32_t max_factor) {
    uint64_t pages = 0;
    for (uint32_t cls = 1; cls <= page_shift - 4; ++cls) {
      pages += uint64_t{shard_count} * ShardFactorOf(1u << (page_shift - 3 - cls), max_factor);
    }
    return pages;
  }
  // Hint words: kMaxClasses * shard_count * MaxShardFactor(), a class's
  // ShardsOf(cls) of them from cls * shard_count * MaxShardFactor().
  GROSR_HD uint64_t* HintOf(uint32_t cls, uint32_t shard) const {
    return &hints[cls * shard_count * MaxShardFactor() + (shard & (ShardsOf(cls) - 1))];
  }

  // Single-threaded, over zeroed metadata: every page free.
  GROSR_HD void Initialize() const {
    for (uint32_t w = 0; w < pool_words; ++w) {
      uint32_t pages = page_count - w * 64;
      pool[w] = pages >= 64 ? ~uint64_t{0} : ((uint64_t{1} << pages) - 1);
    }
  }

  // --- state words ------------------------------------------------------------
  static GROSR_HD uint32_t GenerationOf(uint64_t s) { return static_cast<uint32_t>(s >> 41); }
  static GROSR_HD bool IsHintState(uint64_t s) { return (s & kHintBit) != 0; }
  static GROSR_HD uint32_t ClassOf(uint64_t s) { return static_cast<uint32_t>(s >> 32) & 0xff; }
  static GROSR_HD uint32_t LiveOf(uint64_t s) { return static_cast<uint32_t>(s); }
  static GROSR_HD uint64_t MakeState(uint32_t generation, uint32_t cls, uint32_t live) {
    return (uint64_t{generation & kGenerationMask} << 41) | (uint64_t{cls} << 32) | live;
  }

  // --- allocation ---------------------------------------------------------------
  // `shard` spreads callers over hint pages (e.g. the SM or warp index);
  // `salt` spreads them over pool words (e.g. the lane or thread index).
  GROSR_HD void* Allocate(uint64_t bytes, uint32_t shard, uint32_t salt) const {
    void* block = nullptr;
    return AllocateBatch(bytes, 1, shard, salt, &block) == 1 ? block : nullptr;
  }

  // Up to `want` (1..64) blocks of `bytes` each for one caller that serves
  // several (a warp's leader serving its lanes): one reservation on a page's
  // state word for all of them and one fetch_or per bitmap word touched,
  // where Allocate spends one of each per block. Writes the blocks to
  // out[0, n) and returns n; n < want only when the arena has no room (each
  // missing block counted in `failed`). Requests above half a page take a
  // run of pages each.
  GROSR_HD uint32_t AllocateBatch(uint64_t bytes, uint32_t want, uint32_t shard, uint32_t salt,
                                  void** out) const {
    BlockPointers sink{out};
    return AllocateBatchInto(bytes, want, shard, salt, sink);
  }

  // Where a batch's blocks go, a bitmap word's worth at a time: Add(first,
  // bits, block_bytes) hands over the blocks first + i * block_bytes for
  // each set bit i of bits; AddPointer one block. BlockPointers writes a
  // pointer per block; AllocateCoalesced keeps the first words in
  // registers (BlockRuns), where a pointer per block lived in local memory
  // (a full H200 allocating 16 B blocks: 39% of its memory requests were
  // local spills, ncu, this session).
  struct BlockPointers {
    void** out;
    uint32_t n = 0;
    GROSR_HD GROSR_INLINE void Add(uint8_t* first, uint64_t bits, uint64_t block_bytes) {
      while (bits != 0) {
        const uint64_t bit = bits & (~bits + 1);
        bits ^= bit;
        out[n++] = first + Log2(bit) * block_bytes;
      }
    }
    GROSR_HD GROSR_INLINE void AddPointer(void* block) { out[n++] = block; }
  };

  template <typename Sink>
  GROSR_HD uint32_t AllocateBatchInto(uint64_t bytes, uint32_t want, uint32_t shard, uint32_t salt,
                                      Sink& sink) const {
    if (bytes == 0) bytes = 1;
    const uint32_t cls = ClassFor(bytes);
    uint32_t got = 0;
    if (cls == 0) {
      for (; got < want; ++got) {
        void* run = AllocatePages(bytes, salt + got);
        if (run == nullptr) {
          // AllocatePages counted this one; the rest are missing too.
          if (want - got > 1) DeviceAtomic64(counters->failed).fetch_add(want - got - 1, kRelaxed);
          break;
        }
        sink.AddPointer(run);
      }
      return got;
    }
    // A batch that fills whole pages takes them for itself: through the
    // hint, every caller of the shard would wait for one replacement per
    // page. (The hint path serves, or counts, what the pool cannot.)
    const uint32_t capacity = BlocksPerPage(cls);
    while (want - got >= capacity) {
      uint32_t page;
      if (!TakePoolPages(1, salt + shard * 7919u + got, &page)) break;
      got += TakeWholePage(page, cls, sink);
    }
    DeviceAtomic64 hint(*HintOf(cls, shard));
    // No attempt limit: a short batch only when the pool is empty and the
    // hint did not move (a bounded loop returned null under a full grid's
    // contention while pages were free). Each failed round means another
    // thread took blocks or replaced the hint: lock-free, not wait-free.
    // One call site of TakeBlocks (inlined: a second copy made the churn
    // kernel spill more and run 25-40% slower, A/B this session): the page
    // to take from is the hint's, or, once the pool ran dry, each hint page
    // of the class in turn (NextHintOfClass; `scan` counts the shards
    // looked at, kNotScanning before).
    uint32_t waits = 0;
    uint32_t scan = kNotScanning;
    uint64_t borrowed = 0;  // page + 1
    while (got < want) {
      const uint64_t h = scan == kNotScanning ? hint.load(kAcquire) : 0;
      const uint64_t named = h & ~kReplacing;
      const uint64_t target = scan == kNotScanning ? named : borrowed;
      if (target != 0) {
        const uint32_t page = static_cast<uint32_t>(target - 1);
        const uint64_t seen = DeviceAtomic64(page_state[page]).load(kAcquire);
        // Not in the class: the hint moved on and the page was reused.
        if (ClassOf(seen) == cls) {
          got += TakeBlocks(page, cls, GenerationOf(seen), want - got, sink);
          if (got == want) break;
        }
      }
      if (scan != kNotScanning) {
        borrowed = NextHintOfClass(cls, shard, &scan);
        if (borrowed == 0) break;  // every hint page tried: short
        continue;
      }
      // The hint page is full (or gone). If another thread replaced the
      // hint meanwhile, try its page.
      if (hint.load(kAcquire) != h) continue;
      const uint64_t claimed = h | kReplacing;
      if (h == claimed) {
        // Another caller is replacing the page: wait for it.
        if (++waits <= kReplacementWaits) {
          SpinPause(waits < 5 && (64u << waits) < kWaitMaxNs ? 64u << waits : kWaitMaxNs);
          continue;
        }
        waits = 0;  // too long: replace it ourselves (whoever publishes first wins)
      } else {
        GROSR_SLAB_SCHEDULE_POINT(0);  // others may claim between the check and ours
        uint64_t expected = h;
        if (!hint.compare_exchange_strong(expected, claimed, kAcqRel, kAcquire)) continue;
      }
      GROSR_SLAB_SCHEDULE_POINT(1);  // a claimant stalls: others take over
      uint32_t fresh;
      if (!TakePoolPages(1, salt + shard * 7919u, &fresh)) {
        // No page: withdraw the claim -- unless the hint moved meanwhile,
        // when its page may have room -- and take what other shards' hint
        // pages hold, or come back short.
        uint64_t expected = claimed;
        if (!hint.compare_exchange_strong(expected, named, kAcqRel, kAcquire)) continue;
        scan = 0;
        borrowed = NextHintOfClass(cls, shard, &scan);
        if (borrowed == 0) break;
        continue;
      }
      MarkHintPage(fresh, cls);
      GROSR_SLAB_SCHEDULE_POINT(2);
      uint64_t expected = claimed;
      if (!hint.compare_exchange_strong(expected, uint64_t{fresh} + 1, kAcqRel, kAcquire)) {
        // Another caller published first (it took over, or the hint moved
        // on): give the fresh page back.
        UnmarkHintPage(fresh);
        continue;
      }
      GROSR_SLAB_SCHEDULE_POINT(3);
      // The hint no longer names the old page: it may be retired now.
      if (named != 0) UnmarkHintPage(static_cast<uint32_t>(named - 1));
      // The next round takes from the fresh page through the hint.
    }
    if (got < want) DeviceAtomic64(counters->failed).fetch_add(want - got, kRelaxed);
    return got;
  }

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
  // A batch's blocks as a warp's leader holds them for AllocateCoalesced:
  // the first two Adds in registers (one fetch_or's winnings or one whole
  // page each; a batch of 32 blocks up to 1 KiB from an uncontended page
  // takes one or two), what follows as pointers (whole pages of 8 KiB and
  // up, words won piecemeal under contention).
  // Plain fields, not arrays: an array indexed by a count lives in local
  // memory.
  struct BlockRuns {
    void** overflow;  // [32]
    uint8_t* first0 = nullptr;
    uint8_t* first1 = nullptr;
    uint64_t bits0 = 0, bits1 = 0;
    uint32_t spilled = 0;
    __device__ GROSR_INLINE void Add(uint8_t* first, uint64_t bits, uint64_t block_bytes) {
      if (bits0 == 0) {
        first0 = first;
        bits0 = bits;
      } else if (bits1 == 0) {
        first1 = first;
        bits1 = bits;
      } else {
        BlockPointers more{overflow + spilled};
        more.Add(first, bits, block_bytes);
        spilled += more.n;
      }
    }
    __device__ GROSR_INLINE void AddPointer(void* block) { overflow[spilled++] = block; }
  };

  // Every calling lane gets its own block of its own size (or null when the
  // arena is full). Lanes that call together and need the same size class
  // share one AllocateBatchInto made by the lowest of them (a lone lane
  // makes its own), so a warp of 32 same-size requests costs about two
  // atomics, not 64. `shard` as for Allocate (e.g. the warp or SM index).
  // Device only: warp intrinsics.
  __device__ void* AllocateCoalesced(uint64_t bytes, uint32_t shard) const {
    const unsigned lane = LaneId();
    const unsigned active = __activemask();
    const uint32_t cls = ClassFor(bytes == 0 ? 1 : bytes);
    const unsigned peers = __match_any_sync(active, cls);
    const unsigned n = __popc(peers);
    // Runs of pages: each lane its own size. (Through AllocateBatch, the
    // kernel would hold a second copy of the whole path.)
    if (cls == 0) return AllocatePages(bytes, shard * 32 + lane);
    const unsigned leader = __ffs(peers) - 1;
    const unsigned rank = __popc(peers & ((1u << lane) - 1u));
    const uint64_t block_bytes = BlockBytes(cls);
    void* overflow[32];
    BlockRuns runs{overflow};
    uint32_t got = 0;
    // Any peer's size serves: they share the class.
    if (lane == leader) got = AllocateBatchInto(block_bytes, n, shard, shard * 32 + lane, runs);
    got = __shfl_sync(peers, got, leader);
    // Peer `rank` takes the rank-th block: in the first run's bits, the
    // second's, then the overflow's pointers.
    void* mine = nullptr;
    uint32_t r = rank < got ? rank : 64;
    const uint64_t bits0 = __shfl_sync(peers, runs.bits0, leader);
    const uint64_t first0 = __shfl_sync(peers, reinterpret_cast<uint64_t>(runs.first0), leader);
    const uint32_t count0 = PopCount(bits0);
    if (r < count0) {
      mine = reinterpret_cast<uint8_t*>(first0) + NthSetBit(bits0, r) * block_bytes;
    }
    r -= count0;  // wraps for the lanes served: no later test matches
    const uint64_t bits1 = __shfl_sync(peers, runs.bits1, leader);
    const uint64_t first1 = __shfl_sync(peers, reinterpret_cast<uint64_t>(runs.first1), leader);
    const uint32_t count1 = PopCount(bits1);
    if (r < count1) {
      mine = reinterpret_cast<uint8_t*>(first1) + NthSetBit(bits1, r) * block_bytes;
    }
    r -= count1;
    const uint32_t spilled = __shfl_sync(peers, runs.spilled, leader);
    for (uint32_t i = 0; i < spilled; ++i) {
      const uint64_t block = __shfl_sync(
          peers, reinterpret_cast<uint64_t>(lane == leader ? overflow[i] : nullptr), leader);
      if (r == i) mine = reinterpret_cast<void*>(block);
    }
    // The shuffles order nothing: this makes the leader's acquire of the
    // blocks (previous owners' writes) hold for every lane that uses one.
    __syncwarp(peers);
    return mine;
  }
#endif

  // --- free ---------------------------------------------------------------------
  // Returns kFreeOk or the reason the pointer was refused (counted).
  GROSR_HD uint32_t Free(void* pointer) const {
    if (pointer == nullptr) return kFreeOk;
    return FreeLocated(Locate(pointer));
  }

  // Where a pointer's block lives. status: kFreeOk (a block of a size class:
  // page, bitmap word index, bit), kLocatedRun (the head of a page run:
  // page, offset, seen), or the reason to refuse it (not counted yet).
  static constexpr uint32_t kLocatedRun = 0x10;
  struct Located {
    uint32_t status;
    uint32_t page;
    uint64_t offset;  // from the arena's start
    uint64_t seen;    // the page's state word when looked at
    uint64_t word;    // index into page_bits
    uint64_t bit;
  };
  GROSR_HD Located Locate(const void* pointer) const {
    Located at{kFreeOk, 0, 0, 0, 0, 0};
    const uint8_t* p = static_cast<const uint8_t*>(pointer);
    if (p < arena || p >= arena + (uint64_t{page_count} << page_shift)) {
      at.status = kFreeForeign;
      return at;
    }
    at.offset = static_cast<uint64_t>(p - arena);
    at.page = static_cast<uint32_t>(at.offset >> page_shift);
    at.seen = DeviceAtomic64(page_state[at.page]).load(kAcquire);
    const uint32_t cls = ClassOf(at.seen);
    if (cls == kLargeHead) {
      at.status = kLocatedRun;
      return at;
    }
    if (cls == kFreePage || cls == kLargeTail || cls > class_count()) {
      at.status = cls == kFreePage ? kFreeDouble : kFreeMisaligned;
      return at;
    }
    const uint64_t in_page = at.offset & (page_bytes() - 1);
    const uint64_t block_bytes = BlockBytes(cls);
    if (in_page % block_bytes != 0) {
      at.status = kFreeMisaligned;
      return at;
    }
    const uint64_t block = in_page / block_bytes;
    at.bit = uint64_t{1} << (block % 64);
    at.word = uint64_t{at.page} * words_per_page + block / 64;
    return at;
  }

  // Free of a block Locate found (or the refusal of what it did not).
  GROSR_HD uint32_t FreeLocated(const Located& at) const {
    if (at.status == kLocatedRun) return FreePages(at.page, at.offset, at.seen);
    if (at.status != kFreeOk) return Refuse(at.status);
    const uint64_t before = FreeBits(at.page, at.word, at.bit);
    return (before & at.bit) != 0 ? kFreeOk : Refuse(kFreeDouble);
  }

  // Clears `bits` (blocks of one page, in bitmap word `word`) with one
  // fetch_and and releases as many units as were set. Returns the word as
  // it was: a bit of `bits` clear there was not allocated (a double free,
  // for the caller to refuse).
  GROSR_HD uint64_t FreeBits(uint32_t page, uint64_t word, uint64_t bits) const {
    const uint64_t before = DeviceAtomic64(page_bits[word]).fetch_and(~bits, kAcqRel);
    const uint64_t freed = before & bits;
    if (freed != 0) Release(page, PopCount(freed));
    return before;
  }

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
  // Free from every calling lane. Lanes whose blocks share a bitmap word
  // clear their bits with one fetch_and and one release (the lowest of them
  // does it), so a warp freeing the blocks one AllocateCoalesced gave it
  // does not contend on that word 32 times. The same checks and results as
  // Free, lane by lane (two lanes freeing one block: one of them frees it,
  // the other gets a double free; which one is unspecified). Device only:
  // warp intrinsics.
  __device__ uint32_t FreeCoalesced(void* pointer) const {
    const unsigned lane = LaneId();
    const unsigned active = __activemask();
    const Located at = pointer != nullptr ? Locate(pointer) : Located{kFreeForeign, 0, 0, 0, 0, 0};
    const bool small = pointer != nullptr && at.status == kFreeOk;
    // Lanes that do not free a class block get keys no other lane has.
    const unsigned long long key = small ? at.word : ~0ull - lane;
    // Scattered frees (no lane's word is its lower neighbour's, e.g. blocks
    // freed in random order) go lane by lane: the matching below costs more
    // than it saves when no two lanes share a word (alloc bench run J:
    // random-order free 1.2-1.7x slower with it). Lanes that share a word
    // without being neighbours then free it separately: correct, just not
    // combined.
    if (active == 0xffffffffu) {
      const unsigned long long below = __shfl_up_sync(active, key, 1);
      if (__ballot_sync(active, lane > 0 && below == key) == 0) {
        return pointer == nullptr ? kFreeOk : FreeLocated(at);
      }
    }
    const unsigned peers = __match_any_sync(active, key);
    if (pointer == nullptr) return kFreeOk;
    if (!small) return FreeLocated(at);
    // Two lanes with one block: only the lowest frees it.
    const unsigned same_block = __match_any_sync(peers, at.bit);
    const bool first = lane == static_cast<unsigned>(__ffs(same_block) - 1);
    const unsigned leader = __ffs(peers) - 1;
    const uint64_t mine = first ? at.bit : 0;
#if __CUDA_ARCH__ >= 800
    const uint64_t bits =
        static_cast<uint64_t>(__reduce_or_sync(peers, static_cast<unsigned>(mine))) |
        (static_cast<uint64_t>(__reduce_or_sync(peers, static_cast<unsigned>(mine >> 32))) << 32);
#else
    uint64_t bits = 0;  // no warp reductions before sm_80
    for (unsigned m = peers; m != 0; m &= m - 1) bits |= __shfl_sync(peers, mine, __ffs(m) - 1);
#endif
    // Every lane's writes to its block come before the leader's release
    // (the shuffles and reductions above order no memory).
    __syncwarp(peers);
    uint64_t before = 0;
    if (lane == leader) before = FreeBits(at.page, at.word, bits);
    before = __shfl_sync(peers, before, leader);
    return first && (before & at.bit) != 0 ? kFreeOk : Refuse(kFreeDouble);
  }
#endif

  // The lowest `n` set bits of `bits` (all of them if it has fewer).
  GROSR_HD static uint64_t LowestBits(uint64_t bits, uint32_t n) {
    if (n >= PopCount(bits)) return bits;
    return bits & ((uint64_t{1} << NthSetBit(bits, n)) - 1);  // n < 64 here
  }

  // The position of bit number n (0-based, from the lowest) among the set
  // bits; n < PopCount(bits). A binary search by population count: six
  // steps, the same code on the GPU and in the CPU tests.
  GROSR_HD static uint32_t NthSetBit(uint64_t bits, uint32_t n) {
    uint32_t position = 0;
    GROSR_UNROLL
    for (uint32_t width = 32; width > 0; width >>= 1) {
      const uint32_t below = PopCount(bits & ((uint64_t{1} << width) - 1));
      if (n >= below) {
        n -= below;
        bits >>= width;
        position += width;
      }
    }
    return position;
  }

  GROSR_HD static uint32_t PopCount(uint64_t bits) {
#if GROSR_ON_DEVICE
    return static_cast<uint32_t>(__popcll(bits));
#elif defined(__CUDACC_RTC__)
    uint32_t n = 0;
    for (; bits != 0; bits &= bits - 1) ++n;
    return n;
#else
    return static_cast<uint32_t>(__builtin_popcountll(bits));
#endif
  }

  // --- internals -----------------------------------------------------------
  GROSR_HD uint32_t Refuse(uint32_t reason) const {
    if (reason == kFreeDouble) {
      DeviceAtomic64(counters->double_frees).fetch_add(1, kRelaxed);
    } else {
      DeviceAtomic64(counters->invalid_frees).fetch_add(1, kRelaxed);
    }
    return reason;
  }

  // Reserves up to `want` blocks on `page` (class `cls`, generation
  // `generation`) with one fetch_add, gives back what the page could not
  // hold, and sets that many bits, as many per fetch_or as a word has
  // clear. Hands the blocks to sink (BlockPointers, BlockRuns); returns how
  // many (0: page full or no longer that page).
  template <typename Sink>
  GROSR_HD uint32_t TakeBlocks(uint32_t page, uint32_t cls, uint32_t generation, uint32_t want,
                               Sink& sink) const {
    DeviceAtomic64 state(page_state[page]);
    const uint64_t before = state.fetch_add(want, kAcqRel);
    const uint32_t capacity = BlocksPerPage(cls);
    if (GenerationOf(before) != (generation & kGenerationMask) || ClassOf(before) != cls ||
        LiveOf(before) >= capacity) {
      Release(page, want);
      return 0;
    }
    const uint32_t room = capacity - LiveOf(before);
    const uint32_t granted = want < room ? want : room;
    // The excess goes back while we still hold `granted`: it cannot empty
    // the page.
    if (granted < want) Release(page, want - granted);
    GROSR_SLAB_SCHEDULE_POINT(6);
    // `granted` clear bits exist (invariant 2); others may take those we see.
    const uint32_t words = (capacity + 63) / 64;
    uint64_t* bits = page_bits + uint64_t{page} * words_per_page;
    uint8_t* const base = arena + (uint64_t{page} << page_shift);
    const uint64_t block_bytes = BlockBytes(cls);
    uint32_t got = 0;
    // Where to look first: this reservation's place in the page's count.
    // Callers that reserve one after another (a page filling up, as every
    // page does after it emptied) then set disjoint bits with one fetch_or
    // each. Started from a salt, a shard's warps all raced for the lowest
    // clear bits of one or two words (16 B at 65,536 threads: 0.9 G/s).
    const uint32_t place = LiveOf(before);
    for (uint32_t round = 0; got < granted; ++round) {
      const uint32_t w = (place / 64 + round) % words;
      DeviceAtomic64 word(bits[w]);
      uint64_t value = word.load(kRelaxed);
      const uint32_t valid = capacity - w * 64 >= 64 ? 64 : capacity - w * 64;
      const uint64_t mask = valid == 64 ? ~uint64_t{0} : ((uint64_t{1} << valid) - 1);
      // In the first word, the bits from our place on come first.
      const uint64_t preferred = round == 0 ? ~uint64_t{0} << (place % 64) : ~uint64_t{0};
      while (got < granted && (~value & mask) != 0) {
        // (granted - got) clear bits, the lowest preferred ones first, in
        // one fetch_or.
        const uint64_t free_bits = ~value & mask;
        uint64_t take = LowestBits(free_bits & preferred, granted - got);
        const uint32_t taken = PopCount(take);
        if (taken < granted - got) take |= LowestBits(free_bits & ~preferred, granted - got - taken);
        const uint64_t prior = word.fetch_or(take, kAcqRel);
        const uint64_t won = take & ~prior;  // bits set by us, not by a racer
        if (won != 0) {
          sink.Add(base + uint64_t{w} * 64 * block_bytes, won, block_bytes);
          got += PopCount(won);
        }
        value = prior | take;
      }
      if (round > 0 && round % words == 0) SpinPause(32);
    }
    return got;
  }

  // Gives back `units` of `live`; retires the page if that emptied it and
  // no hint names it (one that does keeps it; clearing its hint bit then
  // retires it: UnmarkHintPage).
  GROSR_HD void Release(uint32_t page, uint32_t units = 1) const {
    const uint64_t before = DeviceAtomic64(page_state[page]).fetch_sub(units, kAcqRel);
    GROSR_SLAB_SCHEDULE_POINT(4);
    if (LiveOf(before) == units && !IsHintState(before)) {
      const uint32_t cls = ClassOf(before);
      if (cls != kFreePage && cls <= class_count()) RetireIfEmpty(page, GenerationOf(before), cls);
    }
  }

  // A fresh page from the pool becomes a page of `cls` that a hint is about
  // to name. Keeps transient reservations in `live`.
  GROSR_HD void MarkHintPage(uint32_t page, uint32_t cls) const {
    DeviceAtomic64(page_state[page]).fetch_add((uint64_t{cls} << 32) | kHintBit, kAcqRel);
  }

  // After a hint stopped naming `page` (or never got to): clears its hint
  // bit, and retires it if it holds no block. Of this and the last Release,
  // whichever comes second sees the other (one word), so an emptied page
  // is always retired.
  GROSR_HD void UnmarkHintPage(uint32_t page) const {
    const uint64_t before = DeviceAtomic64(page_state[page]).fetch_sub(kHintBit, kAcqRel);
    GROSR_SLAB_SCHEDULE_POINT(5);
    if (LiveOf(before) == 0) RetireIfEmpty(page, GenerationOf(before), ClassOf(before));
  }

  // Returns an empty page with no hint bit to the pool.
  GROSR_HD void RetireIfEmpty(uint32_t page, uint32_t generation, uint32_t cls) const {
    uint64_t expected = MakeState(generation, cls, 0);
    // Fails while anyone holds a unit (their Release retries), while a hint
    // names it, or if the page moved on.
    if (!DeviceAtomic64(page_state[page])
             .compare_exchange_strong(expected, MakeState(generation + 1, kFreePage, 0),
                                      kAcqRel, kRelaxed)) {
      return;
    }
    ReturnPoolPages(page, 1);
  }

  // A page from the pool, all of it for the caller (a batch of at least a
  // page's blocks, so at most 64): its class, every block live, every bit
  // set (fetch_or: a stale double free racing with this is refused, not
  // overwritten). Hands them to sink (one Add); returns how many.
  template <typename Sink>
  GROSR_HD uint32_t TakeWholePage(uint32_t page, uint32_t cls, Sink& sink) const {
    const uint32_t capacity = BlocksPerPage(cls);
    DeviceAtomic64(page_state[page]).fetch_add((uint64_t{cls} << 32) + capacity, kAcqRel);
    const uint64_t all = capacity >= 64 ? ~uint64_t{0} : ((uint64_t{1} << capacity) - 1);
    DeviceAtomic64(page_bits[uint64_t{page} * words_per_page]).fetch_or(all, kAcqRel);
    sink.Add(arena + (uint64_t{page} << page_shift), all, BlockBytes(cls));
    return capacity;
  }

  GROSR_HD static uint32_t Log2(uint64_t power_of_two) {
#if GROSR_ON_DEVICE
    return static_cast<uint32_t>(__ffsll(static_cast<long long>(power_of_two)) - 1);
#elif defined(__CUDACC_RTC__)
    uint32_t n = 0;
    while (power_of_two > 1) {
      power_of_two >>= 1;
      ++n;
    }
    return n;
#else
    return static_cast<uint32_t>(__builtin_ctzll(power_of_two));
#endif
  }

  // With the pool empty, a caller takes what the class's hint pages of
  // every shard hold, so that a shard whose page filled does not go short
  // while another's has room: this is the next hint page of the class, as
  // page + 1, looking at shards from the caller's own on (callers that run
  // dry together start apart); 0 once every shard was looked at. Each hint
  // looked at once (a page replaced meanwhile is missed: the pool was
  // empty, so its replacement came from a free). Whether a page has room
  // is left to TakeBlocks' read-modify-write: a plain load of its count can
  // see a racer's reservation that is about to be undone.
  GROSR_HD uint64_t NextHintOfClass(uint32_t cls, uint32_t shard, uint32_t* scan) const {
    const uint32_t shards = ShardsOf(cls);
    while (*scan < shards) {
      const uint64_t named =
          DeviceAtomic64(*HintOf(cls, shard + (*scan)++)).load(kAcquire) & ~kReplacing;
      if (named == 0) continue;
      const uint64_t seen = DeviceAtomic64(page_state[named - 1]).load(kAcquire);
      if (ClassOf(seen) == cls) return named;
    }
    return 0;
  }

  // Takes `count` (1..64) consecutive free pages from one pool word.
  GROSR_HD bool TakePoolPages(uint32_t count, uint32_t salt, uint32_t* first) const {
    const uint64_t run = count == 64 ? ~uint64_t{0} : ((uint64_t{1} << count) - 1);
    for (uint32_t i = 0; i < pool_words; ++i) {
      const uint32_t w = (salt + i) % pool_words;
      DeviceAtomic64 word(pool[w]);
      uint64_t value = word.load(kAcquire);
      while (value != 0) {
        int found = -1;
        for (uint32_t shift = 0; shift + count <= 64; ++shift) {
          if (((value >> shift) & run) == run) {
            found = static_cast<int>(shift);
            break;
          }
        }
        if (found < 0) break;
        const uint64_t mask = run << found;
        if (word.compare_exchange_weak(value, value & ~mask, kAcqRel, kAcquire)) {
          *first = w * 64 + static_cast<uint32_t>(found);
          CountPages(count);
          return true;
        }
      }
    }
    return false;
  }

  GROSR_HD void ReturnPoolPages(uint32_t first, uint32_t count) const {
    const uint64_t run = count == 64 ? ~uint64_t{0} : ((uint64_t{1} << count) - 1);
    DeviceAtomic64(pool[first / 64]).fetch_or(run << (first % 64), kAcqRel);
    DeviceAtomic64(counters->pages_in_use).fetch_sub(count, kRelaxed);
  }

  GROSR_HD void CountPages(uint32_t count) const {
    const uint64_t now = DeviceAtomic64(counters->pages_in_use).fetch_add(count, kRelaxed) + count;
    DeviceAtomic64 high(counters->pages_high_water);
    // One atomic max, only when it would raise the mark (a CAS loop here
    // retried under a GPU's worth of page takes).
    if (high.load(kRelaxed) < now) high.fetch_max(now, kRelaxed);
  }

  // Requests above half a page: a run of whole pages within one pool word.
  GROSR_HD void* AllocatePages(uint64_t bytes, uint32_t salt) const {
    // Checked before rounding up: bytes + page_bytes() - 1 wraps for sizes
    // near 2^64 and would ask for a small run.
    const uint64_t pages =
        bytes > (uint64_t{64} << page_shift) ? 65 : (bytes + page_bytes() - 1) >> page_shift;
    uint32_t first;
    if (pages > 64 || !TakePoolPages(static_cast<uint32_t>(pages), salt, &first)) {
      DeviceAtomic64(counters->failed).fetch_add(1, kRelaxed);
      return nullptr;
    }
    for (uint32_t i = 1; i < pages; ++i) {
      DeviceAtomic64(page_state[first + i]).fetch_add(uint64_t{kLargeTail} << 32, kAcqRel);
    }
    // The run length, then the head's class, which publishes it. (Its
    // bitmap stays clear: a free that took this page for a page of blocks
    // finds no bit to clear and is refused.)
    DeviceAtomic32(run_pages[first]).store(static_cast<uint32_t>(pages), kRelaxed);
    DeviceAtomic64(page_state[first]).fetch_add(uint64_t{kLargeHead} << 32, kAcqRel);
    return arena + (uint64_t{first} << page_shift);
  }

  GROSR_HD uint32_t FreePages(uint32_t page, uint64_t offset, uint64_t seen) const {
    if ((offset & (page_bytes() - 1)) != 0) return Refuse(kFreeMisaligned);
    const uint32_t pages = DeviceAtomic32(run_pages[page]).load(kAcquire);
    // Head -> free, generation + 1: exactly one free wins. `live` holds
    // only transient units of stale reservers here; they are kept.
    DeviceAtomic64 head(page_state[page]);
    uint64_t current = seen;
    for (;;) {
      if (ClassOf(current) != kLargeHead || GenerationOf(current) != GenerationOf(seen)) {
        return Refuse(kFreeDouble);
      }
      if (head.compare_exchange_weak(
              current, MakeState(GenerationOf(seen) + 1, kFreePage, LiveOf(current)), kAcqRel,
              kRelaxed)) {
        break;
      }
    }
    for (uint32_t i = 1; i < pages; ++i) {
      // Generation + 1 and class kLargeTail -> kFreePage in one add.
      DeviceAtomic64(page_state[page + i])
          .fetch_add(MakeState(1, 0, 0) - (uint64_t{kLargeTail} << 32), kAcqRel);
    }
    ReturnPoolPages(page, pages);
    return kFreeOk;
  }
};

// What the allocator holds, computed from a copy of the page state words
// (the host reads them while the runtime runs; nothing is counted on the
// allocation path). `live` counts may include transient reservations.
struct SlabUsage {
  uint64_t blocks[SlabAllocator::kMaxClasses];  // live blocks per class (index = class)
  uint64_t bytes_in_use;   // blocks * block size + large runs
  uint64_t class_pages;    // pages serving a size class
  uint64_t large_pages;    // pages in large runs
  uint64_t free_pages;
};

GROSR_HD inline SlabUsage MeasureSlabUsage(const uint64_t* states, uint32_t page_count,
                                           uint32_t page_shift) {
  SlabUsage usage{};
  for (uint32_t page = 0; page < page_count; ++page) {
    const uint64_t s = states[page];
    const uint32_t cls = SlabAllocator::ClassOf(s);
    if (cls == SlabAllocator::kFreePage) {
      ++usage.free_pages;
    } else if (cls == SlabAllocator::kLargeHead || cls == SlabAllocator::kLargeTail) {
      ++usage.large_pages;
      usage.bytes_in_use += uint64_t{1} << page_shift;
    } else if (cls < SlabAllocator::kMaxClasses) {
      ++usage.class_pages;
      usage.blocks[cls] += SlabAllocator::LiveOf(s);
      usage.bytes_in_use += SlabAllocator::LiveOf(s) * SlabAllocator::BlockBytes(cls);
    }
  }
  return usage;
}

}  // namespace grosr

#endif  // GROSR_SLAB_ALLOCATOR_H_
