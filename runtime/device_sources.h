// The runtime's device sources (headers under grosr/ and the scheduler
// kernel), embedded in the binary at build time so that a binary compiles its
// device code at run time without the source tree.
#ifndef GROSR_RUNTIME_DEVICE_SOURCES_H_
#define GROSR_RUNTIME_DEVICE_SOURCES_H_

#include "absl/strings/string_view.h"
#include "absl/types/span.h"

namespace grosr {

struct EmbeddedSource {
  const char* name;  // "grosr/task.h", "scheduler_kernel.cu"
  const char* text;
};

// Every embedded file.
absl::Span<const EmbeddedSource> DeviceSources();

}  // namespace grosr

#endif  // GROSR_RUNTIME_DEVICE_SOURCES_H_
