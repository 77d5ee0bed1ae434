#include "jit/cuda_driver.h"

#include <dlfcn.h>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace grosr {
namespace {

// cuGetProcAddress resolves the base name written in the list; the member
// gets the type of whatever cuda.h maps that name to. The two agree only
// when the macro adds a version suffix (cuMemAlloc -> cuMemAlloc_v2). A
// macro to another function (cuGraphInstantiate -> cuGraphInstantiateWith-
// Flags) would pair the old entry point with the new signature: a crash.
// cuCtxSynchronize is left out for the same reason: cuda.h 13.0 declares it
// without arguments, the 580 driver resolves it to cuCtxSynchronize_v2(ctx).
constexpr bool SameEntryPoint(const char* listed, const char* expanded) {
  while (*listed != '\0' && *listed == *expanded) {
    ++listed;
    ++expanded;
  }
  return *listed == '\0' && (*expanded == '\0' || (expanded[0] == '_' && expanded[1] == 'v'));
}
#define GROSR_STRINGIZE_EXPANDED(x) GROSR_STRINGIZE(x)
#define GROSR_STRINGIZE(x) #x
#define GROSR_CHECK_ENTRY_POINT(name)                                          \
  static_assert(SameEntryPoint(#name, GROSR_STRINGIZE_EXPANDED(name)),        \
                #name " is a macro for another function in cuda.h: list that one");
GROSR_CUDA_DRIVER_FUNCTIONS(GROSR_CHECK_ENTRY_POINT)
#undef GROSR_CHECK_ENTRY_POINT

using GetProcAddressFn = CUresult (*)(const char*, void**, int, cuuint64_t,
                                      CUdriverProcAddressQueryResult*);

absl::StatusOr<const CudaDriver*> LoadDriver(CudaDriver* driver) {
  void* library = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (library == nullptr) {
    const char* reason = dlerror();
    return absl::FailedPreconditionError(absl::StrCat(
        "no CUDA driver on this machine: a CUDA GPU is required (dlopen "
        "libcuda.so.1 failed: ",
        reason != nullptr ? reason : "unknown reason", ")"));
  }
  auto get_proc = reinterpret_cast<GetProcAddressFn>(
      dlsym(library, "cuGetProcAddress_v2"));
  if (get_proc == nullptr) {
    return absl::FailedPreconditionError(
        "the CUDA driver is too old: libcuda.so.1 has no cuGetProcAddress_v2 "
        "(GROSR needs a CUDA 12+ driver)");
  }
  bool all_found = true;
  std::string missing;
#define GROSR_RESOLVE_DRIVER_FUNCTION(name)                                   \
  {                                                                          \
    void* address = nullptr;                                                 \
    CUdriverProcAddressQueryResult found = CU_GET_PROC_ADDRESS_SYMBOL_NOT_FOUND; \
    if (get_proc(#name, &address, CUDA_VERSION, CU_GET_PROC_ADDRESS_DEFAULT, \
                 &found) != CUDA_SUCCESS ||                                  \
        address == nullptr) {                                                \
      all_found = false;                                                     \
      absl::StrAppend(&missing, missing.empty() ? "" : ", ", #name);         \
    }                                                                        \
    driver->name = reinterpret_cast<decltype(driver->name)>(address);        \
  }
  GROSR_CUDA_DRIVER_FUNCTIONS(GROSR_RESOLVE_DRIVER_FUNCTION)
#undef GROSR_RESOLVE_DRIVER_FUNCTION
  if (!all_found) {
    return absl::FailedPreconditionError(absl::StrCat(
        "the CUDA driver lacks entry points GROSR needs (", missing,
        "); install a driver for CUDA ", CUDA_VERSION / 1000, " or newer"));
  }
  return driver;
}

}  // namespace

absl::StatusOr<const CudaDriver*> CudaDriver::Get() {
  static CudaDriver* const driver = new CudaDriver();
  static const absl::StatusOr<const CudaDriver*> loaded = [] {
    absl::StatusOr<const CudaDriver*> result = LoadDriver(driver);
    if (result.ok()) {
      driver->cuDriverGetVersion(&driver->version_);
    }
    return result;
  }();
  return loaded;
}

std::string CudaDriver::ErrorText(CUresult result) const {
  const char* name = nullptr;
  const char* text = nullptr;
  if (cuGetErrorName != nullptr) cuGetErrorName(result, &name);
  if (cuGetErrorString != nullptr) cuGetErrorString(result, &text);
  return absl::StrFormat("%s (%s)", name != nullptr ? name : "CUDA_ERROR_?",
                         text != nullptr ? text : "unknown error");
}

absl::Status CudaDriver::Check(CUresult result, absl::string_view what) const {
  if (result == CUDA_SUCCESS) return absl::OkStatus();
  std::string message = absl::StrCat(what, " failed: ", ErrorText(result));
  switch (result) {
    case CUDA_ERROR_OUT_OF_MEMORY:
      return absl::ResourceExhaustedError(message);
    case CUDA_ERROR_NO_DEVICE:
    case CUDA_ERROR_INVALID_DEVICE:
      return absl::FailedPreconditionError(message);
    case CUDA_ERROR_INVALID_VALUE:
      return absl::InvalidArgumentError(message);
    default:
      return absl::InternalError(message);
  }
}

std::string CudaDriver::VersionString() const {
  return absl::StrFormat("%d.%d", version_ / 1000, (version_ % 1000) / 10);
}

bool IsContextLost(CUresult result) {
  switch (result) {
    case CUDA_ERROR_ILLEGAL_ADDRESS:
    case CUDA_ERROR_LAUNCH_FAILED:
    case CUDA_ERROR_ILLEGAL_INSTRUCTION:
    case CUDA_ERROR_MISALIGNED_ADDRESS:
    case CUDA_ERROR_INVALID_ADDRESS_SPACE:
    case CUDA_ERROR_INVALID_PC:
    case CUDA_ERROR_HARDWARE_STACK_ERROR:
    case CUDA_ERROR_ASSERT:
    case CUDA_ERROR_LAUNCH_TIMEOUT:
    case CUDA_ERROR_ECC_UNCORRECTABLE:
    case CUDA_ERROR_CONTEXT_IS_DESTROYED:
      return true;
    default:
      return false;
  }
}

}  // namespace grosr
