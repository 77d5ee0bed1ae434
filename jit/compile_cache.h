// A content-addressed cache of compiled device code on disk.
//
// Reloading an unchanged task should cost a file read, not an NVRTC run
// (tens to hundreds of milliseconds). Entries are named by a SHA-256 key that
// the caller derives from everything that determines the output (source and
// header bytes, options, compiler versions); the cache itself knows nothing of
// CUDA.
//
// Guarantees:
//  - Safe when several threads or processes use one directory at once: an
//    entry is written to a unique temporary file and renamed into place, so a
//    reader sees either nothing or a whole entry.
//  - A damaged entry (truncated, edited) fails its checksum and reads as a
//    miss; the next Store replaces it.
//  - Store failures (read-only disk, full disk) are reported but never make a
//    compile fail: callers treat the cache as an optimisation.
//
// Example:
//   CompileCache cache("/home/me/.cache/grosr");
//   if (auto hit = cache.Lookup(key)) use(hit->payload);
//   else cache.Store(key, {cubin, log}).IgnoreError();
#ifndef GROSR_JIT_COMPILE_CACHE_H_
#define GROSR_JIT_COMPILE_CACHE_H_

#include <optional>
#include <string>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace grosr {

class CompileCache {
 public:
  struct Entry {
    std::string payload;  // the cubin
    std::string log;      // the compiler's log (warnings) when it was made
  };

  // `directory` is created on first Store if missing.
  explicit CompileCache(std::string directory);

  // The default location: $GROSR_CACHE_DIR, else $XDG_CACHE_HOME/grosr, else
  // $HOME/.cache/grosr, else a folder under the system temporary directory.
  static std::string DefaultDirectory();

  // `key` must be a 64-character hex SHA-256.
  std::optional<Entry> Lookup(absl::string_view key) const;
  absl::Status Store(absl::string_view key, const Entry& entry) const;

  const std::string& directory() const { return directory_; }

 private:
  std::string PathFor(absl::string_view key) const;

  std::string directory_;
};

}  // namespace grosr

#endif  // GROSR_JIT_COMPILE_CACHE_H_
