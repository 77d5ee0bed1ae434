// grosr: the command-line program. Starts a runtime over a folder of task
// files, submits a task by name with typed arguments, waits, prints what
// the task wrote and the runtime's statistics.
//
//   bazel run //host:grosr -- list
//   bazel run //host:grosr -- run add i32=2 i32=3 out:i32:1
//   bazel run //host:grosr -- --repeat 1000 run countdown u32=100 out:u32:1
//
// Arguments are packed like the fields of a C struct, in order:
//   i32=V u32=V i64=V u64=V f32=V f64=V   scalars
//   out:T:N        a device buffer of N elements of T (poisoned), printed after
//   in:T:V1,V2,..  a device buffer holding the values
// where T is one of i32 u32 i64 u64 f32 f64.
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "host/runtime.h"

namespace grosr {
namespace {

constexpr char kUsage[] =
    "usage: grosr [--tasks DIR] [--device N] [--max-sms N] [--repeat N] COMMAND\n"
    "  list                 compile the tasks in DIR (default: tasks) and list them\n"
    "  run TASK ARG...      submit TASK, wait, print its outputs and statistics\n"
    "ARG: i32=V u32=V i64=V u64=V f32=V f64=V | out:T:N | in:T:V1,V2,...\n";

struct ElementType {
  const char* name;
  size_t size;
  bool is_float;
  bool is_signed;
};
constexpr ElementType kTypes[] = {
    {"i32", 4, false, true}, {"u32", 4, false, false}, {"i64", 8, false, true},
    {"u64", 8, false, false}, {"f32", 4, true, true},  {"f64", 8, true, true},
};

const ElementType* TypeNamed(absl::string_view name) {
  for (const ElementType& t : kTypes) {
    if (name == t.name) return &t;
  }
  return nullptr;
}

absl::Status EncodeValue(const ElementType& type, absl::string_view text, uint8_t* to) {
  bool ok = false;
  if (type.is_float) {
    double v = 0;
    ok = absl::SimpleAtod(text, &v);
    if (type.size == 4) {
      float f = static_cast<float>(v);
      std::memcpy(to, &f, 4);
    } else {
      std::memcpy(to, &v, 8);
    }
  } else if (type.is_signed) {
    int64_t v = 0;
    ok = absl::SimpleAtoi(text, &v);
    std::memcpy(to, &v, type.size);  // little-endian truncation
  } else {
    uint64_t v = 0;
    ok = absl::SimpleAtoi(text, &v);
    std::memcpy(to, &v, type.size);
  }
  if (!ok) return absl::InvalidArgumentError(absl::StrCat("bad ", type.name, " value '", text, "'"));
  return absl::OkStatus();
}

std::string DecodeValue(const ElementType& type, const uint8_t* from) {
  if (type.is_float) {
    if (type.size == 4) {
      float f;
      std::memcpy(&f, from, 4);
      return absl::StrCat(f);
    }
    double d;
    std::memcpy(&d, from, 8);
    return absl::StrCat(d);
  }
  if (type.is_signed) {
    if (type.size == 4) {
      int32_t v;
      std::memcpy(&v, from, 4);
      return absl::StrCat(v);
    }
    int64_t v;
    std::memcpy(&v, from, 8);
    return absl::StrCat(v);
  }
  uint64_t v = 0;
  std::memcpy(&v, from, type.size);
  return absl::StrCat(v);
}

struct OutputBuffer {
  std::string label;
  const ElementType* type;
  size_t count;
  CUdeviceptr pointer;
};

// Packs the argument tokens into `bytes`, allocating device buffers.
absl::Status PackArguments(Runtime& runtime, const std::vector<std::string>& tokens,
                           std::vector<uint8_t>* bytes, std::vector<OutputBuffer>* outputs) {
  size_t max_align = 1;
  auto append = [&](const uint8_t* data, size_t size) {
    size_t at = (bytes->size() + size - 1) / size * size;
    max_align = std::max(max_align, size);
    bytes->resize(at + size);
    std::memcpy(bytes->data() + at, data, size);
  };
  for (const std::string& token : tokens) {
    std::vector<std::string> colon = absl::StrSplit(token, ':');
    if ((colon[0] == "out" || colon[0] == "in") && colon.size() == 3) {
      const ElementType* type = TypeNamed(colon[1]);
      if (type == nullptr) return absl::InvalidArgumentError(absl::StrCat("unknown type in ", token));
      std::vector<uint8_t> initial;
      size_t count = 0;
      if (colon[0] == "out") {
        if (!absl::SimpleAtoi(colon[2], &count) || count == 0) {
          return absl::InvalidArgumentError(absl::StrCat("bad element count in ", token));
        }
        initial.assign(count * type->size, 0xff);  // poison: unwritten shows as -1/max
      } else {
        std::vector<std::string> values = absl::StrSplit(colon[2], ',');
        count = values.size();
        initial.resize(count * type->size);
        for (size_t i = 0; i < count; ++i) {
          if (absl::Status s = EncodeValue(*type, values[i], &initial[i * type->size]); !s.ok()) {
            return s;
          }
        }
      }
      absl::StatusOr<CUdeviceptr> memory = runtime.AllocateDeviceMemory(initial.size());
      if (!memory.ok()) return memory.status();
      if (absl::Status s = runtime.CopyToDevice(*memory, initial.data(), initial.size()); !s.ok()) {
        return s;
      }
      if (colon[0] == "out") {
        outputs->push_back({absl::StrCat("out", outputs->size()), type, count, *memory});
      }
      uint64_t pointer = *memory;
      append(reinterpret_cast<const uint8_t*>(&pointer), 8);
      continue;
    }
    std::vector<std::string> eq = absl::StrSplit(absl::string_view(token), absl::MaxSplits('=', 1));
    const ElementType* type = eq.size() == 2 ? TypeNamed(eq[0]) : nullptr;
    if (type == nullptr) {
      return absl::InvalidArgumentError(absl::StrCat("cannot read argument '", token, "'\n", kUsage));
    }
    uint8_t value[8];
    if (absl::Status s = EncodeValue(*type, eq[1], value); !s.ok()) return s;
    append(value, type->size);
  }
  bytes->resize((bytes->size() + max_align - 1) / max_align * max_align);
  return absl::OkStatus();
}

void PrintStats(const RuntimeStats& stats) {
  std::printf("%-16s %6s %12s %12s %12s %8s\n", "task", "id", "submitted", "spawned",
              "completed", "failed");
  for (const TaskStats& t : stats.tasks) {
    std::printf("%-16s %6u %12llu %12llu %12llu %8llu\n", t.name.c_str(), t.id,
                static_cast<unsigned long long>(t.submitted),
                static_cast<unsigned long long>(t.spawned),
                static_cast<unsigned long long>(t.completed),
                static_cast<unsigned long long>(t.failed));
  }
  std::printf("queue depth %lld, pending %u, errors reported %llu, invalid ids %llu\n",
              static_cast<long long>(stats.queue_depth), stats.pending,
              static_cast<unsigned long long>(stats.errors_reported),
              static_cast<unsigned long long>(stats.invalid_dispatches));
}

int Main(int argc, char** argv) {
  std::string tasks_dir = "tasks";
  RuntimeOptions options;
  int repeat = 1;
  std::vector<std::string> rest;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next_int = [&](int* value) {
      if (i + 1 >= argc || !absl::SimpleAtoi(argv[i + 1], value)) return false;
      ++i;
      return true;
    };
    if (a == "--help" || a == "-h") {
      std::fputs(kUsage, stdout);
      return 0;
    } else if (a == "--tasks" && i + 1 < argc) {
      tasks_dir = argv[++i];
    } else if (a == "--device") {
      if (!next_int(&options.device)) break;
    } else if (a == "--max-sms") {
      if (!next_int(&options.max_sms)) break;
    } else if (a == "--repeat") {
      if (!next_int(&repeat) || repeat < 1) {
        std::fputs(kUsage, stderr);
        return 2;
      }
    } else {
      rest.assign(argv + i, argv + argc);
      break;
    }
  }
  if (rest.empty() || (rest[0] != "list" && rest[0] != "run") ||
      (rest[0] == "run" && rest.size() < 2)) {
    std::fputs(kUsage, stderr);
    return 2;
  }
  // `bazel run` starts us in the runfiles tree; the user's folder is here.
  if (const char* cwd = std::getenv("BUILD_WORKING_DIRECTORY");
      cwd != nullptr && !tasks_dir.empty() && tasks_dir[0] != '/') {
    tasks_dir = absl::StrCat(cwd, "/", tasks_dir);
  }

