// A task that faults loses the CUDA context. The runtime must say so, name
// the task, refuse further work with the same error and release cleanly; a
// new runtime in the same process works or says clearly why it cannot. Its own binary: the fault
// poisons the process's primary context until it is reset. Not run under
// compute-sanitizer (the fault is deliberate).
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "host/runtime.h"
#include "tests/gpu_test_support.h"

namespace grosr {
namespace {

constexpr char kTasks[] = R"grosr_src(
#include <grosr/task.h>
struct CrashArgs { unsigned long long address; };
GROSR_TASK(crash, CrashArgs) {
  if (ctx.lane() == 0) *reinterpret_cast<volatile int*>(args.address) = 1;
}
struct AddArgs { int a; int b; int* out; };
GROSR_TASK(add_numbers, AddArgs) {
  if (ctx.lane() == 0) *args.out = args.a + args.b;
}
)grosr_src";

struct CrashArgs {
  uint64_t address;
};
struct AddArgs {
  int a, b;
  int* out;
};

TEST(GpuFault, FaultingTaskIsNamedAndTheRuntimeRecovers) {
  {
    GROSR_RUNTIME_OR_SKIP(runtime, RuntimeOptions{});
    ASSERT_TRUE(runtime->LoadSource("fault_tasks.cu", kTasks).ok());
    GROSR_ASSERT_OK(runtime->Start());
    absl::StatusOr<TaskId> crash = runtime->Find("crash");
    ASSERT_TRUE(crash.ok());
    absl::StatusOr<TaskHandle> h = runtime->Submit(*crash, CrashArgs{0x10});
    ASSERT_TRUE(h.ok());
    absl::Status waited = runtime->Wait(*h, absl::Seconds(20));
    EXPECT_TRUE(absl::IsInternal(waited)) << waited;
    EXPECT_TRUE(absl::StrContains(waited.message(), "context was lost")) << waited;
    EXPECT_TRUE(absl::StrContains(waited.message(), "crash (id")) << waited;
    // Later calls get the same error, not a hang.
    absl::StatusOr<TaskHandle> again = runtime->Submit(*crash, CrashArgs{0x10});
    EXPECT_TRUE(absl::IsInternal(again.status())) << again.status();
    EXPECT_TRUE(absl::IsInternal(runtime->Drain(absl::Seconds(5)))) << "drain after a fault";
    EXPECT_TRUE(absl::IsInternal(runtime->Stats().status()));
    absl::StatusOr<ShutdownReport> report = runtime->Shutdown();
    EXPECT_TRUE(report.ok()) << report.status();
  }
  // A fresh runtime in the same process: the driver either gives a new
  // context (then it must work) or refuses (then the error must say why).
  absl::StatusOr<std::unique_ptr<Runtime>> next = Runtime::Create(RuntimeOptions{});
  if (!next.ok()) {
    EXPECT_TRUE(absl::IsFailedPrecondition(next.status())) << next.status();
    EXPECT_TRUE(absl::StrContains(next.status().message(), "earlier fault")) << next.status();
    std::printf("after a fault this driver refuses a new context: %s\n",
                std::string(next.status().message()).c_str());
    return;
  }
  Runtime& runtime = **next;
  ASSERT_TRUE(runtime.LoadSource("fault_tasks.cu", kTasks).ok());
  absl::StatusOr<CUdeviceptr> out = runtime.AllocateDeviceMemory(sizeof(int));
  ASSERT_TRUE(out.ok());
  GROSR_ASSERT_OK(runtime.Start());
  absl::StatusOr<TaskId> add = runtime.Find("add_numbers");
  ASSERT_TRUE(add.ok());
  absl::StatusOr<TaskHandle> h =
      runtime.Submit(*add, AddArgs{40, 2, reinterpret_cast<int*>(*out)});
  ASSERT_TRUE(h.ok());
  GROSR_ASSERT_OK(runtime.Wait(*h, absl::Seconds(10)));
  int value = 0;
  GROSR_ASSERT_OK(runtime.CopyFromDevice(&value, *out, sizeof(value)));
  EXPECT_EQ(value, 42);
}

}  // namespace
}  // namespace grosr
