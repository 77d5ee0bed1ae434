#include "host/task_directory.h"

#include <cstdio>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"

namespace grosr {

absl::StatusOr<std::unique_ptr<TaskDirectory>> TaskDirectory::Serve(Runtime& runtime,
                                                                    const std::string& directory,
                                                                    Options options) {
  TaskWatcher::Options watch;
  watch.debounce = options.debounce;
  // Watch first, list second: a file changed in between is loaded twice at
  // worst, never missed.
  absl::StatusOr<std::unique_ptr<TaskWatcher>> watcher = TaskWatcher::Watch(directory, watch);
  if (!watcher.ok()) return watcher.status();
  absl::StatusOr<std::vector<std::string>> files = ListTaskFiles(directory);
  if (!files.ok()) return files.status();
  std::unique_ptr<TaskDirectory> served(
      new TaskDirectory(runtime, std::move(*watcher), std::move(options)));
  std::vector<absl::StatusOr<LoadReport>> reports = runtime.LoadFiles(*files);
  for (size_t i = 0; i < files->size(); ++i) {
    served->LogLoad((*files)[i], reports[i]);
    if (reports[i].ok()) {
      served->initial_.loaded.push_back(std::move(*reports[i]));
    } else {
      served->initial_.failed.emplace_back((*files)[i], reports[i].status());
    }
  }
  served->thread_ = std::thread([raw = served.get()] { raw->Loop(); });
  return served;
}

TaskDirectory::~TaskDirectory() { Stop(); }

void TaskDirectory::Stop() {
  stopping_ = true;
  watcher_->Wake();
  if (thread_.joinable()) thread_.join();
}

void TaskDirectory::Loop() {
  while (!stopping_) {
    std::vector<TaskFileEvent> events = watcher_->Next(absl::Milliseconds(500));
    std::vector<std::string> changed;
    for (const TaskFileEvent& event : events) {
      if (event.kind == TaskFileEvent::Kind::kChanged) {
        changed.push_back(event.path);
      } else {
        Log(absl::StrCat(event.path, " was removed; its tasks stay loaded"));
      }
    }
    if (!changed.empty() && !stopping_) {
      // One call: the files changed together share one pause.
      std::vector<absl::StatusOr<LoadReport>> reports = runtime_.LoadFiles(changed);
      for (size_t i = 0; i < changed.size(); ++i) LogLoad(changed[i], reports[i]);
      loads_ += static_cast<int>(changed.size());
    }
    if (absl::Status status = watcher_->status(); !status.ok()) {
      Log(absl::StrCat("stopped watching: ", status.message()));
      return;
    }
  }
}

void TaskDirectory::Log(const std::string& line) const {
  if (options_.log) {
    options_.log(line);
  } else {
    std::fprintf(stderr, "grosr: %s\n", line.c_str());
  }
}

void TaskDirectory::LogLoad(const std::string& path,
                            const absl::StatusOr<LoadReport>& report) const {
  if (!report.ok()) {
    Log(absl::StrCat("load ", path, " failed: ", report.status().message()));
    return;
  }
  std::vector<std::string> names;
  for (const LoadedTask& task : report->tasks) names.push_back(task.name);
  Log(absl::StrCat("loaded ", path, " (", absl::StrJoin(names, ", "), ")",
                   report->replaced.empty()
                       ? ""
                       : absl::StrCat(", replacing ", absl::StrJoin(report->replaced, ", ")),
                   ": compile ", absl::FormatDuration(report->compile_time),
                   report->from_cache ? " (cached)" : "", ", link ",
                   absl::FormatDuration(report->link_time), ", ",
                   report->paused ? absl::StrCat("pause ", absl::FormatDuration(report->pause_time))
                                  : std::string("no pause (scheduler not running)")));
}

}  // namespace grosr
