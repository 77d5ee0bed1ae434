#!/usr/bin/env bash
# One device call's whole pass over a bundle (tools/bundle.sh first, then
# tools/bundle_ab.sh for A/B: bundle.sh empties bundle/): the GPU suite with
# the sanitizers, the benchmarks, and the A/B runs asked for; every log under
# one tarball, $OUT/logs.tgz (the device tool brings back only a few files),
# and a short summary on stdout. From the repository root on the GPU machine:
#   bash bundle/device_pass.sh [suite] [bench] [alloc] [ab:chains] [ab:alloc:main,pending_x] \
#       [script:FILE] ...   (FILE: a step written for one call, run from bundle/)
# (no arguments: suite bench alloc). The whole pass keeps within
# GROSR_PASS_SECONDS (default 570, under a device call's 600): each step gets
# its own limit or what is left, whichever is less. Each step runs in a
# session of its own, and whatever it leaves running is killed before the
# next starts -- or when the pass itself is stopped -- so that it cannot
# slow later measurements. Exits with the number of steps that failed.
set -uo pipefail
cd "$(dirname "$0")"
out="${OUT:-/tmp/grosr-pass}"
logs="$out/logs"
mkdir -p "$logs"
deadline=$((SECONDS + ${GROSR_PASS_SECONDS:-570}))
current=0  # the running step's session id (its pid), 0 between steps
finish() {
  if ((current)); then pkill -9 -s "$current" 2>/dev/null; fi
  (cd "$out" && tar czf logs.tgz logs && rm -rf logs)
}
trap finish EXIT
trap 'exit 143' TERM INT
# step LIMIT COMMAND...: runs COMMAND for at most LIMIT seconds (or what
# is left of the pass), then kills what is left of its session.
step() {
  local limit=$1; shift
  local left=$((deadline - SECONDS - 10))
  ((left < limit)) && limit=$left
  if ((limit <= 0)); then
    echo "  (no time left)"
    return 124
  fi
  setsid timeout -k 10 "$limit" "$@" &
  current=$!
  local rc=0
  wait "$current" || rc=$?
  pkill -9 -s "$current" 2>/dev/null
  current=0
  sleep 1
  return "$rc"
}
failed=0
steps=("$@")
((${#steps[@]})) || steps=(suite bench alloc)
echo "bundle $(cat COMMIT 2>/dev/null || echo '(no COMMIT file)')"
for name in "${steps[@]}"; do
  rc=0
  case $name in
    suite)
      OUT="$logs/suite" step 300 bash run_gpu_suite.sh --sanitize >"$logs/suite.txt" 2>&1 || rc=$?
      echo "suite: $(tail -1 "$logs/suite.txt")"
      grep -E "^FAIL" "$logs/suite.txt"
      grep -h "SUMMARY" "$logs"/suite/sanitize_*.log 2>/dev/null | sort | uniq -c ;;
    bench)
      step 200 bin/grosr_bench --json "$logs/bench.json" >"$logs/bench.txt" 2>&1 || rc=$?
      echo "bench: exit $rc"
      grep -E "^(grosr_chain_(then|pure|spawn|alternating)|grosr_pingpong|tput_grosr_[a-z_]*_1000000) |^pcie_" \
        "$logs/bench.txt" | cut -c1-70 ;;
    alloc)
      step 250 bin/alloc --deadline-s 4 --row-budget-s 2 --json "$logs/alloc.json" \
        >"$logs/alloc.txt" 2>&1 || rc=$?
      echo "alloc: exit $rc"
      grep -E "^grosr_slab +1048576" "$logs/alloc.txt" | cut -c1-90 ;;
    ab:*)  # ab:SELECTION or ab:SELECTION:LABEL,LABEL (only those builds)
      IFS=: read -r _ selection labels <<<"$name"
      OUT="$logs/ab" step 250 bash ab/run.sh --only "$selection" ${labels:+--labels "$labels"} 1 \
        >"$logs/$name.txt" 2>&1 || rc=$?
      echo "$name: exit $rc"
      cat "$logs/$name.txt" ;;
    script:*)  # script:FILE: a hand-written step in the bundle (LOGS= its log folder)
      file=${name#script:}
      LOGS="$logs" step 300 bash "$file" >"$logs/${file##*/}.txt" 2>&1 || rc=$?
      echo "$name: exit $rc"
      cat "$logs/${file##*/}.txt" ;;
    *)
      echo "unknown step $name"
      rc=2 ;;
  esac
  ((rc == 0)) || failed=$((failed + 1))
done
exit "$failed"
