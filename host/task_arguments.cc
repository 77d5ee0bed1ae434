#include "host/task_arguments.h"

#include <algorithm>
#include <cstring>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "grosr/descriptor.h"

namespace grosr {
namespace {

struct TypeInfo {
  ElementType type;
  const char* name;
  size_t bytes;
  bool is_float;
  bool is_signed;
};
constexpr TypeInfo kTypes[] = {
    {ElementType::kI32, "i32", 4, false, true},  {ElementType::kU32, "u32", 4, false, false},
    {ElementType::kI64, "i64", 8, false, true},  {ElementType::kU64, "u64", 8, false, false},
    {ElementType::kF32, "f32", 4, true, true},   {ElementType::kF64, "f64", 8, true, true},
};

const TypeInfo& Info(ElementType type) { return kTypes[static_cast<int>(type)]; }

const TypeInfo* Named(absl::string_view name) {
  for (const TypeInfo& t : kTypes) {
    if (name == t.name) return &t;
  }
  return nullptr;
}

absl::Status Encode(const TypeInfo& t, absl::string_view text, uint8_t* to) {
  bool ok = false;
  if (t.is_float) {
    double v = 0;
    ok = absl::SimpleAtod(text, &v);
    if (t.bytes == 4) {
      float f = static_cast<float>(v);
      std::memcpy(to, &f, 4);
    } else {
      std::memcpy(to, &v, 8);
    }
  } else if (t.is_signed) {
    int64_t v = 0;
    ok = absl::SimpleAtoi(text, &v) &&
         (t.bytes == 8 || (v >= INT32_MIN && v <= INT32_MAX));
    if (t.bytes == 4) {
      int32_t narrow = static_cast<int32_t>(v);
      std::memcpy(to, &narrow, 4);
    } else {
      std::memcpy(to, &v, 8);
    }
  } else {
    uint64_t v = 0;
    ok = absl::SimpleAtoi(text, &v) && (t.bytes == 8 || v <= UINT32_MAX);
    if (t.bytes == 4) {
      uint32_t narrow = static_cast<uint32_t>(v);
      std::memcpy(to, &narrow, 4);
    } else {
      std::memcpy(to, &v, 8);
    }
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat("'", text, "' is not a ", t.name));
  }
  return absl::OkStatus();
}

std::string Decode(const TypeInfo& t, const uint8_t* from) {
  if (t.is_float) {
    if (t.bytes == 4) {
      float f;
      std::memcpy(&f, from, 4);
      return absl::StrCat(f);
    }
    double d;
    std::memcpy(&d, from, 8);
    return absl::StrCat(d);
  }
  if (t.is_signed) {
    if (t.bytes == 4) {
      int32_t v;
      std::memcpy(&v, from, 4);
      return absl::StrCat(v);
    }
    int64_t v;
    std::memcpy(&v, from, 8);
    return absl::StrCat(v);
  }
  if (t.bytes == 4) {
    uint32_t v;
    std::memcpy(&v, from, 4);
    return absl::StrCat(v);
  }
  uint64_t v;
  std::memcpy(&v, from, 8);
  return absl::StrCat(v);
}

}  // namespace

size_t ElementBytes(ElementType type) { return Info(type).bytes; }
const char* ElementName(ElementType type) { return Info(type).name; }

absl::StatusOr<std::vector<TaskArgument>> ParseTaskArguments(
    const std::vector<std::string>& tokens) {
  std::vector<TaskArgument> arguments;
  for (const std::string& token : tokens) {
    auto bad = [&](absl::string_view why) {
      return absl::InvalidArgumentError(absl::StrCat("argument '", token, "': ", why));
    };
    TaskArgument argument;
    std::vector<std::string> colon = absl::StrSplit(token, absl::MaxSplits(':', 2));
    if (colon[0] == "out" || colon[0] == "in") {
      if (colon.size() != 3) return bad("buffers are out:TYPE:COUNT or in:TYPE:V1,V2,...");
      const TypeInfo* t = Named(colon[1]);
      if (t == nullptr) return bad(absl::StrCat("unknown type '", colon[1], "'"));
      argument.type = t->type;
      if (colon[0] == "out") {
        argument.kind = TaskArgument::Kind::kOutput;
        if (!absl::SimpleAtoi(colon[2], &argument.count) || argument.count == 0) {
          return bad("the element count must be a positive number");
        }
        // Poison: an element the task did not write shows as all ones.
        argument.bytes.assign(argument.count * t->bytes, 0xff);
      } else {
        argument.kind = TaskArgument::Kind::kInput;
        std::vector<std::string> values = absl::StrSplit(colon[2], ',');
        argument.count = values.size();
        argument.bytes.resize(argument.count * t->bytes);
        for (size_t i = 0; i < values.size(); ++i) {
          if (absl::Status s = Encode(*t, values[i], &argument.bytes[i * t->bytes]); !s.ok()) {
            return bad(s.message());
          }
        }
      }
    } else {
      std::vector<std::string> eq = absl::StrSplit(token, absl::MaxSplits('=', 1));
      const TypeInfo* t = eq.size() == 2 ? Named(eq[0]) : nullptr;
      if (t == nullptr) return bad("expected TYPE=VALUE, out:TYPE:COUNT or in:TYPE:VALUES");
      argument.type = t->type;
      argument.bytes.resize(t->bytes);
      if (absl::Status s = Encode(*t, eq[1], argument.bytes.data()); !s.ok()) {
        return bad(s.message());
      }
    }
    arguments.push_back(std::move(argument));
  }
  return arguments;
}

absl::StatusOr<std::vector<uint8_t>> PackTaskArguments(
    const std::vector<TaskArgument>& arguments, const std::vector<uint64_t>& buffers) {
  std::vector<uint8_t> packed;
  size_t max_align = 1;
  size_t buffer = 0;
  auto append = [&](const void* data, size_t size) {
    const size_t at = (packed.size() + size - 1) / size * size;
    max_align = std::max(max_align, size);
    packed.resize(at + size);
    std::memcpy(packed.data() + at, data, size);
  };
  for (const TaskArgument& argument : arguments) {
    if (argument.kind == TaskArgument::Kind::kScalar) {
      append(argument.bytes.data(), argument.bytes.size());
      continue;
    }
    if (buffer >= buffers.size()) {
      return absl::InvalidArgumentError("fewer buffer addresses than buffer arguments");
    }
    append(&buffers[buffer++], sizeof(uint64_t));
  }
  packed.resize((packed.size() + max_align - 1) / max_align * max_align);
  if (packed.size() > kMaxInlineArgBytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "the arguments take ", packed.size(), " bytes; a task takes at most ",
        kMaxInlineArgBytes));
  }
  return packed;
}

std::string FormatElements(ElementType type, const uint8_t* data, size_t count, size_t limit) {
  const TypeInfo& t = Info(type);
  std::vector<std::string> values;
  for (size_t i = 0; i < std::min(count, limit); ++i) values.push_back(Decode(t, data + i * t.bytes));
  if (count > limit) values.push_back("...");
  return absl::StrJoin(values, ", ");
}

}  // namespace grosr
