#include "bench/bench_support.h"

#include <sys/resource.h>

#include <algorithm>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "bench/run_info.h"

namespace grosr {

double MicrosSince(Clock::time_point start) {
  return std::chrono::duration<double, std::micro>(Clock::now() - start).count();
}

double ProcessCpuMicros() {
  rusage usage{};
  getrusage(RUSAGE_SELF, &usage);
  auto micros = [](const timeval& t) { return t.tv_sec * 1e6 + t.tv_usec; };
  return micros(usage.ru_utime) + micros(usage.ru_stime);
}

Result Summarize(std::string name, std::vector<double> us, std::string note, std::string unit) {
  std::sort(us.begin(), us.end());
  Result r;
  r.name = std::move(name);
  r.unit = std::move(unit);
  r.median = us[us.size() / 2];
  r.p90 = us[std::min(us.size() - 1, us.size() * 90 / 100)];
  r.p99 = us[std::min(us.size() - 1, us.size() * 99 / 100)];
  r.min = us.front();
  r.samples = us.size();
  r.note = std::move(note);
  const size_t kept = std::min<size_t>(us.size(), 4000);
  for (size_t i = 0; i < kept; ++i) r.raw.push_back(us[i * us.size() / kept]);
  return r;
}

Result Single(std::string name, std::string unit, double value, uint64_t samples,
              std::string note) {
  Result r;
  r.name = std::move(name);
  r.unit = std::move(unit);
  r.median = r.p90 = r.p99 = r.min = value;
  r.samples = samples;
  r.note = std::move(note);
  return r;
}

void CheckOrExit(const absl::Status& status, const char* what) {
  if (status.ok()) return;
  std::fprintf(stderr, "benchmark: %s: %s\n", what, std::string(status.message()).c_str());
  std::exit(1);
}

namespace {
std::string Escaped(const std::string& s) {
  std::string out;
  for (char c : s) {
    if (c == '"' || c == '\\') out += '\\';
    out += c;
  }
  return out;
}
}  // namespace

std::string ToJson(const std::vector<Result>& results, const RunHeader& h) {
  std::vector<std::string> items;
  for (const Result& r : results) {
    std::vector<std::string> raw;
    for (double v : r.raw) raw.push_back(absl::StrFormat("%.6g", v));
    items.push_back(absl::StrFormat(
        "    {\"name\": \"%s\", \"experiment\": \"%s\", \"group\": \"%s\", \"unit\": \"%s\", "
        "\"median\": %.6g, \"p90\": %.6g, \"p99\": %.6g, \"min\": %.6g, \"samples\": %d, "
        "\"items\": %.6g, \"total_us\": %.6g, \"cpu_us_per_item\": %.6g, "
        "\"syncs_per_item\": %.6g, \"note\": \"%s\", \"raw\": [%s]}",
        r.name, r.experiment, r.group, r.unit, r.median, r.p90, r.p99, r.min, r.samples, r.items,
        r.total_us, r.cpu_us_per_item, r.syncs_per_item, Escaped(r.note),
        absl::StrJoin(raw, ", ")));
  }
  return absl::StrFormat(
      "{\n  \"device\": \"%s\", \"arch\": \"%s\", \"sms\": %d, \"driver\": \"%s\",\n"
      "  \"sm_clock_mhz\": %d, \"memory_clock_mhz\": %d, \"commit\": \"%s\", \"date\": \"%s\",\n"
      "  \"grid\": \"%s\",\n  \"results\": [\n%s\n  ]\n}\n",
      h.device, h.arch, h.sms, h.driver, h.sm_clock_mhz, h.memory_clock_mhz, BuildCommit(),
      UtcNow(), h.grid, absl::StrJoin(items, ",\n"));
}

void PrintResults(const std::vector<Result>& results, const RunHeader& h) {
  std::printf("%s (%s, %d SMs), driver %s, GROSR grid %s, commit %s\n", h.device.c_str(),
              h.arch.c_str(), h.sms, h.driver.c_str(), h.grid.c_str(), BuildCommit().c_str());
  std::printf("%-34s %14s %12s %12s %12s %9s %7s  %s\n", "benchmark", "median", "p90", "p99",
              "min", "cpu/item", "sync/it", "what");
  for (const Result& r : results) {
    const std::string cpu =
        r.cpu_us_per_item >= 0 ? absl::StrFormat("%.3g us", r.cpu_us_per_item) : "";
    const std::string syncs = r.syncs_per_item >= 0 ? absl::StrFormat("%.2g", r.syncs_per_item) : "";
    if (r.unit == "us") {
      std::printf("%-34s %11.3f us %9.3f us %9.3f us %9.3f us %9s %7s  %s\n", r.name.c_str(),
                  r.median, r.p90, r.p99, r.min, cpu.c_str(), syncs.c_str(), r.note.c_str());
    } else {
      std::printf("%-34s %10.3g %-7s %36s %9s %7s  %s\n", r.name.c_str(), r.median, r.unit.c_str(),
                  "", cpu.c_str(), syncs.c_str(), r.note.c_str());
    }
  }
}

}  // namespace grosr
