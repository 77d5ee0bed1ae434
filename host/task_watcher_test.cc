// TaskWatcher on real files in a temp directory with real timing. Waits for
// events are generous (seconds) and debounce windows wide where a test needs
// several writes to land inside one, so a loaded CI machine does not flake;
// "nothing happened" is checked by collecting for well over the debounce.
#include "host/task_watcher.h"

#include <stdio.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace grosr {
namespace {

using ::testing::ElementsAre;
using ::testing::IsEmpty;

constexpr absl::Duration kEventTimeout = absl::Seconds(20);

// A fresh, empty directory under TEST_TMPDIR named after the running test.
std::string FreshDirectory(const std::string& suffix = "") {
  const char* tmp = std::getenv("TEST_TMPDIR");
  const std::string base = tmp != nullptr ? tmp : "/tmp";
  const std::string dir =
      absl::StrCat(base, "/task_watcher_",
                   ::testing::UnitTest::GetInstance()->current_test_info()->name(), suffix);
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

void WriteFile(const std::string& path, const std::string& content) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out << content;
  out.close();
  ASSERT_TRUE(out.good()) << path;
}

void Rename(const std::string& from, const std::string& to) {
  ASSERT_EQ(::rename(from.c_str(), to.c_str()), 0) << from << " -> " << to;
}

void Remove(const std::string& path) { ASSERT_EQ(::unlink(path.c_str()), 0) << path; }

std::string Changed(const std::string& path) { return "changed " + path; }
std::string Removed(const std::string& path) { return "removed " + path; }

std::string Describe(const TaskFileEvent& event) {
  return event.kind == TaskFileEvent::Kind::kChanged ? Changed(event.path) : Removed(event.path);
}

// Waits up to kEventTimeout for `count` events, then keeps listening for
// `quiet` more so that any extra event shows up too.
std::vector<std::string> Collect(TaskWatcher& watcher, size_t count, absl::Duration quiet) {
  std::vector<std::string> seen;
  const absl::Time give_up = absl::Now() + kEventTimeout;
  while (seen.size() < count && absl::Now() < give_up) {
    for (const TaskFileEvent& event : watcher.Next(give_up - absl::Now())) {
      seen.push_back(Describe(event));
    }
  }
  const absl::Time quiet_end = absl::Now() + quiet;
  while (absl::Now() < quiet_end) {
    for (const TaskFileEvent& event : watcher.Next(quiet_end - absl::Now())) {
      seen.push_back(Describe(event));
    }
  }
  return seen;
}

class TaskWatcherTest : public ::testing::Test {
 protected:
  // Debounce for tests that do one thing at a time; quiet checks last well
  // beyond it.
  static constexpr absl::Duration kDebounce = absl::Milliseconds(200);
  static constexpr absl::Duration kQuiet = absl::Milliseconds(1500);

  void StartWatching(absl::Duration debounce = kDebounce) {
    auto watcher = TaskWatcher::Watch(dir_, {.debounce = debounce});
    ASSERT_TRUE(watcher.ok()) << watcher.status();
    watcher_ = std::move(*watcher);
  }
  std::vector<std::string> Collect(size_t count, absl::Duration quiet = kQuiet) {
    return grosr::Collect(*watcher_, count, quiet);
  }
  std::string Path(const std::string& name) const { return dir_ + "/" + name; }

