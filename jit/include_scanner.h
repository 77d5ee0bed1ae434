// Finds the user headers a CUDA source includes, for the compile cache key.
//
// NVRTC reports no dependency list, so the cache key is built from a scan of
// `#include` directives: every header that resolves to a file (relative to
// the including file, then the given directories) is hashed, recursively.
// Headers supplied in memory are hashed by the caller; headers that resolve
// nowhere here (the toolkit's, CCCL's) are covered by the toolkit version in
// the key. Includes inside inactive `#if` branches are still followed: a
// conservative scan only costs a spurious cache miss, never a stale hit.
#ifndef GROSR_JIT_INCLUDE_SCANNER_H_
#define GROSR_JIT_INCLUDE_SCANNER_H_

#include <string>
#include <vector>

#include "absl/container/flat_hash_set.h"
#include "absl/strings/string_view.h"

namespace grosr {

struct IncludedFile {
  std::string path;
  std::string contents;
};

// The include targets named in `source`, in order ("a.h" and <b.h> alike).
std::vector<std::string> ListIncludeDirectives(absl::string_view source);

// Files reachable from `source` (whose own path is `source_path`, possibly
// empty for in-memory sources) through includes that resolve on disk.
// `skip` names includes satisfied by in-memory headers.
std::vector<IncludedFile> FindIncludedFiles(
    absl::string_view source, absl::string_view source_path,
    const std::vector<std::string>& include_dirs,
    const absl::flat_hash_set<std::string>& skip);

}  // namespace grosr

#endif  // GROSR_JIT_INCLUDE_SCANNER_H_
