#!/usr/bin/env bash
# Builds the GPU-side binaries with -c opt into bundle/ (git-ignored) for
# the GPU machine, which has CUDA 13 but no Bazel. The folder is
# self-contained (binaries link abseil statically; the runtime's headers are
# embedded; the example tasks travel in bundle/tasks) and needs only the
# machine's /usr/local/cuda. Copy it anywhere and run:
#   bundle/run_gpu_suite.sh [--sanitize]     # tests, logs under $OUT or /tmp
#   bash bundle/device_pass.sh [suite bench alloc ab:chains ...]   # a whole pass
#   bundle/bin/grosr_bench --json r.json     # benchmarks
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(//tests:gpu_scheduler_test //tests:gpu_fault_test //tests:gpu_hot_load_test
         //tests:gpu_slab_allocator_test //tests:gpu_task_heap_test //tests:runtime_api_test //jit:compiler_test
         //tests:device_code_test //bench:cuda_dynamic_baselines_test //host:grosr
         //bench:grosr_bench //bench:alloc //bench:load_probe)
# GROSR_BUNDLE_TARGETS="//a:b //c:d" bundles just those.
if [[ -n "${GROSR_BUNDLE_TARGETS:-}" ]]; then read -ra targets <<<"$GROSR_BUNDLE_TARGETS"; fi
# Static: the GPU machine has no Bazel tree to find shared libraries in.
bazel build -c opt --dynamic_mode=off "${targets[@]}"
rm -rf bundle && mkdir -p bundle/bin
for t in "${targets[@]}"; do
  path="bazel-bin/$(echo "${t#//}" | tr ':' '/')"
  cp "$path" bundle/bin/
done
cp tools/run_gpu_suite.sh tools/device_pass.sh bundle/
# Results name the commit the binaries came from (bench/run_info.h).
echo "$(git rev-parse --short HEAD)$(git diff --quiet HEAD -- . ':!bench/*.md' || echo -dirty)" > bundle/COMMIT
cp -r tasks bundle/tasks  # read by device_code_test and the grosr command
rm -f bundle/tasks/BUILD.bazel
chmod -R u+w bundle
du -sh bundle