  std::string dir_ = FreshDirectory();
  std::unique_ptr<TaskWatcher> watcher_;
};

TEST(TaskFileNameTest, AcceptsCuFilesAndRejectsEditorTempFiles) {
  EXPECT_TRUE(IsTaskFileName("add.cu"));
  EXPECT_TRUE(IsTaskFileName("my-task_2.cu"));
  for (const char* name :
       {"add.cuh", "add.cpp", "add.cu.bak", "add.cu~", ".add.cu", ".add.cu.swp", ".add.cu.swx",
        "#add.cu#", ".#add.cu", "4913", ".cu", "cu", "", "add.cu.tmp", "add.CU"}) {
    EXPECT_FALSE(IsTaskFileName(name)) << name;
  }
}

TEST_F(TaskWatcherTest, ListTaskFilesIsSortedAndFiltered) {
  WriteFile(Path("b.cu"), "b");
  WriteFile(Path("a.cu"), "a");
  WriteFile(Path("notes.txt"), "n");
  WriteFile(Path(".a.cu.swp"), "s");
  WriteFile(Path("c.cu~"), "c");
  std::filesystem::create_directory(Path("dir.cu"));
  auto files = ListTaskFiles(dir_ + "/");  // a trailing '/' gives the same paths
  ASSERT_TRUE(files.ok()) << files.status();
  EXPECT_THAT(*files, ElementsAre(Path("a.cu"), Path("b.cu")));
}

TEST_F(TaskWatcherTest, MissingDirectoryIsNotFoundNamingThePath) {
  const std::string missing = dir_ + "/no-such-dir";
  auto watcher = TaskWatcher::Watch(missing, {});
  ASSERT_FALSE(watcher.ok());
  EXPECT_EQ(watcher.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(watcher.status().message()), ::testing::HasSubstr(missing));

  auto files = ListTaskFiles(missing);
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(files.status().message()), ::testing::HasSubstr(missing));
}

