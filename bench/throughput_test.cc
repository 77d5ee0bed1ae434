// CI checks of the benchmark code that need no GPU: experiment B's device
// sources compile and link, and the result summaries are what they say.
#include "bench/throughput.h"

#include "absl/strings/match.h"
#include "bench/bench_support.h"
#include "gtest/gtest.h"

namespace grosr {
namespace {

TEST(Throughput, DeviceCodeCompilesAndLinks) {
  absl::StatusOr<std::unique_ptr<Compiler>> compiler = Compiler::Create({});
  ASSERT_TRUE(compiler.ok()) << compiler.status();
  absl::Status built = CompileThroughputCode(**compiler, "sm_90");
  EXPECT_TRUE(built.ok()) << built;
}

TEST(BenchSupport, SummarizeGivesPercentilesAndKeepsSamples) {
  std::vector<double> samples;
  for (int i = 100; i >= 1; --i) samples.push_back(i);  // unsorted on purpose
  Result r = Summarize("x", samples, "note");
  EXPECT_EQ(r.median, 51);
  EXPECT_EQ(r.p90, 91);
  EXPECT_EQ(r.p99, 100);
  EXPECT_EQ(r.min, 1);
  EXPECT_EQ(r.samples, 100u);
  ASSERT_EQ(r.raw.size(), 100u);
  EXPECT_EQ(r.raw.front(), 1);
  EXPECT_EQ(r.raw.back(), 100);
  std::vector<double> many(10000);
  for (size_t i = 0; i < many.size(); ++i) many[i] = static_cast<double>(i);
  EXPECT_EQ(Summarize("y", many, "").raw.size(), 4000u) << "a CDF keeps at most 4,000";
}

TEST(BenchSupport, JsonCarriesTheRunAndEscapesNotes) {
  Result r = Single("tput_x_1000", "tasks/s", 2e6, 3, "a \"quoted\" note");
  r.experiment = "B";
  r.group = "x";
  r.items = 1000;
  r.cpu_us_per_item = 0.5;
  r.syncs_per_item = 0.001;
  RunHeader header;
  header.device = "card";
  const std::string json = ToJson({r}, header);
  EXPECT_TRUE(absl::StrContains(json, "\"device\": \"card\"")) << json;
  EXPECT_TRUE(absl::StrContains(json, "\"group\": \"x\"")) << json;
  EXPECT_TRUE(absl::StrContains(json, "\"cpu_us_per_item\": 0.5")) << json;
  EXPECT_TRUE(absl::StrContains(json, "a \\\"quoted\\\" note")) << json;
  EXPECT_TRUE(absl::StrContains(json, "\"commit\": ")) << json;
}

}  // namespace
}  // namespace grosr