  absl::StatusOr<std::unique_ptr<Runtime>> created = Runtime::Create(options);
  if (!created.ok()) {
    std::fprintf(stderr, "grosr: %s\n", std::string(created.status().message()).c_str());
    return 2;
  }
  Runtime& runtime = **created;
  const DeviceInfo& info = runtime.device_info();
  std::printf("%s (%s, %d SMs): %d blocks x %d warps, %d workers\n", info.name.c_str(),
              info.arch.c_str(), info.sm_count, info.blocks, info.warps_per_block, info.workers);
  absl::StatusOr<DirectoryLoad> loaded = runtime.LoadDirectory(tasks_dir);
  if (!loaded.ok()) {
    std::fprintf(stderr, "grosr: %s\n", std::string(loaded.status().message()).c_str());
    return 1;
  }
  for (const auto& [path, status] : loaded->failed) {
    std::fprintf(stderr, "grosr: %s failed to load:\n%s\n", path.c_str(),
                 std::string(status.message()).c_str());
  }
  if (rest[0] == "list") {
    for (const LoadReport& r : loaded->loaded) {
      for (const LoadedTask& t : r.tasks) {
        std::printf("%-16s id %-4u %s (compile %s%s)\n", t.name.c_str(), t.id, r.source.c_str(),
                    absl::FormatDuration(r.compile_time).c_str(),
                    r.from_cache ? ", cached" : "");
      }
    }
    return loaded->failed.empty() ? 0 : 1;
  }

