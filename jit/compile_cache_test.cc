#include "jit/compile_cache.h"

#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"
#include "jit/sha256.h"

namespace grosr {
namespace {

std::string FreshDirectory(const std::string& name) {
  const char* base = std::getenv("TEST_TMPDIR");
  std::string dir = absl::StrCat(base ? base : "/tmp", "/", name, "-", getpid());
  (void)!std::system(absl::StrCat("rm -rf '", dir, "'").c_str());
  return dir;
}

TEST(CompileCacheTest, StoresAndFindsEntries) {
  CompileCache cache(FreshDirectory("store"));
  std::string key = Sha256Hex("key");
  EXPECT_FALSE(cache.Lookup(key).has_value());
  std::string payload("\x7f" "ELF\0binary\0bytes", 17);
  ASSERT_TRUE(cache.Store(key, {payload, "a warning"}).ok());
  std::optional<CompileCache::Entry> hit = cache.Lookup(key);
  ASSERT_TRUE(hit.has_value());
  EXPECT_EQ(hit->payload, payload);
  EXPECT_EQ(hit->log, "a warning");
  EXPECT_FALSE(cache.Lookup(Sha256Hex("other key")).has_value());
}

TEST(CompileCacheTest, DamagedEntryIsAMiss) {
  std::string dir = FreshDirectory("damaged");
  CompileCache cache(dir);
  std::string key = Sha256Hex("key");
  ASSERT_TRUE(cache.Store(key, {"payload bytes", ""}).ok());
  std::string path = absl::StrCat(dir, "/", key.substr(0, 2), "/", key.substr(2));
  {
    std::fstream file(path, std::ios::in | std::ios::out | std::ios::binary);
    file.seekp(20);
    file.put('X');
  }
  EXPECT_FALSE(cache.Lookup(key).has_value());
  {
    std::ofstream truncate(path, std::ios::binary | std::ios::trunc);
    truncate << "GROSR-CACHE-1\n";
  }
  EXPECT_FALSE(cache.Lookup(key).has_value());
  ASSERT_TRUE(cache.Store(key, {"payload bytes", ""}).ok());
  EXPECT_EQ(cache.Lookup(key)->payload, "payload bytes");
}

TEST(CompileCacheTest, RejectsBadKeys) {
  CompileCache cache(FreshDirectory("badkey"));
  EXPECT_FALSE(cache.Store("short", {"x", ""}).ok());
}

// Threads and processes writing and reading the same keys never see a torn
// entry: every hit holds exactly one writer's complete payload.
TEST(CompileCacheTest, ConcurrentWritersAndReadersSeeWholeEntries) {
  std::string dir = FreshDirectory("concurrent");
  std::vector<std::string> keys;
  for (int k = 0; k < 4; ++k) keys.push_back(Sha256Hex(absl::StrCat(k)));
  auto payload_for = [](int key, int writer) {
    return std::string(100000 + key, static_cast<char>('a' + writer));
  };
  auto hammer = [&](int writer) {
    CompileCache cache(dir);
    for (int round = 0; round < 30; ++round) {
      for (int k = 0; k < 4; ++k) {
        EXPECT_TRUE(cache.Store(keys[k], {payload_for(k, writer), ""}).ok());
        std::optional<CompileCache::Entry> hit = cache.Lookup(keys[(k + 1) % 4]);
        if (!hit) continue;
        ASSERT_EQ(hit->payload.size(), 100000u + (k + 1) % 4);
        ASSERT_EQ(hit->payload, std::string(hit->payload.size(), hit->payload[0]));
      }
    }
  };
  pid_t child = fork();
  if (child == 0) {
    hammer(7);
    _exit(::testing::Test::HasFailure() ? 1 : 0);
  }
  std::vector<std::thread> threads;
  for (int writer = 0; writer < 4; ++writer) threads.emplace_back(hammer, writer);
  for (std::thread& thread : threads) thread.join();
  int status = 0;
  ASSERT_EQ(waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

}  // namespace
}  // namespace grosr
