#!/usr/bin/env bash
# One device call's whole pass over a bundle (tools/bundle.sh, and
# tools/bundle_ab.sh for A/B): the GPU suite with the sanitizers, the
# benchmarks, and the A/B runs asked for; every log under one tarball,
# $OUT/logs.tgz (the device tool brings back only a few files), and a short
# summary on stdout. From the repository root on the GPU machine:
#   bash bundle/device_pass.sh [suite] [bench] [alloc] [ab:chains] [ab:alloc] ...
# (no arguments: suite bench alloc). Each step has a time limit; whatever a
# step leaves running is killed before the next one starts, so it cannot
# slow the next step's measurements.
set -uo pipefail
cd "$(dirname "$0")"
out="${OUT:-/tmp/grosr-pass}"
logs="$out/logs"
mkdir -p "$logs"
finish() { (cd "$out" && tar czf logs.tgz logs && rm -rf logs); }
trap finish EXIT
# Runs a command in a session of its own and, once it returns, kills what
# is left of that session (a test a sanitizer run left behind, in a process
# group of its own that no `timeout` reaches).
step() {
  setsid "$@" &
  local pid=$! rc=0
  wait "$pid" || rc=$?
  pkill -9 -s "$pid" 2>/dev/null
  sleep 1
  return "$rc"
}
steps=("$@")
((${#steps[@]})) || steps=(suite bench alloc)
echo "bundle $(cat COMMIT)"
for step in "${steps[@]}"; do
  case $step in
    suite)
      OUT="$logs/suite" step timeout 300 bash run_gpu_suite.sh --sanitize >"$logs/suite.txt" 2>&1
      echo "suite: $(tail -1 "$logs/suite.txt")"
      grep -E "^FAIL" "$logs/suite.txt"
      grep -h "SUMMARY" "$logs"/suite/sanitize_*.log 2>/dev/null | sort | uniq -c ;;
    bench)
      step timeout 200 bin/grosr_bench --json "$logs/bench.json" >"$logs/bench.txt" 2>&1
      echo "bench: exit $?"
      grep -E "^(grosr_chain_(then|pure|spawn|alternating)|grosr_pingpong|tput_grosr_[a-z_]*_1000000) " \
        "$logs/bench.txt" | cut -c1-70 ;;
    alloc)
      step timeout 250 bin/alloc --deadline-s 4 --row-budget-s 2 --json "$logs/alloc.json" >"$logs/alloc.txt" 2>&1
      echo "alloc: exit $?"
      grep -E "^grosr_slab +1048576" "$logs/alloc.txt" | cut -c1-90 ;;
    ab:*)
      OUT="$logs/ab" step timeout 250 bash ab/run.sh --only "${step#ab:}" 1 >"$logs/$step.txt" 2>&1
      cat "$logs/$step.txt" ;;
    *) echo "unknown step $step" ;;
  esac
done
