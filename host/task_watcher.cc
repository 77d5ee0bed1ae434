#include "host/task_watcher.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"

namespace grosr {
namespace {

// Events on the directory's entries that can change what a name holds. A
// rename-over arrives as IN_MOVED_TO of the target; IN_MODIFY keeps a file
// that is still being written from going quiet.
constexpr uint32_t kEntryEvents =
    IN_CREATE | IN_MODIFY | IN_CLOSE_WRITE | IN_MOVED_TO | IN_MOVED_FROM | IN_DELETE;
// Events saying the directory itself is no longer where we watch it.
constexpr uint32_t kGoneEvents = IN_DELETE_SELF | IN_MOVE_SELF | IN_UNMOUNT | IN_IGNORED;

std::string WithoutTrailingSlashes(std::string directory) {
  while (directory.size() > 1 && directory.back() == '/') directory.pop_back();
  return directory;
}

std::string JoinPath(const std::string& directory, const std::string& name) {
  if (!directory.empty() && directory.back() == '/') return directory + name;
  return absl::StrCat(directory, "/", name);
}

absl::Status DirectoryError(int error, const std::string& directory) {
  switch (error) {
    case ENOENT:
      return absl::NotFoundError(absl::StrCat("task directory '", directory, "' does not exist"));
    case ENOTDIR:
      return absl::FailedPreconditionError(
          absl::StrCat("task directory '", directory, "' is not a directory"));
    default:
      return absl::ErrnoToStatus(error, absl::StrCat("task directory '", directory, "'"));
  }
}

absl::Status CheckDirectory(const std::string& directory) {
  struct stat st;
  if (::stat(directory.c_str(), &st) != 0) return DirectoryError(errno, directory);
  if (!S_ISDIR(st.st_mode)) return DirectoryError(ENOTDIR, directory);
  return absl::OkStatus();
}

bool IsRegularFile(const std::string& path) {
  struct stat st;
  return ::stat(path.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

// The names (not paths) of the task files in `directory`, sorted.
absl::StatusOr<std::vector<std::string>> ListTaskNames(const std::string& directory) {
  absl::Status checked = CheckDirectory(directory);
  if (!checked.ok()) return checked;
  DIR* dir = ::opendir(directory.c_str());
  if (dir == nullptr) return DirectoryError(errno, directory);
  std::vector<std::string> names;
  errno = 0;
  while (const dirent* entry = ::readdir(dir)) {
    std::string name = entry->d_name;
    if (IsTaskFileName(name) && IsRegularFile(JoinPath(directory, name))) {
      names.push_back(std::move(name));
    }
    errno = 0;
  }
  const int read_error = errno;
  ::closedir(dir);
  if (read_error != 0) {
    return absl::ErrnoToStatus(read_error,
                               absl::StrCat("reading task directory '", directory, "'"));
  }
  std::sort(names.begin(), names.end());
  return names;
}

// What a name holds when its events have settled.
struct FileState {
  bool present = false;
  std::optional<uint64_t> hash;  // nullopt: present but could not be read
};

// FNV-1a, 64-bit: enough to tell one save of a source file from another.
uint64_t HashBytes(const char* data, size_t size, uint64_t hash) {
  for (size_t i = 0; i < size; ++i) {
    hash ^= static_cast<unsigned char>(data[i]);
    hash *= 0x100000001b3ULL;
  }
  return hash;
}

FileState Probe(const std::string& path) {
  // O_NONBLOCK so that a FIFO named like a task cannot block the watcher.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    // Gone (or the directory is): absent. Anything else (e.g. EACCES): present
    // but unreadable, reported as changed so the loader says why it failed.
    if (errno == ENOENT || errno == ENOTDIR) return {};
    return {.present = true, .hash = std::nullopt};
  }
  FileState state;
  struct stat st;
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    return state;  // a directory or device named like a task is not a task file
  }
  state.present = true;
  uint64_t hash = 0xcbf29ce484222325ULL;
  char buffer[1 << 14];
  for (;;) {
    const ssize_t n = ::read(fd, buffer, sizeof(buffer));
    if (n > 0) {
      hash = HashBytes(buffer, static_cast<size_t>(n), hash);
    } else if (n == 0) {
      state.hash = hash;
      break;
    } else if (errno != EINTR) {
      break;  // unreadable: hash stays nullopt
    }
  }
  ::close(fd);
  return state;
}

}  // namespace

bool IsTaskFileName(absl::string_view name) {
  if (name.empty() || name.front() == '.' || name.front() == '#') return false;
  if (absl::EndsWith(name, "~") || absl::EndsWith(name, ".swp") || absl::EndsWith(name, ".swx") ||
      name == "4913") {
    return false;
  }
  return name.size() > 3 && absl::EndsWith(name, ".cu");
}

absl::StatusOr<std::vector<std::string>> ListTaskFiles(const std::string& directory) {
  const std::string dir = WithoutTrailingSlashes(directory);
  absl::StatusOr<std::vector<std::string>> names = ListTaskNames(dir);
  if (!names.ok()) return names.status();
  std::vector<std::string> paths;
  paths.reserve(names->size());
  for (const std::string& name : *names) paths.push_back(JoinPath(dir, name));
  return paths;
}

absl::StatusOr<std::unique_ptr<TaskWatcher>> TaskWatcher::Watch(const std::string& directory,
                                                                Options options) {
  if (options.debounce < absl::ZeroDuration()) {
    return absl::InvalidArgumentError(
        absl::StrCat("TaskWatcher: negative debounce ", absl::FormatDuration(options.debounce)));
  }
  std::string dir = WithoutTrailingSlashes(directory);
  absl::Status checked = CheckDirectory(dir);
  if (!checked.ok()) return checked;

  const int inotify_fd = ::inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
  if (inotify_fd < 0) {
    return absl::ErrnoToStatus(errno, absl::StrCat("inotify_init1 for task directory '", dir,
                                                   "' (fs.inotify.max_user_instances?)"));
  }
  if (::inotify_add_watch(
          inotify_fd, dir.c_str(),
          kEntryEvents | IN_DELETE_SELF | IN_MOVE_SELF | IN_ONLYDIR | IN_EXCL_UNLINK) < 0) {
    const int error = errno;
    ::close(inotify_fd);
    if (error == ENOSPC) {
      return absl::ResourceExhaustedError(
          absl::StrCat("cannot watch task directory '", dir,
                       "': inotify watch limit reached (fs.inotify.max_user_watches)"));
    }
    return DirectoryError(error, dir);
  }
  const int wake_fd = ::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (wake_fd < 0) {
    const int error = errno;
    ::close(inotify_fd);
    return absl::ErrnoToStatus(error, "eventfd for TaskWatcher");
  }
  std::unique_ptr<TaskWatcher> watcher(
      new TaskWatcher(std::move(dir), options, inotify_fd, wake_fd));

  // The watch is in place before the scan, so a change racing the scan is
  // either seen here or reported later (hash compared), never lost.
  absl::StatusOr<std::vector<std::string>> names = ListTaskNames(watcher->directory_);
  if (!names.ok()) return names.status();
  for (const std::string& name : *names) {
    FileState state = Probe(JoinPath(watcher->directory_, name));
    if (state.present) watcher->known_[name] = state.hash;
  }
  return watcher;
}

TaskWatcher::TaskWatcher(std::string directory, Options options, int inotify_fd, int wake_fd)
    : directory_(std::move(directory)),
      options_(options),
      inotify_fd_(inotify_fd),
      wake_fd_(wake_fd) {}

TaskWatcher::~TaskWatcher() {
  ::close(inotify_fd_);
  ::close(wake_fd_);
}

absl::Status TaskWatcher::status() const {
  std::lock_guard<std::mutex> lock(mu_);
  return status_;
}

bool TaskWatcher::gone() const { return !status().ok(); }

void TaskWatcher::SetGone(absl::Status status) {
  pending_.clear();
  std::lock_guard<std::mutex> lock(mu_);
  if (status_.ok()) status_ = std::move(status);
}

void TaskWatcher::Wake() {
  const uint64_t one = 1;
  // Fails only if the counter would overflow, in which case a wake is pending.
  ssize_t written;
  do {
    written = ::write(wake_fd_, &one, sizeof(one));
  } while (written < 0 && errno == EINTR);
}

void TaskWatcher::Forget(const std::string& path) {
  const std::string prefix = directory_ + "/";
  if (path.compare(0, prefix.size(), prefix) != 0) return;
  auto known = known_.find(path.substr(prefix.size()));
  if (known != known_.end()) known->second.reset();
}

void TaskWatcher::MarkPending(const std::string& name) { pending_[name] = Clock::now(); }

void TaskWatcher::Rescan() {
  for (const auto& [name, hash] : known_) MarkPending(name);
  absl::StatusOr<std::vector<std::string>> names = ListTaskNames(directory_);
  if (!names.ok()) return;  // the directory's own events say whether it is gone
  for (const std::string& name : *names) MarkPending(name);
}

void TaskWatcher::DrainInotify() {
  // Aligned for inotify_event; large enough for many events per read.
  alignas(struct inotify_event) char buffer[64 * 1024];
  while (!gone()) {
    const ssize_t n = ::read(inotify_fd_, buffer, sizeof(buffer));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return;
      SetGone(absl::ErrnoToStatus(errno, absl::StrCat("reading inotify events of task directory '",
                                                      directory_, "'; no longer watching")));
      return;
    }
    for (ssize_t offset = 0; offset < n;) {
      const auto* event = reinterpret_cast<const struct inotify_event*>(buffer + offset);
      offset += static_cast<ssize_t>(sizeof(struct inotify_event) + event->len);
      if (event->mask & IN_Q_OVERFLOW) {
        Rescan();
        continue;
      }
      if (event->mask & kGoneEvents) {
        const char* how = (event->mask & IN_MOVE_SELF) ? "moved away"
                          : (event->mask & IN_UNMOUNT) ? "unmounted"
                                                       : "deleted";
        SetGone(absl::NotFoundError(absl::StrCat("task directory '", directory_, "' is gone (", how,
                                                 "); no longer watching it")));
        return;
      }
      if (event->mask & IN_ISDIR) continue;
      if (event->len == 0 || !(event->mask & kEntryEvents)) continue;
      const std::string name(event->name);  // NUL-padded to len
      if (IsTaskFileName(name)) MarkPending(name);
    }
  }
}

