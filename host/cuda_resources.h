// Owning wrappers for driver resources, so that every early return releases
// what was acquired. Each needs the driver table it was made with and the
// context current on the calling thread when it is destroyed.
#ifndef GROSR_HOST_CUDA_RESOURCES_H_
#define GROSR_HOST_CUDA_RESOURCES_H_

#include <cuda.h>

#include <cstddef>
#include <utility>

#include "absl/status/statusor.h"
#include "jit/cuda_driver.h"

namespace grosr {

// Device memory from cuMemAlloc.
class DeviceMemory {
 public:
  DeviceMemory() = default;
  static absl::StatusOr<DeviceMemory> Allocate(const CudaDriver& cu, size_t bytes);
  DeviceMemory(DeviceMemory&& other) noexcept { *this = std::move(other); }
  DeviceMemory& operator=(DeviceMemory&& other) noexcept;
  ~DeviceMemory() { Reset(); }

  CUdeviceptr get() const { return pointer_; }
  size_t size() const { return size_; }
  // Forgets the memory without freeing it (after the context was lost or
  // while a kernel that may use it cannot be stopped).
  void Abandon() { pointer_ = 0; size_ = 0; }
  void Reset();

 private:
  const CudaDriver* cu_ = nullptr;
  CUdeviceptr pointer_ = 0;
  size_t size_ = 0;
};

// Pinned host memory mapped into the device's address space, zeroed.
class PinnedMemory {
 public:
  PinnedMemory() = default;
  static absl::StatusOr<PinnedMemory> Allocate(const CudaDriver& cu, size_t bytes);
  PinnedMemory(PinnedMemory&& other) noexcept { *this = std::move(other); }
  PinnedMemory& operator=(PinnedMemory&& other) noexcept;
  ~PinnedMemory() { Reset(); }

  void* host() const { return host_; }
  CUdeviceptr device() const { return device_; }
  size_t size() const { return size_; }
  void Abandon() { host_ = nullptr; device_ = 0; size_ = 0; }
  void Reset();

 private:
  const CudaDriver* cu_ = nullptr;
  void* host_ = nullptr;
  CUdeviceptr device_ = 0;
  size_t size_ = 0;
};

// A non-blocking stream.
class Stream {
 public:
  Stream() = default;
  static absl::StatusOr<Stream> Create(const CudaDriver& cu);
  Stream(Stream&& other) noexcept { *this = std::move(other); }
  Stream& operator=(Stream&& other) noexcept;
  ~Stream() { Reset(); }
  CUstream get() const { return stream_; }
  void Abandon() { stream_ = nullptr; }
  void Reset();

 private:
  const CudaDriver* cu_ = nullptr;
  CUstream stream_ = nullptr;
};

// A loaded module.
class Module {
 public:
  Module() = default;
  static absl::StatusOr<Module> Load(const CudaDriver& cu, const std::string& cubin);
  Module(Module&& other) noexcept { *this = std::move(other); }
  Module& operator=(Module&& other) noexcept;
  ~Module() { Reset(); }
  CUmodule get() const { return module_; }
  void Abandon() { module_ = nullptr; }
  void Reset();

 private:
  const CudaDriver* cu_ = nullptr;
  CUmodule module_ = nullptr;
};

}  // namespace grosr

#endif  // GROSR_HOST_CUDA_RESOURCES_H_
