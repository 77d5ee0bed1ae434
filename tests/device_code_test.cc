// The device code chain without a GPU: the scheduler kernel and every
// example task compile and link through the JIT; the loader's rules refuse
// what would misbehave once loaded, naming the rule, the symbol and the line.
#include "host/device_code.h"
#include "runtime/device_sources.h"

#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <regex>
#include <fstream>
#include <sstream>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace grosr {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;
using ::testing::Not;

std::unique_ptr<Compiler> MakeCompiler() {
  Compiler::Options options;
  const char* tmp = std::getenv("TEST_TMPDIR");
  options.cache_dir = absl::StrCat(tmp ? tmp : "/tmp", "/device-code-cache-", getpid());
  auto compiler = Compiler::Create(options);
  EXPECT_TRUE(compiler.ok()) << compiler.status();
  return std::move(*compiler);
}

class DeviceCodeTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    compiler_ = MakeCompiler().release();
    auto image = BuildSchedulerImage(*compiler_, target_);
    ASSERT_TRUE(image.ok()) << image.status();
    kernel_registers_ = image->kernel_registers;
    // As the Runtime does: the scheduler's frames around a task count.
    target_.scheduler_stack_bytes = image->StackAroundTask();
    service_stack_bytes_ = image->service_stack_bytes;
  }
  static void TearDownTestSuite() { delete compiler_; }

  absl::StatusOr<TaskModuleImage> Build(const std::string& name,
                                        const std::string& source) {
    return BuildTaskModule(*compiler_, target_, kernel_registers_, name, source);
  }

  static inline Compiler* compiler_ = nullptr;
  static inline DeviceCodeTarget target_;
  static inline uint32_t kernel_registers_ = 0;
  static inline uint32_t service_stack_bytes_ = 0;
};

TEST_F(DeviceCodeTest, KernelReservesItsRegisterBudget) {
  // ptxas gives ABI functions at most budget - 2 registers; the kernel's own
  // code needs far fewer, so only the reservation makes it reach that.
  const uint32_t budget = target_.register_budget;
  EXPECT_GE(kernel_registers_, budget - 2);
  EXPECT_LE(kernel_registers_, budget);
  DeviceCodeTarget wide = target_;
  wide.register_budget = 128;
  auto image = BuildSchedulerImage(*compiler_, wide);
  ASSERT_TRUE(image.ok()) << image.status();
  EXPECT_GE(image->kernel_registers, 126u);
}

// The worker loop's registers live across the task call: when they do not
// fit the budget, ptxas spills them to local memory, and on the GPU an
// acquire load's L1 invalidation sends those reloads to L2 (run K: the
// spawn chain 12% and tiny tasks 22-26% slower with 90 bytes of spills).
TEST_F(DeviceCodeTest, SchedulerKernelDoesNotSpill) {
  CompileOptions options = DeviceCompileOptions(target_);
  options.extra_options.push_back("--ptxas-options=-v");
  std::string source;
  for (const EmbeddedSource& s : DeviceSources()) {
    if (std::string(s.name) == "scheduler_kernel.cu") source = s.text;
  }
  ASSERT_FALSE(source.empty());
  auto unit = compiler_->Compile("grosr/scheduler_kernel.cu", source, options);
  ASSERT_TRUE(unit.ok()) << unit.status();
  // "Function properties for grosr_scheduler" and, on the next line,
  // "... N bytes stack frame, S bytes spill stores, L bytes spill loads".
  const std::regex properties(
      "Function properties for grosr_scheduler\n[^\n]*?(\\d+) bytes spill stores, (\\d+) bytes "
      "spill loads");
  std::smatch match;
  ASSERT_TRUE(std::regex_search(unit->log, match, properties)) << unit->log;
  EXPECT_EQ(match[1].str(), "0") << match[0].str();
  EXPECT_EQ(match[2].str(), "0") << match[0].str();
}

TEST_F(DeviceCodeTest, EveryExampleTaskCompiles) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator("tasks")) {
    if (entry.path().extension() != ".cu") continue;
    ++files;
    std::ifstream file(entry.path());
    std::stringstream text;
    text << file.rdbuf();
    auto module = Build(entry.path().string(), text.str());
    ASSERT_TRUE(module.ok()) << entry.path() << ": " << module.status();
    EXPECT_EQ(module->cubin.substr(0, 4), "\x7f" "ELF");
    EXPECT_EQ(module->task_names.size(), 1u);
    EXPECT_EQ(module->task_names[0], entry.path().stem().string());
    EXPECT_LE(module->max_registers, kernel_registers_);
  }
  EXPECT_GE(files, 3);
}

TEST_F(DeviceCodeTest, FindsEveryTaskOfAModule) {
  auto module = Build("two.cu", R"(
#include <grosr/task.h>
struct A { int x; };
GROSR_TASK(first, A) { (void)args; }
GROSR_TASK(second, grosr::NoArgs) {}
)");
  ASSERT_TRUE(module.ok()) << module.status();
  EXPECT_THAT(module->task_names, ::testing::UnorderedElementsAre("first", "second"));
}

