#!/usr/bin/env bash
# Runs the GPU test suite of a bundle (tools/bundle.sh) on a GPU machine;
# works from any folder (it runs inside the bundle). Logs go to $OUT (the
# device tool's folder) or /tmp/grosr-gpu. Prints each binary's gtest
# summary and a total line "N passed, N failed".
#   --sanitize   also run the scheduler tests under compute-sanitizer at a
#                small scale; GROSR_SANITIZE_TOOLS picks the tools (default
#                "memcheck racecheck synccheck"), GROSR_SANITIZE_FILTER the tests
set -uo pipefail
cd "$(dirname "$0")"
logs="${OUT:-/tmp/grosr-gpu}"
mkdir -p "$logs"
export GROSR_REQUIRE_GPU=1
export GROSR_CACHE_DIR="${GROSR_CACHE_DIR:-/tmp/grosr-cache}"
passed=0; failed=0
# Each step runs in the background and is waited for, so that a TERM (an
# outer `timeout` running out) stops it at once: the step's own `timeout`
# sits in a process group of its own, out of reach of the outer one's
# kill, and a sanitizer run left behind kept the GPU busy under the next
# measurements (2-60x slow).
child=0
stop_child() {
  if ((child)); then
    kill -TERM "$child" 2>/dev/null
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$child" 2>/dev/null || break; sleep 1; done
    kill -KILL "$child" 2>/dev/null
  fi
  echo "interrupted"
  exit 143
}
trap stop_child TERM INT
run() {  # name, command...
  local name=$1; shift
  local start=$SECONDS
  "$@" >"$logs/$name.log" 2>&1 &
  child=$!
  local status=0
  wait "$child" || status=$?
  child=0
  if ((status == 0)); then
    passed=$((passed + 1)); echo "PASS $name ($((SECONDS - start)) s)"
  else
    failed=$((failed + 1)); echo "FAIL $name ($((SECONDS - start)) s)"
    tail -40 "$logs/$name.log"
  fi
  grep -E "^\[ +(PASSED|FAILED|SKIPPED) +\]" "$logs/$name.log" | sed "s/^/    /"
}
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader | tee "$logs/gpu.txt"
for t in gpu_scheduler_test gpu_fault_test gpu_hot_load_test gpu_slab_allocator_test gpu_task_heap_test \
         runtime_api_test compiler_test device_code_test cuda_dynamic_baselines_test; do
  [[ -x bin/$t ]] || { echo "SKIP $t (not in this bundle)"; continue; }
  run "$t" timeout -k 10 300 bin/$t
done
if [[ "${1:-}" == "--sanitize" ]]; then
  cs=/usr/local/cuda/bin/compute-sanitizer
  [[ -x $cs ]] || cs=compute-sanitizer
  for tool in ${GROSR_SANITIZE_TOOLS:-memcheck racecheck synccheck}; do
    # A small grid: the tools slow every instruction of every idle warp.
    run "sanitize_$tool" timeout -k 10 150 env GROSR_TEST_SCALE=0.01 GROSR_MAX_SMS=8 GROSR_HEAP_BYTES=67108864 \
      "$cs" --tool "$tool" --error-exitcode 1 \
      bin/gpu_scheduler_test \
      --gtest_filter="${GROSR_SANITIZE_FILTER:-*Hundred*:*Chain*:*Tree*:*BadSubmissions*:*SpawnInto*:*SingleSm*:*Shutdown*}"
  done
  # Pauses and relaunches: memcheck over loads while tasks flow.
  if [[ -x bin/gpu_hot_load_test ]]; then
    run sanitize_memcheck_hot_load timeout -k 10 150 env GROSR_TEST_SCALE=0.01 GROSR_MAX_SMS=8 \
      GROSR_HEAP_BYTES=67108864 "$cs" --tool memcheck --error-exitcode 1 bin/gpu_hot_load_test \
      --gtest_filter='*WhileHundred*:*Replaced*:*Together*:*SmallQueue*:*ChainThatFailed*'
  fi
  if [[ -x bin/gpu_task_heap_test ]]; then
    run sanitize_memcheck_task_heap timeout -k 10 150 env GROSR_TEST_SCALE=0.01 GROSR_MAX_SMS=8 \
      GROSR_HEAP_BYTES=67108864 "$cs" --tool memcheck --error-exitcode 1 bin/gpu_task_heap_test
  fi
fi
echo "$passed passed, $failed failed"
[[ $failed -eq 0 ]]
