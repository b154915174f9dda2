#!/usr/bin/env bash
# Runs every fuzz target for SECONDS each (default 10) and prints, per
# target, the inputs executed and whether it found a crash. Exits non-zero
# when any target crashed: its input is kept in fuzz/artifacts/<target>/.
#
# Stable toolchain, no sanitizer (-s none); see docs/fuzzing.md. The seed
# corpus (fuzz/corpus/<target>) is read, never written: new inputs go to a
# temp dir that is removed afterwards.
#   fuzz/run.sh 120            # the long run
#   fuzz/run.sh 8 journal      # one target
set -euo pipefail
fuzz=$(cd "$(dirname "$0")" && pwd)
cd "$fuzz"
seconds=${1:-10}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(manifest state_record lock_file lock_config journal shared_record saved_plan tree_source seal compiled_manifest package_output secret_files check_report choose_answers etcd_keys stat_cache)

cargo fuzz build -s none
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failed=0
printf '%-14s %12s %8s %s\n' target execs seconds result
for t in "${targets[@]}"; do
  mkdir -p "$work/$t" "$work/tmp" "$fuzz/artifacts/$t"
  log="$work/$t.log"
  set +e
  # The targets' scratch dirs go under $work too, and are removed with it.
  TMPDIR="$work/tmp" cargo fuzz run -s none "$t" "$work/$t" "corpus/$t" -- \
    -max_total_time="$seconds" -print_final_stats=1 -rss_limit_mb=2048 \
    -timeout=10 -artifact_prefix="$fuzz/artifacts/$t/" >"$log" 2>&1
  code=$?
  set -e
  execs=$(awk '/stat::number_of_executed_units/ {print $NF}' "$log" | tail -1)
  if [ "$code" -eq 0 ]; then
    result="ok, 0 crashes"
  else
    result="CRASH (exit $code), see fuzz/artifacts/$t/"
    failed=1
    grep -m1 -A12 -E "panicked|ERROR: libFuzzer|SUMMARY" "$log" || tail -30 "$log"
  fi
  printf '%-14s %12s %8s %s\n' "$t" "${execs:-?}" "$seconds" "$result"
done
exit $failed
