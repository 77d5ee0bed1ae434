#include "host/cuda_resources.h"

#include <cstring>
#include <string>

namespace grosr {

absl::StatusOr<DeviceMemory> DeviceMemory::Allocate(const CudaDriver& cu,
                                                    size_t bytes) {
  DeviceMemory memory;
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuMemAlloc(&memory.pointer_, bytes),
                           "cuMemAlloc");
  memory.cu_ = &cu;
  memory.size_ = bytes;
  return memory;
}

DeviceMemory& DeviceMemory::operator=(DeviceMemory&& other) noexcept {
  if (this != &other) {
    Reset();
    cu_ = other.cu_;
    pointer_ = std::exchange(other.pointer_, 0);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void DeviceMemory::Reset() {
  if (pointer_ != 0) cu_->cuMemFree(pointer_);
  pointer_ = 0;
  size_ = 0;
}

absl::StatusOr<PinnedMemory> PinnedMemory::Allocate(const CudaDriver& cu,
                                                    size_t bytes) {
  PinnedMemory memory;
  GROSR_CU_RETURN_IF_ERROR(
      cu,
      cu.cuMemHostAlloc(&memory.host_, bytes,
                        CU_MEMHOSTALLOC_DEVICEMAP | CU_MEMHOSTALLOC_PORTABLE),
      "cuMemHostAlloc");
  memory.cu_ = &cu;
  memory.size_ = bytes;
  std::memset(memory.host_, 0, bytes);
  GROSR_CU_RETURN_IF_ERROR(
      cu, cu.cuMemHostGetDevicePointer(&memory.device_, memory.host_, 0),
      "cuMemHostGetDevicePointer");
  return memory;
}

PinnedMemory& PinnedMemory::operator=(PinnedMemory&& other) noexcept {
  if (this != &other) {
    Reset();
    cu_ = other.cu_;
    host_ = std::exchange(other.host_, nullptr);
    device_ = std::exchange(other.device_, 0);
    size_ = std::exchange(other.size_, 0);
  }
  return *this;
}

void PinnedMemory::Reset() {
  if (host_ != nullptr) cu_->cuMemFreeHost(host_);
  host_ = nullptr;
  device_ = 0;
  size_ = 0;
}

absl::StatusOr<Stream> Stream::Create(const CudaDriver& cu) {
  Stream stream;
  GROSR_CU_RETURN_IF_ERROR(
      cu, cu.cuStreamCreate(&stream.stream_, CU_STREAM_NON_BLOCKING),
      "cuStreamCreate");
  stream.cu_ = &cu;
  return stream;
}

Stream& Stream::operator=(Stream&& other) noexcept {
  if (this != &other) {
    Reset();
    cu_ = other.cu_;
    stream_ = std::exchange(other.stream_, nullptr);
  }
  return *this;
}

void Stream::Reset() {
  if (stream_ != nullptr) cu_->cuStreamDestroy(stream_);
  stream_ = nullptr;
}

absl::StatusOr<Module> Module::Load(const CudaDriver& cu,
                                    const std::string& cubin) {
  Module module;
  GROSR_CU_RETURN_IF_ERROR(cu, cu.cuModuleLoadData(&module.module_, cubin.data()),
                           "cuModuleLoadData");
  module.cu_ = &cu;
  return module;
}

Module& Module::operator=(Module&& other) noexcept {
  if (this != &other) {
    Reset();
    cu_ = other.cu_;
    module_ = std::exchange(other.module_, nullptr);
  }
  return *this;
}

void Module::Reset() {
  if (module_ != nullptr) cu_->cuModuleUnload(module_);
  module_ = nullptr;
}

}  // namespace grosr
