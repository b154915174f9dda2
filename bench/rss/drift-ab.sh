#!/bin/bash
# drift-ab.sh N ROUNDS BASE NEW: `stead state check-drift` and `stead status`
# of N files (gen.sh's manifest) by BASE and NEW alternated, ROUNDS times in
# each state of one machine: sealed; with every 100th file edited (the seal
# drifted); no seal but a filled stat cache; and `--full` (NEW only; BASE
# plain, check-drift only). Prints the median wall time of each in ms, and whether both
# printed the same for the plain commands.
set -eu
n=$1; rounds=$2; base=$3; new=$4
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d "${TMPDIR:-/tmp}/stead-drift-XXXXXX")
trap 'rm -rf "$d"' EXIT
sh "$here/gen.sh" "$n" "$d/cfg"
mkdir -p "$d/home" "$d/env"
st() { HOME=$d/env "$1" --home "$d/home" --state-dir "$d/state" --config "$d/cfg" --no-color "${@:2}"; }
ms() { local s; s=$(date +%s%N); st "$@" >/dev/null 2>&1 || true; echo $(( ($(date +%s%N) - s) / 1000 )); }
med() { sort -n | awk '{a[NR]=$1} END{printf "%.1f", (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)/1000}'; }
# Converged, then no-ops until one seals (it seals only files written
# before the second it started).
seal() {
  st "$base" apply --yes >/dev/null
  for _ in 1 2 3 4; do
    [ -e "$d/state/converged.seal" ] && return
    sleep 1.1; st "$base" apply --yes >/dev/null
  done
  echo "no seal after four no-ops" >&2; exit 1
}
ab() { # label, base args, new args
  local label=$1 b=$2 nw=$3 same=same
  # shellcheck disable=SC2086
  { st "$base" $b > "$d/b.out" 2>/dev/null || true; st "$new" $nw > "$d/n.out" 2>/dev/null || true; }
  cmp -s "$d/b.out" "$d/n.out" || same=different
  : > "$d/b"; : > "$d/n"
  for _ in $(seq "$rounds"); do
    # shellcheck disable=SC2086
    { ms "$base" $b >> "$d/b"; ms "$new" $nw >> "$d/n"; }
  done
  echo "$label: $(med < "$d/b") ms -> $(med < "$d/n") ms (output $same)"
}
seal
ab "sealed: check-drift" "state check-drift" "state check-drift"
ab "sealed: status" "status" "status"
for k in $(seq 0 100 $((n - 1))); do echo "# edited by hand" > "$d/home/d$((k / 100))/f$k"; done
sync
ab "1% edited, seal drifted: check-drift" "state check-drift" "state check-drift"
ab "1% edited, seal drifted: status" "status" "status"
seal; sleep 2.1; st "$base" apply --yes >/dev/null; rm -f "$d/state/converged.seal"
ab "no seal, stat cache filled: check-drift" "state check-drift" "state check-drift"
ab "no seal, stat cache filled: status" "status" "status"
ab "no seal: check-drift, NEW with --full" "state check-drift" "state check-drift --full"