// Arguments need only be trivially copyable: no default constructor, const
// members and user constructors are fine (the in-place loop of
// continuations to itself keeps them as words, never assigns an Args).
TEST_F(DeviceCodeTest, ArgumentsNeedNoDefaultConstructorOrAssignment) {
  auto module = Build("args.cu", R"(
#include <grosr/task.h>
struct Built { unsigned n; unsigned* out; __device__ Built(unsigned a, unsigned* b) : n(a), out(b) {} };
struct Fixed { const unsigned n; unsigned* out; };
GROSR_TASK(built, Built) {
  if (args.n > 0) ctx.then(ctx.self(), Built(args.n - 1, args.out));
  else if (ctx.lane() == 0) *args.out = 1;
}
GROSR_TASK(fixed, Fixed) {
  if (args.n > 0) ctx.then(ctx.self(), Fixed{args.n - 1, args.out});
}
)");
  ASSERT_TRUE(module.ok()) << module.status();
  EXPECT_THAT(module->task_names, ::testing::UnorderedElementsAre("built", "fixed"));
}

// The slab allocator's core is device code too: a task using it compiles
// through NVRTC and fits the scheduler's register budget.
TEST_F(DeviceCodeTest, TaskHeapCallsCompileWithinTheBudget) {
  auto module = Build("alloc.cu", R"(
#include <grosr/task.h>
struct Args { unsigned* failures; };
GROSR_TASK(alloc_free, Args) {
  void* p = ctx.gpu_malloc(64 + ctx.lane() * 40);
  void* q = ctx.gpu_malloc_warp(100000);  // a run of whole pages
  if (p == nullptr || q == nullptr) { atomicAdd(args.failures, 1u); return; }
  *static_cast<unsigned*>(p) = ctx.lane();
  if (!ctx.gpu_free(p) || !ctx.gpu_free(q)) atomicAdd(args.failures, 1u);
}
)");
  ASSERT_TRUE(module.ok()) << module.status();
  EXPECT_THAT(module->task_names, ElementsAre("alloc_free"));
  EXPECT_LE(module->max_registers, kernel_registers_);
}

// Task modules stay small: what touches the scheduler's atomics is a call
// into the scheduler's module, so the task ABI pulls in no <cuda/atomic>
// and NVRTC emits none of its ~550 numeric_limits globals (each costs pause
// time at load and unload). A task that includes it itself is warned.
TEST_F(DeviceCodeTest, TaskModulesCarryNoLibraryGlobalsAndHeavyOnesAreWarned) {
  auto lean = Build("lean.cu", R"(
#include <grosr/task.h>
struct Args { unsigned* out; unsigned id; };
GROSR_TASK(lean, Args) {
  void* p = ctx.gpu_malloc(64);
  if (!ctx.spawn(args.id, args)) ctx.fail(3);
  if (p != nullptr) ctx.gpu_free(p);
  if (ctx.lane() == 0) atomicAdd(args.out, 1u);
  ctx.then(args.id, args);
}
)");
  ASSERT_TRUE(lean.ok()) << lean.status();
  // A handful of cuda::std type-trait constants remain.
  EXPECT_LE(lean->device_variables, 8u);
  EXPECT_THAT(lean->compile_log, Not(HasSubstr("device variables")));
  EXPECT_LT(lean->cubin.size(), 32u * 1024) << "task modules used to be 120 KB";

  auto heavy = Build("heavy.cu", R"(
#include <cuda/atomic>
#include <grosr/task.h>
struct Args { unsigned* out; };
GROSR_TASK(heavy, Args) {
  cuda::atomic_ref<unsigned, cuda::thread_scope_device> out(*args.out);
  if (ctx.lane() == 0) out.fetch_add(1, cuda::std::memory_order_relaxed);
}
)");
  ASSERT_TRUE(heavy.ok()) << heavy.status();
  EXPECT_GT(heavy->device_variables, 100u);
  EXPECT_THAT(heavy->compile_log, HasSubstr("heavy.cu: warning: the module defines"));
}

TEST_F(DeviceCodeTest, CompileErrorPointsAtTheTaskFileLine) {
  auto module = Build("tasks/broken.cu",
                      "#include <grosr/task.h>\n"
                      "GROSR_TASK(broken, grosr::NoArgs) {\n"
                      "  int x = ;\n"
                      "}\n");
  ASSERT_FALSE(module.ok());
  EXPECT_THAT(std::string(module.status().message()),
              HasSubstr("tasks/broken.cu(3): error"));
}

TEST_F(DeviceCodeTest, RefusesConstantMemoryNamingSymbolAndLine) {
  auto module = Build("tasks/const.cu",
                      "#include <grosr/task.h>\n"
                      "\n"
                      "__constant__ int lookup[4] = {1, 2, 3, 4};\n"
                      "struct A { int i; int* out; };\n"
                      "GROSR_TASK(uses_constant, A) { *args.out = lookup[args.i & 3]; }\n");
  ASSERT_FALSE(module.ok());
  std::string message(module.status().message());
  EXPECT_THAT(message, HasSubstr("tasks/const.cu:3:"));
  EXPECT_THAT(message, HasSubstr("__constant__ variable 'lookup'"));
}

