#include "bench/cuda_dynamic_baselines.h"


#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "jit/cubin.h"

namespace grosr {
namespace {

// No disk cache: CI must see NVRTC and nvJitLink accept today's sources.
std::unique_ptr<Compiler> UncachedCompiler() {
  Compiler::Options options;
  options.use_cache = false;
  absl::StatusOr<std::unique_ptr<Compiler>> compiler = Compiler::Create(options);
  EXPECT_TRUE(compiler.ok()) << compiler.status();
  return compiler.ok() ? std::move(*compiler) : nullptr;
}

bool GpuRequired() {
  const char* v = std::getenv("GROSR_REQUIRE_GPU");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

TEST(CudaDynamicBaselinesTest, EveryBaselineCompilesAndLinksForSm90) {
  std::unique_ptr<Compiler> compiler = UncachedCompiler();
  ASSERT_NE(compiler, nullptr);
  absl::Status status = CompileDynamicBaselineKernels(*compiler, "sm_90");
  EXPECT_TRUE(status.ok()) << status;
}

// Each linked image defines its entry point; what the device runtime leaves
// for the driver to resolve at load is printed, for the device log.
TEST(CudaDynamicBaselinesTest, LinkedImagesDefineTheirKernels) {
  std::unique_ptr<Compiler> compiler = UncachedCompiler();
  ASSERT_NE(compiler, nullptr);
  ASSERT_EQ(DynamicBaselineKernels().size(), 4u);
  for (const DynamicBaselineKernel& kernel : DynamicBaselineKernels()) {
    absl::StatusOr<LinkedImage> image = BuildDynamicBaselineKernel(*compiler, "sm_90", kernel);
    ASSERT_TRUE(image.ok()) << image.status();
    absl::StatusOr<CubinContents> contents = InspectCubin(image->cubin);
    ASSERT_TRUE(contents.ok()) << contents.status();
    for (const std::string& name : kernel.kernels) {
      EXPECT_NE(contents->FindFunction(name), nullptr) << kernel.baseline << " lacks " << name;
    }
    std::string undefined;
    for (const CubinSymbol& symbol : contents->symbols) {
      if (symbol.section.empty() && !symbol.name.empty()) {
        absl::StrAppend(&undefined, " ", symbol.name);
      }
    }
    std::printf("%s: left for the driver:%s\n", kernel.baseline.c_str(),
                undefined.empty() ? " nothing" : undefined.c_str());
  }
}

TEST(CudaDynamicBaselinesTest, BrokenSourceNamesTheBaseline) {
  std::unique_ptr<Compiler> compiler = UncachedCompiler();
  ASSERT_NE(compiler, nullptr);
  DynamicBaselineKernel broken = DynamicBaselineKernels()[0];
  broken.source += "\nthis is not CUDA;\n";
  absl::StatusOr<LinkedImage> image = BuildDynamicBaselineKernel(*compiler, "sm_90", broken);
  ASSERT_FALSE(image.ok());
  EXPECT_NE(std::string(image.status().message()).find(broken.baseline), std::string::npos)
      << image.status();
}

// Where a GPU is present: every baseline runs at a tiny size and verifies its
// counter. Without one the test skips (fails under GROSR_REQUIRE_GPU=1).
class GpuContext {
 public:
  ~GpuContext() {
    if (retained_) cu_->cuDevicePrimaryCtxRelease(device_);
  }
  // Empty when the context is current; otherwise why there is no GPU.
  std::string Open() {
    absl::StatusOr<const CudaDriver*> driver = CudaDriver::Get();
    if (!driver.ok()) return std::string(driver.status().message());
    cu_ = *driver;
    int count = 0;
    if (cu_->cuInit(0) != CUDA_SUCCESS || cu_->cuDeviceGetCount(&count) != CUDA_SUCCESS ||
        count == 0) {
      return "the CUDA driver sees no GPU";
    }
    CUcontext context = nullptr;
    if (cu_->cuDeviceGet(&device_, 0) != CUDA_SUCCESS ||
        cu_->cuDevicePrimaryCtxRetain(&context, device_) != CUDA_SUCCESS) {
      return "cannot retain device 0's primary context";
    }
    retained_ = true;
    if (cu_->cuCtxSetCurrent(context) != CUDA_SUCCESS) return "cannot make the context current";
    return "";
  }
  const CudaDriver& cu() const { return *cu_; }

 private:
  const CudaDriver* cu_ = nullptr;
  CUdevice device_ = 0;
  bool retained_ = false;
};

TEST(CudaDynamicBaselinesTest, GpuRunsEveryBaselineAtATinySize) {
  GpuContext gpu;
  const std::string no_gpu = gpu.Open();
  if (!no_gpu.empty()) {
    if (GpuRequired()) FAIL() << "GROSR_REQUIRE_GPU=1 but: " << no_gpu;
    GTEST_SKIP() << "needs a CUDA GPU: " << no_gpu;
  }
  std::unique_ptr<Compiler> compiler = UncachedCompiler();
  ASSERT_NE(compiler, nullptr);
  DynamicBaselineOptions options;
  options.steps = 50;
  options.repetitions = 2;
  options.round_trips = 200;
  std::vector<BaselineSeries> series =
      RunDynamicBaselines(gpu.cu(), *compiler, DefaultArchitecture(), options);
  ASSERT_EQ(series.size(), 4u);
  const char* names[] = {"cuda_while_node", "cuda_graph_tail_relaunch", "cuda_cdp2_tail_launch",
                         "pinned_round_trip"};
  const size_t sizes[] = {2, 2, 2, 200};
  for (size_t i = 0; i < series.size(); ++i) {
    EXPECT_EQ(series[i].name, names[i]);
    EXPECT_FALSE(series[i].note.empty());
    EXPECT_TRUE(series[i].status.ok()) << series[i].name << ": " << series[i].status;
    if (!series[i].status.ok()) continue;
    ASSERT_EQ(series[i].us_per_step.size(), sizes[i]) << series[i].name;
    for (double us : series[i].us_per_step) EXPECT_GT(us, 0) << series[i].name;
    std::printf("%s: first sample %.2f us\n", series[i].name.c_str(), series[i].us_per_step[0]);
  }
}

// Bad options are reported by every series, with no GPU work attempted.
TEST(CudaDynamicBaselinesTest, InvalidOptionsAreReportedPerSeries) {
  GpuContext gpu;
  const std::string no_gpu = gpu.Open();
  if (!no_gpu.empty()) {
    if (GpuRequired()) FAIL() << "GROSR_REQUIRE_GPU=1 but: " << no_gpu;
    GTEST_SKIP() << "needs a CUDA driver to call RunDynamicBaselines: " << no_gpu;
  }
  std::unique_ptr<Compiler> compiler = UncachedCompiler();
  ASSERT_NE(compiler, nullptr);
  DynamicBaselineOptions options;
  options.steps = 0;
  std::vector<BaselineSeries> series =
      RunDynamicBaselines(gpu.cu(), *compiler, DefaultArchitecture(), options);
  ASSERT_EQ(series.size(), 4u);
  for (const BaselineSeries& s : series) {
    EXPECT_TRUE(absl::IsInvalidArgument(s.status)) << s.name << ": " << s.status;
    EXPECT_TRUE(s.us_per_step.empty());
  }
}

}  // namespace
}  // namespace grosr
