// The host API's checks that need no GPU: option validation and the message
// a machine without a GPU gets. Runs in CI.
#include <cstdlib>
#include <string>

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
  o = {};
  o.stop_check_interval = 0;
  expect_invalid(o, "stop_check_interval");
  o = {};
  o.stop_check_interval = kMaxStopCheckInterval + 1;
  expect_invalid(o, "stop_check_interval");
}

// The environment's overrides are checked like options: a typo is an
// error, not a default (an unparsable heap size used to give a 1-page heap).
TEST(RuntimeApi, RejectsMalformedEnvironmentOverrides) {
  struct Case {
    const char* variable;
    const char* value;
  };
  for (const Case& c : {Case{"GROSR_HEAP_BYTES", "64MiB"}, Case{"GROSR_HEAP_BYTES", "0"},
                        Case{"GROSR_MAX_SMS", "all"}, Case{"GROSR_MAX_SMS", "-2"}}) {
    const char* saved = std::getenv(c.variable);
    const std::string restore = saved != nullptr ? saved : "";
    ASSERT_EQ(setenv(c.variable, c.value, 1), 0);
    absl::StatusOr<std::unique_ptr<Runtime>> runtime = Runtime::Create();
    if (saved != nullptr) {
      setenv(c.variable, restore.c_str(), 1);
    } else {
      unsetenv(c.variable);
    }
    EXPECT_TRUE(absl::IsInvalidArgument(runtime.status()))
        << c.variable << "=" << c.value << ": " << runtime.status();
    EXPECT_TRUE(absl::StrContains(runtime.status().message(), c.variable)) << runtime.status();
  }
}

TEST(RuntimeApi, WithoutAGpuCreateSaysAGpuIsRequired) {
  absl::StatusOr<std::unique_ptr<Runtime>> runtime = Runtime::Create();
  if (runtime.ok()) GTEST_SKIP() << "a GPU is present: covered by the GPU tests";
  EXPECT_TRUE(testing::IsNoGpu(runtime.status())) << runtime.status();
}

}  // namespace
}  // namespace grosr