TEST_F(DeviceCodeTest, RefusesStaticSharedMemory) {
  auto module = Build("tasks/shared.cu",
                      "#include <grosr/task.h>\n"
                      "struct A { int* out; };\n"
                      "GROSR_TASK(uses_shared, A) {\n"
                      "  __shared__ int scratch[32];\n"
                      "  scratch[ctx.lane()] = ctx.lane();\n"
                      "  __syncwarp();\n"
                      "  args.out[ctx.lane()] = scratch[31 - ctx.lane()];\n"
                      "}\n");
  ASSERT_FALSE(module.ok());
  std::string message(module.status().message());
  EXPECT_THAT(message, HasSubstr("tasks/shared.cu:4:"));
  EXPECT_THAT(message, HasSubstr("__shared__ variable 'scratch'"));
}

TEST_F(DeviceCodeTest, RefusesAStackBeyondTheLimit) {
  auto module = Build("tasks/stack.cu",
                      "#include <grosr/task.h>\n"
                      "struct A { int n; int* out; };\n"
                      "GROSR_TASK(big_frame, A) {\n"
                      "  volatile int local[2048];\n"
                      "  for (int i = 0; i < args.n; ++i) local[i % 2048] = i;\n"
                      "  *args.out = local[args.n % 2048];\n"
                      "}\n");
  ASSERT_FALSE(module.ok());
  EXPECT_THAT(std::string(module.status().message()), HasSubstr("bytes of stack"));
}

// The scheduler's frames around a task (its kernel's below, the services a
// task calls above) count against the stack limit: a task that fits alone
// but not with them is refused, and the message says so.
TEST_F(DeviceCodeTest, TheSchedulersStackAroundATaskCountsAgainstTheLimit) {
  ASSERT_GT(service_stack_bytes_, 0u) << "the scheduler image names its services' stack";
  ASSERT_LT(target_.scheduler_stack_bytes, target_.stack_bytes);
  // A frame that leaves half the room the scheduler needs.
  const uint32_t ints = (target_.stack_bytes - target_.scheduler_stack_bytes / 2) / 4 - 16;
  const std::string source = absl::StrCat(
      "#include <grosr/task.h>\n"
      "struct A { int n; int* out; };\n"
      "GROSR_TASK(near_limit, A) {\n"
      "  volatile int local[", ints, "];\n"
      "  for (int i = 0; i < args.n; ++i) local[i % ", ints, "] = i;\n"
      "  *args.out = local[0];\n"
      "}\n");
  DeviceCodeTarget alone = target_;
  alone.scheduler_stack_bytes = 0;
  auto fits_alone = BuildTaskModule(*compiler_, alone, kernel_registers_, "tasks/near_limit.cu", source);
  ASSERT_TRUE(fits_alone.ok()) << "the frame alone must fit: " << fits_alone.status();
  auto module = Build("tasks/near_limit.cu", source);
  ASSERT_FALSE(module.ok());
  EXPECT_THAT(std::string(module.status().message()), HasSubstr("and the scheduler"));
  std::printf("the scheduler needs %u bytes of stack around a task (services %u)\n",
              target_.scheduler_stack_bytes, service_stack_bytes_);
}

TEST_F(DeviceCodeTest, RefusesASourceWithoutTasks) {
  auto module = Build("empty.cu", "__device__ int helper(int x) { return x; }\n");
  ASSERT_FALSE(module.ok());
  EXPECT_THAT(std::string(module.status().message()), HasSubstr("defines no task"));
}

TEST_F(DeviceCodeTest, OversizedArgumentsFailAtCompileTime) {
  auto module = Build("big.cu",
                      "#include <grosr/task.h>\n"
                      "struct Big { char bytes[64]; };\n"
                      "GROSR_TASK(big, Big) {}\n");
  ASSERT_FALSE(module.ok());
  EXPECT_THAT(std::string(module.status().message()), HasSubstr("exceed 48 bytes"));
}

TEST_F(DeviceCodeTest, TasksAreCompiledAgainstTheRegisterBudget) {
  // A register-hungry task still fits: the budget caps it (it spills).
  auto module = Build("hungry.cu", R"(
#include <grosr/task.h>
struct A { unsigned* data; };
GROSR_TASK(hungry, A) {
  unsigned v[96];
#pragma unroll
  for (int i = 0; i < 96; ++i) v[i] = args.data[i * 37 + ctx.lane()];
#pragma unroll
  for (int r = 0; r < 4; ++r)
#pragma unroll
    for (int i = 0; i < 96; ++i) v[i] = v[i] * v[(i + 11) % 96] + r;
  unsigned s = 0;
#pragma unroll
  for (int i = 0; i < 96; ++i) s ^= v[i];
  args.data[ctx.lane()] = s;
}
)");
  ASSERT_TRUE(module.ok()) << module.status();
  EXPECT_LE(module->max_registers, kernel_registers_);
  // It uses the whole budget: without the kernel's reservation it would not fit.
  EXPECT_GE(module->max_registers, static_cast<uint32_t>(target_.register_budget - 2));
}

}  // namespace
}  // namespace grosr