TEST_F(TaskWatcherTest, NotADirectoryIsFailedPreconditionNamingThePath) {
  const std::string file = Path("plain.cu");
  WriteFile(file, "x");
  auto watcher = TaskWatcher::Watch(file, {});
  ASSERT_FALSE(watcher.ok());
  EXPECT_EQ(watcher.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(std::string(watcher.status().message()), ::testing::HasSubstr(file));

  auto files = ListTaskFiles(file);
  ASSERT_FALSE(files.ok());
  EXPECT_EQ(files.status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(TaskWatcherTest, NegativeDebounceIsInvalid) {
  auto watcher = TaskWatcher::Watch(dir_, {.debounce = absl::Milliseconds(-1)});
  EXPECT_EQ(watcher.status().code(), absl::StatusCode::kInvalidArgument);
}

TEST_F(TaskWatcherTest, InitialFilesAreNotReported) {
  WriteFile(Path("a.cu"), "a");
  StartWatching();
  EXPECT_THAT(Collect(0), IsEmpty());
  // Saving one unchanged is not a change either: its content was hashed at Watch.
  WriteFile(Path("a.cu"), "a");
  EXPECT_THAT(Collect(0), IsEmpty());
  EXPECT_TRUE(watcher_->status().ok());
}

TEST_F(TaskWatcherTest, NewFileIsOneChanged) {
  StartWatching();
  WriteFile(Path("new.cu"), "__device__ void f() {}\n");
  EXPECT_THAT(Collect(1), ElementsAre(Changed(Path("new.cu"))));
}

TEST_F(TaskWatcherTest, RewriteInPlaceIsOneChanged) {
  WriteFile(Path("a.cu"), "version 1");
  StartWatching();
  WriteFile(Path("a.cu"), "version 2");
  EXPECT_THAT(Collect(1), ElementsAre(Changed(Path("a.cu"))));
  WriteFile(Path("a.cu"), "version 3");
  EXPECT_THAT(Collect(1), ElementsAre(Changed(Path("a.cu"))));
}

TEST_F(TaskWatcherTest, ManyQuickWritesWithinTheDebounceAreOneChanged) {
  // A wide window so that 20 writes 10 ms apart surely land inside it.
  const absl::Duration debounce = absl::Seconds(1);
  StartWatching(debounce);
  for (int i = 0; i < 20; ++i) {
    WriteFile(Path("a.cu"), absl::StrCat("version ", i));
    absl::SleepFor(absl::Milliseconds(10));
  }
  EXPECT_THAT(Collect(1, debounce + kQuiet), ElementsAre(Changed(Path("a.cu"))));
}

TEST_F(TaskWatcherTest, ChunkedWriteOfOneOpenFileIsOneChanged) {
  const absl::Duration debounce = absl::Seconds(1);
  StartWatching(debounce);
  {
    std::ofstream out(Path("a.cu"), std::ios::binary);
    for (int i = 0; i < 10; ++i) {
      out << "line " << i << "\n";
      out.flush();
      absl::SleepFor(absl::Milliseconds(20));
    }
  }
  EXPECT_THAT(Collect(1, debounce + kQuiet), ElementsAre(Changed(Path("a.cu"))));
}

TEST_F(TaskWatcherTest, RenameOverFromATempNameIsOneChangedOfTheTarget) {
  // Wide enough that each temp file is renamed away before it goes quiet.
  const absl::Duration debounce = absl::Seconds(1);
  WriteFile(Path("a.cu"), "old");
  StartWatching(debounce);
  // The temp name is not a task file (emacs/VS Code style) ...
  WriteFile(Path("a.cu.tmp1234"), "new 1");
  Rename(Path("a.cu.tmp1234"), Path("a.cu"));
  EXPECT_THAT(Collect(1, debounce + kQuiet), ElementsAre(Changed(Path("a.cu"))));
  // ... or it is (a tool writing "x.cu" then renaming): still only the target.
  WriteFile(Path("tmp-a-5678.cu"), "new 2");
  Rename(Path("tmp-a-5678.cu"), Path("a.cu"));
  EXPECT_THAT(Collect(1, debounce + kQuiet), ElementsAre(Changed(Path("a.cu"))));
}

TEST_F(TaskWatcherTest, VimBackupRenameAndRewriteIsOneChanged) {
  const absl::Duration debounce = absl::Seconds(1);
  WriteFile(Path("a.cu"), "old");
  StartWatching(debounce);
  // vim's writebackup dance: probe file, move the original aside, write anew,
  // drop the backup; swap files alongside.
  WriteFile(Path("4913"), "");
  Remove(Path("4913"));
  WriteFile(Path(".a.cu.swp"), "swap");
  Rename(Path("a.cu"), Path("a.cu~"));
  WriteFile(Path("a.cu"), "new");
  Remove(Path("a.cu~"));
  Remove(Path(".a.cu.swp"));
  EXPECT_THAT(Collect(1, debounce + kQuiet), ElementsAre(Changed(Path("a.cu"))));
}

TEST_F(TaskWatcherTest, EditorTempFilesAreIgnored) {
  StartWatching();
  for (const char* name :
       {".a.cu.swp", ".a.cu.swx", "a.cu~", "#a.cu#", ".#a.cu", "4913", ".hidden.cu"}) {
    WriteFile(Path(name), "temp");
  }
  Remove(Path("4913"));
  Remove(Path(".a.cu.swx"));
  EXPECT_THAT(Collect(0), IsEmpty());
}

TEST_F(TaskWatcherTest, NonCuFilesAreIgnored) {
  StartWatching();
  WriteFile(Path("a.cuh"), "header");
  WriteFile(Path("notes.txt"), "notes");
  WriteFile(Path("a.cu.bak"), "backup");
  WriteFile(Path("a.cpp"), "host");
  std::filesystem::create_directory(Path("subdir.cu"));
  Rename(Path("notes.txt"), Path("notes.md"));
  EXPECT_THAT(Collect(0), IsEmpty());
}

TEST_F(TaskWatcherTest, IdenticalContentSavedAgainIsNoEvent) {
  StartWatching();
  WriteFile(Path("a.cu"), "same");
  EXPECT_THAT(Collect(1), ElementsAre(Changed(Path("a.cu"))));
  WriteFile(Path("a.cu"), "same");
  EXPECT_THAT(Collect(0), IsEmpty());
  // A rename-over with identical bytes is no change either.
  WriteFile(Path("a.cu.tmp"), "same");
  Rename(Path("a.cu.tmp"), Path("a.cu"));
  EXPECT_THAT(Collect(0), IsEmpty());
  WriteFile(Path("a.cu"), "different");
  EXPECT_THAT(Collect(1), ElementsAre(Changed(Path("a.cu"))));
}

// A caller whose load failed (e.g. a pause that could not happen) forgets
// the file: saving the same bytes again then retries it.
TEST_F(TaskWatcherTest, ForgottenFileSavedUnchangedIsChangedAgain) {
  WriteFile(Path("initial.cu"), "there at Watch");
  StartWatching();
  WriteFile(Path("a.cu"), "same");
  EXPECT_THAT(Collect(1), ElementsAre(Changed(Path("a.cu"))));
  watcher_->Forget(Path("a.cu"));
  WriteFile(Path("a.cu"), "same");
  EXPECT_THAT(Collect(1), ElementsAre(Changed(Path("a.cu"))));
  // Remembered again after that report.
  WriteFile(Path("a.cu"), "same");
  EXPECT_THAT(Collect(0), IsEmpty());
  // Files listed at Watch can be forgotten too; unknown paths are ignored.
  watcher_->Forget(Path("initial.cu"));
  watcher_->Forget("/elsewhere/initial.cu");
  watcher_->Forget(Path("never.cu"));
  WriteFile(Path("initial.cu"), "there at Watch");
  EXPECT_THAT(Collect(1), ElementsAre(Changed(Path("initial.cu"))));
}

TEST_F(TaskWatcherTest, DeleteIsRemoved) {
  WriteFile(Path("initial.cu"), "i");
  StartWatching();
  Remove(Path("initial.cu"));
  EXPECT_THAT(Collect(1), ElementsAre(Removed(Path("initial.cu"))));

  WriteFile(Path("later.cu"), "l");
  EXPECT_THAT(Collect(1), ElementsAre(Changed(Path("later.cu"))));
  Remove(Path("later.cu"));
  EXPECT_THAT(Collect(1), ElementsAre(Removed(Path("later.cu"))));
  // Back with the same content after a removal: new again.
  WriteFile(Path("later.cu"), "l");
  EXPECT_THAT(Collect(1), ElementsAre(Changed(Path("later.cu"))));
}

TEST_F(TaskWatcherTest, RenamingAwayIsRemovedAndRenamingInIsChanged) {
  WriteFile(Path("a.cu"), "a");
  StartWatching();
  Rename(Path("a.cu"), Path("a.cu.disabled"));
  EXPECT_THAT(Collect(1), ElementsAre(Removed(Path("a.cu"))));
  Rename(Path("a.cu.disabled"), Path("b.cu"));
  EXPECT_THAT(Collect(1), ElementsAre(Changed(Path("b.cu"))));
}

TEST_F(TaskWatcherTest, FileCreatedAndDeletedWithinTheDebounceIsNothing) {
  const absl::Duration debounce = absl::Seconds(1);
  StartWatching(debounce);
  WriteFile(Path("brief.cu"), "b");
  Remove(Path("brief.cu"));
  EXPECT_THAT(Collect(0, debounce + kQuiet), IsEmpty());
}

TEST_F(TaskWatcherTest, SeveralFilesEachReportedOnce) {
  StartWatching();
  WriteFile(Path("a.cu"), "a");
  WriteFile(Path("b.cu"), "b");
  WriteFile(Path("c.cu"), "c");
  std::vector<std::string> seen = Collect(3);
  std::sort(seen.begin(), seen.end());
  EXPECT_THAT(seen,
              ElementsAre(Changed(Path("a.cu")), Changed(Path("b.cu")), Changed(Path("c.cu"))));
}

TEST_F(TaskWatcherTest, EventPathsUseTheDirectoryWithoutATrailingSlash) {
  auto watcher = TaskWatcher::Watch(dir_ + "//", {.debounce = kDebounce});
  ASSERT_TRUE(watcher.ok()) << watcher.status();
  EXPECT_EQ((*watcher)->directory(), dir_);
  WriteFile(Path("a.cu"), "a");
  EXPECT_THAT(grosr::Collect(**watcher, 1, kQuiet), ElementsAre(Changed(Path("a.cu"))));
}

TEST_F(TaskWatcherTest, NextTimesOutEmpty) {
  StartWatching();
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(watcher_->Next(absl::Milliseconds(300)), IsEmpty());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(300));
  EXPECT_THAT(watcher_->Next(absl::ZeroDuration()), IsEmpty());
}

TEST_F(TaskWatcherTest, WakeUnblocksNextFromAnotherThread) {
  StartWatching();
  std::atomic<bool> returned{false};
  std::vector<TaskFileEvent> events;
  std::chrono::steady_clock::duration blocked{};
  std::thread waiter([&] {
    const auto start = std::chrono::steady_clock::now();
    events = watcher_->Next(absl::Seconds(120));
    blocked = std::chrono::steady_clock::now() - start;
    returned = true;
  });
  absl::SleepFor(absl::Milliseconds(200));
  EXPECT_FALSE(returned.load());  // it really was blocked
  watcher_->Wake();
  waiter.join();
  EXPECT_THAT(events, IsEmpty());
  EXPECT_LT(blocked, std::chrono::seconds(60));
}

TEST_F(TaskWatcherTest, WakeBeforeNextIsNotLostAndSeveralCountAsOne) {
  StartWatching();
  watcher_->Wake();
  watcher_->Wake();
  auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(watcher_->Next(absl::Seconds(120)), IsEmpty());
  EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(60));
  // The wakes were consumed: the next Next waits for its timeout again.
  start = std::chrono::steady_clock::now();
  EXPECT_THAT(watcher_->Next(absl::Milliseconds(300)), IsEmpty());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(300));
  // And the watcher still works.
  WriteFile(Path("a.cu"), "a");
  EXPECT_THAT(Collect(1), ElementsAre(Changed(Path("a.cu"))));
}

