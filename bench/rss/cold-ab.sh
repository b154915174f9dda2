#!/bin/bash
# cold-ab.sh N ROUNDS BIN...: the cold apply of N files (gen.sh's manifest)
# by each BIN in turn, ROUNDS times, each into a new home and state dir.
# Nothing is deleted until the last run has ended: on ext4 without a
# journal every inode made within minutes of a large deletion costs more
# (docs/performance.md, "A 1% drift repair, sixteenth pass"), so start it
# six minutes after any. Prints, per binary, the median wall time and the
# median user + system CPU (GNU time), and every wall time sorted.
set -eu
n=$1; rounds=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d "${TMPDIR:-/tmp}/stead-cold-XXXXXX")
trap 'rm -rf "$d"' EXIT
sh "$here/gen.sh" "$n" "$d/cfg"
for r in $(seq "$rounds"); do
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    w="$d/$r.$i"
    mkdir -p "$w/home" "$w/env"
    sync
    s=$(date +%s%N)
    HOME=$w/env /usr/bin/time -f "%U %S" -o "$w/cpu" "$bin" --home "$w/home" --state-dir "$w/state" \
      --config "$d/cfg" --no-color apply --yes >/dev/null
    e=$(date +%s%N)
    echo "$bin $(( (e - s) / 1000 )) $(awk '{print ($1 + $2) * 1000}' "$w/cpu")" >> "$d/out"
  done
done
python3 "$here/medians.py" "$d/out" "cold applies"
