#include "jit/include_scanner.h"

#include <fstream>
#include <optional>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace grosr {
namespace {

std::optional<std::string> ReadFile(const std::string& path) {
  std::ifstream file(path, std::ios::binary);
  if (!file) return std::nullopt;
  std::ostringstream bytes;
  bytes << file.rdbuf();
  return bytes.str();
}

std::string DirectoryOf(absl::string_view path) {
  size_t slash = path.rfind('/');
  if (slash == absl::string_view::npos) return ".";
  return std::string(path.substr(0, slash));
}

}  // namespace

std::vector<std::string> ListIncludeDirectives(absl::string_view source) {
  std::vector<std::string> targets;
  for (absl::string_view line : absl::StrSplit(source, '\n')) {
    line = absl::StripLeadingAsciiWhitespace(line);
    if (!absl::ConsumePrefix(&line, "#")) continue;
    line = absl::StripLeadingAsciiWhitespace(line);
    if (!absl::ConsumePrefix(&line, "include")) continue;
    line = absl::StripLeadingAsciiWhitespace(line);
    if (line.empty()) continue;
    char close = line[0] == '"' ? '"' : line[0] == '<' ? '>' : '\0';
    if (close == '\0') continue;
    size_t end = line.find(close, 1);
    if (end == absl::string_view::npos) continue;
    targets.emplace_back(line.substr(1, end - 1));
  }
  return targets;
}

std::vector<IncludedFile> FindIncludedFiles(
    absl::string_view source, absl::string_view source_path,
    const std::vector<std::string>& include_dirs,
    const absl::flat_hash_set<std::string>& skip) {
  std::vector<IncludedFile> found;
  absl::flat_hash_set<std::string> visited;
  struct Pending {
    std::string text;
    std::string directory;  // of the including file; empty when in memory
  };
  std::vector<Pending> work;
  work.push_back({std::string(source),
                  source_path.empty() ? "" : DirectoryOf(source_path)});
  while (!work.empty()) {
    Pending current = std::move(work.back());
    work.pop_back();
    for (const std::string& target : ListIncludeDirectives(current.text)) {
      if (skip.contains(target)) continue;
      std::vector<std::string> candidates;
      if (!current.directory.empty()) {
        candidates.push_back(absl::StrCat(current.directory, "/", target));
      }
      for (const std::string& dir : include_dirs) {
        candidates.push_back(absl::StrCat(dir, "/", target));
      }
      for (const std::string& candidate : candidates) {
        std::optional<std::string> contents = ReadFile(candidate);
        if (!contents) continue;
        if (visited.insert(candidate).second) {
          found.push_back({candidate, *contents});
          work.push_back({*contents, DirectoryOf(candidate)});
        }
        break;
      }
    }
  }
  return found;
}

}  // namespace grosr
