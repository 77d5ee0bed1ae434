// What every benchmark result records about its run besides the card: the
// commit the binary was built from and when it ran.
#ifndef GROSR_BENCH_RUN_INFO_H_
#define GROSR_BENCH_RUN_INFO_H_

#include <string>

namespace grosr {

// GROSR_COMMIT if set; else the COMMIT file tools/bundle.sh writes beside
// bin/ (a bundle runs on a machine whose copy of the tree may carry another
// .git); else `git rev-parse` in the workspace; else "unknown".
std::string BuildCommit();

// The current UTC time, ISO 8601 ("2026-11-29T07:15:09Z").
std::string UtcNow();

}  // namespace grosr

#endif  // GROSR_BENCH_RUN_INFO_H_
