// Task arguments from text, for the command-line program: typed tokens
// parsed and packed the way a C++ compiler lays out the task's Args struct.
//
//   i32=V u32=V i64=V u64=V f32=V f64=V   scalars
//   out:T:N        a device buffer of N elements of T (poisoned), printed after
//   in:T:V1,V2,..  a device buffer holding the values
//
// Scalars sit at their natural alignment, buffers are 8-byte pointers, and
// the total is padded to the largest alignment, as in
//   struct { int a; int b; int* out; }   // i32=2 i32=3 out:i32:1 -> 16 bytes
#ifndef GROSR_HOST_TASK_ARGUMENTS_H_
#define GROSR_HOST_TASK_ARGUMENTS_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"

namespace grosr {

enum class ElementType { kI32, kU32, kI64, kU64, kF32, kF64 };
size_t ElementBytes(ElementType type);
const char* ElementName(ElementType type);

struct TaskArgument {
  enum class Kind { kScalar, kOutput, kInput };
  Kind kind = Kind::kScalar;
  ElementType type = ElementType::kI32;
  size_t count = 1;            // elements (buffers)
  std::vector<uint8_t> bytes;  // the scalar, or the buffer's initial contents
};

// Parses the tokens; InvalidArgument names the first bad one.
absl::StatusOr<std::vector<TaskArgument>> ParseTaskArguments(
    const std::vector<std::string>& tokens);

// Packs the arguments; `buffers` holds the device address of each buffer
// argument, in order. InvalidArgument if the result exceeds 48 bytes.
absl::StatusOr<std::vector<uint8_t>> PackTaskArguments(
    const std::vector<TaskArgument>& arguments, const std::vector<uint64_t>& buffers);

// "1, 2, 3" for `count` elements of `type` (at most `limit`, then "...").
std::string FormatElements(ElementType type, const uint8_t* data, size_t count,
                           size_t limit = 64);

}  // namespace grosr

#endif  // GROSR_HOST_TASK_ARGUMENTS_H_
