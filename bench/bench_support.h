// What the benchmark programs share: a result record (with the samples it
// came from, CPU time and host synchronizations per item), summaries, the
// table they print and the JSON they write.
#ifndef GROSR_BENCH_BENCH_SUPPORT_H_
#define GROSR_BENCH_BENCH_SUPPORT_H_

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace grosr {

using Clock = std::chrono::steady_clock;
double MicrosSince(Clock::time_point start);

// User + system CPU time of this process so far, in microseconds
// (getrusage): around a timed region it says what the host spent.
double ProcessCpuMicros();

struct Result {
  std::string name;
  std::string unit;       // "us" per operation, "tasks/s", "cycles", "MHz"
  double median = 0;      // or the single value
  double p90 = 0;
  double p99 = 0;
  double min = 0;
  uint64_t samples = 0;
  std::string note;
  std::string experiment; // "A" (dependent dispatch), "B" (throughput), "load"
  std::string group;      // B: the series a sweep point belongs to
  double items = 0;       // B: tasks in the run
  double total_us = 0;    // B: wall time of the run (median)
  double cpu_us_per_item = -1;   // host CPU time per step or task; -1: not measured
  double syncs_per_item = -1;    // host synchronizations per step or task
  std::vector<double> raw;       // samples kept for a CDF (at most 4,000, evenly spaced)
};

// Percentiles of `us` (any unit; `unit` names it).
Result Summarize(std::string name, std::vector<double> us, std::string note,
                 std::string unit = "us");
Result Single(std::string name, std::string unit, double value, uint64_t samples,
              std::string note);

// Exits with the message when `status` is not OK (benchmarks have no
// caller to return an error to).
void CheckOrExit(const absl::Status& status, const char* what);
template <typename T>
T Value(absl::StatusOr<T> v, const char* what) {
  CheckOrExit(v.status(), what);
  return std::move(*v);
}

struct RunHeader {
  std::string device, arch, driver, grid;
  int sms = 0, sm_clock_mhz = 0, memory_clock_mhz = 0;
};
std::string ToJson(const std::vector<Result>& results, const RunHeader& header);
void PrintResults(const std::vector<Result>& results, const RunHeader& header);

}  // namespace grosr

#endif  // GROSR_BENCH_BENCH_SUPPORT_H_
