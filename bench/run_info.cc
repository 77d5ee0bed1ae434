#include "bench/run_info.h"

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"

namespace grosr {
namespace {

std::string CommitFileBesideBinary() {
  char path[4096];
  const ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
  if (n <= 0) return "";
  std::string exe(path, static_cast<size_t>(n));
  const size_t slash = exe.rfind('/');
  if (slash == std::string::npos) return "";
  std::ifstream in(exe.substr(0, slash) + "/../COMMIT");
  std::string commit;
  std::getline(in, commit);
  return std::string(absl::StripAsciiWhitespace(commit));
}

std::string GitCommit() {
  const char* workspace = std::getenv("BUILD_WORKSPACE_DIRECTORY");  // bazel run
  const std::string command =
      absl::StrCat("git ", workspace ? absl::StrCat("-C '", workspace, "' ") : "",
                   "rev-parse --short HEAD 2>/dev/null");
  std::string out;
  if (FILE* pipe = popen(command.c_str(), "r")) {
    char buffer[128];
    while (std::fgets(buffer, sizeof(buffer), pipe) != nullptr) out += buffer;
    pclose(pipe);
  }
  return std::string(absl::StripAsciiWhitespace(out));
}

}  // namespace

std::string BuildCommit() {
  if (const char* c = std::getenv("GROSR_COMMIT"); c != nullptr && *c) return c;
  if (std::string beside = CommitFileBesideBinary(); !beside.empty()) return beside;
  if (std::string git = GitCommit(); !git.empty()) return git;
  return "unknown";
}

std::string UtcNow() {
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buffer[32];
  std::strftime(buffer, sizeof(buffer), "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buffer;
}

}  // namespace grosr
