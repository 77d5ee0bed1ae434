// Watch mode: a runtime that serves a directory of task files. Every *.cu
// there is loaded at start; a file added or changed while the scheduler
// runs is loaded into it (a changed file replaces its tasks' code); each
// load is logged with its compile, link and pause times and its result.
//
// A file deleted from the directory leaves its tasks loaded: work already
// queued for them, and tasks that spawn them, keep running (the log says
// so). Loading a file again brings its current code.
//
// Thread safety: Start and Stop from one thread; the watch runs on its own
// thread and calls Runtime::LoadFiles, which is safe beside submissions.
#ifndef GROSR_HOST_TASK_DIRECTORY_H_
#define GROSR_HOST_TASK_DIRECTORY_H_

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "host/runtime.h"
#include "host/task_watcher.h"

namespace grosr {

class TaskDirectory {
 public:
  struct Options {
    absl::Duration debounce = absl::Milliseconds(100);
    // A load the scheduler could not pause for (Unavailable: a task that
    // does not return) is tried again after this long, until it succeeds
    // or fails otherwise. Any failed file is also retried when saved again,
    // even unchanged.
    absl::Duration retry_delay = absl::Seconds(1);
    // Receives one line per event; default: stderr.
    std::function<void(const std::string&)> log;
  };

  // Loads every task file of `directory` into `runtime` (running or not;
  // files that fail are logged and listed in the result) and starts
  // watching it. The runtime must outlive the TaskDirectory.
  static absl::StatusOr<std::unique_ptr<TaskDirectory>> Serve(Runtime& runtime,
                                                              const std::string& directory,
                                                              Options options);
  ~TaskDirectory();  // Stop()
  TaskDirectory(const TaskDirectory&) = delete;
  TaskDirectory& operator=(const TaskDirectory&) = delete;

  // What the initial load did.
  const DirectoryLoad& initial() const { return initial_; }
  // Loads done by the watch so far (successful or not).
  int loads() const { return loads_.load(); }
  // Stops watching; idempotent.
  void Stop();

 private:
  TaskDirectory(Runtime& runtime, std::unique_ptr<TaskWatcher> watcher, Options options)
      : runtime_(runtime), watcher_(std::move(watcher)), options_(std::move(options)) {}
  void Loop();
  // Logs a load's outcome; a failure is retried on the next save, and an
  // Unavailable one after retry_delay. Called by the watch thread (or by
  // Serve before it starts).
  void AfterLoad(const std::string& path, const absl::StatusOr<LoadReport>& report);
  void Log(const std::string& line) const;
  void LogLoad(const std::string& path, const absl::StatusOr<LoadReport>& report) const;

  Runtime& runtime_;
  std::unique_ptr<TaskWatcher> watcher_;
  Options options_;
  DirectoryLoad initial_;
  // Files to load again at retry_at_ (watch thread only).
  std::vector<std::string> retry_;
  absl::Time retry_at_;
  std::atomic<bool> stopping_{false};
  std::atomic<int> loads_{0};
  std::thread thread_;
};

}  // namespace grosr

#endif  // GROSR_HOST_TASK_DIRECTORY_H_
