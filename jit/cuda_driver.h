// The CUDA driver API, loaded at run time.
//
// GROSR binaries never link libcuda: the same binary must start on a machine
// without a GPU driver (CI, a laptop) and say clearly that a CUDA GPU is
// required, instead of failing in the dynamic loader. CudaDriver::Get()
// dlopens libcuda.so.1 once and resolves every entry point through
// cuGetProcAddress at the toolkit's version, so the macros in cuda.h
// (cuMemAlloc -> cuMemAlloc_v2, ...) and the driver's versioning agree.
//
// Example:
//   ASSIGN_OR_RETURN(const CudaDriver* cu, CudaDriver::Get());
//   GROSR_CU_RETURN_IF_ERROR(*cu, cu->cuInit(0), "cuInit");
//
// Thread safety: Get() is safe to call from any thread; the table it returns
// is immutable.
#ifndef GROSR_JIT_CUDA_DRIVER_H_
#define GROSR_JIT_CUDA_DRIVER_H_

#include <cuda.h>

#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace grosr {

// Every driver entry point GROSR uses. X(name) where `name` is the base name
// as written in cuda.h (the macro there picks the versioned symbol's type).
#define GROSR_CUDA_DRIVER_FUNCTIONS(X)                                       \
  X(cuInit)                                                                 \
  X(cuDriverGetVersion)                                                     \
  X(cuGetErrorName)                                                         \
  X(cuGetErrorString)                                                       \
  X(cuDeviceGetCount)                                                       \
  X(cuDeviceGet)                                                            \
  X(cuDeviceGetName)                                                        \
  X(cuDeviceGetAttribute)                                                   \
  X(cuDeviceTotalMem)                                                       \
  X(cuDevicePrimaryCtxRetain)                                               \
  X(cuDevicePrimaryCtxRelease)                                              \
  X(cuDevicePrimaryCtxReset)                                                \
  X(cuCtxSetCurrent)                                                        \
  X(cuCtxGetCurrent)                                                        \
  X(cuMemsetD32Async)                                                       \
  X(cuCtxSetLimit)                                                          \
  X(cuCtxGetLimit)                                                          \
  X(cuModuleLoadData)                                                       \
  X(cuModuleUnload)                                                         \
  X(cuModuleGetFunction)                                                    \
  X(cuModuleGetGlobal)                                                      \
  X(cuLibraryLoadData)                                                      \
  X(cuLibraryUnload)                                                        \
  X(cuLibraryGetGlobal)                                                     \
  X(cuFuncGetAttribute)                                                     \
  X(cuFuncSetAttribute)                                                     \
  X(cuOccupancyMaxActiveBlocksPerMultiprocessor)                            \
  X(cuLaunchKernel)                                                         \
  X(cuStreamCreate)                                                         \
  X(cuStreamDestroy)                                                        \
  X(cuStreamSynchronize)                                                    \
  X(cuStreamQuery)                                                          \
  X(cuStreamBeginCapture)                                                   \
  X(cuStreamEndCapture)                                                     \
  X(cuEventCreate)                                                          \
  X(cuEventDestroy)                                                         \
  X(cuEventRecord)                                                          \
  X(cuEventSynchronize)                                                     \
  X(cuEventElapsedTime)                                                     \
  X(cuMemAlloc)                                                             \
  X(cuMemFree)                                                              \
  X(cuMemGetInfo)                                                           \
  X(cuMemHostAlloc)                                                         \
  X(cuMemFreeHost)                                                          \
  X(cuMemHostGetDevicePointer)                                              \
  X(cuMemcpyHtoD)                                                           \
  X(cuMemcpyDtoH)                                                           \
  X(cuMemcpyHtoDAsync)                                                      \
  X(cuMemcpyDtoHAsync)                                                      \
  X(cuMemsetD8)                                                             \
  X(cuMemsetD32)                                                            \
  X(cuMemsetD8Async)                                                        \
  X(cuGraphCreate)                                                          \
  X(cuGraphDestroy)                                                         \
  X(cuGraphAddKernelNode)                                                   \
  X(cuGraphAddNode)                                                         \
  X(cuGraphConditionalHandleCreate)                                         \
  X(cuGraphInstantiateWithFlags)                                            \
  X(cuGraphExecDestroy)                                                     \
  X(cuGraphLaunch)                                                          \
  X(cuGraphUpload)                                                          \
  X(cuGraphInstantiateWithParams)                                           \
  X(cuGraphGetNodes)                                                        \
  X(cuStreamBeginCaptureToGraph)                                            \
  X(cuMemAllocAsync)                                                        \
  X(cuMemFreeAsync)                                                         \
  X(cuDeviceGetDefaultMemPool)                                              \
  X(cuMemPoolSetAttribute)                                                  \
  X(cuMemPoolTrimTo)                                                        \
  X(cuStreamWaitValue32)                                                    \
  X(cuStreamWriteValue32)

class CudaDriver {
 public:
  // Loads the driver once per process. Returns FailedPrecondition with a
  // message that names the missing library when there is no driver.
  static absl::StatusOr<const CudaDriver*> Get();

  // "CUDA_ERROR_X (description)" for a result code.
  std::string ErrorText(CUresult result) const;

  // OK for CUDA_SUCCESS; otherwise an error naming `what` and the result.
  // CUDA_ERROR_OUT_OF_MEMORY maps to ResourceExhausted; errors that mean the
  // context is lost (illegal address, launch failure, ...) to Internal.
  absl::Status Check(CUresult result, absl::string_view what) const;

  // Human-readable driver version, e.g. "13.0".
  std::string VersionString() const;

#define GROSR_DECLARE_DRIVER_FUNCTION(name) decltype(&::name) name = nullptr;
  GROSR_CUDA_DRIVER_FUNCTIONS(GROSR_DECLARE_DRIVER_FUNCTION)
#undef GROSR_DECLARE_DRIVER_FUNCTION

 private:
  CudaDriver() = default;
  int version_ = 0;
};

// True when `result` means the CUDA context can no longer be used (a kernel
// trapped or faulted): every later call on that context fails too.
bool IsContextLost(CUresult result);

}  // namespace grosr

// Returns early from the enclosing function when a driver call fails.
#define GROSR_CU_RETURN_IF_ERROR(driver, call, what)                 \
  do {                                                              \
    ::absl::Status grosr_cu_status_ = (driver).Check((call), (what)); \
    if (!grosr_cu_status_.ok()) return grosr_cu_status_;            \
  } while (false)

#endif  // GROSR_JIT_CUDA_DRIVER_H_
