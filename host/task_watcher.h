// Watches a task directory (default `tasks/`) for the runtime's watch mode and
// reports, once per editor save, which task files changed or went away. It
// knows nothing about CUDA: the caller turns the events into loads.
//
// One directory, not recursive (Linux inotify). Only task files count: names
// ending in ".cu" that are not editor temp files (see IsTaskFileName).
//
// Debouncing: every event on a name (create, write, close, rename in or out,
// delete) restarts that name's quiet timer; once the name has been quiet for
// `debounce`, the watcher looks at the file as it is then and reports
//   - kChanged  if it exists and is new to the watcher or its content hash
//               differs from the last content reported (saving identical bytes
//               again reports nothing);
//   - kRemoved  if it is gone and had been reported (or was there at Watch);
//   - nothing   otherwise (e.g. a temp ".cu" created and renamed away).
// So an editor's save is one event whatever its dance: write in place,
// write-temp-then-rename-over (vim, emacs, VS Code), or backup-rename-rewrite.
// A file written without a pause longer than `debounce` is reported only after
// the writer stops.
//
// Usage (watch mode):
//   auto watcher = TaskWatcher::Watch("tasks", {});   // watch first,
//   auto files = ListTaskFiles("tasks");               // then load what is there
//   while (running) for (auto& e : (*watcher)->Next(absl::Seconds(1))) ...
// A file changed between Watch and the caller's first read may be reported
// once more (a redundant load), never missed.
#ifndef GROSR_HOST_TASK_WATCHER_H_
#define GROSR_HOST_TASK_WATCHER_H_

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace grosr {

struct TaskFileEvent {
  enum class Kind { kChanged, kRemoved };
  Kind kind = Kind::kChanged;
  std::string path;  // "<directory>/<name>", directory as given, less trailing '/'
};

// True for a task file's name (no directory): ends in ".cu" and is not an
// editor temp file (starts with '.' or '#', ends with '~', ".swp" or ".swx",
// or is vim's "4913" probe).
bool IsTaskFileName(absl::string_view name);

// The task files of `directory` (regular files, or links to them, whose names
// pass IsTaskFileName), sorted, as "<directory>/<name>". NotFound if the
// directory does not exist, FailedPrecondition if it is not a directory.
absl::StatusOr<std::vector<std::string>> ListTaskFiles(const std::string& directory);

// Thread safety: one thread calls Next; Wake and status may be called from any
// thread at any time; the destructor must not run concurrently with anything.
class TaskWatcher {
 public:
  struct Options {
    // How long a file must be quiet before its events are reported as one.
    absl::Duration debounce = absl::Milliseconds(100);
  };

  // Starts watching `directory`. The task files already there are NOT reported
  // (the caller loads them itself, listing them with ListTaskFiles); their
  // content is hashed now, so re-saving them unchanged reports nothing.
  // NotFound if the directory does not exist, FailedPrecondition if it is not a
  // directory, InvalidArgument for a negative debounce.
  static absl::StatusOr<std::unique_ptr<TaskWatcher>> Watch(const std::string& directory,
                                                            Options options);

  TaskWatcher(const TaskWatcher&) = delete;
  TaskWatcher& operator=(const TaskWatcher&) = delete;
  ~TaskWatcher();  // closes the inotify and wake descriptors

  // Blocks up to `timeout` (absl::InfiniteDuration() for no limit) until some
  // debounced events are ready and returns them, in the order their files went
  // quiet; returns empty on timeout, on Wake, or at once for a non-positive
  // timeout with nothing ready. Only one thread calls Next. After the
  // directory is gone (see status) it reports nothing more but still blocks
  // for `timeout` or until Wake, so a polling caller does not spin.
  std::vector<TaskFileEvent> Next(absl::Duration timeout);

  // Forgets what `path` (a file of the watched directory) held: its next
  // change is reported even if its bytes are the same as those last
  // reported. For a caller whose load of that content failed: saving the
  // file again, unchanged, retries it. Called by the thread that calls Next.
  void Forget(const std::string& path);

  // Makes a blocked Next return at once, empty, e.g. to shut down from another
  // thread. A Wake while no Next is blocked makes the next Next return at once
  // (so a wake just before Next blocks is not lost); several Wakes before that
  // Next count as one. Never blocks.
  void Wake();

  // OK while watching. After the watched directory is deleted, moved away or
  // unmounted: NotFound naming the directory and saying it is gone (if reading
  // inotify itself fails: that errno's error, naming the directory). From then
  // on Next reports nothing more. Callable from any thread.
  absl::Status status() const;

  const std::string& directory() const { return directory_; }

 private:
  using Clock = std::chrono::steady_clock;

  TaskWatcher(std::string directory, Options options, int inotify_fd, int wake_fd);

  // Reads every queued inotify event and updates the pending map.
  void DrainInotify();
  // Marks every known name and every task file present as pending (after the
  // kernel dropped events: IN_Q_OVERFLOW).
  void Rescan();
  void MarkPending(const std::string& name);
  // Reports the pending names whose quiet time has passed.
  std::vector<TaskFileEvent> TakeReady();
  void SetGone(absl::Status status);
  bool gone() const;

  const std::string directory_;  // without trailing '/'
  const Options options_;
  const int inotify_fd_;
  const int wake_fd_;  // eventfd

  // Touched only by the thread calling Next (and Watch before it returns).
  // Name -> hash of the content last reported (nullopt: present but unread).
  std::map<std::string, std::optional<uint64_t>> known_;
  // Name -> when it was last touched; reported once quiet for debounce.
  std::map<std::string, Clock::time_point> pending_;

  mutable std::mutex mu_;
  absl::Status status_;  // guarded by mu_
};

}  // namespace grosr

#endif  // GROSR_HOST_TASK_WATCHER_H_
