#include "jit/compile_cache.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "absl/strings/str_cat.h"
#include "jit/sha256.h"

namespace grosr {
namespace {

// File layout: magic, payload size, log size (decimal, one per line), the
// payload, the log, then the hex SHA-256 of everything before it.
constexpr absl::string_view kMagic = "GROSR-CACHE-1\n";

absl::Status MakeDirectories(const std::string& path) {
  std::string prefix;
  for (size_t i = 0; i <= path.size(); ++i) {
    if (i == path.size() || (path[i] == '/' && i > 0)) {
      prefix = path.substr(0, i);
      if (mkdir(prefix.c_str(), 0755) != 0 && errno != EEXIST) {
        return absl::UnavailableError(absl::StrCat(
            "cannot create cache directory ", prefix, ": ", strerror(errno)));
      }
    }
  }
  return absl::OkStatus();
}

std::string Serialize(const CompileCache::Entry& entry) {
  std::string body = absl::StrCat(kMagic, entry.payload.size(), "\n",
                                   entry.log.size(), "\n", entry.payload,
                                   entry.log);
  return absl::StrCat(body, Sha256Hex(body));
}

std::optional<CompileCache::Entry> Deserialize(const std::string& bytes) {
  constexpr size_t kDigestSize = 64;
  if (bytes.size() < kMagic.size() + kDigestSize ||
      absl::string_view(bytes).substr(0, kMagic.size()) != kMagic) {
    return std::nullopt;
  }
  absl::string_view body(bytes.data(), bytes.size() - kDigestSize);
  if (Sha256Hex(body) != absl::string_view(bytes).substr(body.size())) {
    return std::nullopt;
  }
  std::istringstream header(std::string(body.substr(kMagic.size(), 64)));
  size_t payload_size = 0, log_size = 0;
  if (!(header >> payload_size >> log_size)) return std::nullopt;
  size_t consumed = static_cast<size_t>(header.tellg()) + 1;  // the '\n'
  size_t start = kMagic.size() + consumed;
  if (start + payload_size + log_size != body.size()) return std::nullopt;
  CompileCache::Entry entry;
  entry.payload = std::string(body.substr(start, payload_size));
  entry.log = std::string(body.substr(start + payload_size, log_size));
  return entry;
}

}  // namespace

CompileCache::CompileCache(std::string directory)
    : directory_(std::move(directory)) {}

std::string CompileCache::DefaultDirectory() {
  if (const char* dir = std::getenv("GROSR_CACHE_DIR"); dir && *dir) {
    return dir;
  }
  if (const char* xdg = std::getenv("XDG_CACHE_HOME"); xdg && *xdg) {
    return absl::StrCat(xdg, "/grosr");
  }
  if (const char* home = std::getenv("HOME"); home && *home) {
    return absl::StrCat(home, "/.cache/grosr");
  }
  const char* tmp = std::getenv("TMPDIR");
  return absl::StrCat(tmp && *tmp ? tmp : "/tmp", "/grosr-cache-", getuid());
}

std::string CompileCache::PathFor(absl::string_view key) const {
  // Two-level fan-out keeps directories small.
  return absl::StrCat(directory_, "/", key.substr(0, 2), "/", key.substr(2));
}

std::optional<CompileCache::Entry> CompileCache::Lookup(
    absl::string_view key) const {
  std::ifstream file(PathFor(key), std::ios::binary);
  if (!file) return std::nullopt;
  std::ostringstream bytes;
  bytes << file.rdbuf();
  return Deserialize(bytes.str());
}

absl::Status CompileCache::Store(absl::string_view key,
                                 const Entry& entry) const {
  if (key.size() != 64) {
    return absl::InvalidArgumentError("cache key must be a hex SHA-256");
  }
  std::string path = PathFor(key);
  std::string folder = path.substr(0, path.rfind('/'));
  if (absl::Status made = MakeDirectories(folder); !made.ok()) return made;

  // A name no other writer (thread or process) can pick.
  static std::atomic<uint64_t> sequence{0};
  std::string temporary = absl::StrCat(path, ".tmp.", getpid(), ".",
                                       sequence.fetch_add(1), ".",
                                       reinterpret_cast<uintptr_t>(&entry));
  std::string bytes = Serialize(entry);
  int fd = open(temporary.c_str(), O_WRONLY | O_CREAT | O_EXCL, 0644);
  if (fd < 0) {
    return absl::UnavailableError(
        absl::StrCat("cannot write cache entry ", temporary, ": ",
                     strerror(errno)));
  }
  size_t written = 0;
  while (written < bytes.size()) {
    ssize_t n = write(fd, bytes.data() + written, bytes.size() - written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      int error = errno;
      close(fd);
      unlink(temporary.c_str());
      return absl::UnavailableError(absl::StrCat(
          "cannot write cache entry ", temporary, ": ", strerror(error)));
    }
    written += static_cast<size_t>(n);
  }
  close(fd);
  if (rename(temporary.c_str(), path.c_str()) != 0) {
    int error = errno;
    unlink(temporary.c_str());
    return absl::UnavailableError(absl::StrCat(
        "cannot publish cache entry ", path, ": ", strerror(error)));
  }
  return absl::OkStatus();
}

}  // namespace grosr
