// grosr: the command-line program. Starts a runtime over a folder of task
// files, submits a task by name with typed arguments, waits, prints what
// the task wrote and the runtime's statistics.
//
//   bazel run //host:grosr -- list
//   bazel run //host:grosr -- run add i32=2 i32=3 out:i32:1
//   bazel run //host:grosr -- --repeat 1000 run countdown u32=100 out:u32:1
//   bazel run //host:grosr -- watch 60     # serve tasks/, load what changes
//
// Arguments are packed like the fields of a C struct, in order (see
// host/task_arguments.h): i32=V u32=V i64=V u64=V f32=V f64=V, out:T:N (a
// poisoned device buffer, printed after), in:T:V1,V2,...
#include <atomic>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "host/runtime.h"
#include "host/task_arguments.h"
#include "host/task_directory.h"

namespace grosr {
namespace {

constexpr char kUsage[] =
    "usage: grosr [--tasks DIR] [--device N] [--max-sms N] [--repeat N] COMMAND\n"
    "  list                 compile the tasks in DIR (default: tasks) and list them\n"
    "  run TASK ARG...      submit TASK, wait, print its outputs and statistics\n"
    "  watch [SECONDS]      run the scheduler over DIR, loading every .cu added or\n"
    "                       changed there while it runs (until Ctrl-C, or SECONDS)\n"
    "ARG: i32=V u32=V i64=V u64=V f32=V f64=V | out:T:N | in:T:V1,V2,...\n";

struct OutputBuffer {
  std::string label;
  ElementType type;
  size_t count;
  CUdeviceptr pointer;
};

// Parses the argument tokens, puts the buffers on the device and packs.
absl::Status PrepareArguments(Runtime& runtime, const std::vector<std::string>& tokens,
                              std::vector<uint8_t>* packed, std::vector<OutputBuffer>* outputs) {
  absl::StatusOr<std::vector<TaskArgument>> arguments = ParseTaskArguments(tokens);
  if (!arguments.ok()) return arguments.status();
  std::vector<uint64_t> buffers;
  for (const TaskArgument& argument : *arguments) {
    if (argument.kind == TaskArgument::Kind::kScalar) continue;
    absl::StatusOr<CUdeviceptr> memory = runtime.AllocateDeviceMemory(argument.bytes.size());
    if (!memory.ok()) return memory.status();
    if (absl::Status s = runtime.CopyToDevice(*memory, argument.bytes.data(), argument.bytes.size());
        !s.ok()) {
      return s;
    }
    buffers.push_back(*memory);
    if (argument.kind == TaskArgument::Kind::kOutput) {
      outputs->push_back({absl::StrCat("out", outputs->size()), argument.type, argument.count,
                          *memory});
    }
  }
  absl::StatusOr<std::vector<uint8_t>> bytes = PackTaskArguments(*arguments, buffers);
  if (!bytes.ok()) return bytes.status();
  *packed = std::move(*bytes);
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

std::atomic<bool> g_interrupted{false};

// `watch`: starts the scheduler over the directory and keeps loading what
// changes there until interrupted or `seconds` pass.
int Watch(Runtime& runtime, const std::string& directory, int seconds) {
  if (absl::Status s = runtime.Start(); !s.ok()) {
    std::fprintf(stderr, "grosr: %s\n", std::string(s.message()).c_str());
    return 1;
  }
  // Before the first load: a Ctrl-C during a long cold compile must still
  // shut the runtime down rather than kill the process under its kernel.
  std::signal(SIGINT, [](int) { g_interrupted = true; });
  std::signal(SIGTERM, [](int) { g_interrupted = true; });
  absl::StatusOr<std::unique_ptr<TaskDirectory>> served =
      TaskDirectory::Serve(runtime, directory, TaskDirectory::Options{});
  if (!served.ok()) {
    std::fprintf(stderr, "grosr: %s\n", std::string(served.status().message()).c_str());
    (void)runtime.Shutdown();
    return 1;
  }
  std::printf("watching %s (Ctrl-C stops)\n", directory.c_str());
  std::fflush(stdout);
  const absl::Time until = seconds > 0 ? absl::Now() + absl::Seconds(seconds)
                                       : absl::InfiniteFuture();
  while (!g_interrupted && absl::Now() < until) absl::SleepFor(absl::Milliseconds(100));
  (*served)->Stop();
  absl::StatusOr<RuntimeStats> stats = runtime.Stats();
  if (stats.ok()) PrintStats(*stats);
  absl::StatusOr<ShutdownReport> report = runtime.Shutdown(absl::Seconds(10));
  if (!report.ok()) {
    std::fprintf(stderr, "grosr: %s\n", std::string(report.status().message()).c_str());
    return 1;
  }
  return 0;
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
  int watch_seconds = 0;
  if (rest.empty() || (rest[0] != "list" && rest[0] != "run" && rest[0] != "watch") ||
      (rest[0] == "run" && rest.size() < 2) ||
      (rest[0] == "watch" && rest.size() > 1 &&
       (!absl::SimpleAtoi(rest[1], &watch_seconds) || watch_seconds < 0))) {
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
  if (rest[0] == "watch") return Watch(runtime, tasks_dir, watch_seconds);
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
  if (absl::Status s = PrepareArguments(runtime, {rest.begin() + 2, rest.end()}, &args, &outputs);
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
    std::vector<uint8_t> data(out.count * ElementBytes(out.type));
    if (!runtime.CopyFromDevice(data.data(), out.pointer, data.size()).ok()) continue;
    std::printf("%s = [%s]\n", out.label.c_str(),
                FormatElements(out.type, data.data(), out.count).c_str());
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
