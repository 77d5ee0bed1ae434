#include "host/task_directory.h"

#include <algorithm>
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
    served->AfterLoad((*files)[i], reports[i]);
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
    const absl::Duration wait =
        retry_.empty() ? absl::Milliseconds(500)
                       : std::max(absl::ZeroDuration(), retry_at_ - absl::Now());
    std::vector<TaskFileEvent> events = watcher_->Next(wait);
    std::vector<std::string> changed;
    for (const TaskFileEvent& event : events) {
      if (event.kind == TaskFileEvent::Kind::kChanged) {
        changed.push_back(event.path);
      } else {
        Log(absl::StrCat(event.path, " was removed; its tasks stay loaded"));
      }
    }
    if (!retry_.empty() && absl::Now() >= retry_at_) {
      for (const std::string& path : retry_) {
        if (std::find(changed.begin(), changed.end(), path) == changed.end()) {
          Log(absl::StrCat("retrying ", path));
          changed.push_back(path);
        }
      }
      retry_.clear();
    }
    if (!changed.empty() && !stopping_) {
      // One call: the files changed together share one pause.
      std::vector<absl::StatusOr<LoadReport>> reports = runtime_.LoadFiles(changed);
      for (size_t i = 0; i < changed.size(); ++i) AfterLoad(changed[i], reports[i]);
      loads_ += static_cast<int>(changed.size());
    }
    if (absl::Status status = watcher_->status(); !status.ok()) {
      Log(absl::StrCat("stopped watching: ", status.message()));
      return;
    }
  }
}

void TaskDirectory::AfterLoad(const std::string& path,
                              const absl::StatusOr<LoadReport>& report) {
  LogLoad(path, report);
  if (report.ok()) return;
  // Saving the file again, even unchanged, retries it.
  watcher_->Forget(path);
  // The scheduler could not pause (a task that would not return held a
  // warp): nothing is wrong with the file; try it again shortly.
  if (absl::IsUnavailable(report.status())) {
    // The first failure sets the time; later ones wait for the same retry
    // rather than pushing it back.
    if (retry_.empty()) retry_at_ = absl::Now() + options_.retry_delay;
    if (std::find(retry_.begin(), retry_.end(), path) == retry_.end()) retry_.push_back(path);
    Log(absl::StrCat(path, " will be retried in ",
                     absl::FormatDuration(std::max(absl::ZeroDuration(), retry_at_ - absl::Now()))));
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
