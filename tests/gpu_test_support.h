// Helpers for tests that need a GPU.
//
// A GPU test creates its runtime with GROSR_RUNTIME_OR_SKIP: where there is
// no driver or GPU the test is skipped with the reason; with
// GROSR_REQUIRE_GPU=1 in the environment (the device run sets it) a missing
// GPU fails the test instead, so a silent skip cannot pass there.
#ifndef GROSR_TESTS_GPU_TEST_SUPPORT_H_
#define GROSR_TESTS_GPU_TEST_SUPPORT_H_

#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/match.h"
#include "gtest/gtest.h"
#include "host/runtime.h"

namespace grosr::testing {

inline bool IsNoGpu(const absl::Status& status) {
  return absl::IsFailedPrecondition(status) &&
         absl::StrContains(status.message(), "CUDA GPU is required");
}

inline bool GpuRequired() {
  const char* v = std::getenv("GROSR_REQUIRE_GPU");
  return v != nullptr && std::strcmp(v, "1") == 0;
}

// Multiplies test sizes (GROSR_TEST_SCALE, default 1): the sanitizer run
// uses a small fraction.
inline uint64_t Scaled(uint64_t n) {
  const char* v = std::getenv("GROSR_TEST_SCALE");
  double scale = v != nullptr ? std::atof(v) : 1.0;
  uint64_t scaled = static_cast<uint64_t>(static_cast<double>(n) * scale);
  return scaled < 1 ? 1 : scaled;
}

// Device memory filled with `poison`, freed by the runtime at shutdown.
template <typename T>
CUdeviceptr PoisonedBuffer(Runtime& runtime, size_t count, T poison) {
  absl::StatusOr<CUdeviceptr> memory = runtime.AllocateDeviceMemory(count * sizeof(T));
  EXPECT_TRUE(memory.ok()) << memory.status();
  std::vector<T> fill(count, poison);
  EXPECT_TRUE(runtime.CopyToDevice(*memory, fill.data(), count * sizeof(T)).ok());
  return *memory;
}

template <typename T>
std::vector<T> ReadBuffer(Runtime& runtime, CUdeviceptr from, size_t count) {
  std::vector<T> out(count);
  absl::Status status = runtime.CopyFromDevice(out.data(), from, count * sizeof(T));
  EXPECT_TRUE(status.ok()) << status;
  return out;
}

// Sets a device flag to 1 when it goes out of scope, so that a task
// spinning on it returns even when the test fails early (a kernel that
// cannot stop would block every later test).
class ReleaseOnExit {
 public:
  ReleaseOnExit(Runtime& runtime, CUdeviceptr flag) : runtime_(runtime), flag_(flag) {}
  ~ReleaseOnExit() {
    uint32_t one = 1;
    (void)runtime_.CopyToDevice(flag_, &one, sizeof(one));
  }

 private:
  Runtime& runtime_;
  CUdeviceptr flag_;
};

inline absl::Status ToStatus(const absl::Status& s) { return s; }
template <typename T>
absl::Status ToStatus(const absl::StatusOr<T>& s) { return s.status(); }

// The id of a loaded task; a test failure (and 0) when it is not loaded.
inline TaskId IdOf(Runtime& runtime, const char* name) {
  absl::StatusOr<TaskId> id = runtime.Find(name);
  EXPECT_TRUE(id.ok()) << id.status();
  return id.ok() ? *id : 0;
}

template <typename T>
T* DevicePointer(CUdeviceptr p) {
  return reinterpret_cast<T*>(p);
}

}  // namespace grosr::testing

#define GROSR_RUNTIME_OR_SKIP(var, options)                                  \
  auto var##_or = ::grosr::Runtime::Create(options);                         \
  if (!var##_or.ok() && ::grosr::testing::IsNoGpu(var##_or.status()) &&      \
      !::grosr::testing::GpuRequired()) {                                    \
    GTEST_SKIP() << "no CUDA GPU here: " << var##_or.status().message();     \
  }                                                                          \
  ASSERT_TRUE(var##_or.ok()) << var##_or.status();                           \
  std::unique_ptr<::grosr::Runtime> var = std::move(*var##_or)

#define GROSR_ASSERT_OK(expr)                          \
  do {                                                 \
    const ::absl::Status grosr_s_ = ::grosr::testing::ToStatus(expr); \
    ASSERT_TRUE(grosr_s_.ok()) << #expr << ": " << grosr_s_; \
  } while (false)

#endif  // GROSR_TESTS_GPU_TEST_SUPPORT_H_
