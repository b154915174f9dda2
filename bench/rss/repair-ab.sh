#!/bin/bash
# repair-ab.sh N ROUNDS BIN...: the 1% drift repair of N files (gen.sh's
# manifest) by each BIN in turn, ROUNDS times: before each, no-ops until the
# machine is sealed, then every 100th file edited and the edits synced (so
# that the repair's barriers do not also flush them), then one timed
# 'apply --yes'. Prints, per binary, the median wall time and the median
# user + system CPU (GNU time), and every wall time sorted. The binaries
# share one home and state dir, so each repairs the same machine.
set -eu
n=$1; rounds=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d "${TMPDIR:-/tmp}/stead-repair-XXXXXX")
trap 'rm -rf "$d"' EXIT
sh "$here/gen.sh" "$n" "$d/cfg"
mkdir -p "$d/home" "$d/env"
stead() { HOME=$d/env "$@" --home "$d/home" --state-dir "$d/state" --config "$d/cfg" --no-color apply --yes >/dev/null; }
stead "$1"
for r in $(seq "$rounds"); do
  for bin in "$@"; do
    # A no-op seals only files written before the second it started.
    for _ in 1 2 3 4; do
      [ -e "$d/state/converged.seal" ] && break
      sleep 1.1; stead "$bin"
    done
    [ -e "$d/state/converged.seal" ] || { echo "no seal after four no-ops" >&2; exit 1; }
    for k in $(seq 0 100 $((n - 1))); do echo "# edited by hand $r" > "$d/home/d$((k / 100))/f$k"; done
    sync
    s=$(date +%s%N)
    stead /usr/bin/time -f "%U %S" -o "$d/cpu" "$bin"
    e=$(date +%s%N)
    echo "$bin $(( (e - s) / 1000 )) $(awk '{print ($1 + $2) * 1000}' "$d/cpu")" >> "$d/out"
  done
done
python3 "$here/medians.py" "$d/out" "repairs"