// Calls Next until status() turns into an error or kEventTimeout passes.
absl::Status WaitUntilGone(TaskWatcher& watcher) {
  const absl::Time give_up = absl::Now() + kEventTimeout;
  while (watcher.status().ok() && absl::Now() < give_up) {
    watcher.Next(absl::Milliseconds(100));
  }
  return watcher.status();
}

TEST_F(TaskWatcherTest, DirectoryRemovedMakesStatusAnError) {
  StartWatching();
  EXPECT_TRUE(watcher_->status().ok());
  WriteFile(Path("notes.txt"), "n");
  std::filesystem::remove_all(dir_);
  const absl::Status status = WaitUntilGone(*watcher_);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr(dir_));
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("gone"));
  // Nothing more is reported, Next still honours its timeout, Wake still works.
  const auto start = std::chrono::steady_clock::now();
  EXPECT_THAT(watcher_->Next(absl::Milliseconds(300)), IsEmpty());
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(300));
  watcher_->Wake();
  EXPECT_THAT(watcher_->Next(absl::Seconds(120)), IsEmpty());
}

TEST_F(TaskWatcherTest, DirectoryMovedAwayMakesStatusAnError) {
  WriteFile(Path("a.cu"), "a");
  StartWatching();
  const std::string moved = FreshDirectory("_moved");
  std::filesystem::remove(moved);
  Rename(dir_, moved);
  const absl::Status status = WaitUntilGone(*watcher_);
  ASSERT_FALSE(status.ok());
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr(dir_));
  EXPECT_THAT(std::string(status.message()), ::testing::HasSubstr("gone"));
  // Changes in the moved directory are no longer this watcher's business.
  WriteFile(moved + "/a.cu", "changed");
  EXPECT_THAT(grosr::Collect(*watcher_, 0, kQuiet), IsEmpty());
}

}  // namespace
}  // namespace grosr
