#!/bin/bash
# phases.sh N ROUNDS BIN...: the phases of the 1% drift repair of N files
# (gen.sh's manifest) by each BIN in turn, ROUNDS times, as repair-ab.sh
# sets them up (a sealed machine, every 100th file edited and synced).
# Each BIN must be built with phases.patch applied (see README.md); with
# STEAD_TPROBE set it prints "TP <ms since start> <phase>" at each phase.
# Prints, per phase, the median milliseconds since the previous phase for
# each BIN (one column each), and the median total.
set -eu
n=$1; rounds=$2; shift 2
here=$(cd "$(dirname "$0")" && pwd)
d=$(mktemp -d "${TMPDIR:-/tmp}/stead-phases-XXXXXX")
trap 'rm -rf "$d"' EXIT
sh "$here/gen.sh" "$n" "$d/cfg"
mkdir -p "$d/home" "$d/env" "$d/out"
stead() { HOME=$d/env "$@" --home "$d/home" --state-dir "$d/state" --config "$d/cfg" --no-color apply --yes; }
stead "$1" >/dev/null
for r in $(seq "$rounds"); do
  i=0
  for bin in "$@"; do
    i=$((i + 1))
    for _ in 1 2 3 4; do
      [ -e "$d/state/converged.seal" ] && break
      sleep 1.1; stead "$bin" >/dev/null
    done
    [ -e "$d/state/converged.seal" ] || { echo "no seal after four no-ops" >&2; exit 1; }
    for k in $(seq 0 100 $((n - 1))); do echo "# edited by hand $r" > "$d/home/d$((k / 100))/f$k"; done
    sync
    STEAD_TPROBE=1 stead "$bin" 2>&1 >/dev/null | grep -a '^TP' > "$d/out/$i.$r"
  done
done
python3 - "$d/out" "$rounds" "$#" <<'P'
import collections, statistics, sys
out, rounds, bins = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
cols = []
for i in range(1, bins + 1):
    phases, totals = collections.OrderedDict(), []
    for r in range(1, rounds + 1):
        prev = 0.0
        for line in open("%s/%d.%d" % (out, i, r)):
            _, t, label = line.split(None, 2)
            phases.setdefault(label.strip(), []).append(float(t) - prev)
            prev = float(t)
        totals.append(prev)
    phases["total"] = totals
    cols.append(phases)
for label in cols[0]:
    print("%-22s" % label + "".join(" %7.2f" % statistics.median(c.get(label, [0])) for c in cols))
P
