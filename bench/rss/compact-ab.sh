#!/bin/bash
# compact-ab.sh N ROUNDS BIN... : the bench's first repair after a cold
# apply, by each BIN in turn: one machine of N files (gen.sh's manifest);
# before each repair its journal is the cold apply's whole run (what that
# repair reads and compacts), the machine is sealed by no-ops (the seal
# covers the journal, so it is put in place first), every 100th file is
# edited and synced, and one 'apply --yes' is timed. The binaries
# alternate within each round. Prints each BIN's median wall time and
# every wall time sorted.
set -eu
n=$1; rounds=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d "${TMPDIR:-/tmp}/stead-compact-XXXXXX")
trap 'rm -rf "$d"' EXIT
sh "$here/gen.sh" "$n" "$d/cfg"
mkdir -p "$d/home" "$d/env"
stead() { HOME=$d/env "$1" --home "$d/home" --state-dir "$d/state" --config "$d/cfg" --no-color apply --yes >/dev/null; }
seal() {
  rm -f "$d/state/converged.seal"
  for _ in 1 2 3 4 5; do
    [ -e "$d/state/converged.seal" ] && return
    sleep 1.1; stead "$1"
  done
  echo "no seal after five no-ops" >&2; exit 1
}
stead "$1"
cp "$d/state/journal.jsonl" "$d/cold.jsonl"
ls -l "$d/cold.jsonl" | awk '{print "cold journal: " $5 " bytes"}'
for r in $(seq "$rounds"); do
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    cat "$d/cold.jsonl" > "$d/state/journal.jsonl"
    seal "$bin"
    for k in $(seq 0 100 $((n - 1))); do echo "# edited by hand $r.$i" > "$d/home/d$((k / 100))/f$k"; done
    sync
    s=$(date +%s%N); stead "$bin"; e=$(date +%s%N)
    echo "$i $(( (e - s) / 1000 ))" >> "$d/out"
  done
done
python3 - "$d/out" "$@" <<'P'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    i, wall = line.split()
    runs[int(i)].append(int(wall) / 1000)
for i, walls in sorted(runs.items()):
    walls.sort()
    print("%s: %d repairs, wall median %.1f ms; walls %s" % (
        sys.argv[1 + i], len(walls), statistics.median(walls), " ".join("%.0f" % w for w in walls)))
P