  absl::StatusOr<TaskId> task = runtime.Find(rest[1]);
  if (!task.ok()) {
    std::fprintf(stderr, "grosr: %s\n", std::string(task.status().message()).c_str());
    return 1;
  }
  std::vector<uint8_t> args;
  std::vector<OutputBuffer> outputs;
  if (absl::Status s = PackArguments(runtime, {rest.begin() + 2, rest.end()}, &args, &outputs);
      !s.ok()) {
    std::fprintf(stderr, "grosr: %s\n", std::string(s.message()).c_str());
    return 2;
  }
  if (absl::Status s = runtime.Start(); !s.ok()) {
    std::fprintf(stderr, "grosr: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  int exit_code = 0;
  const absl::Time start = absl::Now();
  for (int r = 0; r < repeat; ++r) {
    absl::StatusOr<TaskHandle> handle = runtime.Submit(*task, args.data(), args.size());
    absl::Status status = handle.ok() ? runtime.Wait(*handle) : handle.status();
    if (!status.ok()) {
      std::fprintf(stderr, "grosr: %s\n", std::string(status.message()).c_str());
      exit_code = 1;
      break;
    }
  }
  const absl::Duration elapsed = absl::Now() - start;
  if (absl::Status s = runtime.Drain(absl::Seconds(60)); !s.ok()) {
    std::fprintf(stderr, "grosr: %s\n", std::string(s.message()).c_str());
    exit_code = 1;
  }
  std::printf("%s: %d run%s in %s\n", rest[1].c_str(), repeat, repeat == 1 ? "" : "s",
              absl::FormatDuration(elapsed).c_str());
  for (const OutputBuffer& out : outputs) {
    std::vector<uint8_t> data(out.count * out.type->size);
    if (!runtime.CopyFromDevice(data.data(), out.pointer, data.size()).ok()) continue;
    std::vector<std::string> values;
    for (size_t i = 0; i < std::min<size_t>(out.count, 64); ++i) {
      values.push_back(DecodeValue(*out.type, &data[i * out.type->size]));
    }
    std::printf("%s = [%s%s]\n", out.label.c_str(), absl::StrJoin(values, ", ").c_str(),
                out.count > 64 ? ", ..." : "");
  }
  absl::StatusOr<RuntimeStats> stats = runtime.Stats();
  if (stats.ok()) PrintStats(*stats);
  absl::StatusOr<ShutdownReport> report = runtime.Shutdown();
  if (!report.ok()) {
    std::fprintf(stderr, "grosr: %s\n", std::string(report.status().message()).c_str());
    return 1;
  }
  return exit_code;
}

}  // namespace
}  // namespace grosr

int main(int argc, char** argv) { return grosr::Main(argc, argv); }