std::vector<TaskFileEvent> TaskWatcher::TakeReady() {
  const Clock::time_point now = Clock::now();
  const auto debounce = absl::ToChronoNanoseconds(options_.debounce);
  std::vector<std::pair<Clock::time_point, std::string>> quiet;
  for (auto it = pending_.begin(); it != pending_.end();) {
    if (now - it->second >= debounce) {
      quiet.emplace_back(it->second, it->first);
      it = pending_.erase(it);
    } else {
      ++it;
    }
  }
  std::sort(quiet.begin(), quiet.end());

  std::vector<TaskFileEvent> events;
  for (const auto& [touched, name] : quiet) {
    const std::string path = JoinPath(directory_, name);
    const FileState state = Probe(path);
    auto known = known_.find(name);
    if (!state.present) {
      if (known != known_.end()) {
        known_.erase(known);
        events.push_back({TaskFileEvent::Kind::kRemoved, path});
      }
      continue;  // e.g. a temp ".cu" created and renamed away: never reported
    }
    const bool changed = known == known_.end() || !state.hash.has_value() ||
                         !known->second.has_value() || *state.hash != *known->second;
    if (!changed) continue;  // identical bytes saved again
    known_[name] = state.hash;
    events.push_back({TaskFileEvent::Kind::kChanged, path});
  }
  return events;
}

