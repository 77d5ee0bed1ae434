#!/usr/bin/env bash
# Builds the benchmark for two or more commits into bundle/ab/<label>/ so
# that one device call can compare them (A/B), interleaved, on one card:
#
#   tools/bundle_ab.sh main experiment/lean-dispatch    # here (no GPU needed)
#   bash bundle/ab/run.sh [--only chains|pingpong|throughput|alloc] [--labels A,B] [ROUNDS]   # on the GPU
#
# --labels runs only those builds (labels are revisions with / and : as _).
# Each label is a git revision; it is checked out in a temporary worktree
# and built with that revision's tools/bundle.sh, so the binaries (and the
# device code they embed) are exactly that revision's. run.sh alternates the
# builds ROUNDS times (default 3) so that clock and thermal drift hit both,
# writes each run's JSON and log under $OUT (or /tmp/grosr-ab) and prints
# the dispatch lines side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
if (($# < 2)); then
  echo "usage: tools/bundle_ab.sh REV REV [REV...]" >&2
  exit 2
fi
rm -rf bundle/ab && mkdir -p bundle/ab
for rev in "$@"; do
  label=$(echo "$rev" | tr '/:' '__')
  tree=$(mktemp -d /tmp/grosr-ab-XXXXXX)
  git worktree add -q --detach "$tree" "$rev"
  (cd "$tree" && GROSR_BUNDLE_TARGETS="//bench:grosr_bench //bench:alloc" tools/bundle.sh >/dev/null)
  cp -r "$tree/bundle" "bundle/ab/$label"
  echo "$label: $(cat "bundle/ab/$label/COMMIT")"
  git worktree remove --force "$tree"
done
cat >bundle/ab/run.sh <<'EOF'
#!/usr/bin/env bash
# Written by tools/bundle_ab.sh: runs each build's benchmark, interleaved.
set -uo pipefail
cd "$(dirname "$0")"
only=chains
labels=""
while [[ "${1:-}" == --* ]]; do
  case $1 in
    --only) only=$2 ;;
    --labels) labels=",$2," ;;
    *) echo "run.sh: unknown option $1" >&2; exit 2 ;;
  esac
  shift 2
done
rounds=${1:-3}
failed=0
runs=0
logs="${OUT:-/tmp/grosr-ab}"
mkdir -p "$logs"
for round in $(seq 1 "$rounds"); do
  for label in */; do
    label=${label%/}
    [[ -x "$label/bin/grosr_bench" ]] || continue  # not a build (a log folder)
    [[ -z $labels || $labels == *",$label,"* ]] || continue
    runs=$((runs + 1))
    if [[ $only == alloc ]]; then  # the slab allocator alone, one-second rows
      timeout 300 "$label/bin/alloc" --no-baselines --row-budget-s 1 --deadline-s 4 \
        --json "$logs/$label-alloc-$round.json" >"$logs/$label-alloc-$round.log" 2>&1 ||
        { echo "$label round $round failed (see its log)"; failed=$((failed + 1)); }
      grep -E "^grosr_slab " "$logs/$label-alloc-$round.log" | cut -c1-90 | sed "s/^/$label r$round  /"
      continue
    fi
    log="$logs/$label-$only-$round"
    timeout 300 "$label/bin/grosr_bench" --only "$only" --json "$log.json" >"$log.log" 2>&1 ||
      { echo "$label round $round failed (see its log)"; failed=$((failed + 1)); }
    grep -E "^(grosr_chain_then|grosr_chain_pure|grosr_chain_alternating|grosr_chain_cycles|grosr_chain_spawn|grosr_then_step|grosr_spawn_step|grosr_pingpong|grosr_spawn_tree|grosr_host_batch|tput_grosr_[a-z0-9_]+) " \
      "$log.log" | cut -c1-90 | sed "s/^/$label r$round  /"
  done
done
if ((runs == 0)); then
  echo "run.sh: no build to run (--labels ${labels:-none given})" >&2
  exit 1
fi
exit "$failed"
EOF
chmod +x bundle/ab/run.sh
du -sh bundle/ab
