// The host API's checks that need no GPU: option validation and the message
// a machine without a GPU gets. Runs in CI.
#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "host/runtime.h"
#include "tests/gpu_test_support.h"

namespace grosr {
namespace {

TEST(RuntimeApi, RejectsBadOptionsBeforeTouchingTheGpu) {
  auto expect_invalid = [](RuntimeOptions options, const char* what) {
    absl::StatusOr<std::unique_ptr<Runtime>> runtime = Runtime::Create(options);
    EXPECT_TRUE(absl::IsInvalidArgument(runtime.status())) << what << ": " << runtime.status();
    EXPECT_TRUE(absl::StrContains(runtime.status().message(), what)) << runtime.status();
  };
  RuntimeOptions o;
  o.queue_capacity = 1000;
  expect_invalid(o, "queue_capacity");
  o = {};
  o.ring_capacity = 48;
  expect_invalid(o, "ring_capacity");
  o = {};
  o.warps_per_block = 0;
  expect_invalid(o, "warps_per_block");
  o = {};
  o.group_capacity = 33;
  expect_invalid(o, "group_capacity");
  o = {};
  o.register_budget = 16;
  expect_invalid(o, "register_budget");
  o = {};
  o.completion_capacity = 3;
  expect_invalid(o, "completion_capacity");
}

TEST(RuntimeApi, WithoutAGpuCreateSaysAGpuIsRequired) {
  absl::StatusOr<std::unique_ptr<Runtime>> runtime = Runtime::Create();
  if (runtime.ok()) GTEST_SKIP() << "a GPU is present: covered by the GPU tests";
  EXPECT_TRUE(testing::IsNoGpu(runtime.status())) << runtime.status();
}

}  // namespace
}  // namespace grosr