std::vector<TaskFileEvent> TaskWatcher::Next(absl::Duration timeout) {
  // Beyond a year is "forever" (and keeps the clock arithmetic in range).
  const bool forever = timeout > absl::Hours(24 * 365);
  const Clock::time_point start = Clock::now();
  const Clock::time_point deadline =
      forever ? Clock::time_point::max()
              : start + absl::ToChronoNanoseconds(std::max(timeout, absl::ZeroDuration()));
  const auto debounce = absl::ToChronoNanoseconds(options_.debounce);

  for (;;) {
    if (!gone()) {
      std::vector<TaskFileEvent> ready = TakeReady();
      if (!ready.empty()) return ready;
    }
    // Sleep until the deadline or the earliest pending name goes quiet.
    const Clock::time_point now = Clock::now();
    Clock::time_point wake_at = deadline;
    for (const auto& [name, touched] : pending_) wake_at = std::min(wake_at, touched + debounce);
    int timeout_ms = -1;
    if (wake_at != Clock::time_point::max()) {
      const auto left = wake_at - now;
      // Round up: waking a little early would only loop back to poll again.
      const int64_t ms =
          left <= Clock::duration::zero()
              ? 0
              : (std::chrono::duration_cast<std::chrono::nanoseconds>(left).count() + 999999) /
                    1000000;
      timeout_ms = static_cast<int>(std::min<int64_t>(ms, INT_MAX));
    }

    struct pollfd fds[2] = {
        {.fd = wake_fd_, .events = POLLIN, .revents = 0},
        // A negative fd is ignored by poll: once gone, only Wake or the
        // timeout end the wait.
        {.fd = gone() ? -1 : inotify_fd_, .events = POLLIN, .revents = 0},
    };
    const int polled = ::poll(fds, 2, timeout_ms);
    if (polled < 0) {
      if (errno == EINTR) continue;
      SetGone(absl::ErrnoToStatus(
          errno, absl::StrCat("poll on task directory '", directory_, "'; no longer watching")));
      return {};
    }
    if (fds[0].revents & POLLIN) {
      uint64_t count;
      while (::read(wake_fd_, &count, sizeof(count)) < 0 && errno == EINTR) {
      }
      return {};
    }
    if (fds[1].revents != 0) DrainInotify();
    if (Clock::now() >= deadline) return gone() ? std::vector<TaskFileEvent>{} : TakeReady();
  }
}

}  // namespace grosr
