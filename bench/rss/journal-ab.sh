#!/bin/bash
# journal-ab.sh N ROUNDS BIN: what the journal costs a 1% drift repair of N
# files (gen.sh's manifest). One machine; before each repair its journal is
# either the cold apply's whole run ("cold": what the bench's repair, the
# first after a cold apply, reads and compacts) or the small one a repair
# leaves ("small"), the two alternated; then no-ops until the seal is
# written (the seal covers the journal, so it is put in place first), every
# 100th file edited and synced, and one timed 'apply --yes'. Prints each
# case's median wall time and every wall time sorted.
set -eu
n=$1; rounds=$2; bin=$3
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d "${TMPDIR:-/tmp}/stead-journal-XXXXXX")
trap 'rm -rf "$d"' EXIT
sh "$here/gen.sh" "$n" "$d/cfg"
mkdir -p "$d/home" "$d/env"
stead() { HOME=$d/env "$bin" --home "$d/home" --state-dir "$d/state" --config "$d/cfg" --no-color apply --yes >/dev/null; }
seal() {
  rm -f "$d/state/converged.seal"
  for _ in 1 2 3 4 5; do
    [ -e "$d/state/converged.seal" ] && return
    sleep 1.1; stead
  done
  echo "no seal after five no-ops" >&2; exit 1
}
edit() {
  for k in $(seq 0 100 $((n - 1))); do echo "# edited by hand $1" > "$d/home/d$((k / 100))/f$k"; done
  sync
}
stead
cp "$d/state/journal.jsonl" "$d/cold.jsonl"
seal; edit 0; stead
cp "$d/state/journal.jsonl" "$d/small.jsonl"
ls -l "$d/cold.jsonl" "$d/small.jsonl" | awk '{print $9 ": " $5 " bytes"}'
for r in $(seq "$rounds"); do
  for case in cold small; do
    cat "$d/$case.jsonl" > "$d/state/journal.jsonl"
    seal; edit "$r$case"
    s=$(date +%s%N); stead; e=$(date +%s%N)
    echo "$case $(( (e - s) / 1000 ))" >> "$d/out"
  done
done
python3 - "$d/out" <<'P'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    case, wall = line.split()
    runs[case].append(int(wall) / 1000)
for case, walls in runs.items():
    walls.sort()
    print("%s journal: %d repairs, wall median %.1f ms; walls %s" % (
        case, len(walls), statistics.median(walls), " ".join("%.0f" % w for w in walls)))
P
